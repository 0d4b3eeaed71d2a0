//! `daxfs-bench`: the measuring programs behind `bench/run` that fio cannot be.
//!
//! - `daxfs-bench meta DIR COUNT`: the metadata workload on any mounted filesystem:
//!   create, stat (cold, then warm), readdir and unlink of COUNT files in one new
//!   directory under DIR, each phase timed on its own. System calls go straight through
//!   libc with names built beforehand, so the program's own cost stays far below the
//!   filesystem's (a python loop would dominate).
//! - `daxfs-bench lib DEVICE SCRATCH_DIR [SIZE_MIB [ITERS]]`: the library API on a
//!   formatted device, no mount: zero-copy read bandwidth through `DaxFs::read_with`
//!   against a plain memcpy of the same size, and 4 KiB overwrite + persist latency
//!   through `DaxFs::write`, with the pieces that make it up timed alone; and the
//!   core's own cost per create, lookup and unlink (no FUSE).
//! - `daxfs-bench scale-lib DEVICE SIZES [BATCH [LOOKUPS]]`,
//!   `daxfs-bench scale-mount DIR SIZES [BATCH [LOOKUPS]]`,
//!   `daxfs-bench populate DEVICE DIRS FILES_PER_DIR`: the scale workloads (see
//!   `scale.rs`).
//! - `daxfs-bench follow-delay WRITER_DIR FOLLOWER_DIR N`: the propagation delay from a
//!   writer mount to a follower (see `follow.rs`).
//!
//! `DAXFS_BENCH_HOLD=PHASE:DIR` (PHASE one of create, stat_cold, stat_warm, readdir,
//! unlink) makes `meta` hold before that phase until bench/run's profiler is attached:
//! it creates `DIR/ready`, waits for `DIR/go`, runs the phase, creates `DIR/done` and
//! waits for `DIR/resume` (`bench/run --profile create` samples exactly that phase).
//!
//! Output is one `key value` line per figure (ops/s, GB/s or µs, named in the key) for
//! bench/run to parse (the scale workloads: `OP SIZE MEDIAN_US MEAN_US`); errors go to
//! stderr with exit status 1.

mod follow;
mod scale;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use daxfs::{Cred, DaxFs, FsOptions, SetAttr, SetTime, ROOT};
use daxfs_pmem::{Device, DeviceOptions};

/// What went wrong, for stderr.
type Res<T> = Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("meta") => meta_cmd(&args[1..]),
        Some("lib") => lib_cmd(&args[1..]),
        Some("scale-lib") => scale::lib_cmd(&args[1..]),
        Some("scale-mount") => scale::mount_cmd(&args[1..]),
        Some("populate") => scale::populate_cmd(&args[1..]),
        Some("follow-delay") => follow::delay_cmd(&args[1..]),
        _ => Err(format!(
            "{USAGE}\n       {}\n       {}",
            scale::USAGE,
            follow::USAGE
        )),
    };
    if let Err(e) = r {
        eprintln!("daxfs-bench: {e}");
        std::process::exit(1);
    }
}

const USAGE: &str = "usage: daxfs-bench meta DIR COUNT\n       \
                     daxfs-bench lib DEVICE SCRATCH_DIR [SIZE_MIB [ITERS]]";

fn num(s: Option<&String>, what: &str, default: Option<u64>) -> Res<u64> {
    match (s, default) {
        (Some(s), _) => s
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{what}: expected a positive number, got {s:?}")),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(USAGE.to_string()),
    }
}

/// Median of samples by nearest rank (the lower middle one of an even count).
pub fn median(v: &mut [f64]) -> f64 {
    percentile(v, 50.0)
}

/// The `p`th percentile by nearest rank; NaN for no samples.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Creates an empty file `name` in the directory open as `dfd` (open O_CREAT|O_EXCL and
/// close: what a create costs a program).
fn create_at(dfd: libc::c_int, name: &std::ffi::CStr) -> Res<()> {
    // SAFETY: name is NUL-terminated; the caller keeps dfd open.
    let f = unsafe {
        libc::openat(
            dfd,
            name.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        )
    };
    if f < 0 {
        return Err(os_err("create"));
    }
    // SAFETY: f was just opened by us.
    unsafe { libc::close(f) };
    Ok(())
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

// ---- metadata workload ---------------------------------------------------------------

/// An open directory descriptor, closed on drop.
struct DirFd(libc::c_int);

impl Drop for DirFd {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

fn meta_cmd(args: &[String]) -> Res<()> {
    let dir = PathBuf::from(args.first().ok_or(USAGE)?);
    let count = num(args.get(1), "COUNT", None)? as usize;
    let work = dir.join(format!("daxfs-bench-meta.{}", std::process::id()));
    std::fs::create_dir(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let r = meta_phases(&work, count);
    // Whatever happened, leave DIR as it was (files left by a failed phase included).
    if r.is_err() {
        if let Ok(rd) = std::fs::read_dir(&work) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let rm = std::fs::remove_dir(&work).map_err(|e| format!("{}: {e}", work.display()));
    r.and(rm)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// The phases of `meta`, in the order they run.
const META_PHASES: [&str; 5] = ["create", "stat_cold", "stat_warm", "readdir", "unlink"];

/// Where `meta` holds for a profiler: `DAXFS_BENCH_HOLD=PHASE:DIR`.
#[derive(Debug, PartialEq)]
struct Hold {
    phase: String,
    dir: PathBuf,
}

impl Hold {
    /// Parses the variable's value; an unknown phase or an empty directory is an error
    /// (a typo must not silently profile nothing).
    fn parse(v: &str) -> Res<Hold> {
        let (phase, dir) = v
            .split_once(':')
            .ok_or_else(|| format!("DAXFS_BENCH_HOLD={v:?}: expected PHASE:DIR"))?;
        if !META_PHASES.contains(&phase) {
            return Err(format!(
                "DAXFS_BENCH_HOLD: unknown phase {phase:?} (one of {})",
                META_PHASES.join(", ")
            ));
        }
        if dir.is_empty() {
            return Err("DAXFS_BENCH_HOLD: empty directory".into());
        }
        Ok(Hold {
            phase: phase.into(),
            dir: dir.into(),
        })
    }

    fn from_env() -> Res<Option<Hold>> {
        match std::env::var("DAXFS_BENCH_HOLD") {
            Ok(v) => Hold::parse(&v).map(Some),
            Err(_) => Ok(None),
        }
    }

    fn touch(&self, name: &str) -> Res<()> {
        let p = self.dir.join(name);
        std::fs::write(&p, b"").map_err(|e| format!("{}: {e}", p.display()))
    }

    /// Waits for `DIR/name` (60 s at most: a profiler that never starts or stops must
    /// not hang the run).
    fn wait_for(&self, name: &str) -> Res<()> {
        let p = self.dir.join(name);
        let t = Instant::now();
        while !p.exists() {
            if t.elapsed() > Duration::from_secs(60) {
                return Err(format!("{}: not created within 60 s", p.display()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Before `phase`: when it is the held one, says ready and waits for go.
    fn before(hold: &Option<Hold>, phase: &str) -> Res<()> {
        match hold {
            Some(h) if h.phase == phase => {
                h.touch("ready")?;
                h.wait_for("go")
            }
            _ => Ok(()),
        }
    }

    /// After `phase`: when it is the held one, says done and waits until the profiler
    /// has stopped (resume), so that no later phase is sampled with it.
    fn after(hold: &Option<Hold>, phase: &str) -> Res<()> {
        match hold {
            Some(h) if h.phase == phase => {
                h.touch("done")?;
                h.wait_for("resume")
            }
            _ => Ok(()),
        }
    }
}

fn meta_phases(work: &Path, count: usize) -> Res<()> {
    let hold = Hold::from_env()?;
    let cpath = CString::new(work.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: path holds a NUL byte", work.display()))?;
    // SAFETY: cpath is a valid NUL-terminated string.
    let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    if fd < 0 {
        return Err(os_err(&work.display().to_string()));
    }
    let dfd = DirFd(fd);
    let names: Vec<CString> = (0..count)
        .map(|i| CString::new(format!("f{i:07}")).unwrap_or_default())
        .collect();

    Hold::before(&hold, "create")?;
    let t = Instant::now();
    for n in &names {
        create_at(dfd.0, n)?;
    }
    println!("create_ops {:.0}", rate(count, t.elapsed()));
    Hold::after(&hold, "create")?;

    // Cold: the kernel forgets dentries and inodes (a FUSE filesystem gets FORGETs and
    // must answer LOOKUPs again). tmpfs keeps them: its dentries are its only copy.
    if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "3") {
        eprintln!("daxfs-bench: cannot drop caches ({e}): the cold stat is warm");
    }
    for phase in ["stat_cold_ops", "stat_warm_ops"] {
        // SAFETY: an all-zero stat is a valid value for the kernel to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let name = phase.trim_end_matches("_ops");
        Hold::before(&hold, name)?;
        let t = Instant::now();
        for n in &names {
            // SAFETY: n is NUL-terminated, st is a valid out-pointer.
            if unsafe { libc::fstatat(dfd.0, n.as_ptr(), &mut st, 0) } != 0 {
                return Err(os_err("stat"));
            }
        }
        println!("{phase} {:.0}", rate(count, t.elapsed()));
        Hold::after(&hold, name)?;
    }

    Hold::before(&hold, "readdir")?;
    let t = Instant::now();
    let seen = std::fs::read_dir(work)
        .map_err(|e| format!("readdir: {e}"))?
        .filter(|e| e.is_ok())
        .count();
    let d = t.elapsed();
    if seen != count {
        return Err(format!("readdir saw {seen} entries, expected {count}"));
    }
    println!("readdir_ops {:.0}", rate(count, d));
    Hold::after(&hold, "readdir")?;

    Hold::before(&hold, "unlink")?;
    let t = Instant::now();
    for n in &names {
        // SAFETY: n is NUL-terminated; dfd is an open directory.
        if unsafe { libc::unlinkat(dfd.0, n.as_ptr(), 0) } != 0 {
            return Err(os_err("unlink"));
        }
    }
    println!("unlink_ops {:.0}", rate(count, t.elapsed()));
    Hold::after(&hold, "unlink")
}

// ---- library API ---------------------------------------------------------------------

/// A scratch file, removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const MIB: usize = 1 << 20;
/// Bytes per `read_with` call and per memcpy in the bandwidth runs.
const CHUNK: usize = MIB;
const REPS: usize = 5;

fn lib_cmd(args: &[String]) -> Res<()> {
    let device = PathBuf::from(args.first().ok_or(USAGE)?);
    let scratch_dir = PathBuf::from(args.get(1).ok_or(USAGE)?);
    let size = num(args.get(2), "SIZE_MIB", Some(256))? as usize * MIB;
    let iters = num(args.get(3), "ITERS", Some(100_000))? as usize;

    // A second mapping of memory-backed pages, the same kind as an emulated device's:
    // the memcpy baseline out of it separates the API's cost from the memory's.
    let scratch = TempFile(scratch_dir.join(format!("daxfs-bench-lib.{}", std::process::id())));
    std::fs::File::create(&scratch.0)
        .and_then(|f| daxfs_pmem::allocate_file(&f, 0, size as u64))
        .map_err(|e| format!("{}: {e}", scratch.0.display()))?;
    let raw = Device::open(&scratch.0, DeviceOptions::default()).map_err(|e| e.to_string())?;

    let fs = DaxFs::mount(&device, FsOptions::default()).map_err(|e| e.to_string())?;
    let r = lib_bench(&fs, &raw, size, iters);
    let shut = fs.shutdown().map_err(|e| format!("shutdown: {e}"));
    r.and(shut)
}

fn gbs(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-9) / 1e9
}

fn lib_bench(fs: &DaxFs, raw: &Device, size: usize, iters: usize) -> Res<()> {
    let cred = Cred::root();
    fn e(what: &'static str) -> impl Fn(daxfs::Errno) -> String {
        move |err| format!("{what}: {err}")
    }
    let src: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4096) as u8).collect();
    let mut dst = vec![0u8; CHUNK];

    // The file to read: written in 1 MiB pieces, so its extents are what a normal
    // sequential writer gets.
    let f = fs
        .create(ROOT, b"read", 0o644, libc::O_RDWR, &cred)
        .map_err(e("create"))?;
    for off in (0..size).step_by(CHUNK) {
        fs.write(
            f.ino,
            off as u64,
            &src[off..off + CHUNK.min(size - off)],
            false,
        )
        .map_err(e("write"))?;
    }
    raw.write(0, &src);

    // Zero-copy: the consumer copies each piece out of the pinned mapping into its
    // buffer, the same work as the memcpy it is compared with, plus the API's own cost
    // (inode lookup, lock, extent lookup, pins).
    let mut zc = Vec::new();
    for _ in 0..REPS {
        let t = Instant::now();
        for off in (0..size).step_by(CHUNK) {
            let n = fs
                .read_with(f.ino, off as u64, CHUNK as u32, |pieces| {
                    let mut o = 0;
                    for p in pieces {
                        o += p.copy_to(&mut dst[o..]);
                    }
                    o
                })
                .map_err(e("read_with"))?;
            if n != CHUNK.min(size - off) {
                return Err(format!("read_with returned {n} bytes at {off}"));
            }
        }
        zc.push(gbs(size, t.elapsed()));
        std::hint::black_box(&mut dst);
    }
    let mut copy_from = |base: *const u8| {
        let mut v = Vec::new();
        for _ in 0..REPS {
            let t = Instant::now();
            for off in (0..size).step_by(CHUNK) {
                let n = CHUNK.min(size - off);
                // SAFETY: base..base+size is readable (a Vec or the scratch mapping of
                // `size` bytes); dst holds CHUNK >= n bytes; the two do not overlap.
                unsafe { std::ptr::copy_nonoverlapping(base.add(off), dst.as_mut_ptr(), n) };
                std::hint::black_box(&mut dst);
            }
            v.push(gbs(size, t.elapsed()));
        }
        v
    };
    let mut heap = copy_from(src.as_ptr());
    let mut shm = copy_from(raw.as_ptr());
    println!("zero_copy_read_gbs {:.2}", median(&mut zc));
    println!("memcpy_heap_gbs {:.2}", median(&mut heap));
    println!("memcpy_shm_gbs {:.2}", median(&mut shm));

    // 4 KiB overwrites of already mapped blocks (no allocation): a 1 MiB file, cycled.
    const BLOCKS: usize = 256;
    let w = fs
        .create(ROOT, b"overwrite", 0o644, libc::O_RDWR, &cred)
        .map_err(e("create"))?;
    fs.write(w.ino, 0, &src[..BLOCKS * 4096], false)
        .map_err(e("write"))?;
    let mut lat = Vec::with_capacity(iters);
    let warmup = iters / 10;
    for i in 0..iters + warmup {
        let off = (i % BLOCKS) * 4096;
        let t = Instant::now();
        let n = fs
            .write(w.ino, off as u64, &src[off..off + 4096], false)
            .map_err(e("overwrite"))?;
        let d = t.elapsed();
        if n != 4096 {
            return Err(format!("overwrite wrote {n} bytes"));
        }
        if i >= warmup {
            lat.push(d.as_secs_f64() * 1e6);
        }
    }
    println!("overwrite_persist_median_us {:.3}", median(&mut lat));
    println!("overwrite_persist_p99_us {:.3}", percentile(&mut lat, 99.0));

    // Its parts alone: the data store + flush + fence, and a metadata-only change
    // (mtime) committed through the journal.
    let mut persist = Vec::with_capacity(iters);
    for i in 0..iters {
        let off = ((i % BLOCKS) * 4096) as u64;
        let t = Instant::now();
        raw.write_persist(off, &src[..4096]);
        persist.push(t.elapsed().as_secs_f64() * 1e6);
    }
    println!("persist_4k_median_us {:.3}", median(&mut persist));
    let touch = SetAttr {
        mtime: Some(SetTime::Now),
        ..SetAttr::default()
    };
    let mut meta = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        fs.setattr(w.ino, &cred, &touch).map_err(e("setattr"))?;
        meta.push(t.elapsed().as_secs_f64() * 1e6);
    }
    println!("mtime_commit_median_us {:.3}", median(&mut meta));

    // The core's own cost per namespace operation, without FUSE: what create, lookup
    // and unlink through a mount cost at best once the round trips are gone.
    let count = (iters / 10).max(1000);
    let dir = fs.mkdir(ROOT, b"meta", 0o755, &cred).map_err(e("mkdir"))?;
    let names: Vec<Vec<u8>> = (0..count)
        .map(|i| format!("f{i:07}").into_bytes())
        .collect();
    let t = Instant::now();
    for n in &names {
        let a = fs
            .create(dir.ino, n, 0o644, libc::O_RDWR | libc::O_EXCL, &cred)
            .map_err(e("create"))?;
        fs.release(a.ino).map_err(e("release"))?;
    }
    println!(
        "core_create_us {:.3}",
        t.elapsed().as_secs_f64() * 1e6 / count as f64
    );
    let t = Instant::now();
    for n in &names {
        fs.lookup(dir.ino, n).map_err(e("lookup"))?;
    }
    println!(
        "core_lookup_us {:.3}",
        t.elapsed().as_secs_f64() * 1e6 / count as f64
    );
    let t = Instant::now();
    for n in &names {
        fs.unlink(dir.ino, n).map_err(e("unlink"))?;
    }
    println!(
        "core_unlink_us {:.3}",
        t.elapsed().as_secs_f64() * 1e6 / count as f64
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_an_odd_count_is_the_middle_sample() {
        assert_eq!(median(&mut [5.0, 1.0, 3.0]), 3.0);
    }

    #[test]
    fn p99_of_a_hundred_samples_is_the_99th_smallest() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 99.0), 99.0);
    }

    #[test]
    fn hold_parses_a_known_phase_and_its_directory() {
        assert_eq!(
            Hold::parse("stat_cold:/tmp/x"),
            Ok(Hold {
                phase: "stat_cold".into(),
                dir: "/tmp/x".into()
            })
        );
    }

    #[test]
    fn hold_rejects_an_unknown_phase() {
        assert!(Hold::parse("stat:/tmp/x").is_err());
    }

    #[test]
    fn hold_rejects_a_value_without_a_directory() {
        assert!(Hold::parse("create").is_err());
        assert!(Hold::parse("create:").is_err());
    }

    #[test]
    fn hold_waits_for_go_and_resume_and_says_ready_then_done() {
        let dir = std::env::temp_dir().join(format!("daxfs-bench-hold.{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let hold = Some(Hold::parse(&format!("unlink:{}", dir.display())).unwrap());
        // another phase: no files, no wait
        Hold::before(&hold, "create").unwrap();
        Hold::after(&hold, "create").unwrap();
        assert!(!dir.join("ready").exists() && !dir.join("done").exists());
        let d = dir.clone();
        let starter = std::thread::spawn(move || {
            while !d.join("ready").exists() {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::fs::write(d.join("go"), b"").unwrap();
            while !d.join("done").exists() {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::fs::write(d.join("resume"), b"").unwrap();
        });
        Hold::before(&hold, "unlink").unwrap();
        assert!(dir.join("go").exists());
        Hold::after(&hold, "unlink").unwrap();
        assert!(dir.join("done").exists() && dir.join("resume").exists());
        starter.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn percentile_of_no_samples_is_nan() {
        assert!(percentile(&mut [], 50.0).is_nan());
    }
}
