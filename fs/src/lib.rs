//! daxfs: a DAX filesystem over persistent memory, served through FUSE.
//!
//! This crate owns the device (one shared mapping, flush primitives), the on-media
//! format, inodes, directories, extent maps, break_layouts, the core filesystem API
//! (`DaxFs`, usable in-process without a mount), the FUSE adapter and the `daxfs` and
//! `fsck.daxfs` binaries. Free space and page reference counts come from
//! `daxfs-alloc`, the metadata journal from `daxfs-journal`.

pub mod acl;
pub mod break_layouts;
pub mod busy_poll;
pub mod commit;
pub mod deferred;
pub mod device;
pub mod dir;
pub mod error;
pub mod extent_map;
pub mod file_io;
pub mod filesystem;
pub mod format;
pub mod fsck;
pub mod fuse_adapter;
mod inode_table;
pub mod ioctl;
pub mod mapping;
pub mod mkfs;
pub mod mount_options;
pub mod namespace;
pub mod persist;
pub mod pin;
pub mod types;
pub mod volatile;
pub mod xattr;

pub use error::{Errno, Result};
pub use filesystem::DaxFs;
pub use mapping::PinnedMapping;
pub use pin::{FsStats, RangePin};
pub use types::*;
pub use volatile::VolatileSlice;

/// The root directory's inode number (also FUSE's).
pub const ROOT: u64 = format::ROOT_INO;
