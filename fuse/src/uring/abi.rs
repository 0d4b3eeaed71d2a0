//! The kernel ABI of FUSE over io_uring (`include/uapi/linux/fuse.h`, protocol 7.42+) and
//! the few classic FUSE structs a ring request carries, with a safe byte-level codec.
//!
//! The structs are `repr(C)` mirrors of the uapi ones, their sizes and offsets asserted
//! at compile time against the header's values, so a reader can compare them with the
//! header line by line. They are never transmuted from the ring's buffers: the codec
//! reads and writes fields one by one in native byte order (FUSE is host-endian), so a
//! short or hostile buffer gives `None`, never undefined behaviour.

use std::mem::{offset_of, size_of};

/// Size of `fuse_uring_req_header.in_out`: the `fuse_in_header` of a request, the
/// `fuse_out_header` of its reply.
pub const FUSE_URING_IN_OUT_HEADER_SZ: usize = 128;
/// Size of `fuse_uring_req_header.op_in`: the opcode's fixed argument struct
/// (`in_args[0]`, e.g. `fuse_read_in`), empty for opcodes that have none (LOOKUP).
pub const FUSE_URING_OP_IN_OUT_SZ: usize = 128;
/// `fuse_uring_cmd` REGISTER: hand the kernel one entry's buffers and wait for a request.
pub const FUSE_IO_URING_CMD_REGISTER: u32 = 1;
/// `fuse_uring_cmd` COMMIT_AND_FETCH: the reply is in the entry's buffers; take it and
/// wait for the next request in the same buffers.
pub const FUSE_IO_URING_CMD_COMMIT_AND_FETCH: u32 = 2;
/// INIT flag (bit 41 of the 64-bit flags): the server will serve the connection over
/// io_uring. The kernel offers it only while the fuse module's `enable_uring` is set.
pub const FUSE_OVER_IO_URING: u64 = 1 << 41;
/// REGISTER's `sqe->len`: the iovec array at `sqe->addr` is [header, payload].
pub const FUSE_URING_IOV_SEGS: u32 = 2;
/// Bytes of command data in a 128-byte SQE (`sqe->cmd`), where `fuse_uring_cmd_req` goes.
pub const SQE128_CMD_SIZE: usize = 80;
/// The kernel's floor for every request buffer, and so for the ring's payload size.
pub const FUSE_MIN_READ_BUFFER: usize = 8192;
/// Replies' `error` must lie in `(-ERESTARTSYS, 0]`; the kernel fails others with EINVAL.
pub const ERESTARTSYS: i32 = 512;

/// FUSE opcodes (`enum fuse_opcode`) that a ring request can carry.
pub mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const GETLK: u32 = 31;
    pub const SETLK: u32 = 32;
    pub const SETLKW: u32 = 33;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const BMAP: u32 = 37;
    pub const DESTROY: u32 = 38;
    pub const IOCTL: u32 = 39;
    pub const POLL: u32 = 40;
    pub const NOTIFY_REPLY: u32 = 41;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
    pub const COPY_FILE_RANGE: u32 = 47;
    pub const SETUPMAPPING: u32 = 48;
    pub const REMOVEMAPPING: u32 = 49;
    pub const SYNCFS: u32 = 50;
    pub const TMPFILE: u32 = 51;
    pub const STATX: u32 = 52;
    /// 6.18+: COPY_FILE_RANGE with a 64-bit `fuse_copy_file_range_out`; the kernel tries it
    /// first and, on ENOSYS, falls back to COPY_FILE_RANGE for the connection's life.
    pub const COPY_FILE_RANGE_64: u32 = 53;
}

/// `struct fuse_in_header`: the first bytes of `in_out` when a request arrives.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseInHeader {
    pub len: u32,
    pub opcode: u32,
    /// The request's id; equal to the entry's `commit_id` on the ring.
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// Length of the extension headers (in 8-byte units) after the arguments.
    pub total_extlen: u16,
    pub padding: u16,
}

/// `struct fuse_out_header`: what userspace writes into `in_out` before a commit.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseOutHeader {
    pub len: u32,
    /// 0 or a negated errno.
    pub error: i32,
    pub unique: u64,
}

/// `struct fuse_uring_ent_in_out`: the trailer of an entry's header buffer.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseUringEntInOut {
    pub flags: u64,
    /// Set by the kernel on fetch; userspace echoes it in `fuse_uring_cmd_req.commit_id`.
    pub commit_id: u64,
    /// Bytes valid in the payload buffer: the kernel's on fetch, userspace's on commit.
    pub payload_sz: u32,
    pub padding: u32,
    pub reserved: u64,
}

/// `struct fuse_uring_req_header`: `iov[0]` of a REGISTER, one per ring entry.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FuseUringReqHeader {
    pub in_out: [u8; FUSE_URING_IN_OUT_HEADER_SZ],
    pub op_in: [u8; FUSE_URING_OP_IN_OUT_SZ],
    pub ring_ent_in_out: FuseUringEntInOut,
}

/// `struct fuse_uring_cmd_req`: the start of the SQE's 80-byte command area.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseUringCmdReq {
    pub flags: u64,
    /// The `commit_id` of the request being answered (0 for REGISTER).
    pub commit_id: u64,
    /// The queue (= CPU number) the command is for.
    pub qid: u16,
    pub padding: [u8; 6],
}

/// `struct fuse_attr`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseAttr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub ctimensec: u32,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
    pub flags: u32,
}

/// `struct fuse_entry_out`: the reply of LOOKUP (and MKNOD, MKDIR, SYMLINK, LINK).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseEntryOut {
    pub nodeid: u64,
    pub generation: u64,
    pub entry_valid: u64,
    pub attr_valid: u64,
    pub entry_valid_nsec: u32,
    pub attr_valid_nsec: u32,
    pub attr: FuseAttr,
}

/// `struct fuse_attr_out`: the reply of GETATTR and SETATTR.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseAttrOut {
    pub attr_valid: u64,
    pub attr_valid_nsec: u32,
    pub dummy: u32,
    pub attr: FuseAttr,
}

/// `struct fuse_open_out`: the reply of OPEN and OPENDIR.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseOpenOut {
    pub fh: u64,
    pub open_flags: u32,
    pub backing_id: i32,
}

/// `struct fuse_getattr_in`: GETATTR's `op_in`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseGetattrIn {
    pub getattr_flags: u32,
    pub dummy: u32,
    pub fh: u64,
}

/// `struct fuse_read_in`: READ's (and READDIR's) `op_in`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseReadIn {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
    pub read_flags: u32,
    pub lock_owner: u64,
    pub flags: u32,
    pub padding: u32,
}

// The sizes and offsets the uapi header defines: a mismatch is a compile error.
const _: () = assert!(size_of::<FuseInHeader>() == 40);
const _: () = assert!(size_of::<FuseOutHeader>() == 16);
const _: () = assert!(size_of::<FuseUringEntInOut>() == 32);
const _: () = assert!(size_of::<FuseUringReqHeader>() == 288);
const _: () = assert!(offset_of!(FuseUringReqHeader, op_in) == FUSE_URING_IN_OUT_HEADER_SZ);
const _: () = assert!(
    offset_of!(FuseUringReqHeader, ring_ent_in_out)
        == FUSE_URING_IN_OUT_HEADER_SZ + FUSE_URING_OP_IN_OUT_SZ
);
const _: () = assert!(size_of::<FuseUringCmdReq>() == 24);
const _: () = assert!(size_of::<FuseUringCmdReq>() <= SQE128_CMD_SIZE);
const _: () = assert!(size_of::<FuseInHeader>() <= FUSE_URING_IN_OUT_HEADER_SZ);
const _: () = assert!(size_of::<FuseAttr>() == 88);
const _: () = assert!(size_of::<FuseEntryOut>() == 128);
const _: () = assert!(size_of::<FuseAttrOut>() == 104);
const _: () = assert!(size_of::<FuseOpenOut>() == 16);
const _: () = assert!(size_of::<FuseGetattrIn>() == 16);
const _: () = assert!(size_of::<FuseReadIn>() == 40);

/// Where the parts of an entry's header buffer start.
pub const IN_OUT_OFFSET: usize = offset_of!(FuseUringReqHeader, in_out);
/// See [`IN_OUT_OFFSET`].
pub const OP_IN_OFFSET: usize = offset_of!(FuseUringReqHeader, op_in);
/// See [`IN_OUT_OFFSET`].
pub const ENT_IN_OUT_OFFSET: usize = offset_of!(FuseUringReqHeader, ring_ent_in_out);
/// The least header buffer the kernel accepts in a REGISTER.
pub const REQ_HEADER_SIZE: usize = size_of::<FuseUringReqHeader>();

/// Reads native-endian fields in order from a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.at.checked_add(N)?;
        let bytes = self.buf.get(self.at..end)?.try_into().ok()?;
        self.at = end;
        Some(bytes)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_ne_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_ne_bytes)
    }

    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_ne_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_ne_bytes)
    }

    fn pad6(&mut self) -> Option<[u8; 6]> {
        self.take()
    }

    fn spare6(&mut self) -> Option<[u32; 6]> {
        let mut v = [0u32; 6];
        for x in &mut v {
            *x = self.u32()?;
        }
        Some(v)
    }

    fn attr(&mut self) -> Option<FuseAttr> {
        let a = FuseAttr::decode(self.buf.get(self.at..)?)?;
        self.at += FuseAttr::SIZE;
        Some(a)
    }
}

/// Writes native-endian fields in order into a byte slice.
struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, at: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.at.checked_add(bytes.len())?;
        self.buf.get_mut(self.at..end)?.copy_from_slice(bytes);
        self.at = end;
        Some(())
    }

    fn u16(&mut self, v: u16) -> Option<()> {
        self.put(&v.to_ne_bytes())
    }

    fn u32(&mut self, v: u32) -> Option<()> {
        self.put(&v.to_ne_bytes())
    }

    fn i32(&mut self, v: i32) -> Option<()> {
        self.put(&v.to_ne_bytes())
    }

    fn u64(&mut self, v: u64) -> Option<()> {
        self.put(&v.to_ne_bytes())
    }

    fn pad6(&mut self, v: [u8; 6]) -> Option<()> {
        self.put(&v)
    }

    fn spare6(&mut self, v: [u32; 6]) -> Option<()> {
        v.iter().try_for_each(|&x| self.u32(x))
    }

    fn attr(&mut self, a: FuseAttr) -> Option<()> {
        a.encode(self.buf.get_mut(self.at..)?)?;
        self.at += FuseAttr::SIZE;
        Some(())
    }
}

/// A struct with a fixed wire form: decoded from and encoded to the first
/// [`Wire::SIZE`] bytes of a buffer.
pub trait Wire: Sized {
    /// Bytes on the wire (the C struct's size).
    const SIZE: usize;
    /// The struct in the first `SIZE` bytes of `buf`; `None` if `buf` is shorter.
    fn decode(buf: &[u8]) -> Option<Self>;
    /// Writes the struct into the first `SIZE` bytes of `buf`; `None` (and nothing
    /// written) if `buf` is shorter.
    fn encode(&self, buf: &mut [u8]) -> Option<()>;
}

macro_rules! wire {
    ($ty:ident { $($field:ident: $kind:ident),* $(,)? }) => {
        impl Wire for $ty {
            const SIZE: usize = size_of::<$ty>();

            fn decode(buf: &[u8]) -> Option<Self> {
                let mut r = Reader::new(buf.get(..Self::SIZE)?);
                Some($ty { $($field: wire!(@get r, $kind),)* })
            }

            fn encode(&self, buf: &mut [u8]) -> Option<()> {
                let mut w = Writer::new(buf.get_mut(..Self::SIZE)?);
                $(wire!(@put w, $kind, self.$field);)*
                Some(())
            }
        }
    };
    (@get $r:ident, $kind:ident) => { $r.$kind()? };
    (@put $w:ident, $kind:ident, $v:expr) => { $w.$kind($v)? };
}

wire!(FuseInHeader {
    len: u32,
    opcode: u32,
    unique: u64,
    nodeid: u64,
    uid: u32,
    gid: u32,
    pid: u32,
    total_extlen: u16,
    padding: u16,
});
wire!(FuseOutHeader {
    len: u32,
    error: i32,
    unique: u64,
});
wire!(FuseUringEntInOut {
    flags: u64,
    commit_id: u64,
    payload_sz: u32,
    padding: u32,
    reserved: u64,
});
wire!(FuseUringCmdReq {
    flags: u64,
    commit_id: u64,
    qid: u16,
    padding: pad6,
});
wire!(FuseAttr {
    ino: u64,
    size: u64,
    blocks: u64,
    atime: u64,
    mtime: u64,
    ctime: u64,
    atimensec: u32,
    mtimensec: u32,
    ctimensec: u32,
    mode: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
    rdev: u32,
    blksize: u32,
    flags: u32,
});
wire!(FuseEntryOut {
    nodeid: u64,
    generation: u64,
    entry_valid: u64,
    attr_valid: u64,
    entry_valid_nsec: u32,
    attr_valid_nsec: u32,
    attr: attr,
});
wire!(FuseAttrOut {
    attr_valid: u64,
    attr_valid_nsec: u32,
    dummy: u32,
    attr: attr,
});
wire!(FuseOpenOut {
    fh: u64,
    open_flags: u32,
    backing_id: i32,
});
wire!(FuseGetattrIn {
    getattr_flags: u32,
    dummy: u32,
    fh: u64,
});
wire!(FuseReadIn {
    fh: u64,
    offset: u64,
    size: u32,
    read_flags: u32,
    lock_owner: u64,
    flags: u32,
    padding: u32,
});

// The opcode argument and reply structs the mount's opcodes use (uapi fuse.h 7.45).
/// `struct fuse_setattr_in`: SETATTR's `op_in`; `valid` says which fields count (`FATTR_*`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseSetattrIn {
    pub valid: u32,
    pub padding: u32,
    pub fh: u64,
    pub size: u64,
    pub lock_owner: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub ctimensec: u32,
    pub mode: u32,
    pub unused4: u32,
    pub uid: u32,
    pub gid: u32,
    pub unused5: u32,
}

/// `struct fuse_mknod_in`: MKNOD's `op_in` (8 bytes, no umask, before 7.12).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseMknodIn {
    pub mode: u32,
    pub rdev: u32,
    pub umask: u32,
    pub padding: u32,
}

/// `struct fuse_mkdir_in`: MKDIR's `op_in`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseMkdirIn {
    pub mode: u32,
    pub umask: u32,
}

/// `struct fuse_rename_in`: RENAME's `op_in`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseRenameIn {
    pub newdir: u64,
}

/// `struct fuse_rename2_in`: RENAME2's `op_in`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseRename2In {
    pub newdir: u64,
    pub flags: u32,
    pub padding: u32,
}

/// `struct fuse_link_in`: LINK's `op_in`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseLinkIn {
    pub oldnodeid: u64,
}

/// `struct fuse_open_in`: OPEN's and OPENDIR's `op_in`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseOpenIn {
    pub flags: u32,
    pub open_flags: u32,
}

/// `struct fuse_create_in`: CREATE's `op_in` (a `fuse_open_in`, 8 bytes, before 7.12).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseCreateIn {
    pub flags: u32,
    pub mode: u32,
    pub umask: u32,
    pub open_flags: u32,
}

/// `struct fuse_write_in`: WRITE's `op_in` (24 bytes, without lock_owner/flags, before 7.9).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseWriteIn {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
    pub write_flags: u32,
    pub lock_owner: u64,
    pub flags: u32,
    pub padding: u32,
}

/// `struct fuse_flush_in`: FLUSH's `op_in`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseFlushIn {
    pub fh: u64,
    pub unused: u32,
    pub padding: u32,
    pub lock_owner: u64,
}

/// `struct fuse_release_in`: RELEASE's and RELEASEDIR's `op_in`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseReleaseIn {
    pub fh: u64,
    pub flags: u32,
    pub release_flags: u32,
    pub lock_owner: u64,
}

/// `struct fuse_fsync_in`: FSYNC's and FSYNCDIR's `op_in`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseFsyncIn {
    pub fh: u64,
    pub fsync_flags: u32,
    pub padding: u32,
}

/// `struct fuse_setxattr_in`: SETXATTR's `op_in`; only `size` and `flags` (8 bytes) unless FUSE_SETXATTR_EXT was granted in INIT.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseSetxattrIn {
    pub size: u32,
    pub flags: u32,
    pub setxattr_flags: u32,
    pub padding: u32,
}

/// `struct fuse_getxattr_in`: GETXATTR's and LISTXATTR's `op_in`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseGetxattrIn {
    pub size: u32,
    pub padding: u32,
}

/// `struct fuse_access_in`: ACCESS's `op_in`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseAccessIn {
    pub mask: u32,
    pub padding: u32,
}

/// `struct fuse_fallocate_in`: FALLOCATE's `op_in`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseFallocateIn {
    pub fh: u64,
    pub offset: u64,
    pub length: u64,
    pub mode: u32,
    pub padding: u32,
}

/// `struct fuse_lseek_in`: LSEEK's `op_in`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseLseekIn {
    pub fh: u64,
    pub offset: u64,
    pub whence: u32,
    pub padding: u32,
}

/// `struct fuse_copy_file_range_in`: COPY_FILE_RANGE's `op_in`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseCopyFileRangeIn {
    pub fh_in: u64,
    pub off_in: u64,
    pub nodeid_out: u64,
    pub fh_out: u64,
    pub off_out: u64,
    pub len: u64,
    pub flags: u64,
}

/// `struct fuse_poll_in`: POLL's `op_in`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FusePollIn {
    pub fh: u64,
    pub kh: u64,
    pub flags: u32,
    pub events: u32,
}

/// `struct fuse_ioctl_in`: IOCTL's `op_in`; `in_size` bytes of input follow in the payload.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseIoctlIn {
    pub fh: u64,
    pub flags: u32,
    pub cmd: u32,
    pub arg: u64,
    pub in_size: u32,
    pub out_size: u32,
}

/// `struct fuse_write_out`: the reply of WRITE (and COPY_FILE_RANGE).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseWriteOut {
    pub size: u32,
    pub padding: u32,
}

/// `struct fuse_kstatfs`, the whole of `fuse_statfs_out`: the reply of STATFS.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseKstatfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
    pub padding: u32,
    pub spare: [u32; 6],
}

/// `struct fuse_getxattr_out`: the reply of GETXATTR/LISTXATTR with size 0 (a size query).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseGetxattrOut {
    pub size: u32,
    pub padding: u32,
}

/// `struct fuse_lseek_out`: the reply of LSEEK.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseLseekOut {
    pub offset: u64,
}

/// `struct fuse_poll_out`: the reply of POLL.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FusePollOut {
    pub revents: u32,
    pub padding: u32,
}

/// `struct fuse_ioctl_out`: the start of IOCTL's reply; output data follows.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseIoctlOut {
    pub result: i32,
    pub flags: u32,
    pub in_iovs: u32,
    pub out_iovs: u32,
}

/// `struct fuse_dirent` without its name: a READDIR record's fixed part.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseDirent {
    pub ino: u64,
    pub off: u64,
    pub namelen: u32,
    pub typ: u32,
}

// Sizes from the uapi header.
const _: () = assert!(size_of::<FuseSetattrIn>() == 88);
const _: () = assert!(size_of::<FuseMknodIn>() == 16);
const _: () = assert!(size_of::<FuseMkdirIn>() == 8);
const _: () = assert!(size_of::<FuseRenameIn>() == 8);
const _: () = assert!(size_of::<FuseRename2In>() == 16);
const _: () = assert!(size_of::<FuseLinkIn>() == 8);
const _: () = assert!(size_of::<FuseOpenIn>() == 8);
const _: () = assert!(size_of::<FuseCreateIn>() == 16);
const _: () = assert!(size_of::<FuseWriteIn>() == 40);
const _: () = assert!(size_of::<FuseFlushIn>() == 24);
const _: () = assert!(size_of::<FuseReleaseIn>() == 24);
const _: () = assert!(size_of::<FuseFsyncIn>() == 16);
const _: () = assert!(size_of::<FuseSetxattrIn>() == 16);
const _: () = assert!(size_of::<FuseGetxattrIn>() == 8);
const _: () = assert!(size_of::<FuseAccessIn>() == 8);
const _: () = assert!(size_of::<FuseFallocateIn>() == 32);
const _: () = assert!(size_of::<FuseLseekIn>() == 24);
const _: () = assert!(size_of::<FuseCopyFileRangeIn>() == 56);
const _: () = assert!(size_of::<FusePollIn>() == 24);
const _: () = assert!(size_of::<FuseIoctlIn>() == 32);
const _: () = assert!(size_of::<FuseWriteOut>() == 8);
const _: () = assert!(size_of::<FuseKstatfs>() == 80);
const _: () = assert!(size_of::<FuseGetxattrOut>() == 8);
const _: () = assert!(size_of::<FuseLseekOut>() == 8);
const _: () = assert!(size_of::<FusePollOut>() == 8);
const _: () = assert!(size_of::<FuseIoctlOut>() == 16);
const _: () = assert!(size_of::<FuseDirent>() == 24);

wire!(FuseSetattrIn {
    valid: u32,
    padding: u32,
    fh: u64,
    size: u64,
    lock_owner: u64,
    atime: u64,
    mtime: u64,
    ctime: u64,
    atimensec: u32,
    mtimensec: u32,
    ctimensec: u32,
    mode: u32,
    unused4: u32,
    uid: u32,
    gid: u32,
    unused5: u32,
});
wire!(FuseMknodIn {
    mode: u32,
    rdev: u32,
    umask: u32,
    padding: u32,
});
wire!(FuseMkdirIn {
    mode: u32,
    umask: u32,
});
wire!(FuseRenameIn { newdir: u64 });
wire!(FuseRename2In {
    newdir: u64,
    flags: u32,
    padding: u32,
});
wire!(FuseLinkIn { oldnodeid: u64 });
wire!(FuseOpenIn {
    flags: u32,
    open_flags: u32,
});
wire!(FuseCreateIn {
    flags: u32,
    mode: u32,
    umask: u32,
    open_flags: u32,
});
wire!(FuseWriteIn {
    fh: u64,
    offset: u64,
    size: u32,
    write_flags: u32,
    lock_owner: u64,
    flags: u32,
    padding: u32,
});
wire!(FuseFlushIn {
    fh: u64,
    unused: u32,
    padding: u32,
    lock_owner: u64,
});
wire!(FuseReleaseIn {
    fh: u64,
    flags: u32,
    release_flags: u32,
    lock_owner: u64,
});
wire!(FuseFsyncIn {
    fh: u64,
    fsync_flags: u32,
    padding: u32,
});
wire!(FuseSetxattrIn {
    size: u32,
    flags: u32,
    setxattr_flags: u32,
    padding: u32,
});
wire!(FuseGetxattrIn {
    size: u32,
    padding: u32,
});
wire!(FuseAccessIn {
    mask: u32,
    padding: u32,
});
wire!(FuseFallocateIn {
    fh: u64,
    offset: u64,
    length: u64,
    mode: u32,
    padding: u32,
});
wire!(FuseLseekIn {
    fh: u64,
    offset: u64,
    whence: u32,
    padding: u32,
});
wire!(FuseCopyFileRangeIn {
    fh_in: u64,
    off_in: u64,
    nodeid_out: u64,
    fh_out: u64,
    off_out: u64,
    len: u64,
    flags: u64,
});
wire!(FusePollIn {
    fh: u64,
    kh: u64,
    flags: u32,
    events: u32,
});
wire!(FuseIoctlIn {
    fh: u64,
    flags: u32,
    cmd: u32,
    arg: u64,
    in_size: u32,
    out_size: u32,
});
wire!(FuseWriteOut {
    size: u32,
    padding: u32,
});
wire!(FuseKstatfs {
    blocks: u64,
    bfree: u64,
    bavail: u64,
    files: u64,
    ffree: u64,
    bsize: u32,
    namelen: u32,
    frsize: u32,
    padding: u32,
    spare: spare6,
});
wire!(FuseGetxattrOut {
    size: u32,
    padding: u32,
});
wire!(FuseLseekOut { offset: u64 });
wire!(FusePollOut {
    revents: u32,
    padding: u32,
});
wire!(FuseIoctlOut {
    result: i32,
    flags: u32,
    in_iovs: u32,
    out_iovs: u32,
});
wire!(FuseDirent {
    ino: u64,
    off: u64,
    namelen: u32,
    typ: u32,
});

impl FuseUringCmdReq {
    /// The SQE's 80-byte command area holding this command (the rest zero, as the
    /// kernel expects of reserved bytes).
    pub fn to_sqe_cmd(&self) -> [u8; SQE128_CMD_SIZE] {
        let mut cmd = [0u8; SQE128_CMD_SIZE];
        // Cannot fail: the area is larger than the struct (asserted above).
        let _ = self.encode(&mut cmd);
        cmd
    }
}

/// The headers of a request as the kernel left them in an entry's header buffer.
#[derive(Debug, Clone, Copy)]
pub struct RequestHeaders {
    pub in_header: FuseInHeader,
    /// The opcode's fixed argument struct, zero-padded; its length depends on the
    /// opcode (`fuse_read_in` for READ, nothing for LOOKUP).
    pub op_in: [u8; FUSE_URING_OP_IN_OUT_SZ],
    pub ent: FuseUringEntInOut,
}

impl RequestHeaders {
    /// Decodes a fetched entry's header buffer; `None` if it is shorter than
    /// `fuse_uring_req_header`.
    pub fn decode(header: &[u8]) -> Option<RequestHeaders> {
        let in_header = FuseInHeader::decode(header.get(IN_OUT_OFFSET..)?)?;
        let op_in = header
            .get(OP_IN_OFFSET..OP_IN_OFFSET + FUSE_URING_OP_IN_OUT_SZ)?
            .try_into()
            .ok()?;
        let ent = FuseUringEntInOut::decode(header.get(ENT_IN_OUT_OFFSET..)?)?;
        Some(RequestHeaders {
            in_header,
            op_in,
            ent,
        })
    }
}

/// Writes the reply headers of request `unique` into an entry's header buffer: the
/// `fuse_out_header` (error 0 or a negated errno) in `in_out`, and the number of reply
/// bytes the payload buffer holds in `ring_ent_in_out.payload_sz`. `None` if the
/// buffer is shorter than `fuse_uring_req_header` or `payload_sz` does not fit a u32.
pub fn encode_reply_headers(
    header: &mut [u8],
    unique: u64,
    error: i32,
    payload_sz: usize,
) -> Option<()> {
    if header.len() < REQ_HEADER_SIZE {
        return None;
    }
    let payload_sz = u32::try_from(payload_sz).ok()?;
    let out = FuseOutHeader {
        len: u32::try_from(FuseOutHeader::SIZE)
            .ok()?
            .checked_add(payload_sz)?,
        error,
        unique,
    };
    let ent = FuseUringEntInOut {
        commit_id: unique,
        payload_sz,
        ..FuseUringEntInOut::default()
    };
    out.encode(&mut header[IN_OUT_OFFSET..])?;
    ent.encode(&mut header[ENT_IN_OUT_OFFSET..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_in_header() -> FuseInHeader {
        FuseInHeader {
            len: 56,
            opcode: opcode::READ,
            unique: 0x1234_5678_9abc,
            nodeid: 2,
            uid: 1000,
            gid: 100,
            pid: 4242,
            total_extlen: 0,
            padding: 0,
        }
    }

    #[test]
    fn in_header_fields_sit_where_the_kernel_puts_them() {
        let mut buf = [0u8; 40];
        sample_in_header().encode(&mut buf).unwrap();
        assert_eq!(buf[4..8], opcode::READ.to_ne_bytes());
        assert_eq!(buf[8..16], 0x1234_5678_9abc_u64.to_ne_bytes());
        assert_eq!(buf[32..36], 4242_u32.to_ne_bytes());
        assert_eq!(FuseInHeader::decode(&buf), Some(sample_in_header()));
    }

    #[test]
    fn a_short_buffer_decodes_to_none_and_encodes_nothing() {
        assert_eq!(FuseInHeader::decode(&[0u8; 39]), None);
        let mut buf = [0xaau8; 15];
        let out = FuseOutHeader {
            len: 16,
            error: -2,
            unique: 9,
        };
        assert_eq!(out.encode(&mut buf), None);
        assert_eq!(buf, [0xaa; 15]);
        assert!(RequestHeaders::decode(&[0u8; REQ_HEADER_SIZE - 1]).is_none());
    }

    #[test]
    fn request_headers_decode_the_three_parts_of_the_header_buffer() {
        let mut hdr = [0u8; REQ_HEADER_SIZE];
        sample_in_header().encode(&mut hdr).unwrap();
        let read_in = FuseReadIn {
            fh: 7,
            offset: 4096,
            size: 131072,
            ..FuseReadIn::default()
        };
        read_in.encode(&mut hdr[OP_IN_OFFSET..]).unwrap();
        let ent = FuseUringEntInOut {
            commit_id: 0x1234_5678_9abc,
            payload_sz: 0,
            ..FuseUringEntInOut::default()
        };
        ent.encode(&mut hdr[256..]).unwrap();
        let h = RequestHeaders::decode(&hdr).unwrap();
        assert_eq!(h.in_header, sample_in_header());
        assert_eq!(FuseReadIn::decode(&h.op_in), Some(read_in));
        assert_eq!(h.ent, ent);
    }

    #[test]
    fn reply_headers_carry_unique_error_length_and_payload_size() {
        let mut hdr = [0u8; REQ_HEADER_SIZE];
        encode_reply_headers(&mut hdr, 77, 0, FuseEntryOut::SIZE).unwrap();
        let out = FuseOutHeader::decode(&hdr).unwrap();
        assert_eq!(
            out,
            FuseOutHeader {
                len: 16 + 128,
                error: 0,
                unique: 77
            }
        );
        let ent = FuseUringEntInOut::decode(&hdr[ENT_IN_OUT_OFFSET..]).unwrap();
        assert_eq!((ent.commit_id, ent.payload_sz), (77, 128));

        encode_reply_headers(&mut hdr, 78, -libc::ENOSYS, 0).unwrap();
        let out = FuseOutHeader::decode(&hdr).unwrap();
        assert_eq!((out.len, out.error, out.unique), (16, -libc::ENOSYS, 78));
    }

    #[test]
    fn cmd_req_fills_the_start_of_the_sqe_command_area() {
        let cmd = FuseUringCmdReq {
            commit_id: 0xfeed,
            qid: 3,
            ..FuseUringCmdReq::default()
        }
        .to_sqe_cmd();
        assert_eq!(cmd[8..16], 0xfeed_u64.to_ne_bytes());
        assert_eq!(cmd[16..18], 3_u16.to_ne_bytes());
        assert!(cmd[..8].iter().chain(&cmd[18..]).all(|&b| b == 0));
    }

    #[test]
    fn nested_attr_round_trips_inside_entry_and_attr_replies() {
        let attr = FuseAttr {
            ino: 5,
            size: 12,
            mode: libc::S_IFREG | 0o644,
            nlink: 1,
            blksize: 4096,
            mtimensec: 999,
            ..FuseAttr::default()
        };
        let e = FuseEntryOut {
            nodeid: 5,
            entry_valid: 1,
            attr_valid: 1,
            attr,
            ..FuseEntryOut::default()
        };
        let mut buf = [0u8; 128];
        e.encode(&mut buf).unwrap();
        // fuse_attr starts after the 40 bytes of ids and timeouts.
        assert_eq!(buf[40..48], 5_u64.to_ne_bytes());
        assert_eq!(FuseEntryOut::decode(&buf), Some(e));
        let a = FuseAttrOut {
            attr_valid: 1,
            attr,
            ..FuseAttrOut::default()
        };
        let mut buf = [0u8; 104];
        a.encode(&mut buf).unwrap();
        assert_eq!(FuseAttrOut::decode(&buf), Some(a));
    }
}
