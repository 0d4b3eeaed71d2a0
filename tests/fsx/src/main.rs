//! fsx: a differential filesystem tester. It runs one seeded random sequence of operations
//! on a reference tree (tmpfs) and a subject tree (a daxfs mount), compares every outcome
//! and the final trees, and on a mismatch shrinks the sequence to a short reproducer that
//! `--replay` accepts. Exit status: 0 identical, 1 mismatch, 2 usage or setup error.

mod exec;
mod ops;
mod run;
mod shrink;

use exec::{show, DirFs};
use ops::{FallocMode, GenConfig, Generator, Kind, Step, BLOCK};
use run::Failure;
use shrink::Budget;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: fsx --ref DIR --subject DIR [options]

Runs one random operation sequence on DIR/fsx.SEED of both trees and compares
every result, errno and the final contents.

options:
  --seed N          PRNG seed (default: time based, printed)
  --ops N           number of operations (default 10000)
  --files N         file names per directory (default 4)
  --max-size BYTES  largest offset written (default 256k; k/m/g suffixes)
  --no-mmap         no mmap reads/writes
  --no-collapse     no COLLAPSE_RANGE/INSERT_RANGE
  --no-emulate      do not emulate fallocate modes the reference lacks; skip them
  --no-shrink       report a mismatch without shrinking it
  --shrink-secs N   time limit for shrinking (default 300)
  --verbose         print every operation and its results
  --replay FILE     run the steps in FILE (written by an earlier mismatch)
";

/// Command-line settings.
struct Args {
    reference: PathBuf,
    subject: PathBuf,
    seed: Option<u64>,
    ops: u64,
    files: u64,
    max_size: u64,
    no_mmap: bool,
    no_collapse: bool,
    no_emulate: bool,
    no_shrink: bool,
    shrink_secs: u64,
    verbose: bool,
    replay: Option<PathBuf>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let lower = s.to_ascii_lowercase();
    let (num, mult) = match lower.strip_suffix(['k', 'm', 'g']) {
        Some(n) => (
            n,
            match lower.as_bytes().last() {
                Some(b'k') => 1u64 << 10,
                Some(b'm') => 1 << 20,
                _ => 1 << 30,
            },
        ),
        None => (lower.as_str(), 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("not a size: {s:?}"))
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        reference: PathBuf::new(),
        subject: PathBuf::new(),
        seed: None,
        ops: 10_000,
        files: 4,
        max_size: 256 * 1024,
        no_mmap: false,
        no_collapse: false,
        no_emulate: false,
        no_shrink: false,
        shrink_secs: 300,
        verbose: false,
        replay: None,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v:?}"))
        };
        match flag.as_str() {
            "--ref" => a.reference = PathBuf::from(value()?),
            "--subject" => a.subject = PathBuf::from(value()?),
            "--seed" => a.seed = Some(num(value()?)?),
            "--ops" => a.ops = num(value()?)?,
            "--files" => a.files = num(value()?)?.max(1),
            "--max-size" => a.max_size = parse_size(&value()?)?,
            "--shrink-secs" => a.shrink_secs = num(value()?)?,
            "--replay" => a.replay = Some(PathBuf::from(value()?)),
            "--no-mmap" => a.no_mmap = true,
            "--no-collapse" => a.no_collapse = true,
            "--no-emulate" => a.no_emulate = true,
            "--no-shrink" => a.no_shrink = true,
            "--verbose" | "-v" => a.verbose = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.reference.as_os_str().is_empty() || a.subject.as_os_str().is_empty() {
        return Err("--ref and --subject are required".into());
    }
    if a.max_size < 2 * BLOCK {
        return Err(format!("--max-size must be at least {}", 2 * BLOCK));
    }
    Ok(a)
}

/// What a filesystem can do, probed on a scratch file.
struct Support {
    /// fallocate modes that failed with EOPNOTSUPP.
    lacks: Vec<FallocMode>,
    xattr: bool,
}

/// Probes fallocate modes and user xattrs in `dir` on a small three-block file.
fn probe(dir: &Path) -> Result<Support, String> {
    let file = dir.join(".fsx-probe");
    let mut lacks = Vec::new();
    for mode in FallocMode::ALL {
        if mode == FallocMode::PunchNoKeep {
            continue; // EOPNOTSUPP from the VFS everywhere; that is what the op checks
        }
        std::fs::write(&file, vec![1u8; 3 * BLOCK as usize])
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: plain syscall on a descriptor `f` keeps open; arguments are in range.
        let r = unsafe { libc::fallocate(f.as_raw_fd(), mode.bits(), BLOCK as i64, BLOCK as i64) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP) {
            lacks.push(mode);
        }
    }
    let c = CString::new(file.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: c and the name are NUL-terminated; the value pointer is valid for 1 byte.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            c"user.fsx.probe".as_ptr(),
            c"x".as_ptr().cast(),
            1,
            0,
        )
    };
    let xattr = r == 0;
    std::fs::remove_file(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(Support { lacks, xattr })
}

fn names(modes: &[FallocMode]) -> String {
    modes
        .iter()
        .map(|m| m.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Creates `base/name`, replacing a stale one from an earlier run.
fn fresh_dir(base: &Path, name: &str) -> Result<PathBuf, String> {
    let p = base.join(name);
    if p.exists() {
        std::fs::remove_dir_all(&p).map_err(|e| format!("removing stale {}: {e}", p.display()))?;
    }
    std::fs::create_dir(&p).map_err(|e| format!("creating {}: {e}", p.display()))?;
    Ok(p)
}

/// Settings decided at startup that replays need too.
struct Plan {
    emulate: Vec<FallocMode>,
    disabled: Vec<Kind>,
    grow_cap: u64,
    /// Capabilities left out because a side lacks them, repeated in the summary.
    untested: Vec<String>,
}

fn plan(args: &Args, rdir: &Path, sdir: &Path) -> Result<Plan, String> {
    let r = probe(rdir).map_err(|e| format!("probing reference: {e}"))?;
    let s = probe(sdir).map_err(|e| format!("probing subject: {e}"))?;
    let mut disabled = Vec::new();
    let mut emulate = Vec::new();
    if args.no_mmap {
        disabled.push(Kind::Mmap);
    }
    if args.no_collapse {
        disabled.push(Kind::Falloc(FallocMode::Collapse));
        disabled.push(Kind::Falloc(FallocMode::Insert));
    }
    let ref_only: Vec<FallocMode> = r
        .lacks
        .iter()
        .copied()
        .filter(|m| !s.lacks.contains(m))
        .collect();
    if !ref_only.is_empty() {
        if args.no_emulate {
            println!(
                "fsx: reference lacks {} (EOPNOTSUPP): disabled",
                names(&ref_only)
            );
            disabled.extend(ref_only.iter().map(|m| Kind::Falloc(*m)));
        } else {
            println!(
                "fsx: reference lacks {} (EOPNOTSUPP): emulated on the reference with reads and writes",
                names(&ref_only)
            );
            emulate = ref_only;
        }
    }
    let mut untested = Vec::new();
    if !s.lacks.is_empty() {
        let what = format!("fallocate {}", names(&s.lacks));
        println!("fsx: NOTE: subject lacks {what} (EOPNOTSUPP): disabled, NOT TESTED");
        disabled.extend(s.lacks.iter().map(|m| Kind::Falloc(*m)));
        untested.push(what);
    }
    if !r.xattr {
        println!("fsx: NOTE: reference does not support user xattrs: disabled, NOT TESTED");
        disabled.push(Kind::Xattr);
        untested.push("xattrs".to_string());
    } else if !s.xattr {
        println!("fsx: NOTE: subject rejects user xattrs while the reference accepts them");
    }
    Ok(Plan {
        emulate,
        disabled,
        grow_cap: 2 * args.max_size,
        untested,
    })
}

/// Replays `steps` on fresh `fsx.SEED.shrink` trees and removes them afterwards.
fn replay_fresh(args: &Args, plan: &Plan, seed: u64, steps: &[Step]) -> Option<Failure> {
    let name = format!("fsx.{seed}.shrink");
    let dirs = fresh_dir(&args.reference, &name)
        .and_then(|r| fresh_dir(&args.subject, &name).map(|s| (r, s)));
    let (rdir, sdir) = match dirs {
        Ok(d) => d,
        Err(e) => {
            eprintln!("fsx: shrink replay setup failed: {e}");
            return None;
        }
    };
    let mut r = DirFs::new(rdir.clone(), plan.emulate.clone(), plan.grow_cap);
    let mut s = DirFs::new(sdir.clone(), Vec::new(), plan.grow_cap);
    let result = run::run(steps, &mut r, &mut s, &mut |_, _, _, _| {})
        .err()
        .map(|b| *b);
    for d in [&rdir, &sdir] {
        if let Err(e) = std::fs::remove_dir_all(d) {
            eprintln!("fsx: could not remove {}: {e}", d.display());
        }
    }
    result
}

/// A parsed replay file: header settings and the steps.
struct ReplayFile {
    seed: Option<u64>,
    max_size: Option<u64>,
    steps: Vec<Step>,
}

fn read_replay(path: &Path) -> Result<ReplayFile, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let (mut seed, mut max_size, mut steps) = (None, None, Vec::new());
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('#') {
            for word in header.split_whitespace() {
                if let Some(v) = word.strip_prefix("seed=") {
                    seed = v.parse().ok();
                }
                if let Some(v) = word.strip_prefix("max-size=") {
                    max_size = v.parse().ok();
                }
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        steps
            .push(ops::parse_step(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?);
    }
    Ok(ReplayFile {
        seed,
        max_size,
        steps,
    })
}

fn write_replay(
    path: &Path,
    seed: u64,
    args: &Args,
    failure: &Failure,
    steps: &[Step],
) -> std::io::Result<()> {
    let mut text = format!(
        "# fsx replay: seed={seed} max-size={}\n# {}\n# run: fsx --ref DIR --subject DIR --replay {}\n",
        args.max_size,
        failure.summary(),
        path.display()
    );
    for s in steps {
        text.push_str(&s.to_string());
        text.push('\n');
    }
    std::fs::write(path, text)
}

fn time_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    ops::splitmix64(nanos ^ u64::from(std::process::id())) % 1_000_000_000
}

/// Why fsx stops before or outside a comparison (exit 2, or 0 for --help).
enum Fail {
    Help,
    Usage(String),
    Setup(String),
}

impl From<String> for Fail {
    fn from(e: String) -> Fail {
        Fail::Setup(e)
    }
}

fn real_main(argv: &[String]) -> Result<ExitCode, Fail> {
    let mut args = match parse_args(argv) {
        Ok(a) => a,
        Err(e) if e.is_empty() => return Err(Fail::Help),
        Err(e) => return Err(Fail::Usage(e)),
    };
    for (what, d) in [("--ref", &args.reference), ("--subject", &args.subject)] {
        if !d.is_dir() {
            return Err(Fail::Usage(format!(
                "{what} {}: not a directory",
                d.display()
            )));
        }
    }
    let same =
        std::fs::canonicalize(&args.reference).ok() == std::fs::canonicalize(&args.subject).ok();
    if same {
        return Err(Fail::Usage(
            "--ref and --subject must be different directories".into(),
        ));
    }
    let replayed = match &args.replay {
        Some(p) => Some(read_replay(p)?),
        None => None,
    };
    let seed = args
        .seed
        .or(replayed.as_ref().and_then(|r| r.seed))
        .unwrap_or_else(time_seed);
    if let Some(m) = replayed.as_ref().and_then(|r| r.max_size) {
        args.max_size = m;
    }
    let name = format!("fsx.{seed}");
    let rdir = fresh_dir(&args.reference, &name)?;
    let sdir = fresh_dir(&args.subject, &name)?;
    let plan = plan(&args, &rdir, &sdir)?;
    let steps: Vec<Step> = match replayed {
        Some(r) => r.steps,
        None => {
            let cfg = GenConfig {
                files: args.files,
                max_size: args.max_size,
                disabled: plan.disabled.clone(),
            };
            Generator::new(seed, cfg).take(args.ops as usize).collect()
        }
    };
    println!(
        "fsx: seed {seed}: {} ops on {} (reference) and {} (subject)",
        steps.len(),
        rdir.display(),
        sdir.display()
    );

    let mut r = DirFs::new(rdir.clone(), plan.emulate.clone(), plan.grow_cap);
    let mut s = DirFs::new(sdir.clone(), Vec::new(), plan.grow_cap);
    let start = Instant::now();
    let total = steps.len();
    let verbose = args.verbose;
    let mut observe = |pos: usize, step: &Step, ro: &exec::Outcome, so: &exec::Outcome| {
        if verbose {
            if ro == so {
                println!("{step} => {}", show(ro));
            } else {
                println!("{step} => reference {} / subject {}", show(ro), show(so));
            }
        }
        if (pos + 1) % 5000 == 0 {
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            println!(
                "fsx: seed {seed}: {}/{total} ops, {:.0} ops/s",
                pos + 1,
                (pos + 1) as f64 / secs
            );
        }
    };
    let result = run::run(&steps, &mut r, &mut s, &mut observe);
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let failure = match result {
        Ok(n) => {
            for d in [&rdir, &sdir] {
                std::fs::remove_dir_all(d).map_err(|e| format!("removing {}: {e}", d.display()))?;
            }
            if !plan.untested.is_empty() {
                println!("fsx: NOT TESTED: {}", plan.untested.join("; "));
            }
            println!(
                "fsx: seed {seed}: {n} ops, all results identical ({:.1}s, {:.0} ops/s)",
                secs,
                n as f64 / secs
            );
            return Ok(ExitCode::SUCCESS);
        }
        Err(f) => *f,
    };

    println!("fsx: seed {seed}: {}", failure.describe());
    println!(
        "fsx: trees kept for inspection: {} and {}",
        rdir.display(),
        sdir.display()
    );
    let ran = match &failure {
        Failure::Op { pos, .. } => &steps[..=*pos],
        _ => &steps[..],
    };
    let minimal: Vec<Step> = if args.no_shrink {
        ran.to_vec()
    } else {
        println!(
            "fsx: shrinking {} ops (limit {}s)...",
            ran.len(),
            args.shrink_secs
        );
        let budget = Budget {
            max_tests: usize::MAX,
            deadline: Some(Instant::now() + Duration::from_secs(args.shrink_secs)),
        };
        let shrink_start = Instant::now();
        let mut last_print = Instant::now();
        let mut progress = |len: usize, tests: usize| {
            if last_print.elapsed() >= Duration::from_secs(2) {
                println!("fsx: shrink: {len} ops left after {tests} replays");
                last_print = Instant::now();
            }
        };
        let shrunk = shrink::shrink_failure(
            ran,
            &failure,
            &budget,
            &mut |c| replay_fresh(&args, &plan, seed, c),
            &mut progress,
        );
        println!(
            "fsx: shrunk to {} ops in {} replays ({:.1}s){}:",
            shrunk.items.len(),
            shrunk.tests,
            shrink_start.elapsed().as_secs_f64(),
            if shrunk.complete {
                ""
            } else {
                " (time limit hit, not minimal)"
            }
        );
        shrunk.items
    };
    for st in &minimal {
        println!("  {st}");
    }
    let mut replay_path = args.reference.join(format!("fsx.{seed}.replay"));
    if args.replay.as_deref() == Some(replay_path.as_path()) {
        replay_path = args.reference.join(format!("fsx.{seed}.shrunk.replay"));
    }
    if args.replay.is_some() && minimal.len() == steps.len() {
        println!("fsx: the replayed sequence did not shrink further; no new replay file");
    } else {
        write_and_announce(&replay_path, seed, &args, &failure, &minimal);
    }
    println!("fsx: seed {seed}: {}", failure.summary());
    Ok(ExitCode::from(1))
}

fn write_and_announce(
    replay_path: &Path,
    seed: u64,
    args: &Args,
    failure: &Failure,
    minimal: &[Step],
) {
    match write_replay(replay_path, seed, args, failure, minimal) {
        Ok(()) => println!(
            "fsx: replay file {} (fsx --ref {} --subject {} --replay {})",
            replay_path.display(),
            args.reference.display(),
            args.subject.display(),
            replay_path.display()
        ),
        Err(e) => println!("fsx: could not write {}: {e}", replay_path.display()),
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match real_main(&argv) {
        Ok(code) => code,
        Err(Fail::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(Fail::Usage(e)) => {
            eprint!("fsx: {e}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Fail::Setup(e)) => {
            eprintln!("fsx: {e}");
            ExitCode::from(2)
        }
    }
}
