//! daxfs-man: writes the man pages and shell completions of the three tools from the
//! clap commands their binaries parse with, so the documentation cannot drift from the
//! options.
//!
//! `daxfs-man OUTDIR` writes OUTDIR/man8/{mkfs.daxfs,fsck.daxfs,daxfs}.8 (and
//! daxfs-mount.8, daxfs-pin.8, daxfs-stats.8, which daxfs.8 refers to) and
//! OUTDIR/completions/{bash,zsh,fish}/ for the installed names mkfs.daxfs, fsck.daxfs
//! and daxfs (the cargo binaries are mkfs-daxfs and fsck-daxfs).
//!
//! clap_mangen and clap_complete render a `clap::Command` as roff and as shell
//! completion scripts; with them the pages need no hand-written roff to keep in step
//! with the parsers (only the mount options' table is turned into roff here).

use clap::Parser;
use clap_complete::Shell;
use std::path::{Path, PathBuf};

/// Writes the man pages (section 8) and bash, zsh and fish completions of mkfs.daxfs,
/// fsck.daxfs and daxfs.
#[derive(Debug, Parser)]
#[command(name = "daxfs-man", version)]
struct Args {
    /// where man8/ and completions/ are written (created if missing)
    #[arg(value_name = "OUTDIR")]
    outdir: PathBuf,
}

/// One installed command: its name, its one-line summary for the NAME section, and its
/// clap definition.
fn commands() -> Vec<(&'static str, &'static str, clap::Command)> {
    vec![
        (
            "mkfs.daxfs",
            "format a device with an empty daxfs filesystem",
            daxfs_mkfs::cli::command(),
        ),
        (
            "fsck.daxfs",
            "check and repair a daxfs filesystem",
            daxfs_fsck::cli::command(),
        ),
        (
            "daxfs",
            "mount a daxfs device through FUSE, pin file ranges, show a mount's counters",
            daxfs_fuse::cli::command(),
        ),
    ]
}

fn main() {
    let args = Args::parse();
    if let Err(e) = write_all(&args.outdir) {
        eprintln!("daxfs-man: {e}");
        std::process::exit(1);
    }
}

fn write_all(out: &Path) -> Result<(), String> {
    let man8 = out.join("man8");
    mkdir(&man8)?;
    for (name, summary, cmd) in commands() {
        // The help's first paragraph becomes the DESCRIPTION; NAME gets one line.
        let long = cmd.get_long_about().or(cmd.get_about()).cloned();
        let mut cmd = cmd.name(name).bin_name(name).about(summary);
        if let Some(long) = long {
            cmd = cmd.long_about(long);
        }
        write_page(
            &man8.join(format!("{name}.8")),
            cmd.clone(),
            name == "daxfs",
        )?;
        cmd.build();
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let page = format!("{name}-{}", sub.get_name());
            write_page(
                &man8.join(format!("{page}.8")),
                sub.clone(),
                sub.get_name() == "mount",
            )?;
        }
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let dir = out.join("completions").join(shell.to_string());
            mkdir(&dir)?;
            clap_complete::generate_to(shell, &mut cmd, name, &dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    Ok(())
}

/// Renders `cmd` as a section-8 page; `mount_options` replaces the mount options'
/// help text (preformatted for a terminal) by roff sections of its own.
fn write_page(path: &Path, cmd: clap::Command, mount_options: bool) -> Result<(), String> {
    let cmd = if mount_options {
        // The page's own sections replace these; there is no daxfs-help(8).
        cmd.after_help(None::<&str>)
            .after_long_help(None::<&str>)
            .disable_help_subcommand(true)
    } else {
        cmd.disable_help_subcommand(true)
    };
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Administration")
        .source(format!("daxfs {}", env!("CARGO_PKG_VERSION")));
    let mut text = Vec::new();
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    if mount_options {
        man.render_title(&mut text).map_err(err)?;
        man.render_name_section(&mut text).map_err(err)?;
        man.render_synopsis_section(&mut text).map_err(err)?;
        man.render_description_section(&mut text).map_err(err)?;
        man.render_options_section(&mut text).map_err(err)?;
        if cmd.get_subcommands().next().is_some() {
            man.render_subcommands_section(&mut text).map_err(err)?;
        }
        text.extend_from_slice(mount_options_roff(daxfs_fuse::cli::MOUNT_OPTIONS_HELP).as_bytes());
        if cmd.get_version().is_some() {
            man.render_version_section(&mut text).map_err(err)?;
        }
    } else {
        man.render(&mut text).map_err(err)?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Escapes text for roff: backslashes, hyphens (a plain `-` may print as a dash), and
/// a leading `.` or `'` that would make the line a request.
fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The column where an option's meaning starts in `MOUNT_OPTIONS_HELP`.
const MEANING_COLUMN: usize = 25;

/// `MOUNT_OPTIONS_HELP` as roff: a MOUNT OPTIONS section with one tagged paragraph per
/// option, then MOUNT(8) AND FSTAB with the examples kept as they are.
fn mount_options_roff(help: &str) -> String {
    let (options, notes) = help.split_once("\n\n").unwrap_or((help, ""));
    let mut out = String::from(".SH \"MOUNT OPTIONS\"\n");
    let mut lines = options.lines();
    if let Some(heading) = lines.next() {
        out += &roff_text(heading.trim_end_matches(':'));
        out += ".\n";
    }
    for line in lines {
        let indent = line.len() - line.trim_start().len();
        if indent >= MEANING_COLUMN {
            // The meaning goes on.
            out += &roff_text(line.trim());
            out += "\n";
            continue;
        }
        let (names, meaning) = match line.get(..MEANING_COLUMN) {
            Some(head) if head.ends_with(' ') => (head.trim(), line[MEANING_COLUMN..].trim()),
            _ => (line.trim(), ""),
        };
        out += ".TP\n\\fB";
        out += &roff_text(names);
        out += "\\fR\n";
        if !meaning.is_empty() {
            out += &roff_text(meaning);
            out += "\n";
        }
    }
    if !notes.is_empty() {
        out += ".SH \"MOUNT(8) AND FSTAB\"\n";
        let mut preformatted = false;
        for line in notes.lines().skip(1) {
            let example = line.starts_with("  ");
            if example != preformatted {
                out += if example { ".nf\n" } else { ".fi\n" };
                preformatted = example;
            }
            out += &roff_text(if example { line } else { line.trim() });
            out += "\n";
        }
        if preformatted {
            out += ".fi\n";
        }
    }
    out
}

fn mkdir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}
