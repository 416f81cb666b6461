//! Running one scenario through several targets and requiring identical observations.

use crate::proxy::Target;

/// Set to print every row each target observed (to record expectations from Envoy).
pub const OBSERVE_ENV: &str = "REDVOY_OBSERVE";

/// A scenario's observations: `(label, rendered value)` rows, compared row by row.
pub type Rows = Vec<(String, String)>;

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
        if !diff.is_empty() {
            panic!(
                "{target} differs from {first_target} in {} row(s):\n{}",
                diff.len(),
                diff.iter()
                    .map(|(label, a, b)| format!(
                        "  {label}\n    {first_target}: {a}\n    {target}: {b}"
                    ))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    first
}

/// `(label, left, right)` for every row that differs (missing rows show as `<absent>`).
pub fn diff_rows(left: &Rows, right: &Rows) -> Vec<(String, String, String)> {
    let absent = || "<absent>".to_string();
    let mut out = Vec::new();
    for i in 0..left.len().max(right.len()) {
        let l = left.get(i);
        let r = right.get(i);
        if l != r {
            let label = l.or(r).map(|(k, _)| k.clone()).unwrap_or_default();
            out.push((
                label,
                l.map(|(_, v)| v.clone()).unwrap_or_else(absent),
                r.map(|(_, v)| v.clone()).unwrap_or_else(absent),
            ));
        }
    }
    out
}
