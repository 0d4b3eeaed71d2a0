//! Failed write-back on a recording device (`Recorder::fail_after`): a store or a flush
//! that does not reach the media, reported as EIO through `Device::take_error`, which
//! the journal checks after each fence.
//!
//! * A failed journal flush fails every member of the group commit it hits (EIO), and
//!   the filesystem then refuses every change until it is remounted.
//! * A fault at each store or flush of a short workload in turn: the operation that hits
//!   it (or the next one that commits) fails with EIO and every later one fails; after a
//!   power cut right then (the durable image) and after a plain restart (the volatile
//!   image), fsck is clean, the image mounts, every acknowledged operation is there and
//!   the failed one is there whole or not at all.
//!
//! (Torn cache lines themselves are in the power-cut runs, fs/tests/powercut.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use daxfs_testkit as common;

use common::{pattern, root};
use daxfs::{DaxFs, Errno, FileKind, FsOptions, SetAttr, ROOT};
use daxfs_fsck as fsck;
use daxfs_pmem::{Device, Fault};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEV_SIZE: u64 = 4 << 20;

fn recording_fs() -> (Arc<Device>, DaxFs) {
    let (dev, _) = Device::recording(DEV_SIZE).expect("recording device");
    let dev = Arc::new(dev);
    common::mkfs()
        .journal_bytes(64 << 10)
        .inodes(64)
        .format(&dev);
    let fs = DaxFs::mount_device(dev.clone(), FsOptions::default()).expect("mount");
    (dev, fs)
}

/// The two images a failure can leave: what a power cut right now keeps, and what a
/// restart without one sees (the volatile contents).
fn images(dev: &Device) -> [(&'static str, Vec<u8>); 2] {
    let durable = dev.recorder().expect("recording").durable_image();
    let mut volatile = vec![0u8; dev.size() as usize];
    dev.read(0, &mut volatile);
    [("power cut", durable), ("restart", volatile)]
}

/// The tree of a mounted image: path -> None for a directory, the bytes for a file.
type Tree = BTreeMap<String, Option<Vec<u8>>>;

fn tree(fs: &DaxFs) -> Tree {
    let mut out = Tree::new();
    let mut todo = vec![(String::new(), ROOT)];
    while let Some((dir, ino)) = todo.pop() {
        let mut entries = Vec::new();
        fs.readdir(ino, 0, |e| {
            if e.name != b"." && e.name != b".." {
                entries.push(e);
            }
            true
        })
        .expect("readdir");
        for e in entries {
            let name = String::from_utf8(e.name).expect("UTF-8 name");
            let path = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let a = fs.getattr(e.ino).expect("getattr");
            if a.kind == FileKind::Dir {
                todo.push((path.clone(), e.ino));
                out.insert(path, None);
            } else {
                let mut buf = vec![0u8; a.size as usize];
                let n = fs.read(e.ino, 0, &mut buf).expect("read");
                assert_eq!(n, buf.len(), "{path}: short read");
                out.insert(path, Some(buf));
            }
        }
    }
    out
}

/// fsck clean, mounts, `accept` approves the tree, clean unmount, fsck clean again.
fn check_image(what: &str, img: &[u8], accept: &dyn Fn(&Tree) -> Result<(), String>) {
    let dev = Arc::new(Device::memory(img).expect("memory device"));
    let rep = fsck::check(&dev, false, &mut |_, _, _| {});
    assert!(rep.is_clean(), "{what}: fsck: {:?}", rep.findings);
    let fs = DaxFs::mount_device(dev.clone(), FsOptions::default())
        .unwrap_or_else(|e| panic!("{what}: mount: {e}"));
    let t = tree(&fs);
    if let Err(e) = accept(&t) {
        panic!("{what}: {e}; tree: {:?}", t.keys().collect::<Vec<_>>());
    }
    fs.shutdown()
        .unwrap_or_else(|e| panic!("{what}: unmount: {e:?}"));
    drop(fs);
    let rep = fsck::check(&dev, false, &mut |_, _, _| {});
    assert!(
        rep.is_clean(),
        "{what}: fsck after unmount: {:?}",
        rep.findings
    );
}

#[test]
fn a_failed_journal_flush_fails_every_member_of_the_group_commit() {
    let (dev, fs) = recording_fs();
    let rec = dev.recorder().expect("recording").clone();
    let keep = pattern(9000, 1);
    let k = common::mkfile(&fs, ROOT, b"keep", &keep);
    fs.mkdir(ROOT, b"dir", 0o755, &root()).expect("mkdir");
    common::mkfile(&fs, ROOT, b"gone", b"to be unlinked");
    let commits = fs.stats().commits;

    // The next flush fails: the batch's journal commit's, or one a member does before
    // it; either way the commit sees the error.
    rec.fail_after(Fault::Flush, 0);
    fs.hold_next_commit(3, Duration::from_secs(20));
    let results = std::thread::scope(|s| {
        let a = s.spawn(|| {
            fs.mknod(ROOT, b"a", libc::S_IFREG | 0o644, 0, &root())
                .map(|_| ())
        });
        let b = s.spawn(|| fs.mkdir(ROOT, b"b", 0o755, &root()).map(|_| ()));
        let c = s.spawn(|| fs.unlink(ROOT, b"gone"));
        [a, b, c].map(|h| h.join().expect("no panic"))
    });
    assert_eq!(rec.fault_count(), 1, "the fault was hit");
    assert_eq!(results, [Err(Errno::EIO); 3], "every member fails");
    assert_eq!(fs.stats().commits, commits, "nothing was committed");
    assert_eq!(
        fs.mkdir(ROOT, b"later", 0o755, &root()).map(|_| ()),
        Err(Errno::EIO),
        "the filesystem refuses changes until remounted"
    );
    assert!(fs.shutdown().is_err(), "unmount reports the failure");
    assert_eq!(common::read_all(&fs, k), keep, "reads still work");
    drop(fs);

    for (what, img) in images(&dev) {
        check_image(what, &img, &|t| {
            if t.get("keep") != Some(&Some(keep.clone())) || t.get("dir") != Some(&None) {
                return Err("an acknowledged operation is lost".into());
            }
            let group = [
                t.contains_key("a"),
                t.contains_key("b"),
                !t.contains_key("gone"),
            ];
            if group != [false; 3] && group != [true; 3] {
                return Err(format!("the group commit is split: {group:?}"));
            }
            if t.contains_key("later") {
                return Err("a refused operation is there".into());
            }
            Ok(())
        });
    }
}

// ---------------------------------------------------------------------------
// A fault at every store or flush of a short workload.

#[derive(Clone, Debug)]
enum Op {
    Create(&'static str),
    Write(&'static str, u64, usize, u8),
    Mkdir(&'static str),
    Rename(&'static str, &'static str),
    Link(&'static str, &'static str),
    Unlink(&'static str),
    Truncate(&'static str, u64),
    Rmdir(&'static str),
}

const OPS: &[Op] = &[
    Op::Create("a"),
    Op::Write("a", 0, 6000, 2),
    Op::Mkdir("d"),
    Op::Rename("a", "d/a"),
    Op::Create("b"),
    Op::Write("b", 0, 300, 3),
    Op::Link("d/a", "c"),
    Op::Unlink("b"),
    Op::Truncate("c", 100),
    Op::Mkdir("e"),
    Op::Rmdir("e"),
    Op::Write("c", 4096, 20_000, 4),
    Op::Create("f"),
    Op::Rename("f", "d/f"),
];

/// Files by object (hard links share one), so a change through one name shows in all.
#[derive(Clone, Debug, Default)]
struct Model {
    paths: BTreeMap<String, Option<usize>>,
    objs: BTreeMap<usize, Vec<u8>>,
    next: usize,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Create(p) => {
                self.paths.insert(p.to_string(), Some(self.next));
                self.objs.insert(self.next, Vec::new());
                self.next += 1;
            }
            Op::Write(p, off, len, seed) => {
                let id = self.paths[*p].expect("a file");
                let data = self.objs.get_mut(&id).expect("obj");
                let end = *off as usize + len;
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[*off as usize..end].copy_from_slice(&pattern(*len, *seed));
            }
            Op::Mkdir(p) => {
                self.paths.insert(p.to_string(), None);
            }
            Op::Rename(from, to) => {
                let n = self.paths.remove(*from).expect("exists");
                self.paths.insert(to.to_string(), n);
            }
            Op::Link(from, to) => {
                let n = self.paths[*from];
                self.paths.insert(to.to_string(), n);
            }
            Op::Unlink(p) | Op::Rmdir(p) => {
                self.paths.remove(*p);
            }
            Op::Truncate(p, size) => {
                let id = self.paths[*p].expect("a file");
                self.objs
                    .get_mut(&id)
                    .expect("obj")
                    .resize(*size as usize, 0);
            }
        }
    }

    fn tree(&self) -> Tree {
        self.paths
            .iter()
            .map(|(p, n)| (p.clone(), n.map(|id| self.objs[&id].clone())))
            .collect()
    }
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn resolve(fs: &DaxFs, path: &str) -> Result<u64, Errno> {
    let mut ino = ROOT;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        ino = fs.lookup(ino, c.as_bytes())?.ino;
    }
    Ok(ino)
}

fn run_op(fs: &DaxFs, op: &Op) -> Result<(), Errno> {
    let parent = |p: &str| resolve(fs, split(p).0);
    let name = |p: &'static str| split(p).1.as_bytes();
    match op {
        Op::Create(p) => {
            let a = fs.create(parent(p)?, name(p), 0o644, libc::O_RDWR, &root())?;
            fs.release(a.ino)
        }
        Op::Write(p, off, len, seed) => {
            let n = fs.write(resolve(fs, p)?, *off, &pattern(*len, *seed), false)?;
            assert_eq!(n, *len, "short write");
            Ok(())
        }
        Op::Mkdir(p) => fs.mkdir(parent(p)?, name(p), 0o755, &root()).map(|_| ()),
        Op::Rename(from, to) => fs.rename(parent(from)?, name(from), parent(to)?, name(to), 0),
        Op::Link(from, to) => fs
            .link(resolve(fs, from)?, parent(to)?, name(to))
            .map(|_| ()),
        Op::Unlink(p) => fs.unlink(parent(p)?, name(p)),
        Op::Rmdir(p) => fs.rmdir(parent(p)?, name(p)),
        Op::Truncate(p, size) => {
            let c = SetAttr {
                size: Some(*size),
                ..Default::default()
            };
            fs.setattr(resolve(fs, p)?, &root(), &c).map(|_| ())
        }
    }
}

/// Whether `t` is `before`, or `after` where for a write in flight each byte of `file`
/// may be old or new (data is stored in place).
fn old_or_new(t: &Tree, before: &Tree, after: &Tree, file: Option<&str>) -> bool {
    if t == before || t == after {
        return true;
    }
    let Some(f) = file else {
        return false;
    };
    let others_match =
        t.keys().eq(after.keys()) && t.iter().all(|(p, c)| p == f || after.get(p) == Some(c));
    let (Some(Some(got)), Some(Some(old)), Some(Some(new))) =
        (t.get(f), before.get(f), after.get(f))
    else {
        return false;
    };
    others_match
        && (got.len() == old.len() || got.len() == new.len())
        && got.iter().enumerate().all(|(i, b)| {
            *b == old.get(i).copied().unwrap_or(0) || *b == new.get(i).copied().unwrap_or(0)
        })
}

#[derive(Default)]
struct Tally {
    runs: u64,
    failed_ops: u64,
    /// Faults no operation reported (hit after the last operation's last check): the
    /// unmount must report them.
    at_unmount: u64,
    images: u64,
    /// Images where the failed operation is there (replayed) / is not.
    failed_there: u64,
    failed_gone: u64,
}

/// Fails the `n`-th store or flush after the set-up; false if the workload has fewer.
fn fault_run(kind: Fault, n: u64, t: &mut Tally) -> bool {
    let (dev, fs) = recording_fs();
    let rec = dev.recorder().expect("recording").clone();
    let keep = pattern(5000, 1);
    common::mkfile(&fs, ROOT, b"keep", &keep);
    let mut models = vec![Model::default()];
    models[0].apply(&Op::Create("keep"));
    models[0].apply(&Op::Write("keep", 0, 5000, 1));
    rec.fail_after(kind, n);
    let mut first_failed = None;
    for (i, op) in OPS.iter().enumerate() {
        let r = run_op(&fs, op);
        if let Some(f) = first_failed {
            assert!(
                r.is_err(),
                "{kind:?} fault {n}: op {i} {op:?} succeeded after op {f} failed"
            );
            continue;
        }
        if rec.fault_count() == 0 {
            assert_eq!(r, Ok(()), "op {i} {op:?} with no fault yet");
        }
        match r {
            Ok(()) => {
                let mut m = models.last().expect("model").clone();
                m.apply(op);
                models.push(m);
            }
            Err(e) => {
                assert_eq!(e, Errno::EIO, "{kind:?} fault {n}: op {i} {op:?}");
                first_failed = Some(i);
            }
        }
    }
    if rec.fault_count() == 0 {
        return false;
    }
    t.runs += 1;
    let shutdown = fs.shutdown();
    match first_failed {
        Some(_) => t.failed_ops += 1,
        None => {
            assert!(shutdown.is_err(), "{kind:?} fault {n}: nobody reported it");
            t.at_unmount += 1;
        }
    }
    drop(fs);
    let acked = models.last().expect("model").tree();
    let (after, file) = match first_failed {
        Some(i) => {
            let mut m = models.last().expect("model").clone();
            m.apply(&OPS[i]);
            let file = match &OPS[i] {
                Op::Write(p, ..) | Op::Truncate(p, _) => Some(*p),
                _ => None,
            };
            (m.tree(), file)
        }
        None => (acked.clone(), None),
    };
    for (what, img) in images(&dev) {
        t.images += 1;
        let what = format!("{kind:?} fault at {n}, {what} (op {first_failed:?} failed)");
        let (there, gone) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        check_image(&what, &img, &|tr| {
            if old_or_new(tr, &acked, &after, file) {
                if after != acked {
                    if *tr == acked {
                        gone.set(1);
                    } else {
                        there.set(1);
                    }
                }
                Ok(())
            } else {
                Err("neither every acknowledged operation nor those and the failed one".into())
            }
        });
        t.failed_there += there.get();
        t.failed_gone += gone.get();
    }
    true
}

/// Faults at every `stride`-th store and flush of the workload (`stride` 0: aim at about
/// `target` of each kind).
fn fault_sweep(target: u64) {
    let t0 = Instant::now();
    for kind in [Fault::Write, Fault::Flush] {
        // A fault-free run counts the workload's operations of this kind.
        let (dev, fs) = recording_fs();
        let rec = dev.recorder().expect("recording").clone();
        common::mkfile(&fs, ROOT, b"keep", &pattern(5000, 1));
        let start = rec.op_count(kind);
        for op in OPS {
            run_op(&fs, op).expect("no fault");
        }
        let total = rec.op_count(kind) - start;
        drop(fs);
        let stride = (total / target.max(1)).max(1);
        let mut tally = Tally::default();
        let mut n = 0;
        while fault_run(kind, n, &mut tally) {
            n += stride;
        }
        println!(
            "fault injection: {kind:?}: {} of {total} {} failed in turn, {} failed an operation, {} reported at unmount, {} images checked (the failed operation there in {}, not in {}) ({:.1}s)",
            tally.runs,
            if kind == Fault::Write { "stores" } else { "flushes" },
            tally.failed_ops,
            tally.at_unmount,
            tally.images,
            tally.failed_there,
            tally.failed_gone,
            t0.elapsed().as_secs_f64()
        );
        assert!(tally.runs >= target.min(total), "{} runs", tally.runs);
        assert!(tally.failed_ops > 0);
        assert!(
            tally.failed_there > 0 && tally.failed_gone > 0,
            "both outcomes of a failed commit occur"
        );
    }
}

#[test]
fn a_fault_at_sampled_stores_and_flushes_loses_nothing_acknowledged() {
    fault_sweep(12);
}

#[test]
#[ignore = "full run: cargo test -p daxfs --test torn_lines -- --ignored"]
fn a_fault_at_every_store_and_flush_loses_nothing_acknowledged() {
    fault_sweep(u64::MAX);
}
