//! Formatting: writes a new, empty daxfs onto a device (the work behind mkfs.daxfs).

use crate::*;
use daxfs_pmem::Device;

/// What a format step reports to a progress display: (stage, done, total).
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// Writes an empty filesystem: journal, inode table with the root directory, bitmap,
/// then both superblocks last (a half-formatted device has no valid superblock).
/// `zeroed`: the device is known to read as zeros (a freshly created sparse file), so
/// the inode table need not be cleared.
pub fn format_device(
    dev: &Device,
    params: &MkfsParams,
    zeroed: bool,
    progress: Progress,
) -> Result<Superblock, FormatError> {
    let sb = Superblock::layout(dev.size(), params)?;
    // Invalidate any old superblock first.
    dev.zero_persist(0, 2 * BLOCK_SIZE);
    daxfs_journal::format(
        dev,
        sb.journal_start * BLOCK_SIZE,
        sb.journal_blocks * BLOCK_SIZE,
    )
    .map_err(|e| FormatError(format!("journal: {e}")))?;
    let table = sb.inode_table_start * BLOCK_SIZE;
    let table_len = sb.inode_table_blocks * BLOCK_SIZE;
    if !zeroed {
        let chunk = 64 << 20;
        let mut done = 0;
        while done < table_len {
            let n = chunk.min(table_len - done);
            dev.zero_persist(table + done, n);
            done += n;
            progress("inode table", done, table_len);
        }
    }
    let mut root = DiskInode::empty();
    root.mode = libc::S_IFDIR | 0o755;
    root.nlink = 2;
    root.parent = ROOT_INO;
    root.generation = 1;
    let t = Timespec::now();
    root.atime = t;
    root.mtime = t;
    root.ctime = t;
    root.btime = t;
    dev.write(sb.inode_offset(ROOT_INO), &root.encode());
    dev.persist(sb.inode_offset(ROOT_INO), INODE_SIZE);
    let mut img = vec![0u8; BLOCK_SIZE as usize];
    for i in 0..sb.bitmap_blocks {
        img.fill(0);
        let first = i * BITS_PER_BITMAP_BLOCK;
        for bit in 0..BITS_PER_BITMAP_BLOCK {
            if first + bit >= sb.data_blocks {
                img[(bit / 8) as usize] |= 1 << (bit % 8);
            }
        }
        seal_bitmap_block(&mut img, i);
        dev.write(sb.bitmap_block_offset(i), &img);
        if i % 256 == 255 || i + 1 == sb.bitmap_blocks {
            progress("bitmap", i + 1, sb.bitmap_blocks);
        }
    }
    dev.persist(sb.bitmap_start * BLOCK_SIZE, sb.bitmap_blocks * BLOCK_SIZE);
    let enc = sb.encode();
    dev.write(BLOCK_SIZE, &enc);
    dev.write(0, &enc);
    dev.persist(0, BLOCK_SIZE + SB_SIZE as u64);
    dev.sync_all()
        .map_err(|e| FormatError(format!("sync: {e}")))?;
    Ok(sb)
}
