//! daxfs-fsck: offline consistency checking and repair (the work behind fsck.daxfs).
//!
//! [`check`] never writes the structures it checks: the journal is replayed into an
//! in-memory overlay of the device, so a check sees exactly what the next mount would
//! see, and `-n` changes nothing. While checking it also plans the repair of what it
//! can repair, so `-n` reports exactly what `-y` would do.
//!
//! [`repair`] (`-y`, `-p`) makes, as e2fsck does:
//! - a bad superblock copy is rewritten from the good one (a plain write: the other copy
//!   stays good, so a crash during it leaves the image as it was);
//! - the journal is applied; orphans (unlinked while open) are freed;
//! - directory entries naming a free inode, an inode number out of range or the root
//!   are removed; an entry's file type is corrected; a directory named twice loses its
//!   second name; a directory's parent field is set to the directory that names it;
//! - in-use inodes that no entry names are reconnected into `/lost+found` (mode 0700,
//!   created if absent) as `#<ino>`, a directory with its `..` pointing there; an
//!   unattached regular file with no data, blocks or xattrs is cleared instead (e2fsck's
//!   "unattached zero-length inode"); a loop of directories unreachable from the root
//!   is broken by moving its lowest-numbered directory to `/lost+found`;
//! - link counts are set to the entries naming an inode (directories: 2 +
//!   subdirectories), an orphan flag on a linked inode is cleared, block and extent
//!   counts are set to what the inode owns;
//! - damaged records cost only their object (`-y`, not preen): an inode slot that does
//!   not decode is cleared (its entries removed, its blocks left unclaimed and so freed,
//!   a directory's children reconnected; a lost root is made anew, empty); a directory
//!   or extent block with a damaged header gets a fresh header and keeps its intact
//!   entries or extents (each has its own checksum); a damaged entry or extent slot is
//!   cleared (an extent's range becomes a hole; a directory block lost so is given a
//!   new, empty block); a damaged xattr block is dropped;
//! - the bitmap is rewritten from the extent maps (leaked blocks, blocks in use marked
//!   free, damaged bitmap blocks), and the filesystem is marked clean.
//!
//! All of these but the superblock copy go through journal transactions on the device,
//! so a crash during a repair leaves each transaction wholly applied or not at all; a
//! repair too large for one transaction is split, and every split point leaves an image
//! that a second `fsck -y` completes. The repair is all or nothing otherwise: when the
//! check finds damage it cannot repair (a block claimed twice, a checksummed record
//! with impossible contents), nothing but the superblock copies is written,
//! since repairs computed around unreadable metadata could destroy what a later
//! recovery needs. Blocks claimed by two inodes are left uncorrected (no cloning).
//! `/lost+found` is made by fsck on demand, not by mkfs: daxfs's fsck allocates from the
//! block map it computed, not from the on-media bitmap, so it needs no preallocated
//! directory (the reason mke2fs makes one).
#![forbid(unsafe_code)]

use daxfs::fsck_support::{ExtentMap, MAX_EXTENT_LEN};
use daxfs::{FileKind, MAX_FILE_SIZE};
use daxfs_format::*;
use daxfs_journal::{Journal, JournalError, StopReason};
use daxfs_pmem::Device;
use daxfs_pmem::Media;
use std::collections::{BTreeMap, HashMap, HashSet};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub mod cli;
mod host_table;
mod repair;

/// Findings beyond this many are counted, not kept (a wrecked image would otherwise
/// produce millions of lines).
const MAX_FINDINGS: usize = 1000;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Informational: normal after an unclean stop (orphans, a journal to apply); the
    /// next mount or `fsck -y` takes care of it.
    Note,
    /// An inconsistency [`repair`] repairs.
    Repairable,
    /// Damage [`repair`] does not repair.
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub what: String,
    /// A repairable finding preen (`-p`) may repair unattended, as e2fsck's PREEN_OK
    /// problems: link counts, the bitmap, entries naming free inodes, empty unattached
    /// files. Reconnecting inodes or rewriting entries and parents needs `-y`.
    pub preen_ok: bool,
}

/// Counts of what the check saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsckStats {
    pub inodes_used: u64,
    pub inodes_total: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub others: u64,
    pub blocks_used: u64,
    pub data_blocks: u64,
    pub journal_pending: u64,
    /// Unlinked inodes waiting to be reclaimed by a mount.
    pub orphans: u64,
    /// Host table entries in use: a held writer lease, claimed follower slots (live or
    /// stale: only a repair's watch tells them apart).
    pub host_table_claims: u64,
}

/// Result of [`check`].
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    /// The superblock the check used (None: no usable superblock).
    pub superblock: Option<Superblock>,
    /// No daxfs magic in either superblock copy: not a daxfs filesystem at all.
    pub not_daxfs: bool,
    pub findings: Vec<Finding>,
    /// Findings not kept in `findings` because there were too many.
    pub findings_dropped: u64,
    /// Repairs made, in order.
    pub repaired: Vec<String>,
    pub stats: FsckStats,
}

impl FsckReport {
    fn add(&mut self, severity: Severity, what: impl Into<String>) {
        self.push(severity, what, severity != Severity::Error);
    }
    fn push(&mut self, severity: Severity, what: impl Into<String>, preen_ok: bool) {
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(Finding {
                severity,
                what: what.into(),
                preen_ok,
            });
        } else {
            self.findings_dropped += 1;
        }
    }
    fn error(&mut self, what: impl Into<String>) {
        self.add(Severity::Error, what);
    }
    /// A repairable finding; `preen_ok`: `-p` may repair it.
    fn fixable(&mut self, preen_ok: bool, what: impl Into<String>) {
        self.push(Severity::Repairable, what, preen_ok);
    }

    /// Number of findings of exactly `s` (kept ones; dropped ones are all counted as
    /// errors, the conservative reading).
    pub fn count(&self, s: Severity) -> u64 {
        let kept = self.findings.iter().filter(|f| f.severity == s).count() as u64;
        if s == Severity::Error {
            kept + self.findings_dropped
        } else {
            kept
        }
    }

    /// No inconsistency at all (notes allowed).
    pub fn is_clean(&self) -> bool {
        self.superblock.is_some()
            && self.count(Severity::Error) + self.count(Severity::Repairable) == 0
    }

    /// Whether [`repair`] has something to do and can do it: no unrepairable error,
    /// and a repairable finding, a journal to apply, orphans, or an unclean state.
    pub fn needs_repair(&self) -> bool {
        self.superblock.is_some()
            && self.count(Severity::Error) == 0
            && (self.count(Severity::Repairable) > 0
                || self.stats.journal_pending > 0
                || self.stats.orphans > 0
                || self.stats.host_table_claims > 0
                || self
                    .superblock
                    .as_ref()
                    .is_some_and(|sb| sb.state != STATE_CLEAN))
    }

    /// Repairable findings that preen (`-p`) must not repair unattended.
    pub fn needs_manual_repair(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity == Severity::Repairable && !f.preen_ok)
    }
}

/// Progress callback: (stage, done, total).
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

// ---------------------------------------------------------------------------
// Overlay: the device as the next mount will see it, without writing it.

/// A copy-on-write view of the device: reads come from the device unless a page was
/// written through the overlay (journal replay). Out-of-range accesses never panic:
/// reads return zeros, writes are dropped and counted.
struct Overlay {
    dev: Arc<Device>,
    size: u64,
    pages: Mutex<HashMap<u64, Box<[u8]>>>,
    out_of_range: AtomicU64,
}

impl Overlay {
    fn new(dev: Arc<Device>) -> Overlay {
        let size = dev.size();
        Overlay {
            dev,
            size,
            pages: Mutex::new(HashMap::new()),
            out_of_range: AtomicU64::new(0),
        }
    }

    fn in_range(&self, off: u64, len: u64) -> bool {
        off.checked_add(len).is_some_and(|e| e <= self.size)
    }

    /// Reads `buf.len()` bytes at `off`; false (and `buf` zeroed) when out of range.
    fn read_at(&self, off: u64, buf: &mut [u8]) -> bool {
        if !self.in_range(off, buf.len() as u64) {
            buf.fill(0);
            return false;
        }
        self.dev.read(off, buf);
        let pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        if pages.is_empty() {
            return true;
        }
        let end = off + buf.len() as u64;
        let mut p = off / BLOCK_SIZE;
        while p * BLOCK_SIZE < end {
            if let Some(page) = pages.get(&p) {
                let ps = p * BLOCK_SIZE;
                let s = off.max(ps);
                let e = end.min(ps + BLOCK_SIZE);
                buf[(s - off) as usize..(e - off) as usize]
                    .copy_from_slice(&page[(s - ps) as usize..(e - ps) as usize]);
            }
            p += 1;
        }
        true
    }

    fn block(&self, pblk: u64, buf: &mut [u8]) -> bool {
        match pblk.checked_mul(BLOCK_SIZE) {
            Some(off) => self.read_at(off, buf),
            None => false,
        }
    }
}

impl Media for Overlay {
    fn read(&self, off: u64, buf: &mut [u8]) {
        if !self.read_at(off, buf) {
            self.out_of_range.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn write(&self, off: u64, data: &[u8]) {
        if !self.in_range(off, data.len() as u64) {
            self.out_of_range.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        let end = off + data.len() as u64;
        let mut p = off / BLOCK_SIZE;
        while p * BLOCK_SIZE < end {
            let ps = p * BLOCK_SIZE;
            let page = pages.entry(p).or_insert_with(|| {
                let mut b = vec![0u8; BLOCK_SIZE as usize].into_boxed_slice();
                self.dev.read(ps, &mut b);
                b
            });
            let s = off.max(ps);
            let e = end.min(ps + BLOCK_SIZE);
            page[(s - ps) as usize..(e - ps) as usize]
                .copy_from_slice(&data[(s - off) as usize..(e - off) as usize]);
            p += 1;
        }
    }
    fn flush(&self, _off: u64, _len: u64) {}
    fn fence(&self) {}
    fn size(&self) -> u64 {
        self.size
    }
}

// ---------------------------------------------------------------------------
// Superblocks

/// The two superblock copies as found on the device.
struct SbPair {
    primary: Result<Superblock, FormatError>,
    backup: Result<Superblock, FormatError>,
    any_magic: bool,
}

fn read_superblocks(dev: &Device) -> SbPair {
    read_superblocks_with(dev.size(), |off, buf| dev.read(off, buf))
}

fn read_superblocks_with(size: u64, read: impl Fn(u64, &mut [u8])) -> SbPair {
    let mut p = [0u8; SB_SIZE];
    let mut b = [0u8; SB_SIZE];
    if size >= SB_SIZE as u64 {
        read(0, &mut p);
    }
    if size >= BLOCK_SIZE + SB_SIZE as u64 {
        read(BLOCK_SIZE, &mut b);
    }
    SbPair {
        primary: Superblock::decode(&p, size),
        backup: Superblock::decode(&b, size),
        any_magic: Superblock::has_magic(&p) || Superblock::has_magic(&b),
    }
}

/// The superblock fields that must agree between the copies (state, mount time and
/// mount count legitimately differ while mounted or after an unclean stop, and the label
/// after a crash between the two copies' writes of FS_IOC_SETFSLABEL).
fn same_geometry(a: &Superblock, b: &Superblock) -> bool {
    let strip = |s: &Superblock| Superblock {
        state: 0,
        mount_time: 0,
        mount_count: 0,
        label: [0; 64],
        ..s.clone()
    };
    strip(a) == strip(b)
}

fn write_sb(dev: &Device, off: u64, sb: &Superblock) -> Result<(), String> {
    if !dev.writable() {
        return Err("device is open read-only".into());
    }
    dev.write(off, &sb.encode());
    dev.persist(off, SB_SIZE as u64);
    dev.sync_all().map_err(|e| format!("sync: {e}"))
}

/// When exactly one superblock copy is bad, whether replaying the journal (into
/// memory) makes both good: the copy was torn by a crash while a journaled superblock
/// update was being applied, and the next mount's replay rewrites it.
fn torn_copy_healed_by_journal(dev: &Arc<Device>, pair: &SbPair) -> Option<Superblock> {
    let good = match (&pair.primary, &pair.backup) {
        (Ok(p), Err(_)) => p.clone(),
        (Err(_), Ok(b)) => b.clone(),
        _ => return None,
    };
    let img = Arc::new(Overlay::new(dev.clone()));
    let media: Arc<dyn Media> = img.clone();
    Journal::open(
        media,
        good.journal_start * BLOCK_SIZE,
        good.journal_blocks * BLOCK_SIZE,
    )
    .ok()?;
    let healed = read_superblocks_with(dev.size(), |off, buf| {
        img.read_at(off, buf);
    });
    match (healed.primary, healed.backup) {
        (Ok(p), Ok(b)) if same_geometry(&p, &b) => Some(p),
        _ => None,
    }
}

/// Checks both superblock copies; with `repair`, rewrites a bad copy from the good one.
fn check_superblocks(dev: &Arc<Device>, repair: bool, r: &mut FsckReport) -> Option<Superblock> {
    let pair = read_superblocks(dev);
    if let Some(sb) = torn_copy_healed_by_journal(dev, &pair) {
        let which = if pair.primary.is_err() {
            "primary"
        } else {
            "backup"
        };
        r.add(
            Severity::Note,
            format!("{which} superblock was torn by a crash; the journal holds its committed copy (the next mount applies it)"),
        );
        return Some(sb);
    }
    if !pair.any_magic {
        r.not_daxfs = true;
        return None;
    }
    match (pair.primary, pair.backup) {
        (Ok(p), Ok(b)) => {
            if p.label != b.label {
                // The mount reads the primary; its clean unmount rewrites both copies.
                r.add(
                    Severity::Note,
                    format!(
                        "the backup superblock holds the label {:?}, the primary {:?} (a label change stopped by a crash; the primary's is the filesystem's)",
                        b.label_str(),
                        p.label_str()
                    ),
                );
            }
            if !same_geometry(&p, &b) {
                r.error("primary and backup superblocks describe different filesystems");
                if repair {
                    match write_sb(dev, BLOCK_SIZE, &p) {
                        Ok(()) => r
                            .repaired
                            .push("rewrote the backup superblock from the primary".into()),
                        Err(e) => r.error(format!("could not rewrite the backup superblock: {e}")),
                    }
                }
            }
            Some(p)
        }
        (Ok(p), Err(e)) => {
            r.error(format!("backup superblock (block 1) is bad: {e}"));
            if repair {
                match write_sb(dev, BLOCK_SIZE, &p) {
                    Ok(()) => r
                        .repaired
                        .push("restored the backup superblock from the primary".into()),
                    Err(e) => r.error(format!("could not restore the backup superblock: {e}")),
                }
            }
            Some(p)
        }
        (Err(e), Ok(b)) => {
            r.error(format!("primary superblock (block 0) is bad: {e}"));
            if repair {
                match write_sb(dev, 0, &b) {
                    Ok(()) => r
                        .repaired
                        .push("restored the primary superblock from the backup".into()),
                    Err(e) => r.error(format!("could not restore the primary superblock: {e}")),
                }
            }
            Some(b)
        }
        (Err(p), Err(b)) => {
            r.error(format!(
                "both superblocks are bad (primary: {p}; backup: {b}); cannot check further"
            ));
            None
        }
    }
}

// ---------------------------------------------------------------------------
// The structural check

/// What one allocated inode looks like, for the cross-inode checks.
struct Node {
    kind: FileKind,
    nlink: u32,
    parent: u64,
    orphan_flag: bool,
    size: u64,
    /// A regular file without data, blocks or xattrs: cleared rather than reconnected
    /// when no entry names it.
    empty_file: bool,
}

/// A range of data-area blocks one inode claims.
struct Claim {
    start: u64,
    len: u64,
    ino: u64,
}

/// A directory entry and where it is stored.
struct DirEntryRec {
    dir: u64,
    child: u64,
    ftype: u8,
    name: Box<[u8]>,
    /// Index of its directory block, that block's device block, first slot, slots.
    block: u32,
    pblk: u64,
    slot: u8,
    nslots: u8,
}

/// Inode fields a repair rewrites.
#[derive(Debug, Default, Clone, Copy)]
struct InodeFix {
    nlink: Option<u32>,
    parent: Option<u64>,
    clear_orphan: bool,
    blocks: Option<u64>,
    extent_count: Option<u32>,
    /// The xattr block is damaged: the inode loses its xattrs (the block is freed).
    drop_xattr: bool,
}

/// Where reconnected inodes go.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum LostFound {
    #[default]
    Unneeded,
    Existing(u64),
    /// Made by the repair, as this inode with this link count.
    Create {
        ino: u64,
        nlink: u32,
    },
}

/// Entries naming each inode, subdirectories of each directory, and the directory
/// naming each directory.
#[derive(Default, Clone)]
struct Counts {
    links: HashMap<u64, u32>,
    subdirs: HashMap<u64, u32>,
    parent_of: HashMap<u64, u64>,
}

impl Counts {
    fn add(&mut self, dir: u64, child: u64, is_dir: bool) {
        *self.links.entry(child).or_default() += 1;
        if is_dir {
            *self.subdirs.entry(dir).or_default() += 1;
            self.parent_of.insert(child, dir);
        }
    }
    fn links(&self, ino: u64) -> u32 {
        self.links.get(&ino).copied().unwrap_or(0)
    }
    /// The link count `ino` should have: 2 + subdirectories for a directory.
    fn nlink(&self, ino: u64, kind: FileKind) -> u32 {
        if kind == FileKind::Dir {
            2 + self.subdirs.get(&ino).copied().unwrap_or(0)
        } else {
            self.links(ino)
        }
    }
}

/// What [`repair`] will do, worked out by the check.
#[derive(Default)]
struct Plan {
    /// Entries (indexes into `Checker::entries`) to erase.
    remove: Vec<usize>,
    /// Entries to rewrite with this file type.
    retype: Vec<(usize, u8)>,
    fixes: BTreeMap<u64, InodeFix>,
    /// Orphans and unattached empty files: freed with their blocks.
    free: Vec<u64>,
    /// Inodes to link into lost+found as "#<ino>".
    reconnect: Vec<u64>,
    lost_found: LostFound,
    /// Inode slots to zero: records that cannot be trusted (e2fsck's "clear inode":
    /// entries naming them are removed, the blocks they held fall back to free), and
    /// stray bytes in free or reserved slots.
    clear: Vec<u64>,
    /// Blocks rewritten whole, written before every other change: (byte offset, image,
    /// what it is). Directory and extent blocks with a damaged header or slots get a
    /// fresh header and keep only their intact (checksummed) entries or extents.
    images: Vec<(u64, Vec<u8>, String)>,
    /// The root inode is unreadable or free: the repair makes a new, empty root.
    new_root: bool,
    /// Directory blocks whose extent was lost with a damaged extent block (directory →
    /// block indexes): each gets a new, empty block.
    holes: BTreeMap<u64, Vec<u64>>,
}

struct Checker {
    img: Arc<Overlay>,
    sb: Superblock,
    r: FsckReport,
    nodes: HashMap<u64, Node>,
    claims: Vec<Claim>,
    entries: Vec<DirEntryRec>,
    /// Data-area blocks claimed by some inode, a bit per block from `data_start`.
    used: Vec<u64>,
    /// The lowest free inode slot (for a new lost+found).
    first_free_ino: Option<u64>,
    /// Inode slots that do not decode (reported as errors).
    damaged: HashSet<u64>,
    plan: Plan,
}

fn name_str(n: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(n))
}

/// Directory holes beyond this many are not filled (a size no lost extent explains).
const MAX_DIR_HOLES: u64 = 1 << 16;

/// The name reconnected inodes get in lost+found.
const LOST_FOUND: &[u8] = b"lost+found";

impl Checker {
    /// Claims `len` blocks at `pblk` for `ino`; reports ranges outside the data area.
    fn claim(&mut self, ino: u64, pblk: u64, len: u64, what: &str) -> bool {
        let ok = len > 0
            && self.sb.is_data_block(pblk)
            && pblk
                .checked_add(len - 1)
                .is_some_and(|l| self.sb.is_data_block(l));
        if !ok {
            self.r.error(format!(
                "inode {ino}: {what} at block {pblk} (+{len}) lies outside the data area ({}..{})",
                self.sb.data_start, self.sb.total_blocks
            ));
            return false;
        }
        self.claims.push(Claim {
            start: pblk,
            len,
            ino,
        });
        true
    }

    /// Drops (reporting it) an extent whose logical range is impossible, so nothing
    /// downstream does arithmetic on it.
    fn sane_extent(&mut self, ino: u64, e: Option<Extent>) -> Option<Extent> {
        let e = e?;
        let ok = e.len as u64 <= MAX_EXTENT_LEN
            && e.lblk
                .checked_add(e.len as u64)
                .is_some_and(|end| end <= MAX_FILE_SIZE / BLOCK_SIZE);
        if !ok {
            self.r.error(format!(
                "inode {ino}: extent at logical block {} (+{}) is beyond the maximum file size",
                e.lblk, e.len
            ));
            return None;
        }
        Some(e)
    }

    fn fix(&mut self, ino: u64) -> &mut InodeFix {
        self.plan.fixes.entry(ino).or_default()
    }

    fn scan_inodes(&mut self, progress: Progress) {
        let sb = self.sb.clone();
        let per_block = BLOCK_SIZE / INODE_SIZE;
        let mut tbl = vec![0u8; BLOCK_SIZE as usize];
        let total = sb.inode_table_blocks;
        let step = (total / 100).max(1);
        for tb in 0..total {
            if !self.img.block(sb.inode_table_start + tb, &mut tbl) {
                self.r.error("inode table extends past the device end");
                return;
            }
            for k in 0..per_block {
                let ino = tb * per_block + k;
                if ino >= sb.inode_count {
                    break;
                }
                let slot = &tbl[(k * INODE_SIZE) as usize..((k + 1) * INODE_SIZE) as usize];
                if ino == 0 {
                    if slot.iter().any(|&b| b != 0) {
                        self.r
                            .fixable(false, "inode slot 0 (reserved) is not zero (zeroing it)");
                        self.plan.clear.push(0);
                    }
                    continue;
                }
                match DiskInode::decode(slot) {
                    Ok(None) => {
                        // A free root slot is given back to the root, never to lost+found.
                        if ino != ROOT_INO {
                            self.first_free_ino.get_or_insert(ino);
                        }
                    }
                    Ok(Some(d)) => self.check_inode(ino, d),
                    Err(e) => self.clear_inode(ino, &e.to_string()),
                }
            }
            if tb % step == 0 || tb + 1 == total {
                progress("inodes", tb + 1, total);
            }
        }
    }

    /// Plans clearing inode `ino`, whose record cannot be trusted (`why`). Nothing in it
    /// is believed: not its blocks (unclaimed, so the bitmap rebuild frees them), not
    /// its entries if a directory (its children are reconnected to lost+found).
    fn clear_inode(&mut self, ino: u64, why: &str) {
        self.r.fixable(
            false,
            format!("inode {ino}: {why} (clearing the inode; entries naming it are removed)"),
        );
        self.damaged.insert(ino);
        self.plan.clear.push(ino);
    }

    /// Whether `pblk` holds an intact extent block of inode `ino` not yet in its chain
    /// (`seen`): the test for trusting the next pointer of a damaged extent block.
    fn is_extent_block_of(&self, pblk: u64, ino: u64, seen: &HashSet<u64>) -> bool {
        if pblk == 0 || !self.sb.is_data_block(pblk) || seen.contains(&pblk) {
            return false;
        }
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        self.img.block(pblk, &mut buf) && decode_extent_block_header(&buf, ino).is_ok()
    }

    fn check_inode(&mut self, ino: u64, d: DiskInode) {
        let Some(kind) = FileKind::from_mode(d.mode) else {
            self.clear_inode(ino, &format!("invalid mode {:o}", d.mode));
            return;
        };
        self.r.stats.inodes_used += 1;
        match kind {
            FileKind::File => self.r.stats.files += 1,
            FileKind::Dir => self.r.stats.dirs += 1,
            FileKind::Symlink => self.r.stats.symlinks += 1,
            _ => self.r.stats.others += 1,
        }
        self.nodes.insert(
            ino,
            Node {
                kind,
                nlink: d.nlink,
                parent: d.parent,
                orphan_flag: d.flags & IFLAG_ORPHAN != 0,
                size: d.size,
                empty_file: false,
            },
        );
        // Extent block chain.
        let mut chain = Vec::new();
        let mut next = d.extent_block;
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        let mut seen = HashSet::new();
        let mut chain_ok = true;
        while next != 0 {
            if !seen.insert(next) {
                self.r.error(format!(
                    "inode {ino}: extent block chain loops at block {next}"
                ));
                chain_ok = false;
                break;
            }
            if !self.claim(ino, next, 1, "extent block") {
                chain_ok = false;
                break;
            }
            self.img.block(next, &mut buf);
            let mut rewrite = false;
            let nx = match decode_extent_block_header(&buf, ino) {
                Ok(nx) => nx,
                Err(e) => {
                    // The block is this inode's (its checksummed pointer names it), and
                    // each slot carries its own checksum: the intact extents in it are
                    // kept. Its next pointer is not trusted unless it names an intact
                    // extent block of this inode; else the chain ends here.
                    let cand = u64::from_le_bytes(buf[8..16].try_into().unwrap_or([0; 8]));
                    let nx = if self.is_extent_block_of(cand, ino, &seen) {
                        cand
                    } else {
                        0
                    };
                    self.r.fixable(
                        false,
                        format!(
                            "inode {ino}: extent block {next}: {e} (rewriting its header{}; its intact extents are kept)",
                            if nx == 0 { ", ending the chain there" } else { "" }
                        ),
                    );
                    rewrite = true;
                    nx
                }
            };
            let mut slots = Vec::with_capacity(EXTENTS_PER_BLOCK);
            for j in 0..EXTENTS_PER_BLOCK {
                let o = EXTENT_BLOCK_HEADER + j * EXTENT_SIZE;
                match Extent::decode(&buf[o..o + EXTENT_SIZE]) {
                    Ok(e) => slots.push(self.sane_extent(ino, e)),
                    Err(e) => {
                        self.r.fixable(
                            false,
                            format!(
                                "inode {ino}: extent block {next} slot {j}: {e} (clearing the slot: its range of the file becomes a hole)"
                            ),
                        );
                        slots.push(None);
                        rewrite = true;
                    }
                }
            }
            if rewrite {
                let mut im = vec![0u8; BLOCK_SIZE as usize];
                im[..EXTENT_BLOCK_HEADER].copy_from_slice(&encode_extent_block_header(nx, ino));
                for (j, e) in slots.iter().enumerate() {
                    if let Some(e) = e {
                        let o = EXTENT_BLOCK_HEADER + j * EXTENT_SIZE;
                        im[o..o + EXTENT_SIZE].copy_from_slice(&e.encode());
                    }
                }
                self.plan.images.push((
                    next * BLOCK_SIZE,
                    im,
                    format!("extent block of inode {ino}"),
                ));
            }
            chain.push((next, slots));
            next = nx;
        }
        let nblocks_chain = chain.len() as u64;
        let mut inline = d.inline;
        for e in inline.iter_mut() {
            if e.len != 0 && self.sane_extent(ino, Some(*e)).is_none() {
                e.len = 0;
            }
        }
        let ext = match ExtentMap::load(&inline, chain) {
            Ok(m) => m,
            Err(e) => {
                self.r.error(format!("inode {ino}: {e}"));
                return;
            }
        };
        if chain_ok && ext.len() as u64 != d.extent_count as u64 {
            self.r.fixable(
                true,
                format!(
                    "inode {ino}: extent count is {} but {} extents are stored",
                    d.extent_count,
                    ext.len()
                ),
            );
            self.fix(ino).extent_count = Some(ext.len() as u32);
        }
        let mut mapped = 0u64;
        let exts: Vec<Extent> = ext.iter().collect();
        for e in &exts {
            if self.claim(ino, e.pblk, e.len as u64, "extent") {
                mapped += e.len as u64;
            }
        }
        let mut owned = mapped + nblocks_chain;
        let mut xattr_block = d.xattr_block;
        if xattr_block != 0 {
            if !self.sb.is_data_block(xattr_block) {
                self.claim(ino, xattr_block, 1, "xattr block"); // reports it
            } else {
                self.img.block(xattr_block, &mut buf);
                match decode_xattr_block(&buf, ino) {
                    Ok(_) => {
                        if self.claim(ino, xattr_block, 1, "xattr block") {
                            owned += 1;
                        }
                    }
                    Err(e) => {
                        // One checksum covers the whole block: none of it can be
                        // believed. The file keeps its data and loses its xattrs.
                        self.r.fixable(
                            false,
                            format!(
                                "inode {ino}: {e} (dropping its extended attributes; the block is freed)"
                            ),
                        );
                        self.fix(ino).drop_xattr = true;
                        xattr_block = 0;
                    }
                }
            }
        }
        if chain_ok && owned != d.blocks {
            self.r.fixable(
                true,
                format!(
                    "inode {ino}: block count is {} but it owns {owned} blocks",
                    d.blocks
                ),
            );
            self.fix(ino).blocks = Some(owned);
        }
        if kind == FileKind::File && d.size == 0 && owned == 0 && xattr_block == 0 {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.empty_file = true;
            }
        }
        if d.size > MAX_FILE_SIZE {
            // The mount refuses it too: no file can grow past this, and offsets up to
            // the size must be free of overflow.
            self.r.error(format!(
                "inode {ino}: size {} is beyond the maximum file size",
                d.size
            ));
        }
        match kind {
            FileKind::Dir => self.check_dir(ino, &d, &ext),
            FileKind::Symlink => {
                if d.size == 0 || d.size >= BLOCK_SIZE {
                    self.r.error(format!(
                        "symlink {ino}: target length {} is out of range",
                        d.size
                    ));
                } else if ext.find(0).is_none() {
                    self.r
                        .error(format!("symlink {ino}: target block is missing"));
                }
            }
            FileKind::File => {}
            _ => {
                if !exts.is_empty() || d.size != 0 {
                    self.r.error(format!(
                        "inode {ino}: a {kind:?} node has data (size {}, {} extents)",
                        d.size,
                        exts.len()
                    ));
                }
            }
        }
    }

    fn check_dir(&mut self, ino: u64, d: &DiskInode, ext: &ExtentMap) {
        let nblocks = d.size / BLOCK_SIZE;
        // Fewer mapped blocks than the size says are holes (below); an extent past the
        // size is not something a lost extent explains.
        let holes = nblocks.saturating_sub(ext.mapped_blocks());
        if !d.size.is_multiple_of(BLOCK_SIZE)
            || ext.iter().any(|e| e.end() > nblocks)
            || holes > MAX_DIR_HOLES
        {
            self.r.error(format!(
                "directory {ino}: size {} does not match its {} mapped blocks",
                d.size,
                ext.mapped_blocks()
            ));
        }
        if nblocks > u32::MAX as u64 {
            self.r
                .error(format!("directory {ino}: size {} is too large", d.size));
            return;
        }
        let mut names: HashSet<Box<[u8]>> = HashSet::new();
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        for b in 0..nblocks {
            let Some(e) = ext.find(b) else {
                if holes <= MAX_DIR_HOLES {
                    self.r.fixable(
                        false,
                        format!(
                            "directory {ino}: block {b} is a hole (giving it a new, empty block)"
                        ),
                    );
                    self.plan.holes.entry(ino).or_default().push(b);
                } else {
                    self.r
                        .error(format!("directory {ino}: block {b} is a hole"));
                }
                continue;
            };
            let pblk = e.pblk.saturating_add(b - e.lblk);
            if !self.sb.is_data_block(pblk) {
                continue; // reported by claim
            }
            self.img.block(pblk, &mut buf);
            // The repaired block, when it needs one. The block is this directory's (its
            // checksummed extent names it) and every entry carries its own checksum: a
            // damaged header is rewritten and the intact entries are kept; a damaged
            // entry is cleared (its inode is reconnected to lost+found unless another
            // entry names it).
            let mut fixed: Option<Vec<u8>> = None;
            if let Err(err) = check_dir_block_header(&buf, ino, b) {
                self.r.fixable(
                    false,
                    format!("{err} (rewriting the header; its intact entries are kept)"),
                );
                let mut im = buf.clone();
                im[..DIR_SLOT].copy_from_slice(&encode_dir_block_header(ino, b));
                fixed = Some(im);
            }
            let mut s = 1;
            while s < DIR_SLOTS_PER_BLOCK {
                match decode_dirent(&buf, s) {
                    Ok(None) => s += 1,
                    Err(err) => {
                        self.r.fixable(
                            false,
                            format!(
                                "directory {ino}: block {b} slot {s}: {err} (clearing the slot)"
                            ),
                        );
                        fixed.get_or_insert_with(|| buf.clone())[s * DIR_SLOT..(s + 1) * DIR_SLOT]
                            .fill(0);
                        s += 1;
                    }
                    Ok(Some(de)) => {
                        if !names.insert(de.name.into()) {
                            self.r.error(format!(
                                "directory {ino}: duplicate entry {}",
                                name_str(de.name)
                            ));
                        } else {
                            // Entries naming nothing valid are judged (and removed) by
                            // check_namespace.
                            self.entries.push(DirEntryRec {
                                dir: ino,
                                child: de.ino,
                                ftype: de.ftype,
                                name: de.name.into(),
                                block: b as u32,
                                pblk,
                                slot: s as u8,
                                nslots: de.nslots as u8,
                            });
                        }
                        s += de.nslots;
                    }
                }
            }
            if let Some(im) = fixed {
                self.plan.images.push((
                    pblk * BLOCK_SIZE,
                    im,
                    format!("block {b} of directory {ino}"),
                ));
            }
        }
    }

    /// Blocks claimed twice, by one inode or two.
    fn check_overlaps(&mut self) {
        self.claims.sort_unstable_by_key(|c| (c.start, c.len));
        let mut reported = 0;
        let mut far: Option<(u64, u64)> = None; // (end, ino) of the furthest-reaching claim
        for c in &self.claims {
            if let Some((end, owner)) = far {
                if c.start < end {
                    reported += 1;
                    if reported <= 20 {
                        let who = if owner == c.ino {
                            format!("twice by inode {owner}")
                        } else {
                            format!("by inodes {owner} and {}", c.ino)
                        };
                        self.r
                            .add(Severity::Error, format!("block {} is used {who}", c.start));
                    }
                }
                if c.start + c.len > end {
                    far = Some((c.start + c.len, c.ino));
                }
            } else {
                far = Some((c.start + c.len, c.ino));
            }
        }
        if reported > 20 {
            self.r
                .error(format!("... {} more blocks used twice", reported - 20));
        }
    }

    /// The bitmap against the blocks the extent maps use.
    fn check_bitmap(&mut self, progress: Progress) {
        let sb = self.sb.clone();
        let n = sb.data_blocks;
        let mut used = vec![0u64; n.div_ceil(64) as usize];
        for c in &self.claims {
            for b in c.start - sb.data_start..c.start - sb.data_start + c.len {
                used[(b / 64) as usize] |= 1 << (b % 64);
            }
        }
        self.r.stats.blocks_used = used.iter().map(|w| w.count_ones() as u64).sum();
        let is_used = |b: u64| used[(b / 64) as usize] & (1 << (b % 64)) != 0;
        let mut img = vec![0u8; BLOCK_SIZE as usize];
        let (mut leaked, mut unmarked, mut tail_bad) = (0u64, 0u64, 0u64);
        let mut first_unmarked = None;
        let step = (sb.bitmap_blocks / 100).max(1);
        for i in 0..sb.bitmap_blocks {
            if !self.img.read_at(sb.bitmap_block_offset(i), &mut img) {
                self.r.error("bitmap extends past the device end");
                return;
            }
            if let Err(e) = check_bitmap_block(&img, i) {
                self.r
                    .fixable(true, format!("{e} (a mount refuses this image)"));
                continue;
            }
            let first = i * BITS_PER_BITMAP_BLOCK;
            for bit in 0..BITS_PER_BITMAP_BLOCK {
                let on = img[(bit / 8) as usize] & (1 << (bit % 8)) != 0;
                let b = first + bit;
                if b >= n {
                    if !on {
                        tail_bad += 1;
                    }
                    continue;
                }
                match (on, is_used(b)) {
                    (true, false) => leaked += 1,
                    (false, true) => {
                        unmarked += 1;
                        first_unmarked.get_or_insert(sb.data_start + b);
                    }
                    _ => {}
                }
            }
            if i % step == 0 || i + 1 == sb.bitmap_blocks {
                progress("bitmap", i + 1, sb.bitmap_blocks);
            }
        }
        self.used = used;
        if unmarked > 0 {
            self.r.add(
                Severity::Repairable,
                format!(
                    "bitmap: {unmarked} blocks in use are marked free (first: block {})",
                    first_unmarked.unwrap_or(0)
                ),
            );
        }
        if leaked > 0 {
            self.r.add(
                Severity::Repairable,
                format!("bitmap: {leaked} blocks are marked used but belong to no inode"),
            );
        }
        if tail_bad > 0 {
            self.r.add(
                Severity::Repairable,
                format!("bitmap: {tail_bad} bits past the end of the data area are clear"),
            );
        }
    }

    /// Free data blocks (no inode claims them).
    fn free_blocks(&self) -> u64 {
        let used: u64 = self.used.iter().map(|w| w.count_ones() as u64).sum();
        self.sb.data_blocks.saturating_sub(used)
    }

    /// Directory entries against inodes: types, link counts, parents, reachability.
    /// Plans the repair of what it finds (see the module documentation).
    fn check_namespace(&mut self) {
        match self.nodes.get(&ROOT_INO) {
            None => {
                // Free or cleared: a new, empty root is made (e2fsck's "root inode not
                // allocated"); everything it held is reconnected to lost+found below.
                self.r.fixable(
                    false,
                    "root directory (inode 1) is missing or unreadable (making a new, empty root directory)",
                );
                self.plan.new_root = true;
                self.nodes.insert(
                    ROOT_INO,
                    Node {
                        kind: FileKind::Dir,
                        nlink: 2,
                        parent: ROOT_INO,
                        orphan_flag: false,
                        size: 0,
                        empty_file: false,
                    },
                );
            }
            Some(n) if n.kind != FileKind::Dir => {
                self.r.error("root inode 1 is not a directory");
                return;
            }
            Some(_) => {}
        }
        let entries = std::mem::take(&mut self.entries);
        // Entries counted, and entries the repair erases.
        let mut keep = vec![true; entries.len()];
        let mut remove = vec![false; entries.len()];
        // Directories naming a damaged inode: their link counts cannot be judged.
        let mut unsure: HashSet<u64> = HashSet::new();
        // Entries naming nothing they may name; file types.
        for (i, e) in entries.iter().enumerate() {
            let what = format!("directory {}: entry {}", e.dir, name_str(&e.name));
            if self.damaged.contains(&e.child) {
                // The inode is cleared (reported with it): its entries go with it.
                keep[i] = false;
                remove[i] = true;
                unsure.insert(e.dir);
                continue;
            }
            if e.child == 0 || e.child >= self.sb.inode_count {
                self.r.fixable(
                    false,
                    format!(
                        "{what} names inode {} out of range (removing the entry)",
                        e.child
                    ),
                );
                keep[i] = false;
                remove[i] = true;
                continue;
            }
            let Some(child) = self.nodes.get(&e.child) else {
                self.r.fixable(
                    true,
                    format!("{what} names free inode {} (removing the entry)", e.child),
                );
                keep[i] = false;
                remove[i] = true;
                continue;
            };
            if e.child == ROOT_INO {
                self.r.fixable(
                    false,
                    format!("{what} names the root directory (removing the entry)"),
                );
                keep[i] = false;
                remove[i] = true;
                continue;
            }
            let kind = child.kind;
            if kind.dtype() != e.ftype {
                self.r.fixable(
                    false,
                    format!(
                        "{what} says type {} but inode {} is a {kind:?} (correcting the type)",
                        e.ftype, e.child
                    ),
                );
                self.plan.retype.push((i, kind.dtype()));
            }
        }
        // A directory has one name: the entry in the directory its parent field names,
        // else the first one found.
        let mut dir_names: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (i, e) in entries.iter().enumerate() {
            if keep[i] && self.is_dir(e.child) {
                dir_names.entry(e.child).or_default().push(i);
            }
        }
        let mut name_of: HashMap<u64, usize> = HashMap::new();
        for (&child, idxs) in &dir_names {
            let parent = self.nodes.get(&child).map_or(0, |n| n.parent);
            let k = idxs
                .iter()
                .copied()
                .find(|&i| entries[i].dir == parent)
                .unwrap_or(idxs[0]);
            name_of.insert(child, k);
            for &i in idxs.iter().filter(|&&i| i != k) {
                keep[i] = false;
                remove[i] = true;
                self.r.fixable(
                    false,
                    format!(
                        "directory {child} is named by directories {} and {} (hard link to a directory); removing entry {} from directory {}",
                        entries[k].dir,
                        entries[i].dir,
                        name_str(&entries[i].name),
                        entries[i].dir
                    ),
                );
            }
        }
        let mut named: HashMap<u64, u32> = HashMap::new();
        let mut children: HashMap<u64, Vec<u64>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if keep[i] {
                *named.entry(e.child).or_default() += 1;
                children.entry(e.dir).or_default().push(e.child);
            }
        }
        let mut inos: Vec<u64> = self.nodes.keys().copied().collect();
        inos.sort_unstable();
        // Orphans: unlinked while open, then a crash or an unmount with the handle still
        // open: a designed state, which the next mount (or this repair) reclaims.
        let mut freed: HashSet<u64> = HashSet::new();
        // Inodes this repair leaves alone (reported as errors).
        let mut left: HashSet<u64> = HashSet::new();
        for &ino in &inos {
            let Some(n) = self.nodes.get(&ino) else {
                continue;
            };
            if ino == ROOT_INO || n.nlink != 0 || named.contains_key(&ino) {
                continue;
            }
            if children.contains_key(&ino) {
                // Not removed by rmdir (which needs it empty): a damaged link count of
                // an unattached directory, reconnected below.
                continue;
            }
            self.r.stats.orphans += 1;
            self.r.add(
                Severity::Note,
                format!("inode {ino}: orphan (unlinked while open), reclaimed at the next mount or by fsck.daxfs -y"),
            );
            freed.insert(ino);
            self.plan.free.push(ino);
        }
        // Reachability from the root.
        let mut reached = HashSet::new();
        self.reach(ROOT_INO, &children, &mut reached);
        // Inodes no entry names: reconnected, or cleared when empty files.
        for &ino in &inos {
            if reached.contains(&ino) || freed.contains(&ino) || named.contains_key(&ino) {
                continue;
            }
            let Some(n) = self.nodes.get(&ino) else {
                continue;
            };
            if n.empty_file {
                self.r.fixable(
                    true,
                    format!("inode {ino}: unattached zero-length file (clearing it)"),
                );
                freed.insert(ino);
                self.plan.free.push(ino);
                continue;
            }
            self.r.fixable(
                false,
                format!(
                    "inode {ino} ({:?}, {} bytes): not reachable from the root directory (link count {}); reconnecting it to /lost+found as #{ino}",
                    n.kind, n.size, n.nlink
                ),
            );
            self.plan.reconnect.push(ino);
            self.reach(ino, &children, &mut reached);
        }
        // What is still unreachable hangs in (or below) a loop of directories naming
        // each other: break each loop at its lowest-numbered directory.
        loop {
            let in_loop = inos.iter().copied().find(|&d| {
                !reached.contains(&d)
                    && !freed.contains(&d)
                    && self.is_dir(d)
                    && Self::loops_back(d, &name_of, &entries, &reached)
            });
            let Some(d) = in_loop else {
                break;
            };
            let Some(&i) = name_of.get(&d) else {
                break;
            };
            keep[i] = false;
            remove[i] = true;
            if let Some(c) = children.get_mut(&entries[i].dir) {
                if let Some(p) = c.iter().position(|&x| x == d) {
                    c.swap_remove(p);
                }
            }
            self.r.fixable(
                false,
                format!(
                    "directory {d} is in a loop of directories unreachable from the root; removing its entry {} from directory {} and reconnecting it to /lost+found as #{d}",
                    name_str(&entries[i].name),
                    entries[i].dir
                ),
            );
            self.plan.reconnect.push(d);
            self.reach(d, &children, &mut reached);
        }
        for &ino in &inos {
            if !reached.contains(&ino) && !freed.contains(&ino) {
                let nlink = self.nodes.get(&ino).map_or(0, |n| n.nlink);
                self.r.error(format!(
                    "inode {ino}: not reachable from the root directory (link count {nlink})"
                ));
                left.insert(ino);
            }
        }
        self.plan_lost_found(&entries, &keep);
        // Link counts and parents of the namespace as it is (the kept entries), and as
        // repaired (plus lost+found's entries): the repair sets the second.
        let mut as_is = Counts::default();
        for (i, e) in entries.iter().enumerate() {
            if keep[i] {
                as_is.add(e.dir, e.child, self.is_dir(e.child));
            }
        }
        let mut fin = as_is.clone();
        let lf = match self.plan.lost_found {
            LostFound::Unneeded => None,
            LostFound::Existing(lf) => Some(lf),
            LostFound::Create { ino, .. } => {
                fin.add(ROOT_INO, ino, true);
                Some(ino)
            }
        };
        if let Some(lf) = lf {
            for &r in &self.plan.reconnect {
                fin.add(lf, r, self.is_dir(r));
            }
        }
        let reconnect: HashSet<u64> = self.plan.reconnect.iter().copied().collect();
        for &ino in &inos {
            if freed.contains(&ino) || left.contains(&ino) {
                continue;
            }
            let Some(n) = self.nodes.get(&ino) else {
                continue;
            };
            let (kind, nlink, parent, orphan) = (n.kind, n.nlink, n.parent, n.orphan_flag);
            let reconnected = reconnect.contains(&ino);
            let want = fin.nlink(ino, kind);
            if want == 0 {
                continue; // not to be reconnected (lost+found is unavailable: reported)
            }
            // A count the repair's own additions (lost+found and its entries) make
            // wrong, or right, is not a finding.
            if nlink != want && nlink != as_is.nlink(ino, kind) && !unsure.contains(&ino) {
                let msg = if nlink == 0 && kind != FileKind::Dir {
                    format!(
                        "inode {ino}: link count is 0 but {} directory entries name it",
                        as_is.links(ino)
                    )
                } else {
                    format!("inode {ino}: link count is {nlink} but should be {want}")
                };
                self.r.fixable(true, msg);
            }
            if nlink != want {
                self.fix(ino).nlink = Some(want);
            }
            if orphan {
                self.r.fixable(
                    true,
                    format!("inode {ino}: marked orphan but linked (clearing the flag)"),
                );
                self.fix(ino).clear_orphan = true;
            }
            if kind == FileKind::Dir {
                let want_parent = if ino == ROOT_INO {
                    ROOT_INO
                } else {
                    fin.parent_of.get(&ino).copied().unwrap_or(parent)
                };
                if parent != want_parent {
                    if ino == ROOT_INO {
                        self.r.fixable(
                            false,
                            format!("root directory: parent is {parent}, not itself"),
                        );
                    } else if !reconnected {
                        self.r.fixable(
                            false,
                            format!(
                                "directory {ino}: parent field is {parent} but it is in directory {want_parent}"
                            ),
                        );
                    }
                    self.fix(ino).parent = Some(want_parent);
                }
            }
        }
        if let LostFound::Create { ino, .. } = self.plan.lost_found {
            let nlink = fin.nlink(ino, FileKind::Dir);
            self.plan.lost_found = LostFound::Create { ino, nlink };
        }
        // Counts of inodes about to be freed need no fixing.
        self.plan.fixes.retain(|ino, _| !freed.contains(ino));
        self.plan.remove = (0..entries.len()).filter(|&i| remove[i]).collect();
        self.entries = entries;
    }

    fn is_dir(&self, ino: u64) -> bool {
        self.nodes
            .get(&ino)
            .is_some_and(|n| n.kind == FileKind::Dir)
    }

    /// Adds `from` and everything below it to `reached`.
    fn reach(&self, from: u64, children: &HashMap<u64, Vec<u64>>, reached: &mut HashSet<u64>) {
        let mut stack = vec![from];
        reached.insert(from);
        while let Some(d) = stack.pop() {
            for &c in children.get(&d).map(|v| v.as_slice()).unwrap_or(&[]) {
                if reached.insert(c) && self.is_dir(c) {
                    stack.push(c);
                }
            }
        }
    }

    /// Whether following the names of directory `d` upwards comes back to `d`.
    fn loops_back(
        d: u64,
        name_of: &HashMap<u64, usize>,
        entries: &[DirEntryRec],
        reached: &HashSet<u64>,
    ) -> bool {
        let mut cur = d;
        for _ in 0..=name_of.len() {
            let Some(&i) = name_of.get(&cur) else {
                return false;
            };
            cur = entries[i].dir;
            if cur == d {
                return true;
            }
            if reached.contains(&cur) {
                return false;
            }
        }
        false
    }

    /// Finds or plans the lost+found the reconnected inodes go to; an error when there
    /// is none to be had.
    fn plan_lost_found(&mut self, entries: &[DirEntryRec], keep: &[bool]) {
        let n = self.plan.reconnect.len() as u64;
        if n == 0 {
            return;
        }
        // Blocks the repair may allocate: lost+found's directory blocks (one entry per
        // 64-byte slot), an extent block for it, and one directory block plus one
        // extent block for the root.
        let need = n.div_ceil(DIR_SLOTS_PER_BLOCK as u64 - 1) + 3;
        let existing = entries
            .iter()
            .enumerate()
            .find(|(i, e)| keep[*i] && e.dir == ROOT_INO && &*e.name == LOST_FOUND)
            .map(|(_, e)| e.child);
        let cannot = match existing {
            Some(lf) if self.is_dir(lf) => {
                if self.free_blocks() >= need {
                    self.plan.lost_found = LostFound::Existing(lf);
                    return;
                }
                "no free blocks for /lost+found"
            }
            Some(_) => "/lost+found is not a directory",
            None => match self.first_free_ino {
                Some(ino) if self.free_blocks() >= need => {
                    self.plan.lost_found = LostFound::Create { ino, nlink: 2 };
                    return;
                }
                Some(_) => "no free blocks to create /lost+found",
                None => "no free inode to create /lost+found",
            },
        };
        self.r.error(format!(
            "cannot reconnect {} to /lost+found: {cannot}",
            if n == 1 {
                "1 inode".to_string()
            } else {
                format!("{n} inodes")
            }
        ));
    }
}

/// Checks the filesystem on `dev`: the superblocks (with `repair_sb`, a bad copy is
/// rewritten from the good one), then the image as the next mount would see it (the
/// journal replayed into memory). Err: no usable superblock.
fn inspect(
    dev: &Arc<Device>,
    repair_sb: bool,
    progress: Progress,
) -> Result<Checker, Box<FsckReport>> {
    let mut r = FsckReport::default();
    let Some(sb) = check_superblocks(dev, repair_sb, &mut r) else {
        return Err(Box::new(r));
    };
    r.superblock = Some(sb.clone());
    r.stats.inodes_total = sb.inode_count - 1;
    r.stats.data_blocks = sb.data_blocks;
    if sb.ro_compat != 0 {
        r.add(
            Severity::Note,
            format!(
                "unknown read-only-compatible features {:#x}: only read-only mounts",
                sb.ro_compat
            ),
        );
    }
    if sb.state != STATE_CLEAN {
        r.add(
            Severity::Note,
            "filesystem was not cleanly unmounted (or is mounted)",
        );
    }
    host_table::check(dev, &sb, &mut r);
    let img = Arc::new(Overlay::new(dev.clone()));
    let media: Arc<dyn Media> = img.clone();
    // `recover`, not `open`: a damaged log (which a mount refuses) is checked as -y
    // would leave it.
    match Journal::recover(
        media,
        sb.journal_start * BLOCK_SIZE,
        sb.journal_blocks * BLOCK_SIZE,
    ) {
        Ok((_journal, rep)) => {
            if let Some(d) = rep.damage {
                r.fixable(
                    false,
                    format!(
                        "journal: {d} (a mount refuses this image; fsck.daxfs -y applies the {} intact transactions after it and drops {} damaged; checked as so recovered)",
                        rep.transactions_replayed, d.dropped
                    ),
                );
            }
            r.stats.journal_pending = rep.transactions_replayed;
            if rep.damage.is_none() && rep.transactions_replayed > 0 {
                r.add(
                    Severity::Note,
                    format!(
                        "journal: {} committed transactions not yet applied (checked as replayed; the next mount applies them)",
                        rep.transactions_replayed
                    ),
                );
            }
            if let StopReason::InvalidRecord { sequence } = rep.stopped_reason {
                r.error(format!(
                    "journal: transaction {sequence} is intact but has an invalid record"
                ));
            }
        }
        Err(e @ JournalError::Corrupt { .. }) => {
            // Both header copies are unreadable: nothing in the log can be trusted or
            // replayed, but the metadata's home locations can still be checked.
            r.fixable(
                false,
                format!(
                    "journal: {e} (a mount refuses this image; fsck.daxfs -y makes a new, empty journal: transactions the log held, if any, are lost)"
                ),
            );
        }
        Err(e) => {
            r.error(format!("journal: {e} (a mount refuses this image)"));
        }
    }
    if img.out_of_range.load(Ordering::Relaxed) > 0 {
        r.error("journal: replay touched bytes past the device end");
    }
    let mut c = Checker {
        img,
        sb,
        r,
        nodes: HashMap::new(),
        claims: Vec::new(),
        entries: Vec::new(),
        used: Vec::new(),
        first_free_ino: None,
        damaged: HashSet::new(),
        plan: Plan::default(),
    };
    c.scan_inodes(&mut *progress);
    c.check_overlaps();
    c.check_bitmap(progress);
    c.check_namespace();
    Ok(c)
}

/// Checks the filesystem on `dev`. With `repair`, a bad superblock copy is rewritten
/// from the good one (the device must be writable); nothing else is written. The
/// journal is replayed into memory first, so the check sees what a mount would.
pub fn check(dev: &Arc<Device>, repair: bool, progress: Progress) -> FsckReport {
    match inspect(dev, repair, progress) {
        Ok(c) => c.r,
        Err(r) => *r,
    }
}

/// Checks the filesystem on `dev` (writable) and repairs what it can (see the module
/// documentation). `preen`: repair nothing when a finding needs `-y`
/// ([`FsckReport::needs_manual_repair`]). Returns the check's findings and, in
/// `repaired`, what was done (each also a `log::info!` record); the caller checks again
/// to see the result.
pub fn repair(dev: &Arc<Device>, preen: bool, progress: Progress) -> FsckReport {
    let r = repair_inner(dev, preen, progress);
    // One log record per repair made, whichever way the repair ended.
    for x in &r.repaired {
        log::info!("{}: repaired: {x}", dev.path().display());
    }
    r
}

fn repair_inner(dev: &Arc<Device>, preen: bool, progress: Progress) -> FsckReport {
    let mut c = match inspect(dev, true, &mut *progress) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let mut r = c.r.clone();
    if !r.repaired.is_empty() {
        // A superblock copy was restored: what is left to do is judged without it.
        c = match inspect(dev, false, &mut *progress) {
            Ok(c) => c,
            Err(_) => return r,
        };
    }
    if !c.r.needs_repair() || (preen && c.r.needs_manual_repair()) {
        return r;
    }
    if !dev.writable() {
        r.error("cannot repair: the device is open read-only");
        return r;
    }
    let Some(sb) = c.r.superblock.clone() else {
        return r;
    };
    // Nothing is written under a live writer, wherever it runs: its heartbeat is
    // watched for one host timeout first.
    let live = host_table::watch(dev, &sb);
    if let Some(pid) = live.writer_live {
        r.error(format!(
            "cannot repair: the writer lease is live (pid {pid} heartbeats, on this host or another): unmount it first"
        ));
        return r;
    }
    r.repaired.extend(host_table::repair(dev, &sb, &live));
    // Apply the journal on the device, as a mount would; then check the device itself
    // and repair from what that finds (the same as above, now without an overlay).
    let media: Arc<dyn Media> = dev.clone();
    let (j_start, j_len) = (
        sb.journal_start * BLOCK_SIZE,
        sb.journal_blocks * BLOCK_SIZE,
    );
    if let Err(JournalError::Corrupt { .. }) = daxfs_journal::probe(&*media, j_start, j_len) {
        // No header copy is readable (the check found it and nothing worse): what the log
        // held cannot be replayed, so a new journal replaces it, as e2fsck recreates a
        // lost journal.
        if let Err(e) = daxfs_journal::format(&*media, j_start, j_len) {
            r.error(format!("cannot repair: making a new journal: {e}"));
            return r;
        }
        r.repaired
            .push("journal: both header copies were unreadable; made a new, empty journal".into());
    }
    let mut journal = match Journal::recover(media, j_start, j_len) {
        Ok((j, rep)) => {
            if let Some(d) = rep.damage {
                r.repaired.push(format!(
                    "journal: {d}: dropped {} damaged transaction(s) (their writes were already in place: later ones were committed after them), applied the {} after them",
                    d.dropped, rep.transactions_replayed
                ));
            } else if rep.transactions_replayed > 0 {
                r.repaired.push(format!(
                    "applied {} committed journal transactions",
                    rep.transactions_replayed
                ));
            }
            j
        }
        Err(e) => {
            r.error(format!("cannot repair: journal: {e}"));
            return r;
        }
    };
    let c = match inspect(dev, false, progress) {
        Ok(c) if c.r.count(Severity::Error) == 0 => c,
        _ => {
            r.error("cannot repair: the image changed while it was checked");
            return r;
        }
    };
    match repair::execute(&c, dev, &mut journal) {
        Ok(done) => r.repaired.extend(done),
        Err(e) => r.error(format!("repair failed: {e}")),
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_comparison_ignores_mount_state() {
        let p = MkfsParams {
            label: "x".into(),
            journal_bytes: 0,
            inodes: 0,
            uuid: [3; 16],
            now_ns: 5,
        };
        let a = Superblock::layout(64 << 20, &p).unwrap_or_else(|e| panic!("{e}"));
        let mut b = a.clone();
        b.state = STATE_MOUNTED;
        b.mount_count = 9;
        assert!(same_geometry(&a, &b));
        b.inode_count += 1;
        assert!(!same_geometry(&a, &b));
    }
}
