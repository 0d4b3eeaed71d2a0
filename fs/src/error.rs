//! The core API's error type: an errno, as Linux filesystems report it.

use std::fmt;

/// A failed filesystem operation, carrying the errno that Linux would return.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

pub type Result<T> = std::result::Result<T, Errno>;

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EACCES: Errno = Errno(libc::EACCES);
    pub const EBUSY: Errno = Errno(libc::EBUSY);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const EXDEV: Errno = Errno(libc::EXDEV);
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const EFBIG: Errno = Errno(libc::EFBIG);
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    pub const EROFS: Errno = Errno(libc::EROFS);
    pub const EMLINK: Errno = Errno(libc::EMLINK);
    pub const ERANGE: Errno = Errno(libc::ERANGE);
    pub const ENAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    pub const ENOTEMPTY: Errno = Errno(libc::ENOTEMPTY);
    pub const ELOOP: Errno = Errno(libc::ELOOP);
    pub const ENODATA: Errno = Errno(libc::ENODATA);
    pub const ENXIO: Errno = Errno(libc::ENXIO);
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    pub const E2BIG: Errno = Errno(libc::E2BIG);
    pub const ENOTTY: Errno = Errno(libc::ENOTTY);
    pub const EFAULT: Errno = Errno(libc::EFAULT);
    pub const EOVERFLOW: Errno = Errno(libc::EOVERFLOW);
    pub const EINTR: Errno = Errno(libc::EINTR);
    pub const ENOSYS: Errno = Errno(libc::ENOSYS);

    pub fn code(self) -> i32 {
        self.0
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Errno({}: {})",
            self.0,
            std::io::Error::from_raw_os_error(self.0)
        )
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> Self {
        std::io::Error::from_raw_os_error(e.0)
    }
}

impl From<daxfs_pmem::AccessError> for Errno {
    /// A copy through a view outside its range is EINVAL, a store through a read-only
    /// view EBADF: what read(2)/write(2) answer for the same mistakes.
    fn from(e: daxfs_pmem::AccessError) -> Errno {
        match e {
            daxfs_pmem::AccessError::OutOfRange => Errno::EINVAL,
            daxfs_pmem::AccessError::ReadOnly => Errno::EBADF,
            daxfs_pmem::AccessError::Misaligned => Errno::EINVAL,
        }
    }
}
