//! The in-memory inode table: inode number → inode, as a two-level array indexed by
//! the number (inode numbers are dense: slots of the on-media table, handed out lowest
//! first). Against a hash map it costs 8 bytes per inode instead of ~30, finds an inode
//! with one dependent memory access instead of two, and never rehashes: a hash map of
//! 10^6 inodes doubles in one step under the table's write lock, stalling every
//! operation of the filesystem for ~50 ms (docs/BENCHMARKS.md, "Scale").
//!
//! Generic over what it stores (the filesystem stores `Arc<Inode>`), so it knows
//! nothing of the filesystem.

const CHUNK_BITS: u32 = 10;
/// Inodes per second-level array: 8 KiB of pointers.
const CHUNK: usize = 1 << CHUNK_BITS;

struct Chunk<T> {
    /// Occupied slots: the chunk is freed when the last one goes.
    used: usize,
    slots: Box<[Option<T>]>,
}

pub(crate) struct InodeTable<T> {
    chunks: Vec<Option<Chunk<T>>>,
}

impl<T> Default for InodeTable<T> {
    fn default() -> Self {
        InodeTable { chunks: Vec::new() }
    }
}

fn split(ino: u64) -> Option<(usize, usize)> {
    let c = usize::try_from(ino >> CHUNK_BITS).ok()?;
    Some((c, ino as usize & (CHUNK - 1)))
}

impl<T> InodeTable<T> {
    pub fn get(&self, ino: &u64) -> Option<&T> {
        let (c, i) = split(*ino)?;
        self.chunks.get(c)?.as_ref()?.slots[i].as_ref()
    }

    /// Stores `inode` under `ino`; returns the inode it replaces.
    pub fn insert(&mut self, ino: u64, inode: T) -> Option<T> {
        // Inode numbers come from the on-media table (at most u32::MAX slots), so on a
        // 64-bit host `split` cannot fail; if it could, the inode would not be stored.
        let (c, i) = split(ino)?;
        if self.chunks.len() <= c {
            self.chunks.resize_with(c + 1, || None);
        }
        let chunk = self.chunks[c].get_or_insert_with(|| Chunk {
            used: 0,
            slots: (0..CHUNK).map(|_| None).collect(),
        });
        let old = chunk.slots[i].replace(inode);
        if old.is_none() {
            chunk.used += 1;
        }
        old
    }

    pub fn remove(&mut self, ino: &u64) -> Option<T> {
        let (c, i) = split(*ino)?;
        let slot = self.chunks.get_mut(c)?;
        let chunk = slot.as_mut()?;
        let old = chunk.slots[i].take()?;
        chunk.used -= 1;
        if chunk.used == 0 {
            *slot = None;
        }
        Some(old)
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.chunks
            .iter()
            .flatten()
            .flat_map(|c| c.slots.iter().flatten())
    }
}

impl<T> FromIterator<(u64, T)> for InodeTable<T> {
    fn from_iter<I: IntoIterator<Item = (u64, T)>>(iter: I) -> InodeTable<T> {
        let mut t = InodeTable::default();
        for (ino, inode) in iter {
            t.insert(ino, inode);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the tests store: something that knows its number, as an inode does.
    struct Inode {
        ino: u64,
    }

    fn inode(ino: u64) -> Inode {
        Inode { ino }
    }

    #[test]
    fn inserted_inodes_are_found_by_number_and_others_are_not() {
        let mut t = InodeTable::default();
        t.insert(1, inode(1));
        t.insert(5000, inode(5000));
        assert_eq!(t.get(&1).map(|i| i.ino), Some(1));
        assert_eq!(t.get(&5000).map(|i| i.ino), Some(5000));
        assert!(t.get(&2).is_none());
        assert!(t.get(&4999).is_none());
        assert!(t.get(&u64::MAX).is_none());
        assert_eq!(t.values().count(), 2);
    }

    #[test]
    fn insert_over_an_existing_number_returns_the_old_inode_and_keeps_the_count() {
        let mut t = InodeTable::default();
        t.insert(7, inode(7));
        let old = t.insert(7, inode(7));
        assert!(old.is_some());
        assert_eq!(t.values().count(), 1);
    }

    #[test]
    fn removed_inodes_are_gone_and_the_last_one_frees_its_chunk() {
        let mut t = InodeTable::default();
        t.insert(3, inode(3));
        t.insert(4, inode(4));
        assert_eq!(t.remove(&3).map(|i| i.ino), Some(3));
        assert!(t.remove(&3).is_none());
        assert!(t.get(&3).is_none());
        assert_eq!(t.get(&4).map(|i| i.ino), Some(4));
        t.remove(&4);
        assert_eq!(t.values().count(), 0);
        assert!(t.chunks.iter().all(Option::is_none));
    }

    #[test]
    fn values_visits_every_inode_once() {
        let t: InodeTable<Inode> = [1u64, 2, 1500, 70_000]
            .into_iter()
            .map(|n| (n, inode(n)))
            .collect();
        let mut seen: Vec<u64> = t.values().map(|i| i.ino).collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 2, 1500, 70_000]);
    }
}
