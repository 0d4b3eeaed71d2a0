//! Bitmap blocks: the data-area allocation bitmap, 4080 bytes of bits per block and a
//! trailer (magic, index, CRC).

use crate::error::{bad, FormatError};
use crate::superblock::BLOCK_SIZE;
use daxfs_pmem::codec::{crc32, get_u32, put_u32};

pub const BITMAP_BYTES_PER_BLOCK: u64 = 4080;
pub const BITS_PER_BITMAP_BLOCK: u64 = BITMAP_BYTES_PER_BLOCK * 8;
pub const BITMAP_MAGIC: [u8; 4] = *b"DXBM";

/// Seals a bitmap block: writes its trailer (magic, index, crc) into `b[4080..4096]`.
pub fn seal_bitmap_block(b: &mut [u8], index: u64) {
    b[4080..4084].copy_from_slice(&BITMAP_MAGIC);
    put_u32(b, 4084, index as u32);
    put_u32(b, 4088, 0);
    let c = crc32(&b[..4092]);
    put_u32(b, 4092, c);
}

pub fn check_bitmap_block(b: &[u8], index: u64) -> Result<(), FormatError> {
    if b.len() < BLOCK_SIZE as usize
        || b[4080..4084] != BITMAP_MAGIC
        || get_u32(b, 4084) != index as u32
    {
        return bad(format!("bitmap block {index}: bad magic"));
    }
    if get_u32(b, 4092) != crc32(&b[..4092]) {
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
