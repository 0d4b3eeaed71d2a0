//! Waiter threads: where a request that has to wait for pins (break_layouts) waits, so
//! that no FUSE worker thread ever sleeps on a pin (docs/DESIGN.md, "How FUSE workers
//! wait").
//!
//! The FUSE adapter first tries such a request on its worker without sleeping (the core's
//! `try_*` calls: `try_setattr`, `try_open`, `try_create`, `try_fallocate`). Only when
//! that finds a pinned block, with nothing changed, is the request handed here together
//! with its reply: a thread of its own repeats the operation with waiting allowed and
//! replies from there, when the pins drain or `layout_timeout` passes. The workers meanwhile
//! keep serving everything else, including the UNPIN or the release of a handle that ends
//! the wait.
//!
//! At most [`Waiters::limit`] requests wait at a time, and at most
//! [`Waiters::per_user`] of one user (root's are bounded only by the total), so that one
//! user's pin plus a flood of truncates of it cannot take every slot and refuse another
//! user's truncate of another file. A request past either bound is not queued:
//! [`Waiters::run`] gives its reply back and the adapter answers it EBUSY at once, the
//! errno a wait that times out gets, with nothing changed. Requests that need not wait
//! never come here, so a full set of waiters refuses only other requests that would also
//! have had to wait for a pin.
//!
//! A thread per waiting request, started when it is handed over and ended with it: waits
//! are rare and last as long as a pin is held, so a thread start (tens of microseconds)
//! is noise, and an idle mount keeps no waiter thread. A waiter can outlive the FUSE
//! session (a connection aborted under it); the daemon lets the waiters finish
//! ([`Waiters::wait_idle`]) before it shuts the filesystem down, so that no change
//! commits after the clean unmount.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// How many requests may wait for pins at a time by default: far more than a workload
/// that truncates pinned files needs, few enough that an unprivileged user cannot make
/// the daemon start threads without end.
pub const MAX_WAITERS: usize = 64;

/// How many of them one unprivileged user may hold by default: a quarter, so that at
/// least four users' truncates can wait at once however many one user starts.
pub const MAX_WAITERS_PER_USER: usize = MAX_WAITERS / 4;

/// Requests waiting now: in all, and by the uid that sent them.
#[derive(Debug, Default)]
struct Busy {
    total: usize,
    by_uid: HashMap<u32, usize>,
}

/// The waiter threads of one mount (see the module docs).
#[derive(Debug)]
pub struct Waiters {
    limit: usize,
    per_user: usize,
    /// Requests handed over and not yet finished (each holds one of `limit` slots), and
    /// the condition signalled when one finishes.
    busy: Arc<(Mutex<Busy>, Condvar)>,
    /// Requests handed over, and those refused past the bound (or for want of a thread).
    deferred: AtomicU64,
    refused: AtomicU64,
}

/// One slot of [`Waiters::busy`] held by `uid`, given back when the waiting request is
/// done, also when it panicked or its thread never started.
struct Slot {
    busy: Arc<(Mutex<Busy>, Condvar)>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (count, done) = &*self.busy;
        let mut b = lock(count);
        b.total = b.total.saturating_sub(1);
        if let Some(n) = b.by_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                b.by_uid.remove(&self.uid);
            }
        }
        done.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for Waiters {
    fn default() -> Self {
        Waiters::new(MAX_WAITERS, MAX_WAITERS_PER_USER)
    }
}

impl Waiters {
    pub fn new(limit: usize, per_user: usize) -> Waiters {
        Waiters {
            limit,
            per_user,
            busy: Arc::new((Mutex::new(Busy::default()), Condvar::new())),
            deferred: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// How many requests may wait at a time.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many requests of one unprivileged user may wait at a time.
    pub fn per_user(&self) -> usize {
        self.per_user
    }

    /// Requests waiting now.
    pub fn busy(&self) -> usize {
        lock(&self.busy.0).total
    }

    /// Waits until no request is waiting or `deadline` passes; true when none is.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        let (count, done) = &*self.busy;
        let mut n = lock(count);
        while n.total > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = done
                .wait_timeout(n, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Requests handed to a waiter thread so far, and requests refused.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.deferred.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }

    /// Runs `job(reply)`, a request of `uid`, on a thread of its own. When
    /// [`limit`](Self::limit) requests are already waiting, or [`per_user`](Self::per_user)
    /// of `uid` (not root), or no thread can be started, `job` is dropped unrun and `reply`
    /// comes back for the caller to answer (EBUSY).
    pub fn run<R, F>(&self, uid: u32, reply: R, job: F) -> Result<(), R>
    where
        R: Send + 'static,
        F: FnOnce(R) + Send + 'static,
    {
        {
            let mut b = lock(&self.busy.0);
            let mine = b.by_uid.get(&uid).copied().unwrap_or(0);
            if b.total >= self.limit || (uid != 0 && mine >= self.per_user) {
                drop(b);
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(reply);
            }
            b.total += 1;
            *b.by_uid.entry(uid).or_insert(0) += 1;
        }
        let slot = Slot {
            busy: self.busy.clone(),
            uid,
        };
        // The request travels through a shared cell so that it can be taken back if the
        // thread cannot start (spawn drops its closure then, and `reply` with it).
        let cell = Arc::new(Mutex::new(Some((reply, job))));
        let theirs = cell.clone();
        let spawned = std::thread::Builder::new()
            .name("daxfs-waiter".into())
            .spawn(move || {
                let _slot = slot;
                let request = lock(&theirs).take();
                if let Some((reply, job)) = request {
                    job(reply);
                }
            });
        if spawned.is_ok() {
            self.deferred.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        let request = lock(&cell).take();
        match request {
            Some((reply, _job)) => Err(reply),
            // Unreachable (a thread that never started took nothing); nothing to answer.
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Polls `cond` for up to 10 s.
    fn eventually(cond: impl Fn() -> bool) -> bool {
        for _ in 0..1000 {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond()
    }

    #[test]
    fn a_job_runs_on_another_thread_with_its_reply() {
        let w = Waiters::new(2, 2);
        let (tx, rx) = mpsc::channel();
        let here = std::thread::current().id();
        assert!(w
            .run(1000, 7u32, move |r| {
                let _ = tx.send((r, std::thread::current().id()));
            })
            .is_ok());
        let (r, there) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(r, 7);
        assert_ne!(there, here);
        assert!(eventually(|| w.busy() == 0));
        assert_eq!(w.counts(), (1, 0));
    }

    #[test]
    fn a_request_past_the_bound_comes_back_at_once_and_a_freed_slot_is_reused() {
        let w = Waiters::new(2, 2);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        for i in 0..2u32 {
            let rx = release_rx.clone();
            assert!(w
                .run(1000, i, move |_| {
                    let _ = rx.lock().unwrap().recv();
                })
                .is_ok());
        }
        assert_eq!(w.busy(), 2);
        assert_eq!(w.run(1000, 99u32, |_| {}), Err(99));
        assert_eq!(w.counts(), (2, 1));
        release_tx.send(()).unwrap();
        assert!(eventually(|| w.busy() == 1));
        assert!(w.run(1000, 3u32, |_| {}).is_ok());
        release_tx.send(()).unwrap();
        assert!(eventually(|| w.busy() == 0));
    }

    #[test]
    fn wait_idle_returns_when_the_last_job_ends_or_at_the_deadline() {
        let w = Waiters::new(4, 4);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        assert!(w
            .run(1000, (), move |_| {
                let _ = release_rx.recv();
            })
            .is_ok());
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(!w.wait_idle(soon));
        assert!(Instant::now() >= soon);
        release_tx.send(()).unwrap();
        assert!(w.wait_idle(Instant::now() + Duration::from_secs(10)));
        assert_eq!(w.busy(), 0);
    }

    #[test]
    fn a_panicking_job_gives_its_slot_back() {
        let w = Waiters::new(1, 1);
        assert!(w.run(1000, (), |_| panic!("job failed")).is_ok());
        assert!(eventually(|| w.busy() == 0));
        assert!(w.run(1000, (), |_| {}).is_ok());
    }

    #[test]
    fn one_user_past_its_share_is_refused_while_another_user_and_root_still_wait() {
        let w = Waiters::new(8, 2);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let hold = |w: &Waiters, uid: u32| {
            let rx = release_rx.clone();
            w.run(uid, (), move |()| {
                let _ = lock(&rx).recv_timeout(Duration::from_secs(10));
            })
        };
        assert!(hold(&w, 1000).is_ok() && hold(&w, 1000).is_ok());
        assert!(hold(&w, 1000).is_err(), "a third request of the same user");
        assert!(hold(&w, 1001).is_ok(), "another user still has its share");
        assert!(hold(&w, 0).is_ok() && hold(&w, 0).is_ok() && hold(&w, 0).is_ok());
        assert_eq!(w.busy(), 6);
        assert_eq!(w.counts(), (6, 1));
        for _ in 0..6 {
            let _ = release_tx.send(());
        }
        assert!(eventually(|| w.busy() == 0));
        assert!(hold(&w, 1000).is_ok(), "its slots came back");
        let _ = release_tx.send(());
    }
}
