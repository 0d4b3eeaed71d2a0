//! Concurrency smoke test: threads writing their own files while others create and
//! unlink in one shared directory; the results and the block refcounts stay consistent.
use common::*;
use daxfs::ROOT;
use daxfs_testkit as common;
use std::sync::Arc;

const MB: u64 = 1 << 20;

#[test]
fn parallel_writers_and_namespace_churn_stay_consistent() {
    let d = TestDev::new(128 * MB);
    let fs = Arc::new(d.mount());
    let shared = fs.mkdir(ROOT, b"shared", 0o755, &root()).unwrap().ino;
    mkfile(&fs, ROOT, b"anchor", b"");
    let s0 = fs.statfs();
    let mut handles = Vec::new();
    // Writers: each fills its own file in unaligned chunks, with overwrites.
    for t in 0..3u8 {
        let fs = fs.clone();
        handles.push(std::thread::spawn(move || {
            let name = format!("w{t}");
            let a = fs
                .create(ROOT, name.as_bytes(), 0o644, libc::O_RDWR, &root())
                .unwrap();
            let data = pattern(3 * MB as usize, t);
            let mut off = 0;
            for (i, chunk) in data.chunks(10_007).enumerate() {
                fs.write(a.ino, off as u64, chunk, false).unwrap();
                if i % 5 == 0 {
                    let mut back = vec![0u8; chunk.len()];
                    fs.read(a.ino, off as u64, &mut back).unwrap();
                    assert_eq!(back, chunk);
                }
                off += chunk.len();
            }
            fs.release(a.ino).unwrap();
            assert_eq!(read_all(&fs, a.ino), data);
        }));
    }
    // Churners: create, write, rename, unlink in the shared directory.
    for t in 0..3u8 {
        let fs = fs.clone();
        handles.push(std::thread::spawn(move || {
            for i in 0..300 {
                let n = format!("c{t}-{i}");
                let ino = mkfile(&fs, shared, n.as_bytes(), &pattern(5000, i as u8));
                if i % 3 == 0 {
                    let m = format!("r{t}-{i}");
                    fs.rename(shared, n.as_bytes(), shared, m.as_bytes(), 0)
                        .unwrap();
                    fs.unlink(shared, m.as_bytes()).unwrap();
                } else if i % 3 == 1 {
                    assert_eq!(read_all(&fs, ino), pattern(5000, i as u8));
                    fs.unlink(shared, n.as_bytes()).unwrap();
                }
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    // Each churner left the i % 3 == 2 files: 100 each.
    let names = list(&fs, shared);
    assert_eq!(names.len(), 300);
    for (n, ino) in &names {
        let n = String::from_utf8(n.clone()).unwrap();
        let i: usize = n.rsplit('-').next().unwrap().parse().unwrap();
        assert_eq!(i % 3, 2, "{n}");
        assert_eq!(read_all(&fs, *ino), pattern(5000, i as u8));
    }
    let stats = fs.ref_table().stats();
    assert_eq!(stats.violations, 0);
    assert_eq!(stats.pins, stats.unpins);
    let census = fs.ref_table().census();
    assert_eq!(census.pinned, 0);
    assert_eq!(census.free, fs.statfs().bfree);
    // Remove everything: space and inodes return to where they started.
    for (n, _) in names {
        fs.unlink(shared, &n).unwrap();
    }
    for t in 0..3 {
        fs.unlink(ROOT, format!("w{t}").as_bytes()).unwrap();
    }
    let s1 = fs.statfs();
    assert_eq!(s1.ffree, s0.ffree);
    // The shared directory (empty at s0) keeps the blocks it grew; the rest is back.
    let dir_blocks = fs.getattr(shared).unwrap().blocks / 8;
    assert_eq!(s1.bfree + dir_blocks, s0.bfree);
    let census = fs.ref_table().census();
    assert_eq!(census.free, s1.bfree);
    drop(fs);
    let fs = d.mount();
    assert_eq!(fs.statfs(), s1);
    assert_eq!(fs.ref_table().stats().violations, 0);
}

#[test]
fn reads_racing_truncate_and_punch_see_data_or_zeros() {
    let d = TestDev::new(64 * MB);
    let fs = Arc::new(d.mount());
    let f = mkfile(&fs, ROOT, b"f", &[0x5a; 1 << 20]);
    let reader = {
        let fs = fs.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            for i in 0..2000u64 {
                let off = (i * 40_961) % (1 << 20);
                let n = fs.read(f, off, &mut buf).unwrap();
                assert!(buf[..n].iter().all(|&b| b == 0x5a || b == 0), "torn read");
            }
        })
    };
    for i in 0..200u64 {
        let c = daxfs::SetAttr {
            size: Some((i * 7919) % (1 << 20)),
            ..Default::default()
        };
        fs.setattr(f, &root(), &c).unwrap();
        fs.fallocate(
            f,
            4096,
            65536,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        )
        .unwrap();
        fs.write(f, 0, &[0x5a; 1 << 20], false).unwrap();
    }
    reader.join().unwrap();
    let stats = fs.ref_table().stats();
    assert_eq!(stats.violations, 0);
    assert_eq!(stats.pins, stats.unpins);
    assert_eq!(fs.ref_table().census().free, fs.statfs().bfree);
}
