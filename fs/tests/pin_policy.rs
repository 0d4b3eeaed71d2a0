//! The pin policy of pins taken on behalf of a process (`DaxFs::pin_range_for`, what
//! DAXFS_IOC_PIN uses), without a mount: who may pin, which pins a layout break revokes
//! and when, what the holder sees, and the per-user limits.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use common::*;
use daxfs::{caps_from_status, PinCaps, PinHolder, PinPolicy};
use daxfs::{DaxFs, Errno, FsOptions, SetAttr, ROOT};
use daxfs_testkit as common;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const KB: u64 = 1 << 10;
const MB: u64 = 1 << 20;
const USER: u32 = 1000;
const OTHER: u32 = 1001;

fn mount(d: &TestDev, layout_timeout: Duration, pins: PinPolicy) -> DaxFs {
    let o = FsOptions {
        layout_timeout,
        pins,
        ..FsOptions::default()
    };
    DaxFs::mount(&d.path, o).unwrap()
}

fn breaking_after(t: Duration) -> PinPolicy {
    PinPolicy {
        lease_break_time: t,
        ..PinPolicy::default()
    }
}

fn user(uid: u32) -> PinHolder {
    PinHolder {
        uid,
        caps: PinCaps::default(),
    }
}

fn with_caps(uid: u32, caps: PinCaps) -> PinHolder {
    PinHolder { uid, caps }
}

/// A 1 MiB file owned by `owner`.
fn file_of(fs: &DaxFs, name: &[u8], owner: u32) -> u64 {
    let ino = mkfile(fs, ROOT, name, &pattern(MB as usize, 7));
    let c = SetAttr {
        uid: Some(owner),
        ..Default::default()
    };
    fs.setattr(ino, &root(), &c).unwrap();
    ino
}

fn truncate(fs: &DaxFs, ino: u64) -> Result<u64, Errno> {
    let c = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    fs.setattr(ino, &root(), &c).map(|a| a.size)
}

#[test]
fn a_reader_who_does_not_own_the_file_cannot_pin_it() {
    let d = TestDev::new(64 * MB);
    let fs = d.mount();
    let ino = file_of(&fs, b"rootdata", 0);
    assert_eq!(
        fs.pin_range_for(ino, 0, 64 * KB, &user(USER)).err(),
        Some(Errno::EACCES)
    );
    assert_eq!(fs.stats().pins_taken, 0, "a refused pin holds nothing");
    assert_eq!(fs.pin_usage(USER).pins, 0, "nor counts");
    // So root's truncate goes through at once.
    assert_eq!(truncate(&fs, ino), Ok(0));
    assert!(fs.stats().balanced());
}

#[test]
fn the_owner_and_a_cap_lease_holder_may_pin_and_only_cap_sys_admin_pins_are_unbreakable() {
    let d = TestDev::new(64 * MB);
    let fs = d.mount();
    let ino = file_of(&fs, b"f", USER);
    let lease = PinCaps {
        lease: true,
        ..PinCaps::default()
    };
    let owner = fs.pin_range_for(ino, 0, 4096, &user(USER)).unwrap();
    let leaser = fs
        .pin_range_for(ino, 0, 4096, &with_caps(OTHER, lease))
        .unwrap();
    let admin = fs
        .pin_range_for(ino, 0, 4096, &with_caps(0, PinCaps::ALL))
        .unwrap();
    let library = fs.pin_range(ino, 0, 4096).unwrap();
    let revocable: Vec<bool> = [&owner, &leaser, &admin, &library]
        .iter()
        .map(|p| p.revocable())
        .collect();
    assert_eq!(revocable, [true, true, false, false]);
    for p in [owner, leaser, admin, library] {
        fs.unpin_range(p);
    }
    assert!(fs.stats().balanced());
}

#[test]
fn a_revocable_pin_is_revoked_after_lease_break_time_and_the_truncate_succeeds() {
    let d = TestDev::new(64 * MB);
    let fs = mount(
        &d,
        Duration::from_secs(30),
        breaking_after(Duration::from_millis(300)),
    );
    let ino = file_of(&fs, b"f", USER);
    let free0 = fs.statfs().bfree;
    let pin = fs.pin_range_for(ino, 0, 256 * KB, &user(USER)).unwrap();
    assert!(!pin.break_requested() && !pin.revoked());
    let start = Instant::now();
    assert_eq!(truncate(&fs, ino), Ok(0));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "revoked early: {took:?}"
    );
    assert!(took < Duration::from_secs(20), "not revoked: {took:?}");
    assert!(pin.break_requested() && pin.revoked());
    assert!(fs.statfs().bfree > free0, "the blocks were freed");
    // The holder still gives it back: its open and its count go, no reference twice.
    assert_eq!(fs.pin_usage(USER).pins, 1);
    fs.unpin_range(pin);
    assert_eq!(fs.pin_usage(USER).pins, 0);
    let s = fs.stats();
    assert_eq!((s.pins_revoked, s.violations), (1, 0));
    assert!(s.balanced(), "{s:?}");
}

#[test]
fn an_unbreakable_pin_outlasts_lease_break_time_and_the_truncate_is_ebusy() {
    let d = TestDev::new(64 * MB);
    let fs = mount(
        &d,
        Duration::from_millis(500),
        breaking_after(Duration::from_millis(50)),
    );
    let ino = file_of(&fs, b"f", 0);
    let pin = fs
        .pin_range_for(ino, 0, 64 * KB, &with_caps(0, PinCaps::ALL))
        .unwrap();
    assert_eq!(truncate(&fs, ino), Err(Errno::EBUSY));
    assert!(pin.break_requested(), "the holder is told all the same");
    assert!(!pin.revoked());
    assert_eq!(fs.stats().pins_revoked, 0);
    fs.unpin_range(pin);
    assert_eq!(truncate(&fs, ino), Ok(0));
    assert!(fs.stats().balanced());
}

#[test]
fn a_revocable_pin_never_makes_the_break_wait_past_layout_timeout() {
    let d = TestDev::new(64 * MB);
    // lease_break_time longer than layout_timeout: revoked at layout_timeout.
    let fs = mount(
        &d,
        Duration::from_millis(300),
        breaking_after(Duration::from_secs(600)),
    );
    let ino = file_of(&fs, b"f", USER);
    let pin = fs.pin_range_for(ino, 0, 64 * KB, &user(USER)).unwrap();
    let start = Instant::now();
    assert_eq!(truncate(&fs, ino), Ok(0));
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(pin.revoked());
    fs.unpin_range(pin);
    assert!(fs.stats().balanced());
}

#[test]
fn a_break_outside_the_pinned_range_neither_flags_nor_revokes_the_pin() {
    let d = TestDev::new(64 * MB);
    let fs = mount(&d, Duration::from_secs(30), breaking_after(Duration::ZERO));
    let ino = file_of(&fs, b"f", USER);
    let pin = fs.pin_range_for(ino, 0, 64 * KB, &user(USER)).unwrap();
    let c = SetAttr {
        size: Some(512 * KB),
        ..Default::default()
    };
    assert_eq!(fs.setattr(ino, &root(), &c).map(|a| a.size), Ok(512 * KB));
    assert!(!pin.break_requested() && !pin.revoked());
    fs.unpin_range(pin);
    assert!(fs.stats().balanced());
}

#[test]
fn the_lease_break_notifier_is_told_the_inode_whose_pins_were_met() {
    let d = TestDev::new(64 * MB);
    let fs = mount(
        &d,
        Duration::from_secs(30),
        breaking_after(Duration::from_millis(100)),
    );
    let ino = file_of(&fs, b"f", USER);
    let told = Arc::new(Mutex::new(Vec::new()));
    let t = told.clone();
    fs.set_lease_break_notifier(Some(Arc::new(move |i| {
        t.lock().unwrap().push(i);
    })));
    let pin = fs.pin_range_for(ino, 0, 64 * KB, &user(USER)).unwrap();
    assert_eq!(truncate(&fs, ino), Ok(0));
    // Once when the break flagged the pin, once when it revoked it.
    assert_eq!(*told.lock().unwrap(), [ino, ino]);
    fs.unpin_range(pin);
}

#[test]
fn a_holder_that_lets_go_when_told_is_not_revoked() {
    let d = TestDev::new(64 * MB);
    let fs = mount(
        &d,
        Duration::from_secs(30),
        breaking_after(Duration::from_secs(20)),
    );
    let ino = file_of(&fs, b"f", USER);
    let pin = fs.pin_range_for(ino, 0, 64 * KB, &user(USER)).unwrap();
    let start = Instant::now();
    thread::scope(|s| {
        let t = s.spawn(|| truncate(&fs, ino));
        let until = Instant::now() + Duration::from_secs(10);
        while !pin.break_requested() {
            assert!(Instant::now() < until, "the break never asked for the pin");
            thread::sleep(Duration::from_millis(2));
        }
        fs.unpin_range(pin);
        assert_eq!(t.join().unwrap(), Ok(0));
    });
    assert!(start.elapsed() < Duration::from_secs(15));
    let s = fs.stats();
    assert_eq!(s.pins_revoked, 0);
    assert!(s.balanced());
}

#[test]
fn pins_past_a_users_limits_are_eagain_and_released_pins_make_room() {
    let d = TestDev::new(64 * MB);
    let policy = PinPolicy {
        max_pins_per_user: 2,
        max_pinned_bytes_per_user: Some(96 * KB),
        ..PinPolicy::default()
    };
    let fs = mount(&d, Duration::from_secs(30), policy);
    let ino = file_of(&fs, b"f", USER);
    let other = file_of(&fs, b"g", OTHER);
    let a = fs.pin_range_for(ino, 0, 32 * KB, &user(USER)).unwrap();
    let b = fs.pin_range_for(ino, 0, 32 * KB, &user(USER)).unwrap();
    assert_eq!(
        fs.pin_range_for(ino, 0, 4096, &user(USER)).err(),
        Some(Errno(libc::EAGAIN)),
        "a third pin"
    );
    // Another user has limits of its own.
    let c = fs.pin_range_for(other, 0, 4096, &user(OTHER)).unwrap();
    fs.unpin_range(b);
    assert_eq!(
        fs.pin_range_for(ino, 0, 96 * KB, &user(USER)).err(),
        Some(Errno(libc::EAGAIN)),
        "over the bytes"
    );
    let b = fs.pin_range_for(ino, 0, 64 * KB, &user(USER)).unwrap();
    assert_eq!(fs.pin_usage(USER).pins, 2);
    assert_eq!(fs.pin_usage(USER).bytes, 96 * KB);
    // CAP_SYS_RESOURCE (or CAP_SYS_ADMIN) lifts the limits.
    let res = PinCaps {
        sys_resource: true,
        ..PinCaps::default()
    };
    let free = fs.pin_range_for(ino, 0, MB, &with_caps(USER, res)).unwrap();
    assert_eq!(fs.pin_usage(USER).pins, 2, "not counted");
    for p in [a, b, c, free] {
        fs.unpin_range(p);
    }
    assert_eq!(fs.pin_usage(USER).pins, 0);
    assert!(fs.stats().balanced());
}

#[test]
fn by_default_a_user_pins_at_most_the_size_of_the_filesystem() {
    let d = TestDev::new(64 * MB);
    let fs = d.mount();
    let ino = file_of(&fs, b"f", USER);
    let data_bytes = fs.statfs().blocks * 4096;
    let mut pins = Vec::new();
    let mut err = None;
    while pins.len() < 4096 {
        match fs.pin_range_for(ino, 0, MB, &user(USER)) {
            Ok(p) => pins.push(p),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert_eq!(err, Some(Errno(libc::EAGAIN)));
    assert!(pins.len() as u64 * MB <= data_bytes);
    assert!((pins.len() as u64 + 1) * MB > data_bytes);
    for p in pins {
        fs.unpin_range(p);
    }
    assert!(fs.stats().balanced());
}

#[test]
fn capabilities_count_only_from_a_status_whose_fsuid_is_the_callers() {
    let status = "Name:\tx\nUid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000010200000\n";
    let caps = caps_from_status(status, 1000);
    assert_eq!(
        caps,
        PinCaps {
            lease: true,
            sys_admin: true,
            sys_resource: false,
        }
    );
    // Another fsuid: the pid is no longer the caller as the kernel saw it.
    assert_eq!(caps_from_status(status, 0), PinCaps::default());
    assert_eq!(
        caps_from_status("Uid:\t0\t0\t0\t0\n", 0),
        PinCaps::default()
    );
    assert_eq!(
        caps_from_status("Uid:\t0\t0\t0\t0\nCapEff:\t000001fffeffffff\n", 0),
        PinCaps {
            lease: true,
            sys_admin: true,
            sys_resource: false,
        }
    );
}

#[test]
fn this_process_is_seen_with_its_own_capabilities() {
    // SAFETY: getuid and gettid have no preconditions.
    let (uid, tid) = unsafe { (libc::geteuid(), libc::gettid()) };
    let me = PinHolder::of_process(tid as u32, uid);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(me.caps, caps_from_status(&status, uid));
    // A pid that does not exist has none.
    assert_eq!(PinHolder::of_process(0, uid).caps, PinCaps::default());
}
