//! Xattr blocks: one block per inode holding all its extended attributes.

use crate::error::{bad, FormatError};
use crate::superblock::BLOCK_SIZE;
use daxfs_pmem::codec::{crc_with_hole, get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};

pub const XATTR_HEADER: usize = 24;
pub const XATTR_MAGIC: [u8; 4] = *b"DXXA";

/// Encodes a full xattr block from (name, value) pairs. Err if they do not fit.
pub fn encode_xattr_block(
    owner: u64,
    entries: &[(Vec<u8>, Vec<u8>)],
) -> Result<Vec<u8>, FormatError> {
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    b[0..4].copy_from_slice(&XATTR_MAGIC);
    put_u64(&mut b, 8, owner);
    let mut o = XATTR_HEADER;
    for (name, value) in entries {
        let need = 4 + name.len() + value.len();
        if name.is_empty()
            || name.len() > 255
            || value.len() > u16::MAX as usize
            || o + need > b.len()
        {
            return bad("xattrs do not fit in one block");
        }
        b[o] = name.len() as u8;
        put_u16(&mut b, o + 2, value.len() as u16);
        b[o + 4..o + 4 + name.len()].copy_from_slice(name);
        b[o + 4 + name.len()..o + need].copy_from_slice(value);
        o += need;
    }
    put_u32(&mut b, 16, (o - XATTR_HEADER) as u32);
    put_u32(&mut b, 20, entries.len() as u32);
    let c = crc_with_hole(&b, 4);
    put_u32(&mut b, 4, c);
    Ok(b)
}

/// The space one xattr takes in a block.
pub fn xattr_entry_size(name_len: usize, value_len: usize) -> usize {
    4 + name_len + value_len
}

pub const XATTR_SPACE: usize = BLOCK_SIZE as usize - XATTR_HEADER;

pub type XattrList = Vec<(Vec<u8>, Vec<u8>)>;

pub fn decode_xattr_block(b: &[u8], owner: u64) -> Result<XattrList, FormatError> {
    if b.len() < BLOCK_SIZE as usize || b[0..4] != XATTR_MAGIC {
        return bad(format!("xattr block of inode {owner}: bad magic"));
    }
    if get_u32(b, 4) != crc_with_hole(&b[..BLOCK_SIZE as usize], 4) {
        return bad(format!("xattr block of inode {owner}: checksum mismatch"));
    }
    if get_u64(b, 8) != owner {
        return bad(format!(
            "xattr block of inode {owner}: owned by {}",
            get_u64(b, 8)
        ));
    }
    let used = get_u32(b, 16) as usize;
    let count = get_u32(b, 20) as usize;
    if used > XATTR_SPACE {
        return bad(format!("xattr block of inode {owner}: bad length"));
    }
    let mut out = Vec::with_capacity(count.min(1024));
    let mut o = XATTR_HEADER;
    let end = XATTR_HEADER + used;
    while o < end {
        if o + 4 > end {
            return bad(format!("xattr block of inode {owner}: truncated entry"));
        }
        let nl = b[o] as usize;
        let vl = get_u16(b, o + 2) as usize;
        if nl == 0 || o + 4 + nl + vl > end {
            return bad(format!("xattr block of inode {owner}: bad entry"));
        }
        out.push((
            b[o + 4..o + 4 + nl].to_vec(),
            b[o + 4 + nl..o + 4 + nl + vl].to_vec(),
        ));
        o += 4 + nl + vl;
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
