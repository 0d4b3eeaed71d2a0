//! daxfs-alloc: space and page lifetimes, no I/O.
