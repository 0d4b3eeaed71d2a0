//! Shrinking a failing sequence by delta debugging: drop chunks of steps, keep every
//! removal after which the same failure still reproduces, refine the chunk size, and end
//! with a sequence from which no single step can be dropped (or when the budget runs out).

use crate::ops::Step;
use crate::run::Failure;
use std::time::Instant;

/// How much replaying the shrinker may do.
#[derive(Debug, Clone)]
pub struct Budget {
    pub max_tests: usize,
    pub deadline: Option<Instant>,
}

impl Budget {
    fn exhausted(&self, tests: usize) -> bool {
        tests >= self.max_tests || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// The result of shrinking.
#[derive(Debug, Clone)]
pub struct Shrunk<T> {
    /// The reduced sequence, including the fixed tail.
    pub items: Vec<T>,
    /// Number of replays performed.
    pub tests: usize,
    /// False if the budget ran out before the sequence was 1-minimal.
    pub complete: bool,
}

/// Delta debugging (the complement-removal half of ddmin) over `items`, with `tail`
/// always appended to every candidate. `reproduces` replays a candidate; `progress` is
/// told the current length and number of replays after each successful reduction.
pub fn ddmin<T: Clone>(
    items: &[T],
    tail: &[T],
    budget: &Budget,
    reproduces: &mut dyn FnMut(&[T]) -> bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Shrunk<T> {
    let mut cur: Vec<T> = items.to_vec();
    let mut tests = 0usize;
    let with_tail = |v: &[T]| -> Vec<T> {
        let mut c = v.to_vec();
        c.extend_from_slice(tail);
        c
    };
    // Many failures need no history at all: try that first.
    if !cur.is_empty() && !budget.exhausted(tests) {
        tests += 1;
        if reproduces(tail) {
            cur.clear();
            progress(0, tests);
        }
    }
    let mut n = 2usize;
    let complete = loop {
        if cur.is_empty() {
            break true;
        }
        n = n.min(cur.len());
        let chunk = cur.len().div_ceil(n);
        let mut reduced = false;
        let mut start = 0;
        while start < cur.len() {
            if budget.exhausted(tests) {
                return Shrunk {
                    items: with_tail(&cur),
                    tests,
                    complete: false,
                };
            }
            let end = (start + chunk).min(cur.len());
            let mut candidate = cur[..start].to_vec();
            candidate.extend_from_slice(&cur[end..]);
            tests += 1;
            if reproduces(&with_tail(&candidate)) {
                cur = candidate;
                reduced = true;
                progress(cur.len(), tests);
                // Keep the same granularity: the next chunk now starts where this one did.
                n = n.saturating_sub(1).max(2);
                break;
            }
            start = end;
        }
        if !reduced {
            if n >= cur.len() {
                break true;
            }
            n = (n * 2).min(cur.len());
        }
    };
    Shrunk {
        items: with_tail(&cur),
        tests,
        complete,
    }
}

/// Shrinks `steps` (the sequence that ended in `failure`) to a short sequence that still
/// ends in the same failure. `replay` runs a candidate on fresh trees and returns how it
/// failed, if it did.
pub fn shrink_failure(
    steps: &[Step],
    failure: &Failure,
    budget: &Budget,
    replay: &mut dyn FnMut(&[Step]) -> Option<Failure>,
    progress: &mut dyn FnMut(usize, usize),
) -> Shrunk<Step> {
    let (prefix, tail): (&[Step], &[Step]) = match failure {
        // The failing op stays last; everything before it is up for removal.
        Failure::Op { pos, .. } if *pos < steps.len() => (&steps[..*pos], &steps[*pos..=*pos]),
        _ => (steps, &[]),
    };
    let mut reproduces = |c: &[Step]| replay(c).is_some_and(|f| f.same_as(failure));
    ddmin(prefix, tail, budget, &mut reproduces, progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{Errno, Fs, Outcome, Tree, Value};
    use crate::ops::{GenConfig, Generator, Op};
    use crate::run::run;
    use std::collections::BTreeMap;

    fn unlimited() -> Budget {
        Budget {
            max_tests: 100_000,
            deadline: None,
        }
    }

    #[test]
    fn ddmin_finds_the_two_items_that_matter() {
        let items: Vec<u32> = (0..200).collect();
        let mut pred = |c: &[u32]| c.contains(&17) && c.contains(&150);
        let r = ddmin(&items, &[], &unlimited(), &mut pred, &mut |_, _| {});
        assert_eq!(r.items, vec![17, 150]);
        assert!(r.complete);
    }

    #[test]
    fn ddmin_keeps_the_tail_and_tries_it_alone_first() {
        let items: Vec<u32> = (0..50).collect();
        let mut pred = |c: &[u32]| c.last() == Some(&999);
        let r = ddmin(&items, &[999], &unlimited(), &mut pred, &mut |_, _| {});
        assert_eq!(r.items, vec![999]);
        assert_eq!(r.tests, 1);
    }

    #[test]
    fn ddmin_stops_when_the_budget_is_exhausted() {
        let items: Vec<u32> = (0..1000).collect();
        let budget = Budget {
            max_tests: 5,
            deadline: None,
        };
        let mut pred = |c: &[u32]| c.contains(&3) && c.contains(&997);
        let r = ddmin(&items, &[], &budget, &mut pred, &mut |_, _| {});
        assert!(!r.complete);
        assert_eq!(r.tests, 5);
        assert!(pred(&r.items), "a partial result still reproduces");
    }

    /// An in-memory "filesystem" of flat files supporting write, truncate, read, unlink.
    /// With `stale_truncate`, truncating down only shrinks the size but keeps the bytes,
    /// so growing the file again resurrects them: a bug that needs several ops to show.
    struct FakeFs {
        files: BTreeMap<String, (Vec<u8>, usize)>,
        stale_truncate: bool,
    }

    impl FakeFs {
        fn new(stale_truncate: bool) -> FakeFs {
            FakeFs {
                files: BTreeMap::new(),
                stale_truncate,
            }
        }
    }

    impl Fs for FakeFs {
        fn apply(&mut self, step: &Step) -> Outcome {
            let enoent = Err(Errno(libc::ENOENT));
            match &step.op {
                Op::Write { path, off, len } => {
                    let (buf, size) = self.files.entry(path.clone()).or_default();
                    let (off, len) = (*off as usize, *len as usize);
                    // A correct fake keeps buf.len() == size, so growth exposes zeros; the
                    // buggy one may hold stale bytes beyond size.
                    if buf.len() < off + len {
                        buf.resize(off + len, 0);
                    }
                    buf[off..off + len].copy_from_slice(&crate::ops::pattern(step.no, 0, len));
                    *size = (*size).max(off + len);
                    Ok(Value::Count(len as u64))
                }
                Op::Truncate { path, size: new } => {
                    let stale = self.stale_truncate;
                    let Some((buf, size)) = self.files.get_mut(path) else {
                        return enoent;
                    };
                    let new = *new as usize;
                    if !stale || new > buf.len() {
                        buf.resize(new, 0);
                    }
                    *size = new;
                    Ok(Value::Done)
                }
                Op::Read { path, off, len } => {
                    let Some((buf, size)) = self.files.get(path) else {
                        return enoent;
                    };
                    let start = (*off as usize).min(*size);
                    let end = (start + *len as usize).min(*size);
                    Ok(Value::Data(buf[start..end].to_vec()))
                }
                Op::Unlink { path } => match self.files.remove(path) {
                    Some(_) => Ok(Value::Done),
                    None => enoent,
                },
                _ => Ok(Value::Done),
            }
        }

        fn snapshot(&mut self) -> Result<Tree, String> {
            Ok(Tree::new())
        }
    }

    /// Random write/truncate/read/unlink steps over two files.
    fn fake_workload(n: usize) -> Vec<Step> {
        let cfg = GenConfig {
            files: 2,
            max_size: 64 * 1024,
            disabled: Vec::new(),
        };
        Generator::new(11, cfg)
            .filter(|s| {
                matches!(
                    s.op,
                    Op::Write { .. } | Op::Truncate { .. } | Op::Read { .. } | Op::Unlink { .. }
                )
            })
            .map(|mut s| {
                // Flatten paths so the fake needs no directories.
                match &mut s.op {
                    Op::Write { path, .. }
                    | Op::Truncate { path, .. }
                    | Op::Read { path, .. }
                    | Op::Unlink { path } => {
                        *path = path.rsplit('/').next().unwrap_or("f0").to_string();
                    }
                    _ => {}
                }
                s
            })
            .take(n)
            .collect()
    }

    fn replay_fakes(steps: &[Step]) -> Option<Failure> {
        let (mut r, mut s) = (FakeFs::new(false), FakeFs::new(true));
        run(steps, &mut r, &mut s, &mut |_, _, _, _| {})
            .err()
            .map(|b| *b)
    }

    #[test]
    fn identical_fakes_never_fail() {
        let steps = fake_workload(2000);
        let (mut a, mut b) = (FakeFs::new(false), FakeFs::new(false));
        assert_eq!(
            run(&steps, &mut a, &mut b, &mut |_, _, _, _| {}).ok(),
            Some(2000)
        );
    }

    #[test]
    fn shrinker_reduces_a_stale_truncate_bug_to_a_few_steps() {
        let steps = fake_workload(2000);
        let failure = replay_fakes(&steps).expect("the buggy fake diverges");
        let Failure::Op { pos, .. } = &failure else {
            panic!("expected an op mismatch, got {}", failure.describe());
        };
        assert!(*pos > 3, "the workload should need history to fail");
        let shrunk = shrink_failure(
            &steps[..=*pos],
            &failure,
            &unlimited(),
            &mut replay_fakes,
            &mut |_, _| {},
        );
        assert!(shrunk.complete);
        // Minimal reproducer: write, truncate down, grow, read.
        assert!(
            shrunk.items.len() <= 4,
            "shrunk to {} steps: {:?}",
            shrunk.items.len(),
            shrunk.items
        );
        let again = replay_fakes(&shrunk.items).expect("shrunk sequence still fails");
        assert!(again.same_as(&failure));
        assert_eq!(shrunk.items.last(), steps.get(*pos));
    }
}
