//! Cross-host block lifetimes (issue 13): blocks freed while a follower host may still
//! read them stay out of the allocator until it has applied past the free and holds
//! nothing older, or has gone silent for the host timeout. The follower is simulated
//! by claiming a host slot through daxfs_format::hosts and heartbeating it here.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use common::*;
use daxfs::{DaxFs, Errno, FsOptions, ROOT};
use daxfs_format::hosts::{HostTable, HOLDS_NOTHING};
use daxfs_format::{Superblock, BITS_PER_BITMAP_BLOCK, BLOCK_SIZE, SB_SIZE};
use daxfs_pmem::Device;
use daxfs_testkit as common;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MB: u64 = 1 << 20;

fn quick() -> FsOptions {
    FsOptions {
        heartbeat: Duration::from_millis(10),
        host_timeout: Duration::from_millis(300),
        ..FsOptions::default()
    }
}

/// A follower host: a claimed slot whose heartbeat a thread keeps moving.
struct Follower {
    dev: Arc<Device>,
    slot: usize,
    stop: Arc<AtomicBool>,
    t: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    /// Claims a slot, publishes "applied `applied`, holds nothing" and heartbeats.
    fn join(dev: Arc<Device>, applied: u64) -> Follower {
        let t = HostTable::on_device(&dev).unwrap();
        let slot = t.claim_host_slot(0xf011_0e55).unwrap();
        let h = t.host(slot).unwrap();
        h.set_applied_seq(applied).unwrap();
        h.set_held_seq(HOLDS_NOTHING).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, d) = (stop.clone(), dev.clone());
        let thread = std::thread::spawn(move || {
            let h = HostTable::on_device(&d).unwrap().host(slot).unwrap();
            while !s.load(Ordering::Relaxed) {
                h.set_heartbeat(h.heartbeat() + 1).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Follower {
            dev,
            slot,
            stop,
            t: Some(thread),
        }
    }

    fn table(&self) -> HostTable<'_> {
        HostTable::on_device(&self.dev).unwrap()
    }

    fn apply(&self, seq: u64) {
        self.table()
            .host(self.slot)
            .unwrap()
            .set_applied_seq(seq)
            .unwrap();
    }

    fn hold(&self, seq: u64) {
        self.table()
            .host(self.slot)
            .unwrap()
            .set_held_seq(seq)
            .unwrap();
    }

    /// Catches up with everything the writer committed.
    fn catch_up(&self) {
        self.apply(self.table().lease().committed_seq());
    }

    /// Stops heartbeating (the host died), keeping the slot claimed.
    fn go_silent(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.t.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.go_silent();
    }
}

/// Waits until the writer's heartbeat thread has scanned the table twice more (the
/// follower's join protocol: then the writer knows about it).
fn writer_saw(fs: &DaxFs) {
    let l = fs.writer_lease().unwrap();
    let b = l.beats();
    while l.beats() < b + 2 {
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn committed(fs: &DaxFs, f: &Follower) -> u64 {
    let _ = fs;
    f.table().lease().committed_seq()
}

/// The device block of the first byte of a (contiguous) file.
fn first_block(fs: &DaxFs, ino: u64) -> u64 {
    let m = fs.map_pinned(ino, 0, 4096).unwrap();
    m.as_slice().unwrap().device_offset().unwrap() / BLOCK_SIZE
}

/// Writes a 1 MiB file and unlinks it; returns its first block.
fn write_and_unlink(fs: &DaxFs, name: &[u8]) -> u64 {
    let f = mkfile(fs, ROOT, name, &pattern(MB as usize, 9));
    let b = first_block(fs, f);
    fs.unlink(ROOT, name).unwrap();
    b
}

/// Polls `cond` (doing `step` between tries) until it holds; fails after 20 s.
fn eventually(mut step: impl FnMut(), mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < end, "condition never became true");
        step();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Creates small files until the gate holds nothing back: allocations drain it, and
/// nothing is freed meanwhile, so nothing new is held back.
fn allocate_until_nothing_is_held_back(fs: &DaxFs) {
    let mut n = 0u32;
    eventually(
        || {
            writer_saw(fs);
            n += 1;
            mkfile(fs, ROOT, format!("probe{n}").as_bytes(), b"x");
        },
        || fs.held_back_blocks() == 0,
    );
}

#[test]
fn blocks_freed_while_a_follower_lags_are_not_reused() {
    let d = TestDev::new(32 * MB);
    let fs = DaxFs::mount(&d.path, quick()).unwrap();
    let f = Follower::join(d.other_host(true), 0);
    f.apply(committed(&fs, &f));
    writer_saw(&fs);
    let free0 = fs.statfs().bfree;
    write_and_unlink(&fs, b"gone");
    assert!(fs.held_back_blocks() >= 256, "{}", fs.held_back_blocks());
    assert!(
        fs.statfs().bfree < free0,
        "the freed blocks are not free yet"
    );
    // New allocations, over several heartbeats, never get them.
    for i in 0..5u8 {
        writer_saw(&fs);
        mkfile(&fs, ROOT, &[b'n', b'0' + i], b"x");
    }
    assert!(fs.held_back_blocks() >= 256);
}

#[test]
fn blocks_are_reused_once_the_follower_has_applied_past_the_free() {
    let d = TestDev::new(32 * MB);
    let fs = DaxFs::mount(&d.path, quick()).unwrap();
    let f = Follower::join(d.other_host(true), 0);
    f.apply(committed(&fs, &f));
    writer_saw(&fs);
    let first = write_and_unlink(&fs, b"gone");
    assert!(fs.held_back_blocks() > 0);
    f.catch_up();
    // The next heartbeat's allocation drains: the same blocks come back.
    writer_saw(&fs);
    let again = mkfile(&fs, ROOT, b"again", &pattern(MB as usize, 3));
    assert_eq!(fs.held_back_blocks(), 0);
    assert_eq!(
        first_block(&fs, again),
        first,
        "the freed blocks are allocated again"
    );
}

#[test]
fn a_read_in_progress_holds_blocks_freed_after_it_started() {
    let d = TestDev::new(32 * MB);
    let fs = DaxFs::mount(&d.path, quick()).unwrap();
    let f = Follower::join(d.other_host(true), 0);
    let start = committed(&fs, &f);
    f.apply(start);
    f.hold(start);
    writer_saw(&fs);
    write_and_unlink(&fs, b"gone");
    // Applied past the free, but a read that started before it still runs.
    f.catch_up();
    for _ in 0..3 {
        writer_saw(&fs);
        mkfile(&fs, ROOT, b"probe", b"x");
        fs.unlink(ROOT, b"probe").unwrap();
    }
    assert!(fs.held_back_blocks() >= 256);
    f.hold(HOLDS_NOTHING);
    f.catch_up();
    allocate_until_nothing_is_held_back(&fs);
}

#[test]
fn blocks_are_reused_once_a_lagging_follower_goes_silent() {
    let d = TestDev::new(32 * MB);
    let fs = DaxFs::mount(&d.path, quick()).unwrap();
    let mut f = Follower::join(d.other_host(true), 0);
    f.apply(committed(&fs, &f));
    writer_saw(&fs);
    write_and_unlink(&fs, b"gone");
    assert!(fs.held_back_blocks() > 0);
    f.go_silent();
    allocate_until_nothing_is_held_back(&fs);
}

#[test]
fn the_enospc_wait_succeeds_when_the_follower_catches_up() {
    let d = TestDev::new(32 * MB);
    let fs = DaxFs::mount(&d.path, quick()).unwrap();
    let f = Follower::join(d.other_host(true), 0);
    f.apply(committed(&fs, &f));
    writer_saw(&fs);
    // Fill the device, then free it all while the follower lags.
    let a = fs
        .create(ROOT, b"big", 0o644, libc::O_RDWR, &root())
        .unwrap();
    let data = pattern(64 * MB as usize, 1);
    let n = fs.write(a.ino, 0, &data, false).unwrap();
    fs.release(a.ino).unwrap();
    fs.unlink(ROOT, b"big").unwrap();
    let b = fs.create(ROOT, b"b", 0o644, libc::O_RDWR, &root()).unwrap();
    let token = fs.orphan_frees();
    assert_eq!(
        fs.write(b.ino, 0, &data[..n], false).unwrap_err(),
        Errno::ENOSPC
    );
    assert!(fs.orphan_free_may_come(token));
    let catch_up = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            f.catch_up();
        });
        fs.wait_for_orphan_free(token, Duration::from_secs(20))
    });
    assert!(catch_up, "the wait saw the held-back blocks come back");
    assert_eq!(fs.write(b.ino, 0, &data[..n], false).unwrap(), n);
}

#[test]
fn held_back_blocks_are_free_in_the_on_media_bitmap() {
    let d = TestDev::new(32 * MB);
    let fs = DaxFs::mount(&d.path, quick()).unwrap();
    let f = Follower::join(d.other_host(true), 0);
    f.apply(committed(&fs, &f));
    writer_saw(&fs);
    let gone = write_and_unlink(&fs, b"gone");
    // A later commit rewrites the same bitmap block: it must keep them free.
    mkfile(&fs, ROOT, b"later", &pattern(64 * 1024, 2));
    assert!(fs.held_back_blocks() > 0);
    let dev = d.other_host(true);
    let mut b = [0u8; SB_SIZE];
    dev.read(0, &mut b);
    let sb = Superblock::decode(&b, dev.size()).unwrap();
    for blk in gone..gone + 256 {
        let bit = blk - sb.data_start;
        let mut byte = [0u8];
        dev.read(
            sb.bitmap_block_offset(bit / BITS_PER_BITMAP_BLOCK) + (bit % BITS_PER_BITMAP_BLOCK) / 8,
            &mut byte,
        );
        assert_eq!(byte[0] & (1 << (bit % 8)), 0, "block {blk} marked used");
    }
    // And a crash now leaves them free: the image mounts with them counted free.
    let free_live = fs.statfs().bfree + fs.held_back_blocks();
    let copy = d.crash_image();
    let fs2 = DaxFs::mount(&copy.path, quick()).unwrap();
    assert_eq!(fs2.statfs().bfree, free_live);
}

#[test]
fn without_followers_frees_go_straight_back() {
    let d = TestDev::new(32 * MB);
    let fs = DaxFs::mount(&d.path, quick()).unwrap();
    // The root directory's first block, once.
    mkfile(&fs, ROOT, b"keep", b"");
    let free0 = fs.statfs().bfree;
    write_and_unlink(&fs, b"gone");
    assert_eq!(fs.held_back_blocks(), 0);
    assert_eq!(fs.statfs().bfree, free0);
}
