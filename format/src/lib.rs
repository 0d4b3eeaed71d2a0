//! daxfs-format: the on-media format, version 1 (docs/FORMAT.md).
//!
//! This crate owns the encoding and decoding of every structure, with its magic and
//! CRC — pure functions over byte slices, so the parser can be tested (and fuzzed) on
//! plain buffers — and formatting a device ([`mkfs::format_device`], the work behind
//! mkfs.daxfs), the one place that writes a whole empty filesystem.

mod bitmap;
mod dir;
mod error;
mod extent;
mod inode;
mod le;
pub mod mkfs;
mod superblock;
mod xattr;

pub use bitmap::*;
pub use dir::*;
pub use error::FormatError;
pub use extent::*;
pub use inode::*;
pub use le::crc;
pub use superblock::*;
pub use xattr::*;

#[cfg(test)]
mod golden;
