//! Group commit: concurrent committers share one journal commit.
//!
//! Every metadata change ends in [`DaxFs::commit`] (or [`DaxFs::enqueue`] then
//! [`DaxFs::wait`]). Transactions are queued in the order they are enqueued; whoever waits
//! while no one is leading becomes the leader, takes everything queued and writes it as
//! ONE journal transaction (`Journal::commit_batch`: the members' records in queue
//! order, so a later write to the same bytes wins as if they had been committed one
//! after another, then the bitmap blocks the members touch, one commit record, one
//! flush/fence sequence). It then checkpoints once if any member freed blocks, returns
//! every member's freed blocks and inode slots, and wakes the followers with their
//! outcome. A batch that would not fit the log is split into several journal
//! transactions, committed in order. A lone committer finds no leader and an empty
//! queue and commits at once, without going through the queue: there is no timer and
//! nothing waits for company; a batch forms only from transactions queued while another
//! commit was running. A follower spins briefly (a commit takes microseconds) before it
//! sleeps.
//!
//! Why here and not in daxfs-journal: the leader's work around the journal commit is the
//! filesystem's. The bitmap images are computed from the allocator once for the whole
//! batch, after every member's allocation and with every member's frees shown free (an
//! image computed per member would let a later member's image, taken before an earlier
//! member's frees were applied, mark those blocks used again), and the frees and inode
//! slots may only be handed back after the checkpoint. The journal supplies the
//! primitive (`commit_batch`, and `LogSize` to split).
//!
//! Outcomes are monotone: a failed journal commit sets the filesystem's failed flag, and
//! a leader that finds the flag set commits nothing, so every ticket from the first
//! failed one on fails with EIO and every earlier one succeeded.
//!
//! Namespace operations enqueue while they still hold their locks (so a transaction
//! built on another's in-memory state is always queued after it) and wait after
//! releasing them, which is what lets concurrent creates and unlinks share commits.
//! Their change is visible in memory before it is durable, as on ext4; the readers that
//! read metadata from the device instead of memory (readdir, readlink) and fsync/fsyncdir
//! first wait for the inode's last such transaction ([`DaxFs::settle`]).

use crate::error::{Errno, Result};
use crate::filesystem::{lock, wlock, DaxFs, Inode, Tx};
use crate::format::{BITS_PER_BITMAP_BLOCK, BLOCK_SIZE};
use daxfs_journal::{LogSize, Transaction};
use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Busy-wait iterations, then the time a follower yields, before it sleeps.
const SPINS: u32 = 200;
const SPIN_TIME: Duration = Duration::from_micros(50);

/// A queued transaction's place in the commit order. Ticket 0 stands for a transaction
/// that had nothing to commit.
#[must_use = "wait() for the transaction to be durable"]
pub(crate) struct Ticket(u64);

/// The commit queue (one per mount).
pub(crate) struct GroupCommit {
    q: Mutex<Queue>,
    cv: Condvar,
    /// Mirrors of `Queue::done` and `Queue::leading`, read without the mutex: by
    /// [`DaxFs::settle`], and by followers spinning while a commit runs.
    done: AtomicU64,
    leading: AtomicBool,
    /// `Journal::log_bytes`: the bound on one journal transaction.
    log_bytes: u64,
}

struct Queue {
    /// Queued transactions not yet taken by a leader, in ticket order; the first has
    /// ticket `next - pending.len()`.
    pending: Vec<Tx>,
    /// Ticket of the next transaction queued (tickets start at 1).
    next: u64,
    /// Every ticket up to this one is finished (committed or failed).
    done: u64,
    /// First ticket that failed (u64::MAX: none).
    failed_from: u64,
    /// A leader is committing (it took the queue; its tickets are not yet done).
    leading: bool,
    /// Threads sleeping on the condition variable.
    waiters: usize,
    /// Test hook: the next leader first waits until this many transactions are queued,
    /// or for `hold_for` at most.
    hold: usize,
    hold_for: Duration,
    /// An empty vector with capacity, swapped with `pending` by the leader.
    spare: Vec<Tx>,
    /// The leader's bitmap records, kept for their capacity.
    bitmaps: Transaction,
}

impl GroupCommit {
    pub(crate) fn new(log_bytes: u64) -> GroupCommit {
        GroupCommit {
            q: Mutex::new(Queue {
                pending: Vec::new(),
                next: 1,
                done: 0,
                failed_from: u64::MAX,
                leading: false,
                waiters: 0,
                hold: 0,
                hold_for: Duration::ZERO,
                spare: Vec::new(),
                bitmaps: Transaction::new(),
            }),
            cv: Condvar::new(),
            done: AtomicU64::new(0),
            leading: AtomicBool::new(false),
            log_bytes,
        }
    }

    fn sleep<'a>(&self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        q.waiters += 1;
        let mut q = self.cv.wait(q).unwrap_or_else(|e| e.into_inner());
        q.waiters -= 1;
        q
    }

    /// Marks tickets `first..first+n` finished, failed or not; with `last`, the leader
    /// also steps down. Wakes the sleepers (among them, owners of transactions queued
    /// meanwhile, which need a new leader).
    fn finish(&self, q: &mut Queue, first: u64, n: u64, ok: bool, last: bool) {
        if !ok {
            q.failed_from = q.failed_from.min(first);
        }
        q.done = first + n - 1;
        self.done.store(q.done, Ordering::Release);
        if last {
            q.leading = false;
            self.leading.store(false, Ordering::Release);
        }
        if q.waiters > 0 {
            self.cv.notify_all();
        }
    }

    /// The outcome of ticket `t` if it is finished.
    fn outcome(q: &Queue, t: u64) -> Option<Result<()>> {
        if q.done < t {
            None
        } else if t < q.failed_from {
            Some(Ok(()))
        } else {
            Some(Err(Errno::EIO))
        }
    }
}

/// Armed while a leader commits: if it unwinds, its remaining tickets fail (and so does
/// the filesystem) instead of leaving the followers asleep forever.
struct Leading<'a> {
    fs: &'a DaxFs,
    /// First ticket not yet finished, and how many of the leader's remain.
    next: u64,
    left: u64,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if self.left > 0 {
            let g = &self.fs.group;
            let mut q = lock(&g.q);
            self.fs.failed.store(true, Ordering::SeqCst);
            g.finish(&mut q, self.next, self.left, false, true);
        }
    }
}

/// Indexes of the bitmap blocks that hold the bits of a transaction's allocations and
/// frees.
/// A transaction with nothing to commit (no record, allocation, free or inode slot).
fn is_empty(tx: &Tx) -> bool {
    tx.txn.is_empty() && tx.allocs.is_empty() && tx.frees.is_empty() && tx.freed_inos.is_empty()
}

fn touches(tx: &Tx) -> impl Iterator<Item = u64> + '_ {
    tx.allocs
        .iter()
        .chain(tx.frees.iter())
        .filter(|r| r.start < r.end)
        .flat_map(|r| (r.start / BITS_PER_BITMAP_BLOCK)..=((r.end - 1) / BITS_PER_BITMAP_BLOCK))
}

impl DaxFs {
    /// Commits a transaction: journals its records plus the bitmap blocks its
    /// allocations and frees touch, together with whatever else is queued; once durable
    /// its frees are applied in memory (after a checkpoint, so no older journal record
    /// can be replayed over a reused block). Returns when it is durable.
    pub(crate) fn commit(&self, tx: Tx) -> Result<()> {
        if is_empty(&tx) {
            return Ok(());
        }
        let g = &self.group;
        let mut q = lock(&g.q);
        if !q.leading && q.pending.is_empty() && q.hold == 0 {
            // Alone: commit at once, without going through the queue.
            let t = q.next;
            q.next += 1;
            q.leading = true;
            g.leading.store(true, Ordering::Release);
            let mut bitmaps = std::mem::take(&mut q.bitmaps);
            drop(q);
            let mut guard = Leading {
                fs: self,
                next: t,
                left: 1,
            };
            let mut touched = BTreeSet::new();
            touched.extend(touches(&tx));
            let ok = !self.failed.load(Ordering::SeqCst)
                && self.commit_members(std::slice::from_ref(&tx), &touched, &mut bitmaps);
            let mut q = lock(&g.q);
            guard.left = 0;
            q.bitmaps = bitmaps;
            g.finish(&mut q, t, 1, ok, true);
            return if ok { Ok(()) } else { Err(Errno::EIO) };
        }
        let t = self.push_locked(&mut q, tx);
        if q.leading {
            drop(q);
            return self.wait_for(t);
        }
        let q = self.lead(q);
        match GroupCommit::outcome(&q, t) {
            Some(r) => r,
            None => {
                drop(q);
                self.wait_for(t)
            }
        }
    }

    /// Queues a transaction behind every one queued before it. The caller may release
    /// its locks before [`wait`](Self::wait)ing: whoever takes them later queues behind.
    pub(crate) fn enqueue(&self, tx: Tx) -> Ticket {
        if is_empty(&tx) {
            return Ticket(0);
        }
        let mut q = lock(&self.group.q);
        Ticket(self.push_locked(&mut q, tx))
    }

    /// Queues `tx`; returns its ticket.
    fn push_locked(&self, q: &mut Queue, tx: Tx) -> u64 {
        q.pending.push(tx);
        let t = q.next;
        q.next += 1;
        if q.hold > 0 && q.waiters > 0 {
            // A held leader counts the queue.
            self.group.cv.notify_all();
        }
        t
    }

    /// Waits until the transaction is durable (Ok) or failed (EIO), committing the queue
    /// itself when no one else is.
    pub(crate) fn wait(&self, t: Ticket) -> Result<()> {
        self.wait_for(t.0)
    }

    /// Waits until the transaction with ticket `t` (an [`Inode::pending`] value) is
    /// applied: the device then holds what memory says.
    pub(crate) fn settle(&self, inode: &Inode) {
        let t = inode.pending.load(Ordering::Acquire);
        if t > self.group.done.load(Ordering::Acquire) {
            let _ = self.wait_for(t);
        }
    }

    /// Records that `t` changes what readers of these inodes read from the device.
    /// Called with the inodes' state locks held, before they are released.
    pub(crate) fn mark_pending(&self, t: &Ticket, inodes: &[&Arc<Inode>]) {
        for i in inodes {
            i.pending.fetch_max(t.0, Ordering::AcqRel);
        }
    }

    fn wait_for(&self, t: u64) -> Result<()> {
        let g = &self.group;
        // A commit takes microseconds, less than falling asleep and being woken up: while
        // one runs, spin (then yield, in case the leader waits for this CPU) for a
        // little longer than a commit before sleeping. No one leading means nothing to
        // wait for: this transaction is finished, or this thread is to commit it.
        let mut spins = 0u32;
        let mut deadline = None;
        while g.done.load(Ordering::Acquire) < t && g.leading.load(Ordering::Acquire) {
            if spins < SPINS {
                std::hint::spin_loop();
                spins += 1;
                continue;
            }
            let end = *deadline.get_or_insert_with(|| Instant::now() + SPIN_TIME);
            if Instant::now() >= end {
                break;
            }
            std::thread::yield_now();
        }
        let mut q = lock(&g.q);
        loop {
            if let Some(r) = GroupCommit::outcome(&q, t) {
                return r;
            }
            q = if !q.leading && !q.pending.is_empty() {
                self.lead(q)
            } else {
                g.sleep(q)
            };
        }
    }

    /// Commits everything queued, in as few journal transactions as fit the log.
    fn lead<'a>(&'a self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        let g = &self.group;
        q.leading = true;
        g.leading.store(true, Ordering::Release);
        if q.hold > 0 {
            let deadline = Instant::now() + q.hold_for;
            while q.pending.len() < q.hold && Instant::now() < deadline {
                q.waiters += 1;
                let (nq, _) =
                    g.cv.wait_timeout(q, Duration::from_millis(100))
                        .unwrap_or_else(|e| e.into_inner());
                q = nq;
                q.waiters -= 1;
            }
            q.hold = 0;
        }
        // The spare vector and the bitmap transaction keep their capacity from batch to
        // batch (only the leader uses them).
        let spare = std::mem::take(&mut q.spare);
        let mut batch = std::mem::replace(&mut q.pending, spare);
        let mut bitmaps = std::mem::take(&mut q.bitmaps);
        let mut guard = Leading {
            fs: self,
            next: q.next - batch.len() as u64,
            left: batch.len() as u64,
        };
        drop(q);
        loop {
            let (n, ok) = self.commit_prefix(&mut batch, &mut bitmaps);
            let mut q = lock(&g.q);
            let last = batch.is_empty();
            g.finish(&mut q, guard.next, n, ok, last);
            guard.next += n;
            guard.left -= n;
            if last {
                q.spare = batch;
                q.bitmaps = bitmaps;
                return q;
            }
        }
    }

    /// Commits the longest prefix of `batch` that fits one journal transaction (at least
    /// one member) and removes it; returns its length and whether it is durable.
    fn commit_prefix(&self, batch: &mut Vec<Tx>, bitmaps: &mut Transaction) -> (u64, bool) {
        if self.failed.load(Ordering::SeqCst) {
            // Memory may be ahead of the media (a failed commit, or an operation that
            // could not finish): nothing more may be written.
            let n = batch.len() as u64;
            batch.clear();
            return (n, false);
        }
        let log_bytes = self.group.log_bytes;
        let mut size = LogSize::new();
        let mut touched = BTreeSet::new();
        let mut n = 0;
        // A lone member is committed whatever its size (an oversized one fails).
        let sizing = if batch.len() > 1 { &batch[..] } else { &[] };
        for tx in sizing {
            let mut grown = size;
            grown.add(&tx.txn);
            for b in touches(tx) {
                if touched.insert(b) {
                    grown.add_record(BLOCK_SIZE);
                }
            }
            if n > 0 && grown.encoded_len() > log_bytes {
                // This member starts the next journal transaction (rare: rebuild the
                // set without its blocks).
                touched = batch[..n].iter().flat_map(touches).collect();
                break;
            }
            size = grown;
            n += 1;
        }
        if let (0, Some(tx)) = (n, batch.first()) {
            touched.extend(touches(tx));
            n = 1;
        }
        let ok = self.commit_members(&batch[..n], &touched, bitmaps);
        batch.drain(..n);
        (n as u64, ok)
    }

    /// One journal commit of `members` followed by the bitmap blocks `touched`, then the
    /// checkpoint and the return of their frees and inode slots. False on failure (the
    /// filesystem is then failed).
    fn commit_members(
        &self,
        members: &[Tx],
        touched: &BTreeSet<u64>,
        bitmaps: &mut Transaction,
    ) -> bool {
        let mut journal = lock(&self.journal);
        let gathered: Vec<Range<u64>>;
        let frees: &[Range<u64>] = match members {
            [one] => &one.frees,
            _ => {
                gathered = members
                    .iter()
                    .flat_map(|m| m.frees.iter().cloned())
                    .collect();
                &gathered
            }
        };
        // The images are taken now, after every member's allocations, with every member's
        // frees shown free (the allocator sees them free only after the checkpoint).
        bitmaps.clear();
        {
            let space = lock(&self.space);
            for &i in touched {
                let img = self.bitmap_image(&space, i, frees);
                bitmaps.write(self.geo.bitmap_block_offset(i), &img);
            }
        }
        let res = match members {
            [one] if bitmaps.is_empty() => journal.commit_batch(&[&one.txn]),
            [one] => journal.commit_batch(&[&one.txn, bitmaps]),
            _ => {
                let mut txns: Vec<&Transaction> = members.iter().map(|m| &m.txn).collect();
                txns.push(bitmaps);
                journal.commit_batch(&txns)
            }
        };
        if let Err(e) = res {
            self.failed.store(true, Ordering::SeqCst);
            eprintln!("daxfs: journal commit failed: {e}; the filesystem is now read-only until remounted");
            return false;
        }
        if !bitmaps.is_empty() || members.iter().any(|m| !m.txn.is_empty()) {
            self.stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        self.stats
            .transactions
            .fetch_add(members.len() as u64, Ordering::Relaxed);
        if !frees.is_empty() {
            if journal.checkpoint().is_err() {
                self.failed.store(true, Ordering::SeqCst);
                return false;
            }
            let mut space = lock(&self.space);
            for r in frees {
                if space.free(r.clone()).is_err() {
                    self.refs.note_violation();
                }
            }
        }
        drop(journal);
        if members.iter().any(|m| !m.freed_inos.is_empty()) {
            let mut inodes = wlock(&self.inodes);
            let mut free = lock(&self.free_inos);
            for ino in members.iter().flat_map(|m| m.freed_inos.iter().copied()) {
                inodes.remove(&ino);
                free.insert(ino);
            }
        }
        true
    }

    /// Test hook: the next commit that leads first waits until `queued` transactions,
    /// its own included, are queued (or `at_most` has passed, so that a test that
    /// miscounts fails its assertions instead of hanging). Lets a test build a batch of a
    /// known size, or keep a transaction in flight, without relying on timing.
    #[doc(hidden)]
    pub fn hold_next_commit(&self, queued: usize, at_most: Duration) {
        let mut q = lock(&self.group.q);
        q.hold = queued;
        q.hold_for = at_most;
    }
}
