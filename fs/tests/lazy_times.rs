//! Lazy timestamps (`FsOptions::lazytime`, `times.rs`): an overwrite that changes only
//! mtime/ctime commits nothing, stat shows the new times at once, and fsync, the
//! inode's next journal record, the writeback after `commit_interval` and unmount make
//! them durable. Durability is checked on a recording device: what a power cut leaves
//! (`Recorder::durable_image`) is mounted (journal replay) and its times read.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking

use daxfs::{Cred, DaxFs, FsOptions, SetAttr, SetTime, Timespec, ROOT};
use daxfs_pmem::{Device, Recorder};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEV_SIZE: u64 = 4 << 20;
/// An mtime long past, set (and committed) before the overwrite under test.
const OLD: Timespec = Timespec { sec: 1000, nsec: 0 };
/// A writeback interval no test waits for.
const NEVER: Duration = Duration::from_secs(3600);

fn opts(lazytime: bool, commit_interval: Duration) -> FsOptions {
    FsOptions {
        lazytime,
        commit_interval,
        ..FsOptions::default()
    }
}

/// A formatted recording device and the filesystem mounted on it.
struct Rig {
    dev: Arc<Device>,
    rec: Arc<Recorder>,
    fs: Option<DaxFs>,
}

impl Rig {
    fn new(o: FsOptions) -> Rig {
        let (dev, rec) = Device::recording(DEV_SIZE).expect("recording device");
        let dev = Arc::new(dev);
        daxfs_testkit::mkfs()
            .journal_bytes(64 << 10)
            .inodes(64)
            .format(&dev);
        let fs = DaxFs::mount_device(dev.clone(), o).expect("mount");
        Rig {
            dev,
            rec,
            fs: Some(fs),
        }
    }

    fn fs(&self) -> &DaxFs {
        self.fs.as_ref().expect("mounted")
    }

    /// A 16 KiB file whose durable mtime is [`OLD`].
    fn file(&self) -> u64 {
        let fs = self.fs();
        let f = fs
            .create(ROOT, b"f", 0o644, libc::O_RDWR, &Cred::root())
            .unwrap()
            .ino;
        fs.write(f, 0, &[1u8; 16384], false).unwrap();
        let c = SetAttr {
            mtime: Some(SetTime::At(OLD)),
            ..Default::default()
        };
        fs.setattr(f, &Cred::root(), &c).unwrap();
        f
    }

    /// mtime and ctime of `ino` as a power cut now would leave them (the durable image,
    /// mounted with its journal replayed).
    fn durable_times(&self, ino: u64) -> (Timespec, Timespec) {
        let img = self.rec.durable_image();
        let dev = Arc::new(Device::memory(&img).expect("memory device"));
        let fs = DaxFs::mount_device(dev, opts(false, NEVER)).expect("crash image mounts");
        let a = fs.getattr(ino).expect("file survives");
        (a.mtime, a.ctime)
    }

    /// What a remount after a clean unmount shows.
    fn remount_times(&mut self, ino: u64) -> (Timespec, Timespec) {
        drop(self.fs.take());
        let fs = DaxFs::mount_device(self.dev.clone(), opts(false, NEVER)).expect("remount");
        let a = fs.getattr(ino).unwrap();
        self.fs = Some(fs);
        (a.mtime, a.ctime)
    }
}

fn mtime(fs: &DaxFs, ino: u64) -> Timespec {
    fs.getattr(ino).unwrap().mtime
}

fn overwrite(fs: &DaxFs, ino: u64) {
    assert_eq!(fs.write(ino, 4096, &[7u8; 4096], false).unwrap(), 4096);
}

#[test]
fn overwrite_shows_new_mtime_and_ctime_at_once() {
    let r = Rig::new(opts(true, NEVER));
    let f = r.file();
    let before = r.fs().getattr(f).unwrap();
    overwrite(r.fs(), f);
    let after = r.fs().getattr(f).unwrap();
    assert!(after.mtime > OLD);
    assert!(after.ctime >= before.ctime);
    assert_eq!(after.mtime, after.ctime);
}

#[test]
fn overwrite_commits_no_journal_transaction() {
    let r = Rig::new(opts(true, NEVER));
    let f = r.file();
    let (commits, _) = r.fs().counters();
    for _ in 0..10 {
        overwrite(r.fs(), f);
    }
    assert_eq!(r.fs().counters().0, commits);
    assert!(r.fs().times_dirty(f));
}

#[test]
fn overwrite_is_not_durable_before_fsync() {
    let r = Rig::new(opts(true, NEVER));
    let f = r.file();
    overwrite(r.fs(), f);
    assert_eq!(r.durable_times(f).0, OLD);
}

#[test]
fn fsync_makes_overwrite_times_durable() {
    let r = Rig::new(opts(true, NEVER));
    let f = r.file();
    overwrite(r.fs(), f);
    let shown = r.fs().getattr(f).unwrap();
    r.fs().fsync(f, false).unwrap();
    assert!(!r.fs().times_dirty(f));
    assert_eq!(r.durable_times(f), (shown.mtime, shown.ctime));
}

#[test]
fn fdatasync_commits_no_times() {
    let r = Rig::new(opts(true, NEVER));
    let f = r.file();
    overwrite(r.fs(), f);
    let (commits, _) = r.fs().counters();
    r.fs().fsync(f, true).unwrap();
    assert_eq!(r.fs().counters().0, commits);
    assert!(r.fs().times_dirty(f));
}

#[test]
fn power_cut_shows_a_time_between_the_last_durable_and_the_shown_one() {
    let r = Rig::new(opts(true, NEVER));
    let f = r.file();
    let mut durable = OLD;
    for i in 0..6 {
        overwrite(r.fs(), f);
        if i % 2 == 1 {
            let shown = mtime(r.fs(), f);
            r.fs().fsync(f, false).unwrap();
            durable = shown;
        }
        let (m, _) = r.durable_times(f);
        let shown = mtime(r.fs(), f);
        assert!(
            m == durable || m == shown,
            "step {i}: {m:?} is neither {durable:?} nor {shown:?}"
        );
    }
}

#[test]
fn writeback_after_commit_interval_makes_times_durable() {
    let r = Rig::new(opts(true, Duration::from_millis(20)));
    let f = r.file();
    overwrite(r.fs(), f);
    let shown = r.fs().getattr(f).unwrap();
    // The writeback clears the flag once the times are durable; the bound only keeps a
    // broken writeback from hanging the test.
    let give_up = Instant::now() + Duration::from_secs(60);
    while r.fs().times_dirty(f) && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(r.durable_times(f), (shown.mtime, shown.ctime));
}

#[test]
fn unmount_makes_dirty_times_durable() {
    let mut r = Rig::new(opts(true, NEVER));
    let f = r.file();
    overwrite(r.fs(), f);
    let shown = r.fs().getattr(f).unwrap();
    assert_eq!(r.remount_times(f), (shown.mtime, shown.ctime));
}

#[test]
fn next_metadata_record_carries_dirty_times() {
    let r = Rig::new(opts(true, NEVER));
    let f = r.file();
    overwrite(r.fs(), f);
    let shown = mtime(r.fs(), f);
    let c = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    r.fs().setattr(f, &Cred::root(), &c).unwrap();
    assert_eq!(r.durable_times(f).0, shown);
}

#[test]
fn extending_write_commits_its_times_at_once() {
    let r = Rig::new(opts(true, NEVER));
    let f = r.file();
    r.fs().write(f, 16384, b"more", false).unwrap();
    let shown = mtime(r.fs(), f);
    assert!(!r.fs().times_dirty(f));
    assert_eq!(r.durable_times(f).0, shown);
}

#[test]
fn nolazytime_commits_every_overwrite_before_it_returns() {
    let r = Rig::new(opts(false, NEVER));
    let f = r.file();
    let (commits, _) = r.fs().counters();
    overwrite(r.fs(), f);
    let shown = mtime(r.fs(), f);
    assert_eq!(r.fs().counters().0, commits + 1);
    assert!(!r.fs().times_dirty(f));
    assert_eq!(r.durable_times(f).0, shown);
}

#[test]
fn concurrent_overwrites_and_fsync_never_move_a_durable_time_backwards() {
    let r = Rig::new(opts(true, Duration::from_millis(1)));
    let f = r.file();
    let stop = AtomicBool::new(false);
    // (at least this was durable, the durable image) after each fsync.
    let mut samples = Vec::new();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    overwrite(r.fs(), f);
                }
            });
        }
        for _ in 0..40 {
            let shown = mtime(r.fs(), f);
            r.fs().fsync(f, false).unwrap();
            samples.push((shown, r.rec.durable_image()));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let mut last = OLD;
    for (i, (floor, img)) in samples.iter().enumerate() {
        let dev = Arc::new(Device::memory(img).expect("memory device"));
        let fs = DaxFs::mount_device(dev, opts(false, NEVER)).expect("crash image mounts");
        let m = mtime(&fs, f);
        assert!(
            m >= *floor,
            "sample {i}: durable {m:?} older than fsynced {floor:?}"
        );
        assert!(
            m >= last,
            "sample {i}: durable {m:?} went back from {last:?}"
        );
        last = m;
    }
}
