//! POSIX ACLs: the part of their semantics a FUSE filesystem owns.
//!
//! With FUSE_POSIX_ACL the kernel enforces ACLs (it reads them through getxattr and
//! caches them) and checks who may set them; the filesystem stores them as the xattrs
//! `system.posix_acl_access` / `system.posix_acl_default` and keeps three things in line,
//! as ext4 does through the VFS helpers (fs/posix_acl.c):
//! - setting an access ACL sets the mode's permission bits from it, and an ACL that says
//!   no more than the mode is not stored (`posix_acl_update_mode`);
//! - chmod rewrites the ACL's owner, mask (or group) and other entries (`posix_acl_chmod`);
//! - a new inode in a directory with a default ACL inherits it, masked by the mode asked
//!   for, instead of having the umask applied (`posix_acl_create`).
//!
//! Values are the kernel's xattr format: a little-endian u32 version (2), then 8-byte
//! entries `{u16 tag, u16 perm, u32 id}`.

use crate::error::{Errno, Result};

pub const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
pub const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const HEADER: usize = 4;
const ENTRY: usize = 8;

pub const USER_OBJ: u16 = 0x01;
pub const USER: u16 = 0x02;
pub const GROUP_OBJ: u16 = 0x04;
pub const GROUP: u16 = 0x08;
pub const MASK: u16 = 0x10;
pub const OTHER: u16 = 0x20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclEntry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

/// A parsed, valid ACL (exactly one owner, group and other entry; a mask when there
/// are named entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl(pub Vec<AclEntry>);

impl Acl {
    /// Parses and validates an xattr value; EINVAL if it is not a valid ACL.
    pub fn parse(v: &[u8]) -> Result<Acl> {
        if v.len() < HEADER || !(v.len() - HEADER).is_multiple_of(ENTRY) {
            return Err(Errno::EINVAL);
        }
        if u32::from_le_bytes([v[0], v[1], v[2], v[3]]) != VERSION {
            return Err(Errno::EINVAL);
        }
        let entries: Vec<AclEntry> = v[HEADER..]
            .chunks_exact(ENTRY)
            .map(|c| AclEntry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        let count = |t: u16| entries.iter().filter(|e| e.tag == t).count();
        let known = [USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER];
        if entries
            .iter()
            .any(|e| !known.contains(&e.tag) || e.perm & !7 != 0)
            || count(USER_OBJ) != 1
            || count(GROUP_OBJ) != 1
            || count(OTHER) != 1
            || count(MASK) > 1
            || (count(USER) + count(GROUP) > 0 && count(MASK) == 0)
        {
            return Err(Errno::EINVAL);
        }
        Ok(Acl(entries))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER + ENTRY * self.0.len());
        v.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.0 {
            v.extend_from_slice(&e.tag.to_le_bytes());
            v.extend_from_slice(&e.perm.to_le_bytes());
            v.extend_from_slice(&e.id.to_le_bytes());
        }
        v
    }

    fn perm_of(&self, tag: u16) -> Option<u32> {
        self.0.iter().find(|e| e.tag == tag).map(|e| e.perm as u32)
    }

    /// The permission bits (0o777) the ACL implies: owner, mask (else group), other.
    pub fn mode_bits(&self) -> u32 {
        let u = self.perm_of(USER_OBJ).unwrap_or(0);
        let g = self
            .perm_of(MASK)
            .or_else(|| self.perm_of(GROUP_OBJ))
            .unwrap_or(0);
        let o = self.perm_of(OTHER).unwrap_or(0);
        (u << 6) | (g << 3) | o
    }

    /// True when the mode bits say everything the ACL says (no named entries, no mask).
    pub fn is_minimal(&self) -> bool {
        self.0
            .iter()
            .all(|e| matches!(e.tag, USER_OBJ | GROUP_OBJ | OTHER))
    }

    /// chmod: the owner, mask (else group) and other entries take the new mode's bits.
    pub fn chmod(&mut self, mode: u32) {
        let has_mask = self.perm_of(MASK).is_some();
        for e in &mut self.0 {
            let bits = match e.tag {
                USER_OBJ => mode >> 6,
                MASK => mode >> 3,
                GROUP_OBJ if !has_mask => mode >> 3,
                OTHER => mode,
                _ => continue,
            };
            e.perm = (bits & 7) as u16;
        }
    }

    /// Inheritance (`posix_acl_create_masq`): masks a copy of a default ACL by the
    /// permission bits `mode` asked for; returns the access ACL and the new mode bits.
    pub fn create_masq(&self, mode: u32) -> (Acl, u32) {
        let mut acl = self.clone();
        let mut m = mode & 0o777;
        let has_mask = acl.perm_of(MASK).is_some();
        for e in &mut acl.0 {
            let p = e.perm as u32;
            match e.tag {
                USER_OBJ => {
                    let np = p & (m >> 6);
                    e.perm = np as u16;
                    m &= (np << 6) | !0o700;
                }
                OTHER => {
                    let np = p & m;
                    e.perm = np as u16;
                    m &= np | !0o007;
                }
                // Named entries keep their perms (the mask limits them); the group
                // class is masked below.
                _ => {}
            }
        }
        let gtag = if has_mask { MASK } else { GROUP_OBJ };
        if let Some(e) = acl.0.iter_mut().find(|e| e.tag == gtag) {
            let np = e.perm as u32 & (m >> 3);
            e.perm = np as u16;
            m &= (np << 3) | !0o070;
        }
        (acl, m & 0o777)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Acl {
        Acl(entries
            .iter()
            .map(|&(tag, perm, id)| AclEntry { tag, perm, id })
            .collect())
    }

    const ANY: u32 = u32::MAX;

    #[test]
    fn parse_round_trips_what_encode_writes() {
        let a = acl(&[
            (USER_OBJ, 6, ANY),
            (USER, 6, 1000),
            (GROUP_OBJ, 4, ANY),
            (MASK, 6, ANY),
            (OTHER, 0, ANY),
        ]);
        assert_eq!(Acl::parse(&a.encode()).unwrap(), a);
    }

    #[test]
    fn parse_rejects_a_named_entry_without_mask_and_bad_headers() {
        let no_mask = acl(&[
            (USER_OBJ, 6, ANY),
            (USER, 6, 1000),
            (GROUP_OBJ, 4, ANY),
            (OTHER, 0, ANY),
        ]);
        assert_eq!(Acl::parse(&no_mask.encode()), Err(Errno::EINVAL));
        assert_eq!(Acl::parse(&[1, 0, 0, 0]), Err(Errno::EINVAL));
        assert_eq!(Acl::parse(&[2, 0, 0]), Err(Errno::EINVAL));
    }

    #[test]
    fn mode_bits_take_the_mask_for_the_group_class() {
        let a = acl(&[
            (USER_OBJ, 6, ANY),
            (USER, 7, 1000),
            (GROUP_OBJ, 4, ANY),
            (MASK, 6, ANY),
            (OTHER, 0, ANY),
        ]);
        assert_eq!(a.mode_bits(), 0o660);
        assert!(!a.is_minimal());
    }

    #[test]
    fn chmod_rewrites_owner_mask_and_other_but_not_the_group_entry() {
        let mut a = acl(&[
            (USER_OBJ, 6, ANY),
            (USER, 7, 1000),
            (GROUP_OBJ, 4, ANY),
            (MASK, 6, ANY),
            (OTHER, 0, ANY),
        ]);
        a.chmod(0o751);
        assert_eq!(a.mode_bits(), 0o751);
        assert_eq!(a.perm_of(GROUP_OBJ), Some(4));
        assert_eq!(a.perm_of(USER), Some(7));
    }

    #[test]
    fn create_masq_masks_the_default_acl_by_the_mode_asked_for() {
        // setfacl -d -m u:1000:rwx on a 755 directory, then creat(0666).
        let def = acl(&[
            (USER_OBJ, 7, ANY),
            (USER, 7, 1000),
            (GROUP_OBJ, 5, ANY),
            (MASK, 7, ANY),
            (OTHER, 5, ANY),
        ]);
        let (a, mode) = def.create_masq(0o666);
        assert_eq!(mode, 0o664);
        assert_eq!(a.perm_of(USER_OBJ), Some(6));
        assert_eq!(a.perm_of(MASK), Some(6));
        assert_eq!(a.perm_of(GROUP_OBJ), Some(5));
        assert_eq!(a.perm_of(OTHER), Some(4));
    }
}
