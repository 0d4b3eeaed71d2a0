//! The fsx binary end to end on two tmpfs directories (identical filesystems, so every run
//! must come out identical), plus its exit codes for bad usage and its replay files.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Two sibling scratch directories on /dev/shm (or the temp dir), removed on drop.
struct Pair {
    base: PathBuf,
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let root = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let base = root.join(format!("fsx-cli-{tag}-{}-{nanos}", std::process::id()));
        for side in ["ref", "sub"] {
            std::fs::create_dir_all(base.join(side)).expect("create scratch dir");
        }
        Pair { base }
    }

    fn reference(&self) -> PathBuf {
        self.base.join("ref")
    }

    fn subject(&self) -> PathBuf {
        self.base.join("sub")
    }

    fn fsx(&self, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fsx"))
            .arg("--ref")
            .arg(self.reference())
            .arg("--subject")
            .arg(self.subject())
            .args(extra)
            .output()
            .expect("run fsx")
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

#[test]
fn identical_filesystems_pass_a_few_thousand_ops_and_clean_up() {
    let pair = Pair::new("pass");
    let out = pair.fsx(&["--seed", "12345", "--ops", "4000"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.lines()
            .any(|l| l == "fsx: seed 12345: 4000 ops, all results identical"
                || l.starts_with("fsx: seed 12345: 4000 ops, all results identical (")),
        "{text}"
    );
    assert!(
        is_empty_dir(&pair.reference()),
        "reference work tree removed"
    );
    assert!(is_empty_dir(&pair.subject()), "subject work tree removed");
}

#[test]
fn progress_is_printed_every_few_thousand_ops() {
    let pair = Pair::new("progress");
    let out = pair.fsx(&["--seed", "3", "--ops", "5000", "--no-mmap"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("fsx: seed 3: 5000/5000 ops"));
}

#[test]
fn a_replay_file_runs_its_steps() {
    let pair = Pair::new("replay");
    let file = pair.base.join("steps.replay");
    std::fs::write(
        &file,
        "# fsx replay: seed=77 max-size=65536\n\
         1 mkdir d0\n\
         2 write d0/f1 off=100 len=5000\n\
         3 rmdir d0\n\
         4 rename d0/f1 f0 flags=noreplace\n\
         5 read f0 off=0 len=9000\n",
    )
    .expect("write replay file");
    let out = pair.fsx(&["--replay", file.to_str().unwrap_or_default()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("fsx: seed 77: 5 ops, all results identical"),
        "{text}"
    );
}

#[test]
fn a_malformed_replay_file_is_a_setup_error() {
    let pair = Pair::new("badreplay");
    let file = pair.base.join("bad.replay");
    std::fs::write(&file, "1 write ../escape off=0 len=1\n").expect("write replay file");
    let out = pair.fsx(&["--replay", file.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad path"));
}

#[test]
fn usage_errors_exit_2() {
    let pair = Pair::new("usage");
    assert_eq!(pair.fsx(&["--ops"]).status.code(), Some(2));
    assert_eq!(pair.fsx(&["--bogus"]).status.code(), Some(2));
    let missing = Command::new(env!("CARGO_BIN_EXE_fsx"))
        .args(["--ref", "/nonexistent-fsx-dir", "--subject", "/tmp"])
        .output()
        .expect("run fsx");
    assert_eq!(missing.status.code(), Some(2));
    let same = Command::new(env!("CARGO_BIN_EXE_fsx"))
        .arg("--ref")
        .arg(pair.reference())
        .arg("--subject")
        .arg(pair.reference())
        .output()
        .expect("run fsx");
    assert_eq!(same.status.code(), Some(2));
}
