//! Byte-exact encodings of one fixed instance of every structure, captured from the
//! encoder before the codec was shared and the offsets derived: a refactoring that
//! moves a single byte of the on-media format fails here.

use crate::*;

/// Renders `b` as one line per 16-byte row that is not all zero: `offset: hex`.
fn rows(b: &[u8]) -> String {
    let mut s = String::new();
    for (i, row) in b.chunks(16).enumerate() {
        if row.iter().any(|&x| x != 0) {
            let hex: String = row.iter().map(|x| format!("{x:02x}")).collect();
            s += &format!("{:04x}: {hex}\n", i * 16);
        }
    }
    s
}

fn superblock() -> Superblock {
    let p = MkfsParams {
        label: "golden".into(),
        journal_bytes: 0,
        inodes: 0,
        uuid: *b"0123456789abcdef",
        now_ns: 0x0102_0304_0506_0708,
    };
    let mut sb = Superblock::layout(64 << 20, &p).unwrap();
    sb.state = STATE_MOUNTED;
    sb.mount_time = 0x1111_2222_3333_4444;
    sb.mount_count = 7;
    sb
}

fn inode() -> DiskInode {
    let mut i = DiskInode::empty();
    i.mode = 0o100644;
    i.flags = IFLAG_DAX;
    i.uid = 1000;
    i.gid = 1001;
    i.nlink = 3;
    i.generation = 9;
    i.size = 0x1234_5678;
    i.blocks = 77;
    i.atime = Timespec { sec: 1, nsec: 2 };
    i.mtime = Timespec { sec: -3, nsec: 4 };
    i.ctime = Timespec { sec: 5, nsec: 6 };
    i.btime = Timespec {
        sec: 7,
        nsec: 999_999_999,
    };
    i.rdev = 0x0801;
    i.parent = 2;
    i.xattr_block = 600;
    i.extent_block = 601;
    i.extent_count = 7;
    i.inline[0] = Extent {
        lblk: 0,
        pblk: 1000,
        len: 8,
    };
    i.inline[4] = Extent {
        lblk: 100,
        pblk: 2000,
        len: 1,
    };
    i
}

#[test]
fn version_1_superblock_bytes_are_unchanged() {
    let mut sb = superblock();
    sb.version = VERSION_V1;
    let want = "\
        0000: 44415846535342000100000000100000\n\
        0010: 00000000000000000000000002000000\n\
        0020: 00400000000000003031323334353637\n\
        0030: 3839616263646566676f6c64656e0000\n\
        0070: 00000000000000000200000000000000\n\
        0080: 00010000000000000201000000000000\n\
        0090: 00020000000000000020000000000000\n\
        00a0: 02030000000000000100000000000000\n\
        00b0: 0004000000000000003c000000000000\n\
        00c0: 01000000000000000807060504030201\n\
        00d0: 44443333222211110700000000000000\n\
        01f0: 000000000000000000000000aafcf8eb\n\
        ";
    assert_eq!(rows(&sb.encode()), want);
}

#[test]
fn superblock_bytes_are_unchanged() {
    let want = "\
        0000: 44415846535342000200000000100000\n\
        0010: 00000000000000000000000002000000\n\
        0020: 00400000000000003031323334353637\n\
        0030: 3839616263646566676f6c64656e0000\n\
        0070: 00000000000000000200000000000000\n\
        0080: 00010000000000000201000000000000\n\
        0090: 00020000000000000020000000000000\n\
        00a0: 02030000000000000100000000000000\n\
        00b0: 0004000000000000003c000000000000\n\
        00c0: 01000000000000000807060504030201\n\
        00d0: 44443333222211110700000000000000\n\
        01f0: 000000000000000000000000afdc051f\n\
        ";
    assert_eq!(rows(&superblock().encode()), want);
}

#[test]
fn inode_bytes_are_unchanged() {
    let want = "\
        0000: a481000002000000e8030000e9030000\n\
        0010: 03000000090000007856341200000000\n\
        0020: 4d000000000000000100000000000000\n\
        0030: 0200000004000000fdffffffffffffff\n\
        0040: 050000000000000006000000ffc99a3b\n\
        0050: 07000000000000000108000000000000\n\
        0060: 02000000000000005802000000000000\n\
        0070: 59020000000000000700000000000000\n\
        0080: 0000000000000000e803000000000000\n\
        0090: 0800000075a01a1d0000000000000000\n\
        00e0: 6400000000000000d007000000000000\n\
        00f0: 01000000c3c707a300000000cdb345b6\n\
        ";
    assert_eq!(rows(&inode().encode()), want);
}

#[test]
fn extent_block_header_bytes_are_unchanged() {
    let want = "\
        0000: 44584558c5535d9d0d0c0b0a00000000\n\
        0010: 0c00000000000000\n\
        ";
    assert_eq!(rows(&encode_extent_block_header(0x0a0b_0c0d, 12)), want);
}

#[test]
fn dir_block_header_bytes_are_unchanged() {
    let want = "\
        0000: 445844521c48990c0c00000000000000\n\
        0010: 03000000000000000000000000000000\n\
        ";
    assert_eq!(rows(&encode_dir_block_header(12, 3)), want);
}

#[test]
fn dirent_bytes_are_unchanged() {
    let want = "\
        0000: 2a00000000000000ea7daf903b000802\n\
        0010: 612d6e616d652d6c6f6e6765722d7468\n\
        0020: 616e2d6f6e652d736c6f742d6f662d73\n\
        0030: 697874792d666f75722d62797465732d\n\
        0040: 746f2d7370616e2d74776f0000000000\n\
        ";
    assert_eq!(
        rows(&encode_dirent(
            42,
            8,
            b"a-name-longer-than-one-slot-of-sixty-four-bytes-to-span-two"
        )),
        want
    );
}

#[test]
fn xattr_block_bytes_are_unchanged() {
    let entries = vec![
        (b"user.colour".to_vec(), b"blue".to_vec()),
        (b"trusted.x".to_vec(), vec![0, 1, 2, 0xff]),
    ];
    let want = "\
        0000: 44585841b95aa2350c00000000000000\n\
        0010: 24000000020000000b00040075736572\n\
        0020: 2e636f6c6f7572626c75650900040074\n\
        0030: 7275737465642e78000102ff00000000\n\
        ";
    assert_eq!(rows(&encode_xattr_block(12, &entries).unwrap()), want);
}

#[test]
fn bitmap_block_bytes_are_unchanged() {
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    b[0] = 0x0f;
    b[100] = 0x80;
    b[4079] = 0xff;
    seal_bitmap_block(&mut b, 5);
    let want = "\
        0000: 0f000000000000000000000000000000\n\
        0060: 00000000800000000000000000000000\n\
        0fe0: 000000000000000000000000000000ff\n\
        0ff0: 4458424d0500000000000000472231e5\n\
        ";
    assert_eq!(rows(&b), want);
}
