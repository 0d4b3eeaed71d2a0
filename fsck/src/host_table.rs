//! The host table (format version 2, docs/FORMAT.md "Host table"): its check, the
//! liveness watch that keeps a repair off a device another host is writing, and the
//! clearing of stale slots.
//!
//! Checking reads a plain copy (the slots are coordination state: a finding is
//! repairable, never an error that stops the check). Repair (`-y`, `-p`) first watches
//! every held lease and claimed slot for one host timeout: a writer whose heartbeat
//! moves makes the repair refuse to write anything at all (a repair under a live writer
//! would corrupt both); live followers are left alone; silent ones are cleared.
//! Clearing the lease keeps its epoch, so fencing tokens never go back.

use crate::{FsckReport, Severity};
use daxfs_format::hosts::*;
use daxfs_format::Superblock;
use daxfs_pmem::Device;
use std::time::{Duration, Instant};

/// The longest a repair watches heartbeats (a hostile timeout field must not hang it).
const MAX_WATCH: Duration = Duration::from_secs(60);

fn read_table(dev: &Device) -> Option<Vec<u8>> {
    let end = HOST_TABLE_OFFSET + HOST_TABLE_SIZE as u64;
    if dev.size() < end {
        return None;
    }
    let mut b = vec![0u8; HOST_TABLE_SIZE];
    dev.read(HOST_TABLE_OFFSET, &mut b);
    Some(b)
}

/// Checks the table of a version 2 image; reports a held lease as a note.
pub(crate) fn check(dev: &Device, sb: &Superblock, r: &mut FsckReport) {
    if sb.needs_upgrade() {
        return;
    }
    let Some(t) = read_table(dev) else { return };
    let l = LeaseRecord::decode(&t[..SLOT_SIZE]);
    if !l.reserved_zero {
        r.fixable(
            true,
            "host table: writer lease: reserved bytes are not zero",
        );
    }
    if l.state > LEASE_RELEASED {
        r.fixable(
            true,
            format!("host table: writer lease: unknown state {}", l.state),
        );
    }
    if l.state == LEASE_HELD && (l.epoch == 0 || l.owner == 0) {
        r.fixable(true, "host table: writer lease held with epoch or owner 0");
    } else if l.state == LEASE_HELD {
        r.stats.host_table_claims += 1;
        r.add(
            Severity::Note,
            format!(
                "writer lease held by pid {} (epoch {}): a mounted writer, or a crashed one's (repair first waits for its heartbeat to stand still)",
                l.pid, l.epoch
            ),
        );
    }
    for i in FIRST_HOST_SLOT..SLOTS {
        let h = HostRecord::decode(&t[i * SLOT_SIZE..(i + 1) * SLOT_SIZE]);
        if h.owner == 0 {
            if !h.is_free() {
                r.fixable(
                    true,
                    format!("host table: slot {i} is free but not all zero"),
                );
            }
            continue;
        }
        if !h.reserved_zero || h.flags != 0 {
            r.fixable(
                true,
                format!("host table: slot {i}: reserved bytes or flags are not zero"),
            );
        }
        // applied_seq counts journal sequences the writer published: a follower cannot
        // be ahead of the last one (0 = not yet published).
        if l.committed_seq != 0 && h.applied_seq > l.committed_seq {
            r.fixable(
                true,
                format!(
                    "host table: slot {i}: applied sequence {} is past the writer's last commit {}",
                    h.applied_seq, l.committed_seq
                ),
            );
        }
        r.stats.host_table_claims += 1;
        r.add(
            Severity::Note,
            format!(
                "host slot {i} claimed by pid {} (applied {}): a follower, or a crashed one's",
                h.pid, h.applied_seq
            ),
        );
    }
}

/// What [`watch`] found: the lease's holder is alive, and which follower slots are.
pub(crate) struct Liveness {
    pub writer_live: Option<u32>,
    live_slots: [bool; SLOTS],
}

/// Before a repair writes anything: watches the lease and every claimed slot for one
/// host timeout (the lease's, at most [`MAX_WATCH`]; 2 s when it says none).
pub(crate) fn watch(dev: &Device, sb: &Superblock) -> Liveness {
    let mut out = Liveness {
        writer_live: None,
        live_slots: [false; SLOTS],
    };
    if sb.needs_upgrade() {
        return out;
    }
    let Ok(t) = HostTable::on_device(dev) else {
        return out;
    };
    let l = t.lease();
    let mut held = l.state() == LEASE_HELD;
    match daxfs::lease::own_process_holds(dev, &l.record()) {
        // A mount of this very process (a library user checking its own device).
        Some(true) if held => {
            out.writer_live = Some(l.pid());
            return out;
        }
        // Left by a mount of this process that is gone: nothing heartbeats it.
        Some(false) => held = false,
        _ => {}
    }
    let claimed: Vec<usize> = t
        .hosts()
        .filter(|(_, h)| h.owner() != 0)
        .map(|(i, _)| i)
        .collect();
    if !held && claimed.is_empty() {
        return out;
    }
    let timeout = match l.timeout_ms() {
        0 => Duration::from_secs(2),
        ms => Duration::from_millis(u64::from(ms)).min(MAX_WATCH),
    };
    let start = Instant::now();
    let lease0 = l.heartbeat();
    let slots0: Vec<(usize, u64, u64)> = claimed
        .iter()
        .filter_map(|&i| t.host(i).map(|h| (i, h.owner(), h.heartbeat())))
        .collect();
    let mut writer_moved = false;
    loop {
        writer_moved |= held && l.heartbeat() != lease0;
        for &(i, owner, beat) in &slots0 {
            if let Some(h) = t.host(i) {
                if h.owner() != owner || h.heartbeat() != beat {
                    out.live_slots[i] = true;
                }
            }
        }
        if writer_moved || start.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(Duration::from_millis(5).min(timeout));
    }
    if writer_moved {
        out.writer_live = Some(l.pid());
    }
    out
}

/// Clears what is stale or malformed after [`watch`] found no live writer: the lease
/// (state free, epoch kept) and every slot that did not heartbeat. Returns the repairs.
pub(crate) fn repair(dev: &Device, sb: &Superblock, live: &Liveness) -> Vec<String> {
    let mut done = Vec::new();
    if sb.needs_upgrade() || live.writer_live.is_some() {
        return done;
    }
    let Ok(t) = HostTable::on_device(dev) else {
        return done;
    };
    let l = t.lease().record();
    if l.state == LEASE_HELD || l.state > LEASE_RELEASED || !l.reserved_zero {
        // Everything zero but the epoch: the next writer takes epoch + 1.
        let cleared = t.clear_slot(0).is_ok() && {
            let lease = t.lease();
            lease.cas_epoch(0, l.epoch).is_ok()
        };
        if cleared {
            done.push(format!(
                "host table: cleared the stale writer lease of pid {} (epoch {} kept)",
                l.pid, l.epoch
            ));
        }
    }
    for (i, h) in t.hosts() {
        let rec = h.record();
        if rec.is_free() || live.live_slots[i] {
            continue;
        }
        if t.clear_slot(i).is_ok() {
            done.push(format!(
                "host table: cleared stale host slot {i} (pid {})",
                rec.pid
            ));
        }
    }
    if !done.is_empty() {
        dev.persist(HOST_TABLE_OFFSET, HOST_TABLE_SIZE as u64);
    }
    done
}
