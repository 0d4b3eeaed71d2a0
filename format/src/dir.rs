//! Directory blocks: the 64-byte block header and the entries that fill the other
//! 64-byte slots.

use crate::error::{bad, FormatError};
use crate::superblock::BLOCK_SIZE;
use daxfs_pmem::codec::{crc_with_hole, get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};

/// A directory block is an array of slots of this size; slot 0 is the header.
pub const DIR_SLOT: usize = 64;
pub const DIR_SLOTS_PER_BLOCK: usize = BLOCK_SIZE as usize / DIR_SLOT;
/// Bytes of an entry before its name.
pub const DIRENT_HEADER: usize = ent::NAME;
pub const NAME_MAX: usize = 255;
pub const DIR_MAGIC: [u8; 4] = *b"DXDR";

/// Field offsets of the block header (docs/FORMAT.md "Directory block").
pub(crate) mod hdr {
    pub const MAGIC: usize = 0;
    /// CRC-32 of the header's fields (up to `END`) with this field zero.
    pub const CRC: usize = MAGIC + super::DIR_MAGIC.len();
    pub const OWNER: usize = CRC + 4;
    pub const INDEX: usize = OWNER + 8;
    /// End of the fields; the rest of slot 0 is zero and not checksummed.
    pub const END: usize = INDEX + 8;
}

/// Field offsets of an entry, relative to its first slot.
pub(crate) mod ent {
    pub const INO: usize = 0;
    /// CRC-32 of the header and the name with this field zero.
    pub const CRC: usize = INO + 8;
    pub const NAME_LEN: usize = CRC + 4;
    pub const FTYPE: usize = NAME_LEN + 2;
    pub const NSLOTS: usize = FTYPE + 1;
    pub const NAME: usize = NSLOTS + 1;
}
const _: () = assert!(hdr::END <= DIR_SLOT);
// nslots is one byte and an entry fits in the slots after the header.
const _: () = assert!((DIRENT_HEADER + NAME_MAX).div_ceil(DIR_SLOT) < DIR_SLOTS_PER_BLOCK);

pub fn encode_dir_block_header(owner: u64, index: u64) -> [u8; DIR_SLOT] {
    let mut b = [0u8; DIR_SLOT];
    b[hdr::MAGIC..hdr::CRC].copy_from_slice(&DIR_MAGIC);
    put_u64(&mut b, hdr::OWNER, owner);
    put_u64(&mut b, hdr::INDEX, index);
    let c = crc_with_hole(&b[..hdr::END], hdr::CRC);
    put_u32(&mut b, hdr::CRC, c);
    b
}

pub fn check_dir_block_header(b: &[u8], owner: u64, index: u64) -> Result<(), FormatError> {
    if b.len() < hdr::END || b[hdr::MAGIC..hdr::CRC] != DIR_MAGIC {
        return bad(format!("directory {owner}: block {index}: bad magic"));
    }
    let b = &b[..hdr::END];
    if get_u32(b, hdr::CRC) != crc_with_hole(b, hdr::CRC) {
        return bad(format!(
            "directory {owner}: block {index}: header checksum mismatch"
        ));
    }
    if get_u64(b, hdr::OWNER) != owner || get_u64(b, hdr::INDEX) != index {
        return bad(format!(
            "directory {owner}: block {index}: header names another block"
        ));
    }
    Ok(())
}

pub fn dirent_slots(name_len: usize) -> usize {
    (DIRENT_HEADER + name_len).div_ceil(DIR_SLOT)
}

/// Encodes an entry into `nslots × DIR_SLOT` bytes.
pub fn encode_dirent(ino: u64, ftype: u8, name: &[u8]) -> Vec<u8> {
    let n = dirent_slots(name.len());
    let mut b = vec![0u8; n * DIR_SLOT];
    put_u64(&mut b, ent::INO, ino);
    put_u16(&mut b, ent::NAME_LEN, name.len() as u16);
    b[ent::FTYPE] = ftype;
    b[ent::NSLOTS] = n as u8;
    let end = ent::NAME + name.len();
    b[ent::NAME..end].copy_from_slice(name);
    let c = crc_with_hole(&b[..end], ent::CRC);
    put_u32(&mut b, ent::CRC, c);
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
    // In bounds: slot < DIR_SLOTS_PER_BLOCK and the block holds them all (checked above).
    let e = &block[o..];
    let ino = get_u64(e, ent::INO);
    if ino == 0 {
        if e[..DIRENT_HEADER].iter().any(|&x| x != 0) {
            return bad("dirent: free slot header is not zero");
        }
        return Ok(None);
    }
    let name_len = get_u16(e, ent::NAME_LEN) as usize;
    let nslots = e[ent::NSLOTS] as usize;
    if name_len == 0
        || name_len > NAME_MAX
        || nslots != dirent_slots(name_len)
        || slot + nslots > DIR_SLOTS_PER_BLOCK
    {
        return bad("dirent: bad length");
    }
    // In bounds: the entry's slots end inside the block (checked above).
    let raw = &e[..DIRENT_HEADER + name_len];
    if get_u32(raw, ent::CRC) != crc_with_hole(raw, ent::CRC) {
        return bad("dirent: checksum mismatch");
    }
    let name = &raw[DIRENT_HEADER..];
    if name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
        return bad("dirent: invalid name");
    }
    Ok(Some(RawDirent {
        ino,
        ftype: raw[ent::FTYPE],
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
