//! Command-line parsing of mkfs.daxfs (std only) and size strings with suffixes.

use std::path::PathBuf;

pub const USAGE: &str = "\
Usage: mkfs.daxfs [OPTIONS] DEVICE

Formats DEVICE (a /dev/daxX.Y device-DAX, a /dev/pmemN block device, or a regular
file used as emulated pmem) with an empty daxfs filesystem.

Options:
  -f, --force              overwrite an existing filesystem or partition table
      --size SIZE          create (mode 0600) or grow the regular file DEVICE to
                           SIZE bytes; all of it is allocated (fallocate)
  -L, --label LABEL        filesystem label (at most 63 bytes)
      --journal-size SIZE  metadata journal size (default: 1/64 of the device,
                           between 1 MiB and 64 MiB; at least 64 KiB)
  -N, --inodes N           number of inodes (default: one per 8 KiB)
  -q, --quiet              print nothing but errors
  -h, --help               show this help
  -V, --version            show the version

SIZE is a number of bytes with an optional suffix K, M, G or T (powers of 1024).

A regular file is emulated pmem: memory (or disk) the filesystem owns. mkfs.daxfs
allocates every byte of it before formatting and refuses, removing a file it created
(an existing file keeps its size), when the filesystem holding it has not that much
space; a mount refuses a file with holes. On tmpfs (/dev/shm) it costs SIZE of RAM.";

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
    Help,
    Version,
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

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut a = Args::default();
    let mut device = None;
    let mut it = args.into_iter();
    let mut only_operands = false;
    while let Some(arg) = it.next() {
        if only_operands || !arg.starts_with('-') || arg == "-" {
            if device.replace(PathBuf::from(&arg)).is_some() {
                return Err(format!("unexpected extra argument {arg:?}"));
            }
            continue;
        }
        // "--opt=value" and "-Lvalue" forms, as getopt accepts them.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if arg.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ if !arg.starts_with("--") && arg.len() > 2 && matches!(&arg[..2], "-L" | "-N") => {
                (arg[..2].to_string(), Some(arg[2..].to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |inline: Option<String>| -> Result<String, String> {
            match inline {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .ok_or_else(|| format!("option {name} needs a value")),
            }
        };
        match name.as_str() {
            "--" => only_operands = true,
            "-f" | "--force" => a.force = true,
            "-q" | "--quiet" => a.quiet = true,
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--size" => a.size = Some(parse_size(&value(inline)?)?),
            "-L" | "--label" => a.label = value(inline)?,
            "--journal-size" => {
                // 0 is not "the default": it is refused like any size below the minimum.
                a.journal_bytes = parse_size(&value(inline)?)?;
                if a.journal_bytes < 64 * 1024 {
                    return Err(format!(
                        "journal size {} is too small: at least 64 KiB",
                        a.journal_bytes
                    ));
                }
            }
            "-N" | "--inodes" => {
                a.inodes = parse_count(&value(inline)?)?;
                if a.inodes == 0 {
                    return Err("the inode count must be positive".into());
                }
            }
            _ => {
                // Bundled short flags: -fq.
                let flags = &arg[1..];
                if !arg.starts_with("--") && flags.chars().all(|c| matches!(c, 'f' | 'q')) {
                    a.force |= flags.contains('f');
                    a.quiet |= flags.contains('q');
                } else {
                    return Err(format!("unknown option {arg:?}"));
                }
            }
        }
    }
    a.device = device.ok_or("no DEVICE given")?;
    if a.label.len() > 63 {
        return Err(format!(
            "label is {} bytes long; at most 63 bytes fit",
            a.label.len()
        ));
    }
    if a.label.contains('\0') {
        return Err("label must not contain NUL bytes".into());
    }
    Ok(Command::Format(a))
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
        assert_eq!(p(&["-h"]), Ok(Command::Help));
        assert_eq!(p(&["--version"]), Ok(Command::Version));
    }
}
