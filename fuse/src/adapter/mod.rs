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

mod convert;
mod handles;
mod ioctls;
mod notify;

pub use convert::*;
pub use handles::{handle_flags, handle_for};
pub use ioctls::*;

use crate::busy_poll::BusyPoll;
use crate::deferred::Waiters;
use convert::reply_xattr;
use daxfs::Errno as CoreErrno;
use daxfs::{Attr, DaxMode, SetAttr};
use daxfs::{DaxFs, SEEK_DATA, SEEK_HOLE};
use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, PollEvents, PollFlags,
    PollNotifier, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyPoll,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use handles::pins_need_attention;
use handles::PinTable;
use notify::{cache_invalidator, lease_break_notifier, PollTable};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

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
        match r.and_then(|a| self.fs.remember(a.ino).map(|()| a)) {
            Ok(a) => reply.entry(&self.ttl, &file_attr(&a), Generation(a.generation)),
            Err(e) => reply.error(errno(e)),
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
reply_error!(ReplyAttr, ReplyOpen, ReplyCreate, ReplyEmpty);

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
        let r = self
            .fs
            .mknod(parent.0, name.as_bytes(), mode, rdev, &cred(req));
        self.entry(reply, r);
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
        let mode = self.create_mode(parent.0, mode, umask);
        let r = self
            .fs
            .mkdir(parent.0, name.as_bytes(), mode & 0o7777, &cred(req));
        self.entry(reply, r);
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
        let r = self.fs.symlink(
            parent.0,
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
            &cred(req),
        );
        self.entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
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
        match self.fs.rename(
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            flags.bits(),
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.arrived();
        let r = self.fs.link(ino.0, newparent.0, newname.as_bytes());
        self.entry(reply, r);
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
        match self
            .fs
            .try_create(parent.0, name.as_bytes(), mode, flags, &who)
        {
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
        match self.fs.write_as(ino.0, offset, data, append, &cred(req)) {
            // Never more than the request's size, which is at most max_write (u32).
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => reply.error(errno(e)),
        }
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
        _req: &Request,
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
        match self.fs.setxattr(ino.0, name.as_bytes(), value, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
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
        match self.fs.try_fallocate(ino.0, offset, length, mode) {
            Some(Ok(())) => reply.ok(),
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
        _req: &Request,
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
        match self
            .fs
            .copy_file_range(ino_in.0, offset_in, ino_out.0, offset_out, len)
        {
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => reply.error(errno(e)),
        }
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
        self.ioctl_dispatch(req, ino, fh, cmd, in_data, out_size, reply);
    }
}
