//! The scale workloads of issue 6: what one create and one lookup cost as a single
//! directory grows (10^3 .. 10^6 entries), through the library API and through a mount;
//! and filling a device with a tree of files for the mount-time and memory measurement.
//!
//! The directory is filled up to each size untimed; then a batch of creates (the next
//! BATCH names), and [`PASSES`] times LOOKUPS lookups of distinct random existing names,
//! are timed in groups of [`GROUP`] operations. Each size prints two lines,
//! `create SIZE MEDIAN_US MEAN_US` and `lookup SIZE MEDIAN_US MEAN_US`: the median over
//! the groups of the per-operation time (robust to a noisy neighbour) and the mean over
//! the whole batch (which includes the rare slow operation, e.g. a journal checkpoint).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use daxfs::{Cred, DaxFs, FsOptions, ROOT};

use crate::{median, num, os_err, DirFd, Res};

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

/// Where the entries are made and looked up.
trait Dir {
    fn create(&mut self, i: usize) -> Res<()>;
    fn lookup(&mut self, i: usize) -> Res<()>;
    /// Makes the next lookups reach the filesystem (a mount: the kernel forgets its
    /// cached entries).
    fn forget_cached(&mut self) -> Res<()> {
        Ok(())
    }
}

/// A small deterministic generator (xorshift64*): the same sample every run, no
/// dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

/// Lookup passes per size, each over a fresh sample after `forget_cached`: on a shared
/// machine one pass can land in a neighbour's burst.
const PASSES: usize = 3;

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

fn run(d: &mut dyn Dir, sizes: &[usize], batch: usize, lookups: usize) -> Res<()> {
    let mut n = 0;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for &size in sizes {
        while n < size {
            d.create(n)?;
            n += 1;
        }
        let first = n;
        let mut creates = Vec::new();
        let total = timed(batch, &mut creates, |k| d.create(first + k))?;
        n += batch;
        println!(
            "create {size} {:.3} {:.3}",
            median(&mut creates),
            total / batch as f64
        );
        let want = lookups.min(n);
        let mut looks = Vec::new();
        let mut total = 0.0;
        let mut sample: Vec<usize> = (0..n).collect();
        for _ in 0..PASSES {
            // Distinct names (a partial shuffle): through a mount a name looked up
            // twice would be answered from the kernel's cache the second time.
            for k in 0..want {
                let j = k + rng.below(n - k);
                sample.swap(k, j);
            }
            d.forget_cached()?;
            total += timed(want, &mut looks, |k| d.lookup(sample[k]))?;
        }
        println!(
            "lookup {size} {:.3} {:.3}",
            median(&mut looks),
            total / (want * PASSES) as f64
        );
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

struct LibDir<'a> {
    fs: &'a DaxFs,
    dir: u64,
    cred: Cred,
    names: Vec<Vec<u8>>,
}

impl LibDir<'_> {
    fn name(&mut self, i: usize) -> &[u8] {
        while self.names.len() <= i {
            self.names.push(name(self.names.len()).into_bytes());
        }
        &self.names[i]
    }
}

impl Dir for LibDir<'_> {
    fn create(&mut self, i: usize) -> Res<()> {
        let (fs, dir, cred) = (self.fs, self.dir, self.cred.clone());
        let n = self.name(i);
        let a = fs
            .create(dir, n, 0o644, libc::O_RDWR | libc::O_EXCL, &cred)
            .map_err(|e| format!("create {}: {e}", String::from_utf8_lossy(n)))?;
        fs.release(a.ino).map_err(|e| format!("release: {e}"))
    }

    fn lookup(&mut self, i: usize) -> Res<()> {
        let (fs, dir) = (self.fs, self.dir);
        let n = self.name(i);
        fs.lookup(dir, n)
            .map(|_| ())
            .map_err(|e| format!("lookup {}: {e}", String::from_utf8_lossy(n)))
    }
}

/// `scale-lib DEVICE SIZES [BATCH [LOOKUPS]]`: one new directory on a formatted device,
/// grown through `DaxFs::create` (+ release); lookups through `DaxFs::lookup`.
pub fn lib_cmd(args: &[String]) -> Res<()> {
    let device = PathBuf::from(args.first().ok_or(USAGE)?);
    let (sizes, batch, lookups) = batch_args(args)?;
    let fs = DaxFs::mount(&device, FsOptions::default())?;
    let cred = Cred::root();
    let r = fs
        .mkdir(ROOT, b"scale", 0o755, &cred)
        .map_err(|e| format!("mkdir: {e}"))
        .and_then(|dir| {
            let mut d = LibDir {
                fs: &fs,
                dir: dir.ino,
                cred,
                names: Vec::new(),
            };
            run(&mut d, &sizes, batch, lookups)
        });
    let shut = fs.shutdown().map_err(|e| format!("shutdown: {e}"));
    r.and(shut)
}

// ---- through a mount -----------------------------------------------------------------

struct MountDir {
    fd: DirFd,
    names: Vec<CString>,
}

impl MountDir {
    fn name(&mut self, i: usize) -> &CString {
        while self.names.len() <= i {
            // A formatted number never holds a NUL.
            let s = CString::new(name(self.names.len())).unwrap_or_default();
            self.names.push(s);
        }
        &self.names[i]
    }
}

impl Dir for MountDir {
    fn create(&mut self, i: usize) -> Res<()> {
        let dfd = self.fd.0;
        let n = self.name(i);
        // SAFETY: n is NUL-terminated; dfd is an open directory.
        let f = unsafe {
            libc::openat(
                dfd,
                n.as_ptr(),
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

    fn lookup(&mut self, i: usize) -> Res<()> {
        let dfd = self.fd.0;
        let n = self.name(i);
        // SAFETY: an all-zero stat is a valid value for the kernel to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: n is NUL-terminated, st is a valid out-pointer.
        if unsafe { libc::fstatat(dfd, n.as_ptr(), &mut st, 0) } != 0 {
            return Err(os_err("stat"));
        }
        Ok(())
    }

    fn forget_cached(&mut self) -> Res<()> {
        // Dentries and inodes only (2): every cached entry of the directory goes, and
        // the kernel sends the daemon FORGETs for them, which it handles
        // asynchronously: give it a moment so they do not overlap the timed lookups.
        std::fs::write("/proc/sys/vm/drop_caches", "2")
            .map_err(|e| format!("cannot drop caches ({e}): lookups would be cached"))?;
        std::thread::sleep(std::time::Duration::from_millis(500));
        Ok(())
    }
}

/// `scale-mount DIR SIZES [BATCH [LOOKUPS]]`: the same through any mounted filesystem:
/// creates are open(O_CREAT|O_EXCL) + close, lookups are stat of names the kernel has
/// just forgotten. The directory (DIR/daxfs-bench-scale.PID) and its files stay: the
/// caller throws the whole filesystem away (removing 10^6 files costs minutes).
pub fn mount_cmd(args: &[String]) -> Res<()> {
    let dir = PathBuf::from(args.first().ok_or(USAGE)?);
    let (sizes, batch, lookups) = batch_args(args)?;
    let work = dir.join(format!("daxfs-bench-scale.{}", std::process::id()));
    std::fs::create_dir(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut d = MountDir {
        fd: open_dir(&work)?,
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
    let fs = DaxFs::mount(&device, FsOptions::default())?;
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
