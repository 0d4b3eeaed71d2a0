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
//! [`break_layouts`] takes both exclusively and scans the range; while it finds a
//! busy block it signals a lease break, drops both locks, sleeps on the block (futex, no
//! polling) until the count drains to 1 or `layout_timeout` passes, retakes the locks and
//! rescans from the start (pins may have started while the locks were dropped, and the
//! range itself may have moved). The lease break flags the pins of the range for their
//! holders (`LayoutEnv::break_pins`, which also tells the FUSE adapter); once the mount's
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
use crate::inode::{wlock, Inode, InodeState};
use daxfs_alloc::RefTable;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// Drops the kernel's cached data of inode `ino`, bytes `offset..offset+len` (`len` 0: to
/// the end of the file; `offset` u64::MAX: only its cached attributes). Must not block on the filesystem: it is called with the inode's
/// locks held (the FUSE adapter queues the notification to another thread).
pub type CacheInvalidator = Arc<dyn Fn(u64, u64, u64) + Send + Sync>;

/// The exclusive layout lock, held by the caller of [`break_layouts`] until its
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

/// What a layout break needs of the filesystem (which implements it): the block
/// reference counts, the timeouts, the lease break of the pins, the kernel's cache, the
/// counters. Nothing else of the filesystem is touched.
pub(crate) trait LayoutEnv {
    /// Reference counts of the data-area blocks.
    fn refs(&self) -> &RefTable;
    /// Device block number of data-area block 0.
    fn data_start(&self) -> u64;
    /// How long a break waits for pins at most (then EBUSY).
    fn layout_timeout(&self) -> Duration;
    /// How long revocable pins are given to let go before they are revoked.
    fn lease_break_time(&self) -> Duration;
    /// Flags the long-term pins of logical range `r` of `inode` for their holders and,
    /// with `revoke`, revokes the revocable ones. Called with the inode's layout and
    /// state locks held. Returns (revoked now, revocable still held).
    fn break_pins(&self, inode: &Inode, r: &Range<u64>, revoke: bool) -> (u64, u64);
    /// Whether the kernel may cache this inode's data.
    fn cache_used(&self, st: &InodeState) -> bool;
    /// Asks the kernel to drop its cached pages of logical block range `r` of `ino`.
    fn invalidate_cached(&self, ino: u64, r: &Range<u64>);
    /// Counts a break that found a busy block and had to wait.
    fn count_layout_break(&self);
    /// Counts a lease break signalled (one per busy pass).
    fn count_lease_break(&self);
}

/// The first busy block (data-area index, count above 1) mapped in logical range `r`.
fn first_busy(env: &impl LayoutEnv, st: &InodeState, r: &Range<u64>) -> Option<u64> {
    let refs = env.refs();
    let data_start = env.data_start();
    let mut lb = r.start;
    while let Some(e) = st.ext.find_or_next(lb) {
        if e.lblk >= r.end {
            break;
        }
        for l in e.lblk.max(r.start)..e.end().min(r.end) {
            let b = e.pblk + (l - e.lblk) - data_start;
            if refs.count(b) > 1 {
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
    env: &impl LayoutEnv,
    inode: &'a Inode,
    wait: Wait,
    range: impl Fn(&InodeState) -> Option<Range<u64>>,
) -> Result<(LayoutGuard<'a>, RwLockWriteGuard<'a, InodeState>)> {
    let deadline = Instant::now() + env.layout_timeout();
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
        let mut busy = first_busy(env, &st, &r);
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
                now.checked_add(env.lease_break_time())
                    .map_or(deadline, |t| t.min(deadline))
            });
            let revoked;
            (revoked, revocable) = env.break_pins(inode, &r, now >= at);
            if revoked > 0 {
                // Under the same locks: nothing new can have been pinned.
                busy = first_busy(env, &st, &r);
            }
        }
        let Some(busy) = busy else {
            if env.cache_used(&st) {
                env.invalidate_cached(inode.ino, &r);
            }
            return Ok((layout, st));
        };
        if final_pass {
            return Err(Errno::EBUSY);
        }
        if !waited {
            env.count_layout_break();
            waited = true;
        }
        // The lease break: holders of long-term pins on this inode can see it
        // (PinnedMapping::layout_broken) and are expected to let go.
        inode.lease_breaks.fetch_add(1, Ordering::SeqCst);
        env.count_lease_break();
        drop(st);
        drop(layout);
        // Wake up at the revocation time when there is a revocable pin to revoke.
        let until = match revoke_at {
            Some(at) if revocable > 0 && at < deadline => at,
            _ => deadline,
        };
        if !env.refs().wait_idle(busy, Some(until)) && until == deadline {
            final_pass = true;
        }
    }
}

/// The check made with the locks held right before blocks `start..end` (logical) are
/// freed. After [`break_layouts`], or on a file that nothing can pin (no open handle,
/// no mapping), nothing can be busy: a busy block here is a pin that escaped the layout
/// lock. It is counted as a violation and the change refused (EBUSY) rather than
/// freeing a block that is in use.
pub(crate) fn check_layout_idle(
    env: &impl LayoutEnv,
    st: &InodeState,
    start: u64,
    end: u64,
) -> Result<()> {
    match first_busy(env, st, &(start..end)) {
        None => Ok(()),
        Some(_) => {
            env.refs().note_violation();
            Err(Errno::EBUSY)
        }
    }
}
