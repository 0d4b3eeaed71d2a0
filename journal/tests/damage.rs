//! A damaged log: a committed transaction that fails its checks while later, intact ones
//! follow is media damage, not a torn tail. `open` refuses it (writing nothing) instead of
//! replaying the older part of the log over newer home contents; `recover` reaches the
//! newest committed state. Over `MemMedia`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test reports failure by panicking

use std::sync::Arc;

use daxfs_journal::{format, Journal, JournalError, StopReason, Transaction};
use daxfs_pmem::{Media, MemMedia};

const DEV: usize = 512 * 1024;
const J_START: u64 = 8192;
const J_LEN: u64 = 128 * 1024;
const LOG: u64 = J_START + 4096;
/// Home area the transactions write to (after the journal region).
const HOME: std::ops::Range<usize> = 256 * 1024..DEV;

/// One committed transaction: its sequence number and absolute byte range in the log.
#[derive(Clone, Copy, Debug)]
struct Committed {
    seq: u64,
    start: u64,
    len: u64,
}

/// A journal holding `n` committed (not checkpointed) transactions, each rewriting the
/// same "inode" bytes (so an older one replayed over a newer one shows) and appending a
/// record of its own. Returns the media, the transactions, and the home area after the
/// last commit (the newest state).
fn committed_log(n: usize) -> (Arc<MemMedia>, Vec<Committed>, Vec<u8>) {
    let m = Arc::new(MemMedia::new(DEV));
    format(&*m, J_START, J_LEN).expect("format");
    let (mut j, _) = Journal::open(m.clone() as Arc<dyn Media>, J_START, J_LEN).expect("open");
    let mut out = Vec::new();
    let mut pos = 0u64;
    for i in 0..n {
        let mut t = Transaction::new();
        t.write(HOME.start as u64, &[i as u8 + 1; 96]);
        t.write(
            HOME.start as u64 + 4096 + i as u64 * 200,
            &[0xa0 ^ i as u8; 150],
        );
        let len = t.encoded_len();
        let seq = j.commit(&t).expect("commit");
        out.push(Committed {
            seq,
            start: LOG + pos,
            len,
        });
        pos += len;
    }
    assert_eq!(j.stats().wraps, 0, "the test log must not wrap");
    let home = m.crash_image()[HOME].to_vec();
    (m, out, home)
}

fn flip(image: &mut [u8], at: u64) {
    image[at as usize] ^= 0x10;
}

/// Byte offsets inside a transaction to damage: its header, its first record's data, its
/// second record's header, its commit record.
fn spots(t: &Committed) -> [u64; 4] {
    [
        t.start + 20,
        t.start + 64 + 16 + 40,
        t.start + 64 + 16 + 96 + 4,
        t.start + t.len - 64 + 20,
    ]
}

#[test]
fn a_damaged_transaction_with_intact_ones_after_it_is_refused_and_nothing_is_written() {
    let (m, txns, _) = committed_log(12);
    let mut image = m.crash_image();
    let victim = txns[9];
    flip(&mut image, spots(&victim)[1]);
    let media = Arc::new(MemMedia::from_bytes(image.clone()));
    match Journal::open(media.clone() as Arc<dyn Media>, J_START, J_LEN) {
        Err(JournalError::Damaged(d)) => {
            assert_eq!(d.sequence, victim.seq);
            assert_eq!(d.offset, victim.start);
            assert_eq!(d.later_sequence, victim.seq + 1);
            assert_eq!(d.later_offset, txns[10].start);
            let text = JournalError::Damaged(d).to_string();
            assert!(
                text.contains(&format!("transaction {}", victim.seq))
                    && text.contains(&format!("byte {}", victim.start)),
                "the message names the transaction and its offset: {text}"
            );
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok((_, r)) => panic!("opened a damaged log: {r:?}"),
    }
    assert!(
        media.crash_image() == image,
        "a refused open writes nothing"
    );
    assert!(
        media.volatile_image() == image,
        "a refused open stores nothing"
    );
}

#[test]
fn a_read_only_open_refuses_a_damaged_log_too() {
    let (m, txns, _) = committed_log(6);
    let mut image = m.crash_image();
    flip(&mut image, spots(&txns[2])[2]);
    let media = Arc::new(MemMedia::from_bytes(image.clone()));
    let r = Journal::open_read_only(media.clone() as Arc<dyn Media>, J_START, J_LEN);
    assert!(matches!(r, Err(JournalError::Damaged(_))));
    assert!(
        media.volatile_image() == image,
        "a refused open writes nothing"
    );
}

#[test]
fn a_damaged_transaction_header_with_intact_ones_after_it_is_refused() {
    let (m, txns, _) = committed_log(8);
    let mut image = m.crash_image();
    flip(&mut image, spots(&txns[3])[0]);
    let media = Arc::new(MemMedia::from_bytes(image));
    match Journal::open(media as Arc<dyn Media>, J_START, J_LEN) {
        Err(JournalError::Damaged(d)) => {
            assert_eq!((d.sequence, d.offset), (txns[3].seq, txns[3].start));
            assert_eq!(d.later_sequence, txns[4].seq);
        }
        other => panic!("expected Damaged, got {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn damage_to_the_newest_transaction_is_a_torn_tail_and_keeps_the_newest_home_state() {
    let (m, txns, newest) = committed_log(8);
    let last = txns[txns.len() - 1];
    for at in spots(&last) {
        let mut image = m.crash_image();
        flip(&mut image, at);
        let media = Arc::new(MemMedia::from_bytes(image));
        let (_, report) = Journal::open(media.clone() as Arc<dyn Media>, J_START, J_LEN)
            .expect("a torn tail opens");
        assert!(
            media.crash_image()[HOME] == newest[..],
            "damage at byte {at}: nothing older is replayed over the newest home state"
        );
        // Its header or its commit record is intact: a torn transaction; the older ones
        // are in place, not replayed.
        assert_eq!(
            report.stopped_reason,
            StopReason::Torn { sequence: last.seq }
        );
        assert_eq!(report.transactions_replayed, 0);
        assert_eq!(report.transactions_in_place, 7);
    }
}

#[test]
fn recover_replays_what_follows_the_damage_and_reaches_the_newest_state() {
    // The crash came before the newest transaction's home writes were durable: only its
    // journal copy has them, and it lies after the damage.
    let m = Arc::new(MemMedia::new(DEV));
    format(&*m, J_START, J_LEN).expect("format");
    let (mut j, _) = Journal::open(m.clone() as Arc<dyn Media>, J_START, J_LEN).expect("open");
    let mut model = m.crash_image()[HOME].to_vec();
    let mut starts = Vec::new();
    let mut pos = 0u64;
    for i in 0..10u8 {
        let mut t = Transaction::new();
        t.write(HOME.start as u64, &[i + 1; 96]);
        t.write(
            HOME.start as u64 + 8192 + u64::from(i) * 128,
            &[i ^ 0x5a; 100],
        );
        model[..96].fill(i + 1);
        let o = 8192 + usize::from(i) * 128;
        model[o..o + 100].fill(i ^ 0x5a);
        starts.push(LOG + pos);
        pos += t.encoded_len();
        if i == 9 {
            m.record_fences(true);
        }
        j.commit(&t).expect("commit");
    }
    // Fence 1 of the last commit makes its home writes durable: crash just before it.
    let points = m.take_fences();
    let mut image = points[1].image();
    assert!(image[HOME] != model[..], "the newest home writes are lost");
    flip(&mut image, starts[4] + 64 + 16 + 10);

    let media = Arc::new(MemMedia::from_bytes(image.clone()));
    assert!(matches!(
        Journal::open(media.clone() as Arc<dyn Media>, J_START, J_LEN),
        Err(JournalError::Damaged(_))
    ));
    let (_, report) =
        Journal::recover(media.clone() as Arc<dyn Media>, J_START, J_LEN).expect("recover");
    let d = report.damage.expect("recover reports the damage");
    assert_eq!(d.offset, starts[4]);
    assert_eq!(d.dropped, 1, "only the damaged transaction is dropped");
    assert_eq!(report.transactions_replayed, 5, "the five after it");
    assert_eq!(report.transactions_in_place, 4, "the four before it");
    assert!(
        media.crash_image()[HOME] == model[..],
        "the newest committed state"
    );

    // The recovered journal opens cleanly and commits.
    let (mut j, report) =
        Journal::open(media.clone() as Arc<dyn Media>, J_START, J_LEN).expect("reopen");
    assert_eq!(report.transactions_replayed, 0);
    let mut t = Transaction::new();
    t.write(HOME.start as u64, &[0xee; 8]);
    j.commit(&t).expect("commit after recovery");
    drop(j);
    let (_, report) = Journal::open(media.clone() as Arc<dyn Media>, J_START, J_LEN).expect("open");
    assert_eq!(report.transactions_replayed, 1);
    assert_eq!(&media.crash_image()[HOME.start..HOME.start + 8], &[0xee; 8]);
}

#[test]
fn recover_of_an_undamaged_log_is_open() {
    let (m, _, newest) = committed_log(5);
    let image = m.crash_image();
    let a = Arc::new(MemMedia::from_bytes(image.clone()));
    let b = Arc::new(MemMedia::from_bytes(image));
    let (_, ra) = Journal::open(a.clone() as Arc<dyn Media>, J_START, J_LEN).expect("open");
    let (_, rb) = Journal::recover(b.clone() as Arc<dyn Media>, J_START, J_LEN).expect("recover");
    assert_eq!(ra, rb);
    assert_eq!(rb.damage, None);
    assert!(a.crash_image() == b.crash_image());
    assert!(b.crash_image()[HOME] == newest[..]);
}

/// Every transaction damaged in turn, at each of its spots: `open` either refuses or
/// leaves the newest home state; `recover` always reaches the newest state and reopens.
#[test]
fn damaging_any_committed_transaction_never_rolls_home_back() {
    let (m, txns, newest) = committed_log(20);
    let (mut refused, mut opened, mut recovered) = (0, 0, 0);
    for t in &txns {
        for at in spots(t) {
            let mut image = m.crash_image();
            flip(&mut image, at);
            let media = Arc::new(MemMedia::from_bytes(image.clone()));
            match Journal::open(media.clone() as Arc<dyn Media>, J_START, J_LEN) {
                Ok(_) => {
                    opened += 1;
                    assert!(
                        media.crash_image()[HOME] == newest[..],
                        "transaction {} damaged at byte {at}: opened with older home contents",
                        t.seq
                    );
                }
                Err(JournalError::Damaged(_)) => {
                    refused += 1;
                    assert!(
                        media.volatile_image() == image,
                        "a refused open writes nothing"
                    );
                }
                Err(e) => panic!("transaction {} damaged at byte {at}: {e}", t.seq),
            }
            let media = Arc::new(MemMedia::from_bytes(image));
            Journal::recover(media.clone() as Arc<dyn Media>, J_START, J_LEN).expect("recover");
            assert!(
                media.crash_image()[HOME] == newest[..],
                "recover reaches the newest state"
            );
            Journal::open(media as Arc<dyn Media>, J_START, J_LEN).expect("open after recover");
            recovered += 1;
        }
    }
    println!(
        "journal damage: {} damaged logs: {refused} refused, {opened} opened (torn tail), {recovered} recovered to the newest state",
        txns.len() * 4
    );
    assert_eq!(opened, 4, "only damage to the newest transaction opens");
}

/// With the newest header copy unreadable the older copy is used, whose tail is behind a
/// checkpoint. Transactions that checkpoint retired must not be replayed: blocks they
/// wrote may have been freed and reused for file data since. Every transaction records
/// the tail sequence of the header it was committed under, so replay starts there.
#[test]
fn a_lost_header_copy_never_replays_what_a_checkpoint_retired() {
    let m = Arc::new(MemMedia::new(DEV));
    format(&*m, J_START, J_LEN).expect("format");
    let (mut j, _) = Journal::open(m.clone() as Arc<dyn Media>, J_START, J_LEN).expect("open");
    let (x, y) = (HOME.start as u64, HOME.start as u64 + 8192);
    let mut t = Transaction::new();
    t.write(x, &[1; 64]); // metadata in block x, later freed
    j.commit(&t).expect("commit");
    j.checkpoint().expect("checkpoint");
    // Block x reused for file data (written in place, not journaled).
    m.write(x, &[9; 64]);
    m.flush(x, 64);
    m.fence();
    let mut t = Transaction::new();
    t.write(y, &[2; 8]);
    j.commit(&t).expect("commit");
    drop(j);

    let mut image = m.crash_image();
    let generation = |copy: u64| {
        let at = (J_START + copy + 16) as usize;
        u64::from_le_bytes(image[at..at + 8].try_into().expect("8 bytes"))
    };
    let newest = if generation(0) > generation(2048) {
        0
    } else {
        2048
    };
    image[(J_START + newest + 30) as usize] ^= 0x40;
    let media = Arc::new(MemMedia::from_bytes(image));
    let (_, report) = Journal::open(media.clone() as Arc<dyn Media>, J_START, J_LEN).expect("open");
    let home = media.crash_image();
    let at = |o: u64, n: usize| home[o as usize..o as usize + n].to_vec();
    assert_eq!(
        at(x, 64),
        vec![9; 64],
        "the retired transaction was replayed"
    );
    assert_eq!(at(y, 8), vec![2; 8]);
    assert_eq!(report.transactions_replayed, 1);
    assert_eq!(report.transactions_in_place, 1);
}
