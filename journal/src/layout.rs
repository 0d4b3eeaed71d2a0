//! On-media layout of the journal: constants, the header and little-endian helpers.
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

/// First sequence number of a freshly formatted journal.
pub(crate) const FIRST_SEQUENCE: u64 = 1;

pub(crate) fn round_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align).saturating_mul(align)
}

pub(crate) fn get_u32(buf: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[off..off + 4]);
    u32::from_le_bytes(b)
}

pub(crate) fn get_u64(buf: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[off..off + 8]);
    u64::from_le_bytes(b)
}

pub(crate) fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// CRC32 of `buf` computed as if the 4 bytes at `crc_off` were zero.
pub(crate) fn crc_with_hole(buf: &[u8], crc_off: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[..crc_off]);
    h.update(&[0u8; 4]);
    h.update(&buf[crc_off + 4..]);
    h.finalize()
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

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of a transaction
/// body. Deliberately not the CRC-32 (IEEE) that protects the metadata structures the
/// records carry: a CRC over a region is blind to replacing a structure that ends in its
/// own CRC of the same polynomial by another valid such structure (the CRC residue), so
/// a torn transaction whose unwritten lines still held another valid inode record from
/// an earlier lap of the log would validate under a CRC-32 body checksum.
pub(crate) fn crc32c(buf: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU supports SSE4.2 (checked just above).
            return !unsafe { crc32c_sse42(!0, buf) };
        }
    }
    !crc32c_table(!0, buf)
}

const CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Table-driven CRC-32C update (no pre/post inversion).
pub(crate) fn crc32c_table(mut crc: u32, buf: &[u8]) -> u32 {
    for &b in buf {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// CRC-32C update with the SSE4.2 crc32 instruction (no pre/post inversion).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_sse42(crc: u32, buf: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut c = u64::from(crc);
    let mut chunks = buf.chunks_exact(8);
    for ch in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(ch);
        c = _mm_crc32_u64(c, u64::from_le_bytes(w));
    }
    let mut c = c as u32;
    for &b in chunks.remainder() {
        c = _mm_crc32_u8(c, b);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(!crc32c_table(!0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn crc32c_hardware_and_table_paths_agree_at_every_length() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 31 + 7) as u8).collect();
        for n in 0..data.len() {
            assert_eq!(
                crc32c(&data[..n]),
                !crc32c_table(!0, &data[..n]),
                "length {n}"
            );
        }
    }

    /// Why the body checksum is CRC-32C: a CRC-32 over a region does not change when a
    /// structure ending in its own CRC-32 is replaced by another valid one.
    #[test]
    fn body_checksum_sees_a_self_checksummed_record_replaced() {
        let sealed = |fill: u8| {
            let mut r = vec![fill; 252];
            let c = crc32fast::hash(&r);
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
        assert_eq!(
            crc32fast::hash(&a),
            crc32fast::hash(&b),
            "the CRC-32 blind spot"
        );
        assert_ne!(crc32c(&a), crc32c(&b));
    }
}
