#!/usr/bin/env python3
"""The two sides of daxfs/154.

writer DIR SECONDS: keeps rewriting files rec_K whose every 4 KiB record holds its own
file name, the file's generation and the record's index (a 64-byte header) and a body
derived from the name and index; truncates, punches and unlinks them, and between rounds
fills the device with other files (bytes 0xEE) to ENOSPC and removes them, so freed
blocks are reused at once.

reader DIR SECONDS: keeps reading every rec_K it finds and checks each byte: it must be
the record's own byte (any generation digit in the header's G field) or zero (a hole, a
punched range, or a write of the writer still in progress). Another file's byte or a
filler byte is a violation. Prints counters as 'name value' lines.
"""
import ctypes, errno, os, random, sys, time, zlib

REC = 4096
HDR = 64
FILES = 6
libc = ctypes.CDLL(None, use_errno=True)


def header(name, gen, r):
    h = ("N=%-20s G=%08d R=%08d" % (name, gen, r)).encode()
    return h + b" " * (HDR - 1 - len(h)) + b"\n"


def body(name, r):
    seed = zlib.crc32(name.encode()) ^ (r * 2654435761 & 0xFFFFFFFF)
    rng = random.Random(seed)
    # Nonzero bytes other than the filler's 0xEE.
    return bytes(rng.choice(range(1, 0xEE)) for _ in range(REC - HDR))


_bodies = {}


def record(name, gen, r):
    key = (name, r)
    if key not in _bodies:
        _bodies[key] = body(name, r)
    return header(name, gen, r) + _bodies[key]


def writer(root, seconds):
    rng = random.Random(154)
    end = time.time() + seconds
    gens = {}
    stats = {"rewrites": 0, "truncates": 0, "punches": 0, "unlinks": 0, "fills": 0}
    while time.time() < end:
        for _ in range(20):
            k = rng.randrange(FILES)
            name = "rec_%d" % k
            p = os.path.join(root, name)
            op = rng.choice("wwwtpu")
            try:
                if op == "w" or not os.path.exists(p):
                    g = gens.get(name, 0) + 1
                    gens[name] = g
                    n = rng.randrange(1, 64)
                    with open(p, "wb") as f:
                        for r in range(n):
                            f.write(record(name, g, r))
                    stats["rewrites"] += 1
                elif op == "t":
                    os.truncate(p, rng.randrange(0, 32) * REC)
                    stats["truncates"] += 1
                elif op == "p":
                    fd = os.open(p, os.O_RDWR)
                    libc.fallocate(fd, 3, ctypes.c_long(rng.randrange(0, 32) * REC),
                                   ctypes.c_long(rng.randrange(1, 16) * REC))
                    os.close(fd)
                    stats["punches"] += 1
                elif op == "u":
                    os.unlink(p)
                    stats["unlinks"] += 1
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
        # Reuse what was freed: fill the device with other bytes, then give it back.
        fill = []
        try:
            for i in range(100000):
                q = os.path.join(root, "fill_%d" % i)
                fill.append(q)
                with open(q, "wb") as f:
                    f.write(b"\xee" * (1 << 20))
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
        for q in fill:
            try:
                os.unlink(q)
            except FileNotFoundError:
                pass
        stats["fills"] += 1
    for k, v in stats.items():
        print(k, v)


def check(name, r, data):
    """The number of bad bytes of record r of file name (data: what was read)."""
    want = record(name, 0, r)
    bad = 0
    for j, b in enumerate(data):
        if b == 0 or b == want[j]:
            continue
        # The generation digits ("N=" + 20 + " G=" is 25 bytes, then 8 digits).
        if 25 <= j < 33 and 0x30 <= b <= 0x39:
            continue
        bad += 1
    return bad


def reader(root, seconds):
    end = time.time() + seconds
    st = {"reads": 0, "records": 0, "bad_records": 0, "stale": 0}
    shown = 0
    while time.time() < end:
        for k in range(FILES):
            name = "rec_%d" % k
            p = os.path.join(root, name)
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                st["stale"] += 1
                continue
            try:
                r = 0
                while True:
                    data = os.pread(fd, REC, r * REC)
                    if not data:
                        break
                    st["records"] += 1
                    bad = check(name, r, data)
                    if bad:
                        st["bad_records"] += 1
                        if shown < 5:
                            shown += 1
                            sys.stderr.write("%s record %d: %d bad bytes, starts %r\n"
                                             % (name, r, bad, data[:64]))
                    r += 1
                st["reads"] += 1
            except OSError as e:
                if e.errno not in (errno.ESTALE, errno.ENOENT, errno.EIO):
                    raise
                st["stale"] += 1
            finally:
                os.close(fd)
    for k, v in st.items():
        print(k, v)


if __name__ == "__main__":
    {"writer": writer, "reader": reader}[sys.argv[1]](sys.argv[2], float(sys.argv[3]))
