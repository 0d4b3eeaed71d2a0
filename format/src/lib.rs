//! daxfs-format: the on-media format, version 2 (docs/FORMAT.md).
//!
//! This crate owns the encoding and decoding of every structure, with its magic and
//! CRC — pure functions over byte slices, so the parser can be tested (and fuzzed) on
//! plain buffers — and formatting a device ([`mkfs::format_device`], the work behind
//! mkfs.daxfs), the one place that writes a whole empty filesystem.
//!
//! One module per structure, each with its constants and its table of field offsets
//! (defined once, each field after the one before it, shared by encode and decode); the
//! little-endian fields and the CRCs are `daxfs_pmem::codec`'s, shared with the journal.
//! Everything public is re-exported here, so users write `daxfs_format::X`.
#![forbid(unsafe_code)]

mod bitmap;
mod dir;
mod error;
mod extent;
pub mod hosts;
mod inode;
pub mod mkfs;
mod superblock;
mod xattr;

pub use bitmap::*;
/// The CRC-32 (IEEE polynomial) every structure carries (see daxfs_pmem::codec).
pub use daxfs_pmem::codec::crc32 as crc;
pub use dir::*;
pub use error::FormatError;
pub use extent::*;
pub use inode::*;
pub use superblock::*;
pub use xattr::*;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod spec;
