//! Promotion (issue 13): a follower takes the writer role once the writer's heartbeat
//! has stopped, replaying first; every fsync'ed byte is there; the replaced writer is
//! fenced; a live writer, a second promotion or a non-follower mount is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use common::*;
use daxfs::{DaxFs, Errno, FsOptions, PromoteError, ROOT};
use daxfs_format::hosts::{HostTable, LEASE_HELD};
use daxfs_pmem::{Device, DeviceOptions};
use daxfs_testkit as common;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MB: u64 = 1 << 20;

fn quick() -> FsOptions {
    FsOptions {
        heartbeat: Duration::from_millis(10),
        host_timeout: Duration::from_millis(200),
        ..FsOptions::default()
    }
}

/// The writer, as on another host: a second opening of the device without the local
/// lock.
fn other_host_writer(d: &TestDev) -> DaxFs {
    let dev = Device::open(
        &d.path,
        DeviceOptions {
            writable: true,
            exclusive: false,
            populate: false,
        },
    )
    .unwrap();
    DaxFs::mount_device(Arc::new(dev), quick()).unwrap()
}

fn follower(d: &TestDev) -> DaxFs {
    DaxFs::mount(
        &d.path,
        FsOptions {
            follow: true,
            ..quick()
        },
    )
    .unwrap()
}

#[test]
fn a_promoted_follower_keeps_every_fsynced_byte_and_can_write() {
    let d = TestDev::new(32 * MB);
    let w = other_host_writer(&d);
    let f = follower(&d);
    let mut files = Vec::new();
    for i in 0..8u8 {
        let name = format!("f{i}").into_bytes();
        let data = pattern(3000 + usize::from(i) * 1000, i);
        let ino = mkfile(&w, ROOT, &name, &data);
        w.fsync(ino, false).unwrap();
        files.push((name, data));
    }
    // The writer dies: its heartbeat stops, the lease stays held (no clean shutdown).
    w.writer_lease().unwrap().test_stop_heartbeat();
    let p = f.promote().unwrap();
    drop(f);
    assert!(!p.is_follower());
    for (name, data) in &files {
        let ino = p.lookup(ROOT, name).unwrap().ino;
        assert_eq!(&read_all(&p, ino), data);
    }
    let n = mkfile(&p, ROOT, b"new", b"written by the promoted writer");
    assert_eq!(read_all(&p, n), b"written by the promoted writer");
    // The old writer, still alive, is fenced.
    assert_eq!(
        w.create(ROOT, b"late", 0o644, libc::O_RDWR, &root())
            .unwrap_err(),
        Errno::EROFS
    );
}

#[test]
fn promotion_is_refused_while_the_writer_heartbeats() {
    let d = TestDev::new(32 * MB);
    let w = other_host_writer(&d);
    let ino = mkfile(&w, ROOT, b"a", b"hello");
    let f = follower(&d);
    assert!(matches!(f.promote(), Err(PromoteError::WriterLive(_))));
    // Still a follower that reads.
    assert!(f.is_follower());
    assert_eq!(read_all(&f, ino), b"hello");
    assert_eq!(
        w.create(ROOT, b"b", 0o644, libc::O_RDWR, &root())
            .map(|_| ()),
        Ok(())
    );
}

#[test]
fn of_two_followers_promoting_only_the_first_becomes_the_writer() {
    let d = TestDev::new(32 * MB);
    let w = other_host_writer(&d);
    mkfile(&w, ROOT, b"a", b"hello");
    let f1 = follower(&d);
    let f2 = follower(&d);
    w.writer_lease().unwrap().test_stop_heartbeat();
    let p = f1.promote().unwrap();
    let Err(e) = f2.promote() else {
        panic!("a second promotion succeeded")
    };
    assert!(matches!(e, PromoteError::WriterLive(_)), "{e}");
    assert_eq!(e.errno(), Errno(libc::EBUSY));
    assert!(f2.is_follower());
    drop(p);
}

#[test]
fn promotion_of_a_mount_that_is_not_a_follower_is_refused() {
    let d = TestDev::new(32 * MB);
    let w = d.mount();
    let Err(e) = w.promote() else {
        panic!("a writer was promoted")
    };
    assert!(matches!(e, PromoteError::NotFollower));
    assert_eq!(e.errno(), Errno(libc::EBUSY));
}

/// A writer lease of another host (not this process: no shortcut applies), its heartbeat
/// moved by a thread until `stop` is set.
fn foreign_writer(d: &TestDev, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let dev = Arc::new(
        Device::open(
            &d.path,
            DeviceOptions {
                writable: true,
                exclusive: false,
                populate: false,
            },
        )
        .unwrap(),
    );
    {
        let l = HostTable::on_device(&dev).unwrap().lease();
        l.cas_epoch(l.epoch(), l.epoch() + 1).unwrap().unwrap();
        l.set_owner(0x1234_5678).unwrap();
        l.set_timing(10, 200).unwrap();
        l.set_host(0xdead_beef).unwrap();
        l.set_pid_state(4_000_000, LEASE_HELD).unwrap();
    }
    std::thread::spawn(move || {
        let l = HostTable::on_device(&dev).unwrap().lease();
        while !stop.load(Ordering::Relaxed) {
            l.set_heartbeat(l.heartbeat() + 1).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

#[test]
fn a_writer_of_another_host_is_watched_and_promotion_waits_for_its_silence() {
    let d = TestDev::new(32 * MB);
    // The image written by a writer that then went away cleanly.
    mkfile(&d.mount(), ROOT, b"a", b"hello");
    let stop = Arc::new(AtomicBool::new(false));
    let beater = foreign_writer(&d, stop.clone());
    let f = follower(&d);
    // Heartbeating: refused after watching it, the follower as it was.
    assert!(matches!(f.promote(), Err(PromoteError::WriterLive(_))));
    assert!(f.is_follower());
    // Silent for the timeout: taken over.
    stop.store(true, Ordering::Relaxed);
    beater.join().unwrap();
    let p = f.promote().unwrap();
    let ino = p.lookup(ROOT, b"a").unwrap().ino;
    assert_eq!(read_all(&p, ino), b"hello");
    mkfile(&p, ROOT, b"b", b"after");
}
