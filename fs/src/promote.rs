//! Promotion of a follower to the writer role (issue 13; docs/DESIGN.md "Promotion"):
//! when the writer's lease has stopped heartbeating for the host timeout, a follower may
//! become the writer. [`DaxFs::promote`] builds the read-write filesystem as a crash
//! recovery mount would (lease observed for the timeout, journal replayed, metadata
//! loaded and checked, lease taken by CAS of the epoch), leaving the follower as it was
//! when that is refused; the caller then serves the new filesystem and drops the
//! follower (which releases its host slot and stops its threads).

use crate::filesystem::DaxFs;
use crate::mount_error::MountError;

/// Why a promotion was refused.
#[derive(Debug)]
pub enum PromoteError {
    /// The mount is not a follower (`-o follow`).
    NotFollower,
    /// The writer's lease is held and heartbeating, or another follower (or mount) took
    /// it first: the follower stays a follower.
    WriterLive(MountError),
    /// The read-write mount failed (journal, metadata, device): the follower stays.
    Failed(MountError),
}

impl PromoteError {
    /// The errno the ioctl answers with.
    pub fn errno(&self) -> crate::Errno {
        match self {
            PromoteError::NotFollower => crate::Errno(libc::EBUSY),
            PromoteError::WriterLive(_) => crate::Errno(libc::EBUSY),
            PromoteError::Failed(_) => crate::Errno::EIO,
        }
    }
}

impl std::fmt::Display for PromoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PromoteError::NotFollower => write!(f, "not a follower mount (-o follow)"),
            PromoteError::WriterLive(e) => write!(f, "writer role not free: {e}"),
            PromoteError::Failed(e) => write!(f, "read-write mount failed: {e}"),
        }
    }
}

impl std::error::Error for PromoteError {}

fn classify(e: MountError) -> PromoteError {
    match e {
        MountError::WriterLeaseHeld { .. } => PromoteError::WriterLive(e),
        // The device's lock is held by a writer daemon of this host.
        MountError::Open(daxfs_pmem::DeviceError::Busy { .. }) => PromoteError::WriterLive(e),
        e => PromoteError::Failed(e),
    }
}

impl DaxFs {
    /// Makes a read-write filesystem of this follower's device (see the module doc). The
    /// follower keeps serving meanwhile and is not changed; on success the caller swaps
    /// the returned filesystem in and drops this one. Blocks for up to the host timeout
    /// while it watches the writer's heartbeat.
    pub fn promote(&self) -> Result<DaxFs, PromoteError> {
        if !self.is_follower() {
            return Err(PromoteError::NotFollower);
        }
        let mut opts = self.opts.clone();
        opts.follow = false;
        opts.read_only = false;
        // `prepare` observes the lease for the timeout before it opens the journal (a
        // live writer's journal is never replayed), replays it and loads the metadata;
        // `go_live` takes the lease by CAS of the epoch: a follower that loses it to
        // another stays a follower.
        let fs = DaxFs::prepare(self.dev.path(), opts).map_err(classify)?;
        fs.go_live().map_err(classify)?;
        log::warn!(
            "{}: follower promoted to writer (lease epoch {})",
            self.dev.path().display(),
            fs.writer_lease().map_or(0, |l| l.epoch())
        );
        Ok(fs)
    }
}

impl DaxFs {
    /// After a promotion: carries the kernel's references (lookup counts, opens) from
    /// the follower `old` over to this filesystem, inode by inode of the same
    /// generation, so that a file the kernel holds open or cached across the switch is
    /// kept alive (nlink 0 included) until the kernel lets it go, as on any mount.
    /// Returns the (ino, generation) of every inode of `old`, for the kernel's caches.
    pub fn adopt_kernel_refs(&self, old: &DaxFs) -> Vec<crate::FollowChange> {
        use crate::inode::rlock;
        use std::sync::atomic::Ordering;
        let olds: Vec<_> = rlock(&old.inodes).values().cloned().collect();
        let mut changes = Vec::with_capacity(olds.len());
        for o in olds {
            let generation = rlock(&o.st).d.generation;
            changes.push(crate::FollowChange::Inode {
                ino: o.ino,
                generation: u64::from(generation),
            });
            let Ok(n) = self.inode(o.ino) else { continue };
            if rlock(&n.st).d.generation != generation {
                continue;
            }
            n.lookups
                .fetch_add(o.lookups.load(Ordering::SeqCst), Ordering::SeqCst);
            n.opens
                .fetch_add(o.opens.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        changes
    }
}
