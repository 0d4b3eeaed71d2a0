//! fsck's repairs are logged through the `log` facade, one record per repair, whichever
//! way the repair ends: a program using the library sees them with its own logger.
//! (Its own test binary: a process has one logger.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking

use daxfs_format::mkfs::format_device;
use daxfs_format::{MkfsParams, BLOCK_SIZE};
use daxfs_pmem::Device;
use std::sync::{Arc, Mutex};

static RECORDS: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        RECORDS
            .lock()
            .unwrap()
            .push((r.level(), r.args().to_string()));
    }
    fn flush(&self) {}
}

#[test]
fn each_repair_of_a_damaged_backup_superblock_is_one_info_record() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let dev = Arc::new(Device::memory(&vec![0u8; 8 << 20]).unwrap());
    let p = MkfsParams {
        label: "log".into(),
        journal_bytes: 64 << 10,
        inodes: 0,
        uuid: [7; 16],
        now_ns: 0,
    };
    format_device(&dev, &p, true, &mut |_, _, _| {}).unwrap();
    let clean = daxfs_fsck::repair(&dev, false, &mut |_, _, _| {});
    assert!(clean.repaired.is_empty());
    assert!(
        RECORDS.lock().unwrap().is_empty(),
        "nothing repaired, nothing logged"
    );

    dev.write(BLOCK_SIZE + 104, b"garbage!");
    let r = daxfs_fsck::repair(&dev, false, &mut |_, _, _| {});
    assert!(!r.repaired.is_empty(), "the backup superblock is repaired");
    let got = RECORDS.lock().unwrap().clone();
    let want: Vec<(log::Level, String)> = r
        .repaired
        .iter()
        .map(|x| {
            (
                log::Level::Info,
                format!("{}: repaired: {x}", dev.path().display()),
            )
        })
        .collect();
    assert_eq!(got, want);
}
