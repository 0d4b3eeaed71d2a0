//! The daxfs ioctl ABI, as documented for C in `include/daxfs_ioctl.h` (keep both in
//! step): ioctl numbers, `struct daxfs_pin`, `struct daxfs_pin_status` and
//! `struct daxfs_stats`, with their encodings. Shared by the FUSE adapter (server side) and the `daxfs` CLI (client side).
//!
//! All four are "restricted" ioctls in FUSE terms: their `_IOC` number carries the
//! direction and size of the argument, so the kernel copies it in and out by itself.

use daxfs::FsStats;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// ioctl type byte of daxfs (`_IOC_TYPE`).
pub const DAXFS_IOC_MAGIC: u32 = 0xDA;

/// `_IOC(dir, type, nr, size)` as linux/ioctl.h builds it (asm-generic layout): every
/// ioctl number of the crate, daxfs's and the FS_IOC_* ones the adapter answers, is
/// built here.
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: u32) -> u32 {
    (dir << 30) | (size << 16) | (ty << 8) | nr
}
/// `_IOC_WRITE`: the caller passes the argument in (`_IOW`).
pub const IOC_WRITE: u32 = 1;
/// `_IOC_READ`: the caller reads the argument back (`_IOR`).
pub const IOC_READ: u32 = 2;

/// `struct daxfs_pin { __u64 offset; __u64 length; }`
pub const DAXFS_PIN_SIZE: usize = 16;
/// `struct daxfs_stats`: 32 `__u64` fields.
pub const DAXFS_STATS_SIZE: usize = 256;
/// `struct daxfs_pin_status`: 8 `__u64` fields.
pub const DAXFS_PIN_STATUS_SIZE: usize = 64;

/// `_IOW(0xDA, 1, struct daxfs_pin)`: pin a byte range of the open file.
pub const DAXFS_IOC_PIN: u32 = ioc(IOC_WRITE, DAXFS_IOC_MAGIC, 1, DAXFS_PIN_SIZE as u32);
/// `_IOW(0xDA, 2, struct daxfs_pin)`: release a pin taken with the same range.
pub const DAXFS_IOC_UNPIN: u32 = ioc(IOC_WRITE, DAXFS_IOC_MAGIC, 2, DAXFS_PIN_SIZE as u32);
/// `_IOR(0xDA, 3, struct daxfs_stats)`: the filesystem's counters (any file or directory
/// of the mount, typically its root).
pub const DAXFS_IOC_STATS: u32 = ioc(IOC_READ, DAXFS_IOC_MAGIC, 3, DAXFS_STATS_SIZE as u32);
/// `_IOR(0xDA, 4, struct daxfs_pin_status)`: the state of the pins held through the open
/// file (how many, how many a layout break asked back, how many it revoked).
pub const DAXFS_IOC_PIN_STATUS: u32 =
    ioc(IOC_READ, DAXFS_IOC_MAGIC, 4, DAXFS_PIN_STATUS_SIZE as u32);

/// `struct daxfs_sync { __u64 timeout_ms, applied_seq, flags, reserved[5]; }`.
pub const DAXFS_SYNC_SIZE: usize = 64;
/// `_IOWR(0xDA, 5, struct daxfs_sync)`: on a follower (`-o follow`), wait (at most
/// `timeout_ms`) until it has applied every transaction its writer had committed when
/// called; on other mounts it does nothing (`flags` 0: the caller syncfs(2)s instead).
pub const DAXFS_IOC_SYNC: u32 = ioc(
    IOC_READ | IOC_WRITE,
    DAXFS_IOC_MAGIC,
    5,
    DAXFS_SYNC_SIZE as u32,
);
/// `daxfs_sync.flags`: the mount is a follower (and `applied_seq` is its view's).
pub const DAXFS_SYNC_FOLLOWER: u64 = 1;

/// A `struct daxfs_sync`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncArg {
    pub timeout_ms: u64,
    pub applied_seq: u64,
    pub flags: u64,
}

impl SyncArg {
    pub fn encode(&self) -> [u8; DAXFS_SYNC_SIZE] {
        let mut b = [0u8; DAXFS_SYNC_SIZE];
        b[..8].copy_from_slice(&self.timeout_ms.to_ne_bytes());
        b[8..16].copy_from_slice(&self.applied_seq.to_ne_bytes());
        b[16..24].copy_from_slice(&self.flags.to_ne_bytes());
        b
    }

    /// None when `b` is shorter than the fields.
    pub fn decode(b: &[u8]) -> Option<SyncArg> {
        let word = |i: usize| Some(u64::from_ne_bytes(b.get(i..i + 8)?.try_into().ok()?));
        Some(SyncArg {
            timeout_ms: word(0)?,
            applied_seq: word(8)?,
            flags: word(16)?,
        })
    }
}

/// `daxfs sync MOUNTPOINT`: DAXFS_IOC_SYNC, then syncfs(2) unless the mount is a
/// follower (a follower has nothing of its own to make durable).
pub fn sync_mount(path: &Path, timeout: std::time::Duration) -> io::Result<SyncArg> {
    let f = File::open(path)?;
    let mut b = SyncArg {
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        ..Default::default()
    }
    .encode();
    let r = match raw_ioctl(&f, DAXFS_IOC_SYNC, b.as_mut_ptr()) {
        Ok(()) => SyncArg::decode(&b).unwrap_or_default(),
        // An older daemon: a plain sync.
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => SyncArg::default(),
        Err(e) => return Err(e),
    };
    if r.flags & DAXFS_SYNC_FOLLOWER == 0 {
        // SAFETY: syncfs has no memory-safety preconditions; the fd is open (`f`).
        if unsafe { libc::syncfs(f.as_raw_fd()) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(r)
}

/// `_IOR(0xDA, 6, __u64)`: on a follower whose writer's heartbeat has stopped for the
/// host timeout, take the writer role (journal replayed, lease taken by CAS); the
/// argument comes back as the new lease epoch. Root only (EPERM); EBUSY while the writer
/// heartbeats, when another host took the role first, or on a mount that is not a
/// follower.
pub const DAXFS_IOC_PROMOTE: u32 = ioc(IOC_READ, DAXFS_IOC_MAGIC, 6, 8);

/// `daxfs promote MOUNTPOINT`: DAXFS_IOC_PROMOTE; the new lease epoch.
pub fn promote_mount(path: &Path) -> io::Result<u64> {
    let f = File::open(path)?;
    let mut b = [0u8; 8];
    raw_ioctl(&f, DAXFS_IOC_PROMOTE, b.as_mut_ptr())?;
    Ok(u64::from_ne_bytes(b))
}

/// `daxfs_stats.magic`: "DAXFSST1" in little-endian byte order.
pub const DAXFS_STATS_MAGIC: u64 = u64::from_le_bytes(*b"DAXFSST1");

/// A `struct daxfs_pin` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinArg {
    pub offset: u64,
    pub length: u64,
}

impl PinArg {
    pub fn encode(&self) -> [u8; DAXFS_PIN_SIZE] {
        let mut b = [0u8; DAXFS_PIN_SIZE];
        b[..8].copy_from_slice(&self.offset.to_ne_bytes());
        b[8..].copy_from_slice(&self.length.to_ne_bytes());
        b
    }

    /// None when `b` is shorter than the structure.
    pub fn decode(b: &[u8]) -> Option<PinArg> {
        Some(PinArg {
            offset: u64::from_ne_bytes(b.get(..8)?.try_into().ok()?),
            length: u64::from_ne_bytes(b.get(8..16)?.try_into().ok()?),
        })
    }
}

/// `struct daxfs_pin_status { __u64 pins, breaking, revoked, reserved[5]; }`: the pins of
/// one open file description.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinStatus {
    /// Pins held through the description (revoked ones included, until unpinned).
    pub pins: u64,
    /// Of those, the ones a layout break asked back (revoked ones included).
    pub breaking: u64,
    /// Of those, the ones a layout break revoked: they hold nothing any more.
    pub revoked: u64,
}

impl PinStatus {
    pub fn encode(&self) -> [u8; DAXFS_PIN_STATUS_SIZE] {
        let mut b = [0u8; DAXFS_PIN_STATUS_SIZE];
        for (i, w) in [self.pins, self.breaking, self.revoked].iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
        }
        b
    }

    /// None when `b` is shorter than the three fields.
    pub fn decode(b: &[u8]) -> Option<PinStatus> {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_ne_bytes(
                b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        Some(PinStatus {
            pins: word(0)?,
            breaking: word(1)?,
            revoked: word(2)?,
        })
    }
}

/// The fields of `struct daxfs_stats` after `magic` and `size`, in order.
fn stats_fields(s: &FsStats) -> [u64; 18] {
    [
        s.blocks_total,
        s.blocks_free,
        s.blocks_cached,
        s.blocks_pinned,
        s.alloc_free,
        s.pins_taken,
        s.pins_released,
        s.block_pins,
        s.block_unpins,
        s.layout_breaks,
        s.lease_breaks,
        s.waits,
        s.wait_ns,
        s.timeouts,
        s.violations,
        s.commits,
        s.transactions,
        s.pins_revoked,
    ]
}

/// Number of meaningful bytes of `struct daxfs_stats` (the rest is reserved, zero): the
/// counters, then the transport word ([`Transport`]).
const STATS_USED: u64 = 8 * (2 + 18 + 1);
/// Word index of `daxfs_stats.transport`.
const TRANSPORT_WORD: usize = 2 + 18;

/// How the mount's requests reach the daemon (`daxfs_stats.transport`: 1 /dev/fuse,
/// 2 io_uring; 0, from a daemon older than the field, is unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    DevFuse,
    IoUring,
}

impl Transport {
    /// The name `daxfs stats` shows.
    pub fn name(self) -> &'static str {
        match self {
            Transport::DevFuse => "dev_fuse",
            Transport::IoUring => "io_uring",
        }
    }

    fn word(self) -> u64 {
        match self {
            Transport::DevFuse => 1,
            Transport::IoUring => 2,
        }
    }
}

/// [`encode_stats`] with the transport word set.
pub fn encode_stats_with(s: &FsStats, t: Transport) -> [u8; DAXFS_STATS_SIZE] {
    let mut b = encode_stats(s);
    b[TRANSPORT_WORD * 8..TRANSPORT_WORD * 8 + 8].copy_from_slice(&t.word().to_ne_bytes());
    b
}

/// The transport word of a `struct daxfs_stats`; None if absent or unknown.
pub fn decode_transport(b: &[u8]) -> Option<Transport> {
    let w = u64::from_ne_bytes(
        b.get(TRANSPORT_WORD * 8..TRANSPORT_WORD * 8 + 8)?
            .try_into()
            .ok()?,
    );
    match w {
        1 => Some(Transport::DevFuse),
        2 => Some(Transport::IoUring),
        _ => None,
    }
}
/// `size` of the first version of the structure (up to `commits`): a reply at least
/// this long is accepted, and fields it does not cover read as the zeros an older
/// daemon leaves in `reserved`.
const STATS_USED_V1: u64 = 8 * (2 + 16);

pub fn encode_stats(s: &FsStats) -> [u8; DAXFS_STATS_SIZE] {
    let mut b = [0u8; DAXFS_STATS_SIZE];
    let words = [DAXFS_STATS_MAGIC, STATS_USED]
        .into_iter()
        .chain(stats_fields(s));
    for (i, w) in words.enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
    }
    b
}

/// None unless `b` is a `struct daxfs_stats` (right magic, long enough).
pub fn decode_stats(b: &[u8]) -> Option<FsStats> {
    let word = |i: usize| -> Option<u64> {
        Some(u64::from_ne_bytes(
            b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
        ))
    };
    if word(0)? != DAXFS_STATS_MAGIC || word(1)? < STATS_USED_V1 {
        return None;
    }
    let f = |i: usize| word(2 + i);
    Some(FsStats {
        blocks_total: f(0)?,
        blocks_free: f(1)?,
        blocks_cached: f(2)?,
        blocks_pinned: f(3)?,
        alloc_free: f(4)?,
        pins_taken: f(5)?,
        pins_released: f(6)?,
        block_pins: f(7)?,
        block_unpins: f(8)?,
        layout_breaks: f(9)?,
        lease_breaks: f(10)?,
        waits: f(11)?,
        wait_ns: f(12)?,
        timeouts: f(13)?,
        violations: f(14)?,
        commits: f(15)?,
        transactions: f(16)?,
        // Zero from a daemon older than the field (`size` 152), as `reserved` was.
        pins_revoked: f(17)?,
    })
}

// ---------------------------------------------------------------------------------
// Client side (the `daxfs pin` and `daxfs stats` commands, or any program)

/// Issues `cmd` with `arg` (the size its number encodes) on `file`.
fn raw_ioctl(file: &File, cmd: u32, arg: *mut u8) -> io::Result<()> {
    // SAFETY: `arg` points to a buffer of at least the size encoded in `cmd` (every
    // caller passes one of this module's structures for its own number), valid for the
    // whole call; the fd is open for the call (borrowed from `file`).
    let r = unsafe { libc::ioctl(file.as_raw_fd(), cmd as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// DAXFS_IOC_PIN: pins `length` bytes at `offset` of the open file, until
/// [`unpin_file`] with the same range or until the open file is closed.
pub fn pin_file(file: &File, offset: u64, length: u64) -> io::Result<()> {
    let mut b = PinArg { offset, length }.encode();
    raw_ioctl(file, DAXFS_IOC_PIN, b.as_mut_ptr())
}

/// DAXFS_IOC_UNPIN: releases a pin taken through `file` with the same range.
pub fn unpin_file(file: &File, offset: u64, length: u64) -> io::Result<()> {
    let mut b = PinArg { offset, length }.encode();
    raw_ioctl(file, DAXFS_IOC_UNPIN, b.as_mut_ptr())
}

/// DAXFS_IOC_PIN_STATUS: the state of the pins held through `file`.
pub fn pin_status(file: &File) -> io::Result<PinStatus> {
    let mut b = [0u8; DAXFS_PIN_STATUS_SIZE];
    raw_ioctl(file, DAXFS_IOC_PIN_STATUS, b.as_mut_ptr())?;
    PinStatus::decode(&b)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short pin status"))
}

/// DAXFS_IOC_STATS on `path` (a daxfs mount point or anything in it). An error of kind
/// `InvalidData` when the path answers the ioctl but not with daxfs's structure.
pub fn read_stats(path: &Path) -> io::Result<FsStats> {
    read_stats_and_transport(path).map(|(s, _)| s)
}

/// [`read_stats`] and the transport the daemon reports (None from an older daemon).
pub fn read_stats_and_transport(path: &Path) -> io::Result<(FsStats, Option<Transport>)> {
    let f = File::open(path)?;
    let mut b = [0u8; DAXFS_STATS_SIZE];
    raw_ioctl(&f, DAXFS_IOC_STATS, b.as_mut_ptr())?;
    let s = decode_stats(&b)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not daxfs statistics"))?;
    Ok((s, decode_transport(&b)))
}

/// A counter's stable name and how to read it from the statistics.
pub type Counter = (&'static str, fn(&FsStats) -> u64);

/// Every counter `daxfs stats` shows, in order, under its stable name (the text and the
/// JSON outputs both come from this table, so they cannot disagree); `balanced` follows.
pub const STATS_COUNTERS: [Counter; 19] = [
    ("blocks_total", |s| s.blocks_total),
    ("blocks_free", |s| s.blocks_free),
    ("blocks_cached", |s| s.blocks_cached),
    ("blocks_pinned", |s| s.blocks_pinned),
    ("allocator_free", |s| s.alloc_free),
    ("pins_taken", |s| s.pins_taken),
    ("pins_released", |s| s.pins_released),
    ("pins_active", |s| s.pins_active()),
    ("pins_revoked", |s| s.pins_revoked),
    ("block_refs_taken", |s| s.block_pins),
    ("block_refs_dropped", |s| s.block_unpins),
    ("layout_breaks", |s| s.layout_breaks),
    ("lease_breaks", |s| s.lease_breaks),
    ("waits", |s| s.waits),
    ("wait_ns", |s| s.wait_ns),
    ("timeouts", |s| s.timeouts),
    ("violations", |s| s.violations),
    ("journal_commits", |s| s.commits),
    ("transactions", |s| s.transactions),
];

/// `daxfs stats` output: one 'name value' line per counter, then `balanced yes|no`. The
/// wait time is shown as `wait_seconds` (3 decimals) for people; JSON keeps `wait_ns`.
pub fn format_stats(s: &FsStats) -> String {
    let mut out = String::new();
    for (name, get) in STATS_COUNTERS {
        let (k, v) = match name {
            "wait_ns" => ("wait_seconds", format!("{:.3}", get(s) as f64 / 1e9)),
            _ => (name, get(s).to_string()),
        };
        out.push_str(&format!("{k:<20}{v}\n"));
    }
    let balanced = if s.balanced() { "yes" } else { "no" };
    out.push_str(&format!("{:<20}{balanced}\n", "balanced"));
    out
}

/// `daxfs stats --json` output: one JSON object on one line, every counter of
/// [`STATS_COUNTERS`] an integer under its name, then `balanced` a boolean. Written by
/// hand: the values are only integers and one boolean, so no escaping is needed and
/// serde would be a dependency for a dozen lines.
pub fn format_stats_json(s: &FsStats) -> String {
    let mut out = String::from("{");
    for (name, get) in STATS_COUNTERS {
        out.push_str(&format!("\"{name}\":{},", get(s)));
    }
    out.push_str(&format!("\"balanced\":{}}}\n", s.balanced()));
    out
}

/// [`format_stats`], then `transport NAME` when the daemon reports it.
pub fn format_stats_with(s: &FsStats, t: Option<Transport>) -> String {
    let mut out = format_stats(s);
    if let Some(t) = t {
        out.push_str(&format!("{:<20}{}\n", "transport", t.name()));
    }
    out
}

/// [`format_stats_json`], then `"transport":"NAME"` last when the daemon reports it.
pub fn format_stats_json_with(s: &FsStats, t: Option<Transport>) -> String {
    let mut out = format_stats_json(s);
    if let Some(t) = t {
        let end = out.trim_end().len() - 1; // the closing brace
        out.replace_range(end.., &format!(",\"transport\":\"{}\"}}\n", t.name()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transport_word_round_trips_and_is_shown_last() {
        let s = FsStats::default();
        assert_eq!(decode_transport(&encode_stats(&s)), None);
        for t in [Transport::DevFuse, Transport::IoUring] {
            let b = encode_stats_with(&s, t);
            assert_eq!(decode_transport(&b), Some(t));
            assert_eq!(decode_stats(&b), Some(s));
        }
        let text = format_stats_with(&s, Some(Transport::IoUring));
        assert!(
            text.ends_with("balanced            yes\ntransport           io_uring\n"),
            "{text}"
        );
        assert_eq!(format_stats_with(&s, None), format_stats(&s));
        let j = format_stats_json_with(&s, Some(Transport::DevFuse));
        assert!(
            j.ends_with(",\"balanced\":true,\"transport\":\"dev_fuse\"}\n"),
            "{j}"
        );
    }

    #[test]
    fn ioctl_numbers_are_the_documented_constants() {
        // The values written in include/daxfs_ioctl.h's comments.
        assert_eq!(DAXFS_IOC_PIN, 0x4010_DA01);
        assert_eq!(DAXFS_IOC_UNPIN, 0x4010_DA02);
        assert_eq!(DAXFS_IOC_STATS, 0x8100_DA03);
        assert_eq!(DAXFS_IOC_PIN_STATUS, 0x8040_DA04);
    }

    #[test]
    fn pin_argument_round_trips() {
        let a = PinArg {
            offset: 4096,
            length: 1 << 20,
        };
        assert_eq!(PinArg::decode(&a.encode()), Some(a));
        assert_eq!(PinArg::decode(&[0u8; 15]), None);
    }

    #[test]
    fn pin_status_round_trips() {
        let st = PinStatus {
            pins: 3,
            breaking: 2,
            revoked: 1,
        };
        assert_eq!(PinStatus::decode(&st.encode()), Some(st));
        assert_eq!(PinStatus::decode(&[0u8; 23]), None);
    }

    #[test]
    fn stats_round_trip_and_carry_the_magic() {
        let s = FsStats {
            blocks_total: 1,
            blocks_free: 2,
            blocks_cached: 3,
            blocks_pinned: 4,
            alloc_free: 5,
            pins_taken: 6,
            pins_released: 7,
            block_pins: 8,
            block_unpins: 9,
            layout_breaks: 10,
            lease_breaks: 11,
            waits: 12,
            wait_ns: 13,
            timeouts: 14,
            violations: 15,
            commits: 16,
            transactions: 17,
            pins_revoked: 18,
        };
        let b = encode_stats(&s);
        assert_eq!(&b[..8], b"DAXFSST1");
        assert_eq!(decode_stats(&b), Some(s));
    }

    #[test]
    fn stats_of_the_first_version_read_the_later_fields_as_zero() {
        let s = FsStats {
            commits: 16,
            transactions: 17,
            ..Default::default()
        };
        let mut b = encode_stats(&s);
        // What an older daemon sends: size 144, `transactions` still reserved (zero).
        b[8..16].copy_from_slice(&STATS_USED_V1.to_ne_bytes());
        b[144..152].fill(0);
        let got = decode_stats(&b).expect("a first-version reply is accepted");
        assert_eq!((got.commits, got.transactions), (16, 0));
    }

    #[test]
    fn stats_json_names_every_field_once_with_its_value() {
        let s = FsStats {
            blocks_total: 100,
            blocks_free: 90,
            alloc_free: 90,
            pins_taken: 3,
            pins_released: 1,
            wait_ns: 1_500_000_001,
            commits: 7,
            ..Default::default()
        };
        let j = format_stats_json(&s);
        assert!(
            j.starts_with("{\"blocks_total\":100,") && j.ends_with("}\n"),
            "{j}"
        );
        for (name, want) in [
            ("blocks_free", "90"),
            ("allocator_free", "90"),
            ("pins_active", "2"),
            ("wait_ns", "1500000001"),
            ("journal_commits", "7"),
            ("balanced", "false"),
        ] {
            assert!(j.contains(&format!("\"{name}\":{want}")), "{name} in {j}");
        }
        let names = STATS_COUNTERS.iter().map(|(n, _)| *n).chain(["balanced"]);
        for name in names {
            assert_eq!(
                j.matches(&format!("\"{name}\":")).count(),
                1,
                "{name} in {j}"
            );
        }
        assert_eq!(j.matches(':').count(), STATS_COUNTERS.len() + 1);
    }

    #[test]
    fn stats_without_the_magic_are_refused() {
        assert_eq!(decode_stats(&[0u8; DAXFS_STATS_SIZE]), None);
        assert_eq!(
            decode_stats(&encode_stats(&FsStats::default())[..100]),
            None
        );
    }
}
