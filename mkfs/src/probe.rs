//! Recognises what a device already holds (a daxfs, another filesystem, a partition
//! table), so mkfs.daxfs does not overwrite it without -f.

use daxfs_format::{uuid_string, Superblock, BLOCK_SIZE, SB_SIZE};
use daxfs_pmem::{Device, DeviceOptions};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

/// Bytes read for probing: enough for btrfs's superblock magic at 65600.
const PROBE_LEN: usize = 68 * 1024;

/// Reads the first PROBE_LEN bytes (zeros past the end). Device-DAX does not support
/// read(2), so it is mapped instead.
pub fn read_head(path: &Path) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; PROBE_LEN];
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.file_type().is_char_device() {
        let dev = Device::open(
            path,
            DeviceOptions {
                writable: false,
                exclusive: false,
                populate: false,
            },
        )
        .map_err(|e| e.to_string())?;
        let n = (dev.size() as usize).min(PROBE_LEN);
        dev.read(0, &mut buf[..n]);
        return Ok(buf);
    }
    let f = File::open(path).map_err(|e| format!("{}: open: {e}", path.display()))?;
    let mut done = 0;
    while done < PROBE_LEN {
        match f.read_at(&mut buf[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{}: read: {e}", path.display())),
        }
    }
    Ok(buf)
}

fn at(b: &[u8], off: usize, magic: &[u8]) -> bool {
    b.get(off..off + magic.len()) == Some(magic)
}

/// Describes what `head` (the device's first bytes; `size` its length) already holds,
/// or None if nothing is recognised.
pub fn identify(head: &[u8], size: u64) -> Option<String> {
    // daxfs: a valid superblock copy says which one; a magic alone is a damaged one.
    for off in [0usize, BLOCK_SIZE as usize] {
        if let Some(b) = head.get(off..off + SB_SIZE) {
            if let Ok(sb) = Superblock::decode(b, size) {
                return Some(format!(
                    "a daxfs filesystem (label {:?}, uuid {})",
                    sb.label_str(),
                    uuid_string(&sb.uuid)
                ));
            }
        }
    }
    if Superblock::has_magic(head)
        || head
            .get(BLOCK_SIZE as usize..)
            .is_some_and(Superblock::has_magic)
    {
        return Some("a damaged daxfs filesystem (superblock checksum or geometry invalid)".into());
    }
    let checks: [(bool, &str); 9] = [
        (at(head, 0, b"LUKS\xba\xbe"), "a LUKS encrypted volume"),
        (at(head, 0, b"XFSB"), "an XFS filesystem"),
        (at(head, 0, b"hsqs"), "a squashfs filesystem"),
        (
            at(head, 1080, &[0x53, 0xEF]),
            "an ext2/ext3/ext4 filesystem",
        ),
        (at(head, 65600, b"_BHRfS_M"), "a btrfs filesystem"),
        (
            at(head, 4086, b"SWAPSPACE2") || at(head, 4086, b"SWAP-SPACE"),
            "a swap area",
        ),
        (at(head, 32769, b"CD001"), "an ISO 9660 filesystem"),
        (
            at(head, 510, &[0x55, 0xAA]) && (at(head, 54, b"FAT") || at(head, 82, b"FAT")),
            "a FAT filesystem",
        ),
        (at(head, 512, b"EFI PART"), "a GPT partition table"),
    ];
    if let Some((_, what)) = checks.iter().find(|(hit, _)| *hit) {
        return Some(what.to_string());
    }
    // MBR: boot signature plus at least one partition entry with a type.
    if at(head, 510, &[0x55, 0xAA]) && (0..4).any(|i| head[446 + i * 16 + 4] != 0) {
        return Some("a DOS/MBR partition table".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(off: usize, magic: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; PROBE_LEN];
        b[off..off + magic.len()].copy_from_slice(magic);
        b
    }

    #[test]
    fn zeros_are_not_recognised() {
        assert_eq!(identify(&vec![0u8; PROBE_LEN], 1 << 30), None);
    }

    #[test]
    fn foreign_signatures_are_recognised() {
        let cases: [(usize, &[u8], &str); 8] = [
            (1080, &[0x53, 0xEF], "ext"),
            (0, b"XFSB", "XFS"),
            (65600, b"_BHRfS_M", "btrfs"),
            (4086, b"SWAPSPACE2", "swap"),
            (32769, b"CD001", "ISO"),
            (0, b"LUKS\xba\xbe", "LUKS"),
            (0, b"hsqs", "squashfs"),
            (512, b"EFI PART", "GPT"),
        ];
        for (off, magic, want) in cases {
            let got = identify(&with(off, magic), 1 << 30).unwrap_or_default();
            assert!(got.contains(want), "{want}: got {got:?}");
        }
    }

    #[test]
    fn fat_and_mbr_need_the_boot_signature() {
        let mut b = with(82, b"FAT32   ");
        assert_eq!(identify(&b, 1 << 30), None);
        b[510] = 0x55;
        b[511] = 0xAA;
        assert!(identify(&b, 1 << 30).unwrap_or_default().contains("FAT"));
        let mut m = with(510, &[0x55, 0xAA]);
        assert_eq!(identify(&m, 1 << 30), None);
        m[446 + 4] = 0x83;
        assert!(identify(&m, 1 << 30).unwrap_or_default().contains("MBR"));
    }
}
