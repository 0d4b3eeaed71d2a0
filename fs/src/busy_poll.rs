//! Adaptive busy polling of the FUSE device (the `busy_poll=` mount option).
//!
//! Every FUSE request costs two sleeping wake-ups: a worker blocked in read(2) of
//! /dev/fuse is woken for the request, and the client is woken by the reply. On the VMs
//! daxfs is measured on, a wake-up across CPUs costs tens of microseconds, far more than
//! daxfs's own work for a 4 KiB write or a create (docs/BENCHMARKS.md). While requests
//! keep coming, workers therefore poll the device instead of sleeping: the device's open
//! file description is switched to O_NONBLOCK, and fuser's receive loop retries EAGAIN,
//! so a worker picks the next request up as soon as it is queued. Once no request has
//! arrived for a whole window, a governor thread switches back to blocking reads, so an
//! idle mount costs no CPU: the same trade as the kernel's SO_BUSY_POLL and io_uring's
//! SQPOLL idle time.
//!
//! Workers only report that a request arrived ([`BusyPoll::note_request`], an atomic
//! add); the mode switches are rare fcntl(2) calls. Losing a race (a request arrives just
//! as the window closes) costs one ordinary wake-up, never a request: a blocked read and a
//! polling read see the same queue.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Polls a FUSE device while requests keep arriving; see the module documentation.
pub struct BusyPoll {
    /// A duplicate of the session's descriptor: O_NONBLOCK belongs to the open file
    /// description, which the duplicate shares with every worker.
    fd: OwnedFd,
    window: Duration,
    /// Requests seen so far; the governor compares it across a window.
    requests: AtomicU64,
    /// Fast-path copy of `state.polling`, read without the lock.
    polling_hint: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    /// The description is O_NONBLOCK.
    polling: bool,
    stopped: bool,
}

impl BusyPoll {
    /// Prepares busy polling of `fd` (a /dev/fuse descriptor) with an idle `window`.
    /// Nothing polls until the first request and [`BusyPoll::spawn_governor`].
    pub fn new(fd: BorrowedFd<'_>, window: Duration) -> io::Result<Arc<BusyPoll>> {
        Ok(Arc::new(BusyPoll {
            fd: fd.try_clone_to_owned()?,
            window,
            requests: AtomicU64::new(0),
            polling_hint: AtomicBool::new(false),
            state: Mutex::new(State {
                polling: false,
                stopped: false,
            }),
            changed: Condvar::new(),
        }))
    }

    /// Called by a worker for every request it received.
    pub fn note_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !self.polling_hint.load(Ordering::Relaxed) {
            self.start();
        }
    }

    /// Whether workers are polling now.
    pub fn is_polling(&self) -> bool {
        self.polling_hint.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&self) {
        let mut st = self.lock();
        if st.polling || st.stopped {
            return;
        }
        // If the switch fails, workers keep sleeping in read(2): slower, still correct.
        if self.set_nonblocking(true).is_ok() {
            st.polling = true;
            self.polling_hint.store(true, Ordering::Relaxed);
            self.changed.notify_all();
        }
    }

    /// Starts the thread that ends polling after an idle window.
    pub fn spawn_governor(self: &Arc<Self>) -> io::Result<JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("daxfs-busy-poll".into())
            .spawn(move || me.govern())
    }

    fn govern(&self) {
        let mut st = self.lock();
        loop {
            while !st.polling && !st.stopped {
                st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.stopped {
                return;
            }
            let before = self.requests.load(Ordering::Relaxed);
            let (guard, _) = self
                .changed
                .wait_timeout(st, self.window)
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            if st.stopped {
                return;
            }
            if st.polling && self.requests.load(Ordering::Relaxed) == before {
                // Idle for a whole window: sleep in read(2) again. If fcntl fails the
                // workers keep polling until the next window tries again.
                if self.set_nonblocking(false).is_ok() {
                    st.polling = false;
                    self.polling_hint.store(false, Ordering::Relaxed);
                }
            }
        }
    }

    /// Ends polling for good (workers block again) and lets the governor return.
    pub fn stop(&self) {
        let mut st = self.lock();
        st.stopped = true;
        if st.polling && self.set_nonblocking(false).is_ok() {
            st.polling = false;
            self.polling_hint.store(false, Ordering::Relaxed);
        }
        self.changed.notify_all();
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
    fn a_request_switches_the_shared_description_to_polling() {
        let fd = pipe_read_end();
        let p = BusyPoll::new(fd.as_fd(), Duration::from_secs(60)).unwrap();
        assert!(!p.is_polling());
        p.note_request();
        assert!(p.is_polling());
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
        assert!(wait_until(|| !p.is_polling()), "polling never ended");
        assert!(!nonblocking(&p));
        // The next request starts polling again.
        p.note_request();
        assert!(p.is_polling() && nonblocking(&p));
        p.stop();
        gov.join().unwrap();
        assert!(!nonblocking(&p));
    }

    #[test]
    fn requests_inside_the_window_keep_polling_on() {
        let fd = pipe_read_end();
        let p = BusyPoll::new(fd.as_fd(), Duration::from_secs(1)).unwrap();
        let gov = p.spawn_governor().unwrap();
        // Requests every 10 ms across three windows.
        for _ in 0..300 {
            p.note_request();
            std::thread::sleep(Duration::from_millis(10));
            assert!(p.is_polling());
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
