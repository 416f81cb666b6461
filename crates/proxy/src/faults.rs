//! The redis_proxy filter's fault injection (Envoy's `RedisProxy.faults`): which faults apply to
//! a command and Envoy's draw among them.

use std::collections::HashMap;
use std::time::Duration;

use redvoy_config::model::{self, FaultType};
use redvoy_runtime::Runtime;

#[derive(Debug, Clone)]
pub(crate) struct FaultEntry {
    pub error: bool,
    /// Integer percent, as Envoy converts the fractional percent.
    pub percent: u32,
    /// Runtime key overriding `percent` (empty: none).
    pub runtime_key: String,
    pub delay: Duration,
}

/// Which fault list applies to a command: an index into [`Faults`], resolved once per command
/// when the filter is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FaultList(usize);

/// The fault lists of one filter: the first holds the faults without a command list (they
/// apply to every command); each command named by a fault has its own list, its specific
/// faults followed by the general ones.
#[derive(Debug)]
pub(crate) struct Faults {
    lists: Vec<Vec<FaultEntry>>,
    by_command: HashMap<String, FaultList>,
}

impl Faults {
    pub(crate) fn new(faults: &[model::Fault]) -> Self {
        let entry = |f: &model::Fault| FaultEntry {
            error: f.fault_type == FaultType::Error,
            percent: percent_of(&f.fault_enabled),
            runtime_key: f.fault_enabled.runtime_key.clone(),
            delay: f.delay,
        };
        let all: Vec<FaultEntry> = faults
            .iter()
            .filter(|f| f.commands.is_empty())
            .map(entry)
            .collect();
        let mut lists = vec![all];
        let mut by_command: HashMap<String, FaultList> = HashMap::new();
        for f in faults.iter().filter(|f| !f.commands.is_empty()) {
            for c in &f.commands {
                let list = *by_command.entry(c.clone()).or_insert_with(|| {
                    lists.push(Vec::new());
                    FaultList(lists.len() - 1)
                });
                lists[list.0].push(entry(f));
            }
        }
        // Faults without a command list apply to every command, after the specific ones.
        let (general, specific) = lists.split_at_mut(1);
        for list in specific {
            list.extend(general[0].iter().cloned());
        }
        Self { lists, by_command }
    }

    /// The list that applies to the (lowercased) command `cmd`.
    pub(crate) fn list_for(&self, cmd: &str) -> FaultList {
        self.by_command.get(cmd).copied().unwrap_or_default()
    }

    /// Envoy's selection: one draw in [0, 100) against cumulative percentages, each taken
    /// from the runtime when the fault names a runtime key.
    pub(crate) fn pick(&self, list: FaultList, runtime: &Runtime) -> Option<&FaultEntry> {
        let list = self.lists.get(list.0)?;
        if list.is_empty() {
            return None;
        }
        let snapshot = runtime.snapshot();
        let draw = rand::random::<u64>() % 100;
        let mut cumulative = 0u64;
        for f in list {
            cumulative += if f.runtime_key.is_empty() {
                u64::from(f.percent)
            } else {
                snapshot.get_integer(&f.runtime_key, u64::from(f.percent))
            };
            if draw < cumulative {
                return Some(f);
            }
        }
        None
    }
}

fn percent_of(f: &model::RuntimeFraction) -> u32 {
    if f.denominator == 100 {
        f.numerator
    } else if f.denominator == 0 {
        0
    } else {
        (u64::from(f.numerator) * 100 / u64::from(f.denominator)) as u32
    }
}

#[cfg(test)]
mod tests {
    use redvoy_stats::Store;

    use super::*;

    #[test]
    fn fault_percent_conversion() {
        let f = |n, d| model::RuntimeFraction {
            runtime_key: String::new(),
            numerator: n,
            denominator: d,
        };
        assert_eq!(percent_of(&f(30, 100)), 30);
        assert_eq!(percent_of(&f(5000, 10_000)), 50);
        assert_eq!(percent_of(&f(1_000_000, 1_000_000)), 100);
    }

    #[test]
    fn fault_pick_at_100_percent() {
        let fault = |commands: Vec<String>, fault_type| model::Fault {
            fault_type,
            fault_enabled: model::RuntimeFraction {
                runtime_key: String::new(),
                numerator: 100,
                denominator: 100,
            },
            delay: Duration::ZERO,
            commands,
        };
        let faults = Faults::new(&[fault(vec!["get".into()], FaultType::Error)]);
        let runtime = Runtime::new(Vec::new(), &Store::new());
        let pick = |cmd| faults.pick(faults.list_for(cmd), &runtime).cloned();
        assert!(pick("get").is_some_and(|f| f.error));
        assert!(pick("set").is_none());

        // A general fault applies to every command, after a command's own faults.
        let faults = Faults::new(&[
            fault(vec![], FaultType::Delay),
            fault(vec!["get".into()], FaultType::Error),
        ]);
        assert!(faults
            .pick(faults.list_for("get"), &runtime)
            .is_some_and(|f| f.error));
        assert!(faults
            .pick(faults.list_for("set"), &runtime)
            .is_some_and(|f| !f.error));
    }
}
