//! The store behind a device: an emulated device must be allocated in full (a hole would
//! be allocated by a page fault, which on a full backing filesystem is a SIGBUS), a
//! read-only mount opens the device read-only, and a change that fails after changing
//! an inode still tells the kernel to drop the attributes it caches.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking

use daxfs_testkit as common;

use common::*;
use daxfs::{DaxFs, FsOptions};
use daxfs_pmem::{allocate_file, Device, DeviceError, DeviceOptions};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

const MB: u64 = 1 << 20;

/// A scratch file in /dev/shm, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        Scratch(PathBuf::from(format!(
            "/dev/shm/daxfs-backing-{}-{tag}",
            std::process::id()
        )))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn ro() -> FsOptions {
    FsOptions {
        read_only: true,
        ..FsOptions::default()
    }
}

#[test]
fn a_file_with_holes_is_refused_before_it_is_mapped() {
    let s = Scratch::new("holes");
    std::fs::File::create(&s.0)
        .and_then(|f| f.set_len(16 * MB))
        .expect("sparse file");
    match Device::open(&s.0, DeviceOptions::default()) {
        Err(DeviceError::NotBacked {
            size, allocated, ..
        }) => assert_eq!((size, allocated), (16 * MB, 0)),
        other => panic!("expected NotBacked, got {other:?}"),
    }
    assert_eq!(
        std::fs::metadata(&s.0).unwrap().blocks(),
        0,
        "nothing allocated"
    );
}

#[test]
fn a_mount_of_a_file_with_holes_names_the_fix() {
    let s = Scratch::new("holes-mount");
    std::fs::File::create(&s.0)
        .and_then(|f| f.set_len(16 * MB))
        .expect("sparse file");
    let e = DaxFs::mount(&s.0, FsOptions::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("not fully allocated") && e.contains("fallocate"),
        "{e}"
    );
}

#[test]
fn an_allocated_file_opens() {
    let s = Scratch::new("allocated");
    let f = std::fs::File::create(&s.0).expect("create");
    allocate_file(&f, 0, 16 * MB).expect("allocate");
    let d = Device::open(&s.0, DeviceOptions::default()).expect("open");
    assert_eq!(d.size(), 16 * MB);
}

#[test]
fn a_read_only_mount_of_a_clean_image_writes_nothing() {
    let d = TestDev::new(32 * MB);
    {
        let fs = d.mount();
        mkfile(&fs, 1, b"f", b"data");
        fs.shutdown().unwrap();
    }
    let before = std::fs::read(&d.path).unwrap();
    let fs = DaxFs::mount(&d.path, ro()).expect("ro mount");
    let ino = fs.lookup(1, b"f").unwrap().ino;
    assert_eq!(read_all(&fs, ino), b"data");
    fs.shutdown().unwrap();
    drop(fs);
    assert!(
        std::fs::read(&d.path).unwrap() == before,
        "a ro mount wrote"
    );
}

/// The device at `path` through a read-only descriptor (as an image on a read-only
/// filesystem is opened).
fn open_read_only(path: &std::path::Path) -> Device {
    let opts = DeviceOptions {
        writable: false,
        exclusive: true,
        populate: false,
    };
    Device::open(path, opts).expect("open read-only")
}

#[test]
fn a_read_only_device_whose_journal_needs_replay_is_refused_unchanged() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    mkfile(&fs, 1, b"f", b"data");
    let crashed = d.crash_image();
    drop(fs);
    let before = std::fs::read(&crashed.path).unwrap();
    let dev = open_read_only(&crashed.path);
    let e = DaxFs::mount_device(Arc::new(dev), ro())
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("journal holds committed transactions"), "{e}");
    assert!(
        std::fs::read(&crashed.path).unwrap() == before,
        "image changed"
    );
}

#[test]
fn a_read_only_mount_of_a_crashed_image_replays_its_journal() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    mkfile(&fs, 1, b"f", b"data");
    let crashed = d.crash_image();
    drop(fs);
    let fs = DaxFs::mount(&crashed.path, ro()).expect("ro mount replays");
    let ino = fs.lookup(1, b"f").unwrap().ino;
    assert_eq!(read_all(&fs, ino), b"data");
}

/// A read-only mount that replayed the journal retires it once live, as ext4 does: a
/// later read-only mount of the same image, through a read-only descriptor, has nothing
/// to replay and mounts (before, the header still named the replayed transactions and
/// that mount was refused).
#[test]
fn a_read_only_mount_that_replayed_leaves_nothing_to_replay() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    mkfile(&fs, 1, b"f", b"data");
    let crashed = d.crash_image();
    drop(fs);
    let fs = DaxFs::mount(&crashed.path, ro()).expect("ro mount replays");
    drop(fs);
    let dev = open_read_only(&crashed.path);
    let fs = DaxFs::mount_device(Arc::new(dev), ro()).expect("nothing left to replay");
    let ino = fs.lookup(1, b"f").unwrap().ino;
    assert_eq!(read_all(&fs, ino), b"data");
}

#[test]
fn a_fallocate_failing_with_enospc_invalidates_the_cached_attributes() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let ino = mkfile(&fs, 1, b"f", b"");
    let calls: Arc<Mutex<Vec<(u64, u64, u64)>>> = Arc::default();
    let c = calls.clone();
    fs.set_cache_invalidator(Some(Arc::new(move |i, o, l| {
        c.lock().unwrap().push((i, o, l))
    })));
    let e = fs
        .fallocate(ino, 0, 1 << 30, 0)
        .expect_err("larger than the device");
    assert_eq!(e, daxfs::Errno::ENOSPC);
    assert!(fs.getattr(ino).unwrap().blocks > 0, "blocks kept");
    assert!(
        calls.lock().unwrap().contains(&(ino, u64::MAX, 0)),
        "no attribute invalidation: {:?}",
        calls.lock().unwrap()
    );
}
