//! Micro-benchmark of the persistence primitives on emulated pmem (/dev/shm):
//! memcpy vs memcpy + flush + sfence vs non-temporal copy + sfence, by write size, and the
//! cost of flushing one dirty 4 KiB page with each flush instruction. Picks
//! `device::NT_THRESHOLD`. Run: `cargo run --release -p daxfs --example persist_bench`.

use std::path::PathBuf;
use std::time::Instant;

mod common;
use common::TempFile;
use daxfs_pmem::persist::{self, FlushInstr};
use daxfs_pmem::{Device, DeviceOptions};

const REGION: usize = 256 << 20;
const RUNS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// GB/s of writing the whole region in `size`-byte pieces with `op(dst, src, size)`.
fn throughput(
    base: *mut u8,
    region: usize,
    src: &[u8],
    size: usize,
    op: &dyn Fn(*mut u8, *const u8, usize),
) -> f64 {
    let runs = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            let mut done = 0;
            // Write REGION bytes in all. With region = REGION the destination walks
            // 256 MiB and is cold (not cached), as freshly allocated file blocks are;
            // with a small region it stays cached, as rewritten metadata does.
            while done < REGION {
                let mut off = 0;
                while off + size <= region {
                    op(base.wrapping_add(off), src.as_ptr(), size);
                    off += size;
                }
                done += off.max(1);
            }
            done as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    median(runs)
}

/// Nanoseconds to flush + fence one dirty 4 KiB page with `instr`.
fn flush_cost(base: *mut u8, instr: FlushInstr, dirty: bool) -> f64 {
    const PAGES: usize = 1024; // 4 MiB: past L2, inside L3, like a recent write
    let runs = (0..RUNS)
        .map(|_| {
            // SAFETY: the range is inside the bench device's mapping.
            unsafe {
                if dirty {
                    std::ptr::write_bytes(base, 0x5A, PAGES * 4096);
                } else {
                    persist::flush_lines(base, PAGES * 4096);
                    persist::sfence();
                    let mut sum = 0u64;
                    for i in (0..PAGES * 4096).step_by(64) {
                        sum = sum.wrapping_add(u64::from(std::ptr::read_volatile(base.add(i))));
                    }
                    std::hint::black_box(sum);
                }
            }
            let t = Instant::now();
            for p in 0..PAGES {
                // SAFETY: as above.
                unsafe { persist::flush_lines_with(instr, base.add(p * 4096), 4096) };
                persist::sfence();
            }
            t.elapsed().as_secs_f64() * 1e9 / PAGES as f64
        })
        .collect();
    median(runs)
}

fn main() {
    let file = TempFile(PathBuf::from(format!(
        "/dev/shm/daxfs-persist-bench-{}",
        std::process::id()
    )));
    let result = std::fs::File::create(&file.0)
        .and_then(|f| daxfs_pmem::allocate_file(&f, 0, REGION as u64))
        .map_err(|e| format!("{}: {e}", file.0.display()))
        .and_then(|()| Device::open(&file.0, DeviceOptions::default()).map_err(|e| e.to_string()));
    match result {
        Ok(dev) => bench(&dev),
        Err(e) => {
            eprintln!("{e}");
            drop(file);
            std::process::exit(1);
        }
    }
}

fn bench(dev: &Device) {
    println!("{dev:?}");
    let base = dev.as_ptr();
    let src: Vec<u8> = (0..(1usize << 20)).map(|i| (i * 7) as u8).collect();

    let memcpy = |d: *mut u8, s: *const u8, n: usize| {
        // SAFETY: d..d+n is inside the mapping, s..s+n inside `src`.
        unsafe { std::ptr::copy_nonoverlapping(s, d, n) };
    };
    let copy_flush = |d: *mut u8, s: *const u8, n: usize| {
        // SAFETY: as above.
        unsafe {
            std::ptr::copy_nonoverlapping(s, d, n);
            persist::flush_lines(d, n);
        }
        persist::sfence();
    };
    let nt = |d: *mut u8, s: *const u8, n: usize| {
        // SAFETY: as above; distinct buffers.
        unsafe { persist::copy_nontemporal(d, s, n) };
        persist::sfence();
    };

    let mut sink = vec![0u8; 1 << 20];
    let sink_ptr = sink.as_mut_ptr() as usize;
    let copy_flush_rb = |d: *mut u8, s: *const u8, n: usize| {
        copy_flush(d, s, n);
        // SAFETY: d..d+n is inside the mapping; the sink holds 1 MiB >= n.
        unsafe { std::ptr::copy_nonoverlapping(d, sink_ptr as *mut u8, n) };
    };
    let nt_rb = |d: *mut u8, s: *const u8, n: usize| {
        nt(d, s, n);
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(d, sink_ptr as *mut u8, n) };
    };
    println!("\nwrite then read back (metadata pattern), hot 1 MiB region, GB/s written");
    println!(
        "{:>8} {:>16} {:>12}",
        "size", "memcpy+flush+sf", "nt+sfence"
    );
    for size in [256, 1024, 4096, 16384, 65536] {
        let b = throughput(base, 1 << 20, &src, size, &copy_flush_rb);
        let c = throughput(base, 1 << 20, &src, size, &nt_rb);
        println!("{size:>8} {b:>16.2} {c:>12.2}");
    }
    std::hint::black_box(&mut sink);

    for (what, region) in [
        ("cold destination (256 MiB region)", REGION),
        ("hot destination (1 MiB region, cached)", 1 << 20),
    ] {
        println!("\nwrite throughput, {what}, GB/s (median of {RUNS} runs of 256 MiB)");
        println!(
            "{:>8} {:>10} {:>16} {:>12}",
            "size", "memcpy", "memcpy+flush+sf", "nt+sfence"
        );
        for size in [64, 256, 1024, 4096, 8192, 16384, 32768, 65536, 1 << 20] {
            let a = throughput(base, region, &src, size, &memcpy);
            let b = throughput(base, region, &src, size, &copy_flush);
            let c = throughput(base, region, &src, size, &nt);
            println!("{size:>8} {a:>10.2} {b:>16.2} {c:>12.2}");
        }
    }

    println!("\nflush + sfence of one 4 KiB page, ns (median of {RUNS} runs of 1024 pages)");
    println!("{:>11} {:>8} {:>8}", "instr", "dirty", "clean");
    for instr in [
        FlushInstr::Clwb,
        FlushInstr::ClflushOpt,
        FlushInstr::Clflush,
    ] {
        if !persist::supports(instr) {
            println!("{:>11} unsupported", instr.name());
            continue;
        }
        let d = flush_cost(base, instr, true);
        let c = flush_cost(base, instr, false);
        println!("{:>11} {d:>8.0} {c:>8.0}", instr.name());
    }
}
