//! Measures the daemon-side memory of creating and deleting many files through the core
//! (no FUSE): RssAnon after each create and delete phase, and after malloc_trim.
//!
//! `cargo run --release --example churn_memory [FILES] [CYCLES]` (default 200000, 3).

mod common;

use common::TempFile;
use daxfs::{Cred, DaxFs, FsOptions};
use std::path::PathBuf;

fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("RssAnon:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let files: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let cycles: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let path = PathBuf::from(format!("/dev/shm/daxfs-churn-{}", std::process::id()));
    let _f = TempFile(path.clone());
    common::format_sized(&path, 2 << 30, (files + 1000).max(1 << 18))?;
    let fs = DaxFs::mount(&path, FsOptions::default()).map_err(|e| e.to_string())?;
    let cred = Cred::root();
    println!("mounted: RssAnon {} KiB", rss_anon_kib());
    let dirs = 20u64;
    for c in 1..=cycles {
        for d in 0..dirs {
            let dir = fs
                .mkdir(1, format!("d{d}").as_bytes(), 0o755, &cred)
                .map_err(|e| format!("mkdir: {e:?}"))?;
            for i in 0..files / dirs {
                let a = fs
                    .create(
                        dir.ino,
                        format!("f{i}").as_bytes(),
                        0o644,
                        libc::O_RDWR,
                        &cred,
                    )
                    .map_err(|e| format!("create: {e:?}"))?;
                fs.release(a.ino).map_err(|e| format!("release: {e:?}"))?;
            }
        }
        println!("cycle {c} created: RssAnon {} KiB", rss_anon_kib());
        for d in 0..dirs {
            let dir = fs
                .lookup(1, format!("d{d}").as_bytes())
                .map_err(|e| format!("{e:?}"))?;
            for i in 0..files / dirs {
                fs.unlink(dir.ino, format!("f{i}").as_bytes())
                    .map_err(|e| format!("unlink: {e:?}"))?;
            }
            fs.rmdir(1, format!("d{d}").as_bytes())
                .map_err(|e| format!("rmdir: {e:?}"))?;
        }
        println!("cycle {c} deleted: RssAnon {} KiB", rss_anon_kib());
        // SAFETY: malloc_trim has no preconditions.
        unsafe { libc::malloc_trim(0) };
        println!("cycle {c} trimmed: RssAnon {} KiB", rss_anon_kib());
    }
    fs.shutdown().map_err(|e| format!("shutdown: {e:?}"))?;
    Ok(())
}
