//! The policy of every request, transport-neutral: [`FuseAdapter::serve`] takes who asked
//! ([`Ctx`]) and the decoded arguments ([`Op`]) and answers through a [`ReplySink`] with a
//! [`Reply`] value. Each opcode is one method here; fuser's shim and the io_uring queues
//! only translate to and from their wire forms.

use super::handles::{handle_flags, pins_need_attention};
use super::ioctls;
use super::reply::{xattr_reply, ReadData};
use super::request::{FUSE_POLL_SCHEDULE_NOTIFY, FUSE_WRITE_CACHE};
use super::{
    lock_ignoring_poison, Ctx, DirEntry, FuseAdapter, Op, Reply, ReplySink, Served,
    FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, FOPEN_PARALLEL_DIRECT_WRITES, MAX_COPY_CHUNK,
    READDIRPLUS_BATCH,
};
use daxfs::{Attr, DaxFs, Errno, SetAttr, SEEK_DATA, SEEK_HOLE};
use daxfs_pmem::VolatileSlice;
use std::time::{Duration, Instant};

/// How long a request that found no space waits in all for removed files to be freed
/// ([`FuseAdapter::or_wait_for_space`]): the kernel's RELEASE and FORGET that free them
/// are on their way and arrive within microseconds to milliseconds, so this is only the
/// bound for a loaded machine. A removed file some process holds open costs one such wait
/// per change of the set of removed-but-referenced files (`DaxFs::wait_for_orphan_free`).
const SPACE_WAIT: Duration = Duration::from_millis(500);

/// `FOPEN_*` flags of an open reply: bypass the kernel page cache for DAX inodes (and let
/// their direct writes run in parallel; the core is thread-safe), keep the cache across
/// opens otherwise (every change goes through this kernel, so it stays valid).
pub fn open_reply_flags(kernel_may_cache: bool) -> u32 {
    if kernel_may_cache {
        FOPEN_KEEP_CACHE
    } else {
        FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES
    }
}

/// Whether a write must go to the true EOF. `req_flags` are the file's current flags as
/// the kernel sends them with each write (they follow fcntl(F_SETFL)); `fh_flags` those of
/// the open, used when the kernel sends none (ABI < 7.9); `write_flags` the FUSE write
/// flags ([`FUSE_WRITE_CACHE`]).
pub fn write_appends(req_flags: i32, fh_flags: i32, write_flags: u32, writeback: bool) -> bool {
    if writeback || write_flags & FUSE_WRITE_CACHE != 0 {
        // The kernel computed the offset itself (writeback cache), or this is a page
        // cache flush of some earlier write: its offset is exact.
        return false;
    }
    let flags = if req_flags != 0 { req_flags } else { fh_flags };
    flags & libc::O_APPEND != 0
}

/// The reply to a request that succeeded without data, or failed.
fn empty(r: daxfs::Result<()>) -> Reply<'static> {
    match r {
        Ok(()) => Reply::Empty,
        Err(e) => Reply::Err(e),
    }
}

/// The reply to a request that made or found an entry, counting the kernel's new
/// reference to it first (the kernel will forget it later; see [`DaxFs::remember`]).
fn entry_reply(fs: &DaxFs, r: daxfs::Result<Attr>, ttl: Duration) -> Reply<'static> {
    match r.and_then(|a| fs.remember(a.ino).map(|()| a)) {
        Ok(attr) => Reply::Entry { attr, ttl },
        Err(e) => Reply::Err(e),
    }
}

/// The reply to a write or copy that gave `r`.
fn written_reply<N: TryInto<u32>>(r: daxfs::Result<N>) -> Reply<'static> {
    match r {
        // Never more than the request's size, which is at most max_write (u32) for a
        // write and MAX_COPY_CHUNK for a copy.
        Ok(n) => Reply::Written(n.try_into().unwrap_or(u32::MAX)),
        Err(e) => Reply::Err(e),
    }
}

/// The reply to a getattr or setattr that gave `r`.
fn attr_reply(r: daxfs::Result<Attr>, ttl: Duration) -> Reply<'static> {
    match r {
        Ok(attr) => Reply::Attr { attr, ttl },
        Err(e) => Reply::Err(e),
    }
}

/// The reply to a create that gave `r` (new handle `fh`), counting the kernel's new
/// reference to the entry first.
fn create_reply(fs: &DaxFs, r: daxfs::Result<Attr>, ttl: Duration, fh: u64) -> Reply<'static> {
    match r {
        Ok(attr) => {
            if let Err(e) = fs.remember(attr.ino) {
                // Removed by someone else before the reply: undo the open.
                let _ = fs.release(attr.ino);
                return Reply::Err(e);
            }
            let flags = open_reply_flags(fs.kernel_may_cache(attr.ino));
            Reply::Created {
                attr,
                ttl,
                fh,
                flags,
            }
        }
        Err(e) => Reply::Err(e),
    }
}

/// The reply to a fallocate that gave `r`. The kernel invalidates its caches only after a
/// fallocate that succeeded. A failed one may still have changed the file (the core
/// commits partial work: blocks allocated before ENOSPC, ends zeroed before a punch
/// failed), so the kernel drops the attributes (the core's fail_op) and, when data may
/// have moved, the cached pages.
fn fallocate_reply(fs: &DaxFs, ino: u64, mode: i32, r: daxfs::Result<()>) -> Reply<'static> {
    if r.is_err() {
        let moves = libc::FALLOC_FL_PUNCH_HOLE
            | libc::FALLOC_FL_ZERO_RANGE
            | libc::FALLOC_FL_COLLAPSE_RANGE
            | libc::FALLOC_FL_INSERT_RANGE;
        if mode & moves != 0 {
            fs.invalidate_cached(ino, &(0..u64::MAX));
        }
    }
    empty(r)
}

impl FuseAdapter {
    /// Serves one request: `sink` gets its reply, at once or, for a request that has to
    /// wait for pins, later from a waiter thread ([`Served::Deferred`]).
    pub fn serve<S: ReplySink>(&self, ctx: &Ctx, mut op: Op<'_>, sink: S) -> Served {
        // Node ids to inode numbers, stale generations refused (`node.rs`).
        if let Err(e) = super::node::resolve(&self.fs(), &mut op) {
            if !matches!(op, Op::Forget { .. }) {
                sink.send(Reply::Err(e));
            }
            return Served::Now;
        }
        let reply = match op {
            Op::Lookup { parent, name } => self.lookup(parent, name),
            Op::Forget { ino, nlookup } => {
                self.forget(ino, nlookup);
                return Served::Now;
            }
            Op::Getattr { ino, fh: _ } => attr_reply(self.fs().getattr(ino), self.ttl),
            Op::Setattr {
                ino,
                fh: _,
                changes,
            } => return self.setattr(ctx, ino, changes, sink),
            Op::Readlink { ino } => match self.fs().readlink(ino) {
                Ok(t) => Reply::Bytes(t),
                Err(e) => Reply::Err(e),
            },
            Op::Mknod {
                parent,
                name,
                mode,
                umask,
                rdev,
            } => {
                let mode = self.create_mode(parent, mode, umask);
                let (token, who) = (self.fs().orphan_frees(), ctx.cred());
                let r = self.fs().mknod(parent, name, mode, rdev, &who);
                return self.entry_or_wait(ctx, sink, token, r, || {
                    let name = name.to_vec();
                    move |fs: &DaxFs| fs.mknod(parent, &name, mode, rdev, &who)
                });
            }
            Op::Mkdir {
                parent,
                name,
                mode,
                umask,
            } => {
                let mode = self.create_mode(parent, mode, umask) & 0o7777;
                let (token, who) = (self.fs().orphan_frees(), ctx.cred());
                let r = self.fs().mkdir(parent, name, mode, &who);
                return self.entry_or_wait(ctx, sink, token, r, || {
                    let name = name.to_vec();
                    move |fs: &DaxFs| fs.mkdir(parent, &name, mode, &who)
                });
            }
            Op::Unlink { parent, name } => empty(self.fs().unlink(parent, name)),
            Op::Rmdir { parent, name } => empty(self.fs().rmdir(parent, name)),
            Op::Symlink {
                parent,
                name,
                target,
            } => {
                let (token, who) = (self.fs().orphan_frees(), ctx.cred());
                let r = self.fs().symlink(parent, name, target, &who);
                return self.entry_or_wait(ctx, sink, token, r, || {
                    let (name, target) = (name.to_vec(), target.to_vec());
                    move |fs: &DaxFs| fs.symlink(parent, &name, &target, &who)
                });
            }
            Op::Rename {
                parent,
                name,
                newparent,
                newname,
                flags,
            } => {
                // Whiteouts are overlayfs's business; unknown bits are invalid as
                // renameat2 says.
                let supported = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE;
                if flags & !supported != 0 {
                    Reply::Err(Errno::EINVAL)
                } else {
                    let token = self.fs().orphan_frees();
                    let r = self.fs().rename(parent, name, newparent, newname, flags);
                    return self.or_wait_for_space(
                        ctx,
                        sink,
                        token,
                        r,
                        |_, r| empty(r),
                        || {
                            let (name, newname) = (name.to_vec(), newname.to_vec());
                            move |fs: &DaxFs| fs.rename(parent, &name, newparent, &newname, flags)
                        },
                    );
                }
            }
            Op::Link {
                ino,
                newparent,
                newname,
            } => {
                let token = self.fs().orphan_frees();
                let r = self.fs().link(ino, newparent, newname);
                return self.entry_or_wait(ctx, sink, token, r, || {
                    let newname = newname.to_vec();
                    move |fs: &DaxFs| fs.link(ino, newparent, &newname)
                });
            }
            Op::Open { ino, flags } => return self.open(ctx, ino, flags, sink),
            Op::Create {
                parent,
                name,
                mode,
                umask,
                flags,
            } => return self.create(ctx, parent, name, mode, umask, flags, sink),
            Op::Read {
                ino, offset, size, ..
            } => {
                self.read(ino, offset, size, sink);
                return Served::Now;
            }
            Op::Write {
                ino,
                fh,
                offset,
                data,
                write_flags,
                flags,
            } => {
                let append = write_appends(flags, handle_flags(fh), write_flags, self.writeback);
                // A write by anyone but root clears set-id bits; the core tells the kernel.
                let (token, who) = (self.fs().orphan_frees(), ctx.cred());
                let r = self.fs().write_as(ino, offset, data, append, &who);
                // Nothing was written (a short write is Ok): the retry writes it all.
                return self.or_wait_for_space(
                    ctx,
                    sink,
                    token,
                    r,
                    |_, r| written_reply(r),
                    || {
                        let data = data.to_vec();
                        move |fs: &DaxFs| fs.write_as(ino, offset, &data, append, &who)
                    },
                );
            }
            // Writes are durable before they reply; close has nothing left to push. ENOSYS
            // tells the kernel to stop sending FLUSH at all: one round trip less per close.
            Op::Flush { .. } => Reply::Err(Errno::ENOSYS),
            Op::Release { ino, fh } => {
                // The handle's pins go first: the last release of an unlinked file frees it.
                self.release_pins(fh);
                empty(self.fs().release(ino))
            }
            // Every write is durable before it replies, every metadata change is committed
            // before it returns, and no reply reveals a change another call has not
            // finished committing (readers settle it first, see `DaxFs::getattr`): nothing
            // a client has seen is left for fsync to make durable. The kernel still writes
            // back its dirty pages (dax=never) and waits for them before it would send
            // FSYNC; ENOSYS tells it to stop sending FSYNC at all (fc->no_fsync), one round
            // trip less per fsync(2). The library's `DaxFs::fsync` keeps its wait for
            // library callers. The exception is `-o lazytime`: overwrites leave their
            // timestamps in memory, and fsync (not fdatasync) must commit them.
            Op::Fsync { ino, datasync, .. } if self.fs().options().lazytime => {
                empty(self.fs().fsync(ino, datasync))
            }
            Op::Fsync { .. } => Reply::Err(Errno::ENOSYS),
            // Directory streams are stateless: readdir cookies are stable in the core.
            Op::Opendir { .. } => Reply::Opened { fh: 0, flags: 0 },
            Op::Readdir { ino, offset, .. } => {
                let mut sink = sink;
                let reply = self.readdir(ino, offset, &mut sink);
                sink.send(reply);
                return Served::Now;
            }
            Op::Readdirplus { ino, offset, .. } => {
                let mut sink = sink;
                let reply = self.readdirplus(ino, offset, &mut sink);
                sink.send(reply);
                return Served::Now;
            }
            Op::Releasedir { .. } => Reply::Empty,
            // As for FSYNC: namespace changes are committed before they return and readers
            // never see one in flight, so ENOSYS stops the kernel sending FSYNCDIR.
            Op::Fsyncdir { .. } => Reply::Err(Errno::ENOSYS),
            Op::Statfs { .. } => Reply::Statfs(self.fs().statfs()),
            Op::Setxattr {
                ino,
                name,
                value,
                flags,
                position,
            } => {
                if position != 0 {
                    // A macOS resource-fork offset; never sent by Linux.
                    Reply::Err(Errno::EINVAL)
                } else {
                    let token = self.fs().orphan_frees();
                    let r = self.fs().setxattr(ino, name, value, flags);
                    return self.or_wait_for_space(
                        ctx,
                        sink,
                        token,
                        r,
                        |_, r| empty(r),
                        || {
                            let (name, value) = (name.to_vec(), value.to_vec());
                            move |fs: &DaxFs| fs.setxattr(ino, &name, &value, flags)
                        },
                    );
                }
            }
            Op::Getxattr { ino, name, size } => xattr_reply(self.fs().getxattr(ino, name), size),
            Op::Listxattr { ino, size } => {
                xattr_reply(self.fs().listxattr_as(ino, &ctx.cred()), size)
            }
            Op::Removexattr { ino, name } => empty(self.fs().removexattr(ino, name)),
            Op::Access { ino, mask } => empty(self.fs().access(ino, mask, &ctx.cred())),
            Op::Fallocate {
                ino,
                offset,
                length,
                mode,
                ..
            } => return self.fallocate(ctx, ino, offset, length, mode, sink),
            Op::Lseek {
                ino,
                offset,
                whence,
                ..
            } => self.lseek(ino, offset, whence),
            Op::CopyFileRange {
                ino_in,
                offset_in,
                ino_out,
                offset_out,
                len,
                flags,
                ..
            } => {
                if flags != 0 {
                    Reply::Err(Errno::EINVAL)
                } else {
                    // A short copy is allowed; callers loop.
                    let len = len.min(MAX_COPY_CHUNK);
                    let token = self.fs().orphan_frees();
                    let r = self
                        .fs()
                        .copy_file_range(ino_in, offset_in, ino_out, offset_out, len);
                    return self.or_wait_for_space(
                        ctx,
                        sink,
                        token,
                        r,
                        |_, r| written_reply(r),
                        || {
                            move |fs: &DaxFs| {
                                fs.copy_file_range(ino_in, offset_in, ino_out, offset_out, len)
                            }
                        },
                    );
                }
            }
            Op::Poll {
                fh,
                events,
                flags,
                waker,
                ..
            } => self.poll(fh, events, flags, waker),
            Op::Ioctl {
                ino,
                fh,
                cmd,
                in_data,
                out_size,
            } => ioctls::ioctl(self, ctx, ino, fh, cmd, in_data, out_size),
        };
        sink.send(reply);
        Served::Now
    }

    /// Hands a request whose `try_*` attempt found a pinned block to a waiter thread
    /// (`crate::deferred`), where `op` repeats it, waiting allowed, and answers. The
    /// worker returns at once: the request that ends the wait (UNPIN, or the release of
    /// the pin holder's handle) needs a free worker, and so does everyone else. Past the
    /// bounds on waiters (in all, and of the request's user) the request is answered
    /// EBUSY at once, nothing changed.
    fn defer<S: ReplySink>(
        &self,
        ctx: &Ctx,
        sink: S,
        op: impl FnOnce() -> Reply<'static> + Send + 'static,
    ) -> Served {
        match self
            .waiters
            .run(ctx.uid, sink, move |sink: S| sink.send(op()))
        {
            Ok(()) => Served::Deferred,
            Err(sink) => {
                sink.send(Reply::Err(Errno::EBUSY));
                Served::Now
            }
        }
    }

    /// An entry reply, counting the kernel's new reference to it first (the kernel will
    /// forget it later; see [`DaxFs::remember`]).
    fn entry(&self, r: daxfs::Result<Attr>) -> Reply<'static> {
        entry_reply(&self.fs(), r, self.ttl)
    }

    /// Whether a request that gave `r` found no space that a removed file is about to
    /// give back: with FUSE, the kernel sends the RELEASE of a closed file and the FORGET
    /// of a removed one asynchronously, so they can arrive after the next request that
    /// needs their space — `rm f; echo data > p` on a full device failed with ENOSPC,
    /// where ext4 and tmpfs have freed the space before rm returns. `token` is
    /// `DaxFs::orphan_frees` taken before the request's first try.
    fn space_may_come<T>(&self, r: &daxfs::Result<T>, token: u64) -> bool {
        matches!(r, Err(e) if *e == Errno::ENOSPC) && self.fs().orphan_free_may_come(token)
    }

    /// Answers `r`, the first try of a request that allocates, with `answer`, unless it
    /// found no space while a removed file's free may be on its way
    /// ([`space_may_come`](Self::space_may_come)). Then, as ext4 retries an allocation
    /// after the journal commit that frees blocks, a waiter thread (`crate::deferred`)
    /// waits for the free, holding no lock (`DaxFs::wait_for_orphan_free`), repeats the
    /// request with the closure `retry` makes and answers the outcome; at most
    /// [`SPACE_WAIT`] in all, then ENOSPC. Only this slow path calls `retry`, which takes
    /// owned copies of the request's borrowed arguments. The worker returns at once: the
    /// RELEASE or FORGET that ends the wait needs one. Past the bounds on waiters the
    /// request is answered ENOSPC at once.
    fn or_wait_for_space<S, T, F>(
        &self,
        ctx: &Ctx,
        sink: S,
        token: u64,
        r: daxfs::Result<T>,
        answer: impl Fn(&DaxFs, daxfs::Result<T>) -> Reply<'static> + Send + Sync + 'static,
        retry: impl FnOnce() -> F,
    ) -> Served
    where
        S: ReplySink,
        T: 'static,
        F: FnMut(&DaxFs) -> daxfs::Result<T> + Send + 'static,
    {
        if !self.space_may_come(&r, token) {
            sink.send(answer(&self.fs(), r));
            return Served::Now;
        }
        let (fs, mut retry) = (self.fs(), retry());
        // Shared with the refusal below: a refused request is answered as a failed try
        // is (a failed fallocate still drops the kernel's cached pages of its range).
        let answer = std::sync::Arc::new(answer);
        let answer_here = answer.clone();
        let job = move |sink: S| {
            let deadline = Instant::now() + SPACE_WAIT;
            let mut token = token;
            let mut r = Err(Errno::ENOSPC);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || !fs.wait_for_orphan_free(token, left) {
                    break;
                }
                token = fs.orphan_frees();
                r = retry(&fs);
                if !matches!(r, Err(e) if e == Errno::ENOSPC) {
                    break;
                }
            }
            sink.send(answer(&fs, r));
        };
        match self.waiters.run(ctx.uid, sink, job) {
            Ok(()) => Served::Deferred,
            Err(sink) => {
                sink.send(answer_here(&self.fs(), Err(Errno::ENOSPC)));
                Served::Now
            }
        }
    }

    /// [`or_wait_for_space`](Self::or_wait_for_space) for a request answered with an
    /// entry.
    fn entry_or_wait<S, F>(
        &self,
        ctx: &Ctx,
        sink: S,
        token: u64,
        r: daxfs::Result<Attr>,
        retry: impl FnOnce() -> F,
    ) -> Served
    where
        S: ReplySink,
        F: FnMut(&DaxFs) -> daxfs::Result<Attr> + Send + 'static,
    {
        let ttl = self.ttl;
        let answer = move |fs: &DaxFs, r| entry_reply(fs, r, ttl);
        self.or_wait_for_space(ctx, sink, token, r, answer, retry)
    }

    /// The mode a new inode in `parent` is created with: the umask applies unless the
    /// kernel already applied it or a default ACL in `parent` replaces it.
    fn create_mode(&self, parent: u64, mode: u32, umask: u32) -> u32 {
        if self.dont_mask && !self.fs().has_default_acl(parent) {
            mode & !(umask & 0o777)
        } else {
            mode
        }
    }

    fn lookup(&self, parent: u64, name: &[u8]) -> Reply<'static> {
        let r = match self.lookup_dot(parent, name) {
            Some(r) => r,
            None => self.fs().lookup(parent, name),
        };
        self.entry(r)
    }

    /// `lookup` of "." and "..": the kernel sends them only for NFS export
    /// (FUSE_EXPORT_SUPPORT); the core's lookup deals in real names.
    fn lookup_dot(&self, parent: u64, name: &[u8]) -> Option<daxfs::Result<Attr>> {
        match name {
            b"." => Some(self.fs().getattr(parent)),
            b".." => {
                let mut dotdot = None;
                let r = self.fs().readdir(parent, 0, |e| {
                    if e.name == b".." {
                        dotdot = Some(e.ino);
                        return false;
                    }
                    true
                });
                Some(match (r, dotdot) {
                    (Err(e), _) => Err(e),
                    (Ok(()), Some(ino)) => self.fs().getattr(ino),
                    (Ok(()), None) => Err(Errno::ENOENT),
                })
            }
            _ => None,
        }
    }

    /// The kernel dropped `nlookup` references: an unlinked inode is freed once none are
    /// left.
    fn forget(&self, ino: u64, nlookup: u64) {
        if let Err(e) = self.fs().forget(ino, nlookup) {
            // No reply to carry it; the inode stays an orphan until the next mount.
            eprintln!("daxfs: freeing unlinked inode {ino} failed: {e}");
        }
    }

    fn setattr<S: ReplySink>(&self, ctx: &Ctx, ino: u64, changes: SetAttr, sink: S) -> Served {
        let who = ctx.cred();
        // A truncate may wait for pins: tried here without sleeping first.
        match self.fs().try_setattr(ino, &who, &changes) {
            Some(r) => {
                sink.send(attr_reply(r, self.ttl));
                Served::Now
            }
            None => {
                let (fs, ttl) = (self.fs(), self.ttl);
                self.defer(ctx, sink, move || {
                    attr_reply(fs.setattr(ino, &who, &changes), ttl)
                })
            }
        }
    }

    fn open<S: ReplySink>(&self, ctx: &Ctx, ino: u64, flags: i32, sink: S) -> Served {
        // O_TRUNC may wait for pins: tried here without sleeping first.
        match self.fs().try_open(ino, flags) {
            Some(r) => {
                sink.send(match r {
                    Ok(()) => Reply::Opened {
                        fh: self.new_handle(flags),
                        flags: open_reply_flags(self.fs().kernel_may_cache(ino)),
                    },
                    Err(e) => Reply::Err(e),
                });
                Served::Now
            }
            None => {
                let (fs, fh) = (self.fs(), self.new_handle(flags));
                self.defer(ctx, sink, move || match fs.open(ino, flags) {
                    Ok(()) => Reply::Opened {
                        fh,
                        flags: open_reply_flags(fs.kernel_may_cache(ino)),
                    },
                    Err(e) => Reply::Err(e),
                })
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create<S: ReplySink>(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        flags: i32,
        sink: S,
    ) -> Served {
        let mode = self.create_mode(parent, mode, umask);
        let who = ctx.cred();
        // O_TRUNC of a file that exists may wait for pins: tried here without sleeping.
        let fh = self.new_handle(flags);
        let token = self.fs().orphan_frees();
        match self.fs().try_create(parent, name, mode, flags, &who) {
            Some(r) if self.space_may_come(&r, token) => {
                let ttl = self.ttl;
                let answer = move |fs: &DaxFs, r| create_reply(fs, r, ttl, fh);
                self.or_wait_for_space(ctx, sink, token, r, answer, || {
                    let name = name.to_vec();
                    move |fs: &DaxFs| fs.create(parent, &name, mode, flags, &who)
                })
            }
            Some(r) => {
                sink.send(create_reply(&self.fs(), r, self.ttl, fh));
                Served::Now
            }
            None => {
                let (fs, ttl, name) = (self.fs(), self.ttl, name.to_vec());
                self.defer(ctx, sink, move || {
                    let r = fs.create(parent, &name, mode, flags, &who);
                    create_reply(&fs, r, ttl, fh)
                })
            }
        }
    }

    fn read<S: ReplySink>(&self, ino: u64, offset: u64, size: u32, sink: S) {
        if self.fs().is_follower() {
            // A follower's read is checked after its copy (a stall may have let the
            // writer reuse the blocks: EIO, docs/DESIGN.md "Followers"), so the bytes go
            // through a buffer and reach the kernel only once the check passed.
            let mut buf = vec![0u8; size as usize];
            match self.fs().read(ino, offset, &mut buf) {
                Ok(n) => {
                    let pieces = [VolatileSlice::from(&buf[..n])];
                    // SAFETY: the piece views `buf`, owned here and not stored to while
                    // the reply is sent.
                    sink.send(Reply::Data(unsafe { ReadData::new(&pieces) }));
                }
                Err(e) => sink.send(Reply::Err(e)),
            }
            return;
        }
        // The reply is sent from inside read_with, while the core holds the blocks: the
        // bytes go from the device mapping to the kernel without an intermediate copy.
        let mut sink = Some(sink);
        let r = self.fs().read_with(ino, offset, size, |pieces| {
            if let Some(sink) = sink.take() {
                // SAFETY: nothing stores to these bytes while the reply is sent.
                // read_with calls this with the inode's state lock held shared and the
                // blocks pinned; every store to a file's data through the filesystem
                // (write, fallocate, truncate's zeroing) takes that lock exclusively,
                // and pinned blocks are not freed, so not reallocated and zeroed. The
                // one lock-free writer is a writable PinnedMapping, which only library
                // users make: this daemon makes none (DAXFS_IOC_PIN pins blocks without
                // handing out their bytes). Other processes are kept off the device by
                // its exclusive lock (like any MAP_SHARED mapping, a process ignoring it
                // is beyond what Rust can promise). The ReadData borrows the pieces, so
                // it lives only for this call, in which the sink hands the bytes to the
                // kernel (writev(2) for /dev/fuse) or copies them out.
                sink.send(Reply::Data(unsafe { ReadData::new(pieces) }));
            }
        });
        if let (Err(e), Some(sink)) = (r, sink) {
            sink.send(Reply::Err(e));
        }
    }

    /// Lists directory `ino` from cookie `offset` into `sink` until it is full.
    fn readdir<S: ReplySink>(&self, ino: u64, offset: u64, sink: &mut S) -> Reply<'static> {
        let r = self.fs().readdir(ino, offset, |e| {
            sink.add_dir_entry(&DirEntry {
                ino: e.ino,
                offset: e.next_offset,
                kind: e.kind,
                name: &e.name,
                attr: None,
            })
        });
        match r {
            Ok(()) => Reply::Entries,
            Err(e) => Reply::Err(e),
        }
    }

    /// As [`readdir`](Self::readdir), each entry with its attributes and a kernel
    /// reference. Entries are fetched in small batches and their attributes read after
    /// the core's readdir has returned: getattr is never called from inside the core's
    /// directory walk (which may hold the directory's lock). Entries fetched but not
    /// fitting the buffer are simply fetched again by the next call (stable cookies).
    fn readdirplus<S: ReplySink>(&self, ino: u64, offset: u64, sink: &mut S) -> Reply<'static> {
        let mut offset = offset;
        loop {
            let mut batch = Vec::with_capacity(READDIRPLUS_BATCH);
            if let Err(e) = self.fs().readdir(ino, offset, |e| {
                batch.push(e);
                batch.len() < READDIRPLUS_BATCH
            }) {
                return Reply::Err(e);
            }
            let exhausted = batch.len() < READDIRPLUS_BATCH;
            for e in batch {
                offset = e.next_offset;
                let attr = match self.fs().getattr(e.ino) {
                    Ok(a) => a,
                    // Removed since the walk: leave it out, as a later readdir would.
                    Err(_) => continue,
                };
                // The kernel takes a reference to every entry but "." and "..".
                let counted = e.name != b"." && e.name != b"..";
                if counted && self.fs().remember(e.ino).is_err() {
                    continue;
                }
                let added = sink.add_dir_entry(&DirEntry {
                    ino: e.ino,
                    offset: e.next_offset,
                    kind: e.kind,
                    name: &e.name,
                    attr: Some((&attr, self.ttl)),
                });
                if !added {
                    // Not added: the kernel never saw it.
                    if counted {
                        let _ = self.fs().forget(e.ino, 1);
                    }
                    return Reply::Entries;
                }
            }
            if exhausted {
                return Reply::Entries;
            }
        }
    }

    fn fallocate<S: ReplySink>(
        &self,
        ctx: &Ctx,
        ino: u64,
        offset: u64,
        length: u64,
        mode: i32,
        sink: S,
    ) -> Served {
        // Punch, zero, collapse and insert may wait for pins: tried here without sleeping.
        let token = self.fs().orphan_frees();
        match self.fs().try_fallocate(ino, offset, length, mode) {
            // The blocks it got stay (as on ext4): the retry allocates the rest.
            Some(r) if self.space_may_come(&r, token) => {
                let answer = move |fs: &DaxFs, r| fallocate_reply(fs, ino, mode, r);
                self.or_wait_for_space(ctx, sink, token, r, answer, || {
                    move |fs: &DaxFs| fs.fallocate(ino, offset, length, mode)
                })
            }
            Some(r) => {
                sink.send(fallocate_reply(&self.fs(), ino, mode, r));
                Served::Now
            }
            None => {
                let fs = self.fs();
                self.defer(ctx, sink, move || {
                    let r = fs.fallocate(ino, offset, length, mode);
                    fallocate_reply(&fs, ino, mode, r)
                })
            }
        }
    }

    fn lseek(&self, ino: u64, offset: i64, whence: i32) -> Reply<'static> {
        // The kernel resolves SEEK_SET/CUR/END itself and sends only these two.
        if whence != SEEK_DATA && whence != SEEK_HOLE {
            return Reply::Err(Errno::EINVAL);
        }
        if self.writeback {
            // The kernel sends FUSE_LSEEK without writing back its dirty pages first, so
            // the core would answer from stale sizes and extents (ENXIO for a file whose
            // data is still in the page cache). ENOSYS makes the kernel answer from its
            // own i_size for the rest of the connection: no holes reported, but correct.
            return Reply::Err(Errno::ENOSYS);
        }
        match self.fs().lseek(ino, offset, whence) {
            Ok(off) => Reply::Lseek(off),
            Err(e) => Reply::Err(e),
        }
    }

    /// A regular file is always readable and writable (the kernel's default answer for
    /// files that do not implement poll); POLLPRI means that a layout break asked for one
    /// of the pins held through this handle, or revoked one (see DAXFS_IOC_PIN_STATUS).
    fn poll(&self, fh: u64, events: u32, flags: u32, waker: super::PollWaker) -> Reply<'static> {
        // Registered before the state is read: a break after the read notifies it.
        if flags & FUSE_POLL_SCHEDULE_NOTIFY != 0 {
            lock_ignoring_poison(&self.polls).insert(fh, waker);
        }
        let bit = |b: libc::c_short| b as u16 as u32;
        let mut ready =
            bit(libc::POLLIN) | bit(libc::POLLOUT) | bit(libc::POLLRDNORM) | bit(libc::POLLWRNORM);
        let attention = lock_ignoring_poison(&self.pins)
            .get(&fh)
            .is_some_and(|l| pins_need_attention(l));
        if attention {
            ready |= bit(libc::POLLPRI);
        }
        Reply::Poll(ready & (events | bit(libc::POLLERR) | bit(libc::POLLHUP)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dax_inodes_open_direct_io_and_cacheable_ones_keep_cache() {
        let d = open_reply_flags(false);
        assert!(d & FOPEN_DIRECT_IO != 0);
        assert!(d & FOPEN_KEEP_CACHE == 0);
        let c = open_reply_flags(true);
        assert!(c & FOPEN_KEEP_CACHE != 0);
        assert!(c & FOPEN_DIRECT_IO == 0);
    }

    #[test]
    fn write_appends_when_the_file_flags_say_o_append() {
        let none = 0;
        let wa = libc::O_WRONLY | libc::O_APPEND;
        assert!(write_appends(wa, wa, none, false));
        assert!(!write_appends(libc::O_WRONLY, libc::O_WRONLY, none, false));
    }

    #[test]
    fn write_follows_the_current_flags_after_fcntl_clears_o_append() {
        let opened = libc::O_WRONLY | libc::O_APPEND;
        assert!(!write_appends(libc::O_WRONLY, opened, 0, false));
    }

    #[test]
    fn write_uses_the_open_flags_when_the_kernel_sends_none() {
        let opened = libc::O_WRONLY | libc::O_APPEND;
        assert!(write_appends(0, opened, 0, false));
    }

    #[test]
    fn writeback_cache_writes_never_append() {
        let wa = libc::O_WRONLY | libc::O_APPEND;
        assert!(!write_appends(wa, wa, 0, true));
        assert!(!write_appends(wa, wa, FUSE_WRITE_CACHE, false));
    }
}
