//! Cross-host block lifetimes (issue 13; docs/DESIGN.md "Several hosts").
//!
//! A follower host reads the filesystem as of the journal sequence it has applied, and
//! a read in progress keeps reading the blocks it found at the sequence it started at.
//! The writer must not hand a block freed by transaction S back to the allocator while
//! a follower could still read it: only once every *live* follower slot of the host
//! table has `applied_seq >= S` (its view no longer maps the block) and
//! `held_seq >= S` (no read that started before S is still running). A follower whose
//! heartbeat stood still for the host timeout is presumed gone and holds nothing, so
//! it cannot block the writer forever.
//!
//! The gate sits between the commit leader's "these frees are durable" and the
//! allocator: [`HostGate::hold`] keeps them back (in sequence order) when followers are
//! present, [`HostGate::drain`] hands back those every follower is past. Unlink and
//! truncate never wait for it; the allocator drains on allocation and its bounded
//! ENOSPC wait polls it (`DaxFs::wait_for_orphan_free`). The on-media bitmap shows
//! held-back blocks free as soon as their free is durable (`DaxFs::bitmap_images`
//! passes [`HostGate::held_ranges`] as freed), so a crash or an unmount never leaks
//! them and fsck finds the bitmap matching the extent maps.
//!
//! Cost without followers: the heartbeat thread keeps `present` (any follower slot
//! claimed) up to date, so a commit's free path pays one atomic load and the allocator
//! one more (`holding`). A follower that has just claimed a slot is seen at the
//! writer's next heartbeat: it must wait until the lease heartbeat has changed twice
//! (the writer scans the table before each increment) before it reads anything.

use daxfs_format::hosts::{HeartbeatWatch, HostTable, SLOTS};
use daxfs_pmem::Device;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The writer's view of the followers and the frees it holds back for them.
pub(crate) struct HostGate {
    /// The device whose host table is read; None on a mount without one (read-only,
    /// a version 1 image until it is upgraded): the gate then holds nothing.
    dev: Option<Arc<Device>>,
    /// Some follower slot is claimed (kept by [`observe`](Self::observe)).
    present: AtomicBool,
    /// Per slot, the owner id presumed dead (its heartbeat stood still for the
    /// timeout); 0: none. A slot counts as dead only while that owner still holds it.
    dead: [AtomicU64; SLOTS],
    /// Frees held back, in sequence order: (journal sequence of the freeing
    /// transaction, data-area block range).
    held: Mutex<VecDeque<(u64, Range<u64>)>>,
    /// `held.len()`, read without the mutex.
    held_count: AtomicU64,
    /// Heartbeat ticks observed so far: a drain only re-reads the table when it moved.
    ticks: AtomicU64,
    drained_at: AtomicU64,
}

/// The heartbeat thread's per-slot liveness watches.
#[derive(Default)]
pub(crate) struct Watches {
    slots: [Option<(u64, HeartbeatWatch)>; SLOTS],
}

impl HostGate {
    pub(crate) fn new(dev: Option<Arc<Device>>) -> HostGate {
        HostGate {
            dev,
            present: AtomicBool::new(false),
            dead: std::array::from_fn(|_| AtomicU64::new(0)),
            held: Mutex::new(VecDeque::new()),
            held_count: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            drained_at: AtomicU64::new(u64::MAX),
        }
    }

    /// Frees are held back (so the allocator must drain before it gives up).
    #[inline]
    pub(crate) fn holding(&self) -> bool {
        self.held_count.load(Ordering::Acquire) != 0
    }

    /// The lowest sequence every live follower is past: min over live slots of
    /// min(applied_seq, held_seq); u64::MAX when no follower is live.
    fn safe_seq(&self, t: &HostTable<'_>) -> u64 {
        let mut safe = u64::MAX;
        for (i, h) in t.hosts() {
            let owner = h.owner();
            if owner == 0 || self.dead[i].load(Ordering::Acquire) == owner {
                continue;
            }
            safe = safe.min(h.applied_seq()).min(h.held_seq());
        }
        safe
    }

    /// After the transaction with sequence `seq`, which freed `frees`, is durable and
    /// checkpointed: true if the gate keeps them (a live follower may still read them),
    /// false if the caller gives them to the allocator now.
    pub(crate) fn hold(&self, seq: u64, frees: &[Range<u64>]) -> bool {
        // The whole cost on a device without followers: this load.
        if !self.present.load(Ordering::Acquire) {
            return false;
        }
        let Some(t) = self.table() else { return false };
        if seq <= self.safe_seq(&t) {
            return false;
        }
        let mut held = lock(&self.held);
        held.extend(frees.iter().map(|r| (seq, r.clone())));
        self.held_count.store(held.len() as u64, Ordering::Release);
        true
    }

    /// Hands the held-back frees every live follower is past to `free` (the allocator;
    /// the caller holds its lock). Re-reads the table only once per heartbeat tick
    /// unless `force`. Returns whether anything was handed back.
    pub(crate) fn drain(&self, force: bool, mut free: impl FnMut(Range<u64>)) -> bool {
        if !self.holding() {
            return false;
        }
        let tick = self.ticks.load(Ordering::Acquire);
        if !force && self.drained_at.swap(tick, Ordering::AcqRel) == tick {
            return false;
        }
        let Some(t) = self.table() else { return false };
        let safe = self.safe_seq(&t);
        let mut held = lock(&self.held);
        let mut any = false;
        while held.front().is_some_and(|(seq, _)| *seq <= safe) {
            if let Some((_, r)) = held.pop_front() {
                free(r);
                any = true;
            }
        }
        self.held_count.store(held.len() as u64, Ordering::Release);
        any
    }

    /// Appends every held-back range to `out` (they are free on media).
    pub(crate) fn held_ranges(&self, out: &mut Vec<Range<u64>>) {
        if self.holding() {
            out.extend(lock(&self.held).iter().map(|(_, r)| r.clone()));
        }
    }

    /// Blocks held back now (for tests and stats).
    pub(crate) fn held_blocks(&self) -> u64 {
        lock(&self.held).iter().map(|(_, r)| r.end - r.start).sum()
    }

    fn table(&self) -> Option<HostTable<'_>> {
        HostTable::on_device(self.dev.as_deref()?).ok()
    }

    /// One scan of the follower slots by the heartbeat thread at `now`: which are
    /// claimed, which are dead (silent for `timeout`).
    pub(crate) fn observe(&self, w: &mut Watches, now: Instant, timeout: Duration) {
        let Some(t) = self.table() else { return };
        let mut present = false;
        for (i, h) in t.hosts() {
            let owner = h.owner();
            if owner == 0 {
                w.slots[i] = None;
                self.dead[i].store(0, Ordering::Release);
                continue;
            }
            present = true;
            let beat = h.heartbeat();
            let alive = match &mut w.slots[i] {
                Some((o, watch)) if *o == owner => watch.observe(beat, now, timeout),
                slot => {
                    // A new holder: alive until it has stood still for a whole timeout.
                    *slot = Some((owner, HeartbeatWatch::new(beat, now)));
                    true
                }
            };
            let dead = if alive { 0 } else { owner };
            if self.dead[i].swap(dead, Ordering::AcqRel) != dead && dead != 0 {
                log::warn!(
                    "host slot {i} (pid {}) stopped heartbeating: presumed gone, it no longer holds blocks",
                    h.pid()
                );
            }
        }
        self.present.store(present, Ordering::Release);
        self.ticks.fetch_add(1, Ordering::AcqRel);
    }
}
