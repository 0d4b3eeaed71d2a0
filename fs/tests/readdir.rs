//! readdir cookies: "." and ".." first, every entry exactly once, resumable from any
//! cookie, stable while entries are removed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use common::*;
use daxfs::{DaxFs, FileKind, ROOT};
use daxfs_testkit as common;
use std::collections::HashSet;

const MB: u64 = 1 << 20;

/// Entries from `cookie` on, at most `max`: (name, next cookie).
fn page(fs: &DaxFs, dir: u64, cookie: u64, max: usize) -> Vec<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    fs.readdir(dir, cookie, |e| {
        if out.len() == max {
            return false;
        }
        out.push((e.name, e.next_offset));
        true
    })
    .unwrap();
    out
}

#[test]
fn dot_and_dotdot_come_first() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let a = fs.mkdir(ROOT, b"a", 0o755, &root()).unwrap();
    mkfile(&fs, a.ino, b"f", b"");
    let mut all = Vec::new();
    fs.readdir(a.ino, 0, |e| {
        all.push(e);
        true
    })
    .unwrap();
    assert_eq!(all[0].name, b".");
    assert_eq!((all[0].ino, all[0].kind), (a.ino, FileKind::Dir));
    assert_eq!(all[1].name, b"..");
    assert_eq!((all[1].ino, all[1].kind), (ROOT, FileKind::Dir));
    assert_eq!(all[2].name, b"f");
    assert_eq!(all[2].kind, FileKind::File);
    assert_eq!(all.len(), 3);
}

#[test]
fn readdir_reports_each_entry_type() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
    fs.symlink(ROOT, b"l", b"t", &root()).unwrap();
    fs.mknod(ROOT, b"p", libc::S_IFIFO | 0o644, 0, &root())
        .unwrap();
    mkfile(&fs, ROOT, b"f", b"");
    let mut kinds = Vec::new();
    fs.readdir(ROOT, 2, |e| {
        kinds.push((e.name, e.kind));
        true
    })
    .unwrap();
    kinds.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        kinds,
        vec![
            (b"d".to_vec(), FileKind::Dir),
            (b"f".to_vec(), FileKind::File),
            (b"l".to_vec(), FileKind::Symlink),
            (b"p".to_vec(), FileKind::Fifo)
        ]
    );
}

#[test]
fn readdir_of_a_file_is_enotdir() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    assert_eq!(
        fs.readdir(f, 0, |_| true).unwrap_err(),
        daxfs::Errno::ENOTDIR
    );
}

#[test]
fn resuming_from_each_cookie_lists_every_entry_exactly_once() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap().ino;
    let mut want = HashSet::new();
    for i in 0..500 {
        // Names of varied lengths use one to five slots each.
        let name = format!("{i}-{}", "x".repeat(i % 200));
        fs.mknod(dir, name.as_bytes(), libc::S_IFREG | 0o644, 0, &root())
            .unwrap();
        want.insert(name.into_bytes());
    }
    for batch in [1usize, 7, 64, 1000] {
        let mut seen = Vec::new();
        let mut cookie = 0;
        loop {
            let p = page(&fs, dir, cookie, batch);
            if p.is_empty() {
                break;
            }
            cookie = p.last().unwrap().1;
            seen.extend(p.into_iter().map(|(n, _)| n));
        }
        assert_eq!(seen.len(), 502, "batch {batch}");
        let set: HashSet<Vec<u8>> = seen
            .into_iter()
            .filter(|n| n != b"." && n != b"..")
            .collect();
        assert_eq!(set, want, "batch {batch}");
    }
}

#[test]
fn removing_entries_during_iteration_does_not_repeat_others() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap().ino;
    for i in 0..300 {
        fs.mknod(
            dir,
            format!("n{i}").as_bytes(),
            libc::S_IFREG | 0o644,
            0,
            &root(),
        )
        .unwrap();
    }
    let mut seen = HashSet::new();
    let mut cookie = 2;
    loop {
        let p = page(&fs, dir, cookie, 10);
        if p.is_empty() {
            break;
        }
        cookie = p.last().unwrap().1;
        for (n, _) in p {
            assert!(
                seen.insert(n.clone()),
                "{:?} listed twice",
                String::from_utf8_lossy(&n)
            );
            // rm -rf style: remove what was listed, and a not yet listed entry too.
            fs.unlink(dir, &n).unwrap();
        }
        let i = seen.len() * 7 % 300;
        let name = format!("n{i}");
        if !seen.contains(name.as_bytes()) && fs.unlink(dir, name.as_bytes()).is_ok() {
            seen.insert(name.into_bytes());
        }
    }
    assert_eq!(seen.len(), 300);
    assert!(list(&fs, dir).is_empty());
    fs.rmdir(ROOT, b"d").unwrap();
}

#[test]
fn entries_created_during_iteration_do_not_repeat_existing_ones() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap().ino;
    for i in 0..100 {
        fs.mknod(
            dir,
            format!("old{i}").as_bytes(),
            libc::S_IFREG | 0o644,
            0,
            &root(),
        )
        .unwrap();
    }
    let mut seen = HashSet::new();
    let mut cookie = 2;
    let mut k = 0;
    loop {
        let p = page(&fs, dir, cookie, 10);
        if p.is_empty() {
            break;
        }
        cookie = p.last().unwrap().1;
        for (n, _) in p {
            assert!(seen.insert(n));
        }
        if k < 100 {
            fs.mknod(
                dir,
                format!("new{k}").as_bytes(),
                libc::S_IFREG | 0o644,
                0,
                &root(),
            )
            .unwrap();
            k += 1;
        }
    }
    for i in 0..100 {
        assert!(seen.contains(format!("old{i}").as_bytes()));
    }
}

#[test]
fn cookies_stay_valid_across_remount() {
    let d = TestDev::new(32 * MB);
    let dir;
    let (first, cookie) = {
        let fs = d.mount();
        dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap().ino;
        for i in 0..200 {
            fs.mknod(
                dir,
                format!("e{i}").as_bytes(),
                libc::S_IFREG | 0o644,
                0,
                &root(),
            )
            .unwrap();
        }
        let p = page(&fs, dir, 0, 100);
        (
            p.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            p.last().unwrap().1,
        )
    };
    let fs = d.mount();
    let rest: Vec<Vec<u8>> = page(&fs, dir, cookie, usize::MAX)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(first.len() + rest.len(), 202);
    let all: HashSet<_> = first.into_iter().chain(rest).collect();
    assert_eq!(all.len(), 202);
}
