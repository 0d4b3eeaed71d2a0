//! fsck and the state chattr and FS_IOC_SETFSLABEL leave: immutable and append-only
//! inodes (IFLAG_IMMUTABLE, IFLAG_APPEND) are a clean image, and superblock copies that
//! differ only in their label (a label change stopped by a crash between its two
//! journaled writes) are a note, not an inconsistency.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use daxfs_testkit as common;

use common::mkfile;
use daxfs::{Cred, DaxFs, FsOptions, InodeFlags, ROOT};
use daxfs_format::*;
use daxfs_fsck::{FsckReport, Severity};
use daxfs_pmem::Device;
use std::sync::Arc;

const SIZE: u64 = 8 << 20;

fn formatted() -> Arc<Device> {
    let dev = Arc::new(Device::memory(&vec![0u8; SIZE as usize]).expect("memory device"));
    let p = MkfsParams {
        label: "flags".into(),
        journal_bytes: 64 << 10,
        inodes: 64,
        uuid: [6; 16],
        now_ns: 0,
    };
    daxfs_format::mkfs::format_device(&dev, &p, true, &mut |_, _, _| {}).expect("format");
    dev
}

fn check(dev: &Arc<Device>) -> FsckReport {
    daxfs_fsck::check(dev, false, &mut |_, _, _| {})
}

fn errors(r: &FsckReport) -> Vec<&str> {
    r.findings
        .iter()
        .filter(|f| f.severity != Severity::Note)
        .map(|f| f.what.as_str())
        .collect()
}

#[test]
fn immutable_and_append_only_inodes_check_clean() {
    let dev = formatted();
    let fs = DaxFs::mount_device(dev.clone(), FsOptions::default()).unwrap();
    let r = Cred::root();
    let i = mkfile(&fs, ROOT, b"i", b"data");
    let a = mkfile(&fs, ROOT, b"a", b"log");
    let d = fs.mkdir(ROOT, b"d", 0o755, &r).unwrap().ino;
    mkfile(&fs, d, b"inside", b"");
    let both = InodeFlags {
        immutable: true,
        append: true,
        dax: true,
    };
    fs.set_inode_flags(
        i,
        &r,
        InodeFlags {
            immutable: true,
            ..Default::default()
        },
    )
    .unwrap();
    fs.set_inode_flags(
        a,
        &r,
        InodeFlags {
            append: true,
            ..Default::default()
        },
    )
    .unwrap();
    fs.set_inode_flags(d, &r, both).unwrap();
    fs.shutdown().unwrap();
    drop(fs);
    let report = check(&dev);
    assert!(report.is_clean(), "{:?}", errors(&report));
    assert!(errors(&report).is_empty(), "{:?}", errors(&report));
}

#[test]
fn superblock_copies_that_differ_only_in_label_are_a_note() {
    let dev = formatted();
    let fs = DaxFs::mount_device(dev.clone(), FsOptions::default()).unwrap();
    fs.set_label(&Cred::root(), b"new").unwrap();
    fs.shutdown().unwrap();
    drop(fs);
    // What a crash after the primary's write and before the backup's leaves.
    let mut b = [0u8; SB_SIZE];
    dev.read(BLOCK_SIZE, &mut b);
    let mut backup = Superblock::decode(&b, SIZE).unwrap();
    backup.label = [0; 64];
    backup.label[..3].copy_from_slice(b"old");
    dev.write(BLOCK_SIZE, &backup.encode());
    let report = check(&dev);
    assert!(report.is_clean(), "{:?}", errors(&report));
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.severity == Severity::Note && f.what.contains("label")),
        "{:?}",
        report.findings
    );
    let fs = DaxFs::mount_device(dev.clone(), FsOptions::default()).unwrap();
    assert_eq!(fs.label(), b"new");
}
