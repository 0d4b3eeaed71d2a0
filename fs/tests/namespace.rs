//! Namespace semantics of the core API against Linux (ext4/tmpfs): create, lookup,
//! mknod, mkdir/rmdir, symlinks, hard links, with the errnos Linux gives.
use common::*;
use daxfs::{Errno, FileKind, ROOT};
use daxfs_testkit as common;

const MB: u64 = 1 << 20;

#[test]
fn create_then_lookup_and_getattr_agree() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let a = fs.create(ROOT, b"f", 0o640, libc::O_RDWR, &root()).unwrap();
    fs.release(a.ino).unwrap();
    let l = fs.lookup(ROOT, b"f").unwrap();
    assert_eq!(l, fs.getattr(a.ino).unwrap());
    assert_eq!(l.kind, FileKind::File);
    assert_eq!(l.perm, 0o640);
    assert_eq!(l.nlink, 1);
    assert_eq!(l.size, 0);
    assert_eq!((l.uid, l.gid), (0, 0));
}

#[test]
fn new_inode_takes_owner_from_credentials() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let c = daxfs::Cred {
        uid: 1000,
        gid: 100,
        pid: 1,
    };
    let a = fs.mkdir(ROOT, b"d", 0o755, &c).unwrap();
    assert_eq!((a.uid, a.gid), (1000, 100));
}

#[test]
fn create_exclusive_of_existing_name_is_eexist() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    mkfile(&fs, ROOT, b"f", b"");
    let e = fs.create(
        ROOT,
        b"f",
        0o644,
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
        &root(),
    );
    assert_eq!(e.unwrap_err(), Errno::EEXIST);
}

#[test]
fn create_without_excl_opens_the_existing_file() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let ino = mkfile(&fs, ROOT, b"f", b"data");
    let a = fs.create(ROOT, b"f", 0o644, libc::O_RDWR, &root()).unwrap();
    assert_eq!(a.ino, ino);
    assert_eq!(a.size, 4);
    fs.release(ino).unwrap();
}

#[test]
fn create_with_o_trunc_of_existing_file_truncates_it() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let ino = mkfile(&fs, ROOT, b"f", b"data");
    let a = fs
        .create(ROOT, b"f", 0o644, libc::O_RDWR | libc::O_TRUNC, &root())
        .unwrap();
    assert_eq!(a.ino, ino);
    assert_eq!(a.size, 0);
    fs.release(ino).unwrap();
}

#[test]
fn mkdir_of_existing_name_is_eexist() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    mkfile(&fs, ROOT, b"x", b"");
    assert_eq!(
        fs.mkdir(ROOT, b"x", 0o755, &root()).unwrap_err(),
        Errno::EEXIST
    );
    fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
    assert_eq!(
        fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap_err(),
        Errno::EEXIST
    );
}

#[test]
fn lookup_of_missing_name_is_enoent() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    assert_eq!(fs.lookup(ROOT, b"missing").unwrap_err(), Errno::ENOENT);
}

#[test]
fn getattr_of_unused_inode_is_enoent() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    assert_eq!(fs.getattr(12345).unwrap_err(), Errno::ENOENT);
}

#[test]
fn lookup_and_create_under_a_file_are_enotdir() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    assert_eq!(fs.lookup(f, b"x").unwrap_err(), Errno::ENOTDIR);
    assert_eq!(
        fs.create(f, b"x", 0o644, libc::O_RDWR, &root())
            .unwrap_err(),
        Errno::ENOTDIR
    );
    assert_eq!(
        fs.mkdir(f, b"x", 0o755, &root()).unwrap_err(),
        Errno::ENOTDIR
    );
    assert_eq!(fs.unlink(f, b"x").unwrap_err(), Errno::ENOTDIR);
}

#[test]
fn name_of_255_bytes_works_and_256_is_enametoolong() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let ok = vec![b'a'; 255];
    let long = vec![b'b'; 256];
    mkfile(&fs, ROOT, &ok, b"");
    assert_eq!(fs.lookup(ROOT, &ok).unwrap().kind, FileKind::File);
    let e = fs.create(ROOT, &long, 0o644, libc::O_RDWR, &root());
    assert_eq!(e.unwrap_err(), Errno::ENAMETOOLONG);
    assert_eq!(fs.lookup(ROOT, &long).unwrap_err(), Errno::ENAMETOOLONG);
    assert_eq!(
        fs.mkdir(ROOT, &long, 0o755, &root()).unwrap_err(),
        Errno::ENAMETOOLONG
    );
    assert_eq!(fs.unlink(ROOT, &long).unwrap_err(), Errno::ENAMETOOLONG);
}

#[test]
fn mknod_makes_fifo_socket_and_device_nodes_with_rdev() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let r = root();
    let fifo = fs
        .mknod(ROOT, b"fifo", libc::S_IFIFO | 0o600, 0, &r)
        .unwrap();
    let sock = fs
        .mknod(ROOT, b"sock", libc::S_IFSOCK | 0o600, 0, &r)
        .unwrap();
    let rdev = libc::makedev(8, 1) as u32;
    let chr = fs
        .mknod(ROOT, b"chr", libc::S_IFCHR | 0o600, rdev, &r)
        .unwrap();
    let blk = fs
        .mknod(ROOT, b"blk", libc::S_IFBLK | 0o600, rdev, &r)
        .unwrap();
    assert_eq!(fifo.kind, FileKind::Fifo);
    assert_eq!(sock.kind, FileKind::Socket);
    assert_eq!((chr.kind, chr.rdev), (FileKind::CharDev, rdev));
    assert_eq!((blk.kind, blk.rdev), (FileKind::BlockDev, rdev));
    assert_eq!(fs.lookup(ROOT, b"chr").unwrap().rdev, rdev);
    assert_eq!(fs.lookup(ROOT, b"fifo").unwrap().perm, 0o600);
}

#[test]
fn mknod_of_regular_file_creates_a_file() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let a = fs
        .mknod(ROOT, b"f", libc::S_IFREG | 0o644, 0, &root())
        .unwrap();
    assert_eq!(a.kind, FileKind::File);
}

#[test]
fn mkdir_raises_parent_link_count_and_rmdir_lowers_it() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let r = root();
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, 2);
    let a = fs.mkdir(ROOT, b"a", 0o755, &r).unwrap();
    assert_eq!(a.nlink, 2);
    fs.mkdir(ROOT, b"b", 0o755, &r).unwrap();
    mkfile(&fs, ROOT, b"file", b"");
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, 4);
    fs.mkdir(a.ino, b"sub", 0o755, &r).unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap().nlink, 3);
    fs.rmdir(ROOT, b"b").unwrap();
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, 3);
}

#[test]
fn rmdir_of_non_empty_directory_is_enotempty() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let a = fs.mkdir(ROOT, b"a", 0o755, &root()).unwrap();
    mkfile(&fs, a.ino, b"f", b"");
    assert_eq!(fs.rmdir(ROOT, b"a").unwrap_err(), Errno::ENOTEMPTY);
    fs.unlink(a.ino, b"f").unwrap();
    fs.rmdir(ROOT, b"a").unwrap();
    assert_eq!(fs.lookup(ROOT, b"a").unwrap_err(), Errno::ENOENT);
    assert_eq!(fs.getattr(a.ino).unwrap_err(), Errno::ENOENT);
}

#[test]
fn rmdir_of_a_file_is_enotdir_and_unlink_of_a_dir_is_eisdir() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    mkfile(&fs, ROOT, b"f", b"");
    fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
    assert_eq!(fs.rmdir(ROOT, b"f").unwrap_err(), Errno::ENOTDIR);
    assert_eq!(fs.unlink(ROOT, b"d").unwrap_err(), Errno::EISDIR);
}

#[test]
fn rmdir_of_missing_name_is_enoent() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    assert_eq!(fs.rmdir(ROOT, b"nope").unwrap_err(), Errno::ENOENT);
    assert_eq!(fs.unlink(ROOT, b"nope").unwrap_err(), Errno::ENOENT);
}

#[test]
fn dot_and_dotdot_look_up_the_directory_and_its_parent() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let a = fs.mkdir(ROOT, b"a", 0o755, &root()).unwrap();
    let b = fs.mkdir(a.ino, b"b", 0o755, &root()).unwrap();
    assert_eq!(fs.lookup(b.ino, b".").unwrap().ino, b.ino);
    assert_eq!(fs.lookup(b.ino, b"..").unwrap().ino, a.ino);
    assert_eq!(fs.lookup(ROOT, b"..").unwrap().ino, ROOT);
}

#[test]
fn symlink_stores_target_and_readlink_returns_it() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let s = fs.symlink(ROOT, b"l", b"some/where/else", &root()).unwrap();
    assert_eq!(s.kind, FileKind::Symlink);
    assert_eq!(s.size, 15);
    assert_eq!(s.perm, 0o777);
    assert_eq!(fs.readlink(s.ino).unwrap(), b"some/where/else");
}

#[test]
fn symlink_target_of_4095_bytes_works_and_4096_is_enametoolong() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let t = pattern(4095, 1)
        .into_iter()
        .map(|b| b'a' + b % 26)
        .collect::<Vec<u8>>();
    let s = fs.symlink(ROOT, b"l", &t, &root()).unwrap();
    assert_eq!(fs.readlink(s.ino).unwrap(), t);
    let t2 = vec![b'x'; 4096];
    assert_eq!(
        fs.symlink(ROOT, b"l2", &t2, &root()).unwrap_err(),
        Errno::ENAMETOOLONG
    );
    assert_eq!(fs.lookup(ROOT, b"l2").unwrap_err(), Errno::ENOENT);
}

#[test]
fn readlink_of_non_symlink_is_einval() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    assert_eq!(fs.readlink(f).unwrap_err(), Errno::EINVAL);
}

#[test]
fn symlink_of_existing_name_is_eexist() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    mkfile(&fs, ROOT, b"f", b"");
    assert_eq!(
        fs.symlink(ROOT, b"f", b"t", &root()).unwrap_err(),
        Errno::EEXIST
    );
}

#[test]
fn hard_links_count_up_and_down() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let sub = fs.mkdir(ROOT, b"sub", 0o755, &root()).unwrap();
    let f = mkfile(&fs, ROOT, b"f", b"shared");
    let a = fs.link(f, sub.ino, b"g").unwrap();
    assert_eq!(a.nlink, 2);
    fs.link(f, ROOT, b"h").unwrap();
    assert_eq!(fs.getattr(f).unwrap().nlink, 3);
    assert_eq!(fs.lookup(sub.ino, b"g").unwrap().ino, f);
    fs.unlink(ROOT, b"f").unwrap();
    assert_eq!(fs.getattr(f).unwrap().nlink, 2);
    fs.unlink(sub.ino, b"g").unwrap();
    assert_eq!(fs.getattr(f).unwrap().nlink, 1);
    assert_eq!(read_all(&fs, f), b"shared");
    fs.unlink(ROOT, b"h").unwrap();
    assert_eq!(fs.getattr(f).unwrap_err(), Errno::ENOENT);
}

#[test]
fn hard_link_does_not_change_parent_link_count() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    let before = fs.getattr(ROOT).unwrap().nlink;
    fs.link(f, ROOT, b"g").unwrap();
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, before);
}

#[test]
fn link_of_a_directory_is_eperm() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let a = fs.mkdir(ROOT, b"a", 0o755, &root()).unwrap();
    assert_eq!(fs.link(a.ino, ROOT, b"b").unwrap_err(), Errno::EPERM);
}

#[test]
fn link_to_existing_name_is_eexist() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"");
    mkfile(&fs, ROOT, b"g", b"");
    assert_eq!(fs.link(f, ROOT, b"g").unwrap_err(), Errno::EEXIST);
}

#[test]
fn link_of_symlink_links_the_symlink_itself() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let s = fs.symlink(ROOT, b"l", b"target", &root()).unwrap();
    let a = fs.link(s.ino, ROOT, b"l2").unwrap();
    assert_eq!((a.kind, a.nlink), (FileKind::Symlink, 2));
    assert_eq!(
        fs.readlink(fs.lookup(ROOT, b"l2").unwrap().ino).unwrap(),
        b"target"
    );
}

#[test]
fn unlink_frees_the_blocks_of_the_last_link() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    // The root directory's first entry block is allocated by this first create.
    let f = mkfile(&fs, ROOT, b"f", b"");
    let before = fs.statfs().bfree;
    fs.write(f, 0, &pattern(1 << 20, 2), false).unwrap();
    assert!(fs.statfs().bfree <= before - 256);
    fs.unlink(ROOT, b"f").unwrap();
    assert_eq!(fs.statfs().bfree, before);
}

#[test]
fn statfs_counts_inodes() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let s0 = fs.statfs();
    mkfile(&fs, ROOT, b"f", b"");
    fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
    assert_eq!(fs.statfs().ffree, s0.ffree - 2);
    fs.unlink(ROOT, b"f").unwrap();
    fs.rmdir(ROOT, b"d").unwrap();
    assert_eq!(fs.statfs().ffree, s0.ffree);
    assert_eq!(s0.namelen, 255);
}

#[test]
fn names_with_slash_or_nul_are_rejected() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    assert!(fs
        .create(ROOT, b"a/b", 0o644, libc::O_RDWR, &root())
        .is_err());
    assert!(fs
        .create(ROOT, b"a\0b", 0o644, libc::O_RDWR, &root())
        .is_err());
}
