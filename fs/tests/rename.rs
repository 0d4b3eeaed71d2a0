//! rename(2)/renameat2(2) semantics of the core API against Linux: replacement rules,
//! errnos, RENAME_NOREPLACE, RENAME_EXCHANGE, link counts and "..".
use common::*;
use daxfs::{Errno, FileKind, ROOT};
use daxfs_testkit as common;

const MB: u64 = 1 << 20;

#[test]
fn rename_within_a_directory_moves_the_name() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"a", b"x");
    fs.rename(ROOT, b"a", ROOT, b"b", 0).unwrap();
    assert_eq!(fs.lookup(ROOT, b"a").unwrap_err(), Errno::ENOENT);
    assert_eq!(fs.lookup(ROOT, b"b").unwrap().ino, f);
    assert_eq!(fs.getattr(f).unwrap().nlink, 1);
}

#[test]
fn rename_into_another_directory_moves_the_entry() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
    let f = mkfile(&fs, ROOT, b"a", b"x");
    fs.rename(ROOT, b"a", dir.ino, b"a", 0).unwrap();
    assert_eq!(fs.lookup(ROOT, b"a").unwrap_err(), Errno::ENOENT);
    assert_eq!(fs.lookup(dir.ino, b"a").unwrap().ino, f);
    assert_eq!(list(&fs, dir.ino), vec![(b"a".to_vec(), f)]);
}

#[test]
fn rename_of_missing_source_is_enoent() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    assert_eq!(
        fs.rename(ROOT, b"a", ROOT, b"b", 0).unwrap_err(),
        Errno::ENOENT
    );
}

#[test]
fn rename_over_existing_file_replaces_it_and_frees_the_old_inode() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let a = mkfile(&fs, ROOT, b"a", b"new");
    let b = mkfile(&fs, ROOT, b"b", b"");
    let before = fs.statfs();
    fs.write(b, 0, &pattern(256 << 10, 1), false).unwrap();
    fs.rename(ROOT, b"a", ROOT, b"b", 0).unwrap();
    assert_eq!(fs.lookup(ROOT, b"b").unwrap().ino, a);
    assert_eq!(fs.getattr(b).unwrap_err(), Errno::ENOENT);
    assert_eq!(read_all(&fs, a), b"new");
    let after = fs.statfs();
    assert_eq!(after.bfree, before.bfree);
    assert_eq!(after.ffree, before.ffree + 1);
}

#[test]
fn rename_over_open_file_keeps_its_data_until_release() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    mkfile(&fs, ROOT, b"a", b"new");
    let b = mkfile(&fs, ROOT, b"b", b"old data");
    fs.open(b, libc::O_RDONLY).unwrap();
    fs.rename(ROOT, b"a", ROOT, b"b", 0).unwrap();
    assert_eq!(fs.getattr(b).unwrap().nlink, 0);
    assert_eq!(read_all(&fs, b), b"old data");
    fs.release(b).unwrap();
    assert_eq!(fs.getattr(b).unwrap_err(), Errno::ENOENT);
}

#[test]
fn rename_directory_over_empty_directory_replaces_it() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let a = fs.mkdir(ROOT, b"a", 0o755, &root()).unwrap();
    let b = fs.mkdir(ROOT, b"b", 0o755, &root()).unwrap();
    mkfile(&fs, a.ino, b"inside", b"");
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, 4);
    fs.rename(ROOT, b"a", ROOT, b"b", 0).unwrap();
    assert_eq!(fs.lookup(ROOT, b"b").unwrap().ino, a.ino);
    assert_eq!(fs.getattr(b.ino).unwrap_err(), Errno::ENOENT);
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, 3);
    assert_eq!(fs.lookup(a.ino, b"inside").unwrap().kind, FileKind::File);
}

#[test]
fn rename_directory_over_non_empty_directory_is_enotempty() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    fs.mkdir(ROOT, b"a", 0o755, &root()).unwrap();
    let b = fs.mkdir(ROOT, b"b", 0o755, &root()).unwrap();
    mkfile(&fs, b.ino, b"f", b"");
    assert_eq!(
        fs.rename(ROOT, b"a", ROOT, b"b", 0).unwrap_err(),
        Errno::ENOTEMPTY
    );
    assert!(fs.lookup(ROOT, b"a").is_ok());
    assert!(fs.lookup(b.ino, b"f").is_ok());
}

#[test]
fn rename_file_over_directory_is_eisdir() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    mkfile(&fs, ROOT, b"f", b"");
    fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
    assert_eq!(
        fs.rename(ROOT, b"f", ROOT, b"d", 0).unwrap_err(),
        Errno::EISDIR
    );
}

#[test]
fn rename_directory_over_file_is_enotdir() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    mkfile(&fs, ROOT, b"f", b"");
    fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
    assert_eq!(
        fs.rename(ROOT, b"d", ROOT, b"f", 0).unwrap_err(),
        Errno::ENOTDIR
    );
}

#[test]
fn rename_directory_into_its_own_subdirectory_is_einval() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let a = fs.mkdir(ROOT, b"a", 0o755, &root()).unwrap();
    let b = fs.mkdir(a.ino, b"b", 0o755, &root()).unwrap();
    let c = fs.mkdir(b.ino, b"c", 0o755, &root()).unwrap();
    assert_eq!(
        fs.rename(ROOT, b"a", c.ino, b"a", 0).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        fs.rename(ROOT, b"a", a.ino, b"x", 0).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(fs.lookup(ROOT, b"a").unwrap().ino, a.ino);
}

#[test]
fn rename_noreplace_onto_existing_name_is_eexist() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    mkfile(&fs, ROOT, b"a", b"");
    mkfile(&fs, ROOT, b"b", b"");
    let e = fs.rename(ROOT, b"a", ROOT, b"b", libc::RENAME_NOREPLACE);
    assert_eq!(e.unwrap_err(), Errno::EEXIST);
    fs.rename(ROOT, b"a", ROOT, b"c", libc::RENAME_NOREPLACE)
        .unwrap();
    assert!(fs.lookup(ROOT, b"c").is_ok());
}

#[test]
fn rename_exchange_swaps_two_files() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let a = mkfile(&fs, ROOT, b"a", b"A");
    let b = mkfile(&fs, ROOT, b"b", b"B");
    fs.rename(ROOT, b"a", ROOT, b"b", libc::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(fs.lookup(ROOT, b"a").unwrap().ino, b);
    assert_eq!(fs.lookup(ROOT, b"b").unwrap().ino, a);
    assert_eq!(read_all(&fs, fs.lookup(ROOT, b"a").unwrap().ino), b"B");
}

#[test]
fn rename_exchange_of_file_and_directory_across_parents_fixes_link_counts() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let p1 = fs.mkdir(ROOT, b"p1", 0o755, &root()).unwrap();
    let p2 = fs.mkdir(ROOT, b"p2", 0o755, &root()).unwrap();
    let f = mkfile(&fs, p1.ino, b"f", b"");
    let dir = fs.mkdir(p2.ino, b"d", 0o755, &root()).unwrap();
    assert_eq!(fs.getattr(p1.ino).unwrap().nlink, 2);
    assert_eq!(fs.getattr(p2.ino).unwrap().nlink, 3);
    fs.rename(p1.ino, b"f", p2.ino, b"d", libc::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(fs.lookup(p1.ino, b"f").unwrap().ino, dir.ino);
    assert_eq!(fs.lookup(p1.ino, b"f").unwrap().kind, FileKind::Dir);
    assert_eq!(fs.lookup(p2.ino, b"d").unwrap().ino, f);
    assert_eq!(fs.getattr(p1.ino).unwrap().nlink, 3);
    assert_eq!(fs.getattr(p2.ino).unwrap().nlink, 2);
    assert_eq!(fs.lookup(dir.ino, b"..").unwrap().ino, p1.ino);
    // The on-media entries agree with the index.
    let l1 = list(&fs, p1.ino);
    assert_eq!(l1, vec![(b"f".to_vec(), dir.ino)]);
}

#[test]
fn rename_exchange_with_missing_target_is_enoent() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    mkfile(&fs, ROOT, b"a", b"");
    let e = fs.rename(ROOT, b"a", ROOT, b"b", libc::RENAME_EXCHANGE);
    assert_eq!(e.unwrap_err(), Errno::ENOENT);
    assert!(fs.lookup(ROOT, b"a").is_ok());
}

#[test]
fn rename_exchange_and_noreplace_together_is_einval() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    mkfile(&fs, ROOT, b"a", b"");
    mkfile(&fs, ROOT, b"b", b"");
    let e = fs.rename(
        ROOT,
        b"a",
        ROOT,
        b"b",
        libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE,
    );
    assert_eq!(e.unwrap_err(), Errno::EINVAL);
}

#[test]
fn rename_between_hard_links_of_one_inode_does_nothing() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"a", b"");
    fs.link(f, ROOT, b"b").unwrap();
    fs.rename(ROOT, b"a", ROOT, b"b", 0).unwrap();
    assert_eq!(fs.lookup(ROOT, b"a").unwrap().ino, f);
    assert_eq!(fs.lookup(ROOT, b"b").unwrap().ino, f);
    assert_eq!(fs.getattr(f).unwrap().nlink, 2);
}

#[test]
fn moved_directory_dotdot_names_its_new_parent() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let p1 = fs.mkdir(ROOT, b"p1", 0o755, &root()).unwrap();
    let p2 = fs.mkdir(ROOT, b"p2", 0o755, &root()).unwrap();
    let c = fs.mkdir(p1.ino, b"c", 0o755, &root()).unwrap();
    fs.rename(p1.ino, b"c", p2.ino, b"c", 0).unwrap();
    assert_eq!(fs.lookup(c.ino, b"..").unwrap().ino, p2.ino);
    let mut dotdot = None;
    fs.readdir(c.ino, 0, |e| {
        if e.name == b".." {
            dotdot = Some(e.ino);
        }
        true
    })
    .unwrap();
    assert_eq!(dotdot, Some(p2.ino));
    assert_eq!(fs.getattr(p1.ino).unwrap().nlink, 2);
    assert_eq!(fs.getattr(p2.ino).unwrap().nlink, 3);
    drop(fs);
    let fs = d.mount();
    assert_eq!(fs.lookup(c.ino, b"..").unwrap().ino, p2.ino);
}

#[test]
fn rename_of_directory_over_empty_directory_in_another_parent_fixes_link_counts() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let p1 = fs.mkdir(ROOT, b"p1", 0o755, &root()).unwrap();
    let p2 = fs.mkdir(ROOT, b"p2", 0o755, &root()).unwrap();
    let a = fs.mkdir(p1.ino, b"a", 0o755, &root()).unwrap();
    fs.mkdir(p2.ino, b"b", 0o755, &root()).unwrap();
    fs.rename(p1.ino, b"a", p2.ino, b"b", 0).unwrap();
    assert_eq!(fs.getattr(p1.ino).unwrap().nlink, 2);
    assert_eq!(fs.getattr(p2.ino).unwrap().nlink, 3);
    assert_eq!(fs.lookup(a.ino, b"..").unwrap().ino, p2.ino);
}

#[test]
fn rename_survives_remount() {
    let d = TestDev::new(32 * MB);
    let (f, dir) = {
        let fs = d.mount();
        let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
        let f = mkfile(&fs, ROOT, b"a", b"hello");
        mkfile(&fs, dir.ino, b"victim", b"old");
        fs.rename(ROOT, b"a", dir.ino, b"victim", 0).unwrap();
        fs.shutdown().unwrap();
        (f, dir.ino)
    };
    let fs = d.mount();
    assert_eq!(list(&fs, dir), vec![(b"victim".to_vec(), f)]);
    assert_eq!(read_all(&fs, f), b"hello");
    assert!(list(&fs, ROOT).iter().all(|(n, _)| n != b"a"));
}

#[test]
fn rename_of_dot_or_dotdot_fails() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let a = fs.mkdir(ROOT, b"a", 0o755, &root()).unwrap();
    assert!(fs.rename(a.ino, b".", ROOT, b"x", 0).is_err());
    assert!(fs.rename(a.ino, b"..", ROOT, b"x", 0).is_err());
}
