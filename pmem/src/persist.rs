//! CPU persistence primitives: cache-line flushes, store fences and non-temporal copies.
//!
//! This module owns the x86 persistence model used by the rest of daxfs: a store to the
//! device mapping is durable only once its cache line has been written back (CLWB,
//! CLFLUSHOPT or CLFLUSH, best available, chosen once at run time by CPUID) or it was a
//! non-temporal store, *and* an SFENCE followed. Other architectures get portable
//! fallbacks (a fence only), which is correct for emulated pmem but not for real
//! persistent memory there.

use std::sync::atomic::{AtomicU8, Ordering};

/// Cache line size assumed for flushes and non-temporal copies (64 bytes on every x86_64).
pub const CACHE_LINE: usize = 64;

/// The cache-line write-back instruction in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushInstr {
    /// CLWB: writes the line back and may keep it cached (best: later reads stay fast).
    Clwb,
    /// CLFLUSHOPT: writes back and invalidates; weakly ordered, so flushes pipeline.
    ClflushOpt,
    /// CLFLUSH: writes back and invalidates; serialised against other flushes (slow).
    Clflush,
    /// No flush instruction (non-x86_64 or a CPU without CLFLUSH): fences only.
    None,
}

impl FlushInstr {
    /// The lowercase instruction name, for logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            FlushInstr::Clwb => "clwb",
            FlushInstr::ClflushOpt => "clflushopt",
            FlushInstr::Clflush => "clflush",
            FlushInstr::None => "none",
        }
    }
}

// Detected CPU support, as a bit mask; 0 = not detected yet.
const DETECTED: u8 = 1 << 0;
const HAS_CLFLUSH: u8 = 1 << 1;
const HAS_CLFLUSHOPT: u8 = 1 << 2;
const HAS_CLWB: u8 = 1 << 3;
static CPU_FLAGS: AtomicU8 = AtomicU8::new(0);

fn cpu_flags() -> u8 {
    let flags = CPU_FLAGS.load(Ordering::Relaxed);
    if flags & DETECTED != 0 {
        return flags;
    }
    // Detection is idempotent, so a race between two first callers is harmless.
    let flags = detect() | DETECTED;
    CPU_FLAGS.store(flags, Ordering::Relaxed);
    flags
}

#[cfg(target_arch = "x86_64")]
fn detect() -> u8 {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    let mut flags = 0;
    // CPUID exists on every x86_64 CPU; leaf 0 says which leaves may be queried.
    let max_leaf = __cpuid(0).eax;
    if max_leaf >= 1 && __cpuid(1).edx & (1 << 19) != 0 {
        flags |= HAS_CLFLUSH;
    }
    if max_leaf >= 7 {
        let ebx = __cpuid_count(7, 0).ebx;
        if ebx & (1 << 23) != 0 {
            flags |= HAS_CLFLUSHOPT;
        }
        if ebx & (1 << 24) != 0 {
            flags |= HAS_CLWB;
        }
    }
    flags
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> u8 {
    0
}

/// Whether this CPU can execute `instr` (`FlushInstr::None` is always supported).
pub fn supports(instr: FlushInstr) -> bool {
    let flags = cpu_flags();
    match instr {
        FlushInstr::Clwb => flags & HAS_CLWB != 0,
        FlushInstr::ClflushOpt => flags & HAS_CLFLUSHOPT != 0,
        FlushInstr::Clflush => flags & HAS_CLFLUSH != 0,
        FlushInstr::None => true,
    }
}

/// The best flush instruction of this CPU: CLWB, else CLFLUSHOPT, else CLFLUSH.
/// Detected once and cached.
pub fn flush_instr() -> FlushInstr {
    [
        FlushInstr::Clwb,
        FlushInstr::ClflushOpt,
        FlushInstr::Clflush,
    ]
    .into_iter()
    .find(|&i| supports(i))
    .unwrap_or(FlushInstr::None)
}

/// Writes back every cache line overlapping `ptr..ptr+len` with the best instruction.
/// Durable after the next [`sfence`].
///
/// # Safety
/// `ptr..ptr+len` must lie inside one live mapping (the flush touches each line).
#[inline]
pub unsafe fn flush_lines(ptr: *const u8, len: usize) {
    // SAFETY: forwarded contract; flush_instr() only returns supported instructions.
    unsafe { flush_lines_with(flush_instr(), ptr, len) }
}

/// Like [`flush_lines`] with a chosen instruction (benchmarks compare them). An
/// instruction this CPU lacks is replaced by [`flush_instr`], so this never faults.
///
/// # Safety
/// `ptr..ptr+len` must lie inside one live mapping.
pub unsafe fn flush_lines_with(instr: FlushInstr, ptr: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    let instr = if supports(instr) {
        instr
    } else {
        flush_instr()
    };
    let start = ptr as usize & !(CACHE_LINE - 1);
    let end = ptr as usize + len;
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::asm;
        // One loop per instruction so the choice is made once, not per line. The asm
        // blocks are not `nomem`: the compiler must complete earlier stores before them.
        match instr {
            FlushInstr::Clwb => {
                for line in (start..end).step_by(CACHE_LINE) {
                    // SAFETY: the CPU has CLWB (checked above); `line` is inside the
                    // caller's mapping, and CLWB changes no architectural state.
                    unsafe { asm!("clwb [{0}]", in(reg) line, options(nostack, preserves_flags)) };
                }
            }
            FlushInstr::ClflushOpt => {
                for line in (start..end).step_by(CACHE_LINE) {
                    // SAFETY: as above, for CLFLUSHOPT.
                    unsafe {
                        asm!("clflushopt [{0}]", in(reg) line, options(nostack, preserves_flags))
                    };
                }
            }
            FlushInstr::Clflush => {
                for line in (start..end).step_by(CACHE_LINE) {
                    // SAFETY: the CPU has CLFLUSH and `line` is inside the caller's mapping.
                    unsafe { core::arch::x86_64::_mm_clflush(line as *const u8) };
                }
            }
            FlushInstr::None => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (instr, start, end);
}

/// Store fence: completes all earlier flushes and non-temporal stores before any later
/// store. After it, everything flushed (or stored non-temporally) before is durable.
#[inline]
pub fn sfence() {
    // SAFETY: SFENCE is part of SSE, which every x86_64 CPU has; it touches no memory.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        core::arch::x86_64::_mm_sfence()
    };
    #[cfg(not(target_arch = "x86_64"))]
    std::sync::atomic::fence(Ordering::SeqCst);
}

/// Copies `len` bytes with non-temporal stores (bypassing the cache), so no flush is
/// needed: the bytes are durable after the next [`sfence`]. The aligned body uses
/// 16-byte streaming stores; the unaligned head and tail (less than a cache line each)
/// are copied normally and flushed. Faster than copy + flush for large copies to memory
/// that is not about to be read again; slower for small ones.
///
/// # Safety
/// `src..src+len` must be readable, `dst..dst+len` writable, and they must not overlap.
pub unsafe fn copy_nontemporal(dst: *mut u8, src: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        // SAFETY: the caller's contract covers the whole range; the helpers stay in it.
        unsafe {
            let (head, body) = split_aligned(dst, len);
            copy_flush(dst, src, head);
            let (mut d, mut s) = (dst.add(head), src.add(head));
            let body_end = d.add(body);
            while d < body_end {
                // d is 64-byte aligned here, so each 16-byte streaming store is aligned.
                let a = _mm_loadu_si128(s as *const __m128i);
                let b = _mm_loadu_si128(s.add(16) as *const __m128i);
                let c = _mm_loadu_si128(s.add(32) as *const __m128i);
                let e = _mm_loadu_si128(s.add(48) as *const __m128i);
                _mm_stream_si128(d as *mut __m128i, a);
                _mm_stream_si128(d.add(16) as *mut __m128i, b);
                _mm_stream_si128(d.add(32) as *mut __m128i, c);
                _mm_stream_si128(d.add(48) as *mut __m128i, e);
                d = d.add(CACHE_LINE);
                s = s.add(CACHE_LINE);
            }
            copy_flush(d, s, len - head - body);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: the caller's contract.
    unsafe {
        core::ptr::copy_nonoverlapping(src, dst, len)
    };
}

/// Zeroes `len` bytes with non-temporal stores; durable after the next [`sfence`].
///
/// # Safety
/// `dst..dst+len` must be writable.
pub unsafe fn zero_nontemporal(dst: *mut u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{__m128i, _mm_setzero_si128, _mm_stream_si128};
        // SAFETY: the caller's contract covers the whole range; the helpers stay in it.
        unsafe {
            let (head, body) = split_aligned(dst, len);
            zero_flush(dst, head);
            let mut d = dst.add(head);
            let body_end = d.add(body);
            let z = _mm_setzero_si128();
            while d < body_end {
                _mm_stream_si128(d as *mut __m128i, z);
                _mm_stream_si128(d.add(16) as *mut __m128i, z);
                _mm_stream_si128(d.add(32) as *mut __m128i, z);
                _mm_stream_si128(d.add(48) as *mut __m128i, z);
                d = d.add(CACHE_LINE);
            }
            zero_flush(d, len - head - body);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: the caller's contract.
    unsafe {
        core::ptr::write_bytes(dst, 0, len)
    };
}

/// Splits `dst..dst+len` into (head bytes up to the first cache-line boundary, body bytes
/// made of whole cache lines); the rest is the tail.
#[cfg(target_arch = "x86_64")]
fn split_aligned(dst: *mut u8, len: usize) -> (usize, usize) {
    let head = ((CACHE_LINE - (dst as usize & (CACHE_LINE - 1))) & (CACHE_LINE - 1)).min(len);
    let body = (len - head) & !(CACHE_LINE - 1);
    (head, body)
}

#[cfg(target_arch = "x86_64")]
unsafe fn copy_flush(dst: *mut u8, src: *const u8, len: usize) {
    if len > 0 {
        // SAFETY: the caller (copy_nontemporal) passes a sub-range of its valid ranges.
        unsafe {
            core::ptr::copy_nonoverlapping(src, dst, len);
            flush_lines(dst, len);
        }
    }
}

#[cfg(target_arch = "x86_64")]
unsafe fn zero_flush(dst: *mut u8, len: usize) {
    if len > 0 {
        // SAFETY: the caller (zero_nontemporal) passes a sub-range of its valid range.
        unsafe {
            core::ptr::write_bytes(dst, 0, len);
            flush_lines(dst, len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn flush_instr_is_supported_and_stable() {
        let instr = flush_instr();
        assert!(supports(instr));
        assert_eq!(flush_instr(), instr);
        #[cfg(target_arch = "x86_64")]
        assert_ne!(instr, FlushInstr::None, "every x86_64 CPU has CLFLUSH");
    }

    #[test]
    fn flush_lines_with_every_instruction_keeps_data() {
        let mut buf = pattern(4096 + 7, 3);
        let expected = buf.clone();
        for instr in [
            FlushInstr::Clwb,
            FlushInstr::ClflushOpt,
            FlushInstr::Clflush,
            FlushInstr::None,
        ] {
            // SAFETY: the range is inside `buf`.
            unsafe { flush_lines_with(instr, buf.as_mut_ptr().add(5), buf.len() - 5) };
            sfence();
        }
        assert_eq!(buf, expected);
    }

    #[test]
    fn copy_nontemporal_is_exact_at_every_alignment_and_length() {
        let src = pattern(4096 + 256, 7);
        let mut dst = vec![0xAAu8; 4096 + 512];
        let lens = (0..300).chain([511, 512, 513, 4095, 4096, 4097]);
        for len in lens {
            for dst_off in 0..CACHE_LINE + 1 {
                for src_off in [0, 1, 15, 63] {
                    dst.fill(0xAA);
                    // SAFETY: both ranges are inside their (distinct) buffers.
                    unsafe {
                        copy_nontemporal(
                            dst.as_mut_ptr().add(dst_off),
                            src.as_ptr().add(src_off),
                            len,
                        )
                    };
                    sfence();
                    assert!(dst[..dst_off].iter().all(|&b| b == 0xAA), "head clobbered");
                    assert_eq!(
                        &dst[dst_off..dst_off + len],
                        &src[src_off..src_off + len],
                        "len {len} dst_off {dst_off} src_off {src_off}"
                    );
                    assert!(
                        dst[dst_off + len..].iter().all(|&b| b == 0xAA),
                        "tail clobbered"
                    );
                }
            }
        }
    }

    #[test]
    fn zero_nontemporal_zeroes_exactly_the_range() {
        let mut buf = vec![0u8; 4096 + 256];
        for len in (0..300).chain([4096, 4097]) {
            for off in 0..CACHE_LINE + 1 {
                buf.fill(0x55);
                // SAFETY: the range is inside `buf`.
                unsafe { zero_nontemporal(buf.as_mut_ptr().add(off), len) };
                sfence();
                assert!(buf[..off].iter().all(|&b| b == 0x55));
                assert!(buf[off..off + len].iter().all(|&b| b == 0));
                assert!(buf[off + len..].iter().all(|&b| b == 0x55));
            }
        }
    }

    #[test]
    fn large_copy_nontemporal_matches_source() {
        let src = pattern(3 << 20, 11);
        let mut dst = vec![0u8; src.len()];
        // SAFETY: equal-length distinct buffers.
        unsafe { copy_nontemporal(dst.as_mut_ptr(), src.as_ptr(), src.len()) };
        sfence();
        assert!(dst == src);
    }
}
