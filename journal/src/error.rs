//! `JournalError`: everything the journal can refuse or detect.

use std::fmt;

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
