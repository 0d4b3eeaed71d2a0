//! Open-but-unlinked files (orphans): data stays readable until the last release,
//! blocks come back after it, and an orphan left by an unclean stop is reclaimed at
//! the next mount.
use common::*;
use daxfs::{Errno, ROOT};
use daxfs_testkit as common;

const MB: u64 = 1 << 20;

/// A device whose root already has its first directory block (so later bfree
/// figures only move with file data).
fn setup(d: &TestDev) -> daxfs::DaxFs {
    let fs = d.mount();
    mkfile(&fs, ROOT, b"keep", b"");
    fs
}

#[test]
fn unlinked_open_file_stays_readable_until_release() {
    let d = TestDev::new(32 * MB);
    let fs = setup(&d);
    let data = pattern(300_000, 3);
    let a = fs.create(ROOT, b"f", 0o644, libc::O_RDWR, &root()).unwrap();
    fs.write(a.ino, 0, &data, false).unwrap();
    fs.unlink(ROOT, b"f").unwrap();
    assert_eq!(fs.lookup(ROOT, b"f").unwrap_err(), Errno::ENOENT);
    assert_eq!(fs.getattr(a.ino).unwrap().nlink, 0);
    assert_eq!(read_all(&fs, a.ino), data);
    // Still writable through the handle.
    fs.write(a.ino, 0, b"more", false).unwrap();
    fs.release(a.ino).unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap_err(), Errno::ENOENT);
}

#[test]
fn release_of_last_handle_frees_an_unlinked_files_blocks() {
    let d = TestDev::new(32 * MB);
    let fs = setup(&d);
    let s0 = fs.statfs();
    let a = fs.create(ROOT, b"f", 0o644, libc::O_RDWR, &root()).unwrap();
    fs.write(a.ino, 0, &pattern(2 << 20, 4), false).unwrap();
    fs.open(a.ino, libc::O_RDONLY).unwrap();
    fs.unlink(ROOT, b"f").unwrap();
    assert!(fs.statfs().bfree < s0.bfree - 500);
    fs.release(a.ino).unwrap();
    // One handle is still open.
    assert_eq!(fs.getattr(a.ino).unwrap().size, 2 << 20);
    fs.release(a.ino).unwrap();
    assert_eq!(fs.statfs(), s0);
}

#[test]
fn orphan_left_by_dropping_the_fs_is_reclaimed_at_next_mount() {
    let d = TestDev::new(32 * MB);
    let (ino, s0) = {
        let fs = setup(&d);
        let s0 = fs.statfs();
        let a = fs.create(ROOT, b"f", 0o644, libc::O_RDWR, &root()).unwrap();
        fs.write(a.ino, 0, &pattern(3 << 20, 5), false).unwrap();
        fs.unlink(ROOT, b"f").unwrap();
        // Dropped with the handle still open: no release.
        (a.ino, s0)
    };
    let fs = d.mount();
    assert_eq!(fs.getattr(ino).unwrap_err(), Errno::ENOENT);
    assert_eq!(fs.statfs(), s0);
}

#[test]
fn orphan_in_a_crash_image_is_reclaimed_at_mount() {
    let d = TestDev::new(32 * MB);
    let fs = setup(&d);
    let s0 = fs.statfs();
    let a = fs.create(ROOT, b"f", 0o644, libc::O_RDWR, &root()).unwrap();
    fs.write(a.ino, 0, &pattern(1 << 20, 6), false).unwrap();
    fs.unlink(ROOT, b"f").unwrap();
    let img = d.crash_image();
    fs.release(a.ino).unwrap();
    drop(fs);
    let fs2 = img.mount();
    assert_eq!(fs2.getattr(a.ino).unwrap_err(), Errno::ENOENT);
    assert_eq!(fs2.statfs(), s0);
    assert_eq!(fs2.ref_table().stats().violations, 0);
}

#[test]
fn unlinked_directory_held_open_reads_as_empty() {
    let d = TestDev::new(32 * MB);
    let fs = setup(&d);
    let a = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
    fs.open(a.ino, libc::O_RDONLY).unwrap();
    fs.rmdir(ROOT, b"d").unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap().nlink, 0);
    assert!(list(&fs, a.ino).is_empty());
    assert_eq!(
        fs.create(a.ino, b"x", 0o644, libc::O_RDWR, &root())
            .unwrap_err(),
        Errno::ENOENT
    );
    fs.release(a.ino).unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap_err(), Errno::ENOENT);
}

#[test]
fn rename_into_a_removed_directory_is_enoent() {
    let d = TestDev::new(32 * MB);
    let fs = setup(&d);
    let a = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
    let f = mkfile(&fs, ROOT, b"f", b"data");
    fs.open(a.ino, libc::O_RDONLY).unwrap();
    fs.rmdir(ROOT, b"d").unwrap();
    assert_eq!(
        fs.rename(ROOT, b"f", a.ino, b"f", 0).unwrap_err(),
        Errno::ENOENT
    );
    assert_eq!(fs.link(f, a.ino, b"g").unwrap_err(), Errno::ENOENT);
    fs.release(a.ino).unwrap();
    assert_eq!(fs.lookup(ROOT, b"f").unwrap().ino, f);
    assert_eq!(read_all(&fs, f), b"data");
}

#[test]
fn removed_directory_the_kernel_remembers_lives_until_forgotten() {
    let d = TestDev::new(32 * MB);
    let fs = setup(&d);
    let a = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
    fs.remember(a.ino).unwrap();
    fs.rmdir(ROOT, b"d").unwrap();
    let attr = fs.getattr(a.ino).unwrap();
    assert_eq!(attr.nlink, 0);
    assert!(list(&fs, a.ino).is_empty());
    assert_eq!(
        fs.mkdir(a.ino, b"x", 0o755, &root()).unwrap_err(),
        Errno::ENOENT
    );
    fs.forget(a.ino, 1).unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap_err(), Errno::ENOENT);
}

#[test]
fn unlinked_file_is_freed_by_the_last_of_release_and_forget() {
    let d = TestDev::new(32 * MB);
    let fs = setup(&d);
    let s0 = fs.statfs();
    let a = fs.create(ROOT, b"f", 0o644, libc::O_RDWR, &root()).unwrap();
    fs.remember(a.ino).unwrap();
    fs.remember(a.ino).unwrap();
    fs.write(a.ino, 0, &pattern(1 << 20, 7), false).unwrap();
    fs.unlink(ROOT, b"f").unwrap();
    fs.release(a.ino).unwrap();
    // Two kernel references are left: one forget is not enough.
    fs.forget(a.ino, 1).unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap().size, 1 << 20);
    fs.forget(a.ino, 1).unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap_err(), Errno::ENOENT);
    assert_eq!(fs.statfs(), s0);
}

#[test]
fn forgetting_a_linked_inode_frees_nothing() {
    let d = TestDev::new(32 * MB);
    let fs = setup(&d);
    let ino = mkfile(&fs, ROOT, b"f", b"data");
    fs.remember(ino).unwrap();
    fs.forget(ino, 5).unwrap();
    assert_eq!(read_all(&fs, ino), b"data");
    // Without references, unlink frees at once (the library user's case).
    fs.unlink(ROOT, b"f").unwrap();
    assert_eq!(fs.getattr(ino).unwrap_err(), Errno::ENOENT);
}

#[test]
fn remember_of_a_freed_inode_is_enoent() {
    let d = TestDev::new(32 * MB);
    let fs = setup(&d);
    let ino = mkfile(&fs, ROOT, b"f", b"data");
    fs.unlink(ROOT, b"f").unwrap();
    assert_eq!(fs.remember(ino).unwrap_err(), Errno::ENOENT);
}

#[test]
fn shutdown_frees_unlinked_inodes_the_kernel_never_forgot() {
    let d = TestDev::new(32 * MB);
    let s0 = {
        let fs = setup(&d);
        let s0 = fs.statfs();
        let a = fs.create(ROOT, b"f", 0o644, libc::O_RDWR, &root()).unwrap();
        fs.remember(a.ino).unwrap();
        fs.write(a.ino, 0, &pattern(1 << 20, 8), false).unwrap();
        fs.release(a.ino).unwrap();
        fs.unlink(ROOT, b"f").unwrap();
        assert_eq!(fs.getattr(a.ino).unwrap().nlink, 0);
        fs.shutdown().unwrap();
        assert_eq!(fs.statfs(), s0);
        s0
    };
    // Nothing left on media for the next mount to reclaim.
    let dev = std::sync::Arc::new(
        daxfs_pmem::Device::open(&d.path, daxfs_pmem::DeviceOptions::default()).unwrap(),
    );
    let report = daxfs_fsck::check(&dev, false, &mut |_, _, _| {});
    assert_eq!(report.stats.orphans, 0);
    assert!(report.is_clean());
    drop(dev);
    assert_eq!(d.mount().statfs(), s0);
}

/// generic/061's intermittent EIO: an inode number handed out again while the kernel
/// still held the old inode made the kernel mark its inode bad (fuse_stale_inode), so
/// I/O through it failed with EIO (or, worse, reached the new file).
#[test]
fn an_inode_number_the_kernel_still_holds_is_not_reused() {
    let d = TestDev::new(32 * MB);
    let fs = setup(&d);
    let f = mkfile(&fs, ROOT, b"f", b"old");
    fs.remember(f).unwrap();
    fs.unlink(ROOT, b"f").unwrap();
    let new: Vec<u64> = (0..4)
        .map(|i| mkfile(&fs, ROOT, format!("n{i}").as_bytes(), b"new"))
        .collect();
    assert!(!new.contains(&f));
    assert_eq!(read_all(&fs, f), b"old");
    fs.forget(f, 1).unwrap();
    // Free again: the lowest free number is handed out first.
    assert_eq!(mkfile(&fs, ROOT, b"later", b""), f);
}
