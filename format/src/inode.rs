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
/// Inode flag: FS_IMMUTABLE_FL (chattr +i): no change to the inode, its data or its names.
pub const IFLAG_IMMUTABLE: u32 = 4;
/// Inode flag: FS_APPEND_FL (chattr +a): data may only be appended; no rename or unlink.
pub const IFLAG_APPEND: u32 = 8;

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

/// Field offsets (docs/FORMAT.md "Inode"), each placed after the one before it. The
/// timestamps are (seconds, nanoseconds) pairs; their order on media is historical (the
/// nanoseconds of mtime and btime come first), so each pair names both offsets.
pub(crate) mod off {
    use super::{EXTENT_SIZE, INLINE_EXTENTS, INODE_SIZE};

    pub const MODE: usize = 0;
    pub const FLAGS: usize = MODE + 4;
    pub const UID: usize = FLAGS + 4;
    pub const GID: usize = UID + 4;
    pub const NLINK: usize = GID + 4;
    pub const GENERATION: usize = NLINK + 4;
    pub const SIZE: usize = GENERATION + 4;
    pub const BLOCKS: usize = SIZE + 8;
    const ATIME_SEC: usize = BLOCKS + 8;
    const ATIME_NSEC: usize = ATIME_SEC + 8;
    const MTIME_NSEC: usize = ATIME_NSEC + 4;
    const MTIME_SEC: usize = MTIME_NSEC + 4;
    const CTIME_SEC: usize = MTIME_SEC + 8;
    const CTIME_NSEC: usize = CTIME_SEC + 8;
    const BTIME_NSEC: usize = CTIME_NSEC + 4;
    const BTIME_SEC: usize = BTIME_NSEC + 4;
    pub const RDEV: usize = BTIME_SEC + 8;
    pub const PARENT: usize = RDEV + 8;
    pub const XATTR_BLOCK: usize = PARENT + 8;
    pub const EXTENT_BLOCK: usize = XATTR_BLOCK + 8;
    pub const EXTENT_COUNT: usize = EXTENT_BLOCK + 8;
    pub const RESERVED: usize = EXTENT_COUNT + 4;
    pub const INLINE: usize = RESERVED + 4;
    pub const INLINE_END: usize = INLINE + INLINE_EXTENTS * EXTENT_SIZE;
    /// CRC-32 of every byte before it: the last 4 bytes (4 reserved bytes before it).
    pub const CRC: usize = INODE_SIZE as usize - 4;

    pub const ATIME: (usize, usize) = (ATIME_SEC, ATIME_NSEC);
    pub const MTIME: (usize, usize) = (MTIME_SEC, MTIME_NSEC);
    pub const CTIME: (usize, usize) = (CTIME_SEC, CTIME_NSEC);
    pub const BTIME: (usize, usize) = (BTIME_SEC, BTIME_NSEC);
}
const _: () = assert!(off::INLINE_END <= off::CRC);

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
        put_u32(&mut b, off::MODE, self.mode);
        put_u32(&mut b, off::FLAGS, self.flags);
        put_u32(&mut b, off::UID, self.uid);
        put_u32(&mut b, off::GID, self.gid);
        put_u32(&mut b, off::NLINK, self.nlink);
        put_u32(&mut b, off::GENERATION, self.generation);
        put_u64(&mut b, off::SIZE, self.size);
        put_u64(&mut b, off::BLOCKS, self.blocks);
        for (t, (sec, nsec)) in [
            (self.atime, off::ATIME),
            (self.mtime, off::MTIME),
            (self.ctime, off::CTIME),
            (self.btime, off::BTIME),
        ] {
            put_u64(&mut b, sec, t.sec as u64);
            put_u32(&mut b, nsec, t.nsec);
        }
        put_u64(&mut b, off::RDEV, self.rdev);
        put_u64(&mut b, off::PARENT, self.parent);
        put_u64(&mut b, off::XATTR_BLOCK, self.xattr_block);
        put_u64(&mut b, off::EXTENT_BLOCK, self.extent_block);
        put_u32(&mut b, off::EXTENT_COUNT, self.extent_count);
        let slots = b[off::INLINE..off::INLINE_END].chunks_exact_mut(EXTENT_SIZE);
        for (slot, e) in slots.zip(&self.inline) {
            slot.copy_from_slice(&e.encode());
        }
        let c = crc32(&b[..off::CRC]);
        put_u32(&mut b, off::CRC, c);
        b
    }

    /// Decodes an inode slot: Ok(None) for a free slot.
    pub fn decode(b: &[u8]) -> Result<Option<DiskInode>, FormatError> {
        let Some(b) = b.get(..INODE_SIZE as usize) else {
            return bad("inode: short slot");
        };
        let mode = get_u32(b, off::MODE);
        if mode == 0 {
            if b.iter().any(|&x| x != 0) {
                return bad("inode: free slot is not zero");
            }
            return Ok(None);
        }
        if get_u32(b, off::CRC) != crc32(&b[..off::CRC]) {
            return bad("inode: checksum mismatch");
        }
        let mut inline = [NO_EXTENT; INLINE_EXTENTS];
        let slots = b[off::INLINE..off::INLINE_END].chunks_exact(EXTENT_SIZE);
        for (e, slot) in inline.iter_mut().zip(slots) {
            if let Some(x) = Extent::decode(slot)? {
                *e = x;
            }
        }
        let ts = |(sec, nsec): (usize, usize)| Timespec {
            sec: get_u64(b, sec) as i64,
            nsec: get_u32(b, nsec),
        };
        let ino = DiskInode {
            mode,
            flags: get_u32(b, off::FLAGS),
            uid: get_u32(b, off::UID),
            gid: get_u32(b, off::GID),
            nlink: get_u32(b, off::NLINK),
            generation: get_u32(b, off::GENERATION),
            size: get_u64(b, off::SIZE),
            blocks: get_u64(b, off::BLOCKS),
            atime: ts(off::ATIME),
            mtime: ts(off::MTIME),
            ctime: ts(off::CTIME),
            btime: ts(off::BTIME),
            rdev: get_u64(b, off::RDEV),
            parent: get_u64(b, off::PARENT),
            xattr_block: get_u64(b, off::XATTR_BLOCK),
            extent_block: get_u64(b, off::EXTENT_BLOCK),
            extent_count: get_u32(b, off::EXTENT_COUNT),
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
