//! `Transaction`: an in-memory list of metadata writes, built by the fs and handed to
//! `Journal::commit`.

use crate::layout::{
    round_up, COMMIT_SIZE, DATA_ALIGN, RECORD_HEADER_SIZE, TXN_ALIGN, TXN_HEADER_SIZE,
};

/// One recorded write: `len` bytes of `Transaction::data` starting at `data_start`, to be
/// stored at device offset `off`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordRef {
    pub off: u64,
    pub data_start: usize,
    pub len: usize,
}

/// A set of metadata writes that become durable atomically (all or nothing).
///
/// Records are kept and applied in the order they were written, so a later write wins
/// over an earlier one at the same bytes. Building one costs two growing `Vec`s (the
/// bytes and the record list); `clear` keeps their capacity for reuse.
#[derive(Clone, Debug, Default)]
pub struct Transaction {
    data: Vec<u8>,
    records: Vec<RecordRef>,
}

impl Transaction {
    /// An empty transaction.
    pub fn new() -> Transaction {
        Transaction::default()
    }

    /// Records a write of `data` at device offset `off`. Empty writes are ignored.
    /// Targets are validated by `Journal::commit`.
    pub fn write(&mut self, off: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.records.push(RecordRef {
            off,
            data_start: self.data.len(),
            len: data.len(),
        });
        self.data.extend_from_slice(data);
    }

    /// True if no write was recorded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Total bytes of metadata recorded (sum of the write lengths).
    pub fn payload_bytes(&self) -> u64 {
        self.data.len() as u64
    }

    /// Number of recorded writes.
    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// Bytes this transaction occupies in the log (header, records, padding, commit
    /// record). `Journal::commit` accepts it if this is at most the log size.
    pub fn encoded_len(&self) -> u64 {
        LogSize::of([self]).encoded_len()
    }

    /// Forgets every write, keeping the allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.records.clear();
    }

    /// The recorded writes in order, as (device offset, bytes).
    pub fn writes(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.records
            .iter()
            .map(move |r| (r.off, &self.data[r.data_start..r.data_start + r.len]))
    }
}

/// The log bytes of one journal transaction, accumulated transaction by transaction and
/// record by record: how a caller of `Journal::commit_batch` decides where to split a
/// batch (the batch fits if `encoded_len() <= Journal::log_bytes()`). Adding never
/// makes the size smaller, so the longest prefix that fits is found by adding members
/// one at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogSize {
    /// Record headers plus padded record data.
    records: u64,
}

impl LogSize {
    /// An empty journal transaction (which `commit_batch` would not write at all).
    pub fn new() -> LogSize {
        LogSize::default()
    }

    /// The size of one journal transaction holding every record of `batch`.
    pub fn of<'a>(batch: impl IntoIterator<Item = &'a Transaction>) -> LogSize {
        let mut size = LogSize::new();
        for txn in batch {
            size.add(txn);
        }
        size
    }

    /// Adds every record of `txn`.
    pub fn add(&mut self, txn: &Transaction) {
        for r in &txn.records {
            self.add_record(r.len as u64);
        }
    }

    /// Adds one record of `len` data bytes (e.g. one the caller will add later).
    pub fn add_record(&mut self, len: u64) {
        let cost = RECORD_HEADER_SIZE.saturating_add(round_up(len, DATA_ALIGN));
        self.records = self.records.saturating_add(cost);
    }

    /// Log bytes of the journal transaction: header, records, padding, commit record.
    pub fn encoded_len(&self) -> u64 {
        round_up(TXN_HEADER_SIZE.saturating_add(self.records), TXN_ALIGN)
            .saturating_add(COMMIT_SIZE)
    }
}
