//! What the FUSE-over-io_uring tests share: whether this machine can run them, the
//! `enable_uring` switch (set only around a mount's INIT, always put back), and the
//! fuse connection id of a mount (for fusectl's abort).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The fuse module's switch for io_uring (root may set it; tests put it back).
pub const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Why the io_uring tests cannot run here, or None if they can.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (mounting and enable_uring need root)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    if !Path::new(ENABLE_URING).exists() {
        return Some(format!(
            "{ENABLE_URING} is absent (kernel without CONFIG_FUSE_IO_URING)"
        ));
    }
    None
}

/// Sets `enable_uring` to Y; puts the previous value back when restored or dropped.
pub struct EnableUring(Option<String>);

impl EnableUring {
    pub fn set() -> EnableUring {
        let previous = std::fs::read_to_string(ENABLE_URING).expect("read enable_uring");
        let guard = EnableUring(Some(previous.trim().to_string()));
        std::fs::write(ENABLE_URING, "Y").expect("set enable_uring=Y");
        guard
    }

    pub fn restore(&mut self) {
        if let Some(previous) = self.0.take() {
            if let Err(e) = std::fs::write(ENABLE_URING, &previous) {
                eprintln!("enable_uring: restoring {previous} FAILED: {e}");
            }
        }
    }
}

impl Drop for EnableUring {
    fn drop(&mut self) {
        self.restore();
    }
}

/// The fuse connection id of the mount at `dir` (its device number, kernel encoding).
pub fn connection(dir: &Path) -> u64 {
    let dev = std::fs::metadata(dir).expect("stat the mount").dev();
    (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev))
}
