//! Encoding of ring replies into an entry's payload buffer.
//!
//! # Where a reply goes (`fs/fuse/dev_uring.c`)
//!
//! On COMMIT_AND_FETCH, `fuse_uring_commit` reads the `fuse_out_header` from `in_out`
//! and `fuse_uring_out_header_has_err` checks it: `unique` 0 (a notification) and an
//! `error` outside `(-512, 0]` are EINVAL, a `unique` other than the request's is
//! EINVAL, and a non-zero `error` ends the request with it *without reading the
//! payload*. `len` is not checked. Otherwise `fuse_uring_copy_from_ring` reads
//! `ring_ent_in_out.payload_sz` and `fuse_copy_out_args` copies that many bytes from the
//! payload into `out_args[..]` back to back (so CREATE's reply is `fuse_entry_out` then
//! `fuse_open_out`, IOCTL's `fuse_ioctl_out` then the data): the total must equal the
//! opcode's `out_args` sizes, or be less only if the last argument is variable
//! (`out_argvar`: READ, READDIR, READLINK, xattr values, IOCTL data), else EINVAL.
//! [`super::abi::encode_reply_headers`] writes both headers; the functions here write
//! the payload and return its length (`payload_sz`).
//!
//! Every function writes nothing and returns `None` when the buffer is too small; the
//! ring's payload buffer is at least `max_write` and `max_pages` pages, more than any
//! fixed reply and every variable one the kernel asks for (READ's `size` ≤ max_pages).

use super::abi::*;
use super::request::Proto;

/// `fuse_attr_out` before 7.9: `fuse_attr` without `blksize` and `flags`.
pub const FUSE_COMPAT_ATTR_OUT_SIZE: usize = 96;
/// `fuse_entry_out` before 7.9; see [`FUSE_COMPAT_ATTR_OUT_SIZE`].
pub const FUSE_COMPAT_ENTRY_OUT_SIZE: usize = 120;
/// `fuse_statfs_out` before 7.4: no `frsize`, `padding`, `spare`.
pub const FUSE_COMPAT_STATFS_SIZE: usize = 48;
/// Offset of the name in a `fuse_dirent` record.
pub const FUSE_NAME_OFFSET: usize = 24;
/// Offset of the name in a `fuse_direntplus` record (`fuse_entry_out` + `fuse_dirent`).
pub const FUSE_NAME_OFFSET_DIRENTPLUS: usize = FuseEntryOut::SIZE + FUSE_NAME_OFFSET;
/// Directory records are padded to this alignment.
pub const FUSE_DIRENT_ALIGN: usize = 8;

/// Writes the first `len` bytes of `v`'s wire form (older minors' structs are prefixes
/// of today's) into `out`.
fn prefix<T: Wire>(out: &mut [u8], v: &T, len: usize) -> Option<usize> {
    let mut full = [0u8; 256];
    v.encode(&mut full)?;
    out.get_mut(..len)?.copy_from_slice(full.get(..len)?);
    Some(len)
}

fn whole<T: Wire>(out: &mut [u8], v: &T) -> Option<usize> {
    v.encode(out)?;
    Some(T::SIZE)
}

/// Bytes of `fuse_entry_out` on this connection.
pub fn entry_size(proto: Proto) -> usize {
    if proto.minor < 9 {
        FUSE_COMPAT_ENTRY_OUT_SIZE
    } else {
        FuseEntryOut::SIZE
    }
}

/// Bytes of `fuse_attr_out` on this connection.
pub fn attr_size(proto: Proto) -> usize {
    if proto.minor < 9 {
        FUSE_COMPAT_ATTR_OUT_SIZE
    } else {
        FuseAttrOut::SIZE
    }
}

/// LOOKUP, MKNOD, MKDIR, SYMLINK, LINK: `fuse_entry_out`. A negative lookup may be
/// cached by answering `nodeid` 0 with an `entry_valid`.
pub fn entry(proto: Proto, out: &mut [u8], e: &FuseEntryOut) -> Option<usize> {
    prefix(out, e, entry_size(proto))
}

/// GETATTR, SETATTR: `fuse_attr_out`.
pub fn attr(proto: Proto, out: &mut [u8], a: &FuseAttrOut) -> Option<usize> {
    prefix(out, a, attr_size(proto))
}

/// OPEN, OPENDIR: `fuse_open_out`.
pub fn open(out: &mut [u8], o: &FuseOpenOut) -> Option<usize> {
    whole(out, o)
}

/// CREATE: `fuse_entry_out` then `fuse_open_out`.
pub fn create(proto: Proto, out: &mut [u8], e: &FuseEntryOut, o: &FuseOpenOut) -> Option<usize> {
    let n = entry_size(proto);
    if out.len() < n + FuseOpenOut::SIZE {
        return None;
    }
    entry(proto, out, e)?;
    Some(n + open(&mut out[n..], o)?)
}

/// WRITE, COPY_FILE_RANGE: `fuse_write_out` with the bytes written.
pub fn write(out: &mut [u8], size: u32) -> Option<usize> {
    whole(out, &FuseWriteOut { size, padding: 0 })
}

/// STATFS: `fuse_statfs_out`.
pub fn statfs(proto: Proto, out: &mut [u8], s: &FuseKstatfs) -> Option<usize> {
    let len = if proto.minor < 4 {
        FUSE_COMPAT_STATFS_SIZE
    } else {
        FuseKstatfs::SIZE
    };
    prefix(out, s, len)
}

/// GETXATTR, LISTXATTR asked with size 0: the size of the value (or list).
pub fn xattr_size(out: &mut [u8], size: u32) -> Option<usize> {
    whole(out, &FuseGetxattrOut { size, padding: 0 })
}

/// LSEEK: the resulting offset.
pub fn lseek(out: &mut [u8], offset: u64) -> Option<usize> {
    whole(out, &FuseLseekOut { offset })
}

/// POLL: the ready events.
pub fn poll(out: &mut [u8], revents: u32) -> Option<usize> {
    whole(
        out,
        &FusePollOut {
            revents,
            padding: 0,
        },
    )
}

/// IOCTL: `fuse_ioctl_out` then the output data.
pub fn ioctl(out: &mut [u8], o: &FuseIoctlOut, data: &[u8]) -> Option<usize> {
    let total = FuseIoctlOut::SIZE.checked_add(data.len())?;
    if out.len() < total {
        return None;
    }
    o.encode(out)?;
    out[FuseIoctlOut::SIZE..total].copy_from_slice(data);
    Some(total)
}

/// Variable replies given as bytes: READLINK's target (no NUL), a GETXATTR value, a
/// LISTXATTR list (names each with its NUL), READ data already in memory.
pub fn bytes(out: &mut [u8], data: &[u8]) -> Option<usize> {
    out.get_mut(..data.len())?.copy_from_slice(data);
    Some(data.len())
}

/// READ: the part of the payload buffer a reply of at most `size` bytes is written to,
/// for the caller to fill in place (e.g. `VolatileSlice::copy_to(read_data(..))`, one
/// copy from the device) and commit with the bytes it wrote (short at end of file).
pub fn read_data(out: &mut [u8], size: u32) -> &mut [u8] {
    let n = usize::try_from(size).unwrap_or(usize::MAX).min(out.len());
    &mut out[..n]
}

/// `len` rounded up to the record alignment.
pub fn dirent_align(len: usize) -> Option<usize> {
    len.checked_add(FUSE_DIRENT_ALIGN - 1)
        .map(|n| n & !(FUSE_DIRENT_ALIGN - 1))
}

/// Packs READDIR (`fuse_dirent`) or READDIRPLUS (`fuse_direntplus`) records into the
/// payload buffer, each padded with zeros to 8 bytes, while they fit in the request's
/// `size`: the kernel's `parse_dirfile` stops at a record whose padded length exceeds
/// what is left, so an entry that does not fit ends the reply (the next READDIR resumes
/// at its offset).
pub struct DirWriter<'a> {
    buf: &'a mut [u8],
    used: usize,
}

impl<'a> DirWriter<'a> {
    /// A writer for a reply of at most `size` bytes (the READDIR's `fuse_read_in.size`).
    pub fn new(out: &'a mut [u8], size: u32) -> DirWriter<'a> {
        let n = usize::try_from(size).unwrap_or(usize::MAX).min(out.len());
        DirWriter {
            buf: &mut out[..n],
            used: 0,
        }
    }

    /// Appends a READDIR record: inode `ino`, `off` the offset the *next* READDIR
    /// starts at, `typ` the `DT_*` type (`mode >> 12`). False, and nothing written, if
    /// it does not fit or the name is empty (the kernel fails a reply holding one).
    pub fn push(&mut self, ino: u64, off: u64, typ: u32, name: &[u8]) -> bool {
        self.record(None, ino, off, typ, name)
    }

    /// Appends a READDIRPLUS record: `entry` as LOOKUP would answer (it counts as a
    /// lookup of the inode unless `nodeid` is 0), then the dirent. False, and nothing
    /// written, if it does not fit.
    pub fn push_plus(&mut self, entry: &FuseEntryOut, off: u64, typ: u32, name: &[u8]) -> bool {
        self.record(Some(entry), entry.attr.ino, off, typ, name)
    }

    fn record(
        &mut self,
        entry: Option<&FuseEntryOut>,
        ino: u64,
        off: u64,
        typ: u32,
        name: &[u8],
    ) -> bool {
        let Ok(namelen) = u32::try_from(name.len()) else {
            return false;
        };
        if name.is_empty() {
            return false;
        }
        let head = if entry.is_some() {
            FUSE_NAME_OFFSET_DIRENTPLUS
        } else {
            FUSE_NAME_OFFSET
        };
        let Some(len) = head.checked_add(name.len()).and_then(dirent_align) else {
            return false;
        };
        let Some(rec) = self
            .used
            .checked_add(len)
            .and_then(|end| self.buf.get_mut(self.used..end))
        else {
            return false;
        };
        let mut at = 0;
        if let Some(e) = entry {
            if e.encode(rec).is_none() {
                return false;
            }
            at = FuseEntryOut::SIZE;
        }
        let d = FuseDirent {
            ino,
            off,
            namelen,
            typ,
        };
        if d.encode(&mut rec[at..]).is_none() {
            return false;
        }
        rec[head..head + name.len()].copy_from_slice(name);
        rec[head + name.len()..].fill(0);
        self.used += len;
        true
    }

    /// Bytes written so far: the reply's `payload_sz`.
    pub fn len(&self) -> usize {
        self.used
    }

    /// No record written (the reply of a READDIR at the end of the directory).
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }
}
