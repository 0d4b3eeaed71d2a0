//! FUSE over io_uring (Linux ≥ 6.14, `CONFIG_FUSE_IO_URING`; issue 14): the groundwork
//! of a transport in which each CPU's requests are fetched and answered through an
//! io_uring of that CPU instead of read(2)/write(2) of /dev/fuse. [`abi`] has the uapi
//! structs and a safe codec, [`queue`] one ring queue, [`request`] decodes every request
//! the mount serves into a [`request::Request`] borrowing from the entry's buffers, and
//! [`reply`] encodes every reply into the payload buffer. `fuse/tests/uring_probe.rs`
//! proves the queue against the running kernel, `fuse/tests/uring_serve.rs` the codecs
//! (an in-memory tree served over the ring, checked with real system calls).
//! [`transport`] serves the mount with it (`-o io_uring`).
//!
//! # The protocol (`fs/fuse/dev_uring.c`, `include/uapi/linux/fuse.h` 7.42+)
//!
//! - **Enabling.** The kernel offers `FUSE_OVER_IO_URING` (INIT flag bit 41) only while
//!   the fuse module's `enable_uring` parameter is set; a server that puts it in its INIT
//!   reply gets `fc->io_uring`, which outlives the parameter (REGISTER checks
//!   `enable_uring || fc->io_uring`, else EOPNOTSUPP). From then on *every* request waits
//!   in `fuse_get_req` until the ring is ready, even a stat(2) of the mount root: the
//!   server must register before it touches its own mount. Any failed REGISTER clears
//!   `fc->io_uring` and wakes the waiters, which then go through /dev/fuse: a server must
//!   keep serving /dev/fuse as the fallback.
//! - **Queues.** The first REGISTER creates the ring with one queue per *possible* CPU
//!   (`num_possible_cpus()`, [`queue::possible_cpus`]) and fixes
//!   `max_payload_sz = max(8192, max_write, max_pages * PAGE_SIZE)` from the INIT reply
//!   ([`queue::payload_size`]). A request goes to queue `task_cpu(current)` of the task
//!   that issues it (background requests too). The ring becomes ready, and requests start
//!   to flow over it, only once every queue has an entry registered: one queue missing
//!   and the mount hangs (the probe's watchdog aborts it).
//! - **REGISTER** (`IORING_OP_URING_CMD`, `cmd_op` 1, on a ring set up with
//!   `IORING_SETUP_SQE128`, else EINVAL): `sqe->addr` points at two iovecs, [header of
//!   at least `sizeof(fuse_uring_req_header)` = 288 bytes, payload of at least
//!   `max_payload_sz`], `sqe->len` must be 2, and the 80-byte command area holds
//!   `fuse_uring_cmd_req` with the `qid` (< number of queues). Each fails with EINVAL;
//!   EAGAIN means INIT was not processed yet (submit again). The command stays pending
//!   until a request is put in the entry: then its CQE completes with 0.
//! - **A request** in an entry: `fuse_in_header` at the start of `in_out`, the opcode's
//!   fixed argument struct (`in_args[0]`: `fuse_read_in`, `fuse_write_in`, …; since 6.14
//!   an empty one for opcodes that have none, e.g. LOOKUP) in `op_in` (≤ 128 bytes),
//!   every other argument concatenated in the payload (names with their NUL, write data,
//!   extension headers), and `ring_ent_in_out.commit_id` = the request's `unique`,
//!   `payload_sz` = the bytes of payload used.
//! - **COMMIT_AND_FETCH** (`cmd_op` 2): userspace writes `fuse_out_header` (unique,
//!   error ∈ (−512, 0]; unique 0 — a notification — is EINVAL: notifications still go
//!   through write(2) on /dev/fuse) into `in_out`, *all* reply arguments into the payload
//!   (their total must be what the opcode expects, less only for variable-size replies)
//!   and their size into `payload_sz`, then submits the command with `commit_id` and
//!   `qid`. The kernel finds the request by `commit_id` in that queue (ENOENT if unknown),
//!   ends it, and in the same step makes the entry available again: the command's CQE is
//!   the *next* request in the same buffers. No separate fetch exists.
//! - **What stays on /dev/fuse:** FORGET, BATCH_FORGET and INTERRUPT (the ring's iqueue
//!   ops send them the classic way), notifications, and INIT before the ring exists.
//! - **Teardown.** Unmount or abort (`/sys/fs/fuse/connections/N/abort`) stops the
//!   queues: every pending command completes with ENOTCONN, a later commit fails with
//!   ENOTCONN, and `fuse_wait_aborted` waits until every entry is released. Closing the
//!   ring first (daemon exit) cancels the pending commands (`IO_URING_F_CANCEL`, also
//!   ENOTCONN), after which that queue never takes requests again.
//!
//! # Buffers: ownership, ordering, lifetime
//!
//! - The kernel stores the two user addresses at REGISTER and copies with
//!   copy_to_user/copy_from_user through them for the life of the connection: the
//!   buffers must stay mapped until the entry's last CQE.
//! - Ownership alternates. From the submission of an entry's REGISTER or
//!   COMMIT_AND_FETCH until its CQE the buffers are the kernel's, which writes a request
//!   into them whenever one is queued; from the CQE until the next submission they are
//!   userspace's. The ring's own ordering is the synchronisation: the SQ tail store
//!   (release) before `io_uring_enter` publishes the reply to the kernel, the CQ tail
//!   load (acquire) publishes the request to userspace. [`queue::Queue`] tracks the state
//!   per entry and hands out the buffers only while they are userspace's.
//! - A reply is complete when COMMIT_AND_FETCH is submitted, and nothing may borrow from
//!   the entry afterwards: the same buffers may already hold the next request (a READ
//!   reply is copied into the payload, never referenced from it).
//! - The copy of a request into the buffers is task work of the task that submitted the
//!   entry's command, so a queue is built, submitted and waited on by one thread, pinned
//!   to its CPU; a reply produced on another thread must be handed to that thread.
//! - REGISTER's iovec array must outlive the command (the kernel may read it when it
//!   issues the command late); the queue keeps it with the entry.
//! - A queue dropped while the kernel still owns entries (connection not ended) leaks
//!   their buffers instead of freeing them under the kernel; unmount first.
//! - `io-uring` 0.7's `UringCmd80` cannot set `sqe->len`: [`queue`] patches it, checked by
//!   a unit test of the SQE bytes (without it every REGISTER fails with EINVAL, "Failed to
//!   get iovec from sqe").
//!
//! # What the probe saw (Linux 6.18.44, 2 possible CPUs)
//!
//! Registration of 2 queues × 2 entries (128 KiB payloads) succeeded; `cat` and a read
//! pinned to each CPU were served over the rings, each on the queue of the CPU it ran on
//! (LOOKUP, GETATTR, STATX answered ENOSYS once, OPEN, READ, FLUSH, RELEASE with pid 0);
//! fuser's /dev/fuse loop saw no request. Unmount ended all 4 entries with ENOTCONN
//! within ~1 ms. With `sqe->len` 0 the first REGISTER failed with EINVAL (dmesg: "Failed
//! to get iovec from sqe"), the kernel dropped the ring and the rest got EOPNOTSUPP
//! ("fuse-io-uring is disabled": `enable_uring` was back to N); a 64 KiB payload gave
//! EINVAL ("Invalid req payload len 65536"); with one of the two queues registered
//! every request waited until the connection was aborted.
//!
//! # What the codec test saw (Linux 6.18.44, protocol 7.40 as fuser 0.18 answers INIT)
//!
//! `uring_serve` decoded every request of a session of mkdir, create, write, read,
//! stat, truncate, chmod, chown, utimes, fallocate, SEEK_HOLE/SEEK_DATA, poll, an
//! ioctl, fsync, fsync of a directory, copy_file_range, symlink, link, mkfifo, a
//! 120-entry readdir, rename, renameat2, rm, rmdir, the xattr calls, access and statfs
//! without an error, and every reply was accepted: LOOKUP, GETATTR, SETATTR, READLINK,
//! MKNOD, MKDIR, UNLINK, RMDIR, SYMLINK, RENAME, RENAME2, LINK, OPEN, CREATE, READ,
//! WRITE, FLUSH, RELEASE, FSYNC, OPENDIR, READDIR, READDIRPLUS, RELEASEDIR, FSYNCDIR,
//! STATFS, SETXATTR (both layouts), GETXATTR, LISTXATTR, REMOVEXATTR, ACCESS,
//! FALLOCATE, LSEEK, COPY_FILE_RANGE, POLL, IOCTL. Worth knowing:
//!
//! - The kernel sends STATX and COPY_FILE_RANGE_64 (opcode 53) once each; ENOSYS makes
//!   it fall back to GETATTR and COPY_FILE_RANGE for the connection's life.
//! - coreutils' `mv` issues renameat2(RENAME_NOREPLACE): a RENAME2, not a RENAME.
//! - Most GETXATTRs are not the user's: `security.capability` before each WRITE
//!   (the kernel's kill-priv check; 127 for 124 WRITEs), and `ls -l` asks for
//!   `security.selinux` and `system.posix_acl_access` of each entry (121 each for 121
//!   entries); 5 of 375 were the test's own.
//! - Because `op_in` is its own area, a decoder that misjudges the fixed struct's size
//!   does not shift the names (as it would on /dev/fuse); it reads stale bytes of an
//!   earlier request instead (0x8000 — an O_LARGEFILE — as setxattr_flags, when the
//!   8-byte `fuse_setxattr_in` was read as 16).
//! - With FUSE_READDIRPLUS_AUTO, a listing alternates READDIRPLUS and READDIR.
//! - A server thread that dies with a request in its entry wedges that request's caller
//!   in D state: the io_uring keeps the /dev/fuse file open after the process exits, so
//!   neither close nor umount ends the connection; only
//!   `/sys/fs/fuse/connections/N/abort` does (fusectl must be mounted). The ring
//!   handler must therefore always answer (the test's catches panics, answering EIO).
//!
//! # Plan for the rest of issue 14
//!
//! Status: items 1–4 and 6 are done ([`transport`]; `-o io_uring`, `uring_depth=`, the
//! `transport` field of `daxfs stats`; `fuse/tests/uring_mount.rs`; `MOUNT_OPTIONS=io_uring
//! tests/check`). Deviations: busy polling of /dev/fuse is simply off on ring mounts (no
//! ring-side polling yet, item 5); the default depth is 72, above
//! [`MAX_WAITERS`](crate::deferred::MAX_WAITERS) as item 4 requires, the buffers being
//! lazily allocated anonymous memory.
//!
//! 1. **A transport-neutral adapter.** Split `FuseAdapter` into a core
//!    `fn handle(&self, ctx: &Ctx, op: Op<'_>) -> Outcome`, where `Ctx` is uid/gid/pid/
//!    unique (today read from `fuser::Request`), `Op` the decoded arguments of one request
//!    (an enum with a variant per opcode, names as `&OsStr`, write data as `&[u8]`), and
//!    `Outcome` either `Reply(Result<ReplyValue, Errno>)` with `ReplyValue` = Entry, Attr,
//!    Open, Create, Data (the volatile pieces of `read_with`, or bytes), Write, Statfs,
//!    Xattr (size or data), Lseek, Ioctl, Poll, Dir (a filled dirent buffer), Empty; or
//!    `Deferred` (the waiter replies later through a transport-neutral reply handle). The
//!    `impl Filesystem` shrinks to shims: fuser arguments -> `Op`, `ReplyValue` -> fuser's
//!    `Reply*` calls. The ring decodes `Op` from `op_in` + payload with [`abi`] and
//!    encodes `ReplyValue` straight into the payload (READ data copied from the device
//!    mapping once, as the kernel's /dev/fuse write copies it today; directory entries
//!    written in place). Both transports then share every line of policy. The wire
//!    side is done: [`request::Request::decode`], the [`reply`] encoders and
//!    [`queue::Queue::answer_in_place`] (decode from the payload, then overwrite it).
//! 2. **Opcodes the mount serves** (the adapter's `impl Filesystem`): LOOKUP, GETATTR,
//!    SETATTR, READLINK, MKNOD, MKDIR, UNLINK, RMDIR, SYMLINK, RENAME(2), LINK, OPEN,
//!    CREATE, READ, WRITE, FLUSH, RELEASE, FSYNC, OPENDIR, READDIR, READDIRPLUS,
//!    RELEASEDIR, FSYNCDIR, STATFS, SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR, ACCESS,
//!    FALLOCATE, LSEEK, COPY_FILE_RANGE, POLL, IOCTL; anything else is ENOSYS, as fuser's
//!    defaults answer it now. FORGET/BATCH_FORGET and INTERRUPT keep arriving through
//!    fuser's /dev/fuse loop (one thread), and the poll/inval notifiers keep writing to
//!    /dev/fuse. Each ring opcode needs a decoder test against bytes laid out as
//!    `fuse_uring_args_to_ring` lays them.
//! 3. **Mount wiring.** `-o io_uring[,uring_depth=N]`: `init` adds `FUSE_OVER_IO_URING`
//!    when offered; when it is not (kernel without it, `enable_uring` off) the mount says
//!    so once and serves /dev/fuse. After `Session::new` (INIT done) start one pinned
//!    thread per possible CPU (a thread for an offline CPU cannot pin but must still
//!    register, or the ring is never ready), each with `uring_depth` entries of
//!    [`queue::payload_size`] bytes — the adapter's max_write is `max_pages_limit` pages,
//!    1 MiB by default, so memory is CPUs × depth × 1 MiB. If any REGISTER fails, log the
//!    errno and let /dev/fuse serve everything (the kernel has already fallen back), with
//!    fuser's usual worker count. `daxfs stats` prints `transport io_uring` or
//!    `transport dev_fuse`.
//! 4. **Deferred replies.** A request that waits for pins keeps its entry until its
//!    reply, and the reply must be committed by the queue's own thread: waiters post
//!    `(slot, ReplyValue)` to the queue's mailbox and wake it through the eventfd that
//!    [`queue::Stopper`] polls today (re-armed after each wake). Depth per queue must
//!    exceed the waiters a CPU may hold (`Waiters::limit`), or waiting truncates starve
//!    that CPU's other requests, which queue in the kernel meanwhile.
//! 5. **Busy polling.** With the ring, /dev/fuse carries only forgets and interrupts, so
//!    polling it is pointless: `busy_poll=` on /dev/fuse is turned off for ring mounts.
//!    The round trip the ring removes is the cross-CPU wake-up (the request is served on
//!    the issuing CPU, commit-and-fetch is one system call); what remains is a same-CPU
//!    wake-up of the queue thread. A ring-side poll spins on the CQ (and, with
//!    `IORING_SETUP_COOP_TASKRUN | TASKRUN_FLAG`, on the SQ's taskrun flag, entering the
//!    kernel with no wait to run the copy) for a window before blocking in
//!    `submit_and_wait`; on a pinned per-CPU queue a spinner competes with the very
//!    client it serves, so the existing governor (measure polling against sleeping, keep
//!    the faster, idle back to sleeping) decides it, and the default follows the
//!    measurement (bench/run, both transports).
//! 6. **Tests.** A suite config switch runs tests/ on both transports; tests/run may set
//!    `enable_uring` as root for the handshake and restores it as the probe does.

pub mod abi;
pub mod queue;
pub mod reply;
pub mod request;
pub mod transport;
