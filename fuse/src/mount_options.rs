//! `-o` mount option parsing for `daxfs mount` and the mount helpers.
//!
//! Owns the option vocabulary: daxfs's own options (`dax=`, `threads=`, `layout_timeout=`,
//! `lease_break_time=`, `heartbeat_ms=`, `host_timeout_ms=`, `max_pins_per_user=`, `max_pinned_bytes_per_user=`, `log=`), the FUSE session ones (`allow_other`, `allow_root`, `default_permissions`,
//! `auto_unmount`, `fsname=`, `subtype=`) and the generic mount flags (`ro`, `nodev`, ...),
//! and turns them into the core's [`FsOptions`] and a [`fuser::Config`]. Options that only
//! mount(8) and fstab care about (`defaults`, `_netdev`, `nofail`, `x-*`, ...) are accepted and
//! ignored, as mount helpers do. Later options override earlier ones (`ro,rw` is `rw`).

use daxfs::PinPolicy;
use daxfs::{DaxMode, FsOptions};
use fuser::{MountOption, SessionACL};
use std::path::PathBuf;
use std::time::Duration;

/// The largest `heartbeat_ms=` / `host_timeout_ms=` (one hour; the table stores u32 ms).
const MAX_HOST_MS: u64 = 3_600_000;

/// A `key=MILLISECONDS` value, 1..=max.
fn millis(key: &str, v: &str, max: u64) -> Result<Duration, String> {
    v.parse::<u64>()
        .ok()
        .filter(|&n| (1..=max).contains(&n))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid value '{v}' for {key}= (expected milliseconds, 1..={max})"))
}

/// Who besides the mounting user may use the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only the user who mounted (FUSE's default).
    Owner,
    /// `allow_root`: the owner and root.
    Root,
    /// `allow_other`: everyone (permission checks still apply).
    Other,
}

/// Everything `-o` can say, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct MountConfig {
    /// What the core is told: ro, dax mode, layout timeout.
    pub read_only: bool,
    pub dax: DaxMode,
    pub layout_timeout: Duration,
    /// Who may pin, when pins are revoked, per-user pin limits.
    pub pins: PinPolicy,
    /// Lazy timestamps (`lazytime`; off by default over FUSE: the kernel must then send
    /// FSYNC, which halved write+fsync throughput) and their writeback interval (`commit=`).
    pub lazytime: bool,
    pub commit_interval: Duration,
    /// Host table heartbeat period and liveness timeout (`heartbeat_ms=`,
    /// `host_timeout_ms=`; issue 13).
    pub heartbeat: Duration,
    pub host_timeout: Duration,
    pub access: Access,
    /// Kernel-side permission checks (on unless `nodefault_permissions`).
    pub default_permissions: bool,
    /// FUSE worker threads.
    pub threads: usize,
    /// How long workers keep polling /dev/fuse after the last request before they sleep
    /// in read(2) again ([`crate::busy_poll`]), and ring queue threads keep looking for
    /// their next request ([`crate::uring::queue::QueueConfig::poll`]); zero never polls.
    pub busy_poll: Duration,
    /// Serve requests over FUSE io_uring queues (`io_uring`) when the kernel grants it,
    /// /dev/fuse otherwise (issue 14; off by default).
    pub io_uring: bool,
    /// Ring entries per CPU queue (`uring_depth=`): requests of one CPU in flight.
    pub uring_depth: u16,
    /// Source column of /proc/mounts; `None` means "the device path".
    pub fsname: Option<String>,
    /// Shown as `fuse.SUBTYPE` in /proc/mounts.
    pub subtype: String,
    /// Daemon log file (stderr of the background process); `None` means /dev/null.
    pub log: Option<PathBuf>,
    pub auto_unmount: bool,
    /// Generic mount flags; `None` leaves the FUSE default (nodev, nosuid, exec, atime, async).
    pub dev: Option<bool>,
    pub suid: Option<bool>,
    pub exec: Option<bool>,
    pub atime: Option<bool>,
    pub sync: Option<bool>,
    pub dirsync: bool,
    /// `follow`: a read-only follower of another host's live writer; `follow_interval=MS`
    /// how often it looks for the writer's commits (`daxfs::FsOptions::follow`).
    pub follow: bool,
    pub follow_interval: Duration,
}

impl Default for MountConfig {
    fn default() -> Self {
        let fs = FsOptions::default();
        MountConfig {
            read_only: fs.read_only,
            dax: DaxMode::Always,
            layout_timeout: fs.layout_timeout,
            pins: fs.pins,
            lazytime: false,
            commit_interval: fs.commit_interval,
            heartbeat: fs.heartbeat,
            host_timeout: fs.host_timeout,
            access: Access::Owner,
            default_permissions: true,
            threads: default_threads(),
            busy_poll: DEFAULT_BUSY_POLL,
            io_uring: false,
            uring_depth: DEFAULT_URING_DEPTH,
            fsname: None,
            subtype: "daxfs".to_string(),
            log: None,
            auto_unmount: false,
            dev: None,
            suid: None,
            exec: None,
            atime: None,
            sync: None,
            dirsync: false,
            follow: fs.follow,
            follow_interval: fs.follow_interval,
        }
    }
}

/// One worker per core: the data path is memcpy-bound, more threads than cores only contend.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Polling for 1 ms after a request costs at most a millisecond of CPU per burst of
/// requests, and covers the gaps of any client that issues requests back to back.
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_millis(1);

/// Ring entries per CPU queue by default. A request waiting for pins keeps its entry
/// until answered, and every waiter may be on one CPU, so a queue needs more entries
/// than [`MAX_WAITERS`](crate::deferred::MAX_WAITERS) or waiting truncates starve that
/// CPU's other requests (with 8 entries per CPU, 16 waiting opens blocked `daxfs
/// stats`: daxfs/091). Entries are max_write buffers of lazily allocated memory, so
/// an idle entry costs address space, not RAM.
pub const DEFAULT_URING_DEPTH: u16 = crate::deferred::MAX_WAITERS as u16 + 8;

/// Upper bound for `uring_depth=`: each entry is a max_write-sized buffer per CPU.
const MAX_URING_DEPTH: u16 = 256;

/// Upper bound for `busy_poll=` (microseconds): a second of spinning per burst is already
/// far past useful.
const MAX_BUSY_POLL_US: u64 = 1_000_000;

/// Options that are bare words (`ro`, not `ro=1`).
const FLAG_OPTIONS: &[&str] = &[
    "ro",
    "rw",
    "io_uring",
    "allow_other",
    "allow_root",
    "default_permissions",
    "nodefault_permissions",
    "auto_unmount",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "sync",
    "async",
    "dirsync",
    "relatime",
    "lazytime",
    "nolazytime",
    "follow",
];

/// Upper bound for `commit=` (seconds): a day of timestamps in memory only is already
/// far past useful.
const MAX_COMMIT_SECS: u64 = 86_400;

/// Upper bound for `threads=`: far beyond useful, low enough to catch typos.
const MAX_THREADS: usize = 1024;

impl MountConfig {
    /// Parses one `-o` argument (comma-separated) on top of the defaults.
    pub fn parse(opts: &str) -> Result<MountConfig, String> {
        let mut cfg = MountConfig::default();
        cfg.apply(opts)?;
        Ok(cfg)
    }

    /// Applies one `-o` argument on top of what is already set (for repeated `-o`).
    pub fn apply(&mut self, opts: &str) -> Result<(), String> {
        for opt in opts.split(',').filter(|o| !o.is_empty()) {
            self.apply_one(opt)?;
        }
        Ok(())
    }

    fn apply_one(&mut self, opt: &str) -> Result<(), String> {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        if FLAG_OPTIONS.contains(&key) && value.is_some() {
            return Err(format!("mount option '{key}' takes no value"));
        }
        match key {
            "ro" => self.read_only = true,
            "rw" => self.read_only = false,
            "allow_other" => self.access = Access::Other,
            "allow_root" => self.access = Access::Root,
            "default_permissions" => self.default_permissions = true,
            "nodefault_permissions" => self.default_permissions = false,
            "auto_unmount" => self.auto_unmount = true,
            "dev" | "nodev" => self.dev = Some(key == "dev"),
            "suid" | "nosuid" => self.suid = Some(key == "suid"),
            "exec" | "noexec" => self.exec = Some(key == "exec"),
            "atime" | "noatime" => self.atime = Some(key == "atime"),
            "sync" | "async" => self.sync = Some(key == "sync"),
            "dirsync" => self.dirsync = true,
            "follow" => self.follow = true,
            "follow_interval" => {
                let v = required(key, value)?;
                self.follow_interval = v
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| (1..=60_000).contains(ms))
                    .map(Duration::from_millis)
                    .ok_or_else(|| {
                        format!("invalid value '{v}' for follow_interval= (expected 1..60000 ms)")
                    })?;
            }
            // The kernel's default atime policy; accepted because fstab lines often say it.
            "relatime" => {}
            "lazytime" | "nolazytime" => self.lazytime = key == "lazytime",
            "commit" => {
                let v = required(key, value)?;
                self.commit_interval = v
                    .parse::<u64>()
                    .ok()
                    .filter(|&s| (1..=MAX_COMMIT_SECS).contains(&s))
                    .map(Duration::from_secs)
                    .ok_or_else(|| {
                        format!(
                            "invalid value '{v}' for commit= (expected seconds, 1..={MAX_COMMIT_SECS})"
                        )
                    })?;
            }
            "dax" => {
                self.dax = match value {
                    // Bare `dax` means `dax=always`, as on ext4/xfs.
                    None | Some("always") => DaxMode::Always,
                    Some("never") => DaxMode::Never,
                    Some("inode") => DaxMode::Inode,
                    Some(v) => {
                        return Err(format!(
                            "invalid value '{v}' for dax= (expected always, never or inode)"
                        ))
                    }
                }
            }
            "threads" => {
                let v = required(key, value)?;
                let n: usize = v.parse().map_err(|_| {
                    format!("invalid value '{v}' for threads= (expected 1..={MAX_THREADS})")
                })?;
                if n == 0 || n > MAX_THREADS {
                    return Err(format!(
                        "invalid value '{v}' for threads= (expected 1..={MAX_THREADS})"
                    ));
                }
                self.threads = n;
            }
            "busy_poll" => {
                let v = required(key, value)?;
                let us: u64 = v
                    .parse()
                    .ok()
                    .filter(|&us| us <= MAX_BUSY_POLL_US)
                    .ok_or_else(|| {
                        format!(
                            "invalid value '{v}' for busy_poll= (expected microseconds, 0..={MAX_BUSY_POLL_US})"
                        )
                    })?;
                self.busy_poll = Duration::from_micros(us);
            }
            "io_uring" => self.io_uring = true,
            "uring_depth" => {
                let v = required(key, value)?;
                self.uring_depth = v
                    .parse::<u16>()
                    .ok()
                    .filter(|&n| (1..=MAX_URING_DEPTH).contains(&n))
                    .ok_or_else(|| {
                        format!(
                            "invalid value '{v}' for uring_depth= (expected 1..={MAX_URING_DEPTH})"
                        )
                    })?;
            }
            "layout_timeout" => {
                let v = required(key, value)?;
                self.layout_timeout = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| {
                        format!("invalid value '{v}' for layout_timeout= (expected seconds)")
                    })?;
            }
            "heartbeat_ms" => {
                self.heartbeat = millis(key, required(key, value)?, MAX_HOST_MS)?;
            }
            "host_timeout_ms" => {
                self.host_timeout = millis(key, required(key, value)?, MAX_HOST_MS)?;
            }
            "lease_break_time" => {
                let v = required(key, value)?;
                self.pins.lease_break_time = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| {
                        format!("invalid value '{v}' for lease_break_time= (expected seconds)")
                    })?;
            }
            "max_pins_per_user" => {
                let v = required(key, value)?;
                self.pins.max_pins_per_user = v.parse().map_err(|_| {
                    format!("invalid value '{v}' for max_pins_per_user= (expected a count)")
                })?;
            }
            "max_pinned_bytes_per_user" => {
                let v = required(key, value)?;
                self.pins.max_pinned_bytes_per_user = Some(parse_bytes(v).ok_or_else(|| {
                    format!(
                        "invalid value '{v}' for max_pinned_bytes_per_user= (expected bytes, with an optional k, m, g or t suffix)"
                    )
                })?);
            }
            "fsname" => {
                let v = required(key, value)?;
                self.fsname = Some(v.to_string());
            }
            "subtype" => {
                let v = required(key, value)?;
                if v.contains(|c: char| !(c.is_ascii_alphanumeric() || "._-+".contains(c))) {
                    return Err(format!("invalid value '{v}' for subtype="));
                }
                self.subtype = v.to_string();
            }
            "log" => {
                let v = required(key, value)?;
                self.log = Some(PathBuf::from(v));
            }
            // mount(8)/fstab-only options, meaningless to the filesystem: ignored, as
            // mount helpers do.
            "defaults" | "_netdev" | "nofail" | "user" | "users" | "nouser" | "auto" | "noauto"
            | "owner" | "group" | "comment" => {}
            k if k.starts_with("x-") => {}
            _ => {
                return Err(format!(
                    "unknown mount option '{opt}' (see 'daxfs help mount')"
                ))
            }
        }
        Ok(())
    }

    /// Checks combinations that single options cannot: call once all `-o` are applied.
    pub fn check(&self) -> Result<(), String> {
        if self.host_timeout <= self.heartbeat * 2 {
            // A timeout this close to the period would call a live host dead after one
            // late heartbeat (a busy machine, a descheduled thread).
            return Err(format!(
                "host_timeout_ms= ({}) must be more than twice heartbeat_ms= ({})",
                self.host_timeout.as_millis(),
                self.heartbeat.as_millis()
            ));
        }
        if self.auto_unmount && self.access == Access::Owner {
            // fusermount3 enforces this; say it before it does, in our words.
            return Err("mount option 'auto_unmount' needs 'allow_other' or 'allow_root'".into());
        }
        Ok(())
    }

    /// The options the core is given.
    pub fn fs_options(&self) -> FsOptions {
        FsOptions {
            read_only: self.read_only || self.follow,
            dax: self.dax,
            layout_timeout: self.layout_timeout,
            pins: self.pins,
            lazytime: self.lazytime,
            commit_interval: self.commit_interval,
            follow: self.follow,
            follow_interval: self.follow_interval,
            heartbeat: self.heartbeat,
            host_timeout: self.host_timeout,
        }
    }

    /// The fuser session configuration. `source` is the device path, shown in /proc/mounts
    /// unless `fsname=` overrides it.
    pub fn fuser_config(&self, source: &str) -> fuser::Config {
        let mut o = Vec::new();
        o.push(MountOption::FSName(
            self.fsname.clone().unwrap_or_else(|| source.to_string()),
        ));
        // As a kernel option rather than MountOption::Subtype: fuser gives Subtype only to
        // fusermount, so a direct mount(2) by root would show plain `fuse` in /proc/mounts.
        // The kernel and fusermount3 both understand `subtype=`.
        o.push(MountOption::CUSTOM(format!("subtype={}", self.subtype)));
        // A follower is mounted rw in the kernel, its daemon answering EROFS to every
        // change: FUSE would not let the daemon turn an ro mount rw after `daxfs promote`.
        o.push(if self.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        });
        if self.default_permissions {
            o.push(MountOption::DefaultPermissions);
        }
        if self.auto_unmount {
            o.push(MountOption::AutoUnmount);
        }
        let pair = |v: Option<bool>, yes: MountOption, no: MountOption| {
            v.map(|b| if b { yes } else { no })
        };
        // Mounted by root, device nodes and set-id bits work as on any local
        // filesystem mounted by root (mount(8)'s defaults); others keep FUSE's nodev,nosuid.
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let dev = self.dev.or(root.then_some(true));
        let suid = self.suid.or(root.then_some(true));
        o.extend(pair(dev, MountOption::Dev, MountOption::NoDev));
        o.extend(pair(suid, MountOption::Suid, MountOption::NoSuid));
        o.extend(pair(self.exec, MountOption::Exec, MountOption::NoExec));
        o.extend(pair(self.atime, MountOption::Atime, MountOption::NoAtime));
        o.extend(pair(self.sync, MountOption::Sync, MountOption::Async));
        if self.dirsync {
            o.push(MountOption::DirSync);
        }
        let mut cfg = fuser::Config::default();
        cfg.mount_options = o;
        cfg.acl = match self.access {
            Access::Owner => SessionACL::Owner,
            Access::Root => SessionACL::RootAndOwner,
            Access::Other => SessionACL::All,
        };
        cfg.n_threads = Some(self.threads);
        // One /dev/fuse fd per worker: requests are read without contending on one fd.
        cfg.clone_fd = self.threads > 1;
        cfg
    }
}

/// A byte count: decimal (or 0x hex), with an optional k, m, g or t suffix (powers of
/// 1024); None if it is not one or overflows. The one size parser of the mount options
/// and the daxfs command line.
pub fn parse_bytes(v: &str) -> Option<u64> {
    let (num, shift) = match v.char_indices().last() {
        Some((i, c)) if "kKmMgGtT".contains(c) => {
            let shift = match c.to_ascii_lowercase() {
                'k' => 10,
                'm' => 20,
                'g' => 30,
                _ => 40,
            };
            (&v[..i], shift)
        }
        _ => (v, 0),
    };
    let n = match num.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => num.parse::<u64>().ok()?,
    };
    n.checked_mul(1u64 << shift)
}

fn required<'a>(key: &str, value: Option<&'a str>) -> Result<&'a str, String> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("mount option '{key}' needs a value ({key}=...)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> MountConfig {
        match MountConfig::parse(s) {
            Ok(c) => c,
            Err(e) => panic!("parse({s:?}) failed: {e}"),
        }
    }

    fn parse_err(s: &str) -> String {
        match MountConfig::parse(s) {
            Ok(c) => panic!("parse({s:?}) should fail, gave {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults_are_rw_dax_always_default_permissions_one_thread_per_core() {
        let c = parse("");
        assert!(!c.read_only);
        assert_eq!(c.dax, DaxMode::Always);
        assert!(c.default_permissions);
        assert_eq!(c.threads, default_threads());
        assert_eq!(c.layout_timeout, Duration::from_secs(30));
        assert_eq!(c.access, Access::Owner);
        assert_eq!(c.subtype, "daxfs");
        assert_eq!(c.fsname, None);
    }

    #[test]
    fn ro_and_rw_last_one_wins() {
        assert!(parse("ro").read_only);
        assert!(!parse("ro,rw").read_only);
        assert!(parse("rw,ro").read_only);
    }

    #[test]
    fn dax_modes_parse_and_bare_dax_means_always() {
        assert_eq!(parse("dax=never").dax, DaxMode::Never);
        assert_eq!(parse("dax=inode").dax, DaxMode::Inode);
        assert_eq!(parse("dax=never,dax=always").dax, DaxMode::Always);
        assert_eq!(parse("dax=never,dax").dax, DaxMode::Always);
    }

    #[test]
    fn invalid_dax_value_is_an_error_naming_the_value() {
        assert!(parse_err("dax=sometimes").contains("sometimes"));
    }

    #[test]
    fn threads_takes_a_positive_count() {
        assert_eq!(parse("threads=4").threads, 4);
        assert!(parse_err("threads=0").contains("threads"));
        assert!(parse_err("threads=x").contains("threads"));
        assert!(parse_err("threads").contains("needs a value"));
        assert!(parse_err("threads=100000").contains("threads"));
    }

    #[test]
    fn io_uring_is_off_by_default_and_a_flag_with_a_bounded_depth() {
        let d = MountConfig::default();
        assert!(!d.io_uring);
        assert_eq!(d.uring_depth, DEFAULT_URING_DEPTH);
        assert!(parse("io_uring").io_uring);
        assert!(parse_err("io_uring=1").contains("takes no value"));
        assert_eq!(parse("io_uring,uring_depth=32").uring_depth, 32);
        assert!(parse_err("uring_depth=0").contains("uring_depth"));
        assert!(parse_err("uring_depth=257").contains("uring_depth"));
        assert!(parse_err("uring_depth").contains("needs a value"));
    }

    #[test]
    fn busy_poll_takes_microseconds_and_zero_turns_it_off() {
        assert_eq!(MountConfig::default().busy_poll, DEFAULT_BUSY_POLL);
        assert_eq!(parse("busy_poll=250").busy_poll, Duration::from_micros(250));
        assert!(parse("busy_poll=0").busy_poll.is_zero());
        assert!(parse_err("busy_poll=-1").contains("busy_poll"));
        assert!(parse_err("busy_poll=1.5").contains("busy_poll"));
        assert!(parse_err("busy_poll=1000001").contains("busy_poll"));
        assert!(parse_err("busy_poll").contains("needs a value"));
    }

    #[test]
    fn host_table_timing_takes_milliseconds() {
        let c = parse("heartbeat_ms=50,host_timeout_ms=500");
        assert_eq!(c.heartbeat, Duration::from_millis(50));
        assert_eq!(c.fs_options().host_timeout, Duration::from_millis(500));
        let d = MountConfig::default();
        assert_eq!(
            (d.heartbeat, d.host_timeout),
            (Duration::from_millis(100), Duration::from_millis(2000))
        );
        assert!(parse_err("heartbeat_ms=0").contains("heartbeat_ms"));
        assert!(parse_err("host_timeout_ms=1.5").contains("host_timeout_ms"));
        assert!(parse_err("host_timeout_ms=3600001").contains("host_timeout_ms"));
    }

    #[test]
    fn a_host_timeout_of_two_heartbeats_or_less_is_refused() {
        let mut c = MountConfig::default();
        c.apply("heartbeat_ms=100,host_timeout_ms=200").unwrap();
        assert!(c.check().unwrap_err().contains("host_timeout_ms"));
    }

    #[test]
    fn layout_timeout_takes_seconds_including_fractions() {
        assert_eq!(
            parse("layout_timeout=5").layout_timeout,
            Duration::from_secs(5)
        );
        assert_eq!(
            parse("layout_timeout=0.25").layout_timeout,
            Duration::from_millis(250)
        );
        assert!(parse_err("layout_timeout=-1").contains("layout_timeout"));
        assert!(parse_err("layout_timeout=soon").contains("layout_timeout"));
    }

    #[test]
    fn fs_options_carry_ro_dax_and_timeout() {
        let f = parse("ro,dax=inode,layout_timeout=7").fs_options();
        assert!(f.read_only);
        assert_eq!(f.dax, DaxMode::Inode);
        assert_eq!(f.layout_timeout, Duration::from_secs(7));
    }

    #[test]
    fn mounts_default_to_nolazytime_with_a_five_second_commit_interval() {
        let f = parse("").fs_options();
        assert!(!f.lazytime);
        assert_eq!(f.commit_interval, Duration::from_secs(5));
    }

    #[test]
    fn lazytime_and_commit_reach_the_core_last_one_winning() {
        let f = parse("lazytime,commit=2").fs_options();
        assert!(f.lazytime);
        assert_eq!(f.commit_interval, Duration::from_secs(2));
        assert!(!parse("lazytime,nolazytime").fs_options().lazytime);
    }

    #[test]
    fn commit_takes_whole_seconds_from_one() {
        for bad in [
            "commit=0",
            "commit=1.5",
            "commit=soon",
            "commit=86401",
            "commit=",
        ] {
            assert!(parse_err(bad).contains("commit"), "{bad}");
        }
        assert!(parse_err("lazytime=1").contains("takes no value"));
    }

    #[test]
    fn pin_policy_options_parse_and_reach_the_core() {
        let d = parse("").pins;
        assert_eq!(d, PinPolicy::default());
        assert_eq!(d.lease_break_time, Duration::from_secs(10));
        assert_eq!(d.max_pins_per_user, 4096);
        assert_eq!(d.max_pinned_bytes_per_user, None);
        let c = parse("lease_break_time=0.5,max_pins_per_user=3,max_pinned_bytes_per_user=2m");
        assert_eq!(c.pins.lease_break_time, Duration::from_millis(500));
        assert_eq!(c.pins.max_pins_per_user, 3);
        assert_eq!(c.pins.max_pinned_bytes_per_user, Some(2 << 20));
        assert_eq!(c.fs_options().pins, c.pins);
        assert!(parse_err("lease_break_time=-1").contains("lease_break_time"));
        assert!(parse_err("max_pins_per_user=many").contains("max_pins_per_user"));
        assert!(parse_err("max_pinned_bytes_per_user=1x").contains("max_pinned_bytes"));
        assert!(parse_err("max_pinned_bytes_per_user=99999999t").contains("max_pinned_bytes"));
    }

    #[test]
    fn nodefault_permissions_turns_kernel_checks_off() {
        assert!(!parse("nodefault_permissions").default_permissions);
        assert!(parse("nodefault_permissions,default_permissions").default_permissions);
    }

    #[test]
    fn allow_other_and_allow_root_set_the_session_acl() {
        assert_eq!(parse("allow_other").access, Access::Other);
        assert_eq!(parse("allow_root").access, Access::Root);
        assert_eq!(parse("allow_other").fuser_config("/d").acl, SessionACL::All);
        assert_eq!(
            parse("allow_root").fuser_config("/d").acl,
            SessionACL::RootAndOwner
        );
        assert_eq!(parse("").fuser_config("/d").acl, SessionACL::Owner);
    }

    #[test]
    fn fstab_only_options_are_ignored() {
        assert_eq!(
            parse("defaults,_netdev,nofail,noauto,auto,user,users,nouser,x-systemd.automount,comment=x"),
            parse("")
        );
    }

    #[test]
    fn unknown_option_is_an_error_naming_it() {
        let e = parse_err("rw,frobnicate");
        assert!(e.contains("unknown mount option 'frobnicate'"), "{e}");
    }

    #[test]
    fn flag_options_reject_values() {
        assert!(parse_err("ro=1").contains("takes no value"));
    }

    #[test]
    fn empty_items_between_commas_are_skipped() {
        assert!(parse(",ro,,").read_only);
    }

    #[test]
    fn repeated_apply_accumulates() {
        let mut c = parse("ro");
        c.apply("dax=never").unwrap_or_else(|e| panic!("{e}"));
        assert!(c.read_only);
        assert_eq!(c.dax, DaxMode::Never);
    }

    #[test]
    fn fuser_config_names_the_device_and_the_daxfs_subtype() {
        let cfg = parse("threads=3").fuser_config("/dev/shm/img");
        let o = &cfg.mount_options;
        assert!(o.contains(&MountOption::FSName("/dev/shm/img".into())));
        assert!(o.contains(&MountOption::CUSTOM("subtype=daxfs".into())));
        assert!(o.contains(&MountOption::DefaultPermissions));
        assert!(o.contains(&MountOption::RW));
        assert_eq!(cfg.n_threads, Some(3));
    }

    #[test]
    fn fsname_and_subtype_override_the_defaults() {
        let cfg = parse("fsname=pmem0,subtype=dax2").fuser_config("/dev/shm/img");
        assert!(cfg
            .mount_options
            .contains(&MountOption::FSName("pmem0".into())));
        assert!(cfg
            .mount_options
            .contains(&MountOption::CUSTOM("subtype=dax2".into())));
        assert!(parse_err("subtype=a,b=c").contains("unknown"));
        assert!(parse_err("subtype=a b").contains("subtype"));
    }

    #[test]
    fn generic_flags_map_to_fuser_options_last_one_winning() {
        let cfg = parse("nosuid,suid,nodev,noexec,noatime,sync,dirsync,ro").fuser_config("/d");
        let o = &cfg.mount_options;
        for want in [
            MountOption::Suid,
            MountOption::NoDev,
            MountOption::NoExec,
            MountOption::NoAtime,
            MountOption::Sync,
            MountOption::DirSync,
            MountOption::RO,
        ] {
            assert!(o.contains(&want), "{want:?} missing from {o:?}");
        }
        assert!(!o.contains(&MountOption::NoSuid));
        assert!(!o.contains(&MountOption::RW));
    }

    #[test]
    fn unset_generic_flags_leave_defaults() {
        let o = parse("").fuser_config("/d").mount_options;
        assert!(!o
            .iter()
            .any(|x| matches!(x, MountOption::NoExec | MountOption::Sync)));
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        assert_eq!(o.contains(&MountOption::Dev), root);
        assert_eq!(o.contains(&MountOption::Suid), root);
    }

    #[test]
    fn nodev_and_nosuid_override_the_root_default() {
        let o = parse("nodev,nosuid").fuser_config("/d").mount_options;
        assert!(o.contains(&MountOption::NoDev) && o.contains(&MountOption::NoSuid));
        assert!(!o.contains(&MountOption::Dev) && !o.contains(&MountOption::Suid));
    }

    #[test]
    fn log_and_auto_unmount_are_recorded() {
        let c = parse("log=/tmp/daxfs.log,auto_unmount,allow_root");
        assert_eq!(c.log, Some(PathBuf::from("/tmp/daxfs.log")));
        assert!(c.auto_unmount);
        assert!(c
            .fuser_config("/d")
            .mount_options
            .contains(&MountOption::AutoUnmount));
        assert_eq!(c.check(), Ok(()));
    }

    #[test]
    fn auto_unmount_without_allow_other_or_root_fails_the_check() {
        let e = parse("auto_unmount").check().unwrap_err();
        assert!(e.contains("allow_other"), "{e}");
    }
}
