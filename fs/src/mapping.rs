//! Zero-copy pinned mappings of file ranges for in-process users of the library.
//!
//! [`DaxFs::map_pinned`] pins a file range (a long-term pin, see `pin.rs`) and hands out
//! views of the device bytes themselves ([`VolatileSlice`]): reading through a view reads
//! the medium, storing through a writable one stores into the file, with no copy in
//! between (a view's `read_at`/`write_at` copy straight between the caller's buffer and
//! the medium; `as_ptr`/`as_mut_ptr` give the address for an iovec). The mapping's
//! lifetime is its pin: while it lives, an operation that would take its blocks from the
//! file (truncate, punch hole, collapse, ...) waits in break_layouts, up to
//! `layout_timeout`, then fails with EBUSY. Dropping the mapping releases the pin and
//! wakes such waiters. A mapping also counts as an open handle, so an unlinked file lives
//! until its last mapping is dropped.
//!
//! Durability: stores through the mapping are ordinary CPU stores into the device mapping.
//! [`PinnedMapping::persist`] flushes the mapped bytes (cache-line flush + fence, or msync
//! where the device needs it); dropping a mapping that handed out mutable access persists
//! it too. Writes through a mapping change file data only: they do not update mtime, and
//! they are not ordered with the metadata journal.
//!
//! Concurrency: the bytes are shared with every other user of the file (reads and writes
//! through the mount or the library, other mappings of the same range, writable or not),
//! exactly like a `MAP_SHARED` mapping of the file: concurrent stores to the same bytes
//! race. That is why a mapping hands out views and never `&[u8]`/`&mut [u8]`: two
//! mappings of one range (or a mapping and a concurrent write) would otherwise be two
//! live references to the same changing bytes, undefined behaviour from safe code. A
//! second overlapping writable mapping is therefore allowed, as a second `mmap` is.

use crate::error::{Errno, Result};
use crate::filesystem::DaxFs;
use crate::pin::RangePin;
use daxfs_pmem::VolatileSlice;

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

    /// Whether stores through this mapping are allowed (not on a read-only mount, nor on
    /// a device opened read-only, where a store would be a bug the device panics on, nor
    /// into a file that is immutable or append-only now: a store would change its bytes).
    pub fn is_writable(&self) -> bool {
        !self.fs.opts.read_only
            && self.fs.dev.writable()
            && self
                .fs
                .inode_flags(self.ino())
                .is_ok_and(|f| !f.immutable && !f.append)
    }

    /// True when an operation has been waiting for this inode's pins since the mapping
    /// was made (a lease break): the holder should drop the mapping soon.
    pub fn layout_broken(&self) -> bool {
        self.pin().lease_epoch() != self.epoch
    }

    /// A read-only view of the mapped bytes, when they are contiguous on the device.
    pub fn as_slice(&self) -> Option<VolatileSlice<'_>> {
        match self.pin().segments.as_slice() {
            // The segment's blocks are pinned for as long as `self` lives (the view
            // borrows `self`), so they are neither freed nor reused; it lies inside the
            // device (it comes from the validated extent map).
            [(off, n)] => Some(self.fs.dev.volatile(*off, *n)),
            _ => None,
        }
    }

    /// A writable view of the mapped bytes, when they are contiguous on the device and
    /// the mount is writable. The stores are durable after [`persist`](Self::persist)
    /// or the mapping's drop. Another mapping of the same range may hold a writable view
    /// too: the views hand out no references, so that is a race on the bytes (as with
    /// two `MAP_SHARED` mappings), never undefined behaviour.
    pub fn as_mut_slice(&mut self) -> Option<VolatileSlice<'_>> {
        if !self.is_writable() {
            return None;
        }
        let (off, n) = match self.pin().segments.as_slice() {
            [one] => *one,
            _ => return None,
        };
        self.dirty = true;
        Some(self.fs.dev.volatile_mut(off, n))
    }

    /// Read-only views of the mapped bytes in file order, one per contiguous device run.
    pub fn segments(&self) -> Vec<VolatileSlice<'_>> {
        self.pin()
            .segments
            .iter()
            .map(|&(off, n)| self.fs.dev.volatile(off, n))
            .collect()
    }

    /// Writable views of the mapped bytes in file order, one per contiguous device run
    /// (empty on a read-only mount).
    pub fn segments_mut(&mut self) -> Vec<VolatileSlice<'_>> {
        if !self.is_writable() {
            return Vec::new();
        }
        self.dirty = true;
        let fs = self.fs;
        self.pin()
            .segments
            .iter()
            .map(|&(off, n)| fs.dev.volatile_mut(off, n))
            .collect()
    }

    /// Copies `buf.len()` mapped bytes starting `offset` bytes into the mapping (across
    /// segments) into `buf`; EINVAL unless they are all inside the mapping.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        let (mut pos, mut done) = (0usize, 0usize);
        for seg in self.segments() {
            if done == buf.len() {
                break;
            }
            let at = offset + done;
            if at < pos + seg.len() {
                let n = (pos + seg.len() - at).min(buf.len() - done);
                seg.read_at(at - pos, &mut buf[done..done + n])?;
                done += n;
            }
            pos += seg.len();
        }
        Ok(())
    }

    /// Stores `data` starting `offset` bytes into the mapping (across segments): EINVAL
    /// unless it fits, EROFS on a read-only mount. Durable after
    /// [`persist`](Self::persist) or the mapping's drop.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        if !self.is_writable() {
            return Err(Errno::EROFS);
        }
        self.check_range(offset, data.len())?;
        let (mut pos, mut done) = (0usize, 0usize);
        for seg in self.segments_mut() {
            if done == data.len() {
                break;
            }
            let at = offset + done;
            if at < pos + seg.len() {
                let n = (pos + seg.len() - at).min(data.len() - done);
                seg.write_at(at - pos, &data[done..done + n])?;
                done += n;
            }
            pos += seg.len();
        }
        Ok(())
    }

    /// The mapped bytes, copied into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        for seg in self.segments() {
            seg.append_to(&mut v);
        }
        v
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(Errno::EINVAL),
        }
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
