//! Benchmark (issue 5, test 6): the latency from the last unpin of a pinned range to the
//! return of the truncate that was waiting for it, through the library API. One thread
//! holds a pinned mapping, another truncates the file and sleeps in break_layouts; the
//! mapping is dropped and the truncate's return is timed. The same truncate with no pin
//! is timed as the baseline, so the difference is the cost of the wake-up path (futex
//! wake, scheduling, relock and rescan).
//!
//! Run: `cargo run --release -p daxfs --example unpin_latency [ITERATIONS]`.

mod common;
use common::{format_256mib, TempFile};
use daxfs::{Cred, DaxFs, FsOptions, SetAttr, ROOT};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name:<28} n={:<5} median {:>8.1} us   p99 {:>8.1} us   max {:>8.1} us",
        v.len(),
        percentile(&v, 0.5).as_secs_f64() * 1e6,
        percentile(&v, 0.99).as_secs_f64() * 1e6,
        v.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
    );
}

fn truncate(fs: &DaxFs, ino: u64) -> Result<(), String> {
    let c = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    fs.setattr(ino, &Cred::root(), &c)
        .map(|_| ())
        .map_err(|e| format!("truncate: {e}"))
}

fn run(iterations: usize) -> Result<(), String> {
    let dev = TempFile(PathBuf::from(format!(
        "/dev/shm/daxfs-unpin-latency-{}.img",
        std::process::id()
    )));
    format_256mib(&dev.0)?;
    let fs = DaxFs::mount(&dev.0, FsOptions::default()).map_err(|e| e.to_string())?;
    let ino = fs
        .create(ROOT, b"f", 0o644, libc::O_RDWR, &Cred::root())
        .map_err(|e| format!("create: {e}"))?
        .ino;
    let data = vec![0x5au8; 64 << 10];
    let fill = |fs: &DaxFs| {
        fs.write(ino, 0, &data, false)
            .map(|_| ())
            .map_err(|e| format!("write: {e}"))
    };

    let mut baseline = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        fill(&fs)?;
        let t = Instant::now();
        truncate(&fs, ino)?;
        baseline.push(t.elapsed());
    }

    let mut woken = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        fill(&fs)?;
        let m = fs
            .map_pinned(ino, 0, 4096)
            .map_err(|e| format!("map: {e}"))?;
        let waits = fs.stats().waits;
        let (unpinned_at, returned_at) = thread::scope(|s| {
            let t = s.spawn(|| truncate(&fs, ino).map(|()| Instant::now()));
            // Until the truncate sleeps on the pinned block (then a little longer, so
            // it is inside the futex wait rather than on its way there).
            let give_up = Instant::now() + Duration::from_secs(10);
            while fs.stats().waits == waits && Instant::now() < give_up {
                thread::yield_now();
            }
            thread::sleep(Duration::from_millis(1));
            let unpinned_at = Instant::now();
            drop(m);
            let returned = t.join().map_err(|_| "truncate thread panicked".to_string());
            (unpinned_at, returned)
        });
        woken.push(returned_at??.saturating_duration_since(unpinned_at));
    }
    let s = fs.stats();
    println!(
        "unpin -> truncate return, {} iterations (library API, emulated pmem on /dev/shm)",
        iterations
    );
    report("truncate, no pin (baseline)", baseline);
    report("last unpin -> truncate return", woken);
    println!(
        "counters: layout_breaks {} waits {} timeouts {} violations {} balanced {}",
        s.layout_breaks,
        s.waits,
        s.timeouts,
        s.violations,
        s.balanced()
    );
    let _ = fs.release(ino);
    Ok(())
}

fn main() {
    let iterations = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(500);
    if let Err(e) = run(iterations) {
        eprintln!("unpin_latency: {e}");
        std::process::exit(1);
    }
}
