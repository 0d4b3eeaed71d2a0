//! Filesystem-wide requests: the label (FS_IOC_GETFSLABEL / FS_IOC_SETFSLABEL) and
//! FITRIM, with the rules ext4 applies to them (fs/ext4/ioctl.c `ext4_ioctl_setlabel`,
//! fs/ext4/mballoc.c `ext4_trim_fs`).

use crate::error::{Errno, Result};
use crate::filesystem::DaxFs;
use crate::inode::lock;
use crate::types::*;
use daxfs_format::BLOCK_SIZE;

/// Longest label: the superblock's 64-byte field keeps a terminating NUL.
pub const LABEL_MAX: usize = 63;

impl DaxFs {
    /// The filesystem's label (the superblock's, up to its NUL).
    pub fn label(&self) -> Vec<u8> {
        let sb = lock(&self.sb);
        let end = sb
            .label
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(sb.label.len());
        sb.label[..end].to_vec()
    }

    /// Sets the label on behalf of `cred`: root only (CAP_SYS_ADMIN, else EPERM), at most
    /// [`LABEL_MAX`] bytes and no NUL (EINVAL), then EROFS on a read-only mount, in
    /// ext4's order. Both superblock copies are rewritten, each in its own journal
    /// transaction (`write_superblock`): a crash leaves each copy whole, the old label or
    /// the new one, never a torn copy.
    pub fn set_label(&self, cred: &Cred, label: &[u8]) -> Result<()> {
        if cred.uid != 0 {
            return Err(Errno::EPERM);
        }
        if label.len() > LABEL_MAX || label.contains(&0) {
            return Err(Errno::EINVAL);
        }
        self.check_writable()?;
        // Held across both writes: two concurrent changes cannot leave the copies (or
        // memory and the copies) with different labels.
        let mut sb = lock(&self.sb);
        let mut field = [0u8; 64];
        field[..label.len()].copy_from_slice(label);
        let before = sb.label;
        sb.label = field;
        let enc = sb.encode();
        if let Err(e) = self.write_superblock(0, &enc) {
            sb.label = before;
            return Err(e);
        }
        // The primary holds the new label from here on, and the mount reads the primary.
        self.write_superblock(BLOCK_SIZE, &enc)
    }

    /// FITRIM on behalf of `cred`: validates the range as ext4 does and discards
    /// nothing, returning 0 bytes trimmed. On persistent memory a discard has nothing to
    /// give back (no flash translation layer to tell, and the pmem driver offers no
    /// discard), and the allocator zeroes blocks when it hands them out, so freed blocks
    /// need no scrubbing either (docs/DESIGN.md, "FITRIM"). Root only (EPERM);
    /// EINVAL for a `len` shorter than a block, a `start` past the end of the
    /// filesystem, or a `minlen` larger than the data area (no free extent can be).
    pub fn trim(&self, cred: &Cred, start: u64, len: u64, minlen: u64) -> Result<u64> {
        if cred.uid != 0 {
            return Err(Errno::EPERM);
        }
        let size = self.geo.total_blocks * BLOCK_SIZE;
        if len < BLOCK_SIZE || start >= size || minlen > self.geo.data_blocks * BLOCK_SIZE {
            return Err(Errno::EINVAL);
        }
        Ok(0)
    }
}
