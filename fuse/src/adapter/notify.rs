//! Notifications to the kernel: the lease-break notifier (POLLPRI polls woken with
//! FUSE_NOTIFY_POLL when a layout break flags or revokes a pin) and the dropping of the
//! kernel's cached pages through fuser's [`fuser::Notifier`] (FUSE_NOTIFY_INVAL_INODE).

use super::handles::{pins_need_attention, PinTable};
use super::PollWaker;
use super::{lock_ignoring_poison, NotifierSlot};
use daxfs::{DaxFs, FollowChange};
use fuser::INodeNo;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{mpsc, Arc, Mutex, Weak};

/// The poll to notify, by file handle.
pub(super) type PollTable = Arc<Mutex<HashMap<u64, PollWaker>>>;

/// The hook break_layouts calls when it flags or revokes pins of an inode: it queues the
/// inode for a notifier thread (it is called with the inode's locks held), which wakes
/// the pending poll of every handle holding such a pin (FUSE_NOTIFY_POLL). The thread
/// ends when the hook is dropped.
pub(super) fn lease_break_notifier(pins: PinTable, polls: PollTable) -> daxfs::LeaseBreakNotifier {
    let (tx, rx) = mpsc::channel::<u64>();
    let spawned = std::thread::Builder::new()
        .name("daxfs-lease".into())
        .spawn(move || {
            for ino in rx {
                let handles: Vec<u64> = lock_ignoring_poison(&pins)
                    .iter()
                    .filter(|(_, list)| {
                        list.iter().any(|p| p.ino() == ino) && pins_need_attention(list)
                    })
                    .map(|(fh, _)| *fh)
                    .collect();
                for fh in handles {
                    // A poll is woken once; the kernel polls again and registers anew.
                    let pending = lock_ignoring_poison(&polls).remove(&fh);
                    if let Some(wake) = pending {
                        wake();
                    }
                }
            }
        });
    let tx = spawned.ok().map(|_| Mutex::new(tx));
    Arc::new(move |ino| {
        if let Some(tx) = &tx {
            let _ = lock_ignoring_poison(tx).send(ino);
        }
    })
}

/// The hook break_layouts calls to drop the kernel's cached pages of a range: it queues
/// the range for a notifier thread, because it is called with inode locks held and the
/// kernel may need the filesystem to answer requests before the notification completes.
/// The thread ends when the hook is dropped (replaced, or the filesystem dropped).
pub(super) fn cache_invalidator(slot: NotifierSlot, fs: Weak<DaxFs>) -> daxfs::CacheInvalidator {
    let (tx, rx) = mpsc::channel::<(u64, u64, u64)>();
    let spawned = std::thread::Builder::new()
        .name("daxfs-inval".into())
        .spawn(move || {
            for (ino, off, len) in rx {
                if let Some(n) = lock_ignoring_poison(&slot).as_ref() {
                    // u64::MAX: the attributes only (a negative offset for the kernel).
                    let off = if off == u64::MAX {
                        -1
                    } else {
                        i64::try_from(off).unwrap_or(i64::MAX)
                    };
                    // len 0 is "to the end of the file" for the kernel too.
                    let len = i64::try_from(len).unwrap_or(0);
                    // The kernel knows the inode by its node id (`node.rs`).
                    let Some(generation) = fs
                        .upgrade()
                        .and_then(|fs| fs.getattr(ino).ok())
                        .map(|a| a.generation)
                    else {
                        continue;
                    };
                    // ENOENT: the kernel has no cache of this inode; nothing to drop.
                    let _ = n.inval_inode(INodeNo(super::node::of(ino, generation)), off, len);
                }
            }
        });
    let tx = spawned.ok().map(|_| Mutex::new(tx));
    Arc::new(move |ino, off, len| {
        if let Some(tx) = &tx {
            let _ = lock_ignoring_poison(tx).send((ino, off, len));
        }
    })
}

/// The hook a follower's refreshes report their changes to (`daxfs::FollowChange`): a
/// notifier thread drops what the kernel caches of them, entries first (a removed or
/// replaced name must not keep resolving to the old node), then the inodes' attributes
/// and pages. Called from the refresh, which must not wait for the kernel.
pub(super) fn follow_invalidator(slot: NotifierSlot) -> daxfs::FollowNotifier {
    let (tx, rx) = mpsc::channel::<Vec<FollowChange>>();
    let spawned = std::thread::Builder::new()
        .name("daxfs-follow-inval".into())
        .spawn(move || {
            for changes in rx {
                let guard = lock_ignoring_poison(&slot);
                let Some(n) = guard.as_ref() else { continue };
                for c in &changes {
                    if let FollowChange::Entry {
                        parent,
                        parent_generation,
                        name,
                    } = c
                    {
                        let node = super::node::of(*parent, *parent_generation);
                        let _ = n.inval_entry(INodeNo(node), OsStr::from_bytes(name));
                    }
                }
                for c in &changes {
                    if let FollowChange::Inode { ino, generation } = c {
                        let _ = n.inval_inode(INodeNo(super::node::of(*ino, *generation)), 0, 0);
                    }
                }
            }
        });
    let tx = spawned.ok().map(|_| Mutex::new(tx));
    Arc::new(move |changes: &[FollowChange]| {
        if let Some(tx) = &tx {
            let _ = lock_ignoring_poison(tx).send(changes.to_vec());
        }
    })
}
