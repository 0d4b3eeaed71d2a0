//! The command line of mkfs.daxfs: a clap (derive) definition, which `daxfs-man` also
//! renders into the man page and shell completions, and the parse into [`Args`] with
//! the tool's own messages (clap's errors are mapped to them, and the exit status of a
//! usage error stays 1).

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};
use daxfs_cli::clap_error::{as_typed, first_line};
use std::path::PathBuf;

const ABOUT: &str =
    "Formats DEVICE (a /dev/daxX.Y device-DAX, a /dev/pmemN block device, or a regular
file used as emulated pmem) with an empty daxfs filesystem.";

const AFTER_HELP: &str = "\
SIZE is a number of bytes with an optional suffix K, M, G or T (powers of 1024).

A regular file is emulated pmem: memory (or disk) the filesystem owns. mkfs.daxfs
allocates every byte of it before formatting and refuses, removing a file it created
(an existing file keeps its size), when the filesystem holding it has not that much
space; a mount refuses a file with holes. On tmpfs (/dev/shm) it costs SIZE of RAM.

Exit status: 0 formatted, 1 refused, usage error or failure.";

/// The options as clap sees them. Values take anything that follows, as getopt does
/// (`-L -f` labels the filesystem "-f"; `--size -5M` is a malformed size).
#[derive(Debug, Parser)]
#[command(
    name = "mkfs.daxfs",
    bin_name = "mkfs.daxfs",
    version,
    about = ABOUT,
    disable_help_flag = true,
    disable_version_flag = true,
    override_usage = "mkfs.daxfs [OPTIONS] DEVICE",
    after_help = AFTER_HELP,
    args_override_self = true
)]
struct Cli {
    /// overwrite an existing filesystem or partition table
    #[arg(short, long)]
    force: bool,
    /// create (mode 0600) or grow the regular file DEVICE to SIZE bytes; all of it is
    /// allocated (fallocate)
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_size)]
    size: Option<u64>,
    /// filesystem label (at most 63 bytes)
    #[arg(short = 'L', long, value_name = "LABEL", allow_hyphen_values = true)]
    label: Option<String>,
    /// metadata journal size (default: 1/64 of the device, between 1 MiB and 64 MiB; at
    /// least 64 KiB)
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_journal_size)]
    journal_size: Option<u64>,
    /// number of inodes (default: one per 8 KiB)
    #[arg(short = 'N', long, value_name = "N", allow_hyphen_values = true, value_parser = parse_inodes)]
    inodes: Option<u64>,
    /// print nothing but errors
    #[arg(short, long)]
    quiet: bool,
    /// show this help
    #[arg(short, long, action = clap::ArgAction::HelpShort)]
    help: (),
    /// show the version
    #[arg(short = 'V', long, action = clap::ArgAction::Version)]
    version: (),
    /// the device-DAX, fsdax block device or regular file to format
    #[arg(value_name = "DEVICE", required = true)]
    device: Option<PathBuf>,
}

/// The clap command (for `daxfs-man` and the help text).
pub fn command() -> clap::Command {
    Cli::command()
}

/// Parsed options.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    pub device: PathBuf,
    pub force: bool,
    pub size: Option<u64>,
    pub label: String,
    pub journal_bytes: u64,
    pub inodes: u64,
    pub quiet: bool,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Format(Args),
    /// Print this text (help or version) on stdout and exit 0.
    Print(String),
}

/// Parses "4096", "64K", "1G", "2TiB", "512MB" (suffixes are powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return Err(format!(
            "invalid size {s:?}: expected a number with an optional K/M/G/T suffix"
        ));
    }
    let (num, suffix) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: number too large"))?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown suffix {suffix:?} (use K, M, G or T)"
            ))
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

fn parse_count(s: &str) -> Result<u64, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("invalid inode count {s:?}: expected a positive number"))
}

/// `--journal-size`: 0 is not "the default": it is refused like any size below the minimum.
fn parse_journal_size(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n < 64 * 1024 {
        return Err(format!("journal size {n} is too small: at least 64 KiB"));
    }
    Ok(n)
}

fn parse_inodes(s: &str) -> Result<u64, String> {
    match parse_count(s)? {
        0 => Err("the inode count must be positive".into()),
        n => Ok(n),
    }
}

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let args: Vec<String> = args.into_iter().collect();
    let argv = std::iter::once("mkfs.daxfs".to_string()).chain(args.iter().cloned());
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            return Ok(Command::Print(e.render().to_string()))
        }
        Err(e) => return Err(usage_message(&e, &args)),
    };
    let label = cli.label.unwrap_or_default();
    if label.len() > 63 {
        return Err(format!(
            "label is {} bytes long; at most 63 bytes fit",
            label.len()
        ));
    }
    if label.contains('\0') {
        return Err("label must not contain NUL bytes".into());
    }
    Ok(Command::Format(Args {
        device: cli.device.ok_or("no DEVICE given")?,
        force: cli.force,
        size: cli.size,
        label,
        journal_bytes: cli.journal_size.unwrap_or(0),
        inodes: cli.inodes.unwrap_or(0),
        quiet: cli.quiet,
    }))
}

/// clap's error in the words mkfs.daxfs has always used.
fn usage_message(e: &clap::Error, args: &[String]) -> String {
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    match e.kind() {
        // The value parser's own message.
        ErrorKind::ValueValidation => match std::error::Error::source(e) {
            Some(inner) => inner.to_string(),
            None => first_line(e),
        },
        ErrorKind::UnknownArgument if arg.starts_with('-') && arg != "-" => {
            format!("unknown option {:?}", as_typed(&arg, args))
        }
        ErrorKind::UnknownArgument => format!("unexpected extra argument {arg:?}"),
        ErrorKind::MissingRequiredArgument => "no DEVICE given".into(),
        ErrorKind::InvalidValue | ErrorKind::NoEquals => {
            // A value is missing only at the end of the line (values take whatever
            // follows): name the option as it was typed.
            let typed = args.last().filter(|a| a.starts_with('-'));
            let name = match typed {
                Some(a) => a.split('=').next().unwrap_or(a).to_string(),
                None => arg.split(' ').next().unwrap_or_default().to_string(),
            };
            format!("option {name} needs a value")
        }
        _ => first_line(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Result<Command, String> {
        parse(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn sizes_accept_binary_suffixes_and_plain_bytes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("3m"), Ok(3 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn options_in_long_short_and_attached_forms() {
        let Ok(Command::Format(a)) = p(&["-f", "--label=data", "-N", "100", "--size", "1G", "dev"])
        else {
            panic!("parse failed")
        };
        assert!(a.force);
        assert_eq!(a.label, "data");
        assert_eq!(a.inodes, 100);
        assert_eq!(a.size, Some(1 << 30));
        assert_eq!(a.device, PathBuf::from("dev"));
        let Ok(Command::Format(b)) = p(&["-Lx", "-fq", "d"]) else {
            panic!("parse failed")
        };
        assert_eq!((b.label.as_str(), b.force, b.quiet), ("x", true, true));
    }

    #[test]
    fn usage_errors_are_reported() {
        assert!(p(&[]).is_err());
        assert!(p(&["a", "b"]).is_err());
        assert!(p(&["--bogus", "a"]).is_err());
        assert!(p(&["-L"]).is_err());
        assert!(p(&["-L", &"x".repeat(64), "d"]).is_err());
        assert!(p(&["--journal-size", "4K", "d"]).is_err());
        assert!(p(&["--journal-size", "0", "d"]).is_err());
        assert!(p(&["--journal-size=0", "d"]).is_err());
    }

    #[test]
    fn usage_errors_keep_their_messages() {
        let err = |v: &[&str]| p(v).err().unwrap_or_default();
        assert_eq!(err(&[]), "no DEVICE given");
        assert_eq!(err(&["a", "b"]), "unexpected extra argument \"b\"");
        assert_eq!(err(&["--bogus", "a"]), "unknown option \"--bogus\"");
        assert_eq!(err(&["-fx", "a"]), "unknown option \"-fx\"");
        assert_eq!(err(&["d", "-L"]), "option -L needs a value");
        assert_eq!(err(&["d", "--size"]), "option --size needs a value");
        assert_eq!(
            err(&["--size", "12Q", "d"]),
            "invalid size \"12Q\": unknown suffix \"Q\" (use K, M, G or T)"
        );
        assert_eq!(
            err(&["--journal-size=4K", "d"]),
            "journal size 4096 is too small: at least 64 KiB"
        );
        assert_eq!(err(&["-N", "0", "d"]), "the inode count must be positive");
    }

    #[test]
    fn values_take_what_follows_even_with_a_dash() {
        let Ok(Command::Format(a)) = p(&["-L", "-f", "d"]) else {
            panic!("parse failed")
        };
        assert_eq!((a.label.as_str(), a.force), ("-f", false));
        assert!(p(&["--size", "-5M", "d"])
            .err()
            .is_some_and(|e| e.starts_with("invalid size \"-5M\"")));
    }

    #[test]
    fn a_repeated_option_takes_its_last_value() {
        let Ok(Command::Format(a)) = p(&["-L", "a", "-L", "b", "-f", "-f", "d"]) else {
            panic!("parse failed")
        };
        assert_eq!((a.label.as_str(), a.force), ("b", true));
    }

    #[test]
    fn a_dash_and_anything_after_double_dash_are_the_device() {
        let dev = |v: &[&str]| match p(v) {
            Ok(Command::Format(a)) => a.device,
            other => panic!("{v:?}: {other:?}"),
        };
        assert_eq!(dev(&["-"]), PathBuf::from("-"));
        assert_eq!(dev(&["--", "-weird"]), PathBuf::from("-weird"));
    }

    #[test]
    fn defaults_leave_journal_and_inodes_to_the_layout() {
        let Ok(Command::Format(a)) = p(&["d"]) else {
            panic!("parse failed")
        };
        assert_eq!(
            a,
            Args {
                device: PathBuf::from("d"),
                ..Args::default()
            }
        );
    }

    #[test]
    fn help_and_version_are_printed_not_errors() {
        let Ok(Command::Print(help)) = p(&["-h"]) else {
            panic!("-h is not help")
        };
        assert!(
            help.contains("Usage: mkfs.daxfs [OPTIONS] DEVICE"),
            "{help}"
        );
        assert!(help.contains("--journal-size"), "{help}");
        assert_eq!(
            p(&["--version"]),
            Ok(Command::Print(format!(
                "mkfs.daxfs {}\n",
                env!("CARGO_PKG_VERSION")
            )))
        );
    }
}
