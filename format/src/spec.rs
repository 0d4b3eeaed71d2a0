//! The layout constants checked against docs/FORMAT.md itself: each structure's offset
//! column must list exactly the code's field offsets, every stated size must reach the
//! next field, and the counts stated in prose must be the derived ones. A layout change
//! that is not also made to the normative description fails here.

use crate::*;

const FORMAT_MD: &str = include_str!("../../docs/FORMAT.md");

/// The text of the section whose heading line starts with `heading`, up to the next
/// heading of any level.
fn section(heading: &str) -> &'static str {
    let start = FORMAT_MD
        .find(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("FORMAT.md has no heading {heading:?}"))
        + 1;
    let body = &FORMAT_MD[start..];
    let end = body[1..].find("\n#").map_or(body.len(), |e| e + 1);
    &body[..end]
}

/// The (offset, size) cells of the `n`th table of `heading`'s section.
fn table(heading: &str, n: usize) -> Vec<(usize, &'static str)> {
    let text = section(heading);
    let mut tables: Vec<Vec<&str>> = vec![];
    let mut in_table = false;
    for line in text.lines() {
        if line.starts_with('|') {
            if !in_table {
                tables.push(vec![]);
            }
            if let Some(t) = tables.last_mut() {
                t.push(line);
            }
            in_table = true;
        } else {
            in_table = false;
        }
    }
    let rows = tables
        .get(n)
        .unwrap_or_else(|| panic!("{heading:?} has no table {n}"));
    rows.iter()
        .skip(2) // the column names and the separator
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let off = cells[1]
                .parse()
                .unwrap_or_else(|_| panic!("{heading:?}: offset {:?}", cells[1]));
            (off, cells[2])
        })
        .collect()
}

/// Checks a table against the code: the offsets, and that each numeric size ends where
/// the next field starts (the last where the structure ends, at `size`).
fn check(
    heading: &str,
    n: usize,
    offsets: &[usize],
    size: Option<usize>,
) -> Vec<(usize, &'static str)> {
    let rows = table(heading, n);
    let doc: Vec<usize> = rows.iter().map(|r| r.0).collect();
    assert_eq!(doc, offsets, "{heading:?} table {n}: offsets");
    for (i, &(off, len)) in rows.iter().enumerate() {
        let Ok(len) = len.parse::<usize>() else {
            continue;
        };
        let next = rows.get(i + 1).map(|r| r.0).or(size);
        assert_eq!(
            Some(off + len),
            next,
            "{heading:?}: field at {off} of {len} bytes"
        );
    }
    rows
}

#[test]
fn superblock_fields_match_format_md() {
    use superblock::off::*;
    let offsets = [
        MAGIC,
        VERSION,
        BLOCK_SIZE,
        COMPAT,
        INCOMPAT,
        RO_COMPAT,
        STATE,
        TOTAL_BLOCKS,
        UUID,
        LABEL,
        JOURNAL_START,
        JOURNAL_BLOCKS,
        INODE_TABLE_START,
        INODE_TABLE_BLOCKS,
        INODE_COUNT,
        BITMAP_START,
        BITMAP_BLOCKS,
        DATA_START,
        DATA_BLOCKS,
        ROOT_INO,
        MKFS_TIME,
        MOUNT_TIME,
        MOUNT_COUNT,
        RESERVED,
        CRC,
    ];
    check("## Superblock", 0, &offsets, Some(SB_SIZE));
    assert!(section("## Superblock").contains(&format!("first {SB_SIZE} bytes")));
    assert!(section("## Superblock").contains(&format!("crc32 of bytes 0..{CRC}")));
}

#[test]
fn inode_fields_match_format_md() {
    use inode::off::*;
    let offsets = [
        MODE,
        FLAGS,
        UID,
        GID,
        NLINK,
        GENERATION,
        SIZE,
        BLOCKS,
        ATIME.0,
        ATIME.1,
        MTIME.1,
        MTIME.0,
        CTIME.0,
        CTIME.1,
        BTIME.1,
        BTIME.0,
        RDEV,
        PARENT,
        XATTR_BLOCK,
        EXTENT_BLOCK,
        EXTENT_COUNT,
        RESERVED,
        INLINE,
        INLINE_END,
        CRC,
    ];
    check("## Inode", 0, &offsets, Some(INODE_SIZE as usize));
    let s = section("## Inode");
    assert!(s.contains(&format!("## Inode ({INODE_SIZE} bytes")));
    assert!(s.contains(&format!(
        "{INLINE_EXTENTS} inline extent slots ({EXTENT_SIZE} bytes each"
    )));
}

#[test]
fn extent_record_fields_match_format_md() {
    use extent::rec::*;
    check(
        "## Extent record",
        0,
        &[LBLK, PBLK, LEN, CRC],
        Some(EXTENT_SIZE),
    );
    assert!(section("## Extent record").contains(&format!("({EXTENT_SIZE} bytes)")));
}

#[test]
fn extent_block_fields_and_slot_count_match_format_md() {
    use extent::hdr::*;
    let rows = check(
        "## Extent block",
        0,
        &[MAGIC, CRC, NEXT, OWNER, EXTENT_BLOCK_HEADER],
        None,
    );
    assert_eq!(rows[3].0 + 8, EXTENT_BLOCK_HEADER);
    assert_eq!(
        rows[4].1,
        format!("{EXTENTS_PER_BLOCK} × {EXTENT_SIZE}"),
        "the slots after the header"
    );
    assert!(EXTENT_BLOCK_HEADER + (EXTENTS_PER_BLOCK + 1) * EXTENT_SIZE > BLOCK_SIZE as usize);
}

#[test]
fn dir_block_fields_and_slot_count_match_format_md() {
    use dir::{ent, hdr};
    check(
        "## Directory block",
        0,
        &[hdr::MAGIC, hdr::CRC, hdr::OWNER, hdr::INDEX],
        Some(hdr::END),
    );
    let rows = check(
        "## Directory block",
        1,
        &[
            ent::INO,
            ent::CRC,
            ent::NAME_LEN,
            ent::FTYPE,
            ent::NSLOTS,
            ent::NAME,
        ],
        None,
    );
    assert_eq!(rows[5].0, DIRENT_HEADER);
    let s = section("## Directory block");
    assert!(s.contains(&format!("{DIR_SLOTS_PER_BLOCK} slots of {DIR_SLOT} bytes")));
    assert!(s.contains(&format!("crc32 of bytes 0..{}", hdr::END)));
    assert!(s.contains(&format!(
        "ceil(({DIRENT_HEADER} + name_len) / {DIR_SLOT})` consecutive\nslots (at most {})",
        dirent_slots(NAME_MAX)
    )));
    assert!(s.contains(&format!("name_len (1..{NAME_MAX})")));
}

#[test]
fn xattr_block_fields_match_format_md() {
    use xattr::hdr::*;
    let rows = check(
        "## Xattr block",
        0,
        &[MAGIC, CRC, OWNER, USED, COUNT, XATTR_HEADER],
        None,
    );
    assert_eq!(rows[4].0 + 4, XATTR_HEADER);
    assert_eq!(rows[5].0, XATTR_HEADER, "the entries follow the header");
    // name_len u8 at 0, a reserved u8, value_len u16 at 2, then the name.
    let ent = (
        xattr::ent::NAME_LEN,
        xattr::ent::VALUE_LEN,
        xattr::ent::NAME,
    );
    assert_eq!(ent, (0, 1 + 1, 1 + 1 + 2));
    assert!(section("## Xattr block")
        .contains("entries: name_len u8, reserved u8, value_len u16, name, value"));
}

#[test]
fn bitmap_block_layout_matches_format_md() {
    use bitmap::trailer;
    let s = section("## Free-space bitmap");
    let bits = BITS_PER_BITMAP_BLOCK;
    assert!(s.contains(&format!(
        "holds {BITMAP_BYTES_PER_BLOCK} bytes of bits ({},{:03} data blocks",
        bits / 1000,
        bits % 1000
    )));
    assert!(s.contains(&format!("followed by a {}-byte\ntrailer", trailer::SIZE)));
    assert!(s.contains(&format!(
        "trailer: magic `DXBM` ({}), block index ({}), reserved ({}), crc32 of bytes 0..{} ({})",
        trailer::INDEX - trailer::MAGIC,
        trailer::RESERVED - trailer::INDEX,
        trailer::CRC - trailer::RESERVED,
        trailer::CRC,
        trailer::MAGIC + trailer::SIZE - trailer::CRC,
    )));
}

#[test]
fn host_table_fields_match_format_md() {
    use hosts::*;
    check(
        "### Writer lease (slot 0)",
        0,
        &[
            lease_off::EPOCH,
            lease_off::OWNER,
            lease_off::HEARTBEAT,
            lease_off::HEARTBEAT_MS,
            lease_off::TIMEOUT_MS,
            lease_off::COMMITTED_SEQ,
            lease_off::PID,
            lease_off::STATE,
            lease_off::HOST,
            lease_off::RESERVED,
        ],
        Some(SLOT_SIZE),
    );
    check(
        "### Host slot (slots 1..31)",
        0,
        &[
            host_off::OWNER,
            host_off::HEARTBEAT,
            host_off::APPLIED_SEQ,
            host_off::HELD_SEQ,
            host_off::PID,
            host_off::FLAGS,
            host_off::RESERVED,
        ],
        Some(SLOT_SIZE),
    );
    let s = section("## Host table");
    let end = HOST_TABLE_OFFSET as usize + HOST_TABLE_SIZE;
    assert!(s.contains(&format!("(block 0, bytes {HOST_TABLE_OFFSET}..{end})")));
    assert!(s.contains(&format!("{SLOTS} slots of {SLOT_SIZE} bytes")));
    assert!(section("## Superblock").contains(&format!("version = {VERSION} ")));
}
