//! `MemMedia`: an in-memory [`Media`] with a power-cut model, for the journal's tests and
//! the fs crash-test suite.
//!
//! Persistence is modelled per 64-byte cache line, as on x86 with clwb + sfence:
//! - `write` changes the volatile contents only;
//! - `flush` snapshots the covered lines as pending;
//! - `fence` makes the pending snapshots durable.
//!
//! A power cut keeps the durable contents, plus any subset of the lines written since
//! they were last made durable (stores may reach media early by cache eviction): see
//! [`MemMedia::crash_image`] and [`MemMedia::crash_image_with`]. With fence recording on,
//! every fence stores a [`FencePoint`]: the crash states possible just before that fence.
//!
//! Accesses outside the media are not a panic: reads return zeros, writes are dropped,
//! and both are counted ([`MemMedia::out_of_range_count`]) so tests can assert none happen.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use crate::Media;

/// Size of the persistence unit (a cache line).
pub const LINE: usize = 64;

/// The crash states possible just before one fence: the durable image, plus any subset
/// of `unpersisted` lines (line index, volatile content at that moment).
#[derive(Clone, Debug)]
pub struct FencePoint {
    /// 0-based index of the fence (value of `fence_count()` before it).
    pub index: u64,
    pub durable: Vec<u8>,
    pub unpersisted: Vec<(usize, [u8; LINE])>,
}

impl FencePoint {
    /// Image if none of the not-yet-durable lines reached media.
    pub fn image(&self) -> Vec<u8> {
        self.durable.clone()
    }

    /// Line indices that may or may not have reached media.
    pub fn lines(&self) -> Vec<usize> {
        self.unpersisted.iter().map(|(l, _)| *l).collect()
    }

    /// Image if exactly the given not-yet-durable lines reached media (indices that are
    /// not in `unpersisted` are ignored).
    pub fn image_with(&self, lines: &[usize]) -> Vec<u8> {
        let mut img = self.durable.clone();
        for (line, content) in &self.unpersisted {
            if lines.contains(line) {
                copy_line(&mut img, *line, content);
            }
        }
        img
    }
}

fn copy_line(img: &mut [u8], line: usize, content: &[u8; LINE]) {
    let start = line * LINE;
    let end = (start + LINE).min(img.len());
    if start < end {
        img[start..end].copy_from_slice(&content[..end - start]);
    }
}

fn line_of(img: &[u8], line: usize) -> [u8; LINE] {
    let mut out = [0u8; LINE];
    let start = line * LINE;
    let end = (start + LINE).min(img.len());
    if start < end {
        out[..end - start].copy_from_slice(&img[start..end]);
    }
    out
}

struct Inner {
    volatile: Vec<u8>,
    durable: Vec<u8>,
    /// Lines whose volatile content may differ from the durable one.
    unpersisted: BTreeSet<usize>,
    /// Lines flushed since the last fence, with their content at flush time.
    pending: BTreeMap<usize, [u8; LINE]>,
    flushes: u64,
    fences: u64,
    out_of_range: u64,
    recording: bool,
    points: Vec<FencePoint>,
}

/// In-memory media with a per-cache-line power-cut model.
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
                durable: bytes.clone(),
                volatile: bytes,
                unpersisted: BTreeSet::new(),
                pending: BTreeMap::new(),
                flushes: 0,
                fences: 0,
                out_of_range: 0,
                recording: false,
                points: Vec::new(),
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
        self.lock().durable.clone()
    }

    /// What survives a power cut if the given lines (indices of 64-byte lines) also
    /// reached media with their current volatile contents.
    pub fn crash_image_with(&self, extra_lines: &[usize]) -> Vec<u8> {
        let g = self.lock();
        let mut img = g.durable.clone();
        for &line in extra_lines {
            let content = line_of(&g.volatile, line);
            copy_line(&mut img, line, &content);
        }
        img
    }

    /// Current volatile contents: what a process crash (not a power cut) leaves.
    pub fn volatile_image(&self) -> Vec<u8> {
        self.lock().volatile.clone()
    }

    /// Lines written since they were last made durable, in increasing order.
    pub fn unpersisted_lines(&self) -> Vec<usize> {
        self.lock().unpersisted.iter().copied().collect()
    }

    /// Number of `flush` calls so far.
    pub fn flush_count(&self) -> u64 {
        self.lock().flushes
    }

    /// Number of `fence` calls so far.
    pub fn fence_count(&self) -> u64 {
        self.lock().fences
    }

    /// Number of reads and writes that fell (partly) outside the media.
    pub fn out_of_range_count(&self) -> u64 {
        self.lock().out_of_range
    }

    /// Starts or stops recording a [`FencePoint`] at every fence.
    pub fn record_fences(&self, on: bool) {
        self.lock().recording = on;
    }

    /// The fence points recorded so far (oldest first).
    pub fn fences(&self) -> Vec<FencePoint> {
        self.lock().points.clone()
    }

    /// Removes and returns the fence points recorded so far.
    pub fn take_fences(&self) -> Vec<FencePoint> {
        std::mem::take(&mut self.lock().points)
    }
}

/// Line range covering `off..off+len`, clamped to `size` bytes; None if empty.
fn lines(off: u64, len: u64, size: usize) -> Option<std::ops::RangeInclusive<usize>> {
    let end = off.saturating_add(len).min(size as u64);
    if len == 0 || off >= end {
        return None;
    }
    Some((off as usize / LINE)..=((end - 1) as usize / LINE))
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
        if let Some(range) = lines(off, data.len() as u64, size) {
            g.unpersisted.extend(range);
        }
    }

    fn flush(&self, off: u64, len: u64) {
        let mut g = self.lock();
        g.flushes += 1;
        let Some(range) = lines(off, len, g.volatile.len()) else {
            return;
        };
        for line in range {
            if g.unpersisted.contains(&line) {
                let content = line_of(&g.volatile, line);
                g.pending.insert(line, content);
            }
        }
    }

    fn fence(&self) {
        let mut g = self.lock();
        if g.recording {
            let point = FencePoint {
                index: g.fences,
                durable: g.durable.clone(),
                unpersisted: g
                    .unpersisted
                    .iter()
                    .map(|&l| (l, line_of(&g.volatile, l)))
                    .collect(),
            };
            g.points.push(point);
        }
        let pending = std::mem::take(&mut g.pending);
        for (line, content) in pending {
            copy_line(&mut g.durable, line, &content);
            if line_of(&g.volatile, line) == content {
                g.unpersisted.remove(&line);
            }
        }
        g.fences += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn crash_image_with_adds_the_chosen_volatile_lines() {
        let m = MemMedia::new(256);
        m.write(10, &[5]);
        m.write(130, &[6]);
        let img = m.crash_image_with(&[2]);
        assert_eq!((img[10], img[130]), (0, 6));
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
}
