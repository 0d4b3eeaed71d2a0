//! Group commit (issue 4): transactions queued while a commit runs are written together
//! as one journal transaction, with the same durability as one commit each.
//!
//! Batches are made deterministic with `DaxFs::hold_next_commit`: the next commit to
//! lead waits until a given number of transactions is queued (or a bound passes, which
//! the tests use to keep a transaction in flight while they look at it).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use daxfs_testkit as common;

use common::{pattern, read_all, root, TestDev};
use daxfs::{DaxFs, Errno, FsOptions, ROOT};
use daxfs_fsck as fsck;
use daxfs_pmem::Device;
use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

/// Long enough that a test which miscounts fails instead of hanging.
const HOLD_BOUND: Duration = Duration::from_secs(20);
/// How long a commit is kept in flight while a test looks at its change.
const IN_FLIGHT: Duration = Duration::from_millis(500);

/// A formatted in-memory device with a 64 KiB journal (the smallest), so that a batch
/// of a few dozen transactions overflows the log.
fn small_journal_device() -> Arc<Device> {
    let dev = Arc::new(Device::memory(&vec![0u8; 16 << 20]).expect("memory device"));
    common::mkfs()
        .journal_bytes(64 << 10)
        .inodes(256)
        .format(&dev);
    dev
}

fn assert_fsck_clean(dev: &Arc<Device>) {
    let rep = fsck::check(dev, false, &mut |_, _, _| {});
    assert!(rep.is_clean(), "fsck: {:?}", rep.findings);
}

fn names(fs: &DaxFs, dir: u64) -> BTreeSet<Vec<u8>> {
    common::list(fs, dir).into_iter().map(|(n, _)| n).collect()
}

fn mkdirs(fs: &DaxFs, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            fs.mkdir(ROOT, format!("d{i}").as_bytes(), 0o755, &root())
                .expect("mkdir")
                .ino
        })
        .collect()
}

/// (journal commits, transactions) so far.
fn counters(fs: &DaxFs) -> (u64, u64) {
    let s = fs.stats();
    (s.commits, s.transactions)
}

#[test]
fn transactions_queued_behind_a_commit_are_written_as_one_journal_commit() {
    let dev = TestDev::new(16 << 20);
    let fs = dev.mount();
    let dirs = mkdirs(&fs, 4);
    let (c0, t0) = counters(&fs);
    fs.hold_next_commit(4, HOLD_BOUND);
    let start = Barrier::new(dirs.len());
    thread::scope(|s| {
        for &d in &dirs {
            let (fs, start) = (&fs, &start);
            s.spawn(move || {
                start.wait();
                let a = fs
                    .create(d, b"f", 0o644, libc::O_RDWR, &root())
                    .expect("create");
                fs.release(a.ino).expect("release");
            });
        }
    });
    let (c1, t1) = counters(&fs);
    assert_eq!(t1 - t0, 4, "four transactions");
    assert_eq!(c1 - c0, 1, "one journal commit for all four");
    fs.shutdown().expect("shutdown");
    drop(fs);
    let fs = dev.mount();
    for &d in &dirs {
        assert_eq!(names(&fs, d), BTreeSet::from([b"f".to_vec()]));
    }
    fs.shutdown().expect("shutdown");
    drop(fs);
    let d = Arc::new(Device::open(&dev.path, Default::default()).expect("open"));
    assert_fsck_clean(&d);
}

#[test]
fn a_batch_too_large_for_the_journal_is_split_into_several_commits() {
    let dev = small_journal_device();
    let fs = DaxFs::mount_device(dev.clone(), FsOptions::default()).expect("mount");
    const N: usize = 24;
    let dirs = mkdirs(&fs, N);
    // Each symlink journals its 4000-byte target: 24 of them need about 100 KiB of log,
    // the log holds 60 KiB.
    let target = |i: usize| -> Vec<u8> {
        pattern(4000, i as u8)
            .into_iter()
            .map(|b| b'a' + b % 26)
            .collect()
    };
    let (c0, t0) = counters(&fs);
    fs.hold_next_commit(N, HOLD_BOUND);
    thread::scope(|s| {
        for (i, &d) in dirs.iter().enumerate() {
            let (fs, t) = (&fs, target(i));
            s.spawn(move || fs.symlink(d, b"s", &t, &root()).expect("symlink"));
        }
    });
    let (c1, t1) = counters(&fs);
    assert_eq!(t1 - t0, N as u64);
    assert!(c1 - c0 >= 2, "the batch must be split: {} commits", c1 - c0);
    assert!(c1 - c0 < N as u64, "and still batched: {} commits", c1 - c0);
    fs.shutdown().expect("shutdown");
    drop(fs);
    assert_fsck_clean(&dev);
    let fs = DaxFs::mount_device(dev.clone(), FsOptions::default()).expect("remount");
    for (i, &d) in dirs.iter().enumerate() {
        let a = fs.lookup(d, b"s").expect("lookup");
        assert_eq!(
            fs.readlink(a.ino).expect("readlink"),
            target(i),
            "symlink {i}"
        );
    }
}

#[test]
fn concurrent_creates_writes_and_unlinks_in_one_directory_stay_intact_after_remount() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 60;
    let dev = TestDev::new(32 << 20);
    let fs = dev.mount();
    let dir = fs
        .mkdir(ROOT, b"shared", 0o755, &root())
        .expect("mkdir")
        .ino;
    let (c0, t0) = counters(&fs);
    // The threads' first transactions form one batch for sure; the rest batch as they
    // happen to meet.
    fs.hold_next_commit(THREADS, HOLD_BOUND);
    let content = |t: usize, i: usize| pattern(1000 + 700 * (i % 9), (t * ROUNDS + i) as u8);
    thread::scope(|s| {
        for t in 0..THREADS {
            let fs = &fs;
            s.spawn(move || {
                for i in 0..ROUNDS {
                    let name = format!("t{t}-{i}");
                    let a = fs
                        .create(dir, name.as_bytes(), 0o644, libc::O_RDWR, &root())
                        .expect("create");
                    let data = content(t, i);
                    assert_eq!(fs.write(a.ino, 0, &data, false).expect("write"), data.len());
                    fs.release(a.ino).expect("release");
                    if i % 3 == 2 {
                        // Remove an earlier file of this thread.
                        let old = format!("t{t}-{}", i - 1);
                        fs.unlink(dir, old.as_bytes()).expect("unlink");
                    }
                }
            });
        }
    });
    let (c1, t1) = counters(&fs);
    assert!(
        c1 - c0 < t1 - t0,
        "{} journal commits for {} transactions",
        c1 - c0,
        t1 - t0
    );
    // Every i % 3 == 1 file is unlinked by round i + 1.
    let kept = |i: usize| !(i % 3 == 1 && i + 1 < ROUNDS);
    let want: BTreeSet<Vec<u8>> = (0..THREADS)
        .flat_map(|t| (0..ROUNDS).filter(|&i| kept(i)).map(move |i| (t, i)))
        .map(|(t, i)| format!("t{t}-{i}").into_bytes())
        .collect();
    assert_eq!(names(&fs, dir), want);
    let free_before = fs.statfs().bfree;
    fs.shutdown().expect("shutdown");
    drop(fs);
    {
        let d = Arc::new(Device::open(&dev.path, Default::default()).expect("open"));
        assert_fsck_clean(&d);
    }
    let fs = dev.mount();
    assert_eq!(names(&fs, dir), want);
    for t in 0..THREADS {
        for i in (0..ROUNDS).filter(|&i| kept(i)) {
            let a = fs
                .lookup(dir, format!("t{t}-{i}").as_bytes())
                .expect("lookup");
            assert_eq!(read_all(&fs, a.ino), content(t, i), "t{t}-{i}");
        }
    }
    assert_eq!(fs.statfs().bfree, free_before, "no block leaked or lost");
    assert!(fs.stats().balanced());
}

#[test]
fn blocks_freed_by_one_member_of_a_batch_are_free_on_the_device_after_it() {
    let dev = TestDev::new(16 << 20);
    let fs = dev.mount();
    common::mkfile(&fs, ROOT, b"old", &pattern(64 << 10, 1));
    let new = fs
        .create(ROOT, b"new", 0o644, libc::O_RDWR, &root())
        .expect("create")
        .ino;
    let (c0, t0) = counters(&fs);
    fs.hold_next_commit(2, HOLD_BOUND);
    thread::scope(|s| {
        // The unlink queues first and leads; the allocating write queues behind it, so
        // the batch's bitmap image must show the unlinked file's blocks free although
        // the allocator hands them back only after the commit.
        s.spawn(|| fs.unlink(ROOT, b"old").expect("unlink"));
        while fs.queued_commits() == 0 {
            thread::yield_now();
        }
        let data = pattern(8192, 2);
        assert_eq!(fs.write(new, 0, &data, false).expect("write"), data.len());
    });
    let (c1, t1) = counters(&fs);
    assert_eq!((c1 - c0, t1 - t0), (1, 2), "one journal commit for both");
    fs.release(new).expect("release");
    let bfree = fs.statfs().bfree;
    fs.shutdown().expect("shutdown");
    drop(fs);
    {
        let d = Arc::new(Device::open(&dev.path, Default::default()).expect("open"));
        assert_fsck_clean(&d);
    }
    assert_eq!(dev.mount().statfs().bfree, bfree);
}

/// Runs `op` in a thread whose commit is held in flight, waits until its transaction is
/// queued (its change in memory, not durable), then runs `check` while the commit is
/// still held (for IN_FLIGHT at most).
fn while_in_flight<R>(fs: &DaxFs, op: impl FnOnce() + Send, check: impl FnOnce() -> R) -> R {
    // Two queued transactions are never reached: the commit stays held for IN_FLIGHT.
    fs.hold_next_commit(2, IN_FLIGHT);
    thread::scope(|s| {
        s.spawn(op);
        while fs.queued_commits() == 0 {
            thread::yield_now();
        }
        check()
    })
}

#[test]
fn lookup_of_an_entry_whose_create_is_still_being_committed_answers_once_it_is_durable() {
    let (dev, fs) = recording_fs();
    while_in_flight(
        &fs,
        || {
            fs.mknod(ROOT, b"f", libc::S_IFREG | 0o644, 0, &root())
                .expect("mknod");
        },
        || {
            fs.lookup(ROOT, b"f").expect("lookup");
            let after_crash = durable_copy(&dev);
            assert!(
                after_crash.lookup(ROOT, b"f").is_ok(),
                "a name lookup found is durable"
            );
        },
    );
}

#[test]
fn enoent_for_a_name_whose_unlink_is_still_being_committed_comes_once_it_is_durable() {
    let (dev, fs) = recording_fs();
    fs.mknod(ROOT, b"f", libc::S_IFREG | 0o644, 0, &root())
        .expect("mknod");
    while_in_flight(
        &fs,
        || fs.unlink(ROOT, b"f").expect("unlink"),
        || {
            assert_eq!(fs.lookup(ROOT, b"f").err(), Some(Errno::ENOENT));
            let after_crash = durable_copy(&dev);
            assert!(
                after_crash.lookup(ROOT, b"f").is_err(),
                "an unlink lookup saw is durable"
            );
        },
    );
}

#[test]
fn getattr_of_a_link_count_still_being_committed_answers_once_it_is_durable() {
    let (dev, fs) = recording_fs();
    let f = fs
        .mknod(ROOT, b"f", libc::S_IFREG | 0o644, 0, &root())
        .expect("mknod")
        .ino;
    while_in_flight(
        &fs,
        || {
            fs.link(f, ROOT, b"g").expect("link");
        },
        || {
            assert_eq!(fs.getattr(f).expect("getattr").nlink, 2);
            let after_crash = durable_copy(&dev);
            let a = after_crash.lookup(ROOT, b"f").expect("lookup");
            assert_eq!(a.nlink, 2, "a link count getattr saw is durable");
        },
    );
}

#[test]
fn readdir_lists_an_entry_whose_create_is_still_being_committed() {
    let dev = TestDev::new(16 << 20);
    let fs = dev.mount();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).expect("mkdir").ino;
    let listed = while_in_flight(
        &fs,
        || {
            fs.mknod(dir, b"new", libc::S_IFREG | 0o644, 0, &root())
                .expect("mknod");
        },
        || names(&fs, dir),
    );
    assert_eq!(listed, BTreeSet::from([b"new".to_vec()]));
}

#[test]
fn readlink_of_a_symlink_still_being_committed_returns_its_target() {
    let dev = TestDev::new(16 << 20);
    let fs = dev.mount();
    let target = b"/some/where/else".to_vec();
    let read = while_in_flight(
        &fs,
        || {
            fs.symlink(ROOT, b"l", &target, &root()).expect("symlink");
        },
        || {
            let a = fs.lookup(ROOT, b"l").expect("lookup");
            fs.readlink(a.ino).expect("readlink")
        },
    );
    assert_eq!(read, target);
}

/// The durable state of a recording device, mounted.
fn durable_copy(dev: &Device) -> DaxFs {
    let img = dev.recorder().expect("recording").durable_image();
    let copy = Arc::new(Device::memory(&img).expect("memory device"));
    DaxFs::mount_device(copy, FsOptions::default()).expect("mount the durable image")
}

fn recording_fs() -> (Arc<Device>, DaxFs) {
    let (dev, _) = Device::recording(8 << 20).expect("recording device");
    let dev = Arc::new(dev);
    common::mkfs()
        .journal_bytes(64 << 10)
        .inodes(64)
        .format(&dev);
    let fs = DaxFs::mount_device(dev.clone(), FsOptions::default()).expect("mount");
    (dev, fs)
}

#[test]
fn fsync_of_a_file_whose_create_is_still_being_committed_returns_once_it_is_durable() {
    let (dev, fs) = recording_fs();
    while_in_flight(
        &fs,
        || {
            fs.mknod(ROOT, b"f", libc::S_IFREG | 0o644, 0, &root())
                .expect("mknod");
        },
        || {
            let a = fs.lookup(ROOT, b"f").expect("lookup");
            fs.fsync(a.ino, false).expect("fsync");
            let after_crash = durable_copy(&dev);
            assert!(
                after_crash.lookup(ROOT, b"f").is_ok(),
                "durable after fsync"
            );
        },
    );
}

#[test]
fn fsyncdir_of_a_directory_with_a_create_still_being_committed_returns_once_it_is_durable() {
    let (dev, fs) = recording_fs();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).expect("mkdir").ino;
    while_in_flight(
        &fs,
        || {
            fs.mknod(dir, b"f", libc::S_IFREG | 0o644, 0, &root())
                .expect("mknod");
        },
        || {
            fs.fsyncdir(dir).expect("fsyncdir");
            let after_crash = durable_copy(&dev);
            let d = after_crash.lookup(ROOT, b"d").expect("lookup d").ino;
            assert!(
                after_crash.lookup(d, b"f").is_ok(),
                "durable after fsyncdir"
            );
        },
    );
}
