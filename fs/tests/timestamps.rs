//! Timestamp rules (ctime/mtime/atime) and setgid directories, as Linux gives them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use common::*;
use daxfs::{Cred, DaxFs, SetAttr, SetTime, ROOT};
use daxfs_format::Timespec;
use daxfs_testkit as common;
use std::time::Duration;

const MB: u64 = 1 << 20;

/// Lets the clock move so "changed" is observable.
fn tick() {
    std::thread::sleep(Duration::from_millis(2));
}

fn times(fs: &DaxFs, ino: u64) -> (Timespec, Timespec) {
    let a = fs.getattr(ino).unwrap();
    (a.mtime, a.ctime)
}

#[test]
fn new_inode_has_all_times_equal() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let a = fs.create(ROOT, b"f", 0o644, libc::O_RDWR, &root()).unwrap();
    assert_eq!(a.atime, a.mtime);
    assert_eq!(a.mtime, a.ctime);
    assert_eq!(a.ctime, a.btime);
    fs.release(a.ino).unwrap();
}

#[test]
fn write_changes_mtime_and_ctime() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    let (m0, c0) = times(&fs, f);
    tick();
    fs.write(f, 0, b"x", false).unwrap();
    let (m1, c1) = times(&fs, f);
    assert!(m1 > m0 && c1 > c0);
}

#[test]
fn truncate_changes_mtime_and_ctime() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"data");
    let (m0, c0) = times(&fs, f);
    tick();
    let c = SetAttr {
        size: Some(1),
        ..Default::default()
    };
    fs.setattr(f, &root(), &c).unwrap();
    let (m1, c1) = times(&fs, f);
    assert!(m1 > m0 && c1 > c0);
}

#[test]
fn create_changes_parent_mtime_and_ctime() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let (m0, c0) = times(&fs, ROOT);
    tick();
    mkfile(&fs, ROOT, b"f", b"");
    let (m1, c1) = times(&fs, ROOT);
    assert!(m1 > m0 && c1 > c0);
}

#[test]
fn link_changes_inode_ctime_and_parent_times() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    let (fm0, fc0) = times(&fs, f);
    let (pm0, pc0) = times(&fs, ROOT);
    tick();
    fs.link(f, ROOT, b"g").unwrap();
    let (fm1, fc1) = times(&fs, f);
    let (pm1, pc1) = times(&fs, ROOT);
    assert!(fc1 > fc0);
    assert_eq!(fm1, fm0, "link leaves the inode's mtime");
    assert!(pm1 > pm0 && pc1 > pc0);
}

#[test]
fn unlink_changes_inode_ctime_and_parent_times() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    fs.link(f, ROOT, b"g").unwrap();
    let (_, fc0) = times(&fs, f);
    let (pm0, pc0) = times(&fs, ROOT);
    tick();
    fs.unlink(ROOT, b"g").unwrap();
    let (_, fc1) = times(&fs, f);
    let (pm1, pc1) = times(&fs, ROOT);
    assert!(fc1 > fc0);
    assert!(pm1 > pm0 && pc1 > pc0);
}

#[test]
fn rename_changes_both_parents_times_and_the_inodes_ctime() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let p1 = fs.mkdir(ROOT, b"p1", 0o755, &root()).unwrap().ino;
    let p2 = fs.mkdir(ROOT, b"p2", 0o755, &root()).unwrap().ino;
    let f = mkfile(&fs, p1, b"f", b"");
    let (m1a, c1a) = times(&fs, p1);
    let (m2a, c2a) = times(&fs, p2);
    let (fma, fca) = times(&fs, f);
    tick();
    fs.rename(p1, b"f", p2, b"g", 0).unwrap();
    let (m1b, c1b) = times(&fs, p1);
    let (m2b, c2b) = times(&fs, p2);
    let (fmb, fcb) = times(&fs, f);
    assert!(m1b > m1a && c1b > c1a);
    assert!(m2b > m2a && c2b > c2a);
    assert!(fcb > fca);
    assert_eq!(fmb, fma);
}

#[test]
fn setattr_with_explicit_times_stores_them_to_the_nanosecond() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    let at = Timespec {
        sec: 1_000_000_000,
        nsec: 123_456_789,
    };
    let mt = Timespec {
        sec: 1_500_000_000,
        nsec: 999_999_999,
    };
    let c = SetAttr {
        atime: Some(SetTime::At(at)),
        mtime: Some(SetTime::At(mt)),
        ..Default::default()
    };
    let a = fs.setattr(f, &root(), &c).unwrap();
    assert_eq!((a.atime, a.mtime), (at, mt));
    assert!(a.ctime > mt, "ctime moves to now");
    drop(fs);
    let fs = d.mount();
    let a = fs.getattr(f).unwrap();
    assert_eq!((a.atime, a.mtime), (at, mt));
}

#[test]
fn setattr_with_time_now_uses_the_current_time() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    let old = Timespec { sec: 10, nsec: 5 };
    let c = SetAttr {
        atime: Some(SetTime::At(old)),
        mtime: Some(SetTime::At(old)),
        ..Default::default()
    };
    fs.setattr(f, &root(), &c).unwrap();
    let before = daxfs::now();
    let c = SetAttr {
        mtime: Some(SetTime::Now),
        ..Default::default()
    };
    let a = fs.setattr(f, &root(), &c).unwrap();
    assert!(a.mtime >= before);
    assert_eq!(a.atime, old, "UTIME_OMIT leaves atime");
}

#[test]
fn setattr_mode_keeps_file_type_and_changes_ctime() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    let (m0, c0) = times(&fs, f);
    tick();
    let c = SetAttr {
        mode: Some(0o4711),
        ..Default::default()
    };
    let a = fs.setattr(f, &root(), &c).unwrap();
    assert_eq!(a.perm, 0o4711);
    assert_eq!(a.kind, daxfs::FileKind::File);
    assert!(a.ctime > c0);
    assert_eq!(a.mtime, m0);
}

#[test]
fn setattr_owner_is_stored() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    let c = SetAttr {
        uid: Some(1234),
        gid: Some(567),
        ..Default::default()
    };
    fs.setattr(f, &root(), &c).unwrap();
    let a = fs.getattr(f).unwrap();
    assert_eq!((a.uid, a.gid), (1234, 567));
}

#[test]
fn setgid_directory_gives_new_files_its_group() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let dir = fs.mkdir(ROOT, b"d", 0o2775, &root()).unwrap();
    let c = SetAttr {
        gid: Some(500),
        mode: Some(0o2775),
        ..Default::default()
    };
    fs.setattr(dir.ino, &root(), &c).unwrap();
    let user = Cred {
        uid: 1000,
        gid: 1000,
        pid: 1,
    };
    let f = fs
        .create(dir.ino, b"f", 0o644, libc::O_RDWR, &user)
        .unwrap();
    fs.release(f.ino).unwrap();
    assert_eq!((f.uid, f.gid), (1000, 500));
    assert_eq!(f.perm & libc::S_ISGID as u16, 0);
}

#[test]
fn setgid_directory_subdirectories_inherit_the_bit() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
    let c = SetAttr {
        gid: Some(500),
        mode: Some(0o2755),
        ..Default::default()
    };
    fs.setattr(dir.ino, &root(), &c).unwrap();
    let user = Cred {
        uid: 1000,
        gid: 1000,
        pid: 1,
    };
    let sub = fs.mkdir(dir.ino, b"sub", 0o755, &user).unwrap();
    assert_eq!(sub.gid, 500);
    assert_ne!(sub.perm & libc::S_ISGID as u16, 0);
}

#[test]
fn read_updates_atime_by_relatime_rules() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"data");
    let old = Timespec { sec: 10, nsec: 0 };
    let c = SetAttr {
        atime: Some(SetTime::At(old)),
        ..Default::default()
    };
    fs.setattr(f, &root(), &c).unwrap();
    let mut b = [0u8; 4];
    fs.read(f, 0, &mut b).unwrap();
    assert!(fs.getattr(f).unwrap().atime > old);
}
