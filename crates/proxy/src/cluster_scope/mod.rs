//! Aggregation of the replies to cluster-scope commands (Envoy 1.40 `ClusterScopeCmdRequest`,
//! `cluster_response_handler.cc`, `info_command_handler.cc`).
//!
//! A cluster-scope command (`SCRIPT`, `FLUSHALL`, `FLUSHDB`, `SLOWLOG`, `CONFIG`, `INFO`, `KEYS`,
//! `ROLE`; Envoy also broadcasts `SELECT`, which redvoy answers per client) is sent unchanged to
//! every shard of the catch-all route; this module decides
//! how the shards' replies become the one reply the client sees. It is pure: no I/O, no state
//! beyond one call. Sending, shard selection, arity checks and stats live in the splitter.
//!
//! Beyond Envoy 1.40, which users of real clients need: `DBSIZE` (summed), `RANDOMKEY` (a key
//! of a random shard that has one) and `SCRIPT EXISTS` (1 only where every shard has the
//! script) have their own aggregations; the splitter sends all of them to every host.
//!
//! Every other rule below was checked against a running Envoy 1.40.0 (see the tests' comments):
//! * any shard error reply wins, the first in shard order, before any type check;
//! * type checks then run in shard order, so the first offending shard picks the error text;
//! * `SLOWLOG LEN` sums with 64-bit wrap-around, as Envoy's signed sum does in practice;
//! * `INFO` is rebuilt from a fixed catalogue of fields; everything else a shard reports
//!   (Replication, Persistence, Errorstats, `db1`, ...) is dropped.

use bytes::Bytes;
use redvoy_resp::RespValue;

use errors::{
    error, ALL_RESPONSES_NOT_SAME, NEGATIVE_VALUE, NON_ARRAY_RESPONSE, NON_INTEGER_RESPONSE,
    NO_UPSTREAM_HOST,
};
use info::info;

mod errors;
mod info;
#[cfg(test)]
mod tests;

/// The reply when Envoy has no aggregation for the command/subcommand combination.
pub const UNSUPPORTED_CLUSTER_SCOPE_COMMAND: &str =
    "ERR unsupported cluster scope command or invalid arguments";

/// How the replies of every shard are merged into one (Envoy 1.40 `ClusterScopeCmdRequest`).
#[derive(Debug, Clone, PartialEq)]
pub enum Aggregation {
    /// Every shard must reply the same value, which is returned (`all responses not same`).
    AllSame,
    /// Every shard replies an array; the elements are concatenated in shard order.
    Concat,
    /// Every shard replies a non-negative integer; the sum is returned.
    SumIntegers,
    /// Every shard replies an array; the reply is the array of those arrays, in shard order.
    Role,
    /// `RANDOMKEY`: a key of a random shard that has one (Envoy asks one random shard, which
    /// may be empty while others are not); null only when every shard is empty.
    RandomKey,
    /// `SCRIPT EXISTS`: every shard replies an array of 0/1; a script exists only where every
    /// shard has it (EVALSHA may land on any of them). Envoy requires identical replies.
    AllHave,
    /// The INFO text is rebuilt from a fixed field catalogue. `section` is the lowercased first
    /// argument; only catalogue sections of that name (ASCII case-insensitive) are kept, so
    /// `INFO all` gives an empty bulk string. `None` (no argument, or an empty one) keeps all.
    Info { section: Option<Bytes> },
}

/// The aggregation Envoy applies to this cluster-scope command, `None` when Envoy has no handler
/// for the command/subcommand combination (the proxy then replies
/// `ERR unsupported cluster scope command or invalid arguments`). `cmd` is the lowercased command
/// name; `args` are all the request's arguments including args[0].
///
/// `args[0]` is the command name itself and `args[1]`, when present, the subcommand, as in
/// Envoy's request array. Arity is not checked here: bare `SCRIPT`, `KEYS`, `CONFIG`,
/// `SLOWLOG` get `invalid request` from the splitter before this is consulted.
pub fn aggregation_for(cmd: &str, args: &[Bytes]) -> Option<Aggregation> {
    let sub = args
        .get(1)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    // Envoy looks up `cmd:sub` first, then `cmd` alone; only CONFIG and SLOWLOG have
    // subcommand entries, and neither has a command-only entry, so their other subcommands
    // (HELP, ...) have no handler.
    match (cmd, sub.as_slice()) {
        ("config", b"set" | b"rewrite" | b"resetstat") | ("slowlog", b"reset") => {
            Some(Aggregation::AllSame)
        }
        ("config", b"get") | ("slowlog", b"get") => Some(Aggregation::Concat),
        ("slowlog", b"len") | ("dbsize", _) => Some(Aggregation::SumIntegers),
        ("script", b"exists") => Some(Aggregation::AllHave),
        ("randomkey", _) => Some(Aggregation::RandomKey),
        ("script" | "flushall" | "flushdb", _) => Some(Aggregation::AllSame),
        ("keys", _) => Some(Aggregation::Concat),
        ("role", _) => Some(Aggregation::Role),
        ("info", _) => Some(Aggregation::Info {
            section: (!sub.is_empty()).then(|| Bytes::from(sub)),
        }),
        _ => None,
    }
}

/// Merges shard replies given in shard order. A shard whose connection failed is passed as
/// `RespValue::Error("upstream failure")`. Returns the reply for the client (errors as RespValue::Error
/// with Envoy's exact texts: "all responses not same", "non-array response received from shard",
/// "non-integer response received from shard", "negative value received from upstream",
/// "null response received from shard", "unexpected response type received from shard",
/// "error parsing INFO response from shard", first shard error in shard order, ...).
///
/// Envoy 1.40 never produces two of those texts: "null response received from shard" needs a
/// missing reply object (impossible here: every shard has a value; a RESP null is a type error
/// like any other), and "error parsing INFO response from shard" is not in the 1.40 binary at
/// all (INFO parsing cannot fail; odd lines are skipped).
pub fn aggregate(agg: &Aggregation, replies: Vec<RespValue>) -> RespValue {
    if replies.is_empty() {
        return error(NO_UPSTREAM_HOST);
    }
    // Errors are counted as replies arrive and checked before anything else, so a shard error
    // beats an earlier shard's wrong type.
    if let Some(first_error) = replies
        .iter()
        .position(|r| matches!(r, RespValue::Error(_)))
    {
        return replies
            .into_iter()
            .nth(first_error)
            .unwrap_or(RespValue::Null);
    }
    match agg {
        Aggregation::AllSame => all_same(replies),
        Aggregation::Concat => concat(replies),
        Aggregation::SumIntegers => sum_integers(&replies),
        Aggregation::Role => role(replies),
        Aggregation::AllHave => all_have(replies),
        Aggregation::RandomKey => random_key(replies),
        Aggregation::Info { section } => info(section.as_deref(), &replies),
    }
}

fn random_key(replies: Vec<RespValue>) -> RespValue {
    let n = replies.len();
    // A clock-derived start, as Envoy picks its random shard.
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize)
        % n.max(1);
    let mut replies: Vec<Option<RespValue>> = replies.into_iter().map(Some).collect();
    (0..n)
        .map(|i| (start + i) % n)
        .find_map(|i| match replies[i].take() {
            Some(b @ RespValue::Bulk(_)) => Some(b),
            _ => None,
        })
        .unwrap_or(RespValue::Null)
}

fn all_have(replies: Vec<RespValue>) -> RespValue {
    let mut merged: Option<Vec<RespValue>> = None;
    for reply in replies {
        let RespValue::Array(items) = reply else {
            return error(NON_ARRAY_RESPONSE);
        };
        merged = Some(match merged {
            None => items,
            Some(acc) if acc.len() == items.len() => acc
                .into_iter()
                .zip(items)
                .map(|(a, b)| match (a, b) {
                    (RespValue::Integer(a), RespValue::Integer(b)) => RespValue::Integer(a.min(b)),
                    _ => error(NON_INTEGER_RESPONSE),
                })
                .collect(),
            Some(_) => return error(ALL_RESPONSES_NOT_SAME),
        });
    }
    RespValue::Array(merged.unwrap_or_default())
}

fn all_same(replies: Vec<RespValue>) -> RespValue {
    let mut replies = replies.into_iter();
    let Some(first) = replies.next() else {
        return error(NO_UPSTREAM_HOST);
    };
    if replies.all(|r| r == first) {
        first
    } else {
        error(ALL_RESPONSES_NOT_SAME)
    }
}

fn concat(replies: Vec<RespValue>) -> RespValue {
    if replies.iter().any(|r| !matches!(r, RespValue::Array(_))) {
        return error(NON_ARRAY_RESPONSE);
    }
    let mut merged = Vec::new();
    for reply in replies {
        if let RespValue::Array(items) = reply {
            merged.extend(items);
        }
    }
    RespValue::Array(merged)
}

fn role(replies: Vec<RespValue>) -> RespValue {
    if replies.iter().any(|r| !matches!(r, RespValue::Array(_))) {
        return error(NON_ARRAY_RESPONSE);
    }
    RespValue::Array(replies)
}

fn sum_integers(replies: &[RespValue]) -> RespValue {
    let mut sum: i64 = 0;
    for reply in replies {
        match reply {
            RespValue::Integer(n) if *n < 0 => return error(NEGATIVE_VALUE),
            // Envoy sums in a signed 64-bit integer; observed to wrap (3 * i64::MAX reaches the
            // client as 9223372036854775805).
            RespValue::Integer(n) => sum = sum.wrapping_add(*n),
            _ => return error(NON_INTEGER_RESPONSE),
        }
    }
    RespValue::Integer(sum)
}
