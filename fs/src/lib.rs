//! daxfs: the core of a DAX filesystem over persistent memory.
//!
//! This crate owns the filesystem API, [`DaxFs`], usable in-process without a mount:
//! loading a formatted device, the inode table, directories and the namespace, extent
//! maps and file I/O straight onto the device, xattrs and ACLs, pins of mapped ranges
//! and their policy, break_layouts (waiting for pins to drain before a block is freed),
//! group commit of the metadata journal, lazy timestamps (`times`), chattr's inode flags (`inode_flags`) and the
//! filesystem-wide label and FITRIM (`volume`). The device and its persistence come from
//! `daxfs-pmem`, the on-media codec from `daxfs-format`, free space and page reference
//! counts from `daxfs-alloc`, the journal from `daxfs-journal`. The FUSE adapter
//! (`daxfs-fuse`) and fsck (`daxfs-fsck`) are built on this API.
#![forbid(unsafe_code)]

// The modules are private: what library users and the other crates need is re-exported
// below, so a module can be split or moved without breaking them.
pub mod acl;
mod break_layouts;
mod commit;
mod dir;
mod error;
mod extent_map;
mod file_io;
mod filesystem;
mod follow;
mod host_gate;
mod inode;
mod inode_flags;
mod inode_table;
pub mod lease;
mod mapping;
mod mount_error;
mod namespace;
mod pin;
mod promote;
mod times;
mod types;
mod volume;
mod xattr;

pub use break_layouts::CacheInvalidator;
pub use daxfs_format::Timespec;
pub use daxfs_pmem::VolatileSlice;
pub use error::{Errno, Result};
pub use filesystem::{DaxFs, MAX_FILE_SIZE, MAX_LINKS, SEEK_DATA, SEEK_HOLE};
pub use follow::{FollowChange, FollowNotifier, FollowStatus, Refresh};
pub use inode_flags::InodeFlags;
pub use mapping::PinnedMapping;
pub use mount_error::{CorruptError, MountError, RecoveryStep};
pub use namespace::SYMLINK_MAX;
pub use pin::{
    caps_from_status, FsStats, LeaseBreakNotifier, PinCaps, PinGrant, PinHolder, PinPolicy,
    PinUsage, RangePin, DEFAULT_LEASE_BREAK_TIME, DEFAULT_MAX_PINS_PER_USER,
};
pub use promote::PromoteError;
pub use types::{
    from_system_time, now, to_system_time, Attr, Cred, DaxMode, DirEntry, FileKind, FsOptions,
    SetAttr, SetTime, StatFs, DEFAULT_COMMIT_INTERVAL,
};
// The load errors a CorruptError carries.
pub use dir::DirLoadError;
pub use extent_map::ExtentMapError;

/// The in-memory structures fsck (`daxfs-fsck`) shares with the core, so that a repair
/// rebuilds an inode's extent map and a directory's index exactly as a mount loads them
/// (the same overlap and duplicate checks, the same slot placement), rather than a
/// second implementation that could drift from the mount's. Not needed by other users
/// of the API.
pub mod fsck_support {
    pub use crate::dir::{DirIndex, DirLoadError, DirSlot};
    pub use crate::extent_map::{ExtentMap, ExtentMapError, SlotLoc, MAX_EXTENT_LEN};
}

/// The root directory's inode number (also FUSE's).
pub const ROOT: u64 = daxfs_format::ROOT_INO;
