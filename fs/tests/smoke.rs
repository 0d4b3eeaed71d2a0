use common::TestDev;
use daxfs::{Cred, Errno, FileKind, ROOT};
use daxfs_testkit as common;

#[test]
fn create_write_read_remount() {
    let d = TestDev::new(64 << 20);
    let c = Cred::root();
    {
        let fs = d.mount();
        let a = fs.create(ROOT, b"hello", 0o644, libc::O_RDWR, &c).unwrap();
        assert_eq!(fs.write(a.ino, 0, b"hello world", false).unwrap(), 11);
        let mut buf = [0u8; 64];
        assert_eq!(fs.read(a.ino, 0, &mut buf).unwrap(), 11);
        assert_eq!(&buf[..11], b"hello world");
        fs.release(a.ino).unwrap();
        fs.mkdir(ROOT, b"dir", 0o755, &c).unwrap();
        fs.shutdown().unwrap();
    }
    let fs = d.mount();
    let a = fs.lookup(ROOT, b"hello").unwrap();
    assert_eq!(a.size, 11);
    let mut buf = [0u8; 64];
    assert_eq!(fs.read(a.ino, 0, &mut buf).unwrap(), 11);
    assert_eq!(&buf[..11], b"hello world");
    assert_eq!(fs.lookup(ROOT, b"dir").unwrap().kind, FileKind::Dir);
    assert_eq!(fs.lookup(ROOT, b"nope").unwrap_err(), Errno::ENOENT);
}
