//! Pinned mappings hand out volatile views, never `&[u8]`/`&mut [u8]`: two mappings of
//! the same bytes, both writable, are sound (a race on the bytes, as with two
//! `MAP_SHARED` mappings), and the views refuse what their mapping does not allow.
//! (Before, `as_mut_slice` on two mappings of one range gave two live `&mut [u8]` to the
//! same bytes: undefined behaviour from safe code.)
use common::*;
use daxfs::{DaxFs, Errno, FsOptions, ROOT};
use daxfs_pmem::AccessError;
use daxfs_testkit as common;

const KB: u64 = 1 << 10;
const MB: u64 = 1 << 20;

fn assert_balanced(fs: &DaxFs) {
    let s = fs.stats();
    assert!(s.balanced(), "counters do not balance: {s:?}");
}

#[test]
fn two_writable_mappings_of_one_range_see_each_others_stores() {
    let d = TestDev::new(64 * MB);
    let fs = d.mount();
    let ino = mkfile(&fs, ROOT, b"f", &[0u8; 8192]);
    let mut m1 = fs.map_pinned(ino, 0, 8192).unwrap();
    let mut m2 = fs.map_pinned(ino, 0, 8192).unwrap();
    // Both writable views live at once, over the same device bytes.
    let a = m1.as_mut_slice().expect("contiguous, writable");
    let b = m2
        .as_mut_slice()
        .expect("a second writable mapping is allowed");
    assert_eq!(a.device_offset(), b.device_offset());
    a.write_at(100, b"from a").unwrap();
    let mut got = [0u8; 6];
    b.read_at(100, &mut got).unwrap();
    assert_eq!(&got, b"from a");
    b.write_at(100, b"b!").unwrap();
    a.read_at(100, &mut got).unwrap();
    assert_eq!(&got, b"b!om a");
    drop((m1, m2));
    let mut buf = [0u8; 6];
    fs.read(ino, 100, &mut buf).unwrap();
    assert_eq!(&buf, b"b!om a");
    assert_balanced(&fs);
}

#[test]
fn partly_overlapping_mappings_share_the_common_bytes() {
    let d = TestDev::new(64 * MB);
    let fs = d.mount();
    let ino = mkfile(&fs, ROOT, b"f", &[0u8; 16384]);
    let mut lo = fs.map_pinned(ino, 0, 8192).unwrap();
    let mut hi = fs.map_pinned(ino, 4096, 8192).unwrap();
    hi.write_at(0, b"shared").unwrap();
    let mut got = [0u8; 6];
    lo.read_at(4096, &mut got).unwrap();
    assert_eq!(&got, b"shared");
    lo.write_at(8190, b"xy").unwrap();
    hi.read_at(4094, &mut got[..2]).unwrap();
    assert_eq!(&got[..2], b"xy");
    drop((lo, hi));
    assert_balanced(&fs);
}

#[test]
fn read_only_views_refuse_stores() {
    let d = TestDev::new(64 * MB);
    let fs = d.mount();
    let ino = mkfile(&fs, ROOT, b"f", &pattern(8192, 3));
    let m = fs.map_pinned(ino, 0, 8192).unwrap();
    for v in m.segments().into_iter().chain(m.as_slice()) {
        assert!(!v.is_writable());
        assert_eq!(v.write_at(0, b"x"), Err(AccessError::ReadOnly));
        assert!(v.as_mut_ptr().is_none());
    }
    drop(m);
    assert_eq!(read_all(&fs, ino), pattern(8192, 3));
}

#[test]
fn a_mapping_on_a_read_only_mount_hands_out_no_writable_view() {
    let d = TestDev::new(64 * MB);
    let ino = {
        let fs = d.mount();
        mkfile(&fs, ROOT, b"f", &pattern(8192, 4))
    };
    let o = FsOptions {
        read_only: true,
        ..FsOptions::default()
    };
    let fs = DaxFs::mount(&d.path, o).unwrap();
    let mut m = fs.map_pinned(ino, 0, 8192).unwrap();
    assert!(!m.is_writable());
    assert!(m.as_mut_slice().is_none());
    assert!(m.segments_mut().is_empty());
    assert_eq!(m.write_at(0, b"x"), Err(Errno::EROFS));
    assert_eq!(m.to_vec(), pattern(8192, 4));
}

#[test]
fn mapping_reads_and_writes_span_its_segments() {
    let d = TestDev::new(64 * MB);
    let fs = d.mount();
    // Interleaved block writes to two files fragment both.
    let a = fs.create(ROOT, b"a", 0o644, libc::O_RDWR, &root()).unwrap();
    let b = fs.create(ROOT, b"b", 0o644, libc::O_RDWR, &root()).unwrap();
    for i in 0..4u64 {
        fs.write(a.ino, i * 4096, &[i as u8; 4096], false).unwrap();
        fs.write(b.ino, i * 4096, &[0xff; 4096], false).unwrap();
    }
    let mut m = fs.map_pinned(a.ino, 0, 4 * 4096).unwrap();
    assert!(!m.is_contiguous(), "the test needs a fragmented file");
    assert!(m.as_slice().is_none());
    let mut got = [0u8; 8];
    m.read_at(4096 - 4, &mut got).unwrap();
    assert_eq!(got, [0, 0, 0, 0, 1, 1, 1, 1]);
    m.write_at(2 * 4096 - 3, b"across").unwrap();
    drop(m);
    let mut buf = [0u8; 6];
    fs.read(a.ino, 2 * 4096 - 3, &mut buf).unwrap();
    assert_eq!(&buf, b"across");
    assert_eq!(read_all(&fs, b.ino), vec![0xff; 4 * 4096]);
    fs.release(a.ino).unwrap();
    fs.release(b.ino).unwrap();
    assert_balanced(&fs);
}

#[test]
fn mapping_accesses_past_its_end_are_einval() {
    let d = TestDev::new(64 * MB);
    let fs = d.mount();
    let ino = mkfile(&fs, ROOT, b"f", &pattern(64 * KB as usize, 6));
    let mut m = fs.map_pinned(ino, 4096, 8192).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(m.read_at(8192 - 8, &mut buf), Err(Errno::EINVAL));
    assert_eq!(m.read_at(usize::MAX, &mut buf), Err(Errno::EINVAL));
    assert_eq!(m.write_at(8190, b"abc"), Err(Errno::EINVAL));
    let v = m.as_slice().expect("contiguous");
    assert!(v.subslice(8000, 193).is_none());
    assert_eq!(v.read_at(8190, &mut buf[..3]), Err(AccessError::OutOfRange));
    drop(m);
    // The bytes after the mapping were not touched.
    assert_eq!(read_all(&fs, ino), pattern(64 * KB as usize, 6));
}
