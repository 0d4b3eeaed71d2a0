//! Public value types of the core API: attributes, credentials, attribute changes,
//! directory entries, statfs, mount options.

use daxfs_format::Timespec;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The type of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl FileKind {
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDev,
            libc::S_IFBLK => FileKind::BlockDev,
            _ => return None,
        })
    }

    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::File => libc::S_IFREG,
            FileKind::Dir => libc::S_IFDIR,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::Fifo => libc::S_IFIFO,
            FileKind::Socket => libc::S_IFSOCK,
            FileKind::CharDev => libc::S_IFCHR,
            FileKind::BlockDev => libc::S_IFBLK,
        }
    }

    /// The DT_* value of dirent.h.
    pub fn dtype(self) -> u8 {
        match self {
            FileKind::File => libc::DT_REG,
            FileKind::Dir => libc::DT_DIR,
            FileKind::Symlink => libc::DT_LNK,
            FileKind::Fifo => libc::DT_FIFO,
            FileKind::Socket => libc::DT_SOCK,
            FileKind::CharDev => libc::DT_CHR,
            FileKind::BlockDev => libc::DT_BLK,
        }
    }

    pub fn from_dtype(t: u8) -> Option<FileKind> {
        Some(match t {
            libc::DT_REG => FileKind::File,
            libc::DT_DIR => FileKind::Dir,
            libc::DT_LNK => FileKind::Symlink,
            libc::DT_FIFO => FileKind::Fifo,
            libc::DT_SOCK => FileKind::Socket,
            libc::DT_CHR => FileKind::CharDev,
            libc::DT_BLK => FileKind::BlockDev,
            _ => return None,
        })
    }
}

/// Attributes of an inode, as stat(2) reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub generation: u64,
    pub size: u64,
    /// 512-byte units, as st_blocks.
    pub blocks: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub btime: Timespec,
    pub kind: FileKind,
    /// Permission bits incl. setuid/setgid/sticky (mode & 0o7777).
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
    /// FS_XFLAG_DAX is set on this inode.
    pub dax: bool,
}

/// Who is asking: for ownership of new inodes and permission checks.
#[derive(Debug, Clone, Default)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl Cred {
    pub fn root() -> Cred {
        Cred {
            uid: 0,
            gid: 0,
            pid: 0,
        }
    }
}

/// A time to set: a given value or "now" (UTIME_NOW).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    Now,
    At(Timespec),
}

/// Attribute changes of setattr; `None` leaves a field alone (UTIME_OMIT for times).
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub ctime: Option<Timespec>,
}

/// One directory entry as readdir returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: FileKind,
    pub name: Vec<u8>,
    /// The cookie to pass to readdir to continue after this entry.
    pub next_offset: u64,
}

/// statfs(2) figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// Whether file data may be cached by the kernel (`-o dax=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaxMode {
    /// No kernel page cache for file data: every read and write reaches the device.
    Always,
    /// The kernel may cache file data.
    Never,
    /// Per inode, from FS_XFLAG_DAX (inherited from the parent directory).
    Inode,
}

/// Options of a mounted filesystem that the core cares about.
#[derive(Debug, Clone)]
pub struct FsOptions {
    pub read_only: bool,
    pub dax: DaxMode,
    /// How long break_layouts waits for pins to drain before failing with EBUSY.
    pub layout_timeout: Duration,
    /// Who may pin, when pins are revoked, per-user limits (`pin.rs`).
    pub pins: crate::pin::PinPolicy,
    /// Lazy timestamps (`times.rs`): an overwrite that changes nothing but mtime/ctime
    /// updates them in memory (stat shows them at once) and commits them later: with
    /// the inode's next journal record, fsync (not fdatasync), unmount, or the writeback
    /// at most `commit_interval` after they changed. Off: every write commits its times
    /// before it returns.
    pub lazytime: bool,
    /// The longest a lazily updated timestamp stays in memory only.
    pub commit_interval: Duration,
    /// `-o follow`: a read-only view of a device another host's live writer changes,
    /// refreshed every `follow_interval` (`follow.rs`). Implies `read_only`.
    pub follow: bool,
    pub follow_interval: Duration,
    /// How often the writer (and a follower) bumps its heartbeat in the host table
    /// (`-o heartbeat_ms=`).
    pub heartbeat: Duration,
    /// How long a host table slot's heartbeat may stand still before the slot is
    /// presumed dead (`-o host_timeout_ms=`): a stale writer lease is then taken over,
    /// a stale follower no longer holds blocks back.
    pub host_timeout: Duration,
}

/// [`FsOptions::commit_interval`] by default (ext4's `commit=` default).
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(5);

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            read_only: false,
            dax: DaxMode::Always,
            layout_timeout: Duration::from_secs(30),
            pins: crate::pin::PinPolicy::default(),
            lazytime: true,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            follow: false,
            follow_interval: Duration::from_millis(10),
            heartbeat: Duration::from_millis(100),
            host_timeout: Duration::from_millis(2000),
        }
    }
}

pub fn now() -> Timespec {
    Timespec::now()
}

pub fn to_system_time(t: Timespec) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(t.nsec as u64)
    }
}

pub fn from_system_time(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            let mut sec = -(d.as_secs() as i64);
            let mut nsec = d.subsec_nanos();
            if nsec > 0 {
                sec -= 1;
                nsec = 1_000_000_000 - nsec;
            }
            Timespec { sec, nsec }
        }
    }
}
