//! Hostile images (issue 10, items 3 and 4): truncated images, superblocks whose fields
//! overflow, and structure-aware mutations with every CRC recomputed, so the decoders,
//! validators, journal replay and `load` run on damage the checksums do not catch. Each
//! runs fsck and the mount in-process under `catch_unwind`: nothing may panic. The
//! mutation logic lives in daxfs-testkit's hostile module, shared with the cargo-fuzz targets in
//! fuzz; this is their deterministic, stable-Rust counterpart.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use daxfs_testkit as common;
use daxfs_testkit::hostile;

use common::Rng;
use daxfs::{DaxFs, FsOptions, MountError};
use daxfs_format::*;
use daxfs_fsck as fsck;
use daxfs_fsck::FsckReport;
use daxfs_pmem::Device;
use hostile::Base;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

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
        fsck::check(&dev, false, &mut |_, _, _| {})
    }))
    .map_err(|p| format!("fsck panicked: {}", panic_text(p)))
}

/// Mounts an image in memory, runs `work` on it and unmounts it; the outer Err is a
/// panic, the inner one the mount's refusal; Ok holds the image after the unmount.
fn mount_with(
    img: &[u8],
    work: impl FnOnce(&DaxFs),
) -> Result<Result<Vec<u8>, MountError>, String> {
    let dev = Arc::new(Device::memory(img).map_err(|e| e.to_string())?);
    let r = catch_unwind(AssertUnwindSafe(|| {
        DaxFs::mount_device(dev.clone(), FsOptions::default()).map(|fs| {
            work(&fs);
            let _ = fs.shutdown();
        })
    }))
    .map_err(|p| format!("mount panicked: {}", panic_text(p)))?;
    Ok(r.map(|()| {
        let mut after = vec![0u8; img.len()];
        dev.read(0, &mut after);
        after
    }))
}

fn mount(img: &[u8]) -> Result<Result<Vec<u8>, MountError>, String> {
    mount_with(img, |_| {})
}

/// `fsck -y` of an image, in memory; the repaired image.
fn repair(img: &[u8]) -> Vec<u8> {
    let dev = Arc::new(Device::memory(img).expect("memory device"));
    fsck::repair(&dev, false, &mut |_, _, _| {});
    let mut after = vec![0u8; img.len()];
    dev.read(0, &mut after);
    after
}

/// A file in /dev/shm removed on drop.
struct ShmFile(std::path::PathBuf);

impl Drop for ShmFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An image cut short, at every size from 0 to its full size minus one (every 4 KiB
/// plus odd sizes around each block boundary and in between), is refused with an error
/// by the mount (through `DaxFs::mount`, which opens the file) and by fsck; never a
/// panic. The old mount panicked at 4096 bytes reading the backup superblock.
#[test]
fn every_truncated_image_is_refused_without_panic() {
    let base = Base::populated();
    let path = std::path::PathBuf::from(format!(
        "/dev/shm/daxfs-hostile-trunc-{}",
        std::process::id()
    ));
    let _guard = ShmFile(path.clone());
    let full = base.image.len();
    let mut sizes: Vec<usize> = Vec::new();
    for b in (0..full).step_by(BLOCK_SIZE as usize) {
        sizes.extend([b, b + 1, b + 511, b + 512, b + 2049]);
    }
    sizes.retain(|&s| s < full);
    let (mut refused, mut fsck_errors) = (0u32, 0u32);
    for &size in &sizes {
        std::fs::write(&path, &base.image[..size]).expect("write image");
        let r = catch_unwind(AssertUnwindSafe(|| {
            DaxFs::mount(&path, FsOptions::default())
                .map(drop)
                .map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|p| panic!("mount of {size} bytes panicked: {}", panic_text(p)));
        match r {
            Ok(()) => panic!("an image cut to {size} bytes mounted"),
            Err(msg) => {
                assert!(msg.contains(&*path.to_string_lossy()), "{size}: {msg}");
                refused += 1;
            }
        }
        if size > 0 && size.is_multiple_of(BLOCK_SIZE as usize) {
            let rep = check(&base.image[..size]).unwrap_or_else(|e| panic!("{size}: {e}"));
            assert!(!rep.is_clean(), "fsck calls an image cut to {size} clean");
            fsck_errors += 1;
        }
    }
    println!(
        "truncated: {} sizes refused by the mount, {fsck_errors} flagged by fsck, no panic",
        refused
    );
}

/// A change to a decoded superblock.
type SbEdit = fn(&mut Superblock);
/// A change to the raw bytes of an inode slot.
type SlotEdit = fn(&mut [u8]);

/// A superblock with a valid CRC whose region sizes overflow when added (the journal
/// almost 2^64 blocks long, the inode table ending past 2^64, ...) is refused by
/// `Superblock::decode`, in debug builds without an overflow panic; the old code
/// overflowed computing the end of the inode table.
#[test]
fn superblock_sizes_that_overflow_are_refused() {
    let base = Base::populated();
    let size = base.image.len() as u64;
    let good = base.sb.clone();
    let cases: Vec<(&str, SbEdit)> = vec![
        ("journal_blocks = MAX-1", |s| {
            s.journal_blocks = u64::MAX - 1;
            s.inode_table_start = u64::MAX;
        }),
        ("inode table wraps", |s| {
            s.inode_table_blocks = u64::MAX - s.inode_table_start + 3
        }),
        ("bitmap wraps", |s| {
            s.bitmap_blocks = u64::MAX - s.bitmap_start + 1
        }),
        ("journal wraps to the start", |s| {
            s.journal_blocks = u64::MAX - 1;
            s.inode_table_start = 0;
        }),
        ("total_blocks = MAX", |s| s.total_blocks = u64::MAX),
        ("inode_count = MAX", |s| s.inode_count = u64::MAX),
        ("data_start = MAX", |s| s.data_start = u64::MAX),
    ];
    for (name, f) in cases {
        let mut sb = good.clone();
        f(&mut sb);
        let enc = sb.encode();
        let r = catch_unwind(|| Superblock::decode(&enc, size))
            .unwrap_or_else(|p| panic!("{name}: decode panicked: {}", panic_text(p)));
        assert!(r.is_err(), "{name}: accepted");
        // The same as the only (both) copies of a whole image: refused, no panic.
        let mut img = base.image.clone();
        img[..SB_SIZE].copy_from_slice(&enc);
        img[BLOCK_SIZE as usize..BLOCK_SIZE as usize + SB_SIZE].copy_from_slice(&enc);
        let m = mount(&img).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(m.is_err(), "{name}: mounted");
        let rep = check(&img).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!rep.is_clean(), "{name}: fsck clean");
    }
}

/// Structure-aware mutation: DAXFS_HOSTILE_ITERS (default 300) images, each with 1–4
/// mutations of fields, bytes and whole structures and every CRC recomputed, go through
/// fsck, the mount (replay + load) and, when mounted, a clean unmount and fsck again, and
/// a mount running a workload (`hostile::exercise`). Nothing panics; fsck clean implies
/// the mount accepts, and what the mount accepts fsck finds clean after its unmount;
/// and most inputs get past the checksums to `load`.
#[test]
fn checksummed_hostile_images_never_panic_fsck_or_the_mount() {
    let base = Base::populated();
    let iters: u64 = std::env::var("DAXFS_HOSTILE_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut rng = Rng::splitmix64(common::seed(0x5eed_da7f_0000_0001));
    let (mut reached, mut mounted, mut flagged) = (0u64, 0u64, 0u64);
    let mut ops = 0u64;
    let t = std::time::Instant::now();
    for it in 0..iters {
        let state = rng.state();
        let img = hostile::hostile_image(&base, &mut rng);
        let ctx = format!("iteration {it} (DAXFS_TEST_SEED={state:#x} replays it first)");
        reached += u64::from(hostile::reaches_load(&img));
        let before = check(&img).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        flagged += u64::from(!before.is_clean());
        // The unmount after a workload is checked for panics only: what the workload
        // did to an image the mount accepted is checked by the plain mount below.
        let _ = mount_with(&img, |fs| ops += hostile::exercise(fs))
            .unwrap_or_else(|e| panic!("{ctx}: with a workload: {e}"));
        match mount(&img).unwrap_or_else(|e| panic!("{ctx}: {e}")) {
            Ok(after) => {
                mounted += 1;
                let after = check(&after).unwrap_or_else(|e| panic!("{ctx}: after the mount: {e}"));
                assert!(
                    after.is_clean(),
                    "{ctx}: mounted an image it did not repair: before {:?}, after {:?}",
                    before.findings,
                    after.findings
                );
            }
            Err(e) => assert!(
                !before.is_clean() || hostile::refusal_by_design(&e),
                "{ctx}: fsck is clean but the mount refuses: {e}"
            ),
        }
        let _ = rng.next_u64();
    }
    println!(
        "hostile: {iters} checksummed hostile images in {:.1}s: {reached} reached load, \
         {mounted} mounted ({ops} operations on them succeeded), fsck flagged {flagged}, \
         no panic, fsck and the mount agree",
        t.elapsed().as_secs_f64()
    );
    assert!(
        reached * 2 > iters,
        "most hostile images get past the checksums ({reached} of {iters})"
    );
}

/// A crash image: the base with, on top, an open file unlinked (an orphan), a file
/// created and the log not checkpointed, as a daemon killed at that instant leaves it.
fn crash_image_with_orphan(base: &Base) -> Vec<u8> {
    let dev = Arc::new(Device::memory(&base.image).expect("memory device"));
    let fs = DaxFs::mount_device(dev.clone(), FsOptions::default()).expect("mount");
    let r = daxfs::Cred::root();
    let f = fs
        .create(daxfs::ROOT, b"orphan", 0o644, libc::O_RDWR, &r)
        .expect("create")
        .ino;
    fs.write(f, 0, &[1u8; 20000], false).expect("write");
    fs.unlink(daxfs::ROOT, b"orphan").expect("unlink");
    common::mkfile(&fs, daxfs::ROOT, b"new", b"data");
    let mut img = vec![0u8; base.image.len()];
    dev.read(0, &mut img);
    // The "killed" daemon never shuts down: nothing more reaches the copy taken above.
    drop(fs);
    img
}

/// `prepare` checks an image (replay, load) without writing to it, and a filesystem
/// dropped before `go_live` writes nothing either: a mount that fails before it is live
/// (the daemon's mount(2) refused) leaves the image byte-identical, a clean image as
/// well as a crash image with an orphan to reclaim and a log to replay (whose records are
/// already home). `go_live` then does the writes (the orphan is reclaimed). The old
/// mount changed 2056 bytes of a clean image when mount(2) then failed.
#[test]
fn a_mount_that_never_goes_live_leaves_the_image_byte_identical() {
    let base = Base::populated();
    let crash = crash_image_with_orphan(&base);
    for (name, img) in [("clean image", &base.image), ("crash image", &crash)] {
        for read_only in [false, true] {
            let dev = Arc::new(Device::memory(img).expect("memory device"));
            let opts = FsOptions {
                read_only,
                ..FsOptions::default()
            };
            let fs = DaxFs::prepare_device(dev.clone(), opts).expect("prepare");
            drop(fs);
            let mut after = vec![0u8; img.len()];
            dev.read(0, &mut after);
            let changed = after.iter().zip(img.iter()).filter(|(a, b)| a != b).count();
            assert_eq!(changed, 0, "{name} (read_only {read_only}): bytes changed");
        }
    }
    let dev = Arc::new(Device::memory(&crash).expect("memory device"));
    let fs = DaxFs::prepare_device(dev.clone(), FsOptions::default()).expect("prepare");
    let free_before = fs.statfs().bfree;
    fs.go_live().expect("go live");
    assert!(
        fs.statfs().bfree > free_before,
        "going live reclaims the orphan's blocks"
    );
    fs.go_live().expect("a second go_live does nothing");
    drop(fs);
    let mut after = vec![0u8; crash.len()];
    dev.read(0, &mut after);
    let rep = check(&after).expect("fsck");
    assert!(rep.is_clean(), "{:?}", rep.findings);
}

/// A committed, well-checksummed journal transaction whose record ends beyond the end of
/// the device is not replayed (the old replay wrote past the device and panicked the
/// mount); fsck and the mount report or refuse without a panic.
#[test]
fn journal_record_beyond_the_device_end_is_not_replayed() {
    use daxfs_journal::{Journal, Transaction};
    use daxfs_pmem::MemMedia;
    let base = Base::populated();
    let size = base.image.len();
    let js = base.sb.journal_start * BLOCK_SIZE;
    let jl = base.sb.journal_blocks * BLOCK_SIZE;
    for (off, len) in [
        (size as u64, 64usize),
        (size as u64 - 32, 64),
        (u64::MAX - 8, 8),
    ] {
        // Committed on a larger media, which accepts the record; only the journal region
        // is copied into the image.
        let mut bigger = base.image.clone();
        bigger.resize(size + 8192, 0);
        let m = Arc::new(MemMedia::from_bytes(bigger));
        let (mut j, _) = Journal::open(m.clone(), js, jl).expect("open");
        let mut t = Transaction::new();
        t.write(BLOCK_SIZE + 600, &[1; 8]);
        t.write(off, &vec![0xa5; len]);
        let _ = j.commit(&t);
        drop(j);
        let mut img = base.image.clone();
        let r = js as usize..(js + jl) as usize;
        img[r.clone()].copy_from_slice(&m.volatile_image()[r]);
        check(&img).unwrap_or_else(|e| panic!("record at {off}: {e}"));
        let mounted = mount(&img).unwrap_or_else(|e| panic!("record at {off}: {e}"));
        if let Ok(after) = mounted {
            assert_eq!(
                after[BLOCK_SIZE as usize + 600],
                0,
                "the transaction holding the bad record was not replayed"
            );
        }
    }
}

/// An inode whose block count (statistics, st_blocks) is wrong on the media — here near
/// 2^64 — or whose extent count is wrong, is refused by the mount as fsck flags it (a
/// wrong count is also what an older metadata state replayed over a newer one leaves):
/// the old mount kept the value, stat's multiplication overflowed (found by the fuzz
/// target; a panic in debug builds), and fsck flagged the image after every mount.
/// `fsck -y` corrects the count and the image then mounts with the real count.
#[test]
fn wrong_inode_block_and_extent_counts_are_refused_by_the_mount_and_fixed_by_fsck() {
    let base = Base::populated();
    let root = hostile::map_structures(&base.image, &base.sb)
        .into_iter()
        .find(|s| s.kind == hostile::Kind::Inode && s.off == base.sb.inode_offset(1) as usize)
        .expect("root inode");
    let right = u64::from_le_bytes(
        base.image[root.off + 32..root.off + 40]
            .try_into()
            .expect("8"),
    );
    // The block count, then the extent count (both checked against what the inode owns).
    for (at, bad) in [
        (32..40, u64::MAX.to_le_bytes().to_vec()),
        (120..124, 377u32.to_le_bytes().to_vec()),
    ] {
        let mut img = base.image.clone();
        img[root.off + at.start..root.off + at.end].copy_from_slice(&bad);
        hostile::seal(&mut img, &root);
        assert!(!check(&img).expect("fsck").is_clean(), "fsck flags it");
        let msg = mount(&img)
            .unwrap_or_else(|e| panic!("{e}"))
            .expect_err("the mount refuses")
            .to_string();
        assert!(msg.contains("count is"), "{msg}");
        let fixed = repair(&img);
        let after = mount_with(&fixed, |fs| {
            let a = fs.getattr(daxfs::ROOT).expect("getattr");
            assert_eq!(a.blocks, right * (BLOCK_SIZE / 512));
        })
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("mounts after fsck -y");
        let rep = check(&after).expect("fsck");
        assert!(rep.is_clean(), "{:?}", rep.findings);
    }
}

/// A root directory whose parent field names another inode (its ".." would lead out of
/// the filesystem) is refused by the mount, as fsck flags it. The old mount accepted it
/// (found by the fuzz target: fsck still flagged the image after the mount).
#[test]
fn a_root_directory_whose_parent_is_not_itself_is_refused() {
    let base = Base::populated();
    for parent in [0, 2, 1 << 63] {
        let mut img = base.image.clone();
        let root = hostile::map_structures(&img, &base.sb)
            .into_iter()
            .find(|s| s.kind == hostile::Kind::Inode && s.off == base.sb.inode_offset(1) as usize)
            .expect("root inode");
        img[root.off + 96..root.off + 104].copy_from_slice(&u64::to_le_bytes(parent));
        hostile::seal(&mut img, &root);
        let before = check(&img).expect("fsck");
        assert!(!before.is_clean(), "parent {parent}: fsck clean");
        let r = mount(&img).unwrap_or_else(|e| panic!("{e}"));
        let msg = r.expect_err("the mount refuses").to_string();
        assert!(msg.contains("root directory"), "{msg}");
    }
}

/// A superblock whose mount count is 2^64-1 (statistics, valid CRC) mounts: the count
/// wraps instead of overflowing (a panic in debug builds before).
#[test]
fn a_mount_count_at_its_maximum_wraps() {
    let base = Base::populated();
    let mut img = base.image.clone();
    let mut sb = base.sb.clone();
    sb.mount_count = u64::MAX;
    let enc = sb.encode();
    img[..SB_SIZE].copy_from_slice(&enc);
    img[BLOCK_SIZE as usize..BLOCK_SIZE as usize + SB_SIZE].copy_from_slice(&enc);
    let after = mount(&img)
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("mounts");
    let sb = Superblock::decode(&after[..SB_SIZE], after.len() as u64).expect("superblock");
    assert_eq!(sb.mount_count, 0);
}

/// The journal counterpart: DAXFS_HOSTILE_JOURNALS (default 3000) journals with
/// committed transactions whose fields and header were set to boundary values and
/// resealed (common/hostile.rs) are opened: replay never panics, never writes outside
/// the media, and leaves a journal that opens again.
#[test]
fn checksummed_hostile_journals_never_panic_replay() {
    use daxfs_journal::Journal;
    use daxfs_pmem::MemMedia;
    let iters: u64 = std::env::var("DAXFS_HOSTILE_JOURNALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let mut rng = Rng::splitmix64(common::seed(0x0bad_5eed_0000_0002));
    let (mut opened, mut replayed) = (0u64, 0u64);
    for it in 0..iters {
        let img = hostile::hostile_journal(&mut rng);
        let m = Arc::new(MemMedia::from_bytes(img));
        let r = catch_unwind(AssertUnwindSafe(|| {
            let Ok((_, report)) = Journal::open(m.clone(), hostile::J_START, hostile::J_LEN) else {
                return None;
            };
            Journal::open(m.clone(), hostile::J_START, hostile::J_LEN)
                .expect("reopen after replay");
            Some(report.transactions_replayed)
        }))
        .unwrap_or_else(|p| panic!("iteration {it}: replay panicked: {}", panic_text(p)));
        if let Some(n) = r {
            opened += 1;
            replayed += n;
        }
        assert_eq!(
            m.out_of_range_count(),
            0,
            "iteration {it}: outside the media"
        );
    }
    println!(
        "hostile journals: {iters} opened {opened}, {replayed} transactions replayed, no panic"
    );
    // A header whose generation or sequence is at 2^63 or beyond is refused (it could
    // only wrap), and the generator picks such boundary values often: a third is enough
    // to show that the checks behind the header are reached.
    assert!(
        opened * 3 > iters,
        "a good share of journals get past the header checks"
    );
}

/// A file whose size is beyond the maximum file size (2^44; here near 2^64, valid CRC)
/// is refused by the mount and flagged by fsck. The old mount accepted it and a read
/// near its end overflowed computing `offset + len` (found by the stable hostile run).
#[test]
fn a_file_size_beyond_the_maximum_is_refused() {
    let base = Base::populated();
    let structures = hostile::map_structures(&base.image, &base.sb);
    // Inode 3 is /d/a, a regular file of 10000 bytes.
    let slot = structures
        .iter()
        .find(|s| s.kind == hostile::Kind::Inode && s.off == base.sb.inode_offset(3) as usize)
        .expect("inode 3");
    for size in [u64::MAX - 50, (1 << 44) + 1] {
        let mut img = base.image.clone();
        assert_eq!(img[slot.off + 24..slot.off + 32], 10000u64.to_le_bytes());
        img[slot.off + 24..slot.off + 32].copy_from_slice(&size.to_le_bytes());
        hostile::seal(&mut img, slot);
        let rep = check(&img).expect("fsck");
        assert!(!rep.is_clean(), "size {size}: fsck clean");
        let msg = mount(&img)
            .unwrap_or_else(|e| panic!("{e}"))
            .expect_err("refused")
            .to_string();
        assert!(msg.contains("maximum file size"), "{msg}");
    }
}

/// A symlink without its target block, or whose target length is 0 or a block or more
/// (valid CRCs), is refused by the mount as fsck reports it; the old mount accepted them
/// (found by the stable hostile run, seed 44) and readlink failed later.
#[test]
fn a_symlink_without_a_valid_target_is_refused() {
    let base = Base::populated();
    let structures = hostile::map_structures(&base.image, &base.sb);
    // Inode 4 is /s, a symlink to "d/a".
    let slot = *structures
        .iter()
        .find(|s| s.kind == hostile::Kind::Inode && s.off == base.sb.inode_offset(4) as usize)
        .expect("inode 4");
    let edits: [(&str, SlotEdit); 3] = [
        // Counts as well, which the mount checks first.
        ("no target block", |b| {
            b[128..128 + 5 * 24].fill(0);
            b[32..40].fill(0);
            b[120..124].fill(0);
        }),
        ("length 0", |b| b[24..32].fill(0)),
        ("length 4096", |b| {
            b[24..32].copy_from_slice(&4096u64.to_le_bytes())
        }),
    ];
    for (name, edit) in edits {
        let mut img = base.image.clone();
        assert_eq!(img[slot.off + 24..slot.off + 32], 3u64.to_le_bytes());
        edit(&mut img[slot.off..slot.off + slot.len]);
        hostile::seal(&mut img, &slot);
        let rep = check(&img).expect("fsck");
        assert!(!rep.is_clean(), "{name}: fsck clean");
        let msg = mount(&img)
            .unwrap_or_else(|e| panic!("{e}"))
            .expect_err("refused")
            .to_string();
        assert!(msg.contains("symlink 4"), "{name}: {msg}");
    }
}
