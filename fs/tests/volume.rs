//! Filesystem-wide requests through the core API: the label (FS_IOC_GETFSLABEL /
//! FS_IOC_SETFSLABEL) kept in both superblock copies, and FITRIM, which validates its
//! range as ext4 does and trims nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use common::*;
use daxfs::{Cred, DaxFs, Errno, FsOptions};
use daxfs_format::{Superblock, BLOCK_SIZE, SB_SIZE};
use daxfs_testkit as common;

const MB: u64 = 1 << 20;

fn user() -> Cred {
    Cred {
        uid: 1000,
        gid: 1000,
        pid: 0,
    }
}

/// The labels of the primary and backup superblock copies on the device image.
fn labels_on_media(d: &TestDev) -> (String, String) {
    let img = std::fs::read(&d.path).unwrap();
    let size = img.len() as u64;
    let copy = |off: usize| {
        Superblock::decode(&img[off..off + SB_SIZE], size)
            .unwrap()
            .label_str()
    };
    (copy(0), copy(BLOCK_SIZE as usize))
}

#[test]
fn label_is_the_one_mkfs_wrote() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    assert_eq!(fs.label(), b"test");
}

#[test]
fn set_label_is_durable_in_both_superblock_copies_at_once() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    fs.set_label(&root(), b"new-label").unwrap();
    assert_eq!(fs.label(), b"new-label");
    // Before any unmount: what a daemon killed now leaves.
    assert_eq!(
        labels_on_media(&d),
        ("new-label".to_string(), "new-label".to_string())
    );
    let crashed = d.crash_image();
    assert_eq!(crashed.mount().label(), b"new-label");
    fs.shutdown().unwrap();
    drop(fs);
    assert_eq!(d.mount().label(), b"new-label");
}

#[test]
fn label_of_63_bytes_fits_and_64_is_einval() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    fs.set_label(&root(), &[b'x'; 63]).unwrap();
    assert_eq!(fs.label(), vec![b'x'; 63]);
    assert_eq!(
        fs.set_label(&root(), &[b'y'; 64]).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(fs.set_label(&root(), b"a\0b").unwrap_err(), Errno::EINVAL);
    assert_eq!(
        fs.label(),
        vec![b'x'; 63],
        "a refused label changes nothing"
    );
}

#[test]
fn empty_label_clears_it() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    fs.set_label(&root(), b"").unwrap();
    assert_eq!(fs.label(), b"");
    assert_eq!(labels_on_media(&d), (String::new(), String::new()));
}

#[test]
fn set_label_needs_root() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    assert_eq!(fs.set_label(&user(), b"mine").unwrap_err(), Errno::EPERM);
    assert_eq!(fs.label(), b"test");
}

#[test]
fn set_label_on_a_read_only_mount_is_erofs() {
    let d = TestDev::new(32 * MB);
    let fs = DaxFs::mount(
        &d.path,
        FsOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(fs.set_label(&root(), b"ro").unwrap_err(), Errno::EROFS);
}

#[test]
fn trim_of_the_whole_filesystem_trims_nothing() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    assert_eq!(fs.trim(&root(), 0, u64::MAX, 0).unwrap(), 0);
    assert_eq!(fs.trim(&root(), 0, BLOCK_SIZE, 0).unwrap(), 0);
}

#[test]
fn trim_range_shorter_than_a_block_or_past_the_end_or_minlen_above_the_size_is_einval() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let size = fs.superblock().total_blocks * BLOCK_SIZE;
    for (start, len, minlen) in [
        (0, 0, 0),
        (0, BLOCK_SIZE - 1, 0),
        (size, u64::MAX, 0),
        (2 * size, u64::MAX, 0),
        (0, u64::MAX, size + BLOCK_SIZE),
    ] {
        assert_eq!(
            fs.trim(&root(), start, len, minlen).unwrap_err(),
            Errno::EINVAL,
            "start {start} len {len} minlen {minlen}"
        );
    }
}

#[test]
fn trim_needs_root() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    assert_eq!(fs.trim(&user(), 0, u64::MAX, 0).unwrap_err(), Errno::EPERM);
}
