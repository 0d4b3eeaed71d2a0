//! The core filesystem: mount (load and validate metadata), the in-memory inode table,
//! transactions (`Tx`; committed through the group commit queue of `commit.rs`),
//! attributes and statfs. Namespace operations live in `namespace.rs`, file data in
//! `file_io.rs`, xattrs in `xattr.rs`; all of them are `impl DaxFs` blocks over the
//! state defined here.
//!
//! Concurrency: namespace-changing operations serialise on `ns` and then take the
//! write locks of the inodes they change; data operations take one inode's lock. The
//! journal, the commit queue and the allocator have their own mutexes, always taken after
//! inode locks. Committers only try the journal's mutex (its holder is the commit
//! leader, `commit.rs`); the leader takes the queue's, then the allocator's, the inode
//! table's and the free-inode list's, never an inode lock.

use crate::break_layouts::{self, would_wait, CacheInvalidator, LayoutEnv, LayoutGuard, Wait};
use crate::commit::{CommitEnv, GroupCommit, Ticket, Tx};
use crate::dir::{DirIndex, DirSlot};
use crate::error::{Errno, Result};
use crate::extent_map::{ExtentMap, SlotLoc};
use crate::inode::{lock, rlock, wlock, Inode, InodeState};
use crate::inode_table::InodeTable;
use crate::mount_error::{CorruptError, MountError, RecoveryStep};
use crate::types::*;
use daxfs_alloc::{FreeSpace, RefTable};
use daxfs_format::*;
use daxfs_journal::{Journal, Transaction};
use daxfs_pmem::Media;
use daxfs_pmem::{Device, DeviceOptions};
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard};
use std::time::Duration;

/// lseek whence values handled by [`DaxFs::lseek`].
pub const SEEK_DATA: i32 = libc::SEEK_DATA;
pub const SEEK_HOLE: i32 = libc::SEEK_HOLE;

/// Largest file size: 16 TiB, as ext4 with 4 KiB blocks.
pub const MAX_FILE_SIZE: u64 = 1 << 44;
/// Most hard links to one inode, as ext4.
pub const MAX_LINKS: u32 = 65000;

/// A mounted daxfs instance. Thread-safe: all methods take `&self`.
pub struct DaxFs {
    /// The state, shared with the timestamp writeback thread (`times.rs`), which works
    /// through a second handle: the filesystem is an owned value, not an `Arc`.
    core: Arc<FsCore>,
    /// The mount's own handle (not the writeback thread's): dropping it shuts down.
    owner: bool,
}

impl std::ops::Deref for DaxFs {
    type Target = FsCore;
    fn deref(&self) -> &FsCore {
        &self.core
    }
}

impl DaxFs {
    /// The owner's handle on a new core.
    fn from_core(core: FsCore) -> DaxFs {
        DaxFs {
            core: Arc::new(core),
            owner: true,
        }
    }

    /// A second handle on the same filesystem whose drop does not shut it down (for the
    /// writeback thread, which the owner's shutdown stops first).
    pub(crate) fn handle(&self) -> DaxFs {
        DaxFs {
            core: self.core.clone(),
            owner: false,
        }
    }
}

/// The state of a [`DaxFs`] (reached through it; not part of the API).
#[doc(hidden)]
pub struct FsCore {
    pub(crate) dev: Arc<Device>,
    pub(crate) sb: Mutex<Superblock>,
    /// Immutable geometry (a copy of the superblock at mount).
    pub(crate) geo: Superblock,
    pub(crate) opts: FsOptions,
    /// The journal and the commit queue in front of it (group commit, `commit.rs`).
    pub(crate) group: GroupCommit,
    pub(crate) space: Mutex<FreeSpace>,
    pub(crate) refs: RefTable,
    pub(crate) inodes: RwLock<InodeTable<Arc<Inode>>>,
    /// Free inode numbers (the lowest is handed out first).
    pub(crate) free_inos: Mutex<BTreeSet<u64>>,
    /// Serialises namespace changes (create, unlink, rename, link, ...).
    pub(crate) ns: Mutex<()>,
    pub(crate) generation: AtomicU32,
    /// Set after a failed commit: the in-memory state can no longer be trusted to
    /// match the media, so every later change fails with EIO.
    pub(crate) failed: AtomicBool,
    pub(crate) stats: FsCounters,
    pub(crate) shut_down: AtomicBool,
    /// What the mount still has to write once it goes live (`go_live`); None when live.
    deferred: Mutex<Option<Deferred>>,
    /// Drops the kernel's cached pages of a range (set by the FUSE adapter).
    pub(crate) cache_inval: RwLock<Option<CacheInvalidator>>,
    /// Long-term pins by inode, per-user pin usage, the lease break hook (`pin.rs`).
    pub(crate) pins: crate::pin::PinRegistry,
    /// Unlinked inodes still referenced, and the frees of them (`namespace.rs`,
    /// [`DaxFs::wait_for_orphan_free`]).
    pub(crate) orphan_frees: crate::namespace::OrphanFrees,
    /// Timestamps changed in memory only, and their writeback (`times.rs`).
    pub(crate) times: crate::times::LazyTimes,
    /// `-o follow`: the follower's log cursor, overlay and read guards (`follow.rs`);
    /// None on a writer or a plain read-only mount.
    pub(crate) follower: Option<crate::follow::Follower>,
    /// The writer lease of a live read-write mount of a version 2 image (`lease.rs`).
    pub(crate) lease: std::sync::OnceLock<crate::lease::WriterLease>,
    /// Frees held back for follower hosts (`host_gate.rs`).
    pub(crate) gate: Arc<crate::host_gate::HostGate>,
}

#[derive(Default)]
pub(crate) struct FsCounters {
    /// break_layouts calls that found a busy block and had to wait.
    pub layout_breaks: AtomicU64,
    /// Lease breaks signalled (one per busy pass of a break).
    pub lease_breaks: AtomicU64,
    /// Long-term pins taken and released (ioctl pins and pinned mappings).
    pub pins_taken: AtomicU64,
    pub pins_released: AtomicU64,
    /// Journal commits (one commit record and fence sequence each) and the metadata
    /// transactions they carried (more than one when concurrent commits were batched).
    pub commits: AtomicU64,
    pub transactions: AtomicU64,
}

/// The writes a mount makes after `load` accepted the image, held back until
/// [`DaxFs::go_live`] so that a mount that fails before it is live (mount(2) refused)
/// leaves the image as it found it.
struct Deferred {
    /// The on-media bitmap disagrees with the extent maps (left by a crash): rewrite it.
    bitmap_mismatched: bool,
    /// Inodes with no links left (unlinked while open before a crash): reclaim them.
    orphans: Vec<u64>,
    /// What `prepare` saw of the writer lease (read-write mounts): `go_live` takes it.
    lease: Option<crate::lease::LeaseCheck>,
    /// The lease claimed before a replay (`lease::ReplayClaim`): released if the mount
    /// is dropped before `go_live` took the lease.
    claim: Option<crate::lease::ReplayClaim>,
}

/// The tables a metadata load built ([`DaxFs::load_tables`]).
pub(crate) struct LoadedTables {
    pub used: FreeSpace,
    pub free: Vec<u64>,
    pub inodes: Vec<(u64, Arc<Inode>)>,
    deferred: Deferred,
}

/// Whether mounting `dev` would replay journal transactions (and so write to it). Reads
/// the superblock (primary, else backup) for the journal's place; an image whose
/// superblocks or journal header are unreadable says false, and the mount then refuses
/// it for that reason.
fn journal_needs_replay(dev: &Arc<Device>) -> bool {
    let size = dev.size();
    let mut buf = [0u8; SB_SIZE];
    let sb = [0, BLOCK_SIZE].into_iter().find_map(|off| {
        if off + BLOCK_SIZE > size {
            return None;
        }
        dev.read(off, &mut buf);
        Superblock::decode(&buf, size).ok()
    });
    let Some(sb) = sb else { return false };
    let media: Arc<dyn Media> = dev.clone();
    daxfs_journal::needs_replay(
        media,
        sb.journal_start * BLOCK_SIZE,
        sb.journal_blocks * BLOCK_SIZE,
    )
    .unwrap_or(false)
}

impl FsCore {
    /// The in-memory state of a mount before `load`: everything empty, nothing written.
    fn new(
        dev: Arc<Device>,
        sb: &Superblock,
        opts: FsOptions,
        journal: Journal,
        follower: Option<crate::follow::Follower>,
        gate: crate::host_gate::HostGate,
    ) -> FsCore {
        FsCore {
            refs: RefTable::new(sb.data_blocks),
            dev,
            sb: Mutex::new(sb.clone()),
            geo: sb.clone(),
            opts,
            group: GroupCommit::new(journal),
            space: Mutex::new(FreeSpace::new_all_free(sb.data_blocks)),
            inodes: RwLock::new(InodeTable::default()),
            free_inos: Mutex::new(BTreeSet::new()),
            ns: Mutex::new(()),
            generation: AtomicU32::new(now().nsec),
            failed: AtomicBool::new(false),
            stats: FsCounters::default(),
            // Not live yet: dropping it writes nothing (see `go_live`).
            shut_down: AtomicBool::new(true),
            deferred: Mutex::new(None),
            cache_inval: RwLock::new(None),
            pins: Default::default(),
            orphan_frees: Default::default(),
            times: Default::default(),
            follower,
            lease: std::sync::OnceLock::new(),
            gate: Arc::new(gate),
        }
    }
}

impl DaxFs {
    /// Opens the device, validates the superblock, replays the journal, loads metadata,
    /// reclaims orphans. A refusal is a [`MountError`] whose message names the device.
    ///
    /// A read-only mount opens the device read-only, so an image its user may only read
    /// (mode 0444, a read-only bind mount or filesystem) mounts with `ro`. The exception
    /// is a journal holding committed transactions: they must be replayed before the
    /// metadata can be read (ext4 recovers on a read-only mount too), so the device is
    /// then reopened read-write, and the mount refused if it cannot be.
    pub fn mount(device: &Path, opts: FsOptions) -> std::result::Result<DaxFs, MountError> {
        let fs = DaxFs::prepare(device, opts)?;
        fs.go_live()?;
        Ok(fs)
    }

    /// The checking half of [`mount`](Self::mount): opens the device, validates the
    /// superblock, replays the journal and loads the metadata, but writes nothing else
    /// (not even when dropped) until [`go_live`](Self::go_live). The daemon calls it
    /// before mount(2) and `go_live` once the kernel mount exists, so a mount that fails
    /// in between leaves the image byte-identical (when there was nothing to replay:
    /// replay of committed transactions is the one write a refused mount makes).
    pub fn prepare(device: &Path, opts: FsOptions) -> std::result::Result<DaxFs, MountError> {
        let open = |writable| {
            Device::open(
                device,
                DeviceOptions {
                    writable,
                    // A follower shares the device with its live writer (`follow.rs`).
                    exclusive: !opts.follow,
                    populate: true,
                },
            )
            .map(Arc::new)
        };
        // A follower writes its host slot (and nothing else): writable when it can be.
        let mut dev = (if opts.follow {
            open(true).or_else(|_| open(false))
        } else {
            open(!opts.read_only)
        })
        .map_err(|e| {
            let ro = matches!(&e, daxfs_pmem::DeviceError::Io { source, .. }
                if matches!(source.raw_os_error(), Some(libc::EROFS | libc::EACCES)));
            if !opts.read_only && ro {
                MountError::ReadOnlyDevice(e)
            } else if matches!(e, daxfs_pmem::DeviceError::Busy { .. }) && !opts.read_only {
                // Locked by another daemon of this host: if it is the writer, say so
                // as a writer on another host would be refused.
                crate::lease::explain_busy(device).unwrap_or(MountError::Open(e))
            } else {
                MountError::Open(e)
            }
        })?;
        if !dev.writable() && !opts.follow && journal_needs_replay(&dev) {
            // Release the lock before taking it again through a writable descriptor.
            drop(dev);
            dev = open(true).map_err(MountError::ReplayNeedsWritable)?;
        }
        DaxFs::prepare_device(dev, opts)
    }

    /// Mounts an already opened device (e.g. a memory device holding a crash image):
    /// validates the superblock, replays the journal, loads metadata, reclaims orphans.
    pub fn mount_device(
        dev: Arc<Device>,
        opts: FsOptions,
    ) -> std::result::Result<DaxFs, MountError> {
        let fs = DaxFs::prepare_device(dev, opts)?;
        fs.go_live()?;
        Ok(fs)
    }

    /// [`prepare`](Self::prepare) on an already opened device.
    pub fn prepare_device(
        dev: Arc<Device>,
        mut opts: FsOptions,
    ) -> std::result::Result<DaxFs, MountError> {
        // A follower never changes the filesystem: every change is EROFS.
        opts.read_only |= opts.follow;
        let size = dev.size();
        let name = dev.path().to_path_buf();
        // Either copy may lie beyond the end of a truncated image: a copy the device
        // cannot hold reads as zeros (no magic), and `decode` then refuses it.
        let read_copy = |off: u64| {
            let mut b = [0u8; SB_SIZE];
            if off
                .checked_add(SB_SIZE as u64)
                .is_some_and(|end| end <= size)
            {
                dev.read(off, &mut b);
            }
            b
        };
        let buf = read_copy(0);
        let sb = match Superblock::decode(&buf, size) {
            Ok(sb) => sb,
            Err(primary) => {
                let b2 = read_copy(BLOCK_SIZE);
                if !Superblock::has_magic(&buf) && !Superblock::has_magic(&b2) {
                    return Err(MountError::NotDaxfs { device: name });
                }
                match Superblock::decode(&b2, size) {
                    Ok(sb) => {
                        eprintln!(
                            "daxfs: {}: primary superblock is bad ({primary}); using the backup",
                            name.display()
                        );
                        sb
                    }
                    Err(_) => {
                        return Err(MountError::BadSuperblock {
                            device: name,
                            primary,
                        })
                    }
                }
            }
        };
        if sb.ro_compat != 0 && !opts.read_only {
            return Err(MountError::UnknownRoCompat {
                device: name,
                features: sb.ro_compat,
            });
        }
        // The writer lease is only checked here (nothing written) and taken in
        // `go_live`. Before the journal is opened: replaying a live writer's journal
        // would write under it.
        let lease = if opts.read_only || sb.needs_upgrade() {
            None
        } else {
            Some(crate::lease::check(&dev, &name, opts.host_timeout)?)
        };
        let media: Arc<dyn Media> = dev.clone();
        if opts.follow {
            return DaxFs::prepare_follower(dev, opts, sb);
        }
        if !dev.writable() && journal_needs_replay(&dev) {
            // Replaying would write to a device opened read-only.
            return Err(MountError::ReplayOnReadOnly { device: name });
        }
        // Two hosts recovering one device at once must not both replay: the lease is
        // claimed first (`lease::ReplayClaim`), and `go_live` takes it from the claim.
        let claim = match &lease {
            Some(seen) if journal_needs_replay(&dev) => Some(crate::lease::ReplayClaim::take(
                &dev,
                &name,
                seen,
                opts.heartbeat,
                opts.host_timeout,
            )?),
            _ => None,
        };
        // Read-only until `load` has checked the metadata (it calls `make_writable`): a
        // refused mount writes nothing but the replay of committed transactions.
        let (journal, _report) = Journal::open_read_only(
            media,
            sb.journal_start * BLOCK_SIZE,
            sb.journal_blocks * BLOCK_SIZE,
        )
        .map_err(|source| match source {
            // Replaying up to the damage would put older metadata over newer.
            daxfs_journal::JournalError::Damaged(_) => MountError::JournalDamaged {
                device: name.clone(),
                source,
            },
            _ => MountError::Journal {
                device: name.clone(),
                source,
            },
        })?;
        if _report.transactions_replayed > 0 {
            log::info!(
                "{}: journal recovery replayed {} transaction(s)",
                name.display(),
                _report.transactions_replayed
            );
        }
        let gate = crate::host_gate::HostGate::new((!opts.read_only).then(|| dev.clone()));
        let fs = DaxFs::from_core(FsCore::new(dev, &sb, opts, journal, None, gate));
        // Refused: nothing may be written, not even the clean shutdown that dropping a
        // mounted filesystem does (it would reclaim "orphans" and mark the image clean on
        // the strength of metadata that was just found inconsistent): `shut_down` is
        // still set.
        let mut deferred = fs.load().map_err(|source| MountError::Corrupt {
            device: name,
            source,
        })?;
        deferred.lease = lease;
        deferred.claim = claim;
        *lock(&fs.deferred) = Some(deferred);
        Ok(fs)
    }

    /// The follower's half of [`prepare_device`](Self::prepare_device) (`follow.rs`).
    fn prepare_follower(
        dev: Arc<Device>,
        opts: FsOptions,
        sb: Superblock,
    ) -> std::result::Result<DaxFs, MountError> {
        let name = dev.path().to_path_buf();
        let media: Arc<dyn Media> = dev.clone();
        let journal_err = |source| MountError::Journal {
            device: name.clone(),
            source,
        };
        let (start, len) = (
            sb.journal_start * BLOCK_SIZE,
            sb.journal_blocks * BLOCK_SIZE,
        );
        let journal = Journal::open_passive(media, start, len).map_err(journal_err)?;
        let follower = crate::follow::Follower::new(&dev, start, len, opts.host_timeout)?;
        // A follower frees nothing: no lease, no gate over the table.
        let gate = crate::host_gate::HostGate::new(None);
        let fs = DaxFs::from_core(FsCore::new(dev, &sb, opts, journal, Some(follower), gate));
        fs.follow_initial_load()
            .map_err(|source| MountError::Corrupt {
                device: name,
                source,
            })?;
        Ok(fs)
    }

    /// Reads `buf.len()` metadata bytes at device offset `off`: from the device, through
    /// a follower's overlay of the writer's newest transactions (`follow.rs`).
    pub(crate) fn meta_read(&self, off: u64, buf: &mut [u8]) {
        self.dev.read(off, buf);
        if let Some(f) = &self.follower {
            f.overlay_onto(off, buf);
        }
    }

    /// The writing half of a mount, after [`prepare`](Self::prepare): makes the journal
    /// writable, rewrites a bitmap a crash left stale, reclaims orphans and marks the
    /// superblock mounted. From here on dropping the filesystem shuts it down cleanly. A
    /// second call does nothing.
    pub fn go_live(&self) -> std::result::Result<(), MountError> {
        let Some(deferred) = lock(&self.deferred).take() else {
            return Ok(());
        };
        let device = || self.dev.path().to_path_buf();
        if self.opts.read_only {
            // A journal the open replayed (the device was opened writable for it) is
            // retired now that the mount is live, as ext4 recovers on a read-only mount:
            // the next mount, perhaps of a device that can no longer be written, has
            // nothing to replay.
            self.group.journal().retire_replayed();
            self.shut_down.store(false, Ordering::SeqCst);
            return Ok(());
        }
        let g = &self.geo;
        self.take_lease(deferred.lease, deferred.claim)?;
        self.group.journal().make_writable();
        let written = (|| {
            if deferred.bitmap_mismatched {
                // Rewrite the bitmap from the extent maps, through the journal.
                let mut tx = Tx::new();
                {
                    let space = lock(&self.space);
                    for i in 0..g.bitmap_blocks {
                        let im = self.bitmap_image(&space, i, &[]);
                        tx.txn.write(g.bitmap_block_offset(i), &im);
                    }
                }
                self.commit(tx)
                    .map_err(|e| (RecoveryStep::RewriteBitmap, e))?;
            }
            for ino in deferred.orphans {
                let Some(inode) = self.inode(ino).ok() else {
                    continue;
                };
                let mut tx = Tx::new();
                let mut st = wlock(&inode.st);
                self.free_inode(&inode, &mut st, &mut tx)
                    .map_err(|e| (RecoveryStep::ReclaimOrphan(ino), e))?;
                drop(st);
                self.commit(tx)
                    .map_err(|e| (RecoveryStep::ReclaimOrphan(ino), e))?;
            }
            std::result::Result::<(), (RecoveryStep, Errno)>::Ok(())
        })();
        if let Err((step, source)) = written {
            return Err(MountError::Recovery {
                device: device(),
                step,
                source,
            });
        }
        self.shut_down.store(false, Ordering::SeqCst);
        self.start_writeback();
        let enc = {
            let mut sbm = lock(&self.sb);
            sbm.state = STATE_MOUNTED;
            // Statistics read from the media: wraps rather than overflows.
            sbm.mount_count = sbm.mount_count.wrapping_add(1);
            sbm.mount_time = {
                let t = now();
                t.sec as u64 * 1_000_000_000 + t.nsec as u64
            };
            sbm.encode()
        };
        self.write_superblock(0, &enc)
            .map_err(|source| MountError::SuperblockUpdate {
                device: device(),
                source,
            })
    }

    /// Going live read-write: upgrades a version 1 image's block 0 (zeroed host table;
    /// the superblock written at the end of `go_live` says version 2), then takes the
    /// writer lease `prepare` found free or stale (`lease.rs`).
    fn take_lease(
        &self,
        seen: Option<crate::lease::LeaseCheck>,
        claim: Option<crate::lease::ReplayClaim>,
    ) -> std::result::Result<(), MountError> {
        let device = self.dev.path().to_path_buf();
        let seen = {
            let mut sbm = lock(&self.sb);
            let upgraded = daxfs_format::hosts::upgrade_v1(&self.dev, &mut sbm).map_err(|_| {
                MountError::SuperblockUpdate {
                    device: device.clone(),
                    source: Errno::EIO,
                }
            })?;
            if upgraded {
                log::info!(
                    "{}: upgrading the image to format version 2",
                    device.display()
                );
            }
            match seen {
                Some(s) => s,
                // Upgraded just now: the table is zero, the lease free.
                None => crate::lease::LeaseCheck {
                    seen: Default::default(),
                    stale: false,
                },
            }
        };
        let committed = self.group.journal().sequence().saturating_sub(1);
        let lease = crate::lease::WriterLease::take(
            self.dev.clone(),
            &device,
            &seen,
            self.opts.heartbeat,
            self.opts.host_timeout,
            committed,
            self.gate.clone(),
            claim,
        )?;
        let _ = self.lease.set(lease);
        Ok(())
    }

    /// The errno of a change refused because the writer role was taken over (EROFS),
    /// else `e`.
    pub(crate) fn fenced_errno(&self, e: Errno) -> Errno {
        if self.lease.get().is_some_and(|l| l.fenced()) {
            Errno::EROFS
        } else {
            e
        }
    }

    /// The writer lease of this mount (None: read-only, or not live yet).
    pub fn writer_lease(&self) -> Option<&crate::lease::WriterLease> {
        self.lease.get()
    }

    /// Blocks freed but held back for follower hosts (`host_gate.rs`).
    pub fn held_back_blocks(&self) -> u64 {
        self.gate.held_blocks()
    }

    /// Hands the held-back frees every live follower is past to the allocator.
    pub(crate) fn drain_gate(&self, space: &mut FreeSpace, force: bool) -> bool {
        self.gate.drain(force, |r| {
            if space.free(r).is_err() {
                self.refs.note_violation();
            }
        })
    }

    /// Reads every inode, extent map, directory and xattr block; rebuilds the free-space
    /// map from the extent maps and checks it against the on-media bitmap.
    ///
    /// One pass over the inode table; what the namespace checks need is gathered into
    /// two flat arrays (one record per inode, one per directory entry) and checked by
    /// sorting and merging, so a mount costs a few hundred ns per inode rather than
    /// hash probes per entry (10^6 files: see docs/BENCHMARKS.md, "Scale").
    fn load(&self) -> std::result::Result<Deferred, CorruptError> {
        let t = self.load_tables()?;
        *lock(&self.space) = t.used;
        *lock(&self.free_inos) = t.free.into_iter().collect();
        *wlock(&self.inodes) = t.inodes.into_iter().collect();
        Ok(t.deferred)
    }

    /// What [`load`](Self::load) installs, read (through [`meta_read`](Self::meta_read))
    /// and checked but not installed: a follower installs a view only once it knows the
    /// writer did not move under it (`follow.rs`).
    pub(crate) fn load_tables(&self) -> std::result::Result<LoadedTables, CorruptError> {
        let g = &self.geo;
        let mut used = FreeSpace::new_all_free(g.data_blocks);
        let refs = &self.refs;
        let follower = &self.follower;
        let mut claim = |pblk: u64,
                         len: u64,
                         ino: u64,
                         part: &'static str|
         -> std::result::Result<(), CorruptError> {
            if len == 0 || !g.is_data_block(pblk) || !g.is_data_block(pblk + len - 1) {
                return Err(CorruptError::OutsideDataArea {
                    ino,
                    part,
                    pblk,
                    len,
                });
            }
            let r = pblk - g.data_start..pblk - g.data_start + len;
            if r.clone().any(|b| used.is_used(b)) {
                return Err(CorruptError::UsedTwice {
                    ino,
                    part,
                    pblk,
                    len,
                });
            }
            used.mark_used(r.clone()).map_err(CorruptError::Alloc)?;
            // Every claimed block is referenced by the inode that claims it; a failed
            // load drops the whole table with the filesystem. A follower maps the blocks
            // of each view it installs (`follow.rs`), not while it loads one.
            if follower.is_none() {
                for b in r {
                    refs.map(b);
                }
            }
            Ok(())
        };
        // In inode-number order: `nodes[i]` describes `inodes[i]`.
        let mut inodes: Vec<(u64, Arc<Inode>)> = Vec::new();
        let mut nodes: Vec<LinkNode> = Vec::new();
        let mut entries: Vec<LinkEntry> = Vec::new();
        let mut free = Vec::new();
        let mut slot = [0u8; INODE_SIZE as usize];
        let mut blockbuf = vec![0u8; BLOCK_SIZE as usize];
        let mut orphans = Vec::new();
        self.meta_read(g.inode_offset(0), &mut slot);
        if slot.iter().any(|&b| b != 0) {
            return Err(CorruptError::ReservedSlotInUse);
        }
        for ino in 1..g.inode_count {
            self.meta_read(g.inode_offset(ino), &mut slot);
            let d = match DiskInode::decode(&slot)
                .map_err(|source| CorruptError::Decode { ino, source })?
            {
                None => {
                    free.push(ino);
                    continue;
                }
                Some(d) => d,
            };
            let Some(kind) = FileKind::from_mode(d.mode) else {
                return Err(CorruptError::InvalidMode { ino, mode: d.mode });
            };
            // No file grows past MAX_FILE_SIZE; the I/O paths compute `offset + len` up
            // to the size and rely on it (fsck reports the same).
            if d.size > MAX_FILE_SIZE {
                return Err(CorruptError::SizeTooLarge { ino, size: d.size });
            }
            // Extent blocks chain.
            let mut chain = Vec::new();
            let mut next = d.extent_block;
            while next != 0 {
                if chain.len() as u64 > g.data_blocks {
                    return Err(CorruptError::ExtentChainLoops { ino });
                }
                claim(next, 1, ino, " extent block")?;
                self.meta_read(next * BLOCK_SIZE, &mut blockbuf);
                let nx = decode_extent_block_header(&blockbuf, ino)
                    .map_err(|source| CorruptError::Decode { ino, source })?;
                let mut slots = Vec::with_capacity(EXTENTS_PER_BLOCK);
                for j in 0..EXTENTS_PER_BLOCK {
                    let o = EXTENT_BLOCK_HEADER + j * EXTENT_SIZE;
                    slots.push(
                        Extent::decode(&blockbuf[o..o + EXTENT_SIZE])
                            .map_err(|source| CorruptError::Decode { ino, source })?,
                    );
                }
                chain.push((next, slots));
                next = nx;
            }
            let chain_blocks = chain.len() as u64;
            let ext = ExtentMap::load(&d.inline, chain)
                .map_err(|source| CorruptError::Extents { ino, source })?;
            // The counts fsck checks: an inode whose counts disagree with what it stores
            // is not mounted as if clean (the allocator and statfs trust them).
            if ext.len() as u64 != u64::from(d.extent_count) {
                return Err(CorruptError::ExtentCount {
                    ino,
                    recorded: d.extent_count,
                    stored: ext.len(),
                });
            }
            let mut owned = chain_blocks + u64::from(d.xattr_block != 0);
            for e in ext.iter() {
                if e.end() > MAX_FILE_SIZE / BLOCK_SIZE {
                    return Err(CorruptError::ExtentBeyondMaxSize { ino });
                }
                claim(e.pblk, e.len as u64, ino, "")?;
                owned += e.len as u64;
            }
            if owned != d.blocks {
                return Err(CorruptError::BlockCount {
                    ino,
                    recorded: d.blocks,
                    owned,
                });
            }
            let mut xattrs = Vec::new();
            if d.xattr_block != 0 {
                claim(d.xattr_block, 1, ino, " xattr block")?;
                self.meta_read(d.xattr_block * BLOCK_SIZE, &mut blockbuf);
                xattrs = decode_xattr_block(&blockbuf, ino).map_err(CorruptError::Block)?;
            }
            // What fsck checks of the other kinds (readlink reads block 0 of a symlink
            // up to its size; device nodes, fifos and sockets hold no data).
            match kind {
                FileKind::Symlink if d.size == 0 || d.size >= BLOCK_SIZE => {
                    return Err(CorruptError::SymlinkLength { ino, len: d.size });
                }
                FileKind::Symlink if ext.find(0).is_none() => {
                    return Err(CorruptError::SymlinkTargetMissing { ino });
                }
                FileKind::Dir | FileKind::File | FileKind::Symlink => {}
                _ if !ext.is_empty() || d.size != 0 => {
                    return Err(CorruptError::SpecialHasData { ino, kind });
                }
                _ => {}
            }
            let dir = if kind == FileKind::Dir {
                let idx = self.load_dir(ino, &d, &ext)?;
                let at = nodes.len();
                entries.extend(idx.iter().map(|(_, e)| LinkEntry {
                    child: e.ino,
                    dir: at,
                    ftype: e.ftype,
                }));
                Some(Box::new(idx))
            } else {
                None
            };
            if d.nlink == 0 {
                orphans.push(ino);
            }
            nodes.push(LinkNode {
                ino,
                dtype: kind.dtype(),
                nlink: d.nlink,
                parent: d.parent,
                orphan: d.flags & IFLAG_ORPHAN != 0,
            });
            let st = InodeState {
                d,
                ext,
                dir,
                xattrs,
                dead: false,
            };
            inodes.push((ino, Arc::new(Inode::new(ino, st))));
        }
        match nodes.first() {
            // The root's ".." is itself: its parent field names no other directory.
            Some(n) if n.ino == ROOT_INO && n.dtype == libc::DT_DIR && n.parent != ROOT_INO => {
                return Err(CorruptError::RootParent { parent: n.parent })
            }
            Some(n) if n.ino == ROOT_INO && n.dtype == libc::DT_DIR => {}
            Some(n) if n.ino == ROOT_INO => return Err(CorruptError::RootNotDir),
            _ => return Err(CorruptError::RootMissing),
        }
        check_links(&nodes, entries, |dir, child| {
            // Only for an error message: the name of the entry of `dir` naming `child`.
            let st = rlock(&inodes[dir].1.st);
            st.dir
                .as_ref()
                .and_then(|d| d.iter().find(|(_, e)| e.ino == child))
                .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default()
        })?;
        drop(nodes);
        // The on-media bitmap must agree with the extent maps; a crash may leave blocks
        // marked used that no committed extent references: those are reclaimed here.
        let mut img = vec![0u8; BLOCK_SIZE as usize];
        let mut mismatched = 0u64;
        for i in 0..g.bitmap_blocks {
            self.meta_read(g.bitmap_block_offset(i), &mut img);
            check_bitmap_block(&img, i).map_err(CorruptError::Block)?;
            let want = self.bitmap_image(&used, i, &[]);
            if want != img {
                mismatched += 1;
            }
        }
        // Every check passed; what the mount has to write is left to `go_live`.
        Ok(LoadedTables {
            used,
            free,
            inodes,
            deferred: Deferred {
                bitmap_mismatched: mismatched > 0,
                orphans,
                lease: None,
                claim: None,
            },
        })
    }

    fn load_dir(
        &self,
        ino: u64,
        d: &DiskInode,
        ext: &ExtentMap,
    ) -> std::result::Result<DirIndex, CorruptError> {
        let nblocks = d.size / BLOCK_SIZE;
        if !d.size.is_multiple_of(BLOCK_SIZE) || ext.mapped_blocks() != nblocks {
            return Err(CorruptError::DirSize { ino, size: d.size });
        }
        let mut idx = DirIndex::new();
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        let block_at = |b: u64| -> std::result::Result<u64, CorruptError> {
            let e = ext.find(b).ok_or(CorruptError::DirHole { ino, block: b })?;
            Ok(e.pblk + (b - e.lblk))
        };
        // Sized once from a count of the used slots (validated in the pass after):
        // growing a large directory's table step by step rehashes it again and again.
        let mut count = 0;
        for b in 0..nblocks {
            self.meta_read(block_at(b)? * BLOCK_SIZE, &mut buf);
            let mut s = 1;
            while s < DIR_SLOTS_PER_BLOCK {
                let o = s * DIR_SLOT;
                if buf[o..o + 8].iter().all(|&x| x == 0) {
                    s += 1;
                } else {
                    count += 1;
                    s += (buf[o + 15] as usize).max(1);
                }
            }
        }
        idx.reserve(count);
        for b in 0..nblocks {
            let pblk = block_at(b)?;
            self.meta_read(pblk * BLOCK_SIZE, &mut buf);
            check_dir_block_header(&buf, ino, b).map_err(CorruptError::Block)?;
            let bi = idx.add_block();
            debug_assert_eq!(bi as u64, b);
            let mut s = 1;
            while s < DIR_SLOTS_PER_BLOCK {
                match decode_dirent(&buf, s).map_err(|source| CorruptError::Dirent {
                    ino,
                    block: b,
                    slot: s,
                    source,
                })? {
                    None => s += 1,
                    Some(de) => {
                        if de.ino == 0 || de.ino >= self.geo.inode_count {
                            return Err(CorruptError::EntryOutOfRange {
                                dir: ino,
                                ino: de.ino,
                            });
                        }
                        idx.load_entry(
                            de.name,
                            DirSlot {
                                ino: de.ino,
                                ftype: de.ftype,
                                block: b as u32,
                                slot: s as u8,
                            },
                        )
                        .map_err(|source| CorruptError::DirEntries { dir: ino, source })?;
                        s += de.nslots;
                    }
                }
            }
        }
        Ok(idx)
    }

    /// The full on-media image of bitmap block `index` for the in-memory map `space`,
    /// with the data-area ranges `freeing` shown as free.
    pub(crate) fn bitmap_image(
        &self,
        space: &FreeSpace,
        index: u64,
        freeing: &[Range<u64>],
    ) -> Vec<u8> {
        let mut img = vec![0u8; BLOCK_SIZE as usize];
        let raw = space.raw_bytes();
        let first_bit = index * BITS_PER_BITMAP_BLOCK;
        let byte0 = (first_bit / 8) as usize;
        let n = (BITMAP_BYTES_PER_BLOCK as usize).min(raw.len().saturating_sub(byte0));
        img[..n].copy_from_slice(&raw[byte0..byte0 + n]);
        // Bits past the end of the data area read as used.
        let total = self.geo.data_blocks;
        for bit in total.saturating_sub(first_bit).min(BITS_PER_BITMAP_BLOCK)..BITS_PER_BITMAP_BLOCK
        {
            img[(bit / 8) as usize] |= 1 << (bit % 8);
        }
        for r in freeing {
            let s = r.start.max(first_bit);
            let e = r.end.min(first_bit + BITS_PER_BITMAP_BLOCK);
            for b in s..e {
                let bit = b - first_bit;
                img[(bit / 8) as usize] &= !(1 << (bit % 8));
            }
        }
        seal_bitmap_block(&mut img, index);
        img
    }

    /// Makes everything durable and marks the filesystem clean. Called at unmount.
    pub fn shutdown(&self) -> Result<()> {
        // Timestamps changed in memory only are committed first (`times.rs`).
        self.stop_writeback();
        if self.shut_down.swap(true, Ordering::SeqCst) || self.opts.read_only {
            return Ok(());
        }
        if let Some(l) = self.lease.get() {
            if !l.still_ours() {
                // Replaced by another writer: not a byte more, not even the clean state.
                l.release();
                return Err(Errno::EROFS);
            }
        }
        // Unlinked inodes the kernel still referenced when it went away: nothing can
        // reach them any more, so free them now rather than at the next mount.
        self.reclaim_orphans();
        self.group.journal().checkpoint().map_err(|_| Errno::EIO)?;
        if self.failed.load(Ordering::SeqCst) {
            return Err(Errno::EIO);
        }
        let enc = {
            let mut sb = lock(&self.sb);
            sb.state = STATE_CLEAN;
            sb.encode()
        };
        self.write_superblock(0, &enc)?;
        self.write_superblock(BLOCK_SIZE, &enc)?;
        self.group.journal().checkpoint().map_err(|_| Errno::EIO)?;
        self.dev.sync_all().map_err(|_| Errno::EIO)?;
        if let Some(l) = self.lease.get() {
            l.release();
        }
        Ok(())
    }

    /// Writes one superblock copy (at byte 0 or 4096) through the journal. A plain
    /// store could be torn by a power cut (the fields and the crc sit in different cache
    /// lines); journaled, a torn copy is rewritten by replay. One copy per transaction,
    /// so a crash can never tear both.
    pub(crate) fn write_superblock(&self, off: u64, enc: &[u8; SB_SIZE]) -> Result<()> {
        let mut tx = Tx::new();
        tx.txn.write(off, enc);
        self.commit(tx)
    }

    pub fn options(&self) -> &FsOptions {
        &self.opts
    }

    pub fn superblock(&self) -> Superblock {
        lock(&self.sb).clone()
    }

    pub fn statfs(&self) -> StatFs {
        let bfree = lock(&self.space).free_blocks();
        let ffree = lock(&self.free_inos).len() as u64;
        StatFs {
            blocks: self.geo.data_blocks,
            bfree,
            bavail: bfree,
            files: self.geo.inode_count - 1,
            ffree,
            bsize: BLOCK_SIZE as u32,
            namelen: NAME_MAX as u32,
            frsize: BLOCK_SIZE as u32,
        }
    }

    /// Block reference counts and allocator violations, for `daxfs stats`.
    pub fn ref_table(&self) -> &RefTable {
        &self.refs
    }

    // -----------------------------------------------------------------------
    // Inode table

    pub(crate) fn inode(&self, ino: u64) -> Result<Arc<Inode>> {
        rlock(&self.inodes).get(&ino).cloned().ok_or(Errno::ENOENT)
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.opts.read_only {
            return Err(Errno::EROFS);
        }
        // Fencing: one look at the lease before a change writes anything (data
        // included), so a writer that was replaced stores nothing more.
        if self.lease.get().is_some_and(|l| !l.still_ours()) {
            return Err(Errno::EROFS);
        }
        if self.failed.load(Ordering::Relaxed) {
            return Err(Errno::EIO);
        }
        Ok(())
    }

    pub(crate) fn attr_of(&self, ino: u64, st: &InodeState) -> Attr {
        let d = &st.d;
        Attr {
            ino,
            generation: d.generation as u64,
            size: d.size,
            // Saturating: `blocks` is read from the media and not checked by `load`.
            blocks: d.blocks.saturating_mul(BLOCK_SIZE / 512),
            atime: d.atime,
            mtime: d.mtime,
            ctime: d.ctime,
            btime: d.btime,
            kind: st.kind().unwrap_or(FileKind::File),
            perm: (d.mode & 0o7777) as u16,
            nlink: d.nlink,
            uid: d.uid,
            gid: d.gid,
            rdev: d.rdev as u32,
            blksize: BLOCK_SIZE as u32,
            dax: d.flags & IFLAG_DAX != 0,
        }
    }

    /// Allocates an inode number and builds its in-memory state (not yet committed).
    pub(crate) fn new_inode(
        &self,
        mode: u32,
        cred: &Cred,
        parent: &InodeState,
        rdev: u64,
    ) -> Result<Arc<Inode>> {
        let ino = lock(&self.free_inos).pop_first().ok_or(Errno::ENOSPC)?;
        let t = now();
        let mut d = DiskInode::empty();
        d.mode = mode;
        d.uid = cred.uid;
        d.gid = cred.gid;
        // setgid directories: new inodes take the directory's group, subdirectories
        // keep the setgid bit (inode_init_owner).
        if parent.d.mode & libc::S_ISGID != 0 {
            d.gid = parent.d.gid;
            if mode & libc::S_IFMT == libc::S_IFDIR {
                d.mode |= libc::S_ISGID;
            }
        } else if mode & libc::S_IFMT != libc::S_IFDIR
            && mode & (libc::S_ISGID | libc::S_IXGRP) == (libc::S_ISGID | libc::S_IXGRP)
            && cred.uid != 0
            && cred.gid != d.gid
        {
            d.mode &= !libc::S_ISGID;
        }
        d.nlink = 1;
        d.generation = self.generation.fetch_add(1, Ordering::Relaxed);
        d.atime = t;
        d.mtime = t;
        d.ctime = t;
        d.btime = t;
        d.rdev = rdev;
        // FS_XFLAG_DAX is inherited from the parent directory.
        d.flags = parent.d.flags & IFLAG_DAX;
        let dir = if mode & libc::S_IFMT == libc::S_IFDIR {
            d.nlink = 2;
            Some(Box::new(DirIndex::new()))
        } else {
            None
        };
        let st = InodeState {
            d,
            ext: ExtentMap::new(),
            dir,
            xattrs: Vec::new(),
            dead: false,
        };
        Ok(Arc::new(Inode::new(ino, st)))
    }

    /// Returns an inode number taken by `new_inode` whose creation did not happen.
    pub(crate) fn unget_inode(&self, ino: u64) {
        lock(&self.free_inos).insert(ino);
    }

    /// Writes an inode's record (with its inline extent slots) and its dirty extent
    /// slots into the transaction.
    pub(crate) fn log_inode(&self, ino: u64, st: &mut InodeState, tx: &mut Tx) {
        for (loc, e) in st.ext.take_dirty() {
            if let SlotLoc::Device(off) = loc {
                tx.txn.write(off, &e.encode());
            }
        }
        st.d.inline = st.ext.inline_slots();
        st.d.extent_count = st.ext.len() as u32;
        tx.txn.write(self.geo.inode_offset(ino), &st.d.encode());
    }

    /// Frees an inode: all its blocks and its slot (the directory entries naming it
    /// are the caller's). The blocks are freed after the transaction is durable.
    pub(crate) fn free_inode(&self, inode: &Inode, st: &mut InodeState, tx: &mut Tx) -> Result<()> {
        let all: Vec<Extent> = st.ext.iter().collect();
        if let Some(last) = all.last() {
            // Nothing can pin a file that has no open handle and no pinned mapping (both
            // hold `opens`), so there is nothing to wait for: only check.
            self.check_layout_idle(st, 0, last.end())?;
        }
        for e in all {
            self.release_blocks(e.pblk, e.len as u64, tx);
        }
        if let Some(r) = st.ext.remove_range(0, u64::MAX) {
            let _ = r;
        }
        let _ = st.ext.take_dirty();
        for b in st.ext.take_blocks() {
            self.release_blocks(b, 1, tx);
        }
        if st.d.xattr_block != 0 {
            self.release_blocks(st.d.xattr_block, 1, tx);
        }
        st.d = DiskInode::empty();
        st.xattrs.clear();
        st.dir = None;
        st.dead = true;
        tx.txn.write(
            self.geo.inode_offset(inode.ino),
            &[0u8; INODE_SIZE as usize],
        );
        tx.freed_inos.push(inode.ino);
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Blocks

    /// Allocates up to `want` contiguous data blocks near `goal` (device block numbers),
    /// zeroed on media, counted into `tx`. Returns (pblk, len).
    pub(crate) fn alloc_blocks(
        &self,
        goal: u64,
        want: u64,
        zero: bool,
        tx: &mut Tx,
    ) -> Result<(u64, u64)> {
        let g = &self.geo;
        let goal_idx = goal
            .saturating_sub(g.data_start)
            .min(g.data_blocks.saturating_sub(1));
        let want = want.clamp(1, crate::extent_map::MAX_EXTENT_LEN);
        let align = if want >= DATA_ALIGN_BLOCKS {
            DATA_ALIGN_BLOCKS
        } else {
            1
        };
        let r = {
            let mut space = lock(&self.space);
            if self.gate.holding() {
                self.drain_gate(&mut space, false);
            }
            match space.allocate(goal_idx, want, align, &self.refs) {
                Some(r) => r,
                None if self.gate.holding() && self.drain_gate(&mut space, true) => space
                    .allocate(goal_idx, want, align, &self.refs)
                    .ok_or(Errno::ENOSPC)?,
                None => return Err(Errno::ENOSPC),
            }
        };
        let pblk = g.data_start + r.start;
        let len = r.end - r.start;
        for b in r.clone() {
            self.refs.map(b);
        }
        tx.allocs.push(r);
        if zero {
            self.dev.zero_persist(pblk * BLOCK_SIZE, len * BLOCK_SIZE);
        }
        Ok((pblk, len))
    }

    /// Takes blocks out of use: their references drop to 0 now (the caller broke the
    /// layouts), the allocator sees them free only after the transaction is durable.
    pub(crate) fn release_blocks(&self, pblk: u64, len: u64, tx: &mut Tx) {
        let s = pblk - self.geo.data_start;
        for b in s..s + len {
            if !self.refs.unmap(b) {
                self.refs.note_violation();
            }
        }
        tx.frees.push(s..s + len);
    }

    /// Makes sure the extent map has `n` free slots, adding extent blocks as needed.
    pub(crate) fn reserve_slots(
        &self,
        ino: u64,
        st: &mut InodeState,
        n: usize,
        tx: &mut Tx,
    ) -> Result<()> {
        while st.ext.free_slots() < n {
            let goal = st
                .ext
                .extent_blocks()
                .last()
                .copied()
                .unwrap_or(self.geo.data_start);
            let (pblk, _) = self.alloc_blocks(goal, 1, true, tx)?;
            tx.txn
                .write(pblk * BLOCK_SIZE, &encode_extent_block_header(0, ino));
            match st.ext.extent_blocks().last() {
                Some(&prev) => tx
                    .txn
                    .write(prev * BLOCK_SIZE, &encode_extent_block_header(pblk, ino)),
                None => st.d.extent_block = pblk,
            }
            st.ext.add_block(pblk);
            st.d.blocks += 1;
        }
        Ok(())
    }

    /// Ends a failed change of one inode: when memory already changed (extent slots,
    /// new metadata blocks), commits that consistent partial state instead of
    /// pretending nothing happened; else returns the allocations. Returns `e`.
    pub(crate) fn fail_op(&self, ino: u64, st: &mut InodeState, mut tx: Tx, e: Errno) -> Errno {
        if st.ext.is_dirty() || !tx.txn.is_empty() {
            self.log_inode(ino, st, &mut tx);
            // The request fails, so its reply brings the kernel no attributes, and the
            // kernel keeps what it cached (for the attribute TTL) although this inode
            // changed (blocks kept by a failed fallocate, a partial write).
            self.attrs_changed(ino);
            if let Err(e) = self.commit(tx) {
                // EROFS when the commit was refused by fencing (`commit` says so).
                return if e == Errno::EROFS { e } else { Errno::EIO };
            }
        } else {
            self.abort(tx);
        }
        e
    }

    /// Undoes the in-memory allocations of a transaction that will not be committed.
    pub(crate) fn abort(&self, tx: Tx) {
        let mut space = lock(&self.space);
        for r in tx.allocs {
            for b in r.clone() {
                self.refs.unmap(b);
            }
            let _ = space.free(r);
        }
    }

    /// Gives back the latest allocation of `tx` (the step that needed it failed).
    pub(crate) fn unalloc_last(&self, tx: &mut Tx) {
        if let Some(r) = tx.allocs.pop() {
            for b in r.clone() {
                self.refs.unmap(b);
            }
            let _ = lock(&self.space).free(r);
        }
    }

    // -----------------------------------------------------------------------
    // Attributes

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let inode = self.inode(ino)?;
        let st = rlock(&inode.st);
        if st.dead {
            return Err(Errno::ENOENT);
        }
        // Namespace operations release their locks before their transaction is durable
        // (group commit). Readers that would reveal such a change (lookup, getattr, open,
        // readdir, readlink) wait for it first, so nothing a caller can observe is lost
        // by a crash: that is what lets fsync and fsyncdir skip the round trip (the FUSE
        // adapter answers them ENOSYS). Free unless a change to this inode is in flight.
        self.settle(&inode);
        Ok(self.attr_of(ino, &st))
    }

    pub fn setattr(&self, ino: u64, cred: &Cred, c: &SetAttr) -> Result<Attr> {
        self.setattr_waiting(ino, cred, c, Wait::Block)
    }

    /// [`setattr`](Self::setattr) that never sleeps on a pin: None when a truncate would
    /// have to wait for one (nothing changed; call `setattr` where waiting is harmless).
    pub fn try_setattr(&self, ino: u64, cred: &Cred, c: &SetAttr) -> Option<Result<Attr>> {
        would_wait(self.setattr_waiting(ino, cred, c, Wait::Never))
    }

    pub(crate) fn setattr_waiting(
        &self,
        ino: u64,
        _cred: &Cred,
        c: &SetAttr,
        wait: Wait,
    ) -> Result<Attr> {
        self.check_writable()?;
        let inode = self.inode(ino)?;
        // A size change may take blocks away: break the layout of what goes first.
        let (_layout, mut st) = match c.size {
            Some(size) => {
                let (layout, st) = self.break_layouts(&inode, wait, |st| {
                    (st.kind() == Some(FileKind::File)
                        && size < st.d.size
                        && st.refuse_setattr(c).is_ok())
                    .then(|| size.div_ceil(BLOCK_SIZE)..u64::MAX / BLOCK_SIZE)
                })?;
                (Some(layout), st)
            }
            None => (None, wlock(&inode.st)),
        };
        if st.dead {
            return Err(Errno::ENOENT);
        }
        st.refuse_setattr(c)?;
        let t = now();
        let mut tx = Tx::new();
        if let Some(size) = c.size {
            match st.kind() {
                Some(FileKind::File) => {}
                Some(FileKind::Dir) => return Err(Errno::EISDIR),
                _ => return Err(Errno::EINVAL),
            }
            if size > MAX_FILE_SIZE {
                return Err(Errno::EFBIG);
            }
            if size != st.d.size {
                if let Err(e) = self.truncate_locked(ino, &mut st, size, &mut tx) {
                    return Err(self.fail_op(ino, &mut st, tx, e));
                }
                st.d.mtime = t;
            }
            st.d.ctime = t;
        }
        if let Some(mode) = c.mode {
            st.d.mode = (st.d.mode & libc::S_IFMT) | (mode & 0o7777);
            st.d.ctime = t;
            if let Err(e) = self.chmod_acl(ino, &mut st, &mut tx) {
                return Err(self.fail_op(ino, &mut st, tx, e));
            }
        }
        if let Some(uid) = c.uid {
            st.d.uid = uid;
            st.d.ctime = t;
        }
        if let Some(gid) = c.gid {
            st.d.gid = gid;
            st.d.ctime = t;
        }
        if let Some(a) = c.atime {
            st.d.atime = match a {
                SetTime::Now => t,
                SetTime::At(x) => x,
            };
            st.d.ctime = t;
        }
        if let Some(m) = c.mtime {
            st.d.mtime = match m {
                SetTime::Now => t,
                SetTime::At(x) => x,
            };
            st.d.ctime = t;
        }
        if let Some(ct) = c.ctime {
            st.d.ctime = ct;
        }
        self.log_inode(ino, &mut st, &mut tx);
        self.commit(tx)?;
        Ok(self.attr_of(ino, &st))
    }

    /// access(2) check by mode bits for `cred` (mask: R_OK/W_OK/X_OK/F_OK).
    pub fn access(&self, ino: u64, mask: i32, cred: &Cred) -> Result<()> {
        let inode = self.inode(ino)?;
        let st = rlock(&inode.st);
        if st.dead {
            return Err(Errno::ENOENT);
        }
        if mask == libc::F_OK {
            return Ok(());
        }
        if mask & libc::W_OK != 0 && self.opts.read_only {
            return Err(Errno::EROFS);
        }
        // inode_permission: write access to an immutable inode is EPERM, for root too
        // (after EROFS, before the mode bits); append-only still allows W_OK. Mounted, the
        // kernel answers access(2) itself (FUSE_POSIX_ACL implies default_permissions, so
        // no FUSE_ACCESS is sent) and FUSE inodes carry no S_IMMUTABLE: there root's
        // W_OK on a +i file still succeeds; this answer is the library API's.
        if mask & libc::W_OK != 0 && st.immutable() {
            return Err(Errno::EPERM);
        }
        let mode = st.d.mode;
        if cred.uid == 0 {
            // root: read/write always; execute if any x bit is set or it is a directory.
            if mask & libc::X_OK != 0 && mode & 0o111 == 0 && !st.is_dir() {
                return Err(Errno::EACCES);
            }
            return Ok(());
        }
        let bits = if cred.uid == st.d.uid {
            (mode >> 6) & 7
        } else if cred.gid == st.d.gid {
            (mode >> 3) & 7
        } else {
            mode & 7
        };
        let want = (if mask & libc::R_OK != 0 { 4 } else { 0 })
            | (if mask & libc::W_OK != 0 { 2 } else { 0 })
            | (if mask & libc::X_OK != 0 { 1 } else { 0 });
        if bits & want == want {
            Ok(())
        } else {
            Err(Errno::EACCES)
        }
    }

    /// FS_XFLAG_DAX of an inode (FS_IOC_FSGETXATTR / FSSETXATTR).
    pub fn get_dax_flag(&self, ino: u64) -> Result<bool> {
        Ok(self.getattr(ino)?.dax)
    }

    /// Sets FS_XFLAG_DAX, keeping the other chattr flags (refused while the inode is
    /// immutable, see [`set_inode_flags`](Self::set_inode_flags)).
    pub fn set_dax_flag(&self, ino: u64, dax: bool) -> Result<()> {
        let flags = crate::inode_flags::InodeFlags {
            dax,
            ..self.inode_flags(ino)?
        };
        self.set_inode_flags(ino, &Cred::root(), flags)
    }

    /// Whether the kernel may cache this inode's data (dax=never, or dax=inode without
    /// the flag).
    pub fn kernel_may_cache(&self, ino: u64) -> bool {
        match self.opts.dax {
            DaxMode::Always => false,
            DaxMode::Never => true,
            DaxMode::Inode => !self.get_dax_flag(ino).unwrap_or(false),
        }
    }

    /// Counters for `daxfs stats`: (commits, layout breaks).
    pub fn counters(&self) -> (u64, u64) {
        (
            self.stats.commits.load(Ordering::Relaxed),
            self.stats.layout_breaks.load(Ordering::Relaxed),
        )
    }
}

/// What the leader of a group commit needs of the filesystem (`commit.rs`).
impl CommitEnv for DaxFs {
    fn failed(&self) -> &AtomicBool {
        &self.failed
    }

    fn bitmap_images(&self, touched: &BTreeSet<u64>, frees: &[Range<u64>], out: &mut Transaction) {
        let space = lock(&self.space);
        // Blocks held back for followers are free on media since their free was
        // durable: an image of their bitmap block must not mark them used again.
        let with_held;
        let frees = if self.gate.holding() {
            let mut v = frees.to_vec();
            self.gate.held_ranges(&mut v);
            with_held = v;
            &with_held[..]
        } else {
            frees
        };
        for &i in touched {
            let img = self.bitmap_image(&space, i, frees);
            out.write(self.geo.bitmap_block_offset(i), &img);
        }
    }

    fn count_commit(&self, wrote: bool, members: u64) {
        if wrote {
            self.stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        self.stats
            .transactions
            .fetch_add(members, Ordering::Relaxed);
    }

    fn free_blocks(&self, frees: &[Range<u64>], seq: u64) {
        if self.gate.hold(seq, frees) {
            return;
        }
        let mut space = lock(&self.space);
        for r in frees {
            if space.free(r.clone()).is_err() {
                self.refs.note_violation();
            }
        }
    }

    fn may_commit(&self) -> bool {
        self.lease.get().is_none_or(|l| l.still_ours())
    }

    fn committed(&self, seq: u64) {
        if let Some(l) = self.lease.get() {
            l.publish_committed(seq);
        }
    }

    fn free_inodes(&self, inos: &mut dyn Iterator<Item = u64>) {
        let mut inodes = wlock(&self.inodes);
        let mut free = lock(&self.free_inos);
        for ino in inos {
            inodes.remove(&ino);
            free.insert(ino);
        }
    }
}

impl DaxFs {
    /// Commits a transaction: journals its records plus the bitmap blocks its
    /// allocations and frees touch, together with whatever else is queued (see
    /// `commit.rs`). Returns when it is durable.
    pub(crate) fn commit(&self, tx: Tx) -> Result<()> {
        self.group
            .commit(self, tx)
            .map_err(|e| self.fenced_errno(e))
    }

    /// Queues a transaction behind every one queued before it. The caller may release
    /// its locks before [`wait`](Self::wait)ing: whoever takes them later queues behind.
    pub(crate) fn enqueue(&self, tx: Tx) -> Ticket {
        self.group.enqueue(tx)
    }

    /// Waits until the transaction is durable (Ok) or failed (EIO), committing the queue
    /// itself when the journal is free.
    pub(crate) fn wait(&self, t: Ticket) -> Result<()> {
        self.group
            .wait_for(self, t.number())
            .map_err(|e| self.fenced_errno(e))
    }

    /// Waits until the transaction with ticket [`Inode::pending`] is applied: the
    /// device then holds what memory says.
    pub(crate) fn settle(&self, inode: &Inode) {
        let t = inode.pending.load(Ordering::Acquire);
        if t > self.group.done() {
            let _ = self.group.wait_for(self, t);
        }
    }

    /// Records that `t` changes what readers of these inodes read from the device.
    /// Called with the inodes' state locks held, before they are released.
    pub(crate) fn mark_pending(&self, t: &Ticket, inodes: &[&Arc<Inode>]) {
        for i in inodes {
            i.pending.fetch_max(t.number(), Ordering::AcqRel);
        }
    }

    /// Test hook (feature `test-hooks`, which only the crate's own tests enable): the
    /// next commit that leads first waits until `queued` transactions, its own included,
    /// are there (or `at_most` has passed, so that a test that miscounts fails its
    /// assertions instead of hanging). Lets a test build a batch of a known size, or
    /// keep a transaction in flight, without relying on timing.
    #[cfg(feature = "test-hooks")]
    pub fn hold_next_commit(&self, queued: usize, at_most: Duration) {
        self.group.hold_next_commit(queued, at_most)
    }

    /// Test hook (feature `test-hooks`): transactions queued for the next journal commit
    /// (in flight: their changes are in memory, not yet durable).
    #[cfg(feature = "test-hooks")]
    pub fn queued_commits(&self) -> usize {
        self.group.queued_commits()
    }
}

/// What a layout break needs of the filesystem (`break_layouts.rs`).
impl LayoutEnv for DaxFs {
    fn refs(&self) -> &RefTable {
        &self.refs
    }

    fn data_start(&self) -> u64 {
        self.geo.data_start
    }

    fn layout_timeout(&self) -> Duration {
        self.opts.layout_timeout
    }

    fn lease_break_time(&self) -> Duration {
        self.opts.pins.lease_break_time
    }

    fn break_pins(&self, inode: &Inode, r: &Range<u64>, revoke: bool) -> (u64, u64) {
        DaxFs::break_pins(self, inode, r, revoke)
    }

    fn cache_used(&self, st: &InodeState) -> bool {
        DaxFs::cache_used(self, st)
    }

    fn invalidate_cached(&self, ino: u64, r: &Range<u64>) {
        DaxFs::invalidate_cached(self, ino, r)
    }

    fn count_layout_break(&self) {
        self.stats.layout_breaks.fetch_add(1, Ordering::Relaxed);
    }

    fn count_lease_break(&self) {
        self.stats.lease_breaks.fetch_add(1, Ordering::Relaxed);
    }
}

impl DaxFs {
    /// Waits until no block of `range(state)` of `inode` is pinned and returns its layout
    /// and state locks, held exclusively (see `break_layouts.rs`).
    pub(crate) fn break_layouts<'a>(
        &self,
        inode: &'a Inode,
        wait: Wait,
        range: impl Fn(&InodeState) -> Option<Range<u64>>,
    ) -> Result<(LayoutGuard<'a>, RwLockWriteGuard<'a, InodeState>)> {
        break_layouts::break_layouts(self, inode, wait, range)
    }

    /// Refuses (EBUSY, counted as a violation) to free logical blocks `start..end` if one
    /// is still pinned (see `break_layouts::check_layout_idle`).
    pub(crate) fn check_layout_idle(&self, st: &InodeState, start: u64, end: u64) -> Result<()> {
        break_layouts::check_layout_idle(self, st, start, end)
    }

    /// Installs (or removes) the hook that drops the kernel's cached pages of a range.
    pub fn set_cache_invalidator(&self, f: Option<CacheInvalidator>) {
        *wlock(&self.cache_inval) = f;
    }

    /// Tells the kernel (through the cache invalidator) to drop the attributes it caches
    /// for `ino`: daxfs changed them on its own, not in answer to a request that brings
    /// them back (atime on read, set-id bits cleared by a write).
    pub(crate) fn attrs_changed(&self, ino: u64) {
        if let Some(inval) = rlock(&self.cache_inval).as_ref() {
            inval(ino, u64::MAX, 0);
        }
    }

    /// Whether the kernel may cache this inode's data (decided from the state, for
    /// callers that hold its lock).
    pub(crate) fn cache_used(&self, st: &InodeState) -> bool {
        match self.opts.dax {
            DaxMode::Always => false,
            DaxMode::Never => true,
            DaxMode::Inode => st.d.flags & IFLAG_DAX == 0,
        }
    }

    /// Asks the kernel to drop its cached pages of logical block range `r` of `ino`.
    pub fn invalidate_cached(&self, ino: u64, r: &Range<u64>) {
        let Some(f) = rlock(&self.cache_inval).clone() else {
            return;
        };
        let offset = r.start.saturating_mul(BLOCK_SIZE);
        let len = match r.end.checked_mul(BLOCK_SIZE) {
            Some(e) if e < i64::MAX as u64 => e - offset,
            _ => 0, // to the end of the file
        };
        f(ino, offset, len);
    }
}

/// What the namespace checks need of one inode (see [`check_links`]).
struct LinkNode {
    ino: u64,
    dtype: u8,
    nlink: u32,
    parent: u64,
    orphan: bool,
}

/// One directory entry: the inode it names, its directory (an index into the nodes) and
/// the type it records.
struct LinkEntry {
    child: u64,
    dir: usize,
    ftype: u8,
}

/// The namespace invariants every committed state keeps (fsck checks the same): every
/// entry names a live inode of the type it records, link counts equal the entries
/// naming an inode (directories: 2 + subdirectories), a directory has one entry and its
/// parent field names that entry's directory, the root is named by no entry, every
/// linked inode is reachable from the root, and only an unlinked inode carries the
/// orphan flag. A wrong count would let an unlink free an inode that another entry
/// still names, so a mount refuses such an image.
///
/// `nodes` is sorted by inode number; `entries` are sorted here by the inode they name
/// and merged with it, so nothing is looked up by hash. `entry_name(dir, child)` names
/// an offending entry in an error message.
fn check_links(
    nodes: &[LinkNode],
    mut entries: Vec<LinkEntry>,
    entry_name: impl Fn(usize, u64) -> String,
) -> std::result::Result<(), CorruptError> {
    entries.sort_unstable_by_key(|e| e.child);
    let mut links = vec![0u32; nodes.len()];
    let mut subdirs = vec![0u32; nodes.len()];
    // Per entry, the index of the node it names (in `entries` order).
    let mut child_at = Vec::with_capacity(entries.len());
    // (directory, subdirectory) pairs, node indexes: the tree the walk below follows.
    let mut tree: Vec<(usize, usize)> = Vec::new();
    let mut n = 0;
    for group in entries.chunk_by(|a, b| a.child == b.child) {
        let ino = group[0].child;
        while n < nodes.len() && nodes[n].ino < ino {
            n += 1;
        }
        for e in group {
            let dir = &nodes[e.dir];
            let Some(child) = nodes.get(n).filter(|c| c.ino == ino) else {
                return Err(CorruptError::EntryNamesFree {
                    dir: dir.ino,
                    name: entry_name(e.dir, ino),
                    ino,
                });
            };
            if child.ino != dir.ino && child.dtype != e.ftype {
                return Err(CorruptError::EntryType { dir: dir.ino, ino });
            }
            if ino == ROOT_INO {
                return Err(CorruptError::EntryNamesRoot { dir: dir.ino });
            }
            child_at.push(n);
        }
        links[n] = group.len() as u32;
        let child = &nodes[n];
        if child.dtype == libc::DT_DIR {
            if group.len() > 1 {
                return Err(CorruptError::DirHardLinked { ino });
            }
            let dir = group[0].dir;
            if child.parent != nodes[dir].ino {
                return Err(CorruptError::DirParent {
                    ino,
                    dir: nodes[dir].ino,
                });
            }
            subdirs[dir] += 1;
            tree.push((dir, n));
        }
    }
    // Directories reachable from the root (index 0, checked by the caller), then every
    // inode one of them names.
    tree.sort_unstable();
    let mut reached = vec![false; nodes.len()];
    reached[0] = true;
    let mut stack = vec![0usize];
    while let Some(d) = stack.pop() {
        let first = tree.partition_point(|&(p, _)| p < d);
        for &(_, c) in tree[first..].iter().take_while(|&&(p, _)| p == d) {
            if !reached[c] {
                reached[c] = true;
                stack.push(c);
            }
        }
    }
    for (e, &c) in entries.iter().zip(&child_at) {
        if reached[e.dir] {
            reached[c] = true;
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let ino = n.ino;
        let named = links[i];
        if n.nlink == 0 {
            if named > 0 {
                return Err(CorruptError::UnlinkedButNamed { ino, named });
            }
            continue;
        }
        let want = if n.dtype == libc::DT_DIR {
            2 + subdirs[i]
        } else {
            named
        };
        if n.nlink != want {
            return Err(CorruptError::LinkCount {
                ino,
                recorded: n.nlink,
                want,
            });
        }
        if n.orphan {
            return Err(CorruptError::OrphanLinked { ino });
        }
        if !reached[i] {
            return Err(CorruptError::Unreachable { ino });
        }
    }
    Ok(())
}

impl Drop for DaxFs {
    fn drop(&mut self) {
        if self.owner {
            let _ = self.shutdown();
        }
    }
}
