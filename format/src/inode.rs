//! Inodes: the 256-byte slot of the inode table, its timestamps and flags.

use crate::error::{bad, FormatError};
use crate::extent::{Extent, EXTENT_SIZE};
use daxfs_pmem::codec::{crc32, get_u32, get_u64, put_u32, put_u64};

pub const INODE_SIZE: u64 = 256;
pub const INLINE_EXTENTS: usize = 5;

/// Inode flag: unlinked while open; reclaimed at the next mount.
pub const IFLAG_ORPHAN: u32 = 1;
/// Inode flag: FS_XFLAG_DAX (file data bypasses the kernel page cache under dax=inode).
pub const IFLAG_DAX: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInode {
    pub mode: u32,
    pub flags: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub generation: u32,
    pub size: u64,
    pub blocks: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub btime: Timespec,
    pub rdev: u64,
    pub parent: u64,
    pub xattr_block: u64,
    pub extent_block: u64,
    pub extent_count: u32,
    pub inline: [Extent; INLINE_EXTENTS],
}

const NO_EXTENT: Extent = Extent {
    lblk: 0,
    pblk: 0,
    len: 0,
};

impl DiskInode {
    pub fn empty() -> DiskInode {
        DiskInode {
            mode: 0,
            flags: 0,
            uid: 0,
            gid: 0,
            nlink: 0,
            generation: 0,
            size: 0,
            blocks: 0,
            atime: Timespec::default(),
            mtime: Timespec::default(),
            ctime: Timespec::default(),
            btime: Timespec::default(),
            rdev: 0,
            parent: 0,
            xattr_block: 0,
            extent_block: 0,
            extent_count: 0,
            inline: [NO_EXTENT; INLINE_EXTENTS],
        }
    }

    pub fn encode(&self) -> [u8; INODE_SIZE as usize] {
        let mut b = [0u8; INODE_SIZE as usize];
        if self.mode == 0 {
            return b;
        }
        put_u32(&mut b, 0, self.mode);
        put_u32(&mut b, 4, self.flags);
        put_u32(&mut b, 8, self.uid);
        put_u32(&mut b, 12, self.gid);
        put_u32(&mut b, 16, self.nlink);
        put_u32(&mut b, 20, self.generation);
        put_u64(&mut b, 24, self.size);
        put_u64(&mut b, 32, self.blocks);
        put_u64(&mut b, 40, self.atime.sec as u64);
        put_u32(&mut b, 48, self.atime.nsec);
        put_u32(&mut b, 52, self.mtime.nsec);
        put_u64(&mut b, 56, self.mtime.sec as u64);
        put_u64(&mut b, 64, self.ctime.sec as u64);
        put_u32(&mut b, 72, self.ctime.nsec);
        put_u32(&mut b, 76, self.btime.nsec);
        put_u64(&mut b, 80, self.btime.sec as u64);
        put_u64(&mut b, 88, self.rdev);
        put_u64(&mut b, 96, self.parent);
        put_u64(&mut b, 104, self.xattr_block);
        put_u64(&mut b, 112, self.extent_block);
        put_u32(&mut b, 120, self.extent_count);
        for (i, e) in self.inline.iter().enumerate() {
            let o = 128 + i * EXTENT_SIZE;
            b[o..o + EXTENT_SIZE].copy_from_slice(&e.encode());
        }
        let c = crc32(&b[..252]);
        put_u32(&mut b, 252, c);
        b
    }

    /// Decodes an inode slot: Ok(None) for a free slot.
    pub fn decode(b: &[u8]) -> Result<Option<DiskInode>, FormatError> {
        if b.len() < INODE_SIZE as usize {
            return bad("inode: short slot");
        }
        let b = &b[..INODE_SIZE as usize];
        let mode = get_u32(b, 0);
        if mode == 0 {
            if b.iter().any(|&x| x != 0) {
                return bad("inode: free slot is not zero");
            }
            return Ok(None);
        }
        if get_u32(b, 252) != crc32(&b[..252]) {
            return bad("inode: checksum mismatch");
        }
        let mut inline = [NO_EXTENT; INLINE_EXTENTS];
        for (i, slot) in inline.iter_mut().enumerate() {
            let o = 128 + i * EXTENT_SIZE;
            if let Some(e) = Extent::decode(&b[o..o + EXTENT_SIZE])? {
                *slot = e;
            }
        }
        let ts = |so: usize, no: usize| Timespec {
            sec: get_u64(b, so) as i64,
            nsec: get_u32(b, no),
        };
        let ino = DiskInode {
            mode,
            flags: get_u32(b, 4),
            uid: get_u32(b, 8),
            gid: get_u32(b, 12),
            nlink: get_u32(b, 16),
            generation: get_u32(b, 20),
            size: get_u64(b, 24),
            blocks: get_u64(b, 32),
            atime: ts(40, 48),
            mtime: ts(56, 52),
            ctime: ts(64, 72),
            btime: ts(80, 76),
            rdev: get_u64(b, 88),
            parent: get_u64(b, 96),
            xattr_block: get_u64(b, 104),
            extent_block: get_u64(b, 112),
            extent_count: get_u32(b, 120),
            inline,
        };
        for t in [ino.atime, ino.mtime, ino.ctime, ino.btime] {
            if t.nsec >= 1_000_000_000 {
                return bad("inode: timestamp nanoseconds out of range");
            }
        }
        Ok(Some(ino))
    }
}

impl Timespec {
    /// The current time (the Unix epoch if the clock reads before it).
    pub fn now() -> Timespec {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timespec {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_round_trips_and_detects_corruption() {
        let mut i = DiskInode::empty();
        i.mode = 0o100644;
        i.size = 12345;
        i.inline[2] = Extent {
            lblk: 3,
            pblk: 900,
            len: 4,
        };
        i.mtime = Timespec {
            sec: -5,
            nsec: 999_999_999,
        };
        let b = i.encode();
        assert_eq!(DiskInode::decode(&b).unwrap(), Some(i));
        let mut c = b;
        c[30] ^= 1;
        assert!(DiskInode::decode(&c).is_err());
        assert_eq!(DiskInode::decode(&[0u8; 256]).unwrap(), None);
    }
}
