//! Lazy timestamps (`FsOptions::lazytime`): an overwrite without a journal commit.
//!
//! A write that changes no size, allocates nothing and clears no set-id bit changes
//! nothing of the inode but mtime and ctime, and committing them alone was most of the
//! cost of a small overwrite (a journal transaction with its fences, ~0.85 µs of ~1.2).
//! With lazytime such a write sets the times in memory (stat shows them at once: it
//! reads the in-memory inode) and marks them dirty ([`InodeTimes`]) instead. They become
//! durable with
//!
//! * the inode's next journal record of any kind: every record is an encoding of the
//!   whole in-memory inode (`log_inode`), so it carries the current times;
//! * fsync (not fdatasync, which need not persist times: as ext4);
//! * the writeback thread, at most `commit_interval` after they were dirtied;
//! * unmount ([`DaxFs::shutdown`] commits whatever is still dirty).
//!
//! A power cut before any of these leaves the last durable times: older than what stat
//! showed, never older than a time that was durable, never garbage (the record is
//! journaled as a whole).
//!
//! Invariants. The dirty flag changes only under the inode's state lock held
//! exclusively, and a commit of the times happens under that lock too, with the flag
//! cleared only once it is durable: so a durable time never goes backwards (each
//! commit writes the in-memory times current under the lock, and commits are ordered by
//! the journal), and fsync, which takes the lock when the flag is set, waits for a
//! commit of those times already under way. Every inode whose flag is set is in the
//! writeback queue, or about to be taken by the thread (`queued` is cleared before the
//! thread takes the lock, and set under the lock by the writer).

use crate::commit::Tx;
use crate::error::Result;
use crate::filesystem::DaxFs;
use crate::inode::{lock, wlock, Inode, InodeState};
use daxfs_format::Timespec;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

/// One inode's lazy-time state.
#[derive(Default)]
pub(crate) struct InodeTimes {
    /// Its in-memory mtime/ctime may be newer than the durable ones. Changed only with
    /// the inode's state lock held exclusively.
    dirty: AtomicBool,
    /// It is in the writeback queue.
    queued: AtomicBool,
}

/// The writeback queue and its thread (one per mount).
#[derive(Default)]
pub(crate) struct LazyTimes {
    q: Mutex<Queue>,
    cv: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Queue {
    /// Inodes whose times were dirtied, with when: oldest first.
    dirty: VecDeque<(Instant, Weak<Inode>)>,
    /// Unmount: the thread leaves.
    stop: bool,
}

impl DaxFs {
    /// Whether writes that change only the times leave them dirty in memory.
    pub(crate) fn lazy_times(&self) -> bool {
        self.opts.lazytime && !self.opts.read_only
    }

    /// Sets `inode`'s mtime and ctime to `t` in memory only and marks them dirty. The
    /// caller holds the state lock exclusively (`st`).
    pub(crate) fn dirty_times(&self, inode: &Arc<Inode>, st: &mut InodeState, t: Timespec) {
        st.d.mtime = t;
        st.d.ctime = t;
        let it = &inode.times;
        it.dirty.store(true, Ordering::Release);
        if !it.queued.swap(true, Ordering::AcqRel) {
            let mut q = lock(&self.times.q);
            let wake = q.dirty.is_empty();
            q.dirty.push_back((Instant::now(), Arc::downgrade(inode)));
            drop(q);
            if wake {
                self.times.cv.notify_all();
            }
        }
    }

    /// The inode's record was committed with the lock still held: its times are durable.
    pub(crate) fn times_committed(&self, inode: &Inode, _st: &InodeState) {
        inode.times.dirty.store(false, Ordering::Release);
    }

    /// Commits `inode`'s dirty times, under its state lock held exclusively (`st`).
    fn commit_times_locked(&self, inode: &Inode, st: &mut InodeState) -> Result<()> {
        if !inode.times.dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        if st.dead {
            // Freed: its slot is written by the free, not by a time update.
            inode.times.dirty.store(false, Ordering::Release);
            return Ok(());
        }
        let mut tx = Tx::new();
        self.log_inode(inode.ino, st, &mut tx);
        self.commit(tx)?;
        inode.times.dirty.store(false, Ordering::Release);
        Ok(())
    }

    /// fsync's part: makes `inode`'s times durable, waiting for a commit of them already
    /// under way (it holds the lock).
    pub(crate) fn sync_times(&self, inode: &Inode) -> Result<()> {
        // Clean: the commit that cleared the flag (under the lock) is durable.
        if !inode.times.dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut st = wlock(&inode.st);
        self.commit_times_locked(inode, &mut st)
    }

    /// The writeback of one queued inode.
    fn write_back(&self, inode: &Weak<Inode>) {
        let Some(inode) = inode.upgrade() else { return };
        // Before the lock: a writer that dirties the times after this (under the lock)
        // queues the inode again.
        inode.times.queued.store(false, Ordering::Release);
        let mut st = wlock(&inode.st);
        // A failed commit (failed filesystem: EIO) leaves them dirty; nothing more can
        // be committed anyway.
        let _ = self.commit_times_locked(&inode, &mut st);
    }

    /// Starts the writeback thread (at go-live, when times may be lazy).
    pub(crate) fn start_writeback(&self) {
        if !self.lazy_times() {
            return;
        }
        let fs = self.handle();
        let spawned = std::thread::Builder::new()
            .name("daxfs-times".into())
            .spawn(move || fs.writeback_loop());
        match spawned {
            Ok(h) => *lock(&self.times.thread) = Some(h),
            // Without the thread the times still become durable with the next record,
            // fsync and unmount; say that the interval does not hold.
            Err(e) => log::warn!("cannot start the timestamp writeback thread: {e}"),
        }
    }

    fn writeback_loop(&self) {
        let interval = self.opts.commit_interval;
        let mut q = lock(&self.times.q);
        loop {
            if q.stop {
                return;
            }
            let Some((since, _)) = q.dirty.front() else {
                q = self.times.cv.wait(q).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let due = *since + interval;
            let now = Instant::now();
            if now < due {
                q = self
                    .times
                    .cv
                    .wait_timeout(q, due - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
            let Some((_, inode)) = q.dirty.pop_front() else {
                continue;
            };
            drop(q);
            self.write_back(&inode);
            q = lock(&self.times.q);
        }
    }

    /// Stops the writeback thread and commits every time still dirty (unmount).
    pub(crate) fn stop_writeback(&self) {
        lock(&self.times.q).stop = true;
        self.times.cv.notify_all();
        let thread = lock(&self.times.thread).take();
        if let Some(h) = thread {
            let _ = h.join();
        }
        let left = std::mem::take(&mut lock(&self.times.q).dirty);
        for (_, inode) in left {
            self.write_back(&inode);
        }
    }

    /// Test hook (feature `test-hooks`): whether `ino`'s times are dirty in memory.
    #[cfg(feature = "test-hooks")]
    pub fn times_dirty(&self, ino: u64) -> bool {
        self.inode(ino)
            .map(|i| i.times.dirty.load(Ordering::Acquire))
            .unwrap_or(false)
    }
}
