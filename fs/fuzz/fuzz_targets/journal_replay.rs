//! Fuzz target: replay a damaged journal.
//!
//! A journal is formatted on an in-memory media and holds a few committed transactions
//! (the last one torn: not applied home); the input is a list of 3-byte patches
//! (little-endian u16 position in the journal region, xor byte). `Journal::open` must
//! not panic, must never touch bytes outside the media, and must leave a journal that
//! opens again. (A second open may replay again: with a damaged newest header the
//! older one is used, and transactions it does not cover can then look committed —
//! replaying them is idempotent; damage cannot be told from history.)
#![no_main]

use daxfs_journal::{Journal, MemMedia, Transaction};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

const START: u64 = 4096;
const LEN: u64 = 64 << 10;
const SIZE: usize = 128 << 10;

fn base() -> &'static Vec<u8> {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let m = Arc::new(MemMedia::new(SIZE));
        daxfs_journal::format(&*m, START, LEN).expect("format");
        let (mut j, _) = Journal::open(m.clone(), START, LEN).expect("open");
        for i in 0..6u64 {
            let mut t = Transaction::new();
            t.write(START + LEN + i * 300, &[i as u8 + 1; 200]);
            t.write(100 + i * 8, &i.to_le_bytes());
            j.commit(&t).expect("commit");
        }
        m.volatile_image()
    })
}

fuzz_target!(|data: &[u8]| {
    let mut img = base().clone();
    for p in data.chunks_exact(3) {
        let at = u16::from_le_bytes([p[0], p[1]]) as u64 % LEN;
        img[(START + at) as usize] ^= p[2];
    }
    let m = Arc::new(MemMedia::from_bytes(img));
    if Journal::open(m.clone(), START, LEN).is_ok() {
        Journal::open(m.clone(), START, LEN).expect("reopen after replay");
    }
    assert_eq!(m.out_of_range_count(), 0);
});
