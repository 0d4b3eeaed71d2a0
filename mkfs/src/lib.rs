//! daxfs-mkfs: the library side of mkfs.daxfs, its command line ([`cli`]), so that
//! `daxfs-man` can render the man page and completions from the same definition the
//! binary parses with.

pub mod cli;
