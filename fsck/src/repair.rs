//! Carries out the repair the check planned ([`super::repair`] calls it once the
//! journal is applied and the device itself was checked without finding an error).
//!
//! Every write goes into a journal transaction on the device. The namespace repair
//! (entries, lost+found, inode records) is one group, each rewritten bitmap block its
//! own, the superblock copies one each (so a crash never tears both); groups are
//! packed into as few transactions as the journal takes. A namespace group too large
//! for the journal is split: each transaction still leaves an image whose next check
//! plans the rest (blocks are only allocated from those no inode claimed before the
//! repair, and the bitmap, rebuilt last, is derived data).

use super::{name_str, Checker, LostFound, BLOCK_SIZE, LOST_FOUND};
use daxfs::fsck_support::{DirIndex, DirSlot, ExtentMap, SlotLoc};
use daxfs::now;
use daxfs_format::*;
use daxfs_journal::{Journal, Transaction};
use daxfs_pmem::Device;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Writes that belong together: committed in one transaction when they fit.
struct Group {
    writes: Vec<(u64, Vec<u8>)>,
    /// In a transaction of its own (a superblock copy).
    alone: bool,
}

/// The data-area block map during the repair: what inodes claimed, plus what the
/// repair allocates.
struct Blocks {
    used: Vec<u64>,
    n: u64,
    data_start: u64,
    cursor: u64,
}

impl Blocks {
    fn is_set(&self, b: u64) -> bool {
        self.used[(b / 64) as usize] & (1 << (b % 64)) != 0
    }

    fn alloc(&mut self) -> Result<u64, String> {
        let mut b = self.cursor;
        while b < self.n {
            if self.used[(b / 64) as usize] == u64::MAX {
                b = (b / 64 + 1) * 64;
                continue;
            }
            if !self.is_set(b) {
                self.used[(b / 64) as usize] |= 1 << (b % 64);
                // Next time from here: a directory's new blocks come out contiguous.
                self.cursor = b + 1;
                return Ok(self.data_start + b);
            }
            b += 1;
        }
        Err("no free block left".into())
    }

    fn release(&mut self, start: u64, len: u64) {
        for b in start - self.data_start..start - self.data_start + len {
            self.used[(b / 64) as usize] &= !(1 << (b % 64));
        }
    }

    /// The on-media image of bitmap block `index` for this map.
    fn bitmap_image(&self, index: u64) -> Vec<u8> {
        let mut img = vec![0u8; BLOCK_SIZE as usize];
        let first = index * BITS_PER_BITMAP_BLOCK;
        for (k, byte) in img[..BITMAP_BYTES_PER_BLOCK as usize]
            .iter_mut()
            .enumerate()
        {
            let b = first + 8 * k as u64;
            if b + 8 <= self.n {
                *byte = (self.used[(b / 64) as usize] >> (b % 64)) as u8;
            } else {
                // The end of the data area: bits past it read as used.
                for bit in 0..8 {
                    if b + bit >= self.n || self.is_set(b + bit) {
                        *byte |= 1 << bit;
                    }
                }
            }
        }
        seal_bitmap_block(&mut img, index);
        img
    }
}

fn read_inode(dev: &Device, sb: &Superblock, ino: u64) -> Result<DiskInode, String> {
    let mut b = [0u8; INODE_SIZE as usize];
    dev.read(sb.inode_offset(ino), &mut b);
    match DiskInode::decode(&b) {
        Ok(Some(d)) => Ok(d),
        Ok(None) => Err(format!("inode {ino} is free")),
        Err(e) => Err(format!("inode {ino}: {e}")),
    }
}

/// An inode's extent map as the repair leaves it (the check validated it): extent
/// blocks the plan rewrites are read from their new images.
fn load_extents(c: &Checker, dev: &Device, ino: u64, d: &DiskInode) -> Result<ExtentMap, String> {
    let sb = &c.sb;
    let mut chain = Vec::new();
    let mut next = d.extent_block;
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    while next != 0 {
        if chain.len() as u64 > sb.data_blocks {
            return Err(format!("inode {ino}: extent block chain loops"));
        }
        match c.plan.images.iter().find(|i| i.0 == next * BLOCK_SIZE) {
            Some((_, img, _)) => buf.copy_from_slice(img),
            None => dev.read(next * BLOCK_SIZE, &mut buf),
        }
        let nx = decode_extent_block_header(&buf, ino).map_err(|e| format!("inode {ino}: {e}"))?;
        let mut slots = Vec::with_capacity(EXTENTS_PER_BLOCK);
        for j in 0..EXTENTS_PER_BLOCK {
            let o = EXTENT_BLOCK_HEADER + j * EXTENT_SIZE;
            slots.push(
                Extent::decode(&buf[o..o + EXTENT_SIZE])
                    .map_err(|e| format!("inode {ino}: {e}"))?,
            );
        }
        chain.push((next, slots));
        next = nx;
    }
    ExtentMap::load(&d.inline, chain).map_err(|e| format!("inode {ino}: {e}"))
}

/// A directory the repair adds entries to (the root, lost+found).
struct DirAppend {
    ino: u64,
    d: DiskInode,
    ext: ExtentMap,
    idx: DirIndex,
}

impl DirAppend {
    /// Directory `ino` (record `d`) with the entries the check found in it, but those
    /// the repair removes (their slots are reused: the removal is written first).
    fn load(
        c: &Checker,
        dev: &Device,
        ino: u64,
        d: DiskInode,
        removed: &HashSet<usize>,
    ) -> Result<DirAppend, String> {
        let ext = load_extents(c, dev, ino, &d)?;
        let mut idx = DirIndex::new();
        for _ in 0..d.size / BLOCK_SIZE {
            idx.add_block();
        }
        for (i, e) in c.entries.iter().enumerate() {
            if e.dir == ino && !removed.contains(&i) {
                let slot = DirSlot {
                    ino: e.child,
                    ftype: e.ftype,
                    block: e.block,
                    slot: e.slot,
                };
                idx.load_entry(&e.name, slot)
                    .map_err(|e| format!("directory {ino}: {e}"))?;
            }
        }
        Ok(DirAppend { ino, d, ext, idx })
    }

    fn add(
        &mut self,
        name: &[u8],
        child: u64,
        ftype: u8,
        blocks: &mut Blocks,
        w: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(), String> {
        let (block, slot) = match self.idx.find_space(name.len()) {
            Some(at) => at,
            None => {
                self.fill_hole(self.d.size / BLOCK_SIZE, blocks, w)?;
                self.d.size += BLOCK_SIZE;
                (self.idx.add_block(), 1)
            }
        };
        let e = self
            .ext
            .find(block as u64)
            .ok_or_else(|| format!("directory {}: block {block} is a hole", self.ino))?;
        let pblk = e.pblk + (block as u64 - e.lblk);
        w.push((
            pblk * BLOCK_SIZE + slot as u64 * DIR_SLOT as u64,
            encode_dirent(child, ftype, name),
        ));
        self.idx.insert(
            name,
            DirSlot {
                ino: child,
                ftype,
                block,
                slot,
            },
        );
        Ok(())
    }

    /// Gives block `index` a new empty directory block: a hole (its extent was lost with
    /// a damaged extent block), or the block just past the end when the directory grows.
    fn fill_hole(
        &mut self,
        index: u64,
        blocks: &mut Blocks,
        w: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(), String> {
        let pblk = blocks.alloc()?;
        let mut img = vec![0u8; BLOCK_SIZE as usize];
        img[..DIR_SLOT].copy_from_slice(&encode_dir_block_header(self.ino, index));
        w.push((pblk * BLOCK_SIZE, img));
        let e = Extent {
            lblk: index,
            pblk,
            len: 1,
        };
        if !self.ext.insert(e) {
            self.add_extent_block(blocks, w)?;
            if !self.ext.insert(e) {
                return Err(format!("directory {}: no extent slot", self.ino));
            }
        }
        self.d.blocks += 1;
        Ok(())
    }

    fn add_extent_block(
        &mut self,
        blocks: &mut Blocks,
        w: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(), String> {
        let eb = blocks.alloc()?;
        let mut img = vec![0u8; BLOCK_SIZE as usize];
        img[..EXTENT_BLOCK_HEADER].copy_from_slice(&encode_extent_block_header(0, self.ino));
        w.push((eb * BLOCK_SIZE, img));
        match self.ext.extent_blocks().last() {
            Some(&prev) => w.push((
                prev * BLOCK_SIZE,
                encode_extent_block_header(eb, self.ino).to_vec(),
            )),
            None => self.d.extent_block = eb,
        }
        self.ext.add_block(eb);
        self.d.blocks += 1;
        Ok(())
    }

    /// Writes the changed extent slots; returns the inode record to write.
    fn finish(mut self, t: Timespec, w: &mut Vec<(u64, Vec<u8>)>) -> (u64, DiskInode) {
        for (loc, e) in self.ext.take_dirty() {
            if let SlotLoc::Device(off) = loc {
                w.push((off, e.encode().to_vec()));
            }
        }
        self.d.inline = self.ext.inline_slots();
        self.d.extent_count = self.ext.len() as u32;
        self.d.mtime = t;
        self.d.ctime = t;
        (self.ino, self.d)
    }
}

/// Takes inode `ino`'s record out of `inodes` (already changed by the plan), or reads
/// it from the device.
fn take_inode(
    inodes: &mut BTreeMap<u64, DiskInode>,
    dev: &Device,
    sb: &Superblock,
    ino: u64,
) -> Result<DiskInode, String> {
    match inodes.remove(&ino) {
        Some(d) => Ok(d),
        None => read_inode(dev, sb, ino),
    }
}

/// Makes the repairs `c` planned; returns what was done, in order.
pub(super) fn execute(
    c: &Checker,
    dev: &Arc<Device>,
    journal: &mut Journal,
) -> Result<Vec<String>, String> {
    let sb = &c.sb;
    let plan = &c.plan;
    let t = now();
    let mut done = Vec::new();
    let mut w: Vec<(u64, Vec<u8>)> = Vec::new();
    let removed: HashSet<usize> = plan.remove.iter().copied().collect();
    let freed: HashSet<u64> = plan.free.iter().copied().collect();

    // Whole blocks first: the entry removals and additions below write into them.
    for (off, img, what) in &plan.images {
        w.push((*off, img.clone()));
        done.push(format!("rewrote the {what} (block {})", off / BLOCK_SIZE));
    }
    for &ino in &plan.clear {
        if plan.new_root && ino == ROOT_INO {
            continue; // overwritten by the new root below
        }
        w.push((sb.inode_offset(ino), vec![0u8; INODE_SIZE as usize]));
        done.push(if ino == 0 {
            "zeroed the reserved inode slot 0".to_string()
        } else {
            format!("cleared inode {ino}")
        });
    }

    let mut inodes: BTreeMap<u64, DiskInode> = BTreeMap::new();
    if plan.new_root {
        let mut d = DiskInode::empty();
        d.mode = libc::S_IFDIR | 0o755;
        d.nlink = 2;
        d.parent = ROOT_INO;
        d.generation = t.nsec;
        d.atime = t;
        d.mtime = t;
        d.ctime = t;
        d.btime = t;
        inodes.insert(ROOT_INO, d);
        done.push("made a new, empty root directory".into());
    }
    for (&ino, f) in &plan.fixes {
        let mut d = take_inode(&mut inodes, dev, sb, ino)?;
        if let Some(n) = f.nlink {
            d.nlink = n;
            done.push(format!("inode {ino}: set the link count to {n}"));
        }
        if let Some(p) = f.parent {
            d.parent = p;
            done.push(format!("directory {ino}: set the parent to {p}"));
        }
        if f.clear_orphan {
            d.flags &= !IFLAG_ORPHAN;
            done.push(format!("inode {ino}: cleared the orphan flag"));
        }
        if let Some(b) = f.blocks {
            d.blocks = b;
            done.push(format!("inode {ino}: set the block count to {b}"));
        }
        if let Some(n) = f.extent_count {
            d.extent_count = n;
            done.push(format!("inode {ino}: set the extent count to {n}"));
        }
        if f.drop_xattr {
            d.xattr_block = 0;
            done.push(format!(
                "inode {ino}: dropped its damaged extended attribute block"
            ));
        }
        inodes.insert(ino, d);
    }

    for &i in &plan.remove {
        let e = &c.entries[i];
        w.push((
            e.pblk * BLOCK_SIZE + e.slot as u64 * DIR_SLOT as u64,
            vec![0u8; e.nslots as usize * DIR_SLOT],
        ));
        done.push(format!(
            "directory {}: removed entry {} (inode {})",
            e.dir,
            name_str(&e.name),
            e.child
        ));
    }
    for &(i, ftype) in &plan.retype {
        if removed.contains(&i) {
            continue;
        }
        let e = &c.entries[i];
        w.push((
            e.pblk * BLOCK_SIZE + e.slot as u64 * DIR_SLOT as u64,
            encode_dirent(e.child, ftype, &e.name),
        ));
        done.push(format!(
            "directory {}: set the type of entry {} to {ftype}",
            e.dir,
            name_str(&e.name)
        ));
    }

    let mut blocks = Blocks {
        used: c.used.clone(),
        n: sb.data_blocks,
        data_start: sb.data_start,
        cursor: 0,
    };
    // Directory holes get new, empty blocks; lost+found and the root, when entries are
    // added to them below, where they are loaded for that.
    let appended = match plan.lost_found {
        LostFound::Unneeded => None,
        LostFound::Existing(lf) => Some(lf),
        LostFound::Create { .. } => Some(ROOT_INO),
    };
    let mut fill = |a: &mut DirAppend,
                    blocks: &mut Blocks,
                    w: &mut Vec<(u64, Vec<u8>)>|
     -> Result<(), String> {
        for &b in plan.holes.get(&a.ino).map(|v| v.as_slice()).unwrap_or(&[]) {
            a.fill_hole(b, blocks, w)?;
            done.push(format!(
                "directory {}: gave block {b} a new, empty block",
                a.ino
            ));
        }
        Ok(())
    };
    for &dir in plan.holes.keys() {
        if Some(dir) == appended || freed.contains(&dir) {
            continue;
        }
        let d = take_inode(&mut inodes, dev, sb, dir)?;
        let mut a = DirAppend::load(c, dev, dir, d, &removed)?;
        fill(&mut a, &mut blocks, &mut w)?;
        let (i, d) = a.finish(t, &mut w);
        inodes.insert(i, d);
    }
    let lost_found = match plan.lost_found {
        LostFound::Unneeded => None,
        LostFound::Existing(lf) => {
            let d = take_inode(&mut inodes, dev, sb, lf)?;
            let mut a = DirAppend::load(c, dev, lf, d, &removed)?;
            fill(&mut a, &mut blocks, &mut w)?;
            Some(a)
        }
        LostFound::Create { ino, nlink } => {
            let d = take_inode(&mut inodes, dev, sb, ROOT_INO)?;
            let mut root = DirAppend::load(c, dev, ROOT_INO, d, &removed)?;
            fill(&mut root, &mut blocks, &mut w)?;
            root.add(LOST_FOUND, ino, libc::DT_DIR, &mut blocks, &mut w)?;
            let (ri, rd) = root.finish(t, &mut w);
            inodes.insert(ri, rd);
            let mut d = DiskInode::empty();
            d.mode = libc::S_IFDIR | 0o700;
            d.nlink = nlink;
            d.parent = ROOT_INO;
            d.generation = t.nsec;
            d.atime = t;
            d.btime = t;
            done.push(format!("created /lost+found (inode {ino})"));
            Some(DirAppend {
                ino,
                d,
                ext: ExtentMap::new(),
                idx: DirIndex::new(),
            })
        }
    };
    if let Some(mut lf) = lost_found {
        for &r in &plan.reconnect {
            let kind = c
                .nodes
                .get(&r)
                .map(|n| n.kind)
                .ok_or_else(|| format!("inode {r} vanished"))?;
            let mut name = format!("#{r}");
            let mut k = 0;
            while lf.idx.get(name.as_bytes()).is_some() {
                k += 1;
                name = format!("#{r}.{k}");
            }
            lf.add(name.as_bytes(), r, kind.dtype(), &mut blocks, &mut w)?;
            done.push(format!("reconnected inode {r} to /lost+found as {name}"));
        }
        let (li, ld) = lf.finish(t, &mut w);
        inodes.insert(li, ld);
    }

    for &ino in &plan.free {
        w.push((sb.inode_offset(ino), vec![0u8; INODE_SIZE as usize]));
        let orphan = c.nodes.get(&ino).is_some_and(|n| n.nlink == 0);
        done.push(if orphan {
            format!("reclaimed orphan inode {ino}")
        } else {
            format!("cleared unattached zero-length inode {ino}")
        });
    }
    for cl in c.claims.iter().filter(|cl| freed.contains(&cl.ino)) {
        blocks.release(cl.start, cl.len);
    }
    for (&ino, d) in &inodes {
        if !freed.contains(&ino) {
            w.push((sb.inode_offset(ino), d.encode().to_vec()));
        }
    }
    let mut groups = vec![Group {
        writes: w,
        alone: false,
    }];

    // The bitmap, from the extent maps as repaired.
    let (mut rewritten, mut cleared, mut set) = (0u64, 0u64, 0u64);
    let mut cur = vec![0u8; BLOCK_SIZE as usize];
    for i in 0..sb.bitmap_blocks {
        let want = blocks.bitmap_image(i);
        let off = sb.bitmap_block_offset(i);
        dev.read(off, &mut cur);
        if want == cur {
            continue;
        }
        for (a, b) in cur[..BITMAP_BYTES_PER_BLOCK as usize].iter().zip(&want) {
            cleared += (a & !b).count_ones() as u64;
            set += (!a & b).count_ones() as u64;
        }
        rewritten += 1;
        groups.push(Group {
            writes: vec![(off, want)],
            alone: false,
        });
    }
    if rewritten > 0 {
        done.push(format!(
            "rewrote {rewritten} bitmap blocks from the extent maps ({cleared} blocks freed, {set} marked in use)"
        ));
    }

    if sb.state != STATE_CLEAN {
        let clean = Superblock {
            state: STATE_CLEAN,
            ..sb.clone()
        }
        .encode();
        for off in [0, BLOCK_SIZE] {
            groups.push(Group {
                writes: vec![(off, clean.to_vec())],
                alone: true,
            });
        }
        done.push("marked the filesystem clean".into());
    }

    commit_groups(journal, groups)?;
    journal
        .checkpoint()
        .map_err(|e| format!("journal checkpoint: {e}"))?;
    dev.sync_all().map_err(|e| format!("sync: {e}"))?;
    Ok(done)
}

fn flush(journal: &mut Journal, txn: &mut Transaction) -> Result<(), String> {
    if !txn.is_empty() {
        journal
            .commit(txn)
            .map_err(|e| format!("journal commit: {e}"))?;
        txn.clear();
    }
    Ok(())
}

/// Commits the groups in order, as few transactions as the journal takes.
fn commit_groups(journal: &mut Journal, groups: Vec<Group>) -> Result<(), String> {
    let cap = journal.log_bytes();
    let mut txn = Transaction::new();
    for g in groups {
        let mut gt = Transaction::new();
        for (off, data) in &g.writes {
            gt.write(*off, data);
        }
        // Both lengths count a transaction header: an estimate on the safe side.
        if g.alone || txn.encoded_len() + gt.encoded_len() > cap {
            flush(journal, &mut txn)?;
        }
        for (off, data) in &g.writes {
            let mut one = Transaction::new();
            one.write(*off, data);
            if one.encoded_len() > cap {
                return Err(format!(
                    "a write of {} bytes does not fit in the journal",
                    data.len()
                ));
            }
            if txn.encoded_len() + one.encoded_len() > cap {
                flush(journal, &mut txn)?;
            }
            txn.write(*off, data);
        }
        if g.alone {
            flush(journal, &mut txn)?;
        }
    }
    flush(journal, &mut txn)
}
