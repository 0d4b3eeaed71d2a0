//! The FUSE adapter behind a real mount, in-process (fuser's background session): what
//! the kernel actually sends, end to end, through the adapter's public surface. Needs root
//! and /dev/fuse; each test is skipped (loudly) without.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking

use daxfs::DaxFs;
use daxfs::InodeFlags;
use daxfs::{DaxMode, FsOptions};
use daxfs_fuse::adapter::{
    encode_fsxattr, FuseAdapter, FSXATTR_SIZE, FS_DAX_FL, FS_IOC_FSGETXATTR, FS_IOC_FSSETXATTR,
    FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_XFLAG_DAX,
};
use daxfs_fuse::ioctl;
use daxfs_testkit::TestDev;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A formatted emulated device mounted at a fresh directory; unmounted and removed on
/// drop, also when the test fails.
struct Mounted {
    session: Option<fuser::BackgroundSession>,
    fs: Arc<DaxFs>,
    dir: PathBuf,
    // Last: the device file is removed after the unmount.
    _dev: TestDev,
}

impl Mounted {
    fn new(dax: DaxMode) -> Option<Mounted> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root
            || fs::File::options()
                .read(true)
                .write(true)
                .open("/dev/fuse")
                .is_err()
        {
            eprintln!("SKIPPED: mounting needs root and /dev/fuse");
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "daxfs-fuse-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let dev = TestDev::new(64 << 20);
        let o = FsOptions {
            dax,
            ..FsOptions::default()
        };
        let fs = Arc::new(DaxFs::mount(&dev.path, o).expect("core mount"));
        fs::create_dir(&dir).expect("mountpoint");
        let mut m = Mounted {
            session: None,
            fs,
            dir,
            _dev: dev,
        };
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![
            fuser::MountOption::FSName(m._dev.path.display().to_string()),
            fuser::MountOption::DefaultPermissions,
        ];
        cfg.n_threads = Some(2);
        let adapter = FuseAdapter::new(m.fs.clone());
        let slot = adapter.notifier_slot();
        let session = fuser::spawn_mount(adapter, &m.dir, &cfg).expect("mount");
        *slot.lock().expect("notifier slot") = Some(session.notifier());
        m.session = Some(session);
        Some(m)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
        let _ = self.fs.shutdown();
        let _ = fs::remove_dir(&self.dir);
    }
}

fn errno_of<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

#[test]
fn files_written_through_the_mount_read_back_and_list() {
    let Some(m) = Mounted::new(DaxMode::Always) else {
        return;
    };
    fs::write(m.path("a"), b"hello").expect("write");
    assert_eq!(fs::read(m.path("a")).expect("read"), b"hello");
    fs::create_dir(m.path("d")).expect("mkdir");
    let mut names: Vec<_> = fs::read_dir(&m.dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "d"]);
    fs::rename(m.path("a"), m.path("d/b")).expect("rename");
    assert_eq!(fs::metadata(m.path("d/b")).expect("stat").len(), 5);
    assert_eq!(errno_of(fs::remove_dir(m.path("d"))), Some(libc::ENOTEMPTY));
}

#[test]
fn a_large_read_spanning_many_extents_comes_back_whole() {
    let Some(m) = Mounted::new(DaxMode::Always) else {
        return;
    };
    let data: Vec<u8> = (0..(3u32 << 20))
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    let f = fs::File::create(m.path("big")).expect("create");
    // Odd chunks first, then even ones: the file's extents interleave.
    use std::os::unix::fs::FileExt;
    for pass in 0..2 {
        for (i, c) in data.chunks(64 << 10).enumerate() {
            if i % 2 == pass {
                f.write_all_at(c, (i * (64 << 10)) as u64).expect("pwrite");
            }
        }
    }
    drop(f);
    assert!(fs::read(m.path("big")).expect("read") == data);
}

#[test]
fn o_append_writes_land_at_the_true_end_of_file() {
    let Some(m) = Mounted::new(DaxMode::Always) else {
        return;
    };
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    fs::write(m.path("log"), b"0123").expect("write");
    let mut a = fs::File::options()
        .append(true)
        .open(m.path("log"))
        .expect("open append");
    let b = fs::File::options()
        .write(true)
        .open(m.path("log"))
        .expect("open");
    b.write_all_at(b"xy", 8)
        .expect("extend through another handle");
    a.write_all(b"AB").expect("append");
    assert_eq!(fs::read(m.path("log")).expect("read"), b"0123\0\0\0\0xyAB");
}

#[test]
fn umask_is_applied_once_by_the_kernel() {
    let Some(m) = Mounted::new(DaxMode::Always) else {
        return;
    };
    // In a child shell: umask is per process, and other tests run in this one.
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 027 && : > \"$1/f\" && mkdir \"$1/d\"")
        .arg("sh")
        .arg(&m.dir)
        .status()
        .expect("sh");
    assert!(st.success());
    let mode = |p: &str| fs::metadata(m.path(p)).expect("stat").mode() & 0o7777;
    // The shell creates with 0o666 and mkdir with 0o777.
    assert_eq!(mode("f"), 0o640);
    assert_eq!(mode("d"), 0o750);
}

#[test]
fn xattrs_probe_size_and_report_erange() {
    let Some(m) = Mounted::new(DaxMode::Always) else {
        return;
    };
    fs::write(m.path("x"), b"").expect("create");
    let p = std::ffi::CString::new(m.path("x").into_os_string().into_vec()).expect("path");
    let (name, value) = (c"user.k", b"value");
    // SAFETY: valid C strings and a buffer of the given length.
    unsafe {
        let r = libc::setxattr(p.as_ptr(), name.as_ptr(), value.as_ptr().cast(), 5, 0);
        assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
        assert_eq!(
            libc::getxattr(p.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0),
            5
        );
        let mut small = [0u8; 2];
        let r = libc::getxattr(p.as_ptr(), name.as_ptr(), small.as_mut_ptr().cast(), 2);
        assert_eq!(r, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ERANGE)
        );
        let mut buf = [0u8; 16];
        let r = libc::getxattr(p.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 16);
        assert_eq!(&buf[..r as usize], value);
    }
}

#[test]
fn fsxattr_ioctl_sets_and_reads_the_dax_flag() {
    let Some(m) = Mounted::new(DaxMode::Inode) else {
        return;
    };
    fs::write(m.path("f"), b"data").expect("create");
    let f = fs::File::open(m.path("f")).expect("open");
    let get = |f: &fs::File| {
        let mut b = [0u8; FSXATTR_SIZE];
        // SAFETY: the buffer is the size the ioctl number encodes.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSGETXATTR as _, b.as_mut_ptr()) };
        assert_eq!(r, 0, "FSGETXATTR: {}", std::io::Error::last_os_error());
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) & FS_XFLAG_DAX != 0
    };
    use std::os::fd::AsRawFd;
    assert!(!get(&f));
    let b = encode_fsxattr(InodeFlags {
        dax: true,
        ..InodeFlags::default()
    });
    // SAFETY: as above.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSSETXATTR as _, b.as_ptr()) };
    assert_eq!(r, 0, "FSSETXATTR: {}", std::io::Error::last_os_error());
    assert!(get(&f));
    assert!(!m
        .fs
        .kernel_may_cache(fs::metadata(m.path("f")).expect("stat").ino()));
}

#[test]
fn inode_flags_ioctl_sets_and_reads_the_dax_flag_as_chattr_does() {
    let Some(m) = Mounted::new(DaxMode::Inode) else {
        return;
    };
    fs::write(m.path("f"), b"data").expect("create");
    let f = fs::File::open(m.path("f")).expect("open");
    use std::os::fd::AsRawFd;
    let get = |f: &fs::File| {
        let mut flags: libc::c_int = -1;
        // SAFETY: the kernel writes one int (what the FUSE client transfers).
        let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_GETFLAGS as _, &mut flags) };
        assert_eq!(r, 0, "GETFLAGS: {}", std::io::Error::last_os_error());
        flags as u32
    };
    let set = |f: &fs::File, flags: u32| {
        let v = flags as libc::c_int;
        // SAFETY: the kernel reads one int.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_SETFLAGS as _, &v) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error())
        }
    };
    assert_eq!(get(&f), 0);
    assert_eq!(set(&f, FS_DAX_FL), Ok(()));
    assert_eq!(get(&f), FS_DAX_FL);
    assert!(!m
        .fs
        .kernel_may_cache(fs::metadata(m.path("f")).expect("stat").ino()));
    let noatime = 0x80;
    assert_eq!(set(&f, noatime), Err(Some(libc::EOPNOTSUPP)));
    assert_eq!(get(&f), FS_DAX_FL, "a refused change changes nothing");
    assert_eq!(set(&f, 0), Ok(()));
    assert_eq!(get(&f), 0);
}

#[test]
fn rename_noreplace_refuses_and_whiteout_is_invalid() {
    let Some(m) = Mounted::new(DaxMode::Always) else {
        return;
    };
    fs::write(m.path("a"), b"a").expect("a");
    fs::write(m.path("b"), b"b").expect("b");
    let c = |n: &str| std::ffi::CString::new(m.path(n).into_os_string().into_vec()).expect("path");
    let rename = |flags: libc::c_uint| {
        // SAFETY: valid C strings.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                c("a").as_ptr(),
                libc::AT_FDCWD,
                c("b").as_ptr(),
                flags,
            )
        };
        if r == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        }
    };
    assert_eq!(rename(libc::RENAME_NOREPLACE), libc::EEXIST);
    assert_eq!(rename(libc::RENAME_EXCHANGE), 0);
    assert_eq!(fs::read(m.path("a")).expect("a"), b"b");
    // The VFS may refuse RENAME_WHITEOUT before asking us (EPERM without CAP_MKNOD).
    assert!(matches!(
        rename(libc::RENAME_WHITEOUT),
        libc::EINVAL | libc::EPERM
    ));
}

/// Polls `cond` for up to 5 s (FUSE release and notifications are asynchronous).
fn eventually(cond: impl Fn() -> bool) -> bool {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

#[test]
fn pins_taken_through_a_handle_are_released_with_it() {
    let Some(m) = Mounted::new(DaxMode::Always) else {
        return;
    };
    fs::write(m.path("f"), vec![7u8; 64 << 10]).expect("write");
    let f = fs::File::open(m.path("f")).expect("open");
    ioctl::pin_file(&f, 0, 8192).expect("pin");
    ioctl::pin_file(&f, 4096, 4096).expect("second pin");
    assert_eq!(m.fs.stats().pins_active(), 2);
    let e = ioctl::unpin_file(&f, 0, 4096).expect_err("no such pin");
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    ioctl::unpin_file(&f, 4096, 4096).expect("unpin");
    assert_eq!(m.fs.stats().pins_active(), 1);
    let e = ioctl::pin_file(&f, 60 << 10, 8192).expect_err("past EOF");
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    drop(f);
    assert!(eventually(|| m.fs.stats().pins_active() == 0));
    assert!(m.fs.stats().balanced(), "{:?}", m.fs.stats());
}

#[test]
fn stats_ioctl_answers_on_the_mount_root() {
    let Some(m) = Mounted::new(DaxMode::Always) else {
        return;
    };
    let s = ioctl::read_stats(&m.dir).expect("DAXFS_IOC_STATS");
    assert_eq!(s.blocks_total, m.fs.stats().blocks_total);
    assert!(s.balanced());
}

#[test]
fn a_layout_break_drops_the_kernels_cached_pages_of_the_range() {
    let Some(m) = Mounted::new(DaxMode::Never) else {
        return;
    };
    fs::write(m.path("c"), vec![b'a'; 8192]).expect("write");
    // Cached by the kernel now.
    assert_eq!(fs::read(m.path("c")).expect("read"), vec![b'a'; 8192]);
    let ino = fs::metadata(m.path("c")).expect("stat").ino();
    // Punched behind the kernel's back, through the core: only the notification
    // (not the attribute TTL, 1 s) can make the kernel forget the old bytes this soon.
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    m.fs.fallocate(ino, 0, 4096, punch).expect("punch");
    std::thread::sleep(Duration::from_millis(100));
    let back = fs::read(m.path("c")).expect("read");
    assert_eq!(&back[..4096], &[0u8; 4096][..], "stale cached bytes");
    assert_eq!(&back[4096..], &[b'a'; 4096][..]);
}

#[test]
fn seek_data_and_hole_find_the_written_block() {
    let Some(m) = Mounted::new(DaxMode::Always) else {
        return;
    };
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let f = fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("s"))
        .expect("create");
    f.write_all_at(&[1u8; 4096], 1 << 20).expect("pwrite");
    // SAFETY: lseek on an open fd.
    let seek = |w| unsafe { libc::lseek(f.as_raw_fd(), 0, w) };
    assert_eq!(seek(libc::SEEK_DATA), 1 << 20);
    assert_eq!(seek(libc::SEEK_HOLE), 0);
}
