//! daxfs-cli: what the three command-line tools (mkfs.daxfs, fsck.daxfs, daxfs) share:
//! the progress meter, the mount table lookup, and turning clap's errors into the
//! tools' own messages.
#![forbid(unsafe_code)]

pub mod clap_error;
pub mod mountinfo;
mod progress;

pub use mountinfo::{mount_at, mount_point_of, MountEntry};
pub use progress::ProgressMeter;
