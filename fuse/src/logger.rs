//! The `daxfs` daemon's logger: a backend for the `log` facade that the core (mount,
//! journal replay), fsck (repairs) and the daemon (mount, unmount, refusal) log through.
//!
//! Why our own and not env_logger: the daemon needs syslog when it runs detached without
//! `log=FILE`, which env_logger does not do, and what it does need (a `RUST_LOG` filter of
//! `LEVEL` and `TARGET=LEVEL` directives, one line per record to stderr) is under a
//! hundred lines without a dependency tree. No regex filters (env_logger's `/re`).
//!
//! - [`init`]: records go to stderr (the terminal in the foreground; the log file, or
//!   /dev/null, once the daemon has redirected its stderr), each line
//!   `2026-12-04T18:00:00Z daxfs[PID] INFO target: message`.
//! - [`use_syslog`]: from then on records go to syslog (/dev/log, facility daemon) as
//!   `<PRI>daxfs[PID]: LEVEL target: message`; if /dev/log cannot be reached, to stderr.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// The filter when `RUST_LOG` is unset: mounts, unmounts, refusals, replays and repairs
/// are `info`. fuser's own records only from errors up: it logs every mount at info and
/// warns at every `umount` (its own unmount of what the kernel already unmounted fails).
pub const DEFAULT_FILTER: &str = "info,fuser=error";

/// A parsed `RUST_LOG`: a default level and per-target levels (the longest matching
/// target prefix wins, as in env_logger).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    default: LevelFilter,
    targets: Vec<(String, LevelFilter)>,
}

impl Filter {
    /// Parses comma-separated directives: `LEVEL`, `TARGET=LEVEL` or `TARGET` (all levels
    /// of that target). Unknown levels are ignored, as env_logger ignores them. An empty
    /// spec logs errors only (env_logger's default).
    pub fn parse(spec: &str) -> Filter {
        let mut f = Filter {
            default: LevelFilter::Error,
            targets: Vec::new(),
        };
        for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match d.split_once('=') {
                Some((t, l)) => {
                    if let Ok(l) = l.trim().parse() {
                        f.targets.push((t.trim().to_string(), l));
                    }
                }
                None => match d.parse() {
                    Ok(l) => f.default = l,
                    Err(_) => f.targets.push((d.to_string(), LevelFilter::Trace)),
                },
            }
        }
        f
    }

    /// The most verbose level anything passes (for `log::set_max_level`).
    pub fn max(&self) -> LevelFilter {
        self.targets
            .iter()
            .map(|(_, l)| *l)
            .fold(self.default, std::cmp::max)
    }

    /// Whether a record of `level` from `target` passes.
    pub fn enabled(&self, target: &str, level: Level) -> bool {
        let matching = |t: &&(String, LevelFilter)| {
            target == t.0
                || (target.starts_with(t.0.as_str()) && target[t.0.len()..].starts_with("::"))
        };
        let l = self
            .targets
            .iter()
            .filter(matching)
            .max_by_key(|t| t.0.len())
            .map_or(self.default, |t| t.1);
        level <= l
    }
}

struct Logger {
    filter: Filter,
    syslog: Mutex<Option<UnixDatagram>>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Installs the logger with `RUST_LOG` (or [`DEFAULT_FILTER`]). A second call, or one
/// after another logger was installed, does nothing.
pub fn init() {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_FILTER.to_string());
    let logger = LOGGER.get_or_init(|| Logger {
        filter: Filter::parse(&spec),
        syslog: Mutex::new(None),
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(logger.filter.max());
    }
}

/// Sends records to syslog from now on (a daemon without `log=FILE`, whose stderr is
/// /dev/null). Without a reachable /dev/log they keep going to stderr.
pub fn use_syslog() {
    let Some(logger) = LOGGER.get() else {
        return;
    };
    if let (Ok(s), Ok(mut slot)) = (connect(Path::new("/dev/log")), logger.syslog.lock()) {
        *slot = Some(s);
    }
}

/// A datagram socket connected to the syslog socket at `path`.
fn connect(path: &Path) -> std::io::Result<UnixDatagram> {
    let s = UnixDatagram::unbound()?;
    s.connect(path)?;
    Ok(s)
}

/// syslog severity of a level (RFC 5424: 3 error .. 7 debug).
fn severity(l: Level) -> u8 {
    match l {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (UTC; the civil-from-days algorithm).
pub fn utc_timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        self.filter.enabled(m.target(), m.level())
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let pid = std::process::id();
        if let Ok(slot) = self.syslog.lock() {
            if let Some(s) = slot.as_ref() {
                // Facility daemon (3): PRI = 3 * 8 + severity.
                let line = format!(
                    "<{}>daxfs[{pid}]: {} {}: {}",
                    24 + severity(r.level()),
                    r.level(),
                    r.target(),
                    r.args()
                );
                if s.send(line.as_bytes()).is_ok() {
                    return;
                }
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // One write per line: lines of concurrent threads do not interleave.
        let line = format!(
            "{} daxfs[{pid}] {} {}: {}\n",
            utc_timestamp(now),
            r.level(),
            r.target(),
            r.args()
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_level_sets_the_default_and_targets_override_it() {
        let f = Filter::parse("warn,daxfs_fsck=debug");
        assert!(f.enabled("daxfs", Level::Warn));
        assert!(!f.enabled("daxfs", Level::Info));
        assert!(f.enabled("daxfs_fsck", Level::Debug));
        assert!(f.enabled("daxfs_fsck::repair", Level::Debug));
        // A prefix of another crate's name is not its parent module.
        assert!(!f.enabled("daxfs_fsckx", Level::Info));
        assert_eq!(f.max(), LevelFilter::Debug);
    }

    #[test]
    fn the_longest_matching_target_wins() {
        let f = Filter::parse("daxfs=info,daxfs::filesystem=off");
        assert!(f.enabled("daxfs", Level::Info));
        assert!(!f.enabled("daxfs::filesystem", Level::Error));
    }

    #[test]
    fn empty_and_unknown_levels_mean_errors_only() {
        let f = Filter::parse("");
        assert!(f.enabled("daxfs", Level::Error) && !f.enabled("daxfs", Level::Warn));
        let f = Filter::parse("daxfs=loud");
        assert_eq!(f, Filter::parse(""));
        // A bare word that is not a level names a target, all levels.
        assert!(Filter::parse("daxfs_fuse").enabled("daxfs_fuse", Level::Trace));
    }

    #[test]
    fn syslog_records_carry_the_daemon_facility_severity_and_tag() {
        let dir = std::env::temp_dir().join(format!("daxfs-logger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let logger = Logger {
            filter: Filter::parse("info"),
            syslog: Mutex::new(Some(connect(&path).unwrap())),
        };
        for (level, msg) in [
            (Level::Info, "mounted"),
            (Level::Debug, "dropped"),
            (Level::Warn, "refused"),
        ] {
            logger.log(
                &Record::builder()
                    .level(level)
                    .target("daxfs")
                    .args(format_args!("{msg}"))
                    .build(),
            );
        }
        server.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = server.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let pid = std::process::id();
        assert_eq!(
            got,
            [
                format!("<30>daxfs[{pid}]: INFO daxfs: mounted"),
                format!("<28>daxfs[{pid}]: WARN daxfs: refused"),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_796_398_747), "2026-12-04T15:39:07Z");
    }
}
