//! The writer lease in the device's host table (issue 13): one writer per device,
//! whichever host it runs on; takeover of a released or silent lease; fencing of a
//! writer that was replaced; the version 1 -> 2 upgrade.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use common::*;
use daxfs::{DaxFs, Errno, FsOptions, MountError, ROOT};
use daxfs_format::hosts::{HostTable, LEASE_HELD, LEASE_RELEASED};
use daxfs_format::{Superblock, BLOCK_SIZE, SB_SIZE, VERSION, VERSION_V1};
use daxfs_pmem::Device;
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

/// Writes a lease "held" by a writer of another host (foreign host id and pid).
fn plant_foreign_lease(dev: &Device, epoch: u64, heartbeat: u64) {
    let t = HostTable::on_device(dev).unwrap();
    let l = t.lease();
    l.cas_epoch(l.epoch(), epoch).unwrap().unwrap();
    l.set_owner(0x1234_5678).unwrap();
    l.set_timing(10, 200).unwrap();
    l.set_heartbeat(heartbeat).unwrap();
    l.set_host(0xdead_beef).unwrap();
    l.set_pid_state(4_000_000, LEASE_HELD).unwrap();
}

/// Keeps the planted lease's heartbeat moving until dropped.
struct Beater {
    stop: Arc<AtomicBool>,
    t: Option<std::thread::JoinHandle<()>>,
}

impl Beater {
    fn start(dev: Arc<Device>) -> Beater {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            let table = HostTable::on_device(&dev).unwrap();
            while !s.load(Ordering::Relaxed) {
                let l = table.lease();
                l.set_heartbeat(l.heartbeat() + 1).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Beater { stop, t: Some(t) }
    }
}

impl Drop for Beater {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.t.take() {
            let _ = t.join();
        }
    }
}

fn image(dev: &Device) -> Vec<u8> {
    let mut v = vec![0u8; dev.size() as usize];
    dev.read(0, &mut v);
    v
}

#[test]
fn a_second_writer_is_refused_with_the_holders_pid() {
    let d = TestDev::new(32 * MB);
    let _fs = DaxFs::mount(&d.path, quick()).unwrap();
    let e = DaxFs::mount_device(d.other_host(true), quick())
        .err()
        .unwrap();
    assert!(matches!(e, MountError::WriterLeaseHeld { pid, .. } if pid == std::process::id()));
    let msg = e.to_string();
    assert!(
        msg.ends_with(&format!(
            ": writer role held by another host (pid {}), heartbeat live; mount with -o follow to read it",
            std::process::id()
        )),
        "{msg}"
    );
}

#[test]
fn a_second_writer_through_the_local_lock_gets_the_lease_message() {
    let d = TestDev::new(32 * MB);
    let _fs = DaxFs::mount(&d.path, quick()).unwrap();
    let e = DaxFs::mount(&d.path, quick()).err().unwrap();
    assert!(matches!(e, MountError::WriterLeaseHeld { .. }), "{e}");
}

#[test]
fn a_live_writer_of_another_host_is_refused() {
    let d = TestDev::new(32 * MB);
    let dev = d.other_host(true);
    plant_foreign_lease(&dev, 3, 1);
    let _b = Beater::start(dev.clone());
    let e = DaxFs::mount(&d.path, quick()).err().unwrap();
    assert!(
        matches!(e, MountError::WriterLeaseHeld { pid: 4_000_000, .. }),
        "{e}"
    );
    // Refused in the checking half: the lease is still the other host's.
    assert_eq!(HostTable::on_device(&dev).unwrap().lease().epoch(), 3);
}

#[test]
fn a_released_lease_is_taken_at_once_with_the_next_epoch() {
    let d = TestDev::new(32 * MB);
    let e1 = {
        let fs = DaxFs::mount(&d.path, quick()).unwrap();
        fs.writer_lease().unwrap().epoch()
    };
    let dev = d.other_host(true);
    let l = HostTable::on_device(&dev).unwrap().lease();
    assert_eq!(l.state(), LEASE_RELEASED);
    // A long timeout: a released lease is not waited for.
    let opts = FsOptions {
        host_timeout: Duration::from_secs(3600),
        ..FsOptions::default()
    };
    let fs = DaxFs::mount(&d.path, opts).unwrap();
    assert_eq!(fs.writer_lease().unwrap().epoch(), e1 + 1);
    assert_eq!((l.state(), l.epoch()), (LEASE_HELD, e1 + 1));
    assert_eq!(l.owner(), fs.writer_lease().unwrap().owner());
}

#[test]
fn a_silent_lease_of_another_host_is_taken_over_after_the_timeout() {
    let d = TestDev::new(32 * MB);
    let dev = d.other_host(true);
    plant_foreign_lease(&dev, 7, 42);
    let fs = DaxFs::mount(&d.path, quick()).unwrap();
    let l = HostTable::on_device(&dev).unwrap().lease();
    assert_eq!(l.epoch(), 8);
    assert_eq!(l.pid(), std::process::id());
    mkfile(&fs, ROOT, b"mine", b"x");
}

#[test]
fn a_lease_left_in_a_crash_image_is_taken_at_once() {
    let d = TestDev::new(32 * MB);
    let fs = DaxFs::mount(&d.path, quick()).unwrap();
    mkfile(&fs, ROOT, b"f", b"data");
    let copy = d.crash_image();
    // The copy's lease names this process, but no live mount of it on the copy:
    // even an hour's timeout is not waited for.
    let opts = FsOptions {
        host_timeout: Duration::from_secs(3600),
        ..FsOptions::default()
    };
    let fs2 = DaxFs::mount(&copy.path, opts).unwrap();
    assert!(fs2.lookup(ROOT, b"f").is_ok());
}

#[test]
fn committed_seq_follows_the_commits() {
    let d = TestDev::new(32 * MB);
    let fs = DaxFs::mount(&d.path, quick()).unwrap();
    let dev = d.other_host(true);
    let l = HostTable::on_device(&dev).unwrap().lease();
    let before = l.committed_seq();
    mkfile(&fs, ROOT, b"a", b"1");
    let after = l.committed_seq();
    assert!(after > before, "{before} -> {after}");
}

#[test]
fn the_heartbeat_moves_while_mounted() {
    let d = TestDev::new(32 * MB);
    let fs = DaxFs::mount(&d.path, quick()).unwrap();
    let dev = d.other_host(true);
    let l = HostTable::on_device(&dev).unwrap().lease();
    let h0 = l.heartbeat();
    let b0 = fs.writer_lease().unwrap().beats();
    while fs.writer_lease().unwrap().beats() < b0 + 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_ne!(l.heartbeat(), h0);
}

#[test]
fn a_replaced_writer_is_fenced_and_writes_nothing_more() {
    let d = TestDev::new(32 * MB);
    let fs = DaxFs::mount(&d.path, quick()).unwrap();
    let f = mkfile(&fs, ROOT, b"f", b"before");
    let dev = d.other_host(true);
    // Another host takes the writer role (as after this mount's heartbeat stalled).
    let l = HostTable::on_device(&dev).unwrap().lease();
    let e = l.epoch();
    l.cas_epoch(e, e + 1).unwrap().unwrap();
    l.set_owner(0x4242).unwrap();
    let img = image(&dev);
    assert_eq!(fs.write(f, 0, b"after!", false).unwrap_err(), Errno::EROFS);
    assert_eq!(
        fs.create(ROOT, b"g", 0o644, libc::O_RDWR, &root())
            .unwrap_err(),
        Errno::EROFS
    );
    assert_eq!(fs.unlink(ROOT, b"f").unwrap_err(), Errno::EROFS);
    assert!(fs.writer_lease().unwrap().fenced());
    // Unmounting writes nothing either (no clean state, no released lease).
    assert_eq!(fs.shutdown().unwrap_err(), Errno::EROFS);
    drop(fs);
    // The host table aside (the heartbeat thread may have stored one last beat between
    // its check and the takeover: the documented window), not a byte changed.
    let (now, table) = (image(&dev), 2048..4096);
    assert!(now[..table.start] == img[..table.start], "block 0 changed");
    assert!(
        now[table.end..] == img[table.end..],
        "the fenced writer stored to the device"
    );
    assert_eq!(
        (l.owner(), l.epoch(), l.state()),
        (0x4242, e + 1, LEASE_HELD)
    );
}

#[test]
fn a_version_1_image_is_upgraded_by_its_first_read_write_mount() {
    let d = TestDev::new(32 * MB);
    let dev = d.other_host(true);
    let mut b = [0u8; SB_SIZE];
    dev.read(0, &mut b);
    let mut sb = Superblock::decode(&b, dev.size()).unwrap();
    sb.version = VERSION_V1;
    for off in [0, BLOCK_SIZE] {
        dev.write_persist(off, &sb.encode());
    }
    // A read-only mount reads it as it is.
    {
        let ro = FsOptions {
            read_only: true,
            ..quick()
        };
        let fs = DaxFs::mount(&d.path, ro).unwrap();
        assert_eq!(fs.superblock().version, VERSION_V1);
        assert!(fs.writer_lease().is_none());
    }
    dev.read(0, &mut b);
    assert_eq!(
        Superblock::decode(&b, dev.size()).unwrap().version,
        VERSION_V1
    );
    {
        let fs = DaxFs::mount(&d.path, quick()).unwrap();
        mkfile(&fs, ROOT, b"new", b"v2");
        assert!(fs.writer_lease().is_some());
    }
    for off in [0, BLOCK_SIZE] {
        dev.read(off, &mut b);
        assert_eq!(Superblock::decode(&b, dev.size()).unwrap().version, VERSION);
    }
    assert_eq!(
        HostTable::on_device(&dev).unwrap().lease().state(),
        LEASE_RELEASED
    );
    let fs = DaxFs::mount(&d.path, quick()).unwrap();
    assert_eq!(read_all(&fs, fs.lookup(ROOT, b"new").unwrap().ino), b"v2");
}

#[test]
fn an_unknown_version_is_refused() {
    let d = TestDev::new(32 * MB);
    let dev = d.other_host(true);
    let mut b = [0u8; SB_SIZE];
    dev.read(0, &mut b);
    let mut sb = Superblock::decode(&b, dev.size()).unwrap();
    sb.version = VERSION + 1;
    for off in [0, BLOCK_SIZE] {
        dev.write_persist(off, &sb.encode());
    }
    let e = DaxFs::mount(&d.path, quick()).err().unwrap();
    assert!(
        e.to_string()
            .contains(&format!("unsupported daxfs version {}", VERSION + 1)),
        "{e}"
    );
}

/// A crashed image whose journal holds a committed transaction (it must be replayed).
fn crashed_with_a_file() -> TestDev {
    let d = TestDev::new(32 * MB);
    let fs = DaxFs::mount(&d.path, quick()).unwrap();
    mkfile(&fs, ROOT, b"f", b"data");
    let crashed = d.crash_image();
    drop(fs);
    crashed
}

fn lease_on(d: &TestDev) -> daxfs_format::hosts::LeaseRecord {
    HostTable::on_device(&d.other_host(false))
        .unwrap()
        .lease()
        .record()
}

#[test]
fn a_mount_that_must_replay_holds_the_lease_before_it_replays() {
    let crashed = crashed_with_a_file();
    let before = lease_on(&crashed).epoch;
    let prepared = DaxFs::prepare(&crashed.path, quick()).unwrap();
    let l = lease_on(&crashed);
    assert_eq!(
        l.epoch,
        before + 1,
        "claimed by compare-and-swap of the epoch"
    );
    assert_eq!((l.state, l.pid), (LEASE_HELD, std::process::id()));
    prepared.go_live().unwrap();
    assert_eq!(lease_on(&crashed).epoch, before + 1, "taken from the claim");
    let ino = prepared.lookup(ROOT, b"f").unwrap().ino;
    assert_eq!(read_all(&prepared, ino), b"data");
}

#[test]
fn a_replaying_mount_refused_before_it_is_live_puts_the_lease_back_as_it_was() {
    let crashed = crashed_with_a_file();
    let before = lease_on(&crashed);
    let prepared = DaxFs::prepare(&crashed.path, quick()).unwrap();
    assert_ne!(lease_on(&crashed), before, "claimed");
    drop(prepared);
    assert_eq!(lease_on(&crashed), before);
}

#[test]
fn of_two_hosts_recovering_at_once_the_one_slower_than_the_timeout_is_refused() {
    let crashed = crashed_with_a_file();
    let slow = DaxFs::prepare(&crashed.path, quick()).unwrap();
    // Another host finds the claim silent for its timeout and recovers the device.
    let fast = DaxFs::prepare_device(crashed.other_host(true), quick()).unwrap();
    fast.go_live().unwrap();
    let e = slow
        .go_live()
        .expect_err("the slow claimant lost the lease");
    assert!(matches!(e, MountError::WriterLeaseHeld { .. }), "{e}");
    mkfile(&fast, ROOT, b"g", b"after");
    assert_eq!(fast.writer_lease().map(|l| l.still_ours()), Some(true));
}
