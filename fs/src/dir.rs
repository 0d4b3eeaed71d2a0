//! A directory's in-memory index: name → entry (hashed, so lookup and create never
//! scan the directory), and per directory block a 64-bit occupancy mask of its slots so
//! a free run for a new entry is found in O(log n).

use daxfs_format::{dirent_slots, DIR_SLOTS_PER_BLOCK};
use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

/// Longest name kept inside the index's table itself.
const SHORT_NAME: usize = 22;

/// A name as the index keeps it: short names (most of them) inline in the hash table,
/// so a lookup reads no separate allocation and an entry costs no heap block of its
/// own; longer ones on the heap.
#[derive(Debug, Clone)]
enum Name {
    Short { len: u8, bytes: [u8; SHORT_NAME] },
    Long(Box<[u8]>),
}

impl Name {
    fn new(name: &[u8]) -> Name {
        if name.len() <= SHORT_NAME {
            let mut bytes = [0u8; SHORT_NAME];
            bytes[..name.len()].copy_from_slice(name);
            Name::Short {
                len: name.len() as u8,
                bytes,
            }
        } else {
            Name::Long(name.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Short { len, bytes } => &bytes[..*len as usize],
            Name::Long(b) => b,
        }
    }
}

// Hash and Eq as the bytes, so the table can be probed with a plain `&[u8]`.
impl Hash for Name {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_bytes().hash(h);
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirSlot {
    pub ino: u64,
    pub ftype: u8,
    pub block: u32,
    pub slot: u8,
}

#[derive(Debug, Default, Clone)]
pub struct DirIndex {
    names: HashMap<Name, DirSlot>,
    /// Per block: bit i set = slot i in use (slot 0 is the block header).
    occupancy: Vec<u64>,
    /// Blocks with at least one free slot.
    not_full: BTreeSet<u32>,
    subdirs: u64,
}

/// A mask of `n` consecutive slots starting at `s`.
fn run_mask(s: usize, n: usize) -> u64 {
    (if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }) << s
}

/// First slot of a run of `n` free slots in `occ`, if any.
fn find_run(occ: u64, n: usize) -> Option<usize> {
    (1..=DIR_SLOTS_PER_BLOCK - n).find(|&s| occ & run_mask(s, n) == 0)
}

/// Why [`DirIndex::load_entry`] refused an entry read from media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirLoadError {
    /// The entry's slots overlap another entry's.
    Overlap,
    /// Another entry has the same name (lossily decoded).
    Duplicate(String),
}

impl std::fmt::Display for DirLoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirLoadError::Overlap => f.write_str("directory entries overlap"),
            DirLoadError::Duplicate(name) => write!(f, "duplicate directory entry {name:?}"),
        }
    }
}

impl std::error::Error for DirLoadError {}

impl DirIndex {
    pub fn new() -> DirIndex {
        DirIndex::default()
    }

    /// Room for `n` more entries without growing the table.
    pub fn reserve(&mut self, n: usize) {
        self.names.reserve(n);
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn blocks(&self) -> usize {
        self.occupancy.len()
    }

    /// Number of entries that are directories (for the parent's link count).
    pub fn subdirs(&self) -> u64 {
        self.subdirs
    }

    pub fn get(&self, name: &[u8]) -> Option<DirSlot> {
        self.names.get(name).copied()
    }

    /// Appends an empty block; returns its index.
    pub fn add_block(&mut self) -> u32 {
        let i = self.occupancy.len() as u32;
        self.occupancy.push(1);
        self.not_full.insert(i);
        i
    }

    /// Where an entry of `name_len` bytes fits, without changing anything.
    pub fn find_space(&self, name_len: usize) -> Option<(u32, u8)> {
        let n = dirent_slots(name_len);
        // Bounded probe: a few not-full blocks; else the caller appends a block.
        for &b in self.not_full.iter().take(8) {
            if let Some(s) = find_run(self.occupancy[b as usize], n) {
                return Some((b, s as u8));
            }
        }
        None
    }

    /// Records an entry at a place returned by `find_space` (or in a new block).
    pub fn insert(&mut self, name: &[u8], e: DirSlot) {
        let n = dirent_slots(name.len());
        let occ = &mut self.occupancy[e.block as usize];
        *occ |= run_mask(e.slot as usize, n);
        if *occ == u64::MAX {
            self.not_full.remove(&e.block);
        }
        if e.ftype == libc::DT_DIR {
            self.subdirs += 1;
        }
        self.names.insert(Name::new(name), e);
    }

    /// Removes an entry; returns it and how many slots it used.
    pub fn remove(&mut self, name: &[u8]) -> Option<(DirSlot, usize)> {
        let e = self.names.remove(name)?;
        let n = dirent_slots(name.len());
        self.occupancy[e.block as usize] &= !run_mask(e.slot as usize, n);
        self.not_full.insert(e.block);
        if e.ftype == libc::DT_DIR {
            self.subdirs -= 1;
        }
        Some((e, n))
    }

    /// Marks slots used while loading from media (validation of overlaps).
    pub fn load_entry(&mut self, name: &[u8], e: DirSlot) -> Result<(), DirLoadError> {
        let n = dirent_slots(name.len());
        while self.occupancy.len() <= e.block as usize {
            self.add_block();
        }
        if self.occupancy[e.block as usize] & run_mask(e.slot as usize, n) != 0 {
            return Err(DirLoadError::Overlap);
        }
        if self.names.contains_key(name) {
            return Err(DirLoadError::Duplicate(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
        self.insert(name, e);
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &DirSlot)> {
        self.names.iter().map(|(k, v)| (k.as_bytes(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(block: u32, slot: u8) -> DirSlot {
        DirSlot {
            ino: 5,
            ftype: libc::DT_REG,
            block,
            slot,
        }
    }

    #[test]
    fn new_directory_has_no_space_until_a_block_is_added() {
        let mut d = DirIndex::new();
        assert_eq!(d.find_space(10), None);
        d.add_block();
        assert_eq!(d.find_space(10), Some((0, 1)));
    }

    #[test]
    fn entries_fill_a_block_then_need_another() {
        let mut d = DirIndex::new();
        d.add_block();
        for i in 0..63 {
            let name = format!("f{i}");
            let (b, s) = d.find_space(name.len()).unwrap();
            d.insert(name.as_bytes(), slot(b, s));
        }
        assert_eq!(d.find_space(1), None);
        assert_eq!(d.len(), 63);
    }

    #[test]
    fn removed_slots_are_reused() {
        let mut d = DirIndex::new();
        d.add_block();
        let long = vec![b'x'; 255];
        let (b, s) = d.find_space(255).unwrap();
        d.insert(&long, slot(b, s));
        assert_eq!(d.find_space(1), Some((0, 6)));
        assert_eq!(d.remove(&long).map(|(e, n)| (e.slot, n)), Some((1, 5)));
        assert_eq!(d.find_space(1), Some((0, 1)));
    }

    #[test]
    fn long_and_short_names_are_found_by_their_bytes() {
        let mut d = DirIndex::new();
        d.add_block();
        let short = vec![b's'; SHORT_NAME];
        let long = vec![b'l'; SHORT_NAME + 1];
        d.insert(&short, slot(0, 1));
        d.insert(&long, slot(0, 2));
        assert_eq!(d.get(&short).map(|e| e.slot), Some(1));
        assert_eq!(d.get(&long).map(|e| e.slot), Some(2));
        assert_eq!(d.get(&short[1..]), None);
    }

    #[test]
    fn subdir_count_follows_directory_entries() {
        let mut d = DirIndex::new();
        d.add_block();
        d.insert(
            b"a",
            DirSlot {
                ino: 2,
                ftype: libc::DT_DIR,
                block: 0,
                slot: 1,
            },
        );
        assert_eq!(d.subdirs(), 1);
        d.remove(b"a");
        assert_eq!(d.subdirs(), 0);
    }
}
