//! Running out of space and inodes: the errno, short writes, and a filesystem that
//! stays consistent and usable afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use common::*;
use daxfs::{Errno, SetAttr, ROOT};
use daxfs_testkit as common;

const MB: u64 = 1 << 20;

fn census_ok(fs: &daxfs::DaxFs) {
    assert_eq!(fs.ref_table().stats().violations, 0);
    let c = fs.ref_table().census();
    assert_eq!(c.pinned, 0);
    let s = fs.statfs();
    assert_eq!(c.free, s.bfree, "refcount census agrees with the allocator");
}

#[test]
fn big_write_on_a_full_device_is_short_then_enospc() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    mkfile(&fs, ROOT, b"keep", b"");
    let free0 = fs.statfs().bfree;
    let a = fs
        .create(ROOT, b"big", 0o644, libc::O_RDWR, &root())
        .unwrap();
    let data = pattern(64 * MB as usize, 1);
    let n = fs.write(a.ino, 0, &data, false).unwrap();
    assert!(n > 0 && n < data.len(), "short write, got {n}");
    assert_eq!(n % 4096, 0);
    assert_eq!(fs.getattr(a.ino).unwrap().size, n as u64);
    assert_eq!(
        fs.write(a.ino, n as u64, b"more", false).unwrap_err(),
        Errno::ENOSPC
    );
    assert_eq!(read_all(&fs, a.ino), &data[..n]);
    census_ok(&fs);
    fs.release(a.ino).unwrap();
    fs.unlink(ROOT, b"big").unwrap();
    assert_eq!(fs.statfs().bfree, free0);
    census_ok(&fs);
}

#[test]
fn filesystem_is_usable_after_enospc() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    mkfile(&fs, ROOT, b"keep", b"");
    let free0 = fs.statfs().bfree;
    let a = fs
        .create(ROOT, b"big", 0o644, libc::O_RDWR, &root())
        .unwrap();
    let data = pattern(64 * MB as usize, 2);
    fs.write(a.ino, 0, &data, false).unwrap();
    fs.release(a.ino).unwrap();
    fs.unlink(ROOT, b"big").unwrap();
    let f = mkfile(&fs, ROOT, b"after", &data[..MB as usize]);
    assert_eq!(read_all(&fs, f), &data[..MB as usize]);
    fs.unlink(ROOT, b"after").unwrap();
    assert_eq!(fs.statfs().bfree, free0);
    drop(fs);
    let fs = d.mount();
    assert_eq!(fs.statfs().bfree, free0);
    census_ok(&fs);
}

#[test]
fn full_device_survives_remount() {
    let d = TestDev::new(32 * MB);
    let (n, free) = {
        let fs = d.mount();
        let a = fs
            .create(ROOT, b"big", 0o644, libc::O_RDWR, &root())
            .unwrap();
        let n = fs
            .write(a.ino, 0, &pattern(64 * MB as usize, 3), false)
            .unwrap();
        fs.release(a.ino).unwrap();
        (n, fs.statfs().bfree)
    };
    let fs = d.mount();
    let a = fs.lookup(ROOT, b"big").unwrap();
    assert_eq!(a.size, n as u64);
    assert_eq!(fs.statfs().bfree, free);
    assert_eq!(read_all(&fs, a.ino), &pattern(64 * MB as usize, 3)[..n]);
    census_ok(&fs);
}

#[test]
fn many_files_until_enospc_then_delete_all_returns_every_block() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap().ino;
    let free0 = fs.statfs().bfree;
    let chunk = pattern(300_000, 4);
    let mut made = Vec::new();
    for i in 0.. {
        let name = format!("f{i}");
        let a = match fs.create(dir, name.as_bytes(), 0o644, libc::O_RDWR, &root()) {
            Ok(a) => a,
            Err(e) => {
                assert_eq!(e, Errno::ENOSPC);
                break;
            }
        };
        let r = fs.write(a.ino, 0, &chunk, false);
        fs.release(a.ino).unwrap();
        made.push(name);
        match r {
            Ok(n) if n == chunk.len() => {}
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e, Errno::ENOSPC);
                break;
            }
        }
    }
    assert!(made.len() > 50);
    census_ok(&fs);
    for n in &made {
        fs.unlink(dir, n.as_bytes()).unwrap();
    }
    fs.rmdir(ROOT, b"d").unwrap();
    // The directory's blocks went with it; only the root's block remains.
    assert_eq!(fs.statfs().bfree, free0);
    census_ok(&fs);
}

#[test]
fn fragmented_full_device_short_write_keeps_metadata_consistent() {
    // Fill with small files, free every other one, then write one big file: it needs
    // many extents (extent blocks) and runs out of space mid-way.
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap().ino;
    let mut i = 0;
    loop {
        let name = format!("f{i}");
        let a = match fs.create(dir, name.as_bytes(), 0o644, libc::O_RDWR, &root()) {
            Ok(a) => a,
            Err(_) => break,
        };
        let r = fs.write(a.ino, 0, &[1u8; 4096], false);
        fs.release(a.ino).unwrap();
        if r.is_err() {
            fs.unlink(dir, name.as_bytes()).unwrap();
            break;
        }
        i += 1;
    }
    for j in (0..i).step_by(2) {
        fs.unlink(dir, format!("f{j}").as_bytes()).unwrap();
    }
    census_ok(&fs);
    let a = fs
        .create(ROOT, b"big", 0o644, libc::O_RDWR, &root())
        .unwrap();
    let data = pattern(32 * MB as usize, 5);
    let mut off = 0usize;
    loop {
        match fs.write(a.ino, off as u64, &data[off..], false) {
            Ok(n) => off += n,
            Err(e) => {
                assert_eq!(e, Errno::ENOSPC);
                break;
            }
        }
    }
    assert!(off > 0);
    assert_eq!(read_all(&fs, a.ino), &data[..off]);
    census_ok(&fs);
    fs.release(a.ino).unwrap();
    drop(fs);
    let fs = d.mount();
    let big = fs.lookup(ROOT, b"big").unwrap().ino;
    assert_eq!(read_all(&fs, big), &data[..off]);
    census_ok(&fs);
    let c = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    fs.setattr(big, &root(), &c).unwrap();
    census_ok(&fs);
}

#[test]
fn inode_exhaustion_is_enospc_and_recovers() {
    let d = TestDev::with_params(32 * MB, 64);
    let fs = d.mount();
    let total = fs.statfs().ffree;
    let mut n = 0;
    let err = loop {
        match fs.mknod(
            ROOT,
            format!("n{n}").as_bytes(),
            libc::S_IFREG | 0o644,
            0,
            &root(),
        ) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, Errno::ENOSPC);
    assert_eq!(n, total);
    assert_eq!(fs.statfs().ffree, 0);
    assert_eq!(
        fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap_err(),
        Errno::ENOSPC
    );
    assert_eq!(
        fs.symlink(ROOT, b"l", b"t", &root()).unwrap_err(),
        Errno::ENOSPC
    );
    assert_eq!(fs.lookup(ROOT, b"d").unwrap_err(), Errno::ENOENT);
    fs.unlink(ROOT, b"n0").unwrap();
    fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
    drop(fs);
    let fs = d.mount();
    assert_eq!(fs.statfs().ffree, 0);
    assert_eq!(list(&fs, ROOT).len() as u64, total);
}

/// Fills the device completely (a write loop until ENOSPC) with file `name`.
fn fill(fs: &daxfs::DaxFs, name: &[u8]) -> u64 {
    let a = fs.create(ROOT, name, 0o644, libc::O_RDWR, &root()).unwrap();
    let chunk = vec![0xeeu8; 8 << 20];
    let mut off = 0u64;
    while let Ok(n) = fs.write(a.ino, off, &chunk, false) {
        off += n as u64;
    }
    fs.release(a.ino).unwrap();
    assert_eq!(fs.statfs().bfree, 0);
    a.ino
}

#[test]
fn enospc_when_a_new_extent_block_took_the_last_block_leaves_no_trace() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    // Five separate extents: the inode's inline slots are full.
    let frag = mkfile(&fs, ROOT, b"frag", b"");
    for i in 0..5u64 {
        fs.write(frag, i * 2 * 4096, &[i as u8 + 1; 4096], false)
            .unwrap();
    }
    mkfile(&fs, ROOT, b"one", &[1u8; 4096]);
    fill(&fs, b"big");
    fs.unlink(ROOT, b"one").unwrap();
    assert_eq!(fs.statfs().bfree, 1);
    // A sixth extent needs an extent block (the last free block) and a data block.
    assert_eq!(
        fs.write(frag, 40 * 4096, b"x", false).unwrap_err(),
        Errno::ENOSPC
    );
    census_ok(&fs);
    assert_eq!(fs.getattr(frag).unwrap().blocks, 5 * 8);
    // With room again, the write works and everything is consistent on media.
    let c = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    let big = fs.lookup(ROOT, b"big").unwrap().ino;
    fs.setattr(big, &root(), &c).unwrap();
    fs.write(frag, 40 * 4096, b"x", false).unwrap();
    let mut want = vec![0u8; 40 * 4096 + 1];
    for i in 0..5usize {
        want[i * 8192..i * 8192 + 4096].fill(i as u8 + 1);
    }
    want[40 * 4096] = b'x';
    assert_eq!(read_all(&fs, frag), want);
    census_ok(&fs);
    drop(fs);
    let fs = daxfs::DaxFs::mount(&d.path, daxfs::FsOptions::default()).expect("remount");
    assert_eq!(read_all(&fs, frag), want);
    census_ok(&fs);
}

#[test]
fn enospc_when_a_directory_needs_a_new_block_leaves_no_trace() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap().ino;
    // 63 one-slot entries fill the directory's first block.
    for i in 0..63 {
        fs.mknod(
            dir,
            format!("e{i:02}").as_bytes(),
            libc::S_IFREG | 0o644,
            0,
            &root(),
        )
        .unwrap();
    }
    fill(&fs, b"big");
    assert_eq!(
        fs.mknod(dir, b"more", libc::S_IFREG | 0o644, 0, &root())
            .unwrap_err(),
        Errno::ENOSPC
    );
    assert_eq!(fs.lookup(dir, b"more").unwrap_err(), Errno::ENOENT);
    census_ok(&fs);
    fs.unlink(ROOT, b"big").unwrap();
    fs.mknod(dir, b"more", libc::S_IFREG | 0o644, 0, &root())
        .unwrap();
    assert_eq!(list(&fs, dir).len(), 64);
    drop(fs);
    let fs = daxfs::DaxFs::mount(&d.path, daxfs::FsOptions::default()).expect("remount");
    assert_eq!(list(&fs, dir).len(), 64);
    census_ok(&fs);
}

#[test]
fn fallocate_running_out_of_space_keeps_memory_and_media_in_agreement() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap().ino;
    // Fragment the free space: 1-block files, every other one removed.
    let mut i = 0;
    loop {
        let name = format!("f{i}");
        let Ok(a) = fs.create(dir, name.as_bytes(), 0o644, libc::O_RDWR, &root()) else {
            break;
        };
        let r = fs.write(a.ino, 0, &[1u8; 4096], false);
        fs.release(a.ino).unwrap();
        if r.is_err() {
            fs.unlink(dir, name.as_bytes()).unwrap();
            break;
        }
        i += 1;
    }
    for j in (0..i).step_by(2) {
        fs.unlink(dir, format!("f{j}").as_bytes()).unwrap();
    }
    let f = mkfile(&fs, ROOT, b"pre", b"");
    let e = fs.fallocate(f, 0, 64 * MB, 0).unwrap_err();
    assert_eq!(e, Errno::ENOSPC);
    let blocks = fs.getattr(f).unwrap().blocks;
    assert!(
        blocks > 100 * 8,
        "partial allocation kept ({blocks} sectors)"
    );
    let free = fs.statfs().bfree;
    census_ok(&fs);
    drop(fs);
    let fs = d.mount();
    assert_eq!(fs.getattr(f).unwrap().blocks, blocks);
    assert_eq!(fs.statfs().bfree, free);
    census_ok(&fs);
}

#[test]
fn rename_into_a_full_directory_on_a_full_device_is_enospc_and_changes_nothing() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap().ino;
    for i in 0..63 {
        fs.mknod(
            dir,
            format!("e{i:02}").as_bytes(),
            libc::S_IFREG | 0o644,
            0,
            &root(),
        )
        .unwrap();
    }
    let f = mkfile(&fs, ROOT, b"mover", b"data");
    fill(&fs, b"big");
    assert_eq!(
        fs.rename(ROOT, b"mover", dir, b"moved", 0).unwrap_err(),
        Errno::ENOSPC
    );
    assert_eq!(fs.link(f, dir, b"moved").unwrap_err(), Errno::ENOSPC);
    assert_eq!(fs.lookup(ROOT, b"mover").unwrap().ino, f);
    assert_eq!(fs.lookup(dir, b"moved").unwrap_err(), Errno::ENOENT);
    // The filesystem still takes changes.
    fs.unlink(ROOT, b"big").unwrap();
    fs.rename(ROOT, b"mover", dir, b"moved", 0).unwrap();
    assert_eq!(read_all(&fs, f), b"data");
    census_ok(&fs);
    drop(fs);
    let fs = d.mount();
    assert_eq!(fs.lookup(dir, b"moved").unwrap().ino, f);
}

#[test]
fn space_of_a_removed_file_is_available_to_the_next_write() {
    // The library's own frees (no kernel references) are durable and back in the
    // allocator when unlink returns: nothing is deferred past the call.
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = fs.create(ROOT, b"f", 0o644, libc::O_RDWR, &root()).unwrap();
    assert_eq!(
        fs.fallocate(f.ino, 0, 1 << 30, 0).unwrap_err(),
        Errno::ENOSPC
    );
    fs.release(f.ino).unwrap();
    assert!(fs.statfs().bfree < 8);
    fs.unlink(ROOT, b"f").unwrap();
    let p = fs.create(ROOT, b"p", 0o644, libc::O_RDWR, &root()).unwrap();
    assert_eq!(fs.write(p.ino, 0, b"data\n", false).unwrap(), 5);
    fs.release(p.ino).unwrap();
    census_ok(&fs);
}

/// Fills the device with `name`, which the "kernel" still references (`remember`, as
/// the FUSE adapter does for every entry it hands out) after its handle is released.
fn fill_remembered(fs: &daxfs::DaxFs, name: &[u8]) -> u64 {
    let a = fs.create(ROOT, name, 0o644, libc::O_RDWR, &root()).unwrap();
    fs.remember(a.ino).unwrap();
    assert_eq!(
        fs.fallocate(a.ino, 0, 1 << 30, 0).unwrap_err(),
        Errno::ENOSPC
    );
    fs.release(a.ino).unwrap();
    a.ino
}

/// A create and a one-block write of `name`: the `echo data > p` of daxfs/098.
fn write_small(fs: &daxfs::DaxFs, name: &[u8]) -> Result<(), Errno> {
    let p = fs.create(ROOT, name, 0o644, libc::O_RDWR, &root())?;
    let r = fs.write(p.ino, 0, b"data\n", false).map(|_| ());
    fs.release(p.ino).unwrap();
    r
}

#[test]
fn enospc_while_a_removed_file_waits_for_its_forget_can_wait_for_the_free_and_retry() {
    let d = TestDev::new(32 * MB);
    let fs = std::sync::Arc::new(d.mount());
    let big = fill_remembered(&fs, b"big");
    fs.unlink(ROOT, b"big").unwrap();
    // The kernel's FORGET is on its way: the blocks are still the orphan's.
    let token = fs.orphan_frees();
    assert_eq!(write_small(&fs, b"p").unwrap_err(), Errno::ENOSPC);
    assert!(fs.orphan_free_may_come(token));
    let kernel = {
        let fs = fs.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            fs.forget(big, 1).unwrap();
        })
    };
    assert!(fs.wait_for_orphan_free(token, std::time::Duration::from_secs(10)));
    write_small(&fs, b"p").unwrap();
    kernel.join().unwrap();
    census_ok(&fs);
}

#[test]
fn a_removed_file_held_open_makes_one_wait_time_out_and_later_ones_return_at_once() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let big = fill_remembered(&fs, b"big");
    fs.open(big, libc::O_RDONLY).unwrap();
    fs.unlink(ROOT, b"big").unwrap();
    let token = fs.orphan_frees();
    assert_eq!(write_small(&fs, b"p").unwrap_err(), Errno::ENOSPC);
    let wait = std::time::Duration::from_millis(100);
    let t = std::time::Instant::now();
    assert!(!fs.wait_for_orphan_free(token, wait));
    assert!(t.elapsed() >= wait);
    // The same orphans, still held: no second wait.
    assert!(!fs.orphan_free_may_come(token));
    let t = std::time::Instant::now();
    assert!(!fs.wait_for_orphan_free(token, std::time::Duration::from_secs(10)));
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    // The last close and forget free it, and a new wait sees that.
    fs.release(big).unwrap();
    fs.forget(big, 1).unwrap();
    assert!(fs.orphan_free_may_come(token));
    assert!(fs.wait_for_orphan_free(token, wait));
    write_small(&fs, b"p").unwrap();
    census_ok(&fs);
}

#[test]
fn without_orphans_a_wait_for_an_orphan_free_returns_at_once() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    fill(&fs, b"big");
    let token = fs.orphan_frees();
    assert_eq!(write_small(&fs, b"p").unwrap_err(), Errno::ENOSPC);
    assert!(!fs.orphan_free_may_come(token));
    let t = std::time::Instant::now();
    assert!(!fs.wait_for_orphan_free(token, std::time::Duration::from_secs(10)));
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
}
