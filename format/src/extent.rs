//! Extents: the 24-byte extent slot (inline in the inode or in an extent block) and the
//! header of an extent block.

use crate::error::{bad, FormatError};
use daxfs_pmem::codec::{crc32, crc_with_hole, get_u32, get_u64, put_u32, put_u64};

pub const EXTENT_SIZE: usize = 24;
pub const EXTENT_BLOCK_HEADER: usize = 24;
pub const EXTENTS_PER_BLOCK: usize = 169;
pub const EXTENT_MAGIC: [u8; 4] = *b"DXEX";

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
        put_u64(&mut b, 0, self.lblk);
        put_u64(&mut b, 8, self.pblk);
        put_u32(&mut b, 16, self.len);
        let c = crc32(&b[..20]);
        put_u32(&mut b, 20, c);
        b
    }

    /// Decodes a slot: Ok(None) for a free slot.
    pub fn decode(b: &[u8]) -> Result<Option<Extent>, FormatError> {
        if b.len() < EXTENT_SIZE {
            return bad("extent: short slot");
        }
        let len = get_u32(b, 16);
        if len == 0 {
            if b[..EXTENT_SIZE].iter().any(|&x| x != 0) {
                return bad("extent: free slot is not zero");
            }
            return Ok(None);
        }
        if get_u32(b, 20) != crc32(&b[..20]) {
            return bad("extent: checksum mismatch");
        }
        let (lblk, pblk) = (get_u64(b, 0), get_u64(b, 8));
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
    b[0..4].copy_from_slice(&EXTENT_MAGIC);
    put_u64(&mut b, 8, next);
    put_u64(&mut b, 16, owner);
    let c = crc_with_hole(&b, 4);
    put_u32(&mut b, 4, c);
    b
}

pub fn decode_extent_block_header(b: &[u8], owner: u64) -> Result<u64, FormatError> {
    if b.len() < EXTENT_BLOCK_HEADER || b[0..4] != EXTENT_MAGIC {
        return bad("extent block: bad magic");
    }
    if get_u32(b, 4) != crc_with_hole(&b[..EXTENT_BLOCK_HEADER], 4) {
        return bad("extent block: checksum mismatch");
    }
    if get_u64(b, 16) != owner {
        return bad(format!(
            "extent block: belongs to inode {}, not {owner}",
            get_u64(b, 16)
        ));
    }
    Ok(get_u64(b, 8))
}
