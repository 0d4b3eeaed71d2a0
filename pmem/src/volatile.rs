//! Views of device memory that hand out no Rust references.
//!
//! The device mapping is shared memory: while one thread reads a file's bytes, another
//! may store to them (a write through the mount or the library, a pinned mapping). A Rust
//! `&[u8]` promises that its bytes do not change while it lives and a `&mut [u8]` that
//! nothing else reaches them; the compiler may rely on both (keep a value in a register,
//! drop a second load, move a store), so handing either out for such bytes is undefined
//! behaviour reachable from safe code. A [`VolatileSlice`] is a pointer and a length
//! instead: every access is an explicit copy through raw pointers (`copy_to`, `read_at`,
//! `write_at`, ...), so any number of views of the same bytes, writable or not, may live
//! at once, and nothing is assumed about the bytes between two copies. This is the rule
//! of crosvm's and fuse-backend-rs's volatile memory: no references or slices to
//! volatile memory.
//!
//! What views do not change: two threads copying to the same bytes at the same time
//! still race, exactly as two `MAP_SHARED` mappings of one file do (or `Device::write`
//! racing `Device::read`, which the device always allowed). The outcome is torn bytes,
//! never a broken Rust invariant (bytes have no invalid values, and the copies are
//! memcpys of memory the compiler knows nothing about). Rust's memory model formally
//! calls any unsynchronised non-atomic race undefined, and Miri reports one; the fix the
//! language lacks is an atomic per-byte memcpy (RFC 3301). Shared-memory crates
//! (vm-memory, crosvm) stand on the same ground.
//!
//! A view borrows what it points into (the [`Device`], or a buffer for
//! [`from_mut`](VolatileSlice::from_mut) and [`From<&[u8]>`]), so it cannot outlive the
//! mapping. It does not keep the *blocks* in the file: that is the job of the pin that
//! hands it out (`daxfs::PinnedMapping`, `read_with`); without one, the bytes may
//! belong to another file by the time they are read, which is a logic error, not a
//! memory-safety one.
//!
//! The one exception is [`VolatileSlice::as_bytes`], an `unsafe fn` used only where a
//! `&[u8]` is the only way to hand the bytes on (the FUSE read reply, see its SAFETY
//! comment in fuse/src/adapter/reply.rs, `gather`).
//!
//! Views are neither `Send` nor `Sync`: concurrent access from several threads is
//! possible by taking one view per thread from the pinned mapping, which is `Send`.

use crate::device::Device;
use std::cell::UnsafeCell;
use std::marker::PhantomData;

/// Why a copy through a [`VolatileSlice`] was refused (the core maps these to EINVAL
/// and EBADF, the errnos read(2)/write(2) give for the same mistakes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessError {
    /// The range is not entirely inside the view.
    OutOfRange,
    /// A store through a read-only view.
    ReadOnly,
    /// An atomic access at an offset (or address) that is not 8-byte aligned.
    Misaligned,
}

impl std::fmt::Display for AccessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AccessError::OutOfRange => "range outside the view",
            AccessError::ReadOnly => "store through a read-only view",
            AccessError::Misaligned => "atomic access not 8-byte aligned",
        })
    }
}

impl std::error::Error for AccessError {}

type Result<T> = std::result::Result<T, AccessError>;

/// `len()` bytes of shared memory, accessed only by copies (see the module docs).
#[derive(Clone, Copy)]
pub struct VolatileSlice<'a> {
    ptr: *mut u8,
    len: usize,
    /// The device and offset the bytes start at: writes go through the device (which
    /// bounds-checks them and feeds a recording device's model; reads need neither and
    /// copy straight from `ptr`) and `persist` flushes them. None for ordinary memory (a
    /// hole's zeros, a test buffer).
    dev: Option<(&'a Device, u64)>,
    /// Stores are allowed (a writable view of a writable device or a `&mut` buffer).
    writable: bool,
    /// Borrows the bytes as shared, mutable-through-copies memory for `'a`.
    _bytes: PhantomData<&'a [UnsafeCell<u8>]>,
}

impl std::fmt::Debug for VolatileSlice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolatileSlice")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("device_offset", &self.device_offset())
            .field("writable", &self.writable)
            .finish()
    }
}

impl<'a> From<&'a [u8]> for VolatileSlice<'a> {
    /// A read-only view of ordinary memory (e.g. zeros handed out for a hole).
    fn from(buf: &'a [u8]) -> Self {
        VolatileSlice {
            // Never written through: `writable` is false, so no method stores via it.
            ptr: buf.as_ptr().cast_mut(),
            len: buf.len(),
            dev: None,
            writable: false,
            _bytes: PhantomData,
        }
    }
}

impl<'a> VolatileSlice<'a> {
    /// A writable view of a buffer (tests, and code that treats device and ordinary
    /// memory alike). The buffer stays borrowed for as long as any copy of the view.
    pub fn from_mut(buf: &'a mut [u8]) -> Self {
        VolatileSlice {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            dev: None,
            writable: true,
            _bytes: PhantomData,
        }
    }

    /// A view of `len` bytes of `dev` at `off`, which the caller has checked lie inside
    /// the device (and, if `writable`, that the device is writable).
    ///
    /// # Safety
    /// `ptr..ptr+len` must be the device mapping's bytes `off..off+len`, and `dev` must
    /// keep them mapped for `'a` (a `Device` never unmaps while it lives).
    pub(crate) unsafe fn on_device(
        dev: &'a Device,
        ptr: *mut u8,
        off: u64,
        len: usize,
        writable: bool,
    ) -> Self {
        VolatileSlice {
            ptr,
            len,
            dev: Some((dev, off)),
            writable,
            _bytes: PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether stores through this view are allowed.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Device offset of the first byte; None for a view of ordinary memory.
    pub fn device_offset(&self) -> Option<u64> {
        self.dev.map(|(_, off)| off)
    }

    /// Bytes `offset..offset+len` of this view, or None when they are not all inside.
    pub fn subslice(&self, offset: usize, len: usize) -> Option<VolatileSlice<'a>> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        Some(VolatileSlice {
            // In bounds of the viewed bytes (checked above), so the same allocation.
            ptr: self.ptr.wrapping_add(offset),
            len,
            dev: self.dev.map(|(d, off)| (d, off + offset as u64)),
            writable: self.writable,
            _bytes: PhantomData,
        })
    }

    /// Copies the first `min(len(), buf.len())` bytes into `buf`; returns how many.
    pub fn copy_to(&self, buf: &mut [u8]) -> usize {
        let n = self.len.min(buf.len());
        self.copy_out(0, &mut buf[..n]);
        n
    }

    /// Stores the first `min(len(), data.len())` bytes of `data` at the start of the
    /// view; returns how many. `ReadOnly` on a read-only view.
    pub fn copy_from(&self, data: &[u8]) -> Result<usize> {
        let n = self.len.min(data.len());
        self.write_at(0, &data[..n])?;
        Ok(n)
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`; `OutOfRange` unless they are all inside.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        if !self.contains(offset, buf.len()) {
            return Err(AccessError::OutOfRange);
        }
        self.copy_out(offset, buf);
        Ok(())
    }

    /// Stores `data` at `offset`: EINVAL unless it fits, `ReadOnly` on a read-only view.
    /// On a device the stores are ordinary (cached) stores: durable after
    /// [`persist`](Self::persist).
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(AccessError::ReadOnly);
        }
        if !self.contains(offset, data.len()) {
            return Err(AccessError::OutOfRange);
        }
        match self.dev {
            // Through the device: bounds-checked again, memmove (`data` may itself be
            // device memory copied out by the caller), fed to a recording device.
            Some((dev, off)) => dev.write(off + offset as u64, data),
            // SAFETY: offset..offset+len is inside the view (checked), whose buffer
            // was borrowed mutably for 'a (`from_mut`, the only writable view of
            // ordinary memory); `data` is a Rust reference, so it cannot be those
            // bytes while they are mutably borrowed; copy() tolerates overlap anyway.
            None => unsafe { std::ptr::copy(data.as_ptr(), self.ptr.add(offset), data.len()) },
        }
        Ok(())
    }

    /// The bytes, copied into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.append_to(&mut v);
        v
    }

    /// Appends the bytes to `out` (one copy, no zero-fill of the new space first).
    pub fn append_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.len);
        let dst = out.spare_capacity_mut();
        // SAFETY: the view's bytes are readable for 'a; `dst` has room for len bytes
        // (reserved) and is the vector's own buffer, distinct from the view's bytes
        // (`out` is borrowed mutably, so no view of ordinary memory can point into it).
        // The copy initialises exactly the len bytes set_len then exposes.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr, dst.as_mut_ptr().cast::<u8>(), self.len);
            out.set_len(out.len() + self.len);
        }
    }

    /// Makes stores through this view durable (cache-line flush + fence, or msync where
    /// the device needs it). Nothing to do for ordinary memory or a read-only view.
    pub fn persist(&self) {
        if let (Some((dev, off)), true) = (self.dev, self.writable) {
            dev.persist(off, self.len as u64);
        }
    }

    /// Address of the first byte, to hand to the kernel (an iovec for writev, ...) or to
    /// copy from with raw pointers. Reading through it is the caller's `unsafe`; the
    /// bytes may change at any time.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Address of the first byte for stores (an iovec for readv, ...); None on a
    /// read-only view. On a recording device the bytes are counted as stored now
    /// (stores through the pointer are not seen one by one): persist after storing.
    pub fn as_mut_ptr(&self) -> Option<*mut u8> {
        if !self.writable {
            return None;
        }
        if let Some((dev, off)) = self.dev {
            dev.note_stored(off, self.len as u64);
        }
        Some(self.ptr)
    }

    /// The bytes as a Rust slice, for the one API that takes nothing else (the FUSE data
    /// reply, which passes it straight to writev).
    ///
    /// # Safety
    /// A `&[u8]` promises its bytes do not change while it lives: the caller must make
    /// sure nothing stores to these bytes (no write through the filesystem, no writable
    /// view or pinned mapping, no other process) until the returned slice is dead.
    pub unsafe fn as_bytes(&self) -> &[u8] {
        // SAFETY: the view's bytes are mapped and readable for 'a (by construction);
        // immutability while the slice lives is the caller's contract, per the doc.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Loads the u64 at `offset` (8-byte aligned) with acquire ordering: the one way to
    /// read a word another host or thread updates concurrently (the host table), seeing
    /// everything its writer stored before its release store.
    pub fn load_u64_acquire(&self, offset: usize) -> Result<u64> {
        let p = self.atomic_ptr(offset)?;
        // SAFETY: `atomic_ptr` checked that the 8 bytes are inside the view (mapped and
        // readable for 'a) and 8-byte aligned. Every concurrent access to these bytes
        // that matters is atomic too (the host table is only touched through these
        // methods); a plain copy racing with it reads torn bytes at worst, as any
        // shared mapping allows. No Rust reference to the bytes is created.
        let a = unsafe { std::sync::atomic::AtomicU64::from_ptr(p) };
        Ok(u64::from_le(a.load(std::sync::atomic::Ordering::Acquire)))
    }

    /// Stores `value` at `offset` (8-byte aligned) with release ordering: a reader that
    /// loads it with acquire sees every store made before it. Not flushed: the host table
    /// needs coherence, not durability.
    pub fn store_u64_release(&self, offset: usize, value: u64) -> Result<()> {
        let p = self.atomic_ptr_mut(offset)?;
        // SAFETY: as in `load_u64_acquire`, and the view is writable (checked by
        // `atomic_ptr_mut`), so the bytes are a writable mapping or a `&mut` buffer.
        let a = unsafe { std::sync::atomic::AtomicU64::from_ptr(p) };
        a.store(value.to_le(), std::sync::atomic::Ordering::Release);
        self.note_atomic_store(offset);
        Ok(())
    }

    /// Compare-and-swap of the u64 at `offset` (8-byte aligned, acquire-release): stores
    /// `new` if the word is `current`. Ok(previous) on success, Err(actual) otherwise.
    /// The outer Result is the access check.
    pub fn compare_exchange_u64(
        &self,
        offset: usize,
        current: u64,
        new: u64,
    ) -> Result<std::result::Result<u64, u64>> {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        let p = self.atomic_ptr_mut(offset)?;
        // SAFETY: as in `store_u64_release`.
        let a = unsafe { std::sync::atomic::AtomicU64::from_ptr(p) };
        let r = a
            .compare_exchange(current.to_le(), new.to_le(), AcqRel, Acquire)
            .map(u64::from_le)
            .map_err(u64::from_le);
        if r.is_ok() {
            self.note_atomic_store(offset);
        }
        Ok(r)
    }

    /// The address of the 8-byte word at `offset`, checked inside and aligned.
    fn atomic_ptr(&self, offset: usize) -> Result<*mut u64> {
        if !self.contains(offset, 8) {
            return Err(AccessError::OutOfRange);
        }
        // In bounds (checked), so the same allocation.
        let p = self.ptr.wrapping_add(offset);
        if !offset.is_multiple_of(8) || !(p as usize).is_multiple_of(8) {
            return Err(AccessError::Misaligned);
        }
        Ok(p.cast::<u64>())
    }

    fn atomic_ptr_mut(&self, offset: usize) -> Result<*mut u64> {
        if !self.writable {
            return Err(AccessError::ReadOnly);
        }
        self.atomic_ptr(offset)
    }

    /// A recording device does not see stores made by pointer: tell it.
    fn note_atomic_store(&self, offset: usize) {
        if let Some((dev, off)) = self.dev {
            dev.note_stored(off + offset as u64, 8);
        }
    }

    fn contains(&self, offset: usize, len: usize) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.len)
    }

    /// Copies `buf.len()` bytes at `offset`, which the caller checked lie inside.
    fn copy_out(&self, offset: usize, buf: &mut [u8]) {
        debug_assert!(self.contains(offset, buf.len()));
        // SAFETY: offset..offset+len is inside the view (caller checked), readable for
        // 'a; `buf` is a distinct Rust buffer (a `&mut`, so not these bytes).
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), buf.as_mut_ptr(), buf.len()) }
    }
}

#[cfg(test)]
mod tests {
    //! These run under Miri (`cargo +nightly miri test -p daxfs-pmem --lib volatile::`, also
    //! with `MIRIFLAGS=-Zmiri-tree-borrows`), which checks the aliasing rules the views
    //! exist for, except the device one (Miri runs no inline assembly). The first test
    //! with two `&mut [u8]` in place of the views, or a `&[u8]` read after a raw store to
    //! its bytes (what `Device::slice_mut`/`slice` allowed), is reported as undefined
    //! behaviour by Miri under both models.
    use super::*;

    #[test]
    fn two_writable_views_of_the_same_bytes_see_each_others_stores() {
        let mut buf = vec![0u8; 16];
        let a = VolatileSlice::from_mut(&mut buf);
        let b = a;
        a.write_at(0, b"abcd").unwrap();
        let mut got = [0u8; 4];
        b.read_at(0, &mut got).unwrap();
        assert_eq!(&got, b"abcd");
        b.write_at(2, b"XY").unwrap();
        a.read_at(0, &mut got).unwrap();
        assert_eq!(&got, b"abXY");
        // Interleaved again: neither view caches what it saw.
        a.write_at(3, b"Z").unwrap();
        assert_eq!(b.to_vec()[..4], *b"abXZ");
    }

    #[test]
    fn overlapping_subslices_alias_without_references() {
        let mut buf = vec![0u8; 32];
        let whole = VolatileSlice::from_mut(&mut buf);
        let lo = whole.subslice(0, 20).unwrap();
        let hi = whole.subslice(10, 22).unwrap();
        lo.write_at(10, b"shared").unwrap();
        let mut got = [0u8; 6];
        hi.read_at(0, &mut got).unwrap();
        assert_eq!(&got, b"shared");
        hi.copy_from(b"HI").unwrap();
        assert_eq!(lo.to_vec()[10..12], *b"HI");
    }

    #[test]
    fn accesses_outside_the_view_are_einval() {
        let mut buf = vec![0u8; 8];
        let v = VolatileSlice::from_mut(&mut buf);
        let mut b = [0u8; 4];
        assert_eq!(v.read_at(5, &mut b), Err(AccessError::OutOfRange));
        assert_eq!(v.read_at(usize::MAX, &mut b), Err(AccessError::OutOfRange));
        assert_eq!(v.write_at(6, b"abc"), Err(AccessError::OutOfRange));
        assert!(v.subslice(4, 5).is_none());
        assert!(v.subslice(usize::MAX, 2).is_none());
        assert_eq!(v.subslice(8, 0).map(|s| s.len()), Some(0));
    }

    #[test]
    fn copies_stop_at_the_shorter_side() {
        let mut buf = *b"12345678";
        let v = VolatileSlice::from_mut(&mut buf);
        let mut small = [0u8; 3];
        assert_eq!(v.copy_to(&mut small), 3);
        assert_eq!(&small, b"123");
        let mut big = [0u8; 12];
        assert_eq!(v.copy_to(&mut big), 8);
        assert_eq!(v.copy_from(b"abcdefghijk"), Ok(8));
        assert_eq!(v.to_vec(), b"abcdefgh");
        let mut out = b"<".to_vec();
        v.subslice(2, 3).unwrap().append_to(&mut out);
        assert_eq!(out, b"<cde");
    }

    #[test]
    // Miri runs no inline assembly (cpuid, cache-line flushes): native runs only.
    #[cfg_attr(miri, ignore)]
    fn two_writable_views_of_device_bytes_see_each_others_stores() {
        let dev = Device::memory(&[0u8; 4096]).unwrap();
        let a = dev.volatile_mut(64, 64);
        let b = dev.volatile_mut(96, 32);
        let r = dev.volatile(0, 4096);
        a.write_at(32, b"dev").unwrap();
        assert_eq!(b.to_vec()[..3], *b"dev");
        b.copy_from(b"DE").unwrap();
        let mut got = [0u8; 3];
        r.read_at(96, &mut got).unwrap();
        assert_eq!(&got, b"DEv");
        assert_eq!(a.device_offset(), Some(64));
        a.persist();
    }

    /// A u64-aligned buffer (a Vec<u8>'s start is only 1-aligned).
    fn aligned(words: usize) -> Vec<u64> {
        vec![0u64; words]
    }

    #[test]
    fn atomic_words_round_trip_and_cas_reports_the_actual_value() {
        let mut w = aligned(4);
        let bytes: &mut [u8] = bytemuck_bytes(&mut w);
        let v = VolatileSlice::from_mut(bytes);
        v.store_u64_release(8, 0x0102_0304_0506_0708).unwrap();
        assert_eq!(v.load_u64_acquire(8), Ok(0x0102_0304_0506_0708));
        // Little-endian on media, like every other field.
        assert_eq!(v.to_vec()[8], 0x08);
        assert_eq!(v.compare_exchange_u64(16, 0, 7), Ok(Ok(0)));
        assert_eq!(v.compare_exchange_u64(16, 0, 9), Ok(Err(7)));
        assert_eq!(v.load_u64_acquire(16), Ok(7));
    }

    #[test]
    fn atomic_words_must_be_inside_aligned_and_writable() {
        let mut w = aligned(2);
        let v = VolatileSlice::from_mut(bytemuck_bytes(&mut w));
        assert_eq!(v.load_u64_acquire(4), Err(AccessError::Misaligned));
        assert_eq!(v.load_u64_acquire(16), Err(AccessError::OutOfRange));
        assert_eq!(
            v.store_u64_release(usize::MAX - 3, 1),
            Err(AccessError::OutOfRange)
        );
        static ZEROS: [u8; 8] = [0; 8];
        let r = VolatileSlice::from(&ZEROS[..]);
        assert_eq!(r.store_u64_release(0, 1), Err(AccessError::ReadOnly));
        assert_eq!(r.compare_exchange_u64(0, 0, 1), Err(AccessError::ReadOnly));
    }

    fn bytemuck_bytes(w: &mut [u64]) -> &mut [u8] {
        let len = std::mem::size_of_val(w);
        // SAFETY: u64 has no padding and any byte pattern is a valid u64; the byte slice
        // borrows `w` mutably for its lifetime, so nothing else reaches the words.
        unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr().cast::<u8>(), len) }
    }

    #[test]
    fn a_view_of_shared_memory_refuses_stores() {
        static ZEROS: [u8; 8] = [0; 8];
        let v = VolatileSlice::from(&ZEROS[..]);
        assert!(!v.is_writable());
        assert_eq!(v.write_at(0, b"x"), Err(AccessError::ReadOnly));
        assert_eq!(v.copy_from(b"x"), Err(AccessError::ReadOnly));
        assert!(v.as_mut_ptr().is_none());
        v.persist();
        assert_eq!(v.to_vec(), [0u8; 8]);
        assert_eq!(v.device_offset(), None);
    }
}
