//! mkfs.daxfs: formats a device (device-DAX, fsdax block device, or a regular file as
//! emulated pmem) with an empty daxfs. Owns the command line, the safety checks before
//! formatting (existing signatures, in use, too small) and the geometry report; the
//! format itself is `daxfs_format::mkfs::format_device`.
//!
//! Exit status: 0 formatted, 1 refused, usage error or failure.

mod probe;

use daxfs_cli::{mount_point_of, ProgressMeter};
use daxfs_format::{uuid_string, MkfsParams, Superblock, BLOCK_SIZE, INODE_SIZE};
use daxfs_mkfs::cli::{self, Args, Command};
use daxfs_pmem::{Device, DeviceError, DeviceOptions};
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Devices at least this large show progress (smaller ones format in a blink).
const PROGRESS_MIN_BYTES: u64 = 1 << 30;

fn main() {
    let code = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Print(text)) => {
            print!("{text}");
            0
        }
        Ok(Command::Format(a)) => match run(&a) {
            Ok(()) => 0,
            Err(msg) => {
                eprintln!("mkfs.daxfs: {msg}");
                1
            }
        },
        Err(msg) => {
            eprintln!("mkfs.daxfs: {msg}\nTry 'mkfs.daxfs --help' for more information.");
            1
        }
    };
    std::process::exit(code);
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A random version-4 UUID from /dev/urandom.
fn new_uuid() -> Result<[u8; 16], String> {
    let mut u = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut u))
        .map_err(|e| format!("cannot read /dev/urandom for a UUID: {e}"))?;
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    Ok(u)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// What `--size` has to do to the file.
enum SizeAction {
    None,
    Create(u64),
    Grow(u64),
}

/// Decides what `--size` means for `path` (and refuses what it must not do).
fn plan_size(path: &Path, size: u64, quiet: bool) -> Result<SizeAction, String> {
    let rounded = size / BLOCK_SIZE * BLOCK_SIZE;
    if rounded == 0 {
        return Err(format!("size {size} is smaller than one 4096-byte block"));
    }
    if rounded != size && !quiet {
        eprintln!("mkfs.daxfs: note: size rounded down to {rounded} bytes (a multiple of 4096)");
    }
    let name = path.display();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SizeAction::Create(rounded)),
        Err(e) => Err(format!("{name}: {e}")),
        Ok(m) => {
            let ft = m.file_type();
            if ft.is_block_device() || ft.is_char_device() {
                Err(format!(
                    "{name} is a device; --size only creates or grows regular files (a device's size is fixed)"
                ))
            } else if !ft.is_file() {
                Err(format!(
                    "{name} is not a regular file; --size cannot size it"
                ))
            } else if m.len() > rounded {
                Err(format!(
                    "{name} is {} bytes; refusing to shrink it to {rounded} (remove it first, or choose a larger --size)",
                    m.len()
                ))
            } else if m.len() < rounded {
                Ok(SizeAction::Grow(rounded))
            } else {
                Ok(SizeAction::None)
            }
        }
    }
}

/// Refuses a device that is in use, or holds something, unless forced (in use: never).
fn safety_checks(path: &Path, force: bool) -> Result<(), String> {
    let name = path.display();
    if Device::is_locked_by_other(path) {
        return Err(format!(
            "{name} is in use: a running daxfs (or another mkfs.daxfs) holds it, or it is mounted; unmount it first (-f does not override this)"
        ));
    }
    if let Some(mp) = mount_point_of(path) {
        return Err(format!(
            "{name} is mounted on {}; unmount it first (-f does not override this)",
            mp.display()
        ));
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let head = probe::read_head(path)?;
    if let Some(what) = probe::identify(&head, size) {
        if force {
            eprintln!("mkfs.daxfs: {name} contains {what}; overwriting it (-f)");
        } else {
            return Err(format!("{name} contains {what}; use -f to overwrite"));
        }
    }
    Ok(())
}

fn open_device(path: &Path) -> Result<Device, String> {
    Device::open(
        path,
        DeviceOptions {
            writable: true,
            exclusive: true,
            // Formatting touches only the metadata regions; populating a sparse file's
            // whole mapping would allocate all of it.
            populate: false,
        },
    )
    .map_err(|e| match e {
        DeviceError::Busy { .. } => format!(
            "{}: in use by a running daxfs or another mkfs.daxfs (or mounted); unmount it first",
            path.display()
        ),
        DeviceError::BadSize { size, .. } => format!(
            "{}: size {size} is not a multiple of 4096; resize it (for a file: --size)",
            path.display()
        ),
        other => other.to_string(),
    })
}

fn is_regular_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// Allocates `[from, to)` of the emulated device file `f` (growing it to `to` if it is
/// shorter). An emulated device is memory the filesystem owns: a hole left in it would
/// be allocated by the page fault that first writes it, and on a full backing filesystem
/// that fault kills the daemon with SIGBUS. Refuses early, without allocating, when the
/// backing filesystem has not that much free space.
fn reserve(path: &Path, f: &File, from: u64, to: u64) -> Result<(), String> {
    let name = path.display();
    let meta = f
        .metadata()
        .map_err(|e| format!("{name}: cannot stat: {e}"))?;
    if to <= from || meta.blocks().saturating_mul(512) >= to {
        return Ok(()); // nothing to reserve, or allocated already
    }
    // What is allocated already may lie inside the range: the estimate only refuses
    // what cannot fit (posix_fallocate has the last word).
    let need = (to - from).saturating_sub(meta.blocks().saturating_mul(512));
    let refuse = |why: String| {
        format!(
            "{name}: cannot reserve {} ({to} bytes) for the emulated device: {why}; \
             an emulated device needs all its space allocated (choose a smaller --size, \
             or a filesystem with room)",
            human(to)
        )
    };
    if let Some(avail) = free_bytes(f) {
        if avail < need {
            return Err(refuse(format!(
                "the filesystem holding it has {} free",
                human(avail)
            )));
        }
    }
    daxfs_pmem::allocate_file(f, from, to - from).map_err(|e| refuse(e.to_string()))
}

/// Bytes an unprivileged writer may still allocate on the filesystem holding `f`.
fn free_bytes(f: &File) -> Option<u64> {
    // SAFETY: fstatvfs fills the zeroed struct it is given; nothing else is touched.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `st` is a valid, writable statvfs.
    let rc = unsafe { libc::fstatvfs(f.as_raw_fd(), &mut st) };
    (rc == 0).then(|| (st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Removes a file this run created if the run fails.
struct CreatedFile(Option<PathBuf>);

impl Drop for CreatedFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The layout's own message names the minimum size for these parameters.
fn too_small(path: &Path, size: u64, e: impl std::fmt::Display) -> String {
    format!("{}: {e} (the device is {})", path.display(), human(size))
}

fn run(a: &Args) -> Result<(), String> {
    let path = a.device.as_path();
    let name = path.display();
    let params = MkfsParams {
        label: a.label.clone(),
        journal_bytes: a.journal_bytes,
        inodes: a.inodes,
        uuid: new_uuid()?,
        now_ns: now_ns(),
    };
    let action = match a.size {
        Some(s) => plan_size(path, s, a.quiet)?,
        None => SizeAction::None,
    };
    if let SizeAction::Create(s) | SizeAction::Grow(s) = action {
        Superblock::layout(s, &params).map_err(|e| too_small(path, s, e))?;
    }
    let exists = !matches!(action, SizeAction::Create(_));
    if exists {
        let meta = std::fs::metadata(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!("{name}: no such file or device (to create an emulated device file, add --size SIZE)")
            } else {
                format!("{name}: {e}")
            }
        })?;
        // Probing opens the path: refuse what is not a device before that (a fifo would
        // block the open).
        let ft = meta.file_type();
        if !(ft.is_file() || ft.is_block_device() || ft.is_char_device()) {
            return Err(format!(
                "{name} is not a device or regular file (it is a {})",
                if ft.is_dir() {
                    "directory"
                } else {
                    "fifo, socket or other special file"
                }
            ));
        }
        safety_checks(path, a.force)?;
    }
    let mut created = CreatedFile(None);
    match action {
        SizeAction::Create(s) => {
            // 0600: the image holds every file's bytes, readable past the mount's
            // permissions by whoever can read the image.
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("{name}: cannot create: {e}"))?;
            created.0 = Some(path.to_path_buf());
            reserve(path, &f, 0, s)?;
        }
        SizeAction::Grow(s) => {
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| format!("{name}: cannot open: {e}"))?;
            let old = f
                .metadata()
                .map_err(|e| format!("{name}: cannot stat: {e}"))?
                .len();
            if let Err(e) = reserve(path, &f, old, s) {
                // Leave the file as it was: shrinking back also frees what was allocated
                // past its old end before the failure.
                let _ = f.set_len(old);
                return Err(e);
            }
        }
        SizeAction::None => {}
    }
    if !matches!(action, SizeAction::Create(_)) && is_regular_file(path) {
        // An existing file (grown above, sized by hand, or a sparse copy): fill its holes,
        // as a mount refuses a file with holes. Its size does not change.
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| format!("{name}: cannot open: {e}"))?;
        let len = f
            .metadata()
            .map_err(|e| format!("{name}: cannot stat: {e}"))?
            .len();
        reserve(path, &f, 0, len)?;
    }
    let dev = open_device(path)?;
    let size = dev.size();
    Superblock::layout(size, &params).map_err(|e| too_small(path, size, e))?;
    // Progress lines redraw one line: only for a person watching a terminal.
    let mut meter = ProgressMeter::new(
        !a.quiet && size >= PROGRESS_MIN_BYTES && std::io::stderr().is_terminal(),
    );
    // A file this run created (and allocated) reads as zeros already.
    let zeroed = created.0.is_some();
    let sb = daxfs_format::mkfs::format_device(&dev, &params, zeroed, &mut |stage, done, total| {
        meter.update(stage, done, total)
    })
    .map_err(|e| format!("{name}: format failed: {e}"))?;
    meter.finish();
    drop(dev);
    created.0 = None; // keep it: the format succeeded
    if !a.quiet {
        print_geometry(path, &sb, size, kind_name(path));
    }
    Ok(())
}

fn kind_name(path: &Path) -> &'static str {
    match std::fs::metadata(path).map(|m| m.file_type()) {
        Ok(ft) if ft.is_char_device() => "device-DAX",
        Ok(ft) if ft.is_block_device() => "block device",
        _ => "regular file, emulated pmem",
    }
}

fn region(name: &str, start: u64, blocks: u64, extra: &str) -> String {
    format!(
        "  {name:<13} blocks {start:>10} .. {:<10} {:>10}  {extra}",
        start + blocks - 1,
        human(blocks * BLOCK_SIZE)
    )
}

fn print_geometry(path: &Path, sb: &Superblock, size: u64, kind: &str) {
    let label = sb.label_str();
    println!("daxfs filesystem created on {}", path.display());
    println!(
        "device        {} ({kind}), {} bytes ({})",
        path.display(),
        size,
        human(size)
    );
    println!(
        "label         {}",
        if label.is_empty() { "(none)" } else { &label }
    );
    println!("uuid          {}", uuid_string(&sb.uuid));
    println!("block size    {BLOCK_SIZE}");
    println!(
        "data blocks   {} ({})",
        sb.data_blocks,
        human(sb.data_blocks * BLOCK_SIZE)
    );
    println!(
        "inodes        {} ({} bytes each)",
        sb.inode_count - 1,
        INODE_SIZE
    );
    println!("journal       {}", human(sb.journal_blocks * BLOCK_SIZE));
    println!("regions:");
    println!("{}", region("superblocks", 0, 2, "primary + backup"));
    println!(
        "{}",
        region("journal", sb.journal_start, sb.journal_blocks, "")
    );
    println!(
        "{}",
        region(
            "inode table",
            sb.inode_table_start,
            sb.inode_table_blocks,
            &format!("{} slots", sb.inode_count)
        )
    );
    println!(
        "{}",
        region("bitmap", sb.bitmap_start, sb.bitmap_blocks, "")
    );
    println!(
        "{}",
        region("data", sb.data_start, sb.data_blocks, "2 MiB aligned")
    );
}
