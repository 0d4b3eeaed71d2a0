//! Decoding of ring requests: the `fuse_in_header` in `in_out`, the opcode's fixed
//! argument in `op_in` and the rest in the payload, into a [`Request`] that borrows names
//! and data from the entry's buffers.
//!
//! # Where the kernel puts each argument (`fs/fuse/dev_uring.c`, Linux 6.14+)
//!
//! `fuse_uring_args_to_ring` copies `in_args[0]` (the opcode's `fuse_*_in`, since 6.14
//! present, possibly empty, for every opcode: `fuse_set_zero_arg0`) into `op_in` with
//! `copy_header_to_ring`, then `fuse_copy_args` copies `in_args[1..]` back to back
//! into the payload and sets `ring_ent_in_out.payload_sz` to the bytes copied. So:
//!
//! - `op_in` holds exactly `in_args[0].size` bytes of the request; the rest of its 128
//!   bytes are *stale* (whatever an earlier request left), so a decoder reads only the
//!   struct's size for the negotiated minor, never "until zeros".
//! - the payload holds the names with their NUL (LOOKUP, UNLINK, …: `name\0`; SYMLINK:
//!   `name\0target\0`; RENAME(2): `old\0new\0`; SETXATTR, GETXATTR, REMOVEXATTR: `name\0`
//!   then, for SETXATTR, the value), WRITE's data, IOCTL's input, and last the
//!   extension headers (`total_extlen` × 8 bytes: security context, supplementary
//!   groups), which the mount does not ask for and the decoder strips.
//!
//! Decoding never panics and never reads past a slice: a short `op_in`, a name without
//! its NUL, a data length other than the one the fixed part announces, or bytes left
//! over decode to a [`DecodeError`], which the transport answers with
//! [`DecodeError::errno`].

use super::abi::*;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;

/// INIT flag (bit 29): SETXATTR carries the 16-byte `fuse_setxattr_in` (with
/// `setxattr_flags`, for ACL kill-SGID) instead of the 8-byte one.
pub const FUSE_SETXATTR_EXT: u64 = 1 << 29;
/// `fuse_getattr_in.getattr_flags`: `fh` is valid (fstat of an open file).
pub const FUSE_GETATTR_FH: u32 = 1 << 0;
/// `fuse_read_in.read_flags` / `fuse_write_in.write_flags`: `lock_owner` is valid.
pub const FUSE_READ_LOCKOWNER: u32 = 1 << 1;
/// See [`FUSE_READ_LOCKOWNER`].
pub const FUSE_WRITE_LOCKOWNER: u32 = 1 << 1;
/// `fuse_release_in.release_flags`: flush before release.
pub const FUSE_RELEASE_FLUSH: u32 = 1 << 0;

/// `fuse_write_in`/`fuse_read_in` before 7.9: no lock_owner, flags, padding.
pub const FUSE_COMPAT_WRITE_IN_SIZE: usize = 24;
/// `fuse_read_in` before 7.9; see [`FUSE_COMPAT_WRITE_IN_SIZE`].
pub const FUSE_COMPAT_READ_IN_SIZE: usize = 24;
/// `fuse_mknod_in` before 7.12: mode and rdev only.
pub const FUSE_COMPAT_MKNOD_IN_SIZE: usize = 8;
/// `fuse_setxattr_in` without FUSE_SETXATTR_EXT: size and flags only.
pub const FUSE_COMPAT_SETXATTR_IN_SIZE: usize = 8;

/// What INIT fixed about the wire format for the life of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proto {
    /// The negotiated minor version: the smaller of the kernel's and the server's.
    pub minor: u32,
    /// FUSE_SETXATTR_EXT is in both the kernel's offer and the server's reply.
    pub setxattr_ext: bool,
}

impl Proto {
    /// The protocol of a connection whose INIT negotiated `minor` and granted `flags`
    /// (the flags of the INIT reply, which the kernel also offered).
    pub fn new(minor: u32, flags: u64) -> Proto {
        Proto {
            minor,
            setxattr_ext: flags & FUSE_SETXATTR_EXT != 0,
        }
    }

    fn read_in_size(self) -> usize {
        if self.minor < 9 {
            FUSE_COMPAT_READ_IN_SIZE
        } else {
            FuseReadIn::SIZE
        }
    }

    fn write_in_size(self) -> usize {
        if self.minor < 9 {
            FUSE_COMPAT_WRITE_IN_SIZE
        } else {
            FuseWriteIn::SIZE
        }
    }

    fn setxattr_in_size(self) -> usize {
        if self.setxattr_ext {
            FuseSetxattrIn::SIZE
        } else {
            FUSE_COMPAT_SETXATTR_IN_SIZE
        }
    }
}

/// One decoded request. Names are what the kernel sent, without their NUL; `fh`s, flags
/// and sizes are the uapi fields unchanged (the adapter interprets them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    Lookup {
        name: &'a OsStr,
    },
    /// `fh` is `Some` for an fstat of an open file (FUSE_GETATTR_FH).
    Getattr {
        fh: Option<u64>,
    },
    Setattr(FuseSetattrIn),
    Readlink,
    /// Before 7.12 `umask` is 0 (the kernel applied it).
    Mknod {
        arg: FuseMknodIn,
        name: &'a OsStr,
    },
    Mkdir {
        arg: FuseMkdirIn,
        name: &'a OsStr,
    },
    Unlink {
        name: &'a OsStr,
    },
    Rmdir {
        name: &'a OsStr,
    },
    /// `name` is the new link in the request's directory, `target` what it points at.
    Symlink {
        name: &'a OsStr,
        target: &'a OsStr,
    },
    /// RENAME (`flags` 0) and RENAME2 (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`, …).
    Rename {
        newdir: u64,
        flags: u32,
        name: &'a OsStr,
        newname: &'a OsStr,
    },
    /// A new link `name` in the request's directory to inode `oldnodeid`.
    Link {
        oldnodeid: u64,
        name: &'a OsStr,
    },
    Open(FuseOpenIn),
    Create {
        arg: FuseCreateIn,
        name: &'a OsStr,
    },
    Read(FuseReadIn),
    Write {
        arg: FuseWriteIn,
        data: &'a [u8],
    },
    Flush(FuseFlushIn),
    Release(FuseReleaseIn),
    Fsync(FuseFsyncIn),
    Opendir(FuseOpenIn),
    Readdir(FuseReadIn),
    Readdirplus(FuseReadIn),
    Releasedir(FuseReleaseIn),
    Fsyncdir(FuseFsyncIn),
    Statfs,
    /// `arg.setxattr_flags` is 0 unless FUSE_SETXATTR_EXT was granted.
    Setxattr {
        arg: FuseSetxattrIn,
        name: &'a OsStr,
        value: &'a [u8],
    },
    /// `size` 0 asks for the value's size only.
    Getxattr {
        size: u32,
        name: &'a OsStr,
    },
    /// `size` 0 asks for the list's size only.
    Listxattr {
        size: u32,
    },
    Removexattr {
        name: &'a OsStr,
    },
    Access {
        mask: u32,
    },
    Fallocate(FuseFallocateIn),
    Lseek(FuseLseekIn),
    CopyFileRange(FuseCopyFileRangeIn),
    Poll(FusePollIn),
    /// `data` is the `in_size` bytes of input.
    Ioctl {
        arg: FuseIoctlIn,
        data: &'a [u8],
    },
    /// An opcode the mount does not serve (answer ENOSYS: STATX and COPY_FILE_RANGE_64,
    /// which Linux 6.18 tries once each, then fall back), or one that never comes over
    /// the ring (INIT, FORGET, BATCH_FORGET, INTERRUPT).
    Unsupported {
        opcode: u32,
    },
}

/// Why a request could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// `op_in` is shorter than the opcode's fixed argument.
    ShortOpIn {
        opcode: u32,
        need: usize,
        have: usize,
    },
    /// The payload is shorter than `total_extlen` announces.
    ShortExtensions { extlen: usize, payload: usize },
    /// A name runs to the end of the payload without its NUL.
    UnterminatedName { opcode: u32 },
    /// Data (WRITE, SETXATTR value, IOCTL input) of another length than announced.
    DataSize {
        opcode: u32,
        announced: usize,
        have: usize,
    },
    /// Bytes left in the payload after every argument.
    TrailingBytes { opcode: u32, extra: usize },
}

impl DecodeError {
    /// The errno (positive) a transport answers the request with: EIO where the fixed
    /// part itself is missing (the connection's framing is broken), EINVAL for a
    /// malformed variable part.
    pub fn errno(&self) -> i32 {
        match self {
            DecodeError::ShortOpIn { .. } | DecodeError::ShortExtensions { .. } => libc::EIO,
            _ => libc::EINVAL,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::ShortOpIn { opcode, need, have } => write!(
                f,
                "opcode {opcode}: fixed argument needs {need} bytes, op_in has {have}"
            ),
            DecodeError::ShortExtensions { extlen, payload } => {
                write!(f, "extensions of {extlen} bytes in a payload of {payload}")
            }
            DecodeError::UnterminatedName { opcode } => {
                write!(f, "opcode {opcode}: name without NUL")
            }
            DecodeError::DataSize {
                opcode,
                announced,
                have,
            } => write!(
                f,
                "opcode {opcode}: {announced} bytes of data announced, {have} sent"
            ),
            DecodeError::TrailingBytes { opcode, extra } => {
                write!(f, "opcode {opcode}: {extra} bytes after the arguments")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// The fixed argument of `opcode`: the first `len` bytes of `op_in` (`len` ≤ the
/// struct's size: older minors send a prefix), zero-extended to the full struct.
fn fixed<T: Wire>(opcode: u32, op_in: &[u8], len: usize) -> Result<T, DecodeError> {
    let short = DecodeError::ShortOpIn {
        opcode,
        need: len,
        have: op_in.len(),
    };
    let prefix = op_in.get(..len).ok_or(short)?;
    let mut full = [0u8; FUSE_URING_OP_IN_OUT_SZ];
    full.get_mut(..len).ok_or(short)?.copy_from_slice(prefix);
    T::decode(&full).ok_or(short)
}

/// The payload's arguments, consumed front to back.
struct Args<'a> {
    opcode: u32,
    rest: &'a [u8],
}

impl<'a> Args<'a> {
    fn name(&mut self) -> Result<&'a OsStr, DecodeError> {
        let nul = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::UnterminatedName {
                opcode: self.opcode,
            })?;
        let (name, rest) = self.rest.split_at(nul);
        self.rest = rest.get(1..).unwrap_or_default();
        Ok(OsStr::from_bytes(name))
    }

    fn data(&mut self, announced: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() != announced {
            return Err(DecodeError::DataSize {
                opcode: self.opcode,
                announced,
                have: self.rest.len(),
            });
        }
        Ok(std::mem::take(&mut self.rest))
    }

    fn end(&self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                opcode: self.opcode,
                extra: self.rest.len(),
            })
        }
    }
}

fn usize_of(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl<'a> Request<'a> {
    /// Decodes the request described by `header` (its `opcode` and `total_extlen`),
    /// with `op_in` the header buffer's op_in area and `payload` the first
    /// `payload_sz` bytes of the payload buffer.
    pub fn decode(
        proto: Proto,
        header: &FuseInHeader,
        op_in: &'a [u8],
        payload: &'a [u8],
    ) -> Result<Request<'a>, DecodeError> {
        let op = header.opcode;
        let extlen = usize::from(header.total_extlen) * 8;
        let args_len = payload
            .len()
            .checked_sub(extlen)
            .ok_or(DecodeError::ShortExtensions {
                extlen,
                payload: payload.len(),
            })?;
        let mut a = Args {
            opcode: op,
            rest: &payload[..args_len],
        };
        let req = match op {
            opcode::LOOKUP => Request::Lookup { name: a.name()? },
            opcode::GETATTR => {
                // Before 7.9 GETATTR had no argument.
                if proto.minor < 9 {
                    Request::Getattr { fh: None }
                } else {
                    let g: FuseGetattrIn = fixed(op, op_in, FuseGetattrIn::SIZE)?;
                    Request::Getattr {
                        fh: (g.getattr_flags & FUSE_GETATTR_FH != 0).then_some(g.fh),
                    }
                }
            }
            opcode::SETATTR => Request::Setattr(fixed(op, op_in, FuseSetattrIn::SIZE)?),
            opcode::READLINK => Request::Readlink,
            opcode::MKNOD => {
                let len = if proto.minor < 12 {
                    FUSE_COMPAT_MKNOD_IN_SIZE
                } else {
                    FuseMknodIn::SIZE
                };
                Request::Mknod {
                    arg: fixed(op, op_in, len)?,
                    name: a.name()?,
                }
            }
            opcode::MKDIR => Request::Mkdir {
                arg: fixed(op, op_in, FuseMkdirIn::SIZE)?,
                name: a.name()?,
            },
            opcode::UNLINK => Request::Unlink { name: a.name()? },
            opcode::RMDIR => Request::Rmdir { name: a.name()? },
            opcode::SYMLINK => Request::Symlink {
                name: a.name()?,
                target: a.name()?,
            },
            opcode::RENAME => {
                let r: FuseRenameIn = fixed(op, op_in, FuseRenameIn::SIZE)?;
                Request::Rename {
                    newdir: r.newdir,
                    flags: 0,
                    name: a.name()?,
                    newname: a.name()?,
                }
            }
            opcode::RENAME2 => {
                let r: FuseRename2In = fixed(op, op_in, FuseRename2In::SIZE)?;
                Request::Rename {
                    newdir: r.newdir,
                    flags: r.flags,
                    name: a.name()?,
                    newname: a.name()?,
                }
            }
            opcode::LINK => {
                let l: FuseLinkIn = fixed(op, op_in, FuseLinkIn::SIZE)?;
                Request::Link {
                    oldnodeid: l.oldnodeid,
                    name: a.name()?,
                }
            }
            opcode::OPEN => Request::Open(fixed(op, op_in, FuseOpenIn::SIZE)?),
            opcode::CREATE => {
                // Before 7.12 CREATE sent a fuse_open_in: flags, then no mode.
                let len = if proto.minor < 12 {
                    FuseOpenIn::SIZE
                } else {
                    FuseCreateIn::SIZE
                };
                let mut arg: FuseCreateIn = fixed(op, op_in, len)?;
                if proto.minor < 12 {
                    arg.mode = 0;
                }
                Request::Create {
                    arg,
                    name: a.name()?,
                }
            }
            opcode::READ => Request::Read(fixed(op, op_in, proto.read_in_size())?),
            opcode::WRITE => {
                let arg: FuseWriteIn = fixed(op, op_in, proto.write_in_size())?;
                Request::Write {
                    arg,
                    data: a.data(usize_of(arg.size))?,
                }
            }
            opcode::FLUSH => Request::Flush(fixed(op, op_in, FuseFlushIn::SIZE)?),
            opcode::RELEASE => Request::Release(fixed(op, op_in, FuseReleaseIn::SIZE)?),
            opcode::FSYNC => Request::Fsync(fixed(op, op_in, FuseFsyncIn::SIZE)?),
            opcode::OPENDIR => Request::Opendir(fixed(op, op_in, FuseOpenIn::SIZE)?),
            opcode::READDIR => Request::Readdir(fixed(op, op_in, proto.read_in_size())?),
            opcode::READDIRPLUS => Request::Readdirplus(fixed(op, op_in, proto.read_in_size())?),
            opcode::RELEASEDIR => Request::Releasedir(fixed(op, op_in, FuseReleaseIn::SIZE)?),
            opcode::FSYNCDIR => Request::Fsyncdir(fixed(op, op_in, FuseFsyncIn::SIZE)?),
            opcode::STATFS => Request::Statfs,
            opcode::SETXATTR => {
                let arg: FuseSetxattrIn = fixed(op, op_in, proto.setxattr_in_size())?;
                let name = a.name()?;
                Request::Setxattr {
                    arg,
                    name,
                    value: a.data(usize_of(arg.size))?,
                }
            }
            opcode::GETXATTR => {
                let g: FuseGetxattrIn = fixed(op, op_in, FuseGetxattrIn::SIZE)?;
                Request::Getxattr {
                    size: g.size,
                    name: a.name()?,
                }
            }
            opcode::LISTXATTR => {
                let g: FuseGetxattrIn = fixed(op, op_in, FuseGetxattrIn::SIZE)?;
                Request::Listxattr { size: g.size }
            }
            opcode::REMOVEXATTR => Request::Removexattr { name: a.name()? },
            opcode::ACCESS => {
                let x: FuseAccessIn = fixed(op, op_in, FuseAccessIn::SIZE)?;
                Request::Access { mask: x.mask }
            }
            opcode::FALLOCATE => Request::Fallocate(fixed(op, op_in, FuseFallocateIn::SIZE)?),
            opcode::LSEEK => Request::Lseek(fixed(op, op_in, FuseLseekIn::SIZE)?),
            opcode::COPY_FILE_RANGE => {
                Request::CopyFileRange(fixed(op, op_in, FuseCopyFileRangeIn::SIZE)?)
            }
            opcode::POLL => Request::Poll(fixed(op, op_in, FusePollIn::SIZE)?),
            opcode::IOCTL => {
                let arg: FuseIoctlIn = fixed(op, op_in, FuseIoctlIn::SIZE)?;
                Request::Ioctl {
                    arg,
                    data: a.data(usize_of(arg.in_size))?,
                }
            }
            other => return Ok(Request::Unsupported { opcode: other }),
        };
        a.end()?;
        Ok(req)
    }

    /// Decodes the request in a fetched ring entry.
    pub fn from_entry(
        proto: Proto,
        entry: &'a super::queue::Request<'a>,
    ) -> Result<Request<'a>, DecodeError> {
        Request::decode(
            proto,
            &entry.headers.in_header,
            &entry.headers.op_in,
            entry.payload,
        )
    }
}

#[cfg(test)]
mod tests {
    //! Each request is laid out field by field from the uapi header, as
    //! `fuse_uring_args_to_ring` lays it: `in_args[0]` in `op_in`, the rest concatenated
    //! in the payload. The builders below know nothing of the decoder's structs.
    use super::*;

    /// Native-endian bytes, appended field by field.
    #[derive(Default)]
    struct B(Vec<u8>);

    impl B {
        fn u32(mut self, v: u32) -> B {
            self.0.extend_from_slice(&v.to_ne_bytes());
            self
        }
        fn u64(mut self, v: u64) -> B {
            self.0.extend_from_slice(&v.to_ne_bytes());
            self
        }
        fn raw(mut self, v: &[u8]) -> B {
            self.0.extend_from_slice(v);
            self
        }
        /// The kernel's 128-byte op_in area: the struct, then stale bytes of an
        /// earlier request (never zeros to rely on).
        fn op_in(self) -> Vec<u8> {
            let mut v = self.0;
            v.resize(FUSE_URING_OP_IN_OUT_SZ, 0xee);
            v
        }
    }

    const NOW: Proto = Proto {
        minor: 40,
        setxattr_ext: false,
    };

    fn hdr(op: u32) -> FuseInHeader {
        FuseInHeader {
            opcode: op,
            unique: 2,
            nodeid: 1,
            ..FuseInHeader::default()
        }
    }

    fn dec<'a>(op: u32, op_in: &'a [u8], payload: &'a [u8]) -> Result<Request<'a>, DecodeError> {
        Request::decode(NOW, &hdr(op), op_in, payload)
    }

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn lookup_takes_its_name_from_the_payload_without_the_nul() {
        let op_in = B::default().op_in();
        assert_eq!(
            dec(opcode::LOOKUP, &op_in, b"hello\0"),
            Ok(Request::Lookup { name: os("hello") })
        );
    }

    #[test]
    fn a_name_without_its_nul_is_einval() {
        let op_in = B::default().op_in();
        let e = dec(opcode::LOOKUP, &op_in, b"hello").unwrap_err();
        assert_eq!(
            e,
            DecodeError::UnterminatedName {
                opcode: opcode::LOOKUP
            }
        );
        assert_eq!(e.errno(), libc::EINVAL);
        assert!(dec(opcode::UNLINK, &op_in, b"").is_err());
    }

    #[test]
    fn bytes_after_the_last_argument_are_einval() {
        let op_in = B::default().op_in();
        let e = dec(opcode::RMDIR, &op_in, b"d\0junk").unwrap_err();
        assert_eq!(
            e,
            DecodeError::TrailingBytes {
                opcode: opcode::RMDIR,
                extra: 4
            }
        );
        assert_eq!(
            dec(opcode::STATFS, &op_in, b"x").unwrap_err().errno(),
            libc::EINVAL
        );
    }

    #[test]
    fn a_fixed_argument_longer_than_op_in_is_eio() {
        let op_in = B::default().u64(1).u64(2).u32(3).u32(0).u64(0).u32(0).0; // 36 of 40
        let e = dec(opcode::READ, &op_in, b"").unwrap_err();
        assert_eq!(
            e,
            DecodeError::ShortOpIn {
                opcode: opcode::READ,
                need: 40,
                have: 36
            }
        );
        assert_eq!(e.errno(), libc::EIO);
    }

    #[test]
    fn getattr_has_a_handle_only_with_fuse_getattr_fh() {
        let with = B::default().u32(FUSE_GETATTR_FH).u32(0).u64(9).op_in();
        assert_eq!(
            dec(opcode::GETATTR, &with, b""),
            Ok(Request::Getattr { fh: Some(9) })
        );
        let without = B::default().u32(0).u32(0).u64(9).op_in();
        assert_eq!(
            dec(opcode::GETATTR, &without, b""),
            Ok(Request::Getattr { fh: None })
        );
    }

    #[test]
    fn getattr_before_7_9_has_no_argument() {
        let old = Proto { minor: 8, ..NOW };
        assert_eq!(
            Request::decode(old, &hdr(opcode::GETATTR), &[], b""),
            Ok(Request::Getattr { fh: None })
        );
    }

    #[test]
    fn setattr_fields_come_from_their_uapi_offsets() {
        let op_in = B::default()
            .u32(0x3f) // valid
            .u32(0) // padding
            .u64(11) // fh
            .u64(12) // size
            .u64(13) // lock_owner
            .u64(14) // atime
            .u64(15) // mtime
            .u64(16) // ctime
            .u32(17) // atimensec
            .u32(18) // mtimensec
            .u32(19) // ctimensec
            .u32(0o100644) // mode
            .u32(0) // unused4
            .u32(20) // uid
            .u32(21) // gid
            .u32(0) // unused5
            .op_in();
        let Ok(Request::Setattr(s)) = dec(opcode::SETATTR, &op_in, b"") else {
            panic!("not a setattr");
        };
        assert_eq!((s.valid, s.fh, s.size, s.lock_owner), (0x3f, 11, 12, 13));
        assert_eq!((s.atime, s.mtime, s.ctime), (14, 15, 16));
        assert_eq!((s.atimensec, s.mtimensec, s.ctimensec), (17, 18, 19));
        assert_eq!((s.mode, s.uid, s.gid), (0o100644, 20, 21));
    }

    #[test]
    fn readlink_and_statfs_have_no_arguments() {
        let op_in = B::default().op_in();
        assert_eq!(dec(opcode::READLINK, &op_in, b""), Ok(Request::Readlink));
        assert_eq!(dec(opcode::STATFS, &op_in, b""), Ok(Request::Statfs));
    }

    #[test]
    fn mknod_carries_mode_rdev_umask_and_the_name() {
        let op_in = B::default()
            .u32(0o10644)
            .u32(0x0801)
            .u32(0o022)
            .u32(0)
            .op_in();
        let Ok(Request::Mknod { arg, name }) = dec(opcode::MKNOD, &op_in, b"fifo\0") else {
            panic!("not a mknod");
        };
        assert_eq!(
            (arg.mode, arg.rdev, arg.umask, name),
            (0o10644, 0x0801, 0o022, os("fifo"))
        );
    }

    #[test]
    fn mknod_before_7_12_reads_only_mode_and_rdev() {
        let old = Proto { minor: 11, ..NOW };
        let op_in = B::default().u32(0o10644).u32(5).op_in(); // then stale 0xee bytes
        let Ok(Request::Mknod { arg, .. }) =
            Request::decode(old, &hdr(opcode::MKNOD), &op_in, b"n\0")
        else {
            panic!("not a mknod");
        };
        assert_eq!((arg.mode, arg.rdev, arg.umask), (0o10644, 5, 0));
    }

    #[test]
    fn mkdir_carries_mode_umask_and_the_name() {
        let op_in = B::default().u32(0o755).u32(0o027).op_in();
        let Ok(Request::Mkdir { arg, name }) = dec(opcode::MKDIR, &op_in, b"sub\0") else {
            panic!("not a mkdir");
        };
        assert_eq!((arg.mode, arg.umask, name), (0o755, 0o027, os("sub")));
    }

    #[test]
    fn unlink_and_rmdir_take_one_name() {
        let op_in = B::default().op_in();
        assert_eq!(
            dec(opcode::UNLINK, &op_in, b"f\0"),
            Ok(Request::Unlink { name: os("f") })
        );
        assert_eq!(
            dec(opcode::RMDIR, &op_in, b"d\0"),
            Ok(Request::Rmdir { name: os("d") })
        );
    }

    #[test]
    fn symlink_sends_the_name_then_the_target() {
        let op_in = B::default().op_in();
        assert_eq!(
            dec(opcode::SYMLINK, &op_in, b"link\0../t/x\0"),
            Ok(Request::Symlink {
                name: os("link"),
                target: os("../t/x")
            })
        );
        assert!(dec(opcode::SYMLINK, &op_in, b"link\0../t/x").is_err());
    }

    #[test]
    fn rename_has_flags_zero_and_rename2_its_flags() {
        let op_in = B::default().u64(7).op_in();
        assert_eq!(
            dec(opcode::RENAME, &op_in, b"a\0b\0"),
            Ok(Request::Rename {
                newdir: 7,
                flags: 0,
                name: os("a"),
                newname: os("b")
            })
        );
        let op_in = B::default()
            .u64(8)
            .u32(libc::RENAME_NOREPLACE)
            .u32(0)
            .op_in();
        assert_eq!(
            dec(opcode::RENAME2, &op_in, b"a\0b\0"),
            Ok(Request::Rename {
                newdir: 8,
                flags: libc::RENAME_NOREPLACE,
                name: os("a"),
                newname: os("b")
            })
        );
    }

    #[test]
    fn link_carries_the_old_inode_and_the_new_name() {
        let op_in = B::default().u64(42).op_in();
        assert_eq!(
            dec(opcode::LINK, &op_in, b"again\0"),
            Ok(Request::Link {
                oldnodeid: 42,
                name: os("again")
            })
        );
    }

    #[test]
    fn open_and_opendir_carry_flags_and_open_flags() {
        let op_in = B::default().u32(libc::O_RDWR as u32).u32(1).op_in();
        let want = FuseOpenIn {
            flags: libc::O_RDWR as u32,
            open_flags: 1,
        };
        assert_eq!(dec(opcode::OPEN, &op_in, b""), Ok(Request::Open(want)));
        assert_eq!(
            dec(opcode::OPENDIR, &op_in, b""),
            Ok(Request::Opendir(want))
        );
    }

    #[test]
    fn create_carries_flags_mode_umask_and_the_name() {
        let op_in = B::default()
            .u32(0o101)
            .u32(0o100644)
            .u32(0o022)
            .u32(0)
            .op_in();
        let Ok(Request::Create { arg, name }) = dec(opcode::CREATE, &op_in, b"new\0") else {
            panic!("not a create");
        };
        assert_eq!(
            (arg.flags, arg.mode, arg.umask, name),
            (0o101, 0o100644, 0o022, os("new"))
        );
    }

    #[test]
    fn create_before_7_12_has_only_the_open_flags() {
        let old = Proto { minor: 11, ..NOW };
        let op_in = B::default().u32(0o101).u32(0).op_in();
        let Ok(Request::Create { arg, .. }) =
            Request::decode(old, &hdr(opcode::CREATE), &op_in, b"n\0")
        else {
            panic!("not a create");
        };
        assert_eq!((arg.flags, arg.mode, arg.umask), (0o101, 0, 0));
    }

    fn read_in() -> Vec<u8> {
        B::default()
            .u64(3) // fh
            .u64(4096) // offset
            .u32(65536) // size
            .u32(FUSE_READ_LOCKOWNER) // read_flags
            .u64(77) // lock_owner
            .u32(libc::O_RDONLY as u32) // flags
            .u32(0)
            .op_in()
    }

    #[test]
    fn read_and_readdir_fields_come_from_fuse_read_in() {
        let want = FuseReadIn {
            fh: 3,
            offset: 4096,
            size: 65536,
            read_flags: FUSE_READ_LOCKOWNER,
            lock_owner: 77,
            flags: 0,
            padding: 0,
        };
        assert_eq!(dec(opcode::READ, &read_in(), b""), Ok(Request::Read(want)));
        assert_eq!(
            dec(opcode::READDIR, &read_in(), b""),
            Ok(Request::Readdir(want))
        );
        assert_eq!(
            dec(opcode::READDIRPLUS, &read_in(), b""),
            Ok(Request::Readdirplus(want))
        );
    }

    #[test]
    fn read_before_7_9_ignores_what_follows_the_24_bytes() {
        let old = Proto { minor: 8, ..NOW };
        let op_in = B::default().u64(3).u64(10).u32(100).u32(0).op_in();
        let Ok(Request::Read(r)) = Request::decode(old, &hdr(opcode::READ), &op_in, b"") else {
            panic!("not a read");
        };
        assert_eq!(
            (r.fh, r.offset, r.size, r.lock_owner, r.flags),
            (3, 10, 100, 0, 0)
        );
    }

    fn write_in(size: u32) -> Vec<u8> {
        B::default()
            .u64(5) // fh
            .u64(8192) // offset
            .u32(size)
            .u32(0) // write_flags
            .u64(0) // lock_owner
            .u32(libc::O_WRONLY as u32)
            .u32(0)
            .op_in()
    }

    #[test]
    fn write_data_is_the_payload_of_the_announced_size() {
        let op_in = write_in(5);
        let Ok(Request::Write { arg, data }) = dec(opcode::WRITE, &op_in, b"abcde") else {
            panic!("not a write");
        };
        assert_eq!(
            (arg.fh, arg.offset, arg.size, data),
            (5, 8192, 5, &b"abcde"[..])
        );
    }

    #[test]
    fn write_data_shorter_or_longer_than_announced_is_einval() {
        for payload in [&b"abcd"[..], b"abcdef"] {
            let e = dec(opcode::WRITE, &write_in(5), payload).unwrap_err();
            assert_eq!(
                e,
                DecodeError::DataSize {
                    opcode: opcode::WRITE,
                    announced: 5,
                    have: payload.len()
                }
            );
            assert_eq!(e.errno(), libc::EINVAL);
        }
    }

    #[test]
    fn flush_release_and_fsync_fields_come_from_their_structs() {
        let flush = B::default().u64(1).u32(0).u32(0).u64(99).op_in();
        let Ok(Request::Flush(f)) = dec(opcode::FLUSH, &flush, b"") else {
            panic!("not a flush");
        };
        assert_eq!((f.fh, f.lock_owner), (1, 99));
        let rel = B::default()
            .u64(2)
            .u32(0o2)
            .u32(FUSE_RELEASE_FLUSH)
            .u64(98)
            .op_in();
        let want = FuseReleaseIn {
            fh: 2,
            flags: 0o2,
            release_flags: FUSE_RELEASE_FLUSH,
            lock_owner: 98,
        };
        assert_eq!(dec(opcode::RELEASE, &rel, b""), Ok(Request::Release(want)));
        assert_eq!(
            dec(opcode::RELEASEDIR, &rel, b""),
            Ok(Request::Releasedir(want))
        );
        let fs = B::default().u64(3).u32(1).u32(0).op_in();
        let want = FuseFsyncIn {
            fh: 3,
            fsync_flags: 1,
            padding: 0,
        };
        assert_eq!(dec(opcode::FSYNC, &fs, b""), Ok(Request::Fsync(want)));
        assert_eq!(dec(opcode::FSYNCDIR, &fs, b""), Ok(Request::Fsyncdir(want)));
    }

    #[test]
    fn setxattr_without_ext_has_an_8_byte_argument_then_name_and_value() {
        // Stale bytes after the 8: they must not become setxattr_flags.
        let op_in = B::default().u32(3).u32(libc::XATTR_CREATE as u32).op_in();
        let Ok(Request::Setxattr { arg, name, value }) =
            dec(opcode::SETXATTR, &op_in, b"user.k\0abc")
        else {
            panic!("not a setxattr");
        };
        assert_eq!((arg.size, arg.flags, arg.setxattr_flags), (3, 1, 0));
        assert_eq!((name, value), (os("user.k"), &b"abc"[..]));
    }

    #[test]
    fn setxattr_with_ext_has_a_16_byte_argument_with_setxattr_flags() {
        let ext = Proto {
            setxattr_ext: true,
            ..NOW
        };
        let op_in = B::default().u32(2).u32(0).u32(1).u32(0).op_in();
        let Ok(Request::Setxattr { arg, value, .. }) =
            Request::decode(ext, &hdr(opcode::SETXATTR), &op_in, b"user.k\0ab")
        else {
            panic!("not a setxattr");
        };
        assert_eq!((arg.size, arg.setxattr_flags, value), (2, 1, &b"ab"[..]));
    }

    #[test]
    fn a_setxattr_value_of_another_size_than_announced_is_einval() {
        let op_in = B::default().u32(4).u32(0).op_in();
        assert!(matches!(
            dec(opcode::SETXATTR, &op_in, b"user.k\0abc"),
            Err(DecodeError::DataSize {
                announced: 4,
                have: 3,
                ..
            })
        ));
    }

    #[test]
    fn getxattr_listxattr_and_removexattr_carry_size_and_name() {
        let op_in = B::default().u32(64).u32(0).op_in();
        assert_eq!(
            dec(opcode::GETXATTR, &op_in, b"user.k\0"),
            Ok(Request::Getxattr {
                size: 64,
                name: os("user.k")
            })
        );
        assert_eq!(
            dec(opcode::LISTXATTR, &op_in, b""),
            Ok(Request::Listxattr { size: 64 })
        );
        let empty = B::default().op_in();
        assert_eq!(
            dec(opcode::REMOVEXATTR, &empty, b"user.k\0"),
            Ok(Request::Removexattr { name: os("user.k") })
        );
    }

    #[test]
    fn access_fallocate_lseek_copy_file_range_and_poll_decode_their_fields() {
        let op_in = B::default().u32(libc::R_OK as u32).u32(0).op_in();
        assert_eq!(
            dec(opcode::ACCESS, &op_in, b""),
            Ok(Request::Access { mask: 4 })
        );

        let op_in = B::default().u64(1).u64(2).u64(3).u32(1).u32(0).op_in();
        let Ok(Request::Fallocate(f)) = dec(opcode::FALLOCATE, &op_in, b"") else {
            panic!("not a fallocate");
        };
        assert_eq!((f.fh, f.offset, f.length, f.mode), (1, 2, 3, 1));

        let op_in = B::default()
            .u64(1)
            .u64(500)
            .u32(libc::SEEK_HOLE as u32)
            .u32(0)
            .op_in();
        let Ok(Request::Lseek(l)) = dec(opcode::LSEEK, &op_in, b"") else {
            panic!("not an lseek");
        };
        assert_eq!((l.fh, l.offset, l.whence), (1, 500, 4));

        let op_in = B::default()
            .u64(1)
            .u64(2)
            .u64(3)
            .u64(4)
            .u64(5)
            .u64(6)
            .u64(0)
            .op_in();
        let Ok(Request::CopyFileRange(c)) = dec(opcode::COPY_FILE_RANGE, &op_in, b"") else {
            panic!("not a copy_file_range");
        };
        assert_eq!(
            (c.fh_in, c.off_in, c.nodeid_out, c.fh_out, c.off_out, c.len),
            (1, 2, 3, 4, 5, 6)
        );

        let op_in = B::default()
            .u64(1)
            .u64(0x55)
            .u32(1)
            .u32(libc::POLLIN as u32)
            .op_in();
        let Ok(Request::Poll(p)) = dec(opcode::POLL, &op_in, b"") else {
            panic!("not a poll");
        };
        assert_eq!((p.fh, p.kh, p.flags, p.events), (1, 0x55, 1, 1));
    }

    #[test]
    fn ioctl_input_is_the_payload_of_in_size() {
        let op_in = B::default()
            .u64(1)
            .u32(0)
            .u32(0x4004_6601)
            .u64(0x7fff_0000)
            .u32(4)
            .u32(8)
            .op_in();
        let Ok(Request::Ioctl { arg, data }) = dec(opcode::IOCTL, &op_in, b"\x01\x02\x03\x04")
        else {
            panic!("not an ioctl");
        };
        assert_eq!(
            (arg.cmd, arg.arg, arg.in_size, arg.out_size),
            (0x4004_6601, 0x7fff_0000, 4, 8)
        );
        assert_eq!(data, b"\x01\x02\x03\x04");
        assert!(dec(opcode::IOCTL, &op_in, b"\x01").is_err());
    }

    #[test]
    fn extension_headers_at_the_end_of_the_payload_are_stripped() {
        let op_in = B::default().u32(0o755).u32(0).op_in();
        let payload = B::default().raw(b"d\0").raw(&[9; 16]).0;
        let h = FuseInHeader {
            total_extlen: 2,
            ..hdr(opcode::MKDIR)
        };
        assert!(matches!(
            Request::decode(NOW, &h, &op_in, &payload),
            Ok(Request::Mkdir { name, .. }) if name == "d"
        ));
        let h = FuseInHeader {
            total_extlen: 3,
            ..hdr(opcode::MKDIR)
        };
        let e = Request::decode(NOW, &h, &op_in, &payload).unwrap_err();
        assert_eq!(e.errno(), libc::EIO);
    }

    #[test]
    fn opcodes_the_mount_does_not_serve_decode_as_unsupported() {
        for op in [
            opcode::FORGET,
            opcode::GETLK,
            opcode::BMAP,
            opcode::STATX,
            53,
            9999,
        ] {
            assert_eq!(dec(op, &[], b"x"), Ok(Request::Unsupported { opcode: op }));
        }
    }

    #[test]
    fn hostile_buffers_of_every_length_never_panic() {
        let ops = 0..=60u32;
        let junk: Vec<u8> = (0..300u32).map(|i| (i * 37 % 256) as u8).collect();
        for op in ops {
            for minor in [8, 11, 40] {
                for ext in [false, true] {
                    let proto = Proto {
                        minor,
                        setxattr_ext: ext,
                    };
                    for n in [0, 1, 7, 8, 23, 24, 39, 40, 87, 88, 128] {
                        for p in [0, 1, 2, 5, 64, 300] {
                            for extlen in [0, 1, 40] {
                                let h = FuseInHeader {
                                    total_extlen: extlen,
                                    ..hdr(op)
                                };
                                let _ = Request::decode(proto, &h, &junk[..n], &junk[..p]);
                            }
                        }
                    }
                }
            }
        }
    }
}
