//! daxfs: a DAX filesystem over persistent memory, served through FUSE.
pub mod error;
pub mod filesystem;
pub mod format;
pub mod fuse_adapter;
pub mod mount_options;
pub mod types;

pub use error::{Errno, Result};
pub use filesystem::DaxFs;
pub use types::*;
