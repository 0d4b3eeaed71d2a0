//! The writer lease (issue 13; docs/DESIGN.md "Several hosts"): slot 0 of the host
//! table on the device says which mount, on whichever host, holds the writer role.
//!
//! - [`check`] (in `prepare`, writes nothing): a lease held and heartbeating refuses
//!   the mount ([`MountError::WriterLeaseHeld`]); one held but silent for the host
//!   timeout of this mount's own clock is stale and may be taken over; a free or
//!   released one is taken at once.
//! - [`WriterLease::take`] (in `go_live`): compare-and-swap of the epoch from the value
//!   `check` saw to +1 (the fencing token), then owner, timing, pid, state "held". A
//!   mount that lost the race, or whose predecessor came back to life meanwhile, is
//!   refused.
//! - The heartbeat thread bumps the counter every `heartbeat` and scans the follower
//!   slots for the [`HostGate`]; it notices a takeover (epoch or owner no longer ours)
//!   and fences the mount.
//! - Fencing: before every commit (and at the start of every change, one load) the
//!   writer checks the epoch and owner are still its own ([`WriterLease::still_ours`]);
//!   if not, the commit is refused, the mount turns read-only (EROFS for every later
//!   change), and that is logged once. A fenced mount writes nothing more, not even
//!   at unmount.
//! - `committed_seq` is published after every journal commit; a clean unmount sets
//!   the state to "released", so the next mount takes over at once.

use crate::host_gate::{HostGate, Watches};
use crate::mount_error::MountError;
use daxfs_format::hosts::{
    HeartbeatWatch, HostTable, LeaseRecord, LEASE_FREE, LEASE_HELD, LEASE_RELEASED,
};
use daxfs_pmem::Device;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What [`check`] saw of the lease, for [`WriterLease::take`] to act on.
#[derive(Debug, Clone, Copy)]
pub struct LeaseCheck {
    /// The lease slot as read (a version 1 image reads as all zero: its table is
    /// written only by the upgrade).
    pub seen: LeaseRecord,
    /// The lease was held but silent for the whole timeout: taking it is a takeover.
    pub stale: bool,
}

/// Milliseconds as the table stores them (saturating at u32::MAX).
fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// A random nonzero id for a mount (an owner field): from the kernel's random pool,
/// falling back to time and pid (ids only need to differ between concurrent mounts).
pub fn random_id() -> u64 {
    let mut b = [0u8; 8];
    let got = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok();
    let mut id = u64::from_le_bytes(b);
    if !got || id == 0 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        id = t ^ (u64::from(std::process::id()) << 32) | 1;
    }
    id
}

/// This host's identity as the lease's `host` field records it: the kernel's boot id
/// and this process's pid namespace, hashed (pids are only comparable within both);
/// 0 when either cannot be read (the same-process shortcut is then never taken).
pub fn host_id() -> u64 {
    static ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ID.get_or_init(|| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id");
        let ns = std::fs::read_link("/proc/self/ns/pid");
        match (boot, ns) {
            (Ok(b), Ok(n)) => {
                let text = format!("{}|{}", b.trim(), n.display());
                let lo = daxfs_pmem::codec::crc32(text.as_bytes());
                let hi = daxfs_pmem::codec::crc32(format!("daxfs-host:{text}").as_bytes());
                (u64::from(hi) << 32 | u64::from(lo)).max(1)
            }
            _ => 0,
        }
    })
}

/// Which device a lease of this process is on: the file's (st_dev, st_ino), or the
/// mapping's address for an in-memory device (a crash-test copy nobody else sees).
fn device_key(dev: &Device) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    if dev.kind() == daxfs_pmem::DeviceKind::Memory {
        return (0, dev.as_ptr() as usize as u64);
    }
    std::fs::metadata(dev.path()).map_or((0, 0), |m| (m.dev(), m.ino()))
}

/// Owner ids of this process's live writer leases, with the device each is on.
fn live_leases() -> MutexGuard<'static, std::collections::HashMap<u64, (u64, u64)>> {
    static LIVE: std::sync::OnceLock<Mutex<std::collections::HashMap<u64, (u64, u64)>>> =
        std::sync::OnceLock::new();
    lock(LIVE.get_or_init(Default::default))
}

/// For a lease held by this very process (same host identity and pid): whether one
/// of its live mounts holds it on this device. None for a lease of anyone else, whose
/// liveness only its heartbeat tells (fsck uses this too).
pub fn own_process_holds(dev: &Device, r: &LeaseRecord) -> Option<bool> {
    let me = host_id();
    if me == 0 || r.host != me || r.pid != std::process::id() {
        return None;
    }
    Some(live_leases().get(&r.owner) == Some(&device_key(dev)))
}

/// The lease was taken by a process of this host and pid namespace that no longer
/// exists. A reused pid reads as alive: the heartbeat then decides, after the timeout.
fn pid_gone_here(r: &LeaseRecord) -> bool {
    let me = host_id();
    me != 0
        && r.host == me
        && r.pid != 0
        && r.pid != std::process::id()
        && !Path::new(&format!("/proc/{}", r.pid)).exists()
}

/// Whether the lease slot `r` says a writer holds it (the heartbeat decides whether
/// that writer is alive).
fn held(r: &LeaseRecord) -> bool {
    r.state == LEASE_HELD
}

/// The checking half (the mount's `prepare`): reads the lease and, if it is held,
/// watches its heartbeat for up to `timeout` of this host's monotonic clock. Writes
/// nothing. Refuses with [`MountError::WriterLeaseHeld`] if the heartbeat moves.
pub fn check(dev: &Device, device: &Path, timeout: Duration) -> Result<LeaseCheck, MountError> {
    let Ok(t) = HostTable::on_device(dev) else {
        // A device too short for block 0 was refused by the superblock checks already.
        return Ok(LeaseCheck {
            seen: LeaseRecord::default(),
            stale: false,
        });
    };
    let l = t.lease();
    let first = l.record();
    if !held(&first) {
        return Ok(LeaseCheck {
            seen: first,
            stale: false,
        });
    }
    match own_process_holds(dev, &first) {
        // A mount of this process on this device: refused without waiting.
        Some(true) => {
            return Err(MountError::WriterLeaseHeld {
                device: device.to_path_buf(),
                owner: first.owner,
                pid: first.pid,
            })
        }
        // Left by a mount of this process that is gone (or lives on another device:
        // this is a copy of its image): nothing heartbeats it.
        Some(false) => {
            return Ok(LeaseCheck {
                seen: first,
                stale: true,
            })
        }
        None => {}
    }
    if pid_gone_here(&first) {
        // Its writer process on this host (and pid namespace) no longer exists (killed,
        // crashed): no need to wait for its heartbeat to time out.
        return Ok(LeaseCheck {
            seen: first,
            stale: true,
        });
    }
    let start = Instant::now();
    let mut watch = HeartbeatWatch::new(first.heartbeat, start);
    // Poll a few times per heartbeat period the holder announced (bounded, so a
    // hostile period cannot make this spin or sleep for ever).
    let period = Duration::from_millis(u64::from(first.heartbeat_ms.clamp(4, 1000)) / 4);
    loop {
        let now = Instant::now();
        let r = l.record();
        if r.epoch != first.epoch || !held(&r) {
            // Taken over or released meanwhile: decide again on what is there now.
            return check(dev, device, timeout);
        }
        if !watch.observe(r.heartbeat, now, timeout) {
            return Ok(LeaseCheck {
                seen: r,
                stale: true,
            });
        }
        if r.heartbeat != first.heartbeat {
            return Err(MountError::WriterLeaseHeld {
                device: device.to_path_buf(),
                owner: r.owner,
                pid: r.pid,
            });
        }
        std::thread::sleep(
            period
                .min(timeout.saturating_sub(now - start))
                .max(Duration::from_millis(1)),
        );
    }
}

/// What the heartbeat thread and the mount share.
struct Shared {
    dev: Arc<Device>,
    device: std::path::PathBuf,
    owner: u64,
    epoch: u64,
    fenced: AtomicBool,
    stop: Mutex<bool>,
    wake: Condvar,
    heartbeat: Duration,
    timeout: Duration,
    gate: Arc<HostGate>,
    beats: AtomicU64,
}

impl Shared {
    fn table(&self) -> Option<HostTable<'_>> {
        HostTable::on_device(&self.dev).ok()
    }

    fn still_ours(&self) -> bool {
        if self.fenced.load(Ordering::Acquire) {
            return false;
        }
        let ours = self.table().is_some_and(|t| {
            let l = t.lease();
            l.epoch() == self.epoch && l.owner() == self.owner
        });
        if !ours {
            self.fence();
        }
        ours
    }

    fn fence(&self) {
        if !self.fenced.swap(true, Ordering::AcqRel) {
            let (epoch, pid) = self
                .table()
                .map(|t| (t.lease().epoch(), t.lease().pid()))
                .unwrap_or_default();
            log::error!(
                "{}: writer role taken over by another host (epoch {} -> {epoch}, pid {pid}): \
                 this mount no longer writes; every change now fails with EROFS",
                self.device.display(),
                self.epoch
            );
            eprintln!(
                "daxfs: {}: writer role taken over by another host (pid {pid}); the filesystem is now read-only",
                self.device.display()
            );
        }
    }

    /// The heartbeat thread's loop: scan the follower slots, then bump the counter
    /// (in that order: see `host_gate`), until told to stop or fenced.
    fn run(&self) {
        let mut watches = Watches::default();
        let mut stop = lock(&self.stop);
        loop {
            if *stop {
                return;
            }
            drop(stop);
            if !self.still_ours() {
                return;
            }
            self.gate
                .observe(&mut watches, Instant::now(), self.timeout);
            if let Some(t) = self.table() {
                let l = t.lease();
                let _ = l.set_heartbeat(l.heartbeat().wrapping_add(1));
                self.beats.fetch_add(1, Ordering::Relaxed);
            }
            stop = lock(&self.stop);
            if *stop {
                return;
            }
            stop = match self.wake.wait_timeout(stop, self.heartbeat) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// The writer lease of a live read-write mount.
pub struct WriterLease {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Takes the lease `seen` describes by compare-and-swap of the epoch (the fencing token)
/// and writes the holder's fields: the one place a mount becomes the lease's holder.
/// Refused (with the lease as it now is) if another mount took it since `seen`, or the
/// stale holder came back to life.
fn install(
    dev: &Device,
    seen: &LeaseCheck,
    owner: u64,
    heartbeat: Duration,
    timeout: Duration,
    committed_seq: u64,
) -> Result<u64, LeaseRecord> {
    let t = HostTable::on_device(dev).map_err(|_| seen.seen)?;
    let l = t.lease();
    let now = l.record();
    let changed = now.epoch != seen.seen.epoch
        || (held(&now) && (!seen.stale || now.heartbeat != seen.seen.heartbeat));
    if changed {
        return Err(now);
    }
    let epoch = now.epoch.wrapping_add(1).max(1);
    match l.cas_epoch(now.epoch, epoch) {
        Ok(Ok(_)) => {}
        _ => return Err(l.record()),
    }
    // Epoch first (the token), then the rest; a reader that sees the new epoch with the
    // old owner for an instant only sees "held by someone".
    let ok = l.set_owner(owner).is_ok()
        && l.set_timing(ms(heartbeat), ms(timeout)).is_ok()
        && l.set_committed_seq(committed_seq).is_ok()
        && l.set_heartbeat(now.heartbeat.wrapping_add(1)).is_ok()
        && l.set_host(host_id()).is_ok()
        && l.set_pid_state(std::process::id(), LEASE_HELD).is_ok();
    if !ok {
        return Err(l.record());
    }
    Ok(epoch)
}

/// The lease claimed before a journal replay (`prepare`): two hosts recovering the same
/// device at once must not both replay, or the slower one's replay could write old
/// records over what the faster one wrote once live. The claim holds the lease (epoch
/// +1, state held, no heartbeat) until `go_live` turns it into the [`WriterLease`]; a
/// mount refused before that puts the lease back exactly as it found it (a refused mount
/// leaves the image byte-identical). A claimant slower than the host timeout looks dead:
/// another host may claim the lease, and this one's `go_live` is then refused.
pub(crate) struct ReplayClaim {
    dev: Arc<Device>,
    epoch: u64,
    owner: u64,
    /// The lease as `check` saw it, restored if the claim is dropped unused.
    before: LeaseRecord,
    armed: bool,
}

impl ReplayClaim {
    /// Claims the lease `seen` found free, released or stale.
    pub(crate) fn take(
        dev: &Arc<Device>,
        device: &Path,
        seen: &LeaseCheck,
        heartbeat: Duration,
        timeout: Duration,
    ) -> Result<ReplayClaim, MountError> {
        let owner = random_id();
        let epoch = install(dev, seen, owner, heartbeat, timeout, 0).map_err(|r| {
            MountError::WriterLeaseHeld {
                device: device.to_path_buf(),
                owner: r.owner,
                pid: r.pid,
            }
        })?;
        Ok(ReplayClaim {
            dev: dev.clone(),
            epoch,
            owner,
            before: seen.seen,
            armed: true,
        })
    }

    /// The claim is still the lease's holder (nobody took it over since).
    fn still_held(&self) -> bool {
        HostTable::on_device(&self.dev).is_ok_and(|t| {
            let l = t.lease().record();
            l.epoch == self.epoch && l.owner == self.owner
        })
    }
}

impl Drop for ReplayClaim {
    fn drop(&mut self) {
        if !self.armed || !self.still_held() {
            return;
        }
        let Ok(t) = HostTable::on_device(&self.dev) else {
            return;
        };
        // The fields first, the epoch (the token) last, by CAS from the claim's.
        let l = t.lease();
        let b = &self.before;
        let _ = l.set_owner(b.owner).is_ok()
            && l.set_timing(b.heartbeat_ms, b.timeout_ms).is_ok()
            && l.set_committed_seq(b.committed_seq).is_ok()
            && l.set_heartbeat(b.heartbeat).is_ok()
            && l.set_host(b.host).is_ok()
            && l.set_pid_state(b.pid, b.state).is_ok()
            && l.cas_epoch(self.epoch, b.epoch).is_ok();
    }
}

impl WriterLease {
    /// Takes the lease `check` found free, released or stale (the mount's `go_live`),
    /// publishes `committed_seq`, and starts the heartbeat thread. Refused if another
    /// mount took it since, or if the stale holder came back to life.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn take(
        dev: Arc<Device>,
        device: &Path,
        seen: &LeaseCheck,
        heartbeat: Duration,
        timeout: Duration,
        committed_seq: u64,
        gate: Arc<HostGate>,
        claim: Option<ReplayClaim>,
    ) -> Result<WriterLease, MountError> {
        let refused = |r: &LeaseRecord| MountError::WriterLeaseHeld {
            device: device.to_path_buf(),
            owner: r.owner,
            pid: r.pid,
        };
        let (owner, epoch) = match claim {
            // Claimed before the replay: still ours, or another host took it over.
            Some(mut c) => {
                let t = HostTable::on_device(&dev).map_err(|_| refused(&seen.seen))?;
                let l = t.lease();
                if !c.still_held() {
                    return Err(refused(&l.record()));
                }
                let ok = l.set_committed_seq(committed_seq).is_ok()
                    && l.set_heartbeat(l.heartbeat().wrapping_add(1)).is_ok();
                if !ok {
                    return Err(refused(&l.record()));
                }
                c.armed = false;
                (c.owner, c.epoch)
            }
            None => {
                let owner = random_id();
                let epoch = install(&dev, seen, owner, heartbeat, timeout, committed_seq)
                    .map_err(|r| refused(&r))?;
                (owner, epoch)
            }
        };
        if seen.stale {
            log::warn!(
                "{}: took over the writer role from pid {} (heartbeat silent for {} ms)",
                device.display(),
                seen.seen.pid,
                timeout.as_millis()
            );
        }
        let shared = Arc::new(Shared {
            dev,
            device: device.to_path_buf(),
            owner,
            epoch,
            fenced: AtomicBool::new(false),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            heartbeat,
            timeout,
            gate,
            beats: AtomicU64::new(0),
        });
        live_leases().insert(owner, device_key(&shared.dev));
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("daxfs-heartbeat".into())
            .spawn(move || s.run())
            .ok();
        if thread.is_none() {
            live_leases().remove(&owner);
            // Without a heartbeat others would take the lease over after the timeout
            // while this mount still writes: refuse instead.
            let r = shared.table().map(|t| {
                let _ = t.lease().set_pid_state(std::process::id(), LEASE_RELEASED);
                t.lease().record()
            });
            return Err(refused(&r.unwrap_or_default()));
        }
        Ok(WriterLease {
            shared,
            thread: Mutex::new(thread),
        })
    }

    /// This mount's owner id in the lease slot.
    pub fn owner(&self) -> u64 {
        self.shared.owner
    }

    /// The epoch (fencing token) this mount took.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    /// Whether the lease is still this mount's (two loads of the table); fences the
    /// mount (once, logged) when it is not.
    pub fn still_ours(&self) -> bool {
        self.shared.still_ours()
    }

    /// The mount was fenced (another host took the writer role).
    pub fn fenced(&self) -> bool {
        self.shared.fenced.load(Ordering::Acquire)
    }

    /// Publishes the journal sequence of the last durable commit.
    pub fn publish_committed(&self, seq: u64) {
        if let Some(t) = self.shared.table() {
            let _ = t.lease().set_committed_seq(seq);
        }
    }

    /// Heartbeats sent so far (tests wait on it instead of on time).
    pub fn beats(&self) -> u64 {
        self.shared.beats.load(Ordering::Relaxed)
    }

    /// Test hook (feature `test-hooks`): the heartbeat stops as if the writer were
    /// killed (the lease is left held, going stale), while the mount stays.
    #[cfg(feature = "test-hooks")]
    pub fn test_stop_heartbeat(&self) {
        self.stop_thread();
    }

    fn stop_thread(&self) {
        live_leases().remove(&self.shared.owner);
        *lock(&self.shared.stop) = true;
        self.shared.wake.notify_all();
        if let Some(h) = lock(&self.thread).take() {
            let _ = h.join();
        }
    }

    /// Clean unmount: stops the heartbeat and marks the lease released (if it is still
    /// this mount's), so the next mount takes it at once.
    pub fn release(&self) {
        self.stop_thread();
        if self.still_ours() {
            if let Some(t) = self.shared.table() {
                let _ = t.lease().set_pid_state(std::process::id(), LEASE_RELEASED);
            }
        }
    }
}

impl Drop for WriterLease {
    fn drop(&mut self) {
        // Not released (a failed unmount): the heartbeat stops and the lease goes stale.
        self.stop_thread();
    }
}

/// A lease slot that is free for the taking without waiting (state free or released).
pub fn is_free(r: &LeaseRecord) -> bool {
    r.state == LEASE_FREE || r.state == LEASE_RELEASED
}

/// Why a read-write open found the device locked by another process of this host: the
/// writer lease's message if that process holds the lease (state "held" on a version 2
/// image; the lock proves it alive), else None (mkfs, fsck, an older daemon: the lock's
/// own message stands). Opens the device read-only without the lock; writes nothing.
pub fn explain_busy(path: &Path) -> Option<MountError> {
    let dev = Device::open(
        path,
        daxfs_pmem::DeviceOptions {
            writable: false,
            exclusive: false,
            populate: false,
        },
    )
    .ok()?;
    let mut b = [0u8; daxfs_format::SB_SIZE];
    if dev.size() < daxfs_format::BLOCK_SIZE {
        return None;
    }
    dev.read(0, &mut b);
    let sb = daxfs_format::Superblock::decode(&b, dev.size()).ok()?;
    if sb.needs_upgrade() {
        return None;
    }
    let r = HostTable::on_device(&dev).ok()?.lease().record();
    held(&r).then(|| MountError::WriterLeaseHeld {
        device: path.to_path_buf(),
        owner: r.owner,
        pid: r.pid,
    })
}
