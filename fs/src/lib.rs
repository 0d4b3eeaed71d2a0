//! daxfs: the core of a DAX filesystem over persistent memory.
//!
//! This crate owns the filesystem API, [`DaxFs`], usable in-process without a mount:
//! loading a formatted device, the inode table, directories and the namespace, extent
//! maps and file I/O straight onto the device, xattrs and ACLs, pins of mapped ranges
//! and their policy, break_layouts (waiting for pins to drain before a block is freed)
//! and group commit of the metadata journal. The device and its persistence come from
//! `daxfs-pmem`, the on-media codec from `daxfs-format`, free space and page reference
//! counts from `daxfs-alloc`, the journal from `daxfs-journal`. The FUSE adapter
//! (`daxfs-fuse`) and fsck (`daxfs-fsck`) are built on this API.
#![forbid(unsafe_code)]

pub mod acl;
pub mod break_layouts;
pub mod commit;
pub mod dir;
pub mod error;
pub mod extent_map;
pub mod file_io;
pub mod filesystem;
mod inode_table;
pub mod mapping;
pub mod mount_error;
pub mod namespace;
pub mod pin;
pub mod types;
pub mod xattr;

pub use daxfs_pmem::VolatileSlice;
pub use error::{Errno, Result};
pub use filesystem::DaxFs;
pub use mapping::PinnedMapping;
pub use mount_error::{CorruptError, MountError, RecoveryStep};
pub use pin::{FsStats, RangePin};
pub use types::*;

/// The root directory's inode number (also FUSE's).
pub const ROOT: u64 = daxfs_format::ROOT_INO;
