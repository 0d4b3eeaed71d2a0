//! Requests in transport-neutral form: who sent one ([`Ctx`]) and its decoded arguments
//! ([`Op`]), one variant per opcode the mount serves. A transport (fuser's /dev/fuse loop
//! in `fuser_shim`, the io_uring queues) decodes its wire format into these and hands
//! them to [`FuseAdapter::serve`](super::FuseAdapter::serve); no fuser type appears here.
//!
//! Arguments are the kernel's, decoded but not interpreted: flags stay the raw words of
//! the FUSE ABI (open(2) flags, `FUSE_WRITE_*`, `FUSE_POLL_*`, renameat2 flags), so that
//! what they mean is decided once, in the adapter.

use daxfs::{Cred, SetAttr};

/// The sender of a request, from its `fuse_in_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// The request's id (`unique`), for logs; replies are matched by the transport.
    pub unique: u64,
}

impl Ctx {
    /// The credentials the core checks permissions with.
    pub fn cred(&self) -> Cred {
        Cred {
            uid: self.uid,
            gid: self.gid,
            pid: self.pid,
        }
    }
}

/// `fuse_write_in.write_flags`: the write is a page cache flush (writeback cache), its
/// offset exact.
pub const FUSE_WRITE_CACHE: u32 = 1 << 0;

/// `fuse_poll_in.flags`: the kernel wants a FUSE_NOTIFY_POLL when the handle's state
/// changes.
pub const FUSE_POLL_SCHEDULE_NOTIFY: u32 = 1 << 0;

/// Sends the FUSE_NOTIFY_POLL of one pending poll (its `kh`), once. Made by the transport
/// that received the POLL; called by the lease-break notifier thread.
pub type PollWaker = Box<dyn FnOnce() + Send>;

/// One request's decoded arguments. Inode numbers are the kernel's `nodeid`s (the root
/// is 1, as in the core); `fh` is the handle the adapter gave out at open.
pub enum Op<'a> {
    /// FUSE_LOOKUP of `name` in directory `parent` (also "." and ".." for NFS export).
    Lookup { parent: u64, name: &'a [u8] },
    /// FUSE_FORGET / FUSE_BATCH_FORGET (one per inode): the kernel dropped `nlookup`
    /// references. Has no reply.
    Forget { ino: u64, nlookup: u64 },
    /// FUSE_GETATTR.
    Getattr { ino: u64, fh: Option<u64> },
    /// FUSE_SETATTR: the changes `fuse_setattr_in` asks for (a size change is a truncate,
    /// which may wait for pins).
    Setattr {
        ino: u64,
        fh: Option<u64>,
        changes: SetAttr,
    },
    /// FUSE_READLINK.
    Readlink { ino: u64 },
    /// FUSE_MKNOD; `umask` as sent with FUSE_DONT_MASK (0 otherwise).
    Mknod {
        parent: u64,
        name: &'a [u8],
        mode: u32,
        umask: u32,
        rdev: u32,
    },
    /// FUSE_MKDIR.
    Mkdir {
        parent: u64,
        name: &'a [u8],
        mode: u32,
        umask: u32,
    },
    /// FUSE_UNLINK.
    Unlink { parent: u64, name: &'a [u8] },
    /// FUSE_RMDIR.
    Rmdir { parent: u64, name: &'a [u8] },
    /// FUSE_SYMLINK: `name` in `parent` pointing at `target`.
    Symlink {
        parent: u64,
        name: &'a [u8],
        target: &'a [u8],
    },
    /// FUSE_RENAME / FUSE_RENAME2; `flags` are renameat2's.
    Rename {
        parent: u64,
        name: &'a [u8],
        newparent: u64,
        newname: &'a [u8],
        flags: u32,
    },
    /// FUSE_LINK: a new name for `ino`.
    Link {
        ino: u64,
        newparent: u64,
        newname: &'a [u8],
    },
    /// FUSE_OPEN with open(2) `flags` (O_TRUNC may wait for pins).
    Open { ino: u64, flags: i32 },
    /// FUSE_CREATE.
    Create {
        parent: u64,
        name: &'a [u8],
        mode: u32,
        umask: u32,
        flags: i32,
    },
    /// FUSE_READ of up to `size` bytes.
    Read {
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
    },
    /// FUSE_WRITE. `write_flags` are `fuse_write_in.write_flags` ([`FUSE_WRITE_CACHE`]),
    /// `flags` the file's current open(2) flags as the kernel sends them (0 before ABI
    /// 7.9).
    Write {
        ino: u64,
        fh: u64,
        offset: u64,
        data: &'a [u8],
        write_flags: u32,
        flags: i32,
    },
    /// FUSE_FLUSH.
    Flush { ino: u64, fh: u64 },
    /// FUSE_RELEASE: the last descriptor of open `fh` is gone.
    Release { ino: u64, fh: u64 },
    /// FUSE_FSYNC.
    Fsync { ino: u64, fh: u64, datasync: bool },
    /// FUSE_OPENDIR.
    Opendir { ino: u64, flags: i32 },
    /// FUSE_READDIR from cookie `offset`: entries go through
    /// [`ReplySink::add_dir_entry`](super::ReplySink::add_dir_entry) until it is full.
    Readdir { ino: u64, fh: u64, offset: u64 },
    /// FUSE_READDIRPLUS: as [`Op::Readdir`], each entry with its attributes (and a kernel
    /// reference counted for every entry the sink takes, but "." and "..").
    Readdirplus { ino: u64, fh: u64, offset: u64 },
    /// FUSE_RELEASEDIR.
    Releasedir { ino: u64, fh: u64 },
    /// FUSE_FSYNCDIR.
    Fsyncdir { ino: u64, fh: u64, datasync: bool },
    /// FUSE_STATFS.
    Statfs { ino: u64 },
    /// FUSE_SETXATTR; `position` is macOS's resource-fork offset (never sent by Linux).
    Setxattr {
        ino: u64,
        name: &'a [u8],
        value: &'a [u8],
        flags: i32,
        position: u32,
    },
    /// FUSE_GETXATTR; `size` 0 asks for the value's length.
    Getxattr { ino: u64, name: &'a [u8], size: u32 },
    /// FUSE_LISTXATTR; `size` 0 asks for the list's length.
    Listxattr { ino: u64, size: u32 },
    /// FUSE_REMOVEXATTR.
    Removexattr { ino: u64, name: &'a [u8] },
    /// FUSE_ACCESS with access(2)'s `mask`.
    Access { ino: u64, mask: i32 },
    /// FUSE_FALLOCATE with fallocate(2)'s `mode` (punch, zero, collapse and insert may
    /// wait for pins).
    Fallocate {
        ino: u64,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    },
    /// FUSE_LSEEK (the kernel sends only SEEK_DATA and SEEK_HOLE).
    Lseek {
        ino: u64,
        fh: u64,
        offset: i64,
        whence: i32,
    },
    /// FUSE_COPY_FILE_RANGE.
    CopyFileRange {
        ino_in: u64,
        fh_in: u64,
        offset_in: u64,
        ino_out: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
        flags: u64,
    },
    /// FUSE_POLL: `events` are poll(2)'s, `flags` `fuse_poll_in.flags`
    /// ([`FUSE_POLL_SCHEDULE_NOTIFY`]); `waker` notifies this poll's `kh` (kept only when
    /// the kernel asked for a notification).
    Poll {
        ino: u64,
        fh: u64,
        events: u32,
        flags: u32,
        waker: PollWaker,
    },
    /// FUSE_IOCTL of `cmd` (restricted: the kernel copied `in_data` in and takes up to
    /// `out_size` bytes back).
    Ioctl {
        ino: u64,
        fh: u64,
        cmd: u32,
        in_data: &'a [u8],
        out_size: u32,
    },
}
