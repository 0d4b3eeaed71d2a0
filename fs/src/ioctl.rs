//! The daxfs ioctl ABI, as documented for C in `include/daxfs_ioctl.h` (keep both in
//! step): ioctl numbers, `struct daxfs_pin` and `struct daxfs_stats`, with their
//! encodings. Shared by the FUSE adapter (server side) and the `daxfs` CLI (client side).
//!
//! All three are "restricted" ioctls in FUSE terms: their `_IOC` number carries the
//! direction and size of the argument, so the kernel copies it in and out by itself.

use crate::pin::FsStats;

/// ioctl type byte of daxfs (`_IOC_TYPE`).
pub const DAXFS_IOC_MAGIC: u32 = 0xDA;

/// `_IOC(dir, type, nr, size)` as linux/ioctl.h builds it (asm-generic layout).
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: u32) -> u32 {
    (dir << 30) | (size << 16) | (ty << 8) | nr
}
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `struct daxfs_pin { __u64 offset; __u64 length; }`
pub const DAXFS_PIN_SIZE: usize = 16;
/// `struct daxfs_stats`: 32 `__u64` fields.
pub const DAXFS_STATS_SIZE: usize = 256;

/// `_IOW(0xDA, 1, struct daxfs_pin)`: pin a byte range of the open file.
pub const DAXFS_IOC_PIN: u32 = ioc(IOC_WRITE, DAXFS_IOC_MAGIC, 1, DAXFS_PIN_SIZE as u32);
/// `_IOW(0xDA, 2, struct daxfs_pin)`: release a pin taken with the same range.
pub const DAXFS_IOC_UNPIN: u32 = ioc(IOC_WRITE, DAXFS_IOC_MAGIC, 2, DAXFS_PIN_SIZE as u32);
/// `_IOR(0xDA, 3, struct daxfs_stats)`: the filesystem's counters (any file or directory
/// of the mount, typically its root).
pub const DAXFS_IOC_STATS: u32 = ioc(IOC_READ, DAXFS_IOC_MAGIC, 3, DAXFS_STATS_SIZE as u32);

/// `daxfs_stats.magic`: "DAXFSST1" in little-endian byte order.
pub const DAXFS_STATS_MAGIC: u64 = u64::from_le_bytes(*b"DAXFSST1");

/// A `struct daxfs_pin` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinArg {
    pub offset: u64,
    pub length: u64,
}

impl PinArg {
    pub fn encode(&self) -> [u8; DAXFS_PIN_SIZE] {
        let mut b = [0u8; DAXFS_PIN_SIZE];
        b[..8].copy_from_slice(&self.offset.to_ne_bytes());
        b[8..].copy_from_slice(&self.length.to_ne_bytes());
        b
    }

    /// None when `b` is shorter than the structure.
    pub fn decode(b: &[u8]) -> Option<PinArg> {
        Some(PinArg {
            offset: u64::from_ne_bytes(b.get(..8)?.try_into().ok()?),
            length: u64::from_ne_bytes(b.get(8..16)?.try_into().ok()?),
        })
    }
}

/// The fields of `struct daxfs_stats` after `magic` and `size`, in order.
fn stats_fields(s: &FsStats) -> [u64; 16] {
    [
        s.blocks_total,
        s.blocks_free,
        s.blocks_cached,
        s.blocks_pinned,
        s.alloc_free,
        s.pins_taken,
        s.pins_released,
        s.block_pins,
        s.block_unpins,
        s.layout_breaks,
        s.lease_breaks,
        s.waits,
        s.wait_ns,
        s.timeouts,
        s.violations,
        s.commits,
    ]
}

/// Number of meaningful bytes of `struct daxfs_stats` (the rest is reserved, zero).
const STATS_USED: u64 = 8 * (2 + 16);

pub fn encode_stats(s: &FsStats) -> [u8; DAXFS_STATS_SIZE] {
    let mut b = [0u8; DAXFS_STATS_SIZE];
    let words = [DAXFS_STATS_MAGIC, STATS_USED]
        .into_iter()
        .chain(stats_fields(s));
    for (i, w) in words.enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
    }
    b
}

/// None unless `b` is a `struct daxfs_stats` (right magic, long enough).
pub fn decode_stats(b: &[u8]) -> Option<FsStats> {
    let word = |i: usize| -> Option<u64> {
        Some(u64::from_ne_bytes(
            b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
        ))
    };
    if word(0)? != DAXFS_STATS_MAGIC || word(1)? < STATS_USED {
        return None;
    }
    let f = |i: usize| word(2 + i);
    Some(FsStats {
        blocks_total: f(0)?,
        blocks_free: f(1)?,
        blocks_cached: f(2)?,
        blocks_pinned: f(3)?,
        alloc_free: f(4)?,
        pins_taken: f(5)?,
        pins_released: f(6)?,
        block_pins: f(7)?,
        block_unpins: f(8)?,
        layout_breaks: f(9)?,
        lease_breaks: f(10)?,
        waits: f(11)?,
        wait_ns: f(12)?,
        timeouts: f(13)?,
        violations: f(14)?,
        commits: f(15)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_documented_constants() {
        // The values written in include/daxfs_ioctl.h's comments.
        assert_eq!(DAXFS_IOC_PIN, 0x4010_DA01);
        assert_eq!(DAXFS_IOC_UNPIN, 0x4010_DA02);
        assert_eq!(DAXFS_IOC_STATS, 0x8100_DA03);
    }

    #[test]
    fn pin_argument_round_trips() {
        let a = PinArg {
            offset: 4096,
            length: 1 << 20,
        };
        assert_eq!(PinArg::decode(&a.encode()), Some(a));
        assert_eq!(PinArg::decode(&[0u8; 15]), None);
    }

    #[test]
    fn stats_round_trip_and_carry_the_magic() {
        let s = FsStats {
            blocks_total: 1,
            blocks_free: 2,
            blocks_cached: 3,
            blocks_pinned: 4,
            alloc_free: 5,
            pins_taken: 6,
            pins_released: 7,
            block_pins: 8,
            block_unpins: 9,
            layout_breaks: 10,
            lease_breaks: 11,
            waits: 12,
            wait_ns: 13,
            timeouts: 14,
            violations: 15,
            commits: 16,
        };
        let b = encode_stats(&s);
        assert_eq!(&b[..8], b"DAXFSST1");
        assert_eq!(decode_stats(&b), Some(s));
    }

    #[test]
    fn stats_without_the_magic_are_refused() {
        assert_eq!(decode_stats(&[0u8; DAXFS_STATS_SIZE]), None);
        assert_eq!(
            decode_stats(&encode_stats(&FsStats::default())[..100]),
            None
        );
    }
}
