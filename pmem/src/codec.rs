//! The one little-endian and checksum codec of the on-media structures (docs/FORMAT.md),
//! shared by the journal and the format crates.
//!
//! Two CRCs, on purpose (FORMAT.md "Journal", "Commit record"):
//! - [`crc32`]: CRC-32 with the IEEE 802.3 polynomial (reflected 0xEDB88320, the one of
//!   zlib and crc32fast), the self-checksum of every structure: superblock, inode,
//!   extent, extent/directory/xattr/bitmap blocks, dirent, and the journal's header,
//!   transaction header, record and commit record.
//! - [`crc32c`]: CRC-32C (Castagnoli, reflected 0x82F63B78), only the journal's body
//!   checksum over a whole transaction. A CRC over a region is blind to replacing a
//!   structure that ends in its own CRC of the same polynomial by another valid one (the
//!   CRC residue), so the body checksum must not be the structures' CRC-32.
//!
//! Readers never panic, whatever the offset: their input comes from the device. A read
//! that does not fit in the slice returns 0 (a decoder checks the slice's length before
//! reading; the zero then fails its magic or CRC check at worst), and debug builds
//! assert, so tests and fuzzing find a decoder that forgot its length check. Writers fill
//! buffers their encoder sized from the layout constants, and panic on an offset outside
//! the buffer like slice indexing does: that is a bug of the encoder, never of the input.

/// CRC-32 (IEEE polynomial) of `buf`: the checksum of every structure.
pub fn crc32(buf: &[u8]) -> u32 {
    crc32fast::hash(buf)
}

/// CRC-32 (IEEE) of the concatenation of `parts`, without building it.
pub fn crc32_parts(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// CRC-32 (IEEE) of `buf` computed as if the 4 bytes at `crc_off` (the structure's own
/// CRC field) were zero. The hole is clipped to `buf`, so this never panics.
pub fn crc_with_hole(buf: &[u8], crc_off: usize) -> u32 {
    let start = crc_off.min(buf.len());
    let end = crc_off.saturating_add(4).min(buf.len());
    let zeros = [0u8; 4];
    crc32_parts(&[&buf[..start], &zeros[..end - start], &buf[end..]])
}

/// CRC-32C (Castagnoli) of `buf`: the journal's transaction body checksum. Uses the
/// SSE4.2 `crc32` instruction when the CPU has it, a table otherwise (same result).
pub fn crc32c(buf: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU supports SSE4.2 (checked just above), the only requirement
            // of the target feature of `crc32c_sse42`.
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
fn crc32c_table(mut crc: u32, buf: &[u8]) -> u32 {
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

/// The `N` bytes at `off`, or None if they do not fit in `buf`.
fn field<const N: usize>(buf: &[u8], off: usize) -> Option<[u8; N]> {
    buf.get(off..off.checked_add(N)?)?.try_into().ok()
}

fn get<const N: usize>(buf: &[u8], off: usize) -> [u8; N] {
    let f = field(buf, off);
    debug_assert!(
        f.is_some(),
        "read of {N} bytes at {off} past a {}-byte slice",
        buf.len()
    );
    f.unwrap_or([0; N])
}

/// The little-endian u16 at `off` (0 if it does not fit: see the module doc).
pub fn get_u16(buf: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(get(buf, off))
}

/// The little-endian u32 at `off` (0 if it does not fit: see the module doc).
pub fn get_u32(buf: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(get(buf, off))
}

/// The little-endian u64 at `off` (0 if it does not fit: see the module doc).
pub fn get_u64(buf: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(get(buf, off))
}

/// Stores `v` little-endian at `off`. Panics if it does not fit (an encoder bug).
pub fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    buf[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

/// Stores `v` little-endian at `off`. Panics if it does not fit (an encoder bug).
pub fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Stores `v` little-endian at `off`. Panics if it does not fit (an encoder bug).
pub fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The standard check values ("123456789") tell the two polynomials apart.
    #[test]
    fn crc32_is_the_ieee_polynomial() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn crc32c_is_the_castagnoli_polynomial() {
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

    #[test]
    fn crc_with_hole_equals_the_crc_with_the_field_zeroed() {
        let data: Vec<u8> = (1..=40u8).collect();
        for off in 0..=36 {
            let mut z = data.clone();
            z[off..off + 4].fill(0);
            assert_eq!(crc_with_hole(&data, off), crc32(&z), "offset {off}");
        }
    }

    #[test]
    fn crc_with_hole_clips_a_hole_past_the_end() {
        let data = [9u8; 10];
        assert_eq!(
            crc_with_hole(&data, 8),
            crc32(&[9, 9, 9, 9, 9, 9, 9, 9, 0, 0])
        );
        assert_eq!(crc_with_hole(&data, 100), crc32(&data));
        assert_eq!(crc_with_hole(&data, usize::MAX), crc32(&data));
    }

    #[test]
    fn crc32_parts_equals_the_crc_of_the_concatenation() {
        assert_eq!(crc32_parts(&[b"1234", b"", b"56789"]), crc32(b"123456789"));
    }

    #[test]
    fn fields_are_little_endian() {
        let mut b = [0u8; 16];
        put_u16(&mut b, 0, 0x0102);
        put_u32(&mut b, 2, 0x0304_0506);
        put_u64(&mut b, 6, 0x0708_090a_0b0c_0d0e);
        assert_eq!(
            b[..14],
            [2, 1, 6, 5, 4, 3, 0xe, 0xd, 0xc, 0xb, 0xa, 9, 8, 7]
        );
        assert_eq!(get_u16(&b, 0), 0x0102);
        assert_eq!(get_u32(&b, 2), 0x0304_0506);
        assert_eq!(get_u64(&b, 6), 0x0708_090a_0b0c_0d0e);
    }

    #[test]
    fn field_past_the_end_is_none_not_a_panic() {
        let b = [0xffu8; 8];
        assert_eq!(field::<8>(&b, 0), Some([0xff; 8]));
        assert_eq!(field::<8>(&b, 1), None);
        assert_eq!(field::<4>(&b, usize::MAX - 1), None);
    }

    /// Release builds read 0 past the end (debug builds assert instead: see the module doc).
    #[cfg(not(debug_assertions))]
    #[test]
    fn read_past_the_end_is_zero() {
        let b = [0xffu8; 8];
        assert_eq!(get_u64(&b, 1), 0);
        assert_eq!(get_u32(&b, usize::MAX), 0);
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "past a 8-byte slice")]
    fn read_past_the_end_asserts_in_debug_builds() {
        get_u32(&[0u8; 8], 6);
    }
}
