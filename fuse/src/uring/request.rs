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
    /// An opcode the mount does not serve (answer ENOSYS), or one that never comes
    /// over the ring (INIT, FORGET, INTERRUPT).
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
