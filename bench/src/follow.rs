//! `daxfs-bench follow-delay WRITER_DIR FOLLOWER_DIR N`: the propagation delay from a
//! writer mount to a follower of the same device. N times: create a new file through the
//! writer (timed), then poll stat(2) of that name through the follower until it exists;
//! the delay runs from the create's return to the follower's first successful stat.
//! Prints `create_median_us`, `delay_median_us`, `delay_p99_us` and `delay_max_us`.
//!
//! The files go into a new directory `fd.PID` under WRITER_DIR (the follower sees it
//! under FOLLOWER_DIR), which is left behind: bench/run drops the whole device.

use std::ffi::{CStr, CString};
use std::time::{Duration, Instant};

use crate::{create_at, num, os_err, percentile, Res};

pub const USAGE: &str = "daxfs-bench follow-delay WRITER_DIR FOLLOWER_DIR N";

/// How long one name may take to appear on the follower before the run fails: far
/// beyond any follow_interval, so only a follower that stopped following hits it.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(10);

/// The figures printed, from the samples in microseconds.
#[derive(Debug, PartialEq)]
pub struct Summary {
    pub create_median_us: f64,
    pub delay_median_us: f64,
    pub delay_p99_us: f64,
    pub delay_max_us: f64,
}

impl Summary {
    pub fn of(creates: &mut [f64], delays: &mut [f64]) -> Summary {
        Summary {
            create_median_us: percentile(creates, 50.0),
            delay_median_us: percentile(delays, 50.0),
            delay_p99_us: percentile(delays, 99.0),
            delay_max_us: percentile(delays, 100.0),
        }
    }
}

fn cpath(s: &str) -> Res<CString> {
    CString::new(s).map_err(|_| format!("{s:?}: a path with a NUL byte"))
}

fn exists(path: &CStr) -> bool {
    // SAFETY: st is plain old data written by stat; path is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; st outlives the call.
    unsafe { libc::stat(path.as_ptr(), &mut st) == 0 }
}

/// Polls `path` until it exists; returns when it first did, or an error after `timeout`.
fn wait_for(path: &CStr, timeout: Duration) -> Res<Instant> {
    let t0 = Instant::now();
    loop {
        if exists(path) {
            return Ok(Instant::now());
        }
        if t0.elapsed() > timeout {
            return Err(format!(
                "{}: not visible on the follower after {timeout:?}",
                path.to_string_lossy()
            ));
        }
        std::hint::spin_loop();
    }
}

pub fn delay_cmd(args: &[String]) -> Res<()> {
    let (Some(wdir), Some(fdir)) = (args.first(), args.get(1)) else {
        return Err(format!("usage: {USAGE}"));
    };
    let n = num(args.get(2), "N", None)?;
    let sub = format!("fd.{}", std::process::id());
    let wsub = format!("{wdir}/{sub}");
    std::fs::create_dir(&wsub).map_err(|e| format!("{wsub}: {e}"))?;
    wait_for(&cpath(&format!("{fdir}/{sub}"))?, APPEAR_TIMEOUT)?;
    let wd = cpath(&wsub)?;
    // SAFETY: wd is NUL-terminated.
    let dfd = unsafe {
        libc::open(
            wd.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dfd < 0 {
        return Err(os_err(&wsub));
    }
    let r = run(dfd, &format!("{fdir}/{sub}"), n);
    // SAFETY: dfd was opened above and is closed once.
    unsafe { libc::close(dfd) };
    let s = r?;
    println!("create_median_us {:.3}", s.create_median_us);
    println!("delay_median_us {:.3}", s.delay_median_us);
    println!("delay_p99_us {:.3}", s.delay_p99_us);
    println!("delay_max_us {:.3}", s.delay_max_us);
    Ok(())
}

fn run(dfd: libc::c_int, fsub: &str, n: u64) -> Res<Summary> {
    let mut creates = Vec::new();
    let mut delays = Vec::new();
    for i in 0..n {
        // names built before the clock starts
        let name = cpath(&format!("f{i}"))?;
        let fpath = cpath(&format!("{fsub}/f{i}"))?;
        let t0 = Instant::now();
        create_at(dfd, &name)?;
        let t1 = Instant::now();
        let seen = wait_for(&fpath, APPEAR_TIMEOUT)?;
        creates.push((t1 - t0).as_secs_f64() * 1e6);
        delays.push((seen - t1).as_secs_f64() * 1e6);
    }
    Ok(Summary::of(&mut creates, &mut delays))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_takes_median_p99_and_max_of_the_delays_and_median_of_the_creates() {
        let mut creates = vec![3.0, 1.0, 2.0];
        let mut delays: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        let s = Summary::of(&mut creates, &mut delays);
        assert_eq!(
            s,
            Summary {
                create_median_us: 2.0,
                delay_median_us: 100.0,
                delay_p99_us: 198.0,
                delay_max_us: 200.0,
            }
        );
    }
}
