//! A mount refuses an image whose namespace breaks an invariant (the checks of
//! `DaxFs::load`), and accepts every consistent one. Each test edits one record of a
//! cleanly unmounted image with a valid checksum: the image looks intact, only its
//! meaning is wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking

use common::TestDev;
use daxfs::{Cred, DaxFs, FsOptions, ROOT};
use daxfs_format::{
    decode_dirent, encode_dirent, DiskInode, Superblock, BLOCK_SIZE, DIR_SLOTS_PER_BLOCK,
    IFLAG_ORPHAN, SB_SIZE,
};
use daxfs_testkit as common;
use std::os::unix::fs::FileExt;
use std::path::Path;

fn superblock(path: &Path) -> Superblock {
    let f = std::fs::File::open(path).expect("open image");
    let mut b = [0u8; SB_SIZE];
    f.read_exact_at(&mut b, 0).expect("read superblock");
    let size = f.metadata().expect("stat image").len();
    Superblock::decode(&b, size).expect("valid superblock")
}

fn read_inode(path: &Path, ino: u64) -> DiskInode {
    let f = std::fs::File::open(path).expect("open image");
    let mut b = [0u8; 256];
    f.read_exact_at(&mut b, superblock(path).inode_offset(ino))
        .expect("read inode");
    DiskInode::decode(&b)
        .expect("valid inode")
        .expect("allocated inode")
}

fn write_inode(path: &Path, ino: u64, d: &DiskInode) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open image");
    f.write_all_at(&d.encode(), superblock(path).inode_offset(ino))
        .expect("write inode");
}

/// Byte offset of the entry `name` in the first block of directory `dir`.
fn entry_offset(path: &Path, dir: u64, name: &[u8]) -> u64 {
    let base = read_inode(path, dir).inline[0].pblk * BLOCK_SIZE;
    let f = std::fs::File::open(path).expect("open image");
    let mut block = vec![0u8; BLOCK_SIZE as usize];
    f.read_exact_at(&mut block, base).expect("read block");
    let mut s = 1;
    while s < DIR_SLOTS_PER_BLOCK {
        match decode_dirent(&block, s).expect("valid entry") {
            Some(e) if e.name == name => return base + s as u64 * 64,
            Some(e) => s += e.nslots,
            None => s += 1,
        }
    }
    panic!(
        "no entry {:?} in directory {dir}",
        String::from_utf8_lossy(name)
    );
}

/// Byte offset of a free slot in the first block of directory `dir`.
fn free_slot(path: &Path, dir: u64) -> u64 {
    let base = read_inode(path, dir).inline[0].pblk * BLOCK_SIZE;
    let f = std::fs::File::open(path).expect("open image");
    let mut block = vec![0u8; BLOCK_SIZE as usize];
    f.read_exact_at(&mut block, base).expect("read block");
    (1..DIR_SLOTS_PER_BLOCK)
        .find(|&s| decode_dirent(&block, s).expect("valid entry").is_none())
        .map(|s| base + s as u64 * 64)
        .expect("a free slot")
}

fn write_at(path: &Path, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open image");
    f.write_all_at(bytes, off).expect("write image");
}

/// The inode numbers of the tree `populate` makes.
struct Tree {
    file: u64,
    a: u64,
    b: u64,
}

/// /file, /a/b/deep with a second name /a/deep-link: files, nested directories and a
/// hard link across directories.
fn populate(d: &TestDev) -> Tree {
    let c = Cred::root();
    let fs = d.mount();
    let file = fs.create(ROOT, b"file", 0o644, libc::O_RDWR, &c).unwrap();
    fs.release(file.ino).unwrap();
    let a = fs.mkdir(ROOT, b"a", 0o755, &c).unwrap();
    let b = fs.mkdir(a.ino, b"b", 0o755, &c).unwrap();
    let deep = fs.create(b.ino, b"deep", 0o644, libc::O_RDWR, &c).unwrap();
    fs.release(deep.ino).unwrap();
    fs.link(deep.ino, a.ino, b"deep-link").unwrap();
    fs.shutdown().unwrap();
    Tree {
        file: file.ino,
        a: a.ino,
        b: b.ino,
    }
}

/// The mount's error; panics if the image mounts.
fn mount_error(d: &TestDev) -> String {
    match DaxFs::mount(&d.path, FsOptions::default()) {
        Ok(fs) => {
            let _ = fs.shutdown();
            panic!("an inconsistent image mounted");
        }
        Err(e) => e.to_string(),
    }
}

fn assert_refused(d: &TestDev, what: &str) {
    let e = mount_error(d);
    assert!(e.contains(what), "expected {what:?} in {e:?}");
}

#[test]
fn consistent_tree_with_hard_links_and_nested_directories_mounts() {
    let d = TestDev::new(64 << 20);
    let t = populate(&d);
    let fs = d.mount();
    assert_eq!(fs.lookup(t.a, b"deep-link").unwrap().nlink, 2);
    assert_eq!(fs.lookup(ROOT, b"a").unwrap().nlink, 3);
    fs.shutdown().unwrap();
}

#[test]
fn wrong_link_count_of_a_file_is_refused() {
    let d = TestDev::new(64 << 20);
    let t = populate(&d);
    let mut i = read_inode(&d.path, t.file);
    i.nlink = 2;
    write_inode(&d.path, t.file, &i);
    assert_refused(
        &d,
        &format!("inode {}: link count is 2 but should be 1", t.file),
    );
}

#[test]
fn wrong_link_count_of_a_directory_is_refused() {
    let d = TestDev::new(64 << 20);
    let t = populate(&d);
    let mut i = read_inode(&d.path, t.a);
    i.nlink = 2;
    write_inode(&d.path, t.a, &i);
    assert_refused(
        &d,
        &format!("inode {}: link count is 2 but should be 3", t.a),
    );
}

#[test]
fn entry_naming_a_free_inode_is_refused() {
    let d = TestDev::new(64 << 20);
    populate(&d);
    let free = superblock(&d.path).inode_count - 1;
    let off = entry_offset(&d.path, ROOT, b"file");
    write_at(&d.path, off, &encode_dirent(free, libc::DT_REG, b"file"));
    assert_refused(&d, &format!("entry \"file\" names free inode {free}"));
}

#[test]
fn entry_whose_type_differs_from_its_inode_is_refused() {
    let d = TestDev::new(64 << 20);
    let t = populate(&d);
    let off = entry_offset(&d.path, ROOT, b"file");
    write_at(&d.path, off, &encode_dirent(t.file, libc::DT_DIR, b"file"));
    assert_refused(&d, &format!("entry type mismatch for inode {}", t.file));
}

#[test]
fn directory_with_two_names_is_refused() {
    let d = TestDev::new(64 << 20);
    let t = populate(&d);
    let off = free_slot(&d.path, ROOT);
    write_at(&d.path, off, &encode_dirent(t.b, libc::DT_DIR, b"b-again"));
    assert_refused(&d, &format!("directory {} has more than one name", t.b));
}

#[test]
fn directory_whose_parent_field_names_another_directory_is_refused() {
    let d = TestDev::new(64 << 20);
    let t = populate(&d);
    let mut i = read_inode(&d.path, t.b);
    i.parent = ROOT;
    write_inode(&d.path, t.b, &i);
    assert_refused(
        &d,
        &format!(
            "directory {}: parent field does not name directory {}",
            t.b, t.a
        ),
    );
}

#[test]
fn entry_naming_the_root_is_refused() {
    let d = TestDev::new(64 << 20);
    let t = populate(&d);
    let off = free_slot(&d.path, t.a);
    write_at(&d.path, off, &encode_dirent(ROOT, libc::DT_DIR, b"up"));
    assert_refused(
        &d,
        &format!("directory {}: an entry names the root directory", t.a),
    );
}

#[test]
fn subtree_unreachable_from_the_root_is_refused() {
    let d = TestDev::new(64 << 20);
    populate(&d);
    // Remove /a and give the root the link count it has without it: the counts agree,
    // but /a, /a/b and what they hold hang from nothing.
    let off = entry_offset(&d.path, ROOT, b"a");
    write_at(&d.path, off, &[0u8; 64]);
    let mut r = read_inode(&d.path, ROOT);
    r.nlink -= 1;
    write_inode(&d.path, ROOT, &r);
    assert_refused(&d, "not reachable from the root");
}

#[test]
fn linked_inode_marked_orphan_is_refused() {
    let d = TestDev::new(64 << 20);
    let t = populate(&d);
    let mut i = read_inode(&d.path, t.file);
    i.flags |= IFLAG_ORPHAN;
    write_inode(&d.path, t.file, &i);
    assert_refused(&d, &format!("inode {}: marked orphan but linked", t.file));
}

#[test]
fn a_refused_mount_leaves_the_image_byte_identical() {
    let d = TestDev::new(64 << 20);
    let t = populate(&d);
    let mut i = read_inode(&d.path, t.file);
    i.nlink = 2;
    write_inode(&d.path, t.file, &i);
    let before = std::fs::read(&d.path).unwrap();
    mount_error(&d);
    let after = std::fs::read(&d.path).unwrap();
    let first_difference = before.iter().zip(&after).position(|(a, b)| a != b);
    assert_eq!(
        first_difference, None,
        "a refused mount wrote to the device"
    );
}
