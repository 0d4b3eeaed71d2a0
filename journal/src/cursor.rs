//! [`LogCursor`]: a read-only reader of the log that another host's writer appends to.
//!
//! A follower (fs `follow.rs`) maps the device a live writer commits to. It never writes
//! the journal: it keeps a position (log offset, sequence number) and asks, every refresh,
//! for the committed transactions appended since. The log is a ring (`commit_batch`
//! restarts it at offset 0 behind a header naming the sequence it restarts with), so the
//! transaction after the cursor is either at its position or, after a wrap, at 0. When it
//! is at neither and the header on media names a later sequence, the writer has lapped
//! the cursor (wrapped over it, or a replay skipped sequence numbers): what was between is
//! lost and the caller reloads everything ([`Poll::Lapped`]).
//!
//! A transaction is returned only whole and with every checksum matching (`Journal::scan`),
//! so one the writer is still writing, or is overwriting on a later lap, is simply not
//! there yet or is a lap.

use crate::{read_header, Journal, JournalError, Scan};
use daxfs_pmem::Media;
use std::sync::Arc;

/// One committed transaction read from the log: its sequence number and its records
/// (device offset, bytes), in the order they are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedTxn {
    pub seq: u64,
    pub records: Vec<(u64, Vec<u8>)>,
}

/// What [`LogCursor::poll`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Poll {
    /// The transactions committed since the cursor, in sequence order (none: caught up).
    Txns(Vec<CommittedTxn>),
    /// The writer moved past the cursor without the transactions in between being
    /// readable: the caller must reload everything and [`LogCursor::reset`].
    Lapped,
}

/// A read-only position in a journal's log. Never writes.
pub struct LogCursor {
    /// Read-only: used only for `scan` (validation and decoding of one transaction).
    j: Journal,
    pos: u64,
    seq: u64,
}

impl LogCursor {
    /// A cursor at the tail the journal's header names: the first [`poll`](Self::poll)
    /// returns every transaction a replay would consider (committed, not yet retired by a
    /// checkpoint; their home writes may still be in progress).
    pub fn open(media: Arc<dyn Media>, start: u64, len: u64) -> Result<LogCursor, JournalError> {
        let j = Journal::from_header(media, start, len, true)?;
        let (pos, seq) = (j.tail, j.tail_seq);
        Ok(LogCursor { j, pos, seq })
    }

    /// Moves the cursor to the tail of the header now on media (after a full reload).
    pub fn reset(&mut self) -> Result<(), JournalError> {
        let h = read_header(&*self.j.media, self.j.start, self.j.len)?;
        self.j.journal_id = h.journal_id;
        self.pos = h.tail;
        self.seq = h.tail_seq;
        Ok(())
    }

    /// The sequence number of the next transaction the cursor expects.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// The committed transactions after the cursor (at most `max`), advancing past them.
    pub fn poll(&mut self, max: usize) -> Result<Poll, JournalError> {
        let mut out = Vec::new();
        let mut rechecked = false;
        while out.len() < max {
            if let Some(t) = self.read_next() {
                out.push(t);
                rechecked = false;
                continue;
            }
            if rechecked {
                return Ok(Poll::Lapped);
            }
            let h = read_header(&*self.j.media, self.j.start, self.j.len)?;
            // Reformatted, or the writer's header names a sequence past ours: the one we
            // expect was committed, yet it is not where it must be. Look once more (it
            // may have been committed between our look and the header read).
            if h.journal_id != self.j.journal_id {
                return Ok(Poll::Lapped);
            }
            if h.tail_seq <= self.seq {
                break;
            }
            rechecked = true;
        }
        Ok(Poll::Txns(out))
    }

    /// The transaction with the expected sequence at the cursor or, after a wrap, at the
    /// log's start.
    fn read_next(&mut self) -> Option<CommittedTxn> {
        let mut records = Vec::new();
        for pos in [self.pos, 0] {
            if let Scan::Valid(total) = self.j.scan(pos, self.seq, &mut records) {
                let t = CommittedTxn {
                    seq: self.seq,
                    records: records
                        .iter()
                        .map(|r| {
                            let d = &self.j.scratch[r.data_start..r.data_start + r.len];
                            (r.off, d.to_vec())
                        })
                        .collect(),
                };
                self.pos = pos + total;
                self.seq = self.seq.wrapping_add(1);
                return Some(t);
            }
            if self.pos == 0 {
                break;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{format, Transaction};
    use daxfs_pmem::MemMedia;

    const START: u64 = 1 << 20;
    const LEN: u64 = 64 * 1024;

    fn setup() -> (Arc<MemMedia>, Journal) {
        let media = Arc::new(MemMedia::new(4 << 20));
        format(&*media, START, LEN).unwrap();
        let j = Journal::open(media.clone(), START, LEN).unwrap().0;
        (media, j)
    }

    fn txn(off: u64, byte: u8, n: usize) -> Transaction {
        let mut t = Transaction::new();
        t.write(off, &vec![byte; n]);
        t
    }

    fn txns(p: Poll) -> Vec<CommittedTxn> {
        match p {
            Poll::Txns(t) => t,
            Poll::Lapped => panic!("lapped"),
        }
    }

    #[test]
    fn a_cursor_returns_the_transactions_committed_since_it_looked() {
        let (media, mut j) = setup();
        let mut c = LogCursor::open(media.clone(), START, LEN).unwrap();
        assert!(txns(c.poll(100).unwrap()).is_empty());
        let s1 = j.commit(&txn(8192, 1, 10)).unwrap();
        let s2 = j.commit(&txn(12288, 2, 20)).unwrap();
        let got = txns(c.poll(100).unwrap());
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].seq, got[1].seq), (s1, s2));
        assert_eq!(got[1].records, vec![(12288, vec![2u8; 20])]);
        assert!(txns(c.poll(100).unwrap()).is_empty());
        assert_eq!(c.next_seq(), s2 + 1);
    }

    #[test]
    fn a_cursor_follows_the_log_across_a_wrap() {
        let (media, mut j) = setup();
        let mut c = LogCursor::open(media.clone(), START, LEN).unwrap();
        let mut seen = 0;
        for i in 0..40u8 {
            // 4 KiB records: the 60 KiB log wraps every ~14 of them.
            j.commit(&txn(8192, i, 4000)).unwrap();
            let got = txns(c.poll(100).unwrap());
            assert_eq!(got.len(), 1, "commit {i}");
            assert_eq!(got[0].records[0].1[0], i);
            seen += 1;
        }
        assert_eq!(seen, 40);
        assert!(j.stats().wraps > 0);
    }

    #[test]
    fn a_cursor_lapped_by_the_writer_says_so() {
        let (media, mut j) = setup();
        let mut c = LogCursor::open(media.clone(), START, LEN).unwrap();
        for i in 0..40u8 {
            j.commit(&txn(8192, i, 4000)).unwrap();
        }
        assert_eq!(c.poll(100).unwrap(), Poll::Lapped);
        c.reset().unwrap();
        assert!(txns(c.poll(100).unwrap()).len() < 40);
    }

    #[test]
    fn a_cursor_never_writes_the_media() {
        let (media, mut j) = setup();
        j.commit(&txn(8192, 7, 100)).unwrap();
        let before = media.volatile_image();
        let mut c = LogCursor::open(media.clone(), START, LEN).unwrap();
        let _ = c.poll(100).unwrap();
        c.reset().unwrap();
        assert!(media.volatile_image() == before);
    }
}
