//! One FUSE ring queue: an io_uring with 128-byte SQEs whose entries (a header and a
//! payload buffer each) are registered with `/dev/fuse` for one queue id (= one CPU),
//! and the commit-and-fetch cycle that answers a request and waits for the next one.
//!
//! Buffer ownership follows the kernel's state machine (see the [module
//! documentation](super)): from the submission of an entry's REGISTER or
//! COMMIT_AND_FETCH until its completion the kernel may write the entry's buffers at any
//! time, so the queue hands them out only in between ([`Queue::request`],
//! [`Queue::commit`]), and never frees them while the kernel may still hold them.
//!
//! A queue is built, registered and served on one thread and never moves (it is
//! `!Send`): the kernel copies each request into the buffers as task work of the thread
//! that submitted the entry, so that thread must keep entering the ring.

use super::abi::{
    encode_reply_headers, FuseUringCmdReq, RequestHeaders, ERESTARTSYS,
    FUSE_IO_URING_CMD_COMMIT_AND_FETCH, FUSE_IO_URING_CMD_REGISTER, FUSE_MIN_READ_BUFFER,
    FUSE_URING_IOV_SEGS, REQ_HEADER_SIZE,
};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

/// `user_data` of the stop eventfd's poll; entries use their index.
const STOP_TOKEN: u64 = u64::MAX;
/// Buffers are page-aligned (mmap), as the kernel's future page pinning of them requires.
const BUF_ALIGN: usize = 4096;

/// The shape of one queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// The queue id: the CPU whose requests this queue serves.
    pub qid: u16,
    /// Ring entries, i.e. requests of this CPU in flight at once.
    pub depth: u16,
    /// How long [`Queue::wait`] keeps looking for the next request, yielding the CPU
    /// between looks, before it sleeps in the kernel; zero sleeps at once. See
    /// [`Queue::wait`] for why.
    pub poll: Duration,
    /// Bytes of each entry's payload buffer; at least [`payload_size`] of the
    /// connection's INIT values, or REGISTER fails with EINVAL.
    pub payload_size: usize,
}

/// The payload buffer the kernel requires of every entry: `max(FUSE_MIN_READ_BUFFER,
/// max_write, max_pages * page size)` with the values INIT settled (`fuse_uring_create`).
/// Passing an upper bound of `max_pages` (fuser's request, before the kernel's clamp to
/// `max_pages_limit`) gives a buffer at least that large.
pub fn payload_size(max_write: u32, max_pages: u32, page_size: usize) -> usize {
    let pages = usize::try_from(max_pages)
        .unwrap_or(usize::MAX)
        .saturating_mul(page_size);
    let write = usize::try_from(max_write).unwrap_or(usize::MAX);
    FUSE_MIN_READ_BUFFER.max(write).max(pages)
}

/// The number of queues a connection's ring has: the kernel makes one per possible CPU
/// (`num_possible_cpus()`) and is ready only once every one has an entry registered.
pub fn possible_cpus() -> io::Result<usize> {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    count_cpu_list(&list).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unreadable CPU list {:?}", list.trim()),
        )
    })
}

/// Counts the CPUs of a kernel CPU list such as `0-3,8-11` or `0`.
fn count_cpu_list(list: &str) -> Option<usize> {
    let list = list.trim();
    if list.is_empty() {
        return None;
    }
    let mut n = 0usize;
    for part in list.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse::<usize>().ok()?, hi.parse::<usize>().ok()?),
            None => {
                let c = part.parse::<usize>().ok()?;
                (c, c)
            }
        };
        n = n.checked_add(hi.checked_sub(lo)?.checked_add(1)?)?;
    }
    Some(n)
}

/// Binds the calling thread to `cpu`, as a queue's thread must be for requests to be
/// served where they were issued.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `cpu` is within the set's bits (checked above); `set` is a valid set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is initialised and its size is passed; pid 0 is the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A zeroed, page-aligned buffer that the kernel writes to while it owns it, so it is
/// reached through a raw pointer, never a long-lived reference. Anonymous memory: pages
/// are allocated when first written, so an entry sized for a 1 MiB request costs only
/// what its largest request touched (deep queues, as deferred requests need, stay cheap).
struct RingBuf {
    ptr: NonNull<u8>,
    len: usize,
}

impl RingBuf {
    fn new(len: usize) -> io::Result<RingBuf> {
        let len = len.max(1);
        // SAFETY: an anonymous private mapping at an address the kernel picks: no
        // existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        debug_assert_eq!(ptr.as_ptr() as usize % BUF_ALIGN, 0);
        Ok(RingBuf { ptr, len })
    }

    fn len(&self) -> usize {
        self.len
    }

    fn iovec(&self) -> libc::iovec {
        libc::iovec {
            iov_base: self.ptr.as_ptr().cast(),
            iov_len: self.len(),
        }
    }

    /// The buffer's bytes.
    ///
    /// # Safety
    /// The kernel must not own the buffer (its entry is in [`State::User`]) for as long
    /// as the slice lives.
    unsafe fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` initialised (zero-filled) bytes owned by `self`;
        // the caller guarantees no concurrent write by the kernel.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len()) }
    }

    /// The buffer's bytes, writable.
    ///
    /// # Safety
    /// As [`RingBuf::bytes`].
    unsafe fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` excludes other references from userspace.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len()) }
    }
}

impl Drop for RingBuf {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Who owns an entry's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A command is in the kernel: the buffers are the kernel's until its CQE.
    Kernel { cmd: u32 },
    /// A request is in the buffers, waiting for its reply.
    User { unique: u64 },
    /// The kernel ended the entry (unmount, abort, or an error): never used again.
    Dead,
}

struct Slot {
    header: RingBuf,
    payload: RingBuf,
    /// REGISTER's [header, payload] iovec array; boxed so its address stays valid for
    /// as long as the kernel may read it.
    iov: Box<[libc::iovec; 2]>,
    state: State,
}

/// What [`Queue::wait`] saw complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Entry `slot` holds a request: read it with [`Queue::request`], answer it with
    /// [`Queue::commit`].
    Request(usize),
    /// The kernel ended entry `slot` with `errno` (ENOTCONN at unmount or abort).
    Ended {
        /// The entry.
        slot: usize,
        /// The positive errno of its completion.
        errno: i32,
    },
    /// [`Stopper::stop`] was called.
    Stopped,
}

/// A request as the kernel left it in an entry.
#[derive(Debug)]
pub struct Request<'a> {
    /// The `fuse_in_header`, the opcode's fixed arguments and the entry trailer.
    pub headers: RequestHeaders,
    /// The request's variable arguments (names, write data): `payload_sz` bytes.
    pub payload: &'a [u8],
}

/// Wakes a queue's [`Queue::wait`] from another thread.
#[derive(Debug)]
pub struct Stopper(OwnedFd);

impl Stopper {
    /// Makes the queue's current or next wait report [`Event::Stopped`].
    pub fn stop(&self) -> io::Result<()> {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local buffer to an eventfd we own.
        let n = unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if n == 8 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// One ring queue; see the module documentation.
pub struct Queue {
    /// Declared first so that it is closed before the buffers are freed.
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    /// A duplicate of the session's /dev/fuse descriptor (same open file).
    fuse: OwnedFd,
    stop: OwnedFd,
    qid: u16,
    slots: Vec<Slot>,
    /// Completions drained from the ring, reused across waits.
    cqes: Vec<(u64, i32)>,
    /// The stop poll was submitted.
    stop_armed: bool,
    /// [`QueueConfig::poll`].
    poll: Duration,
    /// Waits that slept in the kernel (after the poll window, if any).
    sleeps: u64,
}

impl Queue {
    /// Builds queue `cfg.qid` on the /dev/fuse descriptor `fuse`: a ring of 128-byte
    /// SQEs and `cfg.depth` entries with their buffers. Nothing is registered yet.
    pub fn new(fuse: BorrowedFd<'_>, cfg: QueueConfig) -> io::Result<Queue> {
        if cfg.depth == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "queue depth must be at least 1",
            ));
        }
        // One SQE per entry plus the stop poll: the SQ can never overflow, since an
        // entry has at most one command outstanding. The CQ has room for every one twice.
        let sq = u32::from(cfg.depth) + 1;
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .setup_cqsize(2 * sq)
            .build(sq)?;
        let fuse = fuse.try_clone_to_owned()?;
        // SAFETY: eventfd has no memory-safety preconditions.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `efd` is a fresh descriptor nothing else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(efd) };
        let mut slots = Vec::with_capacity(usize::from(cfg.depth));
        for _ in 0..cfg.depth {
            let header = RingBuf::new(REQ_HEADER_SIZE)?;
            let payload = RingBuf::new(cfg.payload_size)?;
            let iov = Box::new([header.iovec(), payload.iovec()]);
            slots.push(Slot {
                header,
                payload,
                iov,
                state: State::Dead,
            });
        }
        Ok(Queue {
            ring,
            fuse,
            stop,
            qid: cfg.qid,
            slots,
            cqes: Vec::with_capacity(2 * usize::from(cfg.depth) + 2),
            stop_armed: false,
            poll: cfg.poll,
            sleeps: 0,
        })
    }

    /// This queue's id.
    pub fn qid(&self) -> u16 {
        self.qid
    }

    /// Entries of this queue.
    pub fn depth(&self) -> usize {
        self.slots.len()
    }

    /// How many [`Queue::wait`]s slept in the kernel for their completion.
    pub fn sleeps(&self) -> u64 {
        self.sleeps
    }

    /// Entries the kernel has not ended.
    pub fn live_entries(&self) -> usize {
        self.slots.iter().filter(|s| s.state != State::Dead).count()
    }

    /// A handle that stops [`Queue::wait`] from another thread.
    pub fn stopper(&self) -> io::Result<Stopper> {
        Ok(Stopper(self.stop.try_clone()?))
    }

    /// Re-arms the stop eventfd's poll after [`Event::Stopped`] (the eventfd's count is
    /// consumed first), so that the [`Stopper`] can wake the queue again: a transport
    /// uses it as a doorbell for replies handed over from other threads.
    pub fn rearm_stopper(&mut self) -> io::Result<()> {
        if self.stop_armed {
            return Ok(());
        }
        let mut count = [0u8; 8];
        // SAFETY: reads 8 bytes into a live local buffer from an eventfd we own; the poll
        // just reported it readable and only this thread reads it, so it does not block.
        let n = unsafe { libc::read(self.stop.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        if n != 8 {
            return Err(io::Error::last_os_error());
        }
        let poll = opcode::PollAdd::new(types::Fd(self.stop.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(STOP_TOKEN);
        self.push(poll.into())?;
        self.stop_armed = true;
        Ok(())
    }

    /// The payload buffer of entry `slot` while it holds a request (`None` otherwise),
    /// as a raw pointer and length, for a reply written from another thread before the
    /// entry is committed on this one. The buffer stays the caller's (the kernel does not
    /// touch it) until [`Queue::commit_with`] on this slot; writes to it must not overlap
    /// a live borrow from [`Queue::request`].
    pub fn payload_raw(&self, slot: usize) -> Option<(NonNull<u8>, usize)> {
        let s = self.slots.get(slot)?;
        match s.state {
            State::User { .. } => Some((s.payload.ptr, s.payload.len())),
            _ => None,
        }
    }

    /// Submits a REGISTER for every entry that has none in the kernel, and the stop
    /// poll. The ring becomes ready (requests start to flow) once every queue of the
    /// connection has registered.
    pub fn register(&mut self) -> io::Result<()> {
        for slot in 0..self.slots.len() {
            if self.slots[slot].state == State::Dead {
                self.push_register(slot)?;
            }
        }
        if !self.stop_armed {
            let poll = opcode::PollAdd::new(types::Fd(self.stop.as_raw_fd()), libc::POLLIN as u32)
                .build()
                .user_data(STOP_TOKEN);
            self.push(poll.into())?;
            self.stop_armed = true;
        }
        self.ring.submit()?;
        Ok(())
    }

    /// Submits what is queued, waits for at least one completion and reports every
    /// completion in `events` (appended). REGISTERs the kernel refused with EAGAIN
    /// (INIT not processed yet) or EINTR are submitted again, not reported.
    ///
    /// With a [`QueueConfig::poll`] window it first submits without waiting and, until
    /// a completion is there or the window has passed, yields the CPU and looks again
    /// (the request's task work runs on the way back from `sched_yield`). Why: an idle
    /// queue CPU makes an unpinned client migrate on nearly every request
    /// (docs/DESIGN.md, "How FUSE workers wait").
    pub fn wait(&mut self, events: &mut Vec<Event>) -> io::Result<()> {
        let mut sleep = true;
        if !self.poll.is_zero() {
            let until = Instant::now() + self.poll;
            loop {
                match self.ring.submit() {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                    Err(e) => return Err(e),
                }
                if !self.ring.completion().is_empty() {
                    sleep = false;
                    break;
                }
                if Instant::now() >= until {
                    break;
                }
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
        if sleep {
            self.sleeps += 1;
            loop {
                match self.ring.submit_and_wait(1) {
                    Ok(_) => break,
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        let mut result = Ok(());
        for &(token, res) in &cqes {
            if let Err(e) = self.complete(token, res, events) {
                result = Err(e);
            }
        }
        cqes.clear();
        self.cqes = cqes;
        result
    }

    fn complete(&mut self, token: u64, res: i32, events: &mut Vec<Event>) -> io::Result<()> {
        if token == STOP_TOKEN {
            self.stop_armed = false;
            events.push(Event::Stopped);
            return Ok(());
        }
        let Some(slot) = usize::try_from(token)
            .ok()
            .filter(|&s| s < self.slots.len())
        else {
            return Ok(()); // Not ours: nothing else is submitted on this ring.
        };
        let State::Kernel { cmd } = self.slots[slot].state else {
            return Ok(());
        };
        if res == 0 {
            // SAFETY: the CQE just returned the entry to userspace (State::Kernel ->
            // User below); the kernel writes it again only after our next submission.
            let header = unsafe { self.slots[slot].header.bytes() };
            let unique = RequestHeaders::decode(header).map_or(0, |h| h.ent.commit_id);
            if unique == 0 {
                // A request the kernel could never match to a commit: retire the entry
                // rather than answer the wrong request.
                self.slots[slot].state = State::Dead;
                events.push(Event::Ended {
                    slot,
                    errno: libc::EPROTO,
                });
            } else {
                self.slots[slot].state = State::User { unique };
                events.push(Event::Request(slot));
            }
            return Ok(());
        }
        let errno = -res;
        if cmd == FUSE_IO_URING_CMD_REGISTER && (errno == libc::EAGAIN || errno == libc::EINTR) {
            self.slots[slot].state = State::Dead;
            return self.push_register(slot);
        }
        self.slots[slot].state = State::Dead;
        events.push(Event::Ended { slot, errno });
        Ok(())
    }

    /// The request in entry `slot`, or `None` if the entry holds none (it is the
    /// kernel's, or was ended).
    pub fn request(&self, slot: usize) -> Option<Request<'_>> {
        let s = self.slots.get(slot)?;
        let State::User { .. } = s.state else {
            return None;
        };
        // SAFETY: State::User: the kernel does not own the buffers until `commit`
        // submits, which needs `&mut self` and so ends this borrow first.
        let (header, payload) = unsafe { (s.header.bytes(), s.payload.bytes()) };
        let headers = RequestHeaders::decode(header)?;
        let n = usize::try_from(headers.ent.payload_sz)
            .unwrap_or(usize::MAX)
            .min(payload.len());
        Some(Request {
            headers,
            payload: &payload[..n],
        })
    }

    /// Answers the request in entry `slot` and queues the entry's COMMIT_AND_FETCH (sent
    /// by the next [`Queue::wait`] or [`Queue::submit`]). `error` is 0 or a negated
    /// errno; on 0, `fill` writes the reply's bytes into the payload buffer and returns
    /// how many it wrote. An errno outside what the kernel accepts becomes EIO.
    pub fn commit(
        &mut self,
        slot: usize,
        error: i32,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> io::Result<()> {
        if error != 0 {
            return self.commit_with(slot, |_| Err(error.wrapping_neg()));
        }
        self.commit_with(slot, |out| Ok(fill(out)))
    }

    /// Like [`Queue::commit`], for a handler that decides the errno while it writes:
    /// `reply` gets the payload buffer and returns the bytes it wrote, or a positive
    /// errno (what it wrote is then ignored). An errno the kernel does not accept, or a
    /// length beyond the buffer, becomes EIO.
    pub fn commit_with(
        &mut self,
        slot: usize,
        reply: impl FnOnce(&mut [u8]) -> Result<usize, i32>,
    ) -> io::Result<()> {
        self.answer_in_place(slot, |_, payload, _| reply(payload))
    }

    /// Serves the request in entry `slot` in its own buffers and queues the commit:
    /// `serve` gets the request's headers, the whole payload buffer and the request's
    /// length in it (`payload_sz`), decodes the request from `&payload[..len]`, acts on
    /// it, and only then writes the reply over it (a decoded [`super::request::Request`]
    /// borrows the payload, so the borrow checker orders the two). It returns the
    /// reply's length or a positive errno, as for [`Queue::commit_with`]. No copy of the
    /// request is made: WRITE data goes from the payload to its destination once.
    pub fn answer_in_place(
        &mut self,
        slot: usize,
        serve: impl FnOnce(&RequestHeaders, &mut [u8], usize) -> Result<usize, i32>,
    ) -> io::Result<()> {
        let s = self
            .slots
            .get_mut(slot)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let State::User { unique } = s.state else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        // SAFETY: State::User: the buffers are ours until the submission below.
        let headers = RequestHeaders::decode(unsafe { s.header.bytes() });
        // SAFETY: as above; `headers` is a copy, so no borrow of the header remains.
        let payload = unsafe { s.payload.bytes_mut() };
        let cap = payload.len();
        let outcome = match headers {
            Some(h) => {
                let len = usize::try_from(h.ent.payload_sz)
                    .unwrap_or(usize::MAX)
                    .min(cap);
                serve(&h, payload, len)
            }
            None => Err(libc::EIO),
        };
        let (error, len) = match outcome {
            Ok(len) if len <= cap => (0, len),
            Ok(_) => (-libc::EIO, 0),
            Err(e) if e > 0 && e < ERESTARTSYS => (-e, 0),
            Err(_) => (-libc::EIO, 0),
        };
        // SAFETY: as above.
        let header = unsafe { s.header.bytes_mut() };
        encode_reply_headers(header, unique, error, len)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let sqe = self.uring_cmd(FUSE_IO_URING_CMD_COMMIT_AND_FETCH, unique, None, slot)?;
        self.slots[slot].state = State::Kernel {
            cmd: FUSE_IO_URING_CMD_COMMIT_AND_FETCH,
        };
        self.push(sqe)
    }

    /// Sends the queued commits now, without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        self.ring.submit().map(|_| ())
    }

    fn push_register(&mut self, slot: usize) -> io::Result<()> {
        let iov = self.slots[slot].iov.as_ptr() as u64;
        let sqe = self.uring_cmd(FUSE_IO_URING_CMD_REGISTER, 0, Some(iov), slot)?;
        let sqe = with_sqe_len(sqe, FUSE_URING_IOV_SEGS);
        self.slots[slot].state = State::Kernel {
            cmd: FUSE_IO_URING_CMD_REGISTER,
        };
        self.push(sqe)
    }

    fn uring_cmd(
        &self,
        cmd_op: u32,
        commit_id: u64,
        addr: Option<u64>,
        slot: usize,
    ) -> io::Result<squeue::Entry128> {
        let req = FuseUringCmdReq {
            commit_id,
            qid: self.qid,
            ..FuseUringCmdReq::default()
        };
        let token = u64::try_from(slot).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        Ok(
            opcode::UringCmd80::new(types::Fd(self.fuse.as_raw_fd()), cmd_op)
                .cmd(req.to_sqe_cmd())
                .addr(addr)
                .build()
                .user_data(token),
        )
    }

    fn push(&mut self, sqe: squeue::Entry128) -> io::Result<()> {
        // SAFETY: what the SQE points at outlives the command: REGISTER's iovec array and
        // the buffers it names belong to `self.slots`, which are freed only after the
        // ring is closed and no command is outstanding (see Drop); the other SQEs point
        // at nothing.
        unsafe { self.ring.submission().push(&sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        if self
            .slots
            .iter()
            .any(|s| matches!(s.state, State::Kernel { .. }))
        {
            // The kernel may still write into these buffers (the connection was not
            // ended before the queue was dropped): leak them rather than free them
            // under it. Unmount or abort first to drop a queue without leaking.
            std::mem::forget(std::mem::take(&mut self.slots));
        }
        // The fields drop next, the ring first: it is closed before any buffer is freed.
    }
}

/// The raw 128 bytes of an SQE.
fn sqe_bytes(sqe: squeue::Entry128) -> [u8; 128] {
    // SAFETY: Entry128 is `repr(C)` (`io_uring_sqe`, `[u8; 64]`), 128 bytes of plain
    // integers with no padding (the kernel ABI); the size equality is checked by
    // transmute itself.
    unsafe { std::mem::transmute::<squeue::Entry128, [u8; 128]>(sqe) }
}

/// An SQE from its raw 128 bytes.
fn sqe_from_bytes(raw: [u8; 128]) -> squeue::Entry128 {
    // SAFETY: as in `sqe_bytes`; every bit pattern is a valid `io_uring_sqe` (integers
    // and unions of integers).
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

/// Offset of `io_uring_sqe.len` (uapi `io_uring.h`).
const SQE_LEN: usize = 24;

/// Sets `sqe->len`, which `UringCmd80` of the io-uring crate leaves 0 but FUSE's
/// REGISTER requires to be 2 (the iovec count), failing with EINVAL otherwise.
fn with_sqe_len(sqe: squeue::Entry128, len: u32) -> squeue::Entry128 {
    let mut raw = sqe_bytes(sqe);
    raw[SQE_LEN..SQE_LEN + 4].copy_from_slice(&len.to_ne_bytes());
    sqe_from_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_count_ranges_and_singles() {
        assert_eq!(count_cpu_list("0-1\n"), Some(2));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0-3,8-11"), Some(8));
        assert_eq!(count_cpu_list("0,2,4-5"), Some(4));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn payload_size_is_the_largest_of_the_floor_max_write_and_max_pages() {
        assert_eq!(payload_size(4096, 1, 4096), 8192);
        assert_eq!(payload_size(131072, 32, 4096), 131072);
        assert_eq!(payload_size(131072, 256, 4096), 1 << 20);
        assert_eq!(payload_size(1 << 24, 256, 4096), 1 << 24);
    }

    #[test]
    fn register_sqe_has_the_fields_the_kernel_reads_where_it_reads_them() {
        let cmd = FuseUringCmdReq {
            qid: 1,
            ..FuseUringCmdReq::default()
        };
        let sqe = opcode::UringCmd80::new(types::Fd(7), FUSE_IO_URING_CMD_REGISTER)
            .cmd(cmd.to_sqe_cmd())
            .addr(Some(0xdead_beef))
            .build()
            .user_data(5);
        let raw = sqe_bytes(with_sqe_len(sqe, 2));
        assert_eq!(raw[0], 46, "opcode IORING_OP_URING_CMD");
        assert_eq!(raw[4..8], 7_i32.to_ne_bytes(), "fd");
        assert_eq!(
            raw[8..12],
            FUSE_IO_URING_CMD_REGISTER.to_ne_bytes(),
            "cmd_op"
        );
        assert_eq!(raw[16..24], 0xdead_beef_u64.to_ne_bytes(), "addr");
        assert_eq!(raw[24..28], 2_u32.to_ne_bytes(), "len");
        assert_eq!(raw[32..40], 5_u64.to_ne_bytes(), "user_data");
        // sqe->cmd starts at byte 48: fuse_uring_cmd_req.qid is at 48 + 16.
        assert_eq!(raw[64..66], 1_u16.to_ne_bytes(), "qid");
    }

    /// A queue on the file at `path`, or `None` (printed) where io_uring is unavailable.
    fn queue_on(path: &str, depth: u16) -> Option<(std::fs::File, Queue)> {
        polling_queue_on(path, depth, Duration::ZERO)
    }

    fn polling_queue_on(path: &str, depth: u16, poll: Duration) -> Option<(std::fs::File, Queue)> {
        let f = std::fs::File::open(path).unwrap();
        let cfg = QueueConfig {
            qid: 0,
            depth,
            payload_size: FUSE_MIN_READ_BUFFER,
            poll,
        };
        match Queue::new(std::os::fd::AsFd::as_fd(&f), cfg) {
            Ok(q) => Some((f, q)),
            Err(e) => {
                eprintln!("SKIPPED: no io_uring here: {e}");
                None
            }
        }
    }

    /// Registers every entry of a queue on `path` and waits until all have ended.
    fn ended_entries(path: &str) -> Option<Vec<Event>> {
        let (_f, mut q) = queue_on(path, 2)?;
        q.register().unwrap();
        let mut events = Vec::new();
        while q.live_entries() > 0 {
            q.wait(&mut events).unwrap();
        }
        assert!(q.request(0).is_none());
        events.sort_by_key(|e| format!("{e:?}"));
        Some(events)
    }

    #[test]
    fn register_on_a_file_without_ring_commands_ends_every_entry() {
        // /dev/zero has no uring_cmd: io_uring fails the command itself.
        let Some(events) = ended_entries("/dev/zero") else {
            return;
        };
        let ended = |slot| Event::Ended {
            slot,
            errno: libc::EOPNOTSUPP,
        };
        assert_eq!(events, [ended(0), ended(1)]);
    }

    #[test]
    fn a_completion_without_a_request_id_retires_the_entry_instead_of_serving_it() {
        // /dev/null's uring_cmd completes every command at once with 0, leaving the
        // header zeroed: commit_id 0, which no commit could answer.
        let Some(events) = ended_entries("/dev/null") else {
            return;
        };
        let ended = |slot| Event::Ended {
            slot,
            errno: libc::EPROTO,
        };
        assert_eq!(events, [ended(0), ended(1)]);
    }

    #[test]
    fn a_stopper_wakes_a_waiting_queue_from_another_thread() {
        let Some((_f, mut q)) = queue_on("/dev/zero", 1) else {
            return;
        };
        q.register().unwrap();
        let stopper = q.stopper().unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            stopper.stop().unwrap();
        });
        let mut events = Vec::new();
        while !events.contains(&Event::Stopped) {
            q.wait(&mut events).unwrap();
        }
        t.join().unwrap();
    }

    /// Registers a queue on /dev/zero (its entries end at once), rings its stopper from
    /// another thread 50 ms later and waits until the stop arrives.
    fn wait_for_a_late_stop(poll: Duration) -> Option<Queue> {
        let (_f, mut q) = polling_queue_on("/dev/zero", 1, poll)?;
        q.register().unwrap();
        let stopper = q.stopper().unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            stopper.stop().unwrap();
        });
        let mut events = Vec::new();
        while !events.contains(&Event::Stopped) {
            q.wait(&mut events).unwrap();
        }
        t.join().unwrap();
        Some(q)
    }

    #[test]
    fn a_polling_queue_finds_its_next_completion_without_sleeping() {
        // The window (a minute) outlasts the stop's delay: the wait that gets it must
        // have looked, yielded and looked again, never slept.
        let Some(q) = wait_for_a_late_stop(Duration::from_secs(60)) else {
            return;
        };
        assert_eq!(q.sleeps(), 0);
    }

    #[test]
    fn a_queue_without_a_poll_window_sleeps_for_its_next_completion() {
        let Some(q) = wait_for_a_late_stop(Duration::ZERO) else {
            return;
        };
        assert!(q.sleeps() >= 1);
    }

    /// The state letter of thread `tid` of this process (`/proc/self/task/TID/stat`).
    fn thread_state(tid: i32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.chars().next()
    }

    #[test]
    fn a_polling_queue_sleeps_once_its_window_has_passed() {
        // An idle mount must not spin: with a 1 ms window and nothing arriving, the
        // waiting thread goes to sleep in the kernel. The stop is rung only once the
        // thread is seen sleeping (or after 10 s, when the wait can only have polled).
        let Some((_f, mut q)) = polling_queue_on("/dev/zero", 1, Duration::from_millis(1)) else {
            return;
        };
        q.register().unwrap();
        let mut events = Vec::new();
        q.wait(&mut events).unwrap(); // the entry's REGISTER ends at once
        let before = q.sleeps();
        let stopper = q.stopper().unwrap();
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let t = std::thread::spawn(move || {
            let give_up = Instant::now() + Duration::from_secs(10);
            while thread_state(tid) != Some('S') && Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(1));
            }
            stopper.stop().unwrap();
        });
        while !events.contains(&Event::Stopped) {
            q.wait(&mut events).unwrap();
        }
        t.join().unwrap();
        assert_eq!(q.sleeps() - before, 1);
    }

    #[test]
    fn commit_without_a_request_in_the_entry_is_refused() {
        let Some((_f, mut q)) = queue_on("/dev/zero", 1) else {
            return;
        };
        let e = q.commit(0, 0, |_| 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        let e = q.commit(1, 0, |_| 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn answering_in_place_without_a_request_in_the_entry_is_refused_unserved() {
        let Some((_f, mut q)) = queue_on("/dev/zero", 1) else {
            return;
        };
        let mut called = false;
        let e = q
            .answer_in_place(0, |_, _, _| {
                called = true;
                Ok(0)
            })
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        assert!(!called, "the handler never sees buffers the kernel may own");
    }

    #[test]
    fn ring_buffers_are_page_aligned_and_zeroed() {
        let b = RingBuf::new(REQ_HEADER_SIZE).unwrap();
        assert_eq!(b.ptr.as_ptr() as usize % BUF_ALIGN, 0);
        // SAFETY: no kernel has seen this buffer.
        assert!(unsafe { b.bytes() }.iter().all(|&x| x == 0));
        assert_eq!(b.iovec().iov_len, REQ_HEADER_SIZE);
    }
}
