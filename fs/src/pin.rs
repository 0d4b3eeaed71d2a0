//! Long-term pins of file ranges (design notes §2): one reference on every block of the
//! range, held until given back. The FUSE adapter keeps them per file handle
//! (DAXFS_IOC_PIN / DAXFS_IOC_UNPIN, released with the handle); the library's
//! [`PinnedMapping`](crate::mapping::PinnedMapping) holds one for its lifetime. Also the
//! filesystem's counters ([`DaxFs::stats`]) behind `daxfs stats`.
//!
//! A pin takes the inode's layout lock shared, so it waits while a break_layouts holds it
//! exclusively, and cannot slip in between a break's last scan and the free.
//!
//! Rules: the range must lie inside the file (EINVAL past EOF) and be fully mapped (ENXIO
//! on a hole: pinning takes references on existing blocks and never allocates; fill the
//! range with fallocate first). A length of 0 is EINVAL.

use crate::error::{Errno, Result};
use crate::filesystem::*;
use crate::format::BLOCK_SIZE;
use crate::types::FileKind;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A long-term pin of `len` bytes at `offset` of inode `ino`. It must be given back to
/// [`DaxFs::unpin_range`]: dropping it leaks its references (its blocks stay pinned, and
/// truncates of them fail with EBUSY, until the filesystem is mounted again).
#[must_use = "a pin must be given back to DaxFs::unpin_range"]
#[derive(Debug)]
pub struct RangePin {
    ino: u64,
    offset: u64,
    len: u64,
    /// Pinned data-area block indexes, as runs.
    blocks: Vec<Range<u64>>,
    /// The pinned bytes on the device: (device offset, length) per contiguous piece.
    pub(crate) segments: Vec<(u64, usize)>,
    /// The inode, kept for its pin count.
    inode: InodeRef,
}

/// An `Arc<Inode>` behind a type that is public in name only (`Inode` is crate-private).
pub(crate) struct InodeRef(pub(crate) Arc<Inode>);

impl std::fmt::Debug for InodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "inode {}", self.0.ino)
    }
}

impl RangePin {
    pub fn ino(&self) -> u64 {
        self.ino
    }
    pub fn offset(&self) -> u64 {
        self.offset
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Number of blocks pinned.
    pub fn blocks(&self) -> u64 {
        self.blocks.iter().map(|r| r.end - r.start).sum()
    }
    /// The inode's lease break count (it grows each time a break_layouts finds this
    /// inode busy).
    pub(crate) fn lease_epoch(&self) -> u64 {
        self.inode.0.lease_breaks.load(Ordering::SeqCst)
    }
}

/// Counters of a mounted filesystem (`daxfs stats`, DAXFS_IOC_STATS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsStats {
    /// Blocks of the data area.
    pub blocks_total: u64,
    /// Reference count census: 0 (free), 1 (cached in a file's mapping), >1 (pinned).
    pub blocks_free: u64,
    pub blocks_cached: u64,
    pub blocks_pinned: u64,
    /// Free blocks according to the allocator (equals `blocks_free` when balanced).
    pub alloc_free: u64,
    /// Long-term pins (ioctl pins, pinned mappings) taken and released.
    pub pins_taken: u64,
    pub pins_released: u64,
    /// Block references taken and dropped (every pin of every block, including the
    /// in-flight pins of reads and writes).
    pub block_pins: u64,
    pub block_unpins: u64,
    /// break_layouts calls that met a busy block, and the lease breaks they signalled.
    pub layout_breaks: u64,
    pub lease_breaks: u64,
    /// Waits for a block to become idle, their total time, and those that gave up.
    pub waits: u64,
    pub wait_ns: u64,
    pub timeouts: u64,
    /// Refcount rule violations (must stay 0).
    pub violations: u64,
    /// Journal commits (one commit record and one flush/fence sequence each).
    pub commits: u64,
    /// Metadata transactions those commits carried: more than `commits` when group
    /// commit batched concurrent transactions into one journal commit.
    pub transactions: u64,
}

impl FsStats {
    /// Long-term pins currently held.
    pub fn pins_active(&self) -> u64 {
        self.pins_taken.saturating_sub(self.pins_released)
    }

    /// True when nothing is pinned, every reference taken was dropped, the census agrees
    /// with the allocator and no violation was seen.
    pub fn balanced(&self) -> bool {
        self.blocks_pinned == 0
            && self.pins_taken == self.pins_released
            && self.block_pins == self.block_unpins
            && self.blocks_free == self.alloc_free
            && self.violations == 0
    }
}

fn blk(off: u64) -> u64 {
    off / BLOCK_SIZE
}

impl DaxFs {
    /// Pins bytes `offset..offset+len` of regular file `ino` (see the module docs for the
    /// rules). Waits while the file's layout is being broken. The pin also counts as an
    /// open handle of the file until it is released, so an unlinked file outlives its pins
    /// (as it outlives its open descriptors) and is freed by the last release.
    pub fn pin_range(&self, ino: u64, offset: u64, len: u64) -> Result<RangePin> {
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let end = offset.checked_add(len).ok_or(Errno::EINVAL)?;
        let inode = self.inode(ino)?;
        let layout = rlock(&inode.layout);
        let st = rlock(&inode.st);
        if st.dead {
            return Err(Errno::ENOENT);
        }
        match st.kind() {
            Some(FileKind::File) => {}
            Some(FileKind::Dir) => return Err(Errno::EISDIR),
            _ => return Err(Errno::EINVAL),
        }
        if end > st.d.size {
            return Err(Errno::EINVAL);
        }
        // Find every block first: a hole fails the pin before any reference is taken.
        let mut runs: Vec<(u64, u64)> = Vec::new(); // (device block, blocks)
        let mut segments = Vec::new();
        let mut pos = offset;
        while pos < end {
            let lb = blk(pos);
            let e = st.ext.find(lb).ok_or(Errno::ENXIO)?;
            let piece_end = (e.end() * BLOCK_SIZE).min(end);
            let pstart = e.pblk + (lb - e.lblk);
            runs.push((pstart, blk(piece_end - 1) - lb + 1));
            segments.push((
                pstart * BLOCK_SIZE + pos % BLOCK_SIZE,
                (piece_end - pos) as usize,
            ));
            pos = piece_end;
        }
        let mut blocks: Vec<Range<u64>> = Vec::with_capacity(runs.len());
        for (pblk, n) in runs {
            let s = pblk - self.geo.data_start;
            for b in s..s + n {
                if !self.refs.pin(b) {
                    // A mapped block at count 0: a refcount bug. Undo and refuse.
                    self.refs.note_violation();
                    for r in blocks.iter().cloned().chain(std::iter::once(s..b)) {
                        r.for_each(|b| self.refs.unpin(b));
                    }
                    return Err(Errno::EIO);
                }
            }
            blocks.push(s..s + n);
        }
        // Under the state lock: an unlink either sees this open (and keeps the inode as
        // an orphan) or already freed the inode (then `dead` refused above).
        inode.opens.fetch_add(1, Ordering::SeqCst);
        inode.long_pins.fetch_add(1, Ordering::SeqCst);
        self.stats.pins_taken.fetch_add(1, Ordering::Relaxed);
        drop(st);
        drop(layout);
        Ok(RangePin {
            ino,
            offset,
            len,
            blocks,
            segments,
            inode: InodeRef(inode),
        })
    }

    /// Releases a pin; a block whose count drops to 1 wakes the truncates waiting on it.
    /// The last release of an unlinked file frees it.
    pub fn unpin_range(&self, pin: RangePin) {
        self.release_pin(&pin);
    }

    /// The work of `unpin_range`, for owners that cannot give the pin away (Drop); the
    /// caller must not use `pin` again.
    pub(crate) fn release_pin(&self, pin: &RangePin) {
        for r in &pin.blocks {
            for b in r.clone() {
                self.refs.unpin(b);
            }
        }
        pin.inode.0.long_pins.fetch_sub(1, Ordering::SeqCst);
        self.stats.pins_released.fetch_add(1, Ordering::Relaxed);
        // The open the pin held. A failure to free an unlinked file here leaves an orphan
        // that the next mount reclaims.
        let _ = self.release(pin.ino);
    }

    /// Long-term pins currently held on `ino` (0 for an unknown inode).
    pub fn long_term_pins(&self, ino: u64) -> u32 {
        self.inode(ino)
            .map_or(0, |i| i.long_pins.load(Ordering::SeqCst))
    }

    /// The filesystem's counters (see [`FsStats`]). The census walks the refcount table.
    pub fn stats(&self) -> FsStats {
        let census = self.refs.census();
        let r = self.refs.stats();
        let c = &self.stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        FsStats {
            blocks_total: self.geo.data_blocks,
            blocks_free: census.free,
            blocks_cached: census.cached,
            blocks_pinned: census.pinned,
            alloc_free: lock(&self.space).free_blocks(),
            pins_taken: get(&c.pins_taken),
            pins_released: get(&c.pins_released),
            block_pins: r.pins,
            block_unpins: r.unpins,
            layout_breaks: get(&c.layout_breaks),
            lease_breaks: get(&c.lease_breaks),
            waits: r.waits,
            wait_ns: r.wait_ns,
            timeouts: r.timeouts,
            violations: r.violations,
            commits: get(&c.commits),
            transactions: get(&c.transactions),
        }
    }
}
