//! The journal over `MemMedia`'s torn cache lines (any prefix of a line's stores not yet
//! durable, in 8-byte pieces, may survive a power cut) and injected write-back failures.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking

use std::sync::Arc;

use daxfs_journal::{format, Journal, JournalError, Transaction};
use daxfs_pmem::{Fault, Media, MemMedia};
use daxfs_testkit::Rng;

const DEV: usize = 256 * 1024;
const J_START: u64 = 8192;
const J_LEN: u64 = 64 * 1024;
const HOME: std::ops::Range<usize> = 128 * 1024..DEV;
/// Torn (line, prefix) pairs tried per fence point at most.
const PER_POINT: usize = 12;

fn formatted() -> Arc<MemMedia> {
    let m = Arc::new(MemMedia::new(DEV));
    format(&*m, J_START, J_LEN).expect("format");
    m
}

fn open(m: &Arc<MemMedia>) -> Journal {
    let media: Arc<dyn Media> = m.clone();
    Journal::open(media, J_START, J_LEN).expect("open").0
}

/// Opens a crash image; the durable home area after replay.
fn recover(image: Vec<u8>) -> Vec<u8> {
    let m = Arc::new(MemMedia::from_bytes(image));
    open(&m);
    assert_eq!(m.out_of_range_count(), 0);
    m.crash_image()[HOME].to_vec()
}

/// A transaction of a few writes of unaligned lengths (so records straddle lines and
/// words), applied to `model` too.
fn random_txn(rng: &mut Rng, model: &mut [u8]) -> Transaction {
    let mut txn = Transaction::new();
    for _ in 0..1 + rng.below(4) {
        let len = 1 + rng.below(1200) as usize;
        let at = rng.below((HOME.len() - len) as u64) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8 | 1).collect();
        txn.write((HOME.start + at) as u64, &data);
        model[at..at + len].copy_from_slice(&data);
    }
    txn
}

#[test]
fn every_torn_line_at_every_fence_recovers_a_prefix_of_the_committed_transactions() {
    let mut rng = Rng::new(daxfs_testkit::seed(0x7f4a_7c15_9e37_79b9));
    let m = formatted();
    let mut j = open(&m);
    m.record_fences(true);
    let mut model = m.crash_image()[HOME].to_vec();
    let mut states = vec![model.clone()];
    let mut durable_at = Vec::new();
    for i in 0..70 {
        let txn = random_txn(&mut rng, &mut model);
        j.commit(&txn).expect("commit");
        states.push(model.clone());
        durable_at.push(m.fence_count());
        if i % 5 == 4 {
            j.checkpoint().expect("checkpoint");
        }
    }
    assert!(j.stats().wraps >= 1, "the run covers a wrap-around");
    let (mut images, mut torn_images) = (0u64, 0u64);
    for p in m.take_fences() {
        let required = durable_at.iter().filter(|&&f| f <= p.index()).count();
        let all = p.lines();
        let mut variants = vec![p.image(), p.image_with(&all)];
        let torn = p.torn_lines();
        // One torn line, the others absent or complete: an even sample of at most
        // PER_POINT (line, prefix) pairs, so the test stays fast.
        let pairs: Vec<(usize, usize)> = torn
            .iter()
            .flat_map(|&(line, count)| (0..count).map(move |k| (line, k)))
            .collect();
        let take = pairs.len().min(PER_POINT);
        for s in 0..take {
            let (line, k) = pairs[s * pairs.len() / take];
            let others: Vec<usize> = all.iter().copied().filter(|&l| l != line).collect();
            variants.push(p.image_torn(&[], &[(line, k)]));
            variants.push(p.image_torn(&others, &[(line, k)]));
        }
        for _ in 0..if torn.is_empty() { 0 } else { 4 } {
            let full: Vec<usize> = all.iter().copied().filter(|_| rng.below(3) == 0).collect();
            let mut part: Vec<(usize, usize)> = Vec::new();
            for &(l, n) in &torn {
                if !full.contains(&l) && rng.below(2) == 0 {
                    part.push((l, rng.below(n as u64) as usize));
                }
            }
            variants.push(p.image_torn(&full, &part));
        }
        torn_images += (variants.len() - 2) as u64;
        for image in variants {
            images += 1;
            let home = recover(image);
            let ok = (required..=(required + 1).min(states.len() - 1)).any(|k| states[k] == home);
            assert!(
                ok,
                "crash before fence {}: home is not the state after {required} or {} transactions",
                p.index(),
                required + 1
            );
        }
    }
    println!("journal torn lines: {images} crash images recovered, {torn_images} with torn lines");
    assert!(torn_images > 500, "{torn_images} torn images");
}

#[test]
fn a_failed_log_flush_fails_the_commit_and_the_journal_writes_nothing_more() {
    let m = formatted();
    let mut j = open(&m);
    let mut ok = Transaction::new();
    ok.write(HOME.start as u64, b"acknowledged");
    j.commit(&ok).expect("commit");
    let before = m.crash_image();

    m.fail_after(Fault::Flush, 0);
    let mut txn = Transaction::new();
    txn.write(HOME.start as u64 + 100, &[5; 300]);
    let err = j.commit(&txn).expect_err("the log flush failed");
    assert!(matches!(err, JournalError::Media { .. }), "{err}");
    assert!(err.to_string().contains("write-back failed"), "{err}");
    let home = m.volatile_image()[HOME.start + 100];
    assert_eq!(home, 0, "not applied home");
    assert_eq!(m.crash_image(), before, "nothing became durable");

    let mut later = Transaction::new();
    later.write(HOME.start as u64 + 1000, b"later");
    assert!(matches!(j.commit(&later), Err(JournalError::Media { .. })));
    assert!(matches!(j.checkpoint(), Err(JournalError::Media { .. })));
    assert_eq!(
        m.crash_image(),
        before,
        "the failed journal wrote nothing more"
    );
    assert_eq!(&recover(m.crash_image())[..12], b"acknowledged");
    // Without a power cut, the whole failed transaction is in the log: replayed whole.
    let restarted = recover(m.volatile_image());
    assert_eq!(&restarted[..12], b"acknowledged");
    assert_eq!(restarted[100..400], [5; 300]);
    assert_eq!(restarted[1000..1005], [0; 5]);
}

#[test]
fn a_failed_home_flush_fails_the_commit_but_replay_applies_it() {
    let m = formatted();
    let mut j = open(&m);
    // The log write is one flush; the home write the next.
    m.fail_after(Fault::Flush, 1);
    let mut txn = Transaction::new();
    txn.write(HOME.start as u64, &[9; 100]);
    assert!(matches!(j.commit(&txn), Err(JournalError::Media { .. })));
    assert_eq!(m.fault_count(), 1);
    assert_eq!(
        m.crash_image()[HOME.start],
        0,
        "the home write is not durable"
    );
    assert_eq!(recover(m.crash_image())[..100], [9; 100], "the log is");
}
