//! The FUSE adapter: serves a [`DaxFs`] through fuser.
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
//!   caller, [`PinHolder::of_process`], under the mount's pin policy), UNPIN, PIN_STATUS,
//!   STATS; and `poll`, which reports POLLPRI on a handle once a layout break asked for one
//!   of its pins (or revoked one): a lease-break notifier thread sends FUSE_NOTIFY_POLL;
//! - requests that may wait for pins (truncate, open and create with O_TRUNC, fallocate):
//!   tried on the worker without sleeping, and only if they would, answered from a waiter
//!   thread (`crate::deferred`), so that no worker ever sleeps on a pin;
//! - requests that allocate (write, create, mknod, mkdir, symlink, link, rename,
//!   fallocate, setxattr, copy_file_range) and found no space while a removed file's
//!   RELEASE or FORGET, which the kernel sends asynchronously, may still free some: a
//!   waiter thread waits for that free (bounded, `SPACE_WAIT`) and retries;
//! - dropping the kernel's cached pages when break_layouts frees a range of a file the
//!   kernel may cache (a notifier thread sends FUSE_NOTIFY_INVAL_INODE);
//! - reply shaping: xattr size probes, directory buffers, `struct fsxattr` for
//!   FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR and the flags word of FS_IOC_GETFLAGS /
//!   FS_IOC_SETFLAGS (lsattr, chattr +i +a +x) carrying the core's [`InodeFlags`]; the
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
//!   SAFETY comment in `read`), and a range in several pieces (fragmented extents,
//!   holes) is gathered into one buffer first.

use crate::busy_poll::BusyPoll;
use crate::deferred::Waiters;
use crate::ioctl::{
    ioc, PinArg, PinStatus, DAXFS_IOC_PIN, DAXFS_IOC_PIN_STATUS, DAXFS_IOC_STATS, DAXFS_IOC_UNPIN,
    DAXFS_PIN_STATUS_SIZE, DAXFS_STATS_SIZE, IOC_READ, IOC_WRITE,
};
use daxfs::Errno as CoreErrno;
use daxfs::InodeFlags;
use daxfs::{to_system_time, Attr, Cred, DaxMode, FileKind, SetAttr, SetTime};
use daxfs::{DaxFs, SEEK_DATA, SEEK_HOLE};
use daxfs::{PinHolder, RangePin};
use daxfs_pmem::VolatileSlice;
use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, PollEvents,
    PollFlags, PollNotifier, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyPoll,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

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

/// ioctl numbers of `struct fsxattr` (linux/fs.h): `_IOR('X', 31, struct fsxattr)` and
/// `_IOW('X', 32, struct fsxattr)`.
pub const FS_IOC_FSGETXATTR: u32 = ioc(IOC_READ, b'X' as u32, 31, FSXATTR_SIZE as u32);
pub const FS_IOC_FSSETXATTR: u32 = ioc(IOC_WRITE, b'X' as u32, 32, FSXATTR_SIZE as u32);
/// `struct fsxattr` is five u32 fields and 8 bytes of padding.
pub const FSXATTR_SIZE: usize = 28;
pub const FS_XFLAG_DAX: u32 = 0x0000_8000;
/// ioctl numbers of the inode flags word (linux/fs.h, what lsattr/chattr use):
/// `_IOR('f', 1, long)` and `_IOW('f', 2, long)`. The kernel's FUSE client sends them with
/// an `unsigned int` argument.
pub const FS_IOC_GETFLAGS: u32 = ioc(IOC_READ, b'f' as u32, 1, LONG_SIZE);
pub const FS_IOC_SETFLAGS: u32 = ioc(IOC_WRITE, b'f' as u32, 2, LONG_SIZE);
const LONG_SIZE: u32 = std::mem::size_of::<libc::c_long>() as u32;
/// `chattr +x`: the inode's DAX flag, the same bit as FS_XFLAG_DAX in the flags word.
pub const FS_DAX_FL: u32 = 0x0200_0000;

/// The kernel's cap on pages per request when /proc/sys/fs/fuse/max_pages_limit is absent
/// (FUSE_MAX_MAX_PAGES before Linux 6.13).
const DEFAULT_MAX_PAGES: u32 = 256;

/// A copy_file_range reply carries a u32 byte count; stay below it, page aligned.
const MAX_COPY_CHUNK: u64 = 0xffff_f000;

/// Directory entries fetched per batch in readdirplus (see there).
const READDIRPLUS_BATCH: usize = 64;

/// How long a request that found no space waits in all for removed files to be freed
/// ([`FuseAdapter::wait_for_space`]): the kernel's RELEASE and FORGET that free them are
/// on their way and arrive within microseconds to milliseconds, so this is only the bound
/// for a loaded machine. A removed file some process holds open costs one such wait per
/// change of the set of removed-but-referenced files (`DaxFs::wait_for_orphan_free`).
const SPACE_WAIT: Duration = Duration::from_millis(500);

/// A [`DaxFs`] served through fuser.
pub struct FuseAdapter {
    fs: Arc<DaxFs>,
    ttl: Duration,
    /// FUSE_WRITEBACK_CACHE was negotiated in `init`.
    writeback: bool,
    /// FUSE_DONT_MASK was negotiated: the umask is ours to apply.
    dont_mask: bool,
    notifier: NotifierSlot,
    /// Serial of the next file handle (its high 32 bits).
    next_handle: AtomicU64,
    /// Long-term pins by file handle.
    pins: PinTable,
    /// The pending poll of each file handle that asked to be notified (FUSE keeps one
    /// poll handle per open file), for the lease-break notifier.
    polls: PollTable,
    busy_poll: BusyPollSlot,
    /// Where requests that must wait for pins wait (see [`FuseAdapter::defer`]).
    waiters: Arc<Waiters>,
}

impl FuseAdapter {
    pub fn new(fs: Arc<DaxFs>) -> FuseAdapter {
        let notifier: NotifierSlot = Arc::new(Mutex::new(None));
        fs.set_cache_invalidator(Some(cache_invalidator(notifier.clone())));
        let pins: PinTable = Arc::new(Mutex::new(HashMap::new()));
        let polls: PollTable = Arc::new(Mutex::new(HashMap::new()));
        fs.set_lease_break_notifier(Some(lease_break_notifier(pins.clone(), polls.clone())));
        FuseAdapter {
            fs,
            ttl: DEFAULT_TTL,
            writeback: false,
            dont_mask: false,
            notifier,
            next_handle: AtomicU64::new(1),
            pins,
            polls,
            busy_poll: Arc::new(OnceLock::new()),
            waiters: Arc::new(Waiters::default()),
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

    /// A new file handle for an open with open(2) `flags`.
    fn new_handle(&self, flags: i32) -> FileHandle {
        let serial = self.next_handle.fetch_add(1, Ordering::Relaxed);
        FileHandle((serial << 32) | handle_for(flags).0)
    }

    /// Hands a request whose `try_*` attempt found a pinned block to a waiter thread
    /// (`crate::deferred`), where `op` repeats it, waiting allowed, and replies. The
    /// worker returns at once: the request that ends the wait (UNPIN, or the release of
    /// the pin holder's handle) needs a free worker, and so does everyone else. Past the
    /// bounds on waiters (in all, and of the request's user) the request is answered
    /// EBUSY at once, nothing changed.
    fn defer<R: ReplyError + Send + 'static>(
        &self,
        req: &Request,
        reply: R,
        op: impl FnOnce(R) + Send + 'static,
    ) {
        if let Err(reply) = self.waiters.run(req.uid(), reply, op) {
            reply.fail(Errno::EBUSY);
        }
    }

    /// DAXFS_IOC_PIN on handle `fh`, for `holder` (the caller).
    fn ioctl_pin(&self, ino: u64, fh: u64, arg: PinArg, holder: &PinHolder) -> Result<(), Errno> {
        let pin = self
            .fs
            .pin_range_for(ino, arg.offset, arg.length, holder)
            .map_err(errno)?;
        lock_ignoring_poison(&self.pins)
            .entry(fh)
            .or_default()
            .push(pin);
        Ok(())
    }

    /// DAXFS_IOC_UNPIN on handle `fh`: releases one pin of exactly that range (a held
    /// one first); ECANCELED when that pin had been revoked (it is given back all the
    /// same), so that a holder learns that it did not hold the range all along.
    fn ioctl_unpin(&self, fh: u64, arg: PinArg) -> Result<(), Errno> {
        let pin = {
            let mut table = lock_ignoring_poison(&self.pins);
            let list = table.get_mut(&fh).ok_or(Errno::EINVAL)?;
            let same = |p: &RangePin| p.offset() == arg.offset && p.len() == arg.length;
            let i = list
                .iter()
                .position(|p| same(p) && !p.revoked())
                .or_else(|| list.iter().position(same))
                .ok_or(Errno::EINVAL)?;
            let pin = list.swap_remove(i);
            if list.is_empty() {
                table.remove(&fh);
            }
            pin
        };
        let revoked = pin.revoked();
        self.fs.unpin_range(pin);
        if revoked {
            return Err(Errno::from_i32(libc::ECANCELED));
        }
        Ok(())
    }

    /// DAXFS_IOC_PIN_STATUS on handle `fh`.
    fn pin_status(&self, fh: u64) -> PinStatus {
        let table = lock_ignoring_poison(&self.pins);
        let mut st = PinStatus::default();
        for p in table.get(&fh).into_iter().flatten() {
            st.pins += 1;
            st.breaking += u64::from(p.break_requested());
            st.revoked += u64::from(p.revoked());
        }
        st
    }

    /// Releases every pin of handle `fh` (the handle is being released).
    fn release_pins(&self, fh: u64) {
        lock_ignoring_poison(&self.polls).remove(&fh);
        let pins = lock_ignoring_poison(&self.pins).remove(&fh);
        for pin in pins.into_iter().flatten() {
            self.fs.unpin_range(pin);
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

    pub fn fs(&self) -> &Arc<DaxFs> {
        &self.fs
    }

    /// Replies with an entry, counting the kernel's new reference to it first (the
    /// kernel will forget it later; see [`DaxFs::remember`]).
    fn entry(&self, reply: ReplyEntry, r: daxfs::Result<Attr>) {
        answer_entry(&self.fs, reply, r, &self.ttl)
    }

    /// The entry reply of a request that may have found no space: `r` is the result of
    /// its first try, `retry` repeats it (see [`wait_for_space`](Self::wait_for_space)).
    fn entry_or_wait(
        &self,
        req: &Request,
        reply: ReplyEntry,
        token: u64,
        r: daxfs::Result<Attr>,
        retry: impl FnMut(&DaxFs) -> daxfs::Result<Attr> + Send + 'static,
    ) {
        if !self.space_may_come(&r, token) {
            return self.entry(reply, r);
        }
        let ttl = self.ttl;
        self.wait_for_space(req, reply, token, retry, move |fs, reply, r| {
            answer_entry(fs, reply, r, &ttl)
        });
    }

    /// Whether a request that gave `r` found no space that a removed file is about to
    /// give back: with FUSE, the kernel sends the RELEASE of a closed file and the FORGET
    /// of a removed one asynchronously, so they can arrive after the next request that
    /// needs their space — `rm f; echo data > p` on a full device failed with ENOSPC,
    /// where ext4 and tmpfs have freed the space before rm returns. `token` is
    /// `DaxFs::orphan_frees` taken before the request's first try.
    fn space_may_come<T>(&self, r: &daxfs::Result<T>, token: u64) -> bool {
        matches!(r, Err(e) if *e == CoreErrno::ENOSPC) && self.fs.orphan_free_may_come(token)
    }

    /// Hands a request that found no space while a removed file's free may be on its way
    /// ([`space_may_come`](Self::space_may_come)) to a waiter thread, as ext4 retries an
    /// allocation after the journal commit that frees blocks: there it waits for the free,
    /// holding no lock (`DaxFs::wait_for_orphan_free`), repeats the request with `retry`
    /// and answers the outcome with `answer`; at most [`SPACE_WAIT`] in all, then ENOSPC.
    /// The worker returns at once: the RELEASE or FORGET that ends the wait needs one.
    /// Past the bounds on waiters the request is answered ENOSPC at once.
    fn wait_for_space<R, T>(
        &self,
        req: &Request,
        reply: R,
        token: u64,
        mut retry: impl FnMut(&DaxFs) -> daxfs::Result<T> + Send + 'static,
        answer: impl FnOnce(&DaxFs, R, daxfs::Result<T>) + Send + 'static,
    ) where
        R: ReplyError + Send + 'static,
        T: 'static,
    {
        let fs = self.fs.clone();
        let job = move |reply: R| {
            let deadline = Instant::now() + SPACE_WAIT;
            let mut token = token;
            let mut r = Err(CoreErrno::ENOSPC);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || !fs.wait_for_orphan_free(token, left) {
                    break;
                }
                token = fs.orphan_frees();
                r = retry(&fs);
                if !matches!(r, Err(e) if e == CoreErrno::ENOSPC) {
                    break;
                }
            }
            answer(&fs, reply, r)
        };
        if let Err(reply) = self.waiters.run(req.uid(), reply, job) {
            reply.fail(Errno::ENOSPC);
        }
    }

    /// The mode a new inode in `parent` is created with: the umask applies unless the
    /// kernel already applied it or a default ACL in `parent` replaces it.
    fn create_mode(&self, parent: u64, mode: u32, umask: u32) -> u32 {
        if self.dont_mask && !self.fs.has_default_acl(parent) {
            mode & !(umask & 0o777)
        } else {
            mode
        }
    }

    /// Caching mode of a new open of `ino`.
    fn fopen_flags(&self, ino: u64) -> FopenFlags {
        open_reply_flags(self.fs.kernel_may_cache(ino))
    }

    /// `lookup` of "." and "..": the kernel sends them only for NFS export
    /// (FUSE_EXPORT_SUPPORT); the core's lookup deals in real names.
    fn lookup_dot(&self, parent: u64, name: &[u8]) -> Option<daxfs::Result<Attr>> {
        match name {
            b"." => Some(self.fs.getattr(parent)),
            b".." => {
                let mut dotdot = None;
                let r = self.fs.readdir(parent, 0, |e| {
                    if e.name == b".." {
                        dotdot = Some(e.ino);
                        return false;
                    }
                    true
                });
                Some(match (r, dotdot) {
                    (Err(e), _) => Err(e),
                    (Ok(()), Some(ino)) => self.fs.getattr(ino),
                    (Ok(()), None) => Err(CoreErrno::ENOENT),
                })
            }
            _ => None,
        }
    }
}

/// The replies of requests that may be deferred ([`FuseAdapter::defer`]), which answers
/// them with an errno when no waiter takes them.
trait ReplyError {
    fn fail(self, e: Errno);
}

macro_rules! reply_error {
    ($($t:ty),*) => {$(
        impl ReplyError for $t {
            fn fail(self, e: Errno) {
                self.error(e)
            }
        }
    )*};
}
reply_error!(
    ReplyAttr,
    ReplyOpen,
    ReplyCreate,
    ReplyEmpty,
    ReplyEntry,
    ReplyWrite
);

/// The reply to a request that made or found an entry, counting the kernel's new
/// reference to it first (the kernel will forget it later; see [`DaxFs::remember`]).
fn answer_entry(fs: &DaxFs, reply: ReplyEntry, r: daxfs::Result<Attr>, ttl: &Duration) {
    match r.and_then(|a| fs.remember(a.ino).map(|()| a)) {
        Ok(a) => reply.entry(ttl, &file_attr(&a), Generation(a.generation)),
        Err(e) => reply.error(errno(e)),
    }
}

/// The reply to a write or copy that gave `r`.
fn answer_written<N: TryInto<u32>>(reply: ReplyWrite, r: daxfs::Result<N>) {
    match r {
        // Never more than the request's size, which is at most max_write (u32).
        Ok(n) => reply.written(n.try_into().unwrap_or(u32::MAX)),
        Err(e) => reply.error(errno(e)),
    }
}

/// The reply to a request that answers nothing but its outcome.
fn answer_empty(reply: ReplyEmpty, r: daxfs::Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

/// The reply to a create that gave `r` (new handle `fh`), counting the kernel's new
/// reference to the entry first.
fn answer_create(
    fs: &DaxFs,
    reply: ReplyCreate,
    r: daxfs::Result<Attr>,
    ttl: &Duration,
    fh: FileHandle,
) {
    match r {
        Ok(a) => {
            if let Err(e) = fs.remember(a.ino) {
                // Removed by someone else before the reply: undo the open.
                let _ = fs.release(a.ino);
                return reply.error(errno(e));
            }
            let cache = open_reply_flags(fs.kernel_may_cache(a.ino));
            reply.created(ttl, &file_attr(&a), Generation(a.generation), fh, cache)
        }
        Err(e) => reply.error(errno(e)),
    }
}

fn lock_ignoring_poison<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Long-term pins by file handle.
type PinTable = Arc<Mutex<HashMap<u64, Vec<RangePin>>>>;
/// The poll to notify, by file handle.
type PollTable = Arc<Mutex<HashMap<u64, PollNotifier>>>;

/// Whether handle `fh`'s pins want their holder's attention (a break asked for one, or
/// revoked one): POLLPRI.
fn pins_need_attention(pins: &[RangePin]) -> bool {
    pins.iter().any(|p| p.break_requested() || p.revoked())
}

/// The hook break_layouts calls when it flags or revokes pins of an inode: it queues the
/// inode for a notifier thread (it is called with the inode's locks held), which wakes
/// the pending poll of every handle holding such a pin (FUSE_NOTIFY_POLL). The thread
/// ends when the hook is dropped.
fn lease_break_notifier(pins: PinTable, polls: PollTable) -> daxfs::LeaseBreakNotifier {
    let (tx, rx) = mpsc::channel::<u64>();
    let spawned = std::thread::Builder::new()
        .name("daxfs-lease".into())
        .spawn(move || {
            for ino in rx {
                let handles: Vec<u64> = lock_ignoring_poison(&pins)
                    .iter()
                    .filter(|(_, list)| {
                        list.iter().any(|p| p.ino() == ino) && pins_need_attention(list)
                    })
                    .map(|(fh, _)| *fh)
                    .collect();
                for fh in handles {
                    // A poll is woken once; the kernel polls again and registers anew.
                    let pending = lock_ignoring_poison(&polls).remove(&fh);
                    if let Some(ph) = pending {
                        // An error: the file was closed meanwhile; nobody to tell.
                        let _ = ph.notify();
                    }
                }
            }
        });
    let tx = spawned.ok().map(|_| Mutex::new(tx));
    Arc::new(move |ino| {
        if let Some(tx) = &tx {
            let _ = lock_ignoring_poison(tx).send(ino);
        }
    })
}

/// The hook break_layouts calls to drop the kernel's cached pages of a range: it queues
/// the range for a notifier thread, because it is called with inode locks held and the
/// kernel may need the filesystem to answer requests before the notification completes.
/// The thread ends when the hook is dropped (replaced, or the filesystem dropped).
fn cache_invalidator(slot: NotifierSlot) -> daxfs::CacheInvalidator {
    let (tx, rx) = mpsc::channel::<(u64, u64, u64)>();
    let spawned = std::thread::Builder::new()
        .name("daxfs-inval".into())
        .spawn(move || {
            for (ino, off, len) in rx {
                if let Some(n) = lock_ignoring_poison(&slot).as_ref() {
                    // u64::MAX: the attributes only (a negative offset for the kernel).
                    let off = if off == u64::MAX {
                        -1
                    } else {
                        i64::try_from(off).unwrap_or(i64::MAX)
                    };
                    // len 0 is "to the end of the file" for the kernel too.
                    let len = i64::try_from(len).unwrap_or(0);
                    // ENOENT: the kernel has no cache of this inode; nothing to drop.
                    let _ = n.inval_inode(INodeNo(ino), off, len);
                }
            }
        });
    let tx = spawned.ok().map(|_| Mutex::new(tx));
    Arc::new(move |ino, off, len| {
        if let Some(tx) = &tx {
            let _ = lock_ignoring_poison(tx).send((ino, off, len));
        }
    })
}

/// A core errno as fuser's.
pub fn errno(e: CoreErrno) -> Errno {
    Errno::from_i32(e.0)
}

/// Answers a failed fallocate. The kernel invalidates its caches only after a fallocate
/// that succeeded. A failed one may still have changed the file (the core commits partial
/// work: blocks allocated before ENOSPC, ends zeroed before a punch failed), so the kernel
/// drops the attributes (the core's fail_op) and, when data may have moved, the cached
/// pages.
fn fallocate_failed(fs: &DaxFs, ino: u64, mode: i32, e: CoreErrno, reply: ReplyEmpty) {
    let moves = libc::FALLOC_FL_PUNCH_HOLE
        | libc::FALLOC_FL_ZERO_RANGE
        | libc::FALLOC_FL_COLLAPSE_RANGE
        | libc::FALLOC_FL_INSERT_RANGE;
    if mode & moves != 0 {
        fs.invalidate_cached(ino, &(0..u64::MAX));
    }
    reply.error(errno(e))
}

pub fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
    }
}

pub fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: to_system_time(a.atime),
        mtime: to_system_time(a.mtime),
        ctime: to_system_time(a.ctime),
        crtime: to_system_time(a.btime),
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

pub fn cred(req: &Request) -> Cred {
    Cred {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

pub fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(wire_time(t)),
    }
}

/// The (seconds, nanoseconds) the kernel sent, from the SystemTime fuser made of them.
/// fuser 0.18 turns a negative wire time (s, ns) into `EPOCH - (|s| + ns)` instead of
/// `EPOCH - |s| + ns`; undo exactly that so times before 1970 keep their value.
pub fn wire_time(t: std::time::SystemTime) -> daxfs_format::Timespec {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(_) => daxfs::from_system_time(t),
        Err(e) => {
            let d = e.duration();
            daxfs_format::Timespec {
                sec: -(d.as_secs() as i64),
                nsec: d.subsec_nanos(),
            }
        }
    }
}

/// The file handle given to the kernel for an open with open(2) `flags`.
pub fn handle_for(flags: i32) -> FileHandle {
    FileHandle(u64::from(flags as u32))
}

/// The open(2) flags a handle was opened with.
pub fn handle_flags(fh: FileHandle) -> i32 {
    fh.0 as u32 as i32
}

/// `FOPEN_*` flags of an open reply: bypass the kernel page cache for DAX inodes (and let
/// their direct writes run in parallel; the core is thread-safe), keep the cache across
/// opens otherwise (every change goes through this kernel, so it stays valid).
pub fn open_reply_flags(kernel_may_cache: bool) -> FopenFlags {
    if kernel_may_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
    }
}

/// Whether a write must go to the true EOF. `req_flags` are the file's current flags as
/// the kernel sends them with each write (they follow fcntl(F_SETFL)); `fh_flags` those of
/// the open, used when the kernel sends none (ABI < 7.9).
pub fn write_appends(
    req_flags: i32,
    fh_flags: i32,
    write_flags: WriteFlags,
    writeback: bool,
) -> bool {
    if writeback || write_flags.contains(WriteFlags::FUSE_WRITE_CACHE) {
        // The kernel computed the offset itself (writeback cache), or this is a page
        // cache flush of some earlier write: its offset is exact.
        return false;
    }
    let flags = if req_flags != 0 { req_flags } else { fh_flags };
    flags & libc::O_APPEND != 0
}

/// The pieces of a read as one slice for the FUSE reply (fuser's `ReplyData::data` takes
/// nothing else): the piece's own bytes when there is at most one (zero copy), copied
/// into one buffer otherwise.
///
/// # Safety
/// As for [`VolatileSlice::as_bytes`]: nothing may store to the pieces' bytes while the
/// returned slice lives.
pub unsafe fn gather<'a>(pieces: &'a [VolatileSlice<'_>]) -> Cow<'a, [u8]> {
    match pieces {
        [] => Cow::Borrowed(&[]),
        // SAFETY: the caller's contract, per the doc.
        [one] => Cow::Borrowed(unsafe { one.as_bytes() }),
        many => {
            let mut buf = Vec::with_capacity(many.iter().map(|p| p.len()).sum());
            for p in many {
                p.append_to(&mut buf);
            }
            Cow::Owned(buf)
        }
    }
}

/// How an xattr value (or name list) answers a request with buffer `size`.
#[derive(Debug, PartialEq, Eq)]
pub enum XattrAnswer<'a> {
    /// `size` 0 is a probe: answer with the length.
    Size(u32),
    Data(&'a [u8]),
    /// The buffer is too small.
    Range,
}

pub fn xattr_answer(value: &[u8], size: u32) -> XattrAnswer<'_> {
    if size == 0 {
        match u32::try_from(value.len()) {
            Ok(n) => XattrAnswer::Size(n),
            Err(_) => XattrAnswer::Range,
        }
    } else if value.len() > size as usize {
        XattrAnswer::Range
    } else {
        XattrAnswer::Data(value)
    }
}

fn reply_xattr(reply: ReplyXattr, r: daxfs::Result<Vec<u8>>, size: u32) {
    match r {
        Err(e) => reply.error(errno(e)),
        Ok(v) => match xattr_answer(&v, size) {
            XattrAnswer::Size(n) => reply.size(n),
            XattrAnswer::Data(d) => reply.data(d),
            XattrAnswer::Range => reply.error(Errno::ERANGE),
        },
    }
}

/// `fsx_xflags` of chattr's immutable and append-only flags (linux/fs.h).
pub const FS_XFLAG_IMMUTABLE: u32 = 0x0000_0008;
pub const FS_XFLAG_APPEND: u32 = 0x0000_0010;
/// The same two in the FS_IOC_GETFLAGS word (`chattr +i`, `chattr +a`).
pub const FS_IMMUTABLE_FL: u32 = 0x0000_0010;
pub const FS_APPEND_FL: u32 = 0x0000_0020;

/// `FSLABEL_MAX` (linux/fs.h): the label ioctls' argument is a `char[256]`.
pub const FSLABEL_MAX: usize = 256;
/// `_IOR(0x94, 49, char[FSLABEL_MAX])` and `_IOW(0x94, 50, char[FSLABEL_MAX])`.
pub const FS_IOC_GETFSLABEL: u32 = crate::ioctl::ioc(2, 0x94, 49, FSLABEL_MAX as u32);
pub const FS_IOC_SETFSLABEL: u32 = crate::ioctl::ioc(1, 0x94, 50, FSLABEL_MAX as u32);
/// `struct fstrim_range { __u64 start, len, minlen; }` and `_IOWR('X', 121, it)`.
pub const FSTRIM_RANGE_SIZE: usize = 24;
pub const FITRIM: u32 = crate::ioctl::ioc(3, 0x58, 121, FSTRIM_RANGE_SIZE as u32);

/// One flags word from the chattr flags: `(dax, immutable, append)` bits of either the
/// FS_IOC_GETFLAGS word or `fsx_xflags`.
fn flag_word(f: InodeFlags, bits: (u32, u32, u32)) -> u32 {
    (if f.dax { bits.0 } else { 0 })
        | (if f.immutable { bits.1 } else { 0 })
        | (if f.append { bits.2 } else { 0 })
}

/// The chattr flags of a flags word; a bit the core does not keep is EOPNOTSUPP (what
/// tmpfs answers; ext4 silently drops a few it does not implement, such as
/// FS_COMPR_FL, and refuses the rest with EOPNOTSUPP too).
fn flags_of_word(w: u32, bits: (u32, u32, u32)) -> Result<InodeFlags, Errno> {
    if w & !(bits.0 | bits.1 | bits.2) != 0 {
        return Err(Errno::from_i32(libc::EOPNOTSUPP));
    }
    Ok(InodeFlags {
        dax: w & bits.0 != 0,
        immutable: w & bits.1 != 0,
        append: w & bits.2 != 0,
    })
}

const XFLAG_BITS: (u32, u32, u32) = (FS_XFLAG_DAX, FS_XFLAG_IMMUTABLE, FS_XFLAG_APPEND);
const FL_BITS: (u32, u32, u32) = (FS_DAX_FL, FS_IMMUTABLE_FL, FS_APPEND_FL);

/// `struct fsxattr` with only `fsx_xflags` set (the core keeps no extent size hints or
/// project ids).
pub fn encode_fsxattr(f: InodeFlags) -> [u8; FSXATTR_SIZE] {
    let mut b = [0u8; FSXATTR_SIZE];
    b[0..4].copy_from_slice(&flag_word(f, XFLAG_BITS).to_ne_bytes());
    b
}

/// The chattr flags an FS_IOC_FSSETXATTR argument asks for. Anything else it asks for
/// that the core does not keep (other xflags, extent size hints, project ids) is
/// EOPNOTSUPP, as ext4 answers for xflags it does not support; a short argument is
/// EINVAL.
pub fn decode_fsxattr(b: &[u8]) -> Result<InodeFlags, Errno> {
    if b.len() < FSXATTR_SIZE {
        return Err(Errno::EINVAL);
    }
    let word = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let (xflags, extsize, projid, cowextsize) = (word(0), word(4), word(12), word(16));
    if extsize != 0 || projid != 0 || cowextsize != 0 {
        return Err(Errno::from_i32(libc::EOPNOTSUPP));
    }
    flags_of_word(xflags, XFLAG_BITS)
}

/// The FS_IOC_GETFLAGS word of the chattr flags.
pub fn encode_inode_flags(f: InodeFlags) -> u32 {
    flag_word(f, FL_BITS)
}

/// The chattr flags an FS_IOC_SETFLAGS argument asks for. Any other flag is EOPNOTSUPP
/// (see [`flags_of_word`]); a short argument is EINVAL.
pub fn decode_inode_flags(b: &[u8]) -> Result<InodeFlags, Errno> {
    let Some(word) = b.get(..4) else {
        return Err(Errno::EINVAL);
    };
    flags_of_word(
        u32::from_ne_bytes([word[0], word[1], word[2], word[3]]),
        FL_BITS,
    )
}

/// The label of an FS_IOC_SETFSLABEL argument: up to its NUL. An argument without NUL in
/// FSLABEL_MAX bytes is EINVAL (as the kernel's `strnlen` check), as is a short one.
pub fn decode_label(b: &[u8]) -> Result<&[u8], Errno> {
    let b = b.get(..FSLABEL_MAX).ok_or(Errno::EINVAL)?;
    let end = b.iter().position(|&c| c == 0).ok_or(Errno::EINVAL)?;
    Ok(&b[..end])
}

/// A `struct fstrim_range` as (start, len, minlen); None when short.
pub fn decode_fstrim_range(b: &[u8]) -> Option<(u64, u64, u64)> {
    let word =
        |i: usize| -> Option<u64> { Some(u64::from_ne_bytes(b.get(i..i + 8)?.try_into().ok()?)) };
    Some((word(0)?, word(8)?, word(16)?))
}

/// The `struct fstrim_range` FITRIM answers: `len` becomes the bytes trimmed.
pub fn encode_fstrim_range(start: u64, trimmed: u64, minlen: u64) -> [u8; FSTRIM_RANGE_SIZE] {
    let mut b = [0u8; FSTRIM_RANGE_SIZE];
    for (i, w) in [start, trimmed, minlen].iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
    }
    b
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

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Requests as large as the kernel allows: fewer round trips per large read/write.
        let want = kernel_max_pages().saturating_mul(page_size());
        if let Err(max) = config.set_max_write(want) {
            // Above fuser's own buffer size: take its maximum instead.
            let _ = config.set_max_write(max);
        }
        let dax = self.fs.options().dax;
        let mut want = InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_EXPORT_SUPPORT
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_HAS_IOCTL_DIR
            // Shared mmap of FOPEN_DIRECT_IO files (Linux 6.6+); without it mmap(MAP_SHARED)
            // of a file under dax=always fails with ENODEV.
            | InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP
            // The kernel enforces ACLs; the umask becomes ours (see the module doc).
            | InitFlags::FUSE_POSIX_ACL
            | InitFlags::FUSE_DONT_MASK;
        if dax != DaxMode::Always {
            // Cached data is dropped when the attributes say the file changed.
            want |= InitFlags::FUSE_AUTO_INVAL_DATA;
        }
        if dax == DaxMode::Never {
            want |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        let granted = want & config.capabilities();
        // Cannot fail: only capabilities the kernel offers are asked for.
        let _ = config.add_capabilities(granted);
        self.writeback = granted.contains(InitFlags::FUSE_WRITEBACK_CACHE);
        self.dont_mask = granted.contains(InitFlags::FUSE_DONT_MASK);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.arrived();
        let name = name.as_bytes();
        let r = match self.lookup_dot(parent.0, name) {
            Some(r) => r,
            None => self.fs.lookup(parent.0, name),
        };
        self.entry(reply, r);
    }

    /// The kernel dropped `nlookup` references (batch_forget comes here through the
    /// trait's default): an unlinked inode is freed once none are left.
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.arrived();
        if let Err(e) = self.fs.forget(ino.0, nlookup) {
            // No reply to carry it; the inode stays an orphan until the next mount.
            eprintln!("daxfs: freeing unlinked inode {} failed: {e}", ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.arrived();
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.arrived();
        let changes = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            ctime: ctime.map(wire_time),
        };
        let who = cred(req);
        let answer = move |reply: ReplyAttr, r: daxfs::Result<Attr>, ttl: &Duration| match r {
            Ok(a) => reply.attr(ttl, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        };
        // A truncate may wait for pins: tried here without sleeping first.
        match self.fs.try_setattr(ino.0, &who, &changes) {
            Some(r) => answer(reply, r, &self.ttl),
            None => {
                let (fs, ttl) = (self.fs.clone(), self.ttl);
                self.defer(req, reply, move |reply| {
                    answer(reply, fs.setattr(ino.0, &who, &changes), &ttl)
                });
            }
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.arrived();
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.arrived();
        let mode = self.create_mode(parent.0, mode, umask);
        let (token, who) = (self.fs.orphan_frees(), cred(req));
        let r = self.fs.mknod(parent.0, name.as_bytes(), mode, rdev, &who);
        let name = name.as_bytes().to_vec();
        self.entry_or_wait(req, reply, token, r, move |fs| {
            fs.mknod(parent.0, &name, mode, rdev, &who)
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.arrived();
        let mode = self.create_mode(parent.0, mode, umask) & 0o7777;
        let (token, who) = (self.fs.orphan_frees(), cred(req));
        let r = self.fs.mkdir(parent.0, name.as_bytes(), mode, &who);
        let name = name.as_bytes().to_vec();
        self.entry_or_wait(req, reply, token, r, move |fs| {
            fs.mkdir(parent.0, &name, mode, &who)
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.arrived();
        match self.fs.unlink(parent.0, name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.arrived();
        match self.fs.rmdir(parent.0, name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.arrived();
        let (token, who) = (self.fs.orphan_frees(), cred(req));
        let (name, target) = (link_name.as_bytes(), target.as_os_str().as_bytes());
        let r = self.fs.symlink(parent.0, name, target, &who);
        let (name, target) = (name.to_vec(), target.to_vec());
        self.entry_or_wait(req, reply, token, r, move |fs| {
            fs.symlink(parent.0, &name, &target, &who)
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.arrived();
        // Whiteouts are overlayfs's business; unknown bits are invalid as renameat2 says.
        let supported = RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_EXCHANGE;
        if !supported.contains(flags) {
            return reply.error(Errno::EINVAL);
        }
        let (token, flags) = (self.fs.orphan_frees(), flags.bits());
        let (name, newname) = (name.as_bytes(), newname.as_bytes());
        let r = self.fs.rename(parent.0, name, newparent.0, newname, flags);
        if !self.space_may_come(&r, token) {
            return answer_empty(reply, r);
        }
        let (name, newname) = (name.to_vec(), newname.to_vec());
        let retry = move |fs: &DaxFs| fs.rename(parent.0, &name, newparent.0, &newname, flags);
        self.wait_for_space(req, reply, token, retry, |_, reply, r| {
            answer_empty(reply, r)
        });
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.arrived();
        let token = self.fs.orphan_frees();
        let r = self.fs.link(ino.0, newparent.0, newname.as_bytes());
        let name = newname.as_bytes().to_vec();
        self.entry_or_wait(req, reply, token, r, move |fs| {
            fs.link(ino.0, newparent.0, &name)
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.arrived();
        // O_TRUNC may wait for pins: tried here without sleeping first.
        match self.fs.try_open(ino.0, flags.0) {
            Some(Ok(())) => reply.opened(self.new_handle(flags.0), self.fopen_flags(ino.0)),
            Some(Err(e)) => reply.error(errno(e)),
            None => {
                let (fs, fh) = (self.fs.clone(), self.new_handle(flags.0));
                self.defer(req, reply, move |reply| match fs.open(ino.0, flags.0) {
                    Ok(()) => reply.opened(fh, open_reply_flags(fs.kernel_may_cache(ino.0))),
                    Err(e) => reply.error(errno(e)),
                });
            }
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.arrived();
        let mode = self.create_mode(parent.0, mode, umask);
        let who = cred(req);
        // O_TRUNC of a file that exists may wait for pins: tried here without sleeping.
        let fh = self.new_handle(flags);
        let token = self.fs.orphan_frees();
        match self
            .fs
            .try_create(parent.0, name.as_bytes(), mode, flags, &who)
        {
            Some(r) if self.space_may_come(&r, token) => {
                let (ttl, name) = (self.ttl, name.as_bytes().to_vec());
                let retry = move |fs: &DaxFs| fs.create(parent.0, &name, mode, flags, &who);
                self.wait_for_space(req, reply, token, retry, move |fs, reply, r| {
                    answer_create(fs, reply, r, &ttl, fh)
                });
            }
            Some(r) => answer_create(&self.fs, reply, r, &self.ttl, fh),
            None => {
                let (fs, ttl, name) = (self.fs.clone(), self.ttl, name.as_bytes().to_vec());
                self.defer(req, reply, move |reply| {
                    let r = fs.create(parent.0, &name, mode, flags, &who);
                    answer_create(&fs, reply, r, &ttl, fh)
                });
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.arrived();
        // The reply is sent from inside read_with, while the core holds the blocks: the
        // bytes go from the device mapping to the kernel without an intermediate copy.
        let mut reply = Some(reply);
        let r = self.fs.read_with(ino.0, offset, size, |pieces| {
            if let Some(reply) = reply.take() {
                // SAFETY: nothing stores to these bytes while the reply is sent.
                // read_with calls this with the inode's state lock held shared and the
                // blocks pinned; every store to a file's data through the filesystem
                // (write, fallocate, truncate's zeroing) takes that lock exclusively,
                // and pinned blocks are not freed, so not reallocated and zeroed. The
                // one lock-free writer is a writable PinnedMapping, which only library
                // users make: this daemon makes none (DAXFS_IOC_PIN pins blocks without
                // handing out their bytes). Other processes are kept off the device by
                // its exclusive lock (like any MAP_SHARED mapping, a process ignoring it
                // is beyond what Rust can promise). The slice lives only for the call,
                // which hands it to writev(2): the kernel copies the bytes and no Rust
                // code loads through it.
                reply.data(&unsafe { gather(pieces) });
            }
        });
        if let (Err(e), Some(reply)) = (r, reply) {
            reply.error(errno(e));
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.arrived();
        let append = write_appends(flags.0, handle_flags(fh), write_flags, self.writeback);
        // A write by anyone but root clears set-id bits; the core tells the kernel.
        let (token, who) = (self.fs.orphan_frees(), cred(req));
        let r = self.fs.write_as(ino.0, offset, data, append, &who);
        if !self.space_may_come(&r, token) {
            return answer_written(reply, r);
        }
        // Nothing was written (a short write is Ok): the retry writes it all.
        let data = data.to_vec();
        let retry = move |fs: &DaxFs| fs.write_as(ino.0, offset, &data, append, &who);
        self.wait_for_space(req, reply, token, retry, |_, reply, r| {
            answer_written(reply, r)
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.arrived();
        // Writes are durable before they reply; close has nothing left to push. ENOSYS
        // tells the kernel to stop sending FLUSH at all: one round trip less per close.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.arrived();
        // The handle's pins go first: the last release of an unlinked file frees it.
        self.release_pins(fh.0);
        match self.fs.release(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.arrived();
        // Every write is durable before it replies, every metadata change is committed
        // before it returns, and no reply reveals a change another call has not finished
        // committing (readers settle it first, see `DaxFs::getattr`): nothing a client
        // has seen is left for fsync to make durable. The kernel still writes back its
        // dirty pages (dax=never) and waits for them before it would send FSYNC; ENOSYS
        // tells it to stop sending FSYNC at all (fc->no_fsync), one round trip less per
        // fsync(2). The library's `DaxFs::fsync` keeps its wait for library callers.
        let _ = (ino, datasync);
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.arrived();
        // Directory streams are stateless: readdir cookies are stable in the core.
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.arrived();
        let r = self.fs.readdir(ino.0, offset, |e| {
            let full = reply.add(
                INodeNo(e.ino),
                e.next_offset,
                file_type(e.kind),
                OsStr::from_bytes(&e.name),
            );
            !full
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.arrived();
        // Entries are fetched in small batches and their attributes read after the
        // core's readdir has returned: getattr is never called from inside the core's
        // directory walk (which may hold the directory's lock). Entries fetched but not
        // fitting the buffer are simply fetched again by the next call (stable cookies).
        let mut offset = offset;
        loop {
            let mut batch = Vec::with_capacity(READDIRPLUS_BATCH);
            if let Err(e) = self.fs.readdir(ino.0, offset, |e| {
                batch.push(e);
                batch.len() < READDIRPLUS_BATCH
            }) {
                return reply.error(errno(e));
            }
            let exhausted = batch.len() < READDIRPLUS_BATCH;
            for e in batch {
                offset = e.next_offset;
                let attr = match self.fs.getattr(e.ino) {
                    Ok(a) => a,
                    // Removed since the walk: leave it out, as a later readdir would.
                    Err(_) => continue,
                };
                // The kernel takes a reference to every entry but "." and "..".
                let counted = e.name != b"." && e.name != b"..";
                if counted && self.fs.remember(e.ino).is_err() {
                    continue;
                }
                let full = reply.add(
                    INodeNo(e.ino),
                    e.next_offset,
                    OsStr::from_bytes(&e.name),
                    &self.ttl,
                    &file_attr(&attr),
                    Generation(attr.generation),
                );
                if full {
                    // Not added: the kernel never saw it.
                    if counted {
                        let _ = self.fs.forget(e.ino, 1);
                    }
                    return reply.ok();
                }
            }
            if exhausted {
                return reply.ok();
            }
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.arrived();
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.arrived();
        // As for FSYNC: namespace changes are committed before they return and readers
        // never see one in flight, so ENOSYS stops the kernel sending FSYNCDIR.
        let _ = ino;
        reply.error(Errno::ENOSYS);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.arrived();
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
        );
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        self.arrived();
        if position != 0 {
            // A macOS resource-fork offset; never sent by Linux.
            return reply.error(Errno::EINVAL);
        }
        let token = self.fs.orphan_frees();
        let r = self.fs.setxattr(ino.0, name.as_bytes(), value, flags);
        if !self.space_may_come(&r, token) {
            return answer_empty(reply, r);
        }
        let (name, value) = (name.as_bytes().to_vec(), value.to_vec());
        let retry = move |fs: &DaxFs| fs.setxattr(ino.0, &name, &value, flags);
        self.wait_for_space(req, reply, token, retry, |_, reply, r| {
            answer_empty(reply, r)
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.arrived();
        reply_xattr(reply, self.fs.getxattr(ino.0, name.as_bytes()), size);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.arrived();
        reply_xattr(reply, self.fs.listxattr_as(ino.0, &cred(req)), size);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.arrived();
        match self.fs.removexattr(ino.0, name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.arrived();
        match self.fs.access(ino.0, mask.bits(), &cred(req)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.arrived();
        // Punch, zero, collapse and insert may wait for pins: tried here without sleeping.
        let token = self.fs.orphan_frees();
        match self.fs.try_fallocate(ino.0, offset, length, mode) {
            Some(Ok(())) => reply.ok(),
            // The blocks it got stay (as on ext4): the retry allocates the rest.
            Some(r) if self.space_may_come(&r, token) => {
                let retry = move |fs: &DaxFs| fs.fallocate(ino.0, offset, length, mode);
                self.wait_for_space(req, reply, token, retry, move |fs, reply, r| match r {
                    Ok(()) => reply.ok(),
                    Err(e) => fallocate_failed(fs, ino.0, mode, e, reply),
                });
            }
            Some(Err(e)) => fallocate_failed(&self.fs, ino.0, mode, e, reply),
            None => {
                let fs = self.fs.clone();
                self.defer(req, reply, move |reply| {
                    match fs.fallocate(ino.0, offset, length, mode) {
                        Ok(()) => reply.ok(),
                        Err(e) => fallocate_failed(&fs, ino.0, mode, e, reply),
                    }
                });
            }
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.arrived();
        // The kernel resolves SEEK_SET/CUR/END itself and sends only these two.
        if whence != SEEK_DATA && whence != SEEK_HOLE {
            return reply.error(Errno::EINVAL);
        }
        if self.writeback {
            // The kernel sends FUSE_LSEEK without writing back its dirty pages first, so
            // the core would answer from stale sizes and extents (ENXIO for a file whose
            // data is still in the page cache). ENOSYS makes the kernel answer from its
            // own i_size for the rest of the connection: no holes reported, but correct.
            return reply.error(Errno::ENOSYS);
        }
        match self.fs.lseek(ino.0, offset, whence) {
            Ok(off) => reply.offset(off),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.arrived();
        if !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        // A short copy is allowed; callers loop.
        let len = len.min(MAX_COPY_CHUNK);
        let token = self.fs.orphan_frees();
        let (ino_in, ino_out) = (ino_in.0, ino_out.0);
        let r = self
            .fs
            .copy_file_range(ino_in, offset_in, ino_out, offset_out, len);
        if !self.space_may_come(&r, token) {
            return answer_written(reply, r);
        }
        let retry =
            move |fs: &DaxFs| fs.copy_file_range(ino_in, offset_in, ino_out, offset_out, len);
        self.wait_for_space(req, reply, token, retry, |_, reply, r| {
            answer_written(reply, r)
        });
    }

    /// A regular file is always readable and writable (the kernel's default answer for
    /// files that do not implement poll); POLLPRI means that a layout break asked for one
    /// of the pins held through this handle, or revoked one (see DAXFS_IOC_PIN_STATUS).
    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        ph: PollNotifier,
        events: PollEvents,
        flags: PollFlags,
        reply: ReplyPoll,
    ) {
        self.arrived();
        // Registered before the state is read: a break after the read notifies it.
        if flags.contains(PollFlags::FUSE_POLL_SCHEDULE_NOTIFY) {
            lock_ignoring_poison(&self.polls).insert(fh.0, ph);
        }
        let mut ready = PollEvents::POLLIN
            | PollEvents::POLLOUT
            | PollEvents::POLLRDNORM
            | PollEvents::POLLWRNORM;
        let attention = lock_ignoring_poison(&self.pins)
            .get(&fh.0)
            .is_some_and(|l| pins_need_attention(l));
        if attention {
            ready |= PollEvents::POLLPRI;
        }
        reply.poll(ready & (events | PollEvents::POLLERR | PollEvents::POLLHUP));
    }

    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        self.arrived();
        match cmd {
            DAXFS_IOC_PIN | DAXFS_IOC_UNPIN => {
                let Some(arg) = PinArg::decode(in_data) else {
                    return reply.error(Errno::EINVAL);
                };
                let r = if cmd == DAXFS_IOC_PIN {
                    let holder = PinHolder::of_process(req.pid(), req.uid());
                    self.ioctl_pin(ino.0, fh.0, arg, &holder)
                } else {
                    self.ioctl_unpin(fh.0, arg)
                };
                match r {
                    Ok(()) => reply.ioctl(0, &[]),
                    Err(e) => reply.error(e),
                }
            }
            DAXFS_IOC_PIN_STATUS => {
                if (out_size as usize) < DAXFS_PIN_STATUS_SIZE {
                    return reply.error(Errno::EINVAL);
                }
                reply.ioctl(0, &self.pin_status(fh.0).encode());
            }
            DAXFS_IOC_STATS => {
                if (out_size as usize) < DAXFS_STATS_SIZE {
                    return reply.error(Errno::EINVAL);
                }
                reply.ioctl(0, &crate::ioctl::encode_stats(&self.fs.stats()));
            }
            FS_IOC_FSGETXATTR => {
                if (out_size as usize) < FSXATTR_SIZE {
                    return reply.error(Errno::EINVAL);
                }
                match self.fs.inode_flags(ino.0) {
                    Ok(f) => reply.ioctl(0, &encode_fsxattr(f)),
                    Err(e) => reply.error(errno(e)),
                }
            }
            FS_IOC_FSSETXATTR => match decode_fsxattr(in_data) {
                Ok(f) => match self.fs.set_inode_flags(ino.0, &cred(req), f) {
                    Ok(()) => reply.ioctl(0, &[]),
                    Err(e) => reply.error(errno(e)),
                },
                Err(e) => reply.error(e),
            },
            FS_IOC_GETFLAGS => {
                if out_size < 4 {
                    return reply.error(Errno::EINVAL);
                }
                match self.fs.inode_flags(ino.0) {
                    Ok(f) => reply.ioctl(0, &encode_inode_flags(f).to_ne_bytes()),
                    Err(e) => reply.error(errno(e)),
                }
            }
            FS_IOC_SETFLAGS => match decode_inode_flags(in_data) {
                Ok(f) => match self.fs.set_inode_flags(ino.0, &cred(req), f) {
                    Ok(()) => reply.ioctl(0, &[]),
                    Err(e) => reply.error(errno(e)),
                },
                Err(e) => reply.error(e),
            },
            FS_IOC_GETFSLABEL => {
                if (out_size as usize) < FSLABEL_MAX {
                    return reply.error(Errno::EINVAL);
                }
                let mut b = [0u8; FSLABEL_MAX];
                let label = self.fs.label();
                b[..label.len()].copy_from_slice(&label);
                reply.ioctl(0, &b)
            }
            FS_IOC_SETFSLABEL => match decode_label(in_data) {
                Ok(label) => match self.fs.set_label(&cred(req), label) {
                    Ok(()) => reply.ioctl(0, &[]),
                    Err(e) => reply.error(errno(e)),
                },
                Err(e) => reply.error(e),
            },
            FITRIM => {
                let Some((start, len, minlen)) = decode_fstrim_range(in_data) else {
                    return reply.error(Errno::EINVAL);
                };
                match self.fs.trim(&cred(req), start, len, minlen) {
                    Ok(trimmed) => reply.ioctl(0, &encode_fstrim_range(start, trimmed, minlen)),
                    Err(e) => reply.error(errno(e)),
                }
            }
            _ => reply.error(Errno::from_i32(libc::ENOTTY)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use daxfs_format::Timespec;

    fn attr(kind: FileKind) -> Attr {
        Attr {
            ino: 42,
            generation: 7,
            size: 5000,
            blocks: 16,
            atime: Timespec { sec: 1, nsec: 2 },
            mtime: Timespec { sec: 3, nsec: 4 },
            ctime: Timespec { sec: 5, nsec: 6 },
            btime: Timespec { sec: 7, nsec: 8 },
            kind,
            perm: 0o4755,
            nlink: 2,
            uid: 1000,
            gid: 100,
            rdev: 0x0801,
            blksize: 4096,
            dax: false,
        }
    }

    #[test]
    fn core_errno_becomes_the_same_fuse_errno() {
        for e in [CoreErrno::ENOENT, CoreErrno::ENOTEMPTY, CoreErrno::EXDEV] {
            assert_eq!(errno(e).code(), e.0);
        }
    }

    #[test]
    fn file_attr_copies_every_field_with_nanosecond_times() {
        let a = file_attr(&attr(FileKind::File));
        assert_eq!(a.ino, INodeNo(42));
        assert_eq!((a.size, a.blocks, a.perm, a.nlink), (5000, 16, 0o4755, 2));
        assert_eq!((a.uid, a.gid, a.rdev, a.blksize), (1000, 100, 0x0801, 4096));
        assert_eq!(a.kind, FileType::RegularFile);
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_nanos())
        };
        assert_eq!(secs(a.atime), Some(1_000_000_002));
        assert_eq!(secs(a.mtime), Some(3_000_000_004));
        assert_eq!(secs(a.ctime), Some(5_000_000_006));
        assert_eq!(secs(a.crtime), Some(7_000_000_008));
    }

    #[test]
    fn every_file_kind_maps_to_its_fuse_type() {
        let pairs = [
            (FileKind::File, FileType::RegularFile),
            (FileKind::Dir, FileType::Directory),
            (FileKind::Symlink, FileType::Symlink),
            (FileKind::Fifo, FileType::NamedPipe),
            (FileKind::Socket, FileType::Socket),
            (FileKind::CharDev, FileType::CharDevice),
            (FileKind::BlockDev, FileType::BlockDevice),
        ];
        for (k, t) in pairs {
            assert_eq!(file_type(k), t);
        }
    }

    #[test]
    fn utime_now_and_specific_times_map_to_set_time() {
        assert_eq!(set_time(TimeOrNow::Now), SetTime::Now);
        let t = SystemTime::UNIX_EPOCH + Duration::new(10, 20);
        assert_eq!(
            set_time(TimeOrNow::SpecificTime(t)),
            SetTime::At(Timespec { sec: 10, nsec: 20 })
        );
    }

    #[test]
    fn file_handle_carries_the_open_flags() {
        for f in [
            libc::O_RDONLY,
            libc::O_WRONLY | libc::O_APPEND,
            libc::O_RDWR | libc::O_DIRECT | libc::O_LARGEFILE,
        ] {
            assert_eq!(handle_flags(handle_for(f)), f);
        }
    }

    #[test]
    fn dax_inodes_open_direct_io_and_cacheable_ones_keep_cache() {
        let d = open_reply_flags(false);
        assert!(d.contains(FopenFlags::FOPEN_DIRECT_IO));
        assert!(!d.contains(FopenFlags::FOPEN_KEEP_CACHE));
        let c = open_reply_flags(true);
        assert!(c.contains(FopenFlags::FOPEN_KEEP_CACHE));
        assert!(!c.contains(FopenFlags::FOPEN_DIRECT_IO));
    }

    #[test]
    fn write_appends_when_the_file_flags_say_o_append() {
        let none = WriteFlags::empty();
        let wa = libc::O_WRONLY | libc::O_APPEND;
        assert!(write_appends(wa, wa, none, false));
        assert!(!write_appends(libc::O_WRONLY, libc::O_WRONLY, none, false));
    }

    #[test]
    fn write_follows_the_current_flags_after_fcntl_clears_o_append() {
        let opened = libc::O_WRONLY | libc::O_APPEND;
        assert!(!write_appends(
            libc::O_WRONLY,
            opened,
            WriteFlags::empty(),
            false
        ));
    }

    #[test]
    fn write_uses_the_open_flags_when_the_kernel_sends_none() {
        let opened = libc::O_WRONLY | libc::O_APPEND;
        assert!(write_appends(0, opened, WriteFlags::empty(), false));
    }

    #[test]
    fn writeback_cache_writes_never_append() {
        let wa = libc::O_WRONLY | libc::O_APPEND;
        assert!(!write_appends(wa, wa, WriteFlags::empty(), true));
        assert!(!write_appends(wa, wa, WriteFlags::FUSE_WRITE_CACHE, false));
    }

    #[test]
    fn a_single_read_piece_is_borrowed_not_copied() {
        let data = [1u8, 2, 3];
        let one = [VolatileSlice::from(&data[..])];
        // SAFETY: nothing stores to `data` (or anything) in this test.
        let g = unsafe { gather(&one) };
        assert!(matches!(g, Cow::Borrowed(b) if b.as_ptr() == data.as_ptr()));
        // SAFETY: as above.
        assert!(matches!(unsafe { gather(&[]) }, Cow::Borrowed(b) if b.is_empty()));
    }

    #[test]
    fn several_read_pieces_are_gathered_in_order() {
        let (a, b) = ([1u8, 2], [0u8; 3]);
        let pieces = [&a[..], &b[..], &a[..1]].map(VolatileSlice::from);
        // SAFETY: nothing stores to `a` or `b` in this test.
        assert_eq!(&*unsafe { gather(&pieces) }, &[1, 2, 0, 0, 0, 1]);
    }

    #[test]
    fn xattr_size_zero_is_a_length_probe() {
        assert_eq!(xattr_answer(b"abcd", 0), XattrAnswer::Size(4));
        assert_eq!(xattr_answer(b"", 0), XattrAnswer::Size(0));
    }

    #[test]
    fn xattr_too_small_buffer_is_erange_and_exact_fit_is_data() {
        assert_eq!(xattr_answer(b"abcd", 3), XattrAnswer::Range);
        assert_eq!(xattr_answer(b"abcd", 4), XattrAnswer::Data(b"abcd"));
        assert_eq!(xattr_answer(b"abcd", 100), XattrAnswer::Data(b"abcd"));
    }

    #[test]
    fn fsxattr_ioctl_numbers_match_linux() {
        // The values linux/fs.h's macros expand to on x86-64 and arm64.
        assert_eq!(FS_IOC_FSGETXATTR, 0x801c_581f);
        assert_eq!(FS_IOC_FSSETXATTR, 0x401c_5820);
    }

    const DAX: InodeFlags = InodeFlags {
        dax: true,
        immutable: false,
        append: false,
    };
    const IMMUTABLE_APPEND: InodeFlags = InodeFlags {
        dax: false,
        immutable: true,
        append: true,
    };

    #[test]
    fn fsxattr_round_trips_the_dax_immutable_and_append_flags() {
        for f in [DAX, IMMUTABLE_APPEND, InodeFlags::default()] {
            assert_eq!(decode_fsxattr(&encode_fsxattr(f)), Ok(f));
        }
        assert_eq!(&encode_fsxattr(DAX)[..4], &FS_XFLAG_DAX.to_ne_bytes());
        assert_eq!(
            &encode_fsxattr(IMMUTABLE_APPEND)[..4],
            &(FS_XFLAG_IMMUTABLE | FS_XFLAG_APPEND).to_ne_bytes()
        );
    }

    #[test]
    fn fsxattr_with_other_xflags_or_hints_is_eopnotsupp() {
        let mut b = encode_fsxattr(DAX);
        b[0..4].copy_from_slice(&(FS_XFLAG_DAX | 0x20/* SYNC */).to_ne_bytes());
        assert_eq!(decode_fsxattr(&b), Err(Errno::from_i32(libc::EOPNOTSUPP)));
        let mut b = encode_fsxattr(InodeFlags::default());
        b[12..16].copy_from_slice(&5u32.to_ne_bytes()); // fsx_projid
        assert_eq!(decode_fsxattr(&b), Err(Errno::from_i32(libc::EOPNOTSUPP)));
    }

    #[test]
    fn short_fsxattr_argument_is_einval() {
        assert_eq!(decode_fsxattr(&[0u8; 27]), Err(Errno::EINVAL));
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn inode_flags_ioctl_numbers_match_linux() {
        // The values linux/fs.h's macros expand to where a long is 8 bytes.
        assert_eq!(FS_IOC_GETFLAGS, 0x8008_6601);
        assert_eq!(FS_IOC_SETFLAGS, 0x4008_6602);
    }

    #[test]
    fn inode_flags_carry_the_dax_immutable_and_append_flags_only() {
        for f in [DAX, IMMUTABLE_APPEND, InodeFlags::default()] {
            assert_eq!(
                decode_inode_flags(&encode_inode_flags(f).to_ne_bytes()),
                Ok(f)
            );
        }
        assert_eq!(encode_inode_flags(DAX), FS_DAX_FL);
        assert_eq!(encode_inode_flags(IMMUTABLE_APPEND), 0x30);
        let noatime = 0x80u32;
        assert_eq!(
            decode_inode_flags(&(FS_DAX_FL | noatime).to_ne_bytes()),
            Err(Errno::from_i32(libc::EOPNOTSUPP))
        );
        assert_eq!(decode_inode_flags(&[0u8; 3]), Err(Errno::EINVAL));
    }

    #[test]
    fn label_and_fitrim_ioctl_numbers_match_linux() {
        assert_eq!(FS_IOC_GETFSLABEL, 0x8100_9431);
        assert_eq!(FS_IOC_SETFSLABEL, 0x4100_9432);
        assert_eq!(FITRIM, 0xc018_5879);
    }

    #[test]
    fn label_argument_ends_at_its_nul_and_needs_one() {
        let mut b = [0u8; FSLABEL_MAX];
        b[..3].copy_from_slice(b"abc");
        assert_eq!(decode_label(&b), Ok(&b"abc"[..]));
        assert_eq!(decode_label(&[b'x'; FSLABEL_MAX]), Err(Errno::EINVAL));
        assert_eq!(decode_label(&b[..10]), Err(Errno::EINVAL));
    }

    #[test]
    fn fstrim_range_round_trips_with_len_as_the_bytes_trimmed() {
        let b = encode_fstrim_range(4096, 0, 1 << 20);
        assert_eq!(decode_fstrim_range(&b), Some((4096, 0, 1 << 20)));
        assert_eq!(decode_fstrim_range(&b[..23]), None);
    }
}
