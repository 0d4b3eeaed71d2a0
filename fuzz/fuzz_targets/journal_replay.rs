//! Fuzz target: replay a hostile but well-checksummed journal.
//!
//! The input drives `hostile::hostile_journal` (daxfs-testkit (testkit/src/hostile.rs), shared with
//! the stable test fs/tests/hostile_images.rs): transactions with records aimed
//! anywhere (the home area, the superblock, past the end of the media) are committed
//! through the journal's API, their home writes sometimes undone (a crash before they
//! were applied), then fields of the transactions and of the header (sequence, lengths,
//! record count and targets, tail) are set to boundary values and every checksum is
//! recomputed. `Journal::open` must not panic, must never touch bytes outside the media,
//! and must leave a journal that opens again. (A second open may replay again: replaying
//! is idempotent.) At exit: "journal_replay: N inputs, M opened, K transactions replayed".
#![no_main]

use daxfs_testkit::hostile;

use daxfs_journal::Journal;
use daxfs_pmem::MemMedia;
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};

static INPUTS: AtomicU64 = AtomicU64::new(0);
static OPENED: AtomicU64 = AtomicU64::new(0);
static REPLAYED: AtomicU64 = AtomicU64::new(0);

extern "C" fn report() {
    eprintln!(
        "journal_replay: {} inputs, {} opened, {} transactions replayed",
        INPUTS.load(Ordering::Relaxed),
        OPENED.load(Ordering::Relaxed),
        REPLAYED.load(Ordering::Relaxed)
    );
}

fuzz_target!(|data: &[u8]| {
    static AT_EXIT: Once = Once::new();
    // SAFETY: registers a plain extern "C" function with no arguments; libFuzzer leaves
    // through exit(), which runs it.
    AT_EXIT.call_once(|| unsafe {
        libc::atexit(report);
    });
    let img = hostile::hostile_journal(&mut hostile::Bytes::new(data));
    INPUTS.fetch_add(1, Ordering::Relaxed);
    let m = Arc::new(MemMedia::from_bytes(img));
    if let Ok((_, r)) = Journal::open(m.clone(), hostile::J_START, hostile::J_LEN) {
        OPENED.fetch_add(1, Ordering::Relaxed);
        REPLAYED.fetch_add(r.transactions_replayed, Ordering::Relaxed);
        Journal::open(m.clone(), hostile::J_START, hostile::J_LEN).expect("reopen after replay");
    }
    assert_eq!(m.out_of_range_count(), 0);
});
