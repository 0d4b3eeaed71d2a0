//! The command line of fsck.daxfs: a clap (derive) definition, which `daxfs-man` also
//! renders into the man page and shell completions, and the parse into [`Opts`] with
//! the tool's own messages. A usage error is reported by the binary with fsck(8)'s
//! exit status 16, not clap's 2.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};
use std::path::PathBuf;

const AFTER_HELP: &str = "\
-y repairs: link counts, directory entries naming free or invalid inodes,
unreachable inodes (reconnected into /lost+found as #INODE), the bitmap,
orphans, and damaged records, which cost only their object: a damaged inode
is cleared (entries removed, blocks freed, a directory's children reconnected),
a damaged entry or extent slot is cleared, a damaged directory or extent block
header rewritten, a damaged xattr block dropped. Damage it cannot repair
(blocks used twice) is reported and then nothing but superblock copies is
changed.

Exit status: 0 clean, 1 errors corrected, 4 errors left uncorrected (5: some
corrected, some not), 8 operational error, 16 usage error.";

/// The options as clap sees them: single letters that bundle (`-nf`), as fsck(8)
/// passes them.
#[derive(Debug, Parser)]
#[command(
    name = "fsck.daxfs",
    bin_name = "fsck.daxfs",
    version,
    about = "Checks the daxfs filesystem on DEVICE, which must not be mounted.",
    override_usage = "fsck.daxfs [-n | -y | -p] [-f] DEVICE",
    after_help = AFTER_HELP,
    args_override_self = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct Cli {
    /// check only; change nothing (the default)
    #[arg(short = 'n')]
    no: bool,
    /// repair what can be repaired safely
    #[arg(short = 'y')]
    yes: bool,
    /// preen: like -y, quietly, but only repairs that need no decision (link counts,
    /// bitmap, orphans); skips a cleanly unmounted filesystem unless -f
    #[arg(short = 'p', visible_short_alias = 'a')]
    preen: bool,
    /// check even if the filesystem is marked clean (with -p)
    #[arg(short = 'f')]
    force: bool,
    /// show this help
    #[arg(short = 'h', long, action = clap::ArgAction::HelpShort)]
    help: (),
    /// show the version
    #[arg(short = 'V', long, action = clap::ArgAction::Version)]
    version: (),
    /// the device (or emulated pmem file) holding the filesystem
    #[arg(value_name = "DEVICE", required = true)]
    device: Option<PathBuf>,
}

/// The clap command (for `daxfs-man` and the help text).
pub fn command() -> clap::Command {
    Cli::command()
}

/// The help text, as -h prints it (and a usage error after its message).
pub fn help() -> String {
    command().render_help().to_string()
}

/// What is done to the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// -n (the default): report only.
    Check,
    /// -y: repair.
    Yes,
    /// -p / -a: repair only what needs no decision.
    Preen,
}

/// A parsed command line that checks a device.
#[derive(Debug, PartialEq, Eq)]
pub struct Opts {
    pub mode: Mode,
    pub force: bool,
    pub device: PathBuf,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Opts),
    /// Print this text (help or version) on stdout and exit 0.
    Print(String),
}

/// Parses the arguments after the program name; `Err` is a usage error's message.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let argv = std::iter::once("fsck.daxfs".to_string()).chain(args);
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            return Ok(Parsed::Print(e.render().to_string()))
        }
        Err(e) => return Err(usage_message(&e)),
    };
    if [cli.no, cli.yes, cli.preen].iter().filter(|&&b| b).count() > 1 {
        return Err("only one of -n, -y and -p may be given".into());
    }
    let mode = if cli.yes {
        Mode::Yes
    } else if cli.preen {
        Mode::Preen
    } else {
        Mode::Check
    };
    Ok(Parsed::Run(Opts {
        mode,
        force: cli.force,
        device: cli.device.ok_or("no DEVICE given")?,
    }))
}

/// clap's error in the words fsck.daxfs has always used.
fn usage_message(e: &clap::Error) -> String {
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    match e.kind() {
        ErrorKind::UnknownArgument if arg.starts_with('-') && arg != "-" => {
            format!("unknown option {arg}")
        }
        ErrorKind::UnknownArgument => format!("unexpected extra argument {arg:?}"),
        ErrorKind::MissingRequiredArgument => "no DEVICE given".into(),
        _ => daxfs_cli::clap_error::first_line(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Result<Parsed, String> {
        parse(v.iter().map(|s| s.to_string()))
    }

    fn run(v: &[&str]) -> Opts {
        match p(v) {
            Ok(Parsed::Run(o)) => o,
            other => panic!("{v:?}: {other:?}"),
        }
    }

    #[test]
    fn check_only_is_the_default() {
        let o = run(&["dev"]);
        assert_eq!((o.mode, o.force), (Mode::Check, false));
        assert_eq!(o.device, PathBuf::from("dev"));
        assert_eq!(run(&["-n", "dev"]).mode, Mode::Check);
    }

    #[test]
    fn y_repairs_and_p_and_a_preen() {
        assert_eq!(run(&["-y", "dev"]).mode, Mode::Yes);
        assert_eq!(run(&["-p", "dev"]).mode, Mode::Preen);
        assert_eq!(run(&["-a", "dev"]).mode, Mode::Preen);
        // fsck(8) may pass both spellings of preen.
        assert_eq!(run(&["-p", "-a", "dev"]).mode, Mode::Preen);
    }

    #[test]
    fn flags_bundle_and_come_in_any_order() {
        let o = run(&["dev", "-pf"]);
        assert_eq!((o.mode, o.force), (Mode::Preen, true));
        let o = run(&["-n", "-f", "dev"]);
        assert_eq!((o.mode, o.force), (Mode::Check, true));
        assert_eq!(run(&["-n", "-n", "dev"]).mode, Mode::Check);
    }

    #[test]
    fn usage_errors_keep_their_messages() {
        let err = |v: &[&str]| p(v).err().unwrap_or_default();
        assert_eq!(err(&[]), "no DEVICE given");
        assert_eq!(err(&["-f"]), "no DEVICE given");
        assert_eq!(err(&["a", "b"]), "unexpected extra argument \"b\"");
        assert_eq!(err(&["-x", "a"]), "unknown option -x");
        assert_eq!(err(&["-nx", "a"]), "unknown option -x");
        assert_eq!(
            err(&["-n", "-y", "a"]),
            "only one of -n, -y and -p may be given"
        );
        assert_eq!(err(&["-ya", "a"]), "only one of -n, -y and -p may be given");
    }

    #[test]
    fn help_and_version_are_printed_not_errors() {
        for h in ["-h", "--help"] {
            let Ok(Parsed::Print(text)) = p(&[h]) else {
                panic!("{h} is not help")
            };
            assert!(
                text.contains("Usage: fsck.daxfs [-n | -y | -p] [-f] DEVICE"),
                "{text}"
            );
            assert!(text.contains("16 usage error"), "{text}");
        }
        for v in ["-V", "--version"] {
            assert_eq!(
                p(&[v]),
                Ok(Parsed::Print(format!(
                    "fsck.daxfs {}\n",
                    env!("CARGO_PKG_VERSION")
                )))
            );
        }
    }
}
