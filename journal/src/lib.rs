//! daxfs-journal: the metadata redo journal over a persistent byte region.
//!
//! This crate owns the journal's on-media format, transactions, commit, replay at
//! mount and checkpoints. It knows nothing of inodes or directories: a transaction is
//! a list of (device offset, bytes) writes to metadata, made durable in the journal
//! before they are applied to their home locations.

/// A persistent byte region the journal writes to: the device mapping in daxfs, an
/// in-memory model in tests. Offsets are absolute byte offsets of the device.
///
/// The persistence model is x86's: a store is durable only once its cache line was
/// flushed and a fence followed.
pub trait Media: Send + Sync {
    /// Copies `buf.len()` bytes at `off` into `buf`.
    fn read(&self, off: u64, buf: &mut [u8]);
    /// Stores `data` at `off` (not yet durable).
    fn write(&self, off: u64, data: &[u8]);
    /// Flushes the cache lines covering `off..off+len` (durable after the next fence).
    fn flush(&self, off: u64, len: u64);
    /// Orders and completes preceding flushes (sfence).
    fn fence(&self);
}
