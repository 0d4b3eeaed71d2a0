//! fuser's transport: `impl fuser::Filesystem for FuseAdapter` as thin shims (fuser's
//! arguments to an [`Op`], `serve`, and the [`Reply`] to fuser's reply call, each fuser
//! reply type being a [`ReplySink`]). No policy here: what a request does and answers is
//! decided in `serve`; this module only translates, and reports each request to busy
//! polling of /dev/fuse.

use super::convert::{ctx, errno, file_attr, file_type, set_time, wire_time};
use super::{DirEntry, FuseAdapter, NoReply, Op, Reply, ReplySink};
use daxfs::SetAttr;
use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, PollEvents, PollFlags,
    PollNotifier, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyPoll,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::SystemTime;

/// A reply of a kind the request never gives: a bug in `serve`, answered EIO rather than
/// leaving the request unanswered.
fn mismatch(reply: &Reply<'_>) -> Errno {
    debug_assert!(false, "reply {reply:?} to the wrong request");
    Errno::EIO
}

/// `impl ReplySink for` a fuser reply type: the listed replies, errnos, and EIO for the
/// rest ([`mismatch`]).
macro_rules! sink {
    ($t:ty, |$r:ident| { $($pat:pat => $e:expr,)* }) => {
        impl ReplySink for $t {
            fn send(self, reply: Reply<'_>) {
                let $r = self;
                match reply {
                    $($pat => $e,)*
                    Reply::Err(e) => $r.error(errno(e)),
                    other => $r.error(mismatch(&other)),
                }
            }
        }
    };
}

sink!(ReplyEntry, |r| {
    Reply::Entry { attr, ttl } => r.entry_node(
        INodeNo(super::node::of_attr(&attr)),
        &ttl,
        &file_attr(&attr),
        Generation(attr.generation),
    ),
});
sink!(ReplyAttr, |r| {
    Reply::Attr { attr, ttl } => r.attr(&ttl, &file_attr(&attr)),
});
sink!(ReplyData, |r| {
    Reply::Data(d) => r.data(&d.as_one_slice()),
    Reply::Bytes(b) => r.data(&b),
});
sink!(ReplyOpen, |r| {
    Reply::Opened { fh, flags } => r.opened(FileHandle(fh), FopenFlags::from_bits_retain(flags)),
});
sink!(ReplyCreate, |r| {
    Reply::Created { attr, ttl, fh, flags } => r.created_node(
        INodeNo(super::node::of_attr(&attr)),
        &ttl,
        &file_attr(&attr),
        Generation(attr.generation),
        FileHandle(fh),
        FopenFlags::from_bits_retain(flags),
    ),
});
sink!(ReplyWrite, |r| {
    Reply::Written(n) => r.written(n),
});
sink!(ReplyEmpty, |r| {
    Reply::Empty => r.ok(),
});
sink!(ReplyStatfs, |r| {
    Reply::Statfs(s) => r.statfs(
        s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
    ),
});
sink!(ReplyXattr, |r| {
    Reply::XattrSize(n) => r.size(n),
    Reply::Bytes(b) => r.data(&b),
});
sink!(ReplyLseek, |r| {
    Reply::Lseek(off) => r.offset(off),
});
sink!(ReplyPoll, |r| {
    Reply::Poll(events) => r.poll(PollEvents::from_bits_retain(events)),
});
sink!(ReplyIoctl, |r| {
    Reply::Ioctl { result, data } => r.ioctl(result, &data),
});

impl ReplySink for ReplyDirectory {
    fn send(self, reply: Reply<'_>) {
        match reply {
            Reply::Entries => self.ok(),
            Reply::Err(e) => self.error(errno(e)),
            other => self.error(mismatch(&other)),
        }
    }

    fn add_dir_entry(&mut self, e: &DirEntry<'_>) -> bool {
        let full = self.add(
            INodeNo(e.ino),
            e.offset,
            file_type(e.kind),
            OsStr::from_bytes(e.name),
        );
        !full
    }
}

impl ReplySink for ReplyDirectoryPlus {
    fn send(self, reply: Reply<'_>) {
        match reply {
            Reply::Entries => self.ok(),
            Reply::Err(e) => self.error(errno(e)),
            other => self.error(mismatch(&other)),
        }
    }

    fn add_dir_entry(&mut self, e: &DirEntry<'_>) -> bool {
        let Some((attr, ttl)) = e.attr else {
            return false;
        };
        let full = self.add(
            INodeNo(super::node::of_attr(attr)),
            e.offset,
            OsStr::from_bytes(e.name),
            &ttl,
            &file_attr(attr),
            Generation(attr.generation),
        );
        !full
    }
}

impl FuseAdapter {
    /// Every shim: report the request to busy polling, then serve it.
    fn shim<S: ReplySink>(&self, req: &Request, op: Op<'_>, sink: S) {
        self.arrived();
        self.serve(&ctx(req), op, sink);
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let mut max_write = self.max_write_wanted();
        if let Err(max) = config.set_max_write(max_write) {
            // Above fuser's own buffer size: take its maximum instead.
            let _ = config.set_max_write(max);
            max_write = max;
        }
        let mut want = self.init_flags_wanted();
        if self.want_uring {
            want |= super::init_flags::FUSE_OVER_IO_URING;
        }
        let granted = InitFlags::from_bits_retain(want) & config.capabilities();
        // Cannot fail: only capabilities the kernel offers are asked for.
        let _ = config.add_capabilities(granted);
        self.negotiated(granted.bits());
        if self.want_uring {
            let grant = if granted.bits() & super::init_flags::FUSE_OVER_IO_URING != 0 {
                // fuser 0.18 answers with its own minor (40) when the kernel's is newer.
                let minor = config.kernel_abi().1.min(40);
                Ok(super::RingGrant {
                    proto: crate::uring::request::Proto::new(minor, granted.bits()),
                    // The kernel's max_pages is at most max_pages_limit.
                    payload_size: crate::uring::queue::payload_size(
                        max_write,
                        super::kernel_max_pages(),
                        super::page_size() as usize,
                    ),
                    adapter: std::sync::Arc::new(self.twin()),
                })
            } else {
                Err(
                    "the kernel did not offer FUSE_OVER_IO_URING (Linux 6.14+ with fuse \
                     enable_uring=Y)"
                        .to_string(),
                )
            };
            let _ = self.ring.set(grant);
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.as_bytes();
        self.shim(
            req,
            Op::Lookup {
                parent: parent.0,
                name,
            },
            reply,
        );
    }

    /// batch_forget comes here through the trait's default.
    fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64) {
        self.shim(
            req,
            Op::Forget {
                ino: ino.0,
                nlookup,
            },
            NoReply,
        );
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let fh = fh.map(|f| f.0);
        self.shim(req, Op::Getattr { ino: ino.0, fh }, reply);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let changes = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            ctime: ctime.map(wire_time),
        };
        let (ino, fh) = (ino.0, fh.map(|f| f.0));
        self.shim(req, Op::Setattr { ino, fh, changes }, reply);
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.shim(req, Op::Readlink { ino: ino.0 }, reply);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let (parent, name) = (parent.0, name.as_bytes());
        let op = Op::Mknod {
            parent,
            name,
            mode,
            umask,
            rdev,
        };
        self.shim(req, op, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let (parent, name) = (parent.0, name.as_bytes());
        let op = Op::Mkdir {
            parent,
            name,
            mode,
            umask,
        };
        self.shim(req, op, reply);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (parent, name) = (parent.0, name.as_bytes());
        self.shim(req, Op::Unlink { parent, name }, reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (parent, name) = (parent.0, name.as_bytes());
        self.shim(req, Op::Rmdir { parent, name }, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let op = Op::Symlink {
            parent: parent.0,
            name: link_name.as_bytes(),
            target: target.as_os_str().as_bytes(),
        };
        self.shim(req, op, reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let op = Op::Rename {
            parent: parent.0,
            name: name.as_bytes(),
            newparent: newparent.0,
            newname: newname.as_bytes(),
            flags: flags.bits(),
        };
        self.shim(req, op, reply);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let op = Op::Link {
            ino: ino.0,
            newparent: newparent.0,
            newname: newname.as_bytes(),
        };
        self.shim(req, op, reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let op = Op::Open {
            ino: ino.0,
            flags: flags.0,
        };
        self.shim(req, op, reply);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let op = Op::Create {
            parent: parent.0,
            name: name.as_bytes(),
            mode,
            umask,
            flags,
        };
        self.shim(req, op, reply);
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let op = Op::Read {
            ino: ino.0,
            fh: fh.0,
            offset,
            size,
        };
        self.shim(req, op, reply);
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let op = Op::Write {
            ino: ino.0,
            fh: fh.0,
            offset,
            data,
            write_flags: write_flags.bits(),
            flags: flags.0,
        };
        self.shim(req, op, reply);
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let (ino, fh) = (ino.0, fh.0);
        self.shim(req, Op::Flush { ino, fh }, reply);
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let (ino, fh) = (ino.0, fh.0);
        self.shim(req, Op::Release { ino, fh }, reply);
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let (ino, fh) = (ino.0, fh.0);
        self.shim(req, Op::Fsync { ino, fh, datasync }, reply);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (ino, flags) = (ino.0, flags.0);
        self.shim(req, Op::Opendir { ino, flags }, reply);
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let (ino, fh) = (ino.0, fh.0);
        self.shim(req, Op::Readdir { ino, fh, offset }, reply);
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let (ino, fh) = (ino.0, fh.0);
        self.shim(req, Op::Readdirplus { ino, fh, offset }, reply);
    }

    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let (ino, fh) = (ino.0, fh.0);
        self.shim(req, Op::Releasedir { ino, fh }, reply);
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let (ino, fh) = (ino.0, fh.0);
        self.shim(req, Op::Fsyncdir { ino, fh, datasync }, reply);
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        self.shim(req, Op::Statfs { ino: ino.0 }, reply);
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        let op = Op::Setxattr {
            ino: ino.0,
            name: name.as_bytes(),
            value,
            flags,
            position,
        };
        self.shim(req, op, reply);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let (ino, name) = (ino.0, name.as_bytes());
        self.shim(req, Op::Getxattr { ino, name, size }, reply);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.shim(req, Op::Listxattr { ino: ino.0, size }, reply);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (ino, name) = (ino.0, name.as_bytes());
        self.shim(req, Op::Removexattr { ino, name }, reply);
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let (ino, mask) = (ino.0, mask.bits());
        self.shim(req, Op::Access { ino, mask }, reply);
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let op = Op::Fallocate {
            ino: ino.0,
            fh: fh.0,
            offset,
            length,
            mode,
        };
        self.shim(req, op, reply);
    }

    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let op = Op::Lseek {
            ino: ino.0,
            fh: fh.0,
            offset,
            whence,
        };
        self.shim(req, op, reply);
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let op = Op::CopyFileRange {
            ino_in: ino_in.0,
            fh_in: fh_in.0,
            offset_in,
            ino_out: ino_out.0,
            fh_out: fh_out.0,
            offset_out,
            len,
            flags: flags.bits(),
        };
        self.shim(req, op, reply);
    }

    fn poll(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        ph: PollNotifier,
        events: PollEvents,
        flags: PollFlags,
        reply: ReplyPoll,
    ) {
        let op = Op::Poll {
            ino: ino.0,
            fh: fh.0,
            events: events.bits(),
            flags: flags.bits(),
            // An error: the file was closed meanwhile; nobody to tell.
            waker: Box::new(move || {
                let _ = ph.notify();
            }),
        };
        self.shim(req, op, reply);
    }

    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        let op = Op::Ioctl {
            ino: ino.0,
            fh: fh.0,
            cmd,
            in_data,
            out_size,
        };
        self.shim(req, op, reply);
    }
}

#[cfg(test)]
mod tests {
    use super::super::init_flags::*;
    use super::*;

    #[test]
    fn init_flag_bits_are_fusers() {
        let pairs = [
            (FUSE_ASYNC_READ, InitFlags::FUSE_ASYNC_READ),
            (FUSE_ATOMIC_O_TRUNC, InitFlags::FUSE_ATOMIC_O_TRUNC),
            (FUSE_EXPORT_SUPPORT, InitFlags::FUSE_EXPORT_SUPPORT),
            (FUSE_BIG_WRITES, InitFlags::FUSE_BIG_WRITES),
            (FUSE_DONT_MASK, InitFlags::FUSE_DONT_MASK),
            (FUSE_HAS_IOCTL_DIR, InitFlags::FUSE_HAS_IOCTL_DIR),
            (FUSE_AUTO_INVAL_DATA, InitFlags::FUSE_AUTO_INVAL_DATA),
            (FUSE_DO_READDIRPLUS, InitFlags::FUSE_DO_READDIRPLUS),
            (FUSE_READDIRPLUS_AUTO, InitFlags::FUSE_READDIRPLUS_AUTO),
            (FUSE_WRITEBACK_CACHE, InitFlags::FUSE_WRITEBACK_CACHE),
            (FUSE_PARALLEL_DIROPS, InitFlags::FUSE_PARALLEL_DIROPS),
            (FUSE_POSIX_ACL, InitFlags::FUSE_POSIX_ACL),
            (FUSE_MAX_PAGES, InitFlags::FUSE_MAX_PAGES),
            (FUSE_CACHE_SYMLINKS, InitFlags::FUSE_CACHE_SYMLINKS),
            (
                FUSE_DIRECT_IO_ALLOW_MMAP,
                InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
            ),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(ours, theirs.bits());
        }
    }

    #[test]
    fn neutral_flag_words_are_fusers() {
        use super::super::{
            FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, FOPEN_PARALLEL_DIRECT_WRITES,
            FUSE_POLL_SCHEDULE_NOTIFY, FUSE_WRITE_CACHE,
        };
        assert_eq!(FOPEN_DIRECT_IO, FopenFlags::FOPEN_DIRECT_IO.bits());
        assert_eq!(FOPEN_KEEP_CACHE, FopenFlags::FOPEN_KEEP_CACHE.bits());
        assert_eq!(
            FOPEN_PARALLEL_DIRECT_WRITES,
            FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES.bits()
        );
        assert_eq!(FUSE_WRITE_CACHE, WriteFlags::FUSE_WRITE_CACHE.bits());
        assert_eq!(
            FUSE_POLL_SCHEDULE_NOTIFY,
            PollFlags::FUSE_POLL_SCHEDULE_NOTIFY.bits()
        );
    }
}
