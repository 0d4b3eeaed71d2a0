//! The non-sleeping attempts (`DaxFs::try_setattr`, `try_open`, `try_create`,
//! `try_fallocate`) that the FUSE adapter makes on its worker threads before it hands a
//! request to a waiter thread: on a pinned range they give up at once with nothing
//! changed, and otherwise they do the whole operation.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use common::*;
use daxfs::{DaxFs, Errno, FsOptions, SetAttr, ROOT};
use daxfs_testkit as common;
use std::time::{Duration, Instant};

const MB: u64 = 1 << 20;
const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;

/// A mount whose layout_timeout is far longer than any attempt may take.
fn mount(d: &TestDev) -> DaxFs {
    let o = FsOptions {
        layout_timeout: Duration::from_secs(30),
        ..FsOptions::default()
    };
    DaxFs::mount(&d.path, o).unwrap()
}

fn truncate_to(size: u64) -> SetAttr {
    SetAttr {
        size: Some(size),
        ..Default::default()
    }
}

/// Runs `f`, asserting it returned well before layout_timeout.
fn at_once<T>(f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    r
}

/// No lease break was signalled and nobody waited: the attempt left no trace.
fn assert_no_break(fs: &DaxFs) {
    let s = fs.stats();
    assert_eq!(
        (s.layout_breaks, s.lease_breaks, s.waits),
        (0, 0, 0),
        "{s:?}"
    );
}

#[test]
fn try_setattr_of_a_pinned_block_gives_up_at_once_and_changes_nothing() {
    let d = TestDev::new(64 * MB);
    let fs = mount(&d);
    let data = pattern(16384, 3);
    let ino = mkfile(&fs, ROOT, b"f", &data);
    let pin = fs.pin_range(ino, 8192, 4096).unwrap();
    assert!(at_once(|| fs.try_setattr(ino, &root(), &truncate_to(0))).is_none());
    assert_eq!(fs.getattr(ino).unwrap().size, 16384);
    assert_eq!(read_all(&fs, ino), data);
    assert_no_break(&fs);
    fs.unpin_range(pin);
    let a = fs
        .try_setattr(ino, &root(), &truncate_to(0))
        .unwrap()
        .unwrap();
    assert_eq!(a.size, 0);
}

#[test]
fn try_setattr_that_frees_no_pinned_block_does_the_truncate() {
    let d = TestDev::new(64 * MB);
    let fs = mount(&d);
    let ino = mkfile(&fs, ROOT, b"f", &pattern(16384, 4));
    let pin = fs.pin_range(ino, 0, 4096).unwrap();
    // Blocks 1..4 go, block 0 (pinned) stays.
    let a = at_once(|| fs.try_setattr(ino, &root(), &truncate_to(4096)));
    assert_eq!(a.unwrap().unwrap().size, 4096);
    assert_no_break(&fs);
    fs.unpin_range(pin);
}

#[test]
fn try_open_with_o_trunc_of_a_pinned_file_gives_up_and_leaves_it_closed() {
    let d = TestDev::new(64 * MB);
    let fs = mount(&d);
    let data = pattern(8192, 5);
    let ino = mkfile(&fs, ROOT, b"f", &data);
    let pin = fs.pin_range(ino, 0, 4096).unwrap();
    assert!(at_once(|| fs.try_open(ino, libc::O_WRONLY | libc::O_TRUNC)).is_none());
    assert_eq!(read_all(&fs, ino), data);
    assert_no_break(&fs);
    // Had the attempt kept an open, the unlinked file would outlive the pin as an orphan.
    fs.unpin_range(pin);
    fs.unlink(ROOT, b"f").unwrap();
    assert_eq!(fs.getattr(ino).err(), Some(Errno::ENOENT));
}

#[test]
fn try_open_of_a_pinned_file_without_o_trunc_opens_it() {
    let d = TestDev::new(64 * MB);
    let fs = mount(&d);
    let ino = mkfile(&fs, ROOT, b"f", &pattern(8192, 6));
    let pin = fs.pin_range(ino, 0, 4096).unwrap();
    assert_eq!(fs.try_open(ino, libc::O_RDWR), Some(Ok(())));
    fs.release(ino).unwrap();
    fs.unpin_range(pin);
}

#[test]
fn try_open_with_o_trunc_of_an_unpinned_file_truncates_it() {
    let d = TestDev::new(64 * MB);
    let fs = mount(&d);
    let ino = mkfile(&fs, ROOT, b"f", &pattern(8192, 7));
    assert_eq!(
        fs.try_open(ino, libc::O_WRONLY | libc::O_TRUNC),
        Some(Ok(()))
    );
    assert_eq!(fs.getattr(ino).unwrap().size, 0);
    fs.release(ino).unwrap();
}

#[test]
fn try_create_with_o_trunc_of_an_existing_pinned_file_gives_up() {
    let d = TestDev::new(64 * MB);
    let fs = mount(&d);
    let data = pattern(8192, 8);
    let ino = mkfile(&fs, ROOT, b"f", &data);
    let pin = fs.pin_range(ino, 4096, 4096).unwrap();
    let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
    assert!(at_once(|| fs.try_create(ROOT, b"f", 0o644, flags, &root())).is_none());
    assert_eq!(read_all(&fs, ino), data);
    assert_no_break(&fs);
    fs.unpin_range(pin);
    let a = fs.try_create(ROOT, b"f", 0o644, flags, &root());
    assert_eq!(a.unwrap().unwrap().size, 0);
    fs.release(ino).unwrap();
}

#[test]
fn try_fallocate_punch_or_zero_of_a_pinned_block_gives_up_and_keeps_the_data() {
    let d = TestDev::new(64 * MB);
    let fs = mount(&d);
    let data = pattern(16384, 9);
    let ino = mkfile(&fs, ROOT, b"f", &data);
    let pin = fs.pin_range(ino, 4096, 4096).unwrap();
    for mode in [PUNCH, ZERO] {
        assert!(at_once(|| fs.try_fallocate(ino, 0, 16384, mode)).is_none());
    }
    assert_eq!(read_all(&fs, ino), data);
    assert_no_break(&fs);
    // A range that leaves the pinned block alone needs no wait.
    assert_eq!(fs.try_fallocate(ino, 8192, 8192, PUNCH), Some(Ok(())));
    fs.unpin_range(pin);
    assert_eq!(fs.try_fallocate(ino, 0, 16384, PUNCH), Some(Ok(())));
    assert!(read_all(&fs, ino).iter().all(|&b| b == 0));
}

#[test]
fn try_fallocate_that_is_invalid_fails_at_once_even_on_a_pinned_file() {
    let d = TestDev::new(64 * MB);
    let fs = mount(&d);
    let ino = mkfile(&fs, ROOT, b"f", &pattern(8192, 10));
    let pin = fs.pin_range(ino, 0, 4096).unwrap();
    // Punch without KEEP_SIZE, and a collapse that is not block aligned.
    let punch_only = libc::FALLOC_FL_PUNCH_HOLE;
    assert_eq!(
        fs.try_fallocate(ino, 0, 4096, punch_only),
        Some(Err(Errno::EOPNOTSUPP))
    );
    let collapse = libc::FALLOC_FL_COLLAPSE_RANGE;
    assert_eq!(
        fs.try_fallocate(ino, 100, 4096, collapse),
        Some(Err(Errno::EINVAL))
    );
    fs.unpin_range(pin);
}

/// A daxfs mount served by two FUSE workers, for the tests that need the kernel (root
/// and /dev/fuse; they skip without).
struct Mounted {
    session: Option<fuser::BackgroundSession>,
    fs: std::sync::Arc<DaxFs>,
    _dev: TestDev,
    dir: std::path::PathBuf,
}

impl Mounted {
    fn new(layout_timeout: Duration) -> Option<Mounted> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let fuse = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .is_ok();
        if !root || !fuse {
            eprintln!("SKIPPED: mounting needs root and /dev/fuse");
            return None;
        }
        let dev = TestDev::new(64 * MB);
        let o = FsOptions {
            layout_timeout,
            ..FsOptions::default()
        };
        let fs = std::sync::Arc::new(DaxFs::mount(&dev.path, o).unwrap());
        let dir = std::path::PathBuf::from(format!("{}.mnt", dev.path.display()));
        std::fs::create_dir(&dir).unwrap();
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![fuser::MountOption::DefaultPermissions];
        cfg.n_threads = Some(2);
        let adapter = daxfs_fuse::adapter::FuseAdapter::new(fs.clone());
        let session = fuser::spawn_mount(adapter, &dir, &cfg).unwrap();
        Some(Mounted {
            session: Some(session),
            fs,
            _dev: dev,
            dir,
        })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
        let _ = self.fs.shutdown();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn opens_with_o_trunc_waiting_for_a_pin_leave_the_fuse_workers_free() {
    use std::os::unix::fs::MetadataExt;
    let Some(m) = Mounted::new(Duration::from_secs(15)) else {
        return;
    };
    let (f, g) = (m.dir.join("f"), m.dir.join("g"));
    std::fs::write(&f, pattern(8192, 11)).unwrap();
    std::fs::write(&g, b"other").unwrap();
    let ino = std::fs::metadata(&f).unwrap().ino();
    let pin = m.fs.pin_range(ino, 0, 4096).unwrap();
    // Four opens per worker, each waiting for the pin.
    let n = 8;
    let openers: Vec<_> = (0..n)
        .map(|_| {
            let f = f.clone();
            std::thread::spawn(move || {
                std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&f)
                    .map(drop)
            })
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(10);
    while m.fs.stats().layout_breaks < n && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let waiting = m.fs.stats().layout_breaks;
    // Everything else is served meanwhile: a lookup, a read, a create.
    let t = Instant::now();
    let missing = std::fs::metadata(m.dir.join("missing")).is_err();
    let read = std::fs::read(&g).unwrap();
    std::fs::write(m.dir.join("h"), b"new").unwrap();
    let served_in = t.elapsed();
    let size_while_pinned = std::fs::metadata(&f).unwrap().len();
    // Nothing panics before every request has been answered: a test that dies with
    // requests in flight to its own FUSE server leaves them stuck in the kernel.
    m.fs.unpin_range(pin);
    let opened: Vec<_> = openers.into_iter().map(|o| o.join().unwrap()).collect();
    assert_eq!(waiting, n, "{:?}", m.fs.stats());
    assert!(served_in < Duration::from_secs(5), "took {served_in:?}");
    assert!(missing);
    assert_eq!(read, b"other");
    assert_eq!(size_while_pinned, 8192);
    assert!(opened.iter().all(|r| r.is_ok()), "{opened:?}");
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 0);
}
