//! Damage confined to one object costs at most that object (issue 10, item 2): a
//! populated image gets one random byte changed (or one block zeroed) in one inode
//! slot, one directory block, one extent block or one xattr block; after
//! `fsck::repair` (`fsck -y`) every image checks clean, mounts, and every file outside
//! the damaged object reads back with its original content and xattrs (files of a
//! damaged directory are found in /lost+found). In-process, no FUSE mount.
//! DAXFS_DAMAGE_ITERS sets the count (default 200); tests/daxfs/065 runs the binaries.
mod common;

use common::{mkfile, pattern, read_all};
use daxfs::device::Device;
use daxfs::format::*;
use daxfs::fsck::{self, FsckReport, Severity};
use daxfs::{Cred, DaxFs, FileKind, FsOptions, ROOT};
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
    let p = MkfsParams {
        label: "damage".into(),
        journal_bytes: 256 << 10,
        inodes: 256,
        uuid: [9; 16],
        now_ns: 0,
    };
    let sb = daxfs::mkfs::format_device(&dev, &p, true, &mut |_, _, _| {}).expect("mkfs");
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

/// Deterministic xorshift, so a failing iteration can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One damage: where, what, and the files it may cost (their data or xattrs).
struct Damage {
    what: String,
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
                ((sb.inode_table_start + tb) * BLOCK_SIZE, BLOCK_SIZE)
            } else {
                let ino = img.used[rng.below(img.used.len() as u64) as usize];
                d.lost.insert(ino);
                d.what = format!("inode {ino}");
                (sb.inode_offset(ino), INODE_SIZE)
            }
        }
        1 => {
            let (b, ino) = one(&img.dir_blocks, rng);
            d.what = format!("directory block {b} of inode {ino}");
            (b * BLOCK_SIZE, BLOCK_SIZE)
        }
        2 => {
            let (b, ino) = one(&img.extent_blocks, rng);
            d.lost.insert(ino);
            d.what = format!("extent block {b} of inode {ino}");
            (b * BLOCK_SIZE, BLOCK_SIZE)
        }
        _ => {
            let (b, ino) = one(&img.xattr_blocks, rng);
            d.lost_xattrs.insert(ino);
            d.what = format!("xattr block {b} of inode {ino}");
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
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    let mut t = Tally::default();
    let mut failed = Vec::new();
    let start = std::time::Instant::now();
    for it in 0..iters {
        let d = pick(&img, &mut rng);
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
    assert!(
        failed.is_empty(),
        "{} failures:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
