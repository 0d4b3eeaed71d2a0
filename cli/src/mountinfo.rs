//! The mount table as /proc/self/mountinfo gives it: the one parser of the tools (mkfs
//! and fsck refuse a mounted device, the daxfs command finds its own mount).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// One line of mountinfo: where, what type, from which source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mountpoint: PathBuf,
    pub fstype: String,
    /// The mount source (a device path for block filesystems, any string for FUSE).
    pub source: PathBuf,
}

/// Parses mountinfo text, in mount order (later lines are mounted later, on top).
/// Lines that do not parse are skipped: the kernel writes them, but a reader must not
/// fail on a format it does not know.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

/// The current mount table; empty if /proc/self/mountinfo is unreadable.
pub fn entries() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// "id parent maj:min root mountpoint opts [optional...] - fstype source superopts"
fn parse_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let mountpoint = left.split(' ').nth(4)?;
    let mut r = right.split(' ');
    let fstype = r.next()?;
    let source = r.next()?;
    Some(MountEntry {
        mountpoint: PathBuf::from(OsString::from_vec(unescape(mountpoint))),
        fstype: String::from_utf8_lossy(&unescape(fstype)).into_owned(),
        source: PathBuf::from(OsString::from_vec(unescape(source))),
    })
}

/// The mount point where `device` (or its canonical path) is mounted as a source; None
/// if it is not (or mountinfo is unreadable).
pub fn mount_point_of(device: &Path) -> Option<PathBuf> {
    let mut names = vec![device.to_path_buf()];
    if let Ok(real) = std::fs::canonicalize(device) {
        names.push(real);
    }
    entries()
        .into_iter()
        .find(|e| names.contains(&e.source))
        .map(|e| e.mountpoint)
}

/// The topmost mount at `mountpoint` (a canonical path).
pub fn mount_at(mountpoint: &Path) -> Option<MountEntry> {
    let want = mountpoint.as_os_str().as_bytes();
    entries()
        .into_iter()
        .rev()
        .find(|e| e.mountpoint.as_os_str().as_bytes() == want)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |c: &u8| (b'0'..=b'7').contains(c);
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(octal) {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_decode_and_a_short_escape_stays() {
        assert_eq!(unescape("/mnt/a\\040b"), b"/mnt/a b");
        assert_eq!(unescape("plain"), b"plain");
        assert_eq!(unescape("trail\\04"), b"trail\\04");
    }

    #[test]
    fn a_line_yields_mountpoint_type_and_source() {
        let t = "36 35 98:0 / /mnt/my\\040dir rw,noatime master:1 - fuse.daxfs /dev/shm/a\\040b.img rw\n\
                 garbage line\n\
                 37 35 0:5 / /tmp rw - tmpfs tmpfs rw\n";
        let e = parse(t);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].mountpoint, PathBuf::from("/mnt/my dir"));
        assert_eq!(e[0].fstype, "fuse.daxfs");
        assert_eq!(e[0].source, PathBuf::from("/dev/shm/a b.img"));
        assert_eq!(e[1].fstype, "tmpfs");
    }

    #[test]
    fn mount_at_finds_the_mount_on_top_of_a_path() {
        assert_eq!(
            mount_at(Path::new("/proc")).map(|m| m.fstype),
            Some("proc".into())
        );
        assert_eq!(mount_at(Path::new("/proc/self")), None);
    }
}
