//! POSIX ACLs in the core: an access ACL sets the mode, chmod rewrites the ACL, and a
//! directory's default ACL is inherited by new inodes (the kernel enforces them).
use common::*;
use daxfs::acl::{Acl, AclEntry, ACL_ACCESS, ACL_DEFAULT, GROUP_OBJ, MASK, OTHER, USER, USER_OBJ};
use daxfs::ROOT;
use daxfs_testkit as common;

const MB: u64 = 1 << 20;
const ANY: u32 = u32::MAX;

fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    Acl(entries
        .iter()
        .map(|&(tag, perm, id)| AclEntry { tag, perm, id })
        .collect())
    .encode()
}

fn named_user_rw() -> Vec<u8> {
    acl(&[
        (USER_OBJ, 6, ANY),
        (USER, 6, 1000),
        (GROUP_OBJ, 4, ANY),
        (MASK, 6, ANY),
        (OTHER, 0, ANY),
    ])
}

#[test]
fn setting_an_access_acl_sets_the_mode_from_it() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let ino = mkfile(&fs, ROOT, b"f", b"x");
    fs.setattr(
        ino,
        &root(),
        &daxfs::SetAttr {
            mode: Some(0o640),
            ..Default::default()
        },
    )
    .unwrap();
    fs.setxattr(ino, ACL_ACCESS, &named_user_rw(), 0).unwrap();
    assert_eq!(fs.getattr(ino).unwrap().perm, 0o660);
    assert_eq!(fs.getxattr(ino, ACL_ACCESS).unwrap(), named_user_rw());
}

#[test]
fn an_acl_the_mode_expresses_is_not_stored() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let ino = mkfile(&fs, ROOT, b"f", b"x");
    fs.setxattr(ino, ACL_ACCESS, &named_user_rw(), 0).unwrap();
    let minimal = acl(&[(USER_OBJ, 7, ANY), (GROUP_OBJ, 5, ANY), (OTHER, 1, ANY)]);
    fs.setxattr(ino, ACL_ACCESS, &minimal, 0).unwrap();
    assert_eq!(fs.getattr(ino).unwrap().perm, 0o751);
    assert_eq!(
        fs.getxattr(ino, ACL_ACCESS).unwrap_err(),
        daxfs::Errno::ENODATA
    );
}

#[test]
fn an_invalid_acl_is_einval() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let ino = mkfile(&fs, ROOT, b"f", b"x");
    let no_mask = acl(&[
        (USER_OBJ, 6, ANY),
        (USER, 6, 7),
        (GROUP_OBJ, 4, ANY),
        (OTHER, 0, ANY),
    ]);
    assert_eq!(
        fs.setxattr(ino, ACL_ACCESS, &no_mask, 0).unwrap_err(),
        daxfs::Errno::EINVAL
    );
    assert_eq!(
        fs.setxattr(ino, ACL_ACCESS, b"junk", 0).unwrap_err(),
        daxfs::Errno::EINVAL
    );
}

#[test]
fn chmod_rewrites_the_access_acl() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let ino = mkfile(&fs, ROOT, b"f", b"x");
    fs.setxattr(ino, ACL_ACCESS, &named_user_rw(), 0).unwrap();
    fs.setattr(
        ino,
        &root(),
        &daxfs::SetAttr {
            mode: Some(0o604),
            ..Default::default()
        },
    )
    .unwrap();
    let a = Acl::parse(&fs.getxattr(ino, ACL_ACCESS).unwrap()).unwrap();
    assert_eq!(a.mode_bits(), 0o604);
    // The named entry keeps its perms; the mask now limits them to nothing.
    assert!(a.0.contains(&AclEntry {
        tag: USER,
        perm: 6,
        id: 1000
    }));
}

#[test]
fn new_inodes_inherit_the_directorys_default_acl_masked_by_their_mode() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap().ino;
    let def = acl(&[
        (USER_OBJ, 7, ANY),
        (USER, 7, 1000),
        (GROUP_OBJ, 5, ANY),
        (MASK, 7, ANY),
        (OTHER, 5, ANY),
    ]);
    fs.setxattr(dir, ACL_DEFAULT, &def, 0).unwrap();
    assert!(fs.has_default_acl(dir));
    let f = fs.create(dir, b"f", 0o666, libc::O_RDWR, &root()).unwrap();
    fs.release(f.ino).unwrap();
    assert_eq!(f.perm, 0o664);
    let a = Acl::parse(&fs.getxattr(f.ino, ACL_ACCESS).unwrap()).unwrap();
    assert!(a.0.contains(&AclEntry {
        tag: MASK,
        perm: 6,
        id: ANY
    }));
    assert!(fs.getxattr(f.ino, ACL_DEFAULT).is_err());
    let sub = fs.mkdir(dir, b"sub", 0o777, &root()).unwrap();
    assert_eq!(sub.perm, 0o775);
    assert_eq!(fs.getxattr(sub.ino, ACL_DEFAULT).unwrap(), def);
    let l = fs.symlink(dir, b"l", b"f", &root()).unwrap();
    assert!(fs.listxattr(l.ino).unwrap().is_empty());
}

#[test]
fn inherited_acls_survive_a_remount() {
    let d = TestDev::new(32 * MB);
    let ino = {
        let fs = d.mount();
        let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap().ino;
        fs.setxattr(dir, ACL_DEFAULT, &named_user_rw(), 0).unwrap();
        fs.mkdir(dir, b"sub", 0o777, &root()).unwrap().ino
    };
    let fs = d.mount();
    assert_eq!(fs.getxattr(ino, ACL_DEFAULT).unwrap(), named_user_rw());
    assert!(fs.getxattr(ino, ACL_ACCESS).is_ok());
}
