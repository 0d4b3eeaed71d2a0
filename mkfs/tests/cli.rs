//! mkfs.daxfs behaviour, through the built binary: what it formats, what it refuses
//! and what it reports.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking

use daxfs_format::{Superblock, SB_SIZE};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

const MKFS: &str = env!("CARGO_BIN_EXE_mkfs-daxfs");

/// A path in /dev/shm, removed on drop (even when the test fails).
struct TempPath(PathBuf);

impl TempPath {
    fn new() -> TempPath {
        static N: AtomicU32 = AtomicU32::new(0);
        TempPath(PathBuf::from(format!(
            "/dev/shm/daxfs-mkfs-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        )))
    }

    /// A file of `size` zero bytes.
    fn sized(size: u64) -> TempPath {
        let t = TempPath::new();
        let f = std::fs::File::create(&t.0).expect("create temp file");
        f.set_len(size).expect("size temp file");
        t
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn mkfs(args: &[&str], dev: &Path) -> Output {
    Command::new(MKFS)
        .args(args)
        .arg(dev)
        .output()
        .expect("run mkfs-daxfs")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("mkfs exited by a signal")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn superblock(path: &Path) -> Option<Superblock> {
    let bytes = std::fs::read(path).ok()?;
    Superblock::decode(bytes.get(..SB_SIZE)?, bytes.len() as u64).ok()
}

#[test]
fn formats_an_existing_file_and_prints_the_geometry() {
    let t = TempPath::sized(64 << 20);
    let o = mkfs(&["-L", "data"], &t.0);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let sb = superblock(&t.0).expect("a valid superblock after mkfs");
    assert_eq!(sb.label_str(), "data");
    let out = stdout(&o);
    for want in [
        "label         data",
        "block size    4096",
        "data blocks",
        "inodes",
        "journal",
        "inode table",
        "bitmap",
        &daxfs_format::uuid_string(&sb.uuid),
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let fs = daxfs::DaxFs::mount(&t.0, daxfs::FsOptions::default()).expect("mountable");
    fs.shutdown().expect("clean shutdown");
}

#[test]
fn each_format_gets_a_fresh_version_4_uuid() {
    let a = TempPath::sized(16 << 20);
    let b = TempPath::sized(16 << 20);
    assert_eq!(code(&mkfs(&["-q"], &a.0)), 0);
    assert_eq!(code(&mkfs(&["-q"], &b.0)), 0);
    let (ua, ub) = (
        superblock(&a.0).unwrap().uuid,
        superblock(&b.0).unwrap().uuid,
    );
    assert_ne!(ua, ub);
    assert_eq!(ua[6] >> 4, 4);
}

#[test]
fn refuses_a_second_format_without_force() {
    let t = TempPath::sized(32 << 20);
    assert_eq!(code(&mkfs(&["-q", "-L", "first"], &t.0)), 0);
    let before = superblock(&t.0).unwrap();
    let o = mkfs(&["-L", "second"], &t.0);
    assert_eq!(code(&o), 1);
    let e = stderr(&o);
    assert!(e.contains("contains a daxfs filesystem"), "{e}");
    assert!(e.contains("first") && e.contains("use -f"), "{e}");
    assert_eq!(superblock(&t.0).unwrap(), before, "a refused mkfs wrote");
}

#[test]
fn force_overwrites_an_existing_daxfs() {
    let t = TempPath::sized(32 << 20);
    assert_eq!(code(&mkfs(&["-q", "-L", "first"], &t.0)), 0);
    let old = superblock(&t.0).unwrap().uuid;
    let o = mkfs(&["-f", "-q", "-L", "second"], &t.0);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let sb = superblock(&t.0).unwrap();
    assert_eq!(sb.label_str(), "second");
    assert_ne!(sb.uuid, old);
}

#[test]
fn refuses_an_ext4_looking_image_without_force() {
    let t = TempPath::sized(32 << 20);
    let f = std::fs::OpenOptions::new().write(true).open(&t.0).unwrap();
    f.write_all_at(&0xEF53u16.to_le_bytes(), 1080).unwrap();
    drop(f);
    let o = mkfs(&[], &t.0);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("ext2/ext3/ext4"), "{}", stderr(&o));
    assert!(superblock(&t.0).is_none());
    assert_eq!(code(&mkfs(&["-f", "-q"], &t.0)), 0);
    assert!(superblock(&t.0).is_some());
}

#[test]
fn refuses_a_device_too_small_and_says_the_minimum() {
    let t = TempPath::sized(1 << 20);
    let o = mkfs(&[], &t.0);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("too small"), "{}", stderr(&o));
    assert!(stderr(&o).contains("at least"), "{}", stderr(&o));
}

#[test]
fn size_creates_the_file() {
    let t = TempPath::new();
    let o = mkfs(&["--size", "24M", "-q"], &t.0);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&t.0).unwrap().len(), 24 << 20);
    assert!(superblock(&t.0).is_some());
}

#[test]
fn size_rounds_down_to_4096_with_a_note() {
    let t = TempPath::new();
    let o = mkfs(&["--size", "16781313"], &t.0); // 16 MiB + 4097
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&t.0).unwrap().len(), (16 << 20) + 4096);
    assert!(stderr(&o).contains("rounded down"), "{}", stderr(&o));
}

#[test]
fn size_too_small_leaves_no_file_behind() {
    let t = TempPath::new();
    let o = mkfs(&["--size", "1M"], &t.0);
    assert_eq!(code(&o), 1);
    assert!(!t.0.exists());
}

#[test]
fn size_grows_but_never_shrinks_a_file() {
    let t = TempPath::sized(16 << 20);
    assert_eq!(code(&mkfs(&["--size", "32M", "-q"], &t.0)), 0);
    assert_eq!(std::fs::metadata(&t.0).unwrap().len(), 32 << 20);
    let o = mkfs(&["--size", "16M", "-f"], &t.0);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("shrink"), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&t.0).unwrap().len(), 32 << 20);
}

#[test]
fn size_is_refused_on_a_device_node() {
    let o = mkfs(&["--size", "1G"], Path::new("/dev/null"));
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("device"), "{}", stderr(&o));
}

#[test]
fn a_missing_device_without_size_is_refused() {
    let t = TempPath::new();
    let o = mkfs(&[], &t.0);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("--size"), "{}", stderr(&o));
}

#[test]
fn refuses_a_device_held_by_a_live_daxfs_even_with_force() {
    let t = TempPath::sized(32 << 20);
    assert_eq!(code(&mkfs(&["-q"], &t.0)), 0);
    let fs = daxfs::DaxFs::mount(&t.0, daxfs::FsOptions::default()).expect("mount");
    let o = mkfs(&["-f"], &t.0);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("in use"), "{}", stderr(&o));
    fs.shutdown().expect("clean shutdown");
}

#[test]
fn options_shape_the_layout() {
    let t = TempPath::sized(64 << 20);
    let o = mkfs(&["-q", "-N", "1000", "--journal-size", "256K"], &t.0);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let sb = superblock(&t.0).unwrap();
    assert_eq!(sb.inode_count, 1000);
    assert_eq!(sb.journal_blocks, 64);
}

#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    let o = Command::new(MKFS).output().unwrap();
    assert_eq!(code(&o), 1);
    let o = Command::new(MKFS).arg("--bogus").arg("x").output().unwrap();
    assert_eq!(code(&o), 1);
    let o = Command::new(MKFS).arg("--help").output().unwrap();
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("Usage"));
    let o = Command::new(MKFS).arg("-V").output().unwrap();
    assert_eq!(code(&o), 0);
}

#[test]
fn a_missing_value_exits_1_naming_the_option_and_the_help() {
    let o = Command::new(MKFS).args(["dev", "--size"]).output().unwrap();
    assert_eq!(code(&o), 1);
    assert_eq!(
        stderr(&o),
        "mkfs.daxfs: option --size needs a value\nTry 'mkfs.daxfs --help' for more information.\n"
    );
}

#[test]
fn quiet_prints_nothing_on_success() {
    let t = TempPath::sized(16 << 20);
    let o = mkfs(&["-q"], &t.0);
    assert_eq!(code(&o), 0);
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
}

fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat").blocks() * 512
}

#[test]
fn size_creates_the_image_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let t = TempPath::new();
    let o = mkfs(&["-q", "--size", "16M"], &t.0);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mode = std::fs::metadata(&t.0).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn size_allocates_the_whole_emulated_device() {
    let t = TempPath::new();
    let o = mkfs(&["-q", "--size", "32M"], &t.0);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        allocated(&t.0) >= 32 << 20,
        "only {} bytes allocated",
        allocated(&t.0)
    );
}

#[test]
fn an_existing_sparse_file_is_allocated_before_formatting() {
    let t = TempPath::sized(16 << 20);
    assert_eq!(allocated(&t.0), 0);
    let o = mkfs(&["-q"], &t.0);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(allocated(&t.0) >= 16 << 20);
    assert_eq!(std::fs::metadata(&t.0).expect("stat").len(), 16 << 20);
}

#[test]
fn a_size_the_backing_filesystem_cannot_hold_is_refused_and_its_file_removed() {
    let t = TempPath::new();
    // More than any /dev/shm holds: refused before anything is allocated.
    let o = mkfs(&["-q", "--size", "10T"], &t.0);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot reserve"), "{}", stderr(&o));
    assert!(!t.0.exists(), "the file mkfs created is left behind");
}

#[test]
fn a_refused_grow_leaves_the_existing_file_as_it_was() {
    let t = TempPath::new();
    std::fs::write(&t.0, vec![0x5a; 1 << 20]).expect("write");
    let o = mkfs(&["-q", "-f", "--size", "10T"], &t.0);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let after = std::fs::read(&t.0).expect("the existing file is kept");
    assert_eq!(after.len(), 1 << 20);
    assert!(after.iter().all(|&b| b == 0x5a));
}

#[test]
fn a_zero_journal_size_is_refused() {
    let t = TempPath::new();
    let o = mkfs(&["--journal-size", "0", "--size", "16M"], &t.0);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("too small"), "{}", stderr(&o));
    assert!(!t.0.exists());
}

#[test]
fn no_progress_lines_on_a_stderr_that_is_not_a_terminal() {
    let t = TempPath::new();
    let o = mkfs(&["--size", "1G"], &t.0);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        !stderr(&o).contains('%'),
        "progress on a pipe: {}",
        stderr(&o)
    );
}
