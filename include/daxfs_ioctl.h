/* SPDX-License-Identifier: MIT */
/*
 * daxfs_ioctl.h - the ioctls of daxfs (a DAX filesystem served through FUSE).
 *
 * Mirrors fuse/src/ioctl.rs in the daxfs sources (keep both in step). All structures
 * are made of __u64 fields in native byte order, so they have the same layout for
 * 32- and 64-bit callers. The ioctl numbers carry the argument's size and direction,
 * so FUSE passes them to the daemon without any special support ("restricted" ioctls).
 *
 * Pins (docs/DESIGN.md, "Pins and break_layouts")
 * -------------------------------
 * DAXFS_IOC_PIN takes one reference on every block holding the bytes
 * [offset, offset + length) of the open regular file. While a block is pinned, an
 * operation that would take it from the file (truncate down, fallocate PUNCH_HOLE,
 * ZERO_RANGE, COLLAPSE_RANGE, INSERT_RANGE) waits for the pin to go away; after the
 * mount's layout_timeout (-o layout_timeout=SECONDS, default 30) it fails with EBUSY
 * and leaves the file unchanged. A new pin waits while such an operation holds the
 * file's layout lock.
 *
 * Who may pin, and revocation (modelled on fcntl F_SETLEASE leases): only the file's
 * owner (the caller's fsuid) or a caller with CAP_LEASE may pin a file; anyone else
 * gets EACCES. Every pin is a lease on the range: when an operation meets it, the pin
 * is flagged "break requested" and poll(2) on the descriptor reports POLLPRI (the
 * descriptor is otherwise always readable and writable, as a regular file is). The
 * holder is expected to UNPIN (or close). If it has not when the mount's
 * lease_break_time has passed (-o lease_break_time=SECONDS, default 10; at the latest
 * at layout_timeout), the pin is revoked: its blocks are no longer held, and the
 * operation goes on. Only a caller with CAP_SYS_ADMIN takes an unbreakable pin, which
 * the operation waits for until layout_timeout (EBUSY). POLLPRI stays up while any pin
 * of the description is flagged or revoked; DAXFS_IOC_PIN_STATUS tells which.
 *
 * Limits: pins and pinned bytes are counted per user (the caller's fsuid) across the
 * mount: -o max_pins_per_user=N (default 4096) and max_pinned_bytes_per_user=BYTES
 * (default: the size of the filesystem). A pin past them fails with EAGAIN until the
 * user's pins are released. Callers with CAP_SYS_RESOURCE or CAP_SYS_ADMIN are not
 * counted.
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
 *   EISDIR  / EINVAL: not a regular file;  ENOENT: the file was freed;
 *   EACCES  the caller neither owns the file nor has CAP_LEASE;
 *   EAGAIN  the caller's user is at max_pins_per_user or would pass
 *           max_pinned_bytes_per_user.
 * Errors of DAXFS_IOC_UNPIN:
 *   EINVAL  no pin of exactly this range is held through this file description;
 *   ECANCELED  the pin had been revoked by a layout break: it is given back all the
 *           same (a second UNPIN is EINVAL), but the range was not held all along.
 *
 * DAXFS_IOC_PIN_STATUS fills struct daxfs_pin_status for the pins of the description.
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
 *     struct pollfd pfd = { .fd = fd, .events = POLLPRI };
 *     poll(&pfd, 1, -1);          // a layout break asks for the pin back
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

struct daxfs_pin_status {
	__u64 pins;        /* pins held through this description (revoked ones included) */
	__u64 breaking;    /* of those, asked back by a layout break (revoked ones too) */
	__u64 revoked;     /* of those, revoked: they hold nothing any more */
	__u64 reserved[5]; /* zero */
};

#define DAXFS_STATS_MAGIC 0x3154535346584144ULL /* "DAXFSST1" little-endian */

struct daxfs_stats {
	__u64 magic;          /* DAXFS_STATS_MAGIC */
	__u64 size;           /* meaningful bytes of this structure (168; 160 before
	                         `transport`, 152 before `pins_revoked`, 144 before
	                         `transactions`) */
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
	__u64 timeouts;       /* waits that reached their deadline: layout_timeout (the
	                         operation failed with EBUSY) or lease_break_time (the
	                         revocable pins were then revoked) */
	__u64 violations;     /* reference count rule violations (a bug if not 0) */
	__u64 commits;        /* journal commits (one commit record and fence each) */
	__u64 transactions;   /* metadata transactions they carried (> commits when
	                         group commit batched concurrent ones) */
	__u64 pins_revoked;   /* pins revoked by layout breaks */
	__u64 transport;      /* how requests reach the daemon: 1 /dev/fuse, 2 FUSE
	                         over io_uring (-o io_uring); 0 from older daemons */
	__u64 reserved[11];   /* zero */
};

/* _IOW(0xDA, 1, struct daxfs_pin) == 0x4010DA01 */
#define DAXFS_IOC_PIN _IOW(DAXFS_IOC_MAGIC, 1, struct daxfs_pin)
/* _IOW(0xDA, 2, struct daxfs_pin) == 0x4010DA02 */
#define DAXFS_IOC_UNPIN _IOW(DAXFS_IOC_MAGIC, 2, struct daxfs_pin)
/* _IOR(0xDA, 3, struct daxfs_stats) == 0x8100DA03 (sizeof(struct daxfs_stats) == 256) */
#define DAXFS_IOC_STATS _IOR(DAXFS_IOC_MAGIC, 3, struct daxfs_stats)
/* _IOR(0xDA, 4, struct daxfs_pin_status) == 0x8040DA04 (sizeof == 64) */
#define DAXFS_IOC_PIN_STATUS _IOR(DAXFS_IOC_MAGIC, 4, struct daxfs_pin_status)

/* daxfs sync: on a follower (-o follow), wait at most timeout_ms until it has
 * applied every transaction its writer had committed at the call; flags then has
 * DAXFS_SYNC_FOLLOWER and applied_seq the sequence its view reflects. On other mounts
 * nothing happens and flags is 0 (syncfs(2) is what makes them durable). */
#define DAXFS_SYNC_FOLLOWER 1ULL
struct daxfs_sync {
	__u64 timeout_ms;   /* in: longest wait (the daemon caps it at 60 s) */
	__u64 applied_seq;  /* out: journal sequence of the follower's view */
	__u64 flags;        /* out: DAXFS_SYNC_FOLLOWER */
	__u64 reserved[5];  /* zero */
};
/* _IOWR(0xDA, 5, struct daxfs_sync) == 0xC040DA05 (sizeof == 64) */
#define DAXFS_IOC_SYNC _IOWR(DAXFS_IOC_MAGIC, 5, struct daxfs_sync)

/*
 * DAXFS_IOC_PROMOTE (root only, else EPERM): on a follower whose writer's lease has not
 * heartbeat for the host timeout, take the writer role: the journal is replayed, the
 * lease taken by compare-and-swap of its epoch, and the mount turns read-write. The
 * argument comes back as the new lease epoch. EBUSY while the writer heartbeats, when
 * another host took the role first, or on a mount that is not a follower.
 */
/* _IOR(0xDA, 6, __u64) == 0x8008DA06 */
#define DAXFS_IOC_PROMOTE _IOR(DAXFS_IOC_MAGIC, 6, __u64)

#endif /* DAXFS_IOCTL_H */
