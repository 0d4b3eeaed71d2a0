#!/usr/bin/env python3
"""Workload and verifier for the kill -9 crash tests (tests/daxfs/041, 042).

  crash_workload.py run DIR LOG SEED     mixed workload in DIR until an operation fails
                                         (the daemon was killed); every operation is
                                         logged to LOG before it starts ("B") and after
                                         it returns ("E")
  crash_workload.py verify DIR LOG       checks DIR (the remounted fs) against LOG;
                                         prints one line per problem, exit 1 if any

Every file holds 32-byte units "<file id> <write seq>" (or zeros: holes, truncate
growth), written at 32-byte aligned offsets, so a unit names the file it belongs to:
a file showing a unit of another file (or any other bytes) shows another file's data.
After each write, truncate or punch the file is fsync'ed and the SHA-256 of its content
is logged; at verification every file whose last logged event is such an fsync must
have exactly that content. Operations that returned must all be visible; the one in
flight at the kill may or may not be, but a rename is atomic (old or new name, never
neither or both).
"""

import ctypes
import hashlib
import json
import os
import random
import sys

UNIT = 32

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def unit(fid, seq):
    s = ("%d %d" % (fid, seq)).encode()
    return s + b"." * (UNIT - 1 - len(s)) + b"\n"


class Model:
    """Names (relative paths) -> file ids, directories, fsync'ed hashes."""

    def __init__(self):
        self.names = {}  # path -> fid
        self.dirs = {""}
        self.synced = {}  # fid -> sha256 hex of content at its last fsync
        self.size = {}  # fid -> size after the last completed operation
        self.next_fid = 1

    def apply(self, op):
        k = op["op"]
        if k == "create":
            self.names[op["path"]] = op["fid"]
            self.size[op["fid"]] = 0
            self.next_fid = max(self.next_fid, op["fid"] + 1)
        elif k in ("write", "truncate", "punch"):
            self.synced.pop(op["fid"], None)
        elif k == "fsync":
            self.synced[op["fid"]] = op["sha"]
            self.size[op["fid"]] = op["size"]
        elif k == "rename":
            src, dst = op["src"], op["dst"]
            if src in self.dirs:
                moved = {d for d in self.dirs if d == src or d.startswith(src + "/")}
                self.dirs -= moved
                self.dirs |= {dst + d[len(src):] for d in moved}
                for p in [p for p in self.names if p.startswith(src + "/")]:
                    self.names[dst + p[len(src):]] = self.names.pop(p)
            else:
                self.names[dst] = self.names.pop(src)
        elif k == "link":
            self.names[op["dst"]] = self.names[op["src"]]
        elif k == "unlink":
            del self.names[op["path"]]
        elif k == "mkdir":
            self.dirs.add(op["path"])
        elif k == "rmdir":
            self.dirs.discard(op["path"])

    def files(self):
        return sorted(self.names)

    def empty_dirs(self):
        out = []
        for d in self.dirs:
            if not d:
                continue
            pre = d + "/"
            if not any(p.startswith(pre) for p in self.names) and not any(
                x.startswith(pre) for x in self.dirs
            ):
                out.append(d)
        return sorted(out)


def sha_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run(root, logpath, seed):
    rng = random.Random(seed)
    m = Model()
    log = open(logpath, "a", buffering=1)
    seq = 0

    def do(op, fn):
        log.write("B " + json.dumps(op) + "\n")
        fn()
        log.write("E\n")
        m.apply(op)

    def P(rel):
        return os.path.join(root, rel)

    def fsync(fid, path):
        fd = os.open(P(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        size = os.stat(P(path)).st_size
        do({"op": "fsync", "fid": fid, "sha": sha_of(P(path)), "size": size}, lambda: None)

    while True:
        seq += 1
        files = m.files()
        r = rng.randrange(100)
        dirs = sorted(m.dirs)
        d = rng.choice(dirs)
        if not files or (r < 15 and len(m.names) < 40):
            fid = m.next_fid
            path = os.path.join(d, "f%d" % fid) if d else "f%d" % fid
            do({"op": "create", "fid": fid, "path": path},
               lambda: os.close(os.open(P(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)))
            continue
        path = rng.choice(files)
        fid = m.names[path]
        if r < 45:
            size = os.stat(P(path)).st_size
            off = rng.choice([size, rng.randrange(size + 1), size + rng.randrange(20000)])
            off -= off % UNIT
            n = 1 + rng.randrange(300 if rng.random() < 0.8 else 3000)
            buf = b"".join(unit(fid, seq) for _ in range(n))

            def w():
                fd = os.open(P(path), os.O_WRONLY)
                try:
                    os.pwrite(fd, buf, off)
                finally:
                    os.close(fd)
            do({"op": "write", "fid": fid, "path": path}, w)
            fsync(fid, path)
        elif r < 52:
            size = os.stat(P(path)).st_size
            new = rng.randrange(size + 1) if rng.random() < 0.6 else size + rng.randrange(30000)
            new -= new % UNIT
            do({"op": "truncate", "fid": fid, "path": path}, lambda: os.truncate(P(path), new))
            fsync(fid, path)
        elif r < 58:
            size = os.stat(P(path)).st_size
            off = rng.randrange(size + 1)
            off -= off % UNIT
            ln = UNIT * (1 + rng.randrange(600))

            def punch():
                fd = os.open(P(path), os.O_WRONLY)
                try:
                    if LIBC.fallocate(fd, 3, off, ln) != 0:  # PUNCH_HOLE | KEEP_SIZE
                        e = ctypes.get_errno()
                        raise OSError(e, os.strerror(e))
                finally:
                    os.close(fd)
            do({"op": "punch", "fid": fid, "path": path}, punch)
            fsync(fid, path)
        elif r < 70:
            dst = os.path.join(d, "r%d" % seq) if d else "r%d" % seq
            if rng.random() < 0.3 and len(files) > 1:
                other = rng.choice(files)
                if m.names[other] != fid:
                    dst = other
            do({"op": "rename", "src": path, "dst": dst, "replaced": m.names.get(dst)},
               lambda: os.rename(P(path), P(dst)))
        elif r < 76:
            dst = os.path.join(d, "h%d" % seq) if d else "h%d" % seq
            do({"op": "link", "src": path, "dst": dst}, lambda: os.link(P(path), P(dst)))
        elif r < 86:
            do({"op": "unlink", "path": path}, lambda: os.unlink(P(path)))
        elif r < 93:
            if d.count("/") >= 2:
                d = ""
            nd = os.path.join(d, "d%d" % seq) if d else "d%d" % seq
            do({"op": "mkdir", "path": nd}, lambda: os.mkdir(P(nd)))
        elif r < 97:
            empty = m.empty_dirs()
            if empty:
                x = rng.choice(empty)
                do({"op": "rmdir", "path": x}, lambda: os.rmdir(P(x)))
        else:
            movable = [x for x in sorted(m.dirs) if x]
            if movable:
                src = rng.choice(movable)
                targets = [x for x in sorted(m.dirs) if x != src and not x.startswith(src + "/")]
                t = rng.choice(targets)
                dst = os.path.join(t, "m%d" % seq) if t else "m%d" % seq
                do({"op": "rename", "src": src, "dst": dst, "replaced": None},
                   lambda: os.rename(P(src), P(dst)))


def read_log(logpath):
    done, inflight = [], None
    with open(logpath) as f:
        for line in f:
            if line.startswith("B "):
                try:
                    inflight = json.loads(line[2:])
                except ValueError:
                    inflight = None  # torn last line: the op never started
            elif line.startswith("E") and inflight is not None:
                done.append(inflight)
                inflight = None
    return done, inflight


def verify(root, logpath):
    done, inflight = read_log(logpath)
    m = Model()
    for op in done:
        m.apply(op)
    problems = []
    fl = inflight or {"op": "none"}
    kind = fl["op"]
    # Names the in-flight operation may have changed, and the file ids whose bytes it
    # may have changed.
    maybe_names, maybe_fids = set(), set()
    if kind == "create":
        maybe_names.add(fl["path"])
    elif kind in ("write", "truncate", "punch"):
        maybe_fids.add(fl["fid"])
    elif kind in ("unlink",):
        maybe_names.add(fl["path"])
    elif kind == "link":
        maybe_names.add(fl["dst"])
    elif kind in ("mkdir", "rmdir"):
        maybe_names.add(fl["path"])

    seen = {}  # relative path -> (ino, unit ids found, sha)
    seen_dirs = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        rel = "" if rel == "." else rel
        seen_dirs.add(rel)
        for fn in filenames:
            p = os.path.join(rel, fn) if rel else fn
            data = open(os.path.join(root, p), "rb").read()
            ids = set()
            for i in range(0, len(data), UNIT):
                u = data[i:i + UNIT]
                if u == b"\0" * len(u):
                    continue
                try:
                    fid = int(u.split(b" ")[0])
                    if u != unit(fid, int(u.split(b" ")[1].split(b".")[0]))[: len(u)]:
                        raise ValueError
                except (ValueError, IndexError):
                    problems.append("%s: bytes at %d are not a unit of any file" % (p, i))
                    break
                ids.add(fid)
            seen[p] = (os.lstat(os.path.join(root, p)).st_ino, ids, hashlib.sha256(data).hexdigest())

    # Rename atomicity for the rename in flight.
    if kind == "rename":
        src, dst = fl["src"], fl["dst"]
        if src in m.dirs:
            s_there, d_there = src in seen_dirs, dst in seen_dirs
            if s_there == d_there:
                problems.append("directory rename %s -> %s: %s" % (src, dst, "both names exist" if s_there else "neither name exists"))
            elif d_there:
                m.apply(fl)
        else:
            s_there = src in seen
            if not s_there and dst not in seen:
                problems.append("rename %s -> %s: neither name exists" % (src, dst))
            elif s_there and fl.get("replaced") is None and dst in seen:
                problems.append("rename %s -> %s: both names exist" % (src, dst))
            elif not s_there:
                m.apply(fl)  # it happened

    inos = {}
    for p, fid in sorted(m.names.items()):
        if p in maybe_names:
            continue
        if p not in seen:
            problems.append("%s (file %d) is missing" % (p, fid))
            continue
        ino, ids, sha = seen[p]
        if ids - {fid}:
            problems.append("%s (file %d) shows data of file(s) %s" % (p, fid, sorted(ids - {fid})))
        if inos.setdefault(fid, ino) != ino:
            problems.append("%s: hard links of file %d are different inodes" % (p, fid))
        if fid in m.synced and fid not in maybe_fids and sha != m.synced[fid]:
            problems.append("%s (file %d): content differs from what was fsync'ed" % (p, fid))
    for p in sorted(seen):
        if p not in m.names and p not in maybe_names:
            problems.append("%s exists but should not" % p)
    for d in sorted(m.dirs):
        if d not in seen_dirs and d not in maybe_names:
            problems.append("directory %s is missing" % d)
    for d in sorted(seen_dirs):
        if d not in m.dirs and d not in maybe_names:
            problems.append("directory %s exists but should not" % d)
    for p in problems:
        print(p)
    synced = sum(1 for p, fid in m.names.items() if fid in m.synced)
    print("checked %d operations, %d files (%d with fsync'ed content), %s in flight"
          % (len(done), len(m.names), synced, kind), file=sys.stderr)
    return 1 if problems else 0


def main():
    if len(sys.argv) >= 5 and sys.argv[1] == "run":
        try:
            run(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        except OSError as e:
            # The daemon was killed: ENOTCONN / ECONNABORTED / EIO and friends.
            print("workload stopped: %s" % e, file=sys.stderr)
            return 0
        return 0
    if len(sys.argv) >= 4 and sys.argv[1] == "verify":
        return verify(sys.argv[2], sys.argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
