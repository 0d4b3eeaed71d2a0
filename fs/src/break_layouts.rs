//! break_layouts (docs/DESIGN.md, "Pins and break_layouts"): before an operation takes blocks away from a file
//! (truncate down, fallocate punch / zero / collapse / insert), wait until no block of the
//! affected range is pinned, without holding the inode's locks while asleep.
//!
//! Locks: every inode has a layout lock (`Inode::layout`, the kernel's MMAPLOCK) taken
//! before its state lock (`Inode::st`). Long-term pins (ioctl pins, pinned mappings) take
//! both shared; in-flight reads and writes pin only under `st`, for the copy. So with both
//! locks held exclusively, every reference above 1 on the file's blocks belongs to a
//! long-term pin, and no new pin of any kind can start.
//!
//! [`DaxFs::break_layouts`] takes both exclusively and scans the range; while it finds a
//! busy block it signals a lease break, drops both locks, sleeps on the block (futex, no
//! polling) until the count drains to 1 or `layout_timeout` passes, retakes the locks and
//! rescans from the start (pins may have started while the locks were dropped, and the
//! range itself may have moved). The lease break flags the pins of the range for their
//! holders (`DaxFs::break_pins`, which also tells the FUSE adapter); once the mount's
//! `lease_break_time` has passed (at the latest at `layout_timeout`), the next pass
//! revokes the revocable ones under the locks and rescans at once, so only unbreakable
//! pins (CAP_SYS_ADMIN holders, the library's mappings) can make it fail. It returns the locks only after a full pass under them
//! found nothing busy: the caller then unmaps and frees in the same transaction as the
//! extent change, with no window for a pin to start in between. A timeout is EBUSY before
//! anything changed.
//!
//! Where the kernel may cache the file's data (dax=never, or dax=inode without
//! FS_XFLAG_DAX), a successful break also asks the kernel to drop its cached pages of the
//! range through the adapter's [`CacheInvalidator`]. It is sent once nothing is busy, so a
//! read during the wait cannot re-cache data that is about to be freed afterwards.
//!
//! [`Wait::Never`] makes the first busy block fail the call with [`WOULD_WAIT`] instead,
//! before anything changed and without counting a lease break: the FUSE adapter tries
//! every request that may wait that way on its worker thread and hands only those that
//! would sleep to a waiter thread (`deferred.rs`), which repeats them with [`Wait::Block`].

use crate::error::{Errno, Result};
use crate::filesystem::{rlock, wlock, DaxFs, Inode, InodeState};
use crate::types::DaxMode;
use daxfs_format::{BLOCK_SIZE, IFLAG_DAX};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLockWriteGuard};
use std::time::Instant;

/// Drops the kernel's cached data of inode `ino`, bytes `offset..offset+len` (`len` 0: to
/// the end of the file; `offset` u64::MAX: only its cached attributes). Must not block on the filesystem: it is called with the inode's
/// locks held (the FUSE adapter queues the notification to another thread).
pub type CacheInvalidator = Arc<dyn Fn(u64, u64, u64) + Send + Sync>;

/// The exclusive layout lock, held by the caller of [`DaxFs::break_layouts`] until its
/// change is committed.
pub(crate) type LayoutGuard<'a> = RwLockWriteGuard<'a, ()>;

/// Whether an operation that breaks layouts may sleep until pins drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Sleep (locks dropped) up to `layout_timeout`.
    Block,
    /// Fail with [`WOULD_WAIT`] at the first busy block, nothing changed.
    Never,
}

/// The error of a [`Wait::Never`] call that would have slept. Nothing else in the core
/// returns EWOULDBLOCK, so [`would_wait`] can tell it apart.
pub(crate) const WOULD_WAIT: Errno = Errno(libc::EWOULDBLOCK);

/// The result of a [`Wait::Never`] call as the public `try_*` functions give it: None
/// when it would have slept on a pin (nothing changed).
pub(crate) fn would_wait<T>(r: Result<T>) -> Option<Result<T>> {
    match r {
        Err(e) if e == WOULD_WAIT => None,
        r => Some(r),
    }
}

impl DaxFs {
    /// Installs (or removes) the hook that drops the kernel's cached pages of a range.
    pub fn set_cache_invalidator(&self, f: Option<CacheInvalidator>) {
        *wlock(&self.cache_inval) = f;
    }

    /// Tells the kernel (through the cache invalidator) to drop the attributes it caches
    /// for `ino`: daxfs changed them on its own, not in answer to a request that brings
    /// them back (atime on read, set-id bits cleared by a write).
    pub(crate) fn attrs_changed(&self, ino: u64) {
        if let Some(inval) = rlock(&self.cache_inval).as_ref() {
            inval(ino, u64::MAX, 0);
        }
    }

    /// Whether the kernel may cache this inode's data (decided from the state, for
    /// callers that hold its lock).
    pub(crate) fn cache_used(&self, st: &InodeState) -> bool {
        match self.opts.dax {
            DaxMode::Always => false,
            DaxMode::Never => true,
            DaxMode::Inode => st.d.flags & IFLAG_DAX == 0,
        }
    }

    /// The first busy block (data-area index, count above 1) mapped in logical range `r`.
    fn first_busy(&self, st: &InodeState, r: &Range<u64>) -> Option<u64> {
        let mut lb = r.start;
        while let Some(e) = st.ext.find_or_next(lb) {
            if e.lblk >= r.end {
                break;
            }
            for l in e.lblk.max(r.start)..e.end().min(r.end) {
                let b = e.pblk + (l - e.lblk) - self.geo.data_start;
                if self.refs.count(b) > 1 {
                    return Some(b);
                }
            }
            lb = e.end();
        }
        None
    }

    /// Takes `inode`'s layout and state locks exclusively and returns them once no block of
    /// the logical block range `range(state)` is pinned (see the module docs; None: nothing
    /// to break). `range` is evaluated again after every wait, on the state as it then is.
    /// EBUSY after `layout_timeout` with nothing changed; [`WOULD_WAIT`] at once under
    /// [`Wait::Never`].
    pub(crate) fn break_layouts<'a>(
        &self,
        inode: &'a Inode,
        wait: Wait,
        range: impl Fn(&InodeState) -> Option<Range<u64>>,
    ) -> Result<(LayoutGuard<'a>, RwLockWriteGuard<'a, InodeState>)> {
        let deadline = Instant::now() + self.opts.layout_timeout;
        let mut waited = false;
        // When revocable pins are revoked: `lease_break_time` after the break first met
        // a busy block, and never after `layout_timeout` (a revocable pin must not make
        // the operation fail).
        let mut revoke_at: Option<Instant> = None;
        // The wait reached `layout_timeout`: one more pass (which revokes what may be
        // revoked), then EBUSY if anything is still busy.
        let mut final_pass = false;
        loop {
            let layout = wlock(&inode.layout);
            let st = wlock(&inode.st);
            let Some(r) = range(&st) else {
                return Ok((layout, st));
            };
            let mut busy = self.first_busy(&st, &r);
            // Before the lease break flags any pin: a request that may not wait gives up
            // with nothing changed, and its retry on a waiter thread breaks the lease.
            if busy.is_some() && wait == Wait::Never {
                return Err(WOULD_WAIT);
            }
            // Revocable pins still held after this pass's lease break.
            let mut revocable = 0;
            if busy.is_some() {
                let now = Instant::now();
                let at = *revoke_at.get_or_insert_with(|| {
                    now.checked_add(self.opts.pins.lease_break_time)
                        .map_or(deadline, |t| t.min(deadline))
                });
                let revoked;
                (revoked, revocable) = self.break_pins(inode, &r, now >= at);
                if revoked > 0 {
                    // Under the same locks: nothing new can have been pinned.
                    busy = self.first_busy(&st, &r);
                }
            }
            let Some(busy) = busy else {
                if self.cache_used(&st) {
                    self.invalidate_cached(inode.ino, &r);
                }
                return Ok((layout, st));
            };
            if final_pass {
                return Err(Errno::EBUSY);
            }
            if !waited {
                self.stats.layout_breaks.fetch_add(1, Ordering::Relaxed);
                waited = true;
            }
            // The lease break: holders of long-term pins on this inode can see it
            // (PinnedMapping::layout_broken) and are expected to let go.
            inode.lease_breaks.fetch_add(1, Ordering::SeqCst);
            self.stats.lease_breaks.fetch_add(1, Ordering::Relaxed);
            drop(st);
            drop(layout);
            // Wake up at the revocation time when there is a revocable pin to revoke.
            let until = match revoke_at {
                Some(at) if revocable > 0 && at < deadline => at,
                _ => deadline,
            };
            if !self.refs.wait_idle(busy, Some(until)) && until == deadline {
                final_pass = true;
            }
        }
    }

    /// Asks the kernel to drop its cached pages of logical block range `r` of `ino`.
    pub fn invalidate_cached(&self, ino: u64, r: &Range<u64>) {
        let Some(f) = rlock(&self.cache_inval).clone() else {
            return;
        };
        let offset = r.start.saturating_mul(BLOCK_SIZE);
        let len = match r.end.checked_mul(BLOCK_SIZE) {
            Some(e) if e < i64::MAX as u64 => e - offset,
            _ => 0, // to the end of the file
        };
        f(ino, offset, len);
    }

    /// The check made with the locks held right before blocks `start..end` (logical) are
    /// freed. After [`break_layouts`](Self::break_layouts), or on a file that nothing can
    /// pin (no open handle, no mapping), nothing can be busy: a busy block here is a pin
    /// that escaped the layout lock. It is counted as a violation and the change refused
    /// (EBUSY) rather than freeing a block that is in use.
    pub(crate) fn check_layout_idle(&self, st: &InodeState, start: u64, end: u64) -> Result<()> {
        match self.first_busy(st, &(start..end)) {
            None => Ok(()),
            Some(_) => {
                self.refs.note_violation();
                Err(Errno::EBUSY)
            }
        }
    }
}
