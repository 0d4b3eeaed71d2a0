//! Corrupt images: bytes flipped and blocks zeroed in the superblocks, the journal, the
//! inode table, directory, extent, xattr and bitmap blocks of a populated image. For
//! every damage: fsck and mount run in-process under `catch_unwind` and never panic;
//! fsck detects the damage; mount refuses it with a message, or accepts it only when
//! the mount repairs it (fsck is clean after the mount's clean unmount). A randomized
//! mutation run exercises the same entry points (fsck::check, DaxFs::mount_device)
//! thousands of times: it is the stable-Rust counterpart of the cargo-fuzz targets in
//! fuzz.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use daxfs_testkit as common;

use common::Rng;

use daxfs::{Cred, DaxFs, FsOptions, ROOT};
use daxfs_format::*;
use daxfs_fsck::{FsckReport, Severity};
use daxfs_pmem::Device;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

const SIZE: u64 = 4 << 20;

/// A populated image and where its structures are.
struct Image {
    bytes: Vec<u8>,
    sb: Superblock,
    /// Inode numbers of: a fragmented file (has an extent block), a file with xattrs.
    frag: u64,
    xattr_file: u64,
}

fn read_inode(img: &[u8], sb: &Superblock, ino: u64) -> DiskInode {
    let off = sb.inode_offset(ino) as usize;
    DiskInode::decode(&img[off..off + INODE_SIZE as usize])
        .expect("valid inode")
        .expect("used inode")
}

impl Image {
    fn inode(&self, ino: u64) -> DiskInode {
        read_inode(&self.bytes, &self.sb, ino)
    }
    fn root_dir_block(&self) -> u64 {
        let d = self.inode(ROOT);
        d.inline
            .iter()
            .find(|e| e.len > 0 && e.lblk == 0)
            .expect("root has block 0")
            .pblk
    }
    fn extent_block(&self) -> u64 {
        let b = self.inode(self.frag).extent_block;
        assert_ne!(b, 0, "the fragmented file has an extent block");
        b
    }
    fn xattr_block(&self) -> u64 {
        let b = self.inode(self.xattr_file).xattr_block;
        assert_ne!(b, 0, "the xattr file has an xattr block");
        b
    }
}

fn populated() -> Image {
    let dev = Arc::new(Device::memory(&vec![0u8; SIZE as usize]).expect("memory device"));
    common::mkfs()
        .journal_bytes(64 << 10)
        .inodes(64)
        .format(&dev);
    let fs = DaxFs::mount_device(dev.clone(), FsOptions::default()).expect("mount");
    let r = Cred::root();
    let d = fs.mkdir(ROOT, b"dir", 0o755, &r).expect("mkdir").ino;
    let a = common::mkfile(&fs, d, b"a", &common::pattern(10_000, 1));
    fs.link(a, ROOT, b"a-link").expect("link");
    common::mkfile(&fs, ROOT, b"gone", b"x");
    fs.unlink(ROOT, b"gone").expect("unlink");
    fs.symlink(ROOT, b"sym", b"dir/a", &r).expect("symlink");
    let frag = common::mkfile(&fs, ROOT, b"frag", b"");
    for i in 0..12u64 {
        // Every other block: 12 extents, more than the 5 inline slots.
        fs.write(
            frag,
            i * 2 * BLOCK_SIZE,
            &common::pattern(4096, i as u8),
            false,
        )
        .expect("write");
    }
    let xattr_file = common::mkfile(&fs, d, b"x", b"with xattrs");
    fs.setxattr(xattr_file, b"user.one", b"1", 0)
        .expect("setxattr");
    fs.setxattr(xattr_file, b"user.two", &[7u8; 200], 0)
        .expect("setxattr");
    let sb = fs.superblock();
    fs.shutdown().expect("unmount");
    drop(fs);
    let mut bytes = vec![0u8; SIZE as usize];
    dev.read(0, &mut bytes);
    let img = Image {
        bytes,
        sb,
        frag,
        xattr_file,
    };
    let rep = check(&img.bytes).expect("fsck does not panic");
    assert!(
        rep.is_clean(),
        "populated image is clean: {:?}",
        rep.findings
    );
    img
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "non-string panic".into())
}

/// fsck of an image, in-process; Err is a panic.
fn check(img: &[u8]) -> Result<FsckReport, String> {
    let dev = Arc::new(Device::memory(img).map_err(|e| e.to_string())?);
    catch_unwind(AssertUnwindSafe(|| {
        daxfs_fsck::check(&dev, false, &mut |_, _, _| {})
    }))
    .map_err(panic_text)
}

/// What fsck and a mount make of one image.
struct Outcome {
    fsck: FsckReport,
    /// Err: the mount's refusal message.
    mount: Result<(), String>,
    /// fsck after the mount's clean unmount (when it mounted).
    after: Option<FsckReport>,
}

/// Runs fsck, then mount + shutdown + fsck; Err when anything panicked.
fn probe(img: &[u8]) -> Result<Outcome, String> {
    let before = check(img).map_err(|p| format!("fsck panicked: {p}"))?;
    let dev = Arc::new(Device::memory(img).map_err(|e| e.to_string())?);
    let mounted = catch_unwind(AssertUnwindSafe(|| {
        DaxFs::mount_device(dev.clone(), FsOptions::default()).map(|fs| {
            let r = fs.shutdown();
            drop(fs);
            r
        })
    }))
    .map_err(|p| format!("mount panicked: {}", panic_text(p)))?;
    let (mount, after) = match mounted {
        Ok(shut) => {
            shut.map_err(|e| format!("unmount failed: {e:?}"))?;
            let mut bytes = vec![0u8; img.len()];
            dev.read(0, &mut bytes);
            let after = check(&bytes).map_err(|p| format!("fsck panicked after mount: {p}"))?;
            (Ok(()), Some(after))
        }
        Err(e) => (Err(e.to_string()), None),
    };
    Ok(Outcome {
        fsck: before,
        mount,
        after,
    })
}

/// The rules every image obeys, damaged or not: fsck clean ⇒ it mounts; it mounts ⇒
/// after the clean unmount fsck is clean (the mount repaired what it accepted); a
/// refusal names the device and says what is wrong.
fn consistent(o: &Outcome) -> Result<(), String> {
    if o.fsck.is_clean() {
        if let Err(m) = &o.mount {
            return Err(format!("fsck is clean but the mount refuses: {m}"));
        }
    }
    match (&o.mount, &o.after) {
        (Ok(()), Some(after)) if !after.is_clean() => Err(format!(
            "the mount accepted an image it did not repair: before {:?}, after {:?}",
            o.fsck.findings, after.findings
        )),
        (Err(m), _) if !m.starts_with("<memory>:") || m.len() < 20 => {
            Err(format!("unclear refusal: {m:?}"))
        }
        _ => Ok(()),
    }
}

/// A damage that must be detected: fsck is not clean, and the image is consistent.
fn assert_detected(name: &str, img: &[u8]) {
    let o = probe(img).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        !o.fsck.is_clean(),
        "{name}: fsck finds nothing wrong (mount: {:?})",
        o.mount
    );
    if let Err(e) = consistent(&o) {
        panic!("{name}: {e}");
    }
}

/// A damage that is harmless by design (a torn journal header copy, stale log bytes):
/// it mounts and fsck finds no error.
fn assert_tolerated(name: &str, img: &[u8]) {
    let o = probe(img).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(o.mount.is_ok(), "{name}: mount refuses: {:?}", o.mount);
    assert_eq!(
        o.fsck.count(Severity::Error),
        0,
        "{name}: {:?}",
        o.fsck.findings
    );
    if let Err(e) = consistent(&o) {
        panic!("{name}: {e}");
    }
}

fn flipped(img: &Image, off: u64) -> Vec<u8> {
    let mut b = img.bytes.clone();
    b[off as usize] ^= 0xff;
    b
}

fn zeroed(img: &Image, off: u64, len: u64) -> Vec<u8> {
    let mut b = img.bytes.clone();
    b[off as usize..(off + len) as usize].fill(0);
    b
}

#[test]
fn damaged_primary_superblock_is_detected_and_the_mount_repairs_it_from_the_backup() {
    let img = populated();
    for off in [0, 8, 20, 28, 32, 120, 160, 176, 300, 508] {
        assert_detected(
            &format!("primary superblock byte {off}"),
            &flipped(&img, off),
        );
    }
}

#[test]
fn damaged_backup_superblock_is_detected() {
    let img = populated();
    for off in [0, 28, 136, 508] {
        assert_detected(
            &format!("backup superblock byte {off}"),
            &flipped(&img, BLOCK_SIZE + off),
        );
    }
}

#[test]
fn both_superblocks_damaged_or_zeroed_refuse_to_mount() {
    let img = populated();
    let mut both = flipped(&img, 40);
    both[BLOCK_SIZE as usize + 40] ^= 0xff;
    assert_detected("both superblocks flipped", &both);
    let z = zeroed(&img, 0, 2 * BLOCK_SIZE);
    assert_detected("both superblocks zeroed", &z);
    let o = probe(&z).expect("no panic");
    assert!(o.fsck.not_daxfs);
    assert!(o.mount.is_err_and(|m| m.contains("not a daxfs filesystem")));
}

#[test]
fn superblock_geometry_that_disagrees_with_the_device_is_detected() {
    let img = populated();
    // A well-formed superblock (good crc) whose inode table overlaps the data area.
    let mut sb = img.sb.clone();
    sb.inode_table_blocks = sb.data_start;
    let mut b = img.bytes.clone();
    b[..SB_SIZE].copy_from_slice(&sb.encode());
    b[BLOCK_SIZE as usize..BLOCK_SIZE as usize + SB_SIZE].copy_from_slice(&sb.encode());
    assert_detected("crafted superblock geometry", &b);
}

#[test]
fn zeroed_or_doubly_damaged_journal_header_refuses_to_mount() {
    let img = populated();
    let j = img.sb.journal_start * BLOCK_SIZE;
    assert_detected("journal header block zeroed", &zeroed(&img, j, BLOCK_SIZE));
    let mut both = flipped(&img, j + 20);
    both[(j + 2048 + 20) as usize] ^= 0xff;
    assert_detected("both journal header copies flipped", &both);
}

#[test]
fn one_damaged_journal_header_copy_or_garbage_in_the_log_is_harmless() {
    let img = populated();
    let j = img.sb.journal_start * BLOCK_SIZE;
    assert_tolerated("journal header copy 0 flipped", &flipped(&img, j + 20));
    assert_tolerated(
        "journal header copy 1 flipped",
        &flipped(&img, j + 2048 + 20),
    );
    let mut g = img.bytes.clone();
    let log = (j + BLOCK_SIZE) as usize..(j + img.sb.journal_blocks * BLOCK_SIZE) as usize;
    for (i, b) in g[log].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31) ^ 0x5a;
    }
    assert_tolerated("journal log area overwritten with garbage", &g);
}

#[test]
fn damaged_inodes_are_detected() {
    let img = populated();
    for ino in [ROOT, img.frag, img.xattr_file] {
        for off in [0u64, 4, 16, 24, 96, 104, 112, 128, 200, 252] {
            assert_detected(
                &format!("inode {ino} byte {off}"),
                &flipped(&img, img.sb.inode_offset(ino) + off),
            );
        }
    }
    // A free slot must be all zeros.
    assert_detected(
        "free inode slot with a stray byte",
        &flipped(&img, img.sb.inode_offset(60) + 77),
    );
    assert_detected(
        "first inode table block zeroed",
        &zeroed(&img, img.sb.inode_table_start * BLOCK_SIZE, BLOCK_SIZE),
    );
}

#[test]
fn damaged_directory_blocks_are_detected() {
    let img = populated();
    let b = img.root_dir_block() * BLOCK_SIZE;
    // Header (magic, crc, owner, index), then the first entries' headers and names.
    for off in [0u64, 4, 8, 16, 64, 72, 76, 78, 80, 128, 136, 144] {
        assert_detected(
            &format!("root directory byte {off}"),
            &flipped(&img, b + off),
        );
    }
    assert_detected("root directory block zeroed", &zeroed(&img, b, BLOCK_SIZE));
}

#[test]
fn damaged_extent_blocks_are_detected() {
    let img = populated();
    let b = img.extent_block() * BLOCK_SIZE;
    for off in [0u64, 4, 8, 16, 24, 32, 40, 44, 48] {
        assert_detected(&format!("extent block byte {off}"), &flipped(&img, b + off));
    }
    // A free slot must be all zeros.
    assert_detected(
        "free extent slot with a stray byte",
        &flipped(&img, b + 24 + 100 * 24 + 3),
    );
    assert_detected("extent block zeroed", &zeroed(&img, b, BLOCK_SIZE));
}

#[test]
fn damaged_xattr_blocks_are_detected() {
    let img = populated();
    let b = img.xattr_block() * BLOCK_SIZE;
    for off in [0u64, 4, 8, 16, 20, 24, 26, 30, 40] {
        assert_detected(&format!("xattr block byte {off}"), &flipped(&img, b + off));
    }
    assert_detected("xattr block zeroed", &zeroed(&img, b, BLOCK_SIZE));
}

#[test]
fn damaged_bitmap_blocks_are_detected() {
    let img = populated();
    let b = img.sb.bitmap_start * BLOCK_SIZE;
    for off in [0u64, 1, 100, 4080, 4084, 4092] {
        assert_detected(&format!("bitmap byte {off}"), &flipped(&img, b + off));
    }
    assert_detected("bitmap block zeroed", &zeroed(&img, b, BLOCK_SIZE));
}

/// Random damage (1–4 mutations: byte flips, random bytes, zeroed lines and blocks)
/// aimed at the metadata of the populated image; every outcome must be panic-free and
/// consistent. DAXFS_CORRUPT_ITERS sets the count (default 600).
#[test]
fn random_metadata_damage_never_panics_and_never_mounts_unrepaired() {
    let img = populated();
    let iters: u64 = std::env::var("DAXFS_CORRUPT_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let sb = &img.sb;
    let regions: Vec<(u64, u64)> = vec![
        (0, SB_SIZE as u64),
        (BLOCK_SIZE, SB_SIZE as u64),
        (sb.journal_start * BLOCK_SIZE, BLOCK_SIZE),
        (
            (sb.journal_start + 1) * BLOCK_SIZE,
            (sb.journal_blocks - 1) * BLOCK_SIZE,
        ),
        (
            sb.inode_table_start * BLOCK_SIZE,
            sb.inode_table_blocks * BLOCK_SIZE,
        ),
        (sb.bitmap_start * BLOCK_SIZE, sb.bitmap_blocks * BLOCK_SIZE),
        (img.root_dir_block() * BLOCK_SIZE, BLOCK_SIZE),
        (img.extent_block() * BLOCK_SIZE, BLOCK_SIZE),
        (img.xattr_block() * BLOCK_SIZE, BLOCK_SIZE),
    ];
    let mut rng = Rng::new(common::seed(0x9e37_79b9_7f4a_7c15));
    let (mut detected, mut refused) = (0u64, 0u64);
    let t = std::time::Instant::now();
    for it in 0..iters {
        let mut b = img.bytes.clone();
        for _ in 0..1 + rng.below(4) {
            let (start, len) = regions[rng.below(regions.len() as u64) as usize];
            let at = start + rng.below(len);
            match rng.below(10) {
                0..=5 => b[at as usize] ^= 1 << rng.below(8),
                6..=7 => b[at as usize] = rng.next_u64() as u8,
                8 => {
                    let l = at & !63;
                    b[l as usize..(l + 64).min(start + len) as usize].fill(0);
                }
                _ => {
                    let blk = at & !(BLOCK_SIZE - 1);
                    b[blk as usize..(blk + BLOCK_SIZE) as usize].fill(0);
                }
            }
        }
        let o = probe(&b).unwrap_or_else(|e| panic!("iteration {it}: {e}"));
        if let Err(e) = consistent(&o) {
            panic!("iteration {it}: {e}");
        }
        detected += u64::from(!o.fsck.is_clean());
        refused += u64::from(o.mount.is_err());
    }
    println!(
        "corruption: {iters} random damages in {:.1}s: fsck flagged {detected}, mount refused {refused}, no panic",
        t.elapsed().as_secs_f64()
    );
    assert!(
        detected > iters / 2,
        "most random metadata damage is detected"
    );
}

/// The stable counterpart of the journal_replay fuzz target: a journal holding six
/// committed transactions, damaged by 1–8 random byte patches, is opened 3000 times:
/// `Journal::open` never panics, never touches bytes outside the media, and leaves a
/// journal that opens again.
#[test]
fn random_journal_damage_never_panics_and_replay_stays_in_bounds() {
    use daxfs_journal::{Journal, Transaction};
    use daxfs_pmem::MemMedia;
    const START: u64 = 4096;
    const LEN: u64 = 64 << 10;
    let m = Arc::new(MemMedia::new(128 << 10));
    daxfs_journal::format(&*m, START, LEN).expect("format");
    let (mut j, _) = Journal::open(m.clone(), START, LEN).expect("open");
    for i in 0..6u64 {
        let mut t = Transaction::new();
        t.write(START + LEN + i * 300, &[i as u8 + 1; 200]);
        t.write(100 + i * 8, &i.to_le_bytes());
        j.commit(&t).expect("commit");
    }
    let base = m.volatile_image();
    let mut rng = Rng::new(common::seed(0x1234_5678_9abc_def1));
    let (mut opened, mut refused) = (0u32, 0u32);
    for _ in 0..3000 {
        let mut img = base.clone();
        for _ in 0..1 + rng.below(8) {
            // Mostly the headers and the transactions; sometimes anywhere in the log.
            let at = if rng.below(2) == 0 {
                rng.below(4096 + 2048)
            } else {
                rng.below(LEN)
            };
            img[(START + at) as usize] ^= 1 << rng.below(8);
        }
        let m = Arc::new(MemMedia::from_bytes(img));
        let r = catch_unwind(AssertUnwindSafe(|| {
            if Journal::open(m.clone(), START, LEN).is_ok() {
                Journal::open(m.clone(), START, LEN).expect("reopen after replay");
                true
            } else {
                false
            }
        }))
        .unwrap_or_else(|p| panic!("journal replay panicked: {}", panic_text(p)));
        if r {
            opened += 1;
        } else {
            refused += 1;
        }
        assert_eq!(m.out_of_range_count(), 0, "replay stays inside the media");
    }
    println!(
        "journal corruption: 3000 damaged journals: {opened} opened, {refused} refused, no panic"
    );
}
