//! Extents: the 24-byte extent slot (inline in the inode or in an extent block) and the
//! header of an extent block.

use crate::error::{bad, FormatError};
use daxfs_pmem::codec::{crc32, crc_with_hole, get_u32, get_u64, put_u32, put_u64};

use crate::superblock::BLOCK_SIZE;

/// Bytes of one extent slot.
pub const EXTENT_SIZE: usize = rec::CRC + 4;
/// Bytes of an extent block's header; the slots follow it.
pub const EXTENT_BLOCK_HEADER: usize = hdr::OWNER + 8;
/// Whole slots after the header (169; the 16 bytes left over are zero).
pub const EXTENTS_PER_BLOCK: usize = (BLOCK_SIZE as usize - EXTENT_BLOCK_HEADER) / EXTENT_SIZE;
pub const EXTENT_MAGIC: [u8; 4] = *b"DXEX";

/// Field offsets of an extent slot (docs/FORMAT.md "Extent record").
pub(crate) mod rec {
    pub const LBLK: usize = 0;
    pub const PBLK: usize = LBLK + 8;
    pub const LEN: usize = PBLK + 8;
    /// CRC-32 of the bytes before it.
    pub const CRC: usize = LEN + 4;
}

/// Field offsets of an extent block's header (docs/FORMAT.md "Extent block").
pub(crate) mod hdr {
    pub const MAGIC: usize = 0;
    /// CRC-32 of the header with this field zero.
    pub const CRC: usize = MAGIC + super::EXTENT_MAGIC.len();
    pub const NEXT: usize = CRC + 4;
    pub const OWNER: usize = NEXT + 8;
}

/// A run of `len` blocks of a file starting at logical block `lblk`, stored at device
/// block `pblk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub lblk: u64,
    pub pblk: u64,
    pub len: u32,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.lblk + self.len as u64
    }

    pub fn encode(&self) -> [u8; EXTENT_SIZE] {
        let mut b = [0u8; EXTENT_SIZE];
        if self.len == 0 {
            return b;
        }
        put_u64(&mut b, rec::LBLK, self.lblk);
        put_u64(&mut b, rec::PBLK, self.pblk);
        put_u32(&mut b, rec::LEN, self.len);
        let c = crc32(&b[..rec::CRC]);
        put_u32(&mut b, rec::CRC, c);
        b
    }

    /// Decodes a slot: Ok(None) for a free slot.
    pub fn decode(b: &[u8]) -> Result<Option<Extent>, FormatError> {
        if b.len() < EXTENT_SIZE {
            return bad("extent: short slot");
        }
        let len = get_u32(b, rec::LEN);
        if len == 0 {
            if b[..EXTENT_SIZE].iter().any(|&x| x != 0) {
                return bad("extent: free slot is not zero");
            }
            return Ok(None);
        }
        if get_u32(b, rec::CRC) != crc32(&b[..rec::CRC]) {
            return bad("extent: checksum mismatch");
        }
        let (lblk, pblk) = (get_u64(b, rec::LBLK), get_u64(b, rec::PBLK));
        // Far beyond any device or file: rejecting them here keeps every later
        // `lblk + len` / `pblk + len` free of overflow.
        if lblk >= 1 << 52 || pblk >= 1 << 52 {
            return bad("extent: block number out of range");
        }
        Ok(Some(Extent { lblk, pblk, len }))
    }
}

/// Header of an extent block: returns the next block.
pub fn encode_extent_block_header(next: u64, owner: u64) -> [u8; EXTENT_BLOCK_HEADER] {
    let mut b = [0u8; EXTENT_BLOCK_HEADER];
    b[hdr::MAGIC..hdr::CRC].copy_from_slice(&EXTENT_MAGIC);
    put_u64(&mut b, hdr::NEXT, next);
    put_u64(&mut b, hdr::OWNER, owner);
    let c = crc_with_hole(&b, hdr::CRC);
    put_u32(&mut b, hdr::CRC, c);
    b
}

pub fn decode_extent_block_header(b: &[u8], owner: u64) -> Result<u64, FormatError> {
    if b.len() < EXTENT_BLOCK_HEADER || b[hdr::MAGIC..hdr::CRC] != EXTENT_MAGIC {
        return bad("extent block: bad magic");
    }
    let b = &b[..EXTENT_BLOCK_HEADER];
    if get_u32(b, hdr::CRC) != crc_with_hole(b, hdr::CRC) {
        return bad("extent block: checksum mismatch");
    }
    let found = get_u64(b, hdr::OWNER);
    if found != owner {
        return bad(format!(
            "extent block: belongs to inode {found}, not {owner}"
        ));
    }
    Ok(get_u64(b, hdr::NEXT))
}
