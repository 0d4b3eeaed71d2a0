#!/usr/bin/env python3
"""tests/common/syscall.py: run system calls that shell tools lack and print errno names.

Usage: syscall.py OP ARGS... [+ OP ARGS...]...

Each operation prints one line, "OP ARGS: RESULT", where RESULT is OK, a value, or the
errno's symbolic name (EEXIST, ENOTEMPTY, ...), so golden outputs stay readable.
The exit status is 0 unless an argument is malformed (errno results are not failures).
"""

import ctypes
import errno
import os
import stat
import sys

libc = ctypes.CDLL(None, use_errno=True)

AT_FDCWD = -100
RENAME_FLAGS = {"0": 0, "noreplace": 1, "exchange": 2, "whiteout": 4}
FALLOC_FLAGS = {
    "0": 0,
    "keep_size": 0x01,
    "punch_hole": 0x02,
    "collapse_range": 0x08,
    "zero_range": 0x10,
    "insert_range": 0x20,
}
OPEN_FLAGS = {
    "rdonly": os.O_RDONLY,
    "wronly": os.O_WRONLY,
    "rdwr": os.O_RDWR,
    "creat": os.O_CREAT,
    "excl": os.O_EXCL,
    "trunc": os.O_TRUNC,
    "append": os.O_APPEND,
    "directory": os.O_DIRECTORY,
    "nofollow": os.O_NOFOLLOW,
    "tmpfile": getattr(os, "O_TMPFILE", 0o20200000),
}
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


class Usage(Exception):
    pass


def num(text):
    """An integer, optionally with a k/m/g/t suffix (powers of 1024), as xfs_io takes."""
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}.get(text[-1:].lower(), 1)
    return int(text[:-1] if mult > 1 else text, 0) * mult


def flags_of(table, spec):
    value = 0
    for name in spec.split(","):
        if name not in table:
            raise Usage(f"unknown flag {name!r}; known: {', '.join(table)}")
        value |= table[name]
    return value


def check(ret):
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def timespec(spec):
    """'now', 'omit', or a decimal number of seconds: -86400.25 is 1969-12-31 00:00:00 - 0.25 s
    (the kernel's form: tv_sec = -86401, tv_nsec = 750000000)."""
    if spec == "now":
        return Timespec(0, UTIME_NOW)
    if spec == "omit":
        return Timespec(0, UTIME_OMIT)
    sign = -1 if spec.startswith("-") else 1
    sec, _, frac = spec.lstrip("+-").partition(".")
    total = sign * (int(sec) * 10**9 + int(frac.ljust(9, "0")[:9] or 0))
    return Timespec(total // 10**9, total % 10**9)


def fmt_ns(ns):
    """Nanoseconds since the epoch as an exact signed decimal: -86400250000000 -> -86400.250000000."""
    sign = "-" if ns < 0 else ""
    return f"{sign}{abs(ns) // 10**9}.{abs(ns) % 10**9:09d}"


def op_open(path, spec, mode="0644"):
    fd = os.open(path, flags_of(OPEN_FLAGS, spec), int(mode, 8))
    os.close(fd)
    return "OK"


def op_rename(old, new):
    os.rename(old, new)
    return "OK"


def op_rename2(old, new, spec):
    libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    check(libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags_of(RENAME_FLAGS, spec)))
    return "OK"


def op_link(old, new):
    os.link(old, new)
    return "OK"


def op_symlink(target, path):
    os.symlink(target, path)
    return "OK"


def op_readlink(path):
    return os.readlink(path)


def op_unlink(path):
    os.unlink(path)
    return "OK"


def op_rmdir(path):
    os.rmdir(path)
    return "OK"


def op_mkdir(path, mode="0755"):
    os.mkdir(path, int(mode, 8))
    return "OK"


def op_mknod(path, kind, mode="0644", major="0", minor="0"):
    kinds = {"fifo": stat.S_IFIFO, "sock": stat.S_IFSOCK, "chr": stat.S_IFCHR, "blk": stat.S_IFBLK, "reg": stat.S_IFREG}
    if kind not in kinds:
        raise Usage(f"unknown node type {kind!r}")
    os.mknod(path, kinds[kind] | int(mode, 8), os.makedev(int(major), int(minor)))
    return "OK"


def op_truncate(path, length):
    os.truncate(path, num(length))
    return "OK"


def op_chmod(path, mode):
    os.chmod(path, int(mode, 8))
    return "OK"


def op_chown(path, uid, gid):
    os.chown(path, int(uid), int(gid))
    return "OK"


def op_access(path, spec):
    mode = 0
    for c in spec:
        mode |= {"r": os.R_OK, "w": os.W_OK, "x": os.X_OK, "f": os.F_OK}[c]
    return "OK" if os.access(path, mode) else "denied"


def op_setxattr(path, name, value, spec="0"):
    flags = {"0": 0, "create": os.XATTR_CREATE, "replace": os.XATTR_REPLACE}
    if spec not in flags:
        raise Usage(f"unknown xattr flag {spec!r}")
    os.setxattr(path, name, os.fsencode(value), flags[spec], follow_symlinks=False)
    return "OK"


def op_getxattr(path, name):
    return os.getxattr(path, name, follow_symlinks=False).decode(errors="backslashreplace")


def op_removexattr(path, name):
    os.removexattr(path, name, follow_symlinks=False)
    return "OK"


def op_listxattr(path):
    return " ".join(sorted(os.listxattr(path, follow_symlinks=False))) or "(none)"


def op_utimens(path, atime, mtime, spec=""):
    times = (Timespec * 2)(timespec(atime), timespec(mtime))
    flags = 0x100 if spec == "nofollow" else 0  # AT_SYMLINK_NOFOLLOW
    libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    check(libc.utimensat(AT_FDCWD, os.fsencode(path), ctypes.byref(times), flags))
    return "OK"


def op_stat(path, fields="mode,nlink,size"):
    st = os.lstat(path)
    out = []
    for f in fields.split(","):
        if f == "type":
            out.append(
                "fifo" if stat.S_ISFIFO(st.st_mode) else "sock" if stat.S_ISSOCK(st.st_mode)
                else "chr" if stat.S_ISCHR(st.st_mode) else "blk" if stat.S_ISBLK(st.st_mode)
                else "dir" if stat.S_ISDIR(st.st_mode) else "lnk" if stat.S_ISLNK(st.st_mode)
                else "reg"
            )
        elif f == "mode":
            out.append(f"mode={stat.S_IMODE(st.st_mode):04o}")
        elif f == "rdev":
            out.append(f"rdev={os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
        elif f in ("atime_ns", "mtime_ns", "ctime_ns"):
            out.append(f"{f[:5]}={fmt_ns(getattr(st, 'st_' + f))}")
        elif hasattr(st, "st_" + f):
            out.append(f"{f}={getattr(st, 'st_' + f)}")
        else:
            raise Usage(f"unknown stat field {f!r}")
    return " ".join(out)


def op_lseek(path, whence, offset):
    w = {"set": os.SEEK_SET, "end": os.SEEK_END, "data": os.SEEK_DATA, "hole": os.SEEK_HOLE}[whence]
    fd = os.open(path, os.O_RDONLY)
    try:
        return str(os.lseek(fd, num(offset), w))
    finally:
        os.close(fd)


def op_fallocate(path, spec, offset, length):
    fd = os.open(path, os.O_RDWR)
    try:
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
        check(libc.fallocate(fd, flags_of(FALLOC_FLAGS, spec), num(offset), num(length)))
    finally:
        os.close(fd)
    return "OK"


def op_copy_file_range(src, soff, dst, doff, length):
    fi = os.open(src, os.O_RDONLY)
    try:
        fo = os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            return str(os.copy_file_range(fi, fo, num(length), num(soff), num(doff)))
        finally:
            os.close(fo)
    finally:
        os.close(fi)


def op_mkfiles(directory, prefix, count):
    """Create COUNT empty files DIR/PREFIX0..; stop at the first error."""
    for i in range(int(count)):
        os.close(os.open(os.path.join(directory, f"{prefix}{i}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return "OK"


def op_rmfiles(directory, prefix, count):
    for i in range(int(count)):
        os.unlink(os.path.join(directory, f"{prefix}{i}"))
    return "OK"


def op_count(directory):
    return str(sum(1 for _ in os.scandir(directory)))


def op_fsync(path, spec="fsync"):
    """Open PATH read-only (files and directories alike) and fsync or fdatasync it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        {"fsync": os.fsync, "fdatasync": os.fdatasync}[spec](fd)
    finally:
        os.close(fd)
    return "OK"


def op_ioctl(path, request, argsize="0", spec="rdonly"):
    """ioctl(fd, REQUEST, arg): arg is a zeroed buffer of ARGSIZE bytes, or NULL for 0."""
    fd = os.open(path, flags_of(OPEN_FLAGS, spec) | os.O_NONBLOCK)
    try:
        size = num(argsize)
        buf = ctypes.create_string_buffer(size) if size else None
        libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
        check(libc.ioctl(fd, num(request) & 0xFFFFFFFF, buf))
    finally:
        os.close(fd)
    return "OK"


def op_pwrite(path, offset, length, spec="wronly"):
    """Write LENGTH bytes of 'x' at OFFSET (may be negative) through the pwrite call."""
    fd = os.open(path, flags_of(OPEN_FLAGS, spec))
    try:
        data = b"x" * num(length)
        libc.pwrite.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_long]
        libc.pwrite.restype = ctypes.c_ssize_t
        return str(check(libc.pwrite(fd, data, len(data), num(offset))))
    finally:
        os.close(fd)


def op_pread(path, offset, length, spec="rdonly"):
    """Read up to LENGTH bytes at OFFSET; prints the byte count."""
    fd = os.open(path, flags_of(OPEN_FLAGS, spec))
    try:
        buf = ctypes.create_string_buffer(max(num(length), 1))
        libc.pread.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_long]
        libc.pread.restype = ctypes.c_ssize_t
        return str(check(libc.pread(fd, buf, num(length), num(offset))))
    finally:
        os.close(fd)


def op_ftruncate(path, length, spec="wronly"):
    """ftruncate through an fd opened with SPEC (length may be negative)."""
    fd = os.open(path, flags_of(OPEN_FLAGS, spec))
    try:
        libc.ftruncate.argtypes = [ctypes.c_int, ctypes.c_long]
        check(libc.ftruncate(fd, num(length)))
    finally:
        os.close(fd)
    return "OK"


def op_statfs(path, fields="namelen"):
    st = os.statvfs(path)
    names = {"namelen": "f_namemax", "bsize": "f_bsize", "blocks": "f_blocks", "bfree": "f_bfree",
             "bavail": "f_bavail", "files": "f_files", "ffree": "f_ffree"}
    return " ".join(f"{f}={getattr(st, names[f])}" for f in fields.split(","))


OPS = {name[3:]: fn for name, fn in globals().items() if name.startswith("op_")}


def run(argv):
    op, args = argv[0], argv[1:]
    fn = OPS.get(op)
    if fn is None:
        raise Usage(f"unknown operation {op!r}; known: {' '.join(sorted(OPS))}")
    try:
        result = fn(*args)
    except TypeError as e:
        raise Usage(f"{op}: bad arguments {args!r}: {e}") from e
    except OSError as e:
        result = errno.errorcode.get(e.errno, str(e.errno))
    print(f"{op} {' '.join(args)}: {result}", flush=True)


def main():
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("operations:", " ".join(sorted(OPS)))
        return 0
    cmd = []
    try:
        for a in argv + ["+"]:
            if a == "+":
                if cmd:
                    run(cmd)
                cmd = []
            else:
                cmd.append(a)
    except Usage as e:
        print(f"syscall.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
