//! File data: reads straight out of the device mapping, writes straight into it
//! (flushed before they return), truncate, fallocate, SEEK_DATA/SEEK_HOLE and
//! copy_file_range. Every byte of file data moves through `read_with` and
//! `write`, the one place that pins the blocks it copies. Those pins are taken and
//! dropped under the inode's state lock, so break_layouts (which frees only with that
//! lock held exclusively) never has to wait for them.

use crate::break_layouts::{would_wait, Wait};
use crate::commit::Tx;
use crate::error::{Errno, Result};
use crate::filesystem::{DaxFs, MAX_FILE_SIZE, SEEK_DATA, SEEK_HOLE};
use crate::inode::{rlock, wlock, InodeState};
use crate::types::*;
use daxfs_format::*;
use daxfs_pmem::VolatileSlice;

/// Zeros handed out for holes, without copying.
static ZEROS: [u8; 65536] = [0u8; 65536];

const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
const FALLOC_FL_COLLAPSE_RANGE: i32 = 0x08;
const FALLOC_FL_ZERO_RANGE: i32 = 0x10;
const FALLOC_FL_INSERT_RANGE: i32 = 0x20;

/// Pins on a set of blocks for the duration of a copy.
struct Pins<'a> {
    fs: &'a DaxFs,
    blocks: Vec<(u64, u64)>,
}

impl Drop for Pins<'_> {
    fn drop(&mut self) {
        for &(s, n) in &self.blocks {
            for b in s..s + n {
                self.fs.refs.unpin(b);
            }
        }
    }
}

impl<'a> Pins<'a> {
    fn new(fs: &'a DaxFs) -> Self {
        Pins {
            fs,
            blocks: Vec::new(),
        }
    }

    /// Pins device blocks pblk..pblk+n; fails with EIO if one is not mapped (which
    /// would be a refcount bug: the extent map says it is).
    fn pin(&mut self, pblk: u64, n: u64) -> Result<()> {
        let s = pblk - self.fs.geo.data_start;
        for b in s..s + n {
            if !self.fs.refs.pin(b) {
                self.fs.refs.note_violation();
                // Record what was pinned so far for release.
                self.blocks.push((s, b - s));
                return Err(Errno::EIO);
            }
        }
        self.blocks.push((s, n));
        Ok(())
    }
}

fn blk(off: u64) -> u64 {
    off / BLOCK_SIZE
}

impl DaxFs {
    fn file_inode_check(st: &InodeState) -> Result<()> {
        if st.dead {
            return Err(Errno::ENOENT);
        }
        match st.kind() {
            Some(FileKind::File) => Ok(()),
            Some(FileKind::Dir) => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Whether writing `data` at `off` would change a byte the file already holds below
    /// its size (holes hold zeros). Under the inode's lock, which keeps its blocks mapped.
    fn changes_bytes(&self, st: &InodeState, off: u64, data: &[u8]) -> bool {
        let size = st.d.size;
        if off >= size {
            return false;
        }
        let end = size.min(off.saturating_add(data.len() as u64));
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        let mut pos = off;
        while pos < end {
            let lb = blk(pos);
            let n = ((lb + 1) * BLOCK_SIZE).min(end) - pos;
            let have = &mut buf[..n as usize];
            match st.ext.find(lb) {
                Some(e) => {
                    let pblk = e.pblk + (lb - e.lblk);
                    self.dev.read(pblk * BLOCK_SIZE + pos % BLOCK_SIZE, have);
                }
                None => have.fill(0),
            }
            let want = &data[(pos - off) as usize..(pos - off + n) as usize];
            if have != want {
                return true;
            }
            pos += n;
        }
        false
    }

    /// Zero-copy read: calls `f` with the pieces of the file range, views straight into
    /// the device mapping (holes as zeros), while the blocks are pinned. The pieces add
    /// up to the bytes available (short at EOF, empty past it). They are volatile views,
    /// not `&[u8]`: a pinned mapping may store to the same bytes meanwhile.
    pub fn read_with<R>(
        &self,
        ino: u64,
        offset: u64,
        len: u32,
        f: impl FnOnce(&[VolatileSlice<'_>]) -> R,
    ) -> Result<R> {
        // On a follower: the view this read uses stays held until the copy is done, so
        // the writer does not reuse its blocks meanwhile (`follow.rs`). Before the
        // lookup, so the view held is never older than the one read.
        let view = self.read_guard()?;
        let inode = self.inode(ino)?;
        let st = rlock(&inode.st);
        Self::file_inode_check(&st)?;
        let size = st.d.size;
        if offset >= size || len == 0 {
            return Ok(f(&[]));
        }
        let end = size.min(offset + len as u64);
        let mut pieces: Vec<VolatileSlice<'_>> = Vec::new();
        let mut pins = Pins::new(self);
        let mut pos = offset;
        while pos < end {
            let lb = blk(pos);
            match st.ext.find_or_next(lb) {
                Some(e) if e.lblk <= lb => {
                    let ext_end = (e.end() * BLOCK_SIZE).min(end);
                    let pstart = e.pblk + (lb - e.lblk);
                    let nblocks = blk(ext_end - 1) - lb + 1;
                    pins.pin(pstart, nblocks)?;
                    let devoff = pstart * BLOCK_SIZE + pos % BLOCK_SIZE;
                    let n = (ext_end - pos) as usize;
                    // The blocks devoff..devoff+n belong to this file's extent map and
                    // are pinned until `pins` drops (after `f` returns), so they are
                    // neither freed nor reused meanwhile; the inode read lock keeps the
                    // extent map stable.
                    pieces.push(self.dev.volatile(devoff, n));
                    pos = ext_end;
                }
                next => {
                    let hole_end = next
                        .map(|e| e.lblk * BLOCK_SIZE)
                        .unwrap_or(u64::MAX)
                        .min(end);
                    let mut n = hole_end - pos;
                    while n > 0 {
                        let k = n.min(ZEROS.len() as u64);
                        pieces.push(VolatileSlice::from(&ZEROS[..k as usize]));
                        n -= k;
                    }
                    pos = hole_end;
                }
            }
        }
        let r = f(&pieces);
        drop(pins);
        // A follower that stalled meanwhile may have copied blocks the writer reused:
        // the result is not handed out (the FUSE adapter copies a follower's reads into
        // a buffer for this, so nothing reached the kernel yet).
        view.check()?;
        let relatime = st.d.atime <= st.d.mtime
            || st.d.atime <= st.d.ctime
            || now().sec - st.d.atime.sec >= 86400;
        drop(st);
        if relatime && !self.opts.read_only {
            self.touch_atime(ino);
        }
        Ok(r)
    }

    /// relatime: atime moves when it is older than mtime/ctime or a day old.
    fn touch_atime(&self, ino: u64) {
        let Ok(inode) = self.inode(ino) else { return };
        let mut st = wlock(&inode.st);
        if st.dead || self.check_writable().is_err() {
            return;
        }
        st.d.atime = now();
        let mut tx = Tx::new();
        self.log_inode(ino, &mut st, &mut tx);
        if self.commit(tx).is_ok() {
            self.attrs_changed(ino);
        }
    }

    /// Convenience read into a buffer; returns the bytes read.
    pub fn read(&self, ino: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let len = buf.len().min(u32::MAX as usize) as u32;
        self.read_with(ino, offset, len, |pieces| {
            let mut o = 0;
            for p in pieces {
                o += p.copy_to(&mut buf[o..]);
            }
            o
        })
    }

    /// Zeroes bytes [from, to) of a file's mapped blocks (parts of blocks beyond EOF
    /// that a size increase is about to expose, or the partial ends of a punch).
    fn zero_mapped(&self, st: &InodeState, from: u64, to: u64) {
        let mut pos = from;
        while pos < to {
            let lb = blk(pos);
            match st.ext.find_or_next(lb) {
                Some(e) if e.lblk <= lb => {
                    let ext_end = (e.end() * BLOCK_SIZE).min(to);
                    let devoff = (e.pblk + (lb - e.lblk)) * BLOCK_SIZE + pos % BLOCK_SIZE;
                    self.dev.zero_persist(devoff, ext_end - pos);
                    pos = ext_end;
                }
                Some(e) => pos = (e.lblk * BLOCK_SIZE).min(to),
                None => break,
            }
        }
    }

    /// Maps holes of logical blocks `first..=last` with newly allocated blocks. Bytes of
    /// new blocks outside `keep` (the range the caller is about to write) are zeroed.
    /// Returns the end (exclusive) of the contiguous mapped range from `first`, which
    /// is short of `last + 1` only on ENOSPC after progress.
    fn fill_holes(
        &self,
        ino: u64,
        st: &mut InodeState,
        first: u64,
        last: u64,
        keep: (u64, u64),
        tx: &mut Tx,
    ) -> Result<u64> {
        let mut lb = first;
        while lb <= last {
            match st.ext.find_or_next(lb) {
                Some(e) if e.lblk <= lb => lb = e.end(),
                next => {
                    let hole_end = next.map(|e| e.lblk).unwrap_or(u64::MAX).min(last + 1);
                    let goal = st
                        .ext
                        .prev_before(lb)
                        .map(|p| p.pblk + p.len as u64 + (lb - p.end()))
                        .unwrap_or(self.geo.data_start);
                    let (pblk, n) = match self.alloc_blocks(goal, hole_end - lb, false, tx) {
                        Ok(x) => x,
                        Err(e) => return if lb > first { Ok(lb) } else { Err(e) },
                    };
                    // The slot comes second: a new extent block is a change to the
                    // inode that an aborted transaction could not undo.
                    if let Err(e) = self.reserve_slots(ino, st, 1, tx) {
                        self.unalloc_last(tx);
                        return if lb > first { Ok(lb) } else { Err(e) };
                    }
                    // Zero what the write will not cover.
                    let bs = lb * BLOCK_SIZE;
                    let be = (lb + n) * BLOCK_SIZE;
                    let (ks, ke) = (keep.0.clamp(bs, be), keep.1.clamp(bs, be));
                    let dev0 = pblk * BLOCK_SIZE;
                    if ks > bs {
                        self.dev.zero_persist(dev0, ks - bs);
                    }
                    if be > ke {
                        self.dev.zero_persist(dev0 + (ke - bs), be - ke);
                    }
                    if !st.ext.insert(Extent {
                        lblk: lb,
                        pblk,
                        len: n as u32,
                    }) {
                        return Err(Errno::EIO);
                    }
                    st.d.blocks += n;
                    lb += n;
                }
            }
        }
        Ok(lb)
    }

    /// Writes `data` at `offset` (or at EOF when `append`), durable before it returns.
    /// Returns the bytes written (short on ENOSPC after some progress).
    pub fn write(&self, ino: u64, offset: u64, data: &[u8], append: bool) -> Result<usize> {
        self.write_as(ino, offset, data, append, &Cred::root())
    }

    /// `write` on behalf of `cred`: a writer other than root also clears the file's
    /// setuid bit, and its setgid bit when group execute is set (file_remove_privs),
    /// so a modified file cannot keep privileges.
    pub fn write_as(
        &self,
        ino: u64,
        offset: u64,
        data: &[u8],
        append: bool,
        cred: &Cred,
    ) -> Result<usize> {
        self.check_writable()?;
        let inode = self.inode(ino)?;
        let mut st = wlock(&inode.st);
        Self::file_inode_check(&st)?;
        st.refuse_write(append, || self.changes_bytes(&st, offset, data))?;
        let off = if append { st.d.size } else { offset };
        if data.is_empty() {
            return Ok(0);
        }
        if off >= MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        let len = (data.len() as u64).min(MAX_FILE_SIZE - off);
        let mut end = off + len;
        let mut tx = Tx::new();
        let old_size = st.d.size;
        if off > old_size {
            // Expose zeros, not stale bytes, between the old EOF and the write.
            self.zero_mapped(&st, old_size, (blk(old_size) + 1) * BLOCK_SIZE);
        }
        let mapped_end =
            match self.fill_holes(ino, &mut st, blk(off), blk(end - 1), (off, end), &mut tx) {
                Ok(e) => e,
                Err(e) => return Err(self.fail_op(ino, &mut st, tx, e)),
            };
        end = end.min(mapped_end * BLOCK_SIZE);
        if end <= off {
            return Err(self.fail_op(ino, &mut st, tx, Errno::ENOSPC));
        }
        // Copy, one extent at a time, with the blocks pinned during the copy.
        let mut pos = off;
        while pos < end {
            let lb = blk(pos);
            let Some(e) = st.ext.find(lb) else {
                return Err(self.fail_op(ino, &mut st, tx, Errno::EIO));
            };
            let ext_end = (e.end() * BLOCK_SIZE).min(end);
            let pstart = e.pblk + (lb - e.lblk);
            let mut pins = Pins::new(self);
            if let Err(err) = pins.pin(pstart, blk(ext_end - 1) - lb + 1) {
                drop(pins);
                return Err(self.fail_op(ino, &mut st, tx, err));
            }
            let src = &data[(pos - off) as usize..(ext_end - off) as usize];
            self.dev
                .write_persist(pstart * BLOCK_SIZE + pos % BLOCK_SIZE, src);
            drop(pins);
            pos = ext_end;
        }
        let t = now();
        let mode_before = st.d.mode;
        if cred.uid != 0 {
            let mut kill = libc::S_ISUID;
            if mode_before & libc::S_IXGRP != 0 {
                kill |= libc::S_ISGID;
            }
            st.d.mode &= !kill;
        }
        let times_only = end <= st.d.size
            && st.d.mode == mode_before
            && tx.txn.is_empty()
            && tx.allocs.is_empty()
            && !st.ext.is_dirty();
        if times_only && self.lazy_times() {
            // Nothing but mtime/ctime changes: they stay in memory until fsync, the
            // inode's next record, the writeback or unmount commits them (`times.rs`).
            self.dirty_times(&inode, &mut st, t);
            return Ok((end - off) as usize);
        }
        st.d.size = st.d.size.max(end);
        st.d.mtime = t;
        st.d.ctime = t;
        self.log_inode(ino, &mut st, &mut tx);
        self.commit(tx)?;
        // The record carried the times, dirty or not.
        self.times_committed(&inode, &st);
        if st.d.mode != mode_before {
            self.attrs_changed(ino);
        }
        Ok((end - off) as usize)
    }

    /// fsync(2), and fdatasync(2) when `datasync`.
    pub fn fsync(&self, ino: u64, datasync: bool) -> Result<()> {
        // Data is flushed before each write returns and metadata is committed before
        // each change returns, except timestamps left in memory by lazytime: fsync
        // commits them (fdatasync need not, as on ext4). Otherwise only a change still in
        // flight (made visible by a call that has not returned yet, e.g. this file's
        // creation) is left to wait for.
        let inode = self.inode(ino)?;
        if !datasync {
            self.sync_times(&inode)?;
        }
        self.settle(&inode);
        Ok(())
    }

    /// Changes a file's size inside `tx` (the caller logs the inode and commits).
    pub(crate) fn truncate_locked(
        &self,
        ino: u64,
        st: &mut InodeState,
        size: u64,
        tx: &mut Tx,
    ) -> Result<()> {
        let old = st.d.size;
        if size > old {
            self.zero_mapped(st, old, (blk(old) + 1) * BLOCK_SIZE);
        } else if size < old {
            let first_free = size.div_ceil(BLOCK_SIZE);
            self.unmap_range(ino, st, first_free, u64::MAX / 2, tx)?;
        }
        st.d.size = size;
        Ok(())
    }

    /// Takes logical blocks `start..end` away from a file: breaks the layout, removes
    /// the extents, frees the blocks in `tx`.
    fn unmap_range(
        &self,
        ino: u64,
        st: &mut InodeState,
        start: u64,
        end: u64,
        tx: &mut Tx,
    ) -> Result<()> {
        let Some(last) = st.ext.last() else {
            return Ok(());
        };
        let end = end.min(last.end());
        if start >= end {
            return Ok(());
        }
        // The caller broke the layout of this range (or nothing can pin the file).
        self.check_layout_idle(st, start, end)?;
        self.reserve_slots(ino, st, 1, tx)?;
        let removed = st.ext.remove_range(start, end).ok_or(Errno::EIO)?;
        for (pblk, n) in removed {
            self.release_blocks(pblk, n, tx);
            st.d.blocks = st.d.blocks.saturating_sub(n);
        }
        // No extent left: the extent blocks go too (st_blocks back to 0, as ext4).
        if st.ext.is_empty() {
            for b in st.ext.take_blocks() {
                self.release_blocks(b, 1, tx);
                st.d.blocks = st.d.blocks.saturating_sub(1);
            }
            st.d.extent_block = 0;
        }
        Ok(())
    }

    /// fallocate(2) with its mode bits.
    pub fn fallocate(&self, ino: u64, offset: u64, len: u64, mode: i32) -> Result<()> {
        self.fallocate_waiting(ino, offset, len, mode, Wait::Block)
    }

    /// [`fallocate`](Self::fallocate) that never sleeps on a pin: None when it would have
    /// to wait for one (nothing changed).
    pub fn try_fallocate(&self, ino: u64, offset: u64, len: u64, mode: i32) -> Option<Result<()>> {
        would_wait(self.fallocate_waiting(ino, offset, len, mode, Wait::Never))
    }

    fn fallocate_waiting(
        &self,
        ino: u64,
        offset: u64,
        len: u64,
        mode: i32,
        wait: Wait,
    ) -> Result<()> {
        self.check_writable()?;
        let known = FALLOC_FL_KEEP_SIZE
            | FALLOC_FL_PUNCH_HOLE
            | FALLOC_FL_COLLAPSE_RANGE
            | FALLOC_FL_ZERO_RANGE
            | FALLOC_FL_INSERT_RANGE;
        if mode & !known != 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let end = offset.checked_add(len).ok_or(Errno::EFBIG)?;
        let keep = mode & FALLOC_FL_KEEP_SIZE != 0;
        let punch = mode & FALLOC_FL_PUNCH_HOLE != 0;
        let collapse = mode & FALLOC_FL_COLLAPSE_RANGE != 0;
        let zero = mode & FALLOC_FL_ZERO_RANGE != 0;
        let insert = mode & FALLOC_FL_INSERT_RANGE != 0;
        if punch && !keep {
            return Err(Errno::EOPNOTSUPP);
        }
        if (punch as u8 + collapse as u8 + zero as u8 + insert as u8) > 1 {
            return Err(Errno::EINVAL);
        }
        if (collapse || insert)
            && mode != FALLOC_FL_COLLAPSE_RANGE
            && mode != FALLOC_FL_INSERT_RANGE
        {
            return Err(Errno::EINVAL);
        }
        let inode = self.inode(ino)?;
        // Blocks that leave the file (punch, zero) or move within it (collapse and insert
        // shift everything after `offset`): their layout is broken first. Ranges of
        // requests that will fail anyway (EINVAL below) are left alone.
        let moving = |st: &InodeState| -> Option<std::ops::Range<u64>> {
            if st.kind() != Some(FileKind::File)
                || end > MAX_FILE_SIZE
                || st.refuse_fallocate(mode).is_err()
            {
                return None;
            }
            let size = st.d.size;
            if collapse || insert {
                let aligned = offset.is_multiple_of(BLOCK_SIZE) && len.is_multiple_of(BLOCK_SIZE);
                let bad = if collapse {
                    end >= size
                } else {
                    offset >= size
                };
                if aligned && !bad {
                    return Some(blk(offset)..u64::MAX / BLOCK_SIZE);
                }
            } else if punch || zero {
                let (first_full, end_full) = (offset.div_ceil(BLOCK_SIZE), blk(end));
                if first_full < end_full {
                    return Some(first_full..end_full);
                }
            }
            None
        };
        let (_layout, mut st) = if punch || zero || collapse || insert {
            let (layout, st) = self.break_layouts(&inode, wait, moving)?;
            (Some(layout), st)
        } else {
            (None, wlock(&inode.st))
        };
        Self::file_inode_check(&st)?;
        st.refuse_fallocate(mode)?;
        if end > MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        let mut tx = Tx::new();
        let t = now();
        let res = (|| -> Result<()> {
            let size = st.d.size;
            if collapse || insert {
                if !offset.is_multiple_of(BLOCK_SIZE) || !len.is_multiple_of(BLOCK_SIZE) {
                    return Err(Errno::EINVAL);
                }
                if collapse {
                    if end >= size {
                        return Err(Errno::EINVAL);
                    }
                    let (s, e) = (blk(offset), blk(end));
                    self.unmap_range(ino, &mut st, s, e, &mut tx)?;
                    st.ext.shift(e, -((e - s) as i64));
                    st.d.size = size - len;
                } else {
                    if offset >= size {
                        return Err(Errno::EINVAL);
                    }
                    if size + len > MAX_FILE_SIZE {
                        return Err(Errno::EFBIG);
                    }
                    self.reserve_slots(ino, &mut st, 1, &mut tx)?;
                    if !st.ext.split_at(blk(offset)) {
                        return Err(Errno::EIO);
                    }
                    st.ext.shift(blk(offset), blk(len) as i64);
                    st.d.size = size + len;
                }
                st.d.mtime = t;
                st.d.ctime = t;
                return Ok(());
            }
            if punch || zero {
                // Partial blocks at the ends are zeroed in place; whole blocks leave
                // the file (punch) or are replaced by zeroed ones (zero range).
                let first_full = offset.div_ceil(BLOCK_SIZE);
                let end_full = blk(end);
                if first_full >= end_full {
                    self.zero_mapped(&st, offset, end);
                } else {
                    self.zero_mapped(&st, offset, first_full * BLOCK_SIZE);
                    self.zero_mapped(&st, end_full * BLOCK_SIZE, end);
                    self.unmap_range(ino, &mut st, first_full, end_full, &mut tx)?;
                }
                if zero {
                    self.fill_holes(ino, &mut st, blk(offset), blk(end - 1), (0, 0), &mut tx)
                        .and_then(|e| {
                            if e <= blk(end - 1) {
                                Err(Errno::ENOSPC)
                            } else {
                                Ok(())
                            }
                        })?;
                    if !keep && end > size {
                        if size < offset {
                            self.zero_mapped(&st, size, offset);
                        }
                        st.d.size = end;
                    }
                }
                st.d.mtime = t;
                st.d.ctime = t;
                return Ok(());
            }
            // Plain allocation.
            if end > size && !keep {
                self.zero_mapped(&st, size, (blk(size) + 1) * BLOCK_SIZE);
            }
            let got = self.fill_holes(ino, &mut st, blk(offset), blk(end - 1), (0, 0), &mut tx)?;
            if got <= blk(end - 1) {
                return Err(Errno::ENOSPC);
            }
            if !keep && end > size {
                st.d.size = end;
                st.d.mtime = t;
            }
            st.d.ctime = t;
            Ok(())
        })();
        if let Err(e) = res {
            return Err(self.fail_op(ino, &mut st, tx, e));
        }
        self.log_inode(ino, &mut st, &mut tx);
        self.commit(tx)
    }

    /// lseek for SEEK_DATA / SEEK_HOLE (others are handled by the kernel).
    pub fn lseek(&self, ino: u64, offset: i64, whence: i32) -> Result<i64> {
        let inode = self.inode(ino)?;
        let st = rlock(&inode.st);
        if st.dead {
            return Err(Errno::ENOENT);
        }
        let size = st.d.size;
        if offset < 0 {
            return Err(Errno::ENXIO);
        }
        let off = offset as u64;
        match whence {
            SEEK_DATA | SEEK_HOLE if off >= size => Err(Errno::ENXIO),
            SEEK_DATA => {
                let Some(e) = st.ext.find_or_next(blk(off)) else {
                    return Err(Errno::ENXIO);
                };
                let r = off.max(e.lblk * BLOCK_SIZE);
                if r >= size {
                    Err(Errno::ENXIO)
                } else {
                    Ok(r as i64)
                }
            }
            SEEK_HOLE => {
                let mut lb = blk(off);
                while let Some(e) = st.ext.find(lb) {
                    lb = e.end();
                }
                Ok(off.max(lb * BLOCK_SIZE).min(size) as i64)
            }
            libc::SEEK_SET => Ok(offset),
            libc::SEEK_END => Ok(size as i64 + offset),
            _ => Err(Errno::EINVAL),
        }
    }

    pub fn copy_file_range(
        &self,
        ino_in: u64,
        off_in: u64,
        ino_out: u64,
        off_out: u64,
        len: u64,
    ) -> Result<u64> {
        let mut done = 0u64;
        let mut buf = Vec::new();
        while done < len {
            let chunk = (len - done).min(1 << 20) as usize;
            buf.resize(chunk, 0);
            let n = self.read(ino_in, off_in + done, &mut buf[..chunk])?;
            if n == 0 {
                break;
            }
            let w = match self.write(ino_out, off_out + done, &buf[..n], false) {
                Ok(w) => w,
                Err(e) if done > 0 => {
                    let _ = e;
                    break;
                }
                Err(e) => return Err(e),
            };
            done += w as u64;
            if w < n {
                break;
            }
        }
        Ok(done)
    }
}
