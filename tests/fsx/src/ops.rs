//! The operation model: a seeded PRNG, the `Op`/`Step` types, their one-line text form
//! (what replay files contain) and the random generator.
//!
//! Every step is self-contained: it names its paths and offsets literally and carries the
//! op number its data pattern derives from, so any subsequence of steps can be replayed on
//! its own (which the shrinker relies on) and gives the same bytes it gave in the full run.

use std::fmt;

/// Block size the aligned fallocate arguments are multiples of (daxfs, ext4 and tmpfs pages).
pub const BLOCK: u64 = 4096;

/// SplitMix64 step: used to seed the xorshift state and to derive data patterns.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xorshift64* generator, seeded through SplitMix64 so that every seed (even 0) is usable.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let s = splitmix64(seed);
        // xorshift must never hold 0; splitmix64 maps exactly one input to 0.
        Rng {
            state: if s == 0 { 0x2545_F491_4F6C_DD1D } else { s },
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`; `n == 0` yields 0.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi` (returns `lo` when `hi < lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.below(hi - lo + 1)
        }
    }

    /// True with probability `pct` percent.
    pub fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// The data byte at absolute file offset `off` for an op whose number hashes to `h`. It
/// depends on the op number so that overwrites are distinguishable, and on the offset so
/// that shifted data (collapse/insert) is visible.
fn byte_of(h: u64, off: u64) -> u8 {
    (h >> ((off % 7) * 8)) as u8 ^ (off >> 3) as u8 ^ (off >> 11) as u8
}

/// `len` pattern bytes for op `op_no`, starting at file offset `off`.
pub fn pattern(op_no: u64, off: u64, len: usize) -> Vec<u8> {
    let h = splitmix64(op_no);
    (0..len as u64).map(|i| byte_of(h, off + i)).collect()
}

/// fallocate(2) modes the tester issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FallocMode {
    /// 0: allocate and extend the size.
    Alloc,
    /// KEEP_SIZE.
    KeepSize,
    /// PUNCH_HOLE|KEEP_SIZE.
    Punch,
    /// PUNCH_HOLE without KEEP_SIZE: the VFS must reject it with EOPNOTSUPP.
    PunchNoKeep,
    /// ZERO_RANGE.
    Zero,
    /// ZERO_RANGE|KEEP_SIZE.
    ZeroKeep,
    /// COLLAPSE_RANGE.
    Collapse,
    /// INSERT_RANGE.
    Insert,
}

impl FallocMode {
    pub const ALL: [FallocMode; 8] = [
        FallocMode::Alloc,
        FallocMode::KeepSize,
        FallocMode::Punch,
        FallocMode::PunchNoKeep,
        FallocMode::Zero,
        FallocMode::ZeroKeep,
        FallocMode::Collapse,
        FallocMode::Insert,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FallocMode::Alloc => "alloc",
            FallocMode::KeepSize => "keep_size",
            FallocMode::Punch => "punch",
            FallocMode::PunchNoKeep => "punch_nokeep",
            FallocMode::Zero => "zero",
            FallocMode::ZeroKeep => "zero_keep",
            FallocMode::Collapse => "collapse",
            FallocMode::Insert => "insert",
        }
    }

    pub fn bits(self) -> i32 {
        match self {
            FallocMode::Alloc => 0,
            FallocMode::KeepSize => libc::FALLOC_FL_KEEP_SIZE,
            FallocMode::Punch => libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            FallocMode::PunchNoKeep => libc::FALLOC_FL_PUNCH_HOLE,
            FallocMode::Zero => libc::FALLOC_FL_ZERO_RANGE,
            FallocMode::ZeroKeep => libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            FallocMode::Collapse => libc::FALLOC_FL_COLLAPSE_RANGE,
            FallocMode::Insert => libc::FALLOC_FL_INSERT_RANGE,
        }
    }

    fn parse(s: &str) -> Option<FallocMode> {
        FallocMode::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// renameat2(2) flags the tester issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameFlags {
    Plain,
    NoReplace,
    Exchange,
}

impl RenameFlags {
    fn name(self) -> &'static str {
        match self {
            RenameFlags::Plain => "plain",
            RenameFlags::NoReplace => "noreplace",
            RenameFlags::Exchange => "exchange",
        }
    }

    pub fn bits(self) -> u32 {
        match self {
            RenameFlags::Plain => 0,
            RenameFlags::NoReplace => libc::RENAME_NOREPLACE,
            RenameFlags::Exchange => libc::RENAME_EXCHANGE,
        }
    }
}

/// setxattr(2) flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrFlags {
    Any,
    Create,
    Replace,
}

impl XattrFlags {
    fn name(self) -> &'static str {
        match self {
            XattrFlags::Any => "any",
            XattrFlags::Create => "create",
            XattrFlags::Replace => "replace",
        }
    }

    pub fn bits(self) -> i32 {
        match self {
            XattrFlags::Any => 0,
            XattrFlags::Create => libc::XATTR_CREATE,
            XattrFlags::Replace => libc::XATTR_REPLACE,
        }
    }
}

/// The xattr names the tester uses; small values keep every inode far below one 4 KiB
/// xattr block, so size limits never legitimately differ between filesystems.
pub const XATTR_NAMES: [&str; 4] = ["user.a", "user.b", "user.fsx.c", "user.fsx.longer_name"];

/// Largest xattr value the generator produces.
pub const XATTR_MAX_VALUE: u32 = 64;

/// One filesystem operation with all its arguments. Paths are relative to the work tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Write {
        path: String,
        off: u64,
        len: u64,
    },
    Append {
        path: String,
        len: u64,
    },
    Read {
        path: String,
        off: u64,
        len: u64,
    },
    Truncate {
        path: String,
        size: u64,
    },
    Falloc {
        path: String,
        mode: FallocMode,
        off: u64,
        len: u64,
    },
    MmapRead {
        path: String,
        off: u64,
        len: u64,
    },
    MmapWrite {
        path: String,
        off: u64,
        len: u64,
    },
    Fsync {
        path: String,
        data_only: bool,
    },
    Stat {
        path: String,
    },
    SeekData {
        path: String,
        off: u64,
    },
    SeekHole {
        path: String,
        off: u64,
    },
    CreateExcl {
        path: String,
    },
    Rename {
        from: String,
        to: String,
        flags: RenameFlags,
    },
    Link {
        from: String,
        to: String,
    },
    Unlink {
        path: String,
    },
    Mkdir {
        path: String,
    },
    Rmdir {
        path: String,
    },
    SetXattr {
        path: String,
        name: u8,
        len: u32,
        flags: XattrFlags,
    },
    GetXattr {
        path: String,
        name: u8,
    },
    RemoveXattr {
        path: String,
        name: u8,
    },
    ListXattr {
        path: String,
    },
}

/// Which op kinds the generator may produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Data,
    Mmap,
    Falloc(FallocMode),
    Namespace,
    Xattr,
}

impl Op {
    /// The generator category this op belongs to (used to disable unsupported ones).
    pub fn kind(&self) -> Kind {
        match self {
            Op::MmapRead { .. } | Op::MmapWrite { .. } => Kind::Mmap,
            Op::Falloc { mode, .. } => Kind::Falloc(*mode),
            Op::CreateExcl { .. }
            | Op::Rename { .. }
            | Op::Link { .. }
            | Op::Unlink { .. }
            | Op::Mkdir { .. }
            | Op::Rmdir { .. } => Kind::Namespace,
            Op::SetXattr { .. }
            | Op::GetXattr { .. }
            | Op::RemoveXattr { .. }
            | Op::ListXattr { .. } => Kind::Xattr,
            _ => Kind::Data,
        }
    }
}

/// An op together with its number in the generated sequence (the data pattern seed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub no: u64,
    pub op: Op,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Write { path, off, len } => write!(f, "write {path} off={off} len={len}"),
            Op::Append { path, len } => write!(f, "append {path} len={len}"),
            Op::Read { path, off, len } => write!(f, "read {path} off={off} len={len}"),
            Op::Truncate { path, size } => write!(f, "truncate {path} size={size}"),
            Op::Falloc {
                path,
                mode,
                off,
                len,
            } => write!(f, "falloc {path} mode={} off={off} len={len}", mode.name()),
            Op::MmapRead { path, off, len } => write!(f, "mmap_read {path} off={off} len={len}"),
            Op::MmapWrite { path, off, len } => {
                write!(f, "mmap_write {path} off={off} len={len}")
            }
            Op::Fsync { path, data_only } => {
                write!(
                    f,
                    "{} {path}",
                    if *data_only { "fdatasync" } else { "fsync" }
                )
            }
            Op::Stat { path } => write!(f, "stat {path}"),
            Op::SeekData { path, off } => write!(f, "seek_data {path} off={off}"),
            Op::SeekHole { path, off } => write!(f, "seek_hole {path} off={off}"),
            Op::CreateExcl { path } => write!(f, "create_excl {path}"),
            Op::Rename { from, to, flags } => {
                write!(f, "rename {from} {to} flags={}", flags.name())
            }
            Op::Link { from, to } => write!(f, "link {from} {to}"),
            Op::Unlink { path } => write!(f, "unlink {path}"),
            Op::Mkdir { path } => write!(f, "mkdir {path}"),
            Op::Rmdir { path } => write!(f, "rmdir {path}"),
            Op::SetXattr {
                path,
                name,
                len,
                flags,
            } => write!(
                f,
                "setxattr {path} name={} len={len} flags={}",
                xattr_name(*name),
                flags.name()
            ),
            Op::GetXattr { path, name } => write!(f, "getxattr {path} name={}", xattr_name(*name)),
            Op::RemoveXattr { path, name } => {
                write!(f, "removexattr {path} name={}", xattr_name(*name))
            }
            Op::ListXattr { path } => write!(f, "listxattr {path}"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>7} {}", self.no, self.op)
    }
}

/// The xattr name at `idx` in [`XATTR_NAMES`] (wrapping, so every index is valid).
pub fn xattr_name(idx: u8) -> &'static str {
    XATTR_NAMES[usize::from(idx) % XATTR_NAMES.len()]
}

/// A path is a relative sequence of plain components: no `.`/`..`, no empty parts.
fn valid_path(p: &str) -> bool {
    !p.is_empty()
        && p.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        })
}

/// Parses one replay line (`NO NAME ARGS...`, as written by `Step`'s Display).
pub fn parse_step(line: &str) -> Result<Step, String> {
    let mut words = line.split_whitespace();
    let no = words
        .next()
        .ok_or("empty line")?
        .parse::<u64>()
        .map_err(|_| "op number is not a number".to_string())?;
    let name = words.next().ok_or("missing op name")?;
    let mut paths = Vec::new();
    let mut kv = Vec::new();
    for w in words {
        match w.split_once('=') {
            Some((k, v)) => kv.push((k, v)),
            None => {
                if !valid_path(w) {
                    return Err(format!("bad path {w:?}"));
                }
                paths.push(w.to_string());
            }
        }
    }
    let get = |key: &str| -> Result<&str, String> {
        kv.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("{name}: missing {key}="))
    };
    let num = |key: &str| -> Result<u64, String> {
        get(key)?
            .parse::<u64>()
            .map_err(|_| format!("{name}: {key}= is not a number"))
    };
    let xname = || -> Result<u8, String> {
        let v = get("name")?;
        XATTR_NAMES
            .iter()
            .position(|n| *n == v)
            .map(|i| i as u8)
            .ok_or_else(|| format!("{name}: unknown xattr name {v:?}"))
    };
    let want = |n: usize| -> Result<(), String> {
        if paths.len() == n {
            Ok(())
        } else {
            Err(format!("{name}: expected {n} path(s), got {}", paths.len()))
        }
    };
    let p0 = || paths.first().cloned().unwrap_or_default();
    let p1 = || paths.get(1).cloned().unwrap_or_default();
    let two = matches!(name, "rename" | "link");
    want(if two { 2 } else { 1 })?;
    let op = match name {
        "write" => Op::Write {
            path: p0(),
            off: num("off")?,
            len: num("len")?,
        },
        "append" => Op::Append {
            path: p0(),
            len: num("len")?,
        },
        "read" => Op::Read {
            path: p0(),
            off: num("off")?,
            len: num("len")?,
        },
        "truncate" => Op::Truncate {
            path: p0(),
            size: num("size")?,
        },
        "falloc" => Op::Falloc {
            path: p0(),
            mode: FallocMode::parse(get("mode")?)
                .ok_or_else(|| format!("falloc: unknown mode {:?}", get("mode")))?,
            off: num("off")?,
            len: num("len")?,
        },
        "mmap_read" => Op::MmapRead {
            path: p0(),
            off: num("off")?,
            len: num("len")?,
        },
        "mmap_write" => Op::MmapWrite {
            path: p0(),
            off: num("off")?,
            len: num("len")?,
        },
        "fsync" | "fdatasync" => Op::Fsync {
            path: p0(),
            data_only: name == "fdatasync",
        },
        "stat" => Op::Stat { path: p0() },
        "seek_data" => Op::SeekData {
            path: p0(),
            off: num("off")?,
        },
        "seek_hole" => Op::SeekHole {
            path: p0(),
            off: num("off")?,
        },
        "create_excl" => Op::CreateExcl { path: p0() },
        "rename" => Op::Rename {
            from: p0(),
            to: p1(),
            flags: match get("flags")? {
                "plain" => RenameFlags::Plain,
                "noreplace" => RenameFlags::NoReplace,
                "exchange" => RenameFlags::Exchange,
                other => return Err(format!("rename: unknown flags {other:?}")),
            },
        },
        "link" => Op::Link {
            from: p0(),
            to: p1(),
        },
        "unlink" => Op::Unlink { path: p0() },
        "mkdir" => Op::Mkdir { path: p0() },
        "rmdir" => Op::Rmdir { path: p0() },
        "setxattr" => Op::SetXattr {
            path: p0(),
            name: xname()?,
            len: u32::try_from(num("len")?).map_err(|_| "setxattr: len too large")?,
            flags: match get("flags")? {
                "any" => XattrFlags::Any,
                "create" => XattrFlags::Create,
                "replace" => XattrFlags::Replace,
                other => return Err(format!("setxattr: unknown flags {other:?}")),
            },
        },
        "getxattr" => Op::GetXattr {
            path: p0(),
            name: xname()?,
        },
        "removexattr" => Op::RemoveXattr {
            path: p0(),
            name: xname()?,
        },
        "listxattr" => Op::ListXattr { path: p0() },
        other => return Err(format!("unknown op {other:?}")),
    };
    Ok(Step { no, op })
}

/// What the generator may produce.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Number of distinct file names (`f0`..) per directory.
    pub files: u64,
    /// Writes, truncates and fallocates stay below this offset.
    pub max_size: u64,
    /// Kinds that must not be generated (unsupported or switched off).
    pub disabled: Vec<Kind>,
}

impl GenConfig {
    fn allows(&self, kind: Kind) -> bool {
        !self.disabled.contains(&kind)
    }
}

/// Produces the deterministic op sequence for a seed.
pub struct Generator {
    rng: Rng,
    cfg: GenConfig,
    next_no: u64,
}

/// Relative weights of the op choices (before disabled kinds are filtered out).
const WEIGHTS: [(&str, u64); 21] = [
    ("write", 16),
    ("append", 4),
    ("read", 12),
    ("truncate", 6),
    ("falloc", 12),
    ("mmap_read", 5),
    ("mmap_write", 5),
    ("fsync", 2),
    ("stat", 6),
    ("seek_data", 2),
    ("seek_hole", 2),
    ("create_excl", 3),
    ("rename", 4),
    ("link", 2),
    ("unlink", 2),
    ("mkdir", 3),
    ("rmdir", 3),
    ("setxattr", 3),
    ("getxattr", 2),
    ("removexattr", 2),
    ("listxattr", 1),
];

impl Generator {
    pub fn new(seed: u64, cfg: GenConfig) -> Generator {
        let mut cfg = cfg;
        cfg.files = cfg.files.max(1);
        cfg.max_size = cfg.max_size.max(2 * BLOCK);
        Generator {
            rng: Rng::new(seed),
            cfg,
            next_no: 0,
        }
    }

    /// A regular-file name: mostly in the root, sometimes in a subdirectory.
    fn file_path(&mut self) -> String {
        let f = self.rng.below(self.cfg.files);
        if self.rng.pct(75) {
            format!("f{f}")
        } else {
            format!("d{}/f{f}", self.rng.below(2))
        }
    }

    /// A file name from a pool half again as large as the data ops' pool: link and
    /// rename targets that usually do not exist yet, and unlinks that clean them up.
    fn wide_file_path(&mut self) -> String {
        let n = self.cfg.files + self.cfg.files / 2 + 1;
        let f = self.rng.below(n);
        if self.rng.pct(75) {
            format!("f{f}")
        } else {
            format!("d{}/f{f}", self.rng.below(2))
        }
    }

    /// A directory name: `d0`..`d2`, or nested one level.
    fn dir_path(&mut self) -> String {
        if self.rng.pct(70) {
            format!("d{}", self.rng.below(3))
        } else {
            format!("d{}/d{}", self.rng.below(2), self.rng.below(2))
        }
    }

    fn any_path(&mut self) -> String {
        if self.rng.pct(70) {
            self.file_path()
        } else {
            self.dir_path()
        }
    }

    /// An offset below the size limit, block aligned 40% of the time.
    fn offset(&mut self) -> u64 {
        let off = self.rng.below(self.cfg.max_size);
        if self.rng.pct(40) {
            off / BLOCK * BLOCK
        } else {
            off
        }
    }

    /// A length for an I/O at `off`: mostly small, sometimes up to the size limit.
    fn io_len(&mut self, off: u64) -> u64 {
        let room = self.cfg.max_size.saturating_sub(off).max(1);
        let want = match self.rng.below(10) {
            0..=5 => self.rng.range(1, BLOCK),
            6..=8 => self.rng.range(1, 64 * 1024),
            _ => self.rng.range(1, room),
        };
        want.min(room)
    }

    fn falloc(&mut self, path: String) -> Option<Op> {
        let modes: Vec<(FallocMode, u64)> = [
            (FallocMode::Alloc, 14),
            (FallocMode::KeepSize, 12),
            (FallocMode::Punch, 24),
            (FallocMode::PunchNoKeep, 2),
            (FallocMode::Zero, 10),
            (FallocMode::ZeroKeep, 6),
            (FallocMode::Collapse, 14),
            (FallocMode::Insert, 14),
        ]
        .into_iter()
        .filter(|(m, _)| self.cfg.allows(Kind::Falloc(*m)))
        .collect();
        let mode = pick(&mut self.rng, &modes)?;
        let blocks = self.cfg.max_size / BLOCK;
        let (off, len) = if self.rng.pct(90) {
            let off = self.rng.below(blocks) * BLOCK;
            let max_len = (blocks - off / BLOCK).clamp(1, (blocks / 4).max(1));
            (off, self.rng.range(1, max_len) * BLOCK)
        } else {
            // Unaligned (and occasionally zero-length) to compare the EINVAL paths.
            let off = self.rng.below(self.cfg.max_size);
            let len = self.rng.below(self.cfg.max_size / 4);
            (off, len)
        };
        Some(Op::Falloc {
            path,
            mode,
            off,
            len,
        })
    }

    /// Generates one op, drawing again while the draw is of a disabled kind.
    fn op(&mut self) -> Op {
        loop {
            let Some(name) = pick(&mut self.rng, &WEIGHTS) else {
                continue;
            };
            let op = match name {
                "write" => {
                    let path = self.file_path();
                    let off = self.offset();
                    let len = self.io_len(off);
                    Op::Write { path, off, len }
                }
                "append" => {
                    let path = self.file_path();
                    let len = self.io_len(0).min(16 * 1024);
                    Op::Append { path, len }
                }
                "read" => {
                    let path = self.file_path();
                    if self.rng.pct(20) {
                        // Whole-file read: catches content drift early.
                        Op::Read {
                            path,
                            off: 0,
                            len: self.cfg.max_size * 2,
                        }
                    } else {
                        let off = self.offset();
                        let len = self.io_len(off) + self.rng.below(2 * BLOCK);
                        Op::Read { path, off, len }
                    }
                }
                "truncate" => {
                    let path = self.file_path();
                    let mut size = self.rng.range(0, self.cfg.max_size);
                    if self.rng.pct(50) {
                        size = size / BLOCK * BLOCK;
                    }
                    Op::Truncate { path, size }
                }
                "falloc" => {
                    let path = self.file_path();
                    match self.falloc(path) {
                        Some(op) => op,
                        None => continue,
                    }
                }
                "mmap_read" | "mmap_write" => {
                    let path = self.file_path();
                    let off = self.rng.below(self.cfg.max_size);
                    let len = self.rng.range(1, 64 * 1024);
                    if name == "mmap_read" {
                        Op::MmapRead { path, off, len }
                    } else {
                        Op::MmapWrite { path, off, len }
                    }
                }
                "fsync" => Op::Fsync {
                    path: self.any_path(),
                    data_only: self.rng.pct(50),
                },
                "stat" => Op::Stat {
                    path: self.any_path(),
                },
                "seek_data" | "seek_hole" => {
                    let path = self.file_path();
                    let off = self.rng.below(self.cfg.max_size + 2 * BLOCK);
                    if name == "seek_data" {
                        Op::SeekData { path, off }
                    } else {
                        Op::SeekHole { path, off }
                    }
                }
                "create_excl" => Op::CreateExcl {
                    path: self.file_path(),
                },
                "rename" => {
                    // Mostly file→file or dir→dir: mixing kinds is mostly errors, and
                    // directories renamed onto file names starve the data ops.
                    let (from, to) = match self.rng.below(10) {
                        0..=5 => (self.wide_file_path(), self.wide_file_path()),
                        6..=7 => (self.dir_path(), self.dir_path()),
                        _ => (self.any_path(), self.any_path()),
                    };
                    let flags = match self.rng.below(4) {
                        0 => RenameFlags::NoReplace,
                        1 => RenameFlags::Exchange,
                        _ => RenameFlags::Plain,
                    };
                    Op::Rename { from, to, flags }
                }
                "link" => Op::Link {
                    from: self.file_path(),
                    to: self.wide_file_path(),
                },
                "unlink" => Op::Unlink {
                    path: if self.rng.pct(80) {
                        self.wide_file_path()
                    } else {
                        self.dir_path()
                    },
                },
                "mkdir" => Op::Mkdir {
                    path: if self.rng.pct(90) {
                        self.dir_path()
                    } else {
                        self.file_path()
                    },
                },
                "rmdir" => Op::Rmdir {
                    path: if self.rng.pct(90) {
                        self.dir_path()
                    } else {
                        self.file_path()
                    },
                },
                "setxattr" => Op::SetXattr {
                    path: self.any_path(),
                    name: self.rng.below(XATTR_NAMES.len() as u64) as u8,
                    len: self.rng.range(0, u64::from(XATTR_MAX_VALUE)) as u32,
                    flags: match self.rng.below(4) {
                        0 => XattrFlags::Create,
                        1 => XattrFlags::Replace,
                        _ => XattrFlags::Any,
                    },
                },
                "getxattr" => Op::GetXattr {
                    path: self.any_path(),
                    name: self.rng.below(XATTR_NAMES.len() as u64) as u8,
                },
                "removexattr" => Op::RemoveXattr {
                    path: self.any_path(),
                    name: self.rng.below(XATTR_NAMES.len() as u64) as u8,
                },
                _ => Op::ListXattr {
                    path: self.any_path(),
                },
            };
            if self.cfg.allows(op.kind()) {
                return op;
            }
        }
    }
}

impl Iterator for Generator {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        let op = self.op();
        let step = Step {
            no: self.next_no,
            op,
        };
        self.next_no += 1;
        Some(step)
    }
}

/// Weighted choice; `None` when nothing has weight.
fn pick<T: Copy>(rng: &mut Rng, choices: &[(T, u64)]) -> Option<T> {
    let total: u64 = choices.iter().map(|(_, w)| w).sum();
    let mut r = rng.below(total);
    for (item, w) in choices {
        if r < *w {
            return Some(*item);
        }
        r -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GenConfig {
        GenConfig {
            files: 4,
            max_size: 256 * 1024,
            disabled: Vec::new(),
        }
    }

    #[test]
    fn rng_is_deterministic_per_seed() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..100).map(|_| r.next_u64()).collect()
        };
        let mut r = Rng::new(7);
        let b: Vec<u64> = (0..100).map(|_| r.next_u64()).collect();
        assert_eq!(a, b);
        let mut other = Rng::new(8);
        assert_ne!(a[0], other.next_u64());
    }

    #[test]
    fn rng_below_stays_in_range_and_seed_zero_works() {
        let mut r = Rng::new(0);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let v = r.below(10);
            assert!(v < 10);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s), "every value of 0..10 appears");
    }

    #[test]
    fn generator_yields_same_sequence_for_same_seed() {
        let a: Vec<Step> = Generator::new(42, cfg()).take(2000).collect();
        let b: Vec<Step> = Generator::new(42, cfg()).take(2000).collect();
        assert_eq!(a, b);
        let c: Vec<Step> = Generator::new(43, cfg()).take(2000).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn generator_numbers_steps_consecutively() {
        let nos: Vec<u64> = Generator::new(1, cfg()).take(50).map(|s| s.no).collect();
        assert_eq!(nos, (0..50).collect::<Vec<u64>>());
    }

    #[test]
    fn generator_respects_disabled_kinds_and_size_limit() {
        let mut c = cfg();
        c.disabled = vec![
            Kind::Mmap,
            Kind::Xattr,
            Kind::Falloc(FallocMode::Collapse),
            Kind::Falloc(FallocMode::Insert),
        ];
        for step in Generator::new(5, c.clone()).take(5000) {
            assert!(!c.disabled.contains(&step.op.kind()), "{}", step.op);
            if let Op::Write { off, len, .. } = step.op {
                assert!(off + len <= c.max_size);
            }
        }
    }

    #[test]
    fn generator_covers_every_op_kind() {
        let names: std::collections::BTreeSet<String> = Generator::new(3, cfg())
            .take(5000)
            .map(|s| s.op.to_string().split(' ').next().unwrap_or("").to_string())
            .collect();
        assert_eq!(
            names.len(),
            22,
            "all op names incl. fsync and fdatasync: {names:?}"
        );
    }

    #[test]
    fn step_text_form_round_trips() {
        for step in Generator::new(9, cfg()).take(3000) {
            let text = step.to_string();
            assert_eq!(parse_step(&text), Ok(step), "{text}");
        }
    }

    #[test]
    fn parse_rejects_escaping_paths_and_unknown_ops() {
        assert!(parse_step("1 unlink ../etc").is_err());
        assert!(parse_step("1 unlink /abs").is_err());
        assert!(parse_step("1 frobnicate f0").is_err());
        assert!(parse_step("x write f0 off=0 len=1").is_err());
        assert!(parse_step("1 write f0 off=0").is_err());
    }

    #[test]
    fn pattern_depends_on_op_number_and_offset() {
        assert_eq!(pattern(3, 100, 16), pattern(3, 100, 16));
        assert_ne!(pattern(3, 100, 16), pattern(4, 100, 16));
        assert_ne!(pattern(3, 100, 16), pattern(3, 101, 16));
        assert_eq!(pattern(3, 100, 16)[1], pattern(3, 101, 15)[0]);
    }
}
