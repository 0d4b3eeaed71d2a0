//! daxfs-testkit: what daxfs's tests share (a dev-dependency; bench, a dev tool, takes its
//! [`Rng`] too).
//!
//! An emulated device in /dev/shm, formatted, removed on drop; small helpers the
//! behaviour tests share; [`mkfs`], the parameters every test formats with; [`Rng`], the
//! one seeded generator (see [`rng`]); and [`hostile`], the structure-aware image
//! mutations that the hostile-image tests and the fuzz targets both run.

// Test support: a panic is how a fixture reports a broken test environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod hostile;
pub mod rng;
pub mod uring;

pub use rng::{seed, Rng};

use daxfs::{Cred, DaxFs, FsOptions};
use daxfs_format::{MkfsParams, Superblock};
use daxfs_pmem::{Device, DeviceOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct TestDev {
    pub path: PathBuf,
}

fn fresh_path() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    PathBuf::from(format!(
        "/dev/shm/daxfs-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

impl TestDev {
    /// A fresh formatted device of `size` bytes.
    pub fn new(size: u64) -> TestDev {
        TestDev::with_params(size, 0)
    }

    /// A fresh formatted device of `size` bytes with `inodes` inode slots (0 = default).
    pub fn with_params(size: u64, inodes: u64) -> TestDev {
        let dev = TestDev { path: fresh_path() };
        let f = std::fs::File::create(&dev.path).unwrap();
        // An emulated device must be allocated: Device::open refuses a file with holes.
        daxfs_pmem::allocate_file(&f, 0, size).unwrap();
        drop(f);
        let d = Device::open(
            &dev.path,
            DeviceOptions {
                writable: true,
                exclusive: true,
                populate: false,
            },
        )
        .unwrap();
        mkfs().inodes(inodes).format(&d);
        dev
    }

    pub fn mount(&self) -> DaxFs {
        DaxFs::mount(&self.path, FsOptions::default()).unwrap()
    }

    /// A second opening of the device without the local lock: what another host
    /// mapping the same memory sees (the host table tests play other hosts with it).
    pub fn other_host(&self, writable: bool) -> std::sync::Arc<Device> {
        std::sync::Arc::new(
            Device::open(
                &self.path,
                DeviceOptions {
                    writable,
                    exclusive: false,
                    populate: false,
                },
            )
            .unwrap(),
        )
    }

    /// A copy of the device image as it is now, as a daemon killed at this instant
    /// would leave it (on /dev/shm the page cache is the medium). The copy can be
    /// mounted while the original is still mounted.
    pub fn crash_image(&self) -> TestDev {
        let copy = TestDev { path: fresh_path() };
        std::fs::copy(&self.path, &copy.path).unwrap();
        copy
    }
}

impl Drop for TestDev {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The mkfs parameters of a test filesystem, mkfs's defaults unless a setter says
/// otherwise (label "test", a fixed uuid, time 0: images are reproducible).
pub fn mkfs() -> Mkfs {
    Mkfs(MkfsParams {
        label: "test".into(),
        journal_bytes: 0,
        inodes: 0,
        uuid: [1; 16],
        now_ns: 0,
    })
}

/// [`mkfs`]'s builder.
#[derive(Clone, Debug)]
pub struct Mkfs(MkfsParams);

impl Mkfs {
    /// Journal size in bytes (0: mkfs's default).
    pub fn journal_bytes(mut self, n: u64) -> Mkfs {
        self.0.journal_bytes = n;
        self
    }
    /// Inode slots (0: mkfs's default).
    pub fn inodes(mut self, n: u64) -> Mkfs {
        self.0.inodes = n;
        self
    }
    pub fn params(&self) -> &MkfsParams {
        &self.0
    }
    /// Formats `dev`, a fresh device (reading as zeros); the new superblock.
    pub fn format(&self, dev: &Device) -> Superblock {
        daxfs_format::mkfs::format_device(dev, &self.0, true, &mut |_, _, _| {}).expect("mkfs")
    }
}

pub fn root() -> Cred {
    Cred::root()
}

/// The whole content of a file.
pub fn read_all(fs: &DaxFs, ino: u64) -> Vec<u8> {
    let size = fs.getattr(ino).unwrap().size as usize;
    let mut buf = vec![0u8; size];
    let n = fs.read(ino, 0, &mut buf).unwrap();
    assert_eq!(n, size, "short read of a whole file");
    buf
}

/// Creates a regular file with `data` (created, written, released); returns its ino.
pub fn mkfile(fs: &DaxFs, parent: u64, name: &[u8], data: &[u8]) -> u64 {
    let a = fs
        .create(parent, name, 0o644, libc::O_RDWR, &Cred::root())
        .unwrap();
    if !data.is_empty() {
        assert_eq!(fs.write(a.ino, 0, data, false).unwrap(), data.len());
    }
    fs.release(a.ino).unwrap();
    a.ino
}

/// Every entry of a directory (without "." and ".."), as (name, ino).
pub fn list(fs: &DaxFs, dir: u64) -> Vec<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    fs.readdir(dir, 0, |e| {
        if e.name != b"." && e.name != b".." {
            out.push((e.name, e.ino));
        }
        true
    })
    .unwrap();
    out
}

/// A deterministic pseudo-random byte pattern (different per seed).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ seed as u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
