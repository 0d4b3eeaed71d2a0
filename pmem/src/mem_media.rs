//! `MemMedia`: an in-memory [`Media`] on the crate's one power-cut model
//! ([`LineModel`], see [`crate::crash_model`]), for the journal's tests. It holds the
//! volatile contents; the model holds what is durable and records the crash points,
//! which it hands out as [`FencePoint`]s (each with its durable image: the media are
//! small).
//!
//! Accesses outside the media are not a panic: reads return zeros, writes are dropped,
//! and both are counted ([`MemMedia::out_of_range_count`]) so tests can assert none
//! happen.

use std::sync::{Mutex, MutexGuard};

use crate::crash_model::{line_of, Fault, FencePoint, LineModel};
use crate::media::Media;

struct Inner {
    volatile: Vec<u8>,
    model: LineModel,
    /// The model's points, each with the durable image it is a delta over.
    points: Vec<FencePoint>,
    out_of_range: u64,
    /// An injected failure not yet reported by `take_error`.
    error: bool,
}

/// In-memory media with the per-cache-line power-cut model.
pub struct MemMedia {
    inner: Mutex<Inner>,
}

impl MemMedia {
    /// `len` zero bytes, all durable.
    pub fn new(len: usize) -> MemMedia {
        MemMedia::from_bytes(vec![0u8; len])
    }

    /// Media whose durable (and volatile) contents are `bytes`, e.g. a crash image.
    pub fn from_bytes(bytes: Vec<u8>) -> MemMedia {
        MemMedia {
            inner: Mutex::new(Inner {
                model: LineModel::new(bytes.clone()),
                volatile: bytes,
                points: Vec::new(),
                out_of_range: 0,
                error: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not turn every later access into a panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.lock().volatile.len()
    }

    /// True if the media has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What survives a power cut if no unflushed store reached media.
    pub fn crash_image(&self) -> Vec<u8> {
        self.lock().model.durable().to_vec()
    }

    /// Current volatile contents: what a process crash (not a power cut) leaves.
    pub fn volatile_image(&self) -> Vec<u8> {
        self.lock().volatile.clone()
    }

    /// Lines written since they were last made durable, in increasing order.
    pub fn unpersisted_lines(&self) -> Vec<usize> {
        self.lock().model.unpersisted_lines()
    }

    /// Number of `flush` calls so far.
    pub fn flush_count(&self) -> u64 {
        self.lock().model.op_count(Fault::Flush)
    }

    /// Number of `fence` calls so far.
    pub fn fence_count(&self) -> u64 {
        self.lock().model.fence_count()
    }

    /// Number of reads and writes that fell (partly) outside the media.
    pub fn out_of_range_count(&self) -> u64 {
        self.lock().out_of_range
    }

    /// Starts or stops recording a [`FencePoint`] at every fence.
    pub fn record_fences(&self, on: bool) {
        self.lock().model.set_recording(on);
    }

    /// The fence points recorded so far (oldest first).
    pub fn fences(&self) -> Vec<FencePoint> {
        self.lock().points.clone()
    }

    /// Removes and returns the fence points recorded so far.
    pub fn take_fences(&self) -> Vec<FencePoint> {
        std::mem::take(&mut self.lock().points)
    }

    /// Arms one failure: after `after` more operations of `kind` succeed, the next one
    /// fails, and `take_error` reports it.
    pub fn fail_after(&self, kind: Fault, after: u64) {
        self.lock().model.fail_after(kind, after);
    }

    /// Number of injected failures that happened.
    pub fn fault_count(&self) -> u64 {
        self.lock().model.fault_count()
    }
}

impl Media for MemMedia {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read(&self, off: u64, buf: &mut [u8]) {
        let mut g = self.lock();
        let size = g.volatile.len() as u64;
        buf.fill(0);
        let end = off.saturating_add(buf.len() as u64);
        if end > size {
            g.out_of_range += 1;
        }
        if off < size {
            let n = (end.min(size) - off) as usize;
            buf[..n].copy_from_slice(&g.volatile[off as usize..off as usize + n]);
        }
    }

    fn write(&self, off: u64, data: &[u8]) {
        let mut g = self.lock();
        let size = g.volatile.len();
        match off.checked_add(data.len() as u64) {
            Some(end) if end <= size as u64 => {}
            _ => {
                g.out_of_range += 1;
                return;
            }
        }
        g.volatile[off as usize..off as usize + data.len()].copy_from_slice(data);
        if !g.model.store(off, data) {
            g.error = true;
        }
    }

    fn flush(&self, off: u64, len: u64) {
        let mut g = self.lock();
        let Inner {
            volatile, model, ..
        } = &mut *g;
        let ok = model.flush(off, len, &|l| line_of(volatile, l));
        if !ok {
            g.error = true;
        }
    }

    fn fence(&self) {
        let mut g = self.lock();
        let Inner {
            volatile,
            model,
            points,
            ..
        } = &mut *g;
        let durable = model.recording().then(|| model.durable().to_vec());
        model.fence(&|l| line_of(volatile, l));
        // Recording, the fence kept exactly one point: the one before it.
        if let (Some(durable), Some(delta)) = (durable, model.take_points().pop()) {
            points.push(FencePoint { durable, delta });
        }
    }

    fn take_error(&self) -> std::io::Result<()> {
        if std::mem::take(&mut self.lock().error) {
            Err(std::io::Error::other("injected write-back failure"))
        } else {
            Ok(())
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::crash_model::MAX_TORN_PER_LINE;

    #[test]
    fn a_write_is_not_durable_until_flushed_and_fenced() {
        let m = MemMedia::new(256);
        m.write(70, &[1, 2, 3]);
        assert_eq!(m.crash_image()[70..73], [0, 0, 0]);
        m.flush(70, 3);
        assert_eq!(
            m.crash_image()[70..73],
            [0, 0, 0],
            "flush alone is not durable"
        );
        m.fence();
        assert_eq!(m.crash_image()[70..73], [1, 2, 3]);
        assert!(m.unpersisted_lines().is_empty());
    }

    #[test]
    fn a_fence_without_flush_persists_nothing() {
        let m = MemMedia::new(256);
        m.write(0, &[9; 8]);
        m.fence();
        assert_eq!(m.crash_image()[0..8], [0; 8]);
        assert_eq!(m.unpersisted_lines(), vec![0]);
    }

    #[test]
    fn a_store_after_flush_is_not_made_durable_by_the_fence() {
        let m = MemMedia::new(128);
        m.write(0, &[1]);
        m.flush(0, 1);
        m.write(0, &[2]);
        m.fence();
        assert_eq!(m.crash_image()[0], 1);
        assert_eq!(m.unpersisted_lines(), vec![0]);
    }

    #[test]
    fn recorded_fence_points_hold_the_state_before_each_fence() {
        let m = MemMedia::new(256);
        m.record_fences(true);
        m.write(64, &[7]);
        m.flush(64, 1);
        m.fence();
        m.fence();
        let points = m.fences();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].image()[64], 0);
        assert_eq!(points[0].lines(), vec![1]);
        assert_eq!(points[0].image_with(&[1])[64], 7);
        assert_eq!(points[1].image()[64], 7);
        assert!(points[1].lines().is_empty());
        assert_eq!((m.fence_count(), m.flush_count()), (2, 1));
    }

    #[test]
    fn out_of_range_accesses_are_counted_not_panics() {
        let m = MemMedia::new(100);
        m.write(96, &[1; 8]);
        let mut buf = [7u8; 8];
        m.read(96, &mut buf);
        m.flush(u64::MAX - 1, 10);
        assert_eq!(buf, [0; 8]);
        assert_eq!(m.out_of_range_count(), 2);
    }

    #[test]
    fn a_line_can_persist_any_prefix_of_its_stores_in_8_byte_pieces() {
        let m = MemMedia::new(256);
        m.record_fences(true);
        // One 16-byte store at byte 4 is three pieces (4..8, 8..16, 16..20), then a
        // second store to the same line.
        m.write(4, &[1; 16]);
        m.write(40, &[2; 2]);
        m.flush(0, 64);
        m.fence();
        let p = &m.take_fences()[0];
        assert_eq!(p.torn_lines(), vec![(0, 3)]);
        let torn: Vec<Vec<u8>> = (0..3)
            .map(|j| p.image_torn(&[], &[(0, j)])[..48].to_vec())
            .collect();
        let mut want = vec![0u8; 48];
        want[4..8].fill(1);
        assert_eq!(torn[0], want, "first piece only");
        want[8..16].fill(1);
        assert_eq!(torn[1], want, "two pieces");
        want[16..20].fill(1);
        assert_eq!(torn[2], want, "the first store whole, not the second");
        want[40..42].fill(2);
        assert_eq!(p.image_with(&[0])[..48], want[..], "everything");
    }

    #[test]
    fn a_store_after_the_flush_stays_torn_able_after_the_fence() {
        let m = MemMedia::new(128);
        m.write(0, &[1; 8]);
        m.flush(0, 8);
        m.write(8, &[2; 8]);
        m.write(16, &[3; 8]);
        m.fence();
        m.record_fences(true);
        m.fence();
        let p = &m.take_fences()[0];
        assert_eq!(p.durable[..24], [[1u8; 8], [0; 8], [0; 8]].concat()[..]);
        assert_eq!(p.torn_lines(), vec![(0, 1)]);
        assert_eq!(
            p.image_torn(&[], &[(0, 0)])[..24],
            [[1u8; 8], [2; 8], [0; 8]].concat()[..]
        );
    }

    #[test]
    fn torn_contents_per_line_are_capped_by_an_even_sample() {
        let m = MemMedia::new(128);
        m.record_fences(true);
        for i in 0..100u8 {
            m.write(0, &[i + 1]);
        }
        m.fence();
        let p = &m.take_fences()[0];
        assert_eq!(p.torn_lines(), vec![(0, MAX_TORN_PER_LINE)]);
        assert_eq!(p.image_torn(&[], &[(0, 0)])[0], 1);
    }

    #[test]
    fn an_injected_flush_failure_writes_nothing_back_and_is_reported_once() {
        let m = MemMedia::new(256);
        m.fail_after(Fault::Flush, 1);
        m.write(0, &[1]);
        m.flush(0, 1);
        m.write(64, &[2]);
        m.flush(64, 1);
        m.fence();
        assert_eq!((m.crash_image()[0], m.crash_image()[64]), (1, 0));
        assert!(m.take_error().is_err());
        assert!(m.take_error().is_ok(), "reported once");
        m.flush(64, 1);
        m.fence();
        assert_eq!(m.crash_image()[64], 2, "a later flush succeeds");
        assert_eq!(m.fault_count(), 1);
    }

    #[test]
    fn an_injected_write_failure_never_reaches_the_media() {
        let m = MemMedia::new(256);
        m.fail_after(Fault::Write, 0);
        m.write(0, &[1]);
        m.write(1, &[2]);
        m.flush(0, 2);
        m.fence();
        let mut b = [0u8; 2];
        m.read(0, &mut b);
        assert_eq!(b, [1, 2], "the volatile contents have it");
        assert_eq!(m.crash_image()[..2], [0, 2]);
        assert!(m.take_error().is_err());
    }
}
