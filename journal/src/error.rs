//! `JournalError`: everything the journal can refuse or detect.

use std::fmt;

/// Errors of the journal. None of them leaves a partially written transaction behind.
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
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::InvalidRegion { start, len, reason } => {
                write!(f, "invalid journal region at byte {start}, {len} bytes: {reason}")
            }
            JournalError::Corrupt { what } => write!(f, "corrupt journal: {what}"),
            JournalError::ReadOnly => write!(f, "the journal was opened read-only"),
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
