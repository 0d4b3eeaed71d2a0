//! The device: one shared, writable mapping of a whole pmem device, and the only code in
//! daxfs that loads from or stores to it.
//!
//! A device is a Linux device-DAX character device (`/dev/daxX.Y`), an fsdax block device
//! (`/dev/pmemN`), or a regular file acting as emulated pmem (typically on `/dev/shm`).
//! This module detects which, sizes and maps it (populated up front: a first-touch fault
//! costs far more than the copy it serves), takes the exclusive lock that keeps two
//! daemons (or mkfs and a mount) off one device, and offers bounds-checked reads, writes
//! and the persistence operations built on [`crate::persist`]:
//!
//! * device-DAX, or a mapping granted `MAP_SYNC`: cache-line flush + fence is durable;
//! * a file on tmpfs/ramfs: the same (DRAM *is* the emulated media);
//! * anything else (a block device or file mapped through the page cache): the flushed
//!   range is also written back with `msync(MS_SYNC)`.
//!
//! Every offset the filesystem passes here comes from on-media structures it has
//! validated first (block numbers checked against the device size). The bounds checks in
//! this module are therefore last-resort invariant checks: an out-of-range access is a
//! bug in the caller and panics with a message naming the device and the range.
//!
//! For crash tests a device can also live in anonymous memory ([`Device::memory`]), and
//! can record its persistence ([`Device::recording`]): every store, cache-line flush and
//! fence is fed to a [`Recorder`], which models x86 persistence per 64-byte line (any
//! prefix of a line's unflushed stores, in 8-byte pieces, may survive) and keeps, at
//! each fence, the crash states possible just before it; it can also fail a chosen write
//! or flush, reported by [`Device::take_error`].

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::crash_model::LineModel;
use crate::persist::{self, FlushInstr};
use crate::volatile::VolatileSlice;

/// Device sizes must be a multiple of this (the filesystem block size).
pub const DEVICE_ALIGN: u64 = 4096;

/// `write_persist` / `zero_persist` switch from copy + flush to non-temporal stores at
/// this length. Measured with `examples/persist_bench.rs` on emulated pmem (AMD EPYC VM,
/// CLWB): to a cold destination, nt + sfence beats copy + CLWB + sfence at every size
/// (4 KiB: 15.8 vs 9.0 GB/s; 64 KiB: 21 vs 6 GB/s), but CLWB keeps the lines cached, so
/// small writes that are read back soon (metadata, journal records) are faster with the
/// cached copy (1 KiB written then read: 4.4 vs 1.8 GB/s). At 4 KiB the two tie on
/// read-back, so block-sized and larger writes (file data) stream.
pub const NT_THRESHOLD: usize = 4096;

// Filesystem magics from statfs(2) for memory-backed filesystems.
const TMPFS_MAGIC: u32 = 0x0102_1994;
const RAMFS_MAGIC: u32 = 0x8584_58f6;

// BLKGETSIZE64 = _IOR(0x12, 114, size_t); the read direction bits differ by architecture.
#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
const IOC_READ: u64 = 2 << 29;
#[cfg(not(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
const IOC_READ: u64 = 2 << 30;
const BLKGETSIZE64: u64 =
    IOC_READ | ((std::mem::size_of::<usize>() as u64) << 16) | (0x12 << 8) | 114;

/// Device-DAX's default mapping alignment, used when sysfs does not say.
const DEVDAX_DEFAULT_ALIGN: u64 = 2 << 20;

/// What kind of device is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A device-DAX character device: the mapping is the memory itself.
    DevDax,
    /// A block device (fsdax `/dev/pmemN`, or any block device).
    Pmem,
    /// A regular file: emulated pmem.
    File,
    /// Anonymous memory (crash tests): [`Device::memory`] and [`Device::recording`].
    Memory,
}

/// How to open a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceOptions {
    /// Map read-write (else read-only: writes through this device are caller bugs).
    pub writable: bool,
    /// Take an exclusive lock (flock, plus O_EXCL for block devices) so no other daxfs
    /// daemon or mkfs uses the device at the same time.
    pub exclusive: bool,
    /// Fault the whole mapping in at open (MAP_POPULATE).
    pub populate: bool,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            writable: true,
            exclusive: true,
            populate: true,
        }
    }
}

/// Why a device could not be opened.
#[derive(Debug)]
pub enum DeviceError {
    /// The path does not exist.
    NotFound { path: PathBuf },
    /// The path is not something daxfs can use; `what` says what it is instead.
    Unsupported { path: PathBuf, what: &'static str },
    /// The device has size zero.
    Empty { path: PathBuf },
    /// The size is not a multiple of 4096 (or of the device-DAX mapping alignment).
    BadSize {
        path: PathBuf,
        size: u64,
        multiple_of: u64,
    },
    /// Another daxfs daemon, mkfs, or (for block devices) a kernel mount holds it.
    Busy { path: PathBuf },
    /// A regular file with holes: fewer bytes allocated than its size. Its mapping would
    /// allocate on first touch, and a backing filesystem that is full then kills the
    /// process with SIGBUS, so such a file is refused (see [`Device::open`]).
    NotBacked {
        path: PathBuf,
        size: u64,
        allocated: u64,
    },
    /// A system call failed; `op` says which step.
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::NotFound { path } => {
                write!(f, "{}: no such file or device", path.display())
            }
            DeviceError::Unsupported { path, what } => write!(
                f,
                "{}: not a DAX device, block device or regular file (it is {what})",
                path.display()
            ),
            DeviceError::Empty { path } => {
                write!(f, "{}: device is empty (size 0)", path.display())
            }
            DeviceError::BadSize {
                path,
                size,
                multiple_of,
            } => write!(
                f,
                "{}: size {size} is not a multiple of {multiple_of}",
                path.display()
            ),
            DeviceError::Busy { path } => write!(
                f,
                "{}: device is in use by another daxfs or mkfs (locked), or mounted",
                path.display()
            ),
            DeviceError::NotBacked {
                path,
                size,
                allocated,
            } => write!(
                f,
                "{}: emulated device is not fully allocated ({allocated} of {size} bytes; it \
                 has holes): writing into a hole needs space the backing filesystem may not \
                 have, and ends the process with SIGBUS; reserve it first with \
                 'fallocate -l {size} {}' (keeps its contents), or \
                 make it with 'mkfs.daxfs --size'",
                path.display(),
                path.display()
            ),
            DeviceError::Io { path, op, source } => {
                write!(f, "{}: {op} failed: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for DeviceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DeviceError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The mapping: memmap2 for the ordinary case, raw mmap for MAP_SYNC (which memmap2
/// cannot request).
enum Mapping {
    Memmap(memmap2::MmapRaw),
    Sync(SyncMap),
    Anon(memmap2::MmapMut),
}

impl Mapping {
    fn base(&mut self) -> *mut u8 {
        match self {
            Mapping::Memmap(m) => m.as_mut_ptr(),
            Mapping::Sync(m) => m.ptr,
            Mapping::Anon(m) => m.as_mut_ptr(),
        }
    }
}

struct SyncMap {
    ptr: *mut u8,
    len: usize,
}

impl Drop for SyncMap {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned, and the mapping is unmapped
        // only here, once, when the Device (its only owner) is dropped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// One mapped pmem device. Shared by all filesystem threads (`Send + Sync`).
pub struct Device {
    path: PathBuf,
    // Held for the flock and the mapping's lifetime; the lock goes with the fd. None
    // for memory devices.
    _file: Option<File>,
    _map: Mapping,
    base: *mut u8,
    size: u64,
    kind: DeviceKind,
    writable: bool,
    map_sync: bool,
    memory_backed: bool,
    needs_msync: bool,
    flush_instr: FlushInstr,
    // First msync errno not yet reported by `take_error` (0 = none).
    error: AtomicI32,
    // Persistence model fed by every store, flush and fence (recording devices only).
    recorder: Option<Arc<Recorder>>,
}

// SAFETY: the Device owns its mapping for its whole life and never remaps it, so `base`
// stays valid and fixed while any thread holds a reference. All access goes through
// bounds-checked copies, or views that copy the same way ([`VolatileSlice`], which hands
// out no references into the mapping). Concurrent stores to the same bytes are what any
// shared mapping of a device allows (the filesystem
// serialises its metadata under its own locks; file data may race exactly as it does in
// a kernel DAX mapping): bytes have no invalid values, so the worst outcome is torn data,
// never a broken Rust invariant. The remaining fields are immutable or atomic.
unsafe impl Send for Device {}
// SAFETY: see `Send` above.
unsafe impl Sync for Device {}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("size", &self.size)
            .field("writable", &self.writable)
            .field("map_sync", &self.map_sync)
            .field("memory_backed", &self.memory_backed)
            .field("needs_msync", &self.needs_msync)
            .field("flush_instr", &self.flush_instr)
            .finish()
    }
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> DeviceError + 'a {
    move |source| DeviceError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// The sysfs directory of a character device, if it is a device-DAX instance.
fn devdax_sysfs(rdev: u64) -> Option<PathBuf> {
    let dir = PathBuf::from(format!(
        "/sys/dev/char/{}:{}",
        libc::major(rdev),
        libc::minor(rdev)
    ));
    let subsystem = std::fs::read_link(dir.join("subsystem")).ok()?;
    (subsystem.file_name()? == "dax").then_some(dir)
}

/// Reads a number from the first of `names` (relative to `dir`) that exists.
fn sysfs_u64(dir: &Path, names: &[&str]) -> Option<u64> {
    names.iter().find_map(|name| {
        let text = std::fs::read_to_string(dir.join(name)).ok()?;
        let text = text.trim();
        match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => text.parse().ok(),
        }
    })
}

/// Takes the exclusive lock, allowing a holder that is just letting go a moment to do
/// so: a process that forked while it held the device open keeps the lock (the open
/// file description) until its child has exec'd, a few milliseconds at most. A daemon
/// or mkfs really using the device holds it for good and is reported as busy.
fn lock_exclusive(file: &File) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match flock(file, libc::LOCK_EX | libc::LOCK_NB) {
            Err(e) if is_would_block(&e) && tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on an fd this File owns; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn is_would_block(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EWOULDBLOCK)
}

/// Whether the file lives on tmpfs or ramfs (memory-backed: no msync needed).
fn on_memory_fs(file: &File) -> io::Result<bool> {
    // SAFETY: statfs is plain old data; all-zero is a valid value to be overwritten.
    let mut sf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes one statfs into the valid, exclusively borrowed `sf`.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut sf) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // f_type's integer type differs between targets; the magics are 32-bit.
    #[allow(clippy::unnecessary_cast)]
    let magic = sf.f_type as u32;
    Ok(magic == TMPFS_MAGIC || magic == RAMFS_MAGIC)
}

fn block_device_size(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 into `size`, which outlives the call.
    #[allow(clippy::useless_conversion)]
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if rc == 0 {
        Ok(size)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Tries a MAP_SHARED_VALIDATE | MAP_SYNC mapping; None when the kernel refuses it
/// (not a DAX mapping, or an old kernel), so the caller falls back to MAP_SHARED.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn try_map_sync(file: &File, len: usize, populate: bool) -> Option<SyncMap> {
    let mut flags = libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC;
    if populate {
        flags |= libc::MAP_POPULATE;
    }
    // SAFETY: a fresh mapping chosen by the kernel (null hint) of a file we keep open; it
    // aliases no Rust object. Its lifetime is managed by SyncMap.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            file.as_raw_fd(),
            0,
        )
    };
    (ptr != libc::MAP_FAILED).then_some(SyncMap {
        ptr: ptr.cast(),
        len,
    })
}

/// Allocates bytes `[offset, offset+len)` of `file` (growing it if that ends past its
/// end) with posix_fallocate, so that a file made to be an emulated device has no holes
/// and [`Device::open`] accepts it. The contents already there are kept.
pub fn allocate_file(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "range too large");
    let off = libc::off_t::try_from(offset).map_err(|_| too_large())?;
    let len = libc::off_t::try_from(len).map_err(|_| too_large())?;
    if len == 0 {
        return Ok(());
    }
    // SAFETY: posix_fallocate on an open descriptor; no memory is passed. It returns an
    // error number rather than setting errno.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), off, len) } {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

impl Device {
    /// Opens and maps the device at `path`.
    ///
    /// A regular file must be fully allocated (`st_blocks * 512 >= size`, e.g. made by
    /// `mkfs.daxfs --size` or `fallocate`); one with holes is refused with
    /// [`DeviceError::NotBacked`] before anything is mapped or written.
    pub fn open(path: &Path, opts: DeviceOptions) -> Result<Device, DeviceError> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => DeviceError::NotFound {
                path: path.to_path_buf(),
            },
            _ => io_err(path, "stat")(e),
        })?;
        let unsupported = |what| DeviceError::Unsupported {
            path: path.to_path_buf(),
            what,
        };
        let ft = meta.file_type();
        // Classify before opening: opening an arbitrary char device or fifo can block or
        // have side effects.
        let (kind, devdax_dir) = if ft.is_file() {
            (DeviceKind::File, None)
        } else if ft.is_block_device() {
            (DeviceKind::Pmem, None)
        } else if ft.is_char_device() {
            match devdax_sysfs(meta.rdev()) {
                Some(dir) => (DeviceKind::DevDax, Some(dir)),
                None => return Err(unsupported("a character device that is not device-DAX")),
            }
        } else if ft.is_dir() {
            return Err(unsupported("a directory"));
        } else if ft.is_fifo() {
            return Err(unsupported("a fifo"));
        } else if ft.is_socket() {
            return Err(unsupported("a socket"));
        } else {
            return Err(unsupported("an unknown file type"));
        };

        let mut oo = OpenOptions::new();
        oo.read(true).write(opts.writable);
        if kind == DeviceKind::Pmem && opts.exclusive {
            // On a block device O_EXCL fails with EBUSY if it is mounted or held.
            oo.custom_flags(libc::O_EXCL);
        }
        let file = oo.open(path).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => DeviceError::Busy {
                path: path.to_path_buf(),
            },
            _ => io_err(path, "open")(e),
        })?;
        if opts.exclusive {
            lock_exclusive(&file).map_err(|e| {
                if is_would_block(&e) {
                    DeviceError::Busy {
                        path: path.to_path_buf(),
                    }
                } else {
                    io_err(path, "lock")(e)
                }
            })?;
        }

        let (size, map_align) = match kind {
            // `open` classifies paths only as files, block devices or device-DAX.
            DeviceKind::File | DeviceKind::Memory => {
                let m = file.metadata().map_err(io_err(path, "stat"))?;
                // An emulated device is memory the filesystem owns: every byte must be
                // allocated before it is mapped. A hole is allocated by the page fault
                // that first touches it (a read fault too, on tmpfs), and when the
                // backing filesystem is full that fault is a SIGBUS, not an error
                // anyone can handle; MAP_POPULATE of a huge sparse file would also
                // allocate it all. st_blocks counts what is allocated (fallocated
                // space included); SEEK_HOLE is not used because ext4 and xfs report
                // fallocated (unwritten) extents as holes.
                let allocated = m.blocks().saturating_mul(512);
                if allocated < m.len() {
                    return Err(DeviceError::NotBacked {
                        path: path.to_path_buf(),
                        size: m.len(),
                        allocated,
                    });
                }
                (m.len(), DEVICE_ALIGN)
            }
            DeviceKind::Pmem => (
                block_device_size(&file).map_err(io_err(path, "get block device size"))?,
                DEVICE_ALIGN,
            ),
            DeviceKind::DevDax => {
                let dir = devdax_dir.as_deref().unwrap_or(Path::new("/"));
                let size = sysfs_u64(dir, &["size", "device/size"]).ok_or_else(|| {
                    io_err(path, "read device-DAX size from sysfs")(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("no readable {}/size", dir.display()),
                    ))
                })?;
                let align = sysfs_u64(dir, &["align", "device/align"])
                    .filter(|a| a.is_power_of_two() && *a >= DEVICE_ALIGN)
                    .unwrap_or(DEVDAX_DEFAULT_ALIGN);
                (size, align)
            }
        };
        if size == 0 {
            return Err(DeviceError::Empty {
                path: path.to_path_buf(),
            });
        }
        // A device-DAX mapping must be a whole number of alignment units; a tail beyond
        // the last unit cannot be mapped, so the usable device is rounded down.
        let size = if kind == DeviceKind::DevDax {
            size - size % map_align
        } else {
            size
        };
        if size == 0 || size % DEVICE_ALIGN != 0 {
            return Err(DeviceError::BadSize {
                path: path.to_path_buf(),
                size,
                multiple_of: map_align,
            });
        }
        let len = usize::try_from(size).map_err(|_| {
            io_err(path, "map")(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("size {size} exceeds the address space"),
            ))
        })?;

        let memory_backed =
            kind == DeviceKind::File && on_memory_fs(&file).map_err(io_err(path, "statfs"))?;

        // Ask for MAP_SYNC where it could mean something: it makes flush + fence durable
        // on a DAX-capable mapping. tmpfs never grants it (and does not need it).
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let sync = if opts.writable && !memory_backed {
            try_map_sync(&file, len, opts.populate)
        } else {
            None
        };
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let sync: Option<SyncMap> = None;

        let map = match sync {
            Some(m) => Mapping::Sync(m),
            None => {
                let mut mo = memmap2::MmapOptions::new();
                mo.len(len);
                if opts.populate {
                    mo.populate();
                }
                let m = if opts.writable {
                    mo.map_raw(&file)
                } else {
                    mo.map_raw_read_only(&file)
                }
                .map_err(io_err(path, "mmap"))?;
                Mapping::Memmap(m)
            }
        };
        let mut map = map;
        let base = map.base();
        let map_sync = matches!(map, Mapping::Sync(_));
        let needs_msync =
            opts.writable && !map_sync && !memory_backed && kind != DeviceKind::DevDax;

        Ok(Device {
            path: path.to_path_buf(),
            _file: Some(file),
            _map: map,
            base,
            size,
            kind,
            writable: opts.writable,
            map_sync,
            memory_backed,
            needs_msync,
            flush_instr: persist::flush_instr(),
            error: AtomicI32::new(0),
            recorder: None,
        })
    }

    /// A writable device in anonymous memory holding a copy of `image` (e.g. a crash
    /// image, to mount without a file). Its path is `<memory>`. `image.len()` must be a
    /// non-zero multiple of 4096.
    pub fn memory(image: &[u8]) -> Result<Device, DeviceError> {
        let dev = Device::anon(image.len() as u64, None)?;
        // SAFETY: a fresh private mapping of exactly image.len() bytes that nothing else
        // references yet; `image` is a distinct Rust buffer.
        unsafe { std::ptr::copy_nonoverlapping(image.as_ptr(), dev.base, image.len()) };
        Ok(dev)
    }

    /// A zero-filled memory device of `size` bytes whose stores, flushes and fences are
    /// fed to the returned [`Recorder`] (x86 persistence model, see there). Reads and
    /// [`volatile`](Self::volatile) views see the volatile contents, as on real hardware.
    pub fn recording(size: u64) -> Result<(Device, Arc<Recorder>), DeviceError> {
        let len = usize::try_from(size).map_err(|_| DeviceError::BadSize {
            path: PathBuf::from("<memory>"),
            size,
            multiple_of: DEVICE_ALIGN,
        })?;
        let rec = Arc::new(Recorder::new(len));
        let dev = Device::anon(size, Some(rec.clone()))?;
        Ok((dev, rec))
    }

    fn anon(size: u64, recorder: Option<Arc<Recorder>>) -> Result<Device, DeviceError> {
        let path = PathBuf::from("<memory>");
        if size == 0 {
            return Err(DeviceError::Empty { path });
        }
        if !size.is_multiple_of(DEVICE_ALIGN) {
            return Err(DeviceError::BadSize {
                path,
                size,
                multiple_of: DEVICE_ALIGN,
            });
        }
        let len = usize::try_from(size).map_err(|_| DeviceError::BadSize {
            path: path.clone(),
            size,
            multiple_of: DEVICE_ALIGN,
        })?;
        let mut map = memmap2::MmapOptions::new()
            .len(len)
            .map_anon()
            .map_err(io_err(&path, "mmap anonymous memory"))?;
        let base = map.as_mut_ptr();
        Ok(Device {
            path,
            _file: None,
            _map: Mapping::Anon(map),
            base,
            size,
            kind: DeviceKind::Memory,
            writable: true,
            map_sync: false,
            memory_backed: true,
            needs_msync: false,
            flush_instr: persist::flush_instr(),
            error: AtomicI32::new(0),
            recorder,
        })
    }

    /// The persistence recorder of a [`recording`](Self::recording) device.
    pub fn recorder(&self) -> Option<&Arc<Recorder>> {
        self.recorder.as_ref()
    }

    /// Feeds a flush of `off..off+len` to the recorder.
    fn record_flush(&self, rec: &Recorder, off: u64, len: u64) {
        if !rec.lock().flush(off, len, &|line| self.line_content(line)) {
            self.note_error(libc::EIO);
        }
    }

    /// Feeds the stores just made to `off..off+len` to the recorder: the bytes are read
    /// back from the mapping, since the source may have been part of the range (a move).
    fn record_store(&self, rec: &Recorder, off: u64, len: u64) {
        let mut bytes = vec![0u8; len as usize];
        self.read(off, &mut bytes);
        if !rec.lock().store(off, &bytes) {
            self.note_error(libc::EIO);
        }
    }

    /// Keeps `errno` for `take_error` unless an earlier error is still unreported.
    fn note_error(&self, errno: i32) {
        let _ = self
            .error
            .compare_exchange(0, errno, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn line_content(&self, line: usize) -> [u8; LINE] {
        let mut out = [0u8; LINE];
        // SAFETY: `line` covers bytes of a range checked to lie inside the mapping, and
        // the size is a multiple of 4096, so the whole line is inside it too.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(line * LINE), out.as_mut_ptr(), LINE)
        };
        out
    }

    /// Whether another process (or another open in this one) holds the device's lock,
    /// or, for a block device, it is mounted or opened exclusively. For mkfs's "is it in
    /// use" check; a path that cannot be opened counts as not locked.
    pub fn is_locked_by_other(path: &Path) -> bool {
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        let ft = meta.file_type();
        if !(ft.is_file() || ft.is_block_device() || ft.is_char_device()) {
            return false;
        }
        // O_EXCL on a block device fails with EBUSY when it is mounted or held.
        let excl = if ft.is_block_device() {
            libc::O_EXCL
        } else {
            0
        };
        let mut oo = OpenOptions::new();
        oo.read(true).custom_flags(libc::O_NONBLOCK | excl);
        let file = match oo.open(path) {
            Ok(f) => f,
            Err(e) => return e.raw_os_error() == Some(libc::EBUSY),
        };
        // The shared lock is dropped with the fd.
        matches!(flock(&file, libc::LOCK_SH | libc::LOCK_NB), Err(e) if is_would_block(&e))
    }

    /// Device size in bytes (a multiple of 4096).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// What kind of device this is.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the kernel granted MAP_SYNC (flush + fence is durable without msync).
    pub fn map_sync(&self) -> bool {
        self.map_sync
    }

    /// Whether the device is a file on tmpfs/ramfs.
    pub fn memory_backed(&self) -> bool {
        self.memory_backed
    }

    /// Whether flushes also need msync(MS_SYNC) to be durable (page-cache mappings).
    pub fn needs_msync(&self) -> bool {
        self.needs_msync
    }

    /// Whether the device was opened writable.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The cache-line flush instruction in use.
    pub fn flush_instr(&self) -> FlushInstr {
        self.flush_instr
    }

    /// Base address of the mapping (for benchmarks and tests; prefer the checked API).
    pub fn as_ptr(&self) -> *mut u8 {
        self.base
    }

    /// Checks `off..off+len` lies inside the device and returns `off` as an index.
    #[inline]
    #[track_caller]
    fn check(&self, off: u64, len: u64, write: bool) -> usize {
        match off.checked_add(len) {
            Some(end) if end <= self.size && (!write || self.writable) => off as usize,
            _ => self.bad_access(off, len, write),
        }
    }

    #[cold]
    #[inline(never)]
    #[track_caller]
    fn bad_access(&self, off: u64, len: u64, write: bool) -> ! {
        if write && !self.writable {
            panic!(
                "daxfs bug: write of {len} bytes at {off} to read-only device {}",
                self.path.display()
            );
        }
        panic!(
            "daxfs bug: {} of {len} bytes at offset {off} is beyond the end of {} \
             (size {}); on-media block numbers must be validated before use",
            if write { "write" } else { "read" },
            self.path.display(),
            self.size
        );
    }

    /// Copies `buf.len()` bytes at `off` into `buf`.
    pub fn read(&self, off: u64, buf: &mut [u8]) {
        let at = self.check(off, buf.len() as u64, false);
        // SAFETY: the range is inside the live mapping (checked); `buf` is a distinct
        // Rust buffer, so they cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(at), buf.as_mut_ptr(), buf.len()) };
    }

    /// Stores `data` at `off` with ordinary stores (cached: durable only after
    /// [`flush`](Self::flush) + [`fence`](Self::fence)).
    pub fn write(&self, off: u64, data: &[u8]) {
        let at = self.check(off, data.len() as u64, true);
        // SAFETY: inside the live, writable mapping (checked). memmove, because `data`
        // may itself be device bytes (`VolatileSlice::as_bytes`, moving bytes within it).
        unsafe { std::ptr::copy(data.as_ptr(), self.base.add(at), data.len()) };
        if let Some(rec) = &self.recorder {
            self.record_store(rec, off, data.len() as u64);
        }
    }

    /// Stores `data` at `off` with non-temporal stores: durable after the next
    /// [`fence`](Self::fence) (plus msync where [`needs_msync`](Self::needs_msync)).
    pub fn write_nt(&self, off: u64, data: &[u8]) {
        let at = self.check(off, data.len() as u64, true);
        let dst = self.base.wrapping_add(at);
        let overlaps = (data.as_ptr() as usize) < dst as usize + data.len()
            && (dst as usize) < data.as_ptr() as usize + data.len();
        if overlaps {
            // A move within the device (source from `as_bytes`): streaming stores need
            // disjoint ranges, so use memmove + flush instead.
            self.write(off, data);
            // SAFETY: inside the live mapping (checked).
            unsafe { persist::flush_lines(dst, data.len()) };
            if let Some(rec) = &self.recorder {
                self.record_flush(rec, off, data.len() as u64);
            }
            return;
        }
        // SAFETY: inside the live, writable mapping (checked) and disjoint from `data`.
        unsafe { persist::copy_nontemporal(dst, data.as_ptr(), data.len()) };
        if let Some(rec) = &self.recorder {
            // A streaming store is durable at the next fence, as a flushed line.
            self.record_store(rec, off, data.len() as u64);
            self.record_flush(rec, off, data.len() as u64);
        }
    }

    /// Zeroes `len` bytes at `off` with ordinary stores (not yet durable).
    pub fn zero(&self, off: u64, len: u64) {
        let at = self.check(off, len, true);
        // SAFETY: inside the live, writable mapping (checked).
        unsafe { std::ptr::write_bytes(self.base.add(at), 0, len as usize) };
        if let Some(rec) = &self.recorder {
            self.record_store(rec, off, len);
        }
    }

    /// Writes back the cache lines of `off..off+len` (and msyncs the range where the
    /// mapping goes through the page cache). Durable after the next fence.
    pub fn flush(&self, off: u64, len: u64) {
        let at = self.check(off, len, false);
        if !self.writable || len == 0 {
            return;
        }
        // SAFETY: the range is inside the live mapping (checked).
        unsafe { persist::flush_lines(self.base.add(at), len as usize) };
        if self.needs_msync {
            self.msync(at, len as usize);
        }
        if let Some(rec) = &self.recorder {
            self.record_flush(rec, off, len);
        }
    }

    /// Store fence: every flush and non-temporal store before it is durable after it.
    pub fn fence(&self) {
        persist::sfence();
        if let Some(rec) = &self.recorder {
            rec.lock().fence(&|line| self.line_content(line));
        }
    }

    /// Flush + fence: `off..off+len` is durable on return.
    pub fn persist(&self, off: u64, len: u64) {
        self.flush(off, len);
        self.fence();
    }

    /// Stores `data` at `off` and makes it durable before returning: non-temporal stores
    /// for `data.len() >= NT_THRESHOLD`, ordinary copy + flush below.
    pub fn write_persist(&self, off: u64, data: &[u8]) {
        if data.len() >= NT_THRESHOLD {
            self.write_nt(off, data);
            if self.needs_msync {
                self.msync(off as usize, data.len());
            }
            self.fence();
        } else {
            self.write(off, data);
            self.persist(off, data.len() as u64);
        }
    }

    /// Zeroes `off..off+len` and makes it durable before returning.
    pub fn zero_persist(&self, off: u64, len: u64) {
        let at = self.check(off, len, true);
        if len as usize >= NT_THRESHOLD {
            // SAFETY: inside the live, writable mapping (checked).
            unsafe { persist::zero_nontemporal(self.base.add(at), len as usize) };
            if let Some(rec) = &self.recorder {
                self.record_store(rec, off, len);
                self.record_flush(rec, off, len);
            }
            if self.needs_msync {
                self.msync(at, len as usize);
            }
            self.fence();
        } else {
            self.zero(off, len);
            self.persist(off, len);
        }
    }

    /// Makes every earlier store to the device durable: msync of the whole mapping
    /// where needed, else a fence (stores not yet flushed are the caller's business).
    /// Also reports (and clears) any msync error recorded by earlier flushes.
    pub fn sync_all(&self) -> io::Result<()> {
        if self.needs_msync {
            self.msync(0, self.size as usize);
        }
        self.fence();
        self.take_error()
    }

    /// Returns and clears the first msync error (or, on a recording device, injected
    /// failure) recorded since the last call. `flush` cannot return errors, so they are
    /// kept here for the next check to report, like the kernel's errseq: the journal's
    /// (`Media::take_error`, after each fence: the commit fails) or `sync_all`'s.
    pub fn take_error(&self) -> io::Result<()> {
        match self.error.swap(0, Ordering::Relaxed) {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    fn msync(&self, at: usize, len: usize) {
        // msync wants a page-aligned start.
        let page = 4096;
        let start = at & !(page - 1);
        let len = len + (at - start);
        // SAFETY: start..start+len is inside the live mapping (callers checked at..at+len
        // and the mapping itself starts page-aligned).
        let rc = unsafe { libc::msync(self.base.add(start).cast(), len, libc::MS_SYNC) };
        if rc != 0 {
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            let _ = self
                .error
                .compare_exchange(0, errno, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// A read-only view of the bytes at `off..off+len`, without copying (zero-copy
    /// reads). The view hands out no Rust reference into the mapping (see
    /// [`VolatileSlice`]), so other writers may store to the bytes meanwhile without
    /// undefined behaviour. It keeps the mapping alive, not the blocks: callers pin what
    /// they view, or the bytes may be another file's by the time they are read.
    #[track_caller]
    pub fn volatile(&self, off: u64, len: usize) -> VolatileSlice<'_> {
        let at = self.check(off, len as u64, false);
        // SAFETY: base+at..+len are the mapping's bytes off..off+len (checked inside
        // it), and the mapping lives as long as `self`.
        unsafe { VolatileSlice::on_device(self, self.base.add(at), off, len, false) }
    }

    /// A writable view of the bytes at `off..off+len` (pinned mappings). Stores through
    /// it are ordinary stores: durable after [`VolatileSlice::persist`].
    #[track_caller]
    pub fn volatile_mut(&self, off: u64, len: usize) -> VolatileSlice<'_> {
        let at = self.check(off, len as u64, true);
        // SAFETY: as in `volatile`; the range is writable (checked).
        unsafe { VolatileSlice::on_device(self, self.base.add(at), off, len, true) }
    }

    /// Tells a recording device that `off..off+len` may have been stored to by raw
    /// pointer ([`VolatileSlice::as_mut_ptr`]), where the stores are not seen.
    pub(crate) fn note_stored(&self, off: u64, len: u64) {
        if let Some(rec) = &self.recorder {
            rec.stored(off, len);
        }
    }
}

pub use crate::crash_model::{Fault, LINE};

use crate::crash_model::DeltaPoint;

/// The x86 persistence model of a recording device ([`Device::recording`]): the
/// crate's one [`LineModel`] (the one [`MemMedia`](crate::MemMedia) runs on too), per
/// 64-byte line an ordered list of the stores not yet durable (each split into
/// 8-byte-aligned pieces); a flush marks the line's stores so far pending, a fence makes
/// them durable.
/// Non-temporal stores count as stored and flushed. With recording on, every fence
/// keeps a [`DeltaPoint`]. A write or flush can be made to fail
/// ([`fail_after`](Self::fail_after)): it does not reach the media and the device
/// reports EIO through [`Device::take_error`].
pub struct Recorder {
    inner: Mutex<LineModel>,
}

impl Recorder {
    fn new(len: usize) -> Recorder {
        Recorder {
            inner: Mutex::new(LineModel::new(vec![0; len])),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LineModel> {
        // A panicking test thread must not turn every later access into a panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lines stored through a mutable slice: their stores are read back at flush/fence.
    fn stored(&self, off: u64, len: u64) {
        self.lock().store_opaque(off, len);
    }

    /// What survives a power cut now if no unflushed store reached media.
    pub fn durable_image(&self) -> Vec<u8> {
        self.lock().durable().to_vec()
    }

    /// Starts or stops keeping a [`DeltaPoint`] at every fence.
    pub fn set_recording(&self, on: bool) {
        self.lock().set_recording(on);
    }

    /// Removes and returns the fence points kept so far (oldest first).
    pub fn take_points(&self) -> Vec<DeltaPoint> {
        self.lock().take_points()
    }

    /// Number of fences so far.
    pub fn fence_count(&self) -> u64 {
        self.lock().fence_count()
    }

    /// Number of lines written but not yet durable.
    pub fn unpersisted_count(&self) -> usize {
        self.lock().unpersisted_lines().len()
    }

    /// Arms one failure: after `after` more stores (`Fault::Write`: `write`, `zero`,
    /// non-temporal stores) or flushes (`Fault::Flush`, including those of the persist
    /// helpers) succeed, the next one does not reach the media and the device records
    /// EIO for [`Device::take_error`] (the journal fails the commit that sees it).
    pub fn fail_after(&self, kind: Fault, after: u64) {
        self.lock().fail_after(kind, after);
    }

    /// Number of injected failures that happened.
    pub fn fault_count(&self) -> u64 {
        self.lock().fault_count()
    }

    /// Number of stores (`Fault::Write`: one per call) or flushes so far.
    pub fn op_count(&self, kind: Fault) -> u64 {
        self.lock().op_count(kind)
    }
}

impl crate::media::Media for Device {
    fn read(&self, off: u64, buf: &mut [u8]) {
        Device::read(self, off, buf)
    }
    fn write(&self, off: u64, data: &[u8]) {
        Device::write(self, off, data)
    }
    fn flush(&self, off: u64, len: u64) {
        Device::flush(self, off, len)
    }
    fn fence(&self) {
        Device::fence(self)
    }
    fn take_error(&self) -> io::Result<()> {
        Device::take_error(self)
    }
    fn size(&self) -> u64 {
        Device::size(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Media;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::sync::atomic::AtomicUsize;

    /// A uniquely named file under /dev/shm, removed on drop (even when a test fails).
    struct TempPath(PathBuf);

    impl TempPath {
        fn new(tag: &str) -> TempPath {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            TempPath(PathBuf::from(format!(
                "/dev/shm/daxfs-device-test-{}-{n}-{tag}",
                std::process::id()
            )))
        }

        fn with_size(tag: &str, size: u64) -> TempPath {
            TempPath::with_size_in(Path::new("/dev/shm"), tag, size)
        }

        fn with_size_in(dir: &Path, tag: &str, size: u64) -> TempPath {
            let mut t = TempPath::new(tag);
            t.0 = dir.join(t.0.file_name().expect("temp name has a file name"));
            let f = File::create(&t.0).expect("create test device file");
            reserve(&f, size);
            t
        }
    }

    /// Sizes a test device file and allocates all of it, as `Device::open` requires.
    fn reserve(f: &File, size: u64) {
        allocate_file(f, 0, size).expect("allocate test device file");
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0).or_else(|_| std::fs::remove_dir(&self.0));
        }
    }

    fn open(t: &TempPath) -> Device {
        Device::open(&t.0, DeviceOptions::default()).expect("open test device")
    }

    #[test]
    fn regular_file_on_shm_opens_as_memory_backed_file() {
        let t = TempPath::with_size("file", 1 << 20);
        let dev = open(&t);
        assert_eq!(dev.kind(), DeviceKind::File);
        assert_eq!(dev.size(), 1 << 20);
        assert_eq!(dev.path(), t.0.as_path());
        assert!(dev.memory_backed());
        assert!(!dev.needs_msync());
        assert!(!dev.map_sync());
        assert!(dev.writable());
        assert_eq!(dev.flush_instr(), persist::flush_instr());
    }

    #[test]
    fn file_outside_memory_fs_persists_through_msync() {
        // The system temp dir is a disk filesystem on most machines (ext4 here).
        let t = TempPath::with_size_in(&std::env::temp_dir(), "disk", 64 << 10);
        let dev = open(&t);
        assert_eq!(dev.needs_msync(), !dev.memory_backed() && !dev.map_sync());
        dev.write_persist(100, b"small");
        dev.write_persist(4096, &vec![3u8; NT_THRESHOLD]);
        dev.sync_all().expect("sync_all");
        let on_file = std::fs::read(&t.0).expect("read backing file");
        assert_eq!(&on_file[100..105], b"small");
        assert!(on_file[4096..4096 + NT_THRESHOLD].iter().all(|&b| b == 3));
    }

    #[test]
    fn write_then_read_round_trips() {
        let t = TempPath::with_size("rw", 64 << 10);
        let dev = open(&t);
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        dev.write(1234, &data);
        let mut back = vec![0; data.len()];
        dev.read(1234, &mut back);
        assert_eq!(back, data);
    }

    #[test]
    fn writes_reach_the_backing_file() {
        let t = TempPath::with_size("backing", 8192);
        let dev = open(&t);
        dev.write_persist(4096, b"hello pmem");
        let on_file = std::fs::read(&t.0).expect("read backing file");
        assert_eq!(&on_file[4096..4106], b"hello pmem");
    }

    #[test]
    fn persist_paths_store_the_data() {
        let t = TempPath::with_size("persist", 1 << 20);
        let dev = open(&t);
        let small = vec![0x5Au8; 100];
        let large = vec![0xA5u8; NT_THRESHOLD * 2 + 3];
        dev.write(10, &small);
        dev.flush(10, 100);
        dev.fence();
        dev.persist(10, 100);
        dev.write_persist(7, &small);
        dev.write_persist(65_537, &large);
        dev.flush(0, 0);
        dev.sync_all().expect("sync_all");
        let mut back = vec![0; large.len()];
        dev.read(65_537, &mut back);
        assert_eq!(back, large);
        let mut back = vec![0; small.len()];
        dev.read(7, &mut back);
        assert_eq!(back, small);
    }

    #[test]
    fn zero_and_zero_persist_clear_exactly_the_range() {
        let t = TempPath::with_size("zero", 256 << 10);
        let dev = open(&t);
        dev.write(0, &vec![0xFF; 256 << 10]);
        dev.zero(100, 50);
        dev.zero_persist(1000, 3);
        dev.zero_persist(4099, (NT_THRESHOLD * 3) as u64);
        let mut all = vec![0; 256 << 10];
        dev.read(0, &mut all);
        for (i, &b) in all.iter().enumerate() {
            let zeroed = (100..150).contains(&i)
                || (1000..1003).contains(&i)
                || (4099..4099 + NT_THRESHOLD * 3).contains(&i);
            assert_eq!(b, if zeroed { 0 } else { 0xFF }, "byte {i}");
        }
    }

    #[test]
    fn write_nt_is_exact_at_every_alignment_and_length() {
        let t = TempPath::with_size("nt", 64 << 10);
        let dev = open(&t);
        let src: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8 + 1).collect();
        for len in (0..300).chain([4096, 8000]) {
            for off in [0u64, 1, 7, 8, 15, 16, 33, 63, 64, 65, 4095] {
                dev.zero(0, 16384);
                dev.write_nt(off, &src[..len]);
                dev.fence();
                let mut back = vec![0xEE; 16384];
                dev.read(0, &mut back);
                let off = off as usize;
                assert!(back[..off].iter().all(|&b| b == 0), "len {len} off {off}");
                assert_eq!(&back[off..off + len], &src[..len], "len {len} off {off}");
                assert!(
                    back[off + len..].iter().all(|&b| b == 0),
                    "len {len} off {off}"
                );
            }
        }
    }

    #[test]
    fn access_at_the_very_end_is_allowed() {
        let t = TempPath::with_size("end", 8192);
        let dev = open(&t);
        dev.write(8192 - 4, b"tail");
        let mut b = [0; 4];
        dev.read(8188, &mut b);
        assert_eq!(&b, b"tail");
        dev.read(8192, &mut []);
    }

    #[test]
    #[should_panic(expected = "beyond the end")]
    fn read_past_the_end_panics_as_a_caller_bug() {
        let t = TempPath::with_size("oob-read", 8192);
        let dev = open(&t);
        let mut b = [0; 2];
        dev.read(8191, &mut b);
    }

    #[test]
    #[should_panic(expected = "beyond the end")]
    fn write_with_overflowing_offset_panics_as_a_caller_bug() {
        let t = TempPath::with_size("oob-write", 8192);
        let dev = open(&t);
        dev.write(u64::MAX, b"x");
    }

    #[test]
    #[should_panic(expected = "read-only device")]
    fn write_to_read_only_device_panics_as_a_caller_bug() {
        let t = TempPath::with_size("ro", 8192);
        let opts = DeviceOptions {
            writable: false,
            ..DeviceOptions::default()
        };
        let dev = Device::open(&t.0, opts).expect("open read-only");
        dev.write(0, b"x");
    }

    #[test]
    fn read_only_open_reads_existing_contents() {
        let t = TempPath::with_size("ro-read", 8192);
        std::fs::write(&t.0, vec![9u8; 8192]).expect("fill");
        let opts = DeviceOptions {
            writable: false,
            exclusive: false,
            populate: false,
        };
        let dev = Device::open(&t.0, opts).expect("open read-only");
        let mut b = [0; 3];
        dev.read(4000, &mut b);
        assert_eq!(b, [9, 9, 9]);
        dev.persist(0, 8192);
        assert!(!dev.needs_msync());
    }

    #[test]
    fn second_exclusive_open_is_busy() {
        let t = TempPath::with_size("busy", 8192);
        let first = open(&t);
        let err = Device::open(&t.0, DeviceOptions::default()).expect_err("second open");
        assert!(matches!(err, DeviceError::Busy { .. }), "{err}");
        assert!(err.to_string().contains("in use by another daxfs or mkfs"));
        drop(first);
        assert!(Device::open(&t.0, DeviceOptions::default()).is_ok());
    }

    #[test]
    fn is_locked_by_other_follows_the_exclusive_lock() {
        let t = TempPath::with_size("locked", 8192);
        assert!(!Device::is_locked_by_other(&t.0));
        let dev = open(&t);
        assert!(Device::is_locked_by_other(&t.0));
        drop(dev);
        assert!(!Device::is_locked_by_other(&t.0));
    }

    #[test]
    fn non_exclusive_opens_coexist() {
        let t = TempPath::with_size("shared", 8192);
        let opts = DeviceOptions {
            exclusive: false,
            ..DeviceOptions::default()
        };
        let a = Device::open(&t.0, opts).expect("first");
        let b = Device::open(&t.0, opts).expect("second");
        a.write_persist(0, b"shared");
        let mut buf = [0; 6];
        b.read(0, &mut buf);
        assert_eq!(&buf, b"shared");
    }

    #[test]
    fn directory_is_rejected_with_reason() {
        let t = TempPath::new("dir");
        std::fs::create_dir(&t.0).expect("mkdir");
        let err = Device::open(&t.0, DeviceOptions::default()).expect_err("directory");
        assert!(matches!(err, DeviceError::Unsupported { .. }));
        let msg = err.to_string();
        assert!(msg.contains(&*t.0.to_string_lossy()), "{msg}");
        assert!(
            msg.contains("not a DAX device, block device or regular file"),
            "{msg}"
        );
        assert!(msg.contains("directory"), "{msg}");
    }

    #[test]
    fn missing_path_is_not_found() {
        let t = TempPath::new("missing");
        let err = Device::open(&t.0, DeviceOptions::default()).expect_err("missing");
        assert!(matches!(err, DeviceError::NotFound { .. }), "{err}");
        assert!(!Device::is_locked_by_other(&t.0));
    }

    #[test]
    fn odd_size_is_rejected() {
        let t = TempPath::with_size("odd", 12345);
        let err = Device::open(&t.0, DeviceOptions::default()).expect_err("odd size");
        assert!(
            matches!(err, DeviceError::BadSize { size: 12345, .. }),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains("size 12345 is not a multiple of 4096"));
    }

    #[test]
    fn empty_file_is_rejected() {
        let t = TempPath::with_size("empty", 0);
        let err = Device::open(&t.0, DeviceOptions::default()).expect_err("empty");
        assert!(matches!(err, DeviceError::Empty { .. }), "{err}");
    }

    #[test]
    fn non_dax_char_device_is_rejected() {
        let err =
            Device::open(Path::new("/dev/null"), DeviceOptions::default()).expect_err("/dev/null");
        assert!(matches!(err, DeviceError::Unsupported { .. }), "{err}");
    }

    #[test]
    fn fifo_is_rejected_without_blocking() {
        let t = TempPath::new("fifo");
        let c = CString::new(t.0.as_os_str().as_bytes()).expect("path has no NUL");
        // SAFETY: mkfifo reads a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = Device::open(&t.0, DeviceOptions::default()).expect_err("fifo");
        assert!(err.to_string().contains("fifo"), "{err}");
    }

    #[test]
    fn media_impl_reads_writes_and_persists() {
        let t = TempPath::with_size("media", 16384);
        let dev = open(&t);
        let media: &dyn Media = &dev;
        media.write(4096, b"journal record");
        media.flush(4096, 14);
        media.fence();
        let mut b = [0; 14];
        media.read(4096, &mut b);
        assert_eq!(&b, b"journal record");
    }

    #[test]
    fn volatile_views_alias_the_mapping() {
        let t = TempPath::with_size("slice", 8192);
        let dev = open(&t);
        dev.volatile_mut(100, 5).copy_from(b"zcopy").unwrap();
        assert_eq!(dev.volatile(100, 5).to_vec(), b"zcopy");
        let mut b = [0; 5];
        dev.read(100, &mut b);
        assert_eq!(&b, b"zcopy");
    }

    #[test]
    #[ignore = "needs DAXFS_TEST_BLOCKDEV=<scratch block device, e.g. a loop device>"]
    fn block_device_opens_as_pmem_with_exclusive_lock() {
        let path = PathBuf::from(
            std::env::var_os("DAXFS_TEST_BLOCKDEV").expect("DAXFS_TEST_BLOCKDEV is set"),
        );
        let name = path
            .file_name()
            .expect("device has a name")
            .to_string_lossy();
        let sectors =
            std::fs::read_to_string(format!("/sys/class/block/{name}/size")).expect("sysfs size");
        let dev = Device::open(&path, DeviceOptions::default()).expect("open block device");
        assert_eq!(dev.kind(), DeviceKind::Pmem);
        assert_eq!(
            dev.size(),
            sectors.trim().parse::<u64>().expect("number") * 512
        );
        assert_eq!(dev.needs_msync(), !dev.map_sync());
        let err = Device::open(&path, DeviceOptions::default()).expect_err("second open");
        assert!(matches!(err, DeviceError::Busy { .. }), "{err}");
        assert!(Device::is_locked_by_other(&path));
        let mut saved = [0; 16];
        dev.read(4096, &mut saved);
        dev.write_persist(4096, b"daxfs block test");
        dev.sync_all().expect("sync_all");
        let mut back = [0; 16];
        dev.read(4096, &mut back);
        assert_eq!(&back, b"daxfs block test");
        dev.write_persist(4096, &saved);
        dev.sync_all().expect("sync_all");
        drop(dev);
        assert!(!Device::is_locked_by_other(&path));
    }

    #[test]
    fn memory_device_holds_a_copy_of_the_image() {
        let mut img = vec![0u8; 8192];
        img[5000] = 42;
        let dev = Device::memory(&img).expect("memory device");
        assert_eq!(dev.kind(), DeviceKind::Memory);
        assert_eq!(dev.size(), 8192);
        let mut b = [0u8; 1];
        dev.read(5000, &mut b);
        assert_eq!(b[0], 42);
        assert!(dev.recorder().is_none());
        assert!(matches!(
            Device::memory(&[0u8; 100]),
            Err(DeviceError::BadSize { .. })
        ));
    }

    #[test]
    fn recorded_store_is_durable_only_after_flush_and_fence() {
        let (dev, rec) = Device::recording(8192).expect("recording device");
        dev.write(70, &[1, 2, 3]);
        assert_eq!(rec.durable_image()[70..73], [0, 0, 0]);
        dev.flush(70, 3);
        assert_eq!(rec.durable_image()[70..73], [0, 0, 0], "flush alone");
        dev.fence();
        assert_eq!(rec.durable_image()[70..73], [1, 2, 3]);
        assert_eq!(rec.unpersisted_count(), 0);
    }

    #[test]
    fn recorded_store_after_flush_is_not_made_durable_by_the_fence() {
        let (dev, rec) = Device::recording(8192).expect("recording device");
        dev.write(0, &[1]);
        dev.flush(0, 1);
        dev.write(0, &[2]);
        dev.fence();
        assert_eq!(rec.durable_image()[0], 1);
        assert_eq!(rec.unpersisted_count(), 1);
    }

    #[test]
    fn recorded_streaming_stores_and_persist_helpers_are_durable_at_their_fence() {
        let (dev, rec) = Device::recording(64 << 10).expect("recording device");
        dev.write_nt(4096, &[7u8; 100]);
        assert_eq!(rec.durable_image()[4096], 0);
        dev.fence();
        assert_eq!(rec.durable_image()[4195], 7);
        dev.write_persist(8192, &[9u8; NT_THRESHOLD]);
        dev.write_persist(100, b"small");
        dev.zero_persist(4096, 64);
        let img = rec.durable_image();
        assert_eq!((img[8192], img[100], img[4096], img[4160]), (9, b's', 0, 7));
        assert_eq!(rec.unpersisted_count(), 0);
    }

    #[test]
    fn fence_points_are_deltas_that_rebuild_every_crash_state() {
        let (dev, rec) = Device::recording(8192).expect("recording device");
        let base = rec.durable_image();
        rec.set_recording(true);
        dev.write(64, &[5]);
        dev.write(200, &[6]);
        dev.flush(64, 1);
        dev.fence(); // point 0: lines 1 and 3 unpersisted; line 1 made durable
        dev.fence(); // point 1: line 3 still unpersisted
        let points = rec.take_points();
        assert_eq!(points.len(), 2);
        assert_eq!(rec.fence_count(), 2);
        let lines: Vec<usize> = points[0].unpersisted.iter().map(|u| u.0).collect();
        assert_eq!(lines, vec![1, 3]);
        let mut durable = base;
        let mut crash = durable.clone();
        points[0].add_lines(&mut crash, &[1]);
        assert_eq!((crash[64], crash[200]), (0, 6));
        points[0].advance(&mut durable);
        assert_eq!((durable[64], durable[200]), (5, 0));
        assert_eq!(points[1].unpersisted.len(), 1);
        assert!(points[1].made_durable.is_empty());
    }

    #[test]
    fn recorded_fence_point_holds_each_torn_prefix_of_a_line() {
        let (dev, rec) = Device::recording(8192).expect("recording device");
        rec.set_recording(true);
        // 24 bytes at 60: line 0 gets one piece (60..64), line 1 three, in order (64..72,
        // 72..80, 80..84), so two torn contents.
        dev.write(60, &[1; 24]);
        dev.persist(60, 24);
        let points = rec.take_points();
        let p = &points[0];
        let lines: Vec<usize> = p.unpersisted.iter().map(|u| u.0).collect();
        assert_eq!(lines, vec![0, 1]);
        assert!(p.torn[0].is_empty(), "one piece: all or nothing");
        assert_eq!(p.torn[1].len(), 2);
        let mut img = vec![0u8; 8192];
        p.add_torn(&mut img, 1, 0);
        assert_eq!((img[71], img[72], img[60]), (1, 0, 0));
        p.add_torn(&mut img, 1, 1);
        assert_eq!((img[79], img[80]), (1, 0));
        assert_eq!(p.torn_count(), 2);
    }

    #[test]
    fn recorded_raw_pointer_stores_are_read_back_at_the_flush() {
        let (dev, rec) = Device::recording(8192).expect("recording device");
        let ptr = dev
            .volatile_mut(128, 16)
            .as_mut_ptr()
            .expect("writable view");
        // SAFETY: `ptr` points at 16 writable bytes of the live mapping (the view checked
        // the range), and the test is the only user of these bytes.
        unsafe { std::ptr::write_bytes(ptr, 4, 16) };
        dev.persist(128, 16);
        assert_eq!(rec.durable_image()[128..144], [4; 16]);
        assert_eq!(rec.unpersisted_count(), 0);
    }

    #[test]
    fn injected_flush_failure_is_not_durable_and_reported_as_eio() {
        let (dev, rec) = Device::recording(8192).expect("recording device");
        rec.fail_after(Fault::Flush, 1);
        dev.write_persist(0, &[1]);
        dev.write_persist(64, &[2]);
        assert_eq!(
            rec.durable_image()[..65],
            [[1u8].as_slice(), &[0; 64]].concat()[..]
        );
        let err = dev.take_error().expect_err("the failed flush is reported");
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        assert!(dev.take_error().is_ok(), "once");
        assert_eq!(rec.fault_count(), 1);
    }

    #[test]
    fn injected_write_failure_never_reaches_the_media() {
        let (dev, rec) = Device::recording(8192).expect("recording device");
        rec.fail_after(Fault::Write, 0);
        dev.write_persist(0, &[1]);
        let mut b = [0u8];
        dev.read(0, &mut b);
        assert_eq!((b[0], rec.durable_image()[0]), (1, 0));
        assert!(Media::take_error(&dev).is_err(), "the journal sees it");
    }

    #[test]
    fn device_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Device>();
        let t = TempPath::with_size("threads", 1 << 20);
        let dev = open(&t);
        std::thread::scope(|s| {
            for i in 0..4u8 {
                let dev = &dev;
                s.spawn(move || dev.write_persist(u64::from(i) * 4096, &[i + 1; 4096]));
            }
        });
        for i in 0..4u8 {
            let mut b = [0; 4096];
            dev.read(u64::from(i) * 4096, &mut b);
            assert!(b.iter().all(|&x| x == i + 1));
        }
    }
}
