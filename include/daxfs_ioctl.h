/* SPDX-License-Identifier: MIT */
/*
 * daxfs_ioctl.h - the ioctls of daxfs (a DAX filesystem served through FUSE).
 *
 * Mirrors fs/src/ioctl.rs in the daxfs sources (keep both in step). All structures
 * are made of __u64 fields in native byte order, so they have the same layout for
 * 32- and 64-bit callers. The ioctl numbers carry the argument's size and direction,
 * so FUSE passes them to the daemon without any special support ("restricted" ioctls).
 *
 * Pins (design notes section 2-3)
 * -------------------------------
 * DAXFS_IOC_PIN takes one reference on every block holding the bytes
 * [offset, offset + length) of the open regular file. While a block is pinned, an
 * operation that would take it from the file (truncate down, fallocate PUNCH_HOLE,
 * ZERO_RANGE, COLLAPSE_RANGE, INSERT_RANGE) waits for the pin to go away; after the
 * mount's layout_timeout (-o layout_timeout=SECONDS, default 30) it fails with EBUSY
 * and leaves the file unchanged. A new pin waits while such an operation holds the
 * file's layout lock.
 *
 * A pin belongs to the open file description it was taken through. It lasts until
 * DAXFS_IOC_UNPIN with the same offset and length on that description, or until the
 * description is released (the last descriptor closed, including when the holder is
 * killed). Several pins, even of the same range, may be held; UNPIN releases one.
 *
 * Errors of DAXFS_IOC_PIN:
 *   EINVAL  length is 0, offset + length overflows, or the range goes past the end
 *           of the file;
 *   ENXIO   the range contains a hole (pins reference existing blocks and never
 *           allocate: fallocate the range first);
 *   EISDIR  / EINVAL: not a regular file;  ENOENT: the file was freed.
 * Errors of DAXFS_IOC_UNPIN:
 *   EINVAL  no pin of exactly this range is held through this file description.
 *
 * Statistics
 * ----------
 * DAXFS_IOC_STATS on any file or directory of a daxfs mount (typically its root) fills
 * struct daxfs_stats. A path on another filesystem answers ENOTTY (or another error);
 * check `magic` as well. `size` is the number of meaningful bytes; fields added later
 * go into `reserved`, and older daemons leave them zero.
 *
 * Example:
 *     struct daxfs_pin p = { .offset = 0, .length = 1 << 20 };
 *     int fd = open("/mnt/pmem/file", O_RDONLY);
 *     if (ioctl(fd, DAXFS_IOC_PIN, &p) < 0) perror("DAXFS_IOC_PIN");
 *     ...
 *     ioctl(fd, DAXFS_IOC_UNPIN, &p);
 */
#ifndef DAXFS_IOCTL_H
#define DAXFS_IOCTL_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define DAXFS_IOC_MAGIC 0xDA

struct daxfs_pin {
	__u64 offset; /* first byte of the range, in the file */
	__u64 length; /* bytes; > 0 */
};

#define DAXFS_STATS_MAGIC 0x3154535346584144ULL /* "DAXFSST1" little-endian */

struct daxfs_stats {
	__u64 magic;          /* DAXFS_STATS_MAGIC */
	__u64 size;           /* meaningful bytes of this structure (152; 144 before
	                         `transactions` was added) */
	__u64 blocks_total;   /* blocks of the data area */
	__u64 blocks_free;    /* reference count 0 */
	__u64 blocks_cached;  /* reference count 1: held by a file's mapping only */
	__u64 blocks_pinned;  /* reference count > 1 */
	__u64 alloc_free;     /* free according to the allocator (= blocks_free at rest) */
	__u64 pins_taken;     /* long-term pins taken (ioctl pins, library mappings) */
	__u64 pins_released;  /* ... and released */
	__u64 block_pins;     /* block references taken (including in-flight I/O) */
	__u64 block_unpins;   /* ... and dropped */
	__u64 layout_breaks;  /* operations that met a pinned block and had to wait */
	__u64 lease_breaks;   /* lease breaks signalled to pin holders */
	__u64 waits;          /* waits for a block to become idle */
	__u64 wait_ns;        /* their total time, in nanoseconds */
	__u64 timeouts;       /* waits given up (the operation failed with EBUSY) */
	__u64 violations;     /* reference count rule violations (a bug if not 0) */
	__u64 commits;        /* journal commits (one commit record and fence each) */
	__u64 transactions;   /* metadata transactions they carried (> commits when
	                         group commit batched concurrent ones) */
	__u64 reserved[13];   /* zero */
};

/* _IOW(0xDA, 1, struct daxfs_pin) == 0x4010DA01 */
#define DAXFS_IOC_PIN _IOW(DAXFS_IOC_MAGIC, 1, struct daxfs_pin)
/* _IOW(0xDA, 2, struct daxfs_pin) == 0x4010DA02 */
#define DAXFS_IOC_UNPIN _IOW(DAXFS_IOC_MAGIC, 2, struct daxfs_pin)
/* _IOR(0xDA, 3, struct daxfs_stats) == 0x8100DA03 (sizeof(struct daxfs_stats) == 256) */
#define DAXFS_IOC_STATS _IOR(DAXFS_IOC_MAGIC, 3, struct daxfs_stats)

#endif /* DAXFS_IOCTL_H */
