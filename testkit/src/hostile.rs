//! Hostile but well-checksummed images: the one implementation of the structure-aware
//! mutation shared by the stable test fs/tests/hostile_images.rs and the cargo-fuzz
//! targets in fuzz.
//!
//! A byte flip is refused by the first CRC it meets, so it never reaches the decoders
//! and validators behind it. Here a populated image is mapped into its structures
//! (superblocks, journal headers, inodes, extent, directory, xattr and bitmap blocks);
//! fields are set to boundary values (0, 1, MAX, MAX-1, the device's own geometry, …),
//! structures copied over or swapped with others of their kind, bytes flipped; then
//! every CRC is recomputed, so the damage is only visible to the checks of meaning
//! (geometry, ranges, cross-references). Optionally some of that damage is delivered
//! through journal transactions (committed, not yet applied home), so replay applies it.
//!
//! The mutations draw from an [`Entropy`]: a seeded [`crate::Rng`] in the stable test, the
//! fuzzer's input through [`Bytes`] in the fuzz targets.
#![allow(dead_code)]

use daxfs::{Cred, DaxFs, FsOptions, ROOT};
use daxfs_format::*;
use daxfs_journal::{Journal, Transaction};
use daxfs_pmem::Device;
use daxfs_pmem::MemMedia;
use std::sync::Arc;

/// Where the mutations get their choices from.
pub trait Entropy {
    fn next_u64(&mut self) -> u64;
    /// A value in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// A fuzzer's input as entropy: as few bytes per draw as the choice needs (one for a
/// choice among up to 256), zeros once it is used up (so a short input makes few, simple
/// mutations, which is what libFuzzer minimizes towards).
pub struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Bytes<'a> {
        Bytes { data, pos: 0 }
    }
    pub fn exhausted(&self) -> bool {
        self.pos >= self.data.len()
    }
}

impl Bytes<'_> {
    fn take(&mut self, width: usize) -> u64 {
        let mut b = [0u8; 8];
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let n = rest.len().min(width);
        b[..n].copy_from_slice(&rest[..n]);
        self.pos = self.pos.saturating_add(width);
        u64::from_le_bytes(b)
    }
}

impl Entropy for Bytes<'_> {
    fn next_u64(&mut self) -> u64 {
        self.take(8)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let width = (64 - (n - 1).leading_zeros()).div_ceil(8).max(1) as usize;
        self.take(width) % n
    }
}

/// What a structure of the image is (its CRC rules follow from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Superblock,
    JournalHeader,
    Inode,
    ExtentBlock,
    DirBlock,
    XattrBlock,
    BitmapBlock,
}

/// One structure: its kind and byte range in the base image.
#[derive(Clone, Copy, Debug)]
pub struct Structure {
    pub kind: Kind,
    pub off: usize,
    pub len: usize,
}

/// A populated, clean image and the map of its structures.
pub struct Base {
    pub image: Vec<u8>,
    pub sb: Superblock,
    pub structures: Vec<Structure>,
}

pub const IMAGE_SIZE: usize = 4 << 20;

impl Base {
    /// A 4 MiB image holding directories, hard links, a symlink, a fragmented file with
    /// an extent block, xattrs and a large directory spanning several blocks, cleanly
    /// unmounted.
    pub fn populated() -> Base {
        let dev = Arc::new(Device::memory(&vec![0u8; IMAGE_SIZE]).expect("memory device"));
        crate::mkfs()
            .journal_bytes(64 << 10)
            .inodes(128)
            .format(&dev);
        let fs = DaxFs::mount_device(dev.clone(), FsOptions::default()).expect("mount");
        let r = Cred::root();
        let file = |parent: u64, name: &[u8], data: &[u8]| {
            let a = fs
                .create(parent, name, 0o644, libc::O_RDWR, &r)
                .expect("create")
                .ino;
            if !data.is_empty() {
                fs.write(a, 0, data, false).expect("write");
            }
            fs.release(a).expect("release");
            a
        };
        let d = fs.mkdir(ROOT, b"d", 0o755, &r).expect("mkdir").ino;
        let a = file(d, b"a", &[7u8; 10000]);
        fs.link(a, ROOT, b"l").expect("link");
        fs.symlink(ROOT, b"s", b"d/a", &r).expect("symlink");
        let f = file(ROOT, b"frag", b"");
        for i in 0..8u64 {
            // Every other block: more extents than the inline slots hold.
            fs.write(f, i * 2 * BLOCK_SIZE, &[i as u8 + 1; 4096], false)
                .expect("write");
        }
        fs.setxattr(a, b"user.x", b"value", 0).expect("setxattr");
        fs.setxattr(d, b"trusted.y", &[3u8; 100], 0)
            .expect("setxattr");
        let big = fs.mkdir(ROOT, b"big", 0o755, &r).expect("mkdir").ino;
        for i in 0..40u32 {
            // Long names: 40 entries of 5 slots fill more than three blocks.
            let name = format!("{i:0>250}");
            file(big, name.as_bytes(), b"");
        }
        fs.mkdir(d, b"e", 0o700, &r).expect("mkdir");
        let sb = fs.superblock();
        fs.shutdown().expect("unmount");
        drop(fs);
        let mut image = vec![0u8; IMAGE_SIZE];
        dev.read(0, &mut image);
        let structures = map_structures(&image, &sb);
        Base {
            image,
            sb,
            structures,
        }
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.structures.iter().filter(|s| s.kind == kind).count()
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}
fn set_u32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn set_u64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// Walks a clean image (superblock, then every used inode) and lists its structures.
pub fn map_structures(img: &[u8], sb: &Superblock) -> Vec<Structure> {
    let bs = BLOCK_SIZE as usize;
    let blk = |b: u64| b as usize * bs;
    let mut out = vec![
        Structure {
            kind: Kind::Superblock,
            off: 0,
            len: SB_SIZE,
        },
        Structure {
            kind: Kind::Superblock,
            off: bs,
            len: SB_SIZE,
        },
    ];
    for copy in [0, 2048] {
        out.push(Structure {
            kind: Kind::JournalHeader,
            off: blk(sb.journal_start) + copy,
            len: 64,
        });
    }
    for i in 0..sb.bitmap_blocks {
        out.push(Structure {
            kind: Kind::BitmapBlock,
            off: blk(sb.bitmap_start + i),
            len: bs,
        });
    }
    for ino in 1..sb.inode_count {
        let off = sb.inode_offset(ino) as usize;
        out.push(Structure {
            kind: Kind::Inode,
            off,
            len: INODE_SIZE as usize,
        });
        let Ok(Some(d)) = DiskInode::decode(&img[off..off + INODE_SIZE as usize]) else {
            continue;
        };
        let mut extents: Vec<Extent> = d.inline.iter().copied().filter(|e| e.len > 0).collect();
        let mut next = d.extent_block;
        while next != 0 {
            out.push(Structure {
                kind: Kind::ExtentBlock,
                off: blk(next),
                len: bs,
            });
            let b = &img[blk(next)..blk(next) + bs];
            for j in 0..EXTENTS_PER_BLOCK {
                let o = EXTENT_BLOCK_HEADER + j * EXTENT_SIZE;
                if let Ok(Some(e)) = Extent::decode(&b[o..o + EXTENT_SIZE]) {
                    extents.push(e);
                }
            }
            next = u64_at(b, 8);
        }
        if d.xattr_block != 0 {
            out.push(Structure {
                kind: Kind::XattrBlock,
                off: blk(d.xattr_block),
                len: bs,
            });
        }
        if d.mode & libc::S_IFMT == libc::S_IFDIR {
            for e in extents {
                for k in 0..e.len as u64 {
                    out.push(Structure {
                        kind: Kind::DirBlock,
                        off: blk(e.pblk + k),
                        len: bs,
                    });
                }
            }
        }
    }
    out
}

/// CRC-32 of `b` with the 4 bytes at `at` taken as zero, stored there.
fn seal_hole(b: &mut [u8], at: usize) {
    set_u32(b, at, 0);
    let c = crc(b);
    set_u32(b, at, c);
}

/// CRC-32 of `b[..at]`, stored at `at`.
fn seal_tail(b: &mut [u8], at: usize) {
    let c = crc(&b[..at]);
    set_u32(b, at, c);
}

/// An extent slot: sealed when in use (a free slot must stay all zero).
fn seal_extent(b: &mut [u8]) {
    if u32_at(b, 16) != 0 {
        seal_tail(b, 20);
    }
}

/// Recomputes the CRCs of `s` in `img` as its writer would have (docs/FORMAT.md).
pub fn seal(img: &mut [u8], s: &Structure) {
    let b = &mut img[s.off..s.off + s.len];
    match s.kind {
        Kind::Superblock => seal_tail(b, 508),
        Kind::JournalHeader => seal_hole(b, 12),
        Kind::Inode => {
            if u32_at(b, 0) != 0 {
                for i in 0..INLINE_EXTENTS {
                    let o = 128 + i * EXTENT_SIZE;
                    seal_extent(&mut b[o..o + EXTENT_SIZE]);
                }
                seal_tail(b, 252);
            }
        }
        Kind::ExtentBlock => {
            seal_hole(&mut b[..EXTENT_BLOCK_HEADER], 4);
            for j in 0..EXTENTS_PER_BLOCK {
                let o = EXTENT_BLOCK_HEADER + j * EXTENT_SIZE;
                seal_extent(&mut b[o..o + EXTENT_SIZE]);
            }
        }
        Kind::DirBlock => {
            seal_hole(&mut b[..24], 4);
            let mut slot = 1;
            while slot < DIR_SLOTS_PER_BLOCK {
                let o = slot * DIR_SLOT;
                if u64_at(b, o) == 0 {
                    slot += 1;
                    continue;
                }
                let name_len = (u16_at(b, o + 12) as usize).min(NAME_MAX);
                let end = (o + DIRENT_HEADER + name_len).min(b.len());
                seal_hole(&mut b[o..end], 8);
                slot += (b[o + 15] as usize).max(1);
            }
        }
        Kind::XattrBlock => seal_hole(b, 4),
        Kind::BitmapBlock => seal_tail(b, 4092),
    }
}

pub fn seal_all(img: &mut [u8], structures: &[Structure]) {
    for s in structures {
        seal(img, s);
    }
}

/// A value worth trying in a field of `width` bytes: the boundaries of the type and of
/// this filesystem's geometry, their neighbours, or anything.
fn interesting(e: &mut impl Entropy, sb: &Superblock, width: usize) -> u64 {
    let geometry = [
        sb.total_blocks,
        sb.data_start,
        sb.data_blocks,
        sb.inode_count,
        sb.journal_blocks,
        sb.bitmap_start,
        sb.inode_table_start,
        BLOCK_SIZE,
        1 << 52,
        u32::MAX as u64,
        i64::MAX as u64,
    ];
    let v = match e.below(8) {
        0 => 0,
        1 => 1 + e.below(3),
        2 => u64::MAX - e.below(3),
        3 => geometry[e.below(geometry.len() as u64) as usize],
        4 => geometry[e.below(geometry.len() as u64) as usize].wrapping_sub(1),
        5 => geometry[e.below(geometry.len() as u64) as usize].wrapping_add(1),
        6 => e.below(1024),
        _ => e.next_u64(),
    };
    if width == 4 {
        v & 0xffff_ffff
    } else {
        v
    }
}

/// Applies one random mutation to `img` (not yet sealed).
pub fn mutate_once(img: &mut [u8], base: &Base, e: &mut impl Entropy) {
    let all = &base.structures;
    // A kind first, then one structure of it: the two superblocks and journal headers
    // are as likely a target as the hundred inode slots.
    let kinds = [
        Kind::Superblock,
        Kind::JournalHeader,
        Kind::Inode,
        Kind::ExtentBlock,
        Kind::DirBlock,
        Kind::XattrBlock,
        Kind::BitmapBlock,
    ];
    let kind = kinds[e.below(kinds.len() as u64) as usize];
    let of_kind: Vec<&Structure> = all.iter().filter(|t| t.kind == kind).collect();
    let Some(&&s) = of_kind.get(e.below(of_kind.len() as u64) as usize) else {
        return;
    };
    match e.below(12) {
        // A field set to a boundary value (the most productive: decoders see it).
        0..=5 => {
            let width = if e.below(2) == 0 { 8 } else { 4 };
            let at = s.off + (e.below((s.len / width) as u64) as usize) * width;
            let v = interesting(e, &base.sb, width);
            if width == 8 {
                set_u64(img, at, v);
            } else {
                set_u32(img, at, v as u32);
            }
        }
        6 => {
            let at = s.off + e.below(s.len as u64) as usize;
            img[at] ^= 1 << e.below(8);
        }
        7 => {
            let at = s.off + e.below(s.len as u64) as usize;
            img[at] = e.next_u64() as u8;
        }
        // Another structure of the same kind copied over this one: cross-links,
        // duplicate entries, an inode claiming another's blocks.
        8 | 9 => {
            let same: Vec<&Structure> = all.iter().filter(|t| t.kind == s.kind).collect();
            let t = same[e.below(same.len() as u64) as usize];
            img.copy_within(t.off..t.off + t.len, s.off);
        }
        10 => img[s.off..s.off + s.len].fill(0),
        _ => {
            // A byte range within the structure set to one value.
            let a = e.below(s.len as u64) as usize;
            let n = (1 + e.below(32) as usize).min(s.len - a);
            img[s.off + a..s.off + a + n].fill(e.next_u64() as u8);
        }
    }
}

/// A hostile image: 1–4 mutations of the base, every CRC recomputed. Sometimes the
/// backup superblock is made to agree with the primary (else the mount just falls back
/// to the intact backup), and sometimes part of the damage comes through the journal.
pub fn hostile_image(base: &Base, e: &mut impl Entropy) -> Vec<u8> {
    let mut img = base.image.clone();
    let through_journal = e.below(4) == 0;
    let mut changed = img.clone();
    for _ in 0..1 + e.below(4) {
        mutate_once(&mut changed, base, e);
    }
    if e.below(2) == 0 {
        changed.copy_within(0..SB_SIZE, BLOCK_SIZE as usize);
    }
    seal_all(&mut changed, &base.structures);
    if !through_journal {
        return changed;
    }
    // The changed structures go into committed transactions whose home writes never
    // happened (as after a crash): the mount's replay writes them.
    let js = (base.sb.journal_start * BLOCK_SIZE) as usize;
    let jl = (base.sb.journal_blocks * BLOCK_SIZE) as usize;
    let journal_region = js..js + jl;
    let m = Arc::new(MemMedia::from_bytes(img.clone()));
    let Ok((mut j, _)) = Journal::open(m.clone(), js as u64, jl as u64) else {
        return changed;
    };
    let mut t = Transaction::new();
    for s in &base.structures {
        let r = s.off..s.off + s.len;
        if changed[r.clone()] != img[r.clone()] && !journal_region.contains(&s.off) {
            t.write(s.off as u64, &changed[r]);
        }
        if t.record_count() >= 8 {
            let _ = j.commit(&t);
            t.clear();
        }
    }
    if e.below(4) == 0 {
        // A record aimed at the end of the device (or past it): the journal's bounds.
        let off = (img.len() as u64).wrapping_sub(e.below(8192));
        t.write(off, &[0xa5; 64]);
    }
    let _ = j.commit(&t);
    drop(j);
    let committed = m.volatile_image();
    img[journal_region.clone()].copy_from_slice(&committed[journal_region.clone()]);
    // What else the mutation changed outside the structures carried by the journal
    // (none, normally) and the journal headers themselves, if they were mutated, stay
    // as the journal wrote them.
    img
}

/// A refusal of an image fsck rightly calls clean: unknown read-only-compatible features
/// refuse a read-write mount only (the message says to mount with -o ro).
pub fn refusal_by_design(e: &daxfs::MountError) -> bool {
    matches!(e, daxfs::MountError::UnknownRoCompat { .. })
}

/// Whether an image passes every check a mount makes before `load` (a superblock copy
/// decodes, the journal header is valid): such an input reaches the parsers of the
/// metadata behind the checksums.
pub fn reaches_load(img: &[u8]) -> bool {
    let size = img.len() as u64;
    let copy = |off: usize| {
        img.get(off..off + SB_SIZE)
            .and_then(|b| Superblock::decode(b, size).ok())
    };
    let Some(sb) = copy(0).or_else(|| copy(BLOCK_SIZE as usize)) else {
        return false;
    };
    sb.ro_compat == 0
        && daxfs_journal::probe(
            &ReadOnly(img),
            sb.journal_start * BLOCK_SIZE,
            sb.journal_blocks * BLOCK_SIZE,
        )
        .is_ok()
}

/// An image as read-only journal media (for `probe`, which only reads).
struct ReadOnly<'a>(&'a [u8]);

impl daxfs_pmem::Media for ReadOnly<'_> {
    fn read(&self, off: u64, buf: &mut [u8]) {
        buf.fill(0);
        let s = usize::try_from(off).unwrap_or(usize::MAX);
        if let Some(rest) = self.0.get(s..) {
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
        }
    }
    fn write(&self, _off: u64, _data: &[u8]) {}
    fn flush(&self, _off: u64, _len: u64) {}
    fn fence(&self) {}
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
}

/// What a mounted hostile image is put through before its unmount: every directory
/// listed, every inode looked up, stat'ed and read (files, symlinks, xattrs), then
/// changes that make the filesystem walk and rewrite what it loaded (a new file written
/// and renamed, files truncated and extended, entries unlinked and xattrs replaced).
/// Errors are fine (the image is hostile); only a panic is a bug. Returns how many
/// operations succeeded.
pub fn exercise(fs: &DaxFs) -> u64 {
    let r = Cred::root();
    let mut ok = 0u64;
    let mut count = |res: bool| ok += u64::from(res);
    let mut dirs = vec![ROOT];
    let mut seen = std::collections::HashSet::new();
    let mut files = Vec::new();
    while let Some(dir) = dirs.pop() {
        if !seen.insert(dir) || seen.len() > 4096 {
            continue;
        }
        let mut entries = Vec::new();
        count(
            fs.readdir(dir, 0, |e| {
                entries.push(e);
                entries.len() < 4096
            })
            .is_ok(),
        );
        for e in entries {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            count(fs.lookup(dir, &e.name).is_ok());
            let Ok(a) = fs.getattr(e.ino) else { continue };
            count(true);
            match a.kind {
                daxfs::FileKind::Dir => dirs.push(e.ino),
                daxfs::FileKind::Symlink => count(fs.readlink(e.ino).is_ok()),
                daxfs::FileKind::File => {
                    let mut buf = vec![0u8; 64 << 10];
                    for off in [0, a.size.saturating_sub(100), a.size / 2, 1 << 40] {
                        count(fs.read(e.ino, off, &mut buf).is_ok());
                    }
                    files.push((dir, e.name.clone(), e.ino, a.size));
                }
                _ => {}
            }
            if let Ok(list) = fs.listxattr(e.ino) {
                for name in list.split(|&c| c == 0).filter(|n| !n.is_empty()) {
                    count(fs.getxattr(e.ino, name).is_ok());
                }
            }
        }
    }
    if let Ok(a) = fs.create(ROOT, b"hostile-new", 0o644, libc::O_RDWR, &r) {
        count(fs.write(a.ino, 0, &[9u8; 20000], false).is_ok());
        count(fs.write(a.ino, 1 << 20, b"far", false).is_ok());
        count(fs.release(a.ino).is_ok());
        count(
            fs.rename(ROOT, b"hostile-new", ROOT, b"hostile-renamed", 0)
                .is_ok(),
        );
    }
    for (i, (dir, name, ino, size)) in files.into_iter().enumerate().take(64) {
        let set = |size| daxfs::SetAttr {
            size: Some(size),
            ..Default::default()
        };
        match i % 4 {
            0 => count(fs.setattr(ino, &r, &set(size / 3)).is_ok()),
            1 => count(fs.write(ino, size / 2, &[1u8; 5000], false).is_ok()),
            2 => count(fs.setxattr(ino, b"user.hostile", &[2u8; 300], 0).is_ok()),
            _ => count(fs.unlink(dir, &name).is_ok()),
        }
    }
    count(fs.unlink(ROOT, b"hostile-renamed").is_ok());
    ok
}

// ---------------------------------------------------------------------------------
// Journals: transactions committed through the journal's own API, then their fields
// (sequence, lengths, counts, record targets) and the header's set to boundary values
// and every checksum recomputed following docs/FORMAT.md ("Journal"), so replay's
// structural checks, not its CRCs, have to refuse them.

/// The journal region of [`hostile_journal`]'s media and the media size.
pub const J_START: u64 = 4096;
pub const J_LEN: u64 = 64 << 10;
pub const J_MEDIA: usize = 128 << 10;
const J_LOG: u64 = J_START + 4096;
const J_LOG_LEN: u64 = J_LEN - 4096;
const TXN_MAGIC: u32 = u32::from_le_bytes(*b"DXJT");

/// CRC-32C (Castagnoli), the transaction body checksum.
fn crc32c(buf: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in buf {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Recomputes the checksums of the transaction at log offset `pos` (records, header,
/// body, commit record), as far as its (possibly hostile) lengths let them be found.
pub fn seal_transaction(img: &mut [u8], pos: u64) {
    let base = (J_LOG + pos) as usize;
    let room = J_LOG_LEN.saturating_sub(pos);
    if room < 128 {
        return;
    }
    let total = u64_at(img, base + 24);
    let count = u32_at(img, base + 32);
    let sane = total >= 128 && total <= room && total.is_multiple_of(64);
    let c = if sane { (total - 64) as usize } else { 64 };
    let mut p = 64usize;
    for _ in 0..count {
        if p + 16 > c {
            break;
        }
        let len = u32_at(img, base + p + 8) as usize;
        if p + 16 + len > c {
            break;
        }
        let r = &mut img[base + p..base + p + 16 + len];
        let c = crc(&[&r[..12], &r[16..]].concat());
        set_u32(r, 12, c);
        p += 16 + len.div_ceil(8) * 8;
    }
    seal_hole(&mut img[base..base + 64], 4);
    if sane {
        let body = crc32c(&img[base..base + c]);
        let commit = &mut img[base + c..base + c + 64];
        set_u32(commit, 36, body);
        seal_hole(commit, 4);
    }
}

/// Log offsets of the transactions from the newest header's tail on.
fn transactions(img: &[u8]) -> (usize, Vec<u64>) {
    let copies = [J_START as usize, J_START as usize + 2048];
    let newest = *copies
        .iter()
        .max_by_key(|&&o| u64_at(img, o + 16))
        .unwrap_or(&copies[0]);
    let mut pos = u64_at(img, newest + 48);
    let mut out = Vec::new();
    while pos + 128 <= J_LOG_LEN && out.len() < 64 {
        let b = (J_LOG + pos) as usize;
        let total = u64_at(img, b + 24);
        if u32_at(img, b) != TXN_MAGIC || total < 128 || !total.is_multiple_of(64) {
            break;
        }
        out.push(pos);
        pos = pos.saturating_add(total);
    }
    (newest, out)
}

/// A hostile journal: 1–6 transactions of 1–4 records (targets anywhere from the home
/// area to past the end of the media), committed; sometimes their home writes undone
/// (a crash before they were applied); then 0–3 fields of the transactions or the
/// header set to boundary values, and the checksums recomputed.
pub fn hostile_journal(e: &mut impl Entropy) -> Vec<u8> {
    let m = Arc::new(MemMedia::new(J_MEDIA));
    let home = J_START + J_LEN..J_MEDIA as u64;
    if daxfs_journal::format(&*m, J_START, J_LEN).is_err() {
        return m.volatile_image();
    }
    let Ok((mut j, _)) = Journal::open(m.clone(), J_START, J_LEN) else {
        return m.volatile_image();
    };
    let clean_home = m.volatile_image();
    for _ in 0..1 + e.below(6) {
        let mut t = Transaction::new();
        for _ in 0..1 + e.below(4) {
            let len = 1 + e.below(600) as usize;
            let off = match e.below(8) {
                0 => J_MEDIA as u64 - e.below(len as u64 + 64),
                1 => e.below(J_START),
                _ => home.start + e.below(home.end - home.start - len as u64),
            };
            let fill = e.next_u64() as u8;
            t.write(off, &vec![fill; len]);
        }
        let _ = j.commit(&t);
    }
    drop(j);
    let mut img = m.volatile_image();
    if e.below(2) == 0 {
        let h = home.start as usize..home.end as usize;
        img[h.clone()].copy_from_slice(&clean_home[h]);
    }
    let (header, txns) = transactions(&img);
    for _ in 0..e.below(4) {
        if txns.is_empty() || e.below(5) == 0 {
            // The header: generation, tail, tail sequence.
            let at = header + [16, 48, 56][e.below(3) as usize];
            let v = match e.below(4) {
                0 => u64_at(&img, at).wrapping_add(1 + e.below(2)),
                1 => u64::MAX - e.below(2),
                2 => e.below(J_LOG_LEN + 128) & !63,
                _ => e.next_u64(),
            };
            set_u64(&mut img, at, v);
            seal_hole(&mut img[header..header + 64], 12);
            continue;
        }
        let pos = txns[e.below(txns.len() as u64) as usize];
        let b = (J_LOG + pos) as usize;
        let total = u64_at(&img, b + 24);
        let (at, width) = match e.below(7) {
            0 => (b + 16, 8),                                      // sequence
            1 => (b + 24, 8),                                      // total length
            2 => (b + 32, 4),                                      // record count
            3 => (b + 40, 8),                                      // payload bytes
            4 => (b + 64, 8),                                      // first record's target
            5 => (b + 72, 4),                                      // first record's length
            _ => (b + total.min(J_LOG_LEN) as usize - 64 + 24, 8), // commit's total
        };
        if at + width > img.len() {
            continue;
        }
        let v = match e.below(6) {
            0 => 0,
            1 => u64::MAX - e.below(2),
            2 => J_MEDIA as u64 - e.below(64),
            3 => J_START + e.below(J_LEN),
            4 => e.below(1 << 16),
            _ => e.next_u64(),
        };
        if width == 8 {
            set_u64(&mut img, at, v);
        } else {
            set_u32(&mut img, at, v as u32);
        }
        seal_transaction(&mut img, pos);
    }
    img
}
