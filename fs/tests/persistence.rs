//! Every kind of change is durable when the call returns: it survives a clean
//! shutdown + remount, and also a crash image taken right after the calls (the state
//! a killed daemon leaves, with no shutdown).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use common::*;
use daxfs::{DaxFs, FileKind, SetAttr, SetTime, ROOT};
use daxfs_format::Timespec;
use daxfs_testkit as common;

const MB: u64 = 1 << 20;

/// Applies one change of every kind; returns nothing (check_all knows the result).
fn make_changes(fs: &DaxFs) {
    let r = root();
    let d = fs.mkdir(ROOT, b"dir", 0o750, &r).unwrap().ino;
    let sub = fs.mkdir(d, b"sub", 0o700, &r).unwrap().ino;
    fs.mkdir(d, b"gone", 0o700, &r).unwrap();
    fs.rmdir(d, b"gone").unwrap();
    let f = mkfile(fs, d, b"file", &pattern(300_000, 1));
    fs.write(f, 1 << 20, b"tail", false).unwrap();
    fs.link(f, sub, b"hard").unwrap();
    fs.symlink(d, b"link", b"../somewhere", &r).unwrap();
    fs.mknod(d, b"fifo", libc::S_IFIFO | 0o600, 0, &r).unwrap();
    fs.mknod(
        d,
        b"chr",
        libc::S_IFCHR | 0o600,
        libc::makedev(1, 3) as u32,
        &r,
    )
    .unwrap();
    mkfile(fs, d, b"unlinked", b"bye");
    fs.unlink(d, b"unlinked").unwrap();
    mkfile(fs, d, b"old", b"renamed");
    fs.rename(d, b"old", sub, b"new", 0).unwrap();
    mkfile(fs, d, b"x1", b"one");
    mkfile(fs, d, b"x2", b"two");
    fs.rename(d, b"x1", d, b"x2", libc::RENAME_EXCHANGE)
        .unwrap();
    let t = mkfile(fs, d, b"trunc", &pattern(100_000, 2));
    fs.setattr(
        t,
        &r,
        &SetAttr {
            size: Some(5000),
            mode: Some(0o600),
            uid: Some(7),
            gid: Some(8),
            mtime: Some(SetTime::At(Timespec {
                sec: 1234,
                nsec: 5678,
            })),
            ..Default::default()
        },
    )
    .unwrap();
    let p = mkfile(fs, d, b"punched", &pattern(40_960, 3));
    fs.fallocate(
        p,
        8192,
        8192,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    )
    .unwrap();
    fs.fallocate(p, 0, 4096, libc::FALLOC_FL_COLLAPSE_RANGE)
        .unwrap();
    fs.setxattr(f, b"user.k", b"v", 0).unwrap();
    fs.setxattr(d, b"trusted.t", b"dirval", 0).unwrap();
    fs.set_dax_flag(f, true).unwrap();
}

fn check_all(fs: &DaxFs) {
    let d = fs.lookup(ROOT, b"dir").unwrap();
    assert_eq!((d.kind, d.perm, d.nlink), (FileKind::Dir, 0o750, 3));
    let d = d.ino;
    let sub = fs.lookup(d, b"sub").unwrap().ino;
    assert_eq!(fs.lookup(d, b"gone").unwrap_err(), daxfs::Errno::ENOENT);
    let f = fs.lookup(d, b"file").unwrap();
    assert_eq!(f.nlink, 2);
    assert_eq!(f.size, (1 << 20) + 4);
    assert!(f.dax);
    let data = read_all(fs, f.ino);
    assert_eq!(&data[..300_000], &pattern(300_000, 1)[..]);
    assert!(data[300_000..1 << 20].iter().all(|&b| b == 0));
    assert_eq!(&data[1 << 20..], b"tail");
    assert_eq!(fs.lookup(sub, b"hard").unwrap().ino, f.ino);
    let l = fs.lookup(d, b"link").unwrap();
    assert_eq!(fs.readlink(l.ino).unwrap(), b"../somewhere");
    assert_eq!(fs.lookup(d, b"fifo").unwrap().kind, FileKind::Fifo);
    let c = fs.lookup(d, b"chr").unwrap();
    assert_eq!(
        (c.kind, c.rdev),
        (FileKind::CharDev, libc::makedev(1, 3) as u32)
    );
    assert_eq!(fs.lookup(d, b"unlinked").unwrap_err(), daxfs::Errno::ENOENT);
    assert_eq!(fs.lookup(d, b"old").unwrap_err(), daxfs::Errno::ENOENT);
    assert_eq!(
        read_all(fs, fs.lookup(sub, b"new").unwrap().ino),
        b"renamed"
    );
    assert_eq!(read_all(fs, fs.lookup(d, b"x1").unwrap().ino), b"two");
    assert_eq!(read_all(fs, fs.lookup(d, b"x2").unwrap().ino), b"one");
    let t = fs.lookup(d, b"trunc").unwrap();
    assert_eq!((t.size, t.perm, t.uid, t.gid), (5000, 0o600, 7, 8));
    assert_eq!(
        t.mtime,
        Timespec {
            sec: 1234,
            nsec: 5678
        }
    );
    assert_eq!(read_all(fs, t.ino), &pattern(100_000, 2)[..5000]);
    let p = fs.lookup(d, b"punched").unwrap();
    let mut want = pattern(40_960, 3);
    want[8192..16384].fill(0);
    want.drain(..4096);
    assert_eq!(read_all(fs, p.ino), want);
    assert_eq!(fs.getxattr(f.ino, b"user.k").unwrap(), b"v");
    assert_eq!(fs.getxattr(d, b"trusted.t").unwrap(), b"dirval");
    let mut names: Vec<Vec<u8>> = list(fs, d).into_iter().map(|(n, _)| n).collect();
    names.sort();
    let want: Vec<&[u8]> = vec![
        b"chr", b"fifo", b"file", b"link", b"punched", b"sub", b"trunc", b"x1", b"x2",
    ];
    assert_eq!(names, want);
    assert_eq!(fs.ref_table().stats().violations, 0);
}

#[test]
fn every_change_survives_shutdown_and_remount() {
    let d = TestDev::new(32 * MB);
    let s = {
        let fs = d.mount();
        make_changes(&fs);
        check_all(&fs);
        let s = fs.statfs();
        fs.shutdown().unwrap();
        s
    };
    let fs = d.mount();
    check_all(&fs);
    assert_eq!(fs.statfs(), s);
}

#[test]
fn every_change_survives_a_crash_without_shutdown() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    make_changes(&fs);
    let s = fs.statfs();
    let img = d.crash_image();
    let fs2 = img.mount();
    check_all(&fs2);
    assert_eq!(fs2.statfs(), s);
    drop(fs);
}

#[test]
fn crash_image_after_each_call_mounts_and_matches() {
    // After every single call the image must mount and show that call's effect.
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let r = root();
    let dir = fs.mkdir(ROOT, b"a", 0o755, &r).unwrap().ino;
    assert!(d.crash_image().mount().lookup(ROOT, b"a").is_ok());
    let f = fs.create(dir, b"f", 0o644, libc::O_RDWR, &r).unwrap().ino;
    assert!(d.crash_image().mount().lookup(dir, b"f").is_ok());
    fs.write(f, 0, b"hello", false).unwrap();
    assert_eq!(read_all(&d.crash_image().mount(), f), b"hello");
    fs.rename(dir, b"f", ROOT, b"g", 0).unwrap();
    assert_eq!(d.crash_image().mount().lookup(ROOT, b"g").unwrap().ino, f);
    fs.unlink(ROOT, b"g").unwrap();
    // Unlinked while open: an orphan, reclaimed when the crash image is mounted.
    let fs2 = d.crash_image().mount();
    assert!(fs2.getattr(f).is_err());
    fs.release(f).unwrap();
    fs.rmdir(ROOT, b"a").unwrap();
    assert!(list(&d.crash_image().mount(), ROOT).is_empty());
}

#[test]
fn repeated_remounts_keep_the_filesystem_unchanged() {
    let d = TestDev::new(32 * MB);
    {
        let fs = d.mount();
        make_changes(&fs);
    }
    let s = d.mount().statfs();
    for _ in 0..3 {
        let fs = d.mount();
        check_all(&fs);
        assert_eq!(fs.statfs(), s);
    }
}
