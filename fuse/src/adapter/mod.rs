//! The FUSE adapter: serves a [`DaxFs`] over FUSE, transport-neutral.
//!
//! Requests come in as [`Ctx`] + [`Op`] (decoded arguments) and go out as [`Reply`]
//! values through a [`ReplySink`]: [`FuseAdapter::serve`] (module `serve`) holds the
//! policy of every request, and a transport only translates. Today's transport is
//! fuser's /dev/fuse loop (`fuser_shim`: `impl fuser::Filesystem`, fuser's arguments to
//! [`Op`], [`Reply`] to fuser's reply calls); the io_uring queues (`crate::uring`) map
//! their decoded requests onto the same [`Op`] and encode the same [`Reply`]. Modules:
//! `request` ([`Ctx`], [`Op`]), `reply` ([`Reply`], [`ReplySink`], [`ReadData`]),
//! `serve` (the policy), `handles` (file handles and their pins), `ioctls` (the ioctl
//! dispatch and argument codecs), `notify` (lease-break polls, cache invalidation),
//! `convert` and `fuser_shim` (fuser's types; nowhere else).
//!
//! Thin by design (docs/DESIGN.md, "Layers"): every request becomes one core call and every core
//! [`Errno`](daxfs::Errno) becomes the reply's errno. What lives here is only what FUSE
//! itself asks for:
//!
//! - connection setup in `init` (capabilities, maximum request sizes);
//! - the per-open kernel caching decision (`FOPEN_DIRECT_IO` when the inode must bypass
//!   the kernel page cache, [`DaxFs::kernel_may_cache`]);
//! - file handles: the low 32 bits of a handle are the open(2) flags of the open, the high
//!   32 bits a serial number that makes it unique; the long-term pins taken through a
//!   handle (DAXFS_IOC_PIN) are kept per handle and released with it (`release` arrives
//!   when the last descriptor of the open file is closed, also when its process is
//!   killed), so a dead pin holder never blocks a truncate for long;
//! - the daxfs ioctls (`crate::ioctl`, `include/daxfs_ioctl.h`): PIN (on behalf of the
//!   caller, [`PinHolder::of_process`](daxfs::PinHolder::of_process), under the mount's pin policy), UNPIN, PIN_STATUS,
//!   STATS; and `poll`, which reports POLLPRI on a handle once a layout break asked for one
//!   of its pins (or revoked one): a lease-break notifier thread sends FUSE_NOTIFY_POLL;
//! - requests that may wait for pins (truncate, open and create with O_TRUNC, fallocate):
//!   tried on the worker without sleeping, and only if they would, answered from a waiter
//!   thread (`crate::deferred`), so that no worker ever sleeps on a pin;
//! - requests that allocate (write, create, mknod, mkdir, symlink, link, rename,
//!   fallocate, setxattr, copy_file_range) and found no space while a removed file's
//!   RELEASE or FORGET, which the kernel sends asynchronously, may still free some: a
//!   waiter thread waits for that free (bounded, `SPACE_WAIT` in `serve`) and retries;
//! - dropping the kernel's cached pages when break_layouts frees a range of a file the
//!   kernel may cache (a notifier thread sends FUSE_NOTIFY_INVAL_INODE);
//! - reply shaping: xattr size probes, directory buffers, `struct fsxattr` for
//!   FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR and the flags word of FS_IOC_GETFLAGS /
//!   FS_IOC_SETFLAGS (lsattr, chattr +i +a +x) carrying the core's [`InodeFlags`](daxfs::InodeFlags); the
//!   label's `char[256]` of FS_IOC_GETFSLABEL / FS_IOC_SETFSLABEL and the
//!   `struct fstrim_range` of FITRIM. All are restricted ioctls (the number carries the
//!   argument's size), so the kernel copies them in and out by itself.
//!
//! Notes on kernel behaviour this relies on:
//! - POSIX ACLs: FUSE_POSIX_ACL is negotiated, so the kernel enforces ACLs (it reads
//!   `system.posix_acl_*` through getxattr, implies default_permissions) and checks who may
//!   set them; the core keeps the mode in line and does inheritance ([`daxfs::acl`]).
//! - umask: with FUSE_POSIX_ACL the kernel leaves the umask to the filesystem, so
//!   FUSE_DONT_MASK is negotiated with it: mknod/mkdir/create get the mode asked for and
//!   the umask separately. The umask is applied here unless the parent directory has a
//!   default ACL, which replaces it (the core then masks the mode by the ACL). When the
//!   kernel offers neither, it applies the umask itself before sending.
//! - O_APPEND: without the writeback cache, the kernel computes the write offset from its
//!   cached i_size and sends the file's current `f_flags` with every write; the core is
//!   told `append` when those flags hold O_APPEND so it appends at the true EOF. With the
//!   writeback cache (dax=never) the kernel owns the offset and writes come from the page
//!   cache (FUSE_WRITE_CACHE), so `append` is never set.
//! - Data reads: [`DaxFs::read_with`] hands out volatile views of the device mapping; a
//!   range in one piece is replied straight from the mapping (zero copy). fuser 0.18 has
//!   no vectored data reply and its `ReplyData::data` takes a `&[u8]`, so that one piece
//!   becomes a slice for the call (the only Rust reference into device memory, see the
//!   SAFETY comment in `serve`'s `read`), and a range in several pieces (fragmented extents,
//!   holes) is gathered into one buffer first.

mod convert;
mod fuser_shim;
mod handles;
mod ioctls;
pub mod node;
mod notify;
mod reply;
mod request;
mod serve;

pub use convert::{ctx, errno, file_attr, file_type, set_time, wire_time};
pub use handles::{handle_flags, handle_for};
pub use ioctls::*;
pub use reply::{
    gather, xattr_answer, DirEntry, NoReply, ReadData, Reply, ReplySink, Served, XattrAnswer,
    FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, FOPEN_PARALLEL_DIRECT_WRITES,
};
pub use request::{Ctx, Op, PollWaker, FUSE_POLL_SCHEDULE_NOTIFY, FUSE_WRITE_CACHE};
pub use serve::{open_reply_flags, write_appends};

use crate::busy_poll::BusyPoll;
use crate::deferred::Waiters;
use daxfs::{DaxFs, DaxMode};
use handles::PinTable;
use notify::{cache_invalidator, follow_invalidator, lease_break_notifier, PollTable};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

/// How long the kernel may trust entries and attributes it was given. Every change goes
/// through this kernel, so the TTL only bounds staleness from changes the core makes on
/// its own (orphan reclaim, layout breaks); precise invalidation comes with the notifier.
/// How long the kernel may trust entries and attributes it was given. daxfs is the only
/// writer of its device (the daemon holds it exclusively), every change through the
/// mount comes back to the kernel in the reply or is invalidated by the kernel itself,
/// and the few changes daxfs makes on its own (atime, set-id bits cleared by a write,
/// dropped pages after a layout break) are sent as notifications: a long TTL is safe
/// and saves a GETATTR/LOOKUP round trip per path component and permission check.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Where the session's [`fuser::Notifier`] is put once the session exists, so that cache
/// invalidations can be sent to the kernel later.
pub type NotifierSlot = Arc<Mutex<Option<fuser::Notifier>>>;

/// Where the session's [`BusyPoll`] is put once the session exists (it needs the
/// session's device descriptor); workers report every request to it.
pub type BusyPollSlot = Arc<OnceLock<Arc<BusyPoll>>>;

/// The kernel's cap on pages per request when /proc/sys/fs/fuse/max_pages_limit is absent
/// (FUSE_MAX_MAX_PAGES before Linux 6.13).
const DEFAULT_MAX_PAGES: u32 = 256;

/// A copy_file_range reply carries a u32 byte count; stay below it, page aligned.
const MAX_COPY_CHUNK: u64 = 0xffff_f000;

/// Directory entries fetched per batch in readdirplus (see there).
const READDIRPLUS_BATCH: usize = 64;

/// FUSE_INIT capability bits (the kernel's `FUSE_*` init flags, include/uapi/linux/fuse.h)
/// the adapter asks for; see [`FuseAdapter::init_flags_wanted`].
pub mod init_flags {
    pub const FUSE_ASYNC_READ: u64 = 1 << 0;
    pub const FUSE_ATOMIC_O_TRUNC: u64 = 1 << 3;
    pub const FUSE_EXPORT_SUPPORT: u64 = 1 << 4;
    pub const FUSE_BIG_WRITES: u64 = 1 << 5;
    pub const FUSE_DONT_MASK: u64 = 1 << 6;
    pub const FUSE_HAS_IOCTL_DIR: u64 = 1 << 11;
    pub const FUSE_AUTO_INVAL_DATA: u64 = 1 << 12;
    pub const FUSE_DO_READDIRPLUS: u64 = 1 << 13;
    pub const FUSE_READDIRPLUS_AUTO: u64 = 1 << 14;
    pub const FUSE_WRITEBACK_CACHE: u64 = 1 << 16;
    pub const FUSE_PARALLEL_DIROPS: u64 = 1 << 18;
    pub const FUSE_POSIX_ACL: u64 = 1 << 20;
    pub const FUSE_MAX_PAGES: u64 = 1 << 22;
    pub const FUSE_CACHE_SYMLINKS: u64 = 1 << 23;
    pub const FUSE_DIRECT_IO_ALLOW_MMAP: u64 = 1 << 36;
    /// Asked for only with `-o io_uring` ([`FuseAdapter::want_io_uring`](super::FuseAdapter::want_io_uring)).
    pub const FUSE_OVER_IO_URING: u64 = 1 << 41;
}

/// What `init` learnt for the io_uring transport when the kernel granted
/// FUSE_OVER_IO_URING: the wire protocol, the payload size REGISTER needs, and an
/// adapter sharing every piece of state with the one in the fuser session.
pub struct RingGrant {
    pub proto: crate::uring::request::Proto,
    pub payload_size: usize,
    pub adapter: Arc<FuseAdapter>,
}

/// Where `init` leaves the [`RingGrant`] (or why there is none) for the mount.
pub type RingSlot = Arc<OnceLock<Result<RingGrant, String>>>;

/// Where the served filesystem is (see [`FuseAdapter::fs_cell`]).
pub type FsCell = Arc<RwLock<Arc<DaxFs>>>;

/// A [`DaxFs`] served over FUSE (see the module doc).
pub struct FuseAdapter {
    /// The filesystem served: swapped whole by a promotion (DAXFS_IOC_PROMOTE), shared
    /// with the io_uring twin and the daemon (which shuts down whichever is in it).
    fs: FsCell,
    ttl: Duration,
    /// FUSE_WRITEBACK_CACHE was negotiated in `init`.
    writeback: bool,
    /// FUSE_DONT_MASK was negotiated: the umask is ours to apply.
    dont_mask: bool,
    notifier: NotifierSlot,
    /// Serial of the next file handle (its high 32 bits); shared with the ring's twin.
    next_handle: Arc<AtomicU64>,
    /// Long-term pins by file handle.
    pins: PinTable,
    /// The pending poll of each file handle that asked to be notified (FUSE keeps one
    /// poll handle per open file), for the lease-break notifier.
    polls: PollTable,
    busy_poll: BusyPollSlot,
    /// Where requests that must wait for pins wait (`serve`'s `defer`).
    waiters: Arc<Waiters>,
    /// `-o io_uring`: ask for FUSE_OVER_IO_URING in `init`.
    want_uring: bool,
    ring: RingSlot,
    /// Requests are served over the io_uring queues (for `daxfs stats`).
    on_ring: Arc<AtomicBool>,
    /// Held by the one promotion running (DAXFS_IOC_PROMOTE); shared with the twin.
    promoting: Arc<Mutex<()>>,
}

impl FuseAdapter {
    pub fn new(fs: Arc<DaxFs>) -> FuseAdapter {
        let notifier: NotifierSlot = Arc::new(Mutex::new(None));
        let pins: PinTable = Arc::new(Mutex::new(HashMap::new()));
        let polls: PollTable = Arc::new(Mutex::new(HashMap::new()));
        let a = FuseAdapter {
            fs: Arc::new(RwLock::new(fs.clone())),
            ttl: DEFAULT_TTL,
            writeback: false,
            dont_mask: false,
            notifier,
            next_handle: Arc::new(AtomicU64::new(1)),
            pins,
            polls,
            busy_poll: Arc::new(OnceLock::new()),
            waiters: Arc::new(Waiters::default()),
            want_uring: false,
            ring: Arc::new(OnceLock::new()),
            on_ring: Arc::new(AtomicBool::new(false)),
            promoting: Arc::new(Mutex::new(())),
        };
        a.install_notifiers(&fs);
        a
    }

    /// The hooks through which `fs` tells the kernel what to drop (pages and attributes
    /// the core changed, a follower's refreshes) and breaks pin leases.
    fn install_notifiers(&self, fs: &Arc<DaxFs>) {
        fs.set_cache_invalidator(Some(cache_invalidator(
            self.notifier.clone(),
            Arc::downgrade(fs),
        )));
        fs.set_follow_notifier(Some(follow_invalidator(self.notifier.clone())));
        fs.set_lease_break_notifier(Some(lease_break_notifier(
            self.pins.clone(),
            self.polls.clone(),
        )));
    }

    /// `-o io_uring`: `init` asks for FUSE_OVER_IO_URING and leaves what it got in
    /// [`ring_slot`](Self::ring_slot).
    pub fn want_io_uring(&mut self, want: bool) {
        self.want_uring = want;
    }

    /// Where `init` puts the io_uring grant; taken before the adapter moves into the
    /// session.
    pub fn ring_slot(&self) -> RingSlot {
        self.ring.clone()
    }

    /// Set while the io_uring queues serve requests (`daxfs stats`' transport line).
    pub fn on_ring_flag(&self) -> Arc<AtomicBool> {
        self.on_ring.clone()
    }

    /// Whether requests go over the io_uring queues.
    pub fn on_ring(&self) -> bool {
        self.on_ring.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A second adapter over the same state (filesystem, handles, pins, polls, waiters,
    /// notifier, negotiated flags) for the io_uring queues, the first staying with fuser.
    fn twin(&self) -> FuseAdapter {
        FuseAdapter {
            fs: self.fs.clone(),
            ttl: self.ttl,
            writeback: self.writeback,
            dont_mask: self.dont_mask,
            notifier: self.notifier.clone(),
            next_handle: self.next_handle.clone(),
            pins: self.pins.clone(),
            polls: self.polls.clone(),
            busy_poll: self.busy_poll.clone(),
            waiters: self.waiters.clone(),
            want_uring: false,
            ring: Arc::new(OnceLock::new()),
            on_ring: self.on_ring.clone(),
            promoting: self.promoting.clone(),
        }
    }

    /// The slot for the session's busy polling (see [`BusyPollSlot`]).
    pub fn busy_poll_slot(&self) -> BusyPollSlot {
        self.busy_poll.clone()
    }

    /// Every request handler starts here: keeps busy polling going while requests come.
    fn arrived(&self) {
        if let Some(p) = self.busy_poll.get() {
            p.note_request();
        }
    }

    /// The waiter threads of requests waiting for pins, taken before the adapter is moved
    /// into the session: they can outlive it, and the filesystem is shut down only after
    /// them ([`Waiters::wait_idle`]).
    pub fn waiters(&self) -> Arc<Waiters> {
        self.waiters.clone()
    }

    /// The slot to store the session's notifier in (`session.notifier()`), taken before the
    /// adapter is moved into the session.
    pub fn notifier_slot(&self) -> NotifierSlot {
        self.notifier.clone()
    }

    /// The filesystem served now (a promotion may swap it: each request takes it once).
    pub fn fs(&self) -> Arc<DaxFs> {
        self.fs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The cell the served filesystem is in, for the daemon (taken before the adapter
    /// moves into the session): at unmount it shuts down whichever filesystem is in it.
    pub fn fs_cell(&self) -> FsCell {
        self.fs.clone()
    }

    /// The largest write (and read) to ask the kernel for: as large as it allows, fewer
    /// round trips per large request.
    pub fn max_write_wanted(&self) -> u32 {
        kernel_max_pages().saturating_mul(page_size())
    }

    /// The FUSE_INIT capabilities to ask for ([`init_flags`]); the transport grants those
    /// the kernel offers and reports them back with [`negotiated`](Self::negotiated).
    pub fn init_flags_wanted(&self) -> u64 {
        use init_flags::*;
        let dax = self.fs().options().dax;
        let mut want = FUSE_ASYNC_READ
            | FUSE_BIG_WRITES
            | FUSE_MAX_PAGES
            | FUSE_DO_READDIRPLUS
            | FUSE_READDIRPLUS_AUTO
            | FUSE_PARALLEL_DIROPS
            | FUSE_ATOMIC_O_TRUNC
            | FUSE_EXPORT_SUPPORT
            | FUSE_CACHE_SYMLINKS
            | FUSE_HAS_IOCTL_DIR
            // Shared mmap of FOPEN_DIRECT_IO files (Linux 6.6+); without it mmap(MAP_SHARED)
            // of a file under dax=always fails with ENODEV.
            | FUSE_DIRECT_IO_ALLOW_MMAP
            // The kernel enforces ACLs; the umask becomes ours (see the module doc).
            | FUSE_POSIX_ACL
            | FUSE_DONT_MASK;
        if dax != DaxMode::Always {
            // Cached data is dropped when the attributes say the file changed.
            want |= FUSE_AUTO_INVAL_DATA;
        }
        if dax == DaxMode::Never {
            want |= FUSE_WRITEBACK_CACHE;
        }
        want
    }

    /// The capabilities the connection was granted (of those asked for).
    pub fn negotiated(&mut self, granted: u64) {
        self.writeback = granted & init_flags::FUSE_WRITEBACK_CACHE != 0;
        self.dont_mask = granted & init_flags::FUSE_DONT_MASK != 0;
    }
}

fn lock_ignoring_poison<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pages per request the kernel accepts (fs.fuse.max_pages_limit, Linux 6.13+).
fn kernel_max_pages() -> u32 {
    std::fs::read_to_string("/proc/sys/fs/fuse/max_pages_limit")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n: &u32| n > 0)
        .unwrap_or(DEFAULT_MAX_PAGES)
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}
