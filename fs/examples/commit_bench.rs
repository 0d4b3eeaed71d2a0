//! Benchmark (issue 4, group commit): THREADS threads each create, write 4 KiB into and
//! unlink files through the library API, every thread in its own directory, for a fixed
//! number of rounds. Each round is three metadata transactions (create, the write's
//! allocation, unlink). Prints the wall time of every run, the median, and the journal
//! commits against the transactions they carried (equal without group commit).
//!
//! With MODE `write`, each round is instead one 4 KiB write into the thread's own file
//! (cycling over its first MiB, so allocating at first, then overwriting): one
//! transaction per write, and no namespace lock, so the threads' commits overlap.
//!
//! Run: `cargo run --release -p daxfs --example commit_bench [THREADS] [ROUNDS] [RUNS]
//! [MODE]` (defaults 2, 20000, 5, `meta`). The device is a 256 MiB file in
//! `$COMMIT_BENCH_DIR` (default /dev/shm).

mod common;
use common::{format_256mib, TempFile};
use daxfs::{Cred, DaxFs, FsOptions, ROOT};
use std::path::PathBuf;
use std::time::Instant;

fn writer(fs: &DaxFs, dir: u64, rounds: usize) -> Result<(), String> {
    let data = vec![0x5au8; 4096];
    let a = fs
        .create(dir, b"file", 0o644, libc::O_RDWR, &Cred::root())
        .map_err(|e| format!("create: {e}"))?;
    for i in 0..rounds {
        let off = (i as u64 % 256) * 4096;
        fs.write(a.ino, off, &data, false)
            .map_err(|e| format!("write: {e}"))?;
    }
    fs.release(a.ino).map_err(|e| format!("release: {e}"))
}

fn worker(fs: &DaxFs, dir: u64, rounds: usize) -> Result<(), String> {
    let cred = Cred::root();
    let data = vec![0x5au8; 4096];
    for i in 0..rounds {
        let name = format!("f{i}");
        let a = fs
            .create(dir, name.as_bytes(), 0o644, libc::O_RDWR, &cred)
            .map_err(|e| format!("create: {e}"))?;
        fs.write(a.ino, 0, &data, false)
            .map_err(|e| format!("write: {e}"))?;
        fs.release(a.ino).map_err(|e| format!("release: {e}"))?;
        fs.unlink(dir, name.as_bytes())
            .map_err(|e| format!("unlink: {e}"))?;
    }
    Ok(())
}

/// One run on a fresh filesystem: (seconds, journal commits, transactions).
fn run(threads: usize, rounds: usize, writes: bool) -> Result<(f64, u64, u64), String> {
    // COMMIT_BENCH_DIR: where the device file goes (default /dev/shm; a disk-backed
    // directory makes every flush an msync, i.e. commits expensive).
    let dir = std::env::var("COMMIT_BENCH_DIR").unwrap_or_else(|_| "/dev/shm".into());
    let dev = TempFile(PathBuf::from(format!(
        "{dir}/daxfs-commit-bench-{}.img",
        std::process::id()
    )));
    format_256mib(&dev.0)?;
    let fs = DaxFs::mount(&dev.0, FsOptions::default()).map_err(|e| e.to_string())?;
    let cred = Cred::root();
    let dirs = (0..threads)
        .map(|t| {
            fs.mkdir(ROOT, format!("d{t}").as_bytes(), 0o755, &cred)
                .map(|a| a.ino)
                .map_err(|e| format!("mkdir: {e}"))
        })
        .collect::<Result<Vec<u64>, String>>()?;
    let before = fs.stats();
    let t = Instant::now();
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = dirs
            .iter()
            .map(|&d| {
                let fs = &fs;
                s.spawn(move || {
                    if writes {
                        writer(fs, d, rounds)
                    } else {
                        worker(fs, d, rounds)
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("worker panicked".into())))
            .collect()
    });
    let secs = t.elapsed().as_secs_f64();
    results.into_iter().collect::<Result<(), String>>()?;
    let after = fs.stats();
    let commits = after.commits - before.commits;
    let transactions = after.transactions - before.transactions;
    fs.shutdown().map_err(|e| format!("shutdown: {e}"))?;
    Ok((secs, commits, transactions))
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let threads = arg(1, 2).max(1);
    let rounds = arg(2, 20000).max(1);
    let runs = arg(3, 5).max(1);
    let writes = std::env::args().nth(4).is_some_and(|m| m == "write");
    let per_round = if writes { 1 } else { 3 };
    let mut times = Vec::new();
    for r in 0..runs {
        match run(threads, rounds, writes) {
            Ok((secs, commits, txns)) => {
                let ops = (threads * rounds * per_round) as f64;
                println!(
                    "run {r}: {secs:.3} s, {:.0} transactions/s, {commits} journal commits for {txns} transactions",
                    ops / secs
                );
                times.push(secs);
            }
            Err(e) => {
                eprintln!("commit_bench: {e}");
                std::process::exit(1);
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let what = if writes {
        "4 KiB write"
    } else {
        "create + 4 KiB write + unlink"
    };
    println!(
        "{threads} threads x {rounds} rounds ({what}): median {median:.3} s, {:.2} us per round per thread",
        median * 1e6 / rounds as f64
    );
}
