//! FUSE node ids: an inode's generation in the high 32 bits, its number in the low 32
//! (the root is 1, as FUSE wants). st_ino stays the inode number (`Attr::ino`); only
//! the node id the kernel addresses the inode by carries the generation.
//!
//! Why: a node id the kernel still holds (a cached dentry, an open file) may name an
//! inode number that was freed and handed to a new file since: another host's writer
//! unlinked it under a follower (docs/DESIGN.md "Followers"). With the number alone the
//! old name would open the new file's bytes; with the generation in the node id every
//! request on the old one gets ESTALE ([`DaxFs::check_generation`]) instead.
//!
//! Every request's node ids are translated once, at the top of
//! [`FuseAdapter::serve`](super::FuseAdapter::serve) ([`resolve`]); every entry a reply
//! hands out gets its node id from [`of_attr`] (transports call it); notifications
//! ([`of`]) go to the node id of the generation they are about.

use super::request::Op;
use daxfs::{Attr, DaxFs, Errno, ROOT};

/// The node id of inode `ino` of `generation`.
pub fn of(ino: u64, generation: u64) -> u64 {
    if ino == ROOT || ino > u64::from(u32::MAX) {
        // Inode numbers above 2^32 (never made by mkfs) go without a generation.
        ino
    } else {
        (generation & 0xffff_ffff) << 32 | ino
    }
}

/// The node id an entry reply gives the kernel for `attr`.
pub fn of_attr(attr: &Attr) -> u64 {
    of(attr.ino, attr.generation)
}

/// The inode number and generation a node id names (None: the root, unchecked).
fn split(node: u64) -> (u64, Option<u32>) {
    if node == ROOT {
        return (ROOT, None);
    }
    (node & 0xffff_ffff, Some((node >> 32) as u32))
}

/// The inode number of `node`, checked against the inode's current generation.
fn ino(fs: &DaxFs, node: u64) -> Result<u64, Errno> {
    match split(node) {
        (ino, None) => Ok(ino),
        (ino, Some(generation)) => fs.check_generation(ino, generation).map(|()| ino),
    }
}

/// Rewrites the node ids of a request into inode numbers. ESTALE when one names a
/// generation that is gone, ENOENT when its number names no inode (as the core would say).
/// A FORGET of a stale node id is Err too: its references were never counted on the
/// inode that has its number now.
pub fn resolve(fs: &DaxFs, op: &mut Op<'_>) -> Result<(), Errno> {
    let one = |n: &mut u64| -> Result<(), Errno> {
        *n = ino(fs, *n)?;
        Ok(())
    };
    match op {
        Op::Forget { ino: n, .. } => {
            let (i, generation) = split(*n);
            if let Some(g) = generation {
                if fs.check_generation(i, g) == Err(Errno(libc::ESTALE)) {
                    return Err(Errno(libc::ESTALE));
                }
            }
            *n = i;
            Ok(())
        }
        Op::Lookup { parent, .. }
        | Op::Mknod { parent, .. }
        | Op::Mkdir { parent, .. }
        | Op::Unlink { parent, .. }
        | Op::Rmdir { parent, .. }
        | Op::Symlink { parent, .. }
        | Op::Create { parent, .. } => one(parent),
        Op::Rename {
            parent, newparent, ..
        } => {
            one(parent)?;
            one(newparent)
        }
        Op::Link { ino, newparent, .. } => {
            one(ino)?;
            one(newparent)
        }
        Op::CopyFileRange {
            ino_in, ino_out, ..
        } => {
            one(ino_in)?;
            one(ino_out)
        }
        Op::Getattr { ino, .. }
        | Op::Setattr { ino, .. }
        | Op::Readlink { ino }
        | Op::Open { ino, .. }
        | Op::Read { ino, .. }
        | Op::Write { ino, .. }
        | Op::Flush { ino, .. }
        | Op::Fsync { ino, .. }
        | Op::Opendir { ino, .. }
        | Op::Readdir { ino, .. }
        | Op::Readdirplus { ino, .. }
        | Op::Fsyncdir { ino, .. }
        | Op::Statfs { ino }
        | Op::Setxattr { ino, .. }
        | Op::Getxattr { ino, .. }
        | Op::Listxattr { ino, .. }
        | Op::Removexattr { ino, .. }
        | Op::Access { ino, .. }
        | Op::Fallocate { ino, .. }
        | Op::Lseek { ino, .. }
        | Op::Poll { ino, .. }
        | Op::Ioctl { ino, .. } => one(ino),
        // The handle's inode may be gone (and its number reused) by now; the release
        // must still reach the core, which finds the open by number as before.
        Op::Release { ino, .. } | Op::Releasedir { ino, .. } => {
            *ino = split(*ino).0;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_node_1_and_other_nodes_carry_the_generation() {
        assert_eq!(of(ROOT, 77), 1);
        assert_eq!(of(5, 7), 7 << 32 | 5);
        assert_eq!(split(of(5, 7)), (5, Some(7)));
        assert_eq!(split(1), (1, None));
        assert_eq!(of(5, 0x1_0000_0002), 2 << 32 | 5);
    }
}
