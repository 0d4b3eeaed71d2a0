//! Shared fixture: an emulated device in /dev/shm, formatted, removed on drop.
#![allow(dead_code)]

use daxfs::device::{Device, DeviceOptions};
use daxfs::format::MkfsParams;
use daxfs::{DaxFs, FsOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct TestDev {
    pub path: PathBuf,
}

impl TestDev {
    /// A fresh formatted device of `size` bytes.
    pub fn new(size: u64) -> TestDev {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = PathBuf::from(format!(
            "/dev/shm/daxfs-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(size).unwrap();
        drop(f);
        let dev = Device::open(
            &path,
            DeviceOptions {
                writable: true,
                exclusive: true,
                populate: false,
            },
        )
        .unwrap();
        let p = MkfsParams {
            label: "test".into(),
            journal_bytes: 0,
            inodes: 0,
            uuid: [1; 16],
            now_ns: 0,
        };
        daxfs::mkfs::format_device(&dev, &p, true, &mut |_, _, _| {}).unwrap();
        TestDev { path }
    }

    pub fn mount(&self) -> DaxFs {
        DaxFs::mount(&self.path, FsOptions::default()).unwrap()
    }
}

impl Drop for TestDev {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
