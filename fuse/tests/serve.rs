//! The transport-neutral adapter, served without a mount: decoded requests in
//! ([`Op`]), reply values out through a [`ReplySink`], as a second transport (the
//! io_uring queues) uses it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking

use daxfs::{DaxFs, Errno, FsOptions, SetAttr, ROOT};
use daxfs_fuse::{Ctx, DirEntry, FuseAdapter, Op, Reply, ReplySink, Served};
use daxfs_testkit::{mkfile, pattern, root, TestDev};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

const MB: u64 = 1 << 20;

/// What a sink received, owned.
#[derive(Debug, PartialEq)]
enum Got {
    Data(Vec<u8>),
    Size(u64),
    /// An entry reply: the inode it names.
    Entry(u64),
    Entries(Vec<(Vec<u8>, u64, bool)>),
    Err(i32),
    Other(String),
}

/// A sink that records the reply on a channel and takes at most `room` directory entries.
struct Recorder {
    tx: mpsc::Sender<Got>,
    room: usize,
    /// (name, cookie, carried attributes)
    entries: Vec<(Vec<u8>, u64, bool)>,
}

impl ReplySink for Recorder {
    fn send(self, reply: Reply<'_>) {
        let got = match reply {
            Reply::Data(d) => {
                let mut v = Vec::new();
                for p in d.pieces() {
                    p.append_to(&mut v);
                }
                Got::Data(v)
            }
            Reply::Attr { attr, .. } => Got::Size(attr.size),
            Reply::Entry { attr, .. } => Got::Entry(attr.ino),
            Reply::Entries => Got::Entries(self.entries),
            Reply::Err(e) => Got::Err(e.0),
            other => Got::Other(format!("{other:?}")),
        };
        let _ = self.tx.send(got);
    }

    fn add_dir_entry(&mut self, e: &DirEntry<'_>) -> bool {
        if self.entries.len() == self.room {
            return false;
        }
        self.entries
            .push((e.name.to_vec(), e.offset, e.attr.is_some()));
        true
    }
}

fn recorder(room: usize) -> (Recorder, mpsc::Receiver<Got>) {
    let (tx, rx) = mpsc::channel();
    let r = Recorder {
        tx,
        room,
        entries: Vec::new(),
    };
    (r, rx)
}

fn setup() -> (TestDev, Arc<DaxFs>, FuseAdapter) {
    setup_with(false)
}

/// `lazytime` as `-o lazytime` gives it (off, as `setup`, is the mount default).
fn setup_with(lazytime: bool) -> (TestDev, Arc<DaxFs>, FuseAdapter) {
    let d = TestDev::new(64 * MB);
    let o = FsOptions {
        layout_timeout: Duration::from_secs(30),
        lazytime,
        ..FsOptions::default()
    };
    let fs = Arc::new(DaxFs::mount(&d.path, o).unwrap());
    let a = FuseAdapter::new(fs.clone());
    (d, fs, a)
}

const ROOT_CTX: Ctx = Ctx {
    uid: 0,
    gid: 0,
    pid: 1,
    unique: 1,
};

/// Serves `op` and returns what the sink got at once.
fn serve_now(a: &FuseAdapter, op: Op<'_>) -> Got {
    let (sink, rx) = recorder(usize::MAX);
    assert_eq!(a.serve(&ROOT_CTX, op, sink), Served::Now);
    rx.try_recv().expect("a reply at once")
}

/// The node id the kernel knows inode `ino` by (the adapter's `node::of`).
fn node(fs: &DaxFs, ino: u64) -> u64 {
    daxfs_fuse::adapter::node::of(ino, fs.getattr(ino).unwrap().generation)
}

#[test]
fn a_read_reply_carries_the_bytes_of_the_file() {
    let (_d, fs, a) = setup();
    let data = pattern(20000, 7);
    let ino = mkfile(&fs, ROOT, b"f", &data);
    let op = Op::Read {
        ino: node(&fs, ino),
        fh: 0,
        offset: 100,
        size: 9000,
    };
    assert_eq!(serve_now(&a, op), Got::Data(data[100..9100].to_vec()));
}

#[test]
fn a_lookup_of_a_missing_name_is_enoent() {
    let op = Op::Lookup {
        parent: ROOT,
        name: b"missing",
    };
    let (_d, _fs, a) = setup();
    assert_eq!(serve_now(&a, op), Got::Err(libc::ENOENT));
}

#[test]
fn flush_fsync_and_fsyncdir_are_enosys_so_the_kernel_stops_sending_them() {
    let (_d, fs, a) = setup();
    let ino = mkfile(&fs, ROOT, b"f", b"x");
    let ops = [
        Op::Flush {
            ino: node(&fs, ino),
            fh: 0,
        },
        Op::Fsync {
            ino: node(&fs, ino),
            fh: 0,
            datasync: false,
        },
        Op::Fsyncdir {
            ino: ROOT,
            fh: 0,
            datasync: true,
        },
    ];
    for op in ops {
        assert_eq!(serve_now(&a, op), Got::Err(libc::ENOSYS));
    }
}

#[test]
fn with_lazytime_fsync_is_answered_and_commits_the_overwrites_times() {
    let (_d, fs, a) = setup_with(true);
    let ino = mkfile(&fs, ROOT, b"f", &[0u8; 4096]);
    fs.write(ino, 0, &[1u8; 4096], false).unwrap();
    let (commits, _) = fs.counters();
    let fsync = |datasync| Op::Fsync {
        ino: node(&fs, ino),
        fh: 0,
        datasync,
    };
    // fdatasync need not persist times: nothing to commit.
    assert_eq!(serve_now(&a, fsync(true)), Got::Other("Empty".into()));
    assert_eq!(fs.counters().0, commits);
    assert_eq!(serve_now(&a, fsync(false)), Got::Other("Empty".into()));
    assert_eq!(fs.counters().0, commits + 1);
}

#[test]
fn rename_with_a_flag_other_than_noreplace_or_exchange_is_einval() {
    let (_d, fs, a) = setup();
    mkfile(&fs, ROOT, b"f", b"x");
    let op = Op::Rename {
        parent: ROOT,
        name: b"f",
        newparent: ROOT,
        newname: b"g",
        flags: libc::RENAME_WHITEOUT,
    };
    assert_eq!(serve_now(&a, op), Got::Err(libc::EINVAL));
    assert!(fs.lookup(ROOT, b"f").is_ok());
}

/// Lists the root from `offset` into a sink with room for `room` entries.
fn list(a: &FuseAdapter, plus: bool, offset: u64, room: usize) -> Vec<(Vec<u8>, u64, bool)> {
    let (sink, rx) = recorder(room);
    let op = if plus {
        Op::Readdirplus {
            ino: ROOT,
            fh: 0,
            offset,
        }
    } else {
        Op::Readdir {
            ino: ROOT,
            fh: 0,
            offset,
        }
    };
    assert_eq!(a.serve(&ROOT_CTX, op, sink), Served::Now);
    match rx.try_recv().unwrap() {
        Got::Entries(e) => e,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_full_directory_reply_continues_from_the_last_entry_taken() {
    let (_d, fs, a) = setup();
    for i in 0..10 {
        mkfile(&fs, ROOT, format!("f{i}").as_bytes(), b"");
    }
    for plus in [false, true] {
        let all = list(&a, plus, 0, usize::MAX);
        assert_eq!(all.len(), 12, "10 files, \".\" and \"..\"");
        assert!(all.iter().all(|e| e.2 == plus), "attributes with plus only");
        let first = list(&a, plus, 0, 3);
        assert_eq!(first, all[..3]);
        let rest = list(&a, plus, first[2].1, usize::MAX);
        assert_eq!(rest, all[3..]);
    }
}

#[test]
fn a_truncate_of_a_pinned_range_is_answered_once_the_pin_is_released() {
    let (_d, fs, a) = setup();
    let ino = mkfile(&fs, ROOT, b"f", &pattern(16384, 1));
    let pin = fs.pin_range(ino, 0, 4096).unwrap();
    let (sink, rx) = recorder(0);
    let op = Op::Setattr {
        ino: node(&fs, ino),
        fh: None,
        changes: SetAttr {
            size: Some(0),
            ..Default::default()
        },
    };
    assert_eq!(a.serve(&ROOT_CTX, op, sink), Served::Deferred);
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    fs.unpin_range(pin);
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)), Ok(Got::Size(0)));
    assert!(a
        .waiters()
        .wait_idle(std::time::Instant::now() + Duration::from_secs(10)));
}

#[test]
fn a_user_past_its_share_of_waiters_is_answered_ebusy_at_once() {
    let (_d, fs, a) = setup();
    let ino = mkfile(&fs, ROOT, b"f", &pattern(16384, 2));
    let own = SetAttr {
        uid: Some(1000),
        ..Default::default()
    };
    fs.setattr(ino, &root(), &own).unwrap();
    let pin = fs.pin_range(ino, 0, 4096).unwrap();
    let user = Ctx {
        uid: 1000,
        gid: 1000,
        pid: 2,
        unique: 2,
    };
    let truncate = || Op::Setattr {
        ino: node(&fs, ino),
        fh: None,
        changes: SetAttr {
            size: Some(0),
            ..Default::default()
        },
    };
    let mut waiting = Vec::new();
    for _ in 0..a.waiters().per_user() {
        let (sink, rx) = recorder(0);
        assert_eq!(a.serve(&user, truncate(), sink), Served::Deferred);
        waiting.push(rx);
    }
    let (sink, rx) = recorder(0);
    assert_eq!(a.serve(&user, truncate(), sink), Served::Now);
    assert_eq!(rx.try_recv(), Ok(Got::Err(Errno::EBUSY.0)));
    fs.unpin_range(pin);
    for rx in waiting {
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)), Ok(Got::Size(0)));
    }
    assert!(a
        .waiters()
        .wait_idle(std::time::Instant::now() + Duration::from_secs(10)));
}

/// Fills the device with `name`, which the "kernel" still references after its handle is
/// released (the adapter's `remember` of every entry it hands out), and removes it: its
/// blocks are freed only by the FORGET that follows.
fn fill_and_remove_remembered(fs: &DaxFs, name: &[u8]) -> u64 {
    let big = fs.create(ROOT, name, 0o644, libc::O_RDWR, &root()).unwrap();
    fs.remember(big.ino).unwrap();
    let r = fs.fallocate(big.ino, 0, 1 << 30, 0);
    assert_eq!(r.unwrap_err(), Errno::ENOSPC);
    fs.release(big.ino).unwrap();
    fs.unlink(ROOT, name).unwrap();
    big.ino
}

fn write_op(ino: u64, data: &[u8]) -> Op<'_> {
    Op::Write {
        ino,
        fh: 0,
        offset: 0,
        data,
        write_flags: 0,
        flags: libc::O_WRONLY,
    }
}

#[test]
fn a_write_that_finds_no_space_a_removed_file_still_holds_is_answered_after_its_forget() {
    let (_d, fs, a) = setup();
    let p = mkfile(&fs, ROOT, b"p", b"");
    let big = fill_and_remove_remembered(&fs, b"big");
    let (sink, rx) = recorder(0);
    assert_eq!(
        a.serve(&ROOT_CTX, write_op(node(&fs, p), b"data\n"), sink),
        Served::Deferred
    );
    // The kernel's FORGET of the removed file arrives after the write.
    std::thread::sleep(Duration::from_millis(20));
    fs.forget(big, 1).unwrap();
    let got = rx.recv_timeout(Duration::from_secs(20));
    assert_eq!(got, Ok(Got::Other("Written(5)".into())));
    assert_eq!(daxfs_testkit::read_all(&fs, p), b"data\n");
    assert!(a
        .waiters()
        .wait_idle(std::time::Instant::now() + Duration::from_secs(10)));
}

#[test]
fn a_write_that_finds_no_space_and_no_removed_file_is_enospc_at_once() {
    let (_d, fs, a) = setup();
    let p = mkfile(&fs, ROOT, b"p", b"");
    let big = fs
        .create(ROOT, b"big", 0o644, libc::O_RDWR, &root())
        .unwrap();
    let r = fs.fallocate(big.ino, 0, 1 << 30, 0);
    assert_eq!(r.unwrap_err(), Errno::ENOSPC);
    assert_eq!(
        serve_now(&a, write_op(node(&fs, p), b"data\n")),
        Got::Err(libc::ENOSPC)
    );
}

#[test]
fn a_write_waiting_for_a_removed_file_held_open_is_enospc_after_the_bounded_wait() {
    let (_d, fs, a) = setup();
    let p = mkfile(&fs, ROOT, b"p", b"");
    let big = fill_and_remove_remembered(&fs, b"big");
    fs.open(big, libc::O_RDONLY).unwrap();
    let (sink, rx) = recorder(0);
    let t = std::time::Instant::now();
    assert_eq!(
        a.serve(&ROOT_CTX, write_op(node(&fs, p), b"data\n"), sink),
        Served::Deferred
    );
    let got = rx.recv_timeout(Duration::from_secs(20));
    assert_eq!(got, Ok(Got::Err(libc::ENOSPC)));
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    // The same orphan, still held: the next write does not wait again.
    assert_eq!(
        serve_now(&a, write_op(node(&fs, p), b"data\n")),
        Got::Err(libc::ENOSPC)
    );
    assert!(a
        .waiters()
        .wait_idle(std::time::Instant::now() + Duration::from_secs(10)));
}

/// The blocks the big file's fallocate left (a few) taken too: after
/// [`fill_and_remove_remembered`], no block is free but those the removed file gives back
/// with its FORGET.
fn take_the_last_blocks(fs: &DaxFs) {
    let rest = mkfile(fs, ROOT, b"rest", b"");
    let mut off = 0;
    while fs.fallocate(rest, off, 4096, 0).is_ok() {
        off += 4096;
    }
    assert_eq!(fs.statfs().bfree, 0);
}

/// A directory "d" whose one block is full (63 one-slot entries): a new name in it needs
/// a new block.
fn full_directory(fs: &DaxFs) -> u64 {
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap().ino;
    for i in 0..63 {
        let name = format!("e{i:02}");
        fs.mknod(dir, name.as_bytes(), libc::S_IFREG | 0o644, 0, &root())
            .unwrap();
    }
    dir
}

/// Fills the device (a removed file the kernel still references holds nearly all of it),
/// serves `op`, which then finds no space, and checks that it waits for the space rather
/// than answering ENOSPC: it is deferred, and answered once the removed file's FORGET
/// frees its blocks. Returns that answer. Each op's test fails if its wait is removed.
fn answer_after_the_forget_of_a_removed_file(fs: &DaxFs, a: &FuseAdapter, op: Op<'_>) -> Got {
    let big = fill_and_remove_remembered(fs, b"big");
    take_the_last_blocks(fs);
    let (sink, rx) = recorder(0);
    assert_eq!(a.serve(&ROOT_CTX, op, sink), Served::Deferred);
    // The kernel's FORGET of the removed file arrives after the request.
    std::thread::sleep(Duration::from_millis(20));
    fs.forget(big, 1).unwrap();
    let got = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(a
        .waiters()
        .wait_idle(std::time::Instant::now() + Duration::from_secs(10)));
    got
}

#[test]
fn a_setxattr_that_finds_no_space_a_removed_file_still_holds_is_answered_after_its_forget() {
    let (_d, fs, a) = setup();
    let p = mkfile(&fs, ROOT, b"p", b"");
    let op = Op::Setxattr {
        ino: node(&fs, p),
        name: b"user.k",
        value: b"v",
        flags: 0,
        position: 0,
    };
    let got = answer_after_the_forget_of_a_removed_file(&fs, &a, op);
    assert_eq!(got, Got::Other("Empty".into()));
    assert_eq!(fs.getxattr(p, b"user.k").unwrap(), b"v");
}

#[test]
fn a_mkdir_into_a_full_directory_that_finds_no_space_is_answered_after_the_forget() {
    let (_d, fs, a) = setup();
    let dir = full_directory(&fs);
    let op = Op::Mkdir {
        parent: node(&fs, dir),
        name: b"new",
        mode: 0o755,
        umask: 0,
    };
    let got = answer_after_the_forget_of_a_removed_file(&fs, &a, op);
    let new = fs.lookup(dir, b"new").unwrap();
    assert_eq!(got, Got::Entry(new.ino));
    assert_eq!(new.kind, daxfs::FileKind::Dir);
}

#[test]
fn a_symlink_that_finds_no_space_is_answered_after_the_forget() {
    let (_d, fs, a) = setup();
    let dir = full_directory(&fs);
    let op = Op::Symlink {
        parent: node(&fs, dir),
        name: b"sym",
        target: b"somewhere",
    };
    let got = answer_after_the_forget_of_a_removed_file(&fs, &a, op);
    let sym = fs.lookup(dir, b"sym").unwrap().ino;
    assert_eq!(got, Got::Entry(sym));
    assert_eq!(fs.readlink(sym).unwrap(), b"somewhere");
}

#[test]
fn a_link_that_finds_no_space_is_answered_after_the_forget() {
    let (_d, fs, a) = setup();
    let dir = full_directory(&fs);
    let f = mkfile(&fs, ROOT, b"f", b"data");
    let op = Op::Link {
        ino: node(&fs, f),
        newparent: node(&fs, dir),
        newname: b"f2",
    };
    let got = answer_after_the_forget_of_a_removed_file(&fs, &a, op);
    assert_eq!(got, Got::Entry(f));
    assert_eq!(fs.lookup(dir, b"f2").unwrap().ino, f);
}

#[test]
fn a_rename_that_finds_no_space_is_answered_after_the_forget() {
    let (_d, fs, a) = setup();
    let dir = full_directory(&fs);
    let f = mkfile(&fs, ROOT, b"mover", b"data");
    let op = Op::Rename {
        parent: ROOT,
        name: b"mover",
        newparent: node(&fs, dir),
        newname: b"moved",
        flags: 0,
    };
    let got = answer_after_the_forget_of_a_removed_file(&fs, &a, op);
    assert_eq!(got, Got::Other("Empty".into()));
    assert_eq!(fs.lookup(dir, b"moved").unwrap().ino, f);
    assert_eq!(fs.lookup(ROOT, b"mover").unwrap_err(), Errno::ENOENT);
}

#[test]
fn a_fallocate_that_finds_no_space_is_answered_after_the_forget() {
    let (_d, fs, a) = setup();
    let p = mkfile(&fs, ROOT, b"p", b"");
    let op = Op::Fallocate {
        ino: node(&fs, p),
        fh: 0,
        offset: 0,
        length: 64 * 1024,
        mode: 0,
    };
    let got = answer_after_the_forget_of_a_removed_file(&fs, &a, op);
    assert_eq!(got, Got::Other("Empty".into()));
    assert_eq!(fs.getattr(p).unwrap().size, 64 * 1024);
}

#[test]
fn a_copy_file_range_that_finds_no_space_is_answered_after_the_forget() {
    let (_d, fs, a) = setup();
    let data = pattern(64 * 1024, 3);
    let src = mkfile(&fs, ROOT, b"src", &data);
    let dst = mkfile(&fs, ROOT, b"dst", b"");
    let op = Op::CopyFileRange {
        ino_in: node(&fs, src),
        fh_in: 0,
        offset_in: 0,
        ino_out: node(&fs, dst),
        fh_out: 0,
        offset_out: 0,
        len: data.len() as u64,
        flags: 0,
    };
    let got = answer_after_the_forget_of_a_removed_file(&fs, &a, op);
    assert_eq!(got, Got::Other(format!("Written({})", data.len())));
    assert_eq!(daxfs_testkit::read_all(&fs, dst), data);
}

#[test]
fn a_node_id_of_a_freed_and_reused_inode_number_is_estale() {
    let (_d, fs, a) = setup();
    let old = mkfile(&fs, ROOT, b"old", b"old bytes");
    let stale = node(&fs, old);
    fs.unlink(ROOT, b"old").unwrap();
    let new = mkfile(&fs, ROOT, b"new", b"new");
    assert_eq!(new, old, "the number is reused");
    let getattr = |ino| Op::Getattr { ino, fh: None };
    assert_eq!(serve_now(&a, getattr(stale)), Got::Err(libc::ESTALE));
    let read = Op::Read {
        ino: stale,
        fh: 0,
        offset: 0,
        size: 100,
    };
    assert_eq!(serve_now(&a, read), Got::Err(libc::ESTALE));
    assert_eq!(serve_now(&a, getattr(node(&fs, new))), Got::Size(3));
}

#[test]
fn an_entry_reply_carries_the_inode_number_as_st_ino() {
    let (_d, fs, a) = setup();
    let ino = mkfile(&fs, ROOT, b"f", b"x");
    let op = Op::Lookup {
        parent: ROOT,
        name: b"f",
    };
    assert_eq!(
        serve_now(&a, op),
        Got::Entry(ino),
        "st_ino is the inode number"
    );
    assert_ne!(node(&fs, ino), ino, "the node id carries the generation");
}

/// Follower slots claimed in the device's host table.
fn follower_slots(d: &TestDev) -> usize {
    let dev = daxfs_pmem::Device::open(
        &d.path,
        daxfs_pmem::DeviceOptions {
            writable: false,
            exclusive: false,
            populate: false,
        },
    )
    .unwrap();
    let t = daxfs_format::hosts::HostTable::on_device(&dev).unwrap();
    t.hosts().filter(|(_, h)| h.owner() != 0).count()
}

/// DAXFS_IOC_PROMOTE by `uid` on a follower of a device whose writer has stopped: the
/// reply, whether the adapter still serves a follower, the follower slots left claimed.
fn promote_as(uid: u32) -> (Got, bool, usize) {
    let d = TestDev::new(32 * MB);
    let quick = FsOptions {
        heartbeat: Duration::from_millis(10),
        host_timeout: Duration::from_millis(200),
        ..FsOptions::default()
    };
    let w = DaxFs::mount(&d.path, quick.clone()).unwrap();
    mkfile(&w, ROOT, b"f", b"data");
    let f = DaxFs::mount(
        &d.path,
        FsOptions {
            follow: true,
            ..quick
        },
    );
    // The writer goes (a clean unmount: its lease is released, free at once).
    drop(w);
    let f = Arc::new(f.unwrap());
    let a = FuseAdapter::new(f);
    let ctx = Ctx { uid, ..ROOT_CTX };
    let (sink, rx) = recorder(usize::MAX);
    let op = Op::Ioctl {
        ino: ROOT,
        fh: 0,
        cmd: daxfs_fuse::ioctl::DAXFS_IOC_PROMOTE,
        in_data: &[],
        out_size: 8,
    };
    assert_eq!(a.serve(&ctx, op, sink), Served::Now);
    let got = rx.try_recv().expect("a reply at once");
    (got, a.fs().is_follower(), follower_slots(&d))
}

#[test]
fn a_promote_by_a_user_other_than_root_is_eperm_and_changes_nothing() {
    let (got, still_follower, slots) = promote_as(1000);
    assert_eq!(got, Got::Err(libc::EPERM));
    assert!(still_follower);
    assert_eq!(slots, 1);
}

#[test]
fn a_promote_by_root_swaps_in_a_writer_and_lets_the_follower_go() {
    let (got, still_follower, slots) = promote_as(0);
    assert!(matches!(got, Got::Other(_)), "{got:?}");
    assert!(!still_follower);
    // The follower was dropped: its host slot is free again.
    assert_eq!(slots, 0);
}
