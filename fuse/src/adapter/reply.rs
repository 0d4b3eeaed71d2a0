//! Replies in transport-neutral form: what [`FuseAdapter::serve`](super::FuseAdapter::serve)
//! answers a request with ([`Reply`]), and the [`ReplySink`] a transport gives it to
//! receive that answer, now or (for a request that waits for pins) later from a waiter
//! thread. A transport encodes a [`Reply`] into its wire format; no fuser type appears
//! here.
//!
//! Why a sink rather than a returned value: a READ's data are volatile views of the
//! device mapping that are valid only while the core holds the file's blocks, which is
//! inside [`DaxFs::read_with`](daxfs::DaxFs::read_with)'s callback; the reply is
//! therefore handed to the transport from there ([`Reply::Data`], zero copy), and the
//! same sink is what a deferred request's waiter answers through.

use daxfs::{Attr, Errno, FileKind, StatFs};
use daxfs_pmem::VolatileSlice;
use std::borrow::Cow;
use std::time::Duration;

/// `FOPEN_DIRECT_IO` of an open reply: bypass the kernel page cache.
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
/// `FOPEN_KEEP_CACHE`: keep the cached pages across opens.
pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;
/// `FOPEN_PARALLEL_DIRECT_WRITES`: direct writes to the file may run in parallel.
pub const FOPEN_PARALLEL_DIRECT_WRITES: u32 = 1 << 6;

/// The answer to one request.
#[derive(Debug)]
pub enum Reply<'a> {
    /// LOOKUP, MKNOD, MKDIR, SYMLINK, LINK: an entry (generation `attr.generation`); the
    /// kernel's new reference to it is already counted.
    Entry { attr: Attr, ttl: Duration },
    /// GETATTR, SETATTR.
    Attr { attr: Attr, ttl: Duration },
    /// READ: the bytes, straight from the device mapping.
    Data(ReadData<'a>),
    /// READLINK's target; GETXATTR's value or LISTXATTR's names when they fit.
    Bytes(Vec<u8>),
    /// GETXATTR, LISTXATTR with size 0: the length.
    XattrSize(u32),
    /// WRITE, COPY_FILE_RANGE: bytes written.
    Written(u32),
    /// OPEN, OPENDIR: the handle and the `FOPEN_*` flags.
    Opened { fh: u64, flags: u32 },
    /// CREATE: the entry (reference counted) and the open of it.
    Created {
        attr: Attr,
        ttl: Duration,
        fh: u64,
        flags: u32,
    },
    /// READDIR, READDIRPLUS: the entries the sink took through
    /// [`ReplySink::add_dir_entry`] are the reply.
    Entries,
    /// STATFS.
    Statfs(StatFs),
    /// LSEEK: the offset found.
    Lseek(i64),
    /// POLL: the ready events (poll(2) bits).
    Poll(u32),
    /// IOCTL: the result and the bytes copied out.
    Ioctl { result: i32, data: Vec<u8> },
    /// Success without data (UNLINK, RELEASE, SETXATTR, ...).
    Empty,
    /// The request failed with this errno.
    Err(Errno),
}

/// A READ's data: the pieces of the range in order (device mapping, or zeros for holes).
/// Only the adapter's read path makes one, from inside `read_with` while the core holds
/// the blocks (inode state lock shared, blocks pinned): it borrows that scope, so it
/// cannot outlive it, and nothing stores to its bytes while it lives (see the SAFETY
/// comment in `FuseAdapter::read`).
#[derive(Debug)]
pub struct ReadData<'a> {
    pieces: &'a [VolatileSlice<'a>],
}

impl<'a> ReadData<'a> {
    /// # Safety
    /// Nothing may store to the pieces' bytes while the value lives (what `read_with`'s
    /// callback guarantees for its pieces).
    pub(super) unsafe fn new(pieces: &'a [VolatileSlice<'a>]) -> ReadData<'a> {
        ReadData { pieces }
    }

    /// The pieces, for a transport that copies them (into a ring buffer, say).
    pub fn pieces(&self) -> &[VolatileSlice<'a>] {
        self.pieces
    }

    /// Bytes in all.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(|p| p.len()).sum()
    }

    /// Whether the read found nothing (at or past EOF).
    pub fn is_empty(&self) -> bool {
        self.pieces.iter().all(|p| p.is_empty())
    }

    /// The data as one slice: the piece itself when there is at most one (zero copy),
    /// gathered into one buffer otherwise ([`gather`]).
    pub fn as_one_slice(&self) -> Cow<'_, [u8]> {
        // SAFETY: nothing stores to the pieces while `self` lives (the type's invariant,
        // established by `new`'s contract), and the slice borrows `self`.
        unsafe { gather(self.pieces) }
    }
}

/// One directory entry of a READDIR or READDIRPLUS reply.
#[derive(Debug)]
pub struct DirEntry<'a> {
    pub ino: u64,
    /// The cookie that continues after this entry.
    pub offset: u64,
    pub kind: FileKind,
    pub name: &'a [u8],
    /// READDIRPLUS: the entry's attributes and their TTL (None for READDIR).
    pub attr: Option<(&'a Attr, Duration)>,
}

/// Where a request's reply goes. `Send + 'static` because a request that waits for pins
/// is answered from a waiter thread (`crate::deferred`).
pub trait ReplySink: Send + 'static {
    /// Sends the reply; called exactly once per request that has one (not FORGET).
    fn send(self, reply: Reply<'_>);

    /// READDIR and READDIRPLUS: appends one entry to the reply being built; false when it
    /// does not fit (nothing appended), which ends the listing. Called before `send`.
    fn add_dir_entry(&mut self, entry: &DirEntry<'_>) -> bool {
        let _ = entry;
        false
    }
}

/// The sink of a request that has no reply (FORGET).
#[derive(Debug, Default)]
pub struct NoReply;

impl ReplySink for NoReply {
    fn send(self, _reply: Reply<'_>) {}
}

/// Whether [`FuseAdapter::serve`](super::FuseAdapter::serve) answered at once or handed
/// the sink to a waiter thread, which answers later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// The sink was called (or the request has no reply).
    Now,
    /// The sink is with a waiter thread; the transport must keep the request's slot.
    Deferred,
}

/// The pieces of a read as one slice (fuser's `ReplyData::data` takes nothing else): the
/// piece's own bytes when there is at most one (zero copy), copied into one buffer
/// otherwise.
///
/// # Safety
/// As for [`VolatileSlice::as_bytes`]: nothing may store to the pieces' bytes while the
/// returned slice lives.
pub unsafe fn gather<'a>(pieces: &'a [VolatileSlice<'_>]) -> Cow<'a, [u8]> {
    match pieces {
        [] => Cow::Borrowed(&[]),
        // SAFETY: the caller's contract, per the doc.
        [one] => Cow::Borrowed(unsafe { one.as_bytes() }),
        many => {
            let mut buf = Vec::with_capacity(many.iter().map(|p| p.len()).sum());
            for p in many {
                p.append_to(&mut buf);
            }
            Cow::Owned(buf)
        }
    }
}

/// How an xattr value (or name list) answers a request with buffer `size`.
#[derive(Debug, PartialEq, Eq)]
pub enum XattrAnswer<'a> {
    /// `size` 0 is a probe: answer with the length.
    Size(u32),
    Data(&'a [u8]),
    /// The buffer is too small.
    Range,
}

pub fn xattr_answer(value: &[u8], size: u32) -> XattrAnswer<'_> {
    if size == 0 {
        match u32::try_from(value.len()) {
            Ok(n) => XattrAnswer::Size(n),
            Err(_) => XattrAnswer::Range,
        }
    } else if value.len() > size as usize {
        XattrAnswer::Range
    } else {
        XattrAnswer::Data(value)
    }
}

/// The reply to an xattr request that gave `r`, with buffer `size`.
pub(super) fn xattr_reply(r: daxfs::Result<Vec<u8>>, size: u32) -> Reply<'static> {
    match r {
        Err(e) => Reply::Err(e),
        Ok(v) => match xattr_answer(&v, size) {
            XattrAnswer::Size(n) => Reply::XattrSize(n),
            XattrAnswer::Data(_) => Reply::Bytes(v),
            XattrAnswer::Range => Reply::Err(Errno::ERANGE),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_read_piece_is_borrowed_not_copied() {
        let data = [1u8, 2, 3];
        let one = [VolatileSlice::from(&data[..])];
        // SAFETY: nothing stores to `data` (or anything) in this test.
        let g = unsafe { gather(&one) };
        assert!(matches!(g, Cow::Borrowed(b) if b.as_ptr() == data.as_ptr()));
        // SAFETY: as above.
        assert!(matches!(unsafe { gather(&[]) }, Cow::Borrowed(b) if b.is_empty()));
    }

    #[test]
    fn several_read_pieces_are_gathered_in_order() {
        let (a, b) = ([1u8, 2], [0u8; 3]);
        let pieces = [&a[..], &b[..], &a[..1]].map(VolatileSlice::from);
        // SAFETY: nothing stores to `a` or `b` in this test.
        assert_eq!(&*unsafe { gather(&pieces) }, &[1, 2, 0, 0, 0, 1]);
    }

    #[test]
    fn xattr_size_zero_is_a_length_probe() {
        assert_eq!(xattr_answer(b"abcd", 0), XattrAnswer::Size(4));
        assert_eq!(xattr_answer(b"", 0), XattrAnswer::Size(0));
    }

    #[test]
    fn xattr_too_small_buffer_is_erange_and_exact_fit_is_data() {
        assert_eq!(xattr_answer(b"abcd", 3), XattrAnswer::Range);
        assert_eq!(xattr_answer(b"abcd", 4), XattrAnswer::Data(b"abcd"));
        assert_eq!(xattr_answer(b"abcd", 100), XattrAnswer::Data(b"abcd"));
    }
}
