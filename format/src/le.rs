//! Little-endian field access and the CRC shared by the structures.

// Little-endian field access. Callers pass slices of known length, so the indexing
// below is within bounds by construction (each decode checks the slice length first).
pub(crate) fn get_u16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
pub(crate) fn get_u32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
pub(crate) fn get_u64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}
pub(crate) fn put_u16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

pub fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// CRC of `bytes` with the 4-byte field at `at` taken as zero.
pub(crate) fn crc_skip(bytes: &[u8], at: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..at]);
    h.update(&[0u8; 4]);
    h.update(&bytes[at + 4..]);
    h.finalize()
}
