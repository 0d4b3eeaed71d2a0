//! fallocate(2) modes through the core API, with Linux's results and errnos.
use common::*;
use daxfs::{DaxFs, Errno, ROOT};
use daxfs_testkit as common;

const MB: u64 = 1 << 20;
const BS: u64 = 4096;
const KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE;
const COLLAPSE_RANGE: i32 = libc::FALLOC_FL_COLLAPSE_RANGE;
const ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE;
const INSERT_RANGE: i32 = libc::FALLOC_FL_INSERT_RANGE;

/// A filesystem whose root already has its directory block, and a file `f` with `data`.
fn with_file(d: &TestDev, data: &[u8]) -> (DaxFs, u64) {
    let fs = d.mount();
    let f = mkfile(&fs, ROOT, b"f", data);
    (fs, f)
}

#[test]
fn mode_0_grows_the_file_with_zeros() {
    let d = TestDev::new(32 * MB);
    let (fs, f) = with_file(&d, b"abc");
    let free0 = fs.statfs().bfree;
    fs.fallocate(f, 0, 10 * BS, 0).unwrap();
    let a = fs.getattr(f).unwrap();
    assert_eq!(a.size, 10 * BS);
    assert_eq!(a.blocks, 10 * 8);
    assert_eq!(fs.statfs().bfree, free0 - 9);
    let all = read_all(&fs, f);
    assert_eq!(&all[..3], b"abc");
    assert!(all[3..].iter().all(|&b| b == 0));
}

#[test]
fn mode_0_inside_the_file_keeps_size_and_data() {
    let d = TestDev::new(32 * MB);
    let data = pattern(5 * BS as usize, 1);
    let (fs, f) = with_file(&d, &data);
    fs.fallocate(f, BS, BS, 0).unwrap();
    assert_eq!(read_all(&fs, f), data);
}

#[test]
fn keep_size_allocates_blocks_without_changing_size() {
    let d = TestDev::new(32 * MB);
    let (fs, f) = with_file(&d, b"abc");
    fs.fallocate(f, 0, 8 * BS, KEEP_SIZE).unwrap();
    let a = fs.getattr(f).unwrap();
    assert_eq!(a.size, 3);
    assert_eq!(a.blocks, 8 * 8);
    // Growing the size later exposes zeros, not stale data.
    fs.write(f, 5 * BS, b"x", false).unwrap();
    let all = read_all(&fs, f);
    assert_eq!(&all[..3], b"abc");
    assert!(all[3..5 * BS as usize].iter().all(|&b| b == 0));
}

#[test]
fn punch_hole_zeros_the_range_and_frees_whole_blocks() {
    let d = TestDev::new(32 * MB);
    let data = pattern(8 * BS as usize, 2);
    let (fs, f) = with_file(&d, &data);
    let free0 = fs.statfs().bfree;
    let blocks0 = fs.getattr(f).unwrap().blocks;
    // From the middle of block 1 to the middle of block 5: blocks 2..5 leave.
    let (off, len) = (BS + 100, 4 * BS);
    fs.fallocate(f, off, len, PUNCH_HOLE | KEEP_SIZE).unwrap();
    let a = fs.getattr(f).unwrap();
    assert_eq!(a.size, 8 * BS);
    assert_eq!(a.blocks, blocks0 - 3 * 8);
    assert_eq!(fs.statfs().bfree, free0 + 3);
    let mut want = data.clone();
    want[off as usize..(off + len) as usize].fill(0);
    assert_eq!(read_all(&fs, f), want);
}

#[test]
fn punch_hole_without_keep_size_is_eopnotsupp() {
    let d = TestDev::new(32 * MB);
    let (fs, f) = with_file(&d, &[1u8; 8192]);
    assert_eq!(
        fs.fallocate(f, 0, 4096, PUNCH_HOLE).unwrap_err(),
        Errno::EOPNOTSUPP
    );
}

#[test]
fn punch_hole_in_a_hole_changes_nothing() {
    let d = TestDev::new(32 * MB);
    let (fs, f) = with_file(&d, b"");
    fs.write(f, 10 * BS, b"end", false).unwrap();
    fs.fallocate(f, 0, 5 * BS, PUNCH_HOLE | KEEP_SIZE).unwrap();
    assert_eq!(fs.getattr(f).unwrap().size, 10 * BS + 3);
    assert_eq!(&read_all(&fs, f)[10 * BS as usize..], b"end");
}

#[test]
fn zero_range_zeros_bytes_and_keeps_blocks_allocated() {
    let d = TestDev::new(32 * MB);
    let data = pattern(6 * BS as usize, 3);
    let (fs, f) = with_file(&d, &data);
    let (off, len) = (1000, 3 * BS);
    fs.fallocate(f, off, len, ZERO_RANGE).unwrap();
    let mut want = data.clone();
    want[off as usize..(off + len) as usize].fill(0);
    assert_eq!(read_all(&fs, f), want);
    let a = fs.getattr(f).unwrap();
    assert_eq!(a.size, 6 * BS);
    assert_eq!(a.blocks, 6 * 8);
}

#[test]
fn zero_range_beyond_eof_grows_the_file_unless_keep_size() {
    let d = TestDev::new(32 * MB);
    let (fs, f) = with_file(&d, b"abc");
    fs.fallocate(f, 2 * BS, BS, ZERO_RANGE | KEEP_SIZE).unwrap();
    assert_eq!(fs.getattr(f).unwrap().size, 3);
    fs.fallocate(f, 2 * BS, BS, ZERO_RANGE).unwrap();
    assert_eq!(fs.getattr(f).unwrap().size, 3 * BS);
    let all = read_all(&fs, f);
    assert_eq!(&all[..3], b"abc");
    assert!(all[3..].iter().all(|&b| b == 0));
}

#[test]
fn collapse_range_shifts_later_data_down() {
    let d = TestDev::new(32 * MB);
    let data = pattern(10 * BS as usize, 4);
    let (fs, f) = with_file(&d, &data);
    fs.fallocate(f, 2 * BS, 3 * BS, COLLAPSE_RANGE).unwrap();
    let mut want = data[..2 * BS as usize].to_vec();
    want.extend_from_slice(&data[5 * BS as usize..]);
    assert_eq!(fs.getattr(f).unwrap().size, 7 * BS);
    assert_eq!(read_all(&fs, f), want);
    assert_eq!(fs.getattr(f).unwrap().blocks, 7 * 8);
}

#[test]
fn collapse_range_unaligned_is_einval() {
    let d = TestDev::new(32 * MB);
    let (fs, f) = with_file(&d, &[1u8; 10 * 4096]);
    assert_eq!(
        fs.fallocate(f, 100, BS, COLLAPSE_RANGE).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        fs.fallocate(f, 0, 100, COLLAPSE_RANGE).unwrap_err(),
        Errno::EINVAL
    );
}

#[test]
fn collapse_range_reaching_eof_is_einval() {
    let d = TestDev::new(32 * MB);
    let (fs, f) = with_file(&d, &[1u8; 4 * 4096]);
    assert_eq!(
        fs.fallocate(f, 2 * BS, 2 * BS, COLLAPSE_RANGE).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        fs.fallocate(f, 2 * BS, 4 * BS, COLLAPSE_RANGE).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(fs.getattr(f).unwrap().size, 4 * BS);
}

#[test]
fn insert_range_shifts_data_up_leaving_a_hole() {
    let d = TestDev::new(32 * MB);
    let data = pattern(4 * BS as usize, 5);
    let (fs, f) = with_file(&d, &data);
    fs.fallocate(f, BS, 2 * BS, INSERT_RANGE).unwrap();
    let mut want = data[..BS as usize].to_vec();
    want.extend_from_slice(&[0u8; 2 * 4096]);
    want.extend_from_slice(&data[BS as usize..]);
    assert_eq!(fs.getattr(f).unwrap().size, 6 * BS);
    assert_eq!(read_all(&fs, f), want);
}

#[test]
fn insert_range_at_or_past_eof_is_einval() {
    let d = TestDev::new(32 * MB);
    let (fs, f) = with_file(&d, &[1u8; 4 * 4096]);
    assert_eq!(
        fs.fallocate(f, 4 * BS, BS, INSERT_RANGE).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        fs.fallocate(f, 8 * BS, BS, INSERT_RANGE).unwrap_err(),
        Errno::EINVAL
    );
}

#[test]
fn collapse_and_insert_survive_remount() {
    let d = TestDev::new(32 * MB);
    let data = pattern(12 * BS as usize, 6);
    let want = {
        let (fs, f) = with_file(&d, &data);
        fs.fallocate(f, 2 * BS, BS, COLLAPSE_RANGE).unwrap();
        fs.fallocate(f, 5 * BS, 3 * BS, INSERT_RANGE).unwrap();
        read_all(&fs, f)
    };
    let fs = d.mount();
    let f = fs.lookup(ROOT, b"f").unwrap().ino;
    assert_eq!(read_all(&fs, f), want);
    assert_eq!(fs.ref_table().stats().violations, 0);
}

#[test]
fn unknown_mode_bits_are_eopnotsupp() {
    let d = TestDev::new(32 * MB);
    let (fs, f) = with_file(&d, b"abc");
    assert_eq!(
        fs.fallocate(f, 0, BS, 0x4000).unwrap_err(),
        Errno::EOPNOTSUPP
    );
}

#[test]
fn zero_length_is_einval() {
    let d = TestDev::new(32 * MB);
    let (fs, f) = with_file(&d, b"abc");
    assert_eq!(fs.fallocate(f, 0, 0, 0).unwrap_err(), Errno::EINVAL);
}

#[test]
fn fallocate_of_a_directory_is_eisdir() {
    let d = TestDev::new(32 * MB);
    let fs = d.mount();
    let dir = fs.mkdir(ROOT, b"d", 0o755, &root()).unwrap();
    assert_eq!(fs.fallocate(dir.ino, 0, BS, 0).unwrap_err(), Errno::EISDIR);
}

#[test]
fn fallocate_beyond_16_tib_is_efbig() {
    let d = TestDev::new(32 * MB);
    let (fs, f) = with_file(&d, b"");
    let max = daxfs::MAX_FILE_SIZE;
    assert_eq!(fs.fallocate(f, max, BS, 0).unwrap_err(), Errno::EFBIG);
}
