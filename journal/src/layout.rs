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
pub(crate) const RECORD_HEADER_SIZE: u64 = rec::DATA as u64;
/// Transactions start and end on cache-line boundaries.
pub(crate) const TXN_ALIGN: u64 = 64;
/// Record data is padded to this alignment so record headers stay 8-byte aligned.
pub(crate) const DATA_ALIGN: u64 = 8;

use daxfs_pmem::codec::{crc_with_hole, get_u32, get_u64, put_u32, put_u64};

/// Field offsets of a header copy (docs/FORMAT.md "Header").
pub(crate) mod hdr {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = MAGIC + super::HEADER_MAGIC.len();
    /// CRC-32 of the copy with this field zero.
    pub const CRC: usize = VERSION + 4;
    pub const GENERATION: usize = CRC + 4;
    pub const JOURNAL_ID: usize = GENERATION + 8;
    pub const REGION_START: usize = JOURNAL_ID + 8;
    pub const REGION_LEN: usize = REGION_START + 8;
    pub const TAIL: usize = REGION_LEN + 8;
    pub const TAIL_SEQ: usize = TAIL + 8;
}
const _: () = assert!(hdr::TAIL_SEQ + 8 == HEADER_SIZE);

/// Field offsets of a transaction header (docs/FORMAT.md "Transaction").
pub(crate) mod txn_hdr {
    pub const MAGIC: usize = 0;
    /// CRC-32 of the header with this field zero.
    pub const CRC: usize = MAGIC + 4;
    pub const JOURNAL_ID: usize = CRC + 4;
    pub const SEQUENCE: usize = JOURNAL_ID + 8;
    /// Total length, header and commit record included.
    pub const TOTAL: usize = SEQUENCE + 8;
    pub const COUNT: usize = TOTAL + 8;
    /// 4 reserved bytes, then the payload bytes.
    pub const PAYLOAD: usize = COUNT + 4 + 4;
    pub const SINCE: usize = PAYLOAD + 8;
}
const _: () = assert!(txn_hdr::SINCE + 8 + 8 == TXN_HEADER_SIZE as usize);

/// Field offsets of a record, relative to its start (docs/FORMAT.md "Record").
pub(crate) mod rec {
    pub const TARGET: usize = 0;
    pub const LEN: usize = TARGET + 8;
    /// CRC-32 of the bytes before it followed by the data.
    pub const CRC: usize = LEN + 4;
    pub const DATA: usize = CRC + 4;
}

/// Field offsets of a commit record (docs/FORMAT.md "Commit record"). The sequence,
/// total and count repeat the header's at the header's offsets.
pub(crate) mod commit_rec {
    pub const MAGIC: usize = 0;
    /// CRC-32 of the record with this field zero.
    pub const CRC: usize = MAGIC + 4;
    pub const JOURNAL_ID: usize = CRC + 4;
    pub const SEQUENCE: usize = JOURNAL_ID + 8;
    pub const TOTAL: usize = SEQUENCE + 8;
    pub const COUNT: usize = TOTAL + 8;
    /// CRC-32C of every transaction byte before the commit record.
    pub const BODY_CRC: usize = COUNT + 4;
}
const _: () = assert!(commit_rec::BODY_CRC + 4 + 24 == COMMIT_SIZE as usize);
// The scan reads a transaction's magic, CRC and journal id at the same offsets whichever
// of the two 64-byte structures it finds.
const _: () = assert!(
    txn_hdr::MAGIC == commit_rec::MAGIC
        && txn_hdr::CRC == commit_rec::CRC
        && txn_hdr::JOURNAL_ID == commit_rec::JOURNAL_ID
);

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
        b[hdr::MAGIC..hdr::VERSION].copy_from_slice(&HEADER_MAGIC);
        put_u32(&mut b, hdr::VERSION, VERSION);
        put_u64(&mut b, hdr::GENERATION, self.generation);
        put_u64(&mut b, hdr::JOURNAL_ID, self.journal_id);
        put_u64(&mut b, hdr::REGION_START, self.region_start);
        put_u64(&mut b, hdr::REGION_LEN, self.region_len);
        put_u64(&mut b, hdr::TAIL, self.tail);
        put_u64(&mut b, hdr::TAIL_SEQ, self.tail_seq);
        let crc = crc_with_hole(&b, hdr::CRC);
        put_u32(&mut b, hdr::CRC, crc);
        b
    }

    /// Decodes and checks one copy against the region it is supposed to describe.
    pub(crate) fn decode(
        b: &[u8; HEADER_SIZE],
        start: u64,
        len: u64,
    ) -> Result<Header, &'static str> {
        if b[hdr::MAGIC..hdr::VERSION] != HEADER_MAGIC {
            return Err("bad magic");
        }
        if get_u32(b, hdr::CRC) != crc_with_hole(b, hdr::CRC) {
            return Err("bad crc32");
        }
        if get_u32(b, hdr::VERSION) != VERSION {
            return Err("unsupported version");
        }
        let h = Header {
            generation: get_u64(b, hdr::GENERATION),
            journal_id: get_u64(b, hdr::JOURNAL_ID),
            region_start: get_u64(b, hdr::REGION_START),
            region_len: get_u64(b, hdr::REGION_LEN),
            tail: get_u64(b, hdr::TAIL),
            tail_seq: get_u64(b, hdr::TAIL_SEQ),
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
