//! One inode in memory ([`Inode`]: its locks and counters; [`InodeState`]: its record,
//! extent map, directory index and xattrs), and the lock helpers every module uses.
//! Apart from the filesystem, which keeps the inodes, break_layouts and the pin code
//! work on inodes directly.

use crate::dir::DirIndex;
use crate::extent_map::ExtentMap;
use crate::types::FileKind;
use daxfs_format::{DiskInode, XattrList};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// One inode in memory: its record, its extent map, and for directories the index.
pub(crate) struct Inode {
    pub ino: u64,
    pub st: RwLock<InodeState>,
    /// Open file handles (an unlinked inode lives until the last one is released).
    pub opens: AtomicU32,
    /// References the kernel holds through entries it was given (FUSE lookup count,
    /// see `DaxFs::remember`): an unlinked inode also lives until they are forgotten.
    pub lookups: AtomicU64,
    /// The layout lock (docs/DESIGN.md, "Pins and break_layouts"; the kernel's MMAPLOCK): taken exclusively by
    /// break_layouts, shared by long-term pins. Always taken before `st`.
    pub layout: RwLock<()>,
    /// Lease breaks sent to this inode's long-term pin holders (see `break_layouts.rs`).
    pub lease_breaks: AtomicU64,
    /// Long-term pins (ioctl pins, pinned mappings) currently held on this inode.
    pub long_pins: AtomicU32,
    /// Ticket of the newest queued transaction that changed what is read of this inode
    /// from the device (directory blocks, symlink target) and whose committer released
    /// the inode before it was durable (see `commit.rs`); 0 if none.
    pub pending: AtomicU64,
    /// Whether its times changed in memory only (lazytime, `times.rs`).
    pub times: crate::times::InodeTimes,
}

impl Inode {
    pub(crate) fn new(ino: u64, st: InodeState) -> Inode {
        Inode {
            ino,
            st: RwLock::new(st),
            opens: AtomicU32::new(0),
            layout: RwLock::new(()),
            lease_breaks: AtomicU64::new(0),
            long_pins: AtomicU32::new(0),
            lookups: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            times: Default::default(),
        }
    }
}

pub(crate) struct InodeState {
    pub d: DiskInode,
    pub ext: ExtentMap,
    /// Boxed: most inodes are not directories, and 10^6 of them should not each carry
    /// an empty index inline.
    pub dir: Option<Box<DirIndex>>,
    pub xattrs: XattrList,
    /// Freed: stale handles see ENOENT.
    pub dead: bool,
}

impl InodeState {
    pub fn kind(&self) -> Option<FileKind> {
        FileKind::from_mode(self.d.mode)
    }
    pub fn is_dir(&self) -> bool {
        self.d.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// Recovers a poisoned lock: a panic in another thread must not take the filesystem
/// down with it; the data it protects is kept consistent by transactions.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
pub(crate) fn rlock<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}
pub(crate) fn wlock<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}
