//! The ring codecs against the running kernel: a small in-memory tree is served over
//! FUSE-over-io_uring with `uring::request` decoding every request and `uring::reply`
//! encoding every reply, and real system calls on the mount (std::fs, libc, and
//! `ls`, `cat`, `mv`, `rm`, `stat`, `setfattr`/`getfattr` where installed) must see
//! what the tree holds. Any request that fails to decode fails the test, and so does
//! any request arriving through /dev/fuse instead of the ring.
//!
//! Run twice: with FUSE_SETXATTR_EXT granted (16-byte `fuse_setxattr_in`) and without
//! (8 bytes), since the decoder's SETXATTR layout follows that INIT flag.
//!
//! Skipped, with the reason printed, when not root, without /dev/fuse or without the
//! fuse module's `enable_uring` parameter. `enable_uring` is set to Y only around INIT
//! and restored right after (and by a guard on every path); the two tests take a lock
//! so that one's restore cannot undo the other's Y. Every mount is unmounted, or
//! aborted and lazily unmounted, on every path.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking

use daxfs_fuse::uring::abi::{
    opcode, FuseAttr, FuseAttrOut, FuseEntryOut, FuseInHeader, FuseIoctlOut, FuseKstatfs,
    FuseOpenOut,
};
use daxfs_fuse::uring::queue::{self, Event, Queue, QueueConfig};
use daxfs_fuse::uring::reply::{self, DirWriter};
use daxfs_fuse::uring::request::{Proto, Request, FUSE_SETXATTR_EXT};
use fuser::{Filesystem, InitFlags, KernelConfig};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

const MAX_WRITE: u32 = 128 * 1024;
const DEPTH: u16 = 2;
/// Serialises the tests of this file: each sets and restores `enable_uring`.
use daxfs_testkit::uring::{skip_reason, EnableUring};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
/// `_IOR('D', 1, u32)`: an ioctl the tree answers with [`IOCTL_ANSWER`].
const IOCTL_CMD: u32 = (2 << 30) | (4 << 16) | ((b'D' as u32) << 8) | 1;
const IOCTL_ANSWER: u32 = 0xdaf5_0001;

const FUSECTL: &str = "/sys/fs/fuse/connections";

/// Mounts fusectl for the test if it is not mounted, and unmounts it again on drop:
/// the watchdog and the cleanup abort a connection through it. Without it, a request
/// the ring never answers waits uninterruptibly (D state) for as long as an io_uring
/// holds the /dev/fuse file, which outlives the test process.
struct Fusectl(bool);

impl Fusectl {
    fn ensure() -> Fusectl {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if info.lines().any(|l| l.split(' ').nth(4) == Some(FUSECTL)) {
            return Fusectl(false);
        }
        let ok = Command::new("mount")
            .args(["-t", "fusectl", "fusectl", FUSECTL])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        Fusectl(ok)
    }
}

impl Drop for Fusectl {
    fn drop(&mut self) {
        if self.0 {
            let _ = Command::new("umount").arg(FUSECTL).status();
        }
    }
}

/// The mountpoint; on drop, a mount still there is aborted and lazily unmounted.
struct MountGuard {
    dir: PathBuf,
    conn: Option<u64>,
}

impl MountGuard {
    fn new(tag: &str) -> MountGuard {
        let dir =
            std::env::temp_dir().join(format!("daxfs-uring-serve-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mountpoint");
        MountGuard { dir, conn: None }
    }

    fn mountinfo_line(&self) -> Option<String> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let dir = self.dir.to_string_lossy();
        info.lines()
            .find(|l| l.split(' ').nth(4) == Some(dir.as_ref()))
            .map(str::to_string)
    }

    /// The connection's number in /sys/fs/fuse/connections (its device number), from
    /// mountinfo: a stat(2) of the mount would wait for the ring.
    fn connection(&self) -> Option<u64> {
        let line = self.mountinfo_line()?;
        let (major, minor) = line.split(' ').nth(2)?.split_once(':')?;
        Some((major.parse::<u64>().ok()? << 20) | minor.parse::<u64>().ok()?)
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.mountinfo_line().is_some() {
            if let Some(c) = self.conn {
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

/// The fuser side: INIT (granting the ring and the flags the test wants) and a count of
/// requests that came through /dev/fuse (fuser's defaults answer them ENOSYS).
struct DevFuseSide {
    setxattr_ext: bool,
    init: Arc<Mutex<Option<Result<Proto, String>>>>,
    forgets: Arc<AtomicU64>,
}

impl Filesystem for DevFuseSide {
    fn init(&mut self, _req: &fuser::Request, config: &mut KernelConfig) -> std::io::Result<()> {
        config.set_max_write(MAX_WRITE).expect("max_write");
        if let Err(max) = config.set_max_readahead(MAX_WRITE) {
            config.set_max_readahead(max).expect("max_readahead");
        }
        let mut flags = InitFlags::FUSE_OVER_IO_URING
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO;
        if self.setxattr_ext {
            flags |= InitFlags::FUSE_SETXATTR_EXT;
        }
        let r = config
            .add_capabilities(flags)
            .map_err(|missing| format!("kernel does not offer {missing:?}"))
            .map(|()| {
                // fuser answers with its own minor (40) when the kernel's is newer.
                let minor = config.kernel_abi().1.min(40);
                Proto::new(minor, flags.bits())
            });
        *self.init.lock().unwrap() = Some(r);
        Ok(())
    }

    fn forget(&self, _: &fuser::Request, _: fuser::INodeNo, _: u64) {
        self.forgets.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Debug)]
enum Kind {
    Dir(BTreeMap<Vec<u8>, u64>),
    File(Vec<u8>),
    Symlink(Vec<u8>),
    Fifo,
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: (u64, u32),
    atime: (u64, u32),
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// The served tree and what the queues saw.
#[derive(Debug, Default)]
struct Tree {
    nodes: BTreeMap<u64, Node>,
    next_ino: u64,
    /// Opcode -> requests decoded and answered.
    served: BTreeMap<u32, u64>,
    /// Requests that failed to decode, with the reason.
    decode_errors: Vec<String>,
    /// GETXATTR name -> requests, to see what the kernel asks for by itself.
    getxattr_names: BTreeMap<String, u64>,
}

impl Tree {
    fn new() -> Tree {
        let mut t = Tree {
            next_ino: 2,
            ..Tree::default()
        };
        t.nodes.insert(
            1,
            Node::new(Kind::Dir(BTreeMap::new()), libc::S_IFDIR | 0o755),
        );
        t
    }
}

impl Node {
    fn new(kind: Kind, mode: u32) -> Node {
        Node {
            kind,
            mode,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: (1_700_000_000, 0),
            atime: (1_700_000_000, 0),
            xattrs: BTreeMap::new(),
        }
    }

    fn size(&self) -> u64 {
        match &self.kind {
            Kind::File(d) | Kind::Symlink(d) => d.len() as u64,
            Kind::Dir(c) => c.len() as u64,
            Kind::Fifo => 0,
        }
    }
}

type Served = Result<usize, i32>;
const EIO: i32 = libc::EIO;

impl Tree {
    fn node(&self, ino: u64) -> Result<&Node, i32> {
        self.nodes.get(&ino).ok_or(libc::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, i32> {
        self.nodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    fn children(&self, ino: u64) -> Result<&BTreeMap<Vec<u8>, u64>, i32> {
        match &self.node(ino)?.kind {
            Kind::Dir(c) => Ok(c),
            _ => Err(libc::ENOTDIR),
        }
    }

    fn children_mut(&mut self, ino: u64) -> Result<&mut BTreeMap<Vec<u8>, u64>, i32> {
        match &mut self.node_mut(ino)?.kind {
            Kind::Dir(c) => Ok(c),
            _ => Err(libc::ENOTDIR),
        }
    }

    fn attr(&self, ino: u64) -> Result<FuseAttr, i32> {
        let n = self.node(ino)?;
        let size = n.size();
        let nlink = match &n.kind {
            Kind::Dir(c) => {
                2 + c
                    .values()
                    .filter(|i| matches!(self.nodes.get(i).map(|n| &n.kind), Some(Kind::Dir(_))))
                    .count() as u32
            }
            _ => n.nlink,
        };
        Ok(FuseAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: n.atime.0,
            atimensec: n.atime.1,
            mtime: n.mtime.0,
            mtimensec: n.mtime.1,
            ctime: n.mtime.0,
            mode: n.mode,
            nlink,
            uid: n.uid,
            gid: n.gid,
            blksize: 4096,
            ..FuseAttr::default()
        })
    }

    fn entry(&self, ino: u64) -> Result<FuseEntryOut, i32> {
        Ok(FuseEntryOut {
            nodeid: ino,
            attr: self.attr(ino)?,
            ..FuseEntryOut::default()
        })
    }

    fn lookup(&self, dir: u64, name: &[u8]) -> Result<u64, i32> {
        self.children(dir)?.get(name).copied().ok_or(libc::ENOENT)
    }

    fn add(&mut self, dir: u64, name: &[u8], node: Node) -> Result<u64, i32> {
        if self.children(dir)?.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        self.children_mut(dir)?.insert(name.to_vec(), ino);
        Ok(ino)
    }

    fn remove(&mut self, dir: u64, name: &[u8], want_dir: bool) -> Result<(), i32> {
        let ino = self.lookup(dir, name)?;
        match (&self.node(ino)?.kind, want_dir) {
            (Kind::Dir(c), true) if !c.is_empty() => return Err(libc::ENOTEMPTY),
            (Kind::Dir(_), false) => return Err(libc::EISDIR),
            (Kind::Dir(_), true) => {}
            (_, true) => return Err(libc::ENOTDIR),
            (_, false) => {}
        }
        self.children_mut(dir)?.remove(name);
        let n = self.node_mut(ino)?;
        n.nlink = n.nlink.saturating_sub(1);
        Ok(())
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut Vec<u8>, i32> {
        match &mut self.node_mut(ino)?.kind {
            Kind::File(d) => Ok(d),
            Kind::Dir(_) => Err(libc::EISDIR),
            _ => Err(libc::EINVAL),
        }
    }

    fn readdir(&self, dir: u64, offset: u64, size: u32, plus: bool, out: &mut [u8]) -> Served {
        let mut all: Vec<(&[u8], u64)> = vec![(b".", dir), (b"..", 1)];
        all.extend(self.children(dir)?.iter().map(|(n, &i)| (n.as_slice(), i)));
        let mut w = DirWriter::new(out, size);
        let start = usize::try_from(offset).map_err(|_| libc::EINVAL)?;
        for (i, (name, ino)) in all.iter().enumerate().skip(start) {
            let attr = self.attr(*ino)?;
            let typ = attr.mode >> 12;
            let next = i as u64 + 1;
            let fits = if plus {
                w.push_plus(&self.entry(*ino)?, next, typ, name)
            } else {
                w.push(*ino, next, typ, name)
            };
            if !fits {
                break;
            }
        }
        Ok(w.len())
    }

    /// Serves one decoded request, writing the reply into `out`.
    fn serve(
        &mut self,
        proto: Proto,
        h: &FuseInHeader,
        req: Request<'_>,
        out: &mut [u8],
    ) -> Served {
        let ino = h.nodeid;
        match req {
            Request::Lookup { name } => {
                let child = self.lookup(ino, name.as_bytes())?;
                reply::entry(proto, out, &self.entry(child)?).ok_or(EIO)
            }
            Request::Getattr { .. } => {
                let a = FuseAttrOut {
                    attr: self.attr(ino)?,
                    ..FuseAttrOut::default()
                };
                reply::attr(proto, out, &a).ok_or(EIO)
            }
            Request::Setattr(s) => {
                const MODE: u32 = 1;
                const UID: u32 = 2;
                const GID: u32 = 4;
                const SIZE: u32 = 8;
                const ATIME: u32 = 16;
                const MTIME: u32 = 32;
                if s.valid & SIZE != 0 {
                    let len = usize::try_from(s.size).map_err(|_| libc::EFBIG)?;
                    self.file_mut(ino)?.resize(len, 0);
                }
                let n = self.node_mut(ino)?;
                if s.valid & MODE != 0 {
                    n.mode = (n.mode & libc::S_IFMT) | (s.mode & !libc::S_IFMT);
                }
                if s.valid & UID != 0 {
                    n.uid = s.uid;
                }
                if s.valid & GID != 0 {
                    n.gid = s.gid;
                }
                if s.valid & ATIME != 0 {
                    n.atime = (s.atime, s.atimensec);
                }
                if s.valid & MTIME != 0 {
                    n.mtime = (s.mtime, s.mtimensec);
                }
                let a = FuseAttrOut {
                    attr: self.attr(ino)?,
                    ..FuseAttrOut::default()
                };
                reply::attr(proto, out, &a).ok_or(EIO)
            }
            Request::Readlink => match &self.node(ino)?.kind {
                Kind::Symlink(t) => reply::bytes(out, t).ok_or(EIO),
                _ => Err(libc::EINVAL),
            },
            Request::Mknod { arg, name } => {
                if arg.mode & libc::S_IFMT != libc::S_IFIFO {
                    return Err(libc::EPERM);
                }
                let mode = arg.mode & !arg.umask;
                let child = self.add(ino, name.as_bytes(), Node::new(Kind::Fifo, mode))?;
                reply::entry(proto, out, &self.entry(child)?).ok_or(EIO)
            }
            Request::Mkdir { arg, name } => {
                let mode = libc::S_IFDIR | (arg.mode & !arg.umask & 0o7777);
                let child = self.add(
                    ino,
                    name.as_bytes(),
                    Node::new(Kind::Dir(BTreeMap::new()), mode),
                )?;
                reply::entry(proto, out, &self.entry(child)?).ok_or(EIO)
            }
            Request::Unlink { name } => self.remove(ino, name.as_bytes(), false).map(|()| 0),
            Request::Rmdir { name } => self.remove(ino, name.as_bytes(), true).map(|()| 0),
            Request::Symlink { name, target } => {
                let node = Node::new(
                    Kind::Symlink(target.as_bytes().to_vec()),
                    libc::S_IFLNK | 0o777,
                );
                let child = self.add(ino, name.as_bytes(), node)?;
                reply::entry(proto, out, &self.entry(child)?).ok_or(EIO)
            }
            Request::Rename {
                newdir,
                flags,
                name,
                newname,
            } => {
                let moved = self.lookup(ino, name.as_bytes())?;
                let existing = self.children(newdir)?.get(newname.as_bytes()).copied();
                match (flags, existing) {
                    (0, _) | (libc::RENAME_NOREPLACE, None) => {}
                    (libc::RENAME_NOREPLACE, Some(_)) => return Err(libc::EEXIST),
                    _ => return Err(libc::EINVAL),
                }
                if existing.is_some() {
                    self.remove(newdir, newname.as_bytes(), false)?;
                }
                self.children_mut(ino)?.remove(name.as_bytes());
                self.children_mut(newdir)?
                    .insert(newname.as_bytes().to_vec(), moved);
                Ok(0)
            }
            Request::Link { oldnodeid, name } => {
                if self.children(ino)?.contains_key(name.as_bytes()) {
                    return Err(libc::EEXIST);
                }
                self.node_mut(oldnodeid)?.nlink += 1;
                self.children_mut(ino)?
                    .insert(name.as_bytes().to_vec(), oldnodeid);
                reply::entry(proto, out, &self.entry(oldnodeid)?).ok_or(EIO)
            }
            Request::Open(_) | Request::Opendir(_) => {
                self.node(ino)?;
                reply::open(out, &FuseOpenOut::default()).ok_or(EIO)
            }
            Request::Create { arg, name } => {
                let mode = libc::S_IFREG | (arg.mode & !arg.umask & 0o7777);
                let child = self.add(
                    ino,
                    name.as_bytes(),
                    Node::new(Kind::File(Vec::new()), mode),
                )?;
                reply::create(proto, out, &self.entry(child)?, &FuseOpenOut::default()).ok_or(EIO)
            }
            Request::Read(r) => {
                let data = self.file_mut(ino)?;
                let start = usize::try_from(r.offset)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let src = &data[start..];
                let dst = reply::read_data(out, r.size);
                let n = dst.len().min(src.len());
                dst[..n].copy_from_slice(&src[..n]);
                Ok(n)
            }
            Request::Write { arg, data } => {
                let file = self.file_mut(ino)?;
                let start = usize::try_from(arg.offset).map_err(|_| libc::EFBIG)?;
                let end = start + data.len();
                if file.len() < end {
                    file.resize(end, 0);
                }
                file[start..end].copy_from_slice(data);
                reply::write(out, arg.size).ok_or(EIO)
            }
            Request::Flush(_)
            | Request::Release(_)
            | Request::Fsync(_)
            | Request::Releasedir(_)
            | Request::Fsyncdir(_)
            | Request::Access { .. } => self.node(ino).map(|_| 0),
            Request::Readdir(r) => self.readdir(ino, r.offset, r.size, false, out),
            Request::Readdirplus(r) => self.readdir(ino, r.offset, r.size, true, out),
            Request::Statfs => {
                let s = FuseKstatfs {
                    blocks: 1000,
                    bfree: 400,
                    bavail: 300,
                    ffree: 1000u64.saturating_sub(self.nodes.len() as u64),
                    files: 1000,
                    bsize: 4096,
                    namelen: 255,
                    frsize: 4096,
                    ..FuseKstatfs::default()
                };
                reply::statfs(proto, out, &s).ok_or(EIO)
            }
            Request::Setxattr { arg, name, value } => {
                // Only a POSIX ACL gets FUSE_SETXATTR_ACL_KILL_SGID: anything else here
                // is the stale op_in bytes past an 8-byte fuse_setxattr_in misread.
                if arg.setxattr_flags != 0 {
                    self.decode_errors
                        .push(format!("SETXATTR setxattr_flags {:#x}", arg.setxattr_flags));
                    return Err(libc::EINVAL);
                }
                let n = self.node_mut(ino)?;
                let exists = n.xattrs.contains_key(name.as_bytes());
                if arg.flags & libc::XATTR_CREATE as u32 != 0 && exists {
                    return Err(libc::EEXIST);
                }
                if arg.flags & libc::XATTR_REPLACE as u32 != 0 && !exists {
                    return Err(libc::ENODATA);
                }
                n.xattrs.insert(name.as_bytes().to_vec(), value.to_vec());
                Ok(0)
            }
            Request::Getxattr { size, name } => {
                *self
                    .getxattr_names
                    .entry(name.to_string_lossy().into_owned())
                    .or_default() += 1;
                let v = self
                    .node(ino)?
                    .xattrs
                    .get(name.as_bytes())
                    .ok_or(libc::ENODATA)?;
                sized(out, size, v)
            }
            Request::Listxattr { size } => {
                let mut list = Vec::new();
                for k in self.node(ino)?.xattrs.keys() {
                    list.extend_from_slice(k);
                    list.push(0);
                }
                sized(out, size, &list)
            }
            Request::Removexattr { name } => {
                let n = self.node_mut(ino)?;
                n.xattrs
                    .remove(name.as_bytes())
                    .map(|_| 0)
                    .ok_or(libc::ENODATA)
            }
            Request::Fallocate(f) => {
                if f.mode != 0 {
                    return Err(libc::EOPNOTSUPP);
                }
                let file = self.file_mut(ino)?;
                let end = usize::try_from(f.offset + f.length).map_err(|_| libc::EFBIG)?;
                if file.len() < end {
                    file.resize(end, 0);
                }
                Ok(0)
            }
            Request::Lseek(l) => {
                let size = self.node(ino)?.size();
                let off = match l.whence as i32 {
                    libc::SEEK_DATA if l.offset < size => l.offset,
                    libc::SEEK_HOLE if l.offset < size => size,
                    libc::SEEK_DATA | libc::SEEK_HOLE => return Err(libc::ENXIO),
                    _ => return Err(libc::EINVAL),
                };
                reply::lseek(out, off).ok_or(EIO)
            }
            Request::CopyFileRange(c) => {
                let src = self.file_mut(ino)?;
                let start = usize::try_from(c.off_in)
                    .unwrap_or(usize::MAX)
                    .min(src.len());
                let len = usize::try_from(c.len)
                    .unwrap_or(usize::MAX)
                    .min(src.len() - start);
                let bytes = src[start..start + len].to_vec();
                let dst = self.file_mut(c.nodeid_out)?;
                let at = usize::try_from(c.off_out).map_err(|_| libc::EFBIG)?;
                if dst.len() < at + len {
                    dst.resize(at + len, 0);
                }
                dst[at..at + len].copy_from_slice(&bytes);
                reply::write(out, u32::try_from(len).map_err(|_| EIO)?).ok_or(EIO)
            }
            Request::Poll(_) => reply::poll(out, (libc::POLLIN | libc::POLLOUT) as u32).ok_or(EIO),
            Request::Ioctl { arg, .. } if arg.cmd == IOCTL_CMD && arg.out_size >= 4 => {
                let o = FuseIoctlOut::default();
                reply::ioctl(out, &o, &IOCTL_ANSWER.to_ne_bytes()).ok_or(EIO)
            }
            Request::Ioctl { .. } => Err(libc::ENOTTY),
            Request::Unsupported { .. } => Err(libc::ENOSYS),
        }
    }
}

/// A GETXATTR/LISTXATTR answer: the size for a size query, ERANGE if `size` is too
/// small, else the bytes.
fn sized(out: &mut [u8], size: u32, v: &[u8]) -> Served {
    let len = u32::try_from(v.len()).map_err(|_| libc::E2BIG)?;
    if size == 0 {
        reply::xattr_size(out, len).ok_or(EIO)
    } else if size < len {
        Err(libc::ERANGE)
    } else {
        reply::bytes(out, v).ok_or(EIO)
    }
}

#[derive(Debug, Default)]
struct QueueReport {
    ended: BTreeMap<i32, u64>,
    error: Option<String>,
}

fn run_queue(
    fuse: Arc<OwnedFd>,
    qid: u16,
    payload_size: usize,
    proto: Proto,
    tree: Arc<Mutex<Tree>>,
    registered: mpsc::Sender<std::io::Result<queue::Stopper>>,
) -> QueueReport {
    let mut report = QueueReport::default();
    let _ = queue::pin_current_thread(usize::from(qid));
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
    let mut scratch = Vec::new();
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
                    // Decoded from the entry's own payload (no copy of the request);
                    // the in-memory tree builds its reply aside while the request
                    // borrows the payload, then copies it over.
                    let r = q.answer_in_place(slot, |headers, payload, len| {
                        let h = headers.in_header;
                        // A handler that panics still answers (EIO), or the request
                        // would wait forever and wedge the connection (see Fusectl).
                        let mut t = tree.lock().unwrap_or_else(|e| e.into_inner());
                        scratch.resize(payload.len(), 0);
                        let n = match Request::decode(proto, &h, &headers.op_in, &payload[..len]) {
                            Err(e) => {
                                t.decode_errors.push(format!("op {}: {e}", h.opcode));
                                return Err(e.errno());
                            }
                            Ok(req) => {
                                *t.served.entry(h.opcode).or_default() += 1;
                                let r =
                                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                        t.serve(proto, &h, req, &mut scratch)
                                    }));
                                r.unwrap_or_else(|_| {
                                    t.decode_errors
                                        .push(format!("op {}: handler panicked", h.opcode));
                                    Err(libc::EIO)
                                })?
                            }
                        };
                        payload[..n].copy_from_slice(&scratch[..n]);
                        Ok(n)
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

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new("timeout")
        .arg("20")
        .arg(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The path as the `&str` a command line takes (the test's paths are ASCII).
fn os(p: &Path) -> &str {
    p.to_str().expect("ASCII path")
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// What the mount must show: the system calls, each checked against what the tree
/// was told.
fn exercise(m: &Path) {
    // mkdir, create, write, read back (std and cat).
    let d = m.join("dir");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
    assert_eq!(std::fs::metadata(&d).unwrap().mode(), libc::S_IFDIR | 0o750);
    let f = d.join("file");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&f, &payload).unwrap();
    assert_eq!(std::fs::read(&f).unwrap(), payload, "read back");
    assert_eq!(run("cat", &[os(&f)]).stdout, payload, "cat");
    let mut fh = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&f)
        .unwrap();
    fh.seek(SeekFrom::Start(10)).unwrap();
    fh.write_all(b"patched").unwrap();
    fh.sync_all().unwrap(); // FSYNC
    let mut buf = [0u8; 17];
    fh.seek(SeekFrom::Start(5)).unwrap();
    fh.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[5..12], b"patched");
    assert_eq!(buf[..5], payload[5..10]);

    // getattr through stat(1) and std.
    let md = std::fs::metadata(&f).unwrap();
    assert_eq!(md.len(), payload.len() as u64);
    assert_eq!(md.ino(), md.ino());
    let st = run("stat", &["-c", "%s %h %f", os(&f)]);
    assert_eq!(
        String::from_utf8_lossy(&st.stdout).trim(),
        format!("{} 1 81a4", payload.len())
    );

    // setattr: truncate, chmod, chown, utimes.
    fh.set_len(1000).unwrap();
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 1000);
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&f, Some(1234), Some(5678)).unwrap();
    run("touch", &["-m", "-d", "@1000000000.5", os(&f)]);
    let md = std::fs::metadata(&f).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o600);
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_000_000_000, 500_000_000));

    // fallocate, lseek(SEEK_HOLE/SEEK_DATA), poll, ioctl, fsyncdir.
    // SAFETY: plain system calls on a descriptor we own, with valid pointers.
    unsafe {
        assert_eq!(libc::fallocate(fh.as_raw_fd(), 0, 0, 8192), 0, "fallocate");
        assert_eq!(libc::lseek(fh.as_raw_fd(), 0, libc::SEEK_HOLE), 8192);
        assert_eq!(libc::lseek(fh.as_raw_fd(), 100, libc::SEEK_DATA), 100);
        let mut p = libc::pollfd {
            fd: fh.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        assert_eq!(libc::poll(&mut p, 1, 1000), 1, "poll");
        assert_ne!(p.revents & libc::POLLIN, 0);
        let mut v: u32 = 0;
        assert_eq!(
            libc::ioctl(fh.as_raw_fd(), IOCTL_CMD as _, &mut v as *mut u32),
            0
        );
        assert_eq!(v, IOCTL_ANSWER, "ioctl output");
    }
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 8192);
    std::fs::File::open(&d).unwrap().sync_all().unwrap(); // FSYNCDIR

    // copy_file_range between two files of the mount.
    let g = d.join("copy");
    let gh = std::fs::File::create(&g).unwrap();
    let (mut off_in, mut off_out): (i64, i64) = (10, 0);
    // SAFETY: descriptors we own, offsets are valid pointers.
    let n = unsafe {
        libc::copy_file_range(
            fh.as_raw_fd(),
            &mut off_in,
            gh.as_raw_fd(),
            &mut off_out,
            7,
            0,
        )
    };
    assert_eq!(n, 7, "copy_file_range: {}", std::io::Error::last_os_error());
    drop(gh);
    assert_eq!(std::fs::read(&g).unwrap(), b"patched");
    drop(fh);

    // symlink, readlink, link, mkfifo (MKNOD).
    let s = m.join("sym");
    std::os::unix::fs::symlink("dir/file", &s).unwrap();
    assert_eq!(std::fs::read_link(&s).unwrap(), Path::new("dir/file"));
    assert_eq!(
        std::fs::read(&s).unwrap().len(),
        8192,
        "through the symlink"
    );
    let l = m.join("hard");
    std::fs::hard_link(&f, &l).unwrap();
    assert_eq!(std::fs::metadata(&f).unwrap().nlink(), 2);
    let fifo = m.join("fifo");
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(cpath(&fifo).as_ptr(), 0o644) }, 0);
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());

    // readdir of a directory needing several READDIR(PLUS) replies.
    let many = m.join("many");
    std::fs::create_dir(&many).unwrap();
    let mut names: Vec<String> = (0..120)
        .map(|i| format!("entry-with-a-longish-name-number-{i:04}"))
        .collect();
    for n in &names {
        std::fs::write(many.join(n), n.as_bytes()).unwrap();
    }
    let mut listed: Vec<String> = std::fs::read_dir(&many)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    names.sort();
    assert_eq!(listed, names, "read_dir");
    let ls = run("ls", &["-a", os(m)]);
    assert_eq!(
        String::from_utf8_lossy(&ls.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        [".", "..", "dir", "fifo", "hard", "many", "sym"]
    );
    let ls = run("ls", &["-l", os(&many)]);
    assert_eq!(String::from_utf8_lossy(&ls.stdout).lines().count(), 121);

    // rename (mv), rename2 (NOREPLACE), unlink (rm), rmdir.
    let moved = m.join("moved");
    // coreutils' mv tries renameat2(RENAME_NOREPLACE) first (a RENAME2 here); rename(2)
    // over an existing file is a RENAME.
    run("mv", &[os(&f), os(&moved)]);
    assert!(!f.exists());
    let victim = m.join("victim");
    std::fs::write(&victim, b"replaced").unwrap();
    std::fs::rename(&moved, &victim).unwrap();
    assert_eq!(
        std::fs::read(&victim).unwrap().len(),
        8192,
        "rename over a file"
    );
    std::fs::rename(&victim, &moved).unwrap();
    assert_eq!(std::fs::read(&moved).unwrap().len(), 8192);
    // SAFETY: valid C strings and directory descriptors.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cpath(&moved).as_ptr(),
            libc::AT_FDCWD,
            cpath(&l).as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EEXIST)
    );
    let moved2 = m.join("moved2");
    // SAFETY: as above.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cpath(&moved).as_ptr(),
            libc::AT_FDCWD,
            cpath(&moved2).as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    assert_eq!(r, 0, "renameat2: {}", std::io::Error::last_os_error());
    run("rm", &[os(&moved2), os(&l), os(&s), os(&fifo)]);
    assert_eq!(
        std::fs::remove_dir(&d).map_err(|e| e.raw_os_error()),
        Err(Some(libc::ENOTEMPTY))
    );
    std::fs::remove_file(&g).unwrap();
    std::fs::remove_dir(&d).unwrap();
    assert!(!d.exists());

    // xattrs: set, get (size query then value), list, remove.
    let x = m.join("x");
    std::fs::write(&x, b"").unwrap();
    let cx = cpath(&x);
    let (k, v) = (c"user.colour", b"ultramarine");
    // SAFETY: valid C strings and buffers of the given lengths.
    unsafe {
        assert_eq!(
            libc::setxattr(cx.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0),
            0
        );
        let r = libc::setxattr(
            cx.as_ptr(),
            k.as_ptr(),
            v.as_ptr().cast(),
            v.len(),
            libc::XATTR_CREATE,
        );
        assert_eq!(
            (r, std::io::Error::last_os_error().raw_os_error()),
            (-1, Some(libc::EEXIST))
        );
        assert_eq!(
            libc::getxattr(cx.as_ptr(), k.as_ptr(), std::ptr::null_mut(), 0),
            v.len() as isize
        );
        let mut buf = [0u8; 64];
        let n = libc::getxattr(cx.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
        assert_eq!(&buf[..n as usize], v);
        let n = libc::listxattr(cx.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
        assert_eq!(&buf[..n as usize], b"user.colour\0");
    }
    if have("setfattr") && have("getfattr") {
        run("setfattr", &["-n", "user.tool", "-v", "fattr", os(&x)]);
        let g = run("getfattr", &["-n", "user.tool", "--only-values", os(&x)]);
        assert_eq!(g.stdout, b"fattr");
        run("setfattr", &["-x", "user.tool", os(&x)]);
    }
    // SAFETY: valid C strings.
    unsafe {
        assert_eq!(libc::removexattr(cx.as_ptr(), k.as_ptr()), 0);
        let r = libc::getxattr(cx.as_ptr(), k.as_ptr(), std::ptr::null_mut(), 0);
        assert_eq!(
            (r, std::io::Error::last_os_error().raw_os_error()),
            (-1, Some(libc::ENODATA))
        );
        assert_eq!(libc::access(cx.as_ptr(), libc::R_OK), 0, "access");
        let mut sfs: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(cx.as_ptr(), &mut sfs), 0);
        assert_eq!(
            (sfs.f_blocks, sfs.f_bfree, sfs.f_bavail, sfs.f_namemax),
            (1000, 400, 300, 255)
        );
    }
    // A hostile name the kernel refuses before sending it (a name over 255 bytes) never
    // reaches the decoder; a missing file is ENOENT from LOOKUP.
    assert_eq!(
        std::fs::metadata(m.join("absent"))
            .map_err(|e| e.raw_os_error())
            .err(),
        Some(Some(libc::ENOENT))
    );
}

/// The opcodes `exercise` must make the kernel send over the ring.
const EXPECTED: &[(u32, &str)] = &[
    (opcode::LOOKUP, "LOOKUP"),
    (opcode::GETATTR, "GETATTR"),
    (opcode::SETATTR, "SETATTR"),
    (opcode::READLINK, "READLINK"),
    (opcode::MKNOD, "MKNOD"),
    (opcode::MKDIR, "MKDIR"),
    (opcode::UNLINK, "UNLINK"),
    (opcode::RMDIR, "RMDIR"),
    (opcode::SYMLINK, "SYMLINK"),
    (opcode::RENAME, "RENAME"),
    (opcode::RENAME2, "RENAME2"),
    (opcode::LINK, "LINK"),
    (opcode::OPEN, "OPEN"),
    (opcode::CREATE, "CREATE"),
    (opcode::READ, "READ"),
    (opcode::WRITE, "WRITE"),
    (opcode::FLUSH, "FLUSH"),
    (opcode::RELEASE, "RELEASE"),
    (opcode::FSYNC, "FSYNC"),
    (opcode::OPENDIR, "OPENDIR"),
    (opcode::READDIR, "READDIR"),
    (opcode::READDIRPLUS, "READDIRPLUS"),
    (opcode::RELEASEDIR, "RELEASEDIR"),
    (opcode::FSYNCDIR, "FSYNCDIR"),
    (opcode::STATFS, "STATFS"),
    (opcode::SETXATTR, "SETXATTR"),
    (opcode::GETXATTR, "GETXATTR"),
    (opcode::LISTXATTR, "LISTXATTR"),
    (opcode::REMOVEXATTR, "REMOVEXATTR"),
    (opcode::ACCESS, "ACCESS"),
    (opcode::FALLOCATE, "FALLOCATE"),
    (opcode::LSEEK, "LSEEK"),
    (opcode::COPY_FILE_RANGE, "COPY_FILE_RANGE"),
    (opcode::POLL, "POLL"),
    (opcode::IOCTL, "IOCTL"),
];

fn name_of(op: u32) -> String {
    match op {
        opcode::STATX => return "STATX".into(),
        opcode::COPY_FILE_RANGE_64 => return "COPY_FILE_RANGE_64".into(),
        _ => {}
    }
    EXPECTED
        .iter()
        .find(|(o, _)| *o == op)
        .map_or_else(|| format!("op{op}"), |(_, n)| n.to_string())
}

fn serve_a_tree_over_the_ring(setxattr_ext: bool) {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _fusectl = Fusectl::ensure();
    let cpus = queue::possible_cpus().expect("possible CPUs");
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let payload_size = queue::payload_size(MAX_WRITE, MAX_WRITE.div_ceil(page as u32), page);
    let mut mnt = MountGuard::new(if setxattr_ext { "ext" } else { "old" });

    let mut enable = EnableUring::set();
    let init = Arc::new(Mutex::new(None));
    let forgets = Arc::new(AtomicU64::new(0));
    let fs = DevFuseSide {
        setxattr_ext,
        init: init.clone(),
        forgets: forgets.clone(),
    };
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![fuser::MountOption::FSName("daxfs-uring-serve".into())];
    let session = fuser::Session::new(fs, &mnt.dir, &cfg);
    enable.restore();
    let session = session.expect("mount");
    mnt.conn = mnt.connection();
    let conn = mnt.conn.expect("the mount in mountinfo");
    let (dog_tx, dog_rx) = mpsc::channel::<()>();
    thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = dog_rx.recv_timeout(Duration::from_secs(90)) {
            eprintln!("watchdog: aborting connection {conn}");
            let _ = std::fs::write(format!("/sys/fs/fuse/connections/{conn}/abort"), "1");
        }
    });
    let proto = match init.lock().unwrap().clone().expect("INIT ran") {
        Ok(p) => p,
        Err(why) => panic!("INIT: {why}"),
    };
    assert_eq!(proto.setxattr_ext, setxattr_ext);
    assert_eq!(proto.minor, 40, "fuser 0.18 speaks 7.40");
    let _ = FUSE_SETXATTR_EXT;
    let fuse = Arc::new(session.as_fd().try_clone_to_owned().expect("dup /dev/fuse"));
    let bg = session.spawn().expect("session loop");

    let tree = Arc::new(Mutex::new(Tree::new()));
    let (reg_tx, reg_rx) = mpsc::channel();
    let workers: Vec<_> = (0..cpus)
        .map(|qid| {
            let (fuse, tx, tree) = (fuse.clone(), reg_tx.clone(), tree.clone());
            let qid = u16::try_from(qid).expect("qid");
            thread::spawn(move || run_queue(fuse, qid, payload_size, proto, tree, tx))
        })
        .collect();
    let mut stoppers = Vec::new();
    for _ in 0..cpus {
        let r = reg_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("queue thread");
        stoppers.push(r.expect("queue setup"));
    }

    let outcome = std::panic::catch_unwind(|| exercise(&mnt.dir));

    let unmounted = bg.umount_and_join();
    let mut reports = Vec::new();
    for (qid, w) in workers.into_iter().enumerate() {
        for _ in 0..1000 {
            if w.is_finished() {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        if !w.is_finished() {
            let _ = stoppers[qid].stop();
        }
        reports.push(w.join().expect("queue thread"));
    }
    drop(dog_tx);
    let t = tree.lock().unwrap();
    let served: Vec<_> = t
        .served
        .iter()
        .map(|(op, n)| format!("{}={n}", name_of(*op)))
        .collect();
    eprintln!(
        "setxattr_ext {setxattr_ext}: served [{}]; decode errors {:?}; GETXATTR names {:?}; \
         queues {reports:?}; forgets via /dev/fuse {}; unmount {unmounted:?}",
        served.join(" "),
        t.decode_errors,
        t.getxattr_names,
        forgets.load(Ordering::SeqCst)
    );
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
    assert_eq!(
        t.decode_errors,
        Vec::<String>::new(),
        "requests that failed to decode"
    );
    let missing: Vec<_> = EXPECTED
        .iter()
        .filter(|(op, _)| !t.served.contains_key(op))
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(
        missing,
        Vec::<&str>::new(),
        "opcodes never sent over the ring"
    );
    for r in &reports {
        assert_eq!(r.error, None);
        assert_eq!(
            r.ended.get(&libc::ENOTCONN).copied(),
            Some(u64::from(DEPTH))
        );
    }
}

#[test]
fn a_tree_served_over_the_ring_with_setxattr_ext_matches_the_system_calls() {
    serve_a_tree_over_the_ring(true);
}

#[test]
fn a_tree_served_over_the_ring_with_the_old_setxattr_layout_matches_the_system_calls() {
    serve_a_tree_over_the_ring(false);
}
