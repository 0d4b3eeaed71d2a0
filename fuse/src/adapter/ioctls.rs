//! The ioctls the adapter answers: daxfs's own (DAXFS_IOC_PIN, UNPIN, PIN_STATUS, STATS;
//! numbers and client side in `crate::ioctl`), the chattr flags (FS_IOC_GETFLAGS /
//! SETFLAGS, FS_IOC_FSGETXATTR / FSSETXATTR), the label (FS_IOC_GETFSLABEL / SETFSLABEL)
//! and FITRIM, with the codecs of their arguments. All are restricted ioctls (the number
//! carries the argument's size), so the kernel copies them in and out by itself.

use super::{Ctx, FuseAdapter, Reply};
use crate::ioctl::{
    ioc, PinArg, DAXFS_IOC_PIN, DAXFS_IOC_PIN_STATUS, DAXFS_IOC_STATS, DAXFS_IOC_UNPIN,
    DAXFS_PIN_STATUS_SIZE, DAXFS_STATS_SIZE, IOC_READ, IOC_WRITE,
};
use daxfs::{Errno, InodeFlags, PinHolder};
use std::sync::Arc;

/// ioctl numbers of `struct fsxattr` (linux/fs.h): `_IOR('X', 31, struct fsxattr)` and
/// `_IOW('X', 32, struct fsxattr)`.
pub const FS_IOC_FSGETXATTR: u32 = ioc(IOC_READ, b'X' as u32, 31, FSXATTR_SIZE as u32);
pub const FS_IOC_FSSETXATTR: u32 = ioc(IOC_WRITE, b'X' as u32, 32, FSXATTR_SIZE as u32);
/// `struct fsxattr` is five u32 fields and 8 bytes of padding.
pub const FSXATTR_SIZE: usize = 28;
pub const FS_XFLAG_DAX: u32 = 0x0000_8000;
/// ioctl numbers of the inode flags word (linux/fs.h, what lsattr/chattr use):
/// `_IOR('f', 1, long)` and `_IOW('f', 2, long)`. The kernel's FUSE client sends them with
/// an `unsigned int` argument.
pub const FS_IOC_GETFLAGS: u32 = ioc(IOC_READ, b'f' as u32, 1, LONG_SIZE);
pub const FS_IOC_SETFLAGS: u32 = ioc(IOC_WRITE, b'f' as u32, 2, LONG_SIZE);
const LONG_SIZE: u32 = std::mem::size_of::<libc::c_long>() as u32;
/// `chattr +x`: the inode's DAX flag, the same bit as FS_XFLAG_DAX in the flags word.
pub const FS_DAX_FL: u32 = 0x0200_0000;

/// `fsx_xflags` of chattr's immutable and append-only flags (linux/fs.h).
pub const FS_XFLAG_IMMUTABLE: u32 = 0x0000_0008;
pub const FS_XFLAG_APPEND: u32 = 0x0000_0010;
/// The same two in the FS_IOC_GETFLAGS word (`chattr +i`, `chattr +a`).
pub const FS_IMMUTABLE_FL: u32 = 0x0000_0010;
pub const FS_APPEND_FL: u32 = 0x0000_0020;

/// `FSLABEL_MAX` (linux/fs.h): the label ioctls' argument is a `char[256]`.
pub const FSLABEL_MAX: usize = 256;
/// `_IOR(0x94, 49, char[FSLABEL_MAX])` and `_IOW(0x94, 50, char[FSLABEL_MAX])`.
pub const FS_IOC_GETFSLABEL: u32 = crate::ioctl::ioc(2, 0x94, 49, FSLABEL_MAX as u32);
pub const FS_IOC_SETFSLABEL: u32 = crate::ioctl::ioc(1, 0x94, 50, FSLABEL_MAX as u32);
/// `struct fstrim_range { __u64 start, len, minlen; }` and `_IOWR('X', 121, it)`.
pub const FSTRIM_RANGE_SIZE: usize = 24;
pub const FITRIM: u32 = crate::ioctl::ioc(3, 0x58, 121, FSTRIM_RANGE_SIZE as u32);

/// One flags word from the chattr flags: `(dax, immutable, append)` bits of either the
/// FS_IOC_GETFLAGS word or `fsx_xflags`.
fn flag_word(f: InodeFlags, bits: (u32, u32, u32)) -> u32 {
    (if f.dax { bits.0 } else { 0 })
        | (if f.immutable { bits.1 } else { 0 })
        | (if f.append { bits.2 } else { 0 })
}

/// The chattr flags of a flags word; a bit the core does not keep is EOPNOTSUPP (what
/// tmpfs answers; ext4 silently drops a few it does not implement, such as
/// FS_COMPR_FL, and refuses the rest with EOPNOTSUPP too).
fn flags_of_word(w: u32, bits: (u32, u32, u32)) -> Result<InodeFlags, Errno> {
    if w & !(bits.0 | bits.1 | bits.2) != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    Ok(InodeFlags {
        dax: w & bits.0 != 0,
        immutable: w & bits.1 != 0,
        append: w & bits.2 != 0,
    })
}

const XFLAG_BITS: (u32, u32, u32) = (FS_XFLAG_DAX, FS_XFLAG_IMMUTABLE, FS_XFLAG_APPEND);
const FL_BITS: (u32, u32, u32) = (FS_DAX_FL, FS_IMMUTABLE_FL, FS_APPEND_FL);

/// `struct fsxattr` with only `fsx_xflags` set (the core keeps no extent size hints or
/// project ids).
pub fn encode_fsxattr(f: InodeFlags) -> [u8; FSXATTR_SIZE] {
    let mut b = [0u8; FSXATTR_SIZE];
    b[0..4].copy_from_slice(&flag_word(f, XFLAG_BITS).to_ne_bytes());
    b
}

/// The chattr flags an FS_IOC_FSSETXATTR argument asks for. Anything else it asks for
/// that the core does not keep (other xflags, extent size hints, project ids) is
/// EOPNOTSUPP, as ext4 answers for xflags it does not support; a short argument is
/// EINVAL.
pub fn decode_fsxattr(b: &[u8]) -> Result<InodeFlags, Errno> {
    if b.len() < FSXATTR_SIZE {
        return Err(Errno::EINVAL);
    }
    let word = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let (xflags, extsize, projid, cowextsize) = (word(0), word(4), word(12), word(16));
    if extsize != 0 || projid != 0 || cowextsize != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    flags_of_word(xflags, XFLAG_BITS)
}

/// The FS_IOC_GETFLAGS word of the chattr flags.
pub fn encode_inode_flags(f: InodeFlags) -> u32 {
    flag_word(f, FL_BITS)
}

/// The chattr flags an FS_IOC_SETFLAGS argument asks for. Any other flag is EOPNOTSUPP
/// (see `flags_of_word`); a short argument is EINVAL.
pub fn decode_inode_flags(b: &[u8]) -> Result<InodeFlags, Errno> {
    let Some(word) = b.get(..4) else {
        return Err(Errno::EINVAL);
    };
    flags_of_word(
        u32::from_ne_bytes([word[0], word[1], word[2], word[3]]),
        FL_BITS,
    )
}

/// The label of an FS_IOC_SETFSLABEL argument: up to its NUL. An argument without NUL in
/// FSLABEL_MAX bytes is EINVAL (as the kernel's `strnlen` check), as is a short one.
pub fn decode_label(b: &[u8]) -> Result<&[u8], Errno> {
    let b = b.get(..FSLABEL_MAX).ok_or(Errno::EINVAL)?;
    let end = b.iter().position(|&c| c == 0).ok_or(Errno::EINVAL)?;
    Ok(&b[..end])
}

/// A `struct fstrim_range` as (start, len, minlen); None when short.
pub fn decode_fstrim_range(b: &[u8]) -> Option<(u64, u64, u64)> {
    let word =
        |i: usize| -> Option<u64> { Some(u64::from_ne_bytes(b.get(i..i + 8)?.try_into().ok()?)) };
    Some((word(0)?, word(8)?, word(16)?))
}

/// The `struct fstrim_range` FITRIM answers: `len` becomes the bytes trimmed.
pub fn encode_fstrim_range(start: u64, trimmed: u64, minlen: u64) -> [u8; FSTRIM_RANGE_SIZE] {
    let mut b = [0u8; FSTRIM_RANGE_SIZE];
    for (i, w) in [start, trimmed, minlen].iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
    }
    b
}

/// The answer to an ioctl of `cmd` on handle `fh` (see the module doc).
/// The longest a DAXFS_IOC_SYNC keeps a worker (`daxfs sync` on a follower).
const SYNC_MAX: std::time::Duration = std::time::Duration::from_secs(60);

impl FuseAdapter {
    /// DAXFS_IOC_PROMOTE (docs/DESIGN.md "Promotion"): the follower becomes the writer
    /// (`DaxFs::promote`: the lease observed for the timeout, the journal replayed, the
    /// lease taken by CAS), and the new filesystem is swapped in: the kernel's references
    /// carried over, its caches of every inode dropped. Refused (EBUSY, logged): not a
    /// follower, the writer alive, another promotion running or won elsewhere.
    fn promote(&self) -> Result<u64, Errno> {
        let Ok(_one) = self.promoting.try_lock() else {
            log::warn!("promote refused: another promotion is running");
            return Err(Errno(libc::EBUSY));
        };
        let old = self.fs();
        if old.is_follower() {
            // The view catches up with what the log holds, so that the kernel's caches
            // (invalidated from the refresh) match what the replay makes of it.
            let _ = old.follow_sync(std::time::Duration::from_secs(5));
        }
        let new = match old.promote() {
            Ok(fs) => Arc::new(fs),
            Err(e) => {
                log::warn!("promote refused: {e}");
                return Err(e.errno());
            }
        };
        self.install_notifiers(&new);
        let changes = new.adopt_kernel_refs(&old);
        let epoch = new.writer_lease().map_or(0, |l| l.epoch());
        *self.fs.write().unwrap_or_else(|e| e.into_inner()) = new;
        // The follower goes when the last request still using it ends: its Drop stops its
        // threads and releases its host slot.
        old.set_follow_notifier(None);
        drop(old);
        super::notify::follow_invalidator(self.notifier.clone())(&changes);
        log::warn!("promoted to writer (lease epoch {epoch}): the mount is read-write now");
        Ok(epoch)
    }
}

pub(super) fn ioctl(
    a: &FuseAdapter,
    ctx: &Ctx,
    ino: u64,
    fh: u64,
    cmd: u32,
    in_data: &[u8],
    out_size: u32,
) -> Reply<'static> {
    let done = |r: daxfs::Result<()>| match r {
        Ok(()) => Reply::Ioctl {
            result: 0,
            data: Vec::new(),
        },
        Err(e) => Reply::Err(e),
    };
    let data = |data: Vec<u8>| Reply::Ioctl { result: 0, data };
    match cmd {
        DAXFS_IOC_PIN | DAXFS_IOC_UNPIN => {
            let Some(arg) = PinArg::decode(in_data) else {
                return Reply::Err(Errno::EINVAL);
            };
            done(if cmd == DAXFS_IOC_PIN {
                let holder = PinHolder::of_process(ctx.pid, ctx.uid);
                a.ioctl_pin(ino, fh, arg, &holder)
            } else {
                a.ioctl_unpin(fh, arg)
            })
        }
        DAXFS_IOC_PIN_STATUS => {
            if (out_size as usize) < DAXFS_PIN_STATUS_SIZE {
                return Reply::Err(Errno::EINVAL);
            }
            data(a.pin_status(fh).encode().to_vec())
        }
        DAXFS_IOC_STATS => {
            if (out_size as usize) < DAXFS_STATS_SIZE {
                return Reply::Err(Errno::EINVAL);
            }
            let t = if a.on_ring() {
                crate::ioctl::Transport::IoUring
            } else {
                crate::ioctl::Transport::DevFuse
            };
            data(crate::ioctl::encode_stats_with(&a.fs().stats(), t).to_vec())
        }
        crate::ioctl::DAXFS_IOC_PROMOTE => {
            // Root only: on an allow_other mount anyone could otherwise take the writer
            // role, or tie up workers for a host timeout each.
            if ctx.uid != 0 {
                return Reply::Err(Errno::EPERM);
            }
            if (out_size as usize) < 8 {
                return Reply::Err(Errno::EINVAL);
            }
            match a.promote() {
                Ok(epoch) => data(epoch.to_ne_bytes().to_vec()),
                Err(e) => Reply::Err(e),
            }
        }
        crate::ioctl::DAXFS_IOC_SYNC => {
            let Some(arg) = crate::ioctl::SyncArg::decode(in_data) else {
                return Reply::Err(Errno::EINVAL);
            };
            if (out_size as usize) < crate::ioctl::DAXFS_SYNC_SIZE {
                return Reply::Err(Errno::EINVAL);
            }
            if !a.fs().is_follower() {
                return data(crate::ioctl::SyncArg::default().encode().to_vec());
            }
            // Bounded: the worker waits at most this long (SYNC_MAX at the most).
            let timeout = std::time::Duration::from_millis(arg.timeout_ms).min(SYNC_MAX);
            match a.fs().follow_sync(timeout) {
                Ok(applied_seq) => data(
                    crate::ioctl::SyncArg {
                        timeout_ms: arg.timeout_ms,
                        applied_seq,
                        flags: crate::ioctl::DAXFS_SYNC_FOLLOWER,
                    }
                    .encode()
                    .to_vec(),
                ),
                Err(e) => Reply::Err(e),
            }
        }
        FS_IOC_FSGETXATTR => {
            if (out_size as usize) < FSXATTR_SIZE {
                return Reply::Err(Errno::EINVAL);
            }
            match a.fs().inode_flags(ino) {
                Ok(f) => data(encode_fsxattr(f).to_vec()),
                Err(e) => Reply::Err(e),
            }
        }
        FS_IOC_FSSETXATTR => match decode_fsxattr(in_data) {
            Ok(f) => done(a.fs().set_inode_flags(ino, &ctx.cred(), f)),
            Err(e) => Reply::Err(e),
        },
        FS_IOC_GETFLAGS => {
            if out_size < 4 {
                return Reply::Err(Errno::EINVAL);
            }
            match a.fs().inode_flags(ino) {
                Ok(f) => data(encode_inode_flags(f).to_ne_bytes().to_vec()),
                Err(e) => Reply::Err(e),
            }
        }
        FS_IOC_SETFLAGS => match decode_inode_flags(in_data) {
            Ok(f) => done(a.fs().set_inode_flags(ino, &ctx.cred(), f)),
            Err(e) => Reply::Err(e),
        },
        FS_IOC_GETFSLABEL => {
            if (out_size as usize) < FSLABEL_MAX {
                return Reply::Err(Errno::EINVAL);
            }
            let mut b = vec![0u8; FSLABEL_MAX];
            let label = a.fs().label();
            b[..label.len()].copy_from_slice(&label);
            data(b)
        }
        FS_IOC_SETFSLABEL => match decode_label(in_data) {
            Ok(label) => done(a.fs().set_label(&ctx.cred(), label)),
            Err(e) => Reply::Err(e),
        },
        FITRIM => {
            let Some((start, len, minlen)) = decode_fstrim_range(in_data) else {
                return Reply::Err(Errno::EINVAL);
            };
            match a.fs().trim(&ctx.cred(), start, len, minlen) {
                Ok(trimmed) => data(encode_fstrim_range(start, trimmed, minlen).to_vec()),
                Err(e) => Reply::Err(e),
            }
        }
        _ => Reply::Err(Errno::ENOTTY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsxattr_ioctl_numbers_match_linux() {
        // The values linux/fs.h's macros expand to on x86-64 and arm64.
        assert_eq!(FS_IOC_FSGETXATTR, 0x801c_581f);
        assert_eq!(FS_IOC_FSSETXATTR, 0x401c_5820);
    }

    const DAX: InodeFlags = InodeFlags {
        dax: true,
        immutable: false,
        append: false,
    };
    const IMMUTABLE_APPEND: InodeFlags = InodeFlags {
        dax: false,
        immutable: true,
        append: true,
    };

    #[test]
    fn fsxattr_round_trips_the_dax_immutable_and_append_flags() {
        for f in [DAX, IMMUTABLE_APPEND, InodeFlags::default()] {
            assert_eq!(decode_fsxattr(&encode_fsxattr(f)), Ok(f));
        }
        assert_eq!(&encode_fsxattr(DAX)[..4], &FS_XFLAG_DAX.to_ne_bytes());
        assert_eq!(
            &encode_fsxattr(IMMUTABLE_APPEND)[..4],
            &(FS_XFLAG_IMMUTABLE | FS_XFLAG_APPEND).to_ne_bytes()
        );
    }

    #[test]
    fn fsxattr_with_other_xflags_or_hints_is_eopnotsupp() {
        let mut b = encode_fsxattr(DAX);
        b[0..4].copy_from_slice(&(FS_XFLAG_DAX | 0x20/* SYNC */).to_ne_bytes());
        assert_eq!(decode_fsxattr(&b), Err(Errno::EOPNOTSUPP));
        let mut b = encode_fsxattr(InodeFlags::default());
        b[12..16].copy_from_slice(&5u32.to_ne_bytes()); // fsx_projid
        assert_eq!(decode_fsxattr(&b), Err(Errno::EOPNOTSUPP));
    }

    #[test]
    fn short_fsxattr_argument_is_einval() {
        assert_eq!(decode_fsxattr(&[0u8; 27]), Err(Errno::EINVAL));
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn inode_flags_ioctl_numbers_match_linux() {
        // The values linux/fs.h's macros expand to where a long is 8 bytes.
        assert_eq!(FS_IOC_GETFLAGS, 0x8008_6601);
        assert_eq!(FS_IOC_SETFLAGS, 0x4008_6602);
    }

    #[test]
    fn inode_flags_carry_the_dax_immutable_and_append_flags_only() {
        for f in [DAX, IMMUTABLE_APPEND, InodeFlags::default()] {
            assert_eq!(
                decode_inode_flags(&encode_inode_flags(f).to_ne_bytes()),
                Ok(f)
            );
        }
        assert_eq!(encode_inode_flags(DAX), FS_DAX_FL);
        assert_eq!(encode_inode_flags(IMMUTABLE_APPEND), 0x30);
        let noatime = 0x80u32;
        assert_eq!(
            decode_inode_flags(&(FS_DAX_FL | noatime).to_ne_bytes()),
            Err(Errno::EOPNOTSUPP)
        );
        assert_eq!(decode_inode_flags(&[0u8; 3]), Err(Errno::EINVAL));
    }

    #[test]
    fn label_and_fitrim_ioctl_numbers_match_linux() {
        assert_eq!(FS_IOC_GETFSLABEL, 0x8100_9431);
        assert_eq!(FS_IOC_SETFSLABEL, 0x4100_9432);
        assert_eq!(FITRIM, 0xc018_5879);
    }

    #[test]
    fn label_argument_ends_at_its_nul_and_needs_one() {
        let mut b = [0u8; FSLABEL_MAX];
        b[..3].copy_from_slice(b"abc");
        assert_eq!(decode_label(&b), Ok(&b"abc"[..]));
        assert_eq!(decode_label(&[b'x'; FSLABEL_MAX]), Err(Errno::EINVAL));
        assert_eq!(decode_label(&b[..10]), Err(Errno::EINVAL));
    }

    #[test]
    fn fstrim_range_round_trips_with_len_as_the_bytes_trimmed() {
        let b = encode_fstrim_range(4096, 0, 1 << 20);
        assert_eq!(decode_fstrim_range(&b), Some((4096, 0, 1 << 20)));
        assert_eq!(decode_fstrim_range(&b[..23]), None);
    }
}
