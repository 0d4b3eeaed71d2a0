//! daxfs-man, through the built binary: the pages and completions it writes, that the
//! pages document every mount option, and that man(1) renders them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking

use std::path::{Path, PathBuf};
use std::process::Command;

const DAXFS_MAN: &str = env!("CARGO_BIN_EXE_daxfs-man");
const PAGES: [&str; 3] = ["mkfs.daxfs", "fsck.daxfs", "daxfs"];

/// An output directory, removed on drop (even when the test fails).
struct OutDir(PathBuf);

impl OutDir {
    fn written(tag: &str) -> OutDir {
        let d = OutDir(
            std::env::temp_dir().join(format!("daxfs-man-test-{tag}-{}", std::process::id())),
        );
        let _ = std::fs::remove_dir_all(&d.0);
        let o = Command::new(DAXFS_MAN).arg(&d.0).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        d
    }

    fn page(&self, name: &str) -> PathBuf {
        self.0.join("man8").join(format!("{name}.8"))
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A page's text with roff's escaped hyphens plain again.
fn page_text(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap().replace("\\-", "-")
}

#[test]
fn writes_the_three_man_pages_under_their_installed_names() {
    let d = OutDir::written("pages");
    for name in PAGES {
        let text = page_text(&d.page(name));
        assert!(text.starts_with(".ie"), "{name}: not roff");
        assert!(text.contains(&format!(".TH {name} 8")), "{name}: no title");
    }
    assert!(page_text(&d.page("mkfs.daxfs")).contains("--journal-size"));
    assert!(page_text(&d.page("fsck.daxfs")).contains("16 usage error"));
}

#[test]
fn writes_bash_zsh_and_fish_completions_for_each_command() {
    let d = OutDir::written("completions");
    for name in PAGES {
        for (shell, file) in [
            ("bash", format!("{name}.bash")),
            ("zsh", format!("_{name}")),
            ("fish", format!("{name}.fish")),
        ] {
            let p = d.0.join("completions").join(shell).join(&file);
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            assert!(
                text.contains(name),
                "{}: does not complete {name}",
                p.display()
            );
        }
    }
}

#[test]
fn daxfs_pages_name_every_mount_option() {
    let d = OutDir::written("options");
    for page in ["daxfs", "daxfs-mount"] {
        let text = page_text(&d.page(page));
        for opt in daxfs_fuse::cli::MOUNT_OPTION_EXAMPLES {
            for item in opt.split(',') {
                let name = item.split('=').next().unwrap_or(item);
                let name = if name.starts_with("x-") { "x-*" } else { name };
                assert!(text.contains(name), "{page}.8 does not name {name}");
            }
        }
    }
}

#[test]
fn man_renders_every_page_without_warnings() {
    if Command::new("man").arg("--version").output().is_err() {
        println!("skipped: man(1) is not installed");
        return;
    }
    let d = OutDir::written("render");
    let pages: Vec<PathBuf> = std::fs::read_dir(d.0.join("man8"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(pages.len() >= PAGES.len());
    for p in pages {
        let o = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&p)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && err.is_empty(),
            "{}: {err}",
            p.display()
        );
        assert!(!o.stdout.is_empty(), "{}: rendered nothing", p.display());
    }
}
