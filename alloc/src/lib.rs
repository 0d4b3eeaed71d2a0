//! daxfs-alloc: space and page lifetimes, no I/O.
//!
//! This crate owns two in-memory structures of the data area (docs/DESIGN.md, "Block lifetimes" and "Pins and break_layouts"):
//!
//! - [`FreeSpace`]: the free-space bitmap (one bit per data-area block, 1 = in use, raw bytes
//!   in the exact on-media bit order) and extent allocation: contiguous runs near a goal,
//!   2 MiB-aligned when asked, never handing out a block whose refcount is not 0.
//! - [`RefTable`]: one atomic reference count per data-area block, the analogue of
//!   `struct page::_refcount` for ZONE_DEVICE pages: 0 free, 1 idle (held by the file's
//!   mapping cache entry), >1 pinned; with futex-based wait-for-idle for break_layouts.
//!
//! Block numbers are data-area indexes `0..len`; the filesystem converts them to device
//! blocks. Persisting the bitmap, journaling and locking policy belong to the `daxfs` crate.

// Block indexes are u64 and are used as slice indexes; the crate assumes they fit.
const _: () = assert!(usize::BITS == 64, "daxfs-alloc requires a 64-bit target");

pub mod free_space;
pub mod refcount;

pub use free_space::{AllocError, FreeSpace};
pub use refcount::{Census, RefStats, RefTable};
