//! The one power-cut model of the crate: [`LineModel`], behind both the recording
//! [`Device`](crate::Device) (through its [`Recorder`](crate::Recorder)) and
//! [`MemMedia`](crate::MemMedia); the crash points it keeps ([`DeltaPoint`], and
//! [`FencePoint`], the same point with its durable image); injected faults ([`Fault`]).
//!
//! Persistence is modelled as on x86 with clwb + sfence, after Vinter's x86 model: every
//! 64-byte cache line keeps the ordered list of its stores not yet durable, each store
//! split into pieces that do not cross an 8-byte boundary (the unit x86 writes back
//! atomically, so a larger store may persist in part, piece by piece, in order).
//! - a store appends to its lines' lists (the volatile contents change at once);
//! - a flush marks every store so far of the covered lines as pending;
//! - a fence makes the pending stores durable.
//!
//! A power cut keeps the durable contents plus, for each line, ANY PREFIX of its list:
//! the stores to one line reach the media in program order, and the line can be
//! written back (evicted) at any moment, so a line may be half new, half old. With fence
//! recording on, every fence stores a [`DeltaPoint`]: the lines not yet durable with
//! their full contents and their torn (proper-prefix) contents, i.e. the crash states
//! possible just before that fence, as a delta over the durable contents then.
//!
//! One point, two ways to hold its durable contents: a [`DeltaPoint`] leaves them to the
//! caller, who keeps one image and moves it past each fence
//! ([`DeltaPoint::advance`]), which is what a multi-megabyte recording device with
//! thousands of fences needs (fs/tests/powercut.rs); a [`FencePoint`] carries a copy,
//! which is what the small media of the journal's tests can afford and what lets them
//! take any point on its own. Either way a crash image is built by
//! [`DeltaPoint::add_lines`] and [`DeltaPoint::add_torn`].
//!
//! Failures can be injected ([`Fault`]): the chosen write or flush does not reach the
//! media and is reported by the front end's `take_error`, as a failed write-back would be.

use std::collections::{BTreeMap, BTreeSet};

/// Size of the persistence unit (a cache line).
pub const LINE: usize = 64;
/// Stores persist atomically in naturally aligned pieces of at most this many bytes.
pub const WORD: usize = 8;
/// Torn contents kept per line and fence point at most (evenly sampled beyond that), so
/// a line stored many times between fences does not blow up the recording.
pub const MAX_TORN_PER_LINE: usize = 16;

/// Which operation an injected failure hits (see [`LineModel::fail_after`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A store: it changes the volatile contents but never reaches the media.
    Write,
    /// A flush: its lines are not written back (their stores stay volatile-only until a
    /// later flush that succeeds).
    Flush,
}

/// One store piece: `len` bytes at byte `at` of its line, inside one 8-byte word.
#[derive(Clone, Copy, Debug)]
struct Piece {
    at: u8,
    len: u8,
    bytes: [u8; WORD],
}

impl Piece {
    fn apply(&self, line: &mut [u8; LINE]) {
        let at = usize::from(self.at);
        let len = usize::from(self.len);
        line[at..at + len].copy_from_slice(&self.bytes[..len]);
    }
}

/// A line with stores not yet durable.
#[derive(Debug, Default)]
struct Dirty {
    /// In program order.
    stores: Vec<Piece>,
    /// `stores[..flushed]` are pending: durable at the next fence.
    flushed: usize,
    /// Stored through a mutable slice the model did not see store by store: the stores
    /// are taken from the volatile contents (as 8-byte pieces, in address order) at each
    /// flush and fence, until a fence finds the volatile and durable contents equal.
    opaque: bool,
}

/// The crash states possible just before one fence, as a delta: the durable contents
/// before the fence (the caller keeps them: the image at recording start with
/// [`advance`](Self::advance) of every earlier point applied), plus for each line of
/// `unpersisted` none of its stores, all of them (`unpersisted[i].1`) or a proper prefix
/// (`torn[i][j]`).
#[derive(Clone, Debug)]
pub struct DeltaPoint {
    /// 0-based index of the fence (the fence count before it).
    pub index: u64,
    /// Lines with stores not yet durable, in increasing order, with their contents if
    /// every such store reached the media (the volatile contents at the fence).
    pub unpersisted: Vec<(usize, [u8; LINE])>,
    /// For each line of `unpersisted` (same order): its contents after each proper,
    /// non-empty prefix of those stores, in store order, leaving out contents equal to
    /// none or all of them, repeats of the previous entry, and (beyond
    /// [`MAX_TORN_PER_LINE`]) an even sample.
    pub torn: Vec<Vec<[u8; LINE]>>,
    /// Lines this fence made durable, with the contents that became durable.
    pub made_durable: Vec<(usize, [u8; LINE])>,
}

impl DeltaPoint {
    /// Copies the chosen unpersisted lines (indices into `unpersisted`), complete, into
    /// `image`, which holds the durable contents before this fence.
    pub fn add_lines(&self, image: &mut [u8], chosen: &[usize]) {
        for &i in chosen {
            if let Some((line, content)) = self.unpersisted.get(i) {
                copy_line(image, *line, content);
            }
        }
    }

    /// Copies torn contents `torn[i][j]` of unpersisted line `i` into `image`.
    pub fn add_torn(&self, image: &mut [u8], i: usize, j: usize) {
        if let (Some((line, _)), Some(content)) = (
            self.unpersisted.get(i),
            self.torn.get(i).and_then(|t| t.get(j)),
        ) {
            copy_line(image, *line, content);
        }
    }

    /// Number of torn contents over all lines.
    pub fn torn_count(&self) -> usize {
        self.torn.iter().map(Vec::len).sum()
    }

    /// Moves `durable` (the durable contents before this fence) past the fence.
    pub fn advance(&self, durable: &mut [u8]) {
        for (line, content) in &self.made_durable {
            copy_line(durable, *line, content);
        }
    }
}

fn copy_line(img: &mut [u8], line: usize, content: &[u8; LINE]) {
    let start = line.saturating_mul(LINE);
    let end = start.saturating_add(LINE).min(img.len());
    if start < end {
        img[start..end].copy_from_slice(&content[..end - start]);
    }
}

pub(crate) fn line_of(img: &[u8], line: usize) -> [u8; LINE] {
    let mut out = [0u8; LINE];
    let start = line.saturating_mul(LINE);
    let end = start.saturating_add(LINE).min(img.len());
    if start < end {
        out[..end - start].copy_from_slice(&img[start..end]);
    }
    out
}

/// Line range covering `off..off+len`, clamped to `size` bytes; None if empty.
fn lines(off: u64, len: u64, size: usize) -> Option<std::ops::RangeInclusive<usize>> {
    let end = off.saturating_add(len).min(size as u64);
    if len == 0 || off >= end {
        return None;
    }
    Some((off as usize / LINE)..=((end - 1) as usize / LINE))
}

/// The x86 persistence model of a byte range (see the module doc). It does not hold the
/// volatile contents: the front end (`MemMedia`, daxfs's recording device) does, and
/// passes a reader for them where the model needs them (lines stored opaquely).
pub struct LineModel {
    /// What a power cut now keeps if no store not yet durable reached the media.
    durable: Vec<u8>,
    dirty: BTreeMap<usize, Dirty>,
    /// Lines with pending stores.
    pending: BTreeSet<usize>,
    fences: u64,
    recording: bool,
    points: Vec<DeltaPoint>,
    /// An armed fault: its kind and how many operations of that kind still succeed.
    fault: Option<(Fault, u64)>,
    faults: u64,
    /// Stores and flushes recorded so far (failed ones included).
    stores: u64,
    flushes: u64,
}

impl LineModel {
    /// A model whose durable contents are `bytes`.
    pub fn new(bytes: Vec<u8>) -> LineModel {
        LineModel {
            durable: bytes,
            dirty: BTreeMap::new(),
            pending: BTreeSet::new(),
            fences: 0,
            recording: false,
            points: Vec::new(),
            fault: None,
            faults: 0,
            stores: 0,
            flushes: 0,
        }
    }

    /// Whether the next operation of `kind` is the armed fault (and disarms it).
    fn faulted(&mut self, kind: Fault) -> bool {
        match &mut self.fault {
            Some((k, 0)) if *k == kind => {
                self.fault = None;
                self.faults += 1;
                true
            }
            Some((k, n)) if *k == kind => {
                *n -= 1;
                false
            }
            _ => false,
        }
    }

    /// Records a store of `data` at `off` (bytes beyond the model are ignored). False if
    /// it was the injected fault: then it never reaches the media.
    pub fn store(&mut self, off: u64, data: &[u8]) -> bool {
        self.stores += 1;
        if self.faulted(Fault::Write) {
            return false;
        }
        let size = self.durable.len() as u64;
        let end = off.saturating_add(data.len() as u64).min(size);
        let mut pos = off;
        while pos < end {
            let line = (pos / LINE as u64) as usize;
            let line_end = ((line as u64 + 1) * LINE as u64).min(end);
            let d = self.dirty.entry(line).or_default();
            while pos < line_end {
                let piece_end = ((pos / WORD as u64 + 1) * WORD as u64).min(line_end);
                let len = (piece_end - pos) as usize;
                let from = (pos - off) as usize;
                let mut bytes = [0u8; WORD];
                bytes[..len].copy_from_slice(&data[from..from + len]);
                d.stores.push(Piece {
                    at: (pos % LINE as u64) as u8,
                    len: len as u8,
                    bytes,
                });
                pos = piece_end;
            }
        }
        true
    }

    /// Records that `off..off+len` may be stored to without the model seeing the
    /// stores (a mutable slice): they are read from the volatile contents at each flush
    /// and fence.
    pub fn store_opaque(&mut self, off: u64, len: u64) {
        if let Some(range) = lines(off, len, self.durable.len()) {
            for line in range {
                self.dirty.entry(line).or_default().opaque = true;
            }
        }
    }

    /// Contents of `line` if its first `upto` stores not yet durable reached the media.
    fn content(&self, line: usize, d: &Dirty, upto: usize) -> [u8; LINE] {
        let mut c = line_of(&self.durable, line);
        for p in &d.stores[..upto.min(d.stores.len())] {
            p.apply(&mut c);
        }
        c
    }

    /// Appends the stores of an opaque line that the volatile contents show.
    fn resolve(&mut self, line: usize, volatile: &dyn Fn(usize) -> [u8; LINE]) {
        let Some(d) = self.dirty.get(&line) else {
            return;
        };
        if !d.opaque {
            return;
        }
        let now = self.content(line, d, usize::MAX);
        let v = volatile(line);
        let mut new = Vec::new();
        for w in 0..LINE / WORD {
            let r = w * WORD..(w + 1) * WORD;
            if v[r.clone()] != now[r.clone()] {
                let mut bytes = [0u8; WORD];
                bytes.copy_from_slice(&v[r]);
                new.push(Piece {
                    at: (w * WORD) as u8,
                    len: WORD as u8,
                    bytes,
                });
            }
        }
        if let Some(d) = self.dirty.get_mut(&line) {
            d.stores.extend(new);
        }
    }

    /// Records a flush of `off..off+len`. False if it was the injected fault: then
    /// nothing is written back.
    pub fn flush(&mut self, off: u64, len: u64, volatile: &dyn Fn(usize) -> [u8; LINE]) -> bool {
        self.flushes += 1;
        if self.faulted(Fault::Flush) {
            return false;
        }
        let Some(range) = lines(off, len, self.durable.len()) else {
            return true;
        };
        let dirty: Vec<usize> = self.dirty.range(range).map(|(&l, _)| l).collect();
        for line in dirty {
            self.resolve(line, volatile);
            if let Some(d) = self.dirty.get_mut(&line) {
                d.flushed = d.stores.len();
                self.pending.insert(line);
            }
        }
        true
    }

    /// Records a fence: the pending stores become durable. With recording on, keeps a
    /// [`DeltaPoint`] of the states possible just before it.
    pub fn fence(&mut self, volatile: &dyn Fn(usize) -> [u8; LINE]) {
        let opaque: Vec<usize> = self
            .dirty
            .iter()
            .filter(|(_, d)| d.opaque)
            .map(|(&l, _)| l)
            .collect();
        for line in opaque {
            self.resolve(line, volatile);
        }
        if self.recording {
            let point = self.snapshot();
            self.points.push(point);
        }
        let pending = std::mem::take(&mut self.pending);
        for line in pending {
            let Some(d) = self.dirty.get(&line) else {
                continue;
            };
            let content = self.content(line, d, d.flushed);
            copy_line(&mut self.durable, line, &content);
            let now = line_of(&self.durable, line);
            if let Some(d) = self.dirty.get_mut(&line) {
                d.stores.drain(..d.flushed);
                d.flushed = 0;
                if d.opaque && volatile(line) == now && d.stores.is_empty() {
                    d.opaque = false;
                }
                if d.stores.is_empty() && !d.opaque {
                    self.dirty.remove(&line);
                }
            }
        }
        self.fences += 1;
    }

    /// The point a fence now would keep (lines stored opaquely as of their last flush).
    pub fn snapshot(&self) -> DeltaPoint {
        let mut unpersisted = Vec::with_capacity(self.dirty.len());
        let mut torn = Vec::with_capacity(self.dirty.len());
        for (&line, d) in &self.dirty {
            let none = line_of(&self.durable, line);
            let mut c = none;
            let mut prefixes: Vec<[u8; LINE]> = Vec::new();
            for p in &d.stores {
                p.apply(&mut c);
                if c != none && prefixes.last() != Some(&c) {
                    prefixes.push(c);
                }
            }
            // The last entry is the full contents (or a repeat of an earlier one).
            while prefixes.last() == Some(&c) {
                prefixes.pop();
            }
            if prefixes.len() > MAX_TORN_PER_LINE {
                let n = prefixes.len();
                prefixes = (0..MAX_TORN_PER_LINE)
                    .map(|k| prefixes[k * n / MAX_TORN_PER_LINE])
                    .collect();
            }
            unpersisted.push((line, c));
            torn.push(prefixes);
        }
        let made_durable = self
            .pending
            .iter()
            .filter_map(|&l| {
                self.dirty
                    .get(&l)
                    .map(|d| (l, self.content(l, d, d.flushed)))
            })
            .collect();
        DeltaPoint {
            index: self.fences,
            unpersisted,
            torn,
            made_durable,
        }
    }

    /// What a power cut now keeps if no store not yet durable reached the media.
    pub fn durable(&self) -> &[u8] {
        &self.durable
    }

    /// Lines with stores not yet durable, in increasing order.
    pub fn unpersisted_lines(&self) -> Vec<usize> {
        self.dirty.keys().copied().collect()
    }

    /// Number of fences so far.
    pub fn fence_count(&self) -> u64 {
        self.fences
    }

    /// Starts or stops keeping a [`DeltaPoint`] at every fence.
    pub fn set_recording(&mut self, on: bool) {
        self.recording = on;
    }

    /// Whether a fence now keeps a [`DeltaPoint`].
    pub fn recording(&self) -> bool {
        self.recording
    }

    /// Removes and returns the points kept so far (oldest first).
    pub fn take_points(&mut self) -> Vec<DeltaPoint> {
        std::mem::take(&mut self.points)
    }

    /// Arms one failure: after `after` more operations of `kind` succeed, the next one
    /// fails (see [`Fault`]). Replaces a fault armed earlier and not yet hit.
    pub fn fail_after(&mut self, kind: Fault, after: u64) {
        self.fault = Some((kind, after));
    }

    /// Number of injected failures that happened.
    pub fn fault_count(&self) -> u64 {
        self.faults
    }

    /// Number of operations of `kind` (stores or flushes) recorded so far, so a test
    /// can aim [`fail_after`](Self::fail_after) at each one in turn.
    pub fn op_count(&self, kind: Fault) -> u64 {
        match kind {
            Fault::Write => self.stores,
            Fault::Flush => self.flushes,
        }
    }
}

/// A [`DeltaPoint`] with the durable contents it is a delta over: every crash state
/// possible just before one fence, on its own.
#[derive(Clone, Debug)]
pub struct FencePoint {
    /// The durable contents just before the fence.
    pub durable: Vec<u8>,
    pub delta: DeltaPoint,
}

impl FencePoint {
    /// 0-based index of the fence (value of `fence_count()` before it).
    pub fn index(&self) -> u64 {
        self.delta.index
    }

    /// Image if none of the not-yet-durable lines reached media.
    pub fn image(&self) -> Vec<u8> {
        self.durable.clone()
    }

    /// Line indices that may or may not have reached media.
    pub fn lines(&self) -> Vec<usize> {
        self.delta.unpersisted.iter().map(|(l, _)| *l).collect()
    }

    /// Image if exactly the given not-yet-durable lines reached media (indices that are
    /// not in `unpersisted` are ignored).
    pub fn image_with(&self, lines: &[usize]) -> Vec<u8> {
        self.image_torn(lines, &[])
    }

    /// Line indices with torn contents, and how many each has.
    pub fn torn_lines(&self) -> Vec<(usize, usize)> {
        let d = &self.delta;
        d.unpersisted
            .iter()
            .zip(&d.torn)
            .filter(|(_, t)| !t.is_empty())
            .map(|((l, _), t)| (*l, t.len()))
            .collect()
    }

    /// Image with the given lines complete and, after them, the given (line, torn
    /// index) pairs torn; unknown lines and indices are ignored.
    pub fn image_torn(&self, lines: &[usize], torn: &[(usize, usize)]) -> Vec<u8> {
        let d = &self.delta;
        let position = |line: usize| d.unpersisted.iter().position(|(l, _)| *l == line);
        let mut img = self.durable.clone();
        let chosen: Vec<usize> = lines.iter().filter_map(|&l| position(l)).collect();
        d.add_lines(&mut img, &chosen);
        for &(line, j) in torn {
            if let Some(i) = position(line) {
                d.add_torn(&mut img, i, j);
            }
        }
        img
    }
}
