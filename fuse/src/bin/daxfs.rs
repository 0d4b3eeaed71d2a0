//! `daxfs`: mounts a daxfs device through FUSE, and is mount(8)'s helper for `fuse.daxfs`.
//!
//! - `daxfs mount DEVICE MOUNTPOINT [-o OPTS] [-f]`, or `daxfs DEVICE MOUNTPOINT -o OPTS`
//!   (how fuse3's `mount.fuse3` runs a filesystem named by its subtype).
//! - Invoked as `mount.daxfs` or `mount.fuse.daxfs` (a symlink to this binary in /sbin),
//!   it takes mount(8)'s helper syntax `DEVICE MOUNTPOINT [-sfnv] [-o OPTS] [-t TYPE]`, so
//!   `mount -t fuse.daxfs DEVICE DIR -o ...` and fstab lines work.
//!
//! - `daxfs pin FILE OFFSET LENGTH [--hold SECONDS] [--release-on-break]`: holds a
//!   long-term pin (DAXFS_IOC_PIN) on a file range until the time passes or
//!   SIGINT/SIGTERM/SIGHUP, and reports layout breaks and revocation (poll POLLPRI,
//!   DAXFS_IOC_PIN_STATUS).
//! - `daxfs stats MOUNTPOINT [--json]`: the filesystem's counters (DAXFS_IOC_STATS).
//!
//! Without `-f` the process daemonises and the command returns only once the mount is live
//! (the daemon reports readiness, or its error, through a pipe). SIGINT, SIGTERM and SIGHUP
//! unmount; once the session ends (signal, `umount`, `fusermount3 -u`) the filesystem is
//! shut down cleanly and the daemon exits 0.

use daxfs::{DaxFs, MountError};
use daxfs_fuse::adapter::FuseAdapter;
use daxfs_fuse::busy_poll::BusyPoll;
use daxfs_fuse::cli::{self, Parsed};
use daxfs_fuse::mount_options::MountConfig;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A command failure: the message (one line) and the exit status.
struct Failure(String, i32);

fn fail<T>(msg: impl Into<String>) -> Result<T, Failure> {
    Err(Failure(msg.into(), 1))
}

fn main() {
    // A bug must not print a backtrace at the user: one line, then the usual exit.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("daxfs: internal error: {info}");
    }));
    daxfs_fuse::logger::init();
    let args: Vec<OsString> = std::env::args_os().collect();
    let prog = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "daxfs".to_string());
    let rest = args.get(1..).unwrap_or(&[]);
    let code = match run(&prog, rest) {
        Ok(()) => 0,
        Err(Failure(msg, code)) => {
            if !msg.is_empty() {
                eprintln!("{prog}: {msg}");
            }
            code
        }
    };
    std::process::exit(code);
}

fn run(prog: &str, args: &[OsString]) -> Result<(), Failure> {
    if prog.starts_with("mount.") {
        return mount(parse_mount_args(args, true)?);
    }
    let Some(first) = args.first() else {
        eprint!("{}", cli::usage());
        return Err(Failure(String::new(), 1));
    };
    match first.to_str() {
        Some("mount") => mount(parse_mount_args(&args[1..], false)?),
        Some("help") => match args.get(1).and_then(|a| a.to_str()) {
            None => say(&cli::help(None).unwrap_or_default()),
            Some(name @ ("mount" | "pin" | "stats" | "sync" | "promote")) => {
                say(&cli::help(Some(name)).unwrap_or_default())
            }
            Some(other) => fail(format!(
                "no help for '{other}'; commands: mount, pin, stats, sync, promote"
            )),
        },
        Some("--help" | "-h" | "--version" | "-V") => {
            say(&cli::parse_top(&args[..1]).map_err(|e| Failure(e, 1))?)
        }
        Some("pin") => pin(&args[1..]),
        Some("stats") => stats(&args[1..]),
        Some("sync") => sync(&args[1..]),
        Some("promote") => promote(&args[1..]),
        Some(opt) if opt.starts_with('-') => {
            fail(format!("unknown option '{opt}' (see 'daxfs --help')"))
        }
        // `daxfs DEVICE MOUNTPOINT -o OPTS`: how mount.fuse3 runs us for type fuse.daxfs.
        _ if looks_like_path(first) => mount(parse_mount_args(args, false)?),
        _ => fail(format!(
            "unknown command '{}' (see 'daxfs --help')",
            first.to_string_lossy()
        )),
    }
}

/// A size argument: a decimal (or 0x hex) number with an optional k/m/g/t suffix.
fn parse_size(what: &str, a: &OsStr) -> Result<u64, Failure> {
    a.to_str()
        .and_then(daxfs_fuse::mount_options::parse_bytes)
        .ok_or_else(|| Failure(format!("invalid {what} '{}'", a.to_string_lossy()), 1))
}

/// The end of the pin range `offset..offset+length`, or why it is no range: empty, or
/// ending past the largest file offset (file offsets are signed 64-bit, loff_t).
fn pin_range_end(offset: u64, length: u64) -> Result<u64, Failure> {
    if length == 0 {
        return fail("LENGTH must be at least 1 byte (see 'daxfs help pin')");
    }
    offset
        .checked_add(length)
        .filter(|&e| e <= i64::MAX as u64)
        .ok_or_else(|| {
            Failure(
                format!(
                    "OFFSET + LENGTH ({offset} + {length}) is past the largest file offset \
                     ({}); see 'daxfs help pin'",
                    i64::MAX
                ),
                1,
            )
        })
}

/// `daxfs pin FILE OFFSET LENGTH [--hold SECONDS]`.
fn pin(args: &[OsString]) -> Result<(), Failure> {
    let p = match cli::parse_pin(args).map_err(|e| Failure(e, 1))? {
        Parsed::Print(text) => return say(&text),
        Parsed::Run(p) => p,
    };
    let (hold, release_on_break) = (p.hold, p.release_on_break);
    let offset = parse_size("OFFSET", &p.offset)?;
    let length = parse_size("LENGTH", &p.length)?;
    let end = pin_range_end(offset, length)?;
    let file = p.file;
    let path = file.as_path();
    // Signals are blocked before the pin exists, so that one arriving at any point ends
    // the hold through the normal unpin path below.
    let set = block_signals()?;
    let f = File::open(path)
        .or_else(|e| fail(format!("cannot open {}: {}", path.display(), os_msg(&e))))?;
    if let Err(e) = daxfs_fuse::ioctl::pin_file(&f, offset, length) {
        let hint = match e.raw_os_error() {
            Some(libc::ENOTTY) => " (not a file on a daxfs mount)",
            Some(libc::ENXIO) => " (the range has a hole: allocate it first)",
            Some(libc::EINVAL) => " (empty range, or beyond the end of the file)",
            Some(libc::EACCES) => " (only the file's owner or a holder with CAP_LEASE may pin it)",
            Some(libc::EAGAIN) => {
                " (over the mount's max_pins_per_user or max_pinned_bytes_per_user)"
            }
            _ => "",
        };
        return fail(format!(
            "cannot pin {} bytes {offset}..{end}: {}{hint}",
            path.display(),
            os_msg(&e)
        ));
    }
    println!(
        "pinned {} bytes {offset}..{end} ({length} bytes)",
        path.display()
    );
    let _ = std::io::stdout().flush();
    let end = hold_pin(&f, &set, hold, release_on_break);
    if end == HoldEnd::Revoked {
        println!("pin revoked");
        let _ = std::io::stdout().flush();
        // The pin is given back all the same (UNPIN answers ECANCELED for it).
        let _ = daxfs_fuse::ioctl::unpin_file(&f, offset, length);
        return fail(format!(
            "the pin of {} was revoked by a layout break (the mount's lease_break_time passed)",
            path.display()
        ));
    }
    if let Err(e) = daxfs_fuse::ioctl::unpin_file(&f, offset, length) {
        // Closing the file releases the pin anyway.
        eprintln!(
            "daxfs: unpin {}: {} (released on close)",
            path.display(),
            os_msg(&e)
        );
    }
    drop(f);
    println!("unpinned {}", path.display());
    Ok(())
}

/// Why `hold_pin` returned.
#[derive(Debug, PartialEq, Eq)]
enum HoldEnd {
    /// The time passed or a stop signal came.
    Done,
    /// A layout break asked for the pin and `--release-on-break` was given.
    Break,
    /// A layout break revoked the pin.
    Revoked,
}

/// Holds the pin through `f` until a stop signal (blocked in `set`), `timeout`, or a
/// layout break (`release_on_break`) or its revocation. Waits in poll(2) on a signalfd and
/// on POLLPRI of `f`; once a break was reported and the pin is kept, POLLPRI stays up, so
/// it looks at the pin's status every 100 ms instead. Where poll cannot be used (no
/// signalfd), it only waits for a signal or the time.
fn hold_pin(
    f: &File,
    set: &libc::sigset_t,
    timeout: Option<std::time::Duration>,
    release_on_break: bool,
) -> HoldEnd {
    use std::time::{Duration, Instant};
    // SAFETY: `set` is an initialised signal set; -1 asks for a new descriptor.
    let sfd = unsafe { libc::signalfd(-1, set, libc::SFD_CLOEXEC) };
    if sfd < 0 {
        wait_for_signal(set, timeout);
        return HoldEnd::Done;
    }
    // SAFETY: signalfd returned a new descriptor that nothing else owns.
    let sfd = unsafe { OwnedFd::from_raw_fd(sfd) };
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut break_seen = false;
    loop {
        let mut wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if wait == Some(Duration::ZERO) {
            return HoldEnd::Done;
        }
        if break_seen {
            wait = Some(wait.map_or(Duration::from_millis(100), |w| {
                w.min(Duration::from_millis(100))
            }));
        }
        let ms = wait.map_or(-1, |w| {
            libc::c_int::try_from(w.as_millis().max(1)).unwrap_or(libc::c_int::MAX)
        });
        let mut fds = [
            libc::pollfd {
                fd: sfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // A negative descriptor is skipped by poll.
                fd: if break_seen { -1 } else { f.as_raw_fd() },
                events: libc::POLLPRI,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            wait_for_signal(
                set,
                deadline.map(|d| d.saturating_duration_since(Instant::now())),
            );
            return HoldEnd::Done;
        }
        if fds[0].revents != 0 {
            return HoldEnd::Done;
        }
        if fds[1].revents & libc::POLLPRI == 0 && !break_seen {
            continue;
        }
        let Ok(st) = daxfs_fuse::ioctl::pin_status(f) else {
            continue;
        };
        if st.revoked > 0 {
            if !break_seen {
                println!("layout break requested");
            }
            return HoldEnd::Revoked;
        }
        if st.breaking > 0 && !break_seen {
            println!("layout break requested");
            let _ = std::io::stdout().flush();
            if release_on_break {
                return HoldEnd::Break;
            }
            break_seen = true;
        }
    }
}

/// Sleeps until one of the blocked stop signals arrives or `timeout` passes.
fn wait_for_signal(set: &libc::sigset_t, timeout: Option<std::time::Duration>) {
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let ts = deadline.map(|d| {
            let left = d.saturating_duration_since(std::time::Instant::now());
            libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            }
        });
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `set` is an initialised signal set, `tsp` null or pointing to `ts`
        // which outlives the call; no siginfo is asked for.
        let r = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), tsp) };
        if r > 0 {
            return;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            // EAGAIN: the time is up.
            _ => return,
        }
    }
}

/// `daxfs stats MOUNTPOINT`.
fn stats(args: &[OsString]) -> Result<(), Failure> {
    let s = match cli::parse_stats(args).map_err(|e| Failure(e, 1))? {
        Parsed::Print(text) => return say(&text),
        Parsed::Run(s) => s,
    };
    let path = s.mountpoint.as_path();
    match daxfs_fuse::ioctl::read_stats_and_transport(path) {
        Ok((st, t)) if s.json => say(&daxfs_fuse::ioctl::format_stats_json_with(&st, t)),
        Ok((s, t)) => say(&daxfs_fuse::ioctl::format_stats_with(&s, t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fail(format!("{}: {}", path.display(), os_msg(&e)))
        }
        Err(e) => match e.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => fail(format!("{}: {}", path.display(), os_msg(&e))),
            _ => fail(format!(
                "{} is not a daxfs mount ({})",
                path.display(),
                os_msg(&e)
            )),
        },
    }
}

/// `daxfs sync MOUNTPOINT`.
fn sync(args: &[OsString]) -> Result<(), Failure> {
    let s = match cli::parse_sync(args).map_err(|e| Failure(e, 1))? {
        Parsed::Print(text) => return say(&text),
        Parsed::Run(s) => s,
    };
    let path = s.mountpoint.as_path();
    match daxfs_fuse::ioctl::sync_mount(path, s.timeout) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => fail(format!(
            "{}: timed out: the follower did not catch up with its writer",
            path.display()
        )),
        Err(e) => fail(format!("{}: {}", path.display(), os_msg(&e))),
    }
}

/// `daxfs promote MOUNTPOINT`.
fn promote(args: &[OsString]) -> Result<(), Failure> {
    let p = match cli::parse_promote(args).map_err(|e| Failure(e, 1))? {
        Parsed::Print(text) => return say(&text),
        Parsed::Run(p) => p,
    };
    let path = p.mountpoint.as_path();
    match daxfs_fuse::ioctl::promote_mount(path) {
        Ok(epoch) => {
            println!(
                "{}: promoted to writer (lease epoch {epoch})",
                path.display()
            );
            Ok(())
        }
        Err(e) => match e.raw_os_error() {
            Some(libc::EBUSY) => fail(format!(
                "{}: not promoted: the writer is alive, another host took the writer role \
                 first, or this is not a follower mount (see the daemon's log)",
                path.display()
            )),
            Some(libc::EPERM) => fail(format!(
                "{}: not promoted: only root may promote a follower",
                path.display()
            )),
            Some(libc::ENOTTY) => fail(format!("{} is not a daxfs mount", path.display())),
            _ => fail(format!("{}: {}", path.display(), os_msg(&e))),
        },
    }
}

/// Prints to stdout (help, version) and succeeds.
fn say(text: &str) -> Result<(), Failure> {
    print!("{text}");
    Ok(())
}

fn looks_like_path(a: &OsStr) -> bool {
    a.as_bytes().contains(&b'/') || Path::new(a).exists()
}

/// A parsed mount command.
struct MountRequest {
    device: PathBuf,
    mountpoint: PathBuf,
    cfg: MountConfig,
    foreground: bool,
    /// mount(8)'s `-f` ("fake"): check everything, mount nothing.
    fake: bool,
}

/// Parses `DEVICE MOUNTPOINT [-o OPTS]... [-f]`; as a mount(8) helper (`helper`) also
/// `-n -s -v` (ignored), `-t TYPE` (ignored) and `-f` meaning "fake".
fn parse_mount_args(args: &[OsString], helper: bool) -> Result<MountRequest, Failure> {
    let usage = |e: String| Failure(e, 1);
    let (options, device, mountpoint, foreground, fake) = if helper {
        match cli::parse_helper(args).map_err(usage)? {
            Parsed::Run(h) => (h.options, h.device, h.mountpoint, false, h.fake),
            Parsed::Print(text) => print_and_exit(&text),
        }
    } else {
        match cli::parse_mount(args).map_err(usage)? {
            Parsed::Run(m) => (m.options, m.device, m.mountpoint, m.foreground, false),
            Parsed::Print(text) => print_and_exit(&text),
        }
    };
    let mut cfg = MountConfig::default();
    for o in &options {
        let o = o
            .to_str()
            .ok_or_else(|| Failure(format!("mount options must be UTF-8: {o:?}"), 1))?;
        cfg.apply(o).map_err(usage)?;
    }
    cfg.check().map_err(usage)?;
    // The old mount.fuse spelling `daxfs#DEVICE` for type `fuse`.
    let device = device
        .as_os_str()
        .as_bytes()
        .strip_prefix(b"daxfs#")
        .map(|d| PathBuf::from(OsStr::from_bytes(d)))
        .unwrap_or(device);
    Ok(MountRequest {
        device,
        mountpoint,
        cfg,
        foreground,
        fake,
    })
}

/// `-h`/`--help` of a mount: the help on stdout, and done.
fn print_and_exit(text: &str) -> ! {
    print!("{text}");
    let _ = std::io::stdout().flush();
    std::process::exit(0);
}

/// Checks the paths, then mounts in the foreground or through a daemon.
fn mount(mut req: MountRequest) -> Result<(), Failure> {
    req.device = std::fs::canonicalize(&req.device).or_else(|e| {
        fail(format!(
            "cannot open device {}: {}",
            req.device.display(),
            os_msg(&e)
        ))
    })?;
    let mp = &req.mountpoint;
    match std::fs::metadata(mp) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return fail(format!("mountpoint {} is not a directory", mp.display())),
        Err(e) => return fail(format!("mountpoint {}: {}", mp.display(), os_msg(&e))),
    }
    req.mountpoint = std::fs::canonicalize(mp)
        .or_else(|e| fail(format!("mountpoint {}: {}", mp.display(), os_msg(&e))))?;
    if let Some(log) = &req.cfg.log {
        // The daemon changes directory to /: anchor a relative log path here.
        if log.is_relative() {
            let cwd = std::env::current_dir().or_else(|e| {
                fail(format!(
                    "cannot resolve log={}: {}",
                    log.display(),
                    os_msg(&e)
                ))
            })?;
            req.cfg.log = Some(cwd.join(log));
        }
    }
    if req.fake {
        return Ok(());
    }
    if req.foreground {
        serve(&req, &mut None)
    } else {
        daemonise(&req)
    }
}

/// An io::Error's message without Rust's " (os error N)" suffix.
fn os_msg(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Forks; the child serves the mount and reports readiness through a pipe; the parent
/// returns success only once the child said the mount is live and it shows in mountinfo.
fn daemonise(req: &MountRequest) -> Result<(), Failure> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return fail(format!(
            "pipe: {}",
            os_msg(&std::io::Error::last_os_error())
        ));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet (nothing before this spawns one), so the child is
    // a complete copy of the process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return fail(format!(
            "fork: {}",
            os_msg(&std::io::Error::last_os_error())
        ));
    }
    if pid == 0 {
        drop(rd);
        let mut ready = Some(File::from(wr));
        let code = match daemon_setup(req).and_then(|()| serve(req, &mut ready)) {
            Ok(()) => 0,
            Err(Failure(msg, code)) => {
                log::warn!("refused: {msg}");
                match ready.take() {
                    Some(mut pipe) => {
                        let _ = pipe.write_all(format!("ERR {msg}").as_bytes());
                    }
                    // Already detached from the caller: the log is all there is.
                    None => eprintln!("daxfs: {msg}"),
                }
                code
            }
        };
        std::process::exit(code);
    }
    drop(wr);
    let mut msg = String::new();
    let _ = File::from(rd).read_to_string(&mut msg);
    if msg == "OK" {
        let fuse = |t: &str| t == "fuse" || t.starts_with("fuse.");
        if daxfs_cli::mount_at(&req.mountpoint).is_some_and(|m| fuse(&m.fstype)) {
            return Ok(());
        }
        return fail(format!(
            "the daemon reported {} as mounted but it is not in /proc/self/mountinfo",
            req.mountpoint.display()
        ));
    }
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid int to write to.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match msg.strip_prefix("ERR ") {
        Some(err) => fail(err),
        None => fail(format!(
            "the mount daemon exited before the mount was ready ({})",
            describe_status(status)
        )),
    }
}

fn describe_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

/// The daemon's own session, cwd and stdio (stdin from /dev/null, stdout/stderr to the
/// log file or /dev/null): nothing ties it to the terminal or the caller's pipes.
fn daemon_setup(req: &MountRequest) -> Result<(), Failure> {
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .or_else(|e| fail(format!("/dev/null: {}", os_msg(&e))))?;
    let out = match &req.cfg.log {
        Some(p) => File::options()
            .create(true)
            .append(true)
            .open(p)
            .or_else(|e| fail(format!("cannot open log {}: {}", p.display(), os_msg(&e))))?,
        None => {
            // Detached and no log file: records go to syslog.
            daxfs_fuse::logger::use_syslog();
            null.try_clone()
                .or_else(|e| fail(format!("/dev/null: {}", os_msg(&e))))?
        }
    };
    // SAFETY: plain syscalls on descriptors we own; dup2 onto 0/1/2 replaces the
    // inherited stdio, which nothing in this process holds a reference to.
    unsafe {
        libc::setsid();
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(out.as_raw_fd(), 2);
    }
    std::env::set_current_dir("/").or_else(|e| fail(format!("chdir /: {}", os_msg(&e))))
}

/// Opens the filesystem, mounts it, reports readiness (when `ready` holds the pipe), serves
/// until the session ends, then shuts the filesystem down.
fn serve(req: &MountRequest, ready: &mut Option<File>) -> Result<(), Failure> {
    // Before any thread exists, so every thread inherits the mask and only the signal
    // thread (sigwait) ever sees these signals.
    let sigs = block_signals()?;
    let device = &req.device;
    // Every refusal exits 1. A MountError's message starts with the device path, as
    // opened: `device` itself.
    let cannot_mount = |e: MountError| Failure(format!("cannot mount {e}"), 1);
    // Checked but not yet written to: every failure before `go_live` below (mount(2)
    // refusing the options or the mountpoint, no thread for signals) drops it, and the
    // image is left byte-identical.
    let fs = DaxFs::prepare(device, req.cfg.fs_options())
        .map(Arc::new)
        .map_err(cannot_mount)?;
    let mut adapter = FuseAdapter::new(fs.clone());
    let want_ring = req.cfg.io_uring
        && match daxfs_fuse::uring::transport::ring_usable() {
            Ok(()) => true,
            Err(e) => {
                eprintln!(
                    "daxfs: io_uring not available: io_uring_setup: {}; serving /dev/fuse",
                    os_msg(&e)
                );
                false
            }
        };
    adapter.want_io_uring(want_ring);
    let ring_slot = adapter.ring_slot();
    let on_ring = adapter.on_ring_flag();
    let notifier = adapter.notifier_slot();
    let busy_poll_slot = adapter.busy_poll_slot();
    let waiters = adapter.waiters();
    // A promotion swaps the filesystem in the adapter: unmount shuts down what is there.
    let fs_cell = adapter.fs_cell();
    let config = req.cfg.fuser_config(&device.to_string_lossy());
    let mut session = match fuser::Session::new(adapter, &req.mountpoint, &config) {
        Ok(s) => s,
        Err(e) => return fail(mount_error(&req.mountpoint, &e)),
    };
    if let Ok(mut slot) = notifier.lock() {
        *slot = Some(session.notifier());
    }
    let ours = OurMount {
        mountpoint: req.mountpoint.clone(),
        fstype: format!("fuse.{}", req.cfg.subtype),
        source: config_source(&config).into_bytes(),
    };
    spawn_signal_thread(sigs, session.unmount_callable(), ours)?;
    // The kernel mount exists and nothing has been served yet (that starts with `run`):
    // only now does the image become "mounted". On failure dropping the session
    // unmounts it again.
    fs.go_live().map_err(cannot_mount)?;
    // A follower (`-o follow`) looks for its writer's commits from now on.
    DaxFs::start_following(&fs);
    // From here on the adapter's cell holds the filesystem: a follower promoted to writer
    // must go (threads, host slot) once nothing serves it any more.
    drop(fs);
    // With io_uring granted, every request waits in the kernel until all queues have
    // registered, so they start before anyone is told the mount is ready.
    let rings = if want_ring {
        start_rings(
            &session,
            &ring_slot,
            &notifier,
            req.cfg.uring_depth,
            req.cfg.busy_poll,
            &on_ring,
        )
    } else {
        None
    };
    if let Some(mut pipe) = ready.take() {
        // The caller's exit status depends on this message; if it is gone, it has
        // already given up on us, so serving on is all that is left to do.
        let _ = pipe.write_all(b"OK");
    }
    log::info!(
        "mounted {} on {} ({})",
        device.display(),
        req.mountpoint.display(),
        if req.cfg.read_only { "ro" } else { "rw" }
    );
    // Over the ring /dev/fuse carries only forgets and interrupts: nothing to poll for.
    let window = if rings.is_some() {
        std::time::Duration::ZERO
    } else {
        req.cfg.busy_poll
    };
    let busy_poll = start_busy_poll(&session, window, &busy_poll_slot);
    spawn_memory_trimmer();
    let served = session.run();
    if let Some(r) = rings {
        r.stop(std::time::Duration::from_secs(5));
    }
    if let Some((poll, governor)) = busy_poll {
        poll.stop();
        let _ = governor.join();
    }
    // Requests still waiting for pins (a connection aborted under them) end within
    // layout_timeout; they must not change the filesystem after its clean shutdown.
    let deadline = std::time::Instant::now() + req.cfg.layout_timeout + WAITERS_GRACE;
    if !waiters.wait_idle(deadline) {
        eprintln!("daxfs: requests still waiting for pins at shutdown");
    }
    let fs = fs_cell.read().unwrap_or_else(|e| e.into_inner()).clone();
    let shut = fs.shutdown();
    log::info!(
        "unmounted {} from {}",
        device.display(),
        req.mountpoint.display()
    );
    match (served, shut) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), _) => fail(format!(
            "FUSE session on {} failed: {e}",
            req.mountpoint.display()
        )),
        (Ok(()), Err(e)) => fail(format!("shutdown of {} failed: {e}", device.display())),
    }
}

/// How often the daemon looks at the heap it holds free, and how much free heap it
/// keeps before giving it back to the kernel.
const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
const TRIM_ABOVE: usize = 16 << 20;

/// Bounds the memory a daemon keeps after deletes. The core frees what a deleted inode
/// used (inode, extent map, directory index), but glibc keeps freed heap in its arenas
/// (one per worker thread, each fragmented differently), so the daemon's anonymous
/// memory stayed at its high-water mark: 200,000 files created and deleted left
/// 120 MB, creeping up with each cycle as other arenas grew. Every TRIM_INTERVAL a
/// thread reads how much heap is free and, above TRIM_ABOVE, returns it with
/// malloc_trim. The ceiling after deletes is then about TRIM_ABOVE plus what
/// TRIM_INTERVAL of churn frees.
fn spawn_memory_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let _ = std::thread::Builder::new()
            .name("daxfs-trim".into())
            .spawn(|| loop {
                std::thread::sleep(TRIM_INTERVAL);
                // SAFETY: mallinfo2 and malloc_trim have no preconditions; they lock the
                // allocator's arenas themselves.
                let free = unsafe { libc::mallinfo2() }.fordblks;
                if free > TRIM_ABOVE {
                    // SAFETY: as above.
                    unsafe { libc::malloc_trim(0) };
                }
            });
    }
}

/// What a request waiting for pins may take beyond layout_timeout to finish (its commit).
const WAITERS_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// `-o io_uring`: starts the ring queues if INIT granted FUSE_OVER_IO_URING; otherwise
/// (or if they cannot register) says so once and leaves /dev/fuse serving everything.
fn start_rings<FS: fuser::Filesystem>(
    session: &fuser::Session<FS>,
    slot: &daxfs_fuse::adapter::RingSlot,
    notifier: &daxfs_fuse::adapter::NotifierSlot,
    depth: u16,
    poll: std::time::Duration,
    on_ring: &std::sync::atomic::AtomicBool,
) -> Option<daxfs_fuse::uring::transport::Rings> {
    let started = match slot.get() {
        None => Err("INIT did not run".to_string()),
        Some(Err(why)) => Err(why.clone()),
        Some(Ok(grant)) => daxfs_fuse::uring::transport::start(
            session.as_fd(),
            grant,
            notifier.clone(),
            depth,
            poll,
        )
        .map_err(|e| format!("REGISTER: {}", os_msg(&e))),
    };
    match started {
        Ok(r) => {
            log::info!("serving over io_uring ({depth} entries per CPU)");
            Some(r)
        }
        Err(why) => {
            on_ring.store(false, std::sync::atomic::Ordering::Relaxed);
            eprintln!("daxfs: io_uring not available: {why}; serving /dev/fuse");
            None
        }
    }
}

/// Starts busy polling of the session's device (`busy_poll=`); without it (zero, or if
/// it cannot start) workers sleep in read(2) as usual.
fn start_busy_poll<FS: fuser::Filesystem>(
    session: &fuser::Session<FS>,
    window: std::time::Duration,
    slot: &daxfs_fuse::adapter::BusyPollSlot,
) -> Option<(Arc<BusyPoll>, std::thread::JoinHandle<()>)> {
    if window.is_zero() {
        return None;
    }
    let started = BusyPoll::new(session.as_fd(), window).and_then(|p| {
        let governor = p.spawn_governor()?;
        Ok((p, governor))
    });
    match started {
        Ok((p, governor)) => {
            let _ = slot.set(p.clone());
            Some((p, governor))
        }
        Err(e) => {
            eprintln!("daxfs: busy polling not started ({e}); workers sleep between requests");
            None
        }
    }
}

/// The source (fsname) a fuser configuration mounts with.
fn config_source(config: &fuser::Config) -> String {
    config
        .mount_options
        .iter()
        .find_map(|o| match o {
            fuser::MountOption::FSName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// A Session::new error in the words a user needs.
fn mount_error(mountpoint: &Path, e: &std::io::Error) -> String {
    let at = mountpoint.display();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if e.kind() == std::io::ErrorKind::NotFound {
        if !Path::new("/dev/fuse").exists() {
            return format!("cannot mount on {at}: /dev/fuse does not exist (try 'modprobe fuse')");
        }
        if !root {
            return format!(
                "cannot mount on {at}: not running as root and fusermount3 was not found \
                 (install fuse3)"
            );
        }
    }
    if !root && e.kind() == std::io::ErrorKind::PermissionDenied {
        // fuser opens /dev/fuse itself and turns to fusermount3 only when mount(2) says
        // EPERM, so a /dev/fuse without rw for this user fails here.
        let dev_fuse = CString::new("/dev/fuse").ok();
        // SAFETY: the path is a valid NUL-terminated string.
        let usable = dev_fuse
            .is_some_and(|p| unsafe { libc::access(p.as_ptr(), libc::R_OK | libc::W_OK) } == 0);
        if !usable {
            return format!(
                "cannot mount on {at}: /dev/fuse is not readable and writable by this user \
                 (run as root, or make /dev/fuse mode 0666 as distributions do)"
            );
        }
    }
    let msg = e.to_string();
    format!("cannot mount on {at}: {}", msg.trim())
}

const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn block_signals() -> Result<libc::sigset_t, Failure> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any other use,
    // and pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            let e = std::io::Error::from_raw_os_error(rc);
            return fail(format!("cannot block signals: {}", os_msg(&e)));
        }
        Ok(set)
    }
}

/// What identifies our mount in /proc/self/mountinfo.
struct OurMount {
    mountpoint: PathBuf,
    fstype: String,
    source: Vec<u8>,
}

impl OurMount {
    fn still_mounted(&self) -> bool {
        daxfs_cli::mount_at(&self.mountpoint).is_some_and(|m| {
            m.fstype == self.fstype && m.source.as_os_str().as_bytes() == self.source.as_slice()
        })
    }
}

/// Waits for SIGINT/SIGTERM/SIGHUP and unmounts, which ends the session loop.
///
/// fuser's unmount is tried first; it is not always final: with `auto_unmount` it only
/// closes fusermount3's socket (and fusermount3 then unmounts only a dead connection), and
/// a busy mount stays. So if our mount is still there afterwards it is unmounted here,
/// lazily when busy (as `fusermount3 -u -z`): it leaves the namespace at once and the
/// session ends when its last user lets go.
fn spawn_signal_thread(
    set: libc::sigset_t,
    mut unmounter: fuser::SessionUnmounter,
    ours: OurMount,
) -> Result<(), Failure> {
    let spawned = std::thread::Builder::new()
        .name("daxfs-signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: set was initialised by block_signals; sig is a valid int.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            if let Err(e) = unmounter.unmount() {
                eprintln!("daxfs: unmount of {}: {e}", ours.mountpoint.display());
            }
            if ours.still_mounted() {
                unmount_path(&ours.mountpoint);
            }
        });
    match spawned {
        Ok(_) => Ok(()),
        Err(e) => fail(format!("cannot start the signal thread: {e}")),
    }
}

/// umount, lazily if busy; through fusermount3 when not privileged.
fn unmount_path(mountpoint: &Path) {
    let Ok(c) = CString::new(mountpoint.as_os_str().as_bytes()) else {
        return;
    };
    let last_errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return;
    }
    let mut errno = last_errno();
    if errno == libc::EBUSY {
        eprintln!(
            "daxfs: {} is busy; detaching it lazily",
            mountpoint.display()
        );
        // SAFETY: as above.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            return;
        }
        errno = last_errno();
    }
    if errno == libc::EPERM {
        let r = std::process::Command::new("fusermount3")
            .args(["-u", "-z", "--"])
            .arg(mountpoint)
            .status();
        if matches!(r, Ok(s) if s.success()) {
            return;
        }
    }
    eprintln!(
        "daxfs: cannot unmount {}: {}",
        mountpoint.display(),
        std::io::Error::from_raw_os_error(errno)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    fn parsed(a: &[&str], helper: bool) -> MountRequest {
        match parse_mount_args(&args(a), helper) {
            Ok(r) => r,
            Err(Failure(m, _)) => panic!("{a:?}: {m}"),
        }
    }

    fn failure(a: &[&str], helper: bool) -> String {
        match parse_mount_args(&args(a), helper) {
            Ok(_) => panic!("{a:?} should fail"),
            Err(Failure(m, code)) => {
                assert_eq!(code, 1);
                m
            }
        }
    }

    #[test]
    fn mount_takes_device_mountpoint_options_and_foreground_in_any_order() {
        let r = parsed(&["-o", "ro", "/dev/x", "-f", "/mnt", "-odax=never"], false);
        assert_eq!(r.device, PathBuf::from("/dev/x"));
        assert_eq!(r.mountpoint, PathBuf::from("/mnt"));
        assert!(r.cfg.read_only && r.foreground && !r.fake);
        assert_eq!(r.cfg.dax, daxfs::DaxMode::Never);
    }

    #[test]
    fn helper_syntax_ignores_n_s_v_and_type_and_treats_f_as_fake() {
        let r = parsed(
            &[
                "/dev/x",
                "/mnt",
                "-n",
                "-s",
                "-v",
                "-t",
                "fuse.daxfs",
                "-o",
                "rw",
                "-f",
            ],
            true,
        );
        assert!(r.fake && !r.foreground);
        assert_eq!(r.mountpoint, PathBuf::from("/mnt"));
    }

    #[test]
    fn mount_fuse3_style_options_are_accepted() {
        // What mount.fuse3 passes as root for `-o rw,dax=never,noatime,nofail,x-foo`.
        let r = parsed(
            &[
                "/dev/x",
                "/mnt",
                "-o",
                "rw,dax=never,noatime,x-foo,dev,suid",
            ],
            false,
        );
        assert_eq!(r.cfg.dev, Some(true));
        assert_eq!(r.cfg.suid, Some(true));
    }

    #[test]
    fn old_fuse_source_spelling_is_stripped() {
        assert_eq!(
            parsed(&["daxfs#/dev/x", "/mnt"], true).device,
            PathBuf::from("/dev/x")
        );
    }

    #[test]
    fn missing_or_extra_paths_and_bad_options_fail_with_one_line() {
        assert!(failure(&["/dev/x"], false).contains("DEVICE and a MOUNTPOINT"));
        assert!(failure(&["/a", "/b", "/c"], false).contains("too many"));
        assert!(failure(&["/a", "/b", "-o"], false).contains("needs a value"));
        assert!(failure(&["/a", "/b", "-o", "bogus"], false).contains("'bogus'"));
        assert!(failure(&["/a", "/b", "-x"], false).contains("unknown option '-x'"));
        assert!(failure(&["/a", "/b", "-n"], false).contains("unknown option '-n'"));
        assert!(failure(&["/a", "/b", "-N", "/proc/1/ns/mnt"], true).contains("namespaces"));
    }

    #[test]
    fn unknown_words_are_commands_but_paths_are_implicit_mounts() {
        assert!(looks_like_path(OsStr::new("/dev/shm/img")));
        assert!(looks_like_path(OsStr::new("./img")));
        assert!(!looks_like_path(OsStr::new("no-such-subcommand")));
    }

    #[test]
    fn pin_and_stats_without_arguments_fail_with_usage() {
        for cmd in ["pin", "stats"] {
            match run("daxfs", &args(&[cmd])) {
                Err(Failure(m, 1)) => assert!(m.contains(&format!("daxfs help {cmd}")), "{m}"),
                _ => panic!("{cmd} without arguments should fail"),
            }
        }
    }

    #[test]
    fn pin_ranges_past_the_largest_file_offset_or_empty_are_refused() {
        assert!(pin_range_end(u64::MAX, 1).is_err());
        assert!(pin_range_end(1, u64::MAX).is_err());
        assert!(pin_range_end(i64::MAX as u64, 1).is_err());
        assert!(pin_range_end(0, 0).is_err());
        assert_eq!(pin_range_end(4096, 8192).ok(), Some(12288));
        assert_eq!(
            pin_range_end(i64::MAX as u64 - 1, 1).ok(),
            Some(i64::MAX as u64)
        );
    }

    #[test]
    fn pin_sizes_take_binary_suffixes_and_hex() {
        let size = |s: &str| parse_size("X", OsStr::new(s)).ok();
        assert_eq!(size("4096"), Some(4096));
        assert_eq!(size("1m"), Some(1 << 20));
        assert_eq!(size("2K"), Some(2048));
        assert_eq!(size("0x10"), Some(16));
        assert_eq!(size("1x"), None);
        assert_eq!(size("16777216t"), None);
    }

    #[test]
    fn stats_of_a_path_that_is_not_daxfs_is_refused() {
        match run("daxfs", &args(&["stats", "/"])) {
            Err(Failure(m, 1)) => assert!(m.contains("not a daxfs mount"), "{m}"),
            _ => panic!("stats of / accepted"),
        }
    }

    #[test]
    fn mount_rejects_a_missing_device_and_a_non_directory_mountpoint() {
        match mount(parsed(&["/nonexistent/dev", "/"], false)) {
            Err(Failure(m, 1)) => assert!(m.contains("cannot open device /nonexistent/dev"), "{m}"),
            _ => panic!("missing device accepted"),
        }
        match mount(parsed(&["/proc/self/exe", "/proc/self/exe"], false)) {
            Err(Failure(m, 1)) => assert!(m.contains("is not a directory"), "{m}"),
            _ => panic!("file mountpoint accepted"),
        }
    }
}
