//! Fuzz target: a hostile but well-checksummed image through fsck and the mount.
//!
//! The input drives the structure-aware mutations of daxfs-testkit (testkit/src/hostile.rs) (the
//! same code as the stable test fs/tests/hostile_images.rs): fields of a populated
//! image's superblocks, journal headers, inodes, extent, directory, xattr and bitmap
//! blocks set to boundary values, structures copied over others, bytes changed, some of
//! it delivered through committed journal transactions; then every CRC is recomputed,
//! so the decoders, validators, replay and `load` see the damage; a mounted image is
//! then walked, read and changed (`hostile::exercise`). Any panic is a bug; so is an
//! image fsck calls clean that the mount refuses, or one the mount accepts that fsck
//! still finds damaged after the mount's clean unmount.
//! At exit the target prints how many inputs got past the checksums to `load`
//! ("mount_image: N inputs, M reached load, K mounted"; tests/daxfs/043 reports it).
#![no_main]

use daxfs_testkit::hostile;

use daxfs_pmem::Device;
use daxfs::{DaxFs, FsOptions};
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

static INPUTS: AtomicU64 = AtomicU64::new(0);
static REACHED_LOAD: AtomicU64 = AtomicU64::new(0);
static MOUNTED: AtomicU64 = AtomicU64::new(0);

extern "C" fn report() {
    eprintln!(
        "mount_image: {} inputs, {} reached load, {} mounted",
        INPUTS.load(Ordering::Relaxed),
        REACHED_LOAD.load(Ordering::Relaxed),
        MOUNTED.load(Ordering::Relaxed)
    );
}

fn base() -> &'static hostile::Base {
    static BASE: OnceLock<hostile::Base> = OnceLock::new();
    BASE.get_or_init(|| {
        // SAFETY: registers a plain extern "C" function with no arguments; libFuzzer
        // leaves through exit(), which runs it.
        unsafe { libc::atexit(report) };
        hostile::Base::populated()
    })
}

fn check(img: &[u8]) -> daxfs_fsck::FsckReport {
    let dev = Arc::new(Device::memory(img).expect("memory device"));
    daxfs_fsck::check(&dev, false, &mut |_, _, _| {})
}

fuzz_target!(|data: &[u8]| {
    let base = base();
    let img = hostile::hostile_image(base, &mut hostile::Bytes::new(data));
    INPUTS.fetch_add(1, Ordering::Relaxed);
    if hostile::reaches_load(&img) {
        REACHED_LOAD.fetch_add(1, Ordering::Relaxed);
    }
    let before = check(&img);
    let dev = Arc::new(Device::memory(&img).expect("memory device"));
    match DaxFs::mount_device(dev.clone(), FsOptions::default()) {
        Ok(fs) => {
            MOUNTED.fetch_add(1, Ordering::Relaxed);
            fs.shutdown().expect("clean unmount of a mounted image");
            drop(fs);
            let mut after = vec![0u8; img.len()];
            dev.read(0, &mut after);
            let rep = check(&after);
            assert!(
                rep.is_clean(),
                "mounted an image it did not repair: before {:?}, after {:?}",
                before.findings,
                rep.findings
            );
            // Then what the mount accepted is used (only a panic is a bug here).
            let dev = Arc::new(Device::memory(&after).expect("memory device"));
            if let Ok(fs) = DaxFs::mount_device(dev.clone(), FsOptions::default()) {
                hostile::exercise(&fs);
                let _ = fs.shutdown();
                drop(fs);
                let mut used = vec![0u8; img.len()];
                dev.read(0, &mut used);
                check(&used);
            }
        }
        Err(e) => assert!(
            !before.is_clean() || hostile::refusal_by_design(&e),
            "fsck is clean but the mount refuses: {e}"
        ),
    }
});
