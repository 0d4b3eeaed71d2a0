//! Extended attributes: user., trusted., security. and system. names stored
//! byte-exact in one xattr block per inode, rewritten whole through the journal.

use crate::acl::{Acl, ACL_ACCESS, ACL_DEFAULT};
use crate::commit::Tx;
use crate::error::{Errno, Result};
use crate::filesystem::DaxFs;
use crate::inode::{rlock, wlock, InodeState};
use crate::types::*;
use daxfs_format::*;

/// Largest value accepted (as the VFS: XATTR_SIZE_MAX).
const XATTR_SIZE_MAX: usize = 65536;

fn check_xattr_name(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return Err(Errno::EINVAL);
    }
    if name.len() > 255 {
        return Err(Errno::ERANGE);
    }
    let known = [&b"user."[..], b"trusted.", b"security.", b"system."];
    match known.iter().find(|p| name.starts_with(p)) {
        Some(p) if name.len() > p.len() => Ok(()),
        Some(_) => Err(Errno::EINVAL),
        None => Err(Errno::EOPNOTSUPP),
    }
}

impl DaxFs {
    /// `flags`: 0, libc::XATTR_CREATE or libc::XATTR_REPLACE.
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> Result<()> {
        self.change_xattr(ino, name, Some(value), flags)
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        self.change_xattr(ino, name, None, 0)
    }

    fn change_xattr(&self, ino: u64, name: &[u8], value: Option<&[u8]>, flags: i32) -> Result<()> {
        check_xattr_name(name)?;
        self.check_writable()?;
        if value.is_some_and(|v| v.len() > XATTR_SIZE_MAX) {
            return Err(Errno::E2BIG);
        }
        if flags & !(libc::XATTR_CREATE | libc::XATTR_REPLACE) != 0 {
            return Err(Errno::EINVAL);
        }
        let inode = self.inode(ino)?;
        let mut st = wlock(&inode.st);
        if st.dead {
            return Err(Errno::ENOENT);
        }
        st.refuse_if_pinned_by_flags()?;
        // user.* is for regular files and directories only (as the VFS).
        if name.starts_with(b"user.")
            && !matches!(st.kind(), Some(FileKind::File) | Some(FileKind::Dir))
        {
            return Err(Errno::EPERM);
        }
        // An access ACL sets the mode's permission bits; one the mode alone expresses
        // is not stored (as ext4: posix_acl_update_mode).
        let mut value = value;
        let mut new_mode = None;
        if let Some(v) = value {
            if name == ACL_ACCESS {
                let acl = Acl::parse(v)?;
                new_mode = Some((st.d.mode & !0o777) | acl.mode_bits());
                if acl.is_minimal() {
                    value = None;
                }
            } else if name == ACL_DEFAULT {
                Acl::parse(v)?;
                if !st.is_dir() {
                    return Err(Errno::EACCES);
                }
            }
        }
        let pos = st.xattrs.iter().position(|(n, _)| n == name);
        let mut list = st.xattrs.clone();
        match (value, pos) {
            (None, None) if new_mode.is_some() => {}
            (Some(_), Some(_)) if flags & libc::XATTR_CREATE != 0 => return Err(Errno::EEXIST),
            (Some(_), None) if flags & libc::XATTR_REPLACE != 0 => return Err(Errno::ENODATA),
            (None, None) => return Err(Errno::ENODATA),
            (Some(v), Some(i)) => list[i].1 = v.to_vec(),
            (Some(v), None) => list.push((name.to_vec(), v.to_vec())),
            (None, Some(i)) => {
                list.remove(i);
            }
        }
        let mut tx = Tx::new();
        self.store_xattrs(ino, &mut st, list, &mut tx)?;
        if let Some(m) = new_mode {
            st.d.mode = m;
        }
        st.d.ctime = now();
        self.log_inode(ino, &mut st, &mut tx);
        self.commit(tx)
    }

    /// Makes `list` the inode's xattrs: rewrites its xattr block (allocated on first
    /// use, released when the list empties) inside `tx`. The caller logs the inode.
    pub(crate) fn store_xattrs(
        &self,
        ino: u64,
        st: &mut InodeState,
        list: XattrList,
        tx: &mut Tx,
    ) -> Result<()> {
        let used: usize = list
            .iter()
            .map(|(n, v)| xattr_entry_size(n.len(), v.len()))
            .sum();
        if used > XATTR_SPACE {
            return Err(Errno::ENOSPC);
        }
        if list.is_empty() {
            if st.d.xattr_block != 0 {
                let b = st.d.xattr_block;
                self.release_blocks(b, 1, tx);
                st.d.xattr_block = 0;
                st.d.blocks = st.d.blocks.saturating_sub(1);
            }
        } else {
            let img = encode_xattr_block(ino, &list).map_err(|_| Errno::ENOSPC)?;
            if st.d.xattr_block == 0 {
                let (pblk, _) = self.alloc_blocks(self.geo.data_start, 1, false, tx)?;
                st.d.xattr_block = pblk;
                st.d.blocks += 1;
            }
            tx.txn.write(st.d.xattr_block * BLOCK_SIZE, &img);
        }
        st.xattrs = list;
        Ok(())
    }

    /// Whether directory `ino` has a default ACL: new inodes in it inherit that
    /// instead of having the creator's umask applied (the FUSE adapter applies the
    /// umask itself only when this is false).
    pub fn has_default_acl(&self, ino: u64) -> bool {
        self.inode(ino)
            .is_ok_and(|i| rlock(&i.st).xattrs.iter().any(|(n, _)| n == ACL_DEFAULT))
    }

    /// ACL inheritance for a new inode `st` created in directory `parent`
    /// (posix_acl_create): with a default ACL there, the inode's permission bits are
    /// masked by it, it gets the masked copy as its access ACL (unless the mode says it
    /// all) and, if a directory, the default ACL too. Symlinks inherit nothing.
    pub(crate) fn inherit_acls(
        &self,
        parent: &InodeState,
        ino: u64,
        st: &mut InodeState,
        tx: &mut Tx,
    ) -> Result<()> {
        if st.kind() == Some(FileKind::Symlink) {
            return Ok(());
        }
        let Some((_, def)) = parent.xattrs.iter().find(|(n, _)| n == ACL_DEFAULT) else {
            return Ok(());
        };
        // Validated when it was set; a damaged one is ignored rather than inherited.
        let Ok(acl) = Acl::parse(def) else {
            return Ok(());
        };
        let (access, bits) = acl.create_masq(st.d.mode & 0o777);
        st.d.mode = (st.d.mode & !0o777) | bits;
        let mut list = XattrList::new();
        if !access.is_minimal() {
            list.push((ACL_ACCESS.to_vec(), access.encode()));
        }
        if st.is_dir() {
            list.push((ACL_DEFAULT.to_vec(), def.clone()));
        }
        if list.is_empty() {
            return Ok(());
        }
        self.store_xattrs(ino, st, list, tx)
    }

    /// chmod of an inode with an access ACL: the ACL follows the new mode
    /// (posix_acl_chmod). `st.d.mode` already holds the new mode.
    pub(crate) fn chmod_acl(&self, ino: u64, st: &mut InodeState, tx: &mut Tx) -> Result<()> {
        let Some(i) = st.xattrs.iter().position(|(n, _)| n == ACL_ACCESS) else {
            return Ok(());
        };
        let Ok(mut acl) = Acl::parse(&st.xattrs[i].1) else {
            return Ok(());
        };
        acl.chmod(st.d.mode);
        let mut list = st.xattrs.clone();
        list[i].1 = acl.encode();
        self.store_xattrs(ino, st, list, tx)
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        check_xattr_name(name)?;
        let inode = self.inode(ino)?;
        let st = rlock(&inode.st);
        if st.dead {
            return Err(Errno::ENOENT);
        }
        st.xattrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or(Errno::ENODATA)
    }

    /// listxattr(2) as `cred` sees it: trusted.* names are visible to root only
    /// (the VFS checks get/set of trusted.*, but listing is the filesystem's job).
    pub fn listxattr_as(&self, ino: u64, cred: &Cred) -> Result<Vec<u8>> {
        let all = self.listxattr(ino)?;
        if cred.uid == 0 {
            return Ok(all);
        }
        let mut out = Vec::with_capacity(all.len());
        for name in all.split(|&c| c == 0).filter(|n| !n.is_empty()) {
            if !name.starts_with(b"trusted.") {
                out.extend_from_slice(name);
                out.push(0);
            }
        }
        Ok(out)
    }

    /// NUL-separated names, as listxattr(2).
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        let st = rlock(&inode.st);
        if st.dead {
            return Err(Errno::ENOENT);
        }
        let mut out = Vec::new();
        for (n, _) in &st.xattrs {
            out.extend_from_slice(n);
            out.push(0);
        }
        Ok(out)
    }
}
