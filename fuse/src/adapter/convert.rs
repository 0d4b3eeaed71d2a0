//! Conversions between fuser's types and the core's (used by the fuser shim only):
//! attributes, file types, errnos, times, the sender of a request.

use super::Ctx;
use daxfs::Errno as CoreErrno;
use daxfs::{to_system_time, Attr, FileKind, SetTime};
use fuser::{Errno, FileAttr, FileType, INodeNo, Request, TimeOrNow};

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

/// Who sent a request, from fuser's.
pub fn ctx(req: &Request) -> Ctx {
    Ctx {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        unique: req.unique().0,
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
}
