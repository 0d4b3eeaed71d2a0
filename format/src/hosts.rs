//! The host table (format version 2, docs/FORMAT.md "Host table"): block 0 bytes
//! 2048..4096, 32 slots of one cache line each, shared by every host that maps the
//! device. Slot 0 is the writer lease, slots 1..31 are followers.
//!
//! The table is coordination state, not filesystem state: it is not checksummed, not
//! journaled and not flushed. Every field is read and written with aligned 8-byte
//! atomics (acquire loads, release stores, compare-and-swap), so it needs memory that is
//! coherent between the hosts (one machine's DAX, CXL 3 shared memory). After a crash of
//! every host the table only holds stale leases, which liveness (a heartbeat counter
//! that stops changing) tells apart from live ones.
//!
//! Two u32 fields share each of the words at lease offsets 24 and 40 and host offset 32
//! (little-endian: the first field is the low half). Their setters store the whole word
//! (`set_timing`, `set_pid_state`, `set_pid_flags`) so no read-modify-write can lose a
//! concurrent update.
//!
//! [`HostTable`] is the live view (over a [`VolatileSlice`] of the device); the
//! [`LeaseRecord`] and [`HostRecord`] decoders read a plain copy (fsck).

use daxfs_pmem::codec::{get_u32, get_u64};
use daxfs_pmem::{AccessError, Device, VolatileSlice};
use std::time::{Duration, Instant};

/// Device byte offset of the table (inside block 0, after the superblock's area).
pub const HOST_TABLE_OFFSET: u64 = 2048;
/// One slot: one cache line.
pub const SLOT_SIZE: usize = 64;
/// Slot 0 (the writer lease) and 31 follower slots.
pub const SLOTS: usize = 32;
/// The whole table in bytes (2048: it ends at the end of block 0).
pub const HOST_TABLE_SIZE: usize = SLOT_SIZE * SLOTS;
/// The first follower slot.
pub const FIRST_HOST_SLOT: usize = 1;

/// Lease states (slot 0's `state`).
pub const LEASE_FREE: u32 = 0;
pub const LEASE_HELD: u32 = 1;
pub const LEASE_RELEASED: u32 = 2;

/// A follower that holds nothing publishes this as its `held_seq`.
pub const HOLDS_NOTHING: u64 = u64::MAX;

/// Field offsets inside slot 0 (docs/FORMAT.md "Writer lease (slot 0)").
pub mod lease_off {
    pub const EPOCH: usize = 0;
    pub const OWNER: usize = EPOCH + 8;
    pub const HEARTBEAT: usize = OWNER + 8;
    pub const HEARTBEAT_MS: usize = HEARTBEAT + 8;
    pub const TIMEOUT_MS: usize = HEARTBEAT_MS + 4;
    pub const COMMITTED_SEQ: usize = TIMEOUT_MS + 4;
    pub const PID: usize = COMMITTED_SEQ + 8;
    pub const STATE: usize = PID + 4;
    /// Identity of the writer's host and pid namespace (a hint that lets a mount on the
    /// same host and in the same process tell a dead lease at once); 0 = unknown.
    pub const HOST: usize = STATE + 4;
    /// Reserved, zero, to the end of the slot.
    pub const RESERVED: usize = HOST + 8;
}

/// Field offsets inside slots 1..31 (docs/FORMAT.md "Host slot (slots 1..31)").
pub mod host_off {
    pub const OWNER: usize = 0;
    pub const HEARTBEAT: usize = OWNER + 8;
    pub const APPLIED_SEQ: usize = HEARTBEAT + 8;
    pub const HELD_SEQ: usize = APPLIED_SEQ + 8;
    pub const PID: usize = HELD_SEQ + 8;
    pub const FLAGS: usize = PID + 4;
    /// Reserved, zero, to the end of the slot.
    pub const RESERVED: usize = FLAGS + 4;
}
const _: () = assert!(lease_off::RESERVED <= SLOT_SIZE && host_off::RESERVED <= SLOT_SIZE);
const _: () = assert!(HOST_TABLE_OFFSET as usize + HOST_TABLE_SIZE == 4096);

fn pair(lo: u32, hi: u32) -> u64 {
    lo as u64 | (hi as u64) << 32
}

fn lo(w: u64) -> u32 {
    w as u32
}

fn hi(w: u64) -> u32 {
    (w >> 32) as u32
}

/// One 64-byte slot of the live table.
#[derive(Clone, Copy, Debug)]
struct Slot<'a> {
    view: VolatileSlice<'a>,
}

impl Slot<'_> {
    fn load(&self, off: usize) -> u64 {
        // The table was checked to be inside the view and 8-aligned (`HostTable::new`)
        // and every offset here is a constant inside the slot: the load cannot fail.
        self.view.load_u64_acquire(off).unwrap_or(0)
    }

    fn store(&self, off: usize, v: u64) -> Result<(), AccessError> {
        self.view.store_u64_release(off, v)
    }

    fn cas(&self, off: usize, old: u64, new: u64) -> Result<Result<u64, u64>, AccessError> {
        self.view.compare_exchange_u64(off, old, new)
    }

    fn zero(&self) -> Result<(), AccessError> {
        // The owner word (offset 0 of a host slot) last, so a slot is never seen free
        // with leftovers of its last holder; a half-cleared slot only holds back more
        // (held_seq 0 holds everything).
        for off in (8..SLOT_SIZE).step_by(8).rev() {
            self.store(off, 0)?;
        }
        self.store(0, 0)
    }
}

/// Slot 0: the writer lease.
#[derive(Clone, Copy, Debug)]
pub struct LeaseSlot<'a> {
    slot: Slot<'a>,
}

impl LeaseSlot<'_> {
    /// The fencing token: +1 on every takeover; 0 = never held.
    pub fn epoch(&self) -> u64 {
        self.slot.load(lease_off::EPOCH)
    }
    pub fn owner(&self) -> u64 {
        self.slot.load(lease_off::OWNER)
    }
    pub fn heartbeat(&self) -> u64 {
        self.slot.load(lease_off::HEARTBEAT)
    }
    pub fn heartbeat_ms(&self) -> u32 {
        lo(self.slot.load(lease_off::HEARTBEAT_MS))
    }
    pub fn timeout_ms(&self) -> u32 {
        hi(self.slot.load(lease_off::HEARTBEAT_MS))
    }
    pub fn committed_seq(&self) -> u64 {
        self.slot.load(lease_off::COMMITTED_SEQ)
    }
    pub fn pid(&self) -> u32 {
        lo(self.slot.load(lease_off::PID))
    }
    pub fn state(&self) -> u32 {
        hi(self.slot.load(lease_off::PID))
    }
    /// The writer's host identity (see `lease_off::HOST`); 0 = unknown.
    pub fn host(&self) -> u64 {
        self.slot.load(lease_off::HOST)
    }
    pub fn set_host(&self, host: u64) -> Result<(), AccessError> {
        self.slot.store(lease_off::HOST, host)
    }

    /// Takes the next epoch: Ok(Ok(old)) if the epoch was still `old` (this caller won
    /// the takeover), Ok(Err(actual)) if another host moved it first.
    pub fn cas_epoch(&self, old: u64, new: u64) -> Result<Result<u64, u64>, AccessError> {
        self.slot.cas(lease_off::EPOCH, old, new)
    }
    pub fn set_owner(&self, owner: u64) -> Result<(), AccessError> {
        self.slot.store(lease_off::OWNER, owner)
    }
    pub fn set_heartbeat(&self, v: u64) -> Result<(), AccessError> {
        self.slot.store(lease_off::HEARTBEAT, v)
    }
    /// heartbeat_ms and timeout_ms (one word).
    pub fn set_timing(&self, heartbeat_ms: u32, timeout_ms: u32) -> Result<(), AccessError> {
        self.slot
            .store(lease_off::HEARTBEAT_MS, pair(heartbeat_ms, timeout_ms))
    }
    pub fn set_committed_seq(&self, seq: u64) -> Result<(), AccessError> {
        self.slot.store(lease_off::COMMITTED_SEQ, seq)
    }
    /// pid and state (one word).
    pub fn set_pid_state(&self, pid: u32, state: u32) -> Result<(), AccessError> {
        self.slot.store(lease_off::PID, pair(pid, state))
    }
    /// A copy of every field.
    pub fn record(&self) -> LeaseRecord {
        let mut b = [0u8; SLOT_SIZE];
        for off in (0..SLOT_SIZE).step_by(8) {
            b[off..off + 8].copy_from_slice(&self.slot.load(off).to_le_bytes());
        }
        LeaseRecord::decode(&b)
    }
}

/// Slots 1..31: one follower host each.
#[derive(Clone, Copy, Debug)]
pub struct HostSlot<'a> {
    slot: Slot<'a>,
}

impl HostSlot<'_> {
    /// Random nonzero id of the holder; 0 = free.
    pub fn owner(&self) -> u64 {
        self.slot.load(host_off::OWNER)
    }
    pub fn heartbeat(&self) -> u64 {
        self.slot.load(host_off::HEARTBEAT)
    }
    /// The journal sequence the follower's view reflects.
    pub fn applied_seq(&self) -> u64 {
        self.slot.load(host_off::APPLIED_SEQ)
    }
    /// The lowest sequence a read in progress still sees; [`HOLDS_NOTHING`] = none.
    pub fn held_seq(&self) -> u64 {
        self.slot.load(host_off::HELD_SEQ)
    }
    pub fn pid(&self) -> u32 {
        lo(self.slot.load(host_off::PID))
    }
    pub fn flags(&self) -> u32 {
        hi(self.slot.load(host_off::PID))
    }

    /// Compare-and-swap of the owner (claiming a free slot: 0 -> id; taking over a
    /// dead holder's: its id -> yours).
    pub fn cas_owner(&self, old: u64, new: u64) -> Result<Result<u64, u64>, AccessError> {
        self.slot.cas(host_off::OWNER, old, new)
    }
    pub fn set_heartbeat(&self, v: u64) -> Result<(), AccessError> {
        self.slot.store(host_off::HEARTBEAT, v)
    }
    pub fn set_applied_seq(&self, seq: u64) -> Result<(), AccessError> {
        self.slot.store(host_off::APPLIED_SEQ, seq)
    }
    pub fn set_held_seq(&self, seq: u64) -> Result<(), AccessError> {
        self.slot.store(host_off::HELD_SEQ, seq)
    }
    /// pid and flags (one word).
    pub fn set_pid_flags(&self, pid: u32, flags: u32) -> Result<(), AccessError> {
        self.slot.store(host_off::PID, pair(pid, flags))
    }
    /// A copy of every field.
    pub fn record(&self) -> HostRecord {
        let mut b = [0u8; SLOT_SIZE];
        for off in (0..SLOT_SIZE).step_by(8) {
            b[off..off + 8].copy_from_slice(&self.slot.load(off).to_le_bytes());
        }
        HostRecord::decode(&b)
    }
}

/// The live host table over device memory (or, in tests, an aligned buffer).
#[derive(Clone, Copy, Debug)]
pub struct HostTable<'a> {
    view: VolatileSlice<'a>,
}

impl<'a> HostTable<'a> {
    /// The table over `view`, which must be [`HOST_TABLE_SIZE`] bytes (at least) and
    /// 8-byte aligned. Stores need a writable view.
    pub fn new(view: VolatileSlice<'a>) -> Result<HostTable<'a>, AccessError> {
        let view = view
            .subslice(0, HOST_TABLE_SIZE)
            .ok_or(AccessError::OutOfRange)?;
        // Alignment of the first word is alignment of every word (all offsets are
        // multiples of 8).
        view.load_u64_acquire(0)?;
        Ok(HostTable { view })
    }

    /// The table of a device holding a version 2 filesystem: writable if the device is.
    pub fn on_device(dev: &'a Device) -> Result<HostTable<'a>, AccessError> {
        let end = HOST_TABLE_OFFSET + HOST_TABLE_SIZE as u64;
        if dev.size() < end {
            return Err(AccessError::OutOfRange);
        }
        let view = if dev.writable() {
            dev.volatile_mut(HOST_TABLE_OFFSET, HOST_TABLE_SIZE)
        } else {
            dev.volatile(HOST_TABLE_OFFSET, HOST_TABLE_SIZE)
        };
        HostTable::new(view)
    }

    fn slot(&self, i: usize) -> Slot<'a> {
        // i < SLOTS (callers check), so inside the table.
        Slot {
            view: self
                .view
                .subslice(i * SLOT_SIZE, SLOT_SIZE)
                .unwrap_or(self.view),
        }
    }

    /// Slot 0.
    pub fn lease(&self) -> LeaseSlot<'a> {
        LeaseSlot { slot: self.slot(0) }
    }

    /// Follower slot `i` (1..32); None for any other index.
    pub fn host(&self, i: usize) -> Option<HostSlot<'a>> {
        (FIRST_HOST_SLOT..SLOTS)
            .contains(&i)
            .then(|| HostSlot { slot: self.slot(i) })
    }

    /// Every follower slot with its index.
    pub fn hosts(&self) -> impl Iterator<Item = (usize, HostSlot<'a>)> + 'a {
        let t = *self;
        (FIRST_HOST_SLOT..SLOTS).filter_map(move |i| t.host(i).map(|h| (i, h)))
    }

    /// Claims the first free follower slot for `owner` (nonzero) by CAS 0 -> owner, and
    /// sets it to "applied nothing, holds everything" (applied_seq 0, held_seq 0) with
    /// heartbeat 0: the holder publishes real values before it reads anything. None if
    /// every slot is taken (or the view is read-only, or owner is 0).
    pub fn claim_host_slot(&self, owner: u64) -> Option<usize> {
        if owner == 0 {
            return None;
        }
        for (i, h) in self.hosts() {
            if h.owner() != 0 {
                continue;
            }
            if let Ok(Ok(_)) = h.cas_owner(0, owner) {
                // A free slot's fields are zero (released by `release_host_slot` or
                // cleared by fsck / the upgrade): nothing to reset but held_seq, whose
                // zero already means "holds everything".
                return Some(i);
            }
        }
        None
    }

    /// Frees slot `i` if `owner` still holds it (a holder presumed dead and replaced
    /// must not free its successor's slot): the fields are zeroed, the owner last.
    /// Returns whether it was freed.
    pub fn release_host_slot(&self, i: usize, owner: u64) -> bool {
        let Some(h) = self.host(i) else {
            return false;
        };
        if owner == 0 || h.owner() != owner {
            return false;
        }
        h.slot.zero().is_ok()
    }

    /// Zeroes slot `i` whoever holds it (fsck -y clearing a stale slot, the v1 upgrade).
    pub fn clear_slot(&self, i: usize) -> Result<(), AccessError> {
        if i >= SLOTS {
            return Err(AccessError::OutOfRange);
        }
        self.slot(i).zero()
    }

    /// Zeroes the whole table (the v1 -> v2 upgrade).
    pub fn clear(&self) -> Result<(), AccessError> {
        (0..SLOTS).try_for_each(|i| self.clear_slot(i))
    }
}

/// The version 1 -> 2 upgrade's device half: zeroes the host table (bytes a version 1
/// image never defined) and makes that durable, then marks `sb` as version 2. The caller
/// writes the superblock next, so a crash in between leaves a version 1 image with a
/// zero table, which the next mount upgrades again. Does nothing on a version 2 `sb`.
/// Returns whether it upgraded.
pub fn upgrade_v1(dev: &Device, sb: &mut crate::Superblock) -> Result<bool, AccessError> {
    if !sb.needs_upgrade() {
        return Ok(false);
    }
    if !dev.writable() {
        return Err(AccessError::ReadOnly);
    }
    HostTable::on_device(dev)?.clear()?;
    dev.persist(HOST_TABLE_OFFSET, HOST_TABLE_SIZE as u64);
    sb.version = crate::VERSION;
    Ok(true)
}

/// Slot 0 decoded from a plain copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseRecord {
    pub epoch: u64,
    pub owner: u64,
    pub heartbeat: u64,
    pub heartbeat_ms: u32,
    pub timeout_ms: u32,
    pub committed_seq: u64,
    pub pid: u32,
    pub state: u32,
    pub host: u64,
    /// The reserved bytes are all zero.
    pub reserved_zero: bool,
}

impl LeaseRecord {
    /// Decodes slot 0 from `b` (at least [`SLOT_SIZE`] bytes; shorter reads as zeros).
    pub fn decode(b: &[u8]) -> LeaseRecord {
        let mut s = [0u8; SLOT_SIZE];
        let n = b.len().min(SLOT_SIZE);
        s[..n].copy_from_slice(&b[..n]);
        use lease_off::*;
        LeaseRecord {
            epoch: get_u64(&s, EPOCH),
            owner: get_u64(&s, OWNER),
            heartbeat: get_u64(&s, HEARTBEAT),
            heartbeat_ms: get_u32(&s, HEARTBEAT_MS),
            timeout_ms: get_u32(&s, TIMEOUT_MS),
            committed_seq: get_u64(&s, COMMITTED_SEQ),
            pid: get_u32(&s, PID),
            state: get_u32(&s, STATE),
            host: get_u64(&s, HOST),
            reserved_zero: s[RESERVED..].iter().all(|&x| x == 0),
        }
    }
}

/// A follower slot decoded from a plain copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostRecord {
    pub owner: u64,
    pub heartbeat: u64,
    pub applied_seq: u64,
    pub held_seq: u64,
    pub pid: u32,
    pub flags: u32,
    /// The reserved bytes are all zero.
    pub reserved_zero: bool,
}

impl HostRecord {
    /// Decodes a follower slot from `b` (shorter than a slot reads as zeros).
    pub fn decode(b: &[u8]) -> HostRecord {
        let mut s = [0u8; SLOT_SIZE];
        let n = b.len().min(SLOT_SIZE);
        s[..n].copy_from_slice(&b[..n]);
        use host_off::*;
        HostRecord {
            owner: get_u64(&s, OWNER),
            heartbeat: get_u64(&s, HEARTBEAT),
            applied_seq: get_u64(&s, APPLIED_SEQ),
            held_seq: get_u64(&s, HELD_SEQ),
            pid: get_u32(&s, PID),
            flags: get_u32(&s, FLAGS),
            reserved_zero: s[RESERVED..].iter().all(|&x| x == 0),
        }
    }

    /// The slot is entirely zero (free).
    pub fn is_free(&self) -> bool {
        *self
            == HostRecord {
                reserved_zero: true,
                ..HostRecord::default()
            }
    }
}

/// Liveness of one heartbeat counter as this observer sees it: the counter is alive
/// while it changes; it is dead once it has not changed for `timeout` of the
/// observer's own monotonic clock (hosts' clocks are not compared, only counters).
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatWatch {
    last: u64,
    since: Instant,
}

impl HeartbeatWatch {
    /// Starts watching a counter now at `value`.
    pub fn new(value: u64, now: Instant) -> HeartbeatWatch {
        HeartbeatWatch {
            last: value,
            since: now,
        }
    }

    /// Notes the counter's current `value` at `now`; returns whether it is alive (it
    /// changed less than `timeout` ago). A change restarts the clock.
    pub fn observe(&mut self, value: u64, now: Instant, timeout: Duration) -> bool {
        if value != self.last {
            self.last = value;
            self.since = now;
            return true;
        }
        now.saturating_duration_since(self.since) < timeout
    }

    /// The last counter value seen.
    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_table<R>(f: impl FnOnce(HostTable<'_>) -> R) -> R {
        let dev = Device::memory(&vec![0u8; 8192]).unwrap();
        f(HostTable::on_device(&dev).unwrap())
    }

    #[test]
    fn lease_fields_round_trip_through_the_words() {
        with_table(|t| {
            let l = t.lease();
            assert_eq!(l.cas_epoch(0, 1).unwrap(), Ok(0));
            assert_eq!(l.cas_epoch(0, 2).unwrap(), Err(1));
            l.set_owner(0xabc).unwrap();
            l.set_timing(100, 2000).unwrap();
            l.set_pid_state(4242, LEASE_HELD).unwrap();
            l.set_committed_seq(77).unwrap();
            l.set_heartbeat(5).unwrap();
            let r = l.record();
            assert_eq!(
                (r.epoch, r.owner, r.heartbeat, r.heartbeat_ms, r.timeout_ms),
                (1, 0xabc, 5, 100, 2000)
            );
            assert_eq!((r.committed_seq, r.pid, r.state), (77, 4242, LEASE_HELD));
            assert!(r.reserved_zero);
            assert_eq!((l.pid(), l.state(), l.timeout_ms()), (4242, 1, 2000));
        })
    }

    #[test]
    fn claim_takes_free_slots_only_and_release_checks_the_owner() {
        with_table(|t| {
            let a = t.claim_host_slot(11).unwrap();
            let b = t.claim_host_slot(22).unwrap();
            assert_eq!((a, b), (1, 2));
            let h = t.host(a).unwrap();
            h.set_applied_seq(9).unwrap();
            h.set_held_seq(HOLDS_NOTHING).unwrap();
            assert!(!t.release_host_slot(a, 22), "not its slot");
            assert!(t.release_host_slot(a, 11));
            assert!(h.record().is_free());
            assert_eq!(t.claim_host_slot(33), Some(1), "freed slot reused");
            assert_eq!(t.claim_host_slot(0), None);
            assert!(t.host(0).is_none() && t.host(SLOTS).is_none());
        })
    }

    #[test]
    fn a_full_table_claims_nothing() {
        with_table(|t| {
            for id in 1..SLOTS as u64 {
                assert!(t.claim_host_slot(id).is_some());
            }
            assert_eq!(t.claim_host_slot(99), None);
        })
    }

    #[test]
    fn the_table_is_little_endian_at_the_documented_offsets() {
        let dev = Device::memory(&vec![0u8; 8192]).unwrap();
        let t = HostTable::on_device(&dev).unwrap();
        t.lease().set_pid_state(0x01020304, 2).unwrap();
        let h = t.host(3).unwrap();
        h.cas_owner(0, 0x55).unwrap().unwrap();
        h.set_held_seq(0x66).unwrap();
        let mut raw = vec![0u8; HOST_TABLE_SIZE];
        dev.read(HOST_TABLE_OFFSET, &mut raw);
        assert_eq!(raw[lease_off::PID..lease_off::PID + 4], [4, 3, 2, 1]);
        assert_eq!(raw[lease_off::STATE], 2);
        let h = HostRecord::decode(&raw[3 * SLOT_SIZE..]);
        assert_eq!((h.owner, h.held_seq), (0x55, 0x66));
    }

    #[test]
    fn reserved_bytes_are_reported() {
        let mut b = [0u8; SLOT_SIZE];
        assert!(LeaseRecord::decode(&b).reserved_zero);
        b[SLOT_SIZE - 1] = 1;
        assert!(!LeaseRecord::decode(&b).reserved_zero);
        assert!(!HostRecord::decode(&b).reserved_zero);
    }

    #[test]
    fn a_counter_is_dead_only_after_standing_still_for_the_timeout() {
        let t0 = Instant::now();
        let to = Duration::from_millis(100);
        let mut w = HeartbeatWatch::new(5, t0);
        assert!(w.observe(5, t0 + Duration::from_millis(99), to));
        assert!(!w.observe(5, t0 + Duration::from_millis(100), to));
        // It moved: alive again, and the clock restarts from the change.
        assert!(w.observe(6, t0 + Duration::from_millis(150), to));
        assert!(w.observe(6, t0 + Duration::from_millis(249), to));
        assert!(!w.observe(6, t0 + Duration::from_millis(250), to));
    }
}
