//! fsck and the host table (format version 2): malformed slots are repairable
//! findings; a repair watches heartbeats first, refuses to write anything under a live
//! writer, clears a stale lease (keeping its epoch) and stale follower slots, and
//! leaves live followers alone.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking
use daxfs_testkit as common;

use daxfs::{DaxFs, FsOptions};
use daxfs_format::hosts::*;
use daxfs_fsck::{FsckReport, Severity};
use daxfs_pmem::Device;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SIZE: u64 = 8 << 20;

/// A formatted, mounted-once and cleanly unmounted memory device.
fn image() -> Arc<Device> {
    let dev = Arc::new(Device::memory(&vec![0u8; SIZE as usize]).unwrap());
    common::mkfs().journal_bytes(64 << 10).format(&dev);
    let fs = DaxFs::mount_device(dev.clone(), FsOptions::default()).unwrap();
    common::mkfile(&fs, daxfs::ROOT, b"f", b"data");
    fs.shutdown().unwrap();
    drop(fs);
    dev
}

fn table(dev: &Device) -> HostTable<'_> {
    HostTable::on_device(dev).unwrap()
}

fn check(dev: &Arc<Device>) -> FsckReport {
    daxfs_fsck::check(dev, false, &mut |_, _, _| {})
}

fn repair(dev: &Arc<Device>) -> FsckReport {
    daxfs_fsck::repair(dev, false, &mut |_, _, _| {})
}

fn has(r: &FsckReport, s: Severity, text: &str) -> bool {
    r.findings
        .iter()
        .any(|f| f.severity == s && f.what.contains(text))
}

/// A lease held by a writer elsewhere, announcing a 50 ms timeout.
fn plant_lease(dev: &Device) -> u64 {
    let l = table(dev).lease();
    let e = l.epoch() + 5;
    l.cas_epoch(l.epoch(), e).unwrap().unwrap();
    l.set_owner(77).unwrap();
    l.set_timing(10, 50).unwrap();
    l.set_pid_state(31337, LEASE_HELD).unwrap();
    e
}

/// Heartbeats `beat` (a lease or slot counter) until dropped.
struct Beating(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl Beating {
    fn start(dev: Arc<Device>, slot: Option<usize>) -> Beating {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            let t = HostTable::on_device(&dev).unwrap();
            while !s.load(Ordering::Relaxed) {
                match slot {
                    None => t.lease().set_heartbeat(t.lease().heartbeat() + 1).unwrap(),
                    Some(i) => {
                        let h = t.host(i).unwrap();
                        h.set_heartbeat(h.heartbeat() + 1).unwrap()
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Beating(stop, Some(t))
    }
}

impl Drop for Beating {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_cleanly_unmounted_image_has_a_clean_host_table() {
    let dev = image();
    let r = check(&dev);
    assert!(r.is_clean(), "{:?}", r.findings);
    assert_eq!(table(&dev).lease().state(), LEASE_RELEASED);
    assert_eq!(r.stats.host_table_claims, 0);
}

#[test]
fn nonzero_reserved_bytes_are_repairable_and_repaired() {
    let dev = image();
    dev.write(HOST_TABLE_OFFSET + lease_off::RESERVED as u64, &[1]);
    let h = HOST_TABLE_OFFSET + 3 * SLOT_SIZE as u64 + 20;
    dev.write(h, &[9]);
    let r = check(&dev);
    assert!(has(
        &r,
        Severity::Repairable,
        "writer lease: reserved bytes"
    ));
    assert!(has(
        &r,
        Severity::Repairable,
        "slot 3 is free but not all zero"
    ));
    repair(&dev);
    assert!(check(&dev).is_clean(), "{:?}", check(&dev).findings);
}

#[test]
fn a_stale_lease_is_cleared_keeping_its_epoch() {
    let dev = image();
    let e = plant_lease(&dev);
    let r = check(&dev);
    assert!(has(&r, Severity::Note, "writer lease held by pid 31337"));
    let rep = repair(&dev);
    assert!(
        rep.repaired
            .iter()
            .any(|x| x.contains("stale writer lease")),
        "{:?}",
        rep.repaired
    );
    let l = table(&dev).lease();
    assert_eq!((l.state(), l.epoch(), l.owner()), (LEASE_FREE, e, 0));
    assert!(check(&dev).is_clean());
    // The next writer takes the following epoch.
    let fs = DaxFs::mount_device(dev.clone(), FsOptions::default()).unwrap();
    assert_eq!(fs.writer_lease().unwrap().epoch(), e + 1);
}

#[test]
fn a_repair_under_a_live_writer_writes_nothing() {
    let dev = image();
    plant_lease(&dev);
    // Something to repair besides: a leaked bitmap bit would do, but an unclean state
    // is enough to make the repair want to replay and rewrite.
    dev.write(HOST_TABLE_OFFSET + 5 * SLOT_SIZE as u64 + 40, &[1]);
    let _b = Beating::start(dev.clone(), None);
    let mut before = vec![0u8; SIZE as usize];
    dev.read(0, &mut before);
    let rep = repair(&dev);
    assert!(
        has(&rep, Severity::Error, "writer lease is live (pid 31337"),
        "{:?}",
        rep.findings
    );
    assert!(rep.repaired.is_empty());
    let mut after = vec![0u8; SIZE as usize];
    dev.read(0, &mut after);
    // Only the lease heartbeat word moved.
    let hb = (HOST_TABLE_OFFSET as usize + lease_off::HEARTBEAT)..;
    let hb = hb.start..hb.start + 8;
    after[hb.clone()].copy_from_slice(&before[hb]);
    assert!(after == before, "the repair wrote to the device");
}

#[test]
fn stale_follower_slots_are_cleared_and_live_ones_kept() {
    let dev = image();
    let t = table(&dev);
    let live = t.claim_host_slot(1001).unwrap();
    let stale = t.claim_host_slot(1002).unwrap();
    t.host(stale).unwrap().set_pid_flags(55, 0).unwrap();
    let _b = Beating::start(dev.clone(), Some(live));
    let r = check(&dev);
    assert!(has(
        &r,
        Severity::Note,
        &format!("host slot {stale} claimed by pid 55")
    ));
    let rep = repair(&dev);
    assert!(
        rep.repaired
            .iter()
            .any(|x| x.contains(&format!("stale host slot {stale}"))),
        "{:?}",
        rep.repaired
    );
    assert!(t.host(stale).unwrap().record().is_free());
    assert_eq!(t.host(live).unwrap().owner(), 1001);
}

#[test]
fn a_follower_ahead_of_the_writer_is_repairable() {
    let dev = image();
    let t = table(&dev);
    t.lease().set_committed_seq(10).unwrap();
    let i = t.claim_host_slot(5).unwrap();
    t.host(i).unwrap().set_applied_seq(11).unwrap();
    let r = check(&dev);
    assert!(has(
        &r,
        Severity::Repairable,
        "past the writer's last commit 10"
    ));
}
