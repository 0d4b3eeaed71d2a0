//! Fuzz target: damage a populated daxfs image and check it, then mount it.
//!
//! The input is a list of 5-byte patches (little-endian u32 position, xor byte) applied
//! to the metadata of a fixed populated image (superblocks, journal, inode table,
//! bitmap, the first data blocks, where directory, extent and xattr blocks live). Any
//! panic is a bug; so is an image fsck calls clean that the mount refuses, or one the
//! mount accepts that fsck still finds damaged after the mount's clean unmount.
#![no_main]

use daxfs::device::Device;
use daxfs::format::{MkfsParams, BLOCK_SIZE};
use daxfs::{Cred, DaxFs, FsOptions, ROOT};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

const SIZE: usize = 4 << 20;

struct Base {
    image: Vec<u8>,
    /// Byte ranges patches land in.
    regions: Vec<(usize, usize)>,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let dev = Arc::new(Device::memory(&vec![0u8; SIZE]).expect("memory device"));
        let p = MkfsParams {
            label: "fuzz".into(),
            journal_bytes: 64 << 10,
            inodes: 64,
            uuid: [9; 16],
            now_ns: 0,
        };
        daxfs::mkfs::format_device(&dev, &p, true, &mut |_, _, _| {}).expect("mkfs");
        let fs = DaxFs::mount_device(dev.clone(), FsOptions::default()).expect("mount");
        let r = Cred::root();
        let d = fs.mkdir(ROOT, b"d", 0o755, &r).expect("mkdir").ino;
        let a = fs.create(d, b"a", 0o644, libc::O_RDWR, &r).expect("create").ino;
        fs.write(a, 0, &[7u8; 10000], false).expect("write");
        fs.release(a).expect("release");
        fs.link(a, ROOT, b"l").expect("link");
        fs.symlink(ROOT, b"s", b"d/a", &r).expect("symlink");
        let f = fs.create(ROOT, b"frag", 0o644, libc::O_RDWR, &r).expect("create").ino;
        for i in 0..8u64 {
            fs.write(f, i * 2 * BLOCK_SIZE, &[i as u8 + 1; 4096], false)
                .expect("write");
        }
        fs.release(f).expect("release");
        fs.setxattr(a, b"user.x", b"value", 0).expect("setxattr");
        let sb = fs.superblock();
        fs.shutdown().expect("unmount");
        drop(fs);
        let mut image = vec![0u8; SIZE];
        dev.read(0, &mut image);
        let b = |blk: u64| (blk * BLOCK_SIZE) as usize;
        let regions = vec![
            (0, b(2)),
            (b(sb.journal_start), b(sb.journal_start + sb.journal_blocks)),
            (
                b(sb.inode_table_start),
                b(sb.inode_table_start + sb.inode_table_blocks),
            ),
            (b(sb.bitmap_start), b(sb.bitmap_start + sb.bitmap_blocks)),
            (b(sb.data_start), b(sb.data_start + 32)),
        ];
        Base { image, regions }
    })
}

fn check(img: &[u8]) -> daxfs::fsck::FsckReport {
    let dev = Arc::new(Device::memory(img).expect("memory device"));
    daxfs::fsck::check(&dev, false, &mut |_, _, _| {})
}

fuzz_target!(|data: &[u8]| {
    let base = base();
    let span: usize = base.regions.iter().map(|(s, e)| e - s).sum();
    let mut img = base.image.clone();
    for p in data.chunks_exact(5) {
        let mut at = u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize % span;
        for &(s, e) in &base.regions {
            if at < e - s {
                img[s + at] ^= p[4];
                break;
            }
            at -= e - s;
        }
    }
    let before = check(&img);
    let dev = Arc::new(Device::memory(&img).expect("memory device"));
    match DaxFs::mount_device(dev.clone(), FsOptions::default()) {
        Ok(fs) => {
            fs.shutdown().expect("clean unmount of a mounted image");
            drop(fs);
            let mut after = vec![0u8; img.len()];
            dev.read(0, &mut after);
            let after = check(&after);
            assert!(
                after.is_clean(),
                "mounted an image it did not repair: before {:?}, after {:?}",
                before.findings,
                after.findings
            );
        }
        Err(msg) => {
            assert!(!before.is_clean(), "fsck is clean but the mount refuses: {msg}");
        }
    }
});
