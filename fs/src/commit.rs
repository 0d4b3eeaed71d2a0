//! Group commit: concurrent committers share one journal commit.
//!
//! Every metadata change ends in [`DaxFs::commit`] (or [`DaxFs::enqueue`] then
//! [`DaxFs::wait`]). The committer holding the journal's mutex is the leader: it takes
//! everything queued, appends its own transaction if it has one, and writes them as ONE
//! journal transaction (`Journal::commit_batch`: the members' records in queue order, so
//! a later write to the same bytes wins as if they had been committed one after another,
//! then the bitmap blocks the members touch, one commit record, one flush/fence
//! sequence). It then checkpoints once if any member freed blocks, returns every
//! member's freed blocks and inode slots, and publishes the outcome of every queued
//! member. A batch that would not fit the log is split into several journal
//! transactions, committed in order.
//!
//! `commit` first tries for the journal as a mutex would (a few attempts while a commit
//! of a few microseconds finishes) and commits at once when it gets it: a lone committer
//! never waits for company (no timer, no sleep) and never touches the queue. Only a
//! committer that finds the journal busy for longer queues its transaction and waits,
//! spinning briefly, then sleeping, and taking the journal itself when it comes free
//! with its transaction still queued. So batches form exactly when commits are slow
//! compared with the rate of new ones, and a hand-over through the queue is never paid
//! where a plain mutex would have done.
//!
//! Why here and not in daxfs-journal: the leader's work around the journal commit is the
//! filesystem's. The bitmap images are computed from the allocator once for the whole
//! batch, after every member's allocation and with every member's frees shown free (an
//! image computed per member would let a later member's image, taken before an earlier
//! member's frees were applied, mark those blocks used again), and the frees and inode
//! slots may only be handed back after the checkpoint. The journal supplies the
//! primitive (`commit_batch`, and `LogSize` to split).
//!
//! Order: a transaction is queued, or committed, only once it is complete, and a leader
//! commits everything queued before its own. Outcomes are monotone: a failed journal
//! commit sets the filesystem's failed flag, and a leader that finds the flag set
//! commits nothing, so every ticket from the first failed one on fails with EIO and
//! every earlier one succeeded.
//!
//! Namespace operations enqueue while they still hold their locks (so a transaction
//! built on another's in-memory state is always queued after it) and wait after
//! releasing them, which is what lets concurrent creates and unlinks build while another
//! commits, and share commits. Their change is in memory before it is durable, but no
//! reader reveals it before then: lookup, getattr, open, readdir and readlink (and the
//! library's fsync/fsyncdir) first wait for the inode's last such transaction
//! ([`DaxFs::settle`]), so whatever a caller has seen is durable.

use crate::error::{Errno, Result};
use daxfs_format::{BITS_PER_BITMAP_BLOCK, BLOCK_SIZE};
use daxfs_journal::{Journal, LogSize, Transaction};
use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

/// Attempts at the journal's mutex before a committer queues (about as long as a
/// mutex spins before it sleeps).
const TRIES: u32 = 100;
/// Busy-wait iterations, then the time a queued committer yields, before it sleeps.
const SPINS: u32 = 200;
const SPIN_TIME: Duration = Duration::from_micros(50);

/// A metadata transaction being built: journal records plus the block allocations
/// and frees it carries (frees are applied in memory only after the commit is durable).
pub(crate) struct Tx {
    pub txn: Transaction,
    /// Data-area block ranges (indexes) allocated in memory for this transaction.
    pub allocs: Vec<Range<u64>>,
    /// Data-area block ranges to free once the transaction is durable.
    pub frees: Vec<Range<u64>>,
    /// Inode slots to return to the free list after commit.
    pub freed_inos: Vec<u64>,
}

impl Tx {
    pub fn new() -> Tx {
        Tx {
            txn: Transaction::new(),
            allocs: Vec::new(),
            frees: Vec::new(),
            freed_inos: Vec::new(),
        }
    }
}

/// What a leader needs of the filesystem around a journal commit (the filesystem
/// implements it): the failed flag, the bitmap images, the counters, and the return of
/// what the members freed once their commit is durable.
pub(crate) trait CommitEnv {
    /// Set after a failed commit; while set, nothing more is committed.
    fn failed(&self) -> &AtomicBool;
    /// Writes into `out` the images of bitmap blocks `touched` (indexes), taken from the
    /// allocator's map now, with the data-area ranges `frees` shown free.
    fn bitmap_images(&self, touched: &BTreeSet<u64>, frees: &[Range<u64>], out: &mut Transaction);
    /// Counts one journal commit (`wrote`: it carried records) of `members` transactions.
    fn count_commit(&self, wrote: bool, members: u64);
    /// Gives the data-area ranges `frees`, freed by the journal transaction `seq`, back
    /// to the allocator (after the checkpoint; the host gate may hold them back).
    fn free_blocks(&self, frees: &[Range<u64>], seq: u64);
    /// Whether this mount may still commit (it still holds the writer lease: fencing,
    /// `lease.rs`). Checked before every journal commit; false refuses it.
    fn may_commit(&self) -> bool;
    /// The journal transaction `seq` is durable (published in the host table).
    fn committed(&self, seq: u64);
    /// Returns inode slots to the free list (after the commit that freed them).
    fn free_inodes(&self, inos: &mut dyn Iterator<Item = u64>);
}

/// A poisoned lock is taken over: a panic in another thread must not take the
/// filesystem down with it; the data it protects is kept consistent by transactions.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A queued transaction's place in the commit order. Ticket 0 stands for a transaction
/// that had nothing to commit.
#[must_use = "wait() for the transaction to be durable"]
pub(crate) struct Ticket(u64);

impl Ticket {
    /// The ticket's place in the commit order (0: nothing to commit).
    pub(crate) fn number(&self) -> u64 {
        self.0
    }
}

/// The journal and the commit queue in front of it (one per mount).
pub(crate) struct GroupCommit {
    /// Its holder is the commit leader.
    journal: Mutex<Journal>,
    q: Mutex<Queue>,
    cv: Condvar,
    /// Every ticket up to this one is finished, and the first ticket that failed
    /// (u64::MAX: none): written under `q`, read without it.
    done: AtomicU64,
    failed_from: AtomicU64,
    /// `Queue::pending.len()`, for the leader's "anything queued?" without the mutex.
    queued: AtomicUsize,
    /// Test hook: the next leader first waits until this many transactions are there.
    #[cfg(feature = "test-hooks")]
    hold: AtomicUsize,
    /// The leader's bitmap records, kept for their capacity (only the journal's holder
    /// locks it).
    bitmaps: Mutex<Transaction>,
    /// `Journal::log_bytes`: the bound on one journal transaction.
    log_bytes: u64,
}

struct Queue {
    /// Queued transactions not yet taken by a leader, in ticket order; the first has
    /// ticket `next - pending.len()`.
    pending: Vec<Tx>,
    /// Ticket of the next transaction queued (tickets start at 1).
    next: u64,
    /// Threads sleeping on the condition variable.
    waiters: usize,
    /// How long the held leader waits at most (test hook).
    #[cfg(feature = "test-hooks")]
    hold_for: Duration,
    /// An empty vector with capacity, swapped with `pending` by the leader.
    spare: Vec<Tx>,
}

impl GroupCommit {
    pub(crate) fn new(journal: Journal) -> GroupCommit {
        let log_bytes = journal.log_bytes();
        GroupCommit {
            journal: Mutex::new(journal),
            q: Mutex::new(Queue {
                pending: Vec::new(),
                next: 1,
                waiters: 0,
                #[cfg(feature = "test-hooks")]
                hold_for: Duration::ZERO,
                spare: Vec::new(),
            }),
            cv: Condvar::new(),
            done: AtomicU64::new(0),
            failed_from: AtomicU64::new(u64::MAX),
            queued: AtomicUsize::new(0),
            #[cfg(feature = "test-hooks")]
            hold: AtomicUsize::new(0),
            bitmaps: Mutex::new(Transaction::new()),
            log_bytes,
        }
    }

    fn sleep<'a>(&self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        q.waiters += 1;
        let mut q = self.cv.wait(q).unwrap_or_else(|e| e.into_inner());
        q.waiters -= 1;
        q
    }

    /// Marks tickets `first..first+n` finished, failed or not, and wakes the sleepers.
    fn finish(&self, q: &Queue, first: u64, n: u64, ok: bool) {
        if n == 0 {
            return;
        }
        if !ok {
            self.failed_from.fetch_min(first, Ordering::AcqRel);
        }
        self.done.store(first + n - 1, Ordering::Release);
        if q.waiters > 0 {
            self.cv.notify_all();
        }
    }

    /// The outcome of finished ticket `t`.
    fn outcome(&self, t: u64) -> Result<()> {
        if t < self.failed_from.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Errno::EIO)
        }
    }
}

/// Armed while a leader commits queued transactions: if it unwinds, their tickets fail
/// (and so does the filesystem) instead of leaving their owners asleep forever.
struct Leading<'a> {
    group: &'a GroupCommit,
    failed: &'a AtomicBool,
    /// First queued ticket not yet finished, and how many remain.
    next: u64,
    left: u64,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if self.left > 0 {
            let g = self.group;
            self.failed.store(true, Ordering::SeqCst);
            let q = lock(&g.q);
            g.finish(&q, self.next, self.left, false);
        }
    }
}

/// A transaction with nothing to commit (no record, allocation, free or inode slot).
fn is_empty(tx: &Tx) -> bool {
    tx.txn.is_empty() && tx.allocs.is_empty() && tx.frees.is_empty() && tx.freed_inos.is_empty()
}

/// Indexes of the bitmap blocks that hold the bits of a transaction's allocations and
/// frees.
fn touches(tx: &Tx) -> impl Iterator<Item = u64> + '_ {
    tx.allocs
        .iter()
        .chain(tx.frees.iter())
        .filter(|r| r.start < r.end)
        .flat_map(|r| (r.start / BITS_PER_BITMAP_BLOCK)..=((r.end - 1) / BITS_PER_BITMAP_BLOCK))
}

impl GroupCommit {
    /// Transactions a held leader waits for (test hook; 0 without the feature).
    fn held(&self) -> usize {
        #[cfg(feature = "test-hooks")]
        return self.hold.load(Ordering::Relaxed);
        #[cfg(not(feature = "test-hooks"))]
        0
    }

    /// The journal, for what the filesystem does with it outside a commit (checkpoint,
    /// making it writable).
    pub(crate) fn journal(&self) -> MutexGuard<'_, Journal> {
        lock(&self.journal)
    }

    /// Every ticket up to this one is finished.
    pub(crate) fn done(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    /// Commits a transaction: journals its records plus the bitmap blocks its
    /// allocations and frees touch, together with whatever else is queued; once durable
    /// its frees are applied in memory (after a checkpoint, so no older journal record
    /// can be replayed over a reused block). Returns when it is durable.
    pub(crate) fn commit(&self, env: &impl CommitEnv, tx: Tx) -> Result<()> {
        if is_empty(&tx) {
            return Ok(());
        }
        for _ in 0..TRIES {
            if let Some(journal) = self.try_journal() {
                return if self.lead(env, journal, Some(tx)) {
                    Ok(())
                } else {
                    Err(Errno::EIO)
                };
            }
            std::hint::spin_loop();
        }
        let t = self.enqueue(tx);
        self.wait_for(env, t.0)
    }

    /// Queues a transaction behind every one queued before it. The caller may release
    /// its locks before [`wait`](Self::wait)ing: whoever takes them later queues behind.
    pub(crate) fn enqueue(&self, tx: Tx) -> Ticket {
        if is_empty(&tx) {
            return Ticket(0);
        }
        let g = self;
        let mut q = lock(&g.q);
        q.pending.push(tx);
        g.queued.store(q.pending.len(), Ordering::SeqCst);
        let t = q.next;
        q.next += 1;
        if g.held() > 0 && q.waiters > 0 {
            // A held leader counts the queue.
            g.cv.notify_all();
        }
        Ticket(t)
    }

    /// The journal, if no one holds it (a poisoned mutex is taken over: the data it
    /// protects is kept consistent by transactions).
    fn try_journal(&self) -> Option<MutexGuard<'_, Journal>> {
        match self.journal.try_lock() {
            Ok(j) => Some(j),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Waits until the transaction with ticket `t` is durable (Ok) or failed (EIO),
    /// committing the queue itself when the journal is free.
    pub(crate) fn wait_for(&self, env: &impl CommitEnv, t: u64) -> Result<()> {
        let g = self;
        // A commit takes microseconds, less than falling asleep and being woken up:
        // spin (then yield, in case the leader waits for this CPU) for a little longer
        // than a commit before sleeping.
        let mut spins = 0u32;
        let mut deadline = None;
        loop {
            if g.done.load(Ordering::Acquire) >= t {
                return g.outcome(t);
            }
            if let Some(journal) = self.try_journal() {
                self.lead(env, journal, None);
                continue;
            }
            if spins < SPINS {
                std::hint::spin_loop();
                spins += 1;
                continue;
            }
            let end = *deadline.get_or_insert_with(|| Instant::now() + SPIN_TIME);
            if Instant::now() < end {
                std::thread::yield_now();
                continue;
            }
            // Sleep until a leader publishes or gives the journal up (both wake the
            // sleepers: see `lead`).
            let mut q = lock(&g.q);
            loop {
                if g.done.load(Ordering::Acquire) >= t {
                    break;
                }
                // Pairs with the fence in `lead`: either this sees the journal free, or
                // its holder sees this transaction queued and wakes the sleepers.
                fence(Ordering::SeqCst);
                if let Some(journal) = self.try_journal() {
                    drop(q);
                    self.lead(env, journal, None);
                    break;
                }
                q = g.sleep(q);
            }
        }
    }

    /// As the journal's holder: commits everything queued, then `own` (whose committer
    /// is the caller). Returns whether `own` is durable (true if there is none).
    fn lead(
        &self,
        env: &impl CommitEnv,
        mut journal: MutexGuard<'_, Journal>,
        own: Option<Tx>,
    ) -> bool {
        let g = self;
        let held = g.held();
        let mut own_ok = true;
        if g.queued.load(Ordering::SeqCst) == 0 && held == 0 {
            // Nothing queued: the lone path, which never touches the queue.
            if let Some(tx) = own {
                own_ok = self.commit_part(env, &mut journal, std::slice::from_ref(&tx));
            }
        } else {
            let mut q = lock(&g.q);
            #[cfg(feature = "test-hooks")]
            if held > 0 {
                let want = held.saturating_sub(usize::from(own.is_some()));
                let deadline = Instant::now() + q.hold_for;
                while q.pending.len() < want && Instant::now() < deadline {
                    q.waiters += 1;
                    let (nq, _) =
                        g.cv.wait_timeout(q, Duration::from_millis(100))
                            .unwrap_or_else(|e| e.into_inner());
                    q = nq;
                    q.waiters -= 1;
                }
                g.hold.store(0, Ordering::Relaxed);
            }
            let spare = std::mem::take(&mut q.spare);
            let mut batch = std::mem::replace(&mut q.pending, spare);
            g.queued.store(0, Ordering::SeqCst);
            let mut guard = Leading {
                group: self,
                failed: env.failed(),
                next: q.next - batch.len() as u64,
                left: batch.len() as u64,
            };
            drop(q);
            let has_own = own.is_some();
            batch.extend(own);
            while !batch.is_empty() {
                let (n, ok) = self.commit_prefix(env, &mut journal, &mut batch);
                // The caller's own transaction comes last and has no ticket.
                let queued = n.min(guard.left);
                if has_own && batch.is_empty() {
                    own_ok = ok;
                }
                let mut q = lock(&g.q);
                g.finish(&q, guard.next, queued, ok);
                guard.next += queued;
                guard.left -= queued;
                if batch.is_empty() {
                    q.spare = std::mem::take(&mut batch);
                }
            }
        }
        drop(journal);
        // A committer that queued while the journal was held, and went to sleep, must
        // learn that it is free (the store-load pair with `enqueue`/`wait_for` needs
        // the fence).
        fence(Ordering::SeqCst);
        if g.queued.load(Ordering::SeqCst) > 0 {
            let q = lock(&g.q);
            if q.waiters > 0 {
                g.cv.notify_all();
            }
        }
        own_ok
    }

    /// Commits the longest prefix of `batch` that fits one journal transaction (at least
    /// one member) and removes it; returns its length and whether it is durable.
    fn commit_prefix(
        &self,
        env: &impl CommitEnv,
        journal: &mut Journal,
        batch: &mut Vec<Tx>,
    ) -> (u64, bool) {
        let mut size = LogSize::new();
        let mut seen = BTreeSet::new();
        let mut n = 0;
        for tx in batch.iter() {
            let mut grown = size;
            grown.add(&tx.txn);
            for b in touches(tx) {
                if seen.insert(b) {
                    grown.add_record(BLOCK_SIZE);
                }
            }
            if n > 0 && grown.encoded_len() > self.log_bytes {
                break;
            }
            size = grown;
            n += 1;
        }
        let ok = self.commit_part(env, journal, &batch[..n]);
        batch.drain(..n);
        (n as u64, ok)
    }

    /// One journal commit of `members` followed by the bitmap blocks they touch, then
    /// the checkpoint and the return of their frees and inode slots. False on failure
    /// (the filesystem is then failed).
    fn commit_part(&self, env: &impl CommitEnv, journal: &mut Journal, members: &[Tx]) -> bool {
        if env.failed().load(Ordering::SeqCst) {
            // Memory may be ahead of the media (a failed commit, or an operation that
            // could not finish): nothing more may be written.
            return false;
        }
        if !env.may_commit() {
            // Another host took the writer role: this mount writes nothing more (the
            // lease logged it); memory is now ahead of the media, so it stays failed.
            env.failed().store(true, Ordering::SeqCst);
            return false;
        }
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
        let mut touched = BTreeSet::new();
        for m in members {
            touched.extend(touches(m));
        }
        // The images are taken now, after every member's allocations, with every member's
        // frees shown free (the allocator sees them free only after the checkpoint).
        let mut bitmaps = lock(&self.bitmaps);
        bitmaps.clear();
        if !touched.is_empty() {
            env.bitmap_images(&touched, frees, &mut bitmaps);
        }
        let res = match members {
            [one] if bitmaps.is_empty() => journal.commit_batch(&[&one.txn]),
            [one] => journal.commit_batch(&[&one.txn, &bitmaps]),
            _ => {
                let mut txns: Vec<&Transaction> = members.iter().map(|m| &m.txn).collect();
                txns.push(&bitmaps);
                journal.commit_batch(&txns)
            }
        };
        let seq = match res {
            Ok(seq) => seq,
            Err(e) => {
                env.failed().store(true, Ordering::SeqCst);
                eprintln!("daxfs: journal commit failed: {e}; the filesystem is now read-only until remounted");
                return false;
            }
        };
        env.committed(seq);
        let wrote = !bitmaps.is_empty() || members.iter().any(|m| !m.txn.is_empty());
        drop(bitmaps);
        env.count_commit(wrote, members.len() as u64);
        if !frees.is_empty() {
            if journal.checkpoint().is_err() {
                env.failed().store(true, Ordering::SeqCst);
                return false;
            }
            env.free_blocks(frees, seq);
        }
        if members.iter().any(|m| !m.freed_inos.is_empty()) {
            env.free_inodes(&mut members.iter().flat_map(|m| m.freed_inos.iter().copied()));
        }
        true
    }

    /// Test hook: the next commit that leads first waits until `queued` transactions,
    /// its own included, are there (or `at_most` has passed, so that a test that
    /// miscounts fails its assertions instead of hanging). Lets a test build a batch of a
    /// known size, or keep a transaction in flight, without relying on timing.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn hold_next_commit(&self, queued: usize, at_most: Duration) {
        lock(&self.q).hold_for = at_most;
        self.hold.store(queued, Ordering::Relaxed);
    }

    /// Test hook: transactions queued for the next journal commit (in flight: their
    /// changes are in memory, not yet durable).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn queued_commits(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}
