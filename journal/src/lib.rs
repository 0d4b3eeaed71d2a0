//! daxfs-journal: the metadata redo journal over a persistent byte region.
//!
//! This crate owns the journal's on-media format, transactions, commit, replay at
//! mount and checkpoints. It knows nothing of inodes or directories: a transaction is
//! a list of (device offset, bytes) writes to metadata, made durable in the journal
//! before they are applied to their home locations.
//!
//! The layout is documented in docs/FORMAT.md ("Journal"). In short: two header copies
//! in the region's first block, then a log area holding transactions back to back, each
//! `[header][records][padding][commit record]`. `commit` writes a transaction, flushes,
//! fences once, then applies the records home, flushes and fences again. `open` replays
//! the valid transactions from the header's tail (none when they end at a torn one: they
//! are already home) and checkpoints; it refuses a damaged log (a committed transaction
//! failing its checks with intact later ones: replaying up to it would put older
//! metadata over newer), which [`Journal::recover`] (fsck) handles.
//!
//! `commit_batch` writes several [`Transaction`]s as one journal transaction (one commit
//! record, one flush/fence sequence): the group commit of the fs batches concurrent
//! committers this way. [`LogSize`] tells the caller how to split a batch that would not
//! fit the log.
//!
//! It writes through [`daxfs_pmem::Media`]: the device mapping in daxfs, the crash
//! model's in-memory media (`daxfs_pmem::MemMedia`) in tests.
#![forbid(unsafe_code)]

mod cursor;
mod error;
mod layout;
mod txn;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use cursor::{CommittedTxn, LogCursor, Poll};
use daxfs_pmem::Media;
pub use error::{Damage, JournalError};
pub use txn::{LogSize, Transaction};

use daxfs_pmem::codec::{crc32_parts, crc32c, crc_with_hole, get_u32, get_u64, put_u32, put_u64};
use layout::{
    commit_rec, rec, round_up, txn_hdr, Header, COMMIT_MAGIC, COMMIT_SIZE, COUNTER_LIMIT,
    DATA_ALIGN, FIRST_SEQUENCE, HEADER_AREA, HEADER_COPY_OFFSETS, HEADER_SIZE, RECORD_HEADER_SIZE,
    TXN_ALIGN, TXN_HEADER_SIZE, TXN_MAGIC,
};
use txn::RecordRef;

/// Smallest journal region accepted by [`format()`] and [`Journal::open`].
pub const MIN_JOURNAL_LEN: u64 = 64 * 1024;
/// Alignment required of the region's start and length.
pub const REGION_ALIGN: u64 = 4096;

/// Why replay stopped. Every variant is a normal outcome after a crash; none is an error
/// (damage is: [`JournalError::Damaged`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The next log position holds no trace of a transaction with the expected sequence
    /// number (never written, stale from an earlier lap or format, or the end of the log
    /// area).
    End,
    /// A transaction with the expected sequence was begun (its header or its commit
    /// record is intact) but it is incomplete or its checksums do not match, and no later
    /// transaction follows: a commit cut short by the crash. It was not applied, and
    /// neither were the transactions before it: that trace on media proves their writes
    /// reached home (see [`ReplayReport::transactions_in_place`]).
    Torn { sequence: u64 },
    /// The transaction is complete and its checksums match, but a record targets the
    /// journal region or overflows. It was not applied (nor, as for `Torn`, the
    /// transactions before it).
    InvalidRecord { sequence: u64 },
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::End => write!(f, "end of the log"),
            StopReason::Torn { sequence } => write!(f, "torn transaction {sequence}"),
            StopReason::InvalidRecord { sequence } => {
                write!(f, "transaction {sequence} has an invalid record")
            }
        }
    }
}

/// What [`Journal::open`] replayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayReport {
    pub transactions_replayed: u64,
    pub records_replayed: u64,
    /// Payload bytes written to home locations.
    pub bytes_replayed: u64,
    pub stopped_reason: StopReason,
    /// Intact transactions from the tail on that were not replayed because a trace of a
    /// later transaction is on media, which proves their writes had reached their home
    /// locations (a commit stores the next transaction only after the previous one's
    /// home writes are durable; docs/FORMAT.md "What the home writes and the journal each
    /// guarantee"): replay stopped at a torn transaction, or [`Journal::recover`] found
    /// damage after them.
    pub transactions_in_place: u64,
    /// [`Journal::recover`] only: the damage it found and worked around (`open` refuses
    /// such a log with [`JournalError::Damaged`]).
    pub damage: Option<Damage>,
}

impl ReplayReport {
    fn new() -> ReplayReport {
        ReplayReport {
            transactions_replayed: 0,
            records_replayed: 0,
            bytes_replayed: 0,
            stopped_reason: StopReason::End,
            transactions_in_place: 0,
            damage: None,
        }
    }
}

/// Counters since [`Journal::open`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Journal transactions written, each with one commit record and one flush/fence
    /// sequence (empty ones are not counted: they write nothing).
    pub commits: u64,
    /// Caller transactions those commits carried: `commit` carries one, `commit_batch`
    /// every non-empty transaction of its batch. `transactions - commits` is what
    /// batching saved.
    pub transactions: u64,
    /// Payload bytes committed.
    pub payload_bytes: u64,
    /// Log bytes written (headers, records, padding, commit records).
    pub log_bytes: u64,
    /// Header writes by [`Journal::checkpoint`] and by wrap-arounds (not the one `open` does).
    pub checkpoints: u64,
    /// Times the log wrapped to its start.
    pub wraps: u64,
}

/// The metadata redo journal. Not internally synchronized: the fs wraps it in a Mutex.
pub struct Journal {
    media: Arc<dyn Media>,
    start: u64,
    len: u64,
    /// Absolute offset of the log area (just after the header block).
    log_base: u64,
    log_len: u64,
    journal_id: u64,
    /// Generation of the newest header on media.
    generation: u64,
    /// Log offset the header on media points replay at.
    tail: u64,
    /// ... and the sequence number it names there (recorded in every transaction).
    tail_seq: u64,
    /// Log offset where the next transaction goes.
    head: u64,
    /// Sequence number of the next transaction.
    next_seq: u64,
    /// Reused encode/decode buffer (one transaction).
    scratch: Vec<u8>,
    stats: JournalStats,
    /// Opened by `open_read_only`: commits and checkpoints are refused.
    read_only: bool,
    /// The header still has to be moved past the replayed log before the first commit
    /// (a read-only open that found nothing to replay wrote nothing).
    reset_pending: bool,
    /// `open_read_only` replayed transactions (and so wrote): see `retire_replayed`.
    replayed: bool,
    /// The media reported a write-back failure: what is durable is unknown, so nothing
    /// more is written (commits and checkpoints fail) until the journal is reopened.
    failed: bool,
}

fn check_region(start: u64, len: u64) -> Result<(), JournalError> {
    let bad = |reason| Err(JournalError::InvalidRegion { start, len, reason });
    if (start | len) & (REGION_ALIGN - 1) != 0 {
        return bad("start and length must be multiples of 4096");
    }
    if len < MIN_JOURNAL_LEN {
        return bad("shorter than 64 KiB");
    }
    if start.checked_add(len).is_none() {
        return bad("end overflows");
    }
    Ok(())
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A fresh identifier per format, so transactions of an earlier journal in the same region
/// (which may carry the same sequence numbers) can never validate. Not cryptographic:
/// time, a process counter, the region and a stack address are mixed.
fn new_journal_id(start: u64, len: u64) -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let local = 0u8;
    let addr = std::ptr::addr_of!(local) as usize as u64;
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    splitmix64(nanos ^ splitmix64(c ^ start.rotate_left(21) ^ len.rotate_left(42) ^ addr))
}

/// Writes an empty journal over `[start, start+len)` of `media` and makes it durable.
/// Anything previously in the region (an older journal included) will never be replayed.
pub fn format(media: &dyn Media, start: u64, len: u64) -> Result<(), JournalError> {
    check_region(start, len)?;
    let journal_id = new_journal_id(start, len);
    media.write(start, &[0u8; HEADER_AREA as usize]);
    // Both copies valid, generations 0 and 1: the next header write (generation 2) goes
    // to copy 0 and leaves copy 1 intact.
    for (generation, copy_off) in HEADER_COPY_OFFSETS.iter().enumerate() {
        let h = Header {
            generation: generation as u64,
            journal_id,
            region_start: start,
            region_len: len,
            tail: 0,
            tail_seq: FIRST_SEQUENCE,
        };
        media.write(start + copy_off, &h.encode());
    }
    media.flush(start, HEADER_AREA);
    media.fence();
    Ok(())
}

/// Whether the journal in `[start, start+len)` has a usable header, without replaying or
/// writing anything (`JournalError::Corrupt` when neither header copy is valid).
pub fn probe(media: &dyn Media, start: u64, len: u64) -> Result<(), JournalError> {
    check_region(start, len)?;
    read_header(media, start, len).map(|_| ())
}

/// Whether opening the journal in `[start, start+len)` would replay a committed
/// transaction (and so write), found without writing anything: a device opened
/// read-only can be mounted only when this is false. A damaged log is refused as
/// `open` refuses it.
pub fn needs_replay(media: Arc<dyn Media>, start: u64, len: u64) -> Result<bool, JournalError> {
    let mut journal = Journal::from_header(media, start, len, true)?;
    let survey = journal.survey();
    if let Some(damage) = survey.damage(journal.log_base) {
        return Err(JournalError::Damaged(damage));
    }
    Ok(!survey.to_replay().is_empty())
}

/// One intact transaction in the log, as [`pending`] lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedTransaction {
    pub sequence: u64,
    /// Absolute byte offset of its header.
    pub offset: u64,
    /// Log bytes it occupies (header, records, padding, commit record).
    pub len: u64,
}

/// The committed transactions after the header's tail that a replay would consider (the
/// chain of intact ones, in sequence order), found without writing anything. For tools
/// and tests that look at a log; the damage check of `open` is not made.
pub fn pending(
    media: Arc<dyn Media>,
    start: u64,
    len: u64,
) -> Result<Vec<LoggedTransaction>, JournalError> {
    let mut journal = Journal::from_header(media, start, len, true)?;
    let log_base = journal.log_base;
    Ok(journal
        .survey()
        .chain
        .iter()
        .map(|t| LoggedTransaction {
            sequence: t.seq,
            offset: log_base + t.pos,
            len: t.total,
        })
        .collect())
}

/// Reads both header copies and returns the valid one with the highest generation.
fn read_header(media: &dyn Media, start: u64, len: u64) -> Result<Header, JournalError> {
    let mut best: Option<Header> = None;
    let mut problems = Vec::new();
    for (i, copy_off) in HEADER_COPY_OFFSETS.iter().enumerate() {
        let mut buf = [0u8; HEADER_SIZE];
        media.read(start + copy_off, &mut buf);
        match Header::decode(&buf, start, len) {
            Ok(h) => {
                best = match best {
                    Some(b) if b.generation >= h.generation => Some(b),
                    _ => Some(h),
                };
            }
            Err(why) => problems.push(format!("header copy {i}: {why}")),
        }
    }
    best.ok_or_else(|| JournalError::Corrupt {
        what: format!("no valid header ({})", problems.join("; ")),
    })
}

/// Outcome of looking at one log position during replay.
enum Scan {
    /// A valid transaction of this many log bytes; its records are in the record list.
    Valid(u64),
    Stop(StopReason),
}

/// One intact transaction in the log.
#[derive(Clone, Copy, Debug)]
struct Txn {
    /// Log offset.
    pos: u64,
    seq: u64,
    total: u64,
    /// The tail sequence of the header that was durable when it was committed (header
    /// offset 48; 0 in logs written before it was recorded): no transaction before that
    /// one may be replayed.
    since: u64,
}

impl Txn {
    /// The transaction at `pos` with sequence `seq`, whose bytes `scan` left in `buf`.
    fn scanned(pos: u64, seq: u64, total: u64, buf: &[u8]) -> Txn {
        Txn {
            pos,
            seq,
            total,
            // Never above its own sequence number (only a bug could write that).
            since: get_u64(buf, txn_hdr::SINCE).min(seq),
        }
    }
}

/// What the log holds from the header's tail on, found without writing anything.
struct Survey {
    tail_seq: u64,
    /// The intact transactions from the tail on, back to back, in sequence order.
    chain: Vec<Txn>,
    /// Log offset where the chain stops, and why.
    stop_pos: u64,
    stop: StopReason,
    /// Traces (intact headers or commit records) of transactions of this journal that
    /// are neither on the chain nor the stop's own, with a sequence number at least the
    /// one the chain stopped at:
    /// (log offset, sequence number), in log order. A crash never leaves one (see
    /// `Journal::survey`), so any is damage.
    beyond: Vec<(u64, u64)>,
    /// The highest sequence number (at least the stop's) of a trace found inside the
    /// chain's bytes: record data that looks like a header or commit record (an xattr
    /// value can hold any bytes). Harmless while the chain covers it, but once a replay
    /// retires the chain it would look like damage, so the log restarts above it.
    inside: Option<u64>,
}

impl Survey {
    /// The sequence number the chain stopped at.
    fn stop_seq(&self) -> u64 {
        self.tail_seq.wrapping_add(self.chain.len() as u64)
    }

    /// The transactions a replay of an undamaged log applies: the whole chain if it ended
    /// because nothing follows it, nothing if it ended at a torn (or invalid) one (see
    /// `Journal::replay_surveyed`), and never what a checkpoint newer than the header in
    /// use (its copy unreadable) had already retired: blocks those transactions freed may
    /// hold file data now.
    fn to_replay(&self) -> &[Txn] {
        if self.stop != StopReason::End {
            return &[];
        }
        let since = self.chain.last().map_or(0, |t| t.since);
        &self.chain[self.chain.partition_point(|t| t.seq < since)..]
    }

    /// The damage this survey shows, if any (offsets made absolute with `log_base`).
    fn damage(&self, log_base: u64) -> Option<Damage> {
        let &(pos, seq) = self.beyond.iter().min_by_key(|(_, seq)| *seq)?;
        Some(Damage {
            sequence: self.stop_seq(),
            offset: log_base + self.stop_pos,
            later_sequence: seq,
            later_offset: log_base + pos,
            dropped: 0,
        })
    }
}

impl Journal {
    /// Opens the journal in `[start, start+len)` of `media`: validates the header, replays
    /// the committed transactions after the tail in sequence order (up to the first
    /// missing or out-of-sequence one; none if it stops at a torn one, whose trace proves
    /// they are already applied), makes the replayed writes durable and checkpoints, so
    /// the journal is empty on return.
    ///
    /// Refuses with [`JournalError::Damaged`], writing nothing, when a transaction fails
    /// its checks (or is missing) and an intact later one follows: replaying up to it
    /// would put older metadata back over newer. [`Journal::recover`] handles such a log.
    pub fn open(
        media: Arc<dyn Media>,
        start: u64,
        len: u64,
    ) -> Result<(Journal, ReplayReport), JournalError> {
        let mut journal = Journal::from_header(media, start, len, false)?;
        let report = journal.replay()?;
        journal.reset_after_replay();
        Ok((journal, report))
    }

    /// Opens the journal as [`Journal::open`] does, but a damaged log (what `open`
    /// refuses with [`JournalError::Damaged`]) is recovered instead: of every intact
    /// transaction the log holds from the tail on, the newest run of consecutive sequence
    /// numbers is replayed (none if the newest transaction found is itself not intact);
    /// the damaged or missing transactions before it are dropped and the intact ones
    /// before it are not replayed. Both had reached their home locations, as later
    /// transactions were committed after them, so the result is the newest committed
    /// state. The report's `damage` says what was found and dropped. For fsck.
    pub fn recover(
        media: Arc<dyn Media>,
        start: u64,
        len: u64,
    ) -> Result<(Journal, ReplayReport), JournalError> {
        let mut journal = Journal::from_header(media, start, len, false)?;
        let survey = journal.survey();
        let report = match survey.damage(journal.log_base) {
            None => journal.replay_surveyed(survey),
            Some(damage) => journal.recover_surveyed(survey, damage),
        };
        journal.reset_after_replay();
        Ok((journal, report))
    }

    /// Opens the journal for a read-only mount: committed transactions are still replayed
    /// (the metadata read next must include them, as ext4 recovers on a read-only mount),
    /// but the header is left as it is until [`make_writable`](Self::make_writable): the
    /// only writes are the replayed records, which rewrite bytes already home unless a
    /// crash cut their commit short, so a mount refused after this leaves such an image
    /// byte-identical. (Replaying the same transactions again at the next open is
    /// idempotent.) The journal then refuses commits and checkpoints.
    pub fn open_read_only(
        media: Arc<dyn Media>,
        start: u64,
        len: u64,
    ) -> Result<(Journal, ReplayReport), JournalError> {
        let mut journal = Journal::from_header(media, start, len, true)?;
        let report = journal.replay()?;
        journal.reset_pending = true;
        journal.replayed = report.transactions_replayed > 0;
        Ok((journal, report))
    }

    /// The journal of a device another host writes (a follower, fs `follow.rs`): read-only
    /// (commits and checkpoints are refused), nothing replayed, nothing ever written. The
    /// follower reads the live writer's log through a [`LogCursor`] instead.
    pub fn open_passive(
        media: Arc<dyn Media>,
        start: u64,
        len: u64,
    ) -> Result<Journal, JournalError> {
        Journal::from_header(media, start, len, true)
    }

    /// For a read-only mount that goes live after [`Journal::open_read_only`] replayed
    /// transactions: moves the header past them, as [`make_writable`](Self::make_writable)
    /// would, so that the next open (perhaps of a device that can no longer be written)
    /// finds nothing to replay. The journal stays read-only. Nothing happens when
    /// nothing was replayed.
    pub fn retire_replayed(&mut self) {
        if self.reset_pending && self.replayed {
            self.reset_after_replay();
            self.reset_pending = false;
        }
    }

    /// Turns a journal opened with [`Journal::open_read_only`] into one that commits, as
    /// if it had been opened with [`Journal::open`]. Lets a mount open read-only, check
    /// the metadata, and write nothing at all if it refuses the filesystem.
    pub fn make_writable(&mut self) {
        if self.reset_pending {
            self.reset_after_replay();
            self.reset_pending = false;
        }
        self.read_only = false;
    }

    /// The journal as its on-media header describes it, before any replay.
    fn from_header(
        media: Arc<dyn Media>,
        start: u64,
        len: u64,
        read_only: bool,
    ) -> Result<Journal, JournalError> {
        check_region(start, len)?;
        let header = read_header(&*media, start, len)?;
        Ok(Journal {
            media,
            start,
            len,
            log_base: start + HEADER_AREA,
            log_len: len - HEADER_AREA,
            journal_id: header.journal_id,
            generation: header.generation,
            tail: header.tail,
            tail_seq: header.tail_seq,
            head: header.tail,
            next_seq: header.tail_seq,
            scratch: Vec::new(),
            stats: JournalStats::default(),
            read_only,
            reset_pending: false,
            replayed: false,
            failed: false,
        })
    }

    /// After replay: points the header past what was replayed, skipping one sequence
    /// number: if replay stopped at a torn transaction, that transaction holds
    /// `next_seq`, and its leftovers must never validate once a new transaction is
    /// written over them at the same position.
    fn reset_after_replay(&mut self) {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.write_header(self.head, self.next_seq);
    }

    /// Largest payload of a one-record transaction that `commit` accepts. Each further
    /// record costs 16 bytes plus padding of its data to 8 bytes; see
    /// [`Transaction::encoded_len`] for the exact rule (`encoded_len <= log_bytes`).
    pub fn capacity(&self) -> u64 {
        self.log_len - TXN_HEADER_SIZE - COMMIT_SIZE - RECORD_HEADER_SIZE
    }

    /// Size of the log area in bytes (the bound on [`Transaction::encoded_len`]).
    pub fn log_bytes(&self) -> u64 {
        self.log_len
    }

    /// Sequence number the next committed transaction will get.
    pub fn sequence(&self) -> u64 {
        self.next_seq
    }

    /// Counters since `open`.
    pub fn stats(&self) -> JournalStats {
        self.stats
    }

    /// Commits `txn`: when this returns Ok, the transaction is durable in the journal and
    /// applied (durably) at its home locations. Returns its sequence number. An empty
    /// transaction writes nothing and returns the sequence of the previous one.
    ///
    /// Durability argument: the whole transaction (header, records, commit record) is
    /// written, flushed and fenced once. Without a fence between the records and the
    /// commit record, the commit record may reach media before some record line does,
    /// but the commit record's body checksum (CRC-32C) covers every byte before it, so such a torn
    /// transaction fails validation at replay and is skipped as a whole. Only after that
    /// fence are the records stored home, flushed and fenced; a crash in between is
    /// repaired by replay (records are idempotent physical writes, replayed in order).
    pub fn commit(&mut self, txn: &Transaction) -> Result<u64, JournalError> {
        self.commit_batch(&[txn])
    }

    /// Commits every transaction of `batch` as ONE journal transaction: their records in
    /// batch order (so a later write to the same bytes wins, exactly as if they had been
    /// committed one after another), one commit record, one flush/fence sequence. All of
    /// them become durable together or, after a crash before the commit record is
    /// durable, none does. Returns the sequence number (the previous one if every
    /// transaction is empty: nothing is written).
    ///
    /// Fails with `JournalError::Media` if the media reports a write-back failure after
    /// a fence (`Media::take_error`): the batch then is durable whole or not at all, as
    /// replay finds it, and the journal refuses every later commit and checkpoint.
    ///
    /// Refuses the whole batch, writing nothing, if one record is invalid or if
    /// `LogSize::of(batch).encoded_len()` exceeds [`log_bytes`](Self::log_bytes) (split
    /// such a batch: see [`LogSize`]).
    pub fn commit_batch(&mut self, batch: &[&Transaction]) -> Result<u64, JournalError> {
        if self.read_only {
            return Err(JournalError::ReadOnly);
        }
        self.check_media()?;
        let (mut carried, mut records, mut payload) = (0u64, 0usize, 0u64);
        let mut size = LogSize::new();
        for txn in batch.iter().filter(|t| !t.is_empty()) {
            carried += 1;
            records += txn.record_count();
            payload += txn.payload_bytes();
            size.add(txn);
        }
        if carried == 0 {
            return Ok(self.next_seq.wrapping_sub(1));
        }
        let needed = size.encoded_len();
        // A batch within the log always has fewer records than fit the header's u32
        // count (each takes at least 24 bytes); the check only keeps the cast honest.
        let count = u32::try_from(records);
        if needed > self.log_len || count.is_err() {
            return Err(JournalError::TooLarge {
                needed,
                log_bytes: self.log_len,
            });
        }
        for txn in batch {
            for (off, data) in txn.writes() {
                self.check_target(off, data.len() as u64)?;
            }
        }
        if needed > self.log_len - self.head {
            // Everything committed is already applied and durable, so the log can be
            // emptied and restarted at its beginning.
            self.write_header(0, self.next_seq);
            self.check_media()?;
            self.head = 0;
            self.stats.checkpoints += 1;
            self.stats.wraps += 1;
        }
        let seq = self.next_seq;
        self.encode(batch, seq, needed, count.unwrap_or(u32::MAX), payload);
        let at = self.log_base + self.head;
        self.media.write(at, &self.scratch);
        self.media.flush(at, needed);
        self.media.fence();
        // Not applied home unless the log is known durable: replay (from the same tail,
        // with the same sequence) decides what a crash leaves of a failed commit.
        self.check_media()?;

        for txn in batch {
            for (off, data) in txn.writes() {
                self.media.write(off, data);
                self.media.flush(off, data.len() as u64);
            }
        }
        self.media.fence();
        // The transaction is durable in the log, but its home writes may not be: head
        // stays before it, so no checkpoint can move the tail past it and replay
        // applies it again.
        self.check_media()?;

        self.head += needed;
        self.next_seq = seq.wrapping_add(1);
        self.stats.commits += 1;
        self.stats.transactions += carried;
        self.stats.payload_bytes += payload;
        self.stats.log_bytes += needed;
        Ok(seq)
    }

    /// Persists tail = head: no transaction committed so far will ever be replayed. Every
    /// committed transaction is already applied and durable, so this only writes the
    /// header. The fs calls it after a transaction that frees blocks and before those
    /// blocks are reused, so an old transaction is never replayed over a reused block.
    pub fn checkpoint(&mut self) -> Result<(), JournalError> {
        if self.read_only {
            return Err(JournalError::ReadOnly);
        }
        self.check_media()?;
        // tail == head means nothing was committed since the header on media was written,
        // and that header already says tail = head with the current sequence.
        if self.tail != self.head {
            self.write_header(self.head, self.next_seq);
            self.check_media()?;
            self.stats.checkpoints += 1;
        }
        Ok(())
    }

    /// Fails (for good) if the media reported a write-back failure since the last check.
    fn check_media(&mut self) -> Result<(), JournalError> {
        if self.failed {
            return Err(JournalError::Media {
                what: "an earlier write-back failed".into(),
            });
        }
        self.media.take_error().map_err(|e| {
            self.failed = true;
            JournalError::Media {
                what: e.to_string(),
            }
        })
    }

    fn check_target(&self, off: u64, len: u64) -> Result<(), JournalError> {
        let invalid = |reason| Err(JournalError::InvalidRecord { off, len, reason });
        let Some(end) = off.checked_add(len) else {
            return invalid("range overflows");
        };
        if len > u64::from(u32::MAX) {
            return invalid("longer than 4 GiB");
        }
        if off < self.start + self.len && end > self.start {
            return invalid("overlaps the journal region");
        }
        if end > self.media.size() {
            return invalid("ends beyond the media");
        }
        Ok(())
    }

    /// Writes a header (tail, tail_seq) into the older copy, durably.
    fn write_header(&mut self, tail: u64, tail_seq: u64) {
        let generation = self.generation.wrapping_add(1);
        if generation >= COUNTER_LIMIT || tail_seq >= COUNTER_LIMIT {
            // A copy there is not valid (`Header::decode`): the stale copy would be taken
            // for the newer one. Never reached but from a hostile header; the journal
            // writes nothing more (commits and checkpoints fail), and the header on media
            // stays as it was, so the log opens again as it did.
            self.failed = true;
            return;
        }
        let header = Header {
            generation,
            journal_id: self.journal_id,
            region_start: self.start,
            region_len: self.len,
            tail,
            tail_seq,
        };
        let off = self.start + HEADER_COPY_OFFSETS[(generation % 2) as usize];
        self.media.write(off, &header.encode());
        self.media.flush(off, HEADER_SIZE as u64);
        self.media.fence();
        self.generation = generation;
        self.tail = tail;
        self.tail_seq = tail_seq;
    }

    /// Encodes the records of `batch` (`count` records, `payload` bytes), in order, as
    /// one transaction with sequence `seq` into `self.scratch` (`total` bytes).
    fn encode(&mut self, batch: &[&Transaction], seq: u64, total: u64, count: u32, payload: u64) {
        let buf = &mut self.scratch;
        buf.clear();
        buf.resize(total as usize, 0);

        let h = &mut buf[..TXN_HEADER_SIZE as usize];
        put_u32(h, txn_hdr::MAGIC, TXN_MAGIC);
        put_u64(h, txn_hdr::JOURNAL_ID, self.journal_id);
        put_u64(h, txn_hdr::SEQUENCE, seq);
        put_u64(h, txn_hdr::TOTAL, total);
        put_u32(h, txn_hdr::COUNT, count);
        put_u64(h, txn_hdr::PAYLOAD, payload);
        put_u64(h, txn_hdr::SINCE, self.tail_seq);
        let crc = crc_with_hole(h, txn_hdr::CRC);
        put_u32(h, txn_hdr::CRC, crc);

        let mut p = TXN_HEADER_SIZE as usize;
        for txn in batch {
            for (off, data) in txn.writes() {
                put_u64(buf, p + rec::TARGET, off);
                put_u32(buf, p + rec::LEN, data.len() as u32);
                let crc = crc32_parts(&[&buf[p..p + rec::CRC], data]);
                put_u32(buf, p + rec::CRC, crc);
                let d = p + RECORD_HEADER_SIZE as usize;
                buf[d..d + data.len()].copy_from_slice(data);
                p = d + round_up(data.len() as u64, DATA_ALIGN) as usize;
            }
        }

        let c = (total - COMMIT_SIZE) as usize;
        let body_crc = crc32c(&buf[..c]);
        let commit = &mut buf[c..];
        put_u32(commit, commit_rec::MAGIC, COMMIT_MAGIC);
        put_u64(commit, commit_rec::JOURNAL_ID, self.journal_id);
        put_u64(commit, commit_rec::SEQUENCE, seq);
        put_u64(commit, commit_rec::TOTAL, total);
        put_u32(commit, commit_rec::COUNT, count);
        put_u32(commit, commit_rec::BODY_CRC, body_crc);
        let crc = crc_with_hole(commit, commit_rec::CRC);
        put_u32(commit, commit_rec::CRC, crc);
    }

    /// Replays from the tail; leaves `head`/`next_seq` just after the last valid
    /// transaction. Replayed writes are durable on return. Refuses a damaged log,
    /// having written nothing.
    fn replay(&mut self) -> Result<ReplayReport, JournalError> {
        let survey = self.survey();
        if let Some(damage) = survey.damage(self.log_base) {
            return Err(JournalError::Damaged(damage));
        }
        Ok(self.replay_surveyed(survey))
    }

    /// Replays an undamaged log: the whole chain if it ended because nothing follows it,
    /// nothing if it ended at a torn (or invalid) transaction. That transaction's header
    /// or commit record is on media, so its commit had started, which happens only after every earlier
    /// transaction's home writes are durable (`commit_batch`); and if it was in fact
    /// committed and damaged later, its own home writes may be there too, and replaying
    /// the older transactions would put their older bytes back over them.
    fn replay_surveyed(&mut self, survey: Survey) -> ReplayReport {
        let mut report = ReplayReport::new();
        report.stopped_reason = survey.stop;
        let replay = survey.to_replay();
        report.transactions_in_place = (survey.chain.len() - replay.len()) as u64;
        self.apply(replay, &mut report);
        self.head = survey.stop_pos;
        // Above any trace inside the retired chain (`Survey::inside`), so that the log
        // does not read as damaged on the next open.
        self.next_seq = survey.stop_seq().max(survey.inside.unwrap_or(0));
        report
    }

    /// `Journal::recover` of a damaged log: see there.
    fn recover_surveyed(&mut self, survey: Survey, mut damage: Damage) -> ReplayReport {
        // Every transaction found from the tail on, by sequence number: Some if intact.
        let mut found: BTreeMap<u64, Option<Txn>> = BTreeMap::new();
        for t in &survey.chain {
            found.insert(t.seq, Some(*t));
        }
        if survey.stop != StopReason::End {
            found.insert(survey.stop_seq(), None);
        }
        let mut records = Vec::new();
        for &(pos, seq) in &survey.beyond {
            let txn = match self.scan(pos, seq, &mut records) {
                Scan::Valid(total) => Some(Txn::scanned(pos, seq, total, &self.scratch)),
                Scan::Stop(_) => None,
            };
            let e = found.entry(seq).or_insert(txn);
            if e.is_none() {
                *e = txn;
            }
        }
        // The newest run of consecutive intact transactions (none if the newest found is
        // not intact: as at a torn tail, everything before it is in place), not reaching
        // below what the newest one's header had retired.
        let newest = found.keys().next_back().copied().unwrap_or(survey.tail_seq);
        let floor = match found.get(&newest) {
            Some(Some(t)) => t.since.max(survey.tail_seq),
            _ => survey.tail_seq,
        };
        let mut run = Vec::new();
        let mut seq = newest;
        while let Some(&Some(t)) = found.get(&seq) {
            run.push(t);
            if seq <= floor {
                break;
            }
            seq -= 1;
        }
        run.reverse();
        let run_start = run.first().map_or(newest.wrapping_add(1), |t| t.seq);
        let intact_before = found
            .range(survey.tail_seq..run_start)
            .filter(|(_, t)| t.is_some())
            .count() as u64;
        damage.dropped = run_start
            .wrapping_sub(survey.tail_seq)
            .saturating_sub(intact_before);

        let mut report = ReplayReport::new();
        report.stopped_reason = survey.stop;
        report.transactions_in_place = intact_before;
        self.apply(&run, &mut report);
        report.damage = Some(damage);
        // Restart the log at its beginning with a sequence number above everything found,
        // so nothing left in the log can ever validate again.
        self.head = 0;
        self.next_seq = newest.wrapping_add(1);
        report
    }

    /// Applies `txns` (intact, in order) at their home locations and makes them durable.
    fn apply(&mut self, txns: &[Txn], report: &mut ReplayReport) {
        let mut records = Vec::new();
        for t in txns {
            // The survey validated it; nothing wrote the log since.
            if !matches!(self.scan(t.pos, t.seq, &mut records), Scan::Valid(_)) {
                continue;
            }
            for r in &records {
                let data = &self.scratch[r.data_start..r.data_start + r.len];
                self.media.write(r.off, data);
                self.media.flush(r.off, r.len as u64);
                report.bytes_replayed += r.len as u64;
            }
            report.records_replayed += records.len() as u64;
            report.transactions_replayed += 1;
        }
        if report.transactions_replayed > 0 {
            self.media.fence();
        }
    }

    /// Walks the chain of intact transactions from the tail, then looks through the rest
    /// of the log for traces (an intact header or commit record) of transactions of this
    /// journal with a sequence number at least the one the chain stopped at, S. Only one
    /// can be there after a crash: S's own, at the stop position (its commit was cut
    /// short; the stop is then `Torn` even if only the commit record survived). Any
    /// other means S had been committed and was damaged since: sequence numbers are never
    /// reused, a transaction is written only after the previous one is durable, the log
    /// restarts at its beginning only behind a header pointing there, and a header after
    /// replay skips the number a torn transaction may hold. Reads only.
    fn survey(&mut self) -> Survey {
        let (tail, tail_seq) = (self.head, self.next_seq);
        let mut records = Vec::new();
        let mut chain = Vec::new();
        let (mut pos, mut seq) = (tail, tail_seq);
        let stop = loop {
            match self.scan(pos, seq, &mut records) {
                Scan::Valid(total) => {
                    chain.push(Txn::scanned(pos, seq, total, &self.scratch));
                    pos += total;
                    seq = seq.wrapping_add(1);
                }
                Scan::Stop(reason) => break reason,
            }
        };
        let (mut beyond, inside) = self.find_traces(seq, |p| (tail..pos).contains(&p));
        // The stop transaction's own header or commit record: its commit had begun.
        let own = beyond.len();
        beyond.retain(|&t| t != (pos, seq));
        let stop = if stop == StopReason::End && beyond.len() < own {
            StopReason::Torn { sequence: seq }
        } else {
            stop
        };
        Survey {
            tail_seq,
            chain,
            stop_pos: pos,
            stop,
            beyond,
            inside,
        }
    }

    /// Traces of transactions of this journal with a sequence number of at least
    /// `min_seq` — an intact header, or an intact commit record (which tells where its
    /// transaction starts) — at every 64-byte log position but those `skip` names: (log
    /// offset of the transaction, sequence number), in log order of the trace; and the
    /// highest sequence number of such a trace at a position `skip` names. Reads the log
    /// in large chunks, so the cost is one pass over it.
    fn find_traces(
        &self,
        min_seq: u64,
        skip: impl Fn(u64) -> bool,
    ) -> (Vec<(u64, u64)>, Option<u64>) {
        const CHUNK: u64 = 256 * 1024;
        let mut out = Vec::new();
        let mut skipped: Option<u64> = None;
        let Some(last) = self.log_len.checked_sub(TXN_HEADER_SIZE + COMMIT_SIZE) else {
            return (out, skipped);
        };
        let mut buf = vec![0u8; CHUNK.min(self.log_len) as usize];
        let mut base = 0u64;
        while base <= last {
            let n = CHUNK.min(self.log_len - base) as usize;
            let chunk = &mut buf[..n];
            self.media.read(self.log_base + base, chunk);
            for (i, h) in chunk.chunks_exact(TXN_ALIGN as usize).enumerate() {
                let p = base + i as u64 * TXN_ALIGN;
                if p > last {
                    break;
                }
                let magic = get_u32(h, txn_hdr::MAGIC);
                if magic != TXN_MAGIC && magic != COMMIT_MAGIC {
                    continue;
                }
                let trace = if magic == TXN_MAGIC {
                    self.header_seq(h).map(|seq| (p, seq))
                } else {
                    self.commit_trace(h, p)
                };
                match trace {
                    Some((_, seq)) if seq >= min_seq && skip(p) => {
                        skipped = skipped.max(Some(seq));
                    }
                    Some((at, seq)) if seq >= min_seq => out.push((at, seq)),
                    _ => {}
                }
            }
            base += n as u64;
        }
        (out, skipped)
    }

    /// For an intact commit record of this journal (`h`: its 64 bytes) at log offset `p`:
    /// the log offset of its transaction and its sequence number.
    fn commit_trace(&self, h: &[u8], p: u64) -> Option<(u64, u64)> {
        let intact = get_u32(h, commit_rec::MAGIC) == COMMIT_MAGIC
            && get_u32(h, commit_rec::CRC) == crc_with_hole(h, commit_rec::CRC)
            && get_u64(h, commit_rec::JOURNAL_ID) == self.journal_id;
        let total = get_u64(h, commit_rec::TOTAL);
        let fits = total & (TXN_ALIGN - 1) == 0
            && total >= TXN_HEADER_SIZE + COMMIT_SIZE
            && total <= p + COMMIT_SIZE;
        (intact && fits).then(|| (p + COMMIT_SIZE - total, get_u64(h, commit_rec::SEQUENCE)))
    }

    /// The sequence number of an intact transaction header of this journal (`h`: its 64
    /// bytes), or None.
    fn header_seq(&self, h: &[u8]) -> Option<u64> {
        let intact = get_u32(h, txn_hdr::MAGIC) == TXN_MAGIC
            && get_u32(h, txn_hdr::CRC) == crc_with_hole(h, txn_hdr::CRC)
            && get_u64(h, txn_hdr::JOURNAL_ID) == self.journal_id;
        intact.then(|| get_u64(h, txn_hdr::SEQUENCE))
    }

    /// Validates the transaction at log offset `pos`, which must carry sequence `seq`.
    /// On success its bytes are in `self.scratch` and its records in `records`.
    fn scan(&mut self, pos: u64, seq: u64, records: &mut Vec<RecordRef>) -> Scan {
        records.clear();
        let room = self.log_len - pos;
        if room < TXN_HEADER_SIZE + COMMIT_SIZE {
            return Scan::Stop(StopReason::End);
        }
        let mut h = [0u8; TXN_HEADER_SIZE as usize];
        self.media.read(self.log_base + pos, &mut h);
        // Anything but an intact header of the expected transaction is simply "not ours":
        // never written, or left over from an earlier lap or an earlier format.
        if self.header_seq(&h) != Some(seq) {
            return Scan::Stop(StopReason::End);
        }
        let torn = Scan::Stop(StopReason::Torn { sequence: seq });
        let total = get_u64(&h, txn_hdr::TOTAL);
        let count = get_u32(&h, txn_hdr::COUNT);
        let payload = get_u64(&h, txn_hdr::PAYLOAD);
        if total & (TXN_ALIGN - 1) != 0 || total < TXN_HEADER_SIZE + COMMIT_SIZE || total > room {
            return torn;
        }
        let total_usize = total as usize;
        self.scratch.clear();
        self.scratch.resize(total_usize, 0);
        self.media.read(self.log_base + pos, &mut self.scratch);
        let buf = &self.scratch;

        let c = total_usize - COMMIT_SIZE as usize;
        let commit = &buf[c..];
        if get_u32(commit, commit_rec::MAGIC) != COMMIT_MAGIC
            || get_u32(commit, commit_rec::CRC) != crc_with_hole(commit, commit_rec::CRC)
            || get_u64(commit, commit_rec::JOURNAL_ID) != self.journal_id
            || get_u64(commit, commit_rec::SEQUENCE) != seq
            || get_u64(commit, commit_rec::TOTAL) != total
            || get_u32(commit, commit_rec::COUNT) != count
            || get_u32(commit, commit_rec::BODY_CRC) != crc32c(&buf[..c])
        {
            return torn;
        }

        // The checksums match, so the bytes are what commit wrote; the structural checks
        // below only guard against a format bug or a CRC collision.
        let mut p = TXN_HEADER_SIZE as usize;
        let mut sum = 0u64;
        for _ in 0..count {
            if c - p < RECORD_HEADER_SIZE as usize {
                return torn;
            }
            let off = get_u64(buf, p + rec::TARGET);
            let len = u64::from(get_u32(buf, p + rec::LEN));
            let d = p + RECORD_HEADER_SIZE as usize;
            let padded = round_up(len, DATA_ALIGN);
            if padded > (c - d) as u64 {
                return torn;
            }
            let len = len as usize;
            if crc32_parts(&[&buf[p..p + rec::CRC], &buf[d..d + len]]) != get_u32(buf, p + rec::CRC)
            {
                return torn;
            }
            if self.check_target(off, len as u64).is_err() {
                return Scan::Stop(StopReason::InvalidRecord { sequence: seq });
            }
            records.push(RecordRef {
                off,
                data_start: d,
                len,
            });
            sum += len as u64;
            p = d + padded as usize;
        }
        if sum != payload || c - p >= TXN_ALIGN as usize {
            records.clear();
            return torn;
        }
        Scan::Valid(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use daxfs_pmem::MemMedia;

    /// A journal formatted on a memory media whose header copy 0 is replaced by one
    /// with `generation` and `tail_seq` (valid CRC).
    fn with_header(generation: u64, tail_seq: u64) -> Arc<MemMedia> {
        let (start, len) = (4096, MIN_JOURNAL_LEN);
        let m = Arc::new(MemMedia::new((start + len) as usize));
        format(&*m, start, len).expect("format");
        let h = read_header(&*m, start, len).expect("formatted header");
        let forged = Header {
            generation,
            tail_seq,
            ..h
        };
        m.write(start + HEADER_COPY_OFFSETS[0], &forged.encode());
        m
    }

    /// A header copy at the counters' limit could only have wrapped: it is not a valid
    /// copy, and the other copy is used.
    #[test]
    fn a_header_copy_with_a_counter_at_the_limit_is_not_used() {
        for (generation, seq) in [(COUNTER_LIMIT, 1), (u64::MAX, 1), (10, COUNTER_LIMIT)] {
            let m = with_header(generation, seq);
            let h = read_header(&*m, 4096, MIN_JOURNAL_LEN).expect("the other copy");
            assert!(h.generation < COUNTER_LIMIT && h.tail_seq < COUNTER_LIMIT);
        }
    }

    /// A journal whose next header write would reach the limit writes no header: it
    /// opens, refuses commits, and leaves the header as it was, so it opens again (the
    /// journal_replay fuzz target found a header at 2^63-1 written to 2^63, read back
    /// invalid, so the stale copy won and the log read as damaged).
    #[test]
    fn a_journal_at_the_counter_limit_writes_no_header_and_opens_again() {
        for (generation, seq) in [(COUNTER_LIMIT - 1, 1), (10, COUNTER_LIMIT - 1)] {
            let m = with_header(generation, seq);
            let before = read_header(&*m, 4096, MIN_JOURNAL_LEN).expect("header");
            let (mut j, _) = Journal::open(m.clone(), 4096, MIN_JOURNAL_LEN).expect("opens");
            let mut t = Transaction::new();
            t.write(0, &[1]);
            assert!(matches!(j.commit(&t), Err(JournalError::Media { .. })));
            drop(j);
            assert_eq!(
                read_header(&*m, 4096, MIN_JOURNAL_LEN).expect("header"),
                before
            );
            Journal::open(m.clone(), 4096, MIN_JOURNAL_LEN).expect("opens again");
        }
    }
}
