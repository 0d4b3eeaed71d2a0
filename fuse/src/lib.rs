//! daxfs-fuse: serving a [`daxfs::DaxFs`] through FUSE.
//!
//! This crate owns the FUSE adapter (requests in, core calls, replies out), the mount
//! options, the deferred replies of requests that wait for pins, busy polling of
//! /dev/fuse, the daxfs ioctls (numbers and the client side the `daxfs pin` and
//! `daxfs stats` commands use, and their text and JSON formats), the daemon's `log`
//! backend (logger: RUST_LOG filtering, stderr or syslog), the command line ([`cli`],
//! also rendered into the man pages) and the `daxfs` binary (mount, daemon, pin, stats).

pub mod adapter;
pub mod busy_poll;
pub mod cli;
pub mod deferred;
pub mod ioctl;
pub mod logger;
pub mod mount_options;
pub mod uring;
