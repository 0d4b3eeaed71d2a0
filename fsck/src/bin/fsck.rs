//! fsck.daxfs: checks a daxfs offline and repairs what it safely can.
//!
//! The check is `daxfs_fsck::check` (read-only; the journal is replayed into memory),
//! the repair (-y, -p) `daxfs_fsck::repair` (journaled; see `daxfs_fsck` for what it
//! repairs). After a repair the device is checked again: its result decides the exit
//! status. Preen (-p) repairs only what e2fsck -p would (link counts, the bitmap,
//! orphans, entries naming free inodes, ...) and stops on anything else.
//!
//! Exit status as fsck(8), the sum of: 1 errors corrected, 4 errors left uncorrected;
//! or 0 clean, 8 operational error, 16 usage error.

use daxfs_cli::{mount_point_of, ProgressMeter};
use daxfs_format::{uuid_string, STATE_CLEAN};
use daxfs_fsck::cli::{self, Mode, Opts, Parsed};
use daxfs_fsck::{check, repair, FsckReport, Severity};
use daxfs_pmem::{Device, DeviceError, DeviceOptions};
use std::path::Path;
use std::sync::Arc;

const EXIT_OK: i32 = 0;
const EXIT_CORRECTED: i32 = 1;
const EXIT_UNCORRECTED: i32 = 4;
const EXIT_OPERATIONAL: i32 = 8;
const EXIT_USAGE: i32 = 16;

/// Devices at least this large show progress.
const PROGRESS_MIN_BYTES: u64 = 1 << 30;

fn main() {
    let code = match cli::parse(std::env::args().skip(1)) {
        Ok(Parsed::Print(text)) => {
            print!("{text}");
            EXIT_OK
        }
        Ok(Parsed::Run(o)) => match run(&o) {
            Ok(c) => c,
            Err(msg) => {
                eprintln!("fsck.daxfs: {msg}");
                EXIT_OPERATIONAL
            }
        },
        Err(msg) => {
            eprint!("fsck.daxfs: {msg}\n{}", cli::help());
            EXIT_USAGE
        }
    };
    std::process::exit(code);
}

fn open(path: &Path, writable: bool) -> Result<Arc<Device>, String> {
    Device::open(
        path,
        DeviceOptions {
            writable,
            // Holds off a daxfs daemon (and another fsck) while checking.
            exclusive: true,
            populate: false,
        },
    )
    .map(Arc::new)
    .map_err(|e| match e {
        DeviceError::Busy { .. } => format!(
            "{}: in use (mounted by a running daxfs, or held by mkfs/fsck); unmount it first",
            path.display()
        ),
        other => other.to_string(),
    })
}

fn run_check(dev: &Arc<Device>) -> FsckReport {
    let mut meter = ProgressMeter::new(dev.size() >= PROGRESS_MIN_BYTES);
    let r = check(dev, false, &mut |stage, done, total| {
        meter.update(stage, done, total)
    });
    meter.finish();
    r
}

fn run_repair(dev: &Arc<Device>, preen: bool) -> FsckReport {
    let mut meter = ProgressMeter::new(dev.size() >= PROGRESS_MIN_BYTES);
    let r = repair(dev, preen, &mut |stage, done, total| {
        meter.update(stage, done, total)
    });
    meter.finish();
    r
}

fn print_findings(name: &str, r: &FsckReport, quiet_notes: bool) {
    for f in &r.findings {
        let tag = match f.severity {
            Severity::Error => "error",
            Severity::Repairable => "repairable",
            Severity::Note if quiet_notes => continue,
            Severity::Note => "note",
        };
        println!("{name}: {tag}: {}", f.what);
    }
    if r.findings_dropped > 0 {
        println!(
            "{name}: ... and {} more",
            plural(r.findings_dropped, "problem")
        );
    }
    for fix in &r.repaired {
        println!("{name}: repaired: {fix}");
    }
}

fn summary(name: &str, r: &FsckReport) {
    let s = &r.stats;
    println!(
        "{name}: {}/{} inodes ({} files, {} directories, {} symlinks, {} other), {}/{} data blocks",
        s.inodes_used,
        s.inodes_total,
        s.files,
        s.dirs,
        s.symlinks,
        s.others,
        s.blocks_used,
        s.data_blocks
    );
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn problems(r: &FsckReport) -> u64 {
    r.count(Severity::Error) + r.count(Severity::Repairable)
}

fn run(o: &Opts) -> Result<i32, String> {
    let path = o.device.as_path();
    let name = path.display().to_string();
    if std::fs::metadata(path).is_err() {
        return Err(format!("{name}: no such file or device"));
    }
    if let Some(mp) = mount_point_of(path) {
        return Err(format!(
            "{name} is mounted on {}; unmount it first",
            mp.display()
        ));
    }
    let repair = o.mode != Mode::Check;
    let dev = open(path, repair)?;
    let first = match o.mode {
        Mode::Check => run_check(&dev),
        Mode::Yes => run_repair(&dev, false),
        Mode::Preen if o.force => run_repair(&dev, true),
        Mode::Preen => {
            // As e2fsck -p: a filesystem marked clean that checks clean is left alone.
            let r = run_check(&dev);
            let marked_clean = r
                .superblock
                .as_ref()
                .is_some_and(|sb| sb.state == STATE_CLEAN);
            if marked_clean && r.is_clean() {
                println!("{name}: clean");
                return Ok(EXIT_OK);
            }
            run_repair(&dev, true)
        }
    };
    if first.not_daxfs {
        return Err(format!(
            "{name}: not a daxfs filesystem (no superblock found in block 0 or 1)"
        ));
    }
    if let Some(sb) = &first.superblock {
        if o.mode != Mode::Preen {
            println!(
                "{name}: daxfs, label {:?}, uuid {}",
                sb.label_str(),
                uuid_string(&sb.uuid)
            );
        }
    }
    print_findings(&name, &first, o.mode == Mode::Preen);
    if !repair {
        summary(&name, &first);
        let n = problems(&first);
        if n == 0 && first.superblock.is_some() {
            println!("{name}: clean");
            return Ok(EXIT_OK);
        }
        let errors = first.count(Severity::Error);
        let hint = if errors == 0 {
            format!("run fsck.daxfs -y {name} to repair")
        } else {
            format!(
                "fsck.daxfs -y cannot repair {}, so it would repair nothing but superblock copies",
                plural(errors, "error")
            )
        };
        println!(
            "{name}: {} found; nothing changed ({hint})",
            plural(n, "problem")
        );
        return Ok(EXIT_UNCORRECTED);
    }

    let modified = !first.repaired.is_empty();
    let r = if modified { run_check(&dev) } else { first };
    summary(&name, &r);
    let left = problems(&r);
    if left > 0 {
        if modified {
            print_findings(&name, &r, true);
        }
        if o.mode == Mode::Preen {
            println!("{name}: UNEXPECTED INCONSISTENCY; RUN fsck.daxfs MANUALLY (without -p)");
        }
        println!("{name}: {} left uncorrected", plural(left, "problem"));
        // fsck(8): the exit status is the sum of the conditions.
        return Ok(EXIT_UNCORRECTED | if modified { EXIT_CORRECTED } else { 0 });
    }
    if modified {
        println!("{name}: ***** FILESYSTEM WAS MODIFIED *****; now clean");
        Ok(EXIT_CORRECTED)
    } else {
        println!("{name}: clean");
        Ok(EXIT_OK)
    }
}
