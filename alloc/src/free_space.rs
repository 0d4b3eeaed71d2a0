//! The free-space bitmap of the data area and extent allocation.
//!
//! One bit per data-area block, 1 = in use, stored as `BitVec<u8, Lsb0>` so that the raw
//! bytes are exactly the on-media layout (bit i of byte j = block j*8+i; docs/FORMAT.md).
//! Padding bits past the last block are kept at 1, as on media.
//!
//! Allocation scans 64 blocks at a time (whole used words are skipped), starts at a
//! caller-given goal and wraps around, and keeps a low-water hint (every block below it is
//! in use) so densely used fronts are not rescanned. It never hands out a block whose
//! refcount is not 0 (docs/DESIGN.md, "Block lifetimes"): such a block is counted as a violation, kept marked
//! used in memory (quarantined) and skipped.
//!
//! Not internally synchronized: the filesystem wraps it in a lock.

use std::fmt;
use std::ops::Range;

use bitvec::prelude::*;

use crate::refcount::RefTable;

/// Why a free / mark_used request was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// The range is reversed or reaches past the end of the data area.
    OutOfRange { start: u64, end: u64, len: u64 },
    /// `free` of a block that is not in use (a double free).
    NotInUse { block: u64 },
    /// `mark_used` of a block that is already in use (e.g. claimed by two extents).
    AlreadyInUse { block: u64 },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::OutOfRange { start, end, len } => write!(
                f,
                "block range {start}..{end} is outside the data area (0..{len})"
            ),
            AllocError::NotInUse { block } => {
                write!(f, "data block {block} is already free (double free)")
            }
            AllocError::AlreadyInUse { block } => {
                write!(f, "data block {block} is already in use")
            }
        }
    }
}

impl std::error::Error for AllocError {}

/// The free-space bitmap of the data area. See the module docs.
#[derive(Clone)]
pub struct FreeSpace {
    /// `ceil(len / 8) * 8` bits; bits at `len..` are always 1.
    bits: BitVec<u8, Lsb0>,
    len: u64,
    free: u64,
    /// Every block below this index is in use.
    low_water: u64,
    /// End of the last allocation: a goal for callers without a better one.
    cursor: u64,
    /// Blocks marked used because the allocator found them free with a non-zero refcount.
    quarantined: u64,
}

impl fmt::Debug for FreeSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreeSpace")
            .field("len", &self.len)
            .field("free", &self.free)
            .field("low_water", &self.low_water)
            .field("cursor", &self.cursor)
            .field("quarantined", &self.quarantined)
            .finish()
    }
}

/// A free run found by a scan, `start..end` (maximal unless clipped at the goal).
#[derive(Clone, Copy)]
struct Run {
    start: u64,
    end: u64,
}

impl FreeSpace {
    /// A bitmap of `nblocks` blocks, all free.
    pub fn new_all_free(nblocks: u64) -> Self {
        let nbytes = nblocks.div_ceil(8) as usize;
        Self::from_storage(vec![0u8; nbytes], nblocks)
    }

    /// A bitmap of `nblocks` blocks read from its on-media bytes. Bits past `nblocks` are
    /// ignored. If `bytes` is too short, the missing blocks count as in use: a block whose
    /// state is unknown must never be handed out.
    pub fn from_raw(bytes: &[u8], nblocks: u64) -> Self {
        let nbytes = nblocks.div_ceil(8) as usize;
        let mut storage = vec![0xFFu8; nbytes];
        let n = bytes.len().min(nbytes);
        storage[..n].copy_from_slice(&bytes[..n]);
        Self::from_storage(storage, nblocks)
    }

    fn from_storage(storage: Vec<u8>, nblocks: u64) -> Self {
        let mut bits = BitVec::<u8, Lsb0>::from_vec(storage);
        bits[nblocks as usize..].fill(true);
        let used = bits[..nblocks as usize].count_ones() as u64;
        let mut fs = FreeSpace {
            bits,
            len: nblocks,
            free: nblocks - used,
            low_water: 0,
            cursor: 0,
            quarantined: 0,
        };
        fs.refresh_low_water();
        fs
    }

    /// Number of blocks covered.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if the bitmap covers no block.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of free blocks.
    pub fn free_blocks(&self) -> u64 {
        self.free
    }

    /// Whether block `b` is in use. Blocks past the end count as in use (unavailable).
    pub fn is_used(&self, b: u64) -> bool {
        b >= self.len || self.bits[b as usize]
    }

    /// The on-media bytes: bit i of byte j = block j*8+i, 1 = in use, padding bits 1.
    /// Persist the span [`FreeSpace::byte_span`] gives for each changed range.
    pub fn raw_bytes(&self) -> &[u8] {
        self.bits.as_raw_slice()
    }

    /// The raw bytes a block range touches.
    pub fn byte_span(r: &Range<u64>) -> Range<usize> {
        let start = (r.start / 8) as usize;
        if r.end <= r.start {
            return start..start;
        }
        start..r.end.div_ceil(8) as usize
    }

    /// Where the last allocation ended (0 after wrapping): a goal for callers that have
    /// none better, so successive allocations rotate through the device.
    pub fn next_goal(&self) -> u64 {
        self.cursor
    }

    /// Blocks this bitmap marked used because the allocator found them free with a
    /// non-zero refcount (each also counted as a violation in the `RefTable`). They are
    /// only marked in memory; the on-media bitmap need not record them.
    pub fn quarantined(&self) -> u64 {
        self.quarantined
    }

    /// Finds a free run, marks it used and returns it.
    ///
    /// - `max_len` blocks are wanted (0 is treated as 1); a run of the full length is
    ///   preferred, the first one found scanning from `goal` (wrapping around to 0).
    /// - If `align > 1` and `max_len >= align`, a full run starting at a multiple of `align`
    ///   (a data-area index) is preferred over an unaligned one.
    /// - If no free run of `max_len` exists, the largest free run is returned (at least 1
    ///   block, the first found from `goal` among equals); the caller loops for the rest.
    /// - Returns None only when no block is free.
    ///
    /// A free block whose refcount in `refs` is not 0 is never returned: it is counted via
    /// `refs.note_violation()`, marked used here and the search continues.
    pub fn allocate(
        &mut self,
        goal: u64,
        max_len: u64,
        align: u64,
        refs: &RefTable,
    ) -> Option<Range<u64>> {
        loop {
            let r = self.find(goal, max_len, align)?;
            if let Some(bad) = r.clone().find(|&b| refs.count(b) != 0) {
                refs.note_violation();
                self.bits.set(bad as usize, true);
                self.free -= 1;
                self.quarantined += 1;
                continue;
            }
            self.bits[r.start as usize..r.end as usize].fill(true);
            self.free -= r.end - r.start;
            if r.start == self.low_water {
                self.low_water = r.end;
            }
            self.cursor = if r.end >= self.len { 0 } else { r.end };
            return Some(r);
        }
    }

    /// Marks a used range free. Errors (nothing changed) if the range is out of bounds or
    /// any block in it is already free.
    pub fn free(&mut self, r: Range<u64>) -> Result<(), AllocError> {
        self.check_range(&r)?;
        if let Some(block) = self.next_free(r.start, r.end) {
            return Err(AllocError::NotInUse { block });
        }
        self.bits[r.start as usize..r.end as usize].fill(false);
        self.free += r.end - r.start;
        if r.start < r.end {
            self.low_water = self.low_water.min(r.start);
        }
        Ok(())
    }

    /// Marks a free range used (rebuilding the bitmap from extent maps, repair). Errors
    /// (nothing changed) if the range is out of bounds or any block in it is already used.
    pub fn mark_used(&mut self, r: Range<u64>) -> Result<(), AllocError> {
        self.check_range(&r)?;
        let block = self.next_used(r.start, r.end);
        if block < r.end {
            return Err(AllocError::AlreadyInUse { block });
        }
        self.bits[r.start as usize..r.end as usize].fill(true);
        self.free -= r.end - r.start;
        if r.start == self.low_water {
            self.low_water = r.end;
        }
        Ok(())
    }

    fn check_range(&self, r: &Range<u64>) -> Result<(), AllocError> {
        if r.start > r.end || r.end > self.len {
            return Err(AllocError::OutOfRange {
                start: r.start,
                end: r.end,
                len: self.len,
            });
        }
        Ok(())
    }

    /// Moves the low-water hint up to the first free block (amortized: it only moves
    /// back on `free`).
    fn refresh_low_water(&mut self) {
        self.low_water = self.next_free(self.low_water, self.len).unwrap_or(self.len);
    }

    /// Chooses the run `allocate` returns, without marking it.
    fn find(&mut self, goal: u64, max_len: u64, align: u64) -> Option<Range<u64>> {
        if self.free == 0 {
            return None;
        }
        self.refresh_low_water();
        let want = max_len.clamp(1, self.len);
        let align = if align > 1 && want >= align { align } else { 1 };
        let goal = if goal >= self.len { 0 } else { goal };
        // Blocks below the low-water mark are all used: start there if the goal is lower.
        let start = goal.max(self.low_water);

        let len = self.len;
        // Where a run starting at `s` must reach to hold a (possibly aligned) full fit.
        // Runs are only measured up to there, so a long free run is not scanned to its
        // end: the scan stays proportional to the used space it crosses.
        let aligned_start = move |s: u64| s.div_ceil(align).checked_mul(align);
        let reach = move |s: u64| {
            aligned_start(s)
                .and_then(|a| a.checked_add(want))
                .map_or(len, |e| e.min(len))
        };

        let mut first_full: Option<u64> = None;
        let mut largest: Option<Run> = None;
        // Returns the start of the fit if this run settles the search.
        let mut consider = |run: Run| -> Option<u64> {
            let run_len = run.end - run.start;
            if let Some(a) = aligned_start(run.start) {
                if a < run.end && run.end - a >= want {
                    return Some(a);
                }
            }
            if run_len >= want {
                // Only reached with align > 1: remember the first unaligned full fit.
                first_full.get_or_insert(run.start);
            } else {
                match largest {
                    Some(l) if run_len <= l.end - l.start => {}
                    _ => largest = Some(run),
                }
            }
            None
        };
        // First the runs starting at or after the goal (the first one clipped at the goal),
        // then, wrapping, the runs starting below it, seen whole: a free run that straddles
        // the goal may hold a full-length fit the clipped view misses.
        let found = self
            .scan_runs(start, len, &reach, &mut consider)
            .or_else(|| self.scan_runs(self.low_water, start, &reach, &mut consider));
        if let Some(s) = found.or(first_full) {
            return Some(s..s + want);
        }
        largest.map(|l| l.start..l.end.min(l.start + want))
    }

    /// Calls `f` on each free run starting in `from..start_limit` until `f` returns Some.
    /// A run ends at the first used block, but is measured no further than
    /// `reach(run start)`.
    fn scan_runs(
        &self,
        from: u64,
        start_limit: u64,
        reach: &impl Fn(u64) -> u64,
        f: &mut impl FnMut(Run) -> Option<u64>,
    ) -> Option<u64> {
        let mut pos = from;
        while pos < start_limit {
            let start = self.next_free(pos, start_limit)?;
            let end = self.next_used(start, reach(start));
            if let Some(s) = f(Run { start, end }) {
                return Some(s);
            }
            pos = end;
        }
        None
    }

    /// The 64 bits of blocks `w*64 .. w*64+64` (bit k = block w*64+k); past the storage
    /// the bits read as used.
    fn word(&self, w: u64) -> u64 {
        let raw = self.bits.as_raw_slice();
        let i = (w * 8) as usize;
        if let Some(Ok(bytes)) = raw.get(i..i + 8).map(<[u8; 8]>::try_from) {
            return u64::from_le_bytes(bytes);
        }
        let mut buf = [0xFFu8; 8];
        if let Some(tail) = raw.get(i..) {
            let n = tail.len().min(8);
            buf[..n].copy_from_slice(&tail[..n]);
        }
        u64::from_le_bytes(buf)
    }

    /// The first free block in `from..end`, scanning a word at a time.
    fn next_free(&self, from: u64, end: u64) -> Option<u64> {
        let mut pos = from;
        while pos < end {
            let w = pos / 64;
            let zeros = !self.word(w) & (u64::MAX << (pos % 64));
            if zeros != 0 {
                let b = w * 64 + u64::from(zeros.trailing_zeros());
                return (b < end).then_some(b);
            }
            pos = (w + 1) * 64;
        }
        None
    }

    /// The first used block in `from..end`, or `end` if there is none.
    fn next_used(&self, from: u64, end: u64) -> u64 {
        let mut pos = from;
        while pos < end {
            let w = pos / 64;
            let ones = self.word(w) & (u64::MAX << (pos % 64));
            if ones != 0 {
                return (w * 64 + u64::from(ones.trailing_zeros())).min(end);
            }
            pos = (w + 1) * 64;
        }
        end
    }
}

#[cfg(test)]
// Tests describe bitmaps as lists of used ranges, often of one range.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    /// A tiny deterministic PRNG for property-style tests.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn alloc(fs: &mut FreeSpace, goal: u64, len: u64, align: u64) -> Option<Range<u64>> {
        let refs = RefTable::new(fs.len());
        fs.allocate(goal, len, align, &refs)
    }

    /// A bitmap of `n` blocks with exactly the given ranges used.
    fn with_used(n: u64, used: &[Range<u64>]) -> FreeSpace {
        let mut fs = FreeSpace::new_all_free(n);
        for r in used {
            assert!(fs.mark_used(r.clone()).is_ok());
        }
        fs
    }

    #[test]
    fn new_bitmap_has_every_block_free() {
        let fs = FreeSpace::new_all_free(100);
        assert_eq!(fs.len(), 100);
        assert_eq!(fs.free_blocks(), 100);
        assert!((0..100).all(|b| !fs.is_used(b)));
    }

    #[test]
    fn blocks_past_the_end_count_as_used() {
        let fs = FreeSpace::new_all_free(10);
        assert!(fs.is_used(10));
        assert!(fs.is_used(u64::MAX));
    }

    #[test]
    fn raw_bytes_follow_the_on_media_bit_order() {
        let fs = with_used(16, &[9..10]);
        assert_eq!(fs.raw_bytes(), &[0x00, 0x02]);
    }

    #[test]
    fn raw_bytes_set_padding_bits_past_the_end() {
        let fs = FreeSpace::new_all_free(10);
        assert_eq!(fs.raw_bytes(), &[0x00, 0xFC]);
    }

    #[test]
    fn from_raw_ignores_bits_past_the_end() {
        let fs = FreeSpace::from_raw(&[0x01, 0x00, 0xFF], 10);
        assert_eq!(fs.free_blocks(), 9);
        assert!(fs.is_used(0));
        assert_eq!(fs.raw_bytes(), &[0x01, 0xFC]);
    }

    #[test]
    fn from_raw_treats_missing_bytes_as_used() {
        let fs = FreeSpace::from_raw(&[0x00], 16);
        assert_eq!(fs.free_blocks(), 8);
        assert!(fs.is_used(8) && fs.is_used(15));
    }

    #[test]
    fn from_raw_round_trips_raw_bytes() {
        let fs = with_used(1000, &[3..70, 500..501, 998..1000]);
        let back = FreeSpace::from_raw(fs.raw_bytes(), 1000);
        assert_eq!(back.raw_bytes(), fs.raw_bytes());
        assert_eq!(back.free_blocks(), fs.free_blocks());
    }

    #[test]
    fn empty_bitmap_allocates_nothing() {
        let mut fs = FreeSpace::new_all_free(0);
        assert!(fs.is_empty());
        assert_eq!(alloc(&mut fs, 0, 1, 1), None);
    }

    #[test]
    fn allocate_takes_a_full_run_at_the_goal() {
        let mut fs = FreeSpace::new_all_free(1000);
        assert_eq!(alloc(&mut fs, 100, 50, 1), Some(100..150));
        assert_eq!(fs.free_blocks(), 950);
        assert!((100..150).all(|b| fs.is_used(b)));
        assert!(!fs.is_used(99) && !fs.is_used(150));
    }

    #[test]
    fn allocate_skips_used_blocks_after_the_goal() {
        let mut fs = with_used(1000, &[100..120]);
        assert_eq!(alloc(&mut fs, 100, 10, 1), Some(120..130));
    }

    #[test]
    fn allocate_wraps_around_to_zero() {
        let mut fs = with_used(1000, &[500..1000]);
        assert_eq!(alloc(&mut fs, 600, 10, 1), Some(0..10));
    }

    #[test]
    fn allocate_finds_a_full_run_straddling_the_goal() {
        // Free 5..15 only; from goal 10 the clipped view 10..15 is too short.
        let mut fs = with_used(20, &[0..5, 15..20]);
        assert_eq!(alloc(&mut fs, 10, 8, 1), Some(5..13));
    }

    #[test]
    fn allocate_treats_a_goal_past_the_end_as_zero() {
        let mut fs = FreeSpace::new_all_free(100);
        assert_eq!(alloc(&mut fs, 5000, 4, 1), Some(0..4));
    }

    #[test]
    fn allocate_treats_zero_length_as_one_block() {
        let mut fs = FreeSpace::new_all_free(100);
        assert_eq!(alloc(&mut fs, 7, 0, 1), Some(7..8));
    }

    #[test]
    fn allocate_prefers_an_aligned_start() {
        let mut fs = FreeSpace::new_all_free(4096);
        assert_eq!(alloc(&mut fs, 1, 512, 512), Some(512..1024));
    }

    #[test]
    fn allocate_prefers_an_aligned_run_after_wrapping_over_an_unaligned_one() {
        // From goal 1100 only an unaligned full run is free (1100..1900 holds no 512-aligned
        // 512 blocks); 0..512 is aligned.
        let mut fs = with_used(1900, &[512..1100]);
        assert_eq!(alloc(&mut fs, 1100, 512, 512), Some(0..512));
    }

    #[test]
    fn allocate_falls_back_to_an_unaligned_full_run() {
        let mut fs = with_used(2048, &[0..100, 700..2048]);
        assert_eq!(alloc(&mut fs, 0, 512, 512), Some(100..612));
    }

    #[test]
    fn allocate_ignores_alignment_for_short_requests() {
        let mut fs = FreeSpace::new_all_free(2048);
        assert_eq!(alloc(&mut fs, 3, 8, 512), Some(3..11));
    }

    #[test]
    fn allocate_returns_the_largest_shorter_run_when_no_full_run_exists() {
        let mut fs = with_used(100, &[0..10, 13..20, 27..30, 33..100]);
        // free runs: 10..13 (3), 20..27 (7), 30..33 (3)
        assert_eq!(alloc(&mut fs, 25, 50, 1), Some(20..27));
        // among equal runs, the first one found from the goal
        assert_eq!(alloc(&mut fs, 25, 50, 1), Some(30..33));
        assert_eq!(alloc(&mut fs, 25, 50, 1), Some(10..13));
        assert_eq!(alloc(&mut fs, 25, 50, 1), None);
        assert_eq!(fs.free_blocks(), 0);
    }

    #[test]
    fn allocate_returns_none_only_when_full() {
        let mut fs = with_used(64, &[0..63]);
        assert_eq!(alloc(&mut fs, 0, 10, 1), Some(63..64));
        assert_eq!(alloc(&mut fs, 0, 10, 1), None);
    }

    #[test]
    fn allocate_never_hands_out_a_block_with_a_nonzero_refcount() {
        let mut fs = FreeSpace::new_all_free(100);
        let refs = RefTable::new(100);
        assert!(refs.map(12));
        assert_eq!(fs.allocate(10, 5, 1, &refs), Some(13..18));
        assert_eq!(refs.stats().violations, 1);
        assert!(fs.is_used(12), "the violating block stays marked used");
        assert_eq!(fs.quarantined(), 1);
        assert_eq!(fs.free_blocks(), 100 - 5 - 1);
    }

    #[test]
    fn allocate_returns_none_when_every_free_block_is_referenced() {
        let mut fs = with_used(8, &[0..6]);
        let refs = RefTable::new(8);
        refs.map(6);
        refs.map(7);
        assert_eq!(fs.allocate(0, 2, 1, &refs), None);
        assert_eq!(refs.stats().violations, 2);
    }

    #[test]
    fn next_goal_rotates_past_the_last_allocation() {
        let mut fs = FreeSpace::new_all_free(100);
        assert_eq!(alloc(&mut fs, 90, 10, 1), Some(90..100));
        assert_eq!(fs.next_goal(), 0);
        assert_eq!(alloc(&mut fs, 10, 5, 1), Some(10..15));
        assert_eq!(fs.next_goal(), 15);
    }

    #[test]
    fn free_releases_used_blocks() {
        let mut fs = with_used(100, &[10..20]);
        assert!(fs.free(12..15).is_ok());
        assert_eq!(fs.free_blocks(), 93);
        assert!(!fs.is_used(12) && fs.is_used(15));
        assert_eq!(alloc(&mut fs, 0, 3, 1), Some(0..3));
    }

    #[test]
    fn freed_blocks_below_the_hint_are_found_again() {
        let mut fs = FreeSpace::new_all_free(200);
        assert_eq!(alloc(&mut fs, 0, 200, 1), Some(0..200));
        assert!(fs.free(5..6).is_ok());
        assert_eq!(alloc(&mut fs, 150, 1, 1), Some(5..6));
    }

    #[test]
    fn double_free_is_refused_and_changes_nothing() {
        let mut fs = with_used(100, &[10..20]);
        let before = fs.raw_bytes().to_vec();
        assert_eq!(fs.free(15..25), Err(AllocError::NotInUse { block: 20 }));
        assert_eq!(fs.raw_bytes(), &before[..]);
        assert_eq!(fs.free_blocks(), 90);
    }

    #[test]
    fn out_of_range_requests_are_refused() {
        let mut fs = FreeSpace::new_all_free(100);
        let err = AllocError::OutOfRange {
            start: 90,
            end: 101,
            len: 100,
        };
        assert_eq!(fs.mark_used(90..101), Err(err.clone()));
        assert_eq!(fs.free(90..101), Err(err));
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 5..3;
        assert!(matches!(
            fs.mark_used(reversed),
            Err(AllocError::OutOfRange { .. })
        ));
        assert_eq!(fs.free_blocks(), 100);
    }

    #[test]
    fn mark_used_refuses_blocks_already_in_use() {
        let mut fs = with_used(100, &[10..20]);
        assert_eq!(
            fs.mark_used(0..11),
            Err(AllocError::AlreadyInUse { block: 10 })
        );
        assert!(!fs.is_used(0));
        assert_eq!(fs.free_blocks(), 90);
    }

    #[test]
    fn empty_ranges_are_accepted_and_change_nothing() {
        let mut fs = FreeSpace::new_all_free(10);
        assert!(fs.mark_used(4..4).is_ok());
        assert!(fs.free(10..10).is_ok());
        assert_eq!(fs.free_blocks(), 10);
    }

    #[test]
    fn errors_display_a_clear_message() {
        let e = AllocError::NotInUse { block: 7 };
        assert_eq!(e.to_string(), "data block 7 is already free (double free)");
        let boxed: Box<dyn std::error::Error> = Box::new(AllocError::AlreadyInUse { block: 3 });
        assert!(boxed.to_string().contains("already in use"));
    }

    #[test]
    fn byte_span_covers_the_touched_bytes() {
        assert_eq!(FreeSpace::byte_span(&(0..8)), 0..1);
        assert_eq!(FreeSpace::byte_span(&(7..9)), 0..2);
        assert_eq!(FreeSpace::byte_span(&(8..16)), 1..2);
        assert_eq!(FreeSpace::byte_span(&(17..17)), 2..2);
    }

    #[test]
    fn allocate_finds_the_last_free_block_of_a_large_nearly_full_device() {
        let n = 1u64 << 24; // 16 Mi blocks = 64 GiB of data
        let mut fs = with_used(n, &[0..n - 1]);
        let start = std::time::Instant::now();
        assert_eq!(alloc(&mut fs, 12345, 512, 512), Some(n - 1..n));
        // Generous bound even for a debug build on a loaded machine; a bit-by-bit scan
        // of the same region is far slower.
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    /// Free runs of a model bitmap, maximal.
    fn model_runs(model: &[bool]) -> Vec<Range<u64>> {
        let mut runs = Vec::new();
        let mut i = 0;
        while i < model.len() {
            if model[i] {
                i += 1;
                continue;
            }
            let s = i;
            while i < model.len() && !model[i] {
                i += 1;
            }
            runs.push(s as u64..i as u64);
        }
        runs
    }

    fn model_bytes(model: &[bool]) -> Vec<u8> {
        let mut bytes = vec![0xFFu8; model.len().div_ceil(8)];
        for (b, &used) in model.iter().enumerate() {
            if !used {
                bytes[b / 8] &= !(1 << (b % 8));
            }
        }
        bytes
    }

    #[test]
    fn random_operations_match_a_model() {
        let mut rng = XorShift(0x0123_4567_89AB_CDEF);
        for round in 0..40 {
            let n = 1 + rng.below(3000);
            let mut fs = FreeSpace::new_all_free(n);
            let mut model = vec![false; n as usize];
            let mut allocated: Vec<Range<u64>> = Vec::new();
            for _ in 0..300 {
                if rng.below(3) > 0 || allocated.is_empty() {
                    let goal = rng.below(n + 10);
                    let span = if rng.below(4) == 0 { 1200 } else { 40 };
                    let want = 1 + rng.below(span);
                    let align = [1, 1, 8, 64, 512][rng.below(5) as usize];
                    let runs = model_runs(&model);
                    let got = alloc(&mut fs, goal, want, align);
                    let Some(r) = got else {
                        assert!(runs.is_empty(), "round {round}: None with free blocks");
                        continue;
                    };
                    assert!(r.start < r.end && r.end <= n && r.end - r.start <= want);
                    assert!(
                        (r.start..r.end).all(|b| !model[b as usize]),
                        "round {round}: handed out a used block"
                    );
                    let eff = want.min(n);
                    let full = runs.iter().any(|x| x.end - x.start >= eff);
                    if full {
                        assert_eq!(r.end - r.start, eff, "round {round}: full run not taken");
                    } else {
                        let largest = runs.iter().map(|x| x.end - x.start).max();
                        assert_eq!(Some(r.end - r.start), largest, "round {round}");
                    }
                    if align > 1 && eff >= align {
                        let aligned_fit = runs.iter().any(|x| {
                            let a = x.start.div_ceil(align) * align;
                            a < x.end && x.end - a >= eff
                        });
                        if aligned_fit {
                            assert_eq!(r.start % align, 0, "round {round}: aligned fit missed");
                        }
                    }
                    for b in r.clone() {
                        model[b as usize] = true;
                    }
                    allocated.push(r);
                } else {
                    let i = rng.below(allocated.len() as u64) as usize;
                    let r = allocated.swap_remove(i);
                    // Free a random sub-range; keep the rest allocated.
                    let s = r.start + rng.below(r.end - r.start);
                    let e = s + 1 + rng.below(r.end - s);
                    assert!(fs.free(s..e).is_ok());
                    assert!(fs.free(s..e).is_err(), "double free accepted");
                    for b in s..e {
                        model[b as usize] = false;
                    }
                    if r.start < s {
                        allocated.push(r.start..s);
                    }
                    if e < r.end {
                        allocated.push(e..r.end);
                    }
                }
                let free = model.iter().filter(|&&u| !u).count() as u64;
                assert_eq!(fs.free_blocks(), free);
            }
            assert_eq!(fs.raw_bytes(), &model_bytes(&model)[..]);
            let back = FreeSpace::from_raw(fs.raw_bytes(), n);
            assert_eq!(back.free_blocks(), fs.free_blocks());
        }
    }

    #[test]
    fn random_stray_references_are_never_handed_out() {
        let mut rng = XorShift(0x5151_7777_0000_ABCD);
        for _ in 0..50 {
            let n = 1 + rng.below(2000);
            let mut fs = FreeSpace::new_all_free(n);
            let refs = RefTable::new(n);
            for _ in 0..rng.below(30) {
                refs.map(rng.below(n)); // a stray reference on a free block
            }
            let before = refs.stats().violations; // repeated maps count too
            let mut handed_out = 0;
            while let Some(r) = fs.allocate(rng.below(n), 1 + rng.below(600), 64, &refs) {
                assert!(r.clone().all(|b| refs.count(b) == 0));
                handed_out += r.end - r.start;
            }
            let stray = (0..n).filter(|&b| refs.count(b) != 0).count() as u64;
            assert_eq!(fs.quarantined(), stray);
            assert_eq!(refs.stats().violations - before, stray);
            assert_eq!(handed_out + stray, n);
            assert_eq!(fs.free_blocks(), 0);
        }
    }

    #[test]
    fn allocate_prefers_a_full_run_at_or_after_the_goal() {
        let mut rng = XorShift(0xFEED_FACE_CAFE_BEEF);
        for _ in 0..200 {
            let n = 64 + rng.below(2000);
            let mut fs = FreeSpace::new_all_free(n);
            let mut model = vec![false; n as usize];
            for _ in 0..rng.below(40) {
                let s = rng.below(n);
                let e = (s + 1 + rng.below(60)).min(n);
                if (s..e).all(|b| !model[b as usize]) {
                    assert!(fs.mark_used(s..e).is_ok());
                    for b in s..e {
                        model[b as usize] = true;
                    }
                }
            }
            let goal = rng.below(n);
            let want = 1 + rng.below(30);
            let after_goal = (goal..n.saturating_sub(want - 1))
                .any(|s| (s..s + want).all(|b| !model[b as usize]));
            if let Some(r) = alloc(&mut fs, goal, want, 1) {
                if after_goal {
                    assert!(r.start >= goal && r.end - r.start == want);
                    // and it is the first such start
                    assert!((goal..r.start)
                        .all(|s| { s + want > n || (s..s + want).any(|b| model[b as usize]) }));
                }
            }
        }
    }
}
