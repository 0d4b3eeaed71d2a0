//! A directory of 100,000 entries: create, lookup, readdir (each entry once, resumable),
//! remove all. Timings are printed (run with --nocapture), not asserted.
use common::*;
use daxfs::ROOT;
use daxfs_testkit as common;
use std::collections::HashSet;
use std::time::Instant;

const N: usize = 100_000;

fn name(i: usize) -> Vec<u8> {
    format!("entry-{i:06}").into_bytes()
}

#[test]
fn directory_of_100000_entries() {
    let d = TestDev::with_params(256 << 20, 110_000);
    let fs = d.mount();
    let dir = fs.mkdir(ROOT, b"big", 0o755, &root()).unwrap().ino;
    let s0 = fs.statfs();

    let t = Instant::now();
    let mut inos = Vec::with_capacity(N);
    for i in 0..N {
        let a = fs
            .mknod(dir, &name(i), libc::S_IFREG | 0o644, 0, &root())
            .unwrap();
        inos.push(a.ino);
    }
    let t_create = t.elapsed();

    let t = Instant::now();
    for i in (0..N).step_by(97) {
        assert_eq!(fs.lookup(dir, &name(i)).unwrap().ino, inos[i]);
    }
    let t_lookup = t.elapsed();

    // Whole listing: each entry exactly once.
    let t = Instant::now();
    let mut seen = HashSet::with_capacity(N);
    let mut mid_cookie = 0;
    let mut count = 0;
    fs.readdir(dir, 2, |e| {
        assert!(seen.insert(e.name.clone()), "duplicate entry");
        count += 1;
        if count == N / 2 {
            mid_cookie = e.next_offset;
        }
        true
    })
    .unwrap();
    let t_readdir = t.elapsed();
    assert_eq!(seen.len(), N);
    // Resuming from the middle gives exactly the other half.
    let mut rest = 0;
    fs.readdir(dir, mid_cookie, |e| {
        assert!(seen.contains(&e.name));
        rest += 1;
        true
    })
    .unwrap();
    assert_eq!(rest, N - N / 2);

    // Survives remount.
    drop(fs);
    let t = Instant::now();
    let fs = d.mount();
    let t_mount = t.elapsed();
    assert_eq!(fs.lookup(dir, &name(N - 1)).unwrap().ino, inos[N - 1]);

    let t = Instant::now();
    for i in 0..N {
        fs.unlink(dir, &name(i)).unwrap();
    }
    let t_unlink = t.elapsed();
    assert!(list(&fs, dir).is_empty());
    assert_eq!(fs.statfs().ffree, s0.ffree);
    fs.rmdir(ROOT, b"big").unwrap();
    assert_eq!(fs.ref_table().stats().violations, 0);
    println!(
        "100k dir: create {:?} ({:.1} us/op), lookup {} in {:?}, readdir {:?}, mount {:?}, unlink {:?} ({:.1} us/op)",
        t_create,
        t_create.as_secs_f64() * 1e6 / N as f64,
        N / 97 + 1,
        t_lookup,
        t_readdir,
        t_mount,
        t_unlink,
        t_unlink.as_secs_f64() * 1e6 / N as f64
    );
}
