//! Follower mode (`-o follow`, docs/DESIGN.md "Followers"): a read-only view of a device
//! that another host's live writer keeps changing.
//!
//! A follower never takes the writer's lock, replays nothing and writes nothing (but, with
//! the host table, its own host slot). It reads the writer's journal through a
//! [`LogCursor`]: every refresh (a thread, every `follow_interval`, and
//! [`DaxFs::follow_sync`]) takes the transactions committed since its view and reloads the
//! metadata through an *overlay* of their records. The overlay is what makes the view
//! consistent: the writer applies a committed transaction's records home only after the
//! whole transaction is durable in the log, so the bytes at home may be half-applied for
//! the newest transaction, but never for one the log does not hold yet. Reading home bytes
//! with the newest transactions' records laid over them gives exactly the state after them
//! — provided no later transaction started its home writes meanwhile, which the cursor
//! tells (a later transaction in the log). Then the load is repeated with it in the
//! overlay, a few rounds; a writer that keeps moving faster than that leaves the old view
//! in place until the next refresh.
//!
//! Each view is installed whole: inodes whose on-media record did not change keep their
//! in-memory inode (open handles, lookup counts); changed ones are updated in place when
//! their generation is the same, replaced (the old one dead: ENOENT) when the writer reused
//! the number for a new file. The changes go to the FUSE adapter ([`FollowChange`]), which
//! invalidates the kernel's caches for them.
//!
//! Reads of file data hold a [`ReadGuard`] while they copy: it records the sequence of the
//! view the read uses (`held_seq`, the lowest such), so that the writer's host gate keeps
//! the blocks that view maps from being reused for another file mid-read.

use crate::filesystem::DaxFs;
use crate::inode::{lock, rlock, wlock, Inode};
use crate::mount_error::{CorruptError, MountError};
use daxfs_alloc::FreeSpace;
use daxfs_format::hosts::{HostSlot, HostTable, HOLDS_NOTHING, LEASE_HELD};
use daxfs_format::{Superblock, BLOCK_SIZE, SB_SIZE};
use daxfs_journal::{CommittedTxn, JournalError, LogCursor, Poll};
use daxfs_pmem::{AccessError, Device, Media};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

/// Transactions taken from the log per poll.
const POLL_BATCH: usize = 4096;
/// Loads tried per refresh while the writer keeps committing under them.
const ROUNDS: usize = 4;
/// A writer silent this long may have changed what the log does not say (a writer that
/// remounted); the follower then reloads everything once.
const SILENCE_RELOAD: Duration = Duration::from_secs(5);

/// What changed in a refresh, for the kernel's caches: node ids are made of (ino,
/// generation) by the adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FollowChange {
    /// The inode's attributes or contents changed, or it is gone (that generation).
    Inode { ino: u64, generation: u64 },
    /// `name` in directory `parent` was added, removed or now names another inode.
    Entry {
        parent: u64,
        parent_generation: u64,
        name: Vec<u8>,
    },
}

/// The hook a refresh reports its changes to (the FUSE adapter's invalidation).
pub type FollowNotifier = Arc<dyn Fn(&[FollowChange]) + Send + Sync>;

/// Counters and positions of a follower, for `daxfs stats`, `daxfs sync` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FollowStatus {
    /// Journal sequence the view reflects (0: the state as the first load found it).
    pub applied_seq: u64,
    /// Lowest view sequence an in-progress read still uses (u64::MAX: none).
    pub held_seq: u64,
    /// Views installed, full reloads among them (lapped cursor, silence), refreshes that
    /// kept the old view because the writer kept moving.
    pub views: u64,
    pub full_reloads: u64,
    pub gave_up: u64,
}

/// Byte ranges laid over the device's metadata: non-overlapping, by start offset.
#[derive(Default)]
struct Overlay {
    ranges: BTreeMap<u64, Vec<u8>>,
}

impl Overlay {
    fn insert(&mut self, off: u64, data: &[u8]) {
        let end = off + data.len() as u64;
        let mut start = off;
        let mut stop = end;
        // Ranges overlapping [off, end): merged into one.
        let hit: Vec<u64> = self
            .ranges
            .range(..end)
            .rev()
            .take_while(|(s, d)| **s + d.len() as u64 > off)
            .map(|(s, _)| *s)
            .collect();
        let mut old = Vec::new();
        for s in hit {
            if let Some(d) = self.ranges.remove(&s) {
                start = start.min(s);
                stop = stop.max(s + d.len() as u64);
                old.push((s, d));
            }
        }
        let mut buf = vec![0u8; (stop - start) as usize];
        for (s, d) in old {
            let o = (s - start) as usize;
            buf[o..o + d.len()].copy_from_slice(&d);
        }
        let o = (off - start) as usize;
        buf[o..o + data.len()].copy_from_slice(data);
        self.ranges.insert(start, buf);
    }

    fn apply(&self, off: u64, buf: &mut [u8]) {
        let end = off + buf.len() as u64;
        for (&s, d) in self.ranges.range(..end).rev() {
            let e = s + d.len() as u64;
            if e <= off {
                // Ranges do not overlap, so one ending before `off` ends the walk.
                break;
            }
            let from = s.max(off);
            let to = e.min(end);
            buf[(from - off) as usize..(to - off) as usize]
                .copy_from_slice(&d[(from - s) as usize..(to - s) as usize]);
        }
    }
}

struct CursorState {
    cursor: LogCursor,
    /// Transactions taken from the log but not in the installed view yet.
    pending: Vec<CommittedTxn>,
    /// The newest transaction of the installed view: its home writes may still be under
    /// way, so it stays in the overlay of the next load.
    newest: Option<CommittedTxn>,
    last_change: Instant,
}

/// The follower's slot in the host table (docs/FORMAT.md "Host table"): the only bytes it
/// ever writes on the device.
struct HostSlotRef {
    dev: Arc<Device>,
    index: usize,
    owner: u64,
}

impl HostSlotRef {
    fn with(&self, f: impl FnOnce(HostSlot<'_>) -> Result<(), AccessError>) {
        let slot = HostTable::on_device(&self.dev)
            .ok()
            .and_then(|t| t.host(self.index));
        if let Some(h) = slot {
            // The slot is ours (claimed by CAS); a store cannot fail but on a device
            // gone read-only, and then there is nothing better to do.
            let _ = f(h);
        }
    }
}

/// A live writer scans the host table before each heartbeat increment (host_gate.rs):
/// once its heartbeat has moved twice after the claim, it knows this follower and holds
/// back what it frees. Nothing is read before that (at most `timeout`; no live writer:
/// no wait).
fn wait_until_seen(dev: &Device, timeout: Duration) {
    let Ok(t) = HostTable::on_device(dev) else {
        return;
    };
    let lease = t.lease();
    if lease.state() != LEASE_HELD {
        return;
    }
    let start = lease.heartbeat();
    let deadline = Instant::now() + timeout;
    while lease.heartbeat().wrapping_sub(start) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub(crate) struct Follower {
    /// Always claimed by a mounted follower ([`Follower::new`] refuses the mount
    /// otherwise); None only once released.
    slot: Option<HostSlotRef>,
    state: Mutex<CursorState>,
    overlay: RwLock<Overlay>,
    /// Sequences of the views reads in progress use, with their counts; also serialises
    /// publishing `applied`/`held` (see [`ReadGuard`]).
    readers: Mutex<BTreeMap<u64, usize>>,
    applied: AtomicU64,
    held: AtomicU64,
    views: AtomicU64,
    full_reloads: AtomicU64,
    gave_up: AtomicU64,
    notifier: RwLock<Option<FollowNotifier>>,
    /// Blocks that left the view while a read still pinned them: unmapped later.
    unmap_later: Mutex<Vec<u64>>,
    /// Stall detection (docs/DESIGN.md "Followers", "Stalls"): the writer presumes a
    /// follower silent for `host_timeout` dead and may reuse the blocks its reads copy.
    /// `last_beat` is when the heartbeat thread last bumped the slot (nanoseconds since
    /// `beat_base`, +1; 0 = no heartbeat thread, nothing tracked).
    host_timeout: Duration,
    beat_base: Instant,
    last_beat: AtomicU64,
    /// Added to the heartbeat's age: a test hook (`follow_test_age_heartbeat`).
    beat_skew: AtomicU64,
    /// Bumped when a stall is seen: a read that started before fails.
    stall_epoch: AtomicU64,
    /// The view may be stale (a stall): reloaded whole before the next read.
    reload_needed: AtomicBool,
    /// Test hook: the heartbeat thread skips its beats.
    beat_paused: AtomicBool,
}

impl Follower {
    /// Opens the log cursor and claims a host slot. A follower the writer cannot see
    /// would read blocks the writer may reuse, so without a slot (the table is full, or
    /// the device was opened read-only and the slot cannot be written) the mount is
    /// refused.
    pub(crate) fn new(
        dev: &Arc<Device>,
        start: u64,
        len: u64,
        host_timeout: Duration,
    ) -> Result<Follower, MountError> {
        let device = || dev.path().to_path_buf();
        let media: Arc<dyn Media> = dev.clone();
        // The cursor first: a slot claimed before a failed open would stay claimed.
        let cursor = LogCursor::open(media, start, len).map_err(|source| MountError::Journal {
            device: device(),
            source,
        })?;
        if !dev.writable() {
            return Err(MountError::NoHostSlot {
                device: device(),
                table_full: false,
            });
        }
        let owner = crate::lease::random_id();
        let index = HostTable::on_device(dev)
            .ok()
            .and_then(|t| t.claim_host_slot(owner))
            .ok_or_else(|| MountError::NoHostSlot {
                device: device(),
                table_full: true,
            })?;
        let s = HostSlotRef {
            dev: dev.clone(),
            index,
            owner,
        };
        s.with(|h| {
            h.set_pid_flags(std::process::id(), 0)?;
            // Nothing loaded yet: hold everything until the first view is in.
            h.set_held_seq(0)
        });
        wait_until_seen(dev, host_timeout);
        let slot = Some(s);
        Ok(Follower {
            slot,
            state: Mutex::new(CursorState {
                cursor,
                pending: Vec::new(),
                newest: None,
                last_change: Instant::now(),
            }),
            overlay: RwLock::new(Overlay::default()),
            readers: Mutex::new(BTreeMap::new()),
            applied: AtomicU64::new(0),
            held: AtomicU64::new(u64::MAX),
            views: AtomicU64::new(0),
            full_reloads: AtomicU64::new(0),
            gave_up: AtomicU64::new(0),
            notifier: RwLock::new(None),
            unmap_later: Mutex::new(Vec::new()),
            host_timeout,
            beat_base: Instant::now(),
            last_beat: AtomicU64::new(0),
            beat_skew: AtomicU64::new(0),
            stall_epoch: AtomicU64::new(0),
            reload_needed: AtomicBool::new(false),
            beat_paused: AtomicBool::new(false),
        })
    }

    fn now_nanos(&self) -> u64 {
        (self.beat_base.elapsed().as_nanos() as u64).saturating_add(1)
    }

    /// How long ago the heartbeat thread last bumped the slot (None: no heartbeat
    /// thread, nothing tracked).
    fn beat_age(&self) -> Option<Duration> {
        let last = self.last_beat.load(Ordering::SeqCst);
        if last == 0 {
            return None;
        }
        let age = self.now_nanos().saturating_sub(last);
        Some(Duration::from_nanos(
            age.saturating_add(self.beat_skew.load(Ordering::SeqCst)),
        ))
    }

    /// Past this age the writer may soon presume this follower dead: half the timeout,
    /// so the writer (which waits the whole timeout of its own clock) cannot have reused
    /// a block before a read finds out.
    fn stall_limit(&self) -> Duration {
        self.host_timeout / 2
    }

    fn stalled(&self) -> bool {
        self.beat_age().is_some_and(|a| a > self.stall_limit())
    }

    /// A stall: reads in flight fail, the view is reloaded whole before the next read.
    fn note_stall(&self) {
        self.stall_epoch.fetch_add(1, Ordering::SeqCst);
        self.reload_needed.store(true, Ordering::SeqCst);
    }

    /// One beat of the heartbeat thread. A gap since the previous beat longer than the
    /// stall limit (the process was stopped, the thread not scheduled) is a stall: the
    /// epoch moves and the view is reloaded, before the slot says "alive" again.
    fn beat(&self, n: u64) {
        if self.beat_paused.load(Ordering::SeqCst) {
            return;
        }
        if self.stalled() {
            log::warn!(
                "follower: heartbeat stalled longer than {:?}; reads in flight fail with EIO \
                 and the view is reloaded",
                self.stall_limit()
            );
            self.note_stall();
        }
        self.heartbeat(n);
        self.last_beat.store(self.now_nanos(), Ordering::SeqCst);
        self.beat_skew.store(0, Ordering::SeqCst);
    }

    pub(crate) fn overlay_onto(&self, off: u64, buf: &mut [u8]) {
        rlock(&self.overlay).apply(off, buf);
    }

    fn set_overlay<'a>(&self, txns: impl Iterator<Item = &'a CommittedTxn>) {
        let mut o = Overlay::default();
        for t in txns {
            for (off, data) in &t.records {
                o.insert(*off, data);
            }
        }
        *wlock(&self.overlay) = o;
    }

    /// Publishes a newly installed view: held first, then applied, both under the
    /// readers' lock, so the writer never sees the new applied_seq with a held_seq that
    /// forgets a read of the old view (host_gate.rs).
    fn publish(&self, applied: u64) {
        let readers = lock(&self.readers);
        let held = readers.keys().next().copied().unwrap_or(HOLDS_NOTHING);
        self.store_held(held);
        self.applied.store(applied, Ordering::Release);
        if let Some(s) = &self.slot {
            s.with(|h| h.set_applied_seq(applied));
        }
    }

    /// Called with the readers' lock held.
    fn store_held(&self, held: u64) {
        self.held.store(held, Ordering::Release);
        if let Some(s) = &self.slot {
            s.with(|h| h.set_held_seq(held));
        }
    }

    fn heartbeat(&self, n: u64) {
        if let Some(s) = &self.slot {
            s.with(|h| h.set_heartbeat(n));
        }
    }

    /// The writer's committed_seq as its lease slot says now (0: no writer).
    fn writer_committed(&self) -> u64 {
        let Some(s) = &self.slot else { return 0 };
        HostTable::on_device(&s.dev)
            .map(|t| t.lease().committed_seq())
            .unwrap_or(0)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(s) = &self.slot {
            if let Ok(t) = HostTable::on_device(&s.dev) {
                t.release_host_slot(s.index, s.owner);
            }
        }
    }
}

/// Held by a read of file data on a follower while it copies (see the module doc).
pub(crate) struct ReadGuard<'a> {
    f: Option<&'a Follower>,
    seq: u64,
    /// The stall epoch when the read started.
    epoch: u64,
}

impl ReadGuard<'_> {
    /// After the copy, before the bytes are handed out: EIO if the follower stalled
    /// meanwhile (or its heartbeat is about to look dead), since the writer may have
    /// reused the blocks copied for another file. The view is then reloaded whole before
    /// the next read.
    pub(crate) fn check(&self) -> crate::Result<()> {
        let Some(f) = self.f else { return Ok(()) };
        if f.stalled() || f.stall_epoch.load(Ordering::SeqCst) != self.epoch {
            f.reload_needed.store(true, Ordering::SeqCst);
            log::warn!("follower: a read overlapped a stall: EIO");
            return Err(crate::Errno::EIO);
        }
        Ok(())
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        let Some(f) = self.f else { return };
        let mut r = lock(&f.readers);
        if let Some(n) = r.get_mut(&self.seq) {
            *n -= 1;
            if *n == 0 {
                r.remove(&self.seq);
            }
        }
        let held = r.keys().next().copied().unwrap_or(HOLDS_NOTHING);
        f.store_held(held);
    }
}

/// What one refresh did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// Nothing new in the log.
    CaughtUp,
    /// A new view was installed.
    Installed,
    /// The writer kept moving: the old view stays.
    GaveUp,
}

/// The next sequence after a view ending with `newest` (or the cursor's).
fn applied_of(c: &CursorState) -> u64 {
    c.newest
        .as_ref()
        .map_or(c.cursor.next_seq().saturating_sub(1), |t| t.seq)
}

impl DaxFs {
    /// Whether this is a follower mount (`-o follow`).
    pub fn is_follower(&self) -> bool {
        self.follower.is_some()
    }

    /// A follower's positions and counters (None on other mounts).
    pub fn follow_status(&self) -> Option<FollowStatus> {
        let f = self.follower.as_ref()?;
        Some(FollowStatus {
            applied_seq: f.applied.load(Ordering::Acquire),
            held_seq: f.held.load(Ordering::Acquire),
            views: f.views.load(Ordering::Relaxed),
            full_reloads: f.full_reloads.load(Ordering::Relaxed),
            gave_up: f.gave_up.load(Ordering::Relaxed),
        })
    }

    /// Whether `ino` is still the file the kernel was given as (`ino`, `generation`):
    /// ESTALE when the number now names another file (a writer, or a follower's writer,
    /// freed it and reused it), ENOENT when it names none. The FUSE adapter checks every
    /// node id it is sent (docs/DESIGN.md "Followers").
    pub fn check_generation(&self, ino: u64, generation: u32) -> crate::Result<()> {
        let inode = self.inode(ino)?;
        let st = rlock(&inode.st);
        if st.dead {
            return Err(crate::Errno::ENOENT);
        }
        if st.d.generation != generation {
            return Err(crate::Errno(libc::ESTALE));
        }
        Ok(())
    }

    /// Installs (or removes) the hook a follower's refreshes report changes to.
    pub fn set_follow_notifier(&self, n: Option<FollowNotifier>) {
        if let Some(f) = &self.follower {
            *wlock(&f.notifier) = n;
        }
    }

    /// A guard for a read of file data (does nothing but on a follower). After a stall
    /// the view is reloaded whole first; EIO while the follower is stalled or the reload
    /// fails.
    pub(crate) fn read_guard(&self) -> crate::Result<ReadGuard<'_>> {
        let Some(f) = &self.follower else {
            return Ok(ReadGuard {
                f: None,
                seq: 0,
                epoch: 0,
            });
        };
        if f.reload_needed.load(Ordering::SeqCst) {
            self.reload_after_stall(f)?;
        }
        if f.stalled() {
            f.reload_needed.store(true, Ordering::SeqCst);
            return Err(crate::Errno::EIO);
        }
        let epoch = f.stall_epoch.load(Ordering::SeqCst);
        let mut r = lock(&f.readers);
        let seq = f.applied.load(Ordering::Acquire);
        *r.entry(seq).or_insert(0) += 1;
        let held = r.keys().next().copied().unwrap_or(HOLDS_NOTHING);
        // Stored before the read looks anything up (release): the writer's gate sees it
        // before this read can use a block of the view.
        f.store_held(held);
        Ok(ReadGuard {
            f: Some(f),
            seq,
            epoch,
        })
    }

    /// The full reload a stall calls for: the writer may have presumed this follower dead
    /// and reused blocks of its view, so nothing of it is trusted. The writer must see the
    /// slot alive again first (its gate holds nothing for a dead follower).
    fn reload_after_stall(&self, f: &Follower) -> crate::Result<()> {
        let mut c = lock(&f.state);
        if !f.reload_needed.swap(false, Ordering::SeqCst) {
            // Another read did it meanwhile.
            return Ok(());
        }
        if let Some(s) = &f.slot {
            wait_until_seen(&s.dev, f.host_timeout);
        }
        match self.refresh_locked(f, &mut c, true) {
            Ok(Refresh::Installed) => Ok(()),
            r => {
                f.reload_needed.store(true, Ordering::SeqCst);
                if let Err(e) = r {
                    log::warn!("follower reload after a stall: {e}");
                }
                Err(crate::Errno::EIO)
            }
        }
    }

    /// Test hook (feature `test-hooks`): the heartbeat thread stops (true) or resumes (false) bumping the slot,
    /// as if the follower were stopped.
    #[cfg(feature = "test-hooks")]
    pub fn follow_test_pause_heartbeat(&self, paused: bool) {
        if let Some(f) = &self.follower {
            f.beat_paused.store(paused, Ordering::SeqCst);
        }
    }

    /// Test hook (feature `test-hooks`): the last heartbeat looks `by` older than it is (until the next beat).
    #[cfg(feature = "test-hooks")]
    pub fn follow_test_age_heartbeat(&self, by: Duration) {
        if let Some(f) = &self.follower {
            f.beat_skew.store(
                by.as_nanos().min(u128::from(u64::MAX)) as u64,
                Ordering::SeqCst,
            );
        }
    }

    /// Test hook (feature `test-hooks`): a stall is noted (as the heartbeat thread does after a gap).
    #[cfg(feature = "test-hooks")]
    pub fn follow_test_note_stall(&self) {
        if let Some(f) = &self.follower {
            f.note_stall();
        }
    }

    /// The first load of a follower: everything the log still holds is in the overlay.
    pub(crate) fn follow_initial_load(&self) -> Result<(), CorruptError> {
        let Some(f) = &self.follower else {
            return Ok(());
        };
        let mut c = lock(&f.state);
        match self.refresh_locked(f, &mut c, true) {
            Ok(Refresh::GaveUp) | Err(_) => {
                // Still moving, or a log that would not read: load the home state with
                // what was taken, as a plain read-only mount would see it.
                let pending = std::mem::take(&mut c.pending);
                f.set_overlay(pending.iter());
                let t = self.load_tables()?;
                c.newest = pending.last().cloned();
                self.install(f, t, applied_of(&c));
                Ok(())
            }
            Ok(_) => Ok(()),
        }
    }

    /// One refresh of a follower's view (the refresh thread calls it every
    /// `follow_interval`; tests call it directly). Does nothing on other mounts.
    pub fn follow_refresh(&self) -> Result<Refresh, crate::Errno> {
        let Some(f) = &self.follower else {
            return Ok(Refresh::CaughtUp);
        };
        let mut c = lock(&f.state);
        let silent = c.last_change.elapsed() >= SILENCE_RELOAD;
        let stalled = f.reload_needed.swap(false, Ordering::SeqCst);
        if stalled {
            if let Some(s) = &f.slot {
                wait_until_seen(&s.dev, f.host_timeout);
            }
        }
        let r = self.refresh_locked(f, &mut c, silent || stalled);
        if stalled && r.as_ref().map_or(true, |r| *r != Refresh::Installed) {
            f.reload_needed.store(true, Ordering::SeqCst);
        }
        r.map_err(|e| {
            log::warn!("follower refresh: {e}");
            crate::Errno::EIO
        })
    }

    /// Refreshes until the view holds every transaction committed when it was called
    /// (bounded by `timeout`): `daxfs sync` on a follower. Returns the applied sequence.
    pub fn follow_sync(&self, timeout: Duration) -> Result<u64, crate::Errno> {
        let Some(f) = &self.follower else {
            return Ok(0);
        };
        let deadline = Instant::now() + timeout;
        let target = f.writer_committed();
        loop {
            let r = self.follow_refresh()?;
            let applied = f.applied.load(Ordering::Acquire);
            match r {
                // Nothing in the log past the view: everything committed before the call
                // is in it.
                Refresh::CaughtUp if lock(&f.state).pending.is_empty() => return Ok(applied),
                _ if target != 0 && applied >= target => return Ok(applied),
                _ if Instant::now() >= deadline => return Err(crate::Errno(libc::ETIMEDOUT)),
                Refresh::Installed => {}
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    fn refresh_locked(
        &self,
        f: &Follower,
        c: &mut CursorState,
        mut full: bool,
    ) -> Result<Refresh, LoadFailure> {
        if !full {
            match c.cursor.poll(POLL_BATCH)? {
                Poll::Txns(t) => c.pending.extend(t),
                Poll::Lapped => full = true,
            }
            if !full && c.pending.is_empty() {
                return Ok(Refresh::CaughtUp);
            }
        }
        for _ in 0..ROUNDS {
            if full {
                c.cursor.reset()?;
                c.pending.clear();
                c.newest = None;
                match c.cursor.poll(POLL_BATCH)? {
                    Poll::Txns(t) => c.pending = t,
                    Poll::Lapped => continue,
                }
            }
            f.set_overlay(c.newest.iter().chain(c.pending.iter()));
            let loaded = self.load_tables();
            // Did a later transaction begin (and perhaps its home writes) during the load?
            let moved = match c.cursor.poll(POLL_BATCH)? {
                Poll::Txns(t) if t.is_empty() => false,
                Poll::Txns(t) => {
                    c.pending.extend(t);
                    true
                }
                Poll::Lapped => {
                    full = true;
                    true
                }
            };
            if moved {
                continue;
            }
            // A view that does not load while the writer stands still is a real problem
            // (or a writer that is not journaling what it changes): keep the old one.
            let t = loaded?;
            if let Some(last) = c.pending.pop() {
                c.newest = Some(last);
            }
            c.pending.clear();
            c.last_change = Instant::now();
            if full {
                f.full_reloads.fetch_add(1, Ordering::Relaxed);
            }
            self.install(f, t, applied_of(c));
            return Ok(Refresh::Installed);
        }
        f.gave_up.fetch_add(1, Ordering::Relaxed);
        Ok(Refresh::GaveUp)
    }

    /// Swaps a loaded view in, tells the notifier what changed, publishes `applied`.
    fn install(&self, f: &Follower, t: crate::filesystem::LoadedTables, applied: u64) {
        let mut changes = Vec::new();
        let sb = {
            let mut b = [0u8; SB_SIZE];
            self.meta_read(0, &mut b);
            Superblock::decode(&b, self.dev.size()).ok()
        };
        // The new view's blocks are mapped before any inode shows them (a read pins the
        // blocks it copies, and only a mapped block can be pinned); the old view's are
        // unmapped once no inode shows them any more (`unmap_old`).
        self.map_new(&t.used);
        // Per inode, without the table's lock: a reader holding an inode's lock may take
        // the table's (lookup), so the table is locked only to swap it.
        let current: HashMap<u64, Arc<Inode>> = rlock(&self.inodes)
            .values()
            .map(|i| (i.ino, i.clone()))
            .collect();
        let mut next: Vec<(u64, Arc<Inode>)> = Vec::with_capacity(t.inodes.len());
        let mut seen: HashMap<u64, ()> = HashMap::with_capacity(t.inodes.len());
        for (ino, new) in t.inodes {
            seen.insert(ino, ());
            let Some(old) = current.get(&ino).cloned() else {
                changes.push(FollowChange::Inode {
                    ino,
                    generation: u64::from(rlock(&new.st).d.generation),
                });
                next.push((ino, new));
                continue;
            };
            {
                let ost = rlock(&old.st);
                let nst = rlock(&new.st);
                if ost.d == nst.d && ost.ext.len() == nst.ext.len() {
                    drop(ost);
                    next.push((ino, old));
                    continue;
                }
            }
            let mut ost = wlock(&old.st);
            let mut nst = wlock(&new.st);
            let og = u64::from(ost.d.generation);
            changes.push(FollowChange::Inode {
                ino,
                generation: og,
            });
            if let (Some(od), Some(nd)) = (&ost.dir, &nst.dir) {
                for (name, e) in od.iter() {
                    if nd.get(name).map(|n| n.ino) != Some(e.ino) {
                        changes.push(FollowChange::Entry {
                            parent: ino,
                            parent_generation: og,
                            name: name.to_vec(),
                        });
                    }
                }
                for (name, _) in nd.iter() {
                    if od.get(name).is_none() {
                        changes.push(FollowChange::Entry {
                            parent: ino,
                            parent_generation: og,
                            name: name.to_vec(),
                        });
                    }
                }
            }
            if ost.d.generation == nst.d.generation && ost.is_dir() == nst.is_dir() {
                // The same file: updated in place, so handles and lookups carry on.
                std::mem::swap(&mut *ost, &mut *nst);
                drop(nst);
                drop(ost);
                next.push((ino, old));
            } else {
                // The number was reused: the old file is gone for its holders.
                ost.dead = true;
                drop(nst);
                drop(ost);
                next.push((ino, new));
            }
        }
        for (ino, old) in &current {
            if !seen.contains_key(ino) {
                let mut ost = wlock(&old.st);
                changes.push(FollowChange::Inode {
                    ino: *ino,
                    generation: u64::from(ost.d.generation),
                });
                ost.dead = true;
            }
        }
        *wlock(&self.inodes) = next.into_iter().collect();
        self.unmap_old(f, t.used);
        *lock(&self.free_inos) = t.free.into_iter().collect();
        if let Some(sb) = sb {
            *lock(&self.sb) = sb;
        }
        f.views.fetch_add(1, Ordering::Relaxed);
        f.publish(applied);
        if !changes.is_empty() {
            if let Some(n) = rlock(&f.notifier).clone() {
                n(&changes);
            }
        }
    }

    /// Maps the blocks of the new view `used` that the old one did not use (a block
    /// still mapped, waiting in `unmap_later`, stays as it is).
    fn map_new(&self, used: &FreeSpace) {
        let old = lock(&self.space);
        for b in 0..self.geo.data_blocks {
            if used.is_used(b) && !old.is_used(b) && self.refs.count(b) == 0 {
                self.refs.map(b);
            }
        }
    }

    /// Unmaps the blocks of the old view the new one `used` does not use, now that no
    /// inode shows them; one a read still pins is unmapped at a later view.
    fn unmap_old(&self, f: &Follower, used: FreeSpace) {
        let mut later = lock(&f.unmap_later);
        later.retain(|&b| !used.is_used(b) && !self.refs.unmap(b));
        {
            let old = lock(&self.space);
            for b in 0..self.geo.data_blocks {
                if old.is_used(b) && !used.is_used(b) && !later.contains(&b) && !self.refs.unmap(b)
                {
                    later.push(b);
                }
            }
        }
        *lock(&self.space) = used;
    }

    /// Starts the refresh thread of a follower (every `follow_interval`) and its
    /// heartbeat thread (every `heartbeat`: apart, so that a long reload never makes the
    /// follower look dead to the writer); they end when the filesystem is dropped. Does
    /// nothing on other mounts.
    pub fn start_following(fs: &Arc<DaxFs>) {
        if fs.follower.is_none() {
            return;
        }
        if let Some(f) = &fs.follower {
            // From now on a read checks the heartbeat's age (stalls).
            f.last_beat.store(f.now_nanos(), Ordering::SeqCst);
        }
        let weak: Weak<DaxFs> = Arc::downgrade(fs);
        let beat = fs.opts.heartbeat.max(Duration::from_millis(1));
        let _ = std::thread::Builder::new()
            .name("daxfs-follow-hb".into())
            .spawn(move || {
                for n in 1u64.. {
                    std::thread::sleep(beat);
                    let Some(fs) = weak.upgrade() else { return };
                    if let Some(f) = &fs.follower {
                        f.beat(n);
                    }
                }
            });
        let weak: Weak<DaxFs> = Arc::downgrade(fs);
        let every = fs.opts.follow_interval.max(Duration::from_millis(1));
        let _ = std::thread::Builder::new()
            .name("daxfs-follow".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                let Some(fs) = weak.upgrade() else { return };
                let _ = fs.follow_refresh();
            });
    }
}

/// Why a refresh could not produce a view.
#[derive(Debug)]
pub(crate) enum LoadFailure {
    Journal(JournalError),
    Corrupt(CorruptError),
}

impl From<JournalError> for LoadFailure {
    fn from(e: JournalError) -> Self {
        LoadFailure::Journal(e)
    }
}
impl From<CorruptError> for LoadFailure {
    fn from(e: CorruptError) -> Self {
        LoadFailure::Corrupt(e)
    }
}
impl std::fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadFailure::Journal(e) => write!(f, "journal: {e}"),
            LoadFailure::Corrupt(e) => write!(f, "metadata: {e}"),
        }
    }
}

const _: () = assert!(BLOCK_SIZE as usize >= SB_SIZE);

#[cfg(test)]
mod tests {
    use super::Overlay;

    #[test]
    fn overlay_merges_overlapping_writes_with_the_later_one_winning() {
        let mut o = Overlay::default();
        o.insert(10, &[1; 10]);
        o.insert(15, &[2; 10]);
        o.insert(0, &[3; 4]);
        let mut buf = [9u8; 30];
        o.apply(0, &mut buf);
        let mut want = [9u8; 30];
        want[0..4].fill(3);
        want[10..15].fill(1);
        want[15..25].fill(2);
        assert_eq!(buf, want);
        assert_eq!(o.ranges.len(), 2);
        o.insert(2, &[4; 20]);
        let mut buf = [9u8; 30];
        o.apply(0, &mut buf);
        want[2..22].fill(4);
        assert_eq!(buf, want);
        assert_eq!(o.ranges.len(), 1);
    }
}
