//! Adaptive busy polling of the FUSE device (the `busy_poll=` mount option).
//!
//! Every FUSE request costs two sleeping wake-ups: a worker blocked in read(2) of
//! /dev/fuse is woken for the request, and the client is woken by the reply. On the VMs
//! daxfs is measured on, a wake-up across CPUs costs tens of microseconds, far more than
//! daxfs's own work for a 4 KiB write or a create (docs/BENCHMARKS.md). Polling the
//! device instead of sleeping removes the worker's wake-up: the device's open file
//! description is switched to O_NONBLOCK and fuser's receive loop retries EAGAIN, so the
//! worker that reads it picks the next request up as soon as it is queued (with
//! `clone_fd` only the session's own descriptor, one worker, polls; the others sleep).
//!
//! Whether polling pays depends on where the scheduler puts the client and the workers:
//! when they share a CPU, wake-ups are cheap and a polling worker only takes CPU time
//! from the client. So the choice is measured, not assumed: while requests flow, a
//! governor thread serves an epoch in the preferred mode, then a short probe in the
//! other, and keeps polling only if it served clearly more requests per second; epochs
//! grow while the choice holds. Once no request arrived for a whole window (`busy_poll=`,
//! the governor's tick) the device goes back to blocking reads, so an idle mount costs no
//! CPU: the same trade
//! as the kernel's SO_BUSY_POLL and io_uring's SQPOLL idle time.
//!
//! Workers only report that a request arrived ([`BusyPoll::note_request`], an atomic
//! add); mode switches are rare fcntl(2) calls by the governor. Losing a race (a request
//! arrives just as the device goes idle) costs one ordinary wake-up, never a request: a
//! blocked read and a polling read see the same queue.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The first epoch after a burst starts or the choice changes.
const FIRST_EPOCH: Duration = Duration::from_millis(100);
/// Epochs double while probes confirm the choice, up to this.
const MAX_EPOCH: Duration = Duration::from_millis(1600);
/// How long the other mode is tried after each epoch.
const PROBE: Duration = Duration::from_millis(20);
/// Polling costs a CPU: it must serve this many times the requests per second of sleeping
/// to be chosen.
const POLL_GAIN: f64 = 1.10;

/// Whether polling served enough more requests per second than sleeping to be worth its
/// CPU.
pub fn polling_wins(poll_rate: f64, sleep_rate: f64) -> bool {
    poll_rate > sleep_rate * POLL_GAIN
}

/// Polls a FUSE device while requests keep arriving and polling measures faster; see
/// the module documentation.
pub struct BusyPoll {
    /// A duplicate of the session's descriptor: O_NONBLOCK belongs to the open file
    /// description, which the duplicate shares with the worker that reads it.
    fd: OwnedFd,
    window: Duration,
    /// Requests seen so far; the governor measures rates and idleness from it.
    requests: AtomicU64,
    /// Fast-path copy of `state.active`, read without the lock.
    active_hint: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    /// Requests are flowing: the governor is measuring.
    active: bool,
    /// The description is O_NONBLOCK.
    polling: bool,
    /// The mode the last probe chose (polling first: the common case on split CPUs).
    prefer_polling: bool,
    stopped: bool,
}

impl BusyPoll {
    /// Prepares busy polling of `fd` (a /dev/fuse descriptor) that ends after an idle
    /// `window`. Nothing polls until the first request; the governor must be started with
    /// [`BusyPoll::spawn_governor`].
    pub fn new(fd: BorrowedFd<'_>, window: Duration) -> io::Result<Arc<BusyPoll>> {
        Ok(Arc::new(BusyPoll {
            fd: fd.try_clone_to_owned()?,
            window,
            requests: AtomicU64::new(0),
            active_hint: AtomicBool::new(false),
            state: Mutex::new(State {
                active: false,
                polling: false,
                prefer_polling: true,
                stopped: false,
            }),
            changed: Condvar::new(),
        }))
    }

    /// Called by a worker for every request it received.
    pub fn note_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !self.active_hint.load(Ordering::Relaxed) {
            self.start();
        }
    }

    /// Whether the device is in polling mode now.
    pub fn is_polling(&self) -> bool {
        self.lock().polling
    }

    /// Whether requests are flowing (the governor is measuring).
    pub fn is_active(&self) -> bool {
        self.active_hint.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&self) {
        let mut st = self.lock();
        if st.active || st.stopped {
            return;
        }
        st.active = true;
        self.active_hint.store(true, Ordering::Relaxed);
        // Switch at once rather than when the governor runs: a burst's first requests
        // are the ones a late switch would miss.
        let prefer = st.prefer_polling;
        self.set_polling(&mut st, prefer);
        self.changed.notify_all();
    }

    /// Starts the thread that measures, chooses the mode and ends polling when idle.
    pub fn spawn_governor(self: &Arc<Self>) -> io::Result<JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("daxfs-busy-poll".into())
            .spawn(move || me.govern())
    }

    fn govern(&self) {
        let mut st = self.lock();
        'idle: loop {
            while !st.active && !st.stopped {
                st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.stopped {
                return;
            }
            let mut epoch = FIRST_EPOCH;
            let mut seen = (self.requests.load(Ordering::Relaxed), Instant::now());
            loop {
                let prefer = st.prefer_polling;
                let (guard, rate) = self.phase(st, prefer, epoch, &mut seen);
                st = guard;
                let Some(preferred_rate) = rate else {
                    continue 'idle;
                };
                let (guard, rate) = self.phase(st, !prefer, PROBE, &mut seen);
                st = guard;
                let Some(probe_rate) = rate else {
                    continue 'idle;
                };
                let (poll_rate, sleep_rate) = if prefer {
                    (preferred_rate, probe_rate)
                } else {
                    (probe_rate, preferred_rate)
                };
                let choice = polling_wins(poll_rate, sleep_rate);
                if choice == prefer {
                    epoch = (epoch * 2).min(MAX_EPOCH);
                } else {
                    st.prefer_polling = choice;
                    epoch = FIRST_EPOCH;
                }
            }
        }
    }

    /// Serves `length` in one mode and returns the requests per second it saw, or `None`
    /// when the device went idle (no request for a whole window) or polling was stopped.
    /// `seen` is the request count last seen and when it last changed.
    fn phase<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        polling: bool,
        length: Duration,
        seen: &mut (u64, Instant),
    ) -> (MutexGuard<'a, State>, Option<f64>) {
        self.set_polling(&mut st, polling);
        let start = Instant::now();
        let first = self.requests.load(Ordering::Relaxed);
        loop {
            let elapsed = start.elapsed();
            if elapsed >= length {
                break;
            }
            let tick = self.window.min(length - elapsed);
            let (guard, _) = self
                .changed
                .wait_timeout(st, tick)
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            if st.stopped {
                return (st, None);
            }
            let now = Instant::now();
            let c = self.requests.load(Ordering::Relaxed);
            if c != seen.0 {
                *seen = (c, now);
            } else if now.duration_since(seen.1) >= self.window {
                self.set_polling(&mut st, false);
                st.active = false;
                self.active_hint.store(false, Ordering::Relaxed);
                return (st, None);
            }
        }
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        let served = self.requests.load(Ordering::Relaxed) - first;
        (st, Some(served as f64 / secs))
    }

    /// Ends polling for good (workers block again) and lets the governor return.
    pub fn stop(&self) {
        let mut st = self.lock();
        st.stopped = true;
        self.set_polling(&mut st, false);
        self.changed.notify_all();
    }

    /// Switches the device's mode. If fcntl fails the mode stays as it was: sleeping is
    /// slower, polling ends at the next switch; neither loses a request.
    fn set_polling(&self, st: &mut State, on: bool) {
        if st.polling != on && self.set_nonblocking(on).is_ok() {
            st.polling = on;
        }
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: fcntl F_GETFL/F_SETFL on a descriptor this struct owns; no memory is
        // passed to the kernel.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let new = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, new) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Instant;

    fn nonblocking(p: &BusyPoll) -> bool {
        // SAFETY: F_GETFL on a descriptor the test's BusyPoll owns.
        let flags = unsafe { libc::fcntl(p.fd.as_raw_fd(), libc::F_GETFL) };
        flags >= 0 && flags & libc::O_NONBLOCK != 0
    }

    fn pipe_read_end() -> OwnedFd {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two descriptors into the array it is given.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        use std::os::fd::FromRawFd;
        // SAFETY: both descriptors were just created and are owned by nobody else.
        unsafe {
            drop(OwnedFd::from_raw_fd(fds[1]));
            OwnedFd::from_raw_fd(fds[0])
        }
    }

    fn wait_until(what: impl Fn() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn polling_is_chosen_only_when_it_serves_clearly_more() {
        assert!(polling_wins(80_000.0, 40_000.0));
        assert!(!polling_wins(40_000.0, 40_000.0), "a tie goes to sleeping");
        assert!(!polling_wins(42_000.0, 40_000.0), "5% is not worth a CPU");
        assert!(!polling_wins(30_000.0, 40_000.0));
        assert!(!polling_wins(0.0, 0.0));
    }

    #[test]
    fn a_request_switches_the_shared_description_to_polling() {
        let fd = pipe_read_end();
        let p = BusyPoll::new(fd.as_fd(), Duration::from_secs(60)).unwrap();
        assert!(!p.is_polling() && !p.is_active());
        p.note_request();
        assert!(p.is_polling() && p.is_active());
        // The flag is on the open file description, so the original descriptor (the
        // one the workers read) sees it too.
        // SAFETY: F_GETFL on the test's own descriptor.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        assert_ne!(flags & libc::O_NONBLOCK, 0);
    }

    #[test]
    fn an_idle_window_switches_back_to_blocking_reads() {
        let fd = pipe_read_end();
        let p = BusyPoll::new(fd.as_fd(), Duration::from_millis(5)).unwrap();
        let gov = p.spawn_governor().unwrap();
        p.note_request();
        assert!(nonblocking(&p));
        assert!(wait_until(|| !p.is_active()), "polling never ended");
        assert!(!p.is_polling() && !nonblocking(&p));
        // The next request starts polling again.
        p.note_request();
        assert!(p.is_polling() && nonblocking(&p));
        p.stop();
        gov.join().unwrap();
        assert!(!nonblocking(&p));
    }

    #[test]
    fn requests_inside_the_window_keep_the_governor_measuring() {
        let fd = pipe_read_end();
        let p = BusyPoll::new(fd.as_fd(), Duration::from_secs(1)).unwrap();
        let gov = p.spawn_governor().unwrap();
        // Requests every 10 ms across three windows and several epochs and probes.
        for _ in 0..300 {
            p.note_request();
            std::thread::sleep(Duration::from_millis(10));
            assert!(p.is_active());
        }
        p.stop();
        gov.join().unwrap();
    }

    #[test]
    fn stop_ends_polling_and_later_requests_do_not_restart_it() {
        let fd = pipe_read_end();
        let p = BusyPoll::new(fd.as_fd(), Duration::from_secs(60)).unwrap();
        let gov = p.spawn_governor().unwrap();
        p.note_request();
        p.stop();
        gov.join().unwrap();
        p.note_request();
        assert!(!p.is_polling() && !nonblocking(&p));
    }
}
