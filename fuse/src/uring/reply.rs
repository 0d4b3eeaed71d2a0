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

#[cfg(test)]
mod tests {
    //! Each encoder's bytes are read back at the offsets the uapi header gives, not
    //! through the structs' own decoders.
    use super::*;

    const NOW: Proto = Proto {
        minor: 40,
        setxattr_ext: false,
    };
    const OLD: Proto = Proto {
        minor: 8,
        setxattr_ext: false,
    };

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_ne_bytes(b[at..at + 8].try_into().unwrap())
    }

    fn sample_attr() -> FuseAttr {
        FuseAttr {
            ino: 0x11,
            size: 0x22,
            blocks: 0x33,
            atime: 0x44,
            mtime: 0x55,
            ctime: 0x66,
            atimensec: 0x77,
            mtimensec: 0x88,
            ctimensec: 0x99,
            mode: 0o100644,
            nlink: 2,
            uid: 1000,
            gid: 100,
            rdev: 7,
            blksize: 4096,
            flags: 1,
        }
    }

    /// `fuse_attr`'s fields at their offsets from `at`.
    fn assert_attr_at(b: &[u8], at: usize, with_blksize: bool) {
        let a = sample_attr();
        assert_eq!(u64_at(b, at), a.ino);
        assert_eq!(u64_at(b, at + 8), a.size);
        assert_eq!(u64_at(b, at + 16), a.blocks);
        assert_eq!(u64_at(b, at + 24), a.atime);
        assert_eq!(u64_at(b, at + 32), a.mtime);
        assert_eq!(u64_at(b, at + 40), a.ctime);
        assert_eq!(u32_at(b, at + 48), a.atimensec);
        assert_eq!(u32_at(b, at + 52), a.mtimensec);
        assert_eq!(u32_at(b, at + 56), a.ctimensec);
        assert_eq!(u32_at(b, at + 60), a.mode);
        assert_eq!(u32_at(b, at + 64), a.nlink);
        assert_eq!(u32_at(b, at + 68), a.uid);
        assert_eq!(u32_at(b, at + 72), a.gid);
        assert_eq!(u32_at(b, at + 76), a.rdev);
        if with_blksize {
            assert_eq!(u32_at(b, at + 80), a.blksize);
            assert_eq!(u32_at(b, at + 84), a.flags);
        }
    }

    fn sample_entry() -> FuseEntryOut {
        FuseEntryOut {
            nodeid: 5,
            generation: 6,
            entry_valid: 7,
            attr_valid: 8,
            entry_valid_nsec: 9,
            attr_valid_nsec: 10,
            attr: sample_attr(),
        }
    }

    #[test]
    fn entry_out_is_128_bytes_with_the_attr_at_40() {
        let mut b = [0xffu8; 200];
        assert_eq!(entry(NOW, &mut b, &sample_entry()), Some(128));
        assert_eq!((u64_at(&b, 0), u64_at(&b, 8)), (5, 6));
        assert_eq!((u64_at(&b, 16), u64_at(&b, 24)), (7, 8));
        assert_eq!((u32_at(&b, 32), u32_at(&b, 36)), (9, 10));
        assert_attr_at(&b, 40, true);
        assert_eq!(b[128], 0xff, "nothing past the struct");
    }

    #[test]
    fn entry_out_before_7_9_drops_blksize_and_flags() {
        let mut b = [0xffu8; 200];
        assert_eq!(entry(OLD, &mut b, &sample_entry()), Some(120));
        assert_attr_at(&b, 40, false);
        assert_eq!(b[120], 0xff);
    }

    #[test]
    fn attr_out_is_104_bytes_with_the_attr_at_16_or_96_before_7_9() {
        let a = FuseAttrOut {
            attr_valid: 3,
            attr_valid_nsec: 4,
            dummy: 0,
            attr: sample_attr(),
        };
        let mut b = [0u8; 104];
        assert_eq!(attr(NOW, &mut b, &a), Some(104));
        assert_eq!((u64_at(&b, 0), u32_at(&b, 8)), (3, 4));
        assert_attr_at(&b, 16, true);
        assert_eq!(attr(OLD, &mut b, &a), Some(FUSE_COMPAT_ATTR_OUT_SIZE));
    }

    #[test]
    fn create_is_entry_out_then_open_out() {
        let o = FuseOpenOut {
            fh: 0xabc,
            open_flags: 2,
            backing_id: -1,
        };
        let mut b = [0u8; 200];
        assert_eq!(create(NOW, &mut b, &sample_entry(), &o), Some(144));
        assert_eq!(u64_at(&b, 0), 5);
        assert_eq!((u64_at(&b, 128), u32_at(&b, 136)), (0xabc, 2));
        assert_eq!(u32_at(&b, 140), u32::MAX, "backing_id -1");
        assert_eq!(open(&mut b, &o), Some(16));
    }

    #[test]
    fn small_fixed_replies_are_8_bytes_with_the_value_first() {
        let mut b = [0u8; 8];
        assert_eq!(write(&mut b, 4096), Some(8));
        assert_eq!(u32_at(&b, 0), 4096);
        assert_eq!(xattr_size(&mut b, 11), Some(8));
        assert_eq!(u32_at(&b, 0), 11);
        assert_eq!(lseek(&mut b, 1 << 40), Some(8));
        assert_eq!(u64_at(&b, 0), 1 << 40);
        assert_eq!(poll(&mut b, libc::POLLIN as u32), Some(8));
        assert_eq!(u32_at(&b, 0), 1);
    }

    #[test]
    fn statfs_out_is_80_bytes_or_48_before_7_4() {
        let s = FuseKstatfs {
            blocks: 1,
            bfree: 2,
            bavail: 3,
            files: 4,
            ffree: 5,
            bsize: 6,
            namelen: 7,
            frsize: 8,
            ..FuseKstatfs::default()
        };
        let mut b = [0xffu8; 80];
        assert_eq!(statfs(NOW, &mut b, &s), Some(80));
        for (i, v) in (1..=5).enumerate() {
            assert_eq!(u64_at(&b, i * 8), v);
        }
        assert_eq!((u32_at(&b, 40), u32_at(&b, 44), u32_at(&b, 48)), (6, 7, 8));
        assert!(b[52..].iter().all(|&x| x == 0), "padding and spare zeroed");
        let old = Proto { minor: 3, ..NOW };
        assert_eq!(statfs(old, &mut b, &s), Some(48));
    }

    #[test]
    fn ioctl_is_ioctl_out_then_the_data() {
        let o = FuseIoctlOut {
            result: -3,
            flags: 0,
            in_iovs: 0,
            out_iovs: 0,
        };
        let mut b = [0u8; 32];
        assert_eq!(ioctl(&mut b, &o, b"abcd"), Some(20));
        assert_eq!(u32_at(&b, 0) as i32, -3);
        assert_eq!(&b[16..20], b"abcd");
        assert_eq!(ioctl(&mut b[..19], &o, b"abcd"), None);
    }

    #[test]
    fn a_buffer_too_small_gets_nothing_written() {
        let mut b = [0xaau8; 127];
        assert_eq!(entry(NOW, &mut b, &sample_entry()), None);
        assert_eq!(
            create(
                NOW,
                &mut [0u8; 143],
                &sample_entry(),
                &FuseOpenOut::default()
            ),
            None
        );
        assert_eq!(bytes(&mut b[..3], b"abcd"), None);
        assert!(b.iter().all(|&x| x == 0xaa));
    }

    #[test]
    fn read_data_is_the_smaller_of_size_and_the_buffer() {
        let mut b = [0u8; 100];
        assert_eq!(read_data(&mut b, 10).len(), 10);
        assert_eq!(read_data(&mut b, 1000).len(), 100);
        assert_eq!(read_data(&mut b, 0).len(), 0);
    }

    #[test]
    fn a_dirent_is_24_bytes_then_the_name_zero_padded_to_8() {
        let mut b = [0xffu8; 64];
        let mut w = DirWriter::new(&mut b, 64);
        assert!(w.push(9, 1, libc::DT_REG.into(), b"abcdefghi"));
        assert_eq!(w.len(), 40, "24 + 9 rounded up to 8");
        assert_eq!((u64_at(&b, 0), u64_at(&b, 8)), (9, 1));
        assert_eq!(
            (u32_at(&b, 16), u32_at(&b, 20)),
            (9, u32::from(libc::DT_REG))
        );
        assert_eq!(&b[24..33], b"abcdefghi");
        assert!(b[33..40].iter().all(|&x| x == 0), "padding");
        assert_eq!(b[40], 0xff, "nothing past the record");
    }

    #[test]
    fn a_direntplus_is_an_entry_out_then_the_dirent_at_128() {
        let mut b = [0u8; 200];
        let mut w = DirWriter::new(&mut b, 200);
        assert!(w.push_plus(&sample_entry(), 3, libc::DT_DIR.into(), b"d"));
        assert_eq!(w.len(), 160, "152 + 1 rounded up to 8");
        assert_eq!(u64_at(&b, 0), 5, "nodeid");
        assert_attr_at(&b, 40, true);
        assert_eq!(
            (u64_at(&b, 128), u64_at(&b, 136)),
            (0x11, 3),
            "ino from the attr, off"
        );
        assert_eq!(u32_at(&b, 144), 1);
        assert_eq!(b[152], b'd');
    }

    #[test]
    fn records_are_packed_until_the_request_size_and_one_that_does_not_fit_ends_the_reply() {
        let mut b = [0u8; 4096];
        // Each record is 32 bytes: 24 + a name of up to 8.
        let mut w = DirWriter::new(&mut b, 64);
        assert!(w.push(1, 1, 4, b"a"));
        assert!(w.push(2, 2, 8, b"bbbbbbbb"));
        assert_eq!(w.len(), 64, "exactly the size");
        assert!(!w.push(3, 3, 8, b"c"));
        assert_eq!(w.len(), 64);
        let mut w = DirWriter::new(&mut b, 63);
        assert!(w.push(1, 1, 4, b"a"));
        assert!(!w.push(2, 2, 8, b"b"), "its padding would pass the size");
        assert_eq!(w.len(), 32);
    }

    #[test]
    fn the_payload_buffer_limits_a_directory_reply_as_much_as_size() {
        let mut b = [0u8; 40];
        let mut w = DirWriter::new(&mut b, 4096);
        assert!(w.push(1, 1, 4, b"a"));
        assert!(!w.push(2, 2, 4, b"b"));
    }

    #[test]
    fn an_empty_name_is_never_written() {
        let mut b = [0u8; 64];
        let mut w = DirWriter::new(&mut b, 64);
        assert!(!w.push(1, 1, 4, b""));
        assert!(w.is_empty());
    }
}
