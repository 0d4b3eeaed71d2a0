#!/usr/bin/env python3
"""Damage to one metadata object of an unmounted daxfs image, and the check that the
rest survived (tests/daxfs/065, 066).

  damage.py sums DIR            one line per regular file under DIR:
                                "ino md5(data) md5(xattrs)", sorted by inode
  damage.py hit IMAGE SEED N    changes damage N of seed SEED in IMAGE (one byte of, or
                                all of, one inode slot, inode table block, directory
                                block, extent block or xattr block; the layout is read
                                from the image as docs/FORMAT.md describes it) and
                                prints "what|inodes whose data it may cost|inodes whose
                                xattrs it may cost"
  damage.py verify DIR SUMS LOST XLOST
                                compares DIR with SUMS: every file but those in LOST
                                (comma-separated inodes) must be there with its data,
                                and its xattrs unless in XLOST; prints "ok N" (files
                                checked) or what differs
"""
import hashlib
import os
import random
import struct
import sys

BS = 4096
ISIZE = 256
EXT_HDR = 24
EXT_SIZE = 24
EXT_PER_BLOCK = 169


def sums(root):
    out = {}
    for d, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            st = os.lstat(p)
            if not os.path.isfile(p) or os.path.islink(p) or st.st_ino in out:
                continue
            with open(p, "rb") as fh:
                data = hashlib.md5(fh.read()).hexdigest()
            xs = hashlib.md5()
            for n in sorted(os.listxattr(p, follow_symlinks=False)):
                xs.update(n.encode() + b"=" + os.getxattr(p, n, follow_symlinks=False) + b";")
            out[st.st_ino] = (data, xs.hexdigest())
    return out


def u32(b, o):
    return struct.unpack_from("<I", b, o)[0]


def u64(b, o):
    return struct.unpack_from("<Q", b, o)[0]


def layout(img):
    sb = img[:512]
    return {
        "itable": u64(sb, 136),
        "itable_blocks": u64(sb, 144),
        "icount": u64(sb, 152),
    }


def objects(img):
    """(inode slots in use, dir blocks, extent blocks, xattr blocks) with owners."""
    g = layout(img)
    used, dirs, exts, xattrs = [], [], [], []
    for ino in range(1, g["icount"]):
        o = g["itable"] * BS + ino * ISIZE
        if not any(img[o:o + 4]):
            continue
        slot = img[o:o + ISIZE]
        mode = u32(slot, 0)
        used.append(ino)
        if u64(slot, 104):
            xattrs.append((u64(slot, 104), ino))
        extents = []
        for i in range(5):
            e = 128 + i * EXT_SIZE
            if u32(slot, e + 16):
                extents.append((u64(slot, e + 8), u32(slot, e + 16)))
        nxt, seen = u64(slot, 112), set()
        while nxt and nxt not in seen and (nxt + 1) * BS <= len(img):
            seen.add(nxt)
            exts.append((nxt, ino))
            blk = img[nxt * BS:(nxt + 1) * BS]
            for j in range(EXT_PER_BLOCK):
                e = EXT_HDR + j * EXT_SIZE
                if u32(blk, e + 16):
                    extents.append((u64(blk, e + 8), u32(blk, e + 16)))
            nxt = u64(blk, 8)
        if mode & 0o170000 == 0o040000:
            for pblk, n in extents:
                dirs.extend((pblk + k, ino) for k in range(n))
    return g, used, dirs, exts, xattrs


def hit(path, seed, n):
    rng = random.Random(seed * 1_000_003 + n)
    with open(path, "r+b") as f:
        img = bytearray(f.read())
    g, used, dirs, exts, xattrs = objects(img)
    zero = rng.randrange(8) == 0
    lost, xlost = set(), set()
    kind = rng.randrange(4)
    if kind == 0 and zero and rng.randrange(2) == 0:
        per = BS // ISIZE
        tb = rng.randrange(max(used) // per + 1)
        lost.update(range(tb * per, tb * per + per))
        what, base, size = "inode table block %d" % tb, (g["itable"] + tb) * BS, BS
    elif kind == 0:
        ino = rng.choice(used)
        lost.add(ino)
        what, base, size = "inode %d" % ino, g["itable"] * BS + ino * ISIZE, ISIZE
    elif kind == 1:
        b, ino = rng.choice(dirs)
        what, base, size = "directory block of inode %d" % ino, b * BS, BS
    elif kind == 2:
        b, ino = rng.choice(exts)
        lost.add(ino)
        what, base, size = "extent block of inode %d" % ino, b * BS, BS
    else:
        b, ino = rng.choice(xattrs)
        xlost.add(ino)
        what, base, size = "xattr block of inode %d" % ino, b * BS, BS
    if zero:
        img[base:base + size] = bytes(size)
        what = "zeroed " + what
    else:
        at = rng.randrange(size)
        img[base + at] ^= rng.randrange(1, 256)
        what = "byte %d of %s" % (at, what)
    with open(path, "r+b") as f:
        f.write(img)
    print("%s|%s|%s" % (what, ",".join(map(str, sorted(lost))), ",".join(map(str, sorted(xlost)))))


def verify(root, sums_file, lost, xlost):
    lost = {int(x) for x in lost.split(",") if x}
    xlost = {int(x) for x in xlost.split(",") if x}
    want = {}
    with open(sums_file) as f:
        for line in f:
            ino, data, xs = line.split()
            want[int(ino)] = (data, xs)
    got = sums(root)
    bad, checked = [], 0
    for ino, (data, xs) in sorted(want.items()):
        if ino in lost:
            continue
        if ino not in got:
            bad.append("file %d is gone" % ino)
        elif got[ino][0] != data:
            bad.append("file %d: data changed" % ino)
        elif ino not in xlost and got[ino][1] != xs:
            bad.append("file %d: xattrs changed" % ino)
        else:
            checked += 1
    print("; ".join(bad) if bad else "ok %d" % checked)


def main():
    cmd = sys.argv[1]
    if cmd == "sums":
        for ino, (data, xs) in sorted(sums(sys.argv[2]).items()):
            print(ino, data, xs)
    elif cmd == "hit":
        hit(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "verify":
        verify(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        sys.exit("usage: see the module docstring")


if __name__ == "__main__":
    main()
