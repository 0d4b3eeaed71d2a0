//! The scale workloads of issue 6: what one create and one lookup cost in a directory
//! of 10^3 .. 10^6 entries, through the library API and through a mount; and filling a
//! device with a tree of files for the mount-time and memory measurement.
//!
//! One directory per size, each filled to its size untimed. Then, in [`ROUNDS`] rounds
//! that visit the directories in alternating order, a batch of creates (the next BATCH
//! names) in each, and then, in as many rounds, LOOKUPS lookups of distinct random
//! existing names in each. Operations are timed in groups of [`GROUP`]. Interleaving
//! puts every size under the same background load: on a shared machine the load moves
//! more between minutes than the sizes differ (a directory grown step by step would be
//! measured at 10^3 and 10^6 minutes apart). Each size prints
//! `create SIZE MEDIAN_US MEAN_US` and `lookup SIZE MEDIAN_US MEAN_US`: the median over
//! the groups of the per-operation time, and the mean over all of them (which includes
//! the rare slow operation, e.g. a journal checkpoint or a table growing).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use daxfs::{Cred, DaxFs, FsOptions, ROOT};
use daxfs_testkit::Rng;

use crate::{create_at, median, num, os_err, DirFd, Res};

/// Operations per timed group: enough that the clock's own cost (~20 ns) is small
/// against a 0.2 µs library lookup, few enough that a median over groups still sees
/// through a neighbour's burst.
const GROUP: usize = 10;

pub const USAGE: &str = "daxfs-bench scale-lib DEVICE SIZES [BATCH [LOOKUPS]]\n       \
                         daxfs-bench scale-mount DIR SIZES [BATCH [LOOKUPS]]\n       \
                         daxfs-bench populate DEVICE DIRS FILES_PER_DIR";

/// The name of entry `i`: fixed width, so every name takes the same directory slots.
fn name(i: usize) -> String {
    format!("f{i:08}")
}

/// "1000,10000,100000": strictly increasing positive sizes.
fn sizes(s: Option<&String>) -> Res<Vec<usize>> {
    let s = s.ok_or(USAGE)?;
    let v: Vec<usize> = s
        .split(',')
        .map(|x| x.trim().parse::<usize>().ok().filter(|&n| n > 0))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("SIZES: expected comma-separated positive numbers, got {s:?}"))?;
    if v.is_empty() || v.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("SIZES: expected increasing sizes, got {s:?}"));
    }
    Ok(v)
}

/// Where the directories are made, and entries made and looked up in them.
trait Dirs {
    /// Makes directory `k` (0, 1, ... in turn).
    fn mkdir(&mut self, k: usize) -> Res<()>;
    fn create(&mut self, k: usize, i: usize) -> Res<()>;
    fn lookup(&mut self, k: usize, i: usize) -> Res<()>;
    /// Makes the next lookups reach the filesystem (a mount: the kernel forgets its
    /// cached entries, about `cached` of them).
    fn forget_cached(&mut self, _cached: usize) -> Res<()> {
        Ok(())
    }
}

/// Rounds of creates and of lookups per directory.
const ROUNDS: usize = 3;

/// Times `count` operations in groups, adding each group's per-operation µs to
/// `per_op`; returns the total time in µs.
fn timed(count: usize, per_op: &mut Vec<f64>, mut op: impl FnMut(usize) -> Res<()>) -> Res<f64> {
    let start = Instant::now();
    let mut done = 0;
    while done < count {
        let n = GROUP.min(count - done);
        let t = Instant::now();
        for k in done..done + n {
            op(k)?;
        }
        per_op.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        done += n;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6)
}

/// Per-operation times of one directory: groups, total µs, operations.
#[derive(Default)]
struct Times {
    groups: Vec<f64>,
    total: f64,
    ops: usize,
}

impl Times {
    fn line(&mut self, op: &str, size: usize) -> String {
        format!(
            "{op} {size} {:.3} {:.3}",
            median(&mut self.groups),
            self.total / self.ops.max(1) as f64
        )
    }
}

/// Round `r` visits the directories forwards, the next one backwards.
fn order(r: usize, k: usize) -> Vec<usize> {
    if r.is_multiple_of(2) {
        (0..k).collect()
    } else {
        (0..k).rev().collect()
    }
}

fn run(d: &mut dyn Dirs, sizes: &[usize], batch: usize, lookups: usize) -> Res<()> {
    let mut count = sizes.to_vec();
    // Entries the kernel may hold since the last forget_cached.
    let mut cached: usize = sizes.iter().sum();
    for (k, &size) in sizes.iter().enumerate() {
        d.mkdir(k)?;
        for i in 0..size {
            d.create(k, i)?;
        }
    }
    let mut creates: Vec<Times> = sizes.iter().map(|_| Times::default()).collect();
    for r in 0..ROUNDS {
        for k in order(r, sizes.len()) {
            let (first, t) = (count[k], &mut creates[k]);
            t.total += timed(batch, &mut t.groups, |i| d.create(k, first + i))?;
            t.ops += batch;
            count[k] += batch;
            cached += batch;
        }
    }
    let mut looks: Vec<Times> = sizes.iter().map(|_| Times::default()).collect();
    // The tests' generator: the same sample every run.
    let mut rng = Rng::xorshift64_star(0x9e37_79b9_7f4a_7c15);
    for r in 0..ROUNDS {
        for k in order(r, sizes.len()) {
            let n = count[k];
            let want = lookups.min(n);
            // Distinct names (a partial shuffle): through a mount a name looked up
            // twice would be answered from the kernel's cache the second time.
            let mut sample: Vec<usize> = (0..n).collect();
            for j in 0..want {
                let o = j + rng.below((n - j) as u64) as usize;
                sample.swap(j, o);
            }
            d.forget_cached(cached)?;
            let t = &mut looks[k];
            t.total += timed(want, &mut t.groups, |i| d.lookup(k, sample[i]))?;
            t.ops += want;
            cached = want;
        }
    }
    for (k, &size) in sizes.iter().enumerate() {
        println!("{}", creates[k].line("create", size));
        println!("{}", looks[k].line("lookup", size));
    }
    Ok(())
}

fn batch_args(args: &[String]) -> Res<(Vec<usize>, usize, usize)> {
    let sizes = sizes(args.get(1))?;
    let batch = num(args.get(2), "BATCH", Some(1000))? as usize;
    let lookups = num(args.get(3), "LOOKUPS", Some(1000))? as usize;
    Ok((sizes, batch, lookups))
}

// ---- library API ---------------------------------------------------------------------

struct LibDirs<'a> {
    fs: &'a DaxFs,
    dirs: Vec<u64>,
    cred: Cred,
    names: Vec<Vec<u8>>,
}

impl LibDirs<'_> {
    fn name(&mut self, i: usize) -> &[u8] {
        while self.names.len() <= i {
            self.names.push(name(self.names.len()).into_bytes());
        }
        &self.names[i]
    }

    fn dir(&self, k: usize) -> Res<u64> {
        self.dirs
            .get(k)
            .copied()
            .ok_or_else(|| format!("no directory {k}"))
    }
}

impl Dirs for LibDirs<'_> {
    fn mkdir(&mut self, k: usize) -> Res<()> {
        let a = self
            .fs
            .mkdir(ROOT, format!("scale{k}").as_bytes(), 0o755, &self.cred)
            .map_err(|e| format!("mkdir: {e}"))?;
        self.dirs.push(a.ino);
        Ok(())
    }

    fn create(&mut self, k: usize, i: usize) -> Res<()> {
        let (fs, dir, cred) = (self.fs, self.dir(k)?, self.cred.clone());
        let n = self.name(i);
        let a = fs
            .create(dir, n, 0o644, libc::O_RDWR | libc::O_EXCL, &cred)
            .map_err(|e| format!("create {}: {e}", String::from_utf8_lossy(n)))?;
        fs.release(a.ino).map_err(|e| format!("release: {e}"))
    }

    fn lookup(&mut self, k: usize, i: usize) -> Res<()> {
        let (fs, dir) = (self.fs, self.dir(k)?);
        let n = self.name(i);
        fs.lookup(dir, n)
            .map(|_| ())
            .map_err(|e| format!("lookup {}: {e}", String::from_utf8_lossy(n)))
    }
}

/// `scale-lib DEVICE SIZES [BATCH [LOOKUPS]]`: on a formatted device opened in-process,
/// creates through `DaxFs::create` (+ release), lookups through `DaxFs::lookup`.
pub fn lib_cmd(args: &[String]) -> Res<()> {
    let device = PathBuf::from(args.first().ok_or(USAGE)?);
    let (sizes, batch, lookups) = batch_args(args)?;
    let fs = DaxFs::mount(&device, FsOptions::default()).map_err(|e| e.to_string())?;
    let mut d = LibDirs {
        fs: &fs,
        dirs: Vec::new(),
        cred: Cred::root(),
        names: Vec::new(),
    };
    let r = run(&mut d, &sizes, batch, lookups);
    let shut = fs.shutdown().map_err(|e| format!("shutdown: {e}"));
    r.and(shut)
}

// ---- through a mount -----------------------------------------------------------------

struct MountDirs {
    work: PathBuf,
    fds: Vec<DirFd>,
    names: Vec<CString>,
}

impl MountDirs {
    /// The directory descriptor of `k` and the name of entry `i`.
    fn at(&mut self, k: usize, i: usize) -> Res<(libc::c_int, &CString)> {
        while self.names.len() <= i {
            // A formatted number never holds a NUL.
            let s = CString::new(name(self.names.len())).unwrap_or_default();
            self.names.push(s);
        }
        let fd = self
            .fds
            .get(k)
            .map(|f| f.0)
            .ok_or_else(|| format!("no directory {k}"))?;
        Ok((fd, &self.names[i]))
    }
}

impl Dirs for MountDirs {
    fn mkdir(&mut self, k: usize) -> Res<()> {
        let p = self.work.join(format!("scale{k}"));
        std::fs::create_dir(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        self.fds.push(open_dir(&p)?);
        Ok(())
    }

    fn create(&mut self, k: usize, i: usize) -> Res<()> {
        let (dfd, n) = self.at(k, i)?;
        create_at(dfd, n)
    }

    fn lookup(&mut self, k: usize, i: usize) -> Res<()> {
        let (dfd, n) = self.at(k, i)?;
        // SAFETY: an all-zero stat is a valid value for the kernel to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: n is NUL-terminated, st is a valid out-pointer.
        if unsafe { libc::fstatat(dfd, n.as_ptr(), &mut st, 0) } != 0 {
            return Err(os_err("stat"));
        }
        Ok(())
    }

    fn forget_cached(&mut self, cached: usize) -> Res<()> {
        // Dentries and inodes only (2): the kernel drops every unused entry and sends
        // a FUSE daemon FORGETs for them, which it handles after the write returns:
        // give it time (generously, 2 µs each) so they do not overlap the timed
        // lookups.
        std::fs::write("/proc/sys/vm/drop_caches", "2")
            .map_err(|e| format!("cannot drop caches ({e}): lookups would be cached"))?;
        std::thread::sleep(Duration::from_millis(200) + Duration::from_micros(2 * cached as u64));
        Ok(())
    }
}

/// `scale-mount DIR SIZES [BATCH [LOOKUPS]]`: the same through any mounted filesystem,
/// in DIR/daxfs-bench-scale.PID: creates are open(O_CREAT|O_EXCL) + close, lookups are
/// stat of names the kernel has just forgotten. The files stay: the caller throws the
/// whole filesystem away (removing 10^6 files one by one costs minutes).
pub fn mount_cmd(args: &[String]) -> Res<()> {
    let dir = PathBuf::from(args.first().ok_or(USAGE)?);
    let (sizes, batch, lookups) = batch_args(args)?;
    let work = dir.join(format!("daxfs-bench-scale.{}", std::process::id()));
    std::fs::create_dir(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut d = MountDirs {
        work,
        fds: Vec::new(),
        names: Vec::new(),
    };
    run(&mut d, &sizes, batch, lookups)
}

fn open_dir(p: &Path) -> Res<DirFd> {
    let cpath = CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: path holds a NUL byte", p.display()))?;
    // SAFETY: cpath is a valid NUL-terminated string.
    let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    if fd < 0 {
        return Err(os_err(&p.display().to_string()));
    }
    Ok(DirFd(fd))
}

// ---- a populated device --------------------------------------------------------------

/// `populate DEVICE DIRS FILES_PER_DIR`: DIRS directories d00000.. under the root of a
/// formatted device, each holding FILES_PER_DIR empty files, through the library API
/// (no mount). Prints `populate_s SECONDS` and `files N`.
pub fn populate_cmd(args: &[String]) -> Res<()> {
    let device = PathBuf::from(args.first().ok_or(USAGE)?);
    let dirs = num(args.get(1), "DIRS", None)? as usize;
    let per_dir = num(args.get(2), "FILES_PER_DIR", None)? as usize;
    let fs = DaxFs::mount(&device, FsOptions::default()).map_err(|e| e.to_string())?;
    let cred = Cred::root();
    let names: Vec<Vec<u8>> = (0..per_dir).map(|i| name(i).into_bytes()).collect();
    let t = Instant::now();
    let r = (|| -> Res<()> {
        for d in 0..dirs {
            let dir = fs
                .mkdir(ROOT, format!("d{d:05}").as_bytes(), 0o755, &cred)
                .map_err(|e| format!("mkdir: {e}"))?;
            for n in &names {
                let a = fs
                    .create(dir.ino, n, 0o644, libc::O_RDWR | libc::O_EXCL, &cred)
                    .map_err(|e| format!("create: {e}"))?;
                fs.release(a.ino).map_err(|e| format!("release: {e}"))?;
            }
        }
        Ok(())
    })();
    let shut = fs.shutdown().map_err(|e| format!("shutdown: {e}"));
    r.and(shut)?;
    println!("populate_s {:.3}", t.elapsed().as_secs_f64());
    println!("files {}", dirs * per_dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_increase() {
        assert!(sizes(Some(&"1000,100".to_string())).is_err());
    }

    #[test]
    fn sizes_parse_a_comma_separated_list() {
        assert_eq!(
            sizes(Some(&"1000, 10000".to_string())),
            Ok(vec![1000, 10000])
        );
    }

    #[test]
    fn names_have_the_same_length_up_to_a_hundred_million() {
        assert_eq!(name(0).len(), name(99_999_999).len());
    }
}
