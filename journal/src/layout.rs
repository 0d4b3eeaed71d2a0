//! On-media layout of the journal: constants and the header. The little-endian fields and
//! the CRCs are daxfs_pmem::codec's, shared with the format crate.
//! docs/FORMAT.md ("Journal") is the normative description; keep both in sync.

/// Byte size of one header copy (one cache line, so a copy is flushed by one clwb).
pub(crate) const HEADER_SIZE: usize = 64;
/// Offsets of the two header copies inside the journal region's first block. They sit in
/// different cache lines (and far apart) so a torn write of one never touches the other.
pub(crate) const HEADER_COPY_OFFSETS: [u64; 2] = [0, 2048];
/// The first block of the region holds the header copies; the log follows it.
pub(crate) const HEADER_AREA: u64 = 4096;

pub(crate) const HEADER_MAGIC: [u8; 8] = *b"DAXFSJH\0";
pub(crate) const VERSION: u32 = 1;

pub(crate) const TXN_MAGIC: u32 = u32::from_le_bytes(*b"DXJT");
pub(crate) const COMMIT_MAGIC: u32 = u32::from_le_bytes(*b"DXJC");
pub(crate) const TXN_HEADER_SIZE: u64 = 64;
pub(crate) const COMMIT_SIZE: u64 = 64;
pub(crate) const RECORD_HEADER_SIZE: u64 = 16;
/// Transactions start and end on cache-line boundaries.
pub(crate) const TXN_ALIGN: u64 = 64;
/// Record data is padded to this alignment so record headers stay 8-byte aligned.
pub(crate) const DATA_ALIGN: u64 = 8;

use daxfs_pmem::codec::{crc_with_hole, get_u32, get_u64, put_u32, put_u64};

/// First sequence number of a freshly formatted journal.
pub(crate) const FIRST_SEQUENCE: u64 = 1;

pub(crate) fn round_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align).saturating_mul(align)
}

/// One copy of the journal header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// Incremented by every header write; the valid copy with the highest wins.
    pub generation: u64,
    /// Random per-format identifier stamped into every transaction.
    pub journal_id: u64,
    pub region_start: u64,
    pub region_len: u64,
    /// Log offset (relative to the log area) where replay starts.
    pub tail: u64,
    /// Sequence number the transaction at `tail` must carry.
    pub tail_seq: u64,
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&HEADER_MAGIC);
        put_u32(&mut b, 8, VERSION);
        put_u64(&mut b, 16, self.generation);
        put_u64(&mut b, 24, self.journal_id);
        put_u64(&mut b, 32, self.region_start);
        put_u64(&mut b, 40, self.region_len);
        put_u64(&mut b, 48, self.tail);
        put_u64(&mut b, 56, self.tail_seq);
        let crc = crc_with_hole(&b, 12);
        put_u32(&mut b, 12, crc);
        b
    }

    /// Decodes and checks one copy against the region it is supposed to describe.
    pub(crate) fn decode(
        b: &[u8; HEADER_SIZE],
        start: u64,
        len: u64,
    ) -> Result<Header, &'static str> {
        if b[0..8] != HEADER_MAGIC {
            return Err("bad magic");
        }
        if get_u32(b, 12) != crc_with_hole(b, 12) {
            return Err("bad crc32");
        }
        if get_u32(b, 8) != VERSION {
            return Err("unsupported version");
        }
        let h = Header {
            generation: get_u64(b, 16),
            journal_id: get_u64(b, 24),
            region_start: get_u64(b, 32),
            region_len: get_u64(b, 40),
            tail: get_u64(b, 48),
            tail_seq: get_u64(b, 56),
        };
        if h.region_start != start || h.region_len != len {
            return Err("describes a different journal region");
        }
        let log_len = len - HEADER_AREA;
        if h.tail > log_len || h.tail & (TXN_ALIGN - 1) != 0 {
            return Err("tail outside the log");
        }
        // Both count up by one per checkpoint or commit and never come near 2^63; a copy
        // beyond it could only wrap (a newer header would then look older than a stale
        // one, and the log damaged), so it is not a valid copy.
        if h.generation >= COUNTER_LIMIT || h.tail_seq >= COUNTER_LIMIT {
            return Err("generation or sequence number out of range");
        }
        Ok(h)
    }
}

/// Bound on a header's generation and tail sequence number (see `Header::decode`).
pub(crate) const COUNTER_LIMIT: u64 = 1 << 63;

#[cfg(test)]
mod tests {
    use super::*;
    use daxfs_pmem::codec::{crc32, crc32c};

    /// Byte-exact encoding of a fixed header, captured before the codec was shared.
    #[test]
    fn header_bytes_are_unchanged() {
        let h = Header {
            generation: 3,
            journal_id: 0x0102_0304_0506_0708,
            region_start: 8192,
            region_len: 1 << 20,
            tail: 128,
            tail_seq: 9,
        };
        let hex: String = h.encode().iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(
            hex,
            "44415846534a480001000000da71f19303000000000000000807060504030201\
             0020000000000000000010000000000080000000000000000900000000000000"
        );
    }

    /// Byte-exact encoding of a fixed two-record transaction (header, records, commit
    /// record) under a fixed journal id, captured before the codec was shared.
    #[test]
    fn transaction_bytes_are_unchanged() {
        use daxfs_pmem::{Media, MemMedia};
        const START: u64 = 8192;
        const LEN: u64 = 64 * 1024;
        let m = std::sync::Arc::new(MemMedia::new(256 * 1024));
        crate::format(&*m, START, LEN).unwrap();
        for (generation, copy) in HEADER_COPY_OFFSETS.iter().enumerate() {
            let h = Header {
                generation: generation as u64,
                journal_id: 0x0a0b_0c0d_0e0f_1011,
                region_start: START,
                region_len: LEN,
                tail: 0,
                tail_seq: FIRST_SEQUENCE,
            };
            m.write(START + copy, &h.encode());
        }
        let (mut j, _) = crate::Journal::open(m.clone(), START, LEN).unwrap();
        let mut t = crate::Transaction::new();
        t.write(128 * 1024, b"hello");
        t.write(128 * 1024 + 4096, &[0xee; 13]);
        j.commit(&t).unwrap();
        let mut b = vec![0u8; t.encoded_len() as usize];
        m.read(START + HEADER_AREA, &mut b);
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let want = concat!(
            "44584a546189b71f11100f0e0d0c0b0a0200000000000000c000000000000000",
            "0200000000000000120000000000000002000000000000000000000000000000",
            "000002000000000005000000f854ccdb68656c6c6f0000000010020000000000",
            "0d000000b5fe375eeeeeeeeeeeeeeeeeeeeeeeeeee0000000000000000000000",
            "44584a4348e34a6f11100f0e0d0c0b0a0200000000000000c000000000000000",
            "0200000037289045000000000000000000000000000000000000000000000000",
        );
        assert_eq!(hex, want);
    }

    /// Why the body checksum is CRC-32C: a CRC-32 over a region does not change when a
    /// structure ending in its own CRC-32 is replaced by another valid one.
    #[test]
    fn body_checksum_sees_a_self_checksummed_record_replaced() {
        let sealed = |fill: u8| {
            let mut r = vec![fill; 252];
            let c = crc32(&r);
            r.extend_from_slice(&c.to_le_bytes());
            r
        };
        let body = |rec: &[u8]| {
            let mut b = b"transaction header and other records".to_vec();
            b.extend_from_slice(rec);
            b.extend_from_slice(b"trailing record");
            b
        };
        let (a, b) = (body(&sealed(1)), body(&sealed(2)));
        assert_ne!(a, b);
        assert_eq!(crc32(&a), crc32(&b), "the CRC-32 blind spot");
        assert_ne!(crc32c(&a), crc32c(&b));
    }
}
