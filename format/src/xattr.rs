//! Xattr blocks: one block per inode holding all its extended attributes.

use crate::error::{bad, FormatError};
use crate::superblock::BLOCK_SIZE;
use daxfs_pmem::codec::{crc_with_hole, get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};

/// Bytes of the block header; the entries follow it.
pub const XATTR_HEADER: usize = hdr::COUNT + 4;
pub const XATTR_MAGIC: [u8; 4] = *b"DXXA";

/// Field offsets of the block header (docs/FORMAT.md "Xattr block").
pub(crate) mod hdr {
    pub const MAGIC: usize = 0;
    /// CRC-32 of the whole block with this field zero.
    pub const CRC: usize = MAGIC + super::XATTR_MAGIC.len();
    pub const OWNER: usize = CRC + 4;
    /// Bytes used by the entries.
    pub const USED: usize = OWNER + 8;
    pub const COUNT: usize = USED + 4;
}

/// Field offsets of an entry, relative to its start: name_len u8, a reserved byte,
/// value_len u16, then the name and the value.
pub(crate) mod ent {
    pub const NAME_LEN: usize = 0;
    pub const VALUE_LEN: usize = NAME_LEN + 2;
    pub const NAME: usize = VALUE_LEN + 2;
}
/// Bytes of an entry before its name.
const ENTRY_HEADER: usize = ent::NAME;

/// Encodes a full xattr block from (name, value) pairs. Err if they do not fit.
pub fn encode_xattr_block(
    owner: u64,
    entries: &[(Vec<u8>, Vec<u8>)],
) -> Result<Vec<u8>, FormatError> {
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    b[hdr::MAGIC..hdr::CRC].copy_from_slice(&XATTR_MAGIC);
    put_u64(&mut b, hdr::OWNER, owner);
    let mut o = XATTR_HEADER;
    for (name, value) in entries {
        let need = xattr_entry_size(name.len(), value.len());
        if name.is_empty()
            || name.len() > u8::MAX as usize
            || value.len() > u16::MAX as usize
            || o + need > b.len()
        {
            return bad("xattrs do not fit in one block");
        }
        b[o + ent::NAME_LEN] = name.len() as u8;
        put_u16(&mut b, o + ent::VALUE_LEN, value.len() as u16);
        let value_start = o + ent::NAME + name.len();
        b[o + ent::NAME..value_start].copy_from_slice(name);
        b[value_start..o + need].copy_from_slice(value);
        o += need;
    }
    put_u32(&mut b, hdr::USED, (o - XATTR_HEADER) as u32);
    put_u32(&mut b, hdr::COUNT, entries.len() as u32);
    let c = crc_with_hole(&b, hdr::CRC);
    put_u32(&mut b, hdr::CRC, c);
    Ok(b)
}

/// The space one xattr takes in a block.
pub fn xattr_entry_size(name_len: usize, value_len: usize) -> usize {
    ENTRY_HEADER + name_len + value_len
}

pub const XATTR_SPACE: usize = BLOCK_SIZE as usize - XATTR_HEADER;

pub type XattrList = Vec<(Vec<u8>, Vec<u8>)>;

pub fn decode_xattr_block(b: &[u8], owner: u64) -> Result<XattrList, FormatError> {
    let b = match b.get(..BLOCK_SIZE as usize) {
        Some(b) if b[hdr::MAGIC..hdr::CRC] == XATTR_MAGIC => b,
        _ => return bad(format!("xattr block of inode {owner}: bad magic")),
    };
    if get_u32(b, hdr::CRC) != crc_with_hole(b, hdr::CRC) {
        return bad(format!("xattr block of inode {owner}: checksum mismatch"));
    }
    let found = get_u64(b, hdr::OWNER);
    if found != owner {
        return bad(format!("xattr block of inode {owner}: owned by {found}"));
    }
    let used = get_u32(b, hdr::USED) as usize;
    let count = get_u32(b, hdr::COUNT) as usize;
    if used > XATTR_SPACE {
        return bad(format!("xattr block of inode {owner}: bad length"));
    }
    let mut out = Vec::with_capacity(count.min(1024));
    let mut o = XATTR_HEADER;
    // At most the block's length (used <= XATTR_SPACE): every slice below is in bounds.
    let end = XATTR_HEADER + used;
    while o < end {
        if o + ENTRY_HEADER > end {
            return bad(format!("xattr block of inode {owner}: truncated entry"));
        }
        let nl = b[o + ent::NAME_LEN] as usize;
        let vl = get_u16(b, o + ent::VALUE_LEN) as usize;
        let next = o + xattr_entry_size(nl, vl);
        if nl == 0 || next > end {
            return bad(format!("xattr block of inode {owner}: bad entry"));
        }
        let value_start = o + ent::NAME + nl;
        out.push((
            b[o + ent::NAME..value_start].to_vec(),
            b[value_start..next].to_vec(),
        ));
        o = next;
    }
    if out.len() != count {
        return bad(format!(
            "xattr block of inode {owner}: entry count mismatch"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_block_round_trips() {
        let v = vec![
            (b"user.a".to_vec(), b"1".to_vec()),
            (b"trusted.b".to_vec(), vec![0, 1, 2]),
        ];
        let b = encode_xattr_block(9, &v).unwrap();
        assert_eq!(decode_xattr_block(&b, 9).unwrap(), v);
        assert!(decode_xattr_block(&b, 8).is_err());
    }
}
