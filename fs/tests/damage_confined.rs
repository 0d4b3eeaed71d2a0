//! Damage confined to one object costs at most that object (issue 10, item 2): a
//! populated image gets one random byte changed (or one block zeroed) in one inode
//! slot, one directory block, one extent block or one xattr block; after
//! `fsck::repair` (`fsck -y`) every image checks clean, mounts, and every file outside
//! the damaged object reads back with its original content and xattrs (files of a
//! damaged directory are found in /lost+found). In-process, no FUSE mount.
//! DAXFS_DAMAGE_ITERS sets the count (default 200), DAXFS_TEST_SEED the seed;
//! tests/daxfs/065 and 066 run the same through the binaries.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use daxfs_testkit as common;

use common::{mkfile, pattern, read_all, Rng};
use daxfs::{Cred, DaxFs, FileKind, FsOptions, ROOT};
use daxfs_format::*;
use daxfs_fsck as fsck;
use daxfs_fsck::{FsckReport, Severity};
use daxfs_pmem::Device;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const SIZE: u64 = 8 << 20;

/// What a file held before the damage.
struct FileRec {
    data: Vec<u8>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The populated image and where its metadata is.
struct Populated {
    bytes: Vec<u8>,
    sb: Superblock,
    files: BTreeMap<u64, FileRec>,
    /// Used inode numbers.
    used: Vec<u64>,
    /// (block, owning inode) of every directory block, extent block and xattr block.
    dir_blocks: Vec<(u64, u64)>,
    extent_blocks: Vec<(u64, u64)>,
    xattr_blocks: Vec<(u64, u64)>,
}

fn inode_at(bytes: &[u8], sb: &Superblock, ino: u64) -> Option<DiskInode> {
    let o = sb.inode_offset(ino) as usize;
    DiskInode::decode(&bytes[o..o + INODE_SIZE as usize])
        .ok()
        .flatten()
}

fn populate() -> Populated {
    let dev = Arc::new(Device::memory(&vec![0u8; SIZE as usize]).expect("memory device"));
    let sb = common::mkfs()
        .journal_bytes(256 << 10)
        .inodes(512)
        .format(&dev);
    let fs = DaxFs::mount_device(dev.clone(), FsOptions::default()).expect("mount");
    let r = Cred::root();
    let mut dirs = vec![ROOT];
    for i in 0..4u8 {
        let d = fs
            .mkdir(ROOT, &[b'd', b'0' + i], 0o755, &r)
            .expect("mkdir")
            .ino;
        dirs.push(d);
        let s = fs.mkdir(d, b"sub", 0o750, &r).expect("mkdir").ino;
        dirs.push(s);
    }
    // A directory of two blocks.
    let big = fs.mkdir(ROOT, b"big", 0o755, &r).expect("mkdir").ino;
    for i in 0..70u32 {
        mkfile(
            &fs,
            big,
            format!("entry-with-a-longer-name-{i:03}").as_bytes(),
            &pattern(100 + i as usize * 37, i as u8),
        );
    }
    for i in 0..40u32 {
        let d = dirs[i as usize % dirs.len()];
        let f = mkfile(
            &fs,
            d,
            format!("f{i}").as_bytes(),
            &pattern(i as usize * 1500, 100 + i as u8),
        );
        if i % 7 == 0 {
            fs.link(
                f,
                dirs[(i as usize + 3) % dirs.len()],
                format!("l{i}").as_bytes(),
            )
            .expect("link");
        }
        if i % 5 == 0 {
            fs.setxattr(f, b"user.a", format!("v{i}").as_bytes(), 0)
                .expect("setxattr");
            fs.setxattr(f, b"user.b", &pattern(300, i as u8), 0)
                .expect("setxattr");
        }
    }
    fs.symlink(dirs[1], b"sym", b"../f0", &r).expect("symlink");
    // A directory of 8 blocks apart from each other: 8 extents, 3 in an extent block.
    let wide = fs.mkdir(ROOT, b"wide", 0o755, &r).expect("mkdir").ino;
    for i in 0..96u32 {
        let name = format!("{i:03}{}", "n".repeat(240));
        mkfile(
            &fs,
            wide,
            name.as_bytes(),
            &pattern(50 + i as usize, i as u8),
        );
        if i % 12 == 11 {
            mkfile(
                &fs,
                ROOT,
                format!("spacer{i}").as_bytes(),
                &pattern(4096, 0),
            );
        }
    }
    // Fragmented files: one extent block, and one with a chain of two.
    for (name, extents) in [(&b"frag1"[..], 12u64), (b"frag2", 12), (b"frag3", 180)] {
        let f = mkfile(&fs, dirs[2], name, b"");
        for i in 0..extents {
            fs.write(f, i * 2 * BLOCK_SIZE, &pattern(4096, i as u8), false)
                .expect("write");
        }
    }
    fs.shutdown().expect("unmount");
    drop(fs);
    let mut bytes = vec![0u8; SIZE as usize];
    dev.read(0, &mut bytes);
    let mut img = Populated {
        bytes,
        sb: sb.clone(),
        files: BTreeMap::new(),
        used: Vec::new(),
        dir_blocks: Vec::new(),
        extent_blocks: Vec::new(),
        xattr_blocks: Vec::new(),
    };
    for ino in 1..sb.inode_count {
        let Some(d) = inode_at(&img.bytes, &sb, ino) else {
            continue;
        };
        img.used.push(ino);
        if d.xattr_block != 0 {
            img.xattr_blocks.push((d.xattr_block, ino));
        }
        let mut next = d.extent_block;
        let mut blk = vec![0u8; BLOCK_SIZE as usize];
        let mut all: Vec<Extent> = d.inline.iter().copied().filter(|e| e.len > 0).collect();
        while next != 0 {
            img.extent_blocks.push((next, ino));
            let o = (next * BLOCK_SIZE) as usize;
            blk.copy_from_slice(&img.bytes[o..o + BLOCK_SIZE as usize]);
            for j in 0..EXTENTS_PER_BLOCK {
                let so = EXTENT_BLOCK_HEADER + j * EXTENT_SIZE;
                if let Ok(Some(e)) = Extent::decode(&blk[so..so + EXTENT_SIZE]) {
                    all.push(e);
                }
            }
            next = decode_extent_block_header(&blk, ino).expect("extent block");
        }
        if d.mode & libc::S_IFMT == libc::S_IFDIR {
            for e in &all {
                for k in 0..e.len as u64 {
                    img.dir_blocks.push((e.pblk + k, ino));
                }
            }
        }
    }
    let dev = Arc::new(Device::memory(&img.bytes).expect("memory device"));
    let fs = DaxFs::mount_device(dev, FsOptions::default()).expect("mount");
    walk(&fs, ROOT, &mut |ino, kind| {
        if kind == FileKind::File {
            img.files.insert(ino, snapshot(&fs, ino));
        }
    });
    fs.shutdown().expect("unmount");
    assert!(check(&img.bytes).is_clean(), "the populated image is clean");
    assert!(img.extent_blocks.len() >= 4 && img.xattr_blocks.len() >= 5);
    assert!(img.dir_blocks.len() > 10);
    img
}

fn snapshot(fs: &DaxFs, ino: u64) -> FileRec {
    let names = fs.listxattr(ino).expect("listxattr");
    let mut xattrs = Vec::new();
    for n in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        xattrs.push((n.to_vec(), fs.getxattr(ino, n).expect("getxattr")));
    }
    xattrs.sort();
    FileRec {
        data: read_all(fs, ino),
        xattrs,
    }
}

/// Calls `f(ino, kind)` for every inode reachable from `dir`, each once.
fn walk(fs: &DaxFs, dir: u64, f: &mut dyn FnMut(u64, FileKind)) {
    let mut seen = BTreeSet::new();
    let mut stack = vec![dir];
    seen.insert(dir);
    while let Some(d) = stack.pop() {
        let mut kids = Vec::new();
        fs.readdir(d, 0, |e| {
            if e.name != b"." && e.name != b".." {
                kids.push((e.ino, e.kind));
            }
            true
        })
        .expect("readdir");
        for (ino, kind) in kids {
            if seen.insert(ino) {
                f(ino, kind);
                if kind == FileKind::Dir {
                    stack.push(ino);
                }
            }
        }
    }
}

fn check(bytes: &[u8]) -> FsckReport {
    let dev = Arc::new(Device::memory(bytes).expect("memory device"));
    fsck::check(&dev, false, &mut |_, _, _| {})
}

/// One damage: where, what, and the files it may cost (their data or xattrs).
struct Damage {
    what: String,
    /// The kind of object, for the counts.
    kind: &'static str,
    /// Byte range changed.
    at: u64,
    len: u64,
    /// Files whose data the damage may cost.
    lost: BTreeSet<u64>,
    /// Files whose xattrs the damage may cost.
    lost_xattrs: BTreeSet<u64>,
}

fn pick(img: &Populated, rng: &mut Rng) -> Damage {
    let sb = &img.sb;
    let one = |v: &[(u64, u64)], rng: &mut Rng| v[rng.below(v.len() as u64) as usize];
    let zero = rng.below(8) == 0;
    let mut d = Damage {
        what: String::new(),
        kind: "",
        at: 0,
        len: 1,
        lost: BTreeSet::new(),
        lost_xattrs: BTreeSet::new(),
    };
    let (base, len) = match rng.below(4) {
        0 => {
            if zero && rng.below(2) == 0 {
                // A whole inode table block: the 16 inodes in it.
                let per = BLOCK_SIZE / INODE_SIZE;
                let last = img.used.last().copied().unwrap_or(1);
                let tb = rng.below(last / per + 1);
                let first = tb * per;
                d.lost.extend(first..first + per);
                d.what = format!("inode table block {tb}");
                d.kind = "inode table block";
                ((sb.inode_table_start + tb) * BLOCK_SIZE, BLOCK_SIZE)
            } else {
                let ino = img.used[rng.below(img.used.len() as u64) as usize];
                d.lost.insert(ino);
                d.what = format!("inode {ino}");
                d.kind = "inode";
                (sb.inode_offset(ino), INODE_SIZE)
            }
        }
        1 => {
            let (b, ino) = one(&img.dir_blocks, rng);
            d.what = format!("directory block {b} of inode {ino}");
            d.kind = "directory block";
            (b * BLOCK_SIZE, BLOCK_SIZE)
        }
        2 => {
            let (b, ino) = one(&img.extent_blocks, rng);
            d.lost.insert(ino);
            d.what = format!("extent block {b} of inode {ino}");
            d.kind = "extent block";
            (b * BLOCK_SIZE, BLOCK_SIZE)
        }
        _ => {
            let (b, ino) = one(&img.xattr_blocks, rng);
            d.lost_xattrs.insert(ino);
            d.what = format!("xattr block {b} of inode {ino}");
            d.kind = "xattr block";
            (b * BLOCK_SIZE, BLOCK_SIZE)
        }
    };
    if zero {
        d.what = format!("zeroed {}", d.what);
        d.at = base;
        d.len = len;
    } else {
        d.at = base + rng.below(len);
        d.what = format!("byte {} of {}", d.at - base, d.what);
    }
    d
}

#[derive(Default)]
struct Tally {
    detected: u64,
    refused_before: u64,
    files_checked: u64,
    files_lost: u64,
    reconnected: u64,
}

/// Damages, repairs, mounts and checks one image; Err says what went wrong.
fn one_damage(img: &Populated, d: &Damage, rng: &mut Rng, t: &mut Tally) -> Result<(), String> {
    let mut b = img.bytes.clone();
    let r = d.at as usize..(d.at + d.len) as usize;
    if d.len == 1 {
        b[d.at as usize] ^= 1 + rng.below(255) as u8;
    } else {
        b[r].fill(0);
    }
    let dev = Arc::new(Device::memory(&b).map_err(|e| e.to_string())?);
    let before = fsck::check(&dev, false, &mut |_, _, _| {});
    t.detected += u64::from(!before.is_clean());
    if DaxFs::mount_device(dev.clone(), FsOptions::default())
        .map(|fs| fs.shutdown())
        .is_err()
    {
        t.refused_before += 1;
    }
    let rep = fsck::repair(&dev, false, &mut |_, _, _| {});
    if rep.count(Severity::Error) > 0 {
        return Err(format!(
            "fsck -y left errors: {:?}",
            rep.findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .collect::<Vec<_>>()
        ));
    }
    let after = fsck::check(&dev, false, &mut |_, _, _| {});
    if !after.is_clean() {
        return Err(format!(
            "not clean after fsck -y: {:?} (repaired {:?})",
            after.findings, rep.repaired
        ));
    }
    let fs = DaxFs::mount_device(dev.clone(), FsOptions::default())
        .map_err(|e| format!("mount after fsck -y: {e}"))?;
    let mut found = BTreeMap::new();
    walk(&fs, ROOT, &mut |ino, kind| {
        if kind == FileKind::File {
            found.insert(ino, snapshot(&fs, ino));
        }
    });
    let lf = fs.lookup(ROOT, b"lost+found").ok().map(|a| a.ino);
    if let Some(lf) = lf {
        walk(&fs, lf, &mut |ino, kind| {
            if kind == FileKind::File {
                t.reconnected += 1;
                let _ = ino;
            }
        });
    }
    fs.shutdown().map_err(|e| format!("unmount: {e:?}"))?;
    for (ino, want) in &img.files {
        if d.lost.contains(ino) {
            t.files_lost += u64::from(!found.contains_key(ino));
            continue;
        }
        let Some(got) = found.get(ino) else {
            return Err(format!("file {ino} is gone (repaired {:?})", rep.repaired));
        };
        if got.data != want.data {
            return Err(format!("file {ino}: content changed"));
        }
        if !d.lost_xattrs.contains(ino) && got.xattrs != want.xattrs {
            return Err(format!("file {ino}: xattrs changed"));
        }
        t.files_checked += 1;
    }
    Ok(())
}

#[test]
fn damage_to_one_inode_or_metadata_block_costs_at_most_that_object() {
    let img = populate();
    let iters: u64 = std::env::var("DAXFS_DAMAGE_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut rng = Rng::new(common::seed(0x5851_f42d_4c95_7f2d | 1));
    let mut t = Tally::default();
    let mut failed = Vec::new();
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let start = std::time::Instant::now();
    for it in 0..iters {
        let d = pick(&img, &mut rng);
        let how = if d.len == 1 { "byte" } else { "zeroed" };
        *kinds.entry(format!("{how} {}", d.kind)).or_default() += 1;
        if let Err(e) = one_damage(&img, &d, &mut rng, &mut t) {
            failed.push(format!("iteration {it} ({}): {e}", d.what));
        }
    }
    println!(
        "damage confined: {iters} damages in {:.1}s: fsck flagged {}, mount refused {} before the repair; after fsck -y {} failed, {} files checked intact, {} lost with their damaged object, {} files reached through /lost+found",
        start.elapsed().as_secs_f64(),
        t.detected,
        t.refused_before,
        failed.len(),
        t.files_checked,
        t.files_lost,
        t.reconnected
    );
    println!("damage confined: by kind: {kinds:?}");
    assert!(
        failed.is_empty(),
        "{} failures:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

// ---------------------------------------------------------------------------
// One damage of each kind, and exactly what the repair makes of it.

/// A small image: /dir/{a, sub/c}, /a-link (a second name of a), /b (xattrs), /frag
/// (12 one-block extents: 5 inline, 7 in an extent block).
struct Small {
    dev: Arc<Device>,
    sb: Superblock,
    dir: u64,
    a: u64,
    sub: u64,
    c: u64,
    b: u64,
    frag: u64,
}

impl Small {
    fn new() -> Small {
        Small::with_inodes(64)
    }

    fn with_inodes(inodes: u64) -> Small {
        let dev = Arc::new(Device::memory(&vec![0u8; SIZE as usize]).expect("memory device"));
        let sb = common::mkfs()
            .journal_bytes(64 << 10)
            .inodes(inodes)
            .format(&dev);
        let fs = DaxFs::mount_device(dev.clone(), FsOptions::default()).expect("mount");
        let r = Cred::root();
        let dir = fs.mkdir(ROOT, b"dir", 0o755, &r).expect("mkdir").ino;
        let a = mkfile(&fs, dir, b"a", &pattern(9000, 1));
        fs.link(a, ROOT, b"a-link").expect("link");
        let sub = fs.mkdir(dir, b"sub", 0o755, &r).expect("mkdir").ino;
        let c = mkfile(&fs, sub, b"c", &pattern(5000, 2));
        let b = mkfile(&fs, ROOT, b"b", &pattern(3000, 3));
        fs.setxattr(b, b"user.k", b"v", 0).expect("setxattr");
        let frag = mkfile(&fs, ROOT, b"frag", b"");
        for i in 0..12u64 {
            fs.write(
                frag,
                i * 2 * BLOCK_SIZE,
                &pattern(4096, 10 + i as u8),
                false,
            )
            .expect("write");
        }
        fs.shutdown().expect("unmount");
        drop(fs);
        let s = Small {
            dev,
            sb,
            dir,
            a,
            sub,
            c,
            b,
            frag,
        };
        assert!(s.check().is_clean());
        s
    }

    fn check(&self) -> FsckReport {
        fsck::check(&self.dev, false, &mut |_, _, _| {})
    }

    fn inode(&self, ino: u64) -> DiskInode {
        let mut b = [0u8; INODE_SIZE as usize];
        self.dev.read(self.sb.inode_offset(ino), &mut b);
        DiskInode::decode(&b)
            .expect("valid inode")
            .expect("used inode")
    }

    fn xor(&self, off: u64, x: u8) {
        let mut b = [0u8; 1];
        self.dev.read(off, &mut b);
        self.dev.write(off, &[b[0] ^ x]);
    }

    fn zero_block(&self, pblk: u64) {
        self.dev
            .write(pblk * BLOCK_SIZE, &vec![0u8; BLOCK_SIZE as usize]);
    }

    fn dir_block(&self, dir: u64) -> u64 {
        self.inode(dir).inline[0].pblk
    }

    /// Device offset of the entry `name` in directory `dir`'s first block.
    fn entry_offset(&self, dir: u64, name: &[u8]) -> u64 {
        let pblk = self.dir_block(dir);
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        self.dev.read(pblk * BLOCK_SIZE, &mut buf);
        let mut s = 1;
        while s < DIR_SLOTS_PER_BLOCK {
            match decode_dirent(&buf, s).expect("valid entry") {
                Some(de) if de.name == name => return pblk * BLOCK_SIZE + (s * DIR_SLOT) as u64,
                Some(de) => s += de.nslots,
                None => s += 1,
            }
        }
        panic!("no entry {:?}", String::from_utf8_lossy(name));
    }

    /// `fsck -y`: no error left, something repaired, clean afterwards. Returns what
    /// was repaired.
    fn repair(&self) -> Vec<String> {
        let r = fsck::repair(&self.dev, false, &mut |_, _, _| {});
        assert_eq!(r.count(Severity::Error), 0, "{:?}", r.findings);
        assert!(!r.repaired.is_empty(), "{:?}", r.findings);
        let after = self.check();
        assert!(after.is_clean(), "after the repair: {:?}", after.findings);
        r.repaired
    }

    fn with_fs<T>(&self, f: impl FnOnce(&DaxFs) -> T) -> T {
        let fs = DaxFs::mount_device(self.dev.clone(), FsOptions::default()).expect("mount");
        let out = f(&fs);
        fs.shutdown().expect("unmount");
        out
    }
}

fn lookup(fs: &DaxFs, dir: u64, name: &str) -> Option<u64> {
    fs.lookup(dir, name.as_bytes()).ok().map(|a| a.ino)
}

fn has(done: &[String], what: &str) -> bool {
    done.iter().any(|d| d == what)
}

#[test]
fn a_damaged_file_inode_is_cleared_with_its_entries_and_its_blocks_freed() {
    let s = Small::new();
    let used = s.check().stats.blocks_used;
    let blocks = s.inode(s.a).blocks;
    s.xor(s.sb.inode_offset(s.a) + 30, 0x40);
    let done = s.repair();
    assert!(has(&done, &format!("cleared inode {}", s.a)), "{done:?}");
    assert_eq!(
        s.check().stats.blocks_used,
        used - blocks,
        "its blocks are free"
    );
    s.with_fs(|fs| {
        assert_eq!(lookup(fs, s.dir, "a"), None);
        assert_eq!(lookup(fs, ROOT, "a-link"), None);
        assert_eq!(read_all(fs, s.c), pattern(5000, 2));
        assert_eq!(read_all(fs, s.b), pattern(3000, 3));
        assert_eq!(lookup(fs, ROOT, "lost+found"), None, "nothing to reconnect");
    });
}

#[test]
fn a_damaged_directory_inode_sends_its_children_to_lost_found() {
    let s = Small::new();
    s.xor(s.sb.inode_offset(s.dir) + 100, 0x01);
    s.repair();
    s.with_fs(|fs| {
        assert_eq!(lookup(fs, ROOT, "dir"), None);
        let lf = lookup(fs, ROOT, "lost+found").expect("lost+found");
        let sub = lookup(fs, lf, &format!("#{}", s.sub)).expect("sub reconnected");
        assert_eq!(sub, s.sub);
        assert_eq!(fs.lookup(sub, b"..").expect("..").ino, lf);
        assert_eq!(lookup(fs, sub, "c"), Some(s.c), "sub keeps its own entries");
        assert_eq!(read_all(fs, s.c), pattern(5000, 2));
        // a is still named by /a-link: it stays there, with one link.
        assert_eq!(lookup(fs, ROOT, "a-link"), Some(s.a));
        assert_eq!(fs.getattr(s.a).expect("getattr").nlink, 1);
        assert_eq!(read_all(fs, s.a), pattern(9000, 1));
    });
}

#[test]
fn a_lost_root_inode_is_remade_and_what_it_held_is_reconnected() {
    let s = Small::new();
    s.xor(s.sb.inode_offset(ROOT) + 24, 0x08);
    let done = s.repair();
    assert!(has(&done, "made a new, empty root directory"), "{done:?}");
    s.with_fs(|fs| {
        let lf = lookup(fs, ROOT, "lost+found").expect("lost+found");
        let names: BTreeSet<String> = common::list(fs, ROOT)
            .into_iter()
            .map(|(n, _)| String::from_utf8_lossy(&n).into_owned())
            .collect();
        assert_eq!(names, BTreeSet::from(["lost+found".to_string()]));
        for ino in [s.dir, s.b, s.frag] {
            assert_eq!(lookup(fs, lf, &format!("#{ino}")), Some(ino));
        }
        assert_eq!(lookup(fs, s.dir, "a"), Some(s.a));
        assert_eq!(fs.getattr(s.a).expect("getattr").nlink, 1);
        assert_eq!(read_all(fs, s.c), pattern(5000, 2));
        assert_eq!(fs.getxattr(s.b, b"user.k").expect("xattr"), b"v");
    });
}

#[test]
fn a_damaged_directory_entry_is_cleared_and_its_inode_reconnected() {
    let s = Small::new();
    // The name's first byte: the entry's checksum no longer matches.
    s.xor(s.entry_offset(ROOT, b"b") + 16, 0x20);
    s.repair();
    s.with_fs(|fs| {
        assert_eq!(lookup(fs, ROOT, "b"), None);
        let lf = lookup(fs, ROOT, "lost+found").expect("lost+found");
        assert_eq!(lookup(fs, lf, &format!("#{}", s.b)), Some(s.b));
        assert_eq!(read_all(fs, s.b), pattern(3000, 3));
        assert_eq!(
            lookup(fs, ROOT, "frag"),
            Some(s.frag),
            "its neighbours keep their names"
        );
        assert_eq!(lookup(fs, ROOT, "dir"), Some(s.dir));
    });
}

#[test]
fn a_damaged_directory_block_header_is_rewritten_and_its_entries_kept() {
    for off in [0u64, 4, 8, 16] {
        let s = Small::new();
        let pblk = s.dir_block(ROOT);
        s.xor(pblk * BLOCK_SIZE + off, 0x10);
        let done = s.repair();
        assert!(
            has(
                &done,
                &format!("rewrote the block 0 of directory {ROOT} (block {pblk})")
            ),
            "header byte {off}: {done:?}"
        );
        s.with_fs(|fs| {
            for (name, ino) in [
                ("dir", s.dir),
                ("a-link", s.a),
                ("b", s.b),
                ("frag", s.frag),
            ] {
                assert_eq!(
                    lookup(fs, ROOT, name),
                    Some(ino),
                    "header byte {off}: {name}"
                );
            }
            assert_eq!(lookup(fs, ROOT, "lost+found"), None);
        });
    }
}

#[test]
fn a_zeroed_directory_block_costs_only_the_names_in_it() {
    let s = Small::new();
    s.zero_block(s.dir_block(s.dir));
    s.repair();
    s.with_fs(|fs| {
        assert_eq!(lookup(fs, ROOT, "dir"), Some(s.dir));
        assert_eq!(common::list(fs, s.dir), vec![]);
        let lf = lookup(fs, ROOT, "lost+found").expect("lost+found");
        assert_eq!(lookup(fs, lf, &format!("#{}", s.sub)), Some(s.sub));
        assert_eq!(read_all(fs, s.c), pattern(5000, 2));
        assert_eq!(
            lookup(fs, ROOT, "a-link"),
            Some(s.a),
            "a keeps its other name"
        );
        assert_eq!(read_all(fs, s.a), pattern(9000, 1));
    });
}

#[test]
fn a_damaged_extent_slot_becomes_a_hole_and_the_rest_of_the_file_stays() {
    let s = Small::new();
    let eb = s.inode(s.frag).extent_block;
    let mut slot = [0u8; EXTENT_SIZE];
    let at = eb * BLOCK_SIZE + EXTENT_BLOCK_HEADER as u64;
    s.dev.read(at, &mut slot);
    let lost = Extent::decode(&slot).expect("slot").expect("used slot");
    s.xor(at + 8, 0x02);
    s.repair();
    s.with_fs(|fs| {
        let data = read_all(fs, s.frag);
        assert_eq!(data.len() as u64, 23 * BLOCK_SIZE, "the size is kept");
        for i in 0..12u64 {
            let blk = &data[(i * 2 * BLOCK_SIZE) as usize..((i * 2 + 1) * BLOCK_SIZE) as usize];
            if i * 2 == lost.lblk {
                assert!(
                    blk.iter().all(|&x| x == 0),
                    "the damaged extent reads as a hole"
                );
            } else {
                assert_eq!(blk, &pattern(4096, 10 + i as u8)[..], "block {}", i * 2);
            }
        }
    });
}

#[test]
fn a_damaged_extent_block_header_is_rewritten_and_every_extent_kept() {
    for off in [0u64, 4, 8, 16] {
        let s = Small::new();
        let eb = s.inode(s.frag).extent_block;
        s.xor(eb * BLOCK_SIZE + off, 0x04);
        let done = s.repair();
        assert!(
            has(
                &done,
                &format!("rewrote the extent block of inode {} (block {eb})", s.frag)
            ),
            "header byte {off}: {done:?}"
        );
        s.with_fs(|fs| {
            let data = read_all(fs, s.frag);
            for i in 0..12u64 {
                let o = (i * 2 * BLOCK_SIZE) as usize;
                assert_eq!(&data[o..o + 4096], &pattern(4096, 10 + i as u8)[..]);
            }
        });
    }
}

#[test]
fn a_damaged_xattr_block_costs_the_xattrs_and_not_the_data() {
    let s = Small::new();
    s.xor(s.inode(s.b).xattr_block * BLOCK_SIZE + 30, 0x80);
    let done = s.repair();
    assert!(
        has(
            &done,
            &format!(
                "inode {}: dropped its damaged extended attribute block",
                s.b
            )
        ),
        "{done:?}"
    );
    s.with_fs(|fs| {
        assert_eq!(fs.listxattr(s.b).expect("listxattr"), b"");
        assert_eq!(read_all(fs, s.b), pattern(3000, 3));
        assert_eq!(lookup(fs, ROOT, "b"), Some(s.b));
    });
}

#[test]
fn a_stray_byte_in_a_free_inode_slot_is_zeroed() {
    let s = Small::new();
    s.xor(s.sb.inode_offset(60) + 77, 0x01);
    let done = s.repair();
    assert_eq!(done, ["cleared inode 60".to_string()]);
}

#[test]
fn a_stray_byte_in_the_reserved_inode_slot_is_zeroed() {
    let s = Small::new();
    s.xor(s.sb.inode_offset(0) + 9, 0x01);
    let done = s.repair();
    assert_eq!(done, ["zeroed the reserved inode slot 0".to_string()]);
}

#[test]
fn preen_leaves_a_damaged_inode_to_y() {
    let s = Small::new();
    s.xor(s.sb.inode_offset(s.a) + 30, 0x40);
    let mut before = vec![0u8; SIZE as usize];
    s.dev.read(0, &mut before);
    let r = fsck::repair(&s.dev, true, &mut |_, _, _| {});
    assert!(
        r.needs_manual_repair() && r.repaired.is_empty(),
        "{:?}",
        r.repaired
    );
    let mut after = vec![0u8; SIZE as usize];
    s.dev.read(0, &mut after);
    assert!(after == before, "preen wrote to the image");
}

/// The design choice (docs/DESIGN.md, "Damaged metadata"): a mount, read-only or not,
/// refuses an image with a damaged inode and names it; fsck -y is the way in.
#[test]
fn a_mount_refuses_a_damaged_inode_and_names_it() {
    let s = Small::new();
    s.xor(s.sb.inode_offset(s.a) + 30, 0x40);
    for read_only in [false, true] {
        let opts = FsOptions {
            read_only,
            ..FsOptions::default()
        };
        let e = DaxFs::mount_device(s.dev.clone(), opts)
            .err()
            .expect("the mount refuses")
            .to_string();
        assert!(
            e.contains(&format!("inode {}: inode: checksum mismatch", s.a))
                && e.contains("fsck.daxfs"),
            "{e}"
        );
    }
}

/// The non-note findings of a report, for comparing states.
fn problems(r: &FsckReport) -> Vec<String> {
    r.findings
        .iter()
        .filter(|f| f.severity != Severity::Note)
        .map(|f| f.what.clone())
        .collect()
}

/// A power cut at any fence of a repair that clears a directory inode (its children to
/// a new lost+found), rewrites a damaged directory block header and drops a damaged
/// xattr block — with any of the lines not yet durable reaching the media or not (all,
/// none, single ones) — leaves the damaged image (the same findings) or the repaired one,
/// and a second repair of any of these states ends clean with the other files intact.
#[test]
fn a_power_cut_during_a_repair_of_damaged_objects_leaves_the_damaged_or_the_repaired_image() {
    let s = Small::new();
    s.xor(s.sb.inode_offset(s.dir) + 100, 0x01);
    s.xor(s.dir_block(ROOT) * BLOCK_SIZE + 4, 0x10);
    s.xor(s.inode(s.b).xattr_block * BLOCK_SIZE + 30, 0x80);
    let mut damaged = vec![0u8; SIZE as usize];
    s.dev.read(0, &mut damaged);
    let want = problems(&s.check());
    assert!(want.len() >= 3, "{want:?}");

    let (dev, rec) = Device::recording(SIZE).expect("recording device");
    dev.write(0, &damaged);
    dev.persist(0, SIZE);
    let dev = Arc::new(dev);
    rec.set_recording(true);
    let r = fsck::repair(&dev, false, &mut |_, _, _| {});
    rec.set_recording(false);
    assert!(!r.repaired.is_empty(), "{:?}", r.findings);
    let points = rec.take_points();
    assert!(points.len() >= 4, "{} fences", points.len());

    let mut durable = damaged;
    let (mut old, mut new) = (0, 0);
    for p in &points {
        let n = p.unpersisted.len();
        let mut choices: Vec<Vec<usize>> = vec![vec![], (0..n).collect()];
        // Single lines, at most 24 per fence, spread over all of them (keeps it fast).
        choices.extend((0..n).step_by(n.div_ceil(24).max(1)).map(|i| vec![i]));
        for chosen in choices {
            let mut state = durable.clone();
            p.add_lines(&mut state, &chosen);
            let t = Small {
                dev: Arc::new(Device::memory(&state).expect("memory device")),
                sb: s.sb.clone(),
                ..s
            };
            let rep = t.check();
            if rep.is_clean() {
                new += 1;
            } else {
                assert_eq!(problems(&rep), want, "fence {}: a state between", p.index);
                old += 1;
                t.repair();
            }
            t.with_fs(|fs| {
                assert_eq!(read_all(fs, s.c), pattern(5000, 2), "fence {}", p.index);
                assert_eq!(read_all(fs, s.b), pattern(3000, 3), "fence {}", p.index);
                assert_eq!(lookup(fs, ROOT, "frag"), Some(s.frag), "fence {}", p.index);
            });
        }
        p.advance(&mut durable);
    }
    println!(
        "power cut during a repair of damaged objects: {} fences, {old} damaged states, {new} repaired ones",
        points.len()
    );
    assert!(
        old > 0 && new > 0,
        "{old} damaged states, {new} repaired ones"
    );
}

/// A directory of 8 blocks in 8 extents (3 of them in an extent block): a damaged slot
/// of that extent block loses one block of names; the block is given back empty, the
/// names in it are reconnected to lost+found and every other entry stays.
#[test]
fn a_directory_block_lost_with_its_extent_is_given_back_empty() {
    let s = Small::with_inodes(256);
    let (dir, names) = {
        let fs = DaxFs::mount_device(s.dev.clone(), FsOptions::default()).expect("mount");
        let dir = fs
            .mkdir(ROOT, b"wide", 0o755, &Cred::root())
            .expect("mkdir")
            .ino;
        let mut names = Vec::new();
        for i in 0..96u32 {
            // 5 slots each: 12 entries a block; a data block between two directory
            // blocks keeps them apart.
            let name = format!("{i:03}{}", "n".repeat(240));
            let f = mkfile(&fs, dir, name.as_bytes(), &pattern(100, i as u8));
            if i % 12 == 11 {
                mkfile(
                    &fs,
                    ROOT,
                    format!("spacer{i}").as_bytes(),
                    &pattern(4096, 0),
                );
            }
            names.push((name, f, i as u8));
        }
        fs.shutdown().expect("unmount");
        (dir, names)
    };
    let d = s.inode(dir);
    assert!(
        d.extent_block != 0 && d.extent_count >= 6,
        "{} extents",
        d.extent_count
    );
    let at = d.extent_block * BLOCK_SIZE + EXTENT_BLOCK_HEADER as u64;
    let mut slot = [0u8; EXTENT_SIZE];
    s.dev.read(at, &mut slot);
    let lost = Extent::decode(&slot).expect("slot").expect("used slot");
    s.xor(at + 2, 0x01);
    let done = s.repair();
    assert!(
        has(
            &done,
            &format!(
                "directory {dir}: gave block {} a new, empty block",
                lost.lblk
            )
        ),
        "{done:?}"
    );
    s.with_fs(|fs| {
        let lf = lookup(fs, ROOT, "lost+found").expect("lost+found");
        let (mut kept, mut moved) = (0, 0);
        for (name, ino, seed) in &names {
            match lookup(fs, dir, name) {
                Some(i) => {
                    assert_eq!(i, *ino);
                    kept += 1;
                }
                None => {
                    assert_eq!(lookup(fs, lf, &format!("#{ino}")), Some(*ino), "{name}");
                    moved += 1;
                }
            }
            assert_eq!(read_all(fs, *ino), pattern(100, *seed));
        }
        assert_eq!(
            (kept, moved),
            (96 - 12 * lost.len as usize, 12 * lost.len as usize)
        );
        // The directory takes new entries again, in every block.
        mkfile(fs, dir, b"new", b"x");
    });
}
