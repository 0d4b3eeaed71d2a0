//! fsck.daxfs behaviour, through the built binary: exit codes as fsck(8), what it
//! detects, what -n leaves alone and what -y repairs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking

use common::TestDev;
use daxfs::{Cred, FsOptions, ROOT};
use daxfs_format::{Superblock, BLOCK_SIZE, SB_SIZE};
use daxfs_testkit as common;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FSCK: &str = env!("CARGO_BIN_EXE_fsck-daxfs");

fn fsck(args: &[&str], dev: &Path) -> Output {
    Command::new(FSCK)
        .args(args)
        .arg(dev)
        .output()
        .expect("run fsck-daxfs")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("fsck exited by a signal")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn flip(path: &Path, off: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open image");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).expect("read byte");
    b[0] ^= 0x5a;
    f.write_all_at(&b, off).expect("write byte");
}

fn superblock(path: &Path) -> Superblock {
    let bytes = std::fs::read(path).expect("read image");
    Superblock::decode(&bytes[..SB_SIZE], bytes.len() as u64).expect("valid superblock")
}

/// A plain file in /dev/shm removed on drop (even when the test fails).
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, size: u64) -> TempFile {
        let p = PathBuf::from(format!("/dev/shm/daxfs-fsck-{}-{tag}", std::process::id()));
        let f = std::fs::File::create(&p).expect("create temp file");
        daxfs_pmem::allocate_file(&f, 0, size).expect("size temp file");
        TempFile(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Populates a filesystem: files of several sizes (one with an extent block),
/// nested directories, a symlink, a hard link, an xattr, a removed file. Returns the
/// inode number of "small".
fn populate(d: &TestDev) -> u64 {
    let c = Cred::root();
    let fs = d.mount();
    let small = fs.create(ROOT, b"small", 0o644, libc::O_RDWR, &c).unwrap();
    fs.write(small.ino, 0, b"hello", false).unwrap();
    fs.release(small.ino).unwrap();
    let big = fs.create(ROOT, b"big", 0o644, libc::O_RDWR, &c).unwrap();
    fs.write(big.ino, 0, &vec![7u8; 3 << 20], false).unwrap();
    // Scattered 4 KiB writes make many extents: past the 5 inline slots.
    let sparse = fs.create(ROOT, b"sparse", 0o644, libc::O_RDWR, &c).unwrap();
    for i in 0..20u64 {
        fs.write(sparse.ino, i * 2 * BLOCK_SIZE, &[1u8; 4096], false)
            .unwrap();
    }
    fs.release(sparse.ino).unwrap();
    fs.release(big.ino).unwrap();
    let a = fs.mkdir(ROOT, b"a", 0o755, &c).unwrap();
    let b = fs.mkdir(a.ino, b"b", 0o755, &c).unwrap();
    let f = fs.create(b.ino, b"deep", 0o600, libc::O_RDWR, &c).unwrap();
    fs.release(f.ino).unwrap();
    fs.link(f.ino, ROOT, b"deep-link").unwrap();
    fs.symlink(a.ino, b"ln", b"../small", &c).unwrap();
    fs.setxattr(small.ino, b"user.k", b"v", 0).unwrap();
    let gone = fs.create(ROOT, b"gone", 0o644, libc::O_RDWR, &c).unwrap();
    fs.write(gone.ino, 0, b"x", false).unwrap();
    fs.release(gone.ino).unwrap();
    fs.unlink(ROOT, b"gone").unwrap();
    fs.shutdown().unwrap();
    small.ino
}

#[test]
fn fresh_filesystem_is_clean() {
    let d = TestDev::new(64 << 20);
    let o = fsck(&["-n"], &d.path);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("clean"));
}

#[test]
fn populated_filesystem_is_clean() {
    let d = TestDev::new(64 << 20);
    populate(&d);
    let o = fsck(&["-n"], &d.path);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = fsck(&["-f", "-p"], &d.path);
    assert_eq!(code(&o), 0, "{}", text(&o));
}

#[test]
fn corrupt_inode_checksum_is_reported_and_n_changes_nothing() {
    let d = TestDev::new(64 << 20);
    let ino = populate(&d);
    flip(&d.path, superblock(&d.path).inode_offset(ino) + 30);
    let before = std::fs::read(&d.path).unwrap();
    let o = fsck(&["-n"], &d.path);
    assert_eq!(code(&o), 4, "{}", text(&o));
    assert!(
        text(&o).contains(&format!("inode {ino}: inode: checksum mismatch")),
        "{}",
        text(&o)
    );
    assert!(
        std::fs::read(&d.path).unwrap() == before,
        "-n modified the device"
    );
}

#[test]
fn a_corrupt_inode_is_cleared_by_y_and_the_rest_mounts() {
    let d = TestDev::new(64 << 20);
    let ino = populate(&d);
    flip(&d.path, superblock(&d.path).inode_offset(ino) + 30);
    let o = fsck(&["-y"], &d.path);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(
        text(&o).contains(&format!("repaired: cleared inode {ino}")),
        "{}",
        text(&o)
    );
    let o = fsck(&["-n"], &d.path);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let fs = d.mount();
    assert!(
        fs.lookup(ROOT, b"small").is_err(),
        "the cleared file's entry is gone"
    );
    assert_eq!(
        fs.getattr(fs.lookup(ROOT, b"big").unwrap().ino)
            .unwrap()
            .size,
        3 << 20
    );
    fs.shutdown().unwrap();
}

#[test]
fn preen_leaves_a_corrupt_inode_to_y() {
    let d = TestDev::new(64 << 20);
    let ino = populate(&d);
    flip(&d.path, superblock(&d.path).inode_offset(ino) + 30);
    let before = std::fs::read(&d.path).unwrap();
    let o = fsck(&["-f", "-p"], &d.path);
    assert_eq!(code(&o), 4, "{}", text(&o));
    assert!(
        std::fs::read(&d.path).unwrap() == before,
        "-p modified the device"
    );
}

#[test]
fn corrupt_primary_superblock_is_reported_with_n() {
    let d = TestDev::new(64 << 20);
    flip(&d.path, 60);
    let o = fsck(&["-n"], &d.path);
    assert_eq!(code(&o), 4, "{}", text(&o));
    assert!(text(&o).contains("primary superblock"), "{}", text(&o));
}

#[test]
fn y_restores_the_primary_superblock_from_the_backup() {
    let d = TestDev::new(64 << 20);
    populate(&d);
    flip(&d.path, 60);
    let o = fsck(&["-y"], &d.path);
    assert_eq!(code(&o), 1, "{}", text(&o));
    let o = fsck(&["-n"], &d.path);
    assert_eq!(code(&o), 0, "{}", text(&o));
}

#[test]
fn corrupt_backup_superblock_is_reported() {
    let d = TestDev::new(64 << 20);
    flip(&d.path, BLOCK_SIZE + 60);
    let o = fsck(&["-n"], &d.path);
    assert_eq!(code(&o), 4, "{}", text(&o));
    assert!(text(&o).contains("backup superblock"), "{}", text(&o));
}

#[test]
fn both_superblocks_bad_is_uncorrectable() {
    let d = TestDev::new(64 << 20);
    flip(&d.path, 60);
    flip(&d.path, BLOCK_SIZE + 60);
    let o = fsck(&["-y"], &d.path);
    assert_eq!(code(&o), 4, "{}", text(&o));
}

/// A copy of the device taken while a DaxFs has it mounted: what a crash leaves.
fn crash_image(d: &TestDev, tag: &str, work: impl FnOnce(&daxfs::DaxFs)) -> TempFile {
    let img = TempFile::new(tag, 0);
    let fs = d.mount();
    work(&fs);
    std::fs::copy(&d.path, &img.0).expect("copy the live image");
    fs.shutdown().unwrap();
    img
}

#[test]
fn crash_with_an_open_unlinked_file_is_noted_and_repaired_by_y() {
    let d = TestDev::new(64 << 20);
    let img = crash_image(&d, "crash", |fs| {
        let c = Cred::root();
        let a = fs.create(ROOT, b"open", 0o644, libc::O_RDWR, &c).unwrap();
        fs.write(a.ino, 0, b"data", false).unwrap();
        fs.unlink(ROOT, b"open").unwrap();
    });
    let o = fsck(&["-n"], &img.0);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("orphan ("), "{}", text(&o));
    assert!(text(&o).contains("not cleanly unmounted"), "{}", text(&o));
    let o = fsck(&["-y"], &img.0);
    assert_eq!(code(&o), 1, "{}", text(&o));
    let o = fsck(&["-n"], &img.0);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(!text(&o).contains("orphan ("), "{}", text(&o));
    assert!(!text(&o).contains("not cleanly"), "{}", text(&o));
}

#[test]
fn preen_skips_a_clean_filesystem_unless_forced() {
    let d = TestDev::new(64 << 20);
    populate(&d);
    let o = fsck(&["-p"], &d.path);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(!text(&o).contains("inodes"), "{}", text(&o));
    let o = fsck(&["-pf"], &d.path);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("inodes"), "{}", text(&o));
}

#[test]
fn leaked_bitmap_blocks_are_repairable() {
    let d = TestDev::new(64 << 20);
    let sb = superblock(&d.path);
    // Mark the last data block used in the bitmap (bit data_blocks-1), resealed.
    let bit = sb.data_blocks - 1;
    let off = sb.bitmap_block_offset(bit / daxfs_format::BITS_PER_BITMAP_BLOCK);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&d.path)
        .unwrap();
    let mut blk = vec![0u8; BLOCK_SIZE as usize];
    f.read_exact_at(&mut blk, off).unwrap();
    let b = bit % daxfs_format::BITS_PER_BITMAP_BLOCK;
    blk[(b / 8) as usize] |= 1 << (b % 8);
    daxfs_format::seal_bitmap_block(&mut blk, bit / daxfs_format::BITS_PER_BITMAP_BLOCK);
    f.write_all_at(&blk, off).unwrap();
    drop(f);
    let o = fsck(&["-n"], &d.path);
    assert_eq!(code(&o), 4, "{}", text(&o));
    assert!(
        text(&o).contains("marked used but belong to no inode"),
        "{}",
        text(&o)
    );
    let o = fsck(&["-y"], &d.path);
    assert_eq!(code(&o), 1, "{}", text(&o));
    let o = fsck(&["-n"], &d.path);
    assert_eq!(code(&o), 0, "{}", text(&o));
}

#[test]
fn device_held_by_a_live_daxfs_is_refused() {
    let d = TestDev::new(64 << 20);
    let fs = daxfs::DaxFs::mount(&d.path, FsOptions::default()).unwrap();
    let o = fsck(&["-n"], &d.path);
    assert_eq!(code(&o), 8, "{}", text(&o));
    assert!(text(&o).contains("in use"), "{}", text(&o));
    fs.shutdown().unwrap();
}

#[test]
fn missing_device_is_an_operational_error() {
    let o = fsck(&["-n"], Path::new("/dev/shm/daxfs-fsck-no-such-device"));
    assert_eq!(code(&o), 8, "{}", text(&o));
}

#[test]
fn a_device_without_daxfs_is_an_operational_error() {
    let t = TempFile::new("zeros", 8 << 20);
    let o = fsck(&["-n"], &t.0);
    assert_eq!(code(&o), 8, "{}", text(&o));
    assert!(text(&o).contains("not a daxfs"), "{}", text(&o));
}

#[test]
fn conflicting_options_are_a_usage_error() {
    let o = fsck(&["-n", "-y"], Path::new("/dev/null"));
    assert_eq!(code(&o), 16, "{}", text(&o));
    let o = Command::new(FSCK).output().expect("run fsck-daxfs");
    assert_eq!(code(&o), 16);
}

#[test]
fn an_unknown_option_exits_16_not_clap_2_with_the_message_and_the_help() {
    let o = fsck(&["-x"], Path::new("/dev/null"));
    assert_eq!(code(&o), 16, "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("fsck.daxfs: unknown option -x\n"), "{err}");
    assert!(
        err.contains("Usage: fsck.daxfs [-n | -y | -p] [-f] DEVICE"),
        "{err}"
    );
}

#[test]
fn help_goes_to_stdout_and_exits_0() {
    let o = Command::new(FSCK)
        .arg("-h")
        .output()
        .expect("run fsck-daxfs");
    assert_eq!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("Exit status: 0 clean"));
    assert!(o.stderr.is_empty());
}

fn read_inode(path: &Path, ino: u64) -> daxfs_format::DiskInode {
    let f = std::fs::File::open(path).expect("open image");
    let mut b = [0u8; 256];
    f.read_exact_at(&mut b, superblock(path).inode_offset(ino))
        .expect("read inode");
    daxfs_format::DiskInode::decode(&b)
        .expect("valid inode")
        .expect("allocated inode")
}

/// Rewrites an inode with a valid checksum: a consistent-looking but wrong record.
fn write_inode(path: &Path, ino: u64, d: &daxfs_format::DiskInode) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&d.encode(), superblock(path).inode_offset(ino))
        .unwrap();
}

fn lookup(d: &TestDev, name: &[u8]) -> u64 {
    let fs = d.mount();
    let ino = fs.lookup(ROOT, name).unwrap().ino;
    fs.shutdown().unwrap();
    ino
}

#[test]
fn corrupt_directory_entry_is_reported() {
    let d = TestDev::new(64 << 20);
    populate(&d);
    let root = read_inode(&d.path, ROOT);
    // Slot 1 of the root's first block holds an entry; flip a byte of its name.
    flip(&d.path, root.inline[0].pblk * BLOCK_SIZE + 64 + 17);
    let o = fsck(&["-n"], &d.path);
    assert_eq!(code(&o), 4, "{}", text(&o));
    assert!(
        text(&o).contains("directory 1: block 0 slot 1"),
        "{}",
        text(&o)
    );
}

#[test]
fn block_shared_by_two_files_is_reported() {
    let d = TestDev::new(64 << 20);
    let small = populate(&d);
    let mut a = read_inode(&d.path, small);
    let b = read_inode(&d.path, lookup(&d, b"big"));
    // Point "small"'s data at a block of "big" (keeping the bitmap as it was).
    a.inline[0].pblk = b.inline[0].pblk;
    write_inode(&d.path, small, &a);
    let o = fsck(&["-n"], &d.path);
    assert_eq!(code(&o), 4, "{}", text(&o));
    assert!(text(&o).contains("is used by inodes"), "{}", text(&o));
}

#[test]
fn wrong_link_count_is_reported() {
    let d = TestDev::new(64 << 20);
    populate(&d);
    let ino = lookup(&d, b"deep-link");
    let mut i = read_inode(&d.path, ino);
    assert_eq!(i.nlink, 2);
    i.nlink = 3;
    write_inode(&d.path, ino, &i);
    let o = fsck(&["-n"], &d.path);
    assert_eq!(code(&o), 4, "{}", text(&o));
    assert!(
        text(&o).contains(&format!("inode {ino}: link count is 3 but should be 2")),
        "{}",
        text(&o)
    );
}

#[test]
fn disconnected_directory_is_reported() {
    let d = TestDev::new(64 << 20);
    populate(&d);
    // Erase every entry of the root directory: its subtrees keep their link counts
    // but nothing reaches them.
    let root = read_inode(&d.path, ROOT);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&d.path)
        .unwrap();
    let pblk = root.inline[0].pblk;
    f.write_all_at(
        &vec![0u8; (BLOCK_SIZE - 64) as usize],
        pblk * BLOCK_SIZE + 64,
    )
    .unwrap();
    drop(f);
    let o = fsck(&["-n"], &d.path);
    assert_eq!(code(&o), 4, "{}", text(&o));
    assert!(
        text(&o).contains("not reachable from the root"),
        "{}",
        text(&o)
    );
}
