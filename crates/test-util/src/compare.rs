//! Running one scenario through several targets and requiring identical observations.

use std::collections::{BTreeMap, BTreeSet};

use crate::proxy::{Target, TARGETS_ENV};

/// Set to print every row each target observed (to record expectations from Envoy).
pub const OBSERVE_ENV: &str = "REDVOY_OBSERVE";
/// Differing rows printed when targets disagree (the rest are counted).
const MAX_DIFF_ROWS_SHOWN: usize = 40;
/// Characters of one differing value shown (an admin endpoint may answer a whole help page).
const MAX_DIFF_VALUE_SHOWN: usize = 400;

/// A scenario's observations: `(label, rendered value)` rows, compared row by row.
pub type Rows = Vec<(String, String)>;

/// Whether a test's own expectations (values observed on Envoy and written into the test) are
/// asserted on `target`: always on Envoy (that validates them), and on every target when Envoy
/// is not among `REDVOY_TEST_TARGETS`. When Envoy runs too, the rows compared by
/// [`same_on_all_targets`] report every difference at once, which an early assertion would
/// hide. Use through [`expect_eq!`](crate::expect_eq) and [`expect_that!`](crate::expect_that).
pub fn expectations_apply(target: Target) -> bool {
    let envoy_runs = std::env::var(TARGETS_ENV)
        .map(|spec| spec.split(',').any(|t| t.trim() == Target::Envoy.name()))
        .unwrap_or(true);
    target == Target::Envoy || !envoy_runs
}

/// `assert_eq!` when [`expectations_apply`] to the target (first argument).
#[macro_export]
macro_rules! expect_eq {
    // Both sides are evaluated on every target: they often send the traffic being checked.
    ($target:expr, $left:expr, $right:expr $(,)?) => {
        match (&$left, &$right) {
            (left, right) => {
                if $crate::compare::expectations_apply($target) {
                    assert_eq!(left, right);
                }
            }
        }
    };
    ($target:expr, $left:expr, $right:expr, $($arg:tt)+) => {
        match (&$left, &$right) {
            (left, right) => {
                if $crate::compare::expectations_apply($target) {
                    assert_eq!(left, right, $($arg)+);
                }
            }
        }
    };
}

/// `assert!` when [`expectations_apply`] to the target (first argument).
#[macro_export]
macro_rules! expect_that {
    ($target:expr, $cond:expr $(,)?) => {
        match $cond {
            cond => {
                if $crate::compare::expectations_apply($target) {
                    assert!(cond);
                }
            }
        }
    };
    ($target:expr, $cond:expr, $($arg:tt)+) => {
        match $cond {
            cond => {
                if $crate::compare::expectations_apply($target) {
                    assert!(cond, $($arg)+);
                }
            }
        }
    };
}

/// `text` cut to its first `max` characters (a failing test's message stays readable when an
/// endpoint answers with a whole help page).
pub fn abbrev(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
        None => text.to_string(),
    }
}

/// Runs `scenario` once per target (in order) and panics, listing the differing rows, unless
/// every target observed exactly the same rows. Returns the rows.
pub fn same_on_all_targets(targets: &[Target], mut scenario: impl FnMut(Target) -> Rows) -> Rows {
    let mut results: Vec<(Target, Rows)> = Vec::new();
    for &target in targets {
        eprintln!("--- running on {target}");
        let rows = scenario(target);
        if std::env::var_os(OBSERVE_ENV).is_some() {
            for (label, value) in &rows {
                eprintln!("OBSERVED {target} {label:?} => {value}");
            }
        }
        results.push((target, rows));
    }
    let Some((first_target, first)) = results.first().cloned() else {
        panic!("no target to run");
    };
    for (target, rows) in &results[1..] {
        let diff = diff_rows(&first, rows);
        if diff.is_empty() {
            continue;
        }
        let shown: Vec<String> = diff
            .iter()
            .take(MAX_DIFF_ROWS_SHOWN)
            .map(|(label, a, b)| {
                format!(
                    "  {label}\n    {first_target}: {}\n    {target}: {}",
                    shown(a),
                    shown(b)
                )
            })
            .collect();
        let more = diff.len().saturating_sub(MAX_DIFF_ROWS_SHOWN);
        let more = if more > 0 {
            format!("\n  ... and {more} more")
        } else {
            String::new()
        };
        panic!(
            "{target} differs from {first_target} in {} row(s):\n{}{more}",
            diff.len(),
            shown.join("\n")
        );
    }
    first
}

/// A value as shown in a difference: on one line (newlines as `\n`), cut to
/// [`MAX_DIFF_VALUE_SHOWN`] characters.
fn shown(value: &str) -> String {
    abbrev(&value.replace('\n', "\\n"), MAX_DIFF_VALUE_SHOWN)
}

/// `(label, left, right)` for every row that differs, missing rows showing as `<absent>`.
/// Rows are matched by label when labels are unique on both sides (so one missing stat does
/// not shift every later row), by position otherwise (a scenario may repeat a command).
pub fn diff_rows(left: &Rows, right: &Rows) -> Vec<(String, String, String)> {
    let absent = || "<absent>".to_string();
    let unique =
        |rows: &Rows| rows.iter().map(|(k, _)| k).collect::<BTreeSet<_>>().len() == rows.len();
    let mut out = Vec::new();
    if unique(left) && unique(right) {
        let l: BTreeMap<&String, &String> = left.iter().map(|(k, v)| (k, v)).collect();
        let r: BTreeMap<&String, &String> = right.iter().map(|(k, v)| (k, v)).collect();
        // Left's order first, then the labels only the right has.
        let labels = left
            .iter()
            .map(|(k, _)| k)
            .chain(right.iter().map(|(k, _)| k).filter(|k| !l.contains_key(k)));
        for label in labels {
            let (a, b) = (l.get(label), r.get(label));
            if a != b {
                out.push((
                    label.clone(),
                    a.map(|v| v.to_string()).unwrap_or_else(absent),
                    b.map(|v| v.to_string()).unwrap_or_else(absent),
                ));
            }
        }
        return out;
    }
    for i in 0..left.len().max(right.len()) {
        let (l, r) = (left.get(i), right.get(i));
        if l != r {
            out.push((
                l.or(r).map(|(k, _)| k.clone()).unwrap_or_default(),
                l.map(|(_, v)| v.clone()).unwrap_or_else(absent),
                r.map(|(_, v)| v.clone()).unwrap_or_else(absent),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(items: &[(&str, &str)]) -> Rows {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_missing_row_does_not_shift_the_others() {
        let a = rows(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let b = rows(&[("a", "1"), ("c", "3"), ("d", "4")]);
        assert_eq!(
            diff_rows(&a, &b),
            vec![
                ("b".into(), "2".into(), "<absent>".into()),
                ("d".into(), "<absent>".into(), "4".into()),
            ]
        );
    }

    #[test]
    fn repeated_labels_compare_by_position() {
        let a = rows(&[("GET k", "1"), ("GET k", "2")]);
        let b = rows(&[("GET k", "1"), ("GET k", "3")]);
        assert_eq!(
            diff_rows(&a, &b),
            vec![("GET k".into(), "2".into(), "3".into())]
        );
    }
}
