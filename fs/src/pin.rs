//! Long-term pins of file ranges (docs/DESIGN.md, "Block lifetimes"): one reference on every block of the
//! range, held until given back. The FUSE adapter keeps them per file handle
//! (DAXFS_IOC_PIN / DAXFS_IOC_UNPIN, released with the handle); the library's
//! [`PinnedMapping`](crate::mapping::PinnedMapping) holds one for its lifetime. Also the
//! filesystem's counters ([`DaxFs::stats`]) behind `daxfs stats`.
//!
//! A pin takes the inode's layout lock shared, so it waits while a break_layouts holds it
//! exclusively, and cannot slip in between a break's last scan and the free.
//!
//! Rules: the range must lie inside the file (EINVAL past EOF) and be fully mapped (ENXIO
//! on a hole: pinning takes references on existing blocks and never allocates; fill the
//! range with fallocate first). A length of 0 is EINVAL.
//!
//! Policy for pins taken on behalf of a process ([`DaxFs::pin_range_for`], what
//! DAXFS_IOC_PIN uses; docs/DESIGN.md "Who may pin, revocation, limits"), modelled on
//! Linux file leases (fcntl F_SETLEASE):
//! - who: the file's owner, or a holder with CAP_LEASE; anyone else gets EACCES;
//! - revocable: every such pin is a lease. A layout break that meets it flags it
//!   ("break requested", which the adapter turns into POLLPRI on the holder's handle) and,
//!   once `lease_break_time` has passed (never later than `layout_timeout`), takes its
//!   block references away: the holder finds it revoked (DAXFS_IOC_PIN_STATUS, ECANCELED
//!   from its UNPIN). Only a holder with CAP_SYS_ADMIN takes an unbreakable pin, which a
//!   break waits for until `layout_timeout` (EBUSY). Pins of the library (in-process,
//!   [`DaxFs::pin_range`], pinned mappings) are unbreakable: their memory is handed out
//!   as slices and cannot be taken back;
//! - limits: pins and pinned bytes are counted per user and bounded by
//!   `max_pins_per_user` / `max_pinned_bytes_per_user` (EAGAIN past them, as fork(2) past
//!   RLIMIT_NPROC); holders with CAP_SYS_RESOURCE or CAP_SYS_ADMIN are not counted (as
//!   for the kernel's per-user pipe buffer limit).

use crate::error::{Errno, Result};
use crate::filesystem::DaxFs;
use crate::inode::{lock, rlock, wlock, Inode};
use crate::types::FileKind;
use daxfs_format::BLOCK_SIZE;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// A long-term pin of `len` bytes at `offset` of inode `ino`. It must be given back to
/// [`DaxFs::unpin_range`]: dropping it leaks its references (its blocks stay pinned, and
/// truncates of them fail with EBUSY, until the filesystem is mounted again).
#[must_use = "a pin must be given back to DaxFs::unpin_range"]
#[derive(Debug)]
pub struct RangePin {
    ino: u64,
    offset: u64,
    len: u64,
    /// The pinned bytes on the device: (device offset, length) per contiguous piece.
    pub(crate) segments: Vec<(u64, usize)>,
    /// The inode, kept for its pin count.
    inode: InodeRef,
    /// What a layout break sees of this pin (its blocks, whether it may be revoked).
    shared: Arc<PinShared>,
}

/// An `Arc<Inode>` behind a type that is public in name only (`Inode` is crate-private).
pub(crate) struct InodeRef(pub(crate) Arc<Inode>);

impl std::fmt::Debug for InodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "inode {}", self.0.ino)
    }
}

/// `PinShared::state`: the pin holds its block references.
const HELD: u8 = 0;
/// A layout break took the references away; the holder has not given the pin back yet.
const REVOKED: u8 = 1;
/// Given back (unpin, release of the handle).
const RELEASED: u8 = 2;

/// The part of a pin that the filesystem's registry shares with its holder, so that a
/// layout break can flag and revoke it while the holder still owns the [`RangePin`].
#[derive(Debug)]
pub(crate) struct PinShared {
    /// Pinned data-area block indexes, as runs.
    blocks: Vec<Range<u64>>,
    /// The logical blocks the pin covers.
    lblocks: Range<u64>,
    /// A layout break may take the references away after `lease_break_time`.
    revocable: bool,
    /// HELD, REVOKED or RELEASED; the one who moves it away from HELD drops the block
    /// references, exactly once.
    state: AtomicU8,
    /// A layout break met this pin (sticky: the holder is expected to let go).
    break_requested: AtomicBool,
    /// The user charged for it (`max_pins_per_user`, `max_pinned_bytes_per_user`).
    charged: Option<u32>,
    len: u64,
}

impl RangePin {
    pub fn ino(&self) -> u64 {
        self.ino
    }
    pub fn offset(&self) -> u64 {
        self.offset
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Number of blocks pinned.
    pub fn blocks(&self) -> u64 {
        self.shared.blocks.iter().map(|r| r.end - r.start).sum()
    }
    /// The inode's lease break count (it grows each time a break_layouts finds this
    /// inode busy).
    pub(crate) fn lease_epoch(&self) -> u64 {
        self.inode.0.lease_breaks.load(Ordering::SeqCst)
    }
    /// A layout break met this pin: its holder should give it back.
    pub fn break_requested(&self) -> bool {
        self.shared.break_requested.load(Ordering::SeqCst)
    }
    /// A layout break revoked this pin: its blocks are no longer held (they may already
    /// belong to another file). The pin must still be given back.
    pub fn revoked(&self) -> bool {
        self.shared.state.load(Ordering::SeqCst) == REVOKED
    }
    /// Whether a layout break may revoke this pin (see the module docs).
    pub fn revocable(&self) -> bool {
        self.shared.revocable
    }
}

/// Capabilities of a pin holder that the policy looks at (capabilities(7)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinCaps {
    /// CAP_LEASE: may pin files it does not own (as it may take leases on them).
    pub lease: bool,
    /// CAP_SYS_ADMIN: its pins are unbreakable (a layout break waits for them).
    pub sys_admin: bool,
    /// CAP_SYS_RESOURCE: not bound by the per-user limits (nor is CAP_SYS_ADMIN).
    pub sys_resource: bool,
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_LEASE: u32 = 28;

impl PinCaps {
    /// Every capability (root in the daemon's user namespace).
    pub const ALL: PinCaps = PinCaps {
        lease: true,
        sys_admin: true,
        sys_resource: true,
    };

    /// From a CapEff mask (/proc/PID/status, hexadecimal).
    pub fn from_mask(mask: u64) -> PinCaps {
        let has = |c: u32| mask & (1u64 << c) != 0;
        PinCaps {
            lease: has(CAP_LEASE),
            sys_admin: has(CAP_SYS_ADMIN),
            sys_resource: has(CAP_SYS_RESOURCE),
        }
    }
}

/// Who takes a pin: the user (the FUSE request's fsuid) and its capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinHolder {
    pub uid: u32,
    pub caps: PinCaps,
}

impl PinHolder {
    /// The caller of a FUSE request: `uid` is the request's (the caller's fsuid), `pid`
    /// its thread. Capabilities come from /proc/PID/status (CapEff) and count only when
    /// they are trustworthy (see [`caps_from_status`]) and the caller lives in the
    /// daemon's user namespace (capabilities in a user namespace of its own, as
    /// `unshare -r` gives any user, say nothing about this filesystem): else none. The
    /// caller is blocked in its ioctl while this is read, so the pid is still its own.
    pub fn of_process(pid: u32, uid: u32) -> PinHolder {
        let caps = if pid == 0 || !same_user_namespace(pid) {
            PinCaps::default()
        } else {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map(|s| caps_from_status(&s, uid))
                .unwrap_or_default()
        };
        PinHolder { uid, caps }
    }
}

/// Whether process `pid` is in this process's user namespace. Fails closed: a link that
/// cannot be read (another user's process, with a daemon that is not root) is "no".
fn same_user_namespace(pid: u32) -> bool {
    match (
        std::fs::read_link("/proc/self/ns/user"),
        std::fs::read_link(format!("/proc/{pid}/ns/user")),
    ) {
        (Ok(a), Ok(b)) => a == b,
        // No user namespaces in this kernel: everyone shares the initial one.
        (Err(a), Err(_)) if a.kind() == std::io::ErrorKind::NotFound => true,
        _ => false,
    }
}

/// The capabilities in a /proc/PID/status text, when its filesystem uid (the fourth
/// `Uid:` field) is `uid`: the request's fsuid. A mismatch means the process is no longer
/// the caller as the kernel saw it (another thread exec'd a set-id program and took over
/// the pid, or its credentials changed): then no capabilities.
pub fn caps_from_status(status: &str, uid: u32) -> PinCaps {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let fsuid = field("Uid:")
        .and_then(|v| v.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u32>().ok());
    let mask = field("CapEff:").and_then(|v| u64::from_str_radix(v, 16).ok());
    match (fsuid, mask) {
        (Some(f), Some(m)) if f == uid => PinCaps::from_mask(m),
        _ => PinCaps::default(),
    }
}

/// Default `lease_break_time`: how long a holder has to give back a pin that a layout
/// break met before it is revoked (the kernel's lease-break-time is 45 s, for NFS
/// clients; pin holders are local processes, and it must stay below the default
/// `layout_timeout` of 30 s to win).
pub const DEFAULT_LEASE_BREAK_TIME: Duration = Duration::from_secs(10);
/// Default `max_pins_per_user`: about 1 MB of daemon memory per user.
pub const DEFAULT_MAX_PINS_PER_USER: u64 = 4096;

/// The pin policy of a mount (mount options `lease_break_time`, `max_pins_per_user`,
/// `max_pinned_bytes_per_user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinPolicy {
    pub lease_break_time: Duration,
    pub max_pins_per_user: u64,
    /// None: the size of the data area (no user pins more than the filesystem holds,
    /// counting a range pinned twice twice).
    pub max_pinned_bytes_per_user: Option<u64>,
}

impl Default for PinPolicy {
    fn default() -> Self {
        PinPolicy {
            lease_break_time: DEFAULT_LEASE_BREAK_TIME,
            max_pins_per_user: DEFAULT_MAX_PINS_PER_USER,
            max_pinned_bytes_per_user: None,
        }
    }
}

/// What the policy grants a pin request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinGrant {
    /// A layout break may revoke it.
    pub revocable: bool,
    /// The user whose limits it counts against (None: not counted).
    pub charge: Option<u32>,
}

impl PinPolicy {
    /// May `holder` pin a file owned by `owner`, and how: EACCES for a non-owner without
    /// CAP_LEASE (F_SETLEASE's rule).
    pub fn admit(&self, holder: &PinHolder, owner: u32) -> Result<PinGrant> {
        if holder.uid != owner && !holder.caps.lease {
            return Err(Errno::EACCES);
        }
        Ok(PinGrant {
            revocable: !holder.caps.sys_admin,
            // As the kernel's per-user pipe buffer limit: CAP_SYS_RESOURCE or
            // CAP_SYS_ADMIN lifts it.
            charge: (!holder.caps.sys_resource && !holder.caps.sys_admin).then_some(holder.uid),
        })
    }
}

/// The per-user count of pins and pinned bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinUsage {
    pub pins: u64,
    pub bytes: u64,
}

/// Called with the number of an inode whose pins a layout break has just flagged or
/// revoked (set by the FUSE adapter to wake the holders' poll). Called with the inode's
/// locks held: it must not block on the filesystem.
pub type LeaseBreakNotifier = Arc<dyn Fn(u64) + Send + Sync>;

/// The filesystem's long-term pins, by inode, for layout breaks to find; the per-user
/// usage; the lease break notifier.
#[derive(Default)]
pub(crate) struct PinRegistry {
    by_ino: Mutex<HashMap<u64, Vec<Arc<PinShared>>>>,
    usage: Mutex<HashMap<u32, PinUsage>>,
    notifier: RwLock<Option<LeaseBreakNotifier>>,
    /// Pins revoked by layout breaks.
    revoked: AtomicU64,
}

/// Counters of a mounted filesystem (`daxfs stats`, DAXFS_IOC_STATS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsStats {
    /// Blocks of the data area.
    pub blocks_total: u64,
    /// Reference count census: 0 (free), 1 (cached in a file's mapping), >1 (pinned).
    pub blocks_free: u64,
    pub blocks_cached: u64,
    pub blocks_pinned: u64,
    /// Free blocks according to the allocator (equals `blocks_free` when balanced).
    pub alloc_free: u64,
    /// Long-term pins (ioctl pins, pinned mappings) taken and released.
    pub pins_taken: u64,
    pub pins_released: u64,
    /// Block references taken and dropped (every pin of every block, including the
    /// in-flight pins of reads and writes).
    pub block_pins: u64,
    pub block_unpins: u64,
    /// break_layouts calls that met a busy block, and the lease breaks they signalled.
    pub layout_breaks: u64,
    pub lease_breaks: u64,
    /// Waits for a block to become idle, their total time, and those that reached
    /// their deadline (layout_timeout: EBUSY; lease_break_time: revocation follows).
    pub waits: u64,
    pub wait_ns: u64,
    pub timeouts: u64,
    /// Refcount rule violations (must stay 0).
    pub violations: u64,
    /// Journal commits (one commit record and one flush/fence sequence each).
    pub commits: u64,
    /// Metadata transactions those commits carried: more than `commits` when group
    /// commit batched concurrent transactions into one journal commit.
    pub transactions: u64,
    /// Long-term pins revoked by layout breaks (their holders let `lease_break_time`
    /// pass); they still count as taken until their holders give them back.
    pub pins_revoked: u64,
}

impl FsStats {
    /// Long-term pins currently held.
    pub fn pins_active(&self) -> u64 {
        self.pins_taken.saturating_sub(self.pins_released)
    }

    /// True when nothing is pinned, every reference taken was dropped, the census agrees
    /// with the allocator and no violation was seen.
    pub fn balanced(&self) -> bool {
        self.blocks_pinned == 0
            && self.pins_taken == self.pins_released
            && self.block_pins == self.block_unpins
            && self.blocks_free == self.alloc_free
            && self.violations == 0
    }
}

fn blk(off: u64) -> u64 {
    off / BLOCK_SIZE
}

impl PinShared {
    /// Drops the block references, if this call is the one that moves the pin from
    /// HELD to `to`. True when it did.
    fn drop_refs(&self, fs: &DaxFs, to: u8) -> bool {
        if self
            .state
            .compare_exchange(HELD, to, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        for r in &self.blocks {
            for b in r.clone() {
                fs.refs.unpin(b);
            }
        }
        true
    }
}

impl DaxFs {
    /// Pins bytes `offset..offset+len` of regular file `ino` (see the module docs for the
    /// rules) for the library: unbreakable and not counted against any user. Waits while
    /// the file's layout is being broken. The pin also counts as an open handle of the
    /// file until it is released, so an unlinked file outlives its pins (as it outlives
    /// its open descriptors) and is freed by the last release.
    pub fn pin_range(&self, ino: u64, offset: u64, len: u64) -> Result<RangePin> {
        let grant = PinGrant {
            revocable: false,
            charge: None,
        };
        self.pin_range_granted(ino, offset, len, |_| Ok(grant))
    }

    /// Pins a range as [`pin_range`](Self::pin_range) does, on behalf of `holder`, under
    /// the mount's [`PinPolicy`]: EACCES unless `holder` owns the file or has CAP_LEASE;
    /// EAGAIN past its user's `max_pins_per_user` or `max_pinned_bytes_per_user` (unless
    /// it has CAP_SYS_RESOURCE or CAP_SYS_ADMIN); the pin is revocable unless `holder`
    /// has CAP_SYS_ADMIN.
    pub fn pin_range_for(
        &self,
        ino: u64,
        offset: u64,
        len: u64,
        holder: &PinHolder,
    ) -> Result<RangePin> {
        let policy = self.opts.pins;
        self.pin_range_granted(ino, offset, len, |owner| policy.admit(holder, owner))
    }

    /// The bytes a user may keep pinned (`max_pinned_bytes_per_user`, default the size
    /// of the data area).
    fn max_pinned_bytes(&self) -> u64 {
        self.opts
            .pins
            .max_pinned_bytes_per_user
            .unwrap_or(self.geo.data_blocks.saturating_mul(BLOCK_SIZE))
    }

    /// Charges a pin of `len` bytes to `uid`, or EAGAIN past a limit.
    fn charge_pin(&self, uid: u32, len: u64) -> Result<()> {
        let mut usage = lock(&self.pins.usage);
        let u = usage.entry(uid).or_default();
        let bytes = u.bytes.checked_add(len);
        match bytes {
            Some(b)
                if u.pins < self.opts.pins.max_pins_per_user && b <= self.max_pinned_bytes() =>
            {
                u.pins += 1;
                u.bytes = b;
                Ok(())
            }
            _ => Err(Errno(libc::EAGAIN)),
        }
    }

    fn uncharge_pin(&self, uid: u32, len: u64) {
        let mut usage = lock(&self.pins.usage);
        if let Some(u) = usage.get_mut(&uid) {
            u.pins = u.pins.saturating_sub(1);
            u.bytes = u.bytes.saturating_sub(len);
            if u.pins == 0 {
                usage.remove(&uid);
            }
        }
    }

    /// The pins and pinned bytes counted against `uid` (pins not yet given back,
    /// revoked ones included).
    pub fn pin_usage(&self, uid: u32) -> PinUsage {
        lock(&self.pins.usage)
            .get(&uid)
            .copied()
            .unwrap_or_default()
    }

    /// The work of the pin functions; `grant` decides from the file's owner.
    fn pin_range_granted(
        &self,
        ino: u64,
        offset: u64,
        len: u64,
        grant: impl FnOnce(u32) -> Result<PinGrant>,
    ) -> Result<RangePin> {
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let end = offset.checked_add(len).ok_or(Errno::EINVAL)?;
        let inode = self.inode(ino)?;
        let layout = rlock(&inode.layout);
        let st = rlock(&inode.st);
        if st.dead {
            return Err(Errno::ENOENT);
        }
        match st.kind() {
            Some(FileKind::File) => {}
            Some(FileKind::Dir) => return Err(Errno::EISDIR),
            _ => return Err(Errno::EINVAL),
        }
        let grant = grant(st.d.uid)?;
        if end > st.d.size {
            return Err(Errno::EINVAL);
        }
        // Find every block first: a hole fails the pin before any reference is taken.
        let mut runs: Vec<(u64, u64)> = Vec::new(); // (device block, blocks)
        let mut segments = Vec::new();
        let mut pos = offset;
        while pos < end {
            let lb = blk(pos);
            let e = st.ext.find(lb).ok_or(Errno::ENXIO)?;
            let piece_end = (e.end() * BLOCK_SIZE).min(end);
            let pstart = e.pblk + (lb - e.lblk);
            runs.push((pstart, blk(piece_end - 1) - lb + 1));
            segments.push((
                pstart * BLOCK_SIZE + pos % BLOCK_SIZE,
                (piece_end - pos) as usize,
            ));
            pos = piece_end;
        }
        if let Some(uid) = grant.charge {
            self.charge_pin(uid, len)?;
        }
        let mut blocks: Vec<Range<u64>> = Vec::with_capacity(runs.len());
        for (pblk, n) in runs {
            let s = pblk - self.geo.data_start;
            for b in s..s + n {
                if !self.refs.pin(b) {
                    // A mapped block at count 0: a refcount bug. Undo and refuse.
                    self.refs.note_violation();
                    for r in blocks.iter().cloned().chain(std::iter::once(s..b)) {
                        r.for_each(|b| self.refs.unpin(b));
                    }
                    if let Some(uid) = grant.charge {
                        self.uncharge_pin(uid, len);
                    }
                    return Err(Errno::EIO);
                }
            }
            blocks.push(s..s + n);
        }
        let shared = Arc::new(PinShared {
            blocks,
            lblocks: blk(offset)..blk(end - 1) + 1,
            revocable: grant.revocable,
            state: AtomicU8::new(HELD),
            break_requested: AtomicBool::new(false),
            charged: grant.charge,
            len,
        });
        // Under the layout lock: a break (which holds it exclusively) finds every pin
        // that holds references on this inode in the registry.
        lock(&self.pins.by_ino)
            .entry(ino)
            .or_default()
            .push(shared.clone());
        // Under the state lock: an unlink either sees this open (and keeps the inode as
        // an orphan) or already freed the inode (then `dead` refused above).
        inode.opens.fetch_add(1, Ordering::SeqCst);
        inode.long_pins.fetch_add(1, Ordering::SeqCst);
        self.stats.pins_taken.fetch_add(1, Ordering::Relaxed);
        drop(st);
        drop(layout);
        Ok(RangePin {
            ino,
            offset,
            len,
            segments,
            inode: InodeRef(inode),
            shared,
        })
    }

    /// Releases a pin; a block whose count drops to 1 wakes the truncates waiting on it.
    /// The last release of an unlinked file frees it. A revoked pin has no references
    /// left: only its open and its count against its user go.
    pub fn unpin_range(&self, pin: RangePin) {
        self.release_pin(&pin);
    }

    /// The work of `unpin_range`, for owners that cannot give the pin away (Drop); the
    /// caller must not use `pin` again.
    pub(crate) fn release_pin(&self, pin: &RangePin) {
        let sh = &pin.shared;
        if sh.drop_refs(self, RELEASED) {
            pin.inode.0.long_pins.fetch_sub(1, Ordering::SeqCst);
        } else {
            sh.state.store(RELEASED, Ordering::SeqCst);
        }
        {
            let mut reg = lock(&self.pins.by_ino);
            if let Some(list) = reg.get_mut(&pin.ino) {
                list.retain(|p| !Arc::ptr_eq(p, sh));
                if list.is_empty() {
                    reg.remove(&pin.ino);
                }
            }
        }
        if let Some(uid) = sh.charged {
            self.uncharge_pin(uid, sh.len);
        }
        self.stats.pins_released.fetch_add(1, Ordering::Relaxed);
        // The open the pin held. A failure to free an unlinked file here leaves an orphan
        // that the next mount reclaims.
        let _ = self.release(pin.ino);
    }

    /// Installs (or removes) the hook told about lease breaks (see [`LeaseBreakNotifier`]).
    pub fn set_lease_break_notifier(&self, f: Option<LeaseBreakNotifier>) {
        *wlock(&self.pins.notifier) = f;
    }

    /// The lease break of a layout break that found logical blocks `r` of `inode` busy:
    /// flags every pin of that range as "break requested" and, with `revoke`, revokes the
    /// revocable ones (drops their block references). Called with the inode's layout and
    /// state locks held exclusively, so no pin of the inode starts or ends its hold in
    /// between. Returns (pins revoked now, revocable pins of the range still held
    /// after this call).
    pub(crate) fn break_pins(&self, inode: &Inode, r: &Range<u64>, revoke: bool) -> (u64, u64) {
        let mut changed = false;
        let (mut revoked, mut revocable) = (0, 0);
        if let Some(list) = lock(&self.pins.by_ino).get(&inode.ino) {
            for p in list {
                if p.lblocks.start >= r.end || r.start >= p.lblocks.end {
                    continue;
                }
                if !p.break_requested.swap(true, Ordering::SeqCst) {
                    changed = true;
                }
                if !p.revocable || p.state.load(Ordering::SeqCst) != HELD {
                    continue;
                }
                if revoke && p.drop_refs(self, REVOKED) {
                    inode.long_pins.fetch_sub(1, Ordering::SeqCst);
                    revoked += 1;
                    changed = true;
                } else {
                    revocable += 1;
                }
            }
        }
        self.pins.revoked.fetch_add(revoked, Ordering::Relaxed);
        if changed {
            if let Some(n) = rlock(&self.pins.notifier).as_ref() {
                n(inode.ino);
            }
        }
        (revoked, revocable)
    }

    /// Long-term pins currently held on `ino` (0 for an unknown inode).
    pub fn long_term_pins(&self, ino: u64) -> u32 {
        self.inode(ino)
            .map_or(0, |i| i.long_pins.load(Ordering::SeqCst))
    }

    /// The filesystem's counters (see [`FsStats`]). The census walks the refcount table.
    pub fn stats(&self) -> FsStats {
        let census = self.refs.census();
        let r = self.refs.stats();
        let c = &self.stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        FsStats {
            blocks_total: self.geo.data_blocks,
            blocks_free: census.free,
            blocks_cached: census.cached,
            blocks_pinned: census.pinned,
            alloc_free: lock(&self.space).free_blocks(),
            pins_taken: get(&c.pins_taken),
            pins_released: get(&c.pins_released),
            block_pins: r.pins,
            block_unpins: r.unpins,
            layout_breaks: get(&c.layout_breaks),
            lease_breaks: get(&c.lease_breaks),
            waits: r.waits,
            wait_ns: r.wait_ns,
            timeouts: r.timeouts,
            violations: r.violations,
            commits: get(&c.commits),
            transactions: get(&c.transactions),
            pins_revoked: self.pins.revoked.load(Ordering::Relaxed),
        }
    }
}
