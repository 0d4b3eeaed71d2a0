//! Extended attributes through the core API, as Linux gives them.
use common::*;
use daxfs::{Errno, ROOT};
use daxfs_testkit as common;

const MB: u64 = 1 << 20;

fn names(list: &[u8]) -> Vec<Vec<u8>> {
    list.split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| n.to_vec())
        .collect()
}

#[test]
fn set_get_list_remove_round_trip() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    fs.setxattr(f, b"user.a", b"1", 0).unwrap();
    fs.setxattr(f, b"trusted.b", b"22", 0).unwrap();
    fs.setxattr(f, b"security.c", b"", 0).unwrap();
    assert_eq!(fs.getxattr(f, b"user.a").unwrap(), b"1");
    assert_eq!(fs.getxattr(f, b"trusted.b").unwrap(), b"22");
    assert_eq!(fs.getxattr(f, b"security.c").unwrap(), b"");
    let mut n = names(&fs.listxattr(f).unwrap());
    n.sort();
    assert_eq!(
        n,
        vec![
            b"security.c".to_vec(),
            b"trusted.b".to_vec(),
            b"user.a".to_vec()
        ]
    );
    fs.removexattr(f, b"user.a").unwrap();
    assert_eq!(fs.getxattr(f, b"user.a").unwrap_err(), Errno::ENODATA);
    assert_eq!(names(&fs.listxattr(f).unwrap()).len(), 2);
}

#[test]
fn set_replaces_an_existing_value() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    fs.setxattr(f, b"user.a", b"first", 0).unwrap();
    fs.setxattr(f, b"user.a", b"2", 0).unwrap();
    assert_eq!(fs.getxattr(f, b"user.a").unwrap(), b"2");
}

#[test]
fn xattr_create_of_existing_name_is_eexist() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    fs.setxattr(f, b"user.a", b"1", libc::XATTR_CREATE).unwrap();
    assert_eq!(
        fs.setxattr(f, b"user.a", b"2", libc::XATTR_CREATE)
            .unwrap_err(),
        Errno::EEXIST
    );
    assert_eq!(fs.getxattr(f, b"user.a").unwrap(), b"1");
}

#[test]
fn xattr_replace_of_missing_name_is_enodata() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    assert_eq!(
        fs.setxattr(f, b"user.a", b"1", libc::XATTR_REPLACE)
            .unwrap_err(),
        Errno::ENODATA
    );
    fs.setxattr(f, b"user.a", b"1", 0).unwrap();
    fs.setxattr(f, b"user.a", b"2", libc::XATTR_REPLACE)
        .unwrap();
    assert_eq!(fs.getxattr(f, b"user.a").unwrap(), b"2");
}

#[test]
fn get_and_remove_of_missing_name_are_enodata() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    assert_eq!(fs.getxattr(f, b"user.none").unwrap_err(), Errno::ENODATA);
    assert_eq!(fs.removexattr(f, b"user.none").unwrap_err(), Errno::ENODATA);
}

#[test]
fn unknown_namespace_is_eopnotsupp() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    assert_eq!(
        fs.setxattr(f, b"foo.bar", b"1", 0).unwrap_err(),
        Errno::EOPNOTSUPP
    );
    assert_eq!(fs.getxattr(f, b"foo.bar").unwrap_err(), Errno::EOPNOTSUPP);
}

#[test]
fn user_xattr_on_a_symlink_is_eperm() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let l = fs.symlink(ROOT, b"l", b"target", &root()).unwrap();
    assert_eq!(
        fs.setxattr(l.ino, b"user.a", b"1", 0).unwrap_err(),
        Errno::EPERM
    );
    // Other namespaces are allowed on symlinks.
    fs.setxattr(l.ino, b"trusted.a", b"1", 0).unwrap();
}

#[test]
fn user_xattr_on_a_directory_works() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
    fs.setxattr(dir.ino, b"user.a", b"v", 0).unwrap();
    assert_eq!(fs.getxattr(dir.ino, b"user.a").unwrap(), b"v");
}

#[test]
fn posix_acl_is_stored_byte_exact() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    // A posix_acl_xattr blob: version 2, then (tag, perm, id) entries.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, 1000),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    fs.setxattr(f, b"system.posix_acl_access", &acl, 0).unwrap();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
    fs.setxattr(dir.ino, b"system.posix_acl_default", &acl, 0)
        .unwrap();
    assert_eq!(fs.getxattr(f, b"system.posix_acl_access").unwrap(), acl);
    drop(fs);
    let fs = d.mount();
    assert_eq!(fs.getxattr(f, b"system.posix_acl_access").unwrap(), acl);
    assert_eq!(
        fs.getxattr(dir.ino, b"system.posix_acl_default").unwrap(),
        acl
    );
}

#[test]
fn values_too_big_for_the_xattr_block_are_enospc() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    fs.setxattr(f, b"user.a", &[7u8; 3000], 0).unwrap();
    assert_eq!(
        fs.setxattr(f, b"user.b", &[7u8; 2000], 0).unwrap_err(),
        Errno::ENOSPC
    );
    assert_eq!(
        fs.setxattr(f, b"user.c", &[7u8; 5000], 0).unwrap_err(),
        Errno::ENOSPC
    );
    // The failed calls changed nothing.
    assert_eq!(fs.getxattr(f, b"user.a").unwrap(), vec![7u8; 3000]);
    assert_eq!(names(&fs.listxattr(f).unwrap()), vec![b"user.a".to_vec()]);
}

#[test]
fn values_above_64_kib_are_e2big() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    assert_eq!(
        fs.setxattr(f, b"user.a", &vec![0u8; 65537], 0).unwrap_err(),
        Errno::E2BIG
    );
}

#[test]
fn xattrs_survive_remount() {
    let d = TestDev::new(32 * MB);
    let f = {
        let fs = d.mount();
        let f = mkfile(&fs, ROOT, b"f", b"");
        fs.setxattr(f, b"user.keep", b"value", 0).unwrap();
        fs.setxattr(f, b"user.gone", b"x", 0).unwrap();
        fs.removexattr(f, b"user.gone").unwrap();
        fs.shutdown().unwrap();
        f
    };
    let fs = d.mount();
    assert_eq!(fs.getxattr(f, b"user.keep").unwrap(), b"value");
    assert_eq!(fs.getxattr(f, b"user.gone").unwrap_err(), Errno::ENODATA);
}

#[test]
fn removing_the_last_xattr_frees_its_block() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    let free0 = fs.statfs().bfree;
    fs.setxattr(f, b"user.a", b"1", 0).unwrap();
    assert_eq!(fs.statfs().bfree, free0 - 1);
    fs.removexattr(f, b"user.a").unwrap();
    assert_eq!(fs.statfs().bfree, free0);
    assert_eq!(fs.getattr(f).unwrap().blocks, 0);
}

#[test]
fn setxattr_changes_ctime() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    let c0 = fs.getattr(f).unwrap().ctime;
    std::thread::sleep(std::time::Duration::from_millis(2));
    fs.setxattr(f, b"user.a", b"1", 0).unwrap();
    assert!(fs.getattr(f).unwrap().ctime > c0);
}

#[test]
fn unlinking_a_file_frees_its_xattr_block() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    mkfile(&fs, ROOT, b"keep", b"");
    let free0 = fs.statfs().bfree;
    let f = mkfile(&fs, ROOT, b"f", b"");
    fs.setxattr(f, b"user.a", b"1", 0).unwrap();
    fs.unlink(ROOT, b"f").unwrap();
    assert_eq!(fs.statfs().bfree, free0);
}
