//! Behaviour of the journal through its public API, over `MemMedia`'s power-cut model.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking

use std::sync::Arc;

use daxfs_journal::{
    format, Journal, JournalError, LogSize, ReplayReport, StopReason, Transaction,
};
use daxfs_pmem::{Media, MemMedia};
use daxfs_testkit::Rng;

const DEV: usize = 256 * 1024;
const J_START: u64 = 8192;
const J_LEN: u64 = 64 * 1024;
/// Home area the tests' transactions write to (after the journal region).
const HOME: std::ops::Range<usize> = 128 * 1024..DEV;

fn formatted() -> Arc<MemMedia> {
    let m = Arc::new(MemMedia::new(DEV));
    format(&*m, J_START, J_LEN).expect("format");
    m
}

fn open(m: &Arc<MemMedia>) -> (Journal, ReplayReport) {
    let media: Arc<dyn Media> = m.clone();
    Journal::open(media, J_START, J_LEN).expect("open")
}

/// Opens a crash image; returns the report and the durable home area after replay.
fn recover(image: Vec<u8>) -> (ReplayReport, Vec<u8>) {
    let m = Arc::new(MemMedia::from_bytes(image));
    let (_, report) = open(&m);
    assert_eq!(m.out_of_range_count(), 0);
    (report, m.crash_image()[HOME].to_vec())
}

/// A transaction of 1..=max_records random writes into the home area, applied to `model`
/// (the home area's expected contents) as well.
fn random_txn(rng: &mut Rng, max_records: u64, max_len: u64, model: &mut [u8]) -> Transaction {
    let mut txn = Transaction::new();
    for _ in 0..1 + rng.below(max_records) {
        let len = 1 + rng.below(max_len) as usize;
        let at = rng.below((HOME.len() - len) as u64) as usize;
        let mut data = vec![0u8; len];
        rng.fill(&mut data);
        txn.write((HOME.start + at) as u64, &data);
        model[at..at + len].copy_from_slice(&data);
    }
    txn
}

fn home_of(m: &MemMedia) -> Vec<u8> {
    m.crash_image()[HOME].to_vec()
}

#[test]
fn reopen_after_commit_replays_only_the_committed_transaction_and_data_stays_home() {
    let m = formatted();
    let (mut j, report) = open(&m);
    assert_eq!(report.transactions_replayed, 0);
    let mut txn = Transaction::new();
    txn.write(HOME.start as u64, b"inode bytes");
    j.commit(&txn).expect("commit");
    assert_eq!(&home_of(&m)[..11], b"inode bytes");
    drop(j);

    let (_, report) = open(&m);
    assert_eq!(
        report.transactions_replayed, 1,
        "the uncheckpointed commit is redone"
    );
    assert_eq!(report.bytes_replayed, 11);
    assert_eq!(&home_of(&m)[..11], b"inode bytes");
    let (_, report) = open(&m);
    assert_eq!(report.transactions_replayed, 0, "open checkpoints");
}

#[test]
fn crash_after_commit_returned_replays_the_transaction() {
    let m = formatted();
    let (mut j, _) = open(&m);
    let mut txn = Transaction::new();
    txn.write(HOME.start as u64 + 100, &[0xab; 300]);
    txn.write(HOME.start as u64 + 5000, &[0xcd; 10]);
    j.commit(&txn).expect("commit");

    let (report, home) = recover(m.crash_image());
    assert_eq!(report.transactions_replayed, 1);
    assert_eq!(report.records_replayed, 2);
    assert_eq!(report.bytes_replayed, 310);
    assert_eq!(report.stopped_reason, StopReason::End);
    assert!(home[100..400].iter().all(|&b| b == 0xab));
    assert!(home[5000..5010].iter().all(|&b| b == 0xcd));
}

#[test]
fn home_writes_lost_in_a_crash_are_restored_by_replay() {
    let m = formatted();
    let (mut j, _) = open(&m);
    m.record_fences(true);
    let mut txn = Transaction::new();
    txn.write(HOME.start as u64, &[7; 64]);
    j.commit(&txn).expect("commit");
    // Fence 1 of the commit makes the home writes durable; crash just before it.
    let points = m.take_fences();
    assert_eq!(points.len(), 2);
    let (report, home) = recover(points[1].image());
    assert_eq!(report.transactions_replayed, 1);
    assert_eq!(home[..64], [7; 64]);
}

#[test]
fn crash_at_every_fence_recovers_a_prefix_of_the_committed_transactions() {
    let mut rng = Rng::new(daxfs_testkit::seed(0x1234_5678_9abc_def1));
    let m = formatted();
    let (mut j, _) = open(&m);
    m.record_fences(true);
    let mut model = home_of(&m);
    let mut states = vec![model.clone()];
    // fence_count when commit i returned: from then on transaction i must survive.
    let mut durable_at = Vec::new();
    for i in 0..40 {
        let txn = random_txn(&mut rng, 6, 1200, &mut model);
        j.commit(&txn).expect("commit");
        states.push(model.clone());
        durable_at.push(m.fence_count());
        if i % 7 == 6 {
            j.checkpoint().expect("checkpoint");
        }
    }
    assert!(
        j.stats().wraps >= 1,
        "the sequence must cover a wrap-around"
    );
    let points = m.take_fences();
    assert!(points.len() >= 80);
    for p in &points {
        let required = durable_at.iter().filter(|&&f| f <= p.index()).count();
        let all = p.lines();
        let mut variants = vec![p.image(), p.image_with(&all)];
        for _ in 0..4 {
            let subset: Vec<usize> = all
                .iter()
                .copied()
                .filter(|_| rng.next_u64() & 1 == 1)
                .collect();
            variants.push(p.image_with(&subset));
        }
        for image in variants {
            let (_, home) = recover(image);
            let ok = (required..=(required + 1).min(states.len() - 1)).any(|k| states[k] == home);
            assert!(
                ok,
                "crash before fence {}: home is not the state after {} or {} transactions",
                p.index(),
                required,
                required + 1
            );
        }
    }
}

#[test]
fn a_torn_transaction_never_applies_partially() {
    let mut rng = Rng::new(daxfs_testkit::seed(0xdead_beef_cafe_f00d));
    let m = formatted();
    let (mut j, _) = open(&m);
    let before = home_of(&m);
    let mut after = before.clone();
    let mut txn = Transaction::new();
    for i in 0..8 {
        let at = i * 9000;
        let data = vec![i as u8 + 1; 700];
        txn.write((HOME.start + at) as u64, &data);
        after[at..at + 700].copy_from_slice(&data);
    }
    m.record_fences(true);
    j.commit(&txn).expect("commit");
    // Fence 0 makes the log durable: before it, any subset of its lines may be on media.
    let point = &m.take_fences()[0];
    let lines = point.lines();
    assert!(lines.len() > 10);
    let (_, full) = recover(point.image_with(&lines));
    assert_eq!(full, after, "the complete transaction replays");
    for skip in 0..lines.len() {
        let mut subset = lines.clone();
        subset.remove(skip);
        let (_, home) = recover(point.image_with(&subset));
        assert_eq!(
            home, before,
            "transaction missing line {} applied",
            lines[skip]
        );
    }
    for _ in 0..300 {
        let subset: Vec<usize> = lines
            .iter()
            .copied()
            .filter(|_| rng.below(4) != 0)
            .collect();
        let (report, home) = recover(point.image_with(&subset));
        assert!(
            home == before || home == after,
            "partial transaction applied"
        );
        if home == before {
            assert_eq!(report.transactions_replayed, 0);
        }
    }
}

#[test]
fn a_later_write_in_a_transaction_wins_over_an_earlier_one() {
    let m = formatted();
    let (mut j, _) = open(&m);
    m.record_fences(true);
    let mut txn = Transaction::new();
    txn.write(HOME.start as u64, &[1; 16]);
    txn.write(HOME.start as u64 + 4, &[2; 4]);
    j.commit(&txn).expect("commit");
    let expected = [1, 1, 1, 1, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1];
    assert_eq!(home_of(&m)[..16], expected);
    let (_, home) = recover(m.take_fences()[1].image());
    assert_eq!(home[..16], expected, "replay applies records in order too");
}

#[test]
fn sequence_numbers_increase_by_one_per_commit() {
    let m = formatted();
    let (mut j, _) = open(&m);
    let first = j.sequence();
    let mut txn = Transaction::new();
    txn.write(HOME.start as u64, &[1]);
    assert_eq!(j.commit(&txn), Ok(first));
    assert_eq!(j.commit(&txn), Ok(first + 1));
    assert_eq!(j.sequence(), first + 2);
    drop(j);
    let (j, _) = open(&m);
    assert!(
        j.sequence() > first + 2,
        "sequences never go back across reopen"
    );
}

#[test]
fn wrap_around_over_many_laps_keeps_data_and_replays_only_the_current_lap() {
    let mut rng = Rng::new(daxfs_testkit::seed(42));
    let m = formatted();
    let (mut j, _) = open(&m);
    let mut model = home_of(&m);
    for _ in 0..400 {
        let txn = random_txn(&mut rng, 4, 1500, &mut model);
        j.commit(&txn).expect("commit");
    }
    let stats = j.stats();
    assert!(stats.wraps >= 10, "only {} wraps", stats.wraps);
    assert_eq!(stats.commits, 400);
    assert_eq!(home_of(&m), model);

    let (report, home) = recover(m.crash_image());
    assert_eq!(home, model);
    assert!(
        report.transactions_replayed >= 1 && report.transactions_replayed < 400 / stats.wraps + 10
    );
}

#[test]
fn stale_transactions_from_an_earlier_lap_are_not_replayed() {
    let m = formatted();
    let (mut j, _) = open(&m);
    let target = HOME.start as u64;
    // Fill the log with transactions that each write their index to `target`.
    let mut txn = Transaction::new();
    let mut n = 0u8;
    while j.stats().wraps == 0 {
        n += 1;
        txn.clear();
        txn.write(target, &[n; 1000]);
        j.commit(&txn).expect("commit");
    }
    // The last commit wrapped and sits at the start of the log; the previous lap's later
    // transactions are intact behind it, with older sequence numbers.
    assert_eq!(j.stats().wraps, 1);
    let (report, home) = recover(m.crash_image());
    assert_eq!(report.transactions_replayed, 1);
    assert_eq!(home[..1000], [n; 1000]);
}

#[test]
fn checkpoint_then_reopen_replays_nothing() {
    let m = formatted();
    let (mut j, _) = open(&m);
    let mut txn = Transaction::new();
    txn.write(HOME.start as u64, &[3; 100]);
    j.commit(&txn).expect("commit");
    j.commit(&txn).expect("commit");
    j.checkpoint().expect("checkpoint");
    assert_eq!(j.stats().checkpoints, 1);
    let (report, home) = recover(m.crash_image());
    assert_eq!(report.transactions_replayed, 0);
    assert_eq!(home[..100], [3; 100]);
}

#[test]
fn checkpoint_with_nothing_committed_writes_nothing() {
    let m = formatted();
    let (mut j, _) = open(&m);
    let fences = m.fence_count();
    j.checkpoint().expect("checkpoint");
    assert_eq!(m.fence_count(), fences);
}

#[test]
fn too_large_transaction_is_rejected_and_leaves_the_journal_unchanged() {
    let m = formatted();
    let (mut j, _) = open(&m);
    let image = m.volatile_image();
    let seq = j.sequence();
    let mut txn = Transaction::new();
    txn.write(HOME.start as u64, &vec![5; j.capacity() as usize + 1]);
    assert!(matches!(j.commit(&txn), Err(JournalError::TooLarge { .. })));
    assert_eq!(m.volatile_image(), image);
    assert_eq!(j.sequence(), seq);
    assert_eq!(j.stats().commits, 0);

    txn.clear();
    txn.write(HOME.start as u64, &vec![5; j.capacity() as usize]);
    assert_eq!(j.commit(&txn), Ok(seq), "exactly capacity() fits");
}

#[test]
fn a_record_inside_the_journal_region_is_rejected_and_nothing_is_written() {
    let m = formatted();
    let (mut j, _) = open(&m);
    let image = m.volatile_image();
    for (off, len) in [
        (J_START, 8),
        (J_START - 4, 8),
        (J_START + J_LEN - 1, 1),
        (u64::MAX - 2, 8),
    ] {
        let mut txn = Transaction::new();
        txn.write(HOME.start as u64, &[1; 8]);
        txn.write(off, &vec![9; len]);
        assert!(
            matches!(j.commit(&txn), Err(JournalError::InvalidRecord { .. })),
            "{off}"
        );
    }
    assert_eq!(m.volatile_image(), image);
}

#[test]
fn an_empty_transaction_writes_nothing() {
    let m = formatted();
    let (mut j, _) = open(&m);
    let image = m.volatile_image();
    j.commit(&Transaction::new()).expect("commit");
    assert_eq!(m.volatile_image(), image);
    assert_eq!(j.stats().commits, 0);
}

#[test]
fn transaction_accounts_for_its_writes() {
    let mut txn = Transaction::new();
    assert!(txn.is_empty());
    txn.write(0, &[]);
    assert!(txn.is_empty(), "empty writes are ignored");
    txn.write(100, &[1, 2, 3]);
    txn.write(200, &[4; 10]);
    assert_eq!((txn.payload_bytes(), txn.record_count()), (13, 2));
    // header 64 + (16+8) + (16+16) = 120 -> 128, + commit 64
    assert_eq!(txn.encoded_len(), 192);
    let writes: Vec<(u64, Vec<u8>)> = txn.writes().map(|(o, d)| (o, d.to_vec())).collect();
    assert_eq!(writes, vec![(100, vec![1, 2, 3]), (200, vec![4; 10])]);
    txn.clear();
    assert!(txn.is_empty());
    assert_eq!(txn.payload_bytes(), 0);
}

#[test]
fn both_header_copies_corrupt_is_a_corrupt_error_not_a_panic() {
    let m = formatted();
    m.write(J_START + 20, &[0xff]);
    m.write(J_START + 2048 + 20, &[0xff]);
    let media: Arc<dyn Media> = m.clone();
    match Journal::open(media, J_START, J_LEN) {
        Err(JournalError::Corrupt { what }) => assert!(what.contains("header"), "{what}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("corrupt header accepted"),
    }
}

#[test]
fn an_unformatted_region_is_a_corrupt_error() {
    let m: Arc<dyn Media> = Arc::new(MemMedia::new(DEV));
    assert!(matches!(
        Journal::open(m, J_START, J_LEN),
        Err(JournalError::Corrupt { .. })
    ));
}

#[test]
fn a_header_describing_another_region_is_rejected() {
    let m: Arc<dyn Media> = formatted();
    assert!(matches!(
        Journal::open(m, J_START, J_LEN + 4096),
        Err(JournalError::Corrupt { .. })
    ));
}

#[test]
fn a_torn_header_write_falls_back_to_the_other_copy() {
    let m = formatted();
    let (mut j, _) = open(&m);
    let mut txn = Transaction::new();
    txn.write(HOME.start as u64, &[4; 64]);
    j.commit(&txn).expect("commit");
    m.record_fences(true);
    j.checkpoint().expect("checkpoint");
    let point = &m.take_fences()[0];
    let lines = point.lines();
    assert_eq!(lines.len(), 1, "a header copy is one cache line");
    // The new copy reached media garbled (a torn multi-store write).
    let mut image = point.image_with(&lines);
    let at = lines[0] * 64 + 30;
    image[at] ^= 0x40;
    let (report, home) = recover(image);
    assert_eq!(
        report.transactions_replayed, 1,
        "the older header still points at it"
    );
    assert_eq!(home[..64], [4; 64]);
}

#[test]
fn reformatting_forgets_the_previous_journal() {
    let m = formatted();
    let (mut j, _) = open(&m);
    let (a, b) = (HOME.start as u64, HOME.start as u64 + 4096);
    let mut txn = Transaction::new();
    txn.write(a, &[1; 32]);
    j.commit(&txn).expect("commit");
    txn.clear();
    txn.write(b, &[2; 32]);
    j.commit(&txn).expect("commit");
    drop(j);
    m.write(b, &[0; 32]);
    m.flush(b, 32);
    m.fence();

    // The new journal's first transaction has the same size and sequence number as the
    // old one, so the old second transaction follows it at the expected position with
    // the expected sequence: only the journal id tells it apart.
    format(&*m, J_START, J_LEN).expect("format");
    let (mut j, report) = open(&m);
    assert_eq!(report.transactions_replayed, 0);
    txn.clear();
    txn.write(a, &[3; 32]);
    j.commit(&txn).expect("commit");
    let (report, home) = recover(m.crash_image());
    assert_eq!(report.transactions_replayed, 1);
    assert_eq!(home[..32], [3; 32]);
    assert_eq!(home[4096..4128], [0; 32]);
}

#[test]
fn an_unaligned_or_small_region_is_refused() {
    let m = MemMedia::new(DEV);
    for (start, len) in [
        (100, J_LEN),
        (J_START, J_LEN - 4096),
        (J_START, J_LEN + 1),
        (u64::MAX - 4095, J_LEN),
    ] {
        assert!(matches!(
            format(&m, start, len),
            Err(JournalError::InvalidRegion { .. })
        ));
    }
    let m: Arc<dyn Media> = Arc::new(m);
    assert!(matches!(
        Journal::open(m, 100, J_LEN),
        Err(JournalError::InvalidRegion { .. })
    ));
}

/// A header copy written by hand per docs/FORMAT.md, with a valid CRC.
fn header_bytes(generation: u64, journal_id: u64, tail: u64, tail_seq: u64) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[0..8].copy_from_slice(b"DAXFSJH\0");
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    for (i, v) in [generation, journal_id, J_START, J_LEN, tail, tail_seq]
        .iter()
        .enumerate()
    {
        b[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn header_layout_matches_the_format_document() {
    let m = formatted();
    let mut h = [0u8; 64];
    m.read(J_START + 2048, &mut h);
    let id = u64::from_le_bytes(h[24..32].try_into().expect("8 bytes"));
    assert_eq!(h, header_bytes(1, id, 0, 1));
}

#[test]
fn random_garbage_images_never_panic() {
    let mut rng = Rng::new(daxfs_testkit::seed(0x9e37_79b9_7f4a_7c15));
    // A valid image with 12 committed transactions still in the log.
    let m = formatted();
    let (mut j, _) = open(&m);
    let mut model = home_of(&m);
    for _ in 0..12 {
        let txn = random_txn(&mut rng, 5, 600, &mut model);
        j.commit(&txn).expect("commit");
    }
    drop(j);
    let base = m.crash_image();
    let mut id = [0u8; 8];
    m.read(J_START + 24, &mut id);
    let id = u64::from_le_bytes(id);
    let (js, je) = (J_START as usize, (J_START + J_LEN) as usize);

    // A damaged log with a valid header is refused as Damaged (when intact transactions
    // follow the damage) rather than opened.
    let (mut opened, mut damaged) = (0, 0);
    for i in 0..3000 {
        let mut image = base.clone();
        match i % 4 {
            // random bytes flipped anywhere in the journal region
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let at = js + rng.below(J_LEN) as usize;
                    image[at] ^= 1 << rng.below(8);
                }
            }
            // a random run of bytes in the log
            1 => {
                let at = js + 4096 + rng.below(J_LEN - 4096 - 512) as usize;
                let len = 1 + rng.below(512) as usize;
                rng.fill(&mut image[at..at + len]);
            }
            // a valid-looking header with arbitrary tail and sequence
            2 => {
                let tail = if rng.below(2) == 0 {
                    rng.next_u64()
                } else {
                    rng.below(J_LEN) & !63
                };
                let seq = rng.below(16);
                let h = header_bytes(1000 + rng.below(3), id, tail, seq);
                image[js..js + 64].copy_from_slice(&h);
            }
            // the whole region random
            _ => rng.fill(&mut image[js..je]),
        }
        let media = Arc::new(MemMedia::from_bytes(image));
        let dyn_media: Arc<dyn Media> = media.clone();
        match Journal::open(dyn_media, J_START, J_LEN) {
            Ok((_, report)) => {
                opened += 1;
                assert!(report.transactions_replayed <= 12);
            }
            Err(JournalError::Damaged(_)) => damaged += 1,
            Err(_) => {}
        }
        assert_eq!(media.out_of_range_count(), 0);
    }
    assert!(
        opened + damaged > 1000,
        "most mutations keep a valid header ({opened} opened, {damaged} refused as damaged)"
    );
}

#[test]
fn read_only_open_of_a_clean_journal_writes_nothing_and_refuses_commits() {
    let m = formatted();
    let before = m.volatile_image();
    let (mut j, report) =
        Journal::open_read_only(m.clone() as Arc<dyn Media>, J_START, J_LEN).expect("open");
    assert_eq!(report.transactions_replayed, 0);
    assert_eq!(m.volatile_image(), before);
    let mut t = Transaction::new();
    t.write(HOME.start as u64, b"x");
    assert!(matches!(j.commit(&t), Err(JournalError::ReadOnly)));
    assert!(matches!(j.checkpoint(), Err(JournalError::ReadOnly)));
    assert_eq!(m.volatile_image(), before);
}

#[test]
fn read_only_open_still_replays_committed_transactions() {
    let m = formatted();
    let mut t = Transaction::new();
    t.write(HOME.start as u64, b"committed");
    // Commit, then crash before anything else: the durable image holds the transaction.
    open(&m).0.commit(&t).expect("commit");
    let image = Arc::new(MemMedia::from_bytes(m.crash_image()));
    // Undo the home write so only replay can bring it back.
    image.write(HOME.start as u64, &[0u8; 9]);
    let (_j, report) =
        Journal::open_read_only(image.clone() as Arc<dyn Media>, J_START, J_LEN).expect("open");
    assert_eq!(report.transactions_replayed, 1);
    let mut buf = [0u8; 9];
    image.read(HOME.start as u64, &mut buf);
    assert_eq!(&buf, b"committed");
}

// ---------------------------------------------------------------------------------
// Batches: several transactions committed as one journal transaction (group commit).

/// `n` random transactions whose writes overlap (narrow home range), and the home area
/// after applying them in order.
fn overlapping_txns(seed: u64, n: usize) -> (Vec<Transaction>, Vec<u8>) {
    let mut rng = Rng::new(seed);
    let m = formatted();
    let mut model = home_of(&m);
    let txns = (0..n)
        .map(|_| {
            let mut txn = Transaction::new();
            for _ in 0..1 + rng.below(4) {
                // A 2 KiB window: later transactions overwrite earlier ones' bytes.
                let len = 1 + rng.below(300) as usize;
                let at = rng.below(2048 - len as u64) as usize;
                let mut data = vec![0u8; len];
                rng.fill(&mut data);
                txn.write((HOME.start + at) as u64, &data);
                model[at..at + len].copy_from_slice(&data);
            }
            txn
        })
        .collect();
    (txns, model)
}

#[test]
fn a_batch_replays_exactly_like_its_transactions_committed_one_after_another() {
    let (txns, model) = overlapping_txns(0x5eed_0001, 12);
    let refs: Vec<&Transaction> = txns.iter().collect();

    let one_by_one = formatted();
    let (mut j, _) = open(&one_by_one);
    for t in &txns {
        j.commit(t).expect("commit");
    }
    assert_eq!(home_of(&one_by_one), model);

    let batched = formatted();
    let (mut j, _) = open(&batched);
    batched.record_fences(true);
    j.commit_batch(&refs).expect("commit_batch");
    assert_eq!(home_of(&batched), model, "applied in batch order");
    // Crash after the log fence, before the home writes are durable: replay alone
    // must produce the same bytes.
    let points = batched.take_fences();
    assert_eq!(points.len(), 2);
    let (report, home) = recover(points[1].image());
    assert_eq!(report.transactions_replayed, 1, "one journal transaction");
    assert_eq!(
        report.records_replayed,
        txns.iter().map(|t| t.record_count() as u64).sum::<u64>()
    );
    assert_eq!(home, model);
}

#[test]
fn in_a_batch_a_later_transaction_wins_over_an_earlier_one_at_the_same_bytes() {
    let m = formatted();
    let (mut j, _) = open(&m);
    let (mut first, mut second) = (Transaction::new(), Transaction::new());
    first.write(HOME.start as u64, b"first writer");
    second.write(HOME.start as u64 + 6, b"second");
    j.commit_batch(&[&first, &second]).expect("commit_batch");
    assert_eq!(&home_of(&m)[..12], b"first second");
    let (_, home) = recover(m.crash_image());
    assert_eq!(&home[..12], b"first second");
}

#[test]
fn a_batch_is_one_commit_with_one_fence_pair_and_one_sequence_number() {
    let (txns, _) = overlapping_txns(0x5eed_0002, 5);
    let m = formatted();
    let (mut j, _) = open(&m);
    let seq = j.sequence();
    let fences = m.fence_count();
    let empty = Transaction::new();
    let mut refs: Vec<&Transaction> = txns.iter().collect();
    refs.insert(2, &empty);
    assert_eq!(j.commit_batch(&refs), Ok(seq));
    assert_eq!(m.fence_count() - fences, 2, "the same fences as one commit");
    assert_eq!(j.sequence(), seq + 1);
    let s = j.stats();
    assert_eq!(
        (s.commits, s.transactions),
        (1, 5),
        "the empty one is not counted"
    );
    j.commit(&txns[0]).expect("commit");
    let s = j.stats();
    assert_eq!((s.commits, s.transactions), (2, 6));
}

#[test]
fn log_size_of_a_batch_is_the_encoded_len_of_its_records_in_one_transaction() {
    let (txns, _) = overlapping_txns(0x5eed_0003, 7);
    let mut merged = Transaction::new();
    for (off, data) in txns.iter().flat_map(|t| t.writes()) {
        merged.write(off, data);
    }
    assert_eq!(LogSize::of(&txns).encoded_len(), merged.encoded_len());
    let mut by_record = LogSize::new();
    for (_, data) in merged.writes() {
        by_record.add_record(data.len() as u64);
    }
    assert_eq!(by_record, LogSize::of(&txns));
    assert!(LogSize::of(&txns[..3]).encoded_len() <= LogSize::of(&txns).encoded_len());
}

#[test]
fn a_batch_too_large_for_the_log_is_refused_whole_and_its_split_halves_commit() {
    let m = formatted();
    let (mut j, _) = open(&m);
    // Three transactions of about 40% of the log each: two fit together, three do not.
    let part = (j.log_bytes() * 2 / 5) as usize;
    let mut model = home_of(&m);
    let txns: Vec<Transaction> = (0..3u8)
        .map(|i| {
            let mut t = Transaction::new();
            let at = usize::from(i) * 1000;
            let data = vec![i + 1; part];
            t.write((HOME.start + at) as u64, &data);
            model[at..at + part].copy_from_slice(&data);
            t
        })
        .collect();
    let refs: Vec<&Transaction> = txns.iter().collect();
    assert!(LogSize::of(txns.iter()).encoded_len() > j.log_bytes());

    let image = m.volatile_image();
    let seq = j.sequence();
    assert!(matches!(
        j.commit_batch(&refs),
        Err(JournalError::TooLarge { .. })
    ));
    assert_eq!(m.volatile_image(), image, "nothing written");
    assert_eq!((j.sequence(), j.stats().commits), (seq, 0));

    // Split where LogSize says the longest prefix stops fitting.
    let mut size = LogSize::new();
    let fits = refs
        .iter()
        .take_while(|t| {
            size.add(t);
            size.encoded_len() <= j.log_bytes()
        })
        .count();
    assert_eq!(fits, 2);
    j.commit_batch(&refs[..fits]).expect("first part");
    j.commit_batch(&refs[fits..]).expect("second part");
    assert_eq!(home_of(&m), model);
    let s = j.stats();
    assert_eq!((s.commits, s.transactions, s.wraps), (2, 3, 1));
    let (report, home) = recover(m.crash_image());
    assert_eq!(
        report.transactions_replayed, 1,
        "the second part, after the wrap"
    );
    assert_eq!(home, model);
}

#[test]
fn a_batch_with_one_invalid_record_is_refused_whole() {
    let m = formatted();
    let (mut j, _) = open(&m);
    let image = m.volatile_image();
    let mut good = Transaction::new();
    good.write(HOME.start as u64, &[1; 8]);
    let mut bad = Transaction::new();
    bad.write(J_START + 64, &[2; 8]);
    assert!(matches!(
        j.commit_batch(&[&good, &bad]),
        Err(JournalError::InvalidRecord { .. })
    ));
    assert_eq!(m.volatile_image(), image);
    assert_eq!(j.stats().transactions, 0);
}

#[test]
fn a_crash_at_any_fence_of_a_batch_recovers_all_of_it_or_none() {
    let (txns, model) = overlapping_txns(0x5eed_0004, 6);
    let refs: Vec<&Transaction> = txns.iter().collect();
    let m = formatted();
    let (mut j, _) = open(&m);
    let before = home_of(&m);
    m.record_fences(true);
    j.commit_batch(&refs).expect("commit_batch");
    let mut rng = Rng::new(daxfs_testkit::seed(0x5eed_0005));
    for p in m.take_fences() {
        let all = p.lines();
        let mut variants = vec![p.image(), p.image_with(&all)];
        for _ in 0..16 {
            let subset: Vec<usize> = all
                .iter()
                .copied()
                .filter(|_| rng.next_u64() & 1 == 1)
                .collect();
            variants.push(p.image_with(&subset));
        }
        for image in variants {
            let (_, home) = recover(image);
            assert!(
                home == before || home == model,
                "crash before fence {}: a part of the batch survived",
                p.index()
            );
        }
    }
}

#[test]
fn a_read_only_open_made_writable_commits_as_a_writable_open_would() {
    // A torn transaction at the tail: a read-only open replays nothing and writes
    // nothing; made writable, the journal must still skip the torn transaction's
    // sequence number, so its leftovers never validate behind the next commit.
    let m = formatted();
    let (mut j, _) = open(&m);
    let before = home_of(&m);
    let mut torn = Transaction::new();
    torn.write(HOME.start as u64, &[7u8; 5000]);
    m.record_fences(true);
    j.commit(&torn).expect("commit");
    let point = &m.take_fences()[0];
    let mut lines = point.lines();
    lines.pop();
    let image = Arc::new(MemMedia::from_bytes(point.image_with(&lines)));
    let untouched = image.volatile_image();
    let (mut j, report) =
        Journal::open_read_only(image.clone() as Arc<dyn Media>, J_START, J_LEN).expect("open");
    assert_eq!(report.transactions_replayed, 0);
    assert_eq!(image.volatile_image(), untouched, "read-only open wrote");
    j.make_writable();
    let mut t = Transaction::new();
    t.write(HOME.start as u64 + 6000, b"after");
    j.commit(&t).expect("commit after make_writable");
    let (report, home) = recover(image.crash_image());
    assert_eq!(
        report.transactions_replayed, 1,
        "only the new commit replays"
    );
    assert_eq!(
        &home[..5000],
        &before[..5000],
        "the torn transaction applied"
    );
    assert_eq!(&home[6000..6005], b"after");
}
