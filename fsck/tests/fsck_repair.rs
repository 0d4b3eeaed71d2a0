//! fsck repairs, at library level: an image built with `DaxFs` on a memory device is
//! damaged precisely (a link count, a removed or invented directory entry, a leaked
//! block, ...); `daxfs_fsck::repair` must make exactly the expected repair, a second check
//! must be clean, and the image must mount with its data intact. Also: what preen may
//! repair, that unrepairable damage leaves the image untouched, that a repair larger
//! than the journal still completes, and that a power cut at any fence of a repair
//! leaves the damaged image or the repaired one.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use daxfs_testkit as common;

use common::{list, mkfile, pattern, read_all, Rng};
use daxfs::{Cred, DaxFs, Errno, FileKind, FsOptions, ROOT};
use daxfs_format::*;
use daxfs_fsck::{FsckReport, Severity};
use daxfs_pmem::Device;
use std::sync::Arc;

const SIZE: u64 = 8 << 20;

/// A formatted memory device and raw access to its structures.
struct Img {
    dev: Arc<Device>,
    sb: Superblock,
}

impl Img {
    /// A fresh filesystem with a 64 KiB journal and 64 inodes (or `inodes`).
    fn new(inodes: u64) -> Img {
        let dev = Arc::new(Device::memory(&vec![0u8; SIZE as usize]).expect("memory device"));
        let sb = common::mkfs()
            .journal_bytes(64 << 10)
            .inodes(inodes)
            .format(&dev);
        Img { dev, sb }
    }

    /// Runs `f` on the mounted filesystem, then unmounts cleanly.
    fn with_fs<T>(&self, f: impl FnOnce(&DaxFs) -> T) -> T {
        let fs = DaxFs::mount_device(self.dev.clone(), FsOptions::default()).expect("mount");
        let out = f(&fs);
        fs.shutdown().expect("unmount");
        out
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; SIZE as usize];
        self.dev.read(0, &mut b);
        b
    }

    fn inode(&self, ino: u64) -> DiskInode {
        let mut b = [0u8; INODE_SIZE as usize];
        self.dev.read(self.sb.inode_offset(ino), &mut b);
        DiskInode::decode(&b)
            .expect("valid inode")
            .expect("used inode")
    }

    /// None when the slot is free or does not decode.
    fn try_inode(&self, ino: u64) -> Option<DiskInode> {
        let mut b = [0u8; INODE_SIZE as usize];
        self.dev.read(self.sb.inode_offset(ino), &mut b);
        DiskInode::decode(&b).ok().flatten()
    }

    fn inode_is_free(&self, ino: u64) -> bool {
        let mut b = [0u8; INODE_SIZE as usize];
        self.dev.read(self.sb.inode_offset(ino), &mut b);
        b.iter().all(|&x| x == 0)
    }

    /// Rewrites an inode with a valid checksum: consistent-looking but wrong.
    fn put_inode(&self, ino: u64, d: &DiskInode) {
        self.dev.write(self.sb.inode_offset(ino), &d.encode());
    }

    fn set_nlink(&self, ino: u64, nlink: u32) {
        let mut d = self.inode(ino);
        d.nlink = nlink;
        self.put_inode(ino, &d);
    }

    /// Device offset and slot count of the entry `name` of directory `dir`.
    fn entry(&self, dir: u64, name: &[u8]) -> (u64, usize) {
        let d = self.inode(dir);
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        for e in d.inline.iter().filter(|e| e.len > 0) {
            for k in 0..e.len as u64 {
                let pblk = e.pblk + k;
                self.dev.read(pblk * BLOCK_SIZE, &mut buf);
                let mut s = 1;
                while s < DIR_SLOTS_PER_BLOCK {
                    match decode_dirent(&buf, s).expect("valid entry") {
                        Some(de) if de.name == name => {
                            return (pblk * BLOCK_SIZE + (s * DIR_SLOT) as u64, de.nslots);
                        }
                        Some(de) => s += de.nslots,
                        None => s += 1,
                    }
                }
            }
        }
        panic!(
            "no entry {:?} in directory {dir}",
            String::from_utf8_lossy(name)
        );
    }

    /// The names in directory `dir`'s first block.
    fn with_names(&self, dir: u64) -> Vec<Vec<u8>> {
        let pblk = self.inode(dir).inline[0].pblk;
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        self.dev.read(pblk * BLOCK_SIZE, &mut buf);
        let mut names = Vec::new();
        let mut s = 1;
        while s < DIR_SLOTS_PER_BLOCK {
            match decode_dirent(&buf, s).expect("valid entry") {
                Some(de) => {
                    names.push(de.name.to_vec());
                    s += de.nslots;
                }
                None => s += 1,
            }
        }
        names
    }

    /// Erases the entry `name` of directory `dir` (nothing else changes).
    fn erase_entry(&self, dir: u64, name: &[u8]) {
        let (off, nslots) = self.entry(dir, name);
        self.dev.write(off, &vec![0u8; nslots * DIR_SLOT]);
    }

    /// Writes an entry into the first free slot of directory `dir`'s first block.
    /// (A short name: one slot.) False when that block has no free slot.
    fn invent_entry(&self, dir: u64, name: &[u8], ino: u64, ftype: u8) -> bool {
        let first = self.inode(dir).inline[0];
        assert!(first.len > 0, "directory {dir} has no block");
        let pblk = first.pblk;
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        self.dev.read(pblk * BLOCK_SIZE, &mut buf);
        let mut s = 1;
        while s < DIR_SLOTS_PER_BLOCK {
            match decode_dirent(&buf, s).expect("valid entry") {
                Some(de) => s += de.nslots,
                None => {
                    let off = pblk * BLOCK_SIZE + (s * DIR_SLOT) as u64;
                    self.dev.write(off, &encode_dirent(ino, ftype, name));
                    return true;
                }
            }
        }
        false
    }

    fn check(&self) -> FsckReport {
        daxfs_fsck::check(&self.dev, false, &mut |_, _, _| {})
    }

    fn repair(&self, preen: bool) -> FsckReport {
        daxfs_fsck::repair(&self.dev, preen, &mut |_, _, _| {})
    }
}

/// The findings of one severity, as text.
fn findings(r: &FsckReport, s: Severity) -> Vec<String> {
    r.findings
        .iter()
        .filter(|f| f.severity == s)
        .map(|f| f.what.clone())
        .collect()
}

/// Repairs `img` with -y: the repairs made must be `want`, in order, and afterwards a
/// check must be clean and the filesystem must mount.
fn repair_exactly(img: &Img, want: &[String]) {
    repair_exactly_despite(img, &[], want);
}

/// As [`repair_exactly`], for damage the check reports as `errors` and the repair
/// still repairs (a superblock copy).
fn repair_exactly_despite(img: &Img, errors: &[String], want: &[String]) {
    let r = img.repair(false);
    assert_eq!(findings(&r, Severity::Error), errors);
    assert_eq!(r.repaired, want);
    let after = img.check();
    assert!(after.is_clean(), "after the repair: {:?}", after.findings);
    img.with_fs(|_| ());
}

fn root() -> Cred {
    Cred::root()
}

#[test]
fn a_wrong_file_link_count_is_set_to_the_number_of_entries() {
    let img = Img::new(0);
    let data = pattern(5000, 1);
    let f = img.with_fs(|fs| {
        let f = mkfile(fs, ROOT, b"f", &data);
        fs.link(f, ROOT, b"g").expect("link");
        f
    });
    img.set_nlink(f, 5);
    assert_eq!(
        findings(&img.check(), Severity::Repairable),
        [format!("inode {f}: link count is 5 but should be 2")]
    );
    repair_exactly(&img, &[format!("inode {f}: set the link count to 2")]);
    img.with_fs(|fs| {
        assert_eq!(fs.getattr(f).expect("getattr").nlink, 2);
        fs.unlink(ROOT, b"g").expect("unlink");
        assert_eq!(read_all(fs, f), data, "one name left, the data stays");
    });
}

#[test]
fn a_wrong_directory_link_count_is_set_to_two_plus_its_subdirectories() {
    let img = Img::new(0);
    let d = img.with_fs(|fs| {
        let d = fs.mkdir(ROOT, b"d", 0o755, &root()).expect("mkdir").ino;
        fs.mkdir(d, b"sub", 0o755, &root()).expect("mkdir");
        d
    });
    img.set_nlink(d, 9);
    repair_exactly(&img, &[format!("inode {d}: set the link count to 3")]);
    img.with_fs(|fs| assert_eq!(fs.getattr(d).expect("getattr").nlink, 3));
}

#[test]
fn a_linked_file_with_link_count_zero_gets_its_count_back_instead_of_being_reclaimed() {
    let img = Img::new(0);
    let data = pattern(3000, 2);
    let f = img.with_fs(|fs| mkfile(fs, ROOT, b"f", &data));
    img.set_nlink(f, 0);
    assert_eq!(
        findings(&img.check(), Severity::Repairable),
        [format!(
            "inode {f}: link count is 0 but 1 directory entries name it"
        )]
    );
    repair_exactly(&img, &[format!("inode {f}: set the link count to 1")]);
    img.with_fs(|fs| assert_eq!(read_all(fs, f), data));
}

#[test]
fn a_file_whose_entry_was_erased_is_reconnected_into_a_new_lost_found() {
    let img = Img::new(0);
    let data = pattern(10_000, 3);
    let (d, f) = img.with_fs(|fs| {
        let d = fs.mkdir(ROOT, b"d", 0o755, &root()).expect("mkdir").ino;
        let f = mkfile(fs, d, b"f", &data);
        mkfile(fs, ROOT, b"keep", b"k");
        (d, f)
    });
    img.erase_entry(d, b"f");
    let before = img.check();
    assert_eq!(
        findings(&before, Severity::Repairable),
        [format!(
            "inode {f} (File, 10000 bytes): not reachable from the root directory (link count 1); reconnecting it to /lost+found as #{f}"
        )]
    );
    assert!(
        before.needs_manual_repair(),
        "reconnecting is not for preen"
    );
    let r = img.repair(false);
    let lf = img.with_fs(|fs| fs.lookup(ROOT, b"lost+found").expect("lost+found").ino);
    assert_eq!(
        r.repaired,
        [
            "inode 1: set the link count to 4".to_string(),
            format!("created /lost+found (inode {lf})"),
            format!("reconnected inode {f} to /lost+found as #{f}"),
            "rewrote 1 bitmap blocks from the extent maps (0 blocks freed, 1 marked in use)"
                .to_string(),
        ]
    );
    assert!(img.check().is_clean(), "{:?}", img.check().findings);
    img.with_fs(|fs| {
        let a = fs.getattr(lf).expect("getattr lost+found");
        assert_eq!(
            (a.kind, a.perm, a.uid, a.gid, a.nlink),
            (FileKind::Dir, 0o700, 0, 0, 2)
        );
        assert_eq!(fs.lookup(lf, b"..").expect("..").ino, ROOT);
        assert_eq!(fs.getattr(ROOT).expect("getattr /").nlink, 4);
        let found = fs.lookup(lf, format!("#{f}").as_bytes()).expect("#ino");
        assert_eq!((found.ino, found.nlink), (f, 1));
        assert_eq!(read_all(fs, f), data, "the reconnected file keeps its data");
        assert_eq!(list(fs, d), Vec::<(Vec<u8>, u64)>::new());
    });
}

#[test]
fn an_unreachable_directory_is_reconnected_with_dotdot_pointing_to_lost_found() {
    let img = Img::new(0);
    let data = pattern(6000, 4);
    let (d, f) = img.with_fs(|fs| {
        let d = fs.mkdir(ROOT, b"d", 0o755, &root()).expect("mkdir").ino;
        let f = mkfile(fs, d, b"f", &data);
        (d, f)
    });
    img.erase_entry(ROOT, b"d");
    let r = img.repair(false);
    assert!(findings(&r, Severity::Error).is_empty(), "{:?}", r.findings);
    assert!(img.check().is_clean(), "{:?}", img.check().findings);
    img.with_fs(|fs| {
        let lf = fs.lookup(ROOT, b"lost+found").expect("lost+found").ino;
        assert!(r
            .repaired
            .contains(&format!("directory {d}: set the parent to {lf}")));
        assert_eq!(
            fs.lookup(lf, format!("#{d}").as_bytes()).expect("#d").ino,
            d
        );
        assert_eq!(fs.lookup(d, b"..").expect("..").ino, lf);
        assert_eq!(fs.getattr(lf).expect("getattr").nlink, 3);
        assert_eq!(fs.lookup(d, b"f").expect("f").ino, f);
        assert_eq!(read_all(fs, f), data);
    });
}

#[test]
fn an_existing_lost_found_is_reused() {
    let img = Img::new(0);
    let (lf, f) = img.with_fs(|fs| {
        let lf = fs
            .mkdir(ROOT, b"lost+found", 0o700, &root())
            .expect("mkdir")
            .ino;
        let f = mkfile(fs, ROOT, b"f", b"data");
        (lf, f)
    });
    img.erase_entry(ROOT, b"f");
    // The empty lost+found gets its first block.
    repair_exactly(
        &img,
        &[
            format!("reconnected inode {f} to /lost+found as #{f}"),
            "rewrote 1 bitmap blocks from the extent maps (0 blocks freed, 1 marked in use)"
                .to_string(),
        ],
    );
    img.with_fs(|fs| {
        assert_eq!(list(fs, lf), [(format!("#{f}").into_bytes(), f)]);
    });
}

#[test]
fn an_entry_naming_a_free_inode_is_removed() {
    let img = Img::new(0);
    img.with_fs(|fs| mkfile(fs, ROOT, b"f", b"x"));
    let free = img.sb.inode_count - 1;
    assert!(img.inode_is_free(free));
    img.invent_entry(ROOT, b"ghost", free, libc::DT_REG);
    assert_eq!(
        findings(&img.check(), Severity::Repairable),
        [format!(
            "directory 1: entry \"ghost\" names free inode {free} (removing the entry)"
        )]
    );
    repair_exactly(
        &img,
        &[format!(
            "directory 1: removed entry \"ghost\" (inode {free})"
        )],
    );
    img.with_fs(|fs| {
        assert_eq!(fs.lookup(ROOT, b"ghost").map(|a| a.ino), Err(Errno::ENOENT));
        assert_eq!(list(fs, ROOT).len(), 1);
    });
}

#[test]
fn an_entry_naming_an_inode_out_of_range_is_removed() {
    let img = Img::new(0);
    let bad = img.sb.inode_count + 7;
    let f = img.with_fs(|fs| mkfile(fs, ROOT, b"f", b"x"));
    img.invent_entry(ROOT, b"far", bad, libc::DT_REG);
    repair_exactly(
        &img,
        &[format!("directory 1: removed entry \"far\" (inode {bad})")],
    );
    img.with_fs(|fs| assert_eq!(list(fs, ROOT), [(b"f".to_vec(), f)]));
}

#[test]
fn a_second_name_of_a_directory_is_removed() {
    let img = Img::new(0);
    let (a, d) = img.with_fs(|fs| {
        let a = fs.mkdir(ROOT, b"a", 0o755, &root()).expect("mkdir").ino;
        mkfile(fs, a, b"f", b"gives a a block");
        let d = fs.mkdir(ROOT, b"d", 0o755, &root()).expect("mkdir").ino;
        (a, d)
    });
    img.invent_entry(a, b"alias", d, libc::DT_DIR);
    repair_exactly(
        &img,
        &[format!(
            "directory {a}: removed entry \"alias\" (inode {d})"
        )],
    );
}

#[test]
fn a_loop_of_unreachable_directories_is_broken_into_lost_found() {
    let img = Img::new(0);
    let (a, b) = img.with_fs(|fs| {
        let a = fs.mkdir(ROOT, b"a", 0o755, &root()).expect("mkdir").ino;
        let b = fs.mkdir(a, b"b", 0o755, &root()).expect("mkdir").ino;
        mkfile(fs, b, b"f", b"in the loop");
        (a, b)
    });
    // a names b, b names a, and nothing reachable names either.
    img.erase_entry(ROOT, b"a");
    img.invent_entry(b, b"up", a, libc::DT_DIR);
    let r = img.repair(false);
    assert!(findings(&r, Severity::Error).is_empty(), "{:?}", r.findings);
    assert!(r
        .repaired
        .contains(&format!("directory {b}: removed entry \"up\" (inode {a})")));
    assert!(img.check().is_clean(), "{:?}", img.check().findings);
    img.with_fs(|fs| {
        let lf = fs.lookup(ROOT, b"lost+found").expect("lost+found").ino;
        assert_eq!(
            fs.lookup(lf, format!("#{a}").as_bytes()).expect("#a").ino,
            a
        );
        assert_eq!(fs.lookup(a, b"..").expect("..").ino, lf);
        let f = fs.lookup(b, b"f").expect("f").ino;
        assert_eq!(read_all(fs, f), b"in the loop");
    });
}

#[test]
fn an_unattached_empty_file_is_cleared() {
    let img = Img::new(0);
    let e = img.with_fs(|fs| mkfile(fs, ROOT, b"empty", b""));
    img.erase_entry(ROOT, b"empty");
    repair_exactly(&img, &[format!("cleared unattached zero-length inode {e}")]);
    assert!(img.inode_is_free(e));
}

#[test]
fn a_leaked_block_is_freed_in_the_bitmap() {
    let img = Img::new(0);
    let free0 = img.with_fs(|fs| {
        mkfile(fs, ROOT, b"f", &pattern(9000, 5));
        fs.statfs().bfree
    });
    let bit = img.sb.data_blocks - 1;
    let index = bit / BITS_PER_BITMAP_BLOCK;
    let off = img.sb.bitmap_block_offset(index);
    let mut blk = vec![0u8; BLOCK_SIZE as usize];
    img.dev.read(off, &mut blk);
    let b = bit % BITS_PER_BITMAP_BLOCK;
    blk[(b / 8) as usize] |= 1 << (b % 8);
    seal_bitmap_block(&mut blk, index);
    img.dev.write(off, &blk);
    assert_eq!(
        findings(&img.check(), Severity::Repairable),
        ["bitmap: 1 blocks are marked used but belong to no inode"]
    );
    repair_exactly(
        &img,
        &[
            "rewrote 1 bitmap blocks from the extent maps (1 blocks freed, 0 marked in use)"
                .to_string(),
        ],
    );
    img.with_fs(|fs| assert_eq!(fs.statfs().bfree, free0));
}

#[test]
fn a_bitmap_block_with_a_bad_checksum_is_rewritten() {
    let img = Img::new(0);
    let free0 = img.with_fs(|fs| {
        mkfile(fs, ROOT, b"f", &pattern(9000, 8));
        fs.statfs().bfree
    });
    // Clears the bit of the first data block (the root directory's block): the
    // checksum no longer matches, and the block shows free.
    let off = img.sb.bitmap_block_offset(0);
    let mut b = [0u8; 1];
    img.dev.read(off, &mut b);
    assert_eq!(b[0] & 1, 1);
    img.dev.write(off, &[b[0] ^ 0x01]);
    assert_eq!(
        findings(&img.check(), Severity::Repairable),
        ["bitmap block 0: checksum mismatch (a mount refuses this image)"]
    );
    repair_exactly(
        &img,
        &[
            "rewrote 1 bitmap blocks from the extent maps (0 blocks freed, 1 marked in use)"
                .to_string(),
        ],
    );
    img.with_fs(|fs| assert_eq!(fs.statfs().bfree, free0));
}

#[test]
fn an_orphan_of_a_crash_is_reclaimed_and_the_filesystem_marked_clean() {
    let img = Img::new(0);
    let fs = DaxFs::mount_device(img.dev.clone(), FsOptions::default()).expect("mount");
    let a = fs
        .create(ROOT, b"open", 0o644, libc::O_RDWR, &root())
        .expect("create");
    let len = 20_000;
    fs.write(a.ino, 0, &pattern(len, 6), false).expect("write");
    fs.unlink(ROOT, b"open").expect("unlink");
    // The crash: the image as it is now, with the file open and unlinked.
    let crashed = Img {
        dev: Arc::new(Device::memory(&img.bytes()).expect("memory device")),
        sb: img.sb.clone(),
    };
    fs.shutdown().expect("unmount");
    drop(fs);
    let before = crashed.check();
    assert!(
        before.is_clean(),
        "an orphan is a note: {:?}",
        before.findings
    );
    assert_eq!(before.stats.orphans, 1);
    // The crashed mount's writer lease is still "held" in the image.
    let mut want = vec![format!(
        "host table: cleared the stale writer lease of pid {} (epoch 1 kept)",
        std::process::id()
    )];
    if before.stats.journal_pending > 0 {
        want.push(format!(
            "applied {} committed journal transactions",
            before.stats.journal_pending
        ));
    }
    want.push(format!("reclaimed orphan inode {}", a.ino));
    want.push(format!(
        "rewrote 1 bitmap blocks from the extent maps ({} blocks freed, 0 marked in use)",
        (len as u64).div_ceil(BLOCK_SIZE)
    ));
    want.push("marked the filesystem clean".to_string());
    repair_exactly(&crashed, &want);
    let after = crashed.check();
    assert_eq!(after.stats.orphans, 0);
    assert_eq!(after.superblock.map(|sb| sb.state), Some(STATE_CLEAN));
}

#[test]
fn preen_repairs_link_counts_but_not_reconnections() {
    let img = Img::new(0);
    let (f, g) = img.with_fs(|fs| (mkfile(fs, ROOT, b"f", b"1"), mkfile(fs, ROOT, b"g", b"2")));
    img.set_nlink(f, 4);
    let r = img.repair(true);
    assert_eq!(r.repaired, [format!("inode {f}: set the link count to 1")]);
    assert!(img.check().is_clean());
    img.erase_entry(ROOT, b"g");
    let before = img.bytes();
    let r = img.repair(true);
    assert!(r.repaired.is_empty(), "{:?}", r.repaired);
    assert!(r.needs_manual_repair());
    assert!(img.bytes() == before, "preen changed the image");
    let r = img.repair(false);
    assert!(r
        .repaired
        .contains(&format!("reconnected inode {g} to /lost+found as #{g}")));
}

#[test]
fn a_bad_primary_superblock_and_a_wrong_link_count_are_repaired_in_one_run() {
    let img = Img::new(0);
    let f = img.with_fs(|fs| mkfile(fs, ROOT, b"f", b"1"));
    img.set_nlink(f, 2);
    let mut b = [0u8; 1];
    img.dev.read(60, &mut b);
    img.dev.write(60, &[b[0] ^ 0x5a]);
    repair_exactly_despite(
        &img,
        &["primary superblock (block 0) is bad: superblock checksum mismatch".to_string()],
        &[
            "restored the primary superblock from the backup".to_string(),
            format!("inode {f}: set the link count to 1"),
        ],
    );
}

#[test]
fn unrepairable_damage_leaves_the_image_untouched() {
    let img = Img::new(0);
    let (f, g) = img.with_fs(|fs| (mkfile(fs, ROOT, b"f", b"1"), mkfile(fs, ROOT, b"g", b"2")));
    img.set_nlink(f, 3);
    // g's data extent moved onto f's block (checksums valid): a block used by two
    // files, which fsck does not repair (no cloning).
    let fb = img.inode(f).inline[0].pblk;
    let mut d = img.inode(g);
    d.inline[0].pblk = fb;
    img.put_inode(g, &d);
    let before = img.bytes();
    let r = img.repair(false);
    assert_eq!(
        findings(&r, Severity::Error),
        [format!("block {fb} is used by inodes {f} and {g}")]
    );
    assert!(r.repaired.is_empty(), "{:?}", r.repaired);
    assert!(img.bytes() == before, "the repair wrote to a damaged image");
}

#[test]
fn a_repair_larger_than_the_journal_is_split_and_completes() {
    let img = Img::new(512);
    let n = 300;
    let inos: Vec<u64> = img.with_fs(|fs| {
        (0..n)
            .map(|i| mkfile(fs, ROOT, format!("f{i}").as_bytes(), b"x"))
            .collect()
    });
    for &ino in &inos {
        img.set_nlink(ino, 2);
    }
    // Each rewritten inode record costs more than 256 bytes of log.
    assert!(n * 256 > img.sb.journal_blocks * BLOCK_SIZE);
    let r = img.repair(false);
    assert_eq!(r.repaired.len(), n as usize, "{:?}", r.findings);
    assert!(img.check().is_clean(), "{:?}", img.check().findings);
    img.with_fs(|fs| {
        for &ino in &inos {
            assert_eq!(fs.getattr(ino).expect("getattr").nlink, 1);
        }
    });
}

/// The non-note findings of a report, for comparing states.
fn problems(r: &FsckReport) -> Vec<String> {
    r.findings
        .iter()
        .filter(|f| f.severity != Severity::Note)
        .map(|f| f.what.clone())
        .collect()
}

/// A power cut at any fence of a repair, with any of the lines not yet durable
/// reaching the media or not (all of them, none, and each alone), leaves either the
/// damaged image (the same findings) or the repaired one (clean once the journal is
/// applied); and a second repair of any of these states ends clean.
#[test]
fn a_power_cut_during_a_repair_leaves_the_damaged_or_the_repaired_image() {
    let img = Img::new(0);
    let (d, f, g) = img.with_fs(|fs| {
        let d = fs.mkdir(ROOT, b"d", 0o755, &root()).expect("mkdir").ino;
        let f = mkfile(fs, d, b"f", &pattern(7000, 7));
        let g = mkfile(fs, ROOT, b"g", b"g");
        fs.link(g, d, b"g2").expect("link");
        (d, f, g)
    });
    img.erase_entry(d, b"f");
    img.set_nlink(g, 7);
    img.invent_entry(ROOT, b"ghost", img.sb.inode_count - 1, libc::DT_REG);
    let damaged = img.bytes();
    let want = problems(&img.check());
    assert_eq!(want.len(), 3, "{want:?}");

    let (dev, rec) = Device::recording(SIZE).expect("recording device");
    dev.write(0, &damaged);
    dev.persist(0, SIZE);
    let dev = Arc::new(dev);
    rec.set_recording(true);
    let r = daxfs_fsck::repair(&dev, false, &mut |_, _, _| {});
    rec.set_recording(false);
    assert!(!r.repaired.is_empty());
    let points = rec.take_points();
    assert!(points.len() >= 4, "{} fences", points.len());

    let mut durable = damaged;
    let (mut old, mut new) = (0, 0);
    for p in &points {
        let mut choices: Vec<Vec<usize>> = vec![vec![], (0..p.unpersisted.len()).collect()];
        choices.extend((0..p.unpersisted.len()).map(|i| vec![i]));
        for chosen in choices {
            let mut state = durable.clone();
            p.add_lines(&mut state, &chosen);
            let s = Img {
                dev: Arc::new(Device::memory(&state).expect("memory device")),
                sb: img.sb.clone(),
            };
            let rep = s.check();
            if rep.is_clean() {
                new += 1;
            } else {
                assert_eq!(problems(&rep), want, "fence {}: a state between", p.index);
                old += 1;
            }
            s.repair(false);
            let again = s.check();
            assert!(again.is_clean(), "fence {}: {:?}", p.index, again.findings);
        }
        p.advance(&mut durable);
    }
    println!(
        "power cut during a repair: {} fences, {old} damaged states, {new} repaired ones",
        points.len()
    );
    assert!(
        old > 0 && new > 0,
        "{old} damaged states, {new} repaired ones"
    );
    let s = Img {
        dev: Arc::new(Device::memory(&durable).expect("memory device")),
        sb: img.sb.clone(),
    };
    assert!(s.check().is_clean());
    s.with_fs(|fs| {
        let lf = fs.lookup(ROOT, b"lost+found").expect("lost+found").ino;
        let found = fs.lookup(lf, format!("#{f}").as_bytes()).expect("#f");
        assert_eq!(read_all(fs, found.ino), pattern(7000, 7));
        assert_eq!(fs.getattr(g).expect("getattr").nlink, 2);
    });
}

/// Random namespace damage with valid checksums (link counts, parents, orphan flags,
/// block counts, erased and invented entries, bitmap bits) and now and then a flipped
/// inode byte, 1 to 4 at a time, 150 times (DAXFS_REPAIR_ITERS sets the count): the
/// repair either finds an error and changes nothing, or leaves an image that checks
/// clean, mounts, and is still clean after the mount's clean unmount.
#[test]
fn random_namespace_damage_is_repaired_or_left_untouched() {
    let img = Img::new(0);
    img.with_fs(|fs| {
        let a = fs.mkdir(ROOT, b"a", 0o755, &root()).expect("mkdir").ino;
        let b = fs.mkdir(a, b"b", 0o755, &root()).expect("mkdir").ino;
        fs.mkdir(a, b"empty", 0o755, &root()).expect("mkdir");
        for i in 0..6u8 {
            let f = mkfile(
                fs,
                if i % 2 == 0 { a } else { b },
                &[b'f', b'0' + i],
                &pattern(3000 * i as usize, i),
            );
            if i % 3 == 0 {
                fs.link(f, ROOT, &[b'l', b'0' + i]).expect("link");
            }
        }
        mkfile(fs, ROOT, b"empty-file", b"");
        fs.symlink(b, b"sym", b"../f0", &root()).expect("symlink");
    });
    let clean = img.bytes();
    let used: Vec<u64> = (1..img.sb.inode_count)
        .filter(|&i| !img.inode_is_free(i))
        .collect();
    let dirs: Vec<u64> = used
        .iter()
        .copied()
        .filter(|&i| img.inode(i).mode & libc::S_IFMT == libc::S_IFDIR)
        .filter(|&i| img.inode(i).inline[0].len > 0)
        .collect();
    let iters: u64 = std::env::var("DAXFS_REPAIR_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let mut rng = Rng::new(common::seed(0x2545_f491_4f6c_dd1d));
    let (mut repaired, mut refused) = (0, 0);
    for it in 0..iters {
        let s = Img {
            dev: Arc::new(Device::memory(&clean).expect("memory device")),
            sb: img.sb.clone(),
        };
        for m in 0..1 + rng.below(4) {
            let ino = used[rng.below(used.len() as u64) as usize];
            let dir = dirs[rng.below(dirs.len() as u64) as usize];
            // An inode an earlier mutation of this round damaged is left alone.
            let (Some(mut d), Some(_)) = (s.try_inode(ino), s.try_inode(dir)) else {
                continue;
            };
            match rng.below(12) {
                0 => d.nlink = rng.below(5) as u32,
                1 => d.parent = rng.below(s.sb.inode_count),
                2 => d.flags ^= IFLAG_ORPHAN,
                3 => d.blocks = rng.below(6),
                4 => {
                    let child = 1 + rng.below(s.sb.inode_count + 3);
                    let ftype = [libc::DT_REG, libc::DT_DIR, libc::DT_LNK][rng.below(3) as usize];
                    s.invent_entry(dir, format!("z{it}.{m}").as_bytes(), child, ftype);
                    continue;
                }
                5 => {
                    let names = s.with_names(dir);
                    if let Some(n) = names.get(rng.below(names.len() as u64) as usize) {
                        s.erase_entry(dir, n);
                    }
                    continue;
                }
                6 => {
                    let bit = rng.below(s.sb.data_blocks);
                    let index = bit / BITS_PER_BITMAP_BLOCK;
                    let off = s.sb.bitmap_block_offset(index);
                    let mut blk = vec![0u8; BLOCK_SIZE as usize];
                    s.dev.read(off, &mut blk);
                    let b = bit % BITS_PER_BITMAP_BLOCK;
                    blk[(b / 8) as usize] ^= 1 << (b % 8);
                    seal_bitmap_block(&mut blk, index);
                    s.dev.write(off, &blk);
                    continue;
                }
                7 => d.extent_count = rng.below(4) as u32,
                8 => {
                    // A checksum: the repair clears the inode.
                    let off = s.sb.inode_offset(ino) + rng.below(INODE_SIZE);
                    let mut b = [0u8; 1];
                    s.dev.read(off, &mut b);
                    s.dev.write(off, &[b[0] ^ 0x24]);
                    continue;
                }
                _ => d.nlink = d.nlink.saturating_add(1),
            }
            s.put_inode(ino, &d);
        }
        let before = s.bytes();
        let r = s.repair(false);
        if r.count(Severity::Error) > 0 {
            assert!(r.repaired.is_empty(), "iteration {it}: {:?}", r.repaired);
            assert!(
                s.bytes() == before,
                "iteration {it}: an unrepairable image changed"
            );
            refused += 1;
            continue;
        }
        let after = s.check();
        assert!(
            after.is_clean(),
            "iteration {it}: found {:?}, repaired {:?}, left {:?}",
            r.findings,
            r.repaired,
            after.findings
        );
        s.with_fs(|_| ());
        let again = s.check();
        assert!(
            again.is_clean(),
            "iteration {it}: after a mount: {:?}",
            again.findings
        );
        repaired += 1;
    }
    println!("random namespace damage: {repaired} repaired, {refused} left as unrepairable");
    assert!(repaired > iters / 2, "{repaired} of {iters} repaired");
}

#[test]
fn a_journal_whose_both_headers_are_unreadable_is_replaced_by_a_new_one() {
    let img = Img::new(0);
    let data = pattern(10_000, 9);
    let f = img.with_fs(|fs| mkfile(fs, ROOT, b"f", &data));
    // Both header copies live in the first 4 KiB of the journal region.
    img.dev
        .write(img.sb.journal_start * BLOCK_SIZE, &[0xA5u8; 4096]);
    let err = DaxFs::mount_device(img.dev.clone(), FsOptions::default())
        .err()
        .expect("a mount refuses a journal without a header")
        .to_string();
    assert!(err.contains("journal"), "{err}");
    let r = img.check();
    assert_eq!(findings(&r, Severity::Error), Vec::<String>::new());
    assert_eq!(
        findings(&r, Severity::Repairable).len(),
        1,
        "{:?}",
        r.findings
    );
    assert!(r.needs_manual_repair(), "preen must leave it to -y");
    let before = img.bytes();
    assert!(img.repair(true).repaired.is_empty());
    assert!(img.bytes() == before, "preen changed the image");
    repair_exactly(
        &img,
        &["journal: both header copies were unreadable; made a new, empty journal".into()],
    );
    img.with_fs(|fs| {
        let a = fs.lookup(ROOT, b"f").expect("lookup");
        assert_eq!(a.ino, f);
        assert_eq!(read_all(fs, f), data);
        // The new journal commits.
        mkfile(fs, ROOT, b"g", b"after");
    });
    assert!(img.check().is_clean());
}
