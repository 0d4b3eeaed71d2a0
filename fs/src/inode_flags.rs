//! The inode flags of chattr(1) (FS_IOC_GETFLAGS / FS_IOC_SETFLAGS): immutable (+i),
//! append-only (+a) and DAX (+x), kept in the inode's `flags` word (IFLAG_*), and the
//! rules that enforce the first two.
//!
//! The rules are ext4's, which are the VFS's (a FUSE server sees none of them applied,
//! since the kernel's FUSE inodes never carry S_IMMUTABLE / S_APPEND): fs/namei.c
//! `may_open`, `may_create`, `may_delete`, `vfs_link`; fs/attr.c `notify_change`;
//! fs/open.c `vfs_fallocate`, `vfs_truncate`; fs/xattr.c `xattr_permission`; and
//! fs/ioctl.c `fileattr_set_prepare` with ext4's `ext4_ioctl_check_immutable` for who may
//! change the flags. Each check sits in the operation it guards; the predicates are here.

use crate::commit::Tx;
use crate::error::{Errno, Result};
use crate::filesystem::DaxFs;
use crate::inode::{rlock, wlock, InodeState};
use crate::types::*;
use daxfs_format::*;

/// The chattr flags of an inode, as the core keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InodeFlags {
    /// FS_IMMUTABLE_FL: no write, truncate, fallocate, attribute or xattr change, no new
    /// link, no rename or unlink of it; a directory takes no new entries and loses none.
    pub immutable: bool,
    /// FS_APPEND_FL: data may only be appended; no rename or unlink of it, no attribute
    /// or xattr change; a directory takes new entries but loses none.
    pub append: bool,
    /// FS_DAX_FL / FS_XFLAG_DAX (see [`DaxMode::Inode`]).
    pub dax: bool,
}

impl InodeFlags {
    fn of(d: &DiskInode) -> InodeFlags {
        InodeFlags {
            immutable: d.flags & IFLAG_IMMUTABLE != 0,
            append: d.flags & IFLAG_APPEND != 0,
            dax: d.flags & IFLAG_DAX != 0,
        }
    }

    fn bits(self) -> u32 {
        (if self.immutable { IFLAG_IMMUTABLE } else { 0 })
            | (if self.append { IFLAG_APPEND } else { 0 })
            | (if self.dax { IFLAG_DAX } else { 0 })
    }
}

impl InodeState {
    pub(crate) fn immutable(&self) -> bool {
        self.d.flags & IFLAG_IMMUTABLE != 0
    }

    pub(crate) fn append_only(&self) -> bool {
        self.d.flags & IFLAG_APPEND != 0
    }

    /// EPERM for an inode that may not be changed (chmod, chown, set times, xattrs), get
    /// a new link, or lose one of its names (unlink, rename of it or over it): immutable
    /// or append-only (`notify_change`, `xattr_permission`, `vfs_link`, `may_delete`).
    pub(crate) fn refuse_if_pinned_by_flags(&self) -> Result<()> {
        if self.immutable() || self.append_only() {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// EPERM for a directory that may take no new entry (`may_create`: immutable).
    pub(crate) fn refuse_new_entry(&self) -> Result<()> {
        if self.immutable() {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// EPERM for a directory that may lose no entry (`may_delete`: immutable or
    /// append-only). Rename over an entry also removes one.
    pub(crate) fn refuse_removed_entry(&self) -> Result<()> {
        self.refuse_if_pinned_by_flags()
    }

    /// EPERM for an open that would write or truncate what the flags protect
    /// (`may_open`): immutable refuses any write access and O_TRUNC; append-only refuses
    /// write access without O_APPEND, and O_TRUNC.
    pub(crate) fn refuse_open(&self, flags: i32) -> Result<()> {
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let trunc = flags & libc::O_TRUNC != 0;
        if self.immutable() && (writes || trunc) {
            return Err(Errno::EPERM);
        }
        if self.append_only() && ((writes && flags & libc::O_APPEND == 0) || trunc) {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// EPERM for a write the flags forbid: any write to an immutable file (as ext4, also
    /// through a descriptor opened before the flag was set); to an append-only file, a
    /// write that is not an append and changes bytes it already holds (`changes_existing`,
    /// asked only then). A FUSE server sees the file's current flags with each write, so
    /// a descriptor whose O_APPEND fcntl cleared lands here; the kernel's writeback cache
    /// (dax=never) sends appends as page writes at an offset, which only rewrite the
    /// bytes already there and extend the file, and so pass.
    pub(crate) fn refuse_write(
        &self,
        append: bool,
        changes_existing: impl FnOnce() -> bool,
    ) -> Result<()> {
        if self.immutable() || (self.append_only() && !append && changes_existing()) {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// EPERM for a fallocate the flags forbid (`vfs_fallocate`): any on an immutable
    /// file; on an append-only file anything but plain allocation (mode 0 or
    /// FALLOC_FL_KEEP_SIZE).
    pub(crate) fn refuse_fallocate(&self, mode: i32) -> Result<()> {
        if self.immutable() || (self.append_only() && mode & !libc::FALLOC_FL_KEEP_SIZE != 0) {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// EPERM for a setattr the flags forbid (`notify_change`, `vfs_truncate`): on an
    /// immutable inode any change of size, mode, owner or times; on an append-only one
    /// the same except setting both times to "now" (utimes(NULL), `touch`).
    pub(crate) fn refuse_setattr(&self, c: &SetAttr) -> Result<()> {
        let explicit_time =
            matches!(c.atime, Some(SetTime::At(_))) || matches!(c.mtime, Some(SetTime::At(_)));
        let forbidden_by_append = c.size.is_some()
            || c.mode.is_some()
            || c.uid.is_some()
            || c.gid.is_some()
            || explicit_time;
        if self.append_only() && forbidden_by_append {
            return Err(Errno::EPERM);
        }
        if self.immutable() && (forbidden_by_append || c.atime.is_some() || c.mtime.is_some()) {
            return Err(Errno::EPERM);
        }
        Ok(())
    }
}

impl DaxFs {
    /// The chattr flags of an inode (FS_IOC_GETFLAGS, FS_IOC_FSGETXATTR).
    pub fn inode_flags(&self, ino: u64) -> Result<InodeFlags> {
        let inode = self.inode(ino)?;
        let st = rlock(&inode.st);
        if st.dead {
            return Err(Errno::ENOENT);
        }
        self.settle(&inode);
        Ok(InodeFlags::of(&st.d))
    }

    /// Sets the chattr flags of an inode (FS_IOC_SETFLAGS, FS_IOC_FSSETXATTR) on behalf
    /// of `cred`, journaled with the inode. Who may: the owner or root
    /// (`inode_owner_or_capable`), and only root for a change of immutable or
    /// append-only (CAP_LINUX_IMMUTABLE); EPERM otherwise. While an inode stays
    /// immutable no other flag may change (EPERM, as ext4); clearing immutable may.
    pub fn set_inode_flags(&self, ino: u64, cred: &Cred, flags: InodeFlags) -> Result<()> {
        self.check_writable()?;
        let inode = self.inode(ino)?;
        let mut st = wlock(&inode.st);
        if st.dead {
            return Err(Errno::ENOENT);
        }
        if cred.uid != 0 && cred.uid != st.d.uid {
            return Err(Errno::EPERM);
        }
        let old = InodeFlags::of(&st.d);
        if (old.immutable != flags.immutable || old.append != flags.append) && cred.uid != 0 {
            return Err(Errno::EPERM);
        }
        if old.immutable && flags.immutable && old != flags {
            return Err(Errno::EPERM);
        }
        let was_cached = self.cache_used(&st);
        st.d.flags = (st.d.flags & !(IFLAG_IMMUTABLE | IFLAG_APPEND | IFLAG_DAX)) | flags.bits();
        st.d.ctime = now();
        let mut tx = Tx::new();
        self.log_inode(ino, &mut st, &mut tx);
        self.commit(tx)?;
        if was_cached && !self.cache_used(&st) {
            // New opens bypass the kernel's page cache from now on: pages cached by
            // earlier opens must not outlive the change and go stale.
            self.invalidate_cached(ino, &(0..u64::MAX / BLOCK_SIZE));
        }
        Ok(())
    }
}
