//! chattr's immutable (+i) and append-only (+a) flags through the core API, with the
//! rules ext4 and tmpfs apply (measured on both: each test's expectations are what they
//! answered); who may change the flags; that the flags are journaled.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use common::*;
use daxfs::{Cred, DaxFs, Errno, InodeFlags, SetAttr, SetTime, ROOT};
use daxfs_format::Timespec;
use daxfs_testkit as common;

const MB: u64 = 1 << 20;

const IMMUTABLE: InodeFlags = InodeFlags {
    immutable: true,
    append: false,
    dax: false,
};
const APPEND: InodeFlags = InodeFlags {
    immutable: false,
    append: true,
    dax: false,
};

fn user(uid: u32) -> Cred {
    Cred {
        uid,
        gid: uid,
        pid: 0,
    }
}

/// A file "f" holding "hello" with an xattr, under ROOT, with `flags` set.
fn flagged_file(fs: &DaxFs, flags: InodeFlags) -> u64 {
    let f = mkfile(fs, ROOT, b"f", b"hello");
    fs.setxattr(f, b"user.a", b"1", 0).unwrap();
    fs.set_inode_flags(f, &root(), flags).unwrap();
    f
}

fn eperm<T: std::fmt::Debug>(r: daxfs::Result<T>) {
    assert_eq!(r.unwrap_err(), Errno::EPERM);
}

fn at(sec: i64) -> Option<SetTime> {
    Some(SetTime::At(Timespec { sec, nsec: 0 }))
}

#[test]
fn flags_read_back_as_set() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    assert_eq!(fs.inode_flags(f).unwrap(), InodeFlags::default());
    let all = InodeFlags {
        immutable: true,
        append: true,
        dax: true,
    };
    fs.set_inode_flags(f, &root(), all).unwrap();
    assert_eq!(fs.inode_flags(f).unwrap(), all);
    fs.set_inode_flags(f, &root(), InodeFlags::default())
        .unwrap();
    assert_eq!(fs.inode_flags(f).unwrap(), InodeFlags::default());
}

#[test]
fn flags_are_journaled_and_survive_remount_and_crash() {
    let d = TestDev::new(32 * MB);
    let (i, a) = {
        let fs = d.mount();
        let i = mkfile(&fs, ROOT, b"i", b"");
        let a = mkfile(&fs, ROOT, b"a", b"");
        fs.set_inode_flags(i, &root(), IMMUTABLE).unwrap();
        fs.set_inode_flags(a, &root(), APPEND).unwrap();
        let crashed = d.crash_image();
        let fs2 = crashed.mount();
        assert_eq!(fs2.inode_flags(i).unwrap(), IMMUTABLE);
        assert_eq!(fs2.inode_flags(a).unwrap(), APPEND);
        fs.shutdown().unwrap();
        (i, a)
    };
    let fs = d.mount();
    assert_eq!(fs.inode_flags(i).unwrap(), IMMUTABLE);
    assert_eq!(fs.inode_flags(a).unwrap(), APPEND);
}

#[test]
fn immutable_file_refuses_opening_for_write_or_truncate() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = flagged_file(&fs, IMMUTABLE);
    for flags in [
        libc::O_WRONLY,
        libc::O_RDWR,
        libc::O_WRONLY | libc::O_APPEND,
        libc::O_RDONLY | libc::O_TRUNC,
    ] {
        eperm(fs.open(f, flags));
    }
    fs.open(f, libc::O_RDONLY).unwrap();
    fs.release(f).unwrap();
    assert_eq!(read_all(&fs, f), b"hello");
}

/// A file and a directory under ROOT, both writable by anyone (0666, 0777), with `flags`.
fn writable_by_all_with(fs: &DaxFs, flags: InodeFlags) -> [u64; 2] {
    let f = mkfile(fs, ROOT, b"f", b"hello");
    fs.setattr(
        f,
        &root(),
        &SetAttr {
            mode: Some(0o666),
            ..Default::default()
        },
    )
    .unwrap();
    let dir = fs.mkdir(ROOT, b"d", 0o777, &root()).unwrap().ino;
    for ino in [f, dir] {
        fs.set_inode_flags(ino, &root(), flags).unwrap();
    }
    [f, dir]
}

#[test]
fn access_w_ok_on_immutable_inode_is_eperm_even_for_root() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    for ino in writable_by_all_with(&fs, IMMUTABLE) {
        for cred in [root(), user(1000)] {
            eperm(fs.access(ino, libc::W_OK, &cred));
            eperm(fs.access(ino, libc::R_OK | libc::W_OK, &cred));
            fs.access(ino, libc::R_OK, &cred).unwrap();
            fs.access(ino, libc::F_OK, &cred).unwrap();
        }
    }
}

#[test]
fn access_w_ok_on_append_only_inode_is_allowed() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    for ino in writable_by_all_with(&fs, APPEND) {
        for cred in [root(), user(1000)] {
            fs.access(ino, libc::W_OK, &cred).unwrap();
        }
    }
}

#[test]
fn immutable_file_refuses_write_truncate_and_fallocate() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"hello");
    // A descriptor opened for write before chattr +i keeps nothing of that right.
    fs.open(f, libc::O_RDWR).unwrap();
    fs.set_inode_flags(f, &root(), IMMUTABLE).unwrap();
    eperm(fs.write(f, 0, b"x", false));
    eperm(fs.write(f, 0, b"x", true));
    for size in [0, 1, 100_000] {
        eperm(fs.setattr(
            f,
            &root(),
            &SetAttr {
                size: Some(size),
                ..Default::default()
            },
        ));
    }
    for mode in [
        0,
        libc::FALLOC_FL_KEEP_SIZE,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        libc::FALLOC_FL_ZERO_RANGE,
    ] {
        eperm(fs.fallocate(f, 0, 4096, mode));
    }
    fs.release(f).unwrap();
    assert_eq!(read_all(&fs, f), b"hello");
}

#[test]
fn immutable_file_refuses_chmod_chown_utimes_and_xattr_changes() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = flagged_file(&fs, IMMUTABLE);
    let before = fs.getattr(f).unwrap();
    for c in [
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
        SetAttr {
            uid: Some(7),
            ..Default::default()
        },
        SetAttr {
            gid: Some(7),
            ..Default::default()
        },
        SetAttr {
            atime: at(1),
            mtime: at(1),
            ..Default::default()
        },
        SetAttr {
            atime: Some(SetTime::Now),
            mtime: Some(SetTime::Now),
            ..Default::default()
        },
    ] {
        eperm(fs.setattr(f, &root(), &c));
    }
    eperm(fs.setxattr(f, b"user.b", b"2", 0));
    eperm(fs.setxattr(f, b"user.a", b"changed", 0));
    eperm(fs.removexattr(f, b"user.a"));
    assert_eq!(fs.getattr(f).unwrap(), before);
    assert_eq!(fs.getxattr(f, b"user.a").unwrap(), b"1");
}

#[test]
fn immutable_file_refuses_unlink_rename_of_or_over_it_and_link() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = flagged_file(&fs, IMMUTABLE);
    mkfile(&fs, ROOT, b"other", b"");
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap().ino;
    eperm(fs.unlink(ROOT, b"f"));
    eperm(fs.rename(ROOT, b"f", ROOT, b"g", 0));
    eperm(fs.rename(ROOT, b"f", dir, b"f", 0));
    eperm(fs.rename(ROOT, b"other", ROOT, b"f", 0));
    eperm(fs.rename(ROOT, b"other", ROOT, b"f", libc::RENAME_EXCHANGE));
    eperm(fs.link(f, dir, b"l"));
    assert_eq!(fs.lookup(ROOT, b"f").unwrap().ino, f);
    assert_eq!(fs.getattr(f).unwrap().nlink, 1);
    assert!(fs.lookup(dir, b"l").is_err());
}

#[test]
fn immutable_directory_takes_no_new_entry_and_loses_none() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let r = root();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &r).unwrap().ino;
    let inside = mkfile(&fs, dir, b"in", b"");
    let sub = fs.mkdir(dir, b"sub", 0o755, &r).unwrap().ino;
    let outside = mkfile(&fs, ROOT, b"out", b"");
    fs.set_inode_flags(dir, &r, IMMUTABLE).unwrap();
    eperm(fs.create(dir, b"new", 0o644, libc::O_RDWR, &r));
    eperm(fs.mkdir(dir, b"new", 0o755, &r));
    eperm(fs.symlink(dir, b"new", b"t", &r));
    eperm(fs.mknod(dir, b"new", libc::S_IFIFO | 0o644, 0, &r));
    eperm(fs.link(outside, dir, b"new"));
    eperm(fs.unlink(dir, b"in"));
    eperm(fs.rmdir(dir, b"sub"));
    eperm(fs.rename(dir, b"in", dir, b"in2", 0));
    eperm(fs.rename(dir, b"in", ROOT, b"in2", 0));
    eperm(fs.rename(ROOT, b"out", dir, b"out", 0));
    eperm(fs.rmdir(ROOT, b"d"));
    // An existing name that is taken stays EEXIST (the lookup comes first).
    assert_eq!(fs.mkdir(dir, b"sub", 0o755, &r).unwrap_err(), Errno::EEXIST);
    // What is inside is not immutable itself.
    fs.write(inside, 0, b"still writable", false).unwrap();
    let mut names: Vec<_> = list(&fs, dir).into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, vec![b"in".to_vec(), b"sub".to_vec()]);
    let _ = sub;
}

#[test]
fn append_only_file_opens_for_write_only_with_o_append() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = flagged_file(&fs, APPEND);
    for flags in [
        libc::O_WRONLY,
        libc::O_RDWR,
        libc::O_RDONLY | libc::O_TRUNC,
        libc::O_WRONLY | libc::O_APPEND | libc::O_TRUNC,
    ] {
        eperm(fs.open(f, flags));
    }
    for flags in [
        libc::O_RDONLY,
        libc::O_WRONLY | libc::O_APPEND,
        libc::O_RDWR | libc::O_APPEND,
    ] {
        fs.open(f, flags).unwrap();
        fs.release(f).unwrap();
    }
}

#[test]
fn append_only_file_takes_appends_but_no_change_of_its_bytes() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = flagged_file(&fs, APPEND);
    fs.open(f, libc::O_WRONLY | libc::O_APPEND).unwrap();
    // An appending write ignores its offset (pwrite on an O_APPEND descriptor).
    assert_eq!(fs.write(f, 0, b" world", true).unwrap(), 6);
    // A write that does not append, as a descriptor whose O_APPEND was cleared sends it.
    eperm(fs.write(f, 0, b"J", false));
    eperm(fs.write(f, 6, b"W", false));
    eperm(fs.write(f, 10, b"D!", false));
    fs.release(f).unwrap();
    assert_eq!(read_all(&fs, f), b"hello world");
}

#[test]
fn append_only_file_takes_writes_that_only_rewrite_its_bytes_and_extend_it() {
    // What the kernel's writeback cache (dax=never) sends for an append: the whole page
    // at its offset, the file's bytes unchanged and the new ones after them.
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = flagged_file(&fs, APPEND);
    assert_eq!(fs.write(f, 0, b"hello world", false).unwrap(), 11);
    assert_eq!(fs.write(f, 11, b"!", false).unwrap(), 1);
    assert_eq!(fs.write(f, 6, b"world!", false).unwrap(), 6);
    // Past the end: nothing the file holds changes (the gap reads as zeros).
    assert_eq!(fs.write(f, 16, b"?", false).unwrap(), 1);
    assert_eq!(read_all(&fs, f), b"hello world!\0\0\0\0?");
}

#[test]
fn append_only_file_refuses_truncate_punch_and_zero_but_allocates() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = flagged_file(&fs, APPEND);
    for size in [0, 5, 100_000] {
        eperm(fs.setattr(
            f,
            &root(),
            &SetAttr {
                size: Some(size),
                ..Default::default()
            },
        ));
    }
    eperm(fs.fallocate(
        f,
        0,
        4096,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    ));
    eperm(fs.fallocate(f, 0, 4096, libc::FALLOC_FL_ZERO_RANGE));
    eperm(fs.fallocate(f, 0, 4096, libc::FALLOC_FL_COLLAPSE_RANGE));
    fs.fallocate(f, 0, 8192, libc::FALLOC_FL_KEEP_SIZE).unwrap();
    fs.fallocate(f, 0, 1 << 20, 0).unwrap();
    assert_eq!(fs.getattr(f).unwrap().size, 1 << 20);
    assert_eq!(&read_all(&fs, f)[..5], b"hello");
}

#[test]
fn append_only_file_refuses_chmod_chown_explicit_times_and_xattrs_but_may_be_touched() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = flagged_file(&fs, APPEND);
    for c in [
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
        SetAttr {
            uid: Some(7),
            ..Default::default()
        },
        SetAttr {
            gid: Some(7),
            ..Default::default()
        },
        SetAttr {
            mtime: at(1),
            ..Default::default()
        },
        SetAttr {
            atime: at(1),
            mtime: Some(SetTime::Now),
            ..Default::default()
        },
    ] {
        eperm(fs.setattr(f, &root(), &c));
    }
    eperm(fs.setxattr(f, b"user.b", b"2", 0));
    eperm(fs.removexattr(f, b"user.a"));
    let before = fs.getattr(f).unwrap();
    assert_eq!(before.perm, 0o644);
    // utimes(NULL) / touch: both times to "now" is allowed on an append-only file.
    let touched = fs
        .setattr(
            f,
            &root(),
            &SetAttr {
                atime: Some(SetTime::Now),
                mtime: Some(SetTime::Now),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(touched.mtime >= before.mtime);
}

#[test]
fn append_only_file_refuses_unlink_rename_and_link() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = flagged_file(&fs, APPEND);
    mkfile(&fs, ROOT, b"other", b"");
    eperm(fs.unlink(ROOT, b"f"));
    eperm(fs.rename(ROOT, b"f", ROOT, b"g", 0));
    eperm(fs.rename(ROOT, b"other", ROOT, b"f", 0));
    eperm(fs.link(f, ROOT, b"l"));
    assert_eq!(fs.lookup(ROOT, b"f").unwrap().ino, f);
}

#[test]
fn append_only_directory_takes_new_entries_but_loses_none() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let r = root();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &r).unwrap().ino;
    mkfile(&fs, dir, b"in", b"");
    mkfile(&fs, ROOT, b"out", b"");
    fs.set_inode_flags(dir, &r, APPEND).unwrap();
    let new = mkfile(&fs, dir, b"new", b"x");
    fs.mkdir(dir, b"sub", 0o755, &r).unwrap();
    fs.rename(ROOT, b"out", dir, b"out", 0).unwrap();
    eperm(fs.unlink(dir, b"in"));
    eperm(fs.rmdir(dir, b"sub"));
    eperm(fs.rename(dir, b"in", dir, b"in2", 0));
    eperm(fs.rename(dir, b"in", ROOT, b"in", 0));
    // Renaming over an entry removes it.
    eperm(fs.rename(dir, b"new", dir, b"in", 0));
    // New entries do not inherit the flag (as ext4: it is not among the inherited flags).
    assert_eq!(fs.inode_flags(new).unwrap(), InodeFlags::default());
    assert_eq!(list(&fs, dir).len(), 4);
}

#[test]
fn only_root_sets_or_clears_immutable_and_append() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let owner = user(1000);
    let f = mkfile(&fs, ROOT, b"f", b"");
    fs.setattr(
        f,
        &root(),
        &SetAttr {
            uid: Some(1000),
            gid: Some(1000),
            ..Default::default()
        },
    )
    .unwrap();
    eperm(fs.set_inode_flags(f, &owner, IMMUTABLE));
    eperm(fs.set_inode_flags(f, &owner, APPEND));
    fs.set_inode_flags(f, &root(), APPEND).unwrap();
    eperm(fs.set_inode_flags(f, &owner, InodeFlags::default()));
    assert_eq!(fs.inode_flags(f).unwrap(), APPEND);
    // Other flags: the owner may (inode_owner_or_capable), keeping +a as it is.
    let append_dax = InodeFlags {
        dax: true,
        ..APPEND
    };
    fs.set_inode_flags(f, &owner, append_dax).unwrap();
    assert_eq!(fs.inode_flags(f).unwrap(), append_dax);
    // Anyone else may change none.
    eperm(fs.set_inode_flags(f, &user(1001), APPEND));
    assert_eq!(fs.inode_flags(f).unwrap(), append_dax);
}

#[test]
fn immutable_inode_keeps_its_other_flags_until_immutable_is_cleared() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = flagged_file(&fs, IMMUTABLE);
    let with_dax = InodeFlags {
        dax: true,
        ..IMMUTABLE
    };
    eperm(fs.set_inode_flags(f, &root(), with_dax));
    eperm(fs.set_dax_flag(f, true));
    assert_eq!(fs.inode_flags(f).unwrap(), IMMUTABLE);
    // Clearing immutable may change the others in the same call.
    let dax_only = InodeFlags {
        dax: true,
        ..InodeFlags::default()
    };
    fs.set_inode_flags(f, &root(), dax_only).unwrap();
    assert_eq!(fs.inode_flags(f).unwrap(), dax_only);
}

#[test]
fn clearing_the_flags_gives_every_operation_back() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = flagged_file(&fs, IMMUTABLE);
    fs.set_inode_flags(f, &root(), InodeFlags::default())
        .unwrap();
    fs.open(f, libc::O_RDWR | libc::O_TRUNC).unwrap();
    fs.write(f, 0, b"new", false).unwrap();
    fs.release(f).unwrap();
    fs.setxattr(f, b"user.b", b"2", 0).unwrap();
    fs.link(f, ROOT, b"g").unwrap();
    fs.rename(ROOT, b"g", ROOT, b"h", 0).unwrap();
    fs.unlink(ROOT, b"h").unwrap();
    fs.unlink(ROOT, b"f").unwrap();
}

#[test]
fn flags_change_on_a_read_only_mount_is_erofs() {
    let d = TestDev::new(32 * MB);
    let f = {
        let fs = d.mount();
        let f = mkfile(&fs, ROOT, b"f", b"");
        fs.shutdown().unwrap();
        f
    };
    let fs = DaxFs::mount(
        &d.path,
        daxfs::FsOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        fs.set_inode_flags(f, &root(), IMMUTABLE).unwrap_err(),
        Errno::EROFS
    );
}

#[test]
fn pinned_mappings_of_immutable_or_append_only_files_give_no_writable_view() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", &pattern(8192, 3));
    let mut m = fs.map_pinned(f, 0, 8192).unwrap();
    assert!(m.as_mut_slice().is_some());
    for flags in [IMMUTABLE, APPEND] {
        fs.set_inode_flags(f, &root(), flags).unwrap();
        assert!(!m.is_writable());
        assert!(m.as_mut_slice().is_none());
        assert!(m.segments_mut().is_empty());
        assert!(m.as_slice().is_some(), "reading stays allowed");
    }
    fs.set_inode_flags(f, &root(), InodeFlags::default())
        .unwrap();
    assert!(m.as_mut_slice().is_some());
    drop(m);
}
