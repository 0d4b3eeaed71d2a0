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
        Ok(h)
    }
}
