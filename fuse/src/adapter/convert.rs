//! Conversions between the core's values and FUSE's: attributes, file types, errnos,
//! times, the open reply's caching flags, the O_APPEND decision of a write, the pieces of
//! a read reply and the answers to xattr requests.

use daxfs::Errno as CoreErrno;
use daxfs::{to_system_time, Attr, Cred, FileKind, SetTime};
use daxfs_pmem::VolatileSlice;
use fuser::{
    Errno, FileAttr, FileType, FopenFlags, INodeNo, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::borrow::Cow;

/// A core errno as fuser's.
pub fn errno(e: CoreErrno) -> Errno {
    Errno::from_i32(e.0)
}

pub fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
    }
}

pub fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: to_system_time(a.atime),
        mtime: to_system_time(a.mtime),
        ctime: to_system_time(a.ctime),
        crtime: to_system_time(a.btime),
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

pub fn cred(req: &Request) -> Cred {
    Cred {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

pub fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(wire_time(t)),
    }
}

/// The (seconds, nanoseconds) the kernel sent, from the SystemTime fuser made of them.
/// fuser 0.18 turns a negative wire time (s, ns) into `EPOCH - (|s| + ns)` instead of
/// `EPOCH - |s| + ns`; undo exactly that so times before 1970 keep their value.
pub fn wire_time(t: std::time::SystemTime) -> daxfs_format::Timespec {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(_) => daxfs::from_system_time(t),
        Err(e) => {
            let d = e.duration();
            daxfs_format::Timespec {
                sec: -(d.as_secs() as i64),
                nsec: d.subsec_nanos(),
            }
        }
    }
}

/// `FOPEN_*` flags of an open reply: bypass the kernel page cache for DAX inodes (and let
/// their direct writes run in parallel; the core is thread-safe), keep the cache across
/// opens otherwise (every change goes through this kernel, so it stays valid).
pub fn open_reply_flags(kernel_may_cache: bool) -> FopenFlags {
    if kernel_may_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
    }
}

/// Whether a write must go to the true EOF. `req_flags` are the file's current flags as
/// the kernel sends them with each write (they follow fcntl(F_SETFL)); `fh_flags` those of
/// the open, used when the kernel sends none (ABI < 7.9).
pub fn write_appends(
    req_flags: i32,
    fh_flags: i32,
    write_flags: WriteFlags,
    writeback: bool,
) -> bool {
    if writeback || write_flags.contains(WriteFlags::FUSE_WRITE_CACHE) {
        // The kernel computed the offset itself (writeback cache), or this is a page
        // cache flush of some earlier write: its offset is exact.
        return false;
    }
    let flags = if req_flags != 0 { req_flags } else { fh_flags };
    flags & libc::O_APPEND != 0
}

/// The pieces of a read as one slice for the FUSE reply (fuser's `ReplyData::data` takes
/// nothing else): the piece's own bytes when there is at most one (zero copy), copied
/// into one buffer otherwise.
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

pub(super) fn reply_xattr(reply: ReplyXattr, r: daxfs::Result<Vec<u8>>, size: u32) {
    match r {
        Err(e) => reply.error(errno(e)),
        Ok(v) => match xattr_answer(&v, size) {
            XattrAnswer::Size(n) => reply.size(n),
            XattrAnswer::Data(d) => reply.data(d),
            XattrAnswer::Range => reply.error(Errno::ERANGE),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use daxfs_format::Timespec;
    use std::time::{Duration, SystemTime};

    fn attr(kind: FileKind) -> Attr {
        Attr {
            ino: 42,
            generation: 7,
            size: 5000,
            blocks: 16,
            atime: Timespec { sec: 1, nsec: 2 },
            mtime: Timespec { sec: 3, nsec: 4 },
            ctime: Timespec { sec: 5, nsec: 6 },
            btime: Timespec { sec: 7, nsec: 8 },
            kind,
            perm: 0o4755,
            nlink: 2,
            uid: 1000,
            gid: 100,
            rdev: 0x0801,
            blksize: 4096,
            dax: false,
        }
    }

    #[test]
    fn core_errno_becomes_the_same_fuse_errno() {
        for e in [CoreErrno::ENOENT, CoreErrno::ENOTEMPTY, CoreErrno::EXDEV] {
            assert_eq!(errno(e).code(), e.0);
        }
    }

    #[test]
    fn file_attr_copies_every_field_with_nanosecond_times() {
        let a = file_attr(&attr(FileKind::File));
        assert_eq!(a.ino, INodeNo(42));
        assert_eq!((a.size, a.blocks, a.perm, a.nlink), (5000, 16, 0o4755, 2));
        assert_eq!((a.uid, a.gid, a.rdev, a.blksize), (1000, 100, 0x0801, 4096));
        assert_eq!(a.kind, FileType::RegularFile);
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_nanos())
        };
        assert_eq!(secs(a.atime), Some(1_000_000_002));
        assert_eq!(secs(a.mtime), Some(3_000_000_004));
        assert_eq!(secs(a.ctime), Some(5_000_000_006));
        assert_eq!(secs(a.crtime), Some(7_000_000_008));
    }

    #[test]
    fn every_file_kind_maps_to_its_fuse_type() {
        let pairs = [
            (FileKind::File, FileType::RegularFile),
            (FileKind::Dir, FileType::Directory),
            (FileKind::Symlink, FileType::Symlink),
            (FileKind::Fifo, FileType::NamedPipe),
            (FileKind::Socket, FileType::Socket),
            (FileKind::CharDev, FileType::CharDevice),
            (FileKind::BlockDev, FileType::BlockDevice),
        ];
        for (k, t) in pairs {
            assert_eq!(file_type(k), t);
        }
    }

    #[test]
    fn utime_now_and_specific_times_map_to_set_time() {
        assert_eq!(set_time(TimeOrNow::Now), SetTime::Now);
        let t = SystemTime::UNIX_EPOCH + Duration::new(10, 20);
        assert_eq!(
            set_time(TimeOrNow::SpecificTime(t)),
            SetTime::At(Timespec { sec: 10, nsec: 20 })
        );
    }

    #[test]
    fn dax_inodes_open_direct_io_and_cacheable_ones_keep_cache() {
        let d = open_reply_flags(false);
        assert!(d.contains(FopenFlags::FOPEN_DIRECT_IO));
        assert!(!d.contains(FopenFlags::FOPEN_KEEP_CACHE));
        let c = open_reply_flags(true);
        assert!(c.contains(FopenFlags::FOPEN_KEEP_CACHE));
        assert!(!c.contains(FopenFlags::FOPEN_DIRECT_IO));
    }

    #[test]
    fn write_appends_when_the_file_flags_say_o_append() {
        let none = WriteFlags::empty();
        let wa = libc::O_WRONLY | libc::O_APPEND;
        assert!(write_appends(wa, wa, none, false));
        assert!(!write_appends(libc::O_WRONLY, libc::O_WRONLY, none, false));
    }

    #[test]
    fn write_follows_the_current_flags_after_fcntl_clears_o_append() {
        let opened = libc::O_WRONLY | libc::O_APPEND;
        assert!(!write_appends(
            libc::O_WRONLY,
            opened,
            WriteFlags::empty(),
            false
        ));
    }

    #[test]
    fn write_uses_the_open_flags_when_the_kernel_sends_none() {
        let opened = libc::O_WRONLY | libc::O_APPEND;
        assert!(write_appends(0, opened, WriteFlags::empty(), false));
    }

    #[test]
    fn writeback_cache_writes_never_append() {
        let wa = libc::O_WRONLY | libc::O_APPEND;
        assert!(!write_appends(wa, wa, WriteFlags::empty(), true));
        assert!(!write_appends(wa, wa, WriteFlags::FUSE_WRITE_CACHE, false));
    }

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
