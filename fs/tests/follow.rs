//! Followers (`FsOptions::follow`): a writer DaxFs and a follower DaxFs on one device
//! file; the follower sees every committed change after a refresh, refuses changes, reloads
//! everything when the writer laps its log cursor, and a reused inode number is ESTALE for
//! the (ino, generation) the follower handed out before.
// A test reports failure by panicking.
#![allow(clippy::unwrap_used)]
use common::*;
use daxfs::{DaxFs, Errno, FsOptions, SetAttr, ROOT};
use daxfs_testkit as common;
use std::time::Duration;

const MB: u64 = 1 << 20;

fn follower(d: &TestDev) -> DaxFs {
    DaxFs::mount(
        &d.path,
        FsOptions {
            follow: true,
            ..Default::default()
        },
    )
    .unwrap()
}

fn sync(f: &DaxFs) {
    f.follow_sync(Duration::from_secs(10)).unwrap();
}

fn ino_of(fs: &DaxFs, path: &[&[u8]]) -> Result<u64, Errno> {
    let mut at = ROOT;
    for n in path {
        at = fs.lookup(at, n)?.ino;
    }
    Ok(at)
}

#[test]
fn a_follower_mounts_while_the_writer_is_live_and_sees_its_tree() {
    let d = TestDev::new(32 * MB);
    let w = d.mount();
    mkfile(&w, ROOT, b"before", b"hello");
    let f = follower(&d);
    assert!(f.is_follower());
    let ino = ino_of(&f, &[b"before"]).unwrap();
    assert_eq!(read_all(&f, ino), b"hello");
}

#[test]
fn creates_writes_and_mkdirs_become_visible_after_a_refresh() {
    let d = TestDev::new(32 * MB);
    let w = d.mount();
    let f = follower(&d);
    assert_eq!(ino_of(&f, &[b"a"]), Err(Errno::ENOENT));
    let dir = w.mkdir(ROOT, b"dir", 0o755, &root()).unwrap().ino;
    mkfile(&w, dir, b"a", &pattern(10000, 3));
    sync(&f);
    let ino = ino_of(&f, &[b"dir", b"a"]).unwrap();
    assert_eq!(read_all(&f, ino), pattern(10000, 3));
    assert_eq!(f.getattr(dir).unwrap().nlink, w.getattr(dir).unwrap().nlink);
}

#[test]
fn renames_links_xattrs_truncates_and_unlinks_become_visible() {
    let d = TestDev::new(32 * MB);
    let w = d.mount();
    let a = mkfile(&w, ROOT, b"a", &pattern(9000, 1));
    let f = follower(&d);
    w.rename(ROOT, b"a", ROOT, b"b", 0).unwrap();
    w.link(a, ROOT, b"c").unwrap();
    w.setxattr(a, b"user.k", b"v", 0).unwrap();
    w.setattr(
        a,
        &root(),
        &SetAttr {
            size: Some(100),
            ..Default::default()
        },
    )
    .unwrap();
    sync(&f);
    assert_eq!(ino_of(&f, &[b"a"]), Err(Errno::ENOENT));
    assert_eq!(ino_of(&f, &[b"b"]), Ok(a));
    assert_eq!(ino_of(&f, &[b"c"]), Ok(a));
    assert_eq!(f.getattr(a).unwrap().nlink, 2);
    assert_eq!(f.getxattr(a, b"user.k").unwrap(), b"v");
    assert_eq!(read_all(&f, a), &pattern(9000, 1)[..100]);
    w.unlink(ROOT, b"b").unwrap();
    w.unlink(ROOT, b"c").unwrap();
    sync(&f);
    assert!(list(&f, ROOT).is_empty());
    assert_eq!(f.getattr(a), Err(Errno::ENOENT));
}

#[test]
fn a_follower_refuses_every_change_with_erofs() {
    let d = TestDev::new(32 * MB);
    let w = d.mount();
    let a = mkfile(&w, ROOT, b"a", b"x");
    let f = follower(&d);
    let c = root();
    assert_eq!(f.mkdir(ROOT, b"d", 0o755, &c).err(), Some(Errno::EROFS));
    assert_eq!(
        f.create(ROOT, b"n", 0o644, libc::O_RDWR, &c).err(),
        Some(Errno::EROFS)
    );
    assert_eq!(f.unlink(ROOT, b"a").err(), Some(Errno::EROFS));
    assert_eq!(
        f.rename(ROOT, b"a", ROOT, b"z", 0).err(),
        Some(Errno::EROFS)
    );
    assert_eq!(f.link(a, ROOT, b"l").err(), Some(Errno::EROFS));
    assert_eq!(f.write(a, 0, b"y", false).err(), Some(Errno::EROFS));
    assert_eq!(f.setxattr(a, b"user.k", b"v", 0).err(), Some(Errno::EROFS));
    let trunc = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    assert_eq!(f.setattr(a, &c, &trunc).err(), Some(Errno::EROFS));
    sync(&f);
    assert_eq!(read_all(&w, a), b"x");
}

#[test]
fn a_follower_lapped_by_the_writer_reloads_everything() {
    let d = TestDev::new(32 * MB);
    let w = d.mount();
    let f = follower(&d);
    let before = f.follow_status().unwrap().full_reloads;
    // Far more log than the journal holds: the cursor is lapped.
    for i in 0..3000u32 {
        let name = format!("f{i}");
        mkfile(&w, ROOT, name.as_bytes(), b"");
        if i % 3 == 0 {
            w.unlink(ROOT, name.as_bytes()).unwrap();
        }
    }
    sync(&f);
    assert!(f.follow_status().unwrap().full_reloads > before);
    let mut names: Vec<_> = list(&f, ROOT).into_iter().map(|(n, _)| n).collect();
    let mut want: Vec<_> = list(&w, ROOT).into_iter().map(|(n, _)| n).collect();
    names.sort();
    want.sort();
    assert_eq!(names, want);
}

#[test]
fn a_reused_inode_number_is_estale_for_the_old_generation() {
    let d = TestDev::new(32 * MB);
    let w = d.mount();
    let old = mkfile(&w, ROOT, b"old", b"old bytes");
    let f = follower(&d);
    let gen = f.getattr(old).unwrap().generation as u32;
    assert_eq!(f.check_generation(old, gen), Ok(()));
    w.unlink(ROOT, b"old").unwrap();
    let new = mkfile(&w, ROOT, b"new", b"new bytes");
    assert_eq!(new, old, "the writer hands out the lowest free number");
    sync(&f);
    assert_eq!(f.check_generation(old, gen), Err(Errno(libc::ESTALE)));
    assert_eq!(read_all(&f, new), b"new bytes");
}

#[test]
fn a_read_on_a_follower_holds_its_view_until_it_is_done() {
    let d = TestDev::new(32 * MB);
    let w = d.mount();
    let a = mkfile(&w, ROOT, b"a", &pattern(5000, 2));
    let f = follower(&d);
    assert_eq!(f.follow_status().unwrap().held_seq, u64::MAX);
    let seen = f
        .read_with(a, 0, 100, |_| f.follow_status().unwrap().held_seq)
        .unwrap();
    assert_eq!(seen, f.follow_status().unwrap().applied_seq);
    assert_eq!(f.follow_status().unwrap().held_seq, u64::MAX);
}

#[test]
fn a_follower_publishes_its_view_in_its_host_slot_and_frees_it_at_unmount() {
    use daxfs_format::hosts::HostTable;
    use daxfs_pmem::{Device, DeviceOptions};
    let d = TestDev::new(32 * MB);
    let w = d.mount();
    let f = follower(&d);
    mkfile(&w, ROOT, b"a", b"x");
    sync(&f);
    let dev = Device::open(
        &d.path,
        DeviceOptions {
            writable: false,
            exclusive: false,
            populate: false,
        },
    )
    .unwrap();
    let slots = |dev: &Device| -> Vec<(u64, u64)> {
        let t = HostTable::on_device(dev).unwrap();
        t.hosts()
            .filter(|(_, h)| h.owner() != 0)
            .map(|(_, h)| (h.applied_seq(), h.held_seq()))
            .collect()
    };
    let st = f.follow_status().unwrap();
    assert_eq!(slots(&dev), vec![(st.applied_seq, u64::MAX)]);
    drop(f);
    assert!(slots(&dev).is_empty());
}

#[test]
fn a_follower_is_refused_when_the_host_table_has_no_free_slot() {
    let d = TestDev::new(32 * MB);
    let _w = d.mount();
    let other = d.other_host(true);
    let table = daxfs_format::hosts::HostTable::on_device(&other).unwrap();
    while table.claim_host_slot(0x5107).is_some() {}
    let err = DaxFs::mount(
        &d.path,
        FsOptions {
            follow: true,
            ..Default::default()
        },
    )
    .err()
    .expect("a follower the writer cannot see must not mount");
    assert!(
        matches!(
            err,
            daxfs::MountError::NoHostSlot {
                table_full: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("no free slot in the host table"),
        "{err}"
    );
}

#[test]
fn a_follower_on_a_device_opened_read_only_is_refused() {
    let d = TestDev::new(32 * MB);
    let _w = d.mount();
    let err = DaxFs::mount_device(
        d.other_host(false),
        FsOptions {
            follow: true,
            ..Default::default()
        },
    )
    .err()
    .expect("a follower that cannot publish its slot must not mount");
    assert!(
        matches!(
            err,
            daxfs::MountError::NoHostSlot {
                table_full: false,
                ..
            }
        ),
        "{err}"
    );
}

/// A follower with its heartbeat thread running (stall tracking on).
fn live_follower(d: &TestDev) -> std::sync::Arc<DaxFs> {
    let f = std::sync::Arc::new(follower(d));
    DaxFs::start_following(&f);
    f
}

fn try_read(f: &DaxFs, ino: u64) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; 1 << 16];
    let n = f.read(ino, 0, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

#[test]
fn a_read_while_the_heartbeat_is_older_than_half_the_host_timeout_fails_with_eio() {
    let d = TestDev::new(32 * MB);
    let w = d.mount();
    mkfile(&w, ROOT, b"a", &pattern(5000, 7));
    let f = live_follower(&d);
    let ino = ino_of(&f, &[b"a"]).unwrap();
    // A normal read is served.
    assert_eq!(try_read(&f, ino).unwrap(), pattern(5000, 7));
    f.follow_test_pause_heartbeat(true);
    f.follow_test_age_heartbeat(FsOptions::default().host_timeout);
    assert_eq!(try_read(&f, ino), Err(Errno::EIO));
}

#[test]
fn a_read_overlapping_a_stall_fails_with_eio_and_the_next_one_reloads_first() {
    let d = TestDev::new(32 * MB);
    let w = d.mount();
    mkfile(&w, ROOT, b"a", &pattern(5000, 8));
    let f = live_follower(&d);
    let ino = ino_of(&f, &[b"a"]).unwrap();
    let before = f.follow_status().unwrap().full_reloads;
    let r = f.read_with(ino, 0, 5000, |_| f.follow_test_note_stall());
    assert_eq!(r.err(), Some(Errno::EIO));
    assert_eq!(try_read(&f, ino).unwrap(), pattern(5000, 8));
    assert!(f.follow_status().unwrap().full_reloads > before);
}

#[test]
fn a_heartbeat_thread_waking_after_a_long_gap_forces_a_full_reload() {
    let d = TestDev::new(32 * MB);
    let w = d.mount();
    mkfile(&w, ROOT, b"a", &pattern(5000, 9));
    let f = live_follower(&d);
    let ino = ino_of(&f, &[b"a"]).unwrap();
    let before = f.follow_status().unwrap().full_reloads;
    f.follow_test_pause_heartbeat(true);
    f.follow_test_age_heartbeat(FsOptions::default().host_timeout);
    assert_eq!(try_read(&f, ino), Err(Errno::EIO));
    // The thread wakes, sees the gap, notes the stall; reads then come back after a
    // full reload.
    f.follow_test_pause_heartbeat(false);
    let mut got = try_read(&f, ino);
    for _ in 0..10_000 {
        if got.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
        got = try_read(&f, ino);
    }
    assert_eq!(got.unwrap(), pattern(5000, 9));
    assert!(f.follow_status().unwrap().full_reloads > before);
}
