//! The persistence interface every on-media writer uses: stores, cache-line flushes and
//! fences, as x86 gives them.

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
    /// Reports (and clears) a failure to write back earlier stores or flushes since the
    /// last call (an msync error, a test's injected fault): they have no error path of
    /// their own. The journal checks it after each fence, so a commit whose bytes may not
    /// be durable fails.
    fn take_error(&self) -> std::io::Result<()> {
        Ok(())
    }
    /// Bytes the media holds. Commit refuses, and replay stops at, a record that ends
    /// beyond it: a well-checksummed but hostile journal must not make replay write past
    /// the end of the device. The default (no limit) suits media that bound writes
    /// themselves.
    fn size(&self) -> u64 {
        u64::MAX
    }
}
