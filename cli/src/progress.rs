//! A progress display on stderr, shared by mkfs, fsck and the daxfs command.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// A progress display on stderr for the binaries: one line updated in place when
/// stderr is a terminal, otherwise a line per quarter. The binaries enable it only
/// for large devices (small ones finish before anyone could read it).
pub struct ProgressMeter {
    enabled: bool,
    tty: bool,
    stage: String,
    last_pct: Option<u64>,
    last_draw: Option<Instant>,
    open_line: bool,
}

impl ProgressMeter {
    pub fn new(enabled: bool) -> ProgressMeter {
        ProgressMeter {
            enabled,
            tty: std::io::stderr().is_terminal(),
            stage: String::new(),
            last_pct: None,
            last_draw: None,
            open_line: false,
        }
    }

    /// Reports `done` of `total` for `stage`.
    pub fn update(&mut self, stage: &str, done: u64, total: u64) {
        if !self.enabled || total == 0 {
            return;
        }
        if stage != self.stage {
            self.finish();
            self.stage = stage.to_string();
            self.last_pct = None;
        }
        let pct = done.min(total) * 100 / total;
        let mut err = std::io::stderr().lock();
        if self.tty {
            let due = self
                .last_draw
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
            if self.last_pct != Some(pct) && (due || pct == 100) {
                let _ = write!(err, "\r{stage}: {pct:3}%");
                let _ = err.flush();
                self.last_pct = Some(pct);
                self.last_draw = Some(Instant::now());
                self.open_line = true;
            }
        } else {
            let quarter = pct / 25;
            if self.last_pct.is_none_or(|q| q != quarter) {
                let _ = writeln!(err, "{stage}: {pct}%");
                self.last_pct = Some(quarter);
            }
        }
    }

    /// Ends an in-place line, if one is open.
    pub fn finish(&mut self) {
        if self.open_line {
            let _ = writeln!(std::io::stderr());
            self.open_line = false;
        }
    }
}

impl Drop for ProgressMeter {
    fn drop(&mut self) {
        self.finish();
    }
}
