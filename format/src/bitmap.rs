//! Bitmap blocks: the data-area allocation bitmap, 4080 bytes of bits per block and a
//! trailer (magic, index, CRC).

use crate::error::{bad, FormatError};
use crate::superblock::BLOCK_SIZE;
use daxfs_pmem::codec::{crc32, get_u32, put_u32};

/// Bytes of bits in a block: all but the trailer.
pub const BITMAP_BYTES_PER_BLOCK: u64 = BLOCK_SIZE - trailer::SIZE as u64;
pub const BITS_PER_BITMAP_BLOCK: u64 = BITMAP_BYTES_PER_BLOCK * 8;
pub const BITMAP_MAGIC: [u8; 4] = *b"DXBM";

/// Absolute offsets of the trailer's fields (docs/FORMAT.md "Free-space bitmap"): it
/// fills the end of the block.
pub(crate) mod trailer {
    pub const MAGIC: usize = super::BITMAP_BYTES_PER_BLOCK as usize;
    pub const INDEX: usize = MAGIC + super::BITMAP_MAGIC.len();
    pub const RESERVED: usize = INDEX + 4;
    /// CRC-32 of every byte of the block before it.
    pub const CRC: usize = RESERVED + 4;
    pub const SIZE: usize = 16;
}
const _: () = assert!(trailer::CRC + 4 == BLOCK_SIZE as usize);

/// Seals a bitmap block: writes its trailer (magic, index, crc) after the bits.
pub fn seal_bitmap_block(b: &mut [u8], index: u64) {
    b[trailer::MAGIC..trailer::INDEX].copy_from_slice(&BITMAP_MAGIC);
    put_u32(b, trailer::INDEX, index as u32);
    put_u32(b, trailer::RESERVED, 0);
    let c = crc32(&b[..trailer::CRC]);
    put_u32(b, trailer::CRC, c);
}

pub fn check_bitmap_block(b: &[u8], index: u64) -> Result<(), FormatError> {
    if b.len() < BLOCK_SIZE as usize
        || b[trailer::MAGIC..trailer::INDEX] != BITMAP_MAGIC
        || get_u32(b, trailer::INDEX) != index as u32
    {
        return bad(format!("bitmap block {index}: bad magic"));
    }
    if get_u32(b, trailer::CRC) != crc32(&b[..trailer::CRC]) {
        return bad(format!("bitmap block {index}: checksum mismatch"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_trailer_detects_flip() {
        let mut b = vec![0u8; 4096];
        b[7] = 0xff;
        seal_bitmap_block(&mut b, 3);
        check_bitmap_block(&b, 3).unwrap();
        b[7] = 0xfe;
        assert!(check_bitmap_block(&b, 3).is_err());
    }
}
