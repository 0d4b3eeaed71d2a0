//! The non-sleeping attempts (`DaxFs::try_setattr`, `try_open`, `try_create`,
//! `try_fallocate`) that the FUSE adapter makes on its worker threads before it hands a
//! request to a waiter thread: on a pinned range they give up at once with nothing
//! changed, and otherwise they do the whole operation.
mod common;
use common::*;
use daxfs::{DaxFs, Errno, FsOptions, SetAttr, ROOT};
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
