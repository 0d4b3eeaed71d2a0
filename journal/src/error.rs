//! `JournalError`: everything the journal can refuse or detect.

use std::fmt;

/// A committed transaction that fails its checks (or is missing) while a transaction
/// written after it is intact: damage to the log, not a commit cut short by a crash.
/// Offsets are absolute device byte offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The first transaction from the tail that fails its checks or is missing...
    pub sequence: u64,
    /// ...and where it starts (or should start).
    pub offset: u64,
    /// The first intact transaction header found after it (lowest sequence number).
    pub later_sequence: u64,
    pub later_offset: u64,
    /// Transactions [`Journal::recover`](crate::Journal::recover) drops: every sequence
    /// number from the tail up to the transactions it replays that is missing or fails
    /// its checks (their writes had reached their home locations: a later transaction
    /// was committed). 0 in the error of `open`, which drops nothing.
    pub dropped: u64,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "transaction {} at byte {} fails its checksums or is missing, but transaction {} at byte {}, written after it, is intact: the log is damaged (not torn by a crash)",
            self.sequence, self.offset, self.later_sequence, self.later_offset
        )
    }
}

/// Errors of the journal. None of them but `Media` leaves a partially written transaction
/// behind (after `Media`, replay decides whether the failed commit survives, whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalError {
    /// The region passed to `format`/`open` is unusable (alignment, size, overflow).
    InvalidRegion {
        start: u64,
        len: u64,
        reason: &'static str,
    },
    /// The on-media journal header is unusable.
    Corrupt { what: String },
    /// The transaction needs `needed` bytes of log but the log holds `log_bytes`.
    TooLarge { needed: u64, log_bytes: u64 },
    /// A write targets the journal region itself, or its range overflows.
    InvalidRecord {
        off: u64,
        len: u64,
        reason: &'static str,
    },
    /// The journal was opened read-only (`Journal::open_read_only`).
    ReadOnly,
    /// The media failed to write back what the journal wrote (`Media::take_error`), now
    /// or earlier: the journal writes nothing more until it is reopened.
    Media { what: String },
    /// A committed transaction is damaged and later ones follow it: replaying the log
    /// up to it would put older metadata back over newer, so `open` refuses, writing
    /// nothing. [`Journal::recover`](crate::Journal::recover) handles such a log.
    Damaged(Damage),
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::InvalidRegion { start, len, reason } => {
                write!(f, "invalid journal region at byte {start}, {len} bytes: {reason}")
            }
            JournalError::Corrupt { what } => write!(f, "corrupt journal: {what}"),
            JournalError::ReadOnly => write!(f, "the journal was opened read-only"),
            JournalError::Media { what } => write!(f, "journal write-back failed: {what}"),
            JournalError::Damaged(d) => write!(f, "{d}"),
            JournalError::TooLarge { needed, log_bytes } => write!(
                f,
                "transaction too large for the journal: needs {needed} bytes of log, the log holds {log_bytes}"
            ),
            JournalError::InvalidRecord { off, len, reason } => {
                write!(f, "invalid journal record ({len} bytes at byte {off}): {reason}")
            }
        }
    }
}

impl std::error::Error for JournalError {}
