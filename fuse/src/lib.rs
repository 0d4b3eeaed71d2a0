//! daxfs-fuse: serving a [`daxfs::DaxFs`] through FUSE.
//!
//! This crate owns the FUSE adapter (transport-neutral: decoded requests in, core calls,
//! reply values out; fuser's /dev/fuse loop is one transport), the mount
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

/// The transport-neutral request and reply types (see [`adapter`]): what a transport
/// decodes a request into and encodes a reply from.
pub use adapter::{
    Ctx, DirEntry, FuseAdapter, NoReply, Op, PollWaker, ReadData, Reply, ReplySink, Served,
};
