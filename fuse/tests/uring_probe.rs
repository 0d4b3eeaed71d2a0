//! A proof against the running kernel that `daxfs_fuse::uring` serves FUSE over
//! io_uring: a trivial fuser filesystem (a root directory holding one file, `hello`) is
//! mounted with FUSE_OVER_IO_URING granted in INIT, one ring queue per possible CPU is
//! registered on the session's /dev/fuse descriptor, and `cat MNT/hello` plus a read
//! pinned to every CPU must be answered over the rings (decoded and encoded here with
//! `uring::abi`), while fuser's /dev/fuse loop, which would answer EIO, sees none of
//! those requests.
//!
//! Skipped, with the reason printed, when not root, without /dev/fuse or without the
//! fuse module's `enable_uring` parameter (a kernel without CONFIG_FUSE_IO_URING). The
//! parameter is set to Y only for the INIT handshake (a connection that was granted the
//! ring keeps it) and restored to its previous value right after, and again by a guard
//! on every other path. The mount is unmounted, or aborted and lazily unmounted, on
//! every path.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking

use daxfs_fuse::uring::abi::{
    opcode, FuseAttr, FuseAttrOut, FuseEntryOut, FuseOpenOut, FuseReadIn, Wire,
};
use daxfs_fuse::uring::queue::{self, Event, Queue, QueueConfig};
use daxfs_testkit::uring::{skip_reason, EnableUring};
use fuser::{
    Errno, FileHandle, Filesystem, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const HELLO: &[u8] = b"hello over io_uring\n";
const ROOT_INO: u64 = 1;
const HELLO_INO: u64 = 2;
/// Small, so that each entry's payload buffer is small (it must hold max_write).
const MAX_WRITE: u32 = 128 * 1024;
const DEPTH: u16 = 2;

/// The mountpoint; on drop, a mount still there is aborted and lazily unmounted.
struct MountGuard {
    dir: PathBuf,
    /// The connection's number in /sys/fs/fuse/connections, once mounted.
    conn: Option<u64>,
}

impl MountGuard {
    fn new() -> MountGuard {
        let dir = std::env::temp_dir().join(format!("daxfs-uring-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mountpoint");
        MountGuard { dir, conn: None }
    }

    fn mounted(&self) -> bool {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.dir.to_string_lossy();
        info.lines()
            .any(|l| l.split(' ').nth(4) == Some(dir.as_ref()))
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.mounted() {
            if let Some(c) = self.conn {
                // Ends every request, and every ring entry with ENOTCONN.
                let _ = std::fs::write(format!("/sys/fs/fuse/connections/{c}/abort"), "1");
            }
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
            eprintln!(
                "cleanup: aborted and lazily unmounted {}",
                self.dir.display()
            );
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The fuser side: INIT, and counts of what arrived through /dev/fuse, which it answers
/// with EIO (a request here is one the ring did not carry).
#[derive(Default)]
struct DevFuseSide {
    granted: Arc<Mutex<Option<Result<(), String>>>>,
    requests: Arc<AtomicU64>,
    forgets: Arc<AtomicU64>,
}

impl DevFuseSide {
    fn arrived(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
    }
}

impl Filesystem for DevFuseSide {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        config.set_max_write(MAX_WRITE).expect("max_write");
        if let Err(max) = config.set_max_readahead(MAX_WRITE) {
            config.set_max_readahead(max).expect("max_readahead");
        }
        let r = config
            .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
            .map_err(|missing| format!("kernel does not offer {missing:?}"));
        *self.granted.lock().unwrap() = Some(r);
        Ok(())
    }

    fn lookup(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEntry) {
        self.arrived();
        reply.error(Errno::EIO);
    }

    fn forget(&self, _: &Request, _: INodeNo, _: u64) {
        // The kernel sends FORGET (and INTERRUPT) through /dev/fuse even with a ring.
        self.forgets.fetch_add(1, Ordering::SeqCst);
    }

    fn getattr(&self, _: &Request, _: INodeNo, _: Option<FileHandle>, reply: ReplyAttr) {
        self.arrived();
        reply.error(Errno::EIO);
    }

    fn open(&self, _: &Request, _: INodeNo, _: OpenFlags, reply: ReplyOpen) {
        self.arrived();
        reply.error(Errno::EIO);
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: u64,
        _: u32,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.arrived();
        reply.error(Errno::EIO);
    }

    fn flush(&self, _: &Request, _: INodeNo, _: FileHandle, _: LockOwner, reply: ReplyEmpty) {
        self.arrived();
        reply.error(Errno::EIO);
    }

    #[allow(clippy::too_many_arguments)]
    fn release(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: OpenFlags,
        _: Option<LockOwner>,
        _: bool,
        reply: ReplyEmpty,
    ) {
        self.arrived();
        reply.error(Errno::EIO);
    }

    fn getxattr(&self, _: &Request, _: INodeNo, _: &OsStr, _: u32, reply: ReplyXattr) {
        self.arrived();
        reply.error(Errno::EIO);
    }
}

fn attr(ino: u64) -> FuseAttr {
    let (mode, size, nlink) = if ino == ROOT_INO {
        (libc::S_IFDIR | 0o755, 0, 2)
    } else {
        (libc::S_IFREG | 0o444, HELLO.len() as u64, 1)
    };
    FuseAttr {
        ino,
        size,
        blocks: size.div_ceil(512),
        mode,
        nlink,
        blksize: 4096,
        ..FuseAttr::default()
    }
}

/// One request served over a ring: the errno (0 or negated) and the reply's bytes.
/// Timeouts are 0 so that every read looks the file up and opens it again.
fn serve(op: u32, nodeid: u64, op_in: &[u8], payload: &[u8]) -> (i32, Vec<u8>) {
    fn encoded<T: Wire>(v: &T) -> (i32, Vec<u8>) {
        let mut out = vec![0u8; T::SIZE];
        v.encode(&mut out).expect("encode");
        (0, out)
    }
    let known = nodeid == ROOT_INO || nodeid == HELLO_INO;
    match op {
        opcode::LOOKUP => {
            // LOOKUP has no fixed argument: the payload is the NUL-terminated name.
            let name = payload.split(|&b| b == 0).next().unwrap_or_default();
            if nodeid == ROOT_INO && name == b"hello" {
                encoded(&FuseEntryOut {
                    nodeid: HELLO_INO,
                    generation: 1,
                    attr: attr(HELLO_INO),
                    ..FuseEntryOut::default()
                })
            } else {
                (-libc::ENOENT, Vec::new())
            }
        }
        opcode::GETATTR if known => encoded(&FuseAttrOut {
            attr: attr(nodeid),
            ..FuseAttrOut::default()
        }),
        opcode::OPEN if nodeid == HELLO_INO => encoded(&FuseOpenOut {
            fh: 1,
            ..FuseOpenOut::default()
        }),
        opcode::READ if nodeid == HELLO_INO => {
            let Some(r) = FuseReadIn::decode(op_in) else {
                return (-libc::EINVAL, Vec::new());
            };
            let start = usize::try_from(r.offset)
                .unwrap_or(usize::MAX)
                .min(HELLO.len());
            let end = start.saturating_add(r.size as usize).min(HELLO.len());
            (0, HELLO[start..end].to_vec())
        }
        opcode::FLUSH | opcode::RELEASE if nodeid == HELLO_INO => (0, Vec::new()),
        opcode::GETXATTR if known => (-libc::ENODATA, Vec::new()),
        opcode::GETATTR | opcode::OPEN | opcode::READ => (-libc::ENOENT, Vec::new()),
        _ => (-libc::ENOSYS, Vec::new()),
    }
}

/// What one queue's thread saw.
#[derive(Debug, Default)]
struct QueueReport {
    qid: u16,
    /// Opcode -> requests served.
    served: BTreeMap<u32, u64>,
    /// The requests' pids, to see who issued them.
    pids: BTreeMap<u32, u64>,
    /// Requests whose header `unique` differed from the entry's commit id.
    unique_mismatches: u64,
    /// Errnos the kernel ended entries with (ENOTCONN at unmount).
    ended: BTreeMap<i32, u64>,
    /// The CPU the queue's thread ran on.
    cpu: i32,
    error: Option<String>,
}

/// Runs queue `qid` on its own thread, pinned to its CPU, until every entry ended or it
/// is stopped. `registered` gets the queue's stopper once its REGISTERs are submitted.
fn run_queue(
    fuse: Arc<OwnedFd>,
    qid: u16,
    payload_size: usize,
    registered: mpsc::Sender<std::io::Result<queue::Stopper>>,
) -> QueueReport {
    let mut report = QueueReport {
        qid,
        ..QueueReport::default()
    };
    if let Err(e) = queue::pin_current_thread(usize::from(qid)) {
        eprintln!("qid {qid}: not pinned ({e})");
    }
    // SAFETY: sched_getcpu has no preconditions.
    report.cpu = unsafe { libc::sched_getcpu() };
    let cfg = QueueConfig {
        qid,
        depth: DEPTH,
        payload_size,
        poll: std::time::Duration::ZERO,
    };
    let mut q = match Queue::new(fuse.as_fd(), cfg).and_then(|mut q| q.register().map(|()| q)) {
        Ok(q) => q,
        Err(e) => {
            report.error = Some(format!("setup: {e}"));
            let _ = registered.send(Err(e));
            return report;
        }
    };
    let _ = registered.send(q.stopper());
    let mut events = Vec::new();
    while q.live_entries() > 0 {
        events.clear();
        if let Err(e) = q.wait(&mut events) {
            report.error = Some(format!("wait: {e}"));
            break;
        }
        let mut stopped = false;
        for &ev in &events {
            match ev {
                Event::Request(slot) => {
                    let Some(req) = q.request(slot) else { continue };
                    let h = req.headers.in_header;
                    if h.unique != req.headers.ent.commit_id {
                        report.unique_mismatches += 1;
                    }
                    *report.served.entry(h.opcode).or_default() += 1;
                    *report.pids.entry(h.pid).or_default() += 1;
                    let (error, bytes) = serve(h.opcode, h.nodeid, &req.headers.op_in, req.payload);
                    let r = q.commit(slot, error, |out| {
                        out[..bytes.len()].copy_from_slice(&bytes);
                        bytes.len()
                    });
                    if let Err(e) = r {
                        report.error = Some(format!("commit: {e}"));
                    }
                }
                Event::Ended { errno, .. } => *report.ended.entry(errno).or_default() += 1,
                Event::Stopped => stopped = true,
            }
        }
        if stopped {
            break;
        }
    }
    report
}

/// Reads MNT/hello from a thread pinned to `cpu`.
fn read_on_cpu(path: PathBuf, cpu: usize) -> std::io::Result<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let r = queue::pin_current_thread(cpu).and_then(|()| std::fs::read(&path));
        let _ = tx.send(r);
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("read on CPU {cpu} hung: the ring never became ready?"))
}

/// The mount's number in /sys/fs/fuse/connections: its device number as the kernel
/// encodes it (`MKDEV(major, minor)`), read from mountinfo, since a stat(2) of the mount
/// would itself wait for the ring to be ready.
fn fuse_connection(dir: &Path) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let dir = dir.to_string_lossy();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(dir.as_ref()))?;
    let (major, minor) = line.split(' ').nth(2)?.split_once(':')?;
    Some((major.parse::<u64>().ok()? << 20) | minor.parse::<u64>().ok()?)
}

/// Aborts connection `conn` unless cancelled (dropped) within `limit`: a request that
/// the ring never carries would otherwise block the test, and the cleanup, forever.
fn watchdog(conn: u64, limit: Duration) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            eprintln!("watchdog: {limit:?} passed, aborting connection {conn}");
            let _ = std::fs::write(format!("/sys/fs/fuse/connections/{conn}/abort"), "1");
        }
    });
    tx
}

fn errno_name(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

fn opcode_name(op: u32) -> String {
    let name = match op {
        opcode::LOOKUP => "LOOKUP",
        opcode::GETATTR => "GETATTR",
        opcode::OPEN => "OPEN",
        opcode::READ => "READ",
        opcode::FLUSH => "FLUSH",
        opcode::RELEASE => "RELEASE",
        opcode::GETXATTR => "GETXATTR",
        opcode::STATX => "STATX",
        opcode::ACCESS => "ACCESS",
        opcode::INTERRUPT => "INTERRUPT",
        _ => return format!("op{op}"),
    };
    name.to_string()
}

#[test]
fn requests_of_every_cpu_are_served_over_its_own_ring_queue_not_dev_fuse() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let cpus = queue::possible_cpus().expect("possible CPUs");
    let page = {
        // SAFETY: sysconf has no memory-safety preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(n).unwrap_or(4096)
    };
    // fuser asks for max_pages = ceil(max(max_write, max_readahead) / page), and
    // max_readahead <= MAX_WRITE here.
    let payload_size = queue::payload_size(MAX_WRITE, MAX_WRITE.div_ceil(page as u32), page);
    let mut mnt = MountGuard::new();

    // INIT is answered inside Session::new, so the ring is granted by the time it returns.
    let mut enable = EnableUring::set();
    let fs = DevFuseSide::default();
    let granted = fs.granted.clone();
    let dev_fuse_requests = fs.requests.clone();
    let forgets = fs.forgets.clone();
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![fuser::MountOption::FSName("daxfs-uring-probe".into())];
    let session = fuser::Session::new(fs, &mnt.dir, &cfg);
    // A connection granted the ring keeps it (fc->io_uring): the module-wide switch can
    // go back at once, before anything else mounts with it on.
    enable.restore();
    let session = session.expect("mount");
    mnt.conn = fuse_connection(&mnt.dir);
    let conn = mnt.conn.expect("the mount in mountinfo");
    let _watchdog = watchdog(conn, Duration::from_secs(60));
    let granted = granted.lock().unwrap().clone().expect("INIT ran");
    if let Err(why) = granted {
        panic!("enable_uring was Y during INIT, yet: {why}");
    }
    let fuse = Arc::new(session.as_fd().try_clone_to_owned().expect("dup /dev/fuse"));
    let bg = session.spawn().expect("session loop");
    eprintln!(
        "mounted {} (connection {:?}); {cpus} possible CPUs -> {cpus} queues x {DEPTH} entries, \
         {payload_size}-byte payloads",
        mnt.dir.display(),
        mnt.conn
    );

    let (reg_tx, reg_rx) = mpsc::channel();
    let workers: Vec<_> = (0..cpus)
        .map(|qid| {
            let fuse = fuse.clone();
            let tx = reg_tx.clone();
            let qid = u16::try_from(qid).expect("qid");
            thread::spawn(move || run_queue(fuse, qid, payload_size, tx))
        })
        .collect();
    let mut stoppers = Vec::new();
    for _ in 0..cpus {
        let r = reg_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("queue thread started");
        stoppers.push(r.expect("queue setup and REGISTER submission"));
    }

    // What `cat` issues, from wherever the scheduler runs it.
    let hello = mnt.dir.join("hello");
    let t = Instant::now();
    let cat = Command::new("timeout")
        .args(["20", "cat"])
        .arg(&hello)
        .output()
        .expect("run cat");
    let cat_time = t.elapsed();
    // And a read from each CPU: the kernel must route it to that CPU's queue.
    let mut per_cpu = Vec::new();
    for cpu in 0..cpus {
        let t = Instant::now();
        let r = read_on_cpu(hello.clone(), cpu);
        per_cpu.push((cpu, r, t.elapsed()));
    }
    let via_dev_fuse = dev_fuse_requests.load(Ordering::SeqCst);

    // Unmounting ends the connection: the kernel completes every entry with ENOTCONN.
    let t = Instant::now();
    let unmounted = bg.umount_and_join();
    let mut reports = Vec::new();
    for (qid, w) in workers.into_iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !w.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if !w.is_finished() {
            eprintln!("qid {qid}: entries not ended 10 s after unmount; stopping it");
            let _ = stoppers[qid].stop();
        }
        reports.push(w.join().expect("queue thread"));
    }
    let teardown = t.elapsed();

    eprintln!(
        "cat: status {:?}, {:?}, stdout {:?}, stderr {:?}",
        cat.status.code(),
        cat_time,
        String::from_utf8_lossy(&cat.stdout),
        String::from_utf8_lossy(&cat.stderr)
    );
    for (cpu, r, d) in &per_cpu {
        eprintln!(
            "read pinned to CPU {cpu}: {:?} in {d:?}",
            r.as_ref().map(|b| b.len())
        );
    }
    for r in &reports {
        let served: Vec<_> = r
            .served
            .iter()
            .map(|(op, n)| format!("{}={n}", opcode_name(*op)))
            .collect();
        let ended: Vec<_> = r
            .ended
            .iter()
            .map(|(e, n)| format!("{}x {}", n, errno_name(*e)))
            .collect();
        eprintln!(
            "queue {} (thread on CPU {}): served [{}], ended [{}], pids {:?}, error {:?}",
            r.qid,
            r.cpu,
            served.join(" "),
            ended.join(", "),
            r.pids.keys().collect::<Vec<_>>(),
            r.error
        );
    }
    eprintln!(
        "via /dev/fuse: {via_dev_fuse} requests, {} forgets; unmount + ring teardown {teardown:?} ({unmounted:?})",
        forgets.load(Ordering::SeqCst)
    );

    assert_eq!(cat.stdout, HELLO, "cat over the ring");
    for (cpu, r, _) in &per_cpu {
        assert_eq!(r.as_deref().ok(), Some(HELLO), "read on CPU {cpu}");
    }
    assert_eq!(
        via_dev_fuse, 0,
        "requests read from /dev/fuse instead of the ring"
    );
    for r in &reports {
        assert_eq!(r.error, None, "queue {}", r.qid);
        assert_eq!(r.unique_mismatches, 0, "queue {}", r.qid);
        // The pinned read of this CPU opened the file through this CPU's queue.
        assert!(
            r.served.get(&opcode::OPEN).copied().unwrap_or(0) >= 1,
            "queue {} served no OPEN: {:?}",
            r.qid,
            r.served
        );
        assert_eq!(
            r.ended.get(&libc::ENOTCONN).copied().unwrap_or(0),
            u64::from(DEPTH),
            "queue {}: every entry ends with ENOTCONN at unmount: {:?}",
            r.qid,
            r.ended
        );
    }
}
