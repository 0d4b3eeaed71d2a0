//! The superblock (block 0, copy in block 1): the filesystem's geometry, state and
//! identity, and laying out a new filesystem ([`Superblock::layout`]).

use crate::bitmap::BITS_PER_BITMAP_BLOCK;
use crate::error::{bad, FormatError};
use crate::inode::INODE_SIZE;
use daxfs_pmem::codec::{crc32, get_u32, get_u64, put_u32, put_u64};

pub const BLOCK_SHIFT: u32 = 12;
pub const BLOCK_SIZE: u64 = 1 << BLOCK_SHIFT;
pub const SB_MAGIC: [u8; 8] = *b"DAXFSSB\0";
/// The version this build writes. Version 2 added the host table (block 0 bytes
/// 2048..4096, see `hosts`); a version 1 image is read as is and upgraded in place by
/// its first read-write mount ([`crate::hosts::upgrade_v1`]).
pub const VERSION: u32 = 2;
/// The previous version, still accepted (it differs only by the absent host table).
pub const VERSION_V1: u32 = 1;
pub const SB_SIZE: usize = 512;
pub const ROOT_INO: u64 = 1;
/// Data area alignment (2 MiB) so aligned extents are aligned on the device.
pub const DATA_ALIGN_BLOCKS: u64 = 512;

pub const STATE_CLEAN: u32 = 1;
pub const STATE_MOUNTED: u32 = 2;

const UUID_LEN: usize = 16;
const LABEL_LEN: usize = 64;

/// Byte offsets of the fields (docs/FORMAT.md "Superblock"), each placed after the one
/// before it, so encode and decode share one table and a size is written once.
pub(crate) mod off {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = MAGIC + super::SB_MAGIC.len();
    pub const BLOCK_SIZE: usize = VERSION + 4;
    pub const COMPAT: usize = BLOCK_SIZE + 4;
    pub const INCOMPAT: usize = COMPAT + 4;
    pub const RO_COMPAT: usize = INCOMPAT + 4;
    pub const STATE: usize = RO_COMPAT + 4;
    pub const TOTAL_BLOCKS: usize = STATE + 4;
    pub const UUID: usize = TOTAL_BLOCKS + 8;
    pub const LABEL: usize = UUID + super::UUID_LEN;
    pub const JOURNAL_START: usize = LABEL + super::LABEL_LEN;
    pub const JOURNAL_BLOCKS: usize = JOURNAL_START + 8;
    pub const INODE_TABLE_START: usize = JOURNAL_BLOCKS + 8;
    pub const INODE_TABLE_BLOCKS: usize = INODE_TABLE_START + 8;
    pub const INODE_COUNT: usize = INODE_TABLE_BLOCKS + 8;
    pub const BITMAP_START: usize = INODE_COUNT + 8;
    pub const BITMAP_BLOCKS: usize = BITMAP_START + 8;
    pub const DATA_START: usize = BITMAP_BLOCKS + 8;
    pub const DATA_BLOCKS: usize = DATA_START + 8;
    pub const ROOT_INO: usize = DATA_BLOCKS + 8;
    pub const MKFS_TIME: usize = ROOT_INO + 8;
    pub const MOUNT_TIME: usize = MKFS_TIME + 8;
    pub const MOUNT_COUNT: usize = MOUNT_TIME + 8;
    /// Reserved, zero, up to the CRC.
    pub const RESERVED: usize = MOUNT_COUNT + 8;
    /// CRC-32 of every byte before it: the last 4 bytes.
    pub const CRC: usize = super::SB_SIZE - 4;
}
const _: () = assert!(off::RESERVED <= off::CRC);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub version: u32,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    pub state: u32,
    pub total_blocks: u64,
    pub uuid: [u8; UUID_LEN],
    pub label: [u8; LABEL_LEN],
    pub journal_start: u64,
    pub journal_blocks: u64,
    pub inode_table_start: u64,
    pub inode_table_blocks: u64,
    pub inode_count: u64,
    pub bitmap_start: u64,
    pub bitmap_blocks: u64,
    pub data_start: u64,
    pub data_blocks: u64,
    pub root_ino: u64,
    pub mkfs_time: u64,
    pub mount_time: u64,
    pub mount_count: u64,
}

/// Parameters of a new filesystem.
#[derive(Debug, Clone)]
pub struct MkfsParams {
    pub label: String,
    /// Journal size in bytes; 0 = default.
    pub journal_bytes: u64,
    /// Number of inodes; 0 = default (one per 8 KiB of device).
    pub inodes: u64,
    pub uuid: [u8; UUID_LEN],
    pub now_ns: u64,
}

impl Superblock {
    /// Lays out a filesystem on a device of `size` bytes.
    pub fn layout(size: u64, p: &MkfsParams) -> Result<Superblock, FormatError> {
        let total_blocks = size / BLOCK_SIZE;
        if p.label.len() >= LABEL_LEN {
            return bad("label is longer than 63 bytes");
        }
        let journal_blocks = if p.journal_bytes == 0 {
            // 1/64 of the device, between 1 MiB and 64 MiB.
            (total_blocks / 64).clamp(256, 16384)
        } else {
            p.journal_bytes.div_ceil(BLOCK_SIZE)
        };
        if journal_blocks < 16 {
            return bad("journal must be at least 64 KiB");
        }
        let inode_count = if p.inodes == 0 {
            (size / 8192).clamp(64, u32::MAX as u64)
        } else {
            p.inodes.clamp(16, u32::MAX as u64)
        };
        let inode_table_blocks = (inode_count * INODE_SIZE).div_ceil(BLOCK_SIZE);
        let journal_start = 2;
        let inode_table_start = journal_start + journal_blocks;
        let bitmap_start = inode_table_start + inode_table_blocks;
        // The bitmap covers the data area, whose size depends on the bitmap's: iterate.
        let mut bitmap_blocks = 1;
        let (data_start, data_blocks) = loop {
            let ds = (bitmap_start + bitmap_blocks).next_multiple_of(DATA_ALIGN_BLOCKS);
            if ds + 16 > total_blocks {
                return bad(format!(
                    "device too small: {size} bytes; this layout needs at least {} bytes",
                    (ds + 16) * BLOCK_SIZE
                ));
            }
            let db = total_blocks - ds;
            let need = db.div_ceil(BITS_PER_BITMAP_BLOCK);
            if need <= bitmap_blocks {
                break (ds, db);
            }
            bitmap_blocks = need;
        };
        let mut label = [0u8; LABEL_LEN];
        label[..p.label.len()].copy_from_slice(p.label.as_bytes());
        Ok(Superblock {
            version: VERSION,
            compat: 0,
            incompat: 0,
            ro_compat: 0,
            state: STATE_CLEAN,
            total_blocks,
            uuid: p.uuid,
            label,
            journal_start,
            journal_blocks,
            inode_table_start,
            inode_table_blocks,
            inode_count,
            bitmap_start,
            bitmap_blocks,
            data_start,
            data_blocks,
            root_ino: ROOT_INO,
            mkfs_time: p.now_ns,
            mount_time: 0,
            mount_count: 0,
        })
    }

    pub fn encode(&self) -> [u8; SB_SIZE] {
        let mut b = [0u8; SB_SIZE];
        b[off::MAGIC..off::VERSION].copy_from_slice(&SB_MAGIC);
        put_u32(&mut b, off::VERSION, self.version);
        put_u32(&mut b, off::BLOCK_SIZE, BLOCK_SIZE as u32);
        put_u32(&mut b, off::COMPAT, self.compat);
        put_u32(&mut b, off::INCOMPAT, self.incompat);
        put_u32(&mut b, off::RO_COMPAT, self.ro_compat);
        put_u32(&mut b, off::STATE, self.state);
        put_u64(&mut b, off::TOTAL_BLOCKS, self.total_blocks);
        b[off::UUID..off::LABEL].copy_from_slice(&self.uuid);
        b[off::LABEL..off::JOURNAL_START].copy_from_slice(&self.label);
        put_u64(&mut b, off::JOURNAL_START, self.journal_start);
        put_u64(&mut b, off::JOURNAL_BLOCKS, self.journal_blocks);
        put_u64(&mut b, off::INODE_TABLE_START, self.inode_table_start);
        put_u64(&mut b, off::INODE_TABLE_BLOCKS, self.inode_table_blocks);
        put_u64(&mut b, off::INODE_COUNT, self.inode_count);
        put_u64(&mut b, off::BITMAP_START, self.bitmap_start);
        put_u64(&mut b, off::BITMAP_BLOCKS, self.bitmap_blocks);
        put_u64(&mut b, off::DATA_START, self.data_start);
        put_u64(&mut b, off::DATA_BLOCKS, self.data_blocks);
        put_u64(&mut b, off::ROOT_INO, self.root_ino);
        put_u64(&mut b, off::MKFS_TIME, self.mkfs_time);
        put_u64(&mut b, off::MOUNT_TIME, self.mount_time);
        put_u64(&mut b, off::MOUNT_COUNT, self.mount_count);
        let c = crc32(&b[..off::CRC]);
        put_u32(&mut b, off::CRC, c);
        b
    }

    /// True if `b` starts with the daxfs magic (whatever its state).
    pub fn has_magic(b: &[u8]) -> bool {
        b.get(off::MAGIC..off::VERSION) == Some(&SB_MAGIC[..])
    }

    /// Decodes and validates a superblock against a device of `device_size` bytes.
    pub fn decode(b: &[u8], device_size: u64) -> Result<Superblock, FormatError> {
        if b.len() < SB_SIZE {
            return bad("superblock: short read");
        }
        if !Self::has_magic(b) {
            return bad("no daxfs superblock (bad magic)");
        }
        if get_u32(b, off::CRC) != crc32(&b[..off::CRC]) {
            return bad("superblock checksum mismatch");
        }
        let version = get_u32(b, off::VERSION);
        if version != VERSION && version != VERSION_V1 {
            return bad(format!(
                "unsupported daxfs version {version} (this build reads {VERSION_V1} and {VERSION})"
            ));
        }
        let block_size = get_u32(b, off::BLOCK_SIZE);
        if block_size != BLOCK_SIZE as u32 {
            return bad(format!("unsupported block size {block_size}"));
        }
        let mut uuid = [0u8; UUID_LEN];
        uuid.copy_from_slice(&b[off::UUID..off::LABEL]);
        let mut label = [0u8; LABEL_LEN];
        label.copy_from_slice(&b[off::LABEL..off::JOURNAL_START]);
        let sb = Superblock {
            version,
            compat: get_u32(b, off::COMPAT),
            incompat: get_u32(b, off::INCOMPAT),
            ro_compat: get_u32(b, off::RO_COMPAT),
            state: get_u32(b, off::STATE),
            total_blocks: get_u64(b, off::TOTAL_BLOCKS),
            uuid,
            label,
            journal_start: get_u64(b, off::JOURNAL_START),
            journal_blocks: get_u64(b, off::JOURNAL_BLOCKS),
            inode_table_start: get_u64(b, off::INODE_TABLE_START),
            inode_table_blocks: get_u64(b, off::INODE_TABLE_BLOCKS),
            inode_count: get_u64(b, off::INODE_COUNT),
            bitmap_start: get_u64(b, off::BITMAP_START),
            bitmap_blocks: get_u64(b, off::BITMAP_BLOCKS),
            data_start: get_u64(b, off::DATA_START),
            data_blocks: get_u64(b, off::DATA_BLOCKS),
            root_ino: get_u64(b, off::ROOT_INO),
            mkfs_time: get_u64(b, off::MKFS_TIME),
            mount_time: get_u64(b, off::MOUNT_TIME),
            mount_count: get_u64(b, off::MOUNT_COUNT),
        };
        sb.validate(device_size)?;
        Ok(sb)
    }

    /// Checks that the regions are in order, inside the device and consistent.
    pub fn validate(&self, device_size: u64) -> Result<(), FormatError> {
        if self.incompat != 0 {
            return bad(format!(
                "unknown incompatible features {:#x}",
                self.incompat
            ));
        }
        if self
            .total_blocks
            .checked_mul(BLOCK_SIZE)
            .is_none_or(|s| s > device_size)
        {
            return bad(format!(
                "filesystem is {} blocks but the device holds only {} bytes",
                self.total_blocks, device_size
            ));
        }
        // Every sum and product is checked: the fields come from the media, and a CRC
        // only proves that whoever wrote them computed it (a wrapped sum would place a
        // region "after" another while it actually starts near block 0). The regions are
        // contiguous and in order, and all end at or before `data_start`, which is inside
        // the filesystem: so every region is inside the device.
        let end = |start: u64, blocks: u64| start.checked_add(blocks);
        let inode_table_blocks = self
            .inode_count
            .checked_mul(INODE_SIZE)
            .map(|bytes| bytes.div_ceil(BLOCK_SIZE));
        let ok = self.journal_start == 2
            && self.journal_blocks >= 16
            && Some(self.inode_table_start) == end(self.journal_start, self.journal_blocks)
            && self.inode_count >= 2
            && self.inode_count <= u32::MAX as u64
            && Some(self.inode_table_blocks) == inode_table_blocks
            && Some(self.bitmap_start) == end(self.inode_table_start, self.inode_table_blocks)
            && end(self.bitmap_start, self.bitmap_blocks).is_some_and(|e| self.data_start >= e)
            && self.data_start.is_multiple_of(DATA_ALIGN_BLOCKS)
            && self.data_start < self.total_blocks
            && self.data_blocks == self.total_blocks - self.data_start
            && self.bitmap_blocks == self.data_blocks.div_ceil(BITS_PER_BITMAP_BLOCK)
            && self.root_ino == ROOT_INO;
        if !ok {
            return bad("superblock geometry is inconsistent");
        }
        Ok(())
    }

    /// The image predates the host table (version 1): its first read-write mount must
    /// upgrade it before it takes the writer lease.
    pub fn needs_upgrade(&self) -> bool {
        self.version == VERSION_V1
    }

    pub fn label_str(&self) -> String {
        let end = self.label.iter().position(|&c| c == 0).unwrap_or(LABEL_LEN);
        String::from_utf8_lossy(&self.label[..end]).into_owned()
    }

    pub fn inode_offset(&self, ino: u64) -> u64 {
        self.inode_table_start * BLOCK_SIZE + ino * INODE_SIZE
    }

    pub fn bitmap_block_offset(&self, index: u64) -> u64 {
        (self.bitmap_start + index) * BLOCK_SIZE
    }

    pub fn is_data_block(&self, pblk: u64) -> bool {
        pblk >= self.data_start && pblk < self.total_blocks
    }
}

pub fn uuid_string(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> MkfsParams {
        MkfsParams {
            label: "t".into(),
            journal_bytes: 0,
            inodes: 0,
            uuid: [7; 16],
            now_ns: 1,
        }
    }

    #[test]
    fn superblock_round_trips() {
        let sb = Superblock::layout(1 << 30, &params()).unwrap();
        let b = sb.encode();
        assert_eq!(Superblock::decode(&b, 1 << 30).unwrap(), sb);
    }

    #[test]
    fn superblock_rejects_any_flipped_byte() {
        let sb = Superblock::layout(64 << 20, &params()).unwrap();
        let b = sb.encode();
        for i in 0..SB_SIZE {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(Superblock::decode(&c, 64 << 20).is_err(), "byte {i}");
        }
    }

    #[test]
    fn version_1_is_read_and_an_unknown_version_refused() {
        let mut sb = Superblock::layout(64 << 20, &params()).unwrap();
        assert_eq!(sb.version, 2);
        sb.version = VERSION_V1;
        let got = Superblock::decode(&sb.encode(), 64 << 20).unwrap();
        assert!(got.needs_upgrade());
        sb.version = 3;
        let e = Superblock::decode(&sb.encode(), 64 << 20).unwrap_err();
        assert!(e.to_string().contains("unsupported daxfs version 3"), "{e}");
    }

    #[test]
    fn layout_refuses_tiny_device() {
        assert!(Superblock::layout(1 << 20, &params()).is_err());
    }

    #[test]
    fn layout_aligns_data_area_to_2mib() {
        let sb = Superblock::layout(3 << 30, &params()).unwrap();
        assert_eq!(sb.data_start % DATA_ALIGN_BLOCKS, 0);
        assert!(sb.bitmap_blocks * BITS_PER_BITMAP_BLOCK >= sb.data_blocks);
    }
}
