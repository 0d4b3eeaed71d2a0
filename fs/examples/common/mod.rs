//! What the examples share: a scratch device file that removes itself, and formatting it.
#![allow(dead_code)] // each example uses its own part of this

use daxfs_pmem::{Device, DeviceOptions};
use std::path::PathBuf;

/// A scratch device file, removed on drop.
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Creates a 256 MiB file at `path` and formats it with mkfs defaults.
pub fn format_256mib(path: &PathBuf) -> Result<(), String> {
    format_sized(path, 256 << 20, 0)
}

/// Creates a `size`-byte file at `path` (allocated in full, as a device must be) and
/// formats it with `inodes` inode slots (0: the mkfs default).
pub fn format_sized(path: &PathBuf, size: u64, inodes: u64) -> Result<(), String> {
    let f = std::fs::File::create(path).map_err(|e| e.to_string())?;
    daxfs_pmem::allocate_file(&f, 0, size).map_err(|e| e.to_string())?;
    drop(f);
    let opts = DeviceOptions {
        writable: true,
        exclusive: true,
        populate: false,
    };
    let d = Device::open(path, opts).map_err(|e| e.to_string())?;
    let p = daxfs_testkit::mkfs().inodes(inodes);
    daxfs_format::mkfs::format_device(&d, p.params(), true, &mut |_, _, _| {})
        .map(|_| ())
        .map_err(|e| e.to_string())
}
