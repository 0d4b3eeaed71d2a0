//! A file's extent map: logical block → device block, in memory as an ordered map
//! (O(log n) lookup), on media as unordered 24-byte slots (5 inline in the inode, the
//! rest in a chain of extent blocks). Every change records which slots became dirty so
//! the caller can put exactly those slot writes into its transaction.

use daxfs_format::{Extent, EXTENTS_PER_BLOCK, EXTENT_BLOCK_HEADER, EXTENT_SIZE, INLINE_EXTENTS};
use std::collections::BTreeMap;

/// Where a slot lives on media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotLoc {
    /// Inline slot i of the inode record (rewritten with the inode).
    Inline(usize),
    /// Byte offset on the device.
    Device(u64),
}

/// Maximum blocks of one extent (the on-media length field is u32; keep runs well
/// below it so merges never overflow).
pub const MAX_EXTENT_LEN: u64 = 1 << 30;

#[derive(Debug, Default, Clone)]
pub struct ExtentMap {
    /// lblk → (extent, slot id).
    map: BTreeMap<u64, (Extent, u32)>,
    /// Slot table: ids 0..5 inline, then EXTENTS_PER_BLOCK per extent block. Empty
    /// (with `free`) until the first change: a map with no extents, as most files
    /// have at mount, then costs no allocation (see `materialize`).
    slots: Vec<Extent>,
    free: Vec<u32>,
    dirty: Vec<u32>,
    /// Extent blocks in chain order (device block numbers).
    blocks: Vec<u64>,
}

const EMPTY: Extent = Extent {
    lblk: 0,
    pblk: 0,
    len: 0,
};

/// Why [`ExtentMap::load`] refused the extents read from media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtentMapError {
    /// Two extents start at logical block `lblk`.
    SameStart { lblk: u64 },
    /// An extent starts at `lblk`, inside the one before it.
    Overlap { lblk: u64 },
}

impl std::fmt::Display for ExtentMapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExtentMapError::SameStart { lblk } => {
                write!(f, "two extents start at logical block {lblk}")
            }
            ExtentMapError::Overlap { lblk } => {
                write!(f, "extents overlap at logical block {lblk}")
            }
        }
    }
}

impl std::error::Error for ExtentMapError {}

impl ExtentMap {
    pub fn new() -> ExtentMap {
        ExtentMap::default()
    }

    /// Builds the slot table of a map that has none yet: the inline slots, all free.
    fn materialize(&mut self) {
        if self.slots.is_empty() {
            self.slots = vec![EMPTY; INLINE_EXTENTS];
            self.free = (0..INLINE_EXTENTS as u32).rev().collect();
        }
    }

    /// Rebuilds a map from media: the inline slots, then each extent block's slots.
    /// Fails on overlapping extents.
    pub fn load(
        inline: &[Extent; INLINE_EXTENTS],
        blocks: Vec<(u64, Vec<Option<Extent>>)>,
    ) -> Result<ExtentMap, ExtentMapError> {
        let mut m = ExtentMap::new();
        if blocks.is_empty() && inline.iter().all(|e| e.len == 0) {
            return Ok(m);
        }
        m.materialize();
        m.free.clear();
        let mut all: Vec<(Option<Extent>, u32)> = Vec::new();
        for (i, e) in inline.iter().enumerate() {
            all.push((if e.len == 0 { None } else { Some(*e) }, i as u32));
        }
        for (pblk, slots) in blocks {
            let base = m.slots.len() as u32;
            m.blocks.push(pblk);
            m.slots
                .extend(std::iter::repeat_n(EMPTY, EXTENTS_PER_BLOCK));
            for (j, e) in slots.into_iter().enumerate().take(EXTENTS_PER_BLOCK) {
                all.push((e, base + j as u32));
            }
        }
        for (e, id) in all {
            match e {
                None => m.free.push(id),
                Some(e) => {
                    m.slots[id as usize] = e;
                    if m.map.insert(e.lblk, (e, id)).is_some() {
                        return Err(ExtentMapError::SameStart { lblk: e.lblk });
                    }
                }
            }
        }
        m.free.sort_unstable_by(|a, b| b.cmp(a));
        let mut prev_end = 0;
        for (e, _) in m.map.values() {
            if e.lblk < prev_end {
                return Err(ExtentMapError::Overlap { lblk: e.lblk });
            }
            prev_end = e.end();
        }
        Ok(m)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = Extent> + '_ {
        self.map.values().map(|(e, _)| *e)
    }

    /// The extent containing `lblk`.
    pub fn find(&self, lblk: u64) -> Option<Extent> {
        let (_, (e, _)) = self.map.range(..=lblk).next_back()?;
        (e.end() > lblk).then_some(*e)
    }

    /// The first extent starting at or after `lblk`.
    pub fn next_from(&self, lblk: u64) -> Option<Extent> {
        self.map.range(lblk..).next().map(|(_, (e, _))| *e)
    }

    /// The extent containing `lblk`, or else the next one after it.
    pub fn find_or_next(&self, lblk: u64) -> Option<Extent> {
        self.find(lblk).or_else(|| self.next_from(lblk))
    }

    /// The last extent before `lblk` (ending at or before it).
    pub fn prev_before(&self, lblk: u64) -> Option<Extent> {
        self.map.range(..lblk).next_back().map(|(_, (e, _))| *e)
    }

    pub fn last(&self) -> Option<Extent> {
        self.map.values().next_back().map(|(e, _)| *e)
    }

    pub fn free_slots(&self) -> usize {
        if self.slots.is_empty() {
            INLINE_EXTENTS
        } else {
            self.free.len()
        }
    }

    pub fn extent_blocks(&self) -> &[u64] {
        &self.blocks
    }

    /// Adds an extent block's slots (the caller allocated and initialised the block).
    pub fn add_block(&mut self, pblk: u64) {
        self.materialize();
        let base = self.slots.len() as u32;
        self.blocks.push(pblk);
        self.slots
            .extend(std::iter::repeat_n(EMPTY, EXTENTS_PER_BLOCK));
        for id in (base..base + EXTENTS_PER_BLOCK as u32).rev() {
            self.free.push(id);
        }
        // Prefer low slot ids (inline first).
        self.free.sort_unstable_by(|a, b| b.cmp(a));
    }

    /// Forgets all extent blocks (the caller frees them); only when the map is empty.
    pub fn take_blocks(&mut self) -> Vec<u64> {
        debug_assert!(self.map.is_empty());
        self.materialize();
        let b = std::mem::take(&mut self.blocks);
        self.slots.truncate(INLINE_EXTENTS);
        self.free = (0..INLINE_EXTENTS as u32).rev().collect();
        self.dirty.retain(|&id| (id as usize) < INLINE_EXTENTS);
        b
    }

    fn set_slot(&mut self, id: u32, e: Extent) {
        self.materialize();
        self.slots[id as usize] = e;
        self.dirty.push(id);
    }

    fn take_slot(&mut self) -> Option<u32> {
        self.materialize();
        self.free.pop()
    }

    fn release_slot(&mut self, id: u32) {
        self.set_slot(id, EMPTY);
        self.free.push(id);
    }

    /// Inserts a new extent (must not overlap). Merges with the previous extent when
    /// contiguous on both sides, which needs no slot. Returns false (nothing changed)
    /// when a slot is needed and none is free.
    pub fn insert(&mut self, e: Extent) -> bool {
        debug_assert!(e.len > 0);
        if let Some((&plb, &(p, pid))) = self.map.range(..e.lblk).next_back() {
            if p.end() == e.lblk
                && p.pblk + p.len as u64 == e.pblk
                && p.len as u64 + e.len as u64 <= MAX_EXTENT_LEN
            {
                let merged = Extent {
                    lblk: plb,
                    pblk: p.pblk,
                    len: p.len + e.len,
                };
                self.map.insert(plb, (merged, pid));
                self.set_slot(pid, merged);
                return true;
            }
        }
        let Some(id) = self.take_slot() else {
            return false;
        };
        self.map.insert(e.lblk, (e, id));
        self.set_slot(id, e);
        true
    }

    /// Unmaps logical blocks `start..end`, splitting extents at the edges. Returns the
    /// physical runs (pblk, len) removed, or None (nothing changed) when a split needs a
    /// slot and none is free.
    pub fn remove_range(&mut self, start: u64, end: u64) -> Option<Vec<(u64, u64)>> {
        if start >= end {
            return Some(Vec::new());
        }
        // One extent strictly containing the range on both sides needs a new slot.
        if let Some(e) = self.find(start) {
            if e.lblk < start && e.end() > end && self.free_slots() == 0 {
                return None;
            }
        }
        let mut removed = Vec::new();
        let keys: Vec<u64> = {
            let first = self.find(start).map(|e| e.lblk).unwrap_or(start);
            self.map.range(first..end).map(|(&k, _)| k).collect()
        };
        for k in keys {
            let Some((e, id)) = self.map.remove(&k) else {
                continue;
            };
            let cut_s = e.lblk.max(start);
            let cut_e = e.end().min(end);
            if cut_s >= cut_e {
                self.map.insert(k, (e, id));
                continue;
            }
            removed.push((e.pblk + (cut_s - e.lblk), cut_e - cut_s));
            let head = (cut_s > e.lblk).then(|| Extent {
                lblk: e.lblk,
                pblk: e.pblk,
                len: (cut_s - e.lblk) as u32,
            });
            let tail = (cut_e < e.end()).then(|| Extent {
                lblk: cut_e,
                pblk: e.pblk + (cut_e - e.lblk),
                len: (e.end() - cut_e) as u32,
            });
            match (head, tail) {
                (None, None) => self.release_slot(id),
                (Some(h), None) => {
                    self.map.insert(h.lblk, (h, id));
                    self.set_slot(id, h);
                }
                (None, Some(t)) => {
                    self.map.insert(t.lblk, (t, id));
                    self.set_slot(id, t);
                }
                (Some(h), Some(t)) => {
                    self.map.insert(h.lblk, (h, id));
                    self.set_slot(id, h);
                    // Checked above that a slot is free.
                    let tid = self.take_slot().unwrap_or(id);
                    self.map.insert(t.lblk, (t, tid));
                    self.set_slot(tid, t);
                }
            }
        }
        Some(removed)
    }

    /// Splits the extent containing `lblk` so that an extent starts exactly at `lblk`.
    /// Returns false when a slot is needed and none is free.
    pub fn split_at(&mut self, lblk: u64) -> bool {
        let Some(e) = self.find(lblk) else {
            return true;
        };
        if e.lblk == lblk {
            return true;
        }
        let Some(tid) = self.take_slot() else {
            return false;
        };
        let Some(&(_, id)) = self.map.get(&e.lblk) else {
            return false;
        };
        let h = Extent {
            lblk: e.lblk,
            pblk: e.pblk,
            len: (lblk - e.lblk) as u32,
        };
        let t = Extent {
            lblk,
            pblk: e.pblk + (lblk - e.lblk),
            len: (e.end() - lblk) as u32,
        };
        self.map.insert(h.lblk, (h, id));
        self.set_slot(id, h);
        self.map.insert(t.lblk, (t, tid));
        self.set_slot(tid, t);
        true
    }

    /// Moves every extent starting at or after `from` by `delta` blocks (collapse: the
    /// caller has emptied the range the extents move into).
    pub fn shift(&mut self, from: u64, delta: i64) {
        let moved: Vec<(u64, (Extent, u32))> =
            self.map.range(from..).map(|(&k, &v)| (k, v)).collect();
        for (k, _) in &moved {
            self.map.remove(k);
        }
        for (_, (e, id)) in moved {
            let ne = Extent {
                lblk: (e.lblk as i64 + delta) as u64,
                ..e
            };
            self.map.insert(ne.lblk, (ne, id));
            self.set_slot(id, ne);
        }
    }

    /// Whether slots changed since the last `take_dirty`.
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Slots changed since the last call, with their current content and location.
    pub fn take_dirty(&mut self) -> Vec<(SlotLoc, Extent)> {
        let mut d = std::mem::take(&mut self.dirty);
        d.sort_unstable();
        d.dedup();
        d.into_iter()
            .map(|id| (self.slot_loc(id), self.slots[id as usize]))
            .collect()
    }

    pub fn slot_loc(&self, id: u32) -> SlotLoc {
        let id = id as usize;
        if id < INLINE_EXTENTS {
            return SlotLoc::Inline(id);
        }
        let k = (id - INLINE_EXTENTS) / EXTENTS_PER_BLOCK;
        let j = (id - INLINE_EXTENTS) % EXTENTS_PER_BLOCK;
        SlotLoc::Device(
            self.blocks[k] * daxfs_format::BLOCK_SIZE
                + (EXTENT_BLOCK_HEADER + j * EXTENT_SIZE) as u64,
        )
    }

    /// The inline slots' current content, for the inode record.
    pub fn inline_slots(&self) -> [Extent; INLINE_EXTENTS] {
        let mut a = [EMPTY; INLINE_EXTENTS];
        if !self.slots.is_empty() {
            a.copy_from_slice(&self.slots[..INLINE_EXTENTS]);
        }
        a
    }

    /// Data blocks mapped (sum of extent lengths).
    pub fn mapped_blocks(&self) -> u64 {
        self.map.values().map(|(e, _)| e.len as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(lblk: u64, pblk: u64, len: u32) -> Extent {
        Extent { lblk, pblk, len }
    }

    #[test]
    fn contiguous_inserts_merge_into_one_extent() {
        let mut m = ExtentMap::new();
        assert!(m.insert(ext(0, 100, 2)));
        assert!(m.insert(ext(2, 102, 3)));
        assert_eq!(m.len(), 1);
        assert_eq!(m.find(4), Some(ext(0, 100, 5)));
        assert_eq!(m.find(5), None);
    }

    #[test]
    fn insert_fails_cleanly_without_free_slot() {
        let mut m = ExtentMap::new();
        for i in 0..5 {
            assert!(m.insert(ext(i * 10, 1000 + i * 100, 1)));
        }
        assert!(!m.insert(ext(100, 5000, 1)));
        assert_eq!(m.len(), 5);
        m.add_block(77);
        assert!(m.insert(ext(100, 5000, 1)));
        assert!(matches!(m.slot_loc(5), SlotLoc::Device(o) if o == 77 * 4096 + 24));
    }

    #[test]
    fn remove_middle_splits_extent() {
        let mut m = ExtentMap::new();
        m.insert(ext(0, 100, 10));
        let r = m.remove_range(3, 5).unwrap();
        assert_eq!(r, vec![(103, 2)]);
        assert_eq!(m.find(2), Some(ext(0, 100, 3)));
        assert_eq!(m.find(3), None);
        assert_eq!(m.find(5), Some(ext(5, 105, 5)));
    }

    #[test]
    fn remove_range_spanning_extents() {
        let mut m = ExtentMap::new();
        m.insert(ext(0, 100, 4));
        m.insert(ext(10, 200, 4));
        let r = m.remove_range(2, 12).unwrap();
        assert_eq!(r, vec![(102, 2), (200, 2)]);
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            vec![ext(0, 100, 2), ext(12, 202, 2)]
        );
    }

    #[test]
    fn shift_moves_later_extents() {
        let mut m = ExtentMap::new();
        m.insert(ext(0, 100, 2));
        m.insert(ext(8, 300, 2));
        m.shift(8, -4);
        assert_eq!(m.find(4), Some(ext(4, 300, 2)));
    }

    #[test]
    fn dirty_slots_reflect_changes() {
        let mut m = ExtentMap::new();
        m.insert(ext(0, 100, 1));
        let d = m.take_dirty();
        assert_eq!(d, vec![(SlotLoc::Inline(0), ext(0, 100, 1))]);
        assert!(m.take_dirty().is_empty());
    }

    #[test]
    fn load_rejects_overlap() {
        let mut inline = [EMPTY; INLINE_EXTENTS];
        inline[0] = ext(0, 100, 4);
        inline[1] = ext(2, 200, 4);
        assert!(ExtentMap::load(&inline, vec![]).is_err());
    }
}
