//! File handles: the low 32 bits of a handle are the open(2) flags of the open, the high
//! 32 bits a serial number that makes it unique; the long-term pins taken through a
//! handle (DAXFS_IOC_PIN) are kept per handle and released with the handle.

use super::{lock_ignoring_poison, FuseAdapter};
use crate::ioctl::{PinArg, PinStatus};
use daxfs::Errno;
use daxfs::{PinHolder, RangePin};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Long-term pins by file handle.
pub(super) type PinTable = Arc<Mutex<HashMap<u64, Vec<RangePin>>>>;

/// Whether handle `fh`'s pins want their holder's attention (a break asked for one, or
/// revoked one): POLLPRI.
pub(super) fn pins_need_attention(pins: &[RangePin]) -> bool {
    pins.iter().any(|p| p.break_requested() || p.revoked())
}

/// The file handle given to the kernel for an open with open(2) `flags`.
pub fn handle_for(flags: i32) -> u64 {
    u64::from(flags as u32)
}

/// The open(2) flags a handle was opened with.
pub fn handle_flags(fh: u64) -> i32 {
    fh as u32 as i32
}

impl FuseAdapter {
    /// A new file handle for an open with open(2) `flags`.
    pub(super) fn new_handle(&self, flags: i32) -> u64 {
        let serial = self.next_handle.fetch_add(1, Ordering::Relaxed);
        (serial << 32) | handle_for(flags)
    }

    /// DAXFS_IOC_PIN on handle `fh`, for `holder` (the caller).
    pub(super) fn ioctl_pin(
        &self,
        ino: u64,
        fh: u64,
        arg: PinArg,
        holder: &PinHolder,
    ) -> Result<(), Errno> {
        let pin = self
            .fs()
            .pin_range_for(ino, arg.offset, arg.length, holder)?;
        lock_ignoring_poison(&self.pins)
            .entry(fh)
            .or_default()
            .push(pin);
        Ok(())
    }

    /// DAXFS_IOC_UNPIN on handle `fh`: releases one pin of exactly that range (a held
    /// one first); ECANCELED when that pin had been revoked (it is given back all the
    /// same), so that a holder learns that it did not hold the range all along.
    pub(super) fn ioctl_unpin(&self, fh: u64, arg: PinArg) -> Result<(), Errno> {
        let pin = {
            let mut table = lock_ignoring_poison(&self.pins);
            let list = table.get_mut(&fh).ok_or(Errno::EINVAL)?;
            let same = |p: &RangePin| p.offset() == arg.offset && p.len() == arg.length;
            let i = list
                .iter()
                .position(|p| same(p) && !p.revoked())
                .or_else(|| list.iter().position(same))
                .ok_or(Errno::EINVAL)?;
            let pin = list.swap_remove(i);
            if list.is_empty() {
                table.remove(&fh);
            }
            pin
        };
        let revoked = pin.revoked();
        self.fs().unpin_range(pin);
        if revoked {
            return Err(Errno(libc::ECANCELED));
        }
        Ok(())
    }

    /// DAXFS_IOC_PIN_STATUS on handle `fh`.
    pub(super) fn pin_status(&self, fh: u64) -> PinStatus {
        let table = lock_ignoring_poison(&self.pins);
        let mut st = PinStatus::default();
        for p in table.get(&fh).into_iter().flatten() {
            st.pins += 1;
            st.breaking += u64::from(p.break_requested());
            st.revoked += u64::from(p.revoked());
        }
        st
    }

    /// Releases every pin of handle `fh` (the handle is being released).
    pub(super) fn release_pins(&self, fh: u64) {
        lock_ignoring_poison(&self.polls).remove(&fh);
        let pins = lock_ignoring_poison(&self.pins).remove(&fh);
        for pin in pins.into_iter().flatten() {
            self.fs().unpin_range(pin);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_handle_carries_the_open_flags() {
        for f in [
            libc::O_RDONLY,
            libc::O_WRONLY | libc::O_APPEND,
            libc::O_RDWR | libc::O_DIRECT | libc::O_LARGEFILE,
        ] {
            assert_eq!(handle_flags(handle_for(f)), f);
        }
    }
}
