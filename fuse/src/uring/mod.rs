//! FUSE over io_uring (placeholder doc).

pub mod abi;
pub mod queue;
