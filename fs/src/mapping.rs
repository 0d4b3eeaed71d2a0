//! Zero-copy pinned mappings of file ranges for in-process users of the library.
//!
//! [`DaxFs::map_pinned`] pins a file range (a long-term pin, see `pin.rs`) and hands out
//! the device bytes themselves: reading a slice reads the medium, storing into a mutable
//! slice stores into the file, with no copy. The mapping's lifetime is its pin: while it
//! lives, an operation that would take its blocks from the file (truncate, punch hole,
//! collapse, ...) waits in break_layouts, up to `layout_timeout`, then fails with EBUSY.
//! Dropping the mapping releases the pin and wakes such waiters. A mapping also counts as
//! an open handle, so an unlinked file lives until its last mapping is dropped.
//!
//! Durability: stores through the mapping are ordinary CPU stores into the device mapping.
//! [`PinnedMapping::persist`] flushes the mapped bytes (cache-line flush + fence, or msync
//! where the device needs it); dropping a mapping that handed out mutable access persists
//! it too. Writes through a mapping change file data only: they do not update mtime, and
//! they are not ordered with the metadata journal.
//!
//! Concurrency: the bytes are shared with every other user of the file (reads and writes
//! through the mount or the library, other mappings of the same range), exactly like a
//! `MAP_SHARED` mapping of the file: concurrent stores to the same bytes race.

use crate::error::{Errno, Result};
use crate::filesystem::DaxFs;
use crate::pin::RangePin;

/// A pinned, zero-copy view of `len()` bytes of a file (see the module docs).
pub struct PinnedMapping<'a> {
    fs: &'a DaxFs,
    pin: RangePin,
    /// The inode's lease break count when the mapping was made.
    epoch: u64,
    /// Mutable access was handed out: persist on drop.
    dirty: bool,
}

impl DaxFs {
    /// Pins bytes `offset..offset+len` of regular file `ino` and maps them (zero copy).
    /// The range must be inside the file and fully allocated: EINVAL past EOF or for a
    /// length of 0, ENXIO on a hole (fallocate it first), EISDIR/EINVAL for other kinds,
    /// ENOENT for a removed inode. Waits while the file's layout is being broken.
    pub fn map_pinned(&self, ino: u64, offset: u64, len: u64) -> Result<PinnedMapping<'_>> {
        if usize::try_from(len).is_err() {
            return Err(Errno::EINVAL);
        }
        let pin = self.pin_range(ino, offset, len)?;
        let epoch = pin.lease_epoch();
        Ok(PinnedMapping {
            fs: self,
            pin,
            epoch,
            dirty: false,
        })
    }
}

impl std::fmt::Debug for PinnedMapping<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedMapping")
            .field("pin", &self.pin)
            .field("dirty", &self.dirty)
            .finish()
    }
}

impl PinnedMapping<'_> {
    fn pin(&self) -> &RangePin {
        &self.pin
    }

    pub fn ino(&self) -> u64 {
        self.pin().ino()
    }

    /// File offset of the first mapped byte.
    pub fn offset(&self) -> u64 {
        self.pin().offset()
    }

    /// Mapped bytes.
    pub fn len(&self) -> usize {
        self.pin().len() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the range is one contiguous run of device bytes, so that
    /// [`as_slice`](Self::as_slice) and [`as_mut_slice`](Self::as_mut_slice) can hand it
    /// out whole (large files are allocated in contiguous runs, so this is the usual case).
    pub fn is_contiguous(&self) -> bool {
        self.pin().segments.len() == 1
    }

    /// Whether stores through this mapping are allowed (not on a read-only mount).
    pub fn is_writable(&self) -> bool {
        !self.fs.opts.read_only
    }

    /// True when an operation has been waiting for this inode's pins since the mapping
    /// was made (a lease break): the holder should drop the mapping soon.
    pub fn layout_broken(&self) -> bool {
        self.pin().lease_epoch() != self.epoch
    }

    /// The mapped bytes, as one slice when they are contiguous on the device.
    pub fn as_slice(&self) -> Option<&[u8]> {
        match self.pin().segments.as_slice() {
            // SAFETY: the blocks of the segment are pinned for as long as `self` lives
            // (the slice borrows `self`), so they are neither freed nor reused; the
            // segment lies inside the device (it comes from the validated extent map).
            // Other writers may store to the bytes concurrently, as the module docs say.
            [(off, n)] => Some(unsafe { self.fs.dev.slice(*off, *n) }),
            _ => None,
        }
    }

    /// The mapped bytes, mutable, as one slice when they are contiguous on the device and
    /// the mount is writable. The stores are durable after [`persist`](Self::persist) or
    /// the mapping's drop.
    pub fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        if !self.is_writable() {
            return None;
        }
        let (off, n) = match self.pin().segments.as_slice() {
            [one] => *one,
            _ => return None,
        };
        self.dirty = true;
        // SAFETY: as in `as_slice`; the slice borrows `self` mutably, so this mapping
        // hands out no other reference to these bytes while it lives.
        Some(unsafe { self.fs.dev.slice_mut(off, n) })
    }

    /// The mapped bytes in file order, one slice per contiguous device run.
    pub fn segments(&self) -> Vec<&[u8]> {
        self.pin()
            .segments
            .iter()
            // SAFETY: as in `as_slice`.
            .map(|&(off, n)| unsafe { self.fs.dev.slice(off, n) })
            .collect()
    }

    /// The mapped bytes in file order, mutable, one slice per contiguous device run (empty
    /// on a read-only mount).
    pub fn segments_mut(&mut self) -> Vec<&mut [u8]> {
        if !self.is_writable() {
            return Vec::new();
        }
        self.dirty = true;
        let fs = self.fs;
        self.pin()
            .segments
            .iter()
            // SAFETY: as in `as_mut_slice`; the segments of one pin never overlap (they
            // are distinct blocks of one file), so the slices are disjoint.
            .map(|&(off, n)| unsafe { fs.dev.slice_mut(off, n) })
            .collect()
    }

    /// Makes the stores made through this mapping durable.
    pub fn persist(&self) {
        for &(off, n) in &self.pin().segments {
            self.fs.dev.persist(off, n as u64);
        }
    }
}

impl Drop for PinnedMapping<'_> {
    fn drop(&mut self) {
        if self.dirty {
            self.persist();
        }
        // Also the open the pin held: the last one of an unlinked file frees it.
        self.fs.release_pin(&self.pin);
    }
}
