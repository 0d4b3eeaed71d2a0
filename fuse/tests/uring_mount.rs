//! The mount served over FUSE io_uring (`-o io_uring`, `daxfs_fuse::uring::transport`):
//! the real adapter on a real daxfs device, the kernel's requests fetched and answered
//! through the per-CPU ring queues, checked with ordinary system calls. Needs root and a
//! kernel with `CONFIG_FUSE_IO_URING`; skipped (loudly) without. `enable_uring` is set
//! to Y only around INIT and always restored; a watchdog aborts the connection through
//! fusectl if the test hangs (a request the ring never answers would wedge its caller).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking

use daxfs::{DaxFs, FsOptions};
use daxfs_fuse::adapter::FuseAdapter;
use daxfs_fuse::ioctl::{self, Transport};
use daxfs_fuse::uring::transport;
use daxfs_testkit::TestDev;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const FUSECTL: &str = "/sys/fs/fuse/connections";
/// Serialises the tests of this file: each sets `enable_uring` around its INIT.
use daxfs_testkit::uring::{connection, skip_reason, EnableUring, ENABLE_URING};

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_mount_over_io_uring_serves_files_directories_xattrs_and_deferred_truncates() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .contains(" fusectl ")
    {
        // The watchdog needs it; left mounted (as the system usually has it).
        let _ = std::process::Command::new("mount")
            .args(["-t", "fusectl", "none", FUSECTL])
            .status();
    }
    let dev = TestDev::new(64 << 20);
    let o = FsOptions {
        layout_timeout: Duration::from_secs(20),
        ..FsOptions::default()
    };
    let fs = Arc::new(DaxFs::mount(&dev.path, o).expect("core mount"));
    let dir = PathBuf::from(format!("{}.mnt", dev.path.display()));
    std::fs::create_dir(&dir).expect("mountpoint");

    let mut adapter = FuseAdapter::new(fs.clone());
    adapter.want_io_uring(true);
    let ring_slot = adapter.ring_slot();
    let on_ring = adapter.on_ring_flag();
    let notifier = adapter.notifier_slot();
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![fuser::MountOption::DefaultPermissions];
    cfg.n_threads = Some(2);
    let mut enable = EnableUring::set();
    let session = fuser::Session::new(adapter, &dir, &cfg);
    enable.restore();
    let session = session.expect("mount");
    *notifier.lock().unwrap() = Some(session.notifier());
    let grant = match ring_slot.get().expect("INIT ran") {
        Ok(g) => g,
        Err(why) => panic!("io_uring not granted: {why}"),
    };
    let rings = transport::start(
        session.as_fd(),
        grant,
        notifier.clone(),
        daxfs_fuse::mount_options::DEFAULT_URING_DEPTH,
        Duration::ZERO,
    )
    .expect("every queue registers");
    let bg = session.spawn().expect("session loop");
    let conn = connection(&dir);
    let (dog_tx, dog_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = dog_rx.recv_timeout(Duration::from_secs(90)) {
            eprintln!("watchdog: aborting connection {conn}");
            let _ = std::fs::write(format!("{FUSECTL}/{conn}/abort"), "1");
        }
    });

    let before = rings.served.load(Ordering::Relaxed);
    let outcome = std::panic::catch_unwind(|| exercise(&dir, &fs));
    let over_ring = rings.served.load(Ordering::Relaxed) - before;
    let transport_seen = ioctl::read_stats_and_transport(&dir).map(|(_, t)| t);
    let flag = on_ring.load(Ordering::Relaxed);

    let _ = bg.umount_and_join();
    rings.stop(Duration::from_secs(5));
    drop(dog_tx);
    let _ = fs.shutdown();
    let _ = std::fs::remove_dir(&dir);
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
    eprintln!("{over_ring} requests over the ring, transport {transport_seen:?}");
    assert!(flag, "the adapter says it is not on the ring");
    assert_eq!(transport_seen.unwrap(), Some(Transport::IoUring));
    // A few hundred requests at least (creates, writes, listings, ...), all over the ring.
    assert!(
        over_ring >= 200,
        "only {over_ring} requests came over the ring"
    );
}

#[test]
fn io_uring_asked_for_but_not_offered_serves_dev_fuse_and_says_so() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dev = TestDev::new(64 << 20);
    let fs = Arc::new(DaxFs::mount(&dev.path, FsOptions::default()).expect("core mount"));
    let dir = PathBuf::from(format!("{}.mnt", dev.path.display()));
    std::fs::create_dir(&dir).expect("mountpoint");
    let mut adapter = FuseAdapter::new(fs.clone());
    adapter.want_io_uring(true);
    let ring_slot = adapter.ring_slot();
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![fuser::MountOption::DefaultPermissions];
    // enable_uring N: the kernel does not offer FUSE_OVER_IO_URING.
    let previous = std::fs::read_to_string(ENABLE_URING).expect("read enable_uring");
    std::fs::write(ENABLE_URING, "N").expect("set enable_uring=N");
    let session = fuser::Session::new(adapter, &dir, &cfg);
    if let Err(e) = std::fs::write(ENABLE_URING, previous.trim()) {
        eprintln!("enable_uring: restoring {} FAILED: {e}", previous.trim());
    }
    let bg = session.expect("mount").spawn().expect("session loop");
    let written = std::fs::write(dir.join("f"), b"over /dev/fuse");
    let read = std::fs::read(dir.join("f"));
    let t = ioctl::read_stats_and_transport(&dir).map(|(_, t)| t);
    let _ = bg.umount_and_join();
    let _ = fs.shutdown();
    let _ = std::fs::remove_dir(&dir);
    let why = match ring_slot.get().expect("INIT ran") {
        Ok(_) => panic!("io_uring granted with enable_uring=N"),
        Err(why) => why.clone(),
    };
    assert!(why.contains("did not offer FUSE_OVER_IO_URING"), "{why}");
    written.unwrap();
    assert_eq!(read.unwrap(), b"over /dev/fuse");
    assert_eq!(t.unwrap(), Some(Transport::DevFuse));
}

/// The system calls, each checked, including a truncate that waits for a pin (answered
/// later from a waiter thread through the queue's mailbox) while others are served.
fn exercise(m: &Path, fs: &DaxFs) {
    let f = m.join("f");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&f, &data).unwrap();
    assert_eq!(std::fs::read(&f).unwrap(), data, "read back");

    let d = m.join("d");
    std::fs::create_dir(&d).unwrap();
    for i in 0..150 {
        std::fs::write(d.join(format!("file-with-a-long-name-{i:04}")), [i as u8]).unwrap();
    }
    let mut names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 150, "listing");
    assert_eq!(names[7], "file-with-a-long-name-0007");

    std::fs::rename(d.join(&names[0]), m.join("moved")).unwrap();
    assert_eq!(std::fs::read(m.join("moved")).unwrap(), [0u8]);
    std::fs::remove_file(m.join("moved")).unwrap();
    assert!(std::fs::metadata(m.join("moved")).is_err());
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 149);

    let c = std::ffi::CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid NUL-terminated strings and a 5-byte value.
    let r = unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"user.k".as_ptr(),
            b"value".as_ptr().cast(),
            5,
            0,
        )
    };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
    let mut buf = [0u8; 16];
    // SAFETY: as above; `buf` is 16 writable bytes.
    let n = unsafe { libc::getxattr(c.as_ptr(), c"user.k".as_ptr(), buf.as_mut_ptr().cast(), 16) };
    assert_eq!(&buf[..usize::try_from(n).unwrap()], b"value");

    // A truncate that must wait for a pin: deferred, other requests go on meanwhile.
    let ino = std::fs::metadata(&f).unwrap().ino();
    let pin = fs.pin_range(ino, 0, 4096).unwrap();
    let breaks = fs.stats().layout_breaks;
    let f2 = f.clone();
    let truncating = std::thread::spawn(move || {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f2)
            .and_then(|h| h.set_len(0))
    });
    wait_until("the truncate to wait for the pin", || {
        fs.stats().layout_breaks > breaks
    });
    let t = Instant::now();
    std::fs::write(m.join("meanwhile"), b"served").unwrap();
    let meanwhile = std::fs::read(m.join("meanwhile")).unwrap();
    let size_while_pinned = std::fs::metadata(&f).unwrap().len();
    let served_in = t.elapsed();
    // Unpin before any assertion: the waiting truncate must be answered first.
    fs.unpin_range(pin);
    let truncated = truncating.join().unwrap();
    assert!(truncated.is_ok(), "{truncated:?}");
    assert_eq!(meanwhile, b"served");
    assert_eq!(size_while_pinned, data.len() as u64);
    assert!(served_in < Duration::from_secs(5), "took {served_in:?}");
    assert_eq!(
        std::fs::metadata(&f).unwrap().len(),
        0,
        "truncated after the unpin"
    );
}
