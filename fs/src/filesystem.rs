//! The core filesystem API: every operation of the mount, tested without a mount.
//! (Stub signatures; the bodies are being written.)
#![allow(unused_variables, dead_code)]

use crate::error::Result;
use crate::types::*;
use std::path::Path;

/// A mounted daxfs instance. Thread-safe: all methods take `&self`.
pub struct DaxFs {}

/// lseek whence values handled by [`DaxFs::lseek`].
pub const SEEK_DATA: i32 = libc::SEEK_DATA;
pub const SEEK_HOLE: i32 = libc::SEEK_HOLE;

impl DaxFs {
    /// Opens the device, validates the superblock, replays the journal, loads metadata,
    /// reclaims orphans. Errors are human-readable (bad device, corrupt image, in use).
    pub fn mount(device: &Path, opts: FsOptions) -> std::result::Result<DaxFs, String> {
        todo!()
    }
    /// Makes everything durable and marks the filesystem clean. Called at unmount.
    pub fn shutdown(&self) -> Result<()> {
        todo!()
    }
    pub fn options(&self) -> &FsOptions {
        todo!()
    }
    pub fn statfs(&self) -> StatFs {
        todo!()
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        todo!()
    }
    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        todo!()
    }
    pub fn setattr(&self, ino: u64, cred: &Cred, changes: &SetAttr) -> Result<Attr> {
        todo!()
    }
    /// Creates a node of any type. `mode` includes the S_IFMT bits (umask already applied).
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        cred: &Cred,
    ) -> Result<Attr> {
        todo!()
    }
    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, cred: &Cred) -> Result<Attr> {
        todo!()
    }
    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8], cred: &Cred) -> Result<Attr> {
        todo!()
    }
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        todo!()
    }
    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<()> {
        todo!()
    }
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<()> {
        todo!()
    }
    /// `flags`: 0, libc::RENAME_NOREPLACE or libc::RENAME_EXCHANGE.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> Result<()> {
        todo!()
    }
    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> Result<Attr> {
        todo!()
    }

    /// Opens an inode (counts open handles: an unlinked file lives until the last release).
    /// `flags` are open(2) flags; O_TRUNC truncates.
    pub fn open(&self, ino: u64, flags: i32) -> Result<()> {
        todo!()
    }
    /// Creates (or with !O_EXCL opens an existing) regular file and opens it.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
        cred: &Cred,
    ) -> Result<Attr> {
        todo!()
    }
    /// Drops one open handle; the last release of an unlinked inode frees it.
    pub fn release(&self, ino: u64) -> Result<()> {
        todo!()
    }

    /// Zero-copy read: calls `f` with the pieces of the file range, straight out of the
    /// device mapping (holes as zeros), while the blocks are pinned. The pieces add up to
    /// the bytes available (short at EOF, empty past it).
    pub fn read_with<R>(
        &self,
        ino: u64,
        offset: u64,
        len: u32,
        f: impl FnOnce(&[&[u8]]) -> R,
    ) -> Result<R> {
        todo!()
    }
    /// Convenience read into a buffer; returns the bytes read.
    pub fn read(&self, ino: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        todo!()
    }
    /// Writes `data` at `offset` (or at EOF when `append`), durable before it returns.
    /// Returns the bytes written (short on ENOSPC after some progress).
    pub fn write(&self, ino: u64, offset: u64, data: &[u8], append: bool) -> Result<usize> {
        todo!()
    }
    pub fn fsync(&self, ino: u64, datasync: bool) -> Result<()> {
        todo!()
    }
    /// fallocate(2) with its mode bits (FALLOC_FL_KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE,
    /// COLLAPSE_RANGE, INSERT_RANGE).
    pub fn fallocate(&self, ino: u64, offset: u64, len: u64, mode: i32) -> Result<()> {
        todo!()
    }
    /// lseek for SEEK_DATA / SEEK_HOLE (others are handled by the kernel).
    pub fn lseek(&self, ino: u64, offset: i64, whence: i32) -> Result<i64> {
        todo!()
    }
    pub fn copy_file_range(
        &self,
        ino_in: u64,
        off_in: u64,
        ino_out: u64,
        off_out: u64,
        len: u64,
    ) -> Result<u64> {
        todo!()
    }

    /// Lists entries from cookie `offset` (0 = start; "." and ".." come first); `f` returns
    /// false when its buffer is full (the entry it was given is then not consumed).
    pub fn readdir(&self, ino: u64, offset: u64, f: impl FnMut(DirEntry) -> bool) -> Result<()> {
        todo!()
    }
    pub fn fsyncdir(&self, ino: u64) -> Result<()> {
        todo!()
    }

    /// `flags`: 0, libc::XATTR_CREATE or libc::XATTR_REPLACE.
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> Result<()> {
        todo!()
    }
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        todo!()
    }
    /// NUL-separated names, as listxattr(2).
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        todo!()
    }
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        todo!()
    }
    /// access(2) check by mode bits for `cred` (mask: R_OK/W_OK/X_OK/F_OK).
    pub fn access(&self, ino: u64, mask: i32, cred: &Cred) -> Result<()> {
        todo!()
    }

    /// FS_XFLAG_DAX of an inode (FS_IOC_FSGETXATTR / FSSETXATTR).
    pub fn get_dax_flag(&self, ino: u64) -> Result<bool> {
        todo!()
    }
    pub fn set_dax_flag(&self, ino: u64, dax: bool) -> Result<()> {
        todo!()
    }
    /// Whether the kernel may cache this inode's data (dax=never, or dax=inode without the flag).
    pub fn kernel_may_cache(&self, ino: u64) -> bool {
        todo!()
    }
}
