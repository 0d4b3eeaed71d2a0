//! daxfs: a DAX filesystem over persistent memory, served through FUSE.

pub mod device;
pub mod persist;
