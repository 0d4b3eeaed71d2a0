//! daxfs-pmem: persistent memory as the layers above see it.
//!
//! This crate owns opening a device (a device-DAX character device, an fsdax block
//! device or an emulated file), the one shared mapping of it, the persistence
//! primitives (cache-line flushes, fences, non-temporal copies), the [`Media`] trait the
//! journal and the filesystem write through, the [`VolatileSlice`] views that are the
//! only way safe code reaches device bytes, and the one x86 crash model ([`crash_model`]:
//! per-line persistence with torn lines and injected faults) that the recording
//! [`Device`] and the in-memory [`MemMedia`] both feed.
//!
//! It also holds the little-endian and CRC [`codec`] of the on-media structures, the one
//! copy the journal and the format share (the lowest crate both depend on).
//!
//! Every `unsafe` block that touches device memory is in this crate; the core, the
//! format, the journal, fsck and the CLI helpers forbid `unsafe` outright.

pub mod codec;
pub mod crash_model;
mod device;
mod media;
pub mod mem_media;
pub mod persist;
mod volatile;

pub use crash_model::{DeltaPoint, Fault, FencePoint, LineModel, LINE, MAX_TORN_PER_LINE, WORD};
pub use device::{
    allocate_file, Device, DeviceError, DeviceKind, DeviceOptions, Recorder, DEVICE_ALIGN,
    NT_THRESHOLD,
};
pub use media::Media;
pub use mem_media::MemMedia;
pub use volatile::{AccessError, VolatileSlice};
