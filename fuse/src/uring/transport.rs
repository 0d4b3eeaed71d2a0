//! The io_uring transport (`-o io_uring`, issue 14): one pinned thread per possible CPU
//! serving that CPU's [`Queue`] with the adapter's [`FuseAdapter::serve`], the ring's
//! decoded [`Request`]s mapped onto [`Op`]s and every [`Reply`] encoded with [`reply`].
//!
//! Replies and threads: an entry may be committed only by its queue's thread (see the
//! [module documentation](super)). A [`RingSink`] therefore never commits; it encodes
//! its reply (READ data straight into the entry's payload, anything else into a small
//! buffer) and posts it to the queue's [`Mailbox`]; the queue thread commits what its
//! mailbox holds after each request it serves and whenever the mailbox rings its
//! doorbell (the queue's [`Stopper`] eventfd), which a waiter thread answering a
//! deferred request does. A sink dropped without a reply (a panicking handler, a waiter
//! that died) posts EIO: every request is answered, or its caller would hang in D state.
//! FORGET, BATCH_FORGET and INTERRUPT never come here (the kernel sends them through
//! /dev/fuse, served by fuser's loop as before).

use super::abi::{FuseAttr, FuseAttrOut, FuseEntryOut, FuseIoctlOut, FuseKstatfs, FuseOpenOut};
use super::queue::{self, Event, Queue, QueueConfig, Stopper};
use super::reply::{self, DirWriter};
use super::request::{Proto, Request};
use crate::adapter::{Ctx, DirEntry, FuseAdapter, NotifierSlot, Op, Reply, ReplySink, RingGrant};
use daxfs::{Attr, FileKind, SetAttr, SetTime};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

/// `fuse_setattr_in.valid` bits (include/uapi/linux/fuse.h).
const FATTR_MODE: u32 = 1 << 0;
const FATTR_UID: u32 = 1 << 1;
const FATTR_GID: u32 = 1 << 2;
const FATTR_SIZE: u32 = 1 << 3;
const FATTR_ATIME: u32 = 1 << 4;
const FATTR_MTIME: u32 = 1 << 5;
const FATTR_FH: u32 = 1 << 6;
const FATTR_ATIME_NOW: u32 = 1 << 7;
const FATTR_MTIME_NOW: u32 = 1 << 8;
const FATTR_CTIME: u32 = 1 << 10;
/// `fuse_fsync_in.fsync_flags`: data only.
const FUSE_FSYNC_FDATASYNC: u32 = 1 << 0;

/// A reply ready to commit.
#[derive(Debug)]
enum Encoded {
    /// Already written into the entry's payload: this many bytes.
    InPayload(usize),
    /// These bytes are the payload.
    Bytes(Vec<u8>),
    /// A positive errno.
    Err(i32),
}

/// Replies posted for a queue's thread to commit, and its doorbell.
pub struct Mailbox {
    done: Mutex<Vec<(usize, Encoded)>>,
    bell: Stopper,
    /// The queue's thread: a reply posted from it needs no doorbell.
    owner: ThreadId,
    /// Set by [`Rings::stop`]: the thread ends at its next wake-up.
    stopping: AtomicBool,
}

impl Mailbox {
    fn post(&self, slot: usize, e: Encoded) {
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((slot, e));
        if std::thread::current().id() != self.owner {
            // Cannot fail short of the eventfd's count overflowing (2^64 - 2 rings).
            let _ = self.bell.stop();
        }
    }

    fn take(&self) -> Vec<(usize, Encoded)> {
        std::mem::take(&mut *self.done.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Where the sink writes READ data: the entry's payload, which stays the queue's
/// (State::User) until the queue thread commits the entry, after this sink has posted.
struct Payload {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the pointer is to a heap buffer of the queue that is neither freed nor handed
// to the kernel before the entry is committed, which happens only after the sink
// holding this has posted its reply (or been dropped); only that one sink writes it.
unsafe impl Send for Payload {}

/// The [`ReplySink`] of one ring request.
pub struct RingSink {
    slot: usize,
    mailbox: Arc<Mailbox>,
    proto: Proto,
    /// Set for READ only (no other reply is written in place).
    payload: Option<Payload>,
    /// READDIR(PLUS): the records so far and the request's size.
    dir: Vec<u8>,
    dir_size: u32,
    sent: bool,
}

impl RingSink {
    fn finish(mut self, e: Encoded) {
        self.sent = true;
        self.mailbox.post(self.slot, e);
    }
}

impl Drop for RingSink {
    fn drop(&mut self) {
        if !self.sent {
            self.mailbox.post(self.slot, Encoded::Err(libc::EIO));
        }
    }
}

fn mode_of(a: &Attr) -> u32 {
    let t = match a.kind {
        FileKind::File => libc::S_IFREG,
        FileKind::Dir => libc::S_IFDIR,
        FileKind::Symlink => libc::S_IFLNK,
        FileKind::Fifo => libc::S_IFIFO,
        FileKind::Socket => libc::S_IFSOCK,
        FileKind::CharDev => libc::S_IFCHR,
        FileKind::BlockDev => libc::S_IFBLK,
    };
    t | u32::from(a.perm)
}

fn fuse_attr(a: &Attr) -> FuseAttr {
    // Times before 1970 go out as the kernel reads them: two's complement seconds.
    FuseAttr {
        ino: a.ino,
        size: a.size,
        blocks: a.blocks,
        atime: a.atime.sec as u64,
        mtime: a.mtime.sec as u64,
        ctime: a.ctime.sec as u64,
        atimensec: a.atime.nsec,
        mtimensec: a.mtime.nsec,
        ctimensec: a.ctime.nsec,
        mode: mode_of(a),
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        ..FuseAttr::default()
    }
}

fn entry_out(a: &Attr, ttl: Duration) -> FuseEntryOut {
    FuseEntryOut {
        // The generation rides in the node id; st_ino (`attr`) is the inode number.
        nodeid: crate::adapter::node::of_attr(a),
        generation: a.generation,
        entry_valid: ttl.as_secs(),
        attr_valid: ttl.as_secs(),
        entry_valid_nsec: ttl.subsec_nanos(),
        attr_valid_nsec: ttl.subsec_nanos(),
        attr: fuse_attr(a),
    }
}

fn dirent_type(k: FileKind) -> u32 {
    u32::from(match k {
        FileKind::File => libc::DT_REG,
        FileKind::Dir => libc::DT_DIR,
        FileKind::Symlink => libc::DT_LNK,
        FileKind::Fifo => libc::DT_FIFO,
        FileKind::Socket => libc::DT_SOCK,
        FileKind::CharDev => libc::DT_CHR,
        FileKind::BlockDev => libc::DT_BLK,
    })
}

/// Encodes a reply into `buf` (sized for the largest fixed reply): its length.
fn encode_fixed(proto: Proto, reply: &Reply<'_>, buf: &mut [u8]) -> Option<usize> {
    match reply {
        Reply::Entry { attr, ttl } => reply::entry(proto, buf, &entry_out(attr, *ttl)),
        Reply::Attr { attr, ttl } => {
            let a = FuseAttrOut {
                attr_valid: ttl.as_secs(),
                attr_valid_nsec: ttl.subsec_nanos(),
                dummy: 0,
                attr: fuse_attr(attr),
            };
            reply::attr(proto, buf, &a)
        }
        Reply::XattrSize(n) => reply::xattr_size(buf, *n),
        Reply::Written(n) => reply::write(buf, *n),
        Reply::Opened { fh, flags } => reply::open(
            buf,
            &FuseOpenOut {
                fh: *fh,
                open_flags: *flags,
                backing_id: 0,
            },
        ),
        Reply::Created {
            attr,
            ttl,
            fh,
            flags,
        } => reply::create(
            proto,
            buf,
            &entry_out(attr, *ttl),
            &FuseOpenOut {
                fh: *fh,
                open_flags: *flags,
                backing_id: 0,
            },
        ),
        Reply::Statfs(s) => reply::statfs(
            proto,
            buf,
            &FuseKstatfs {
                blocks: s.blocks,
                bfree: s.bfree,
                bavail: s.bavail,
                files: s.files,
                ffree: s.ffree,
                bsize: s.bsize,
                namelen: s.namelen,
                frsize: s.frsize,
                ..FuseKstatfs::default()
            },
        ),
        Reply::Lseek(off) => reply::lseek(buf, *off as u64),
        Reply::Poll(ev) => reply::poll(buf, *ev),
        Reply::Empty => Some(0),
        _ => None,
    }
}

impl ReplySink for RingSink {
    fn send(mut self, r: Reply<'_>) {
        let e = match r {
            Reply::Err(e) => Encoded::Err(e.0),
            Reply::Data(d) => match self.payload.take() {
                Some(p) => {
                    let mut at = 0usize;
                    let mut ok = true;
                    for piece in d.pieces() {
                        let n = piece.len();
                        if at + n > p.len {
                            ok = false;
                            break;
                        }
                        // SAFETY: `p` is the entry's payload, ours until the commit that
                        // follows this post (see `Payload`); no reference to it is live
                        // (a READ request borrows nothing from the payload), and
                        // [at, at + n) is within its `len` bytes.
                        let out =
                            unsafe { std::slice::from_raw_parts_mut(p.ptr.as_ptr().add(at), n) };
                        piece.copy_to(out);
                        at += n;
                    }
                    if ok {
                        Encoded::InPayload(at)
                    } else {
                        Encoded::Err(libc::EIO)
                    }
                }
                None => Encoded::Err(libc::EIO),
            },
            Reply::Bytes(b) => Encoded::Bytes(b),
            Reply::Ioctl { result, data } => {
                let mut buf = vec![0u8; 16 + data.len()];
                let o = FuseIoctlOut {
                    result,
                    ..FuseIoctlOut::default()
                };
                match reply::ioctl(&mut buf, &o, &data) {
                    Some(n) => {
                        buf.truncate(n);
                        Encoded::Bytes(buf)
                    }
                    None => Encoded::Err(libc::EIO),
                }
            }
            Reply::Entries => Encoded::Bytes(std::mem::take(&mut self.dir)),
            other => {
                let mut buf = [0u8; 256];
                match encode_fixed(self.proto, &other, &mut buf) {
                    Some(n) => Encoded::Bytes(buf[..n].to_vec()),
                    None => {
                        debug_assert!(false, "reply {other:?} has no ring encoding");
                        Encoded::Err(libc::EIO)
                    }
                }
            }
        };
        self.finish(e);
    }

    fn add_dir_entry(&mut self, e: &DirEntry<'_>) -> bool {
        let used = self.dir.len();
        let Some(room) = usize::try_from(self.dir_size)
            .ok()
            .and_then(|s| s.checked_sub(used))
        else {
            return false;
        };
        let head = if e.attr.is_some() {
            reply::FUSE_NAME_OFFSET_DIRENTPLUS
        } else {
            reply::FUSE_NAME_OFFSET
        };
        // One record's room (the writer refuses it if that is more than is left).
        let want = reply::dirent_align(head + e.name.len()).unwrap_or(usize::MAX);
        let mut rec = vec![0u8; want.min(room)];
        let size = u32::try_from(rec.len()).unwrap_or(u32::MAX);
        let mut w = DirWriter::new(&mut rec, size);
        let ok = match e.attr {
            Some((attr, ttl)) => {
                let mut out = entry_out(attr, ttl);
                // "." and ".." carry no kernel reference.
                if e.name == b"." || e.name == b".." {
                    out.nodeid = 0;
                }
                w.push_plus(&out, e.offset, dirent_type(e.kind), e.name)
            }
            None => w.push(e.ino, e.offset, dirent_type(e.kind), e.name),
        };
        if ok {
            let n = w.len();
            self.dir.extend_from_slice(&rec[..n]);
        }
        ok
    }
}

/// The adapter's [`Op`] of a ring request on inode `nodeid`; None for opcodes the
/// mount does not serve (answered ENOSYS).
fn to_op<'a>(nodeid: u64, r: Request<'a>, notifier: &NotifierSlot) -> Option<Op<'a>> {
    let b = |s: &'a std::ffi::OsStr| s.as_bytes();
    Some(match r {
        Request::Lookup { name } => Op::Lookup {
            parent: nodeid,
            name: b(name),
        },
        Request::Getattr { fh } => Op::Getattr { ino: nodeid, fh },
        Request::Setattr(a) => {
            let time = |set: u32, now: u32, sec: u64, nsec: u32| {
                if a.valid & now != 0 {
                    Some(SetTime::Now)
                } else if a.valid & set != 0 {
                    Some(SetTime::At(daxfs_format::Timespec {
                        sec: sec as i64,
                        nsec,
                    }))
                } else {
                    None
                }
            };
            let changes = SetAttr {
                mode: (a.valid & FATTR_MODE != 0).then_some(a.mode),
                uid: (a.valid & FATTR_UID != 0).then_some(a.uid),
                gid: (a.valid & FATTR_GID != 0).then_some(a.gid),
                size: (a.valid & FATTR_SIZE != 0).then_some(a.size),
                atime: time(FATTR_ATIME, FATTR_ATIME_NOW, a.atime, a.atimensec),
                mtime: time(FATTR_MTIME, FATTR_MTIME_NOW, a.mtime, a.mtimensec),
                ctime: (a.valid & FATTR_CTIME != 0).then_some(daxfs_format::Timespec {
                    sec: a.ctime as i64,
                    nsec: a.ctimensec,
                }),
            };
            Op::Setattr {
                ino: nodeid,
                fh: (a.valid & FATTR_FH != 0).then_some(a.fh),
                changes,
            }
        }
        Request::Readlink => Op::Readlink { ino: nodeid },
        Request::Mknod { arg, name } => Op::Mknod {
            parent: nodeid,
            name: b(name),
            mode: arg.mode,
            umask: arg.umask,
            rdev: arg.rdev,
        },
        Request::Mkdir { arg, name } => Op::Mkdir {
            parent: nodeid,
            name: b(name),
            mode: arg.mode,
            umask: arg.umask,
        },
        Request::Unlink { name } => Op::Unlink {
            parent: nodeid,
            name: b(name),
        },
        Request::Rmdir { name } => Op::Rmdir {
            parent: nodeid,
            name: b(name),
        },
        Request::Symlink { name, target } => Op::Symlink {
            parent: nodeid,
            name: b(name),
            target: b(target),
        },
        Request::Rename {
            newdir,
            flags,
            name,
            newname,
        } => Op::Rename {
            parent: nodeid,
            name: b(name),
            newparent: newdir,
            newname: b(newname),
            flags,
        },
        Request::Link { oldnodeid, name } => Op::Link {
            ino: oldnodeid,
            newparent: nodeid,
            newname: b(name),
        },
        Request::Open(a) => Op::Open {
            ino: nodeid,
            flags: a.flags as i32,
        },
        Request::Create { arg, name } => Op::Create {
            parent: nodeid,
            name: b(name),
            mode: arg.mode,
            umask: arg.umask,
            flags: arg.flags as i32,
        },
        Request::Read(a) => Op::Read {
            ino: nodeid,
            fh: a.fh,
            offset: a.offset,
            size: a.size,
        },
        Request::Write { arg, data } => Op::Write {
            ino: nodeid,
            fh: arg.fh,
            offset: arg.offset,
            data,
            write_flags: arg.write_flags,
            flags: arg.flags as i32,
        },
        Request::Flush(a) => Op::Flush {
            ino: nodeid,
            fh: a.fh,
        },
        Request::Release(a) => Op::Release {
            ino: nodeid,
            fh: a.fh,
        },
        Request::Fsync(a) => Op::Fsync {
            ino: nodeid,
            fh: a.fh,
            datasync: a.fsync_flags & FUSE_FSYNC_FDATASYNC != 0,
        },
        Request::Opendir(a) => Op::Opendir {
            ino: nodeid,
            flags: a.flags as i32,
        },
        Request::Readdir(a) => Op::Readdir {
            ino: nodeid,
            fh: a.fh,
            offset: a.offset,
        },
        Request::Readdirplus(a) => Op::Readdirplus {
            ino: nodeid,
            fh: a.fh,
            offset: a.offset,
        },
        Request::Releasedir(a) => Op::Releasedir {
            ino: nodeid,
            fh: a.fh,
        },
        Request::Fsyncdir(a) => Op::Fsyncdir {
            ino: nodeid,
            fh: a.fh,
            datasync: a.fsync_flags & FUSE_FSYNC_FDATASYNC != 0,
        },
        Request::Statfs => Op::Statfs { ino: nodeid },
        Request::Setxattr { arg, name, value } => Op::Setxattr {
            ino: nodeid,
            name: b(name),
            value,
            flags: arg.flags as i32,
            position: 0,
        },
        Request::Getxattr { size, name } => Op::Getxattr {
            ino: nodeid,
            name: b(name),
            size,
        },
        Request::Listxattr { size } => Op::Listxattr { ino: nodeid, size },
        Request::Removexattr { name } => Op::Removexattr {
            ino: nodeid,
            name: b(name),
        },
        Request::Access { mask } => Op::Access {
            ino: nodeid,
            mask: mask as i32,
        },
        Request::Fallocate(a) => Op::Fallocate {
            ino: nodeid,
            fh: a.fh,
            offset: a.offset,
            length: a.length,
            mode: a.mode as i32,
        },
        Request::Lseek(a) => Op::Lseek {
            ino: nodeid,
            fh: a.fh,
            offset: a.offset as i64,
            whence: a.whence as i32,
        },
        Request::CopyFileRange(a) => Op::CopyFileRange {
            ino_in: nodeid,
            fh_in: a.fh_in,
            offset_in: a.off_in,
            ino_out: a.nodeid_out,
            fh_out: a.fh_out,
            offset_out: a.off_out,
            len: a.len,
            flags: a.flags,
        },
        Request::Poll(a) => {
            let (notifier, kh) = (notifier.clone(), a.kh);
            Op::Poll {
                ino: nodeid,
                fh: a.fh,
                events: a.events,
                flags: a.flags,
                // Notifications go through /dev/fuse on either transport.
                waker: Box::new(move || {
                    if let Some(n) = notifier.lock().ok().and_then(|g| g.clone()) {
                        let _ = n.poll(fuser::PollHandle(kh));
                    }
                }),
            }
        }
        Request::Ioctl { arg, data } => Op::Ioctl {
            ino: nodeid,
            fh: arg.fh,
            cmd: arg.cmd,
            in_data: data,
            out_size: arg.out_size,
        },
        Request::Unsupported { .. } => return None,
    })
}

/// One queue's state on its thread.
struct Server {
    adapter: Arc<FuseAdapter>,
    notifier: NotifierSlot,
    proto: Proto,
    mailbox: Arc<Mailbox>,
    served: Arc<AtomicU64>,
}

impl Server {
    /// Serves the request in `slot`; its reply is in the mailbox afterwards unless a
    /// waiter thread has it.
    fn serve(&self, q: &Queue, slot: usize) {
        let payload = q.payload_raw(slot);
        let Some(entry) = q.request(slot) else {
            if payload.is_some() {
                // A request whose headers do not decode: still answered (EIO), or its
                // caller would wait forever.
                self.mailbox.post(slot, Encoded::Err(libc::EIO));
            }
            return;
        };
        self.served.fetch_add(1, Ordering::Relaxed);
        let h = entry.headers.in_header;
        let ctx = Ctx {
            uid: h.uid,
            gid: h.gid,
            pid: h.pid,
            unique: h.unique,
        };
        let r = match Request::from_entry(self.proto, &entry) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("io_uring: undecodable request (opcode {}): {e:?}", h.opcode);
                return self.mailbox.post(slot, Encoded::Err(e.errno()));
            }
        };
        let (dir_size, in_place) = match &r {
            Request::Readdir(a) | Request::Readdirplus(a) => (a.size, false),
            Request::Read(_) => (0, true),
            _ => (0, false),
        };
        let Some(op) = to_op(h.nodeid, r, &self.notifier) else {
            return self.mailbox.post(slot, Encoded::Err(libc::ENOSYS));
        };
        let sink = RingSink {
            slot,
            mailbox: self.mailbox.clone(),
            proto: self.proto,
            payload: payload
                .filter(|_| in_place)
                .map(|(ptr, len)| Payload { ptr, len }),
            dir: Vec::new(),
            dir_size,
            sent: false,
        };
        // A panic drops the sink during the unwind, which answers EIO.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.adapter.serve(&ctx, op, sink)
        }));
        if r.is_err() {
            log::error!("io_uring: handler of opcode {} panicked", h.opcode);
        }
    }

    /// Commits every reply in the mailbox.
    fn commit_posted(&self, q: &mut Queue) {
        for (slot, e) in self.mailbox.take() {
            let r = q.commit_with(slot, |out| match e {
                Encoded::InPayload(n) => Ok(n),
                Encoded::Bytes(b) => reply::bytes(out, &b).ok_or(libc::EIO),
                Encoded::Err(e) => Err(e),
            });
            if let Err(e) = r {
                log::warn!("io_uring: commit of entry {slot} failed: {e}");
            }
        }
    }
}

/// The running queues of a mount.
pub struct Rings {
    threads: Vec<JoinHandle<()>>,
    mailboxes: Vec<Arc<Mailbox>>,
    /// Requests served over the rings (all queues).
    pub served: Arc<AtomicU64>,
}

impl Rings {
    /// Ends the queue threads: after unmount their entries end on their own; any still
    /// waiting is told to stop. Waits up to `grace` for them.
    pub fn stop(self, grace: Duration) {
        let deadline = std::time::Instant::now() + grace;
        while self.threads.iter().any(|t| !t.is_finished()) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        for m in &self.mailboxes {
            m.stopping.store(true, Ordering::SeqCst);
            let _ = m.bell.stop();
        }
        for t in self.threads {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Whether this process can set up an io_uring of the queues' kind at all (io_uring may
/// be disabled, `kernel.io_uring_disabled`, or filtered by seccomp): checked before
/// FUSE_OVER_IO_URING is asked for, since once INIT grants it, requests wait for queues
/// that could then never register.
pub fn ring_usable() -> std::io::Result<()> {
    io_uring::IoUring::<io_uring::squeue::Entry128, io_uring::cqueue::Entry>::builder()
        .build(2)
        .map(drop)
}

/// Starts one queue thread per possible CPU on the session's /dev/fuse descriptor,
/// each registering `depth` entries. Returns once every queue has submitted its
/// REGISTERs (an error if any could not: the kernel then serves /dev/fuse).
pub fn start(
    fuse: BorrowedFd<'_>,
    grant: &RingGrant,
    notifier: NotifierSlot,
    depth: u16,
    poll: Duration,
) -> std::io::Result<Rings> {
    let cpus = queue::possible_cpus()?;
    let fuse = Arc::new(fuse.try_clone_to_owned()?);
    let served = Arc::new(AtomicU64::new(0));
    // Set before any queue can see its REGISTER refused (which clears it again).
    grant.adapter.on_ring_flag().store(true, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(cpus);
    for cpu in 0..cpus {
        let qid = u16::try_from(cpu)
            .map_err(|_| std::io::Error::other("too many CPUs for the ring's queue ids"))?;
        let cfg = QueueConfig {
            qid,
            depth,
            payload_size: grant.payload_size,
            poll,
        };
        let (fuse, tx) = (fuse.clone(), tx.clone());
        let (adapter, proto, notifier, served) = (
            grant.adapter.clone(),
            grant.proto,
            notifier.clone(),
            served.clone(),
        );
        let t = std::thread::Builder::new()
            .name(format!("daxfs-uring{cpu}"))
            .spawn(move || run_queue(fuse, cfg, adapter, proto, notifier, served, tx))?;
        threads.push(t);
    }
    drop(tx);
    let mut mailboxes = Vec::with_capacity(cpus);
    let mut first_err = None;
    for _ in 0..cpus {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(m)) => mailboxes.push(m),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(std::io::Error::other("a queue thread did not start"));
            }
        }
    }
    let rings = Rings {
        threads,
        mailboxes,
        served,
    };
    match first_err {
        None => Ok(rings),
        Some(e) => {
            // A queue that never submitted its REGISTER leaves the ring never ready
            // and every request waiting: a REGISTER the kernel refuses (a queue id past
            // the last) makes it give up the ring and serve /dev/fuse.
            force_dev_fuse(fuse.as_fd(), cpus, grant.payload_size);
            rings.stop(Duration::ZERO);
            Err(e)
        }
    }
}

/// Submits a REGISTER for queue id `cpus` (one past the last), which the kernel refuses
/// with EINVAL and answers by dropping FUSE over io_uring for the connection.
fn force_dev_fuse(fuse: BorrowedFd<'_>, cpus: usize, payload_size: usize) {
    let Ok(qid) = u16::try_from(cpus) else {
        return;
    };
    let cfg = QueueConfig {
        qid,
        depth: 1,
        payload_size,
        poll: Duration::ZERO,
    };
    let Ok(mut q) = Queue::new(fuse, cfg) else {
        return;
    };
    if q.register().is_ok() {
        let mut events = Vec::new();
        while q.live_entries() > 0 && q.wait(&mut events).is_ok() {}
    }
}

fn run_queue(
    fuse: Arc<OwnedFd>,
    cfg: QueueConfig,
    adapter: Arc<FuseAdapter>,
    proto: Proto,
    notifier: NotifierSlot,
    served: Arc<AtomicU64>,
    ready: mpsc::Sender<std::io::Result<Arc<Mailbox>>>,
) {
    // An offline CPU cannot be pinned to, but its queue must still register.
    let _ = queue::pin_current_thread(usize::from(cfg.qid));
    let setup = Queue::new(fuse.as_fd(), cfg).and_then(|mut q| {
        q.register()?;
        let bell = q.stopper()?;
        Ok((q, bell))
    });
    let (mut q, bell) = match setup {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mailbox = Arc::new(Mailbox {
        done: Mutex::new(Vec::new()),
        bell,
        owner: std::thread::current().id(),
        stopping: AtomicBool::new(false),
    });
    let _ = ready.send(Ok(mailbox.clone()));
    let server = Server {
        adapter,
        notifier,
        proto,
        mailbox,
        served,
    };
    let mut events = Vec::new();
    while q.live_entries() > 0 {
        events.clear();
        if let Err(e) = q.wait(&mut events) {
            log::error!("io_uring queue {}: {e}", cfg.qid);
            break;
        }
        let mut stop = false;
        for &ev in &events {
            match ev {
                Event::Request(slot) => server.serve(&q, slot),
                Event::Ended { errno, .. } => {
                    // Said once for the mount, by whichever queue sees it first.
                    if errno != libc::ENOTCONN
                        && server.adapter.on_ring_flag().swap(false, Ordering::Relaxed)
                    {
                        let e = std::io::Error::from_raw_os_error(errno);
                        eprintln!(
                            "daxfs: io_uring not available: REGISTER: {e}; serving /dev/fuse"
                        );
                    }
                }
                Event::Stopped => {
                    stop = server.mailbox.stopping.load(Ordering::SeqCst);
                    if let Err(e) = q.rearm_stopper() {
                        log::error!("io_uring queue {}: re-arm: {e}", cfg.qid);
                    }
                }
            }
        }
        server.commit_posted(&mut q);
        if stop {
            break;
        }
    }
    // Commit what waiters still post after the connection ended is pointless; the
    // queue is dropped (leaking buffers the kernel still owns, see `Queue`).
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue on /dev/zero (its REGISTERs fail, its doorbell works) and a mailbox on it.
    fn mailbox() -> Option<(std::fs::File, Queue, Arc<Mailbox>)> {
        let f = std::fs::File::open("/dev/zero").unwrap();
        let cfg = QueueConfig {
            qid: 0,
            depth: 1,
            payload_size: 8192,
            poll: Duration::ZERO,
        };
        let mut q = match Queue::new(f.as_fd(), cfg) {
            Ok(q) => q,
            Err(e) => {
                eprintln!("SKIPPED: no io_uring here: {e}");
                return None;
            }
        };
        q.register().unwrap();
        let m = Arc::new(Mailbox {
            done: Mutex::new(Vec::new()),
            bell: q.stopper().unwrap(),
            owner: std::thread::current().id(),
            stopping: AtomicBool::new(false),
        });
        Some((f, q, m))
    }

    fn sink(m: &Arc<Mailbox>, slot: usize) -> RingSink {
        RingSink {
            slot,
            mailbox: m.clone(),
            proto: Proto::new(40, 0),
            payload: None,
            dir: Vec::new(),
            dir_size: 4096,
            sent: false,
        }
    }

    #[test]
    fn a_sink_dropped_without_a_reply_answers_eio() {
        let Some((_f, _q, m)) = mailbox() else {
            return;
        };
        drop(sink(&m, 3));
        let posted = m.take();
        assert!(
            matches!(posted[..], [(3, Encoded::Err(libc::EIO))]),
            "{posted:?}"
        );
    }

    #[test]
    fn a_panicking_handler_still_answers_through_the_dropped_sink() {
        let Some((_f, _q, m)) = mailbox() else {
            return;
        };
        let s = sink(&m, 1);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = s;
            panic!("handler bug");
        }));
        assert!(r.is_err());
        let posted = m.take();
        assert!(
            matches!(posted[..], [(1, Encoded::Err(libc::EIO))]),
            "{posted:?}"
        );
    }

    #[test]
    fn a_reply_from_another_thread_rings_the_queue_and_is_kept_for_it() {
        let Some((_f, mut q, m)) = mailbox() else {
            return;
        };
        let s = sink(&m, 0);
        std::thread::spawn(move || s.send(Reply::Written(7)))
            .join()
            .unwrap();
        let mut events = Vec::new();
        while !events.contains(&Event::Stopped) {
            q.wait(&mut events).unwrap();
        }
        q.rearm_stopper().unwrap();
        let posted = m.take();
        assert!(
            matches!(&posted[..], [(0, Encoded::Bytes(b))] if b[..4] == 7u32.to_ne_bytes()),
            "{posted:?}"
        );
    }

    #[test]
    fn directory_entries_stop_at_the_request_size() {
        let Some((_f, _q, m)) = mailbox() else {
            return;
        };
        let mut s = sink(&m, 0);
        s.dir_size = 64;
        let e = |name: &'static [u8]| DirEntry {
            ino: 5,
            offset: 1,
            kind: FileKind::File,
            name,
            attr: None,
        };
        // 24 + 9 rounds to 40; a second one would need 80 > 64.
        assert!(s.add_dir_entry(&e(b"first-one")));
        assert!(!s.add_dir_entry(&e(b"second-one")));
        s.send(Reply::Entries);
        let posted = m.take();
        assert!(
            matches!(&posted[..], [(0, Encoded::Bytes(b))] if b.len() == 40),
            "{posted:?}"
        );
    }
}
