//! Namespace operations: lookup, create (every node type), link, unlink, rmdir,
//! rename with its flags, readdir. Each change is one transaction covering the
//! directory entries, the inodes and the blocks involved.

use crate::break_layouts::{would_wait, Wait};
use crate::commit::Tx;
use crate::dir::DirSlot;
use crate::error::{Errno, Result};
use crate::filesystem::{DaxFs, MAX_LINKS};
use crate::inode::{lock, rlock, wlock, Inode, InodeState};
use crate::types::*;
use daxfs_format::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// Unlinked inodes that something still references (orphans in memory) and the frees
/// of them, for [`DaxFs::wait_for_orphan_free`]: under FUSE the kernel sends the RELEASE
/// of a closed file and the FORGET of an unlinked inode asynchronously, so they can
/// arrive after the next request that needs the space they free (docs/DESIGN.md,
/// "Inode lifetimes").
#[derive(Default)]
pub(crate) struct OrphanFrees {
    state: Mutex<OrphanState>,
    freed: Condvar,
    /// Orphans freed so far: the token of [`DaxFs::orphan_frees`]. An atomic so that
    /// taking the token, which every allocating request does, takes no lock; it only
    /// changes with `state` held, so a check under the lock sees it consistent.
    frees: AtomicU64,
}

#[derive(Default)]
struct OrphanState {
    /// Orphans not yet freed.
    live: u64,
    /// Bumped whenever the set of orphans changes (one made or one freed).
    generation: u64,
    /// The generation at which a wait timed out: those orphans are held by someone
    /// (an open file, a cwd), so until the set changes nobody waits for them again.
    stale: Option<u64>,
}

impl OrphanFrees {
    fn made(&self) {
        let mut s = lock(&self.state);
        s.live += 1;
        s.generation += 1;
    }

    fn freed(&self) {
        let mut s = lock(&self.state);
        s.live = s.live.saturating_sub(1);
        self.frees.fetch_add(1, Ordering::SeqCst);
        s.generation += 1;
        drop(s);
        self.freed.notify_all();
    }
}

/// Longest symlink target (PATH_MAX − 1).
pub const SYMLINK_MAX: usize = 4095;

pub(crate) fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(Errno::EINVAL);
    }
    if name == b"." || name == b".." {
        return Err(Errno::EEXIST);
    }
    Ok(())
}

/// Write locks on a set of inodes, taken in inode-number order.
struct Locked<'a> {
    guards: BTreeMap<u64, RwLockWriteGuard<'a, InodeState>>,
}

impl<'a> Locked<'a> {
    fn new(inodes: &'a [&'a Arc<Inode>]) -> Result<Locked<'a>> {
        let mut sorted: Vec<&Arc<Inode>> = inodes.to_vec();
        sorted.sort_by_key(|i| i.ino);
        sorted.dedup_by_key(|i| i.ino);
        let mut guards = BTreeMap::new();
        for i in sorted {
            let g = wlock(&i.st);
            if g.dead {
                return Err(Errno::ENOENT);
            }
            guards.insert(i.ino, g);
        }
        Ok(Locked { guards })
    }
    /// The state of an inode passed to `new` (any other is a caller bug: EIO).
    fn get(&mut self, ino: u64) -> Result<&mut InodeState> {
        self.guards
            .get_mut(&ino)
            .map(|g| &mut **g)
            .ok_or(Errno::EIO)
    }
}

/// Whether an open handle or the kernel still references `inode` (see
/// [`DaxFs::remember`]).
fn referenced(inode: &Inode) -> bool {
    inode.opens.load(Ordering::SeqCst) != 0 || inode.lookups.load(Ordering::SeqCst) != 0
}

impl DaxFs {
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let dir = self.inode(parent)?;
        let ino = {
            let st = rlock(&dir.st);
            if st.dead {
                return Err(Errno::ENOENT);
            }
            // An answer (an entry, or ENOENT) must not reveal a namespace change that is
            // still being committed; see `getattr`.
            self.settle(&dir);
            let idx = st.dir.as_ref().ok_or(Errno::ENOTDIR)?;
            if name == b"." {
                parent
            } else if name == b".." {
                st.d.parent.max(ROOT_INO)
            } else {
                idx.get(name).ok_or(Errno::ENOENT)?.ino
            }
        };
        self.getattr(ino)
    }

    /// Adds a directory entry (allocating a directory block when none has room).
    pub(crate) fn dir_add(
        &self,
        dino: u64,
        dst: &mut InodeState,
        name: &[u8],
        ino: u64,
        ftype: u8,
        tx: &mut Tx,
    ) -> Result<()> {
        let (block, slot) = match dst
            .dir
            .as_ref()
            .ok_or(Errno::ENOTDIR)?
            .find_space(name.len())
        {
            Some(x) => x,
            None => {
                let index = dst.d.size / BLOCK_SIZE;
                if index >= u32::MAX as u64 {
                    return Err(Errno::ENOSPC);
                }
                let goal = dst
                    .ext
                    .last()
                    .map(|e| e.pblk + e.len as u64)
                    .unwrap_or(self.geo.data_start);
                let (pblk, _) = self.alloc_blocks(goal, 1, true, tx)?;
                // The slot comes second: a new extent block is a change to the
                // directory that an aborted transaction could not undo.
                if let Err(e) = self.reserve_slots(dino, dst, 1, tx) {
                    self.unalloc_last(tx);
                    return Err(e);
                }
                tx.txn
                    .write(pblk * BLOCK_SIZE, &encode_dir_block_header(dino, index));
                if !dst.ext.insert(Extent {
                    lblk: index,
                    pblk,
                    len: 1,
                }) {
                    return Err(Errno::EIO);
                }
                dst.d.size += BLOCK_SIZE;
                dst.d.blocks += 1;
                let Some(idx) = dst.dir.as_mut() else {
                    return Err(Errno::ENOTDIR);
                };
                (idx.add_block(), 1)
            }
        };
        let e = dst.ext.find(block as u64).ok_or(Errno::EIO)?;
        let pblk = e.pblk + (block as u64 - e.lblk);
        tx.txn.write(
            pblk * BLOCK_SIZE + slot as u64 * DIR_SLOT as u64,
            &encode_dirent(ino, ftype, name),
        );
        if let Some(idx) = dst.dir.as_mut() {
            idx.insert(
                name,
                DirSlot {
                    ino,
                    ftype,
                    block,
                    slot,
                },
            );
        }
        Ok(())
    }

    /// Removes a directory entry; returns what it named.
    pub(crate) fn dir_remove(
        &self,
        dst: &mut InodeState,
        name: &[u8],
        tx: &mut Tx,
    ) -> Result<DirSlot> {
        let idx = dst.dir.as_mut().ok_or(Errno::ENOTDIR)?;
        let (e, nslots) = idx.remove(name).ok_or(Errno::ENOENT)?;
        let ex = dst.ext.find(e.block as u64).ok_or(Errno::EIO)?;
        let pblk = ex.pblk + (e.block as u64 - ex.lblk);
        tx.txn.write(
            pblk * BLOCK_SIZE + e.slot as u64 * DIR_SLOT as u64,
            &vec![0u8; nslots * DIR_SLOT],
        );
        Ok(e)
    }

    /// Rewrites the entry `name` of a directory to name another inode.
    fn dir_retarget(
        &self,
        dst: &mut InodeState,
        name: &[u8],
        ino: u64,
        ftype: u8,
        tx: &mut Tx,
    ) -> Result<()> {
        let idx = dst.dir.as_mut().ok_or(Errno::ENOTDIR)?;
        let (mut e, _) = idx.remove(name).ok_or(Errno::ENOENT)?;
        e.ino = ino;
        e.ftype = ftype;
        idx.insert(name, e);
        let ex = dst.ext.find(e.block as u64).ok_or(Errno::EIO)?;
        let pblk = ex.pblk + (e.block as u64 - ex.lblk);
        tx.txn.write(
            pblk * BLOCK_SIZE + e.slot as u64 * DIR_SLOT as u64,
            &encode_dirent(ino, ftype, name),
        );
        Ok(())
    }

    /// Creates an inode of any type under `parent`; `init` fills in its content
    /// (symlink target) inside the same transaction.
    fn create_node(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u64,
        cred: &Cred,
        target: Option<&[u8]>,
    ) -> Result<Attr> {
        self.check_writable()?;
        check_name(name)?;
        let kind = FileKind::from_mode(mode).ok_or(Errno::EINVAL)?;
        let _ns = lock(&self.ns);
        let pdir = self.inode(parent)?;
        let mut pst = wlock(&pdir.st);
        if pst.dead {
            return Err(Errno::ENOENT);
        }
        let idx = pst.dir.as_ref().ok_or(Errno::ENOTDIR)?;
        if pst.d.nlink == 0 {
            return Err(Errno::ENOENT);
        }
        if idx.get(name).is_some() {
            return Err(Errno::EEXIST);
        }
        pst.refuse_new_entry()?;
        if kind == FileKind::Dir && pst.d.nlink >= MAX_LINKS {
            return Err(Errno::EMLINK);
        }
        let inode = self.new_inode(mode, cred, &pst, rdev)?;
        let ino = inode.ino;
        let mut tx = Tx::new();
        let mut st = wlock(&inode.st);
        if kind == FileKind::Dir {
            st.d.parent = parent;
        }
        let res = (|| -> Result<()> {
            if let Some(t) = target {
                self.store_symlink(ino, &mut st, t, &mut tx)?;
            }
            self.inherit_acls(&pst, ino, &mut st, &mut tx)?;
            self.dir_add(parent, &mut pst, name, ino, kind.dtype(), &mut tx)?;
            Ok(())
        })();
        if let Err(e) = res {
            // The new inode's blocks go back; the parent may have gained a metadata
            // block: commit that consistent state rather than forget it.
            let held: Vec<Extent> = st.ext.iter().collect();
            for x in held {
                self.release_blocks(x.pblk, x.len as u64, &mut tx);
            }
            for b in st.ext.extent_blocks().to_vec() {
                self.release_blocks(b, 1, &mut tx);
            }
            if st.d.xattr_block != 0 {
                self.release_blocks(st.d.xattr_block, 1, &mut tx);
            }
            drop(st);
            let e = self.fail_op(parent, &mut pst, tx, e);
            self.unget_inode(ino);
            return Err(e);
        }
        let t = st.d.ctime;
        if kind == FileKind::Dir {
            pst.d.nlink += 1;
        }
        pst.d.mtime = t;
        pst.d.ctime = t;
        self.log_inode(ino, &mut st, &mut tx);
        self.log_inode(parent, &mut pst, &mut tx);
        wlock(&self.inodes).insert(ino, inode.clone());
        let attr = self.attr_of(ino, &st);
        // Queued under the locks, durable after them (group commit: see commit.rs).
        let ticket = self.enqueue(tx);
        self.mark_pending(&ticket, &[&pdir, &inode]);
        drop((st, pst, _ns));
        if let Err(e) = self.wait(ticket) {
            wlock(&self.inodes).remove(&ino);
            return Err(e);
        }
        Ok(attr)
    }

    /// Writes a symlink target into a data block through the journal.
    fn store_symlink(
        &self,
        ino: u64,
        st: &mut InodeState,
        target: &[u8],
        tx: &mut Tx,
    ) -> Result<()> {
        if target.len() > SYMLINK_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        self.reserve_slots(ino, st, 1, tx)?;
        let (pblk, _) = self.alloc_blocks(self.geo.data_start, 1, true, tx)?;
        tx.txn.write(pblk * BLOCK_SIZE, target);
        st.ext.insert(Extent {
            lblk: 0,
            pblk,
            len: 1,
        });
        st.d.size = target.len() as u64;
        st.d.blocks += 1;
        Ok(())
    }

    /// Creates a node of any type. `mode` includes the S_IFMT bits (umask applied).
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        cred: &Cred,
    ) -> Result<Attr> {
        let mode = if mode & libc::S_IFMT == 0 {
            mode | libc::S_IFREG
        } else {
            mode
        };
        match FileKind::from_mode(mode) {
            Some(FileKind::Dir) | Some(FileKind::Symlink) | None => return Err(Errno::EINVAL),
            _ => {}
        }
        let dev = match FileKind::from_mode(mode) {
            Some(FileKind::CharDev) | Some(FileKind::BlockDev) => rdev as u64,
            _ => 0,
        };
        self.create_node(parent, name, mode, dev, cred, None)
    }

    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, cred: &Cred) -> Result<Attr> {
        self.create_node(parent, name, libc::S_IFDIR | (mode & 0o7777), 0, cred, None)
    }

    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8], cred: &Cred) -> Result<Attr> {
        self.create_node(parent, name, libc::S_IFLNK | 0o777, 0, cred, Some(target))
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let view = self.read_guard()?;
        let inode = self.inode(ino)?;
        let st = rlock(&inode.st);
        if st.dead {
            return Err(Errno::ENOENT);
        }
        if st.kind() != Some(FileKind::Symlink) {
            return Err(Errno::EINVAL);
        }
        // The target is read from the device: it must have been written there.
        self.settle(&inode);
        let e = st.ext.find(0).ok_or(Errno::EIO)?;
        let len = (st.d.size as usize).min(SYMLINK_MAX);
        let mut out = vec![0u8; len];
        self.dev.read(e.pblk * BLOCK_SIZE, &mut out);
        view.check()?;
        Ok(out)
    }

    /// Creates (or without O_EXCL opens an existing) regular file and opens it.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
        cred: &Cred,
    ) -> Result<Attr> {
        self.create_waiting(parent, name, mode, flags, cred, Wait::Block)
    }

    /// [`create`](Self::create) that never sleeps on a pin: None when the O_TRUNC of an
    /// existing file would have to wait for one (nothing changed).
    pub fn try_create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
        cred: &Cred,
    ) -> Option<Result<Attr>> {
        would_wait(self.create_waiting(parent, name, mode, flags, cred, Wait::Never))
    }

    fn create_waiting(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
        cred: &Cred,
        wait: Wait,
    ) -> Result<Attr> {
        let attr =
            match self.create_node(parent, name, libc::S_IFREG | (mode & 0o7777), 0, cred, None) {
                Ok(a) => a,
                Err(e) if e == Errno::EEXIST && flags & libc::O_EXCL == 0 => {
                    let a = self.lookup(parent, name)?;
                    if a.kind == FileKind::Dir {
                        return Err(Errno::EISDIR);
                    }
                    self.open_waiting(a.ino, flags, wait)?;
                    return self.getattr(a.ino);
                }
                Err(e) => return Err(e),
            };
        self.open(attr.ino, flags & !libc::O_TRUNC)?;
        Ok(attr)
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> Result<Attr> {
        self.check_writable()?;
        check_name(newname)?;
        let _ns = lock(&self.ns);
        let pdir = self.inode(newparent)?;
        let inode = self.inode(ino)?;
        let set = [&pdir, &inode];
        let mut l = Locked::new(&set)?;
        {
            let st = l.get(ino)?;
            if st.is_dir() {
                return Err(Errno::EPERM);
            }
            if st.d.nlink >= MAX_LINKS {
                return Err(Errno::EMLINK);
            }
            if st.d.nlink == 0 {
                return Err(Errno::ENOENT);
            }
        }
        {
            let p = l.get(newparent)?;
            let idx = p.dir.as_ref().ok_or(Errno::ENOTDIR)?;
            if idx.get(newname).is_some() {
                return Err(Errno::EEXIST);
            }
            if p.d.nlink == 0 {
                return Err(Errno::ENOENT);
            }
            p.refuse_new_entry()?;
        }
        // vfs_link: no new name for an immutable or append-only inode.
        l.get(ino)?.refuse_if_pinned_by_flags()?;
        let ftype = l
            .get(ino)?
            .kind()
            .map(|k| k.dtype())
            .unwrap_or(libc::DT_REG);
        let mut tx = Tx::new();
        if let Err(e) = self.dir_add(newparent, l.get(newparent)?, newname, ino, ftype, &mut tx) {
            return Err(self.fail_op(newparent, l.get(newparent)?, tx, e));
        }
        let t = now();
        {
            let p = l.get(newparent)?;
            p.d.mtime = t;
            p.d.ctime = t;
            self.log_inode(newparent, p, &mut tx);
        }
        let st = l.get(ino)?;
        st.d.nlink += 1;
        st.d.ctime = t;
        self.log_inode(ino, st, &mut tx);
        let attr = self.attr_of(ino, st);
        let ticket = self.enqueue(tx);
        self.mark_pending(&ticket, &[&pdir, &inode]);
        drop((l, _ns));
        self.wait(ticket)?;
        Ok(attr)
    }

    /// Drops one link of `child` (whose entry was removed): frees it when it was the
    /// last link and nothing references it (no open handle, no kernel lookup), else
    /// marks it an orphan, freed by the last [`release`](Self::release) or
    /// [`forget`](Self::forget), or by the next mount after a crash.
    fn drop_link(
        &self,
        child: &Inode,
        st: &mut InodeState,
        tx: &mut Tx,
        t: Timespec,
    ) -> Result<()> {
        if st.is_dir() {
            st.d.nlink = 0;
        } else {
            st.d.nlink = st.d.nlink.saturating_sub(1);
        }
        st.d.ctime = t;
        if st.d.nlink == 0 {
            if !referenced(child) {
                return self.free_inode(child, st, tx);
            }
            st.d.flags |= IFLAG_ORPHAN;
            self.orphan_frees.made();
        }
        self.log_inode(child.ino, st, tx);
        Ok(())
    }

    fn remove_entry(&self, parent: u64, name: &[u8], want_dir: bool) -> Result<()> {
        self.check_writable()?;
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if name == b"." {
            return Err(Errno::EINVAL);
        }
        if name == b".." {
            return Err(Errno::ENOTEMPTY);
        }
        let _ns = lock(&self.ns);
        let pdir = self.inode(parent)?;
        let child_ino = {
            let p = rlock(&pdir.st);
            p.dir
                .as_ref()
                .ok_or(Errno::ENOTDIR)?
                .get(name)
                .ok_or(Errno::ENOENT)?
                .ino
        };
        let child = self.inode(child_ino)?;
        let set = [&pdir, &child];
        let mut l = Locked::new(&set)?;
        // may_delete: the flags of the directory and of the victim come before its type.
        l.get(parent)?.refuse_removed_entry()?;
        l.get(child_ino)?.refuse_if_pinned_by_flags()?;
        {
            let c = l.get(child_ino)?;
            match (want_dir, c.is_dir()) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if c.dir.as_ref().is_some_and(|d| !d.is_empty()) => {
                    return Err(Errno::ENOTEMPTY);
                }
                _ => {}
            }
        }
        let mut tx = Tx::new();
        let t = now();
        {
            let p = l.get(parent)?;
            self.dir_remove(p, name, &mut tx)?;
            if want_dir {
                p.d.nlink = p.d.nlink.saturating_sub(1);
            }
            p.d.mtime = t;
            p.d.ctime = t;
            self.log_inode(parent, p, &mut tx);
        }
        if let Err(e) = self.drop_link(&child, l.get(child_ino)?, &mut tx, t) {
            // The entry is gone from memory but not from media: stop accepting changes
            // until a remount reloads the committed state.
            drop(l);
            self.abort(tx);
            self.failed.store(true, Ordering::SeqCst);
            return Err(e);
        }
        let ticket = self.enqueue(tx);
        self.mark_pending(&ticket, &[&pdir, &child]);
        drop((l, _ns));
        self.wait(ticket)
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.remove_entry(parent, name, false)
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.remove_entry(parent, name, true)
    }

    /// True if directory `anc` is `ino` or one of its ancestors.
    fn is_ancestor(&self, anc: u64, mut ino: u64) -> bool {
        for _ in 0..self.geo.inode_count {
            if ino == anc {
                return true;
            }
            if ino == ROOT_INO {
                return false;
            }
            let Ok(i) = self.inode(ino) else { return false };
            let p = rlock(&i.st).d.parent;
            if p == 0 || p == ino {
                return false;
            }
            ino = p;
        }
        false
    }

    /// `flags`: 0, libc::RENAME_NOREPLACE or libc::RENAME_EXCHANGE.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> Result<()> {
        self.check_writable()?;
        if name.len() > NAME_MAX || newname.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        if flags & !(libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE) != 0 || (exchange && noreplace)
        {
            return Err(Errno::EINVAL);
        }
        for n in [name, newname] {
            if n == b"." || n == b".." {
                return Err(if noreplace || exchange {
                    Errno::EINVAL
                } else {
                    Errno::EBUSY
                });
            }
            check_name(n)?;
        }
        let _ns = lock(&self.ns);
        let sp = self.inode(parent)?;
        let dp = self.inode(newparent)?;
        let (src_ino, src_type) = {
            let p = rlock(&sp.st);
            let e = p
                .dir
                .as_ref()
                .ok_or(Errno::ENOTDIR)?
                .get(name)
                .ok_or(Errno::ENOENT)?;
            (e.ino, e.ftype)
        };
        let dst = {
            let p = rlock(&dp.st);
            p.dir.as_ref().ok_or(Errno::ENOTDIR)?.get(newname)
        };
        if exchange && dst.is_none() {
            return Err(Errno::ENOENT);
        }
        if let Some(d) = dst {
            if noreplace {
                return Err(Errno::EEXIST);
            }
            if d.ino == src_ino {
                // Two links to one inode: rename does nothing.
                return Ok(());
            }
        }
        let src_is_dir = src_type == libc::DT_DIR;
        let dst_is_dir = dst.is_some_and(|d| d.ftype == libc::DT_DIR);
        // A directory may not move below itself.
        if src_is_dir && parent != newparent && self.is_ancestor(src_ino, newparent) {
            return Err(Errno::EINVAL);
        }
        if exchange
            && dst_is_dir
            && parent != newparent
            && self.is_ancestor(dst.map(|d| d.ino).unwrap_or(0), parent)
        {
            return Err(Errno::EINVAL);
        }
        let src = self.inode(src_ino)?;
        let dsti = match dst {
            Some(d) => Some(self.inode(d.ino)?),
            None => None,
        };
        let mut set: Vec<&Arc<Inode>> = vec![&sp, &dp, &src];
        if let Some(d) = &dsti {
            set.push(d);
        }
        let mut l = Locked::new(&set)?;
        // A removed directory (still open somewhere) takes no new entries.
        if l.get(newparent)?.d.nlink == 0 {
            return Err(Errno::ENOENT);
        }
        // vfs_rename: may_delete of the source; of the target when there is one (an
        // exchange removes both), else may_create in the new directory.
        l.get(parent)?.refuse_removed_entry()?;
        l.get(src_ino)?.refuse_if_pinned_by_flags()?;
        match dst {
            Some(d) => {
                l.get(newparent)?.refuse_removed_entry()?;
                l.get(d.ino)?.refuse_if_pinned_by_flags()?;
            }
            None => l.get(newparent)?.refuse_new_entry()?,
        }
        if !exchange {
            if let Some(d) = dst {
                match (src_is_dir, dst_is_dir) {
                    (true, false) => return Err(Errno::ENOTDIR),
                    (false, true) => return Err(Errno::EISDIR),
                    (true, true) if l.get(d.ino)?.dir.as_ref().is_some_and(|x| !x.is_empty()) => {
                        return Err(Errno::ENOTEMPTY);
                    }
                    _ => {}
                }
            }
        }
        if src_is_dir
            && !dst_is_dir
            && parent != newparent
            && l.get(newparent)?.d.nlink >= MAX_LINKS
        {
            return Err(Errno::EMLINK);
        }
        let t = now();
        let mut tx = Tx::new();
        // A move to a new name needs a new entry, the one step that can fail for lack
        // of space; dir_add changes nothing when it fails, so do it first and leave
        // the filesystem writable on ENOSPC.
        if !exchange && dst.is_none() {
            let r = self.dir_add(
                newparent,
                l.get(newparent)?,
                newname,
                src_ino,
                src_type,
                &mut tx,
            );
            if let Err(e) = r {
                drop(l);
                self.abort(tx);
                return Err(e);
            }
        }
        let res = (|| -> Result<()> {
            if exchange {
                let d = dst.ok_or(Errno::ENOENT)?;
                self.dir_retarget(l.get(parent)?, name, d.ino, d.ftype, &mut tx)?;
                self.dir_retarget(l.get(newparent)?, newname, src_ino, src_type, &mut tx)?;
                if parent != newparent {
                    if src_is_dir {
                        l.get(src_ino)?.d.parent = newparent;
                    }
                    if dst_is_dir {
                        l.get(d.ino)?.d.parent = parent;
                    }
                    if src_is_dir != dst_is_dir {
                        let (gain, lose) = if src_is_dir {
                            (newparent, parent)
                        } else {
                            (parent, newparent)
                        };
                        l.get(gain)?.d.nlink += 1;
                        let lp = l.get(lose)?;
                        lp.d.nlink = lp.d.nlink.saturating_sub(1);
                    }
                }
                l.get(d.ino)?.d.ctime = t;
            } else {
                // The step that can fail for lack of space comes first.
                if let Some(d) = dst {
                    self.dir_retarget(l.get(newparent)?, newname, src_ino, src_type, &mut tx)?;
                    let di = dsti.as_ref().ok_or(Errno::EIO)?;
                    if dst_is_dir {
                        // The replaced directory's ".." link to newparent goes away.
                        let np = l.get(newparent)?;
                        np.d.nlink = np.d.nlink.saturating_sub(1);
                    }
                    self.drop_link(di, l.get(d.ino)?, &mut tx, t)?;
                }
                self.dir_remove(l.get(parent)?, name, &mut tx)?;
                if src_is_dir && parent != newparent {
                    l.get(src_ino)?.d.parent = newparent;
                    let op = l.get(parent)?;
                    op.d.nlink = op.d.nlink.saturating_sub(1);
                    l.get(newparent)?.d.nlink += 1;
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            if e == Errno::ENOSPC {
                // Only dir_add can run out of space, and it runs before any entry
                // changes: commit the metadata block it may have added.
                return Err(self.fail_op(newparent, l.get(newparent)?, tx, e));
            }
            drop(l);
            self.abort(tx);
            // The in-memory directories may be half-changed and nothing was committed:
            // the only safe course is to stop accepting changes until a remount.
            self.failed.store(true, Ordering::SeqCst);
            return Err(e);
        }
        l.get(src_ino)?.d.ctime = t;
        for p in [parent, newparent] {
            let st = l.get(p)?;
            st.d.mtime = t;
            st.d.ctime = t;
        }
        let mut logged = Vec::new();
        for ino in [parent, newparent, src_ino]
            .into_iter()
            .chain(dst.map(|d| d.ino))
        {
            if logged.contains(&ino) {
                continue;
            }
            logged.push(ino);
            let st = l.get(ino)?;
            if !st.dead {
                self.log_inode(ino, st, &mut tx);
            }
        }
        let ticket = self.enqueue(tx);
        self.mark_pending(&ticket, &set);
        drop((l, _ns));
        self.wait(ticket)
    }

    /// Opens an inode (counts open handles: an unlinked file lives until the last
    /// release). `flags` are open(2) flags; O_TRUNC truncates.
    pub fn open(&self, ino: u64, flags: i32) -> Result<()> {
        self.open_waiting(ino, flags, Wait::Block)
    }

    /// [`open`](Self::open) that never sleeps on a pin: None when its O_TRUNC would have
    /// to wait for one (nothing changed, the file is not open).
    pub fn try_open(&self, ino: u64, flags: i32) -> Option<Result<()>> {
        would_wait(self.open_waiting(ino, flags, Wait::Never))
    }

    fn open_waiting(&self, ino: u64, flags: i32, wait: Wait) -> Result<()> {
        let inode = self.inode(ino)?;
        {
            let st = rlock(&inode.st);
            if st.dead {
                return Err(Errno::ENOENT);
            }
            self.settle(&inode);
            let acc = flags & libc::O_ACCMODE;
            if st.is_dir() && acc != libc::O_RDONLY {
                return Err(Errno::EISDIR);
            }
            if acc != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
                self.check_writable()?;
            }
            st.refuse_open(flags)?;
        }
        inode.opens.fetch_add(1, Ordering::SeqCst);
        if flags & libc::O_TRUNC != 0 && rlock(&inode.st).kind() == Some(FileKind::File) {
            let c = SetAttr {
                size: Some(0),
                ..Default::default()
            };
            if let Err(e) = self.setattr_waiting(ino, &Cred::root(), &c, wait) {
                inode.opens.fetch_sub(1, Ordering::SeqCst);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Drops one open handle; the last release of an unlinked inode the kernel no
    /// longer references frees it.
    pub fn release(&self, ino: u64) -> Result<()> {
        let Ok(inode) = self.inode(ino) else {
            return Ok(());
        };
        let prev = inode.opens.fetch_sub(1, Ordering::SeqCst);
        if prev == 0 {
            inode.opens.store(0, Ordering::SeqCst);
            return Ok(());
        }
        if prev == 1 {
            self.free_if_unreferenced(&inode)?;
        }
        Ok(())
    }

    /// Counts one kernel reference to `ino`: called by a kernel adapter for every entry
    /// it hands to the kernel (FUSE: the replies to lookup, create, mknod, mkdir,
    /// symlink, link and each readdirplus entry but "." and ".."), before the reply goes
    /// out. While an inode has such references, removing its last link keeps it alive
    /// (nlink 0: stat, getattr and open handles keep working) until [`forget`](Self::forget)
    /// drops them. Library users that never call this are unaffected: an inode without
    /// kernel references is freed as soon as its last link and handle are gone.
    ///
    /// ENOENT when the inode no longer exists (removed after the lookup that found it):
    /// the adapter must then not hand out the entry.
    pub fn remember(&self, ino: u64) -> Result<()> {
        let inode = self.inode(ino)?;
        // The state lock orders this against drop_link's "is it referenced?" check.
        let st = rlock(&inode.st);
        if st.dead {
            return Err(Errno::ENOENT);
        }
        inode.lookups.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Drops `n` kernel references to `ino` (FUSE forget / batch_forget). The last one
    /// frees an unlinked inode that has no open handle.
    pub fn forget(&self, ino: u64, n: u64) -> Result<()> {
        let Ok(inode) = self.inode(ino) else {
            return Ok(());
        };
        let sub = |c: u64| Some(c.saturating_sub(n));
        // Never fails: the closure always returns Some.
        let prev = inode
            .lookups
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, sub)
            .unwrap_or(0);
        let left = prev.saturating_sub(n);
        if left == 0 {
            self.free_if_unreferenced(&inode)?;
        }
        Ok(())
    }

    /// Frees `inode` if it is unlinked and nothing references it any more.
    fn free_if_unreferenced(&self, inode: &Inode) -> Result<()> {
        let _ns = lock(&self.ns);
        let mut st = wlock(&inode.st);
        if st.dead || st.d.nlink != 0 || referenced(inode) || self.opts.read_only {
            return Ok(());
        }
        let mut tx = Tx::new();
        self.free_inode(inode, &mut st, &mut tx)?;
        let ticket = self.enqueue(tx);
        drop((st, _ns));
        self.wait(ticket)?;
        // The commit returned the blocks to the allocator: a request that found no
        // space may find it now.
        self.orphan_frees.freed();
        Ok(())
    }

    /// A token for [`wait_for_orphan_free`](Self::wait_for_orphan_free): the number of
    /// orphans freed so far. Take it before the operation that may fail with ENOSPC.
    pub fn orphan_frees(&self) -> u64 {
        self.orphan_frees.frees.load(Ordering::SeqCst)
    }

    /// Whether an operation that failed with ENOSPC after `token` was taken might
    /// succeed if retried after [`wait_for_orphan_free`](Self::wait_for_orphan_free):
    /// an orphan was freed since, or orphans are left that nobody found held yet.
    pub fn orphan_free_may_come(&self, token: u64) -> bool {
        let s = lock(&self.orphan_frees.state);
        self.orphan_frees.frees.load(Ordering::SeqCst) != token
            || ((s.live > 0 || self.gate.holding()) && s.stale != Some(s.generation))
    }

    /// Waits at most `timeout`, holding no lock of the filesystem, until an orphan (an
    /// unlinked inode still referenced by an open handle or the kernel) has been freed
    /// since `token` was taken ([`orphan_frees`](Self::orphan_frees)), and returns
    /// whether one was: its blocks are free again and an operation that failed with
    /// ENOSPC is worth retrying. The kernel adapter's answer to the kernel sending the
    /// RELEASE and FORGET that free a removed file asynchronously (as ext4 retries an
    /// allocation after forcing the journal commit that frees blocks). Returns false at
    /// once when there is no orphan, or only orphans a previous wait already found
    /// held (an unlinked file some process keeps open): a timeout marks the current
    /// set of orphans so, so a full device with such a file answers ENOSPC without
    /// delay until an orphan is made or freed.
    pub fn wait_for_orphan_free(&self, token: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = lock(&self.orphan_frees.state);
        loop {
            if self.orphan_frees.frees.load(Ordering::SeqCst) != token {
                return true;
            }
            // Frees held back for follower hosts (`host_gate.rs`) come back when the
            // followers catch up or go silent: nobody signals that, so poll them once
            // per heartbeat period.
            let gated = self.gate.holding();
            if gated {
                drop(s);
                let drained = self.drain_gate(&mut lock(&self.space), true);
                s = lock(&self.orphan_frees.state);
                if drained {
                    return true;
                }
            }
            if (s.live == 0 && !gated) || s.stale == Some(s.generation) {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                s.stale = Some(s.generation);
                return false;
            }
            let nap = if gated {
                (deadline - now).min(self.opts.heartbeat)
            } else {
                deadline - now
            };
            s = match self.orphan_frees.freed.wait_timeout(s, nap) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Frees every unlinked inode still in memory, whatever references it: called at
    /// shutdown, when no kernel and no handle can reach them any more. A failure leaves
    /// the inode an orphan on media, which the next mount reclaims.
    pub(crate) fn reclaim_orphans(&self) {
        if self.opts.read_only || self.failed.load(Ordering::SeqCst) {
            return;
        }
        let all: Vec<Arc<Inode>> = rlock(&self.inodes).values().cloned().collect();
        for inode in all {
            let _ns = lock(&self.ns);
            let mut st = wlock(&inode.st);
            if st.dead || st.d.nlink != 0 {
                continue;
            }
            let mut tx = Tx::new();
            if self.free_inode(&inode, &mut st, &mut tx).is_err() {
                drop(st);
                self.abort(tx);
                continue;
            }
            drop(st);
            let _ = self.commit(tx);
        }
    }

    /// Lists entries from cookie `offset` (0 = start; "." and ".." come first); `f`
    /// returns false when its buffer is full (that entry is then not consumed).
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        mut f: impl FnMut(DirEntry) -> bool,
    ) -> Result<()> {
        let inode = self.inode(ino)?;
        let st = rlock(&inode.st);
        if st.dead {
            return Ok(());
        }
        if st.dir.is_none() {
            return Err(Errno::ENOTDIR);
        }
        // Entries are read from the device: changes queued by namespace operations that
        // already released the directory must have been written there.
        self.settle(&inode);
        let mut off = offset;
        if off == 0 {
            if !f(DirEntry {
                ino,
                kind: FileKind::Dir,
                name: b".".to_vec(),
                next_offset: 1,
            }) {
                return Ok(());
            }
            off = 1;
        }
        if off == 1 {
            let p = st.d.parent.max(ROOT_INO);
            if !f(DirEntry {
                ino: p,
                kind: FileKind::Dir,
                name: b"..".to_vec(),
                next_offset: 2,
            }) {
                return Ok(());
            }
            off = 2;
        }
        let mut pos = off - 2;
        let nblocks = st.d.size / BLOCK_SIZE;
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        while pos / DIR_SLOTS_PER_BLOCK as u64 <= nblocks.saturating_sub(1) && nblocks > 0 {
            let b = pos / DIR_SLOTS_PER_BLOCK as u64;
            let mut s = (pos % DIR_SLOTS_PER_BLOCK as u64) as usize;
            if s == 0 {
                s = 1;
            }
            let e = st.ext.find(b).ok_or(Errno::EIO)?;
            self.dev
                .read((e.pblk + (b - e.lblk)) * BLOCK_SIZE, &mut buf);
            while s < DIR_SLOTS_PER_BLOCK {
                match decode_dirent(&buf, s) {
                    Ok(Some(de)) => {
                        let next = 2 + b * DIR_SLOTS_PER_BLOCK as u64 + (s + de.nslots) as u64;
                        let kind = FileKind::from_dtype(de.ftype).unwrap_or(FileKind::File);
                        if !f(DirEntry {
                            ino: de.ino,
                            kind,
                            name: de.name.to_vec(),
                            next_offset: next,
                        }) {
                            return Ok(());
                        }
                        s += de.nslots;
                    }
                    Ok(None) => s += 1,
                    Err(_) => return Err(Errno::EIO),
                }
            }
            pos = (b + 1) * DIR_SLOTS_PER_BLOCK as u64;
        }
        Ok(())
    }

    pub fn fsyncdir(&self, ino: u64) -> Result<()> {
        // Every namespace change is committed before it returns; one still in flight
        // (made visible by a call that has not returned yet) is waited for.
        let inode = self.inode(ino)?;
        self.settle(&inode);
        Ok(())
    }
}
