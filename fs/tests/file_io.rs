//! File data through the core API: read/write at offsets, sparse files, extents,
//! truncate, lseek SEEK_DATA/SEEK_HOLE and copy_file_range, as Linux gives them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use common::*;
use daxfs::{DaxFs, Errno, SetAttr, ROOT};
use daxfs::{MAX_FILE_SIZE, SEEK_DATA, SEEK_HOLE};
use daxfs_testkit as common;

const MB: u64 = 1 << 20;
const BS: u64 = 4096;

fn new_file(fs: &DaxFs, name: &[u8]) -> u64 {
    mkfile(fs, ROOT, name, b"")
}

fn read_at(fs: &DaxFs, ino: u64, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let n = fs.read(ino, off, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn truncate(fs: &DaxFs, ino: u64, size: u64) -> Result<daxfs::Attr, Errno> {
    fs.setattr(
        ino,
        &root(),
        &SetAttr {
            size: Some(size),
            ..Default::default()
        },
    )
}

#[test]
fn write_at_offset_then_read_back() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = new_file(&fs, b"f");
    assert_eq!(fs.write(f, 10, b"abc", false).unwrap(), 3);
    assert_eq!(fs.getattr(f).unwrap().size, 13);
    let mut want = vec![0u8; 10];
    want.extend_from_slice(b"abc");
    assert_eq!(read_all(&fs, f), want);
    assert_eq!(read_at(&fs, f, 11, 100), b"bc");
}

#[test]
fn read_at_or_past_eof_returns_zero_bytes() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"hello");
    assert!(read_at(&fs, f, 5, 10).is_empty());
    assert!(read_at(&fs, f, 1 << 40, 10).is_empty());
}

#[test]
fn sparse_file_reads_zeros_in_holes() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = new_file(&fs, b"f");
    fs.write(f, 3 * MB, b"end", false).unwrap();
    let a = fs.getattr(f).unwrap();
    assert_eq!(a.size, 3 * MB + 3);
    assert_eq!(a.blocks, 8, "one 4 KiB block allocated");
    let all = read_all(&fs, f);
    assert!(all[..3 * MB as usize].iter().all(|&b| b == 0));
    assert_eq!(&all[3 * MB as usize..], b"end");
}

#[test]
fn holes_between_extents_read_as_zeros() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = new_file(&fs, b"f");
    fs.write(f, 0, &[1u8; 5000], false).unwrap();
    fs.write(f, 5 * BS, &[2u8; 100], false).unwrap();
    fs.write(f, 20 * BS + 7, &[3u8; 9000], false).unwrap();
    let all = read_all(&fs, f);
    assert_eq!(all.len() as u64, 20 * BS + 7 + 9000);
    for (i, &b) in all.iter().enumerate() {
        let i = i as u64;
        let want = if i < 5000 {
            1
        } else if (5 * BS..5 * BS + 100).contains(&i) {
            2
        } else if i >= 20 * BS + 7 {
            3
        } else {
            0
        };
        assert_eq!(b, want, "byte {i}");
    }
}

#[test]
fn write_spanning_several_extents_and_holes() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = new_file(&fs, b"f");
    // Map blocks 1 and 3 first, then write over 0..5 in one call.
    fs.write(f, BS, &[9u8; 4096], false).unwrap();
    fs.write(f, 3 * BS, &[9u8; 4096], false).unwrap();
    let data = pattern(5 * BS as usize - 100, 7);
    assert_eq!(fs.write(f, 50, &data, false).unwrap(), data.len());
    let all = read_all(&fs, f);
    assert!(all[..50].iter().all(|&b| b == 0));
    assert_eq!(&all[50..], &data[..]);
}

#[test]
fn append_writes_at_end_of_file() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"one");
    assert_eq!(fs.write(f, 0, b"two", true).unwrap(), 3);
    assert_eq!(fs.write(f, 1, b"three", true).unwrap(), 5);
    assert_eq!(read_all(&fs, f), b"onetwothree");
}

#[test]
fn large_write_of_several_mib_reads_back_exactly() {
    let d = TestDev::new(64 * MB);
    let fs = d.mount();
    let f = new_file(&fs, b"f");
    let data = pattern(7 * MB as usize + 123, 8);
    assert_eq!(fs.write(f, 0, &data, false).unwrap(), data.len());
    assert_eq!(read_all(&fs, f), data);
    let a = fs.getattr(f).unwrap();
    assert!(a.blocks >= data.len() as u64 / 512);
}

#[test]
fn unaligned_writes_keep_neighbouring_bytes() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let base = pattern(3 * BS as usize, 9);
    let f = mkfile(&fs, ROOT, b"f", &base);
    let mut want = base.clone();
    for (off, len) in [(1u64, 1usize), (4095, 2), (5000, 3000), (8191, 1)] {
        let p = pattern(len, off as u8);
        fs.write(f, off, &p, false).unwrap();
        want[off as usize..off as usize + len].copy_from_slice(&p);
    }
    assert_eq!(read_all(&fs, f), want);
}

#[test]
fn overwrite_replaces_bytes_without_growing() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"hello world");
    let blocks = fs.getattr(f).unwrap().blocks;
    fs.write(f, 6, b"WORLD", false).unwrap();
    assert_eq!(read_all(&fs, f), b"hello WORLD");
    let a = fs.getattr(f).unwrap();
    assert_eq!((a.size, a.blocks), (11, blocks));
}

#[test]
fn read_with_pieces_add_up_to_the_length() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = new_file(&fs, b"f");
    fs.write(f, 0, &[1u8; 10], false).unwrap();
    fs.write(f, 200_000, &[2u8; 10], false).unwrap();
    fs.write(f, 400_000, &[3u8; 10], false).unwrap();
    let total = fs
        .read_with(f, 5, 400_000, |pieces| {
            assert!(pieces.len() > 1);
            pieces.iter().map(|p| p.len()).sum::<usize>()
        })
        .unwrap();
    assert_eq!(total, 400_000);
    let at_eof = fs
        .read_with(f, 399_995, 100, |p| {
            p.iter().map(|p| p.len()).sum::<usize>()
        })
        .unwrap();
    assert_eq!(at_eof, 15);
    let past = fs
        .read_with(f, 500_000, 100, |p| {
            p.iter().map(|p| p.len()).sum::<usize>()
        })
        .unwrap();
    assert_eq!(past, 0);
}

#[test]
fn read_and_write_of_a_directory_are_eisdir() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
    let mut b = [0u8; 4];
    assert_eq!(fs.read(dir.ino, 0, &mut b).unwrap_err(), Errno::EISDIR);
    assert_eq!(
        fs.write(dir.ino, 0, b"x", false).unwrap_err(),
        Errno::EISDIR
    );
}

#[test]
fn write_at_the_maximum_file_size_is_efbig() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = new_file(&fs, b"f");
    assert_eq!(
        fs.write(f, MAX_FILE_SIZE, b"x", false).unwrap_err(),
        Errno::EFBIG
    );
    // Up to the limit is fine; the part beyond is cut off.
    assert_eq!(fs.write(f, MAX_FILE_SIZE - 2, b"xyz", false).unwrap(), 2);
    assert_eq!(fs.getattr(f).unwrap().size, MAX_FILE_SIZE);
}

#[test]
fn truncate_down_discards_data_and_frees_blocks() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", &pattern(MB as usize, 10));
    let free0 = fs.statfs().bfree;
    let a = truncate(&fs, f, 1000).unwrap();
    assert_eq!(a.size, 1000);
    assert_eq!(fs.statfs().bfree, free0 + 255);
    assert_eq!(read_all(&fs, f), &pattern(MB as usize, 10)[..1000]);
}

#[test]
fn truncate_up_reads_zeros_in_the_new_range() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"abc");
    truncate(&fs, f, 3 * BS).unwrap();
    let all = read_all(&fs, f);
    assert_eq!(&all[..3], b"abc");
    assert!(all[3..].iter().all(|&b| b == 0));
}

#[test]
fn shrink_then_grow_reads_zeros_in_the_partial_last_block() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", &[0xffu8; 3 * BS as usize]);
    truncate(&fs, f, BS + 10).unwrap();
    truncate(&fs, f, 3 * BS).unwrap();
    let all = read_all(&fs, f);
    assert!(all[..BS as usize + 10].iter().all(|&b| b == 0xff));
    assert!(
        all[BS as usize + 10..].iter().all(|&b| b == 0),
        "stale bytes"
    );
}

#[test]
fn shrink_then_write_beyond_reads_zeros_in_between() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", &[0xffu8; 2 * BS as usize]);
    truncate(&fs, f, 100).unwrap();
    fs.write(f, 3000, b"z", false).unwrap();
    let all = read_all(&fs, f);
    assert_eq!(all.len(), 3001);
    assert!(all[100..3000].iter().all(|&b| b == 0), "stale bytes");
}

#[test]
fn truncate_to_zero_empties_the_file() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", &pattern(100_000, 11));
    let a = truncate(&fs, f, 0).unwrap();
    assert_eq!((a.size, a.blocks), (0, 0));
    assert!(read_all(&fs, f).is_empty());
}

#[test]
fn truncate_beyond_16_tib_is_efbig() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = new_file(&fs, b"f");
    assert_eq!(
        truncate(&fs, f, MAX_FILE_SIZE + 1).unwrap_err(),
        Errno::EFBIG
    );
    assert_eq!(truncate(&fs, f, MAX_FILE_SIZE).unwrap().size, MAX_FILE_SIZE);
}

#[test]
fn truncate_of_a_directory_is_eisdir() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
    assert_eq!(truncate(&fs, dir.ino, 0).unwrap_err(), Errno::EISDIR);
}

#[test]
fn open_with_o_trunc_truncates() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"content");
    fs.open(f, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    assert_eq!(fs.getattr(f).unwrap().size, 0);
    fs.release(f).unwrap();
}

#[test]
fn seek_data_and_hole_in_a_sparse_file() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = new_file(&fs, b"f");
    truncate(&fs, f, 4 * MB).unwrap();
    fs.write(f, MB, &[1u8; 4096], false).unwrap();
    assert_eq!(fs.lseek(f, 0, SEEK_DATA).unwrap(), MB as i64);
    assert_eq!(
        fs.lseek(f, MB as i64 + 10, SEEK_DATA).unwrap(),
        MB as i64 + 10
    );
    assert_eq!(fs.lseek(f, 0, SEEK_HOLE).unwrap(), 0);
    assert_eq!(fs.lseek(f, MB as i64, SEEK_HOLE).unwrap(), (MB + BS) as i64);
    assert_eq!(
        fs.lseek(f, MB as i64 + 4096, SEEK_DATA).unwrap_err(),
        Errno::ENXIO
    );
}

#[test]
fn seek_at_or_after_eof_is_enxio() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", b"12345");
    assert_eq!(fs.lseek(f, 5, SEEK_DATA).unwrap_err(), Errno::ENXIO);
    assert_eq!(fs.lseek(f, 5, SEEK_HOLE).unwrap_err(), Errno::ENXIO);
    assert_eq!(fs.lseek(f, 100, SEEK_DATA).unwrap_err(), Errno::ENXIO);
}

#[test]
fn seek_hole_in_a_fully_written_file_is_eof() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", &pattern(10_000, 12));
    assert_eq!(fs.lseek(f, 0, SEEK_HOLE).unwrap(), 10_000);
    assert_eq!(fs.lseek(f, 0, SEEK_DATA).unwrap(), 0);
}

#[test]
fn copy_file_range_between_files() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let data = pattern(3 * MB as usize + 17, 13);
    let a = mkfile(&fs, ROOT, b"a", &data);
    let b = mkfile(&fs, ROOT, b"b", b"prefix");
    let n = fs.copy_file_range(a, 100, b, 6, data.len() as u64).unwrap();
    assert_eq!(n, data.len() as u64 - 100);
    let all = read_all(&fs, b);
    assert_eq!(&all[..6], b"prefix");
    assert_eq!(&all[6..], &data[100..]);
}

#[test]
fn copy_file_range_within_one_file() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let data = pattern(100_000, 14);
    let a = mkfile(&fs, ROOT, b"a", &data);
    assert_eq!(
        fs.copy_file_range(a, 0, a, 200_000, 100_000).unwrap(),
        100_000
    );
    let all = read_all(&fs, a);
    assert_eq!(all.len(), 300_000);
    assert_eq!(&all[..100_000], &data[..]);
    assert!(all[100_000..200_000].iter().all(|&b| b == 0));
    assert_eq!(&all[200_000..], &data[..]);
}

#[test]
fn copy_file_range_from_eof_copies_nothing() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let a = mkfile(&fs, ROOT, b"a", b"abc");
    let b = mkfile(&fs, ROOT, b"b", b"");
    assert_eq!(fs.copy_file_range(a, 3, b, 0, 100).unwrap(), 0);
    assert_eq!(fs.getattr(b).unwrap().size, 0);
}

#[test]
fn many_small_extents_spill_into_extent_blocks_and_survive_remount() {
    let d = TestDev::new(64 * MB);
    let f = {
        let fs = d.mount();
        let f = new_file(&fs, b"f");
        // Every other block: 400 separate extents.
        for i in 0..400u64 {
            fs.write(f, i * 2 * BS, &[(i % 251) as u8 + 1; 4096], false)
                .unwrap();
        }
        f
    };
    let fs = d.mount();
    for i in [0u64, 4, 5, 6, 170, 171, 399] {
        assert_eq!(
            read_at(&fs, f, i * 2 * BS, 4096),
            vec![(i % 251) as u8 + 1; 4096]
        );
        assert_eq!(
            read_at(&fs, f, i * 2 * BS + BS, 1),
            if i == 399 { vec![] } else { vec![0] }
        );
    }
    // Truncating away every extent frees the extent blocks too.
    let a = truncate(&fs, f, 0).unwrap();
    assert_eq!(a.blocks, 0);
    let free = fs.statfs().bfree;
    drop(fs);
    let fs = d.mount();
    assert_eq!(fs.getattr(f).unwrap().blocks, 0);
    assert_eq!(fs.statfs().bfree, free);
    fs.write(f, 0, b"again", false).unwrap();
    assert_eq!(read_all(&fs, f), b"again");
}
