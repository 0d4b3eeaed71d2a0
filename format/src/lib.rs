//! daxfs-format: the on-media format, version 1 (docs/FORMAT.md).
//!
//! This crate owns the encoding and decoding of every structure, with its magic and
//! CRC — pure functions over byte slices, so the parser can be tested (and fuzzed) on
//! plain buffers — and formatting a device ([`mkfs::format_device`], the work behind
//! mkfs.daxfs), the one place that writes a whole empty filesystem.

use std::fmt;

pub const BLOCK_SIZE: u64 = 4096;
pub const BLOCK_SHIFT: u32 = 12;
pub const SB_MAGIC: [u8; 8] = *b"DAXFSSB\0";
pub const VERSION: u32 = 1;
pub const SB_SIZE: usize = 512;
pub const ROOT_INO: u64 = 1;
pub const INODE_SIZE: u64 = 256;
pub const INLINE_EXTENTS: usize = 5;
pub const EXTENT_SIZE: usize = 24;
pub const EXTENT_BLOCK_HEADER: usize = 24;
pub const EXTENTS_PER_BLOCK: usize = 169;
pub const DIR_SLOT: usize = 64;
pub const DIR_SLOTS_PER_BLOCK: usize = 64;
pub const DIRENT_HEADER: usize = 16;
pub const NAME_MAX: usize = 255;
pub const XATTR_HEADER: usize = 24;
pub const BITMAP_BYTES_PER_BLOCK: u64 = 4080;
pub const BITS_PER_BITMAP_BLOCK: u64 = BITMAP_BYTES_PER_BLOCK * 8;
/// Data area alignment (2 MiB) so aligned extents are aligned on the device.
pub const DATA_ALIGN_BLOCKS: u64 = 512;

pub const EXTENT_MAGIC: [u8; 4] = *b"DXEX";
pub const DIR_MAGIC: [u8; 4] = *b"DXDR";
pub const XATTR_MAGIC: [u8; 4] = *b"DXXA";
pub const BITMAP_MAGIC: [u8; 4] = *b"DXBM";

pub const STATE_CLEAN: u32 = 1;
pub const STATE_MOUNTED: u32 = 2;

/// Inode flag: unlinked while open; reclaimed at the next mount.
pub const IFLAG_ORPHAN: u32 = 1;
/// Inode flag: FS_XFLAG_DAX (file data bypasses the kernel page cache under dax=inode).
pub const IFLAG_DAX: u32 = 2;
/// Inode flag: FS_IMMUTABLE_FL (chattr +i): no change to the inode, its data or its names.
pub const IFLAG_IMMUTABLE: u32 = 4;
/// Inode flag: FS_APPEND_FL (chattr +a): data may only be appended; no rename or unlink.
pub const IFLAG_APPEND: u32 = 8;

/// Why a structure was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(pub String);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for FormatError {}

fn bad<T>(msg: impl Into<String>) -> Result<T, FormatError> {
    Err(FormatError(msg.into()))
}

// Little-endian field access. Callers pass slices of known length, so the indexing
// below is within bounds by construction (each decode checks the slice length first).
fn get_u16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn get_u32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn get_u64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}
fn put_u16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

pub fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// CRC of `bytes` with the 4-byte field at `at` taken as zero.
fn crc_skip(bytes: &[u8], at: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..at]);
    h.update(&[0u8; 4]);
    h.update(&bytes[at + 4..]);
    h.finalize()
}

// ---------------------------------------------------------------------------
// Superblock

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub version: u32,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    pub state: u32,
    pub total_blocks: u64,
    pub uuid: [u8; 16],
    pub label: [u8; 64],
    pub journal_start: u64,
    pub journal_blocks: u64,
    pub inode_table_start: u64,
    pub inode_table_blocks: u64,
    pub inode_count: u64,
    pub bitmap_start: u64,
    pub bitmap_blocks: u64,
    pub data_start: u64,
    pub data_blocks: u64,
    pub root_ino: u64,
    pub mkfs_time: u64,
    pub mount_time: u64,
    pub mount_count: u64,
}

/// Parameters of a new filesystem.
#[derive(Debug, Clone)]
pub struct MkfsParams {
    pub label: String,
    /// Journal size in bytes; 0 = default.
    pub journal_bytes: u64,
    /// Number of inodes; 0 = default (one per 8 KiB of device).
    pub inodes: u64,
    pub uuid: [u8; 16],
    pub now_ns: u64,
}

impl Superblock {
    /// Lays out a filesystem on a device of `size` bytes.
    pub fn layout(size: u64, p: &MkfsParams) -> Result<Superblock, FormatError> {
        let total_blocks = size / BLOCK_SIZE;
        if p.label.len() > 63 {
            return bad("label is longer than 63 bytes");
        }
        let journal_blocks = if p.journal_bytes == 0 {
            // 1/64 of the device, between 1 MiB and 64 MiB.
            (total_blocks / 64).clamp(256, 16384)
        } else {
            p.journal_bytes.div_ceil(BLOCK_SIZE)
        };
        if journal_blocks < 16 {
            return bad("journal must be at least 64 KiB");
        }
        let inode_count = if p.inodes == 0 {
            (size / 8192).clamp(64, u32::MAX as u64)
        } else {
            p.inodes.clamp(16, u32::MAX as u64)
        };
        let inode_table_blocks = (inode_count * INODE_SIZE).div_ceil(BLOCK_SIZE);
        let journal_start = 2;
        let inode_table_start = journal_start + journal_blocks;
        let bitmap_start = inode_table_start + inode_table_blocks;
        // The bitmap covers the data area, whose size depends on the bitmap's: iterate.
        let mut bitmap_blocks = 1;
        let (data_start, data_blocks) = loop {
            let ds = (bitmap_start + bitmap_blocks).next_multiple_of(DATA_ALIGN_BLOCKS);
            if ds + 16 > total_blocks {
                return bad(format!(
                    "device too small: {size} bytes; this layout needs at least {} bytes",
                    (ds + 16) * BLOCK_SIZE
                ));
            }
            let db = total_blocks - ds;
            let need = db.div_ceil(BITS_PER_BITMAP_BLOCK);
            if need <= bitmap_blocks {
                break (ds, db);
            }
            bitmap_blocks = need;
        };
        let mut label = [0u8; 64];
        label[..p.label.len()].copy_from_slice(p.label.as_bytes());
        Ok(Superblock {
            version: VERSION,
            compat: 0,
            incompat: 0,
            ro_compat: 0,
            state: STATE_CLEAN,
            total_blocks,
            uuid: p.uuid,
            label,
            journal_start,
            journal_blocks,
            inode_table_start,
            inode_table_blocks,
            inode_count,
            bitmap_start,
            bitmap_blocks,
            data_start,
            data_blocks,
            root_ino: ROOT_INO,
            mkfs_time: p.now_ns,
            mount_time: 0,
            mount_count: 0,
        })
    }

    pub fn encode(&self) -> [u8; SB_SIZE] {
        let mut b = [0u8; SB_SIZE];
        b[0..8].copy_from_slice(&SB_MAGIC);
        put_u32(&mut b, 8, self.version);
        put_u32(&mut b, 12, BLOCK_SIZE as u32);
        put_u32(&mut b, 16, self.compat);
        put_u32(&mut b, 20, self.incompat);
        put_u32(&mut b, 24, self.ro_compat);
        put_u32(&mut b, 28, self.state);
        put_u64(&mut b, 32, self.total_blocks);
        b[40..56].copy_from_slice(&self.uuid);
        b[56..120].copy_from_slice(&self.label);
        put_u64(&mut b, 120, self.journal_start);
        put_u64(&mut b, 128, self.journal_blocks);
        put_u64(&mut b, 136, self.inode_table_start);
        put_u64(&mut b, 144, self.inode_table_blocks);
        put_u64(&mut b, 152, self.inode_count);
        put_u64(&mut b, 160, self.bitmap_start);
        put_u64(&mut b, 168, self.bitmap_blocks);
        put_u64(&mut b, 176, self.data_start);
        put_u64(&mut b, 184, self.data_blocks);
        put_u64(&mut b, 192, self.root_ino);
        put_u64(&mut b, 200, self.mkfs_time);
        put_u64(&mut b, 208, self.mount_time);
        put_u64(&mut b, 216, self.mount_count);
        let c = crc(&b[..508]);
        put_u32(&mut b, 508, c);
        b
    }

    /// True if `b` starts with the daxfs magic (whatever its state).
    pub fn has_magic(b: &[u8]) -> bool {
        b.len() >= 8 && b[..8] == SB_MAGIC
    }

    /// Decodes and validates a superblock against a device of `device_size` bytes.
    pub fn decode(b: &[u8], device_size: u64) -> Result<Superblock, FormatError> {
        if b.len() < SB_SIZE {
            return bad("superblock: short read");
        }
        if !Self::has_magic(b) {
            return bad("no daxfs superblock (bad magic)");
        }
        if get_u32(b, 508) != crc(&b[..508]) {
            return bad("superblock checksum mismatch");
        }
        let version = get_u32(b, 8);
        if version != VERSION {
            return bad(format!(
                "unsupported daxfs version {version} (this build reads {VERSION})"
            ));
        }
        if get_u32(b, 12) != BLOCK_SIZE as u32 {
            return bad(format!("unsupported block size {}", get_u32(b, 12)));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[40..56]);
        let mut label = [0u8; 64];
        label.copy_from_slice(&b[56..120]);
        let sb = Superblock {
            version,
            compat: get_u32(b, 16),
            incompat: get_u32(b, 20),
            ro_compat: get_u32(b, 24),
            state: get_u32(b, 28),
            total_blocks: get_u64(b, 32),
            uuid,
            label,
            journal_start: get_u64(b, 120),
            journal_blocks: get_u64(b, 128),
            inode_table_start: get_u64(b, 136),
            inode_table_blocks: get_u64(b, 144),
            inode_count: get_u64(b, 152),
            bitmap_start: get_u64(b, 160),
            bitmap_blocks: get_u64(b, 168),
            data_start: get_u64(b, 176),
            data_blocks: get_u64(b, 184),
            root_ino: get_u64(b, 192),
            mkfs_time: get_u64(b, 200),
            mount_time: get_u64(b, 208),
            mount_count: get_u64(b, 216),
        };
        sb.validate(device_size)?;
        Ok(sb)
    }

    /// Checks that the regions are in order, inside the device and consistent.
    pub fn validate(&self, device_size: u64) -> Result<(), FormatError> {
        if self.incompat != 0 {
            return bad(format!(
                "unknown incompatible features {:#x}",
                self.incompat
            ));
        }
        if self
            .total_blocks
            .checked_mul(BLOCK_SIZE)
            .is_none_or(|s| s > device_size)
        {
            return bad(format!(
                "filesystem is {} blocks but the device holds only {} bytes",
                self.total_blocks, device_size
            ));
        }
        // Every sum and product is checked: the fields come from the media, and a CRC
        // only proves that whoever wrote them computed it (a wrapped sum would place a
        // region "after" another while it actually starts near block 0). The regions are
        // contiguous and in order, and all end at or before `data_start`, which is inside
        // the filesystem: so every region is inside the device.
        let end = |start: u64, blocks: u64| start.checked_add(blocks);
        let inode_table_blocks = self
            .inode_count
            .checked_mul(INODE_SIZE)
            .map(|bytes| bytes.div_ceil(BLOCK_SIZE));
        let ok = self.journal_start == 2
            && self.journal_blocks >= 16
            && Some(self.inode_table_start) == end(self.journal_start, self.journal_blocks)
            && self.inode_count >= 2
            && self.inode_count <= u32::MAX as u64
            && Some(self.inode_table_blocks) == inode_table_blocks
            && Some(self.bitmap_start) == end(self.inode_table_start, self.inode_table_blocks)
            && end(self.bitmap_start, self.bitmap_blocks).is_some_and(|e| self.data_start >= e)
            && self.data_start.is_multiple_of(DATA_ALIGN_BLOCKS)
            && self.data_start < self.total_blocks
            && self.data_blocks == self.total_blocks - self.data_start
            && self.bitmap_blocks == self.data_blocks.div_ceil(BITS_PER_BITMAP_BLOCK)
            && self.root_ino == ROOT_INO;
        if !ok {
            return bad("superblock geometry is inconsistent");
        }
        Ok(())
    }

    pub fn label_str(&self) -> String {
        let end = self.label.iter().position(|&c| c == 0).unwrap_or(64);
        String::from_utf8_lossy(&self.label[..end]).into_owned()
    }

    pub fn inode_offset(&self, ino: u64) -> u64 {
        self.inode_table_start * BLOCK_SIZE + ino * INODE_SIZE
    }

    pub fn bitmap_block_offset(&self, index: u64) -> u64 {
        (self.bitmap_start + index) * BLOCK_SIZE
    }

    pub fn is_data_block(&self, pblk: u64) -> bool {
        pblk >= self.data_start && pblk < self.total_blocks
    }
}

pub fn uuid_string(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

// ---------------------------------------------------------------------------
// Extents

/// A run of `len` blocks of a file starting at logical block `lblk`, stored at device
/// block `pblk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub lblk: u64,
    pub pblk: u64,
    pub len: u32,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.lblk + self.len as u64
    }

    pub fn encode(&self) -> [u8; EXTENT_SIZE] {
        let mut b = [0u8; EXTENT_SIZE];
        if self.len == 0 {
            return b;
        }
        put_u64(&mut b, 0, self.lblk);
        put_u64(&mut b, 8, self.pblk);
        put_u32(&mut b, 16, self.len);
        let c = crc(&b[..20]);
        put_u32(&mut b, 20, c);
        b
    }

    /// Decodes a slot: Ok(None) for a free slot.
    pub fn decode(b: &[u8]) -> Result<Option<Extent>, FormatError> {
        if b.len() < EXTENT_SIZE {
            return bad("extent: short slot");
        }
        let len = get_u32(b, 16);
        if len == 0 {
            if b[..EXTENT_SIZE].iter().any(|&x| x != 0) {
                return bad("extent: free slot is not zero");
            }
            return Ok(None);
        }
        if get_u32(b, 20) != crc(&b[..20]) {
            return bad("extent: checksum mismatch");
        }
        let (lblk, pblk) = (get_u64(b, 0), get_u64(b, 8));
        // Far beyond any device or file: rejecting them here keeps every later
        // `lblk + len` / `pblk + len` free of overflow.
        if lblk >= 1 << 52 || pblk >= 1 << 52 {
            return bad("extent: block number out of range");
        }
        Ok(Some(Extent { lblk, pblk, len }))
    }
}

/// Header of an extent block: returns the next block.
pub fn encode_extent_block_header(next: u64, owner: u64) -> [u8; EXTENT_BLOCK_HEADER] {
    let mut b = [0u8; EXTENT_BLOCK_HEADER];
    b[0..4].copy_from_slice(&EXTENT_MAGIC);
    put_u64(&mut b, 8, next);
    put_u64(&mut b, 16, owner);
    let c = crc_skip(&b, 4);
    put_u32(&mut b, 4, c);
    b
}

pub fn decode_extent_block_header(b: &[u8], owner: u64) -> Result<u64, FormatError> {
    if b.len() < EXTENT_BLOCK_HEADER || b[0..4] != EXTENT_MAGIC {
        return bad("extent block: bad magic");
    }
    if get_u32(b, 4) != crc_skip(&b[..EXTENT_BLOCK_HEADER], 4) {
        return bad("extent block: checksum mismatch");
    }
    if get_u64(b, 16) != owner {
        return bad(format!(
            "extent block: belongs to inode {}, not {owner}",
            get_u64(b, 16)
        ));
    }
    Ok(get_u64(b, 8))
}

// ---------------------------------------------------------------------------
// Inodes

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInode {
    pub mode: u32,
    pub flags: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub generation: u32,
    pub size: u64,
    pub blocks: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub btime: Timespec,
    pub rdev: u64,
    pub parent: u64,
    pub xattr_block: u64,
    pub extent_block: u64,
    pub extent_count: u32,
    pub inline: [Extent; INLINE_EXTENTS],
}

const NO_EXTENT: Extent = Extent {
    lblk: 0,
    pblk: 0,
    len: 0,
};

impl DiskInode {
    pub fn empty() -> DiskInode {
        DiskInode {
            mode: 0,
            flags: 0,
            uid: 0,
            gid: 0,
            nlink: 0,
            generation: 0,
            size: 0,
            blocks: 0,
            atime: Timespec::default(),
            mtime: Timespec::default(),
            ctime: Timespec::default(),
            btime: Timespec::default(),
            rdev: 0,
            parent: 0,
            xattr_block: 0,
            extent_block: 0,
            extent_count: 0,
            inline: [NO_EXTENT; INLINE_EXTENTS],
        }
    }

    pub fn encode(&self) -> [u8; INODE_SIZE as usize] {
        let mut b = [0u8; INODE_SIZE as usize];
        if self.mode == 0 {
            return b;
        }
        put_u32(&mut b, 0, self.mode);
        put_u32(&mut b, 4, self.flags);
        put_u32(&mut b, 8, self.uid);
        put_u32(&mut b, 12, self.gid);
        put_u32(&mut b, 16, self.nlink);
        put_u32(&mut b, 20, self.generation);
        put_u64(&mut b, 24, self.size);
        put_u64(&mut b, 32, self.blocks);
        put_u64(&mut b, 40, self.atime.sec as u64);
        put_u32(&mut b, 48, self.atime.nsec);
        put_u32(&mut b, 52, self.mtime.nsec);
        put_u64(&mut b, 56, self.mtime.sec as u64);
        put_u64(&mut b, 64, self.ctime.sec as u64);
        put_u32(&mut b, 72, self.ctime.nsec);
        put_u32(&mut b, 76, self.btime.nsec);
        put_u64(&mut b, 80, self.btime.sec as u64);
        put_u64(&mut b, 88, self.rdev);
        put_u64(&mut b, 96, self.parent);
        put_u64(&mut b, 104, self.xattr_block);
        put_u64(&mut b, 112, self.extent_block);
        put_u32(&mut b, 120, self.extent_count);
        for (i, e) in self.inline.iter().enumerate() {
            let o = 128 + i * EXTENT_SIZE;
            b[o..o + EXTENT_SIZE].copy_from_slice(&e.encode());
        }
        let c = crc(&b[..252]);
        put_u32(&mut b, 252, c);
        b
    }

    /// Decodes an inode slot: Ok(None) for a free slot.
    pub fn decode(b: &[u8]) -> Result<Option<DiskInode>, FormatError> {
        if b.len() < INODE_SIZE as usize {
            return bad("inode: short slot");
        }
        let b = &b[..INODE_SIZE as usize];
        let mode = get_u32(b, 0);
        if mode == 0 {
            if b.iter().any(|&x| x != 0) {
                return bad("inode: free slot is not zero");
            }
            return Ok(None);
        }
        if get_u32(b, 252) != crc(&b[..252]) {
            return bad("inode: checksum mismatch");
        }
        let mut inline = [NO_EXTENT; INLINE_EXTENTS];
        for (i, slot) in inline.iter_mut().enumerate() {
            let o = 128 + i * EXTENT_SIZE;
            if let Some(e) = Extent::decode(&b[o..o + EXTENT_SIZE])? {
                *slot = e;
            }
        }
        let ts = |so: usize, no: usize| Timespec {
            sec: get_u64(b, so) as i64,
            nsec: get_u32(b, no),
        };
        let ino = DiskInode {
            mode,
            flags: get_u32(b, 4),
            uid: get_u32(b, 8),
            gid: get_u32(b, 12),
            nlink: get_u32(b, 16),
            generation: get_u32(b, 20),
            size: get_u64(b, 24),
            blocks: get_u64(b, 32),
            atime: ts(40, 48),
            mtime: ts(56, 52),
            ctime: ts(64, 72),
            btime: ts(80, 76),
            rdev: get_u64(b, 88),
            parent: get_u64(b, 96),
            xattr_block: get_u64(b, 104),
            extent_block: get_u64(b, 112),
            extent_count: get_u32(b, 120),
            inline,
        };
        for t in [ino.atime, ino.mtime, ino.ctime, ino.btime] {
            if t.nsec >= 1_000_000_000 {
                return bad("inode: timestamp nanoseconds out of range");
            }
        }
        Ok(Some(ino))
    }
}

// ---------------------------------------------------------------------------
// Directory blocks

pub fn encode_dir_block_header(owner: u64, index: u64) -> [u8; DIR_SLOT] {
    let mut b = [0u8; DIR_SLOT];
    b[0..4].copy_from_slice(&DIR_MAGIC);
    put_u64(&mut b, 8, owner);
    put_u64(&mut b, 16, index);
    let c = crc_skip(&b[..24], 4);
    put_u32(&mut b, 4, c);
    b
}

pub fn check_dir_block_header(b: &[u8], owner: u64, index: u64) -> Result<(), FormatError> {
    if b.len() < 24 || b[0..4] != DIR_MAGIC {
        return bad(format!("directory {owner}: block {index}: bad magic"));
    }
    if get_u32(b, 4) != crc_skip(&b[..24], 4) {
        return bad(format!(
            "directory {owner}: block {index}: header checksum mismatch"
        ));
    }
    if get_u64(b, 8) != owner || get_u64(b, 16) != index {
        return bad(format!(
            "directory {owner}: block {index}: header names another block"
        ));
    }
    Ok(())
}

pub fn dirent_slots(name_len: usize) -> usize {
    (DIRENT_HEADER + name_len).div_ceil(DIR_SLOT)
}

/// Encodes an entry into `nslots × 64` bytes.
pub fn encode_dirent(ino: u64, ftype: u8, name: &[u8]) -> Vec<u8> {
    let n = dirent_slots(name.len());
    let mut b = vec![0u8; n * DIR_SLOT];
    put_u64(&mut b, 0, ino);
    put_u16(&mut b, 12, name.len() as u16);
    b[14] = ftype;
    b[15] = n as u8;
    b[16..16 + name.len()].copy_from_slice(name);
    let c = crc_skip(&b[..16 + name.len()], 8);
    put_u32(&mut b, 8, c);
    b
}

/// A decoded directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDirent<'a> {
    pub ino: u64,
    pub ftype: u8,
    pub nslots: usize,
    pub name: &'a [u8],
}

/// Decodes the entry starting at `slot` of a directory block. Ok(None): free slot.
pub fn decode_dirent(block: &[u8], slot: usize) -> Result<Option<RawDirent<'_>>, FormatError> {
    let o = slot * DIR_SLOT;
    if slot == 0 || slot >= DIR_SLOTS_PER_BLOCK || block.len() < (DIR_SLOTS_PER_BLOCK * DIR_SLOT) {
        return bad("dirent: bad slot");
    }
    let ino = get_u64(block, o);
    if ino == 0 {
        if block[o..o + DIRENT_HEADER].iter().any(|&x| x != 0) {
            return bad("dirent: free slot header is not zero");
        }
        return Ok(None);
    }
    let name_len = get_u16(block, o + 12) as usize;
    let nslots = block[o + 15] as usize;
    if name_len == 0
        || name_len > NAME_MAX
        || nslots != dirent_slots(name_len)
        || slot + nslots > DIR_SLOTS_PER_BLOCK
    {
        return bad("dirent: bad length");
    }
    let raw = &block[o..o + DIRENT_HEADER + name_len];
    if get_u32(block, o + 8) != crc_skip(raw, 8) {
        return bad("dirent: checksum mismatch");
    }
    let name = &raw[DIRENT_HEADER..];
    if name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
        return bad("dirent: invalid name");
    }
    Ok(Some(RawDirent {
        ino,
        ftype: block[o + 14],
        nslots,
        name,
    }))
}

// ---------------------------------------------------------------------------
// Xattr blocks

/// Encodes a full xattr block from (name, value) pairs. Err if they do not fit.
pub fn encode_xattr_block(
    owner: u64,
    entries: &[(Vec<u8>, Vec<u8>)],
) -> Result<Vec<u8>, FormatError> {
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    b[0..4].copy_from_slice(&XATTR_MAGIC);
    put_u64(&mut b, 8, owner);
    let mut o = XATTR_HEADER;
    for (name, value) in entries {
        let need = 4 + name.len() + value.len();
        if name.is_empty()
            || name.len() > 255
            || value.len() > u16::MAX as usize
            || o + need > b.len()
        {
            return bad("xattrs do not fit in one block");
        }
        b[o] = name.len() as u8;
        put_u16(&mut b, o + 2, value.len() as u16);
        b[o + 4..o + 4 + name.len()].copy_from_slice(name);
        b[o + 4 + name.len()..o + need].copy_from_slice(value);
        o += need;
    }
    put_u32(&mut b, 16, (o - XATTR_HEADER) as u32);
    put_u32(&mut b, 20, entries.len() as u32);
    let c = crc_skip(&b, 4);
    put_u32(&mut b, 4, c);
    Ok(b)
}

/// The space one xattr takes in a block.
pub fn xattr_entry_size(name_len: usize, value_len: usize) -> usize {
    4 + name_len + value_len
}

pub const XATTR_SPACE: usize = BLOCK_SIZE as usize - XATTR_HEADER;

pub type XattrList = Vec<(Vec<u8>, Vec<u8>)>;

pub fn decode_xattr_block(b: &[u8], owner: u64) -> Result<XattrList, FormatError> {
    if b.len() < BLOCK_SIZE as usize || b[0..4] != XATTR_MAGIC {
        return bad(format!("xattr block of inode {owner}: bad magic"));
    }
    if get_u32(b, 4) != crc_skip(&b[..BLOCK_SIZE as usize], 4) {
        return bad(format!("xattr block of inode {owner}: checksum mismatch"));
    }
    if get_u64(b, 8) != owner {
        return bad(format!(
            "xattr block of inode {owner}: owned by {}",
            get_u64(b, 8)
        ));
    }
    let used = get_u32(b, 16) as usize;
    let count = get_u32(b, 20) as usize;
    if used > XATTR_SPACE {
        return bad(format!("xattr block of inode {owner}: bad length"));
    }
    let mut out = Vec::with_capacity(count.min(1024));
    let mut o = XATTR_HEADER;
    let end = XATTR_HEADER + used;
    while o < end {
        if o + 4 > end {
            return bad(format!("xattr block of inode {owner}: truncated entry"));
        }
        let nl = b[o] as usize;
        let vl = get_u16(b, o + 2) as usize;
        if nl == 0 || o + 4 + nl + vl > end {
            return bad(format!("xattr block of inode {owner}: bad entry"));
        }
        out.push((
            b[o + 4..o + 4 + nl].to_vec(),
            b[o + 4 + nl..o + 4 + nl + vl].to_vec(),
        ));
        o += 4 + nl + vl;
    }
    if out.len() != count {
        return bad(format!(
            "xattr block of inode {owner}: entry count mismatch"
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Bitmap blocks

/// Seals a bitmap block: writes its trailer (magic, index, crc) into `b[4080..4096]`.
pub fn seal_bitmap_block(b: &mut [u8], index: u64) {
    b[4080..4084].copy_from_slice(&BITMAP_MAGIC);
    put_u32(b, 4084, index as u32);
    put_u32(b, 4088, 0);
    let c = crc(&b[..4092]);
    put_u32(b, 4092, c);
}

pub fn check_bitmap_block(b: &[u8], index: u64) -> Result<(), FormatError> {
    if b.len() < BLOCK_SIZE as usize
        || b[4080..4084] != BITMAP_MAGIC
        || get_u32(b, 4084) != index as u32
    {
        return bad(format!("bitmap block {index}: bad magic"));
    }
    if get_u32(b, 4092) != crc(&b[..4092]) {
        return bad(format!("bitmap block {index}: checksum mismatch"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> MkfsParams {
        MkfsParams {
            label: "t".into(),
            journal_bytes: 0,
            inodes: 0,
            uuid: [7; 16],
            now_ns: 1,
        }
    }

    #[test]
    fn superblock_round_trips() {
        let sb = Superblock::layout(1 << 30, &params()).unwrap();
        let b = sb.encode();
        assert_eq!(Superblock::decode(&b, 1 << 30).unwrap(), sb);
    }

    #[test]
    fn superblock_rejects_any_flipped_byte() {
        let sb = Superblock::layout(64 << 20, &params()).unwrap();
        let b = sb.encode();
        for i in 0..SB_SIZE {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(Superblock::decode(&c, 64 << 20).is_err(), "byte {i}");
        }
    }

    #[test]
    fn layout_refuses_tiny_device() {
        assert!(Superblock::layout(1 << 20, &params()).is_err());
    }

    #[test]
    fn layout_aligns_data_area_to_2mib() {
        let sb = Superblock::layout(3 << 30, &params()).unwrap();
        assert_eq!(sb.data_start % DATA_ALIGN_BLOCKS, 0);
        assert!(sb.bitmap_blocks * BITS_PER_BITMAP_BLOCK >= sb.data_blocks);
    }

    #[test]
    fn inode_round_trips_and_detects_corruption() {
        let mut i = DiskInode::empty();
        i.mode = 0o100644;
        i.size = 12345;
        i.inline[2] = Extent {
            lblk: 3,
            pblk: 900,
            len: 4,
        };
        i.mtime = Timespec {
            sec: -5,
            nsec: 999_999_999,
        };
        let b = i.encode();
        assert_eq!(DiskInode::decode(&b).unwrap(), Some(i));
        let mut c = b;
        c[30] ^= 1;
        assert!(DiskInode::decode(&c).is_err());
        assert_eq!(DiskInode::decode(&[0u8; 256]).unwrap(), None);
    }

    #[test]
    fn dirent_round_trips_for_every_name_length() {
        let mut block = vec![0u8; 4096];
        for len in 1..=255usize {
            let name = vec![b'a'; len];
            let e = encode_dirent(42, 8, &name);
            block.fill(0);
            block[64..64 + e.len()].copy_from_slice(&e);
            let d = decode_dirent(&block, 1).unwrap().unwrap();
            assert_eq!((d.ino, d.ftype, d.name.len()), (42, 8, len));
            assert_eq!(d.nslots, dirent_slots(len));
        }
    }

    #[test]
    fn xattr_block_round_trips() {
        let v = vec![
            (b"user.a".to_vec(), b"1".to_vec()),
            (b"trusted.b".to_vec(), vec![0, 1, 2]),
        ];
        let b = encode_xattr_block(9, &v).unwrap();
        assert_eq!(decode_xattr_block(&b, 9).unwrap(), v);
        assert!(decode_xattr_block(&b, 8).is_err());
    }

    #[test]
    fn bitmap_trailer_detects_flip() {
        let mut b = vec![0u8; 4096];
        b[7] = 0xff;
        seal_bitmap_block(&mut b, 3);
        check_bitmap_block(&b, 3).unwrap();
        b[7] = 0xfe;
        assert!(check_bitmap_block(&b, 3).is_err());
    }
}

pub mod mkfs;

impl Timespec {
    /// The current time (the Unix epoch if the clock reads before it).
    pub fn now() -> Timespec {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timespec {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        }
    }
}
