//! daxfs-cli: what the three command-line tools (mkfs.daxfs, fsck.daxfs, daxfs) share:
//! the progress meter and the mount table lookup.

pub mod mountinfo;
mod progress;

pub use mountinfo::{mount_at, mount_point_of, MountEntry};
pub use progress::ProgressMeter;
