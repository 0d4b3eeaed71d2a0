//! Why a mount was refused: [`MountError`] (opening the device, the superblock, the
//! journal, the metadata checks, the writes of going live) and [`CorruptError`] (what
//! the metadata checks of a mount found inconsistent, naming the object).
//!
//! The `Display` texts are the messages users see (`daxfs mount` prints them after
//! "cannot mount "), and the test suite matches on them: change them only with the
//! suite. Every [`MountError`] message starts with the device path and ": ".

use crate::dir::DirLoadError;
use crate::error::Errno;
use crate::extent_map::ExtentMapError;
use crate::types::FileKind;
use daxfs_alloc::AllocError;
use daxfs_format::FormatError;
use daxfs_journal::JournalError;
use daxfs_pmem::DeviceError;
use std::error::Error;
use std::fmt;
use std::path::{Path, PathBuf};

/// A refused mount ([`DaxFs::mount`](crate::DaxFs::mount) and its halves). Nothing but
/// the replay of committed journal transactions was written, except for
/// [`Recovery`](Self::Recovery) and [`SuperblockUpdate`](Self::SuperblockUpdate), which
/// fail while going live.
#[derive(Debug)]
pub enum MountError {
    /// The device could not be opened.
    Open(DeviceError),
    /// A read-write mount of a device that cannot be opened for writing.
    ReadOnlyDevice(DeviceError),
    /// A read-only mount whose journal must be replayed, of a device that cannot be
    /// opened for writing.
    ReplayNeedsWritable(DeviceError),
    /// Neither superblock copy carries the magic number.
    NotDaxfs { device: PathBuf },
    /// Both superblock copies are bad; `primary` says what is wrong with the first.
    BadSuperblock {
        device: PathBuf,
        primary: FormatError,
    },
    /// Read-only-compatible features this version does not know, on a read-write mount.
    UnknownRoCompat { device: PathBuf, features: u32 },
    /// The journal must be replayed, and the (already opened) device is read-only.
    ReplayOnReadOnly { device: PathBuf },
    /// The journal is damaged in the middle of committed transactions: replaying up to
    /// the damage would put older metadata over newer, so nothing was written.
    JournalDamaged {
        device: PathBuf,
        source: JournalError,
    },
    /// The journal could not be opened for another reason.
    Journal {
        device: PathBuf,
        source: JournalError,
    },
    /// The metadata is inconsistent (needs fsck).
    Corrupt {
        device: PathBuf,
        source: CorruptError,
    },
    /// Going live, a recovery write failed (the bitmap rewrite, an orphan's reclaim).
    Recovery {
        device: PathBuf,
        step: RecoveryStep,
        source: Errno,
    },
    /// Going live, the superblock could not be marked mounted.
    SuperblockUpdate { device: PathBuf, source: Errno },
    /// A read-write mount while another mount, on this host or another one, holds the
    /// device's writer lease and heartbeats it (docs/DESIGN.md, "Several hosts").
    /// `owner` is the holder's id in the host table, `pid` its process id on its host.
    WriterLeaseHeld {
        device: PathBuf,
        owner: u64,
        pid: u32,
    },
    /// A follower could not claim a slot in the host table: the table is full, or the
    /// device is opened read-only. The writer could not see it, and would reuse blocks
    /// under its reads.
    NoHostSlot { device: PathBuf, table_full: bool },
}

/// The write of going live that failed (see [`MountError::Recovery`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryStep {
    /// Rewriting an on-media bitmap a crash left out of date.
    RewriteBitmap,
    /// Reclaiming an inode that was unlinked while open before a crash.
    ReclaimOrphan(u64),
}

impl MountError {
    /// The device the mount was of (the path it was opened by).
    pub fn device(&self) -> &Path {
        match self {
            MountError::Open(e)
            | MountError::ReadOnlyDevice(e)
            | MountError::ReplayNeedsWritable(e) => device_path(e),
            MountError::NotDaxfs { device }
            | MountError::BadSuperblock { device, .. }
            | MountError::UnknownRoCompat { device, .. }
            | MountError::ReplayOnReadOnly { device }
            | MountError::JournalDamaged { device, .. }
            | MountError::Journal { device, .. }
            | MountError::Corrupt { device, .. }
            | MountError::Recovery { device, .. }
            | MountError::SuperblockUpdate { device, .. }
            | MountError::WriterLeaseHeld { device, .. }
            | MountError::NoHostSlot { device, .. } => device,
        }
    }

    /// Whether the message tells the user to run fsck.daxfs.
    pub fn needs_fsck(&self) -> bool {
        !matches!(
            self,
            MountError::Open(_)
                | MountError::ReadOnlyDevice(_)
                | MountError::NotDaxfs { .. }
                | MountError::UnknownRoCompat { .. }
                | MountError::SuperblockUpdate { .. }
                | MountError::WriterLeaseHeld { .. }
                | MountError::NoHostSlot { .. }
        )
    }
}

fn device_path(e: &DeviceError) -> &Path {
    match e {
        DeviceError::NotFound { path }
        | DeviceError::Unsupported { path, .. }
        | DeviceError::Empty { path }
        | DeviceError::BadSize { path, .. }
        | DeviceError::Busy { path }
        | DeviceError::NotBacked { path, .. }
        | DeviceError::Io { path, .. } => path,
    }
}

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The device errors start with the path themselves.
        let name = self.device().display();
        match self {
            MountError::Open(e) => write!(f, "{e}"),
            MountError::ReadOnlyDevice(e) => {
                write!(f, "{e} (a device that cannot be written mounts with -o ro)")
            }
            MountError::ReplayNeedsWritable(e) => write!(
                f,
                "{e} (the journal holds committed transactions that must be replayed \
                 before even a read-only mount can read the metadata, which needs the \
                 device writable: mount it read-write once, or run fsck.daxfs)"
            ),
            MountError::NotDaxfs { .. } => write!(
                f,
                "{name}: not a daxfs filesystem (no superblock; format it with mkfs.daxfs)"
            ),
            MountError::BadSuperblock { primary, .. } => write!(
                f,
                "{name}: corrupt superblock: {primary} (backup also bad); run fsck.daxfs"
            ),
            MountError::UnknownRoCompat { features, .. } => write!(
                f,
                "{name}: unknown read-only-compatible features {features:#x}: mount with -o ro"
            ),
            MountError::ReplayOnReadOnly { .. } => write!(
                f,
                "{name}: the journal holds committed transactions to replay, and the device \
                 is open read-only: mount it read-write once, or run fsck.daxfs"
            ),
            MountError::JournalDamaged { source, .. } => write!(
                f,
                "{name}: journal: {source}; nothing was written; run fsck.daxfs -y (it applies the transactions after the damaged one and drops it)"
            ),
            MountError::Journal { source, .. } => {
                write!(f, "{name}: journal: {source}; run fsck.daxfs")
            }
            MountError::Corrupt { source, .. } => write!(f, "{name}: {source}; run fsck.daxfs"),
            MountError::Recovery { step, source, .. } => {
                write!(f, "{name}: {step}: {source}; run fsck.daxfs")
            }
            MountError::SuperblockUpdate { .. } => {
                write!(f, "{name}: could not update the superblock")
            }
            MountError::WriterLeaseHeld { pid, .. } => write!(
                f,
                "{name}: writer role held by another host (pid {pid}), heartbeat live; \
                 mount with -o follow to read it"
            ),
            MountError::NoHostSlot { table_full: true, .. } => write!(
                f,
                "{name}: no free slot in the host table ({} followers at most)",
                daxfs_format::hosts::SLOTS - daxfs_format::hosts::FIRST_HOST_SLOT
            ),
            MountError::NoHostSlot { table_full: false, .. } => write!(
                f,
                "{name}: a follower must publish what it reads in the device's host table, \
                 and the device is opened read-only"
            ),
        }
    }
}

impl fmt::Display for RecoveryStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryStep::RewriteBitmap => f.write_str("rewriting the bitmap"),
            RecoveryStep::ReclaimOrphan(ino) => write!(f, "reclaiming orphan {ino}"),
        }
    }
}

impl Error for MountError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            MountError::Open(e)
            | MountError::ReadOnlyDevice(e)
            | MountError::ReplayNeedsWritable(e) => Some(e),
            MountError::BadSuperblock { primary, .. } => Some(primary),
            MountError::JournalDamaged { source, .. } | MountError::Journal { source, .. } => {
                Some(source)
            }
            MountError::Corrupt { source, .. } => Some(source),
            MountError::Recovery { source, .. } | MountError::SuperblockUpdate { source, .. } => {
                Some(source)
            }
            MountError::NotDaxfs { .. }
            | MountError::UnknownRoCompat { .. }
            | MountError::ReplayOnReadOnly { .. }
            | MountError::WriterLeaseHeld { .. }
            | MountError::NoHostSlot { .. } => None,
        }
    }
}

/// An inconsistency the metadata checks of a mount found: each variant names the
/// object (inode, directory, block) and what is wrong with it. fsck checks the same.
#[derive(Debug)]
pub enum CorruptError {
    /// Inode slot 0 is reserved and must be all zeros.
    ReservedSlotInUse,
    /// A record of inode `ino` (its slot, an extent block, an extent) does not decode.
    Decode { ino: u64, source: FormatError },
    /// A block that does not name its owner in the message (an xattr block, a
    /// directory block header, a bitmap block) does not decode; the codec's message
    /// names it.
    Block(FormatError),
    /// The mode names no file type.
    InvalidMode { ino: u64, mode: u32 },
    /// The size is beyond [`MAX_FILE_SIZE`](crate::MAX_FILE_SIZE).
    SizeTooLarge { ino: u64, size: u64 },
    /// The extent block chain does not end.
    ExtentChainLoops { ino: u64 },
    /// Blocks `pblk..pblk+len` of inode `ino` (`part`: "", " extent block", " xattr
    /// block") lie outside the data area.
    OutsideDataArea {
        ino: u64,
        part: &'static str,
        pblk: u64,
        len: u64,
    },
    /// Blocks `pblk..pblk+len` of inode `ino` are also claimed by an earlier owner.
    UsedTwice {
        ino: u64,
        part: &'static str,
        pblk: u64,
        len: u64,
    },
    /// The free-space map refused to mark a claimed range used.
    Alloc(AllocError),
    /// The extents of inode `ino` overlap.
    Extents { ino: u64, source: ExtentMapError },
    /// The inode's extent count disagrees with the extents stored.
    ExtentCount {
        ino: u64,
        recorded: u32,
        stored: usize,
    },
    /// An extent maps a block beyond the maximum file size.
    ExtentBeyondMaxSize { ino: u64 },
    /// The inode's block count disagrees with the blocks it owns.
    BlockCount { ino: u64, recorded: u64, owned: u64 },
    /// A symlink's target length is 0 or does not fit its block.
    SymlinkLength { ino: u64, len: u64 },
    /// A symlink has no block 0 to hold its target.
    SymlinkTargetMissing { ino: u64 },
    /// A device node, fifo or socket has data.
    SpecialHasData { ino: u64, kind: FileKind },
    /// The root directory's parent field does not name itself.
    RootParent { parent: u64 },
    /// The root inode is not a directory.
    RootNotDir,
    /// The root inode is free.
    RootMissing,
    /// A directory's size does not match its blocks.
    DirSize { ino: u64, size: u64 },
    /// A directory block within the size is not mapped.
    DirHole { ino: u64, block: u64 },
    /// A directory slot does not decode.
    Dirent {
        ino: u64,
        block: u64,
        slot: usize,
        source: FormatError,
    },
    /// A directory entry names an inode number beyond the table.
    EntryOutOfRange { dir: u64, ino: u64 },
    /// A directory's entries overlap or repeat a name.
    DirEntries { dir: u64, source: DirLoadError },
    /// A directory entry (`name`) names a free inode.
    EntryNamesFree { dir: u64, name: String, ino: u64 },
    /// A directory entry records another type than its inode has.
    EntryType { dir: u64, ino: u64 },
    /// A directory entry names the root directory.
    EntryNamesRoot { dir: u64 },
    /// A directory is named by more than one entry.
    DirHardLinked { ino: u64 },
    /// A directory's parent field does not name the directory containing it.
    DirParent { ino: u64, dir: u64 },
    /// An inode with link count 0 is named by entries.
    UnlinkedButNamed { ino: u64, named: u32 },
    /// A link count disagrees with the entries naming the inode.
    LinkCount { ino: u64, recorded: u32, want: u32 },
    /// A linked inode carries the orphan flag.
    OrphanLinked { ino: u64 },
    /// A linked inode cannot be reached from the root.
    Unreachable { ino: u64 },
}

impl fmt::Display for CorruptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CorruptError::*;
        match self {
            ReservedSlotInUse => f.write_str("inode slot 0 (reserved) is not zero"),
            Decode { ino, source } => write!(f, "inode {ino}: {source}"),
            Block(e) => write!(f, "{e}"),
            InvalidMode { ino, mode } => write!(f, "inode {ino}: invalid mode {mode:o}"),
            SizeTooLarge { ino, size } => {
                write!(
                    f,
                    "inode {ino}: size {size} is beyond the maximum file size"
                )
            }
            ExtentChainLoops { ino } => write!(f, "inode {ino}: extent block chain loops"),
            OutsideDataArea {
                ino,
                part,
                pblk,
                len,
            } => write!(
                f,
                "inode {ino}{part}: block {pblk}+{len} is outside the data area"
            ),
            UsedTwice {
                ino,
                part,
                pblk,
                len,
            } => write!(f, "inode {ino}{part}: block {pblk}+{len} is used twice"),
            Alloc(e) => write!(f, "{e}"),
            Extents { ino, source } => write!(f, "inode {ino}: {source}"),
            ExtentCount {
                ino,
                recorded,
                stored,
            } => write!(
                f,
                "inode {ino}: extent count is {recorded} but {stored} extents are stored"
            ),
            ExtentBeyondMaxSize { ino } => {
                write!(f, "inode {ino}: extent beyond the maximum file size")
            }
            BlockCount {
                ino,
                recorded,
                owned,
            } => write!(
                f,
                "inode {ino}: block count is {recorded} but it owns {owned} blocks"
            ),
            SymlinkLength { ino, len } => {
                write!(f, "symlink {ino}: target length {len} is out of range")
            }
            SymlinkTargetMissing { ino } => write!(f, "symlink {ino}: target block is missing"),
            SpecialHasData { ino, kind } => write!(f, "inode {ino}: a {kind:?} node has data"),
            RootParent { parent } => {
                write!(f, "root directory: parent field is {parent}, not itself")
            }
            RootNotDir => f.write_str("root inode is not a directory"),
            RootMissing => f.write_str("root directory is missing"),
            DirSize { ino, size } => {
                write!(f, "directory {ino}: size {size} does not match its blocks")
            }
            DirHole { ino, block } => write!(f, "directory {ino}: block {block} is a hole"),
            Dirent {
                ino,
                block,
                slot,
                source,
            } => write!(f, "directory {ino} block {block} slot {slot}: {source}"),
            EntryOutOfRange { dir, ino } => {
                write!(f, "directory {dir}: entry names inode {ino} out of range")
            }
            DirEntries { dir, source } => write!(f, "directory {dir}: {source}"),
            EntryNamesFree { dir, name, ino } => {
                write!(f, "directory {dir}: entry {name:?} names free inode {ino}")
            }
            EntryType { dir, ino } => {
                write!(f, "directory {dir}: entry type mismatch for inode {ino}")
            }
            EntryNamesRoot { dir } => {
                write!(f, "directory {dir}: an entry names the root directory")
            }
            DirHardLinked { ino } => write!(f, "directory {ino} has more than one name"),
            DirParent { ino, dir } => write!(
                f,
                "directory {ino}: parent field does not name directory {dir}, which contains it"
            ),
            UnlinkedButNamed { ino, named } => {
                write!(
                    f,
                    "inode {ino}: link count is 0 but {named} entries name it"
                )
            }
            LinkCount {
                ino,
                recorded,
                want,
            } => write!(
                f,
                "inode {ino}: link count is {recorded} but should be {want}"
            ),
            OrphanLinked { ino } => write!(f, "inode {ino}: marked orphan but linked"),
            Unreachable { ino } => write!(f, "inode {ino}: not reachable from the root"),
        }
    }
}

impl Error for CorruptError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        use CorruptError::*;
        match self {
            Decode { source, .. } | Dirent { source, .. } => Some(source),
            Block(e) => Some(e),
            Alloc(e) => Some(e),
            Extents { source, .. } => Some(source),
            DirEntries { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_starts_with_the_device_path() {
        let device = PathBuf::from("/dev/shm/x.img");
        let errors = [
            MountError::Open(DeviceError::NotFound {
                path: device.clone(),
            }),
            MountError::ReadOnlyDevice(DeviceError::Busy {
                path: device.clone(),
            }),
            MountError::NotDaxfs {
                device: device.clone(),
            },
            MountError::Corrupt {
                device: device.clone(),
                source: CorruptError::RootMissing,
            },
            MountError::Recovery {
                device: device.clone(),
                step: RecoveryStep::ReclaimOrphan(7),
                source: Errno::EIO,
            },
        ];
        for e in errors {
            assert_eq!(e.device(), device);
            assert!(e.to_string().starts_with("/dev/shm/x.img: "), "{e}");
        }
    }

    #[test]
    fn a_corrupt_image_names_the_object_and_asks_for_fsck() {
        let e = MountError::Corrupt {
            device: PathBuf::from("img"),
            source: CorruptError::LinkCount {
                ino: 12,
                recorded: 3,
                want: 2,
            },
        };
        assert_eq!(
            e.to_string(),
            "img: inode 12: link count is 3 but should be 2; run fsck.daxfs"
        );
        assert!(e.needs_fsck());
        assert!(e.source().is_some());
    }
}
