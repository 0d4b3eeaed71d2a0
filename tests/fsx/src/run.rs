//! Running a step sequence on a reference and a subject `Fs` side by side, comparing each
//! outcome and then the final trees, and describing the first difference readably.

use crate::exec::{show, Entry, Fs, Outcome, Tree, Value};
use crate::ops::Step;

/// Why a run did not come out identical.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Step `pos` (0-based position in the sequence) gave different outcomes, or one side
    /// broke an invariant the op checks on its own.
    Op {
        pos: usize,
        step: Step,
        reference: Outcome,
        subject: Outcome,
    },
    /// Every op agreed but the final trees differ.
    Final { diffs: Vec<String> },
    /// A tree could not be walked at the end.
    Walk(String),
}

impl Failure {
    /// True if `other` is the same failure for shrinking purposes: the same op (by
    /// number) fails, or again only the final trees differ.
    pub fn same_as(&self, other: &Failure) -> bool {
        match (self, other) {
            (Failure::Op { step: a, .. }, Failure::Op { step: b, .. }) => a.no == b.no,
            (Failure::Final { .. }, Failure::Final { .. }) => true,
            (Failure::Walk(_), Failure::Walk(_)) => true,
            _ => false,
        }
    }

    /// A multi-line human description.
    pub fn describe(&self) -> String {
        match self {
            Failure::Op {
                pos,
                step,
                reference,
                subject,
            } => {
                let mut s = format!(
                    "op #{pos} (op no {}): {}\n  reference: {}\n  subject:   {}",
                    step.no,
                    step.op,
                    show(reference),
                    show(subject)
                );
                if let (Ok(Value::Data(a)), Ok(Value::Data(b))) = (reference, subject) {
                    s.push_str(&format!("\n  {}", data_diff(a, b)));
                }
                s
            }
            Failure::Final { diffs } => {
                let mut s = format!("final trees differ ({} difference(s)):", diffs.len());
                for d in diffs.iter().take(20) {
                    s.push_str("\n  ");
                    s.push_str(d);
                }
                if diffs.len() > 20 {
                    s.push_str(&format!("\n  ... and {} more", diffs.len() - 20));
                }
                s
            }
            Failure::Walk(e) => format!("could not walk a tree at the end: {e}"),
        }
    }

    /// A one-line summary.
    pub fn summary(&self) -> String {
        match self {
            Failure::Op {
                pos,
                step,
                reference,
                subject,
            } => format!(
                "MISMATCH at op #{pos} ({}): reference {} / subject {}",
                step.op,
                show(reference),
                show(subject)
            ),
            Failure::Final { diffs } => format!(
                "MISMATCH in final trees: {}",
                diffs.first().map(String::as_str).unwrap_or("?")
            ),
            Failure::Walk(e) => format!("ERROR walking trees: {e}"),
        }
    }
}

/// Whether two outcomes count as identical (an `Invalid` never does).
pub fn agree(a: &Outcome, b: &Outcome) -> bool {
    a == b && !matches!(a, Ok(Value::Invalid(_)))
}

/// Where two byte strings first differ.
pub fn data_diff(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => {
            let end = (i + 8).min(a.len()).min(b.len());
            let hex = |d: &[u8]| {
                d.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            format!(
                "first difference at byte {i}: reference [{}] / subject [{}]",
                hex(&a[i..end]),
                hex(&b[i..end])
            )
        }
        None if a.len() != b.len() => format!(
            "same bytes up to {}, lengths differ: reference {} / subject {}",
            a.len().min(b.len()),
            a.len(),
            b.len()
        ),
        None => "identical bytes".to_string(),
    }
}

/// Every difference between two final trees, one line each.
pub fn compare_trees(reference: &Tree, subject: &Tree) -> Vec<String> {
    let mut diffs = Vec::new();
    for (path, r) in reference {
        match subject.get(path) {
            None => diffs.push(format!("{path}: only in reference ({})", r.stat)),
            Some(s) => compare_entry(path, r, s, &mut diffs),
        }
    }
    for (path, s) in subject {
        if !reference.contains_key(path) {
            diffs.push(format!("{path}: only in subject ({})", s.stat));
        }
    }
    diffs
}

fn compare_entry(path: &str, r: &Entry, s: &Entry, diffs: &mut Vec<String>) {
    if r.stat != s.stat {
        diffs.push(format!(
            "{path}: stat differs: reference {} / subject {}",
            r.stat, s.stat
        ));
    }
    if let (Some(a), Some(b)) = (&r.data, &s.data) {
        if a != b {
            diffs.push(format!("{path}: contents differ: {}", data_diff(a, b)));
        }
    }
    if r.xattrs != s.xattrs {
        let names = |x: &[(String, Vec<u8>)]| {
            x.iter()
                .map(|(n, v)| format!("{n}({} bytes)", v.len()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        diffs.push(format!(
            "{path}: xattrs differ: reference [{}] / subject [{}]",
            names(&r.xattrs),
            names(&s.xattrs)
        ));
    }
}

/// Applies `steps` to both sides in order, stopping at the first disagreement, then
/// compares the final trees. `observe` sees every step with both outcomes (for progress
/// and --verbose). Returns the number of steps run. (The failure is boxed: it is large
/// and rare.)
pub fn run<'a>(
    steps: impl IntoIterator<Item = &'a Step>,
    reference: &mut dyn Fs,
    subject: &mut dyn Fs,
    observe: &mut dyn FnMut(usize, &Step, &Outcome, &Outcome),
) -> Result<usize, Box<Failure>> {
    let mut count = 0;
    for (pos, step) in steps.into_iter().enumerate() {
        let r = reference.apply(step);
        let s = subject.apply(step);
        observe(pos, step, &r, &s);
        count = pos + 1;
        if !agree(&r, &s) {
            return Err(Box::new(Failure::Op {
                pos,
                step: step.clone(),
                reference: r,
                subject: s,
            }));
        }
    }
    let walk = |e| Box::new(Failure::Walk(e));
    let rt = reference.snapshot().map_err(walk)?;
    let st = subject.snapshot().map_err(walk)?;
    let diffs = compare_trees(&rt, &st);
    if diffs.is_empty() {
        Ok(count)
    } else {
        Err(Box::new(Failure::Final { diffs }))
    }
}
