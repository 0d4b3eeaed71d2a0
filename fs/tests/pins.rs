//! Long-term pins, pinned mappings and break_layouts through the library API: what a pin
//! protects, what waits for it, what gives up, and that the counters balance afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use common::*;
use daxfs::{DaxFs, Errno, FsOptions, ROOT};
use daxfs_testkit as common;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const KB: u64 = 1 << 10;
const MB: u64 = 1 << 20;

fn mount_with_timeout(d: &TestDev, timeout: Duration) -> DaxFs {
    let o = FsOptions {
        layout_timeout: timeout,
        ..FsOptions::default()
    };
    DaxFs::mount(&d.path, o).unwrap()
}

/// Waits (bounded) until some operation is sleeping on a pinned block.
fn wait_until_waiting(fs: &DaxFs, waits_before: u64) {
    let until = Instant::now() + Duration::from_secs(10);
    while fs.stats().waits == waits_before {
        assert!(Instant::now() < until, "nothing started waiting on the pin");
        thread::sleep(Duration::from_millis(2));
    }
}

fn assert_balanced(fs: &DaxFs) {
    let s = fs.stats();
    assert!(s.balanced(), "counters do not balance: {s:?}");
}

#[test]
fn a_pinned_mapping_reads_the_file_bytes_without_copying() {
    let d = TestDev::new(64 * MB);
    let fs = d.mount();
    let data = pattern(256 * KB as usize, 1);
    let ino = mkfile(&fs, ROOT, b"f", &data);
    let m = fs.map_pinned(ino, 4096, 64 * KB).unwrap();
    assert_eq!(m.len(), 64 * KB as usize);
    let joined: Vec<u8> = m.to_vec();
    assert_eq!(joined, &data[4096..4096 + 64 * KB as usize]);
    // Zero copy: the view is the device itself, so a later write shows through it.
    let view = m.segments()[0];
    fs.write(ino, 4096, b"NEW", false).unwrap();
    assert_eq!(
        view.subslice(0, 3).map(|s| s.to_vec()),
        Some(b"NEW".to_vec())
    );
    drop(m);
    assert_balanced(&fs);
}

#[test]
fn stores_through_a_mapping_are_file_data_and_survive_remount() {
    let d = TestDev::new(64 * MB);
    let ino;
    {
        let fs = d.mount();
        ino = mkfile(&fs, ROOT, b"f", &vec![0u8; 8192]);
        let mut m = fs.map_pinned(ino, 0, 8192).unwrap();
        let s = m.as_mut_slice().expect("one extent: contiguous");
        s.write_at(100, b"hello").unwrap();
        m.persist();
        drop(m);
        let mut buf = [0u8; 5];
        fs.read(ino, 100, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
    }
    let fs = d.mount();
    let mut buf = [0u8; 5];
    fs.read(ino, 100, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
}

#[test]
fn pinning_a_hole_is_enxio_and_past_eof_or_empty_is_einval() {
    let d = TestDev::new(64 * MB);
    let fs = d.mount();
    let a = fs
        .create(ROOT, b"sparse", 0o644, libc::O_RDWR, &root())
        .unwrap();
    fs.write(a.ino, 64 * KB, b"x", false).unwrap();
    assert_eq!(fs.map_pinned(a.ino, 0, 4096).err(), Some(Errno::ENXIO));
    assert_eq!(
        fs.pin_range(a.ino, 64 * KB, 4096).err(),
        Some(Errno::EINVAL),
        "past EOF"
    );
    assert_eq!(fs.pin_range(a.ino, 64 * KB, 0).err(), Some(Errno::EINVAL));
    assert_eq!(fs.pin_range(ROOT, 0, 1).err(), Some(Errno::EISDIR));
    // A failed pin holds nothing.
    assert_eq!(fs.stats().pins_taken, 0);
    fs.release(a.ino).unwrap();
    assert_balanced(&fs);
}

#[test]
fn truncate_waits_until_the_mapping_is_dropped_then_frees_the_blocks() {
    let d = TestDev::new(64 * MB);
    let fs = mount_with_timeout(&d, Duration::from_secs(30));
    let ino = mkfile(&fs, ROOT, b"f", &pattern(MB as usize, 2));
    let free0 = fs.statfs().bfree;
    let m = fs.map_pinned(ino, 0, 64 * KB).unwrap();
    let waits0 = fs.stats().waits;
    let hold = Duration::from_millis(300);
    let (returned, dropped_at) = thread::scope(|s| {
        let t = s.spawn(|| {
            let c = daxfs::SetAttr {
                size: Some(0),
                ..Default::default()
            };
            let r = fs.setattr(ino, &root(), &c);
            (r.map(|a| a.size), Instant::now())
        });
        wait_until_waiting(&fs, waits0);
        thread::sleep(hold);
        assert!(
            !t.is_finished(),
            "truncate returned while the mapping lived"
        );
        // The pinned bytes are still the file's while the truncate waits.
        assert_eq!(m.to_vec(), &pattern(MB as usize, 2)[..64 * KB as usize]);
        let dropped_at = Instant::now();
        drop(m);
        (t.join().unwrap(), dropped_at)
    });
    assert_eq!(returned.0, Ok(0));
    assert!(returned.1 >= dropped_at);
    assert!(fs.statfs().bfree > free0, "the blocks were freed");
    let s = fs.stats();
    assert_eq!((s.layout_breaks, s.timeouts), (1, 0));
    assert_balanced(&fs);
}

#[test]
fn a_truncate_that_outwaits_layout_timeout_is_ebusy_and_changes_nothing() {
    let d = TestDev::new(64 * MB);
    let fs = mount_with_timeout(&d, Duration::from_millis(200));
    let data = pattern(MB as usize, 3);
    let ino = mkfile(&fs, ROOT, b"f", &data);
    let m = fs.map_pinned(ino, 512 * KB, 4096).unwrap();
    let start = Instant::now();
    let c = daxfs::SetAttr {
        size: Some(0),
        ..Default::default()
    };
    assert_eq!(fs.setattr(ino, &root(), &c).err(), Some(Errno::EBUSY));
    assert!(start.elapsed() >= Duration::from_millis(200));
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    assert_eq!(
        fs.fallocate(ino, 0, MB, punch).err(),
        Some(Errno::EBUSY),
        "punch over the pin"
    );
    // Outside the pin, punching works at once.
    fs.fallocate(ino, 0, 64 * KB, punch).unwrap();
    let mut want = data.clone();
    want[..64 * KB as usize].fill(0);
    assert_eq!(read_all(&fs, ino), want, "nothing else changed");
    assert_eq!(fs.stats().timeouts, 2);
    drop(m);
    fs.setattr(ino, &root(), &c).unwrap();
    assert_balanced(&fs);
}

#[test]
fn every_block_taking_fallocate_mode_waits_for_the_pin() {
    let d = TestDev::new(64 * MB);
    let fs = mount_with_timeout(&d, Duration::from_millis(100));
    let ino = mkfile(&fs, ROOT, b"f", &pattern(MB as usize, 4));
    let m = fs.map_pinned(ino, 256 * KB, 4096).unwrap();
    let modes = [
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        libc::FALLOC_FL_ZERO_RANGE,
        libc::FALLOC_FL_COLLAPSE_RANGE,
        libc::FALLOC_FL_INSERT_RANGE,
    ];
    for mode in modes {
        assert_eq!(
            fs.fallocate(ino, 128 * KB, 256 * KB, mode).err(),
            Some(Errno::EBUSY),
            "mode {mode:#x}"
        );
    }
    assert_eq!(read_all(&fs, ino), pattern(MB as usize, 4));
    drop(m);
    assert_balanced(&fs);
}

#[test]
fn unlinking_a_mapped_file_keeps_its_blocks_until_the_mapping_drops() {
    let d = TestDev::new(64 * MB);
    let fs = d.mount();
    let data = pattern(128 * KB as usize, 5);
    let ino = mkfile(&fs, ROOT, b"f", &data);
    let free0 = fs.statfs().bfree;
    let m = fs.map_pinned(ino, 0, 128 * KB).unwrap();
    fs.unlink(ROOT, b"f").unwrap();
    assert_eq!(fs.statfs().bfree, free0, "the orphan keeps its blocks");
    // Other files cannot get those blocks meanwhile.
    for i in 0..8 {
        mkfile(
            &fs,
            ROOT,
            format!("g{i}").as_bytes(),
            &pattern(MB as usize, 9),
        );
    }
    assert_eq!(m.to_vec(), data);
    drop(m);
    assert!(fs.getattr(ino).is_err(), "freed with its last mapping");
    assert_balanced(&fs);
}

#[test]
fn a_range_pin_holds_an_unlinked_file_until_it_is_unpinned() {
    let d = TestDev::new(64 * MB);
    let fs = d.mount();
    let ino = mkfile(&fs, ROOT, b"f", &pattern(64 * KB as usize, 8));
    let pin = fs.pin_range(ino, 0, 64 * KB).unwrap();
    assert_eq!(fs.long_term_pins(ino), 1);
    fs.unlink(ROOT, b"f").unwrap();
    assert!(fs.getattr(ino).is_ok(), "an orphan while pinned");
    fs.unpin_range(pin);
    assert!(fs.getattr(ino).is_err(), "freed by the unpin");
    assert_balanced(&fs);
}

#[test]
fn a_mapping_sees_the_lease_break_of_a_waiting_truncate() {
    let d = TestDev::new(64 * MB);
    let fs = mount_with_timeout(&d, Duration::from_millis(100));
    let ino = mkfile(&fs, ROOT, b"f", &pattern(64 * KB as usize, 6));
    let m = fs.map_pinned(ino, 0, 4096).unwrap();
    assert!(!m.layout_broken());
    let c = daxfs::SetAttr {
        size: Some(0),
        ..Default::default()
    };
    assert_eq!(fs.setattr(ino, &root(), &c).err(), Some(Errno::EBUSY));
    assert!(m.layout_broken());
    assert!(fs.stats().lease_breaks >= 1);
}

#[test]
fn in_flight_reads_and_writes_never_make_truncate_wait() {
    let d = TestDev::new(64 * MB);
    let fs = mount_with_timeout(&d, Duration::from_secs(30));
    let ino = mkfile(&fs, ROOT, b"f", &pattern(MB as usize, 7));
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            let mut buf = vec![0u8; 64 * KB as usize];
            while !stop.load(Ordering::Relaxed) {
                let _ = fs.read(ino, 0, &mut buf);
                let _ = fs.write(ino, 0, &buf[..4096], false);
            }
        });
        for i in 0..200u64 {
            let c = daxfs::SetAttr {
                size: Some((i % 4) * 256 * KB),
                ..Default::default()
            };
            fs.setattr(ino, &root(), &c).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    // Copies pin under the inode lock, which break_layouts holds: never seen busy.
    assert_eq!(fs.stats().layout_breaks, 0);
    assert_balanced(&fs);
}

/// The word every 8 bytes of file `id` holds at byte offset `off`: never 0, unique per
/// (file, offset), so a read can tell its own bytes from another file's or stale ones.
fn tag(id: u64, off: u64) -> u64 {
    (id << 40) | (off / 8) | (1 << 63)
}

fn fill_tags(id: u64, off: u64, buf: &mut [u8]) {
    for (i, w) in buf.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&tag(id, off + 8 * i as u64).to_le_bytes());
    }
}

/// A read of file `id` at `off` may only hold zeros (holes, truncated parts) or the
/// file's own tags.
fn check_tags(id: u64, off: u64, buf: &[u8]) {
    for (i, w) in buf.chunks_exact(8).enumerate() {
        let v = u64::from_le_bytes(w.try_into().unwrap());
        let at = off + 8 * i as u64;
        assert!(
            v == 0 || v == tag(id, at),
            "file {id} offset {at}: foreign or stale word {v:#x}"
        );
    }
}

#[test]
fn stress_pins_and_layout_changes_never_expose_foreign_bytes_and_balance() {
    const FILES: u64 = 6;
    const SPAN: u64 = 512 * KB;
    let d = TestDev::new(96 * MB);
    let fs = Arc::new(mount_with_timeout(&d, Duration::from_secs(20)));
    // Slot i holds file "f{i}" whose id is in `ids[i]` (a new id per re-creation).
    let ids: Arc<Vec<AtomicU64>> = Arc::new((0..FILES).map(|_| AtomicU64::new(0)).collect());
    let next_id = Arc::new(AtomicU64::new(1));
    let slot_lock: Arc<Vec<std::sync::RwLock<()>>> =
        Arc::new((0..FILES).map(|_| std::sync::RwLock::new(())).collect());
    for i in 0..FILES {
        let id = next_id.fetch_add(1, Ordering::SeqCst);
        let mut buf = vec![0u8; SPAN as usize];
        fill_tags(id, 0, &mut buf);
        mkfile(&fs, ROOT, format!("f{i}").as_bytes(), &buf);
        ids[i as usize].store(id, Ordering::SeqCst);
    }
    let lookup = |fs: &DaxFs, i: u64| fs.lookup(ROOT, format!("f{i}").as_bytes()).map(|a| a.ino);
    let deadline = Instant::now() + Duration::from_secs(4);
    let barrier = Arc::new(Barrier::new(7));
    let mut handles = Vec::new();
    for t in 0..7u64 {
        let (fs, ids, next_id, slot_lock, barrier) = (
            fs.clone(),
            ids.clone(),
            next_id.clone(),
            slot_lock.clone(),
            barrier.clone(),
        );
        handles.push(thread::spawn(move || {
            let mut rng = common::Rng::new(0x9E37_79B9_7F4A_7C15u64 ^ (t + 1));
            let mut rnd = move |n: u64| rng.below(n);
            barrier.wait();
            let mut ops = 0u64;
            while Instant::now() < deadline {
                ops += 1;
                let i = rnd(FILES);
                let off = rnd(SPAN / 4096) * 4096;
                let len = (1 + rnd(16)) * 4096;
                match t {
                    // Readers and pinned-mapping holders: only own bytes or zeros.
                    0 | 1 => {
                        let _g = slot_lock[i as usize].read().unwrap();
                        let id = ids[i as usize].load(Ordering::SeqCst);
                        let Ok(ino) = lookup(&fs, i) else { continue };
                        if t == 0 {
                            let mut buf = vec![0u8; len as usize];
                            if let Ok(n) = fs.read(ino, off, &mut buf) {
                                check_tags(id, off, &buf[..n]);
                            }
                        } else if let Ok(m) = fs.map_pinned(ino, off, len) {
                            thread::sleep(Duration::from_micros(rnd(300)));
                            let mut at = off;
                            for seg in m.segments() {
                                check_tags(id, at, &seg.to_vec());
                                at += seg.len() as u64;
                            }
                        }
                    }
                    // Writers of each file's own tags.
                    2 | 3 => {
                        let _g = slot_lock[i as usize].read().unwrap();
                        let id = ids[i as usize].load(Ordering::SeqCst);
                        let Ok(ino) = lookup(&fs, i) else { continue };
                        let mut buf = vec![0u8; len as usize];
                        fill_tags(id, off, &mut buf);
                        let _ = fs.write(ino, off, &buf, false);
                    }
                    // Truncate / punch.
                    4 | 5 => {
                        let Ok(ino) = lookup(&fs, i) else { continue };
                        let r = if t == 4 {
                            let c = daxfs::SetAttr {
                                size: Some(rnd(SPAN / 4096) * 4096),
                                ..Default::default()
                            };
                            fs.setattr(ino, &root(), &c).map(|_| ())
                        } else {
                            let m = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                            fs.fallocate(ino, off, len, m)
                        };
                        assert!(
                            matches!(r, Ok(()) | Err(Errno::ENOENT)),
                            "layout change failed: {r:?}"
                        );
                    }
                    // Unlink and re-create under a new id.
                    _ => {
                        let _g = slot_lock[i as usize].write().unwrap();
                        let name = format!("f{i}");
                        fs.unlink(ROOT, name.as_bytes()).unwrap();
                        let id = next_id.fetch_add(1, Ordering::SeqCst);
                        let mut buf = vec![0u8; SPAN as usize / 2];
                        fill_tags(id, 0, &mut buf);
                        mkfile(&fs, ROOT, name.as_bytes(), &buf);
                        ids[i as usize].store(id, Ordering::SeqCst);
                    }
                }
            }
            ops
        }));
    }
    let ops: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(ops > 100, "the stress ran ({ops} operations)");
    let s = fs.stats();
    eprintln!("stress: {ops} operations, {s:?}");
    assert!(s.pins_taken > 0 && s.block_pins > 0, "{s:?}");
    assert_eq!(s.timeouts, 0);
    assert_balanced(&fs);
}
