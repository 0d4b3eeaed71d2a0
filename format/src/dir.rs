//! Directory blocks: the 64-byte block header and the entries that fill the other
//! 64-byte slots.

use crate::error::{bad, FormatError};
use daxfs_pmem::codec::{crc_with_hole, get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};

pub const DIR_SLOT: usize = 64;
pub const DIR_SLOTS_PER_BLOCK: usize = 64;
pub const DIRENT_HEADER: usize = 16;
pub const NAME_MAX: usize = 255;
pub const DIR_MAGIC: [u8; 4] = *b"DXDR";

pub fn encode_dir_block_header(owner: u64, index: u64) -> [u8; DIR_SLOT] {
    let mut b = [0u8; DIR_SLOT];
    b[0..4].copy_from_slice(&DIR_MAGIC);
    put_u64(&mut b, 8, owner);
    put_u64(&mut b, 16, index);
    let c = crc_with_hole(&b[..24], 4);
    put_u32(&mut b, 4, c);
    b
}

pub fn check_dir_block_header(b: &[u8], owner: u64, index: u64) -> Result<(), FormatError> {
    if b.len() < 24 || b[0..4] != DIR_MAGIC {
        return bad(format!("directory {owner}: block {index}: bad magic"));
    }
    if get_u32(b, 4) != crc_with_hole(&b[..24], 4) {
        return bad(format!(
            "directory {owner}: block {index}: header checksum mismatch"
        ));
    }
    if get_u64(b, 8) != owner || get_u64(b, 16) != index {
        return bad(format!(
            "directory {owner}: block {index}: header names another block"
        ));
    }
    Ok(())
}

pub fn dirent_slots(name_len: usize) -> usize {
    (DIRENT_HEADER + name_len).div_ceil(DIR_SLOT)
}

/// Encodes an entry into `nslots × 64` bytes.
pub fn encode_dirent(ino: u64, ftype: u8, name: &[u8]) -> Vec<u8> {
    let n = dirent_slots(name.len());
    let mut b = vec![0u8; n * DIR_SLOT];
    put_u64(&mut b, 0, ino);
    put_u16(&mut b, 12, name.len() as u16);
    b[14] = ftype;
    b[15] = n as u8;
    b[16..16 + name.len()].copy_from_slice(name);
    let c = crc_with_hole(&b[..16 + name.len()], 8);
    put_u32(&mut b, 8, c);
    b
}

/// A decoded directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDirent<'a> {
    pub ino: u64,
    pub ftype: u8,
    pub nslots: usize,
    pub name: &'a [u8],
}

/// Decodes the entry starting at `slot` of a directory block. Ok(None): free slot.
pub fn decode_dirent(block: &[u8], slot: usize) -> Result<Option<RawDirent<'_>>, FormatError> {
    let o = slot * DIR_SLOT;
    if slot == 0 || slot >= DIR_SLOTS_PER_BLOCK || block.len() < (DIR_SLOTS_PER_BLOCK * DIR_SLOT) {
        return bad("dirent: bad slot");
    }
    let ino = get_u64(block, o);
    if ino == 0 {
        if block[o..o + DIRENT_HEADER].iter().any(|&x| x != 0) {
            return bad("dirent: free slot header is not zero");
        }
        return Ok(None);
    }
    let name_len = get_u16(block, o + 12) as usize;
    let nslots = block[o + 15] as usize;
    if name_len == 0
        || name_len > NAME_MAX
        || nslots != dirent_slots(name_len)
        || slot + nslots > DIR_SLOTS_PER_BLOCK
    {
        return bad("dirent: bad length");
    }
    let raw = &block[o..o + DIRENT_HEADER + name_len];
    if get_u32(block, o + 8) != crc_with_hole(raw, 8) {
        return bad("dirent: checksum mismatch");
    }
    let name = &raw[DIRENT_HEADER..];
    if name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
        return bad("dirent: invalid name");
    }
    Ok(Some(RawDirent {
        ino,
        ftype: block[o + 14],
        nslots,
        name,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirent_round_trips_for_every_name_length() {
        let mut block = vec![0u8; 4096];
        for len in 1..=255usize {
            let name = vec![b'a'; len];
            let e = encode_dirent(42, 8, &name);
            block.fill(0);
            block[64..64 + e.len()].copy_from_slice(&e);
            let d = decode_dirent(&block, 1).unwrap().unwrap();
            assert_eq!((d.ino, d.ftype, d.name.len()), (42, 8, len));
            assert_eq!(d.nslots, dirent_slots(len));
        }
    }
}
