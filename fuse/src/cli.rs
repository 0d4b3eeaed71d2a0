//! The command line of `daxfs`: a clap (derive) definition of its commands (mount, pin,
//! stats, help), which `daxfs-man` also renders into the man pages and shell
//! completions, the mount(8) helper syntax (`mount.daxfs`), and the parses with the
//! command's own messages (clap's errors are mapped to them; every usage error exits
//! 1, as before). The `-o` values are not interpreted here: that is
//! [`crate::mount_options`]' job.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand};
use daxfs_cli::clap_error::{as_typed, first_line};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

const ABOUT: &str = "\
Mounts a daxfs device (device-DAX, fsdax block device or emulated pmem file) through
FUSE; holds pins on file ranges; shows a mount's counters.";

const USAGE: &str = "\
daxfs mount DEVICE MOUNTPOINT [-o OPTIONS] [-f]
       daxfs DEVICE MOUNTPOINT [-o OPTIONS] [-f]
       daxfs pin FILE OFFSET LENGTH [--hold SECONDS] [--release-on-break]
       daxfs stats MOUNTPOINT [--json]
       daxfs help [mount|pin|stats] | --help | --version";

const MOUNT_ABOUT: &str = "\
Mounts the daxfs on DEVICE (a /dev/daxX.Y, a /dev/pmemN or an emulated pmem file) at
MOUNTPOINT. Returns once the mount is live and serves it from a background process;
-f stays in the foreground. 'umount MOUNTPOINT', 'fusermount3 -u MOUNTPOINT', SIGINT and
SIGTERM unmount cleanly.";

/// Every option `-o` takes ([`crate::mount_options`] parses them), with its meaning.
/// Shown by `daxfs mount --help`, `daxfs help mount`, `daxfs --help` and in daxfs(8),
/// whose generator reads its layout: a heading line, then one item per option (names
/// in the first 25 columns, or the whole line when longer; the meaning from column
/// 25, continued on lines indented 25), a blank line, then the mount(8) notes.
pub const MOUNT_OPTIONS_HELP: &str = "\
Options (-o, comma-separated, may be repeated):
  ro, rw                 read-only / read-write (default rw)
  dax=always|never|inode always: no kernel page cache for file data (default);
                         never: the kernel may cache file data (writeback cache);
                         inode: per file, from FS_XFLAG_DAX (inherited from the directory)
  threads=N              FUSE worker threads (default: number of cores)
  busy_poll=USECS        workers, and io_uring queue threads, look for requests this
                         long after the last one before they sleep (default 1000; 0:
                         always sleep)
  io_uring               serve requests over FUSE io_uring queues, one per CPU (Linux
                         6.14+, fuse enable_uring=Y at mount time); /dev/fuse if not
                         granted (default off)
  uring_depth=N          requests in flight per CPU queue with io_uring (default 72:
                         more than the requests that may wait for pins)
  lazytime, nolazytime   lazytime: an overwrite leaves mtime/ctime in memory (stat shows
                         them at once) until fsync, the next metadata change, commit=
                         or unmount makes them durable; nolazytime: every write commits
                         them (default nolazytime)
  commit=SECS            longest time lazytime keeps timestamps in memory only
                         (default 5)
  layout_timeout=SECS    how long a truncate waits for pinned ranges (default 30)
  lease_break_time=SECS  how long a pin holder has to let go before a truncate that
                         needs its range revokes the pin (default 10; not for pins of
                         CAP_SYS_ADMIN holders, which wait for layout_timeout)
  heartbeat_ms=MS        how often the mount bumps its heartbeat in the device's host
                         table (default 100)
  host_timeout_ms=MS     a host whose heartbeat stands still this long is presumed
                         gone: its writer lease may be taken over, a follower no
                         longer holds freed blocks back (default 2000; more than
                         twice heartbeat_ms)
  max_pins_per_user=N    pins one user may hold at once (default 4096; EAGAIN past it)
  max_pinned_bytes_per_user=BYTES
                         bytes one user may keep pinned (k/m/g/t suffixes; default
                         the filesystem's size)
  allow_other            let every user use the mount (permission checks still apply)
  allow_root             let root use the mount too
  default_permissions    kernel permission checks (default on);
  nodefault_permissions  turns them off
  fsname=NAME            source shown in /proc/mounts (default: the device path)
  subtype=NAME           type shown as fuse.NAME (default daxfs)
  log=FILE               where the background process writes its messages
  auto_unmount           unmount when the daemon dies (needs allow_other or allow_root)
  dev, nodev, suid, nosuid, exec, noexec, atime, noatime, relatime, sync, async, dirsync
                         the usual mount flags; defaults as mount(8) gives them: dev,
                         suid, exec when mounted by root; nodev, nosuid (FUSE's) for
                         other users
  defaults, _netdev, nofail, auto, noauto, user, users, nouser, owner, group, x-*, comment=
                         fstab-only options, ignored

mount(8) and fstab:
  ln -s \"$(command -v daxfs)\" /sbin/mount.fuse.daxfs
  mount -t fuse.daxfs /dev/shm/pmem.img /mnt/pmem -o dax=never
  fstab: /dev/shm/pmem.img  /mnt/pmem  fuse.daxfs  dax=always,nofail  0 0
Without that symlink, mount(8) falls back to fuse3's mount.fuse3, which runs
'daxfs DEVICE MOUNTPOINT -o OPTIONS' found on mount's PATH (/usr/local/bin, /usr/bin, ...).
Invoked as mount.daxfs or mount.fuse.daxfs, daxfs takes mount(8)'s helper syntax
DEVICE MOUNTPOINT [-sfnv] [-o OPTIONS] [-t TYPE], where -f is mount(8)'s fake mount.";

/// Every option name [`MOUNT_OPTIONS_HELP`] documents, as `-o` would spell it (with a
/// value where it needs one): the tests check that the parser accepts each and that
/// the help and the man page name each.
pub const MOUNT_OPTION_EXAMPLES: &[&str] = &[
    "ro",
    "rw",
    "dax=always",
    "dax=never",
    "dax=inode",
    "threads=2",
    "busy_poll=0",
    "io_uring",
    "uring_depth=8",
    "lazytime",
    "nolazytime",
    "commit=5",
    "layout_timeout=30",
    "lease_break_time=10",
    "heartbeat_ms=100",
    "host_timeout_ms=2000",
    "max_pins_per_user=4096",
    "max_pinned_bytes_per_user=1g",
    "allow_other",
    "allow_root",
    "default_permissions",
    "nodefault_permissions",
    "fsname=pmem",
    "subtype=daxfs",
    "log=/dev/null",
    "auto_unmount,allow_other",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "sync",
    "async",
    "dirsync",
    "defaults",
    "_netdev",
    "nofail",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "x-systemd.automount",
    "comment=x",
];

const PIN_ABOUT: &str = "\
Pins LENGTH bytes at OFFSET of FILE (on a daxfs mount) with DAXFS_IOC_PIN: the blocks
holding them stay in the file, and a truncate, hole punch or collapse that would take
them waits. Prints one line once pinned, holds the pin for SECONDS (default: until
SIGINT, SIGTERM or SIGHUP), then unpins and exits 0. A killed holder's pin is released
when its file is closed.

Only the file's owner (or a holder with CAP_LEASE) may pin it. When a truncate or punch
meets the pin, this prints 'layout break requested'; with --release-on-break it then
unpins and exits 0, else it keeps the pin. A pin taken without CAP_SYS_ADMIN is revoked
once the mount's lease_break_time has passed: this prints 'pin revoked' and exits 1. A
CAP_SYS_ADMIN holder's pin holds the operation off until layout_timeout (EBUSY).

OFFSET and LENGTH take k, m, g, t suffixes (powers of 1024). The range must be inside
the file and allocated (ENXIO on a hole: fallocate it first).";

const STATS_ABOUT: &str = "\
Prints the counters of the daxfs mounted at MOUNTPOINT (DAXFS_IOC_STATS), one
'name value' per line: blocks by reference count (free / cached / pinned) and the
allocator's free count, long-term pins taken / released / active, block references
taken / dropped, layout breaks, lease breaks, waits and their total time, timeouts,
refcount violations, journal commits, and 'balanced' (nothing pinned, every reference
dropped, census = allocator, no violation).

--json prints one JSON object instead: the same names (wait_ns, integer nanoseconds,
in place of wait_seconds), integers, and balanced as true/false. The names are stable.";

const SYNC_ABOUT: &str = "\
Makes what the daxfs mounted at MOUNTPOINT shows current. On a follower (mounted
with -o follow on another host while a writer is live) it waits until the follower
has applied every transaction the writer had committed when it was called, at most
--timeout seconds (default 30; the daemon caps a wait at 60), and prints nothing;
it fails with 'timed out' when the follower could not catch up in time. On a writer
or a plain mount it is syncfs(2).";

const PROMOTE_ABOUT: &str = "\
Makes the follower mounted at MOUNTPOINT (-o follow) the writer of its device, when
the writer's heartbeat has stopped (its host crashed, its daemon was killed): the
daemon watches the writer's lease for the host timeout (host_timeout_ms=), replays the
journal as a recovery mount would, takes the lease (the next epoch: a writer that comes
back finds itself replaced and writes nothing more) and serves the mount read-write
from then on. Root only. Refused while the writer heartbeats, when another follower took
the role first, and on a mount that is not a follower; the mount then stays as it was.";

/// `daxfs`: its commands.
#[derive(Debug, Parser)]
#[command(
    name = "daxfs",
    bin_name = "daxfs",
    version,
    about = ABOUT,
    override_usage = USAGE,
    after_long_help = MOUNT_OPTIONS_HELP,
    disable_help_flag = true,
    disable_version_flag = true
)]
pub struct Cli {
    /// show this help (-h: a summary)
    #[arg(short = 'h', long, action = clap::ArgAction::Help, global = true)]
    help: (),
    /// show the version
    #[arg(short = 'V', long, action = clap::ArgAction::Version)]
    version: (),
    #[command(subcommand)]
    pub command: Cmd,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// mount a daxfs device through FUSE (see 'daxfs help mount')
    #[command(
        long_about = MOUNT_ABOUT,
        override_usage = "daxfs mount DEVICE MOUNTPOINT [-o OPTIONS] [-f]",
        after_help = MOUNT_OPTIONS_HELP
    )]
    Mount(MountArgs),
    /// hold a pin on a file range (see 'daxfs help pin')
    #[command(
        long_about = PIN_ABOUT,
        override_usage = "daxfs pin FILE OFFSET LENGTH [--hold SECONDS] [--release-on-break]"
    )]
    Pin(PinArgs),
    /// show the filesystem's block and pin counters (see 'daxfs help stats')
    #[command(long_about = STATS_ABOUT, override_usage = "daxfs stats MOUNTPOINT [--json]")]
    Stats(StatsArgs),
    /// wait until a follower has caught up with its writer; syncfs elsewhere (see 'daxfs help sync')
    #[command(long_about = SYNC_ABOUT, override_usage = "daxfs sync MOUNTPOINT [--timeout SECONDS]")]
    Sync(SyncArgs),
    /// take the writer role on a follower whose writer is gone (see 'daxfs help promote')
    #[command(long_about = PROMOTE_ABOUT, override_usage = "daxfs promote MOUNTPOINT")]
    Promote(PromoteArgs),
}

/// `daxfs promote`.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// where the follower is mounted
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
}

/// `daxfs sync`.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// where a daxfs is mounted
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
    /// the longest a follower waits to catch up
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_hold)]
    pub timeout: Duration,
}

/// `daxfs mount` (and the implicit `daxfs DEVICE MOUNTPOINT`).
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct MountArgs {
    /// mount options, comma-separated (see below); may be repeated, later ones win
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append, allow_hyphen_values = true)]
    pub options: Vec<OsString>,
    /// stay in the foreground (serve the mount from this process)
    #[arg(short = 'f')]
    pub foreground: bool,
    /// the device-DAX, fsdax block device or emulated pmem file
    #[arg(value_name = "DEVICE")]
    pub device: PathBuf,
    /// the directory to mount on
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
}

/// `daxfs pin`.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct PinArgs {
    /// a file on a daxfs mount
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// where the range starts (k, m, g, t suffixes)
    #[arg(value_name = "OFFSET")]
    pub offset: OsString,
    /// how long the range is (k, m, g, t suffixes)
    #[arg(value_name = "LENGTH")]
    pub length: OsString,
    /// hold the pin this long (default: until SIGINT, SIGTERM or SIGHUP)
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true, value_parser = parse_hold)]
    pub hold: Option<Duration>,
    /// unpin and exit 0 once a layout break asks for the range
    #[arg(long)]
    pub release_on_break: bool,
}

/// `daxfs stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// where a daxfs is mounted
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
    /// print one JSON object (stable field names) instead of 'name value' lines
    #[arg(long)]
    pub json: bool,
}

/// The mount(8) helper syntax, as `mount.daxfs` / `mount.fuse.daxfs`.
#[derive(Debug, Parser)]
#[command(
    name = "mount.daxfs",
    bin_name = "mount.fuse.daxfs",
    version,
    about = "mount(8)'s helper for fuse.daxfs",
    long_about = MOUNT_ABOUT,
    override_usage = "mount.fuse.daxfs DEVICE MOUNTPOINT [-sfnv] [-o OPTIONS] [-t TYPE]",
    after_help = MOUNT_OPTIONS_HELP,
    args_override_self = true
)]
pub struct HelperArgs {
    /// mount options, comma-separated; may be repeated, later ones win
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append, allow_hyphen_values = true)]
    pub options: Vec<OsString>,
    /// fake: check everything, mount nothing
    #[arg(short = 'f')]
    pub fake: bool,
    /// ignored (no mtab to skip)
    #[arg(short = 'n')]
    no_mtab: bool,
    /// ignored (sloppy: nothing is refused for it)
    #[arg(short = 's')]
    sloppy: bool,
    /// ignored (verbose)
    #[arg(short = 'v')]
    verbose: bool,
    /// the filesystem type mount(8) names (ignored)
    #[arg(short = 't', value_name = "TYPE", num_args = 0..=1)]
    fstype: Option<String>,
    /// a mount namespace: not supported
    #[arg(short = 'N', value_name = "NS", num_args = 0..=1, allow_hyphen_values = true)]
    pub namespace: Option<Option<OsString>>,
    #[arg(value_name = "DEVICE")]
    pub device: PathBuf,
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
}

/// `--hold SECONDS`: finite, not negative, under 1e9.
fn parse_hold(v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("invalid --hold '{v}'"))
}

/// The clap command of `daxfs` (for `daxfs-man` and the help texts).
pub fn command() -> clap::Command {
    Cli::command()
}

/// The clap command of the mount(8) helper syntax.
pub fn helper_command() -> clap::Command {
    HelperArgs::command()
}

/// What `daxfs` alone prints (on stderr, then exit 1).
pub fn usage() -> String {
    command().render_help().to_string()
}

/// `daxfs help [COMMAND]`: the long help, `None` for the commands' overview; `None`
/// back for an unknown command.
pub fn help(sub: Option<&str>) -> Option<String> {
    let mut cmd = command();
    match sub {
        None => Some(cmd.render_long_help().to_string()),
        Some(name) => {
            let name = name.to_string();
            cmd.build();
            let sub = cmd.find_subcommand_mut(&name)?;
            Some(sub.render_long_help().to_string())
        }
    }
}

/// A parse: a command to run, or text to print on stdout (help, version) before
/// exiting 0.
#[derive(Debug)]
pub enum Parsed<T> {
    Run(T),
    Print(String),
}

/// Which command's words a usage error is put in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Words {
    Top,
    Mount,
    Pin,
    Stats,
    Sync,
    Promote,
}

/// `daxfs -h | --help | -V | --version` (what else starts with a dash is refused
/// before clap sees it, in the words `daxfs` has always used).
pub fn parse_top(args: &[OsString]) -> Result<String, String> {
    let argv = std::iter::once(OsString::from("daxfs")).chain(args.iter().cloned());
    match Cli::try_parse_from(argv) {
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            Ok(e.render().to_string())
        }
        Err(e) => Err(usage_message(&e, args, Words::Top)),
        Ok(_) => Err("unexpected arguments (see 'daxfs --help')".into()),
    }
}

/// Parses `daxfs NAME ARGS...` and hands back the command.
fn parse_sub(name: &str, args: &[OsString], words: Words) -> Result<Parsed<Cmd>, String> {
    let argv = ["daxfs", name]
        .into_iter()
        .map(OsString::from)
        .chain(args.iter().cloned());
    match Cli::try_parse_from(argv) {
        Ok(cli) => Ok(Parsed::Run(cli.command)),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            Ok(Parsed::Print(e.render().to_string()))
        }
        Err(e) => Err(usage_message(&e, args, words)),
    }
}

/// `daxfs mount ARGS...` (the arguments after `mount`).
pub fn parse_mount(args: &[OsString]) -> Result<Parsed<MountArgs>, String> {
    match parse_sub("mount", args, Words::Mount)? {
        Parsed::Run(Cmd::Mount(m)) => Ok(Parsed::Run(m)),
        Parsed::Print(t) => Ok(Parsed::Print(t)),
        Parsed::Run(_) => Err("not a mount command".into()),
    }
}

/// `daxfs pin ARGS...`.
pub fn parse_pin(args: &[OsString]) -> Result<Parsed<PinArgs>, String> {
    match parse_sub("pin", args, Words::Pin)? {
        Parsed::Run(Cmd::Pin(p)) => Ok(Parsed::Run(p)),
        Parsed::Print(t) => Ok(Parsed::Print(t)),
        Parsed::Run(_) => Err("not a pin command".into()),
    }
}

/// `daxfs stats ARGS...`.
pub fn parse_stats(args: &[OsString]) -> Result<Parsed<StatsArgs>, String> {
    match parse_sub("stats", args, Words::Stats)? {
        Parsed::Run(Cmd::Stats(s)) => Ok(Parsed::Run(s)),
        Parsed::Print(t) => Ok(Parsed::Print(t)),
        Parsed::Run(_) => Err("not a stats command".into()),
    }
}

/// `daxfs sync ARGS...`.
pub fn parse_sync(args: &[OsString]) -> Result<Parsed<SyncArgs>, String> {
    match parse_sub("sync", args, Words::Sync)? {
        Parsed::Run(Cmd::Sync(s)) => Ok(Parsed::Run(s)),
        Parsed::Print(t) => Ok(Parsed::Print(t)),
        Parsed::Run(_) => Err("not a sync command".into()),
    }
}

/// `daxfs promote ARGS...`.
pub fn parse_promote(args: &[OsString]) -> Result<Parsed<PromoteArgs>, String> {
    match parse_sub("promote", args, Words::Promote)? {
        Parsed::Run(Cmd::Promote(p)) => Ok(Parsed::Run(p)),
        Parsed::Print(t) => Ok(Parsed::Print(t)),
        Parsed::Run(_) => Err("not a promote command".into()),
    }
}

/// mount(8)'s helper syntax (the arguments after the program name).
pub fn parse_helper(args: &[OsString]) -> Result<Parsed<HelperArgs>, String> {
    // -N refuses the whole line, whatever else is wrong with it.
    if args.iter().any(|a| a == "-N") {
        return Err("mount namespaces (-N) are not supported".into());
    }
    let argv = std::iter::once(OsString::from("mount.daxfs")).chain(args.iter().cloned());
    match HelperArgs::try_parse_from(argv) {
        Ok(h) if h.namespace.is_some() => Err("mount namespaces (-N) are not supported".into()),
        Ok(h) => Ok(Parsed::Run(h)),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            Ok(Parsed::Print(e.render().to_string()))
        }
        Err(e) => Err(usage_message(&e, args, Words::Mount)),
    }
}

/// clap's error in the words `daxfs` has always used.
fn usage_message(e: &clap::Error, args: &[OsString], words: Words) -> String {
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let see = match words {
        Words::Top => "see 'daxfs --help'",
        Words::Mount => "see 'daxfs help mount'",
        Words::Pin => "see 'daxfs help pin'",
        Words::Stats => "see 'daxfs help stats'",
        Words::Sync => "see 'daxfs help sync'",
        Words::Promote => "see 'daxfs help promote'",
    };
    let is_option = arg.starts_with('-') && arg != "-";
    match (e.kind(), words) {
        (ErrorKind::ValueValidation, _) => match std::error::Error::source(e) {
            Some(inner) => inner.to_string(),
            None => first_line(e),
        },
        (ErrorKind::UnknownArgument, _) if is_option => {
            let typed: Vec<String> = args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            format!("unknown option '{}' ({see})", as_typed(&arg, &typed))
        }
        (ErrorKind::InvalidValue | ErrorKind::NoEquals, _) => {
            let name = arg.split(' ').next().unwrap_or_default();
            match name {
                "--hold" => "option '--hold' needs SECONDS".to_string(),
                _ => format!("option '{name}' needs a value"),
            }
        }
        (ErrorKind::MissingRequiredArgument, Words::Mount) => {
            format!("mount needs a DEVICE and a MOUNTPOINT ({see})")
        }
        (ErrorKind::UnknownArgument, Words::Mount) => format!("too many arguments ({see})"),
        (ErrorKind::MissingRequiredArgument | ErrorKind::UnknownArgument, Words::Pin) => {
            format!("pin needs FILE OFFSET LENGTH ({see})")
        }
        (ErrorKind::MissingRequiredArgument | ErrorKind::UnknownArgument, Words::Stats) => {
            format!("stats needs one MOUNTPOINT ({see})")
        }
        (ErrorKind::MissingRequiredArgument | ErrorKind::UnknownArgument, Words::Sync) => {
            format!("sync needs one MOUNTPOINT ({see})")
        }
        (ErrorKind::MissingRequiredArgument | ErrorKind::UnknownArgument, Words::Promote) => {
            format!("promote needs one MOUNTPOINT ({see})")
        }
        (ErrorKind::InvalidUtf8, _) => "arguments must be UTF-8".to_string(),
        _ => format!("{} ({see})", first_line(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount_options::MountConfig;

    fn os(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    fn mount_ok(a: &[&str]) -> MountArgs {
        match parse_mount(&os(a)) {
            Ok(Parsed::Run(m)) => m,
            other => panic!("{a:?}: {other:?}"),
        }
    }

    #[test]
    fn mount_options_keep_their_order_attached_or_not() {
        let m = mount_ok(&[
            "-o",
            "ro",
            "/dev/x",
            "-f",
            "/mnt",
            "-odax=never",
            "-o",
            "-weird",
        ]);
        assert_eq!(m.options, os(&["ro", "dax=never", "-weird"]));
        assert!(m.foreground);
        assert_eq!(
            (m.device, m.mountpoint),
            (PathBuf::from("/dev/x"), PathBuf::from("/mnt"))
        );
    }

    #[test]
    fn pin_takes_three_words_and_a_hold_in_seconds() {
        let Ok(Parsed::Run(p)) = parse_pin(&os(&["f", "4k", "1m", "--hold", "1.5"])) else {
            panic!("pin parse failed")
        };
        assert_eq!((p.offset, p.length), ("4k".into(), "1m".into()));
        assert_eq!(p.hold, Some(Duration::from_millis(1500)));
        assert!(!p.release_on_break);
    }

    #[test]
    fn usage_errors_keep_their_messages() {
        let err = |r: Result<String, String>| r.err().unwrap_or_default();
        let mount = |a: &[&str]| err(parse_mount(&os(a)).map(|_| String::new()));
        let pin = |a: &[&str]| err(parse_pin(&os(a)).map(|_| String::new()));
        let stats = |a: &[&str]| err(parse_stats(&os(a)).map(|_| String::new()));
        let see_mount = "(see 'daxfs help mount')";
        assert_eq!(
            mount(&["/a"]),
            format!("mount needs a DEVICE and a MOUNTPOINT {see_mount}")
        );
        assert_eq!(
            mount(&["/a", "/b", "/c"]),
            format!("too many arguments {see_mount}")
        );
        assert_eq!(mount(&["/a", "/b", "-o"]), "option '-o' needs a value");
        assert_eq!(
            mount(&["/a", "/b", "-x"]),
            format!("unknown option '-x' {see_mount}")
        );
        assert_eq!(
            mount(&["/a", "/b", "-fx"]),
            format!("unknown option '-fx' {see_mount}")
        );
        assert_eq!(
            pin(&[]),
            "pin needs FILE OFFSET LENGTH (see 'daxfs help pin')"
        );
        assert_eq!(
            pin(&["a", "b", "c", "d"]),
            "pin needs FILE OFFSET LENGTH (see 'daxfs help pin')"
        );
        assert_eq!(
            pin(&["a", "b", "c", "--hold"]),
            "option '--hold' needs SECONDS"
        );
        assert_eq!(pin(&["a", "b", "c", "--hold", "x"]), "invalid --hold 'x'");
        assert_eq!(pin(&["a", "b", "c", "--hold", "-1"]), "invalid --hold '-1'");
        assert_eq!(
            pin(&["a", "b", "c", "-z"]),
            "unknown option '-z' (see 'daxfs help pin')"
        );
        assert_eq!(
            stats(&[]),
            "stats needs one MOUNTPOINT (see 'daxfs help stats')"
        );
        assert_eq!(
            stats(&["/a", "/b"]),
            "stats needs one MOUNTPOINT (see 'daxfs help stats')"
        );
        assert_eq!(
            err(parse_top(&os(&["--bogus"]))),
            "unknown option '--bogus' (see 'daxfs --help')"
        );
    }

    #[test]
    fn helper_syntax_ignores_n_s_v_and_t_and_refuses_namespaces() {
        let Ok(Parsed::Run(h)) = parse_helper(&os(&[
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
        ])) else {
            panic!("helper parse failed")
        };
        assert!(h.fake);
        assert_eq!(h.options, os(&["rw"]));
        assert_eq!(
            parse_helper(&os(&["/a", "-N", "/proc/1/ns/mnt"])).err(),
            Some("mount namespaces (-N) are not supported".into())
        );
    }

    #[test]
    fn help_of_each_command_and_the_version_are_printed() {
        for sub in ["mount", "pin", "stats"] {
            let text = help(Some(sub)).unwrap_or_default();
            assert!(text.contains(&format!("Usage: daxfs {sub}")), "{text}");
            let Ok(Parsed::Print(t)) = parse_sub(sub, &os(&["--help"]), Words::Top) else {
                panic!("{sub} --help is not help")
            };
            assert_eq!(t, text);
        }
        assert!(help(Some("bogus")).is_none());
        assert_eq!(
            parse_top(&os(&["-V"])),
            Ok(format!("daxfs {}\n", env!("CARGO_PKG_VERSION")))
        );
    }

    #[test]
    fn every_documented_mount_option_is_accepted_and_shown_in_mount_help() {
        let text = help(Some("mount")).unwrap_or_default();
        for opt in MOUNT_OPTION_EXAMPLES {
            let parsed = MountConfig::parse(opt).and_then(|c| c.check());
            assert!(parsed.is_ok(), "{opt}: {parsed:?}");
            for item in opt.split(',') {
                let name = item.split('=').next().unwrap_or(item);
                let name = if name.starts_with("x-") { "x-*" } else { name };
                assert!(text.contains(name), "'daxfs help mount' misses {name}");
            }
        }
    }
}
