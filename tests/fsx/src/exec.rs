//! Applying a step to a directory tree and normalizing what happened into an `Outcome`
//! (a value or an errno) that can be compared across filesystems; plus the final tree
//! snapshot. Only properties that must agree between correct filesystems are kept:
//! timestamps, inode numbers, st_blocks, directory sizes and hole granularity are dropped.

use crate::ops::{pattern, xattr_name, FallocMode, Op, Step, BLOCK};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// An errno, printed by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    fn last() -> Errno {
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::EIO => "EIO",
            libc::ENXIO => "ENXIO",
            libc::EBADF => "EBADF",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::EXDEV => "EXDEV",
            libc::ENODEV => "ENODEV",
            libc::ENOTDIR => "ENOTDIR",
            libc::EISDIR => "EISDIR",
            libc::EINVAL => "EINVAL",
            libc::EFBIG => "EFBIG",
            libc::ENOSPC => "ENOSPC",
            libc::ESPIPE => "ESPIPE",
            libc::EROFS => "EROFS",
            libc::EMLINK => "EMLINK",
            libc::ERANGE => "ERANGE",
            libc::ENAMETOOLONG => "ENAMETOOLONG",
            libc::ENOSYS => "ENOSYS",
            libc::ENOTEMPTY => "ENOTEMPTY",
            libc::ENODATA => "ENODATA",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::E2BIG => "E2BIG",
            libc::ENOTCONN => "ENOTCONN",
            libc::ETXTBSY => "ETXTBSY",
            _ => return write!(f, "errno {}", self.0),
        };
        f.write_str(name)
    }
}

/// File type letter as in `ls -l`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileKind(pub char);

impl FileKind {
    fn of(mode: u32) -> FileKind {
        FileKind(match mode & libc::S_IFMT {
            libc::S_IFREG => '-',
            libc::S_IFDIR => 'd',
            libc::S_IFLNK => 'l',
            libc::S_IFIFO => 'p',
            libc::S_IFSOCK => 's',
            libc::S_IFCHR => 'c',
            libc::S_IFBLK => 'b',
            _ => '?',
        })
    }
}

/// The comparable part of a stat: no times, inode numbers or block counts; no size for
/// directories (it is filesystem-specific).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatInfo {
    pub kind: FileKind,
    pub mode: u32,
    pub nlink: u64,
    pub size: Option<u64>,
}

impl StatInfo {
    fn new(mode: u32, nlink: u64, size: u64) -> StatInfo {
        let kind = FileKind::of(mode);
        StatInfo {
            kind,
            mode: mode & 0o7777,
            nlink,
            size: if kind.0 == 'd' { None } else { Some(size) },
        }
    }
}

impl fmt::Display for StatInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:04o} nlink={}", self.kind.0, self.mode, self.nlink)?;
        if let Some(size) = self.size {
            write!(f, " size={size}")?;
        }
        Ok(())
    }
}

/// A successful op's normalized result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Done,
    Count(u64),
    Appended {
        written: u64,
        size: u64,
    },
    Data(Vec<u8>),
    Stat(StatInfo),
    /// SEEK_DATA/SEEK_HOLE result satisfied the semantic invariant.
    SeekOk,
    /// The op's own invariant failed on this side (always a failure, even if both agree).
    Invalid(String),
    Names(Vec<String>),
    /// The op only applies to regular files and the path is something else.
    NotFile,
    /// Not performed (e.g. an insert that would grow the file past the cap).
    Skipped(&'static str),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Done => f.write_str("ok"),
            Value::Count(n) => write!(f, "{n}"),
            Value::Appended { written, size } => write!(f, "wrote {written}, size now {size}"),
            Value::Data(d) => {
                write!(f, "{} bytes, fnv {:016x}", d.len(), fnv(d))?;
                if !d.is_empty() {
                    let head: Vec<String> = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
                    write!(
                        f,
                        " [{}{}]",
                        head.join(" "),
                        if d.len() > 8 { " .." } else { "" }
                    )?;
                }
                Ok(())
            }
            Value::Stat(s) => write!(f, "{s}"),
            Value::SeekOk => f.write_str("seek ok"),
            Value::Invalid(why) => write!(f, "INVALID: {why}"),
            Value::Names(n) => write!(f, "[{}]", n.join(", ")),
            Value::NotFile => f.write_str("not a regular file"),
            Value::Skipped(why) => write!(f, "skipped ({why})"),
        }
    }
}

/// FNV-1a, to print data compactly.
pub fn fnv(d: &[u8]) -> u64 {
    d.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An op's normalized result.
pub type Outcome = Result<Value, Errno>;

/// Prints an outcome as `ok ...` or the errno name.
pub fn show(o: &Outcome) -> String {
    match o {
        Ok(v) => v.to_string(),
        Err(e) => format!("error {e}"),
    }
}

/// One entry of a tree snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub stat: StatInfo,
    /// File contents (regular files) or link target (symlinks).
    pub data: Option<Vec<u8>>,
    /// `user.*` xattrs, sorted by name.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Relative path → entry, for every object below the work tree root.
pub type Tree = BTreeMap<String, Entry>;

/// A filesystem tree ops can be applied to. `DirFs` is the real one; tests use fakes.
pub trait Fs {
    fn apply(&mut self, step: &Step) -> Outcome;
    fn snapshot(&mut self) -> Result<Tree, String>;
}

/// A work tree in a real directory. On the reference, fallocate modes the filesystem
/// lacks (tmpfs: zero, collapse, insert) can be emulated with reads and writes, following
/// the errno rules of ext4/XFS, so the subject's native implementation has something to be
/// compared against.
pub struct DirFs {
    root: PathBuf,
    emulate: Vec<FallocMode>,
    /// INSERT_RANGE is skipped when it would grow a file beyond this size.
    grow_cap: u64,
    page: u64,
}

/// Closes the descriptor on drop.
struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: self.0 is a descriptor this struct opened and nothing else closes.
        unsafe {
            libc::close(self.0);
        }
    }
}

/// Unmaps on drop.
struct Map {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: ptr/len come from a successful mmap and are unmapped only here.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

fn check(ret: libc::c_int) -> Result<(), Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

fn check_size(ret: isize) -> Result<u64, Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as u64)
    }
}

fn to_off(v: u64) -> Result<libc::off_t, Errno> {
    libc::off_t::try_from(v).map_err(|_| Errno(libc::EFBIG))
}

fn cstr(s: &str) -> Result<CString, Errno> {
    CString::new(s).map_err(|_| Errno(libc::EINVAL))
}

fn fstat(fd: &Fd) -> Result<libc::stat, Errno> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open and st is a valid, writable stat buffer.
    check(unsafe { libc::fstat(fd.0, &mut st) })?;
    Ok(st)
}

fn is_reg(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// pread until `len` bytes or EOF.
fn pread_all(fd: &Fd, off: u64, len: u64) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; usize::try_from(len).map_err(|_| Errno(libc::ENOMEM))?];
    let mut done = 0usize;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: rest is a writable buffer of rest.len() bytes; fd is open.
        let n = unsafe {
            libc::pread(
                fd.0,
                rest.as_mut_ptr().cast(),
                rest.len(),
                to_off(off + done as u64)?,
            )
        };
        let n = check_size(n)?;
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    buf.truncate(done);
    Ok(buf)
}

/// One pwrite call; returns the byte count it reported.
fn pwrite(fd: &Fd, off: u64, data: &[u8]) -> Result<u64, Errno> {
    // SAFETY: data is a readable buffer of data.len() bytes; fd is open.
    let n = unsafe { libc::pwrite(fd.0, data.as_ptr().cast(), data.len(), to_off(off)?) };
    check_size(n)
}

fn pwrite_all(fd: &Fd, off: u64, data: &[u8]) -> Result<(), Errno> {
    let mut done = 0usize;
    while done < data.len() {
        let n = pwrite(fd, off + done as u64, &data[done..])?;
        if n == 0 {
            return Err(Errno(libc::EIO));
        }
        done += n as usize;
    }
    Ok(())
}

fn ftruncate(fd: &Fd, size: u64) -> Result<(), Errno> {
    // SAFETY: plain syscall on an open descriptor.
    check(unsafe { libc::ftruncate(fd.0, to_off(size)?) })
}

impl DirFs {
    pub fn new(root: PathBuf, emulate: Vec<FallocMode>, grow_cap: u64) -> DirFs {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        DirFs {
            root,
            emulate,
            grow_cap,
            page: u64::try_from(page).unwrap_or(4096).max(1),
        }
    }

    fn path(&self, rel: &str) -> Result<CString, Errno> {
        CString::new(self.root.join(rel).as_os_str().as_bytes()).map_err(|_| Errno(libc::EINVAL))
    }

    fn open(&self, rel: &str, flags: libc::c_int) -> Result<Fd, Errno> {
        let p = self.path(rel)?;
        // SAFETY: p is a NUL-terminated path; mode is passed as the variadic argument.
        let fd = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, 0o644 as libc::c_uint) };
        if fd < 0 {
            Err(Errno::last())
        } else {
            Ok(Fd(fd))
        }
    }

    fn write(&self, no: u64, rel: &str, off: u64, len: u64) -> Outcome {
        let fd = self.open(rel, libc::O_RDWR | libc::O_CREAT)?;
        let data = pattern(no, off, len as usize);
        Ok(Value::Count(pwrite(&fd, off, &data)?))
    }

    fn append(&self, no: u64, rel: &str, len: u64) -> Outcome {
        let fd = self.open(rel, libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT)?;
        let data = pattern(no, 0, len as usize);
        // SAFETY: data is a readable buffer of data.len() bytes; fd is open.
        let n = unsafe { libc::write(fd.0, data.as_ptr().cast(), data.len()) };
        let written = check_size(n)?;
        let size = fstat(&fd)?.st_size as u64;
        Ok(Value::Appended { written, size })
    }

    fn read(&self, rel: &str, off: u64, len: u64) -> Outcome {
        let fd = self.open(rel, libc::O_RDONLY)?;
        Ok(Value::Data(pread_all(&fd, off, len)?))
    }

    fn truncate(&self, rel: &str, size: u64) -> Outcome {
        let p = self.path(rel)?;
        // SAFETY: p is a NUL-terminated path.
        check(unsafe { libc::truncate(p.as_ptr(), to_off(size)?) })?;
        Ok(Value::Done)
    }

    fn falloc(&self, rel: &str, mode: FallocMode, off: u64, len: u64) -> Outcome {
        let fd = self.open(rel, libc::O_RDWR)?;
        let st = fstat(&fd)?;
        let size = st.st_size as u64;
        if mode == FallocMode::Insert && size.saturating_add(len) > self.grow_cap {
            return Ok(Value::Skipped("insert would exceed the size cap"));
        }
        if self.emulate.contains(&mode) {
            return emulate_falloc(&fd, mode, off, len, size);
        }
        // SAFETY: plain syscall on an open descriptor.
        check(unsafe { libc::fallocate(fd.0, mode.bits(), to_off(off)?, to_off(len)?) })?;
        Ok(Value::Done)
    }

    /// The mmap window for an op: `off` wraps into the file, the end is clamped to EOF, so
    /// mapped accesses never go beyond the size (no SIGBUS on a correct filesystem).
    fn window(&self, size: u64, off: u64, len: u64) -> (u64, u64, u64) {
        let start = off % size;
        let end = (start + len).min(size);
        let map_start = start / self.page * self.page;
        (map_start, start, end)
    }

    fn mmap_read(&self, rel: &str, off: u64, len: u64) -> Outcome {
        let fd = self.open(rel, libc::O_RDONLY)?;
        let st = fstat(&fd)?;
        if !is_reg(&st) {
            return Ok(Value::NotFile);
        }
        let size = st.st_size as u64;
        if size == 0 {
            return Ok(Value::Data(Vec::new()));
        }
        let (map_start, start, end) = self.window(size, off, len);
        let map = self.map(&fd, map_start, end, libc::PROT_READ)?;
        let from = (start - map_start) as usize;
        let n = (end - start) as usize;
        // SAFETY: the mapping covers [map_start, end) of the file, inside its size, so
        // bytes [from, from + n) of the mapping are readable.
        let bytes = unsafe { std::slice::from_raw_parts(map.ptr.cast::<u8>().add(from), n) };
        Ok(Value::Data(bytes.to_vec()))
    }

    fn mmap_write(&self, no: u64, rel: &str, off: u64, len: u64) -> Outcome {
        let fd = self.open(rel, libc::O_RDWR)?;
        let st = fstat(&fd)?;
        if !is_reg(&st) {
            return Ok(Value::NotFile);
        }
        let size = st.st_size as u64;
        if size == 0 {
            return Ok(Value::Count(0));
        }
        let (map_start, start, end) = self.window(size, off, len);
        let map = self.map(&fd, map_start, end, libc::PROT_READ | libc::PROT_WRITE)?;
        let data = pattern(no, start, (end - start) as usize);
        let from = (start - map_start) as usize;
        // SAFETY: the shared writable mapping covers [map_start, end) inside the file size;
        // data.len() == end - start bytes are written starting at offset `from`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                map.ptr.cast::<u8>().add(from),
                data.len(),
            );
        }
        // SAFETY: ptr/len describe a live mapping.
        check(unsafe { libc::msync(map.ptr, map.len, libc::MS_SYNC) })?;
        Ok(Value::Count(data.len() as u64))
    }

    fn map(&self, fd: &Fd, map_start: u64, end: u64, prot: libc::c_int) -> Result<Map, Errno> {
        let len = (end - map_start) as usize;
        // SAFETY: a fresh shared mapping of an open file at a page-aligned offset; the
        // kernel picks the address, nothing else aliases it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.0,
                to_off(map_start)?,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        Ok(Map { ptr, len })
    }

    fn fsync(&self, rel: &str, data_only: bool) -> Outcome {
        let fd = self.open(rel, libc::O_RDONLY)?;
        // SAFETY: plain syscalls on an open descriptor.
        check(unsafe {
            if data_only {
                libc::fdatasync(fd.0)
            } else {
                libc::fsync(fd.0)
            }
        })?;
        Ok(Value::Done)
    }

    fn stat(&self, rel: &str) -> Outcome {
        let p = self.path(rel)?;
        // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: p is NUL-terminated, st is a writable stat buffer.
        check(unsafe { libc::lstat(p.as_ptr(), &mut st) })?;
        Ok(Value::Stat(StatInfo::new(
            st.st_mode,
            st.st_nlink,
            st.st_size as u64,
        )))
    }

    /// SEEK_DATA/SEEK_HOLE checked against what every filesystem must satisfy, whatever
    /// its hole granularity: beyond EOF both fail with ENXIO; below EOF a data offset is in
    /// `[off, size)` and everything skipped over reads as zeros; a hole offset is in
    /// `[off, size]`.
    fn seek(&self, rel: &str, off: u64, data: bool) -> Outcome {
        let fd = self.open(rel, libc::O_RDONLY)?;
        let st = fstat(&fd)?;
        if !is_reg(&st) {
            return Ok(Value::NotFile);
        }
        let size = st.st_size as u64;
        let whence = if data {
            libc::SEEK_DATA
        } else {
            libc::SEEK_HOLE
        };
        // SAFETY: plain syscall on an open descriptor.
        let r = unsafe { libc::lseek(fd.0, to_off(off)?, whence) };
        let r = if r < 0 {
            Err(Errno::last())
        } else {
            Ok(r as u64)
        };
        let what = if data { "SEEK_DATA" } else { "SEEK_HOLE" };
        if off >= size {
            return match r {
                Err(e) => Err(e),
                Ok(r) => Ok(Value::Invalid(format!(
                    "{what}({off}) returned {r} at/after EOF {size}, expected ENXIO"
                ))),
            };
        }
        let skipped_to = match (r, data) {
            (Ok(r), true) if r >= off && r < size => r,
            (Err(Errno(libc::ENXIO)), true) => size,
            (Ok(r), false) if r >= off && r <= size => return Ok(Value::SeekOk),
            (Ok(r), _) => {
                return Ok(Value::Invalid(format!(
                    "{what}({off}) returned {r}, outside [{off}, {size}{}",
                    if data { ")" } else { "]" }
                )))
            }
            (Err(Errno(libc::ENXIO)), false) => {
                return Ok(Value::Invalid(format!(
                    "{what}({off}) returned ENXIO below EOF {size}"
                )))
            }
            (Err(e), _) => return Err(e),
        };
        // The range a data seek skipped is a hole: it must read as zeros.
        let gap = pread_all(&fd, off, (skipped_to - off).min(1 << 20))?;
        if let Some(i) = gap.iter().position(|b| *b != 0) {
            return Ok(Value::Invalid(format!(
                "{what}({off}) skipped to {skipped_to} but byte {} is {:#04x}, not a hole",
                off + i as u64,
                gap[i]
            )));
        }
        Ok(Value::SeekOk)
    }

    fn simple(&self, rel: &str, f: impl FnOnce(*const libc::c_char) -> libc::c_int) -> Outcome {
        let p = self.path(rel)?;
        check(f(p.as_ptr()))?;
        Ok(Value::Done)
    }

    fn two(
        &self,
        a: &str,
        b: &str,
        f: impl FnOnce(*const libc::c_char, *const libc::c_char) -> libc::c_int,
    ) -> Outcome {
        let (pa, pb) = (self.path(a)?, self.path(b)?);
        check(f(pa.as_ptr(), pb.as_ptr()))?;
        Ok(Value::Done)
    }

    fn listxattr(&self, rel: &str) -> Outcome {
        let p = self.path(rel)?;
        Ok(Value::Names(
            list_user_xattrs(&p)?.into_iter().map(|(n, _)| n).collect(),
        ))
    }
}

/// `user.*` xattr names (sorted) of a path, with their values.
fn list_user_xattrs(p: &CString) -> Result<Vec<(String, Vec<u8>)>, Errno> {
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: p is NUL-terminated; buf is writable for buf.len() bytes.
    let n = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = check_size(n)? as usize;
    let mut out = Vec::new();
    for name in buf[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        if !name.starts_with(b"user.") {
            continue;
        }
        let cname = CString::new(name).map_err(|_| Errno(libc::EINVAL))?;
        let value = get_xattr(p, &cname)?;
        out.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    out.sort();
    Ok(out)
}

fn get_xattr(p: &CString, name: &CString) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: p and name are NUL-terminated; buf is writable for buf.len() bytes.
    let n = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = check_size(n)? as usize;
    buf.truncate(n);
    Ok(buf)
}

/// ZERO_RANGE, COLLAPSE_RANGE and INSERT_RANGE done with reads and writes, with the errno
/// rules of vfs_fallocate and ext4 (zero length → EINVAL; collapse/insert need block
/// alignment; collapse must end before EOF; insert must start before EOF).
fn emulate_falloc(fd: &Fd, mode: FallocMode, off: u64, len: u64, size: u64) -> Outcome {
    if len == 0 {
        return Err(Errno(libc::EINVAL));
    }
    let aligned = off % BLOCK == 0 && len % BLOCK == 0;
    match mode {
        FallocMode::Zero | FallocMode::ZeroKeep => {
            let end = off + len;
            let zero_end = if mode == FallocMode::ZeroKeep {
                end.min(size)
            } else {
                end
            };
            if zero_end > off {
                pwrite_all(fd, off, &vec![0u8; (zero_end - off) as usize])?;
            }
        }
        FallocMode::Collapse => {
            if !aligned || off + len >= size {
                return Err(Errno(libc::EINVAL));
            }
            let tail = pread_all(fd, off + len, size - off - len)?;
            pwrite_all(fd, off, &tail)?;
            ftruncate(fd, size - len)?;
        }
        FallocMode::Insert => {
            if !aligned || off >= size {
                return Err(Errno(libc::EINVAL));
            }
            let tail = pread_all(fd, off, size - off)?;
            pwrite_all(fd, off + len, &tail)?;
            pwrite_all(fd, off, &vec![0u8; len as usize])?;
        }
        _ => {
            // SAFETY: plain syscall on an open descriptor.
            check(unsafe { libc::fallocate(fd.0, mode.bits(), to_off(off)?, to_off(len)?) })?;
        }
    }
    Ok(Value::Done)
}

impl Fs for DirFs {
    fn apply(&mut self, step: &Step) -> Outcome {
        let no = step.no;
        match &step.op {
            Op::Write { path, off, len } => self.write(no, path, *off, *len),
            Op::Append { path, len } => self.append(no, path, *len),
            Op::Read { path, off, len } => self.read(path, *off, *len),
            Op::Truncate { path, size } => self.truncate(path, *size),
            Op::Falloc {
                path,
                mode,
                off,
                len,
            } => self.falloc(path, *mode, *off, *len),
            Op::MmapRead { path, off, len } => self.mmap_read(path, *off, *len),
            Op::MmapWrite { path, off, len } => self.mmap_write(no, path, *off, *len),
            Op::Fsync { path, data_only } => self.fsync(path, *data_only),
            Op::Stat { path } => self.stat(path),
            Op::SeekData { path, off } => self.seek(path, *off, true),
            Op::SeekHole { path, off } => self.seek(path, *off, false),
            Op::CreateExcl { path } => {
                self.open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)?;
                Ok(Value::Done)
            }
            Op::Rename { from, to, flags } => self.two(from, to, |a, b| {
                // SAFETY: a and b are NUL-terminated paths alive for the call.
                unsafe { libc::renameat2(libc::AT_FDCWD, a, libc::AT_FDCWD, b, flags.bits()) }
            }),
            // SAFETY (closures below): the pointer is a NUL-terminated path alive for the call.
            Op::Link { from, to } => self.two(from, to, |a, b| unsafe { libc::link(a, b) }),
            Op::Unlink { path } => self.simple(path, |p| unsafe { libc::unlink(p) }),
            Op::Mkdir { path } => self.simple(path, |p| unsafe { libc::mkdir(p, 0o755) }),
            Op::Rmdir { path } => self.simple(path, |p| unsafe { libc::rmdir(p) }),
            Op::SetXattr {
                path,
                name,
                len,
                flags,
            } => {
                let value = pattern(no, 0, *len as usize);
                let n = cstr(xattr_name(*name))?;
                self.simple(path, |p| {
                    // SAFETY: p and n are NUL-terminated; value is readable for its length.
                    unsafe {
                        libc::lsetxattr(
                            p,
                            n.as_ptr(),
                            value.as_ptr().cast(),
                            value.len(),
                            flags.bits(),
                        )
                    }
                })
            }
            Op::GetXattr { path, name } => {
                let p = self.path(path)?;
                Ok(Value::Data(get_xattr(&p, &cstr(xattr_name(*name))?)?))
            }
            Op::RemoveXattr { path, name } => {
                let n = cstr(xattr_name(*name))?;
                // SAFETY: p and n are NUL-terminated.
                self.simple(path, |p| unsafe { libc::lremovexattr(p, n.as_ptr()) })
            }
            Op::ListXattr { path } => self.listxattr(path),
        }
    }

    fn snapshot(&mut self) -> Result<Tree, String> {
        let mut tree = Tree::new();
        walk(&self.root, "", &mut tree)?;
        Ok(tree)
    }
}

fn walk(dir: &Path, prefix: &str, tree: &mut Tree) -> Result<(), String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for ent in rd {
        let ent = ent.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}{name}");
        let full = ent.path();
        let md = std::fs::symlink_metadata(&full).map_err(|e| format!("{rel}: {e}"))?;
        let stat = StatInfo::new(md.mode(), md.nlink(), md.size());
        let data = match stat.kind.0 {
            '-' => Some(std::fs::read(&full).map_err(|e| format!("{rel}: {e}"))?),
            'l' => Some(
                std::fs::read_link(&full)
                    .map_err(|e| format!("{rel}: {e}"))?
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            ),
            _ => None,
        };
        let cpath = CString::new(full.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        let xattrs = match list_user_xattrs(&cpath) {
            Ok(x) => x,
            Err(Errno(libc::EOPNOTSUPP)) => Vec::new(),
            Err(e) => return Err(format!("{rel}: listing xattrs: {e}")),
        };
        let is_dir = stat.kind.0 == 'd';
        tree.insert(rel.clone(), Entry { stat, data, xattrs });
        if is_dir {
            walk(&full, &format!("{rel}/"), tree)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory on /dev/shm (tmpfs), removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let base = if Path::new("/dev/shm").is_dir() {
                PathBuf::from("/dev/shm")
            } else {
                std::env::temp_dir()
            };
            let p = base.join(format!("fsx-unit-{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir(&p).expect("create scratch dir");
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn step(no: u64, op: Op) -> Step {
        Step { no, op }
    }

    fn emulating(dir: &Scratch) -> DirFs {
        DirFs::new(
            dir.0.clone(),
            vec![
                FallocMode::Zero,
                FallocMode::ZeroKeep,
                FallocMode::Collapse,
                FallocMode::Insert,
            ],
            1 << 30,
        )
    }

    fn contents(fs: &mut DirFs, path: &str) -> Vec<u8> {
        match fs.apply(&step(
            0,
            Op::Read {
                path: path.into(),
                off: 0,
                len: 1 << 20,
            },
        )) {
            Ok(Value::Data(d)) => d,
            other => panic!("read failed: {other:?}"),
        }
    }

    fn write3(fs: &mut DirFs) -> Vec<u8> {
        let w = step(
            7,
            Op::Write {
                path: "f".into(),
                off: 0,
                len: 3 * BLOCK,
            },
        );
        assert_eq!(fs.apply(&w), Ok(Value::Count(3 * BLOCK)));
        pattern(7, 0, 3 * BLOCK as usize)
    }

    fn falloc(mode: FallocMode, off: u64, len: u64) -> Step {
        step(
            9,
            Op::Falloc {
                path: "f".into(),
                mode,
                off,
                len,
            },
        )
    }

    #[test]
    fn emulated_collapse_shifts_the_tail_down() {
        let dir = Scratch::new("collapse");
        let mut fs = emulating(&dir);
        let orig = write3(&mut fs);
        assert_eq!(
            fs.apply(&falloc(FallocMode::Collapse, BLOCK, BLOCK)),
            Ok(Value::Done)
        );
        let mut want = orig[..BLOCK as usize].to_vec();
        want.extend_from_slice(&orig[2 * BLOCK as usize..]);
        assert_eq!(contents(&mut fs, "f"), want);
    }

    #[test]
    fn emulated_collapse_rejects_unaligned_and_eof_reaching_ranges() {
        let dir = Scratch::new("collapse-inval");
        let mut fs = emulating(&dir);
        write3(&mut fs);
        let einval = Err(Errno(libc::EINVAL));
        assert_eq!(fs.apply(&falloc(FallocMode::Collapse, 1, BLOCK)), einval);
        assert_eq!(
            fs.apply(&falloc(FallocMode::Collapse, BLOCK, 2 * BLOCK)),
            einval
        );
    }

    #[test]
    fn emulated_insert_shifts_the_tail_up_and_zero_fills() {
        let dir = Scratch::new("insert");
        let mut fs = emulating(&dir);
        let orig = write3(&mut fs);
        assert_eq!(
            fs.apply(&falloc(FallocMode::Insert, BLOCK, BLOCK)),
            Ok(Value::Done)
        );
        let mut want = orig[..BLOCK as usize].to_vec();
        want.extend_from_slice(&[0u8; BLOCK as usize]);
        want.extend_from_slice(&orig[BLOCK as usize..]);
        assert_eq!(contents(&mut fs, "f"), want);
        assert_eq!(
            fs.apply(&falloc(FallocMode::Insert, 4 * BLOCK, BLOCK)),
            Err(Errno(libc::EINVAL)),
            "insert at EOF"
        );
    }

    #[test]
    fn emulated_zero_keep_size_stops_at_eof() {
        let dir = Scratch::new("zero");
        let mut fs = emulating(&dir);
        let orig = write3(&mut fs);
        assert_eq!(
            fs.apply(&falloc(FallocMode::ZeroKeep, 2 * BLOCK + 5, 4 * BLOCK)),
            Ok(Value::Done)
        );
        let mut want = orig[..2 * BLOCK as usize + 5].to_vec();
        want.resize(3 * BLOCK as usize, 0);
        assert_eq!(contents(&mut fs, "f"), want);
    }

    #[test]
    fn seek_data_in_a_file_with_data_satisfies_the_invariant() {
        let dir = Scratch::new("seek");
        let mut fs = emulating(&dir);
        write3(&mut fs);
        let s = |off, data| {
            step(
                1,
                if data {
                    Op::SeekData {
                        path: "f".into(),
                        off,
                    }
                } else {
                    Op::SeekHole {
                        path: "f".into(),
                        off,
                    }
                },
            )
        };
        assert_eq!(fs.apply(&s(10, true)), Ok(Value::SeekOk));
        assert_eq!(fs.apply(&s(10, false)), Ok(Value::SeekOk));
        assert_eq!(fs.apply(&s(3 * BLOCK, true)), Err(Errno(libc::ENXIO)));
        assert_eq!(fs.apply(&s(3 * BLOCK, false)), Err(Errno(libc::ENXIO)));
    }

    #[test]
    fn mmap_write_is_visible_to_pread_and_stays_inside_the_file() {
        let dir = Scratch::new("mmap");
        let mut fs = emulating(&dir);
        write3(&mut fs);
        let mw = step(
            11,
            Op::MmapWrite {
                path: "f".into(),
                off: 3 * BLOCK + 100,
                len: 1 << 20,
            },
        );
        // off wraps to 100; the length is clamped at EOF.
        assert_eq!(fs.apply(&mw), Ok(Value::Count(3 * BLOCK - 100)));
        let got = contents(&mut fs, "f");
        assert_eq!(got.len() as u64, 3 * BLOCK);
        assert_eq!(&got[100..], &pattern(11, 100, 3 * BLOCK as usize - 100)[..]);
    }

    #[test]
    fn snapshot_lists_nested_entries_with_contents() {
        let dir = Scratch::new("snap");
        let mut fs = emulating(&dir);
        write3(&mut fs);
        assert_eq!(
            fs.apply(&step(2, Op::Mkdir { path: "d0".into() })),
            Ok(Value::Done)
        );
        assert_eq!(
            fs.apply(&step(
                3,
                Op::Write {
                    path: "d0/f1".into(),
                    off: 0,
                    len: 10
                }
            )),
            Ok(Value::Count(10))
        );
        let tree = fs.snapshot().expect("snapshot");
        let names: Vec<&str> = tree.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["d0", "d0/f1", "f"]);
        assert_eq!(tree["d0/f1"].data.as_deref(), Some(&pattern(3, 0, 10)[..]));
        assert_eq!(tree["d0"].stat.size, None);
    }
}
