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

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use redvoy_resp::RespValue;

/// The reply when Envoy has no aggregation for the command/subcommand combination.
pub const UNSUPPORTED_CLUSTER_SCOPE_COMMAND: &str =
    "ERR unsupported cluster scope command or invalid arguments";

// Envoy's aggregation error texts, byte for byte.
const ALL_RESPONSES_NOT_SAME: &str = "all responses not same";
const NON_ARRAY_RESPONSE: &str = "non-array response received from shard";
const NON_INTEGER_RESPONSE: &str = "non-integer response received from shard";
const NEGATIVE_VALUE: &str = "negative value received from upstream";
const UNEXPECTED_RESPONSE_TYPE: &str = "unexpected response type received from shard";
/// Only reachable with zero shards, which the splitter answers before broadcasting (Envoy
/// asserts instead); kept so that an empty input still gets a well-formed reply.
const NO_UPSTREAM_HOST: &str = "no upstream host";

/// Initial capacity of the rebuilt INFO text; a full rebuild of Redis 7 INFO is about 4 KiB.
/// Only a capacity hint: the text is bounded by the catalogue size plus the `First` values,
/// which the upstream decoder's bulk limit bounds.
const INFO_REPLY_CAPACITY: usize = 8192;

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

fn error(text: &'static str) -> RespValue {
    RespValue::Error(Bytes::from_static(text.as_bytes()))
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

// === INFO ===

/// How one INFO field is merged across shards (Envoy `AggregationType`).
#[derive(Debug, Clone, Copy)]
enum InfoFieldMerge {
    /// First non-empty value in shard order, verbatim; omitted when no shard had one.
    First,
    /// Wrapping sum of the values that parse as `i64`; always printed (0 when none did).
    Sum,
    /// Maximum of the values that parse as `i64`, starting from 0; always printed.
    Max,
    /// Printed as given whatever the shards say.
    Constant(&'static str),
    /// Redis-style human-readable bytes of the named (already merged) field; omitted when 0.
    Human(&'static str),
    /// `db0`: keys and expires summed, avg_ttl averaged pairwise as shards are folded in.
    Keyspace,
}

struct InfoField {
    section: &'static str,
    key: &'static str,
    merge: InfoFieldMerge,
}

const fn field(section: &'static str, key: &'static str, merge: InfoFieldMerge) -> InfoField {
    InfoField {
        section,
        key,
        merge,
    }
}

use InfoFieldMerge::{Constant, First, Human, Keyspace, Max, Sum};

/// Envoy 1.40's INFO catalogue, in output order. Order, sections and merge kinds were checked
/// against the real binary with every field present (see `info_full_catalogue_matches_envoy`).
#[rustfmt::skip]
const INFO_FIELDS: &[InfoField] = &[
    field("Server", "redis_version", First),
    field("Server", "redis_git_sha1", First),
    field("Server", "redis_git_dirty", First),
    field("Server", "redis_build_id", First),
    field("Server", "redis_mode", Constant("cluster")),
    field("Server", "os", First),
    field("Server", "arch_bits", First),
    field("Server", "monotonic_clock", First),
    field("Server", "gcc_version", First),
    field("Server", "multiplexing_api", First),
    field("Server", "atomicvar_api", First),
    field("Server", "process_supervised", First),
    field("Server", "run_id", First),
    field("Server", "server_time_usec", First),
    field("Server", "uptime_in_seconds", Max),
    field("Server", "uptime_in_days", Max),
    field("Server", "hz", First),
    field("Server", "configured_hz", First),
    field("Server", "lru_clock", First),
    field("Server", "executable", First),
    field("Server", "config_file", First),
    field("Server", "io_threads_active", Max),
    field("Clients", "connected_clients", Sum),
    field("Clients", "cluster_connections", Sum),
    field("Clients", "maxclients", First),
    field("Clients", "client_recent_max_input_buffer", Max),
    field("Clients", "client_recent_max_output_buffer", Max),
    field("Clients", "blocked_clients", Sum),
    field("Clients", "tracking_clients", Sum),
    field("Clients", "pubsub_clients", Sum),
    field("Clients", "watching_clients", Sum),
    field("Clients", "clients_in_timeout_table", Sum),
    field("Clients", "total_watched_keys", Sum),
    field("Clients", "total_blocking_keys", Sum),
    field("Clients", "total_blocking_keys_on_nokey", Sum),
    field("Memory", "used_memory", Sum),
    field("Memory", "used_memory_human", Human("used_memory")),
    field("Memory", "used_memory_rss", Sum),
    field("Memory", "used_memory_rss_human", Human("used_memory_rss")),
    field("Memory", "used_memory_peak", Max),
    field("Memory", "used_memory_peak_human", Human("used_memory_peak")),
    field("Memory", "used_memory_peak_time", First),
    field("Memory", "used_memory_overhead", Sum),
    field("Memory", "used_memory_startup", Sum),
    field("Memory", "used_memory_dataset", Sum),
    field("Memory", "total_system_memory", Sum),
    field("Memory", "total_system_memory_human", Human("total_system_memory")),
    field("Memory", "used_memory_lua", Sum),
    field("Memory", "used_memory_vm_eval", Sum),
    field("Memory", "used_memory_lua_human", Human("used_memory_lua")),
    field("Memory", "used_memory_scripts_eval", Sum),
    field("Memory", "number_of_cached_scripts", Sum),
    field("Memory", "number_of_functions", Sum),
    field("Memory", "number_of_libraries", Sum),
    field("Memory", "used_memory_vm_functions", Sum),
    field("Memory", "used_memory_vm_total", Sum),
    field("Memory", "used_memory_vm_total_human", Human("used_memory_vm_total")),
    field("Memory", "used_memory_functions", Sum),
    field("Memory", "used_memory_scripts", Sum),
    field("Memory", "used_memory_scripts_human", Human("used_memory_scripts")),
    field("Memory", "maxmemory", Sum),
    field("Memory", "maxmemory_human", Human("maxmemory")),
    field("Memory", "maxmemory_policy", First),
    field("Memory", "mem_fragmentation_bytes", Sum),
    field("Memory", "allocator_frag_bytes", Sum),
    field("Memory", "allocator_rss_bytes", Sum),
    field("Memory", "rss_overhead_bytes", Sum),
    field("Memory", "allocator_allocated", Sum),
    field("Memory", "allocator_active", Sum),
    field("Memory", "allocator_resident", Sum),
    field("Memory", "allocator_muzzy", Sum),
    field("Memory", "mem_not_counted_for_evict", Sum),
    field("Memory", "mem_clients_slaves", Sum),
    field("Memory", "mem_clients_normal", Sum),
    field("Memory", "mem_cluster_links", Sum),
    field("Memory", "mem_cluster_slot_migration_output_buffer", Sum),
    field("Memory", "mem_cluster_slot_migration_input_buffer", Sum),
    field("Memory", "mem_cluster_slot_migration_input_buffer_peak", Max),
    field("Memory", "mem_aof_buffer", Sum),
    field("Memory", "mem_replication_backlog", Sum),
    field("Memory", "mem_total_replication_buffers", Sum),
    field("Memory", "mem_allocator", First),
    field("Memory", "mem_overhead_db_hashtable_rehashing", Sum),
    field("Memory", "active_defrag_running", Max),
    field("Memory", "lazyfree_pending_objects", Sum),
    field("Memory", "lazyfreed_objects", Sum),
    field("Stats", "total_connections_received", Sum),
    field("Stats", "total_commands_processed", Sum),
    field("Stats", "instantaneous_ops_per_sec", Sum),
    field("Stats", "total_net_input_bytes", Sum),
    field("Stats", "total_net_output_bytes", Sum),
    field("Stats", "total_net_repl_input_bytes", Sum),
    field("Stats", "total_net_repl_output_bytes", Sum),
    field("Stats", "instantaneous_input_kbps", Sum),
    field("Stats", "instantaneous_output_kbps", Sum),
    field("Stats", "instantaneous_input_repl_kbps", Sum),
    field("Stats", "instantaneous_output_repl_kbps", Sum),
    field("Stats", "rejected_connections", Sum),
    field("Stats", "sync_full", Sum),
    field("Stats", "sync_partial_ok", Sum),
    field("Stats", "sync_partial_err", Sum),
    field("Stats", "expired_subkeys", Sum),
    field("Stats", "expired_keys", Sum),
    field("Stats", "expired_stale_perc", Max),
    field("Stats", "expired_time_cap_reached_count", Sum),
    field("Stats", "expire_cycle_cpu_milliseconds", Sum),
    field("Stats", "evicted_keys", Sum),
    field("Stats", "evicted_clients", Sum),
    field("Stats", "evicted_scripts", Sum),
    field("Stats", "total_eviction_exceeded_time", Sum),
    field("Stats", "current_eviction_exceeded_time", Max),
    field("Stats", "keyspace_hits", Sum),
    field("Stats", "keyspace_misses", Sum),
    field("Stats", "pubsub_channels", Sum),
    field("Stats", "pubsub_patterns", Sum),
    field("Stats", "pubsubshard_channels", Sum),
    field("Stats", "latest_fork_usec", Max),
    field("Stats", "total_forks", Sum),
    field("Stats", "migrate_cached_sockets", Sum),
    field("Stats", "slave_expires_tracked_keys", Sum),
    field("Stats", "active_defrag_hits", Sum),
    field("Stats", "active_defrag_misses", Sum),
    field("Stats", "active_defrag_key_hits", Sum),
    field("Stats", "active_defrag_key_misses", Sum),
    field("Stats", "total_active_defrag_time", Sum),
    field("Stats", "current_active_defrag_time", Max),
    field("Stats", "tracking_total_keys", Sum),
    field("Stats", "tracking_total_items", Sum),
    field("Stats", "tracking_total_prefixes", Sum),
    field("Stats", "unexpected_error_replies", Sum),
    field("Stats", "total_error_replies", Sum),
    field("Stats", "dump_payload_sanitizations", Sum),
    field("Stats", "total_reads_processed", Sum),
    field("Stats", "total_writes_processed", Sum),
    field("Stats", "io_threaded_reads_processed", Sum),
    field("Stats", "io_threaded_writes_processed", Sum),
    field("Stats", "client_query_buffer_limit_disconnections", Sum),
    field("Stats", "client_output_buffer_limit_disconnections", Sum),
    field("Stats", "reply_buffer_shrinks", Sum),
    field("Stats", "reply_buffer_expands", Sum),
    field("Stats", "eventloop_cycles", Sum),
    field("Stats", "eventloop_duration_sum", Sum),
    field("Stats", "eventloop_duration_cmd_sum", Sum),
    field("Stats", "instantaneous_eventloop_cycles_per_sec", Sum),
    field("Stats", "instantaneous_eventloop_duration_usec", Max),
    field("Stats", "acl_access_denied_auth", Sum),
    field("Stats", "acl_access_denied_cmd", Sum),
    field("Stats", "acl_access_denied_key", Sum),
    field("Stats", "acl_access_denied_channel", Sum),
    // Real Redis prints these as decimals (`0.123456`), which fail the integer parse: always 0.
    field("CPU", "used_cpu_sys", Sum),
    field("CPU", "used_cpu_user", Sum),
    field("CPU", "used_cpu_sys_children", Sum),
    field("CPU", "used_cpu_user_children", Sum),
    field("CPU", "used_cpu_sys_main_thread", Sum),
    field("CPU", "used_cpu_user_main_thread", Sum),
    field("Cluster", "cluster_enabled", Constant("1")),
    field("Keyspace", "db0", Keyspace),
];

/// Field name -> index in [`INFO_FIELDS`]. Immutable once built; fields are matched by name
/// alone, whatever section of the shard's reply they appear in (as Envoy does).
fn info_index() -> &'static HashMap<&'static str, usize> {
    static INDEX: OnceLock<HashMap<&'static str, usize>> = OnceLock::new();
    INDEX.get_or_init(|| {
        INFO_FIELDS
            .iter()
            .enumerate()
            .map(|(i, f)| (f.key, i))
            .collect()
    })
}

/// Running state of one catalogue field while shards are folded in.
#[derive(Default, Clone)]
struct FieldState {
    /// `First` value (empty = none yet).
    text: Vec<u8>,
    /// `Sum` / `Max` value.
    int: i64,
    /// `db0` totals, once any shard reported `db0`.
    keyspace: Option<KeyspaceStats>,
}

#[derive(Default, Clone, Copy)]
struct KeyspaceStats {
    keys: u64,
    expires: u64,
    avg_ttl: u64,
}

fn info(section: Option<&[u8]>, replies: &[RespValue]) -> RespValue {
    let included = |name: &[u8]| section.is_none_or(|s| s.eq_ignore_ascii_case(name));
    let index = info_index();
    let mut state = vec![FieldState::default(); INFO_FIELDS.len()];

    // Envoy checks each reply's type just before parsing it, in shard order, but builds nothing
    // until all parsed, so checking them all first gives the same reply.
    let mut texts = Vec::with_capacity(replies.len());
    for reply in replies {
        match reply {
            RespValue::Bulk(text) => texts.push(text),
            _ => return error(UNEXPECTED_RESPONSE_TYPE),
        }
    }

    for text in texts {
        // The section a line belongs to is whatever `#` header last preceded it in this reply.
        let mut current_section: &[u8] = b"";
        for line in text.split(|&b| b == b'\n') {
            let line = strip_ascii_whitespace(line);
            if line.is_empty() {
                continue;
            }
            if let Some(header) = line.strip_prefix(b"#") {
                current_section = strip_leading_ascii_whitespace(header);
                continue;
            }
            if !included(current_section) {
                continue;
            }
            let (key, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => (&line[..colon], &line[colon + 1..]),
                None => (line, &b""[..]),
            };
            let Some(&i) = std::str::from_utf8(key).ok().and_then(|k| index.get(k)) else {
                continue;
            };
            fold_field(INFO_FIELDS[i].merge, &mut state[i], value);
        }
    }

    RespValue::Bulk(Bytes::from(render_info(&state, included)))
}

fn fold_field(merge: InfoFieldMerge, state: &mut FieldState, value: &[u8]) {
    match merge {
        First => {
            if state.text.is_empty() {
                state.text = value.to_vec();
            }
        }
        Sum => {
            if let Some(n) = parse_i64(value) {
                state.int = state.int.wrapping_add(n);
            }
        }
        Max => {
            if let Some(n) = parse_i64(value) {
                state.int = state.int.max(n);
            }
        }
        Keyspace => {
            let old = state.keyspace.unwrap_or_default();
            let new = parse_keyspace(value);
            // Pairwise average with the running value, which starts at 0: one shard's avg_ttl
            // is halved, and with shards a, b, c the result is ((a/2 + b)/2 + c)/2.
            // Observed on Envoy 1.40.
            state.keyspace = Some(KeyspaceStats {
                keys: new.keys.wrapping_add(old.keys),
                expires: new.expires.wrapping_add(old.expires),
                avg_ttl: new.avg_ttl.wrapping_add(old.avg_ttl) / 2,
            });
        }
        Constant(_) | Human(_) => {}
    }
}

fn render_info(state: &[FieldState], included: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let index = info_index();
    let mut out = Vec::with_capacity(INFO_REPLY_CAPACITY);
    let mut last_section: Option<&str> = None;
    for (field, st) in INFO_FIELDS.iter().zip(state) {
        if !included(field.section.as_bytes()) {
            continue;
        }
        let value: Vec<u8> = match field.merge {
            Sum | Max => st.int.to_string().into_bytes(),
            First if !st.text.is_empty() => st.text.clone(),
            Constant(text) => text.as_bytes().to_vec(),
            Keyspace => match st.keyspace {
                Some(ks) => format!(
                    "keys={},expires={},avg_ttl={}",
                    ks.keys, ks.expires, ks.avg_ttl
                )
                .into_bytes(),
                None => continue,
            },
            Human(source) => match index.get(source).map(|&i| state[i].int) {
                Some(bytes) if bytes > 0 => bytes_to_human(bytes.unsigned_abs()).into_bytes(),
                _ => continue,
            },
            First => continue,
        };
        // A section header is printed only when one of its fields is, and sections are
        // separated by an empty line; no trailing separator after the last one.
        if last_section != Some(field.section) {
            if last_section.is_some() {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"# ");
            out.extend_from_slice(field.section.as_bytes());
            out.extend_from_slice(b"\r\n");
            last_section = Some(field.section);
        }
        out.extend_from_slice(field.key.as_bytes());
        out.push(b':');
        out.extend_from_slice(&value);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Redis's `bytesToHuman` as Envoy reimplements it: `<n>B` below 1 KiB, two decimals with
/// K/M/G/T/P up to 1 EiB, `<n>B` again beyond. Rust's `{:.2}` rounds the exact binary value
/// half-to-even like glibc's `%.2f` (1152 bytes -> `1.12K`).
fn bytes_to_human(bytes: u64) -> String {
    const UNITS: [char; 5] = ['K', 'M', 'G', 'T', 'P'];
    let mut scale: u64 = 1024;
    if bytes < scale {
        return format!("{bytes}B");
    }
    for unit in UNITS {
        let next = scale.saturating_mul(1024);
        if bytes < next {
            // Precision loss above 2^53 bytes is Envoy's too (it divides doubles).
            #[allow(clippy::cast_precision_loss)]
            let value = bytes as f64 / scale as f64;
            return format!("{value:.2}{unit}");
        }
        scale = next;
    }
    format!("{bytes}B")
}

/// absl's `StripAsciiWhitespace` set, which (unlike `u8::is_ascii_whitespace`) includes `\v`.
fn is_absl_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn strip_leading_ascii_whitespace(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_absl_space(b)).unwrap_or(s.len());
    &s[start..]
}

fn strip_ascii_whitespace(s: &[u8]) -> &[u8] {
    let s = strip_leading_ascii_whitespace(s);
    let end = s
        .iter()
        .rposition(|&b| !is_absl_space(b))
        .map_or(0, |i| i + 1);
    &s[..end]
}

/// absl `SimpleAtoi` into `i64`: surrounding whitespace allowed, optional sign, decimal digits
/// only, `None` on anything else or on overflow (so `0.05` and `12abc` count as nothing).
fn parse_i64(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(strip_ascii_whitespace(value))
        .ok()?
        .parse()
        .ok()
}

/// absl `SimpleAtoi` into `u64` with the result ignored, as Envoy's keyspace parser does: what
/// absl leaves in the output counts even on failure — the digits before the first bad
/// character (`12abc` -> 12), `u64::MAX` on overflow, 0 for a negative or empty value.
fn parse_u64_lenient(value: &[u8]) -> u64 {
    let mut text = strip_ascii_whitespace(value);
    match text.first() {
        Some(b'-') => return 0,
        Some(b'+') => text = &text[1..],
        _ => {}
    }
    let mut n: u64 = 0;
    for &b in text {
        if !b.is_ascii_digit() {
            return n;
        }
        match n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
        {
            Some(next) => n = next,
            None => return u64::MAX,
        }
    }
    n
}

/// `keys=<n>,expires=<n>,avg_ttl=<n>[,...]`; missing or unknown parts count as 0 / are ignored.
fn parse_keyspace(value: &[u8]) -> KeyspaceStats {
    let mut stats = KeyspaceStats::default();
    for part in value.split(|&b| b == b',') {
        let (name, number) = match part.iter().position(|&b| b == b'=') {
            Some(eq) => (&part[..eq], &part[eq + 1..]),
            None => (part, &b""[..]),
        };
        match name {
            b"keys" => stats.keys = parse_u64_lenient(number),
            b"expires" => stats.expires = parse_u64_lenient(number),
            b"avg_ttl" => stats.avg_ttl = parse_u64_lenient(number),
            _ => {}
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    //! Expected replies are Envoy 1.40.0's own, captured by running the real binary (MAGLEV
    //! STATIC cluster, `redis_proxy` catch-all route) in front of real redis-server 7.0.15
    //! instances and of scripted fake shards that return chosen reply types. With three hosts
    //! Envoy's shards were [C, A, A], so inputs below often repeat a shard.

    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn args(list: &[&str]) -> Vec<Bytes> {
        list.iter().map(|s| b(s)).collect()
    }

    fn err(s: &str) -> RespValue {
        RespValue::Error(b(s))
    }

    fn bulk(s: &str) -> RespValue {
        RespValue::Bulk(b(s))
    }

    fn simple(s: &str) -> RespValue {
        RespValue::Simple(b(s))
    }

    fn arr(items: &[&str]) -> RespValue {
        RespValue::Array(items.iter().map(|s| bulk(s)).collect())
    }

    fn info_section(section: &str) -> Aggregation {
        Aggregation::Info {
            section: Some(b(section)),
        }
    }

    const ALL_INFO: Aggregation = Aggregation::Info { section: None };

    fn info_text(reply: &RespValue) -> &str {
        match reply {
            RespValue::Bulk(text) => std::str::from_utf8(text).unwrap(),
            other => panic!("not a bulk string: {other:?}"),
        }
    }

    // === aggregation_for ===

    #[test]
    fn handler_table_matches_envoy() {
        use Aggregation::*;
        let cases: &[(&str, &[&str], Option<Aggregation>)] = &[
            ("script", &["SCRIPT", "LOAD", "return 1"], Some(AllSame)),
            ("script", &["script", "EXISTS", "abc"], Some(AllHave)),
            ("script", &["script", "flush"], Some(AllSame)),
            ("script", &["script", "help"], Some(AllSame)),
            ("script", &["script", "bogus"], Some(AllSame)),
            ("script", &["script"], Some(AllSame)),
            ("flushall", &["FLUSHALL"], Some(AllSame)),
            ("flushall", &["flushall", "ASYNC"], Some(AllSame)),
            ("flushdb", &["flushdb"], Some(AllSame)),
            (
                "config",
                &["CONFIG", "SET", "maxmemory", "0"],
                Some(AllSame),
            ),
            ("config", &["config", "Rewrite"], Some(AllSame)),
            ("config", &["config", "resetstat"], Some(AllSame)),
            ("config", &["config", "GET", "maxmemory"], Some(Concat)),
            ("config", &["config", "help"], None),
            ("config", &["config", "foo"], None),
            ("config", &["config"], None),
            ("slowlog", &["SLOWLOG", "RESET"], Some(AllSame)),
            ("slowlog", &["slowlog", "get", "1"], Some(Concat)),
            ("slowlog", &["slowlog", "LEN"], Some(SumIntegers)),
            ("slowlog", &["slowlog", "help"], None),
            ("slowlog", &["slowlog"], None),
            ("keys", &["KEYS", "*"], Some(Concat)),
            ("keys", &["keys", "a", "b"], Some(Concat)),
            ("role", &["ROLE"], Some(Role)),
            ("role", &["role", "x"], Some(Role)),
            ("info", &["INFO"], Some(Info { section: None })),
            ("info", &["info", ""], Some(Info { section: None })),
            ("info", &["info", "Server"], Some(info_section("server"))),
            (
                "info",
                &["info", "KEYSPACE", "extra"],
                Some(info_section("keyspace")),
            ),
            ("info", &["info", "all"], Some(info_section("all"))),
            ("get", &["get", "k"], None),
            ("cluster", &["cluster", "info"], None),
            ("randomkey", &["randomkey"], Some(RandomKey)),
        ];
        for (cmd, request, want) in cases {
            assert_eq!(aggregation_for(cmd, &args(request)), *want, "{request:?}");
        }
    }

    // === common rules ===

    #[test]
    fn first_error_in_shard_order_wins_over_type_errors() {
        // Fake shards [C=null, A=err, A=err] to `KEYS`: Envoy replied `-ERR fake A`.
        let replies = vec![RespValue::Null, err("ERR fake A"), err("ERR fake A")];
        assert_eq!(aggregate(&Aggregation::Concat, replies), err("ERR fake A"));
        // Shard errors [C, A, A]: the first in shard order.
        for agg in [
            Aggregation::AllSame,
            Aggregation::Concat,
            Aggregation::SumIntegers,
            Aggregation::Role,
            ALL_INFO,
        ] {
            let replies = vec![arr(&["C"]), err("ERR second"), err("ERR third")];
            assert_eq!(aggregate(&agg, replies), err("ERR second"), "{agg:?}");
        }
    }

    #[test]
    fn upstream_failure_is_returned_as_is() {
        // One host down: KEYS, INFO, SLOWLOG LEN, FLUSHALL, CONFIG GET all got `-upstream failure`.
        for agg in [
            Aggregation::AllSame,
            Aggregation::Concat,
            Aggregation::SumIntegers,
            ALL_INFO,
        ] {
            let replies = vec![
                arr(&["C"]),
                err("upstream failure"),
                err("upstream failure"),
            ];
            assert_eq!(aggregate(&agg, replies), err("upstream failure"));
        }
    }

    #[test]
    fn no_shards_is_no_upstream_host() {
        assert_eq!(
            aggregate(&Aggregation::Concat, vec![]),
            err("no upstream host")
        );
    }

    // === AllSame ===

    #[test]
    fn all_same_returns_the_common_reply() {
        let ok = || simple("OK");
        assert_eq!(
            aggregate(&Aggregation::AllSame, vec![ok(), ok(), ok()]),
            ok()
        );
        // Any type qualifies when identical: `$-1`, nested arrays, bulk, integers.
        for same in [
            RespValue::Null,
            bulk("x"),
            RespValue::Integer(5),
            RespValue::Array(vec![
                RespValue::Array(vec![RespValue::Integer(1)]),
                RespValue::Null,
            ]),
        ] {
            let replies = vec![same.clone(), same.clone(), same.clone()];
            assert_eq!(aggregate(&Aggregation::AllSame, replies), same);
        }
    }

    #[test]
    fn all_same_mismatch() {
        // SCRIPT EXISTS of a script loaded on one server only; SLOWLOG RESET [+OK, :5, :5].
        let exists = |n| RespValue::Array(vec![RespValue::Integer(n)]);
        let replies = vec![exists(1), exists(0), exists(1)];
        assert_eq!(
            aggregate(&Aggregation::AllSame, replies),
            err("all responses not same")
        );
        let replies = vec![RespValue::Integer(5), simple("OK"), simple("OK")];
        assert_eq!(
            aggregate(&Aggregation::AllSame, replies),
            err("all responses not same")
        );
        // Same text, different type.
        let replies = vec![simple("OK"), bulk("OK")];
        assert_eq!(
            aggregate(&Aggregation::AllSame, replies),
            err("all responses not same")
        );
    }

    // === Concat ===

    #[test]
    fn concat_flattens_one_level_in_shard_order() {
        // `KEYS *` over shards holding [d f], [e c b g], [d f].
        let replies = vec![
            arr(&["d", "f"]),
            arr(&["e", "c", "b", "g"]),
            arr(&["d", "f"]),
        ];
        assert_eq!(
            aggregate(&Aggregation::Concat, replies),
            arr(&["d", "f", "e", "c", "b", "g", "d", "f"])
        );
        let empty = || RespValue::Array(vec![]);
        assert_eq!(
            aggregate(&Aggregation::Concat, vec![empty(), empty()]),
            empty()
        );
        // SLOWLOG GET entries are arrays themselves and stay whole.
        let entry = RespValue::Array(vec![RespValue::Integer(1), RespValue::Null]);
        let replies = vec![
            RespValue::Array(vec![entry.clone()]),
            empty(),
            RespValue::Array(vec![entry.clone()]),
        ];
        assert_eq!(
            aggregate(&Aggregation::Concat, replies),
            RespValue::Array(vec![entry.clone(), entry])
        );
    }

    #[test]
    fn concat_rejects_non_arrays() {
        for odd in [
            RespValue::Null,
            RespValue::Integer(5),
            bulk("x"),
            simple("OK"),
        ] {
            let replies = vec![arr(&["C"]), odd.clone(), odd];
            assert_eq!(
                aggregate(&Aggregation::Concat, replies),
                err("non-array response received from shard")
            );
        }
    }

    // === Role ===

    #[test]
    fn role_keeps_each_shard_array() {
        let master = || {
            RespValue::Array(vec![
                bulk("master"),
                RespValue::Integer(0),
                RespValue::Array(vec![]),
            ])
        };
        assert_eq!(
            aggregate(&Aggregation::Role, vec![master(), master(), master()]),
            RespValue::Array(vec![master(), master(), master()])
        );
        assert_eq!(
            aggregate(&Aggregation::Role, vec![master(), RespValue::Null]),
            err("non-array response received from shard")
        );
    }

    // === SumIntegers ===

    #[test]
    fn sum_integers() {
        let int = RespValue::Integer;
        assert_eq!(
            aggregate(&Aggregation::SumIntegers, vec![int(5), int(5), int(5)]),
            int(15)
        );
        assert_eq!(
            aggregate(&Aggregation::SumIntegers, vec![int(0), int(0)]),
            int(0)
        );
        // 3 * i64::MAX reached the client as :9223372036854775805.
        assert_eq!(
            aggregate(
                &Aggregation::SumIntegers,
                vec![int(i64::MAX), int(i64::MAX), int(i64::MAX)]
            ),
            int(9_223_372_036_854_775_805)
        );
    }

    #[test]
    fn sum_integers_errors_follow_shard_order() {
        let int = RespValue::Integer;
        let neg = "negative value received from upstream";
        let non_int = "non-integer response received from shard";
        let cases = [
            (vec![int(-3), int(-3), int(-3)], neg),
            (vec![int(5), int(-3), int(-3)], neg),
            (vec![int(-3), simple("OK"), simple("OK")], neg),
            (vec![RespValue::Null, int(5), int(5)], non_int),
            (vec![int(5), RespValue::Null, RespValue::Null], non_int),
            (vec![bulk("x"), int(-3), int(-3)], non_int),
            (vec![arr(&["C"]), int(-3)], non_int),
        ];
        for (replies, want) in cases {
            assert_eq!(
                aggregate(&Aggregation::SumIntegers, replies.clone()),
                err(want),
                "{replies:?}"
            );
        }
    }

    // === INFO ===

    #[test]
    fn info_rebuilds_real_redis_replies() {
        let replies = vec![
            bulk(&REDIS70_INFO_A),
            bulk(&REDIS70_INFO_B),
            bulk(&REDIS70_INFO_B),
        ];
        let merged = aggregate(&ALL_INFO, replies);
        assert_eq!(info_text(&merged), *ENVOY_INFO_A_B_B);
    }

    #[test]
    fn info_section_filter_is_case_insensitive_and_ignores_other_sections() {
        // The shards returned every section; `INFO MEMORY` kept only Memory, exactly the
        // Memory block of the unfiltered reply. Same for Keyspace.
        let blocks: Vec<&str> = ENVOY_INFO_A_B_B.split("\r\n\r\n").collect();
        for (section, block) in [("memory", blocks[2]), ("keyspace", blocks[6])] {
            let replies = vec![
                bulk(&REDIS70_INFO_A),
                bulk(&REDIS70_INFO_B),
                bulk(&REDIS70_INFO_B),
            ];
            let merged = aggregate(&info_section(section), replies);
            let want = format!("{}\r\n", block.trim_end_matches("\r\n"));
            assert_eq!(info_text(&merged), want, "{section}");
        }
        let replies = vec![bulk(&REDIS70_INFO_A)];
        let merged = aggregate(&info_section("KeySpace"), replies);
        assert_eq!(
            info_text(&merged),
            "# Keyspace\r\ndb0:keys=5,expires=2,avg_ttl=3499413\r\n"
        );
    }

    #[test]
    fn info_sections_outside_the_catalogue_are_empty() {
        for section in [
            "all",
            "everything",
            "default",
            "replication",
            "errorstats",
            "bogus",
        ] {
            let replies = vec![bulk(&REDIS70_INFO_A), bulk(&REDIS70_INFO_B)];
            assert_eq!(
                aggregate(&info_section(section), replies),
                bulk(""),
                "{section}"
            );
        }
    }

    #[test]
    fn info_without_data_prints_constants_and_zeros() {
        let replies = vec![bulk(""), bulk("")];
        assert_eq!(
            aggregate(&info_section("cluster"), replies.clone()),
            bulk("# Cluster\r\ncluster_enabled:1\r\n")
        );
        assert_eq!(
            aggregate(&info_section("cpu"), replies.clone()),
            bulk(
                "# CPU\r\nused_cpu_sys:0\r\nused_cpu_user:0\r\nused_cpu_sys_children:0\r\n\
                 used_cpu_user_children:0\r\nused_cpu_sys_main_thread:0\r\n\
                 used_cpu_user_main_thread:0\r\n"
            )
        );
        // No db0 anywhere (e.g. after FLUSHALL): no Keyspace section at all.
        assert_eq!(
            aggregate(&info_section("keyspace"), replies.clone()),
            bulk("")
        );
        let text = aggregate(&ALL_INFO, replies);
        assert!(info_text(&text).starts_with(
            "# Server\r\nredis_mode:cluster\r\nuptime_in_seconds:0\r\nuptime_in_days:0\r\n\
             io_threads_active:0\r\n\r\n# Clients\r\nconnected_clients:0\r\n"
        ));
        assert!(info_text(&text).ends_with("\r\n\r\n# Cluster\r\ncluster_enabled:1\r\n"));
    }

    #[test]
    fn info_rejects_non_bulk_replies() {
        for odd in [
            RespValue::Null,
            simple("OK"),
            RespValue::Integer(5),
            arr(&["C"]),
        ] {
            let replies = vec![odd, bulk(""), bulk("")];
            assert_eq!(
                aggregate(&ALL_INFO, replies),
                err("unexpected response type received from shard")
            );
        }
        let replies = vec![bulk(""), RespValue::Null];
        assert_eq!(
            aggregate(&ALL_INFO, replies),
            err("unexpected response type received from shard")
        );
    }

    /// Every catalogue field present in both shards, in reverse order and with junk in the
    /// computed fields; the output is Envoy's verbatim, which pins the catalogue order, the
    /// sections and each field's merge kind.
    fn full_info(tag: &str, mult: u64) -> String {
        let mut out = String::new();
        let mut last = "";
        for (i, f) in INFO_FIELDS.iter().enumerate().rev() {
            if f.section != last {
                out += &format!("# {}\r\n", f.section);
                last = f.section;
            }
            let value = match f.merge {
                Sum | Max => ((i as u64 + 1) * 1000 * mult + 3).to_string(),
                First => format!("{tag}_{}", f.key),
                Keyspace => format!("keys={},expires={mult},avg_ttl={}", 10 * mult, 5000 * mult),
                Constant(_) | Human(_) => "junk".to_string(),
            };
            out += &format!("{}:{value}\r\n", f.key);
        }
        out
    }

    #[test]
    fn info_full_catalogue_matches_envoy() {
        let replies = vec![
            bulk(&full_info("c", 1)),
            bulk(&full_info("a", 2)),
            bulk(&full_info("a", 2)),
        ];
        assert_eq!(info_text(&aggregate(&ALL_INFO, replies)), *ENVOY_INFO_FULL);
    }

    /// Odd INFO text: LF-only lines, padding, `#Clients`, bad numbers, overflow, `db0` twice
    /// and `db1`, a line without colon, an empty key, `Cluster` fields with other values.
    const ODD_INFO: &str = "# Server\r\nredis_version:9.9.9\r\nrun_id:\r\n\
        uptime_in_seconds:12abc\r\nuptime_in_days: 7 \r\n  hz:99  \r\nnocolonline\r\n\
        :emptykey\r\n#Clients\r\nconnected_clients:+5\r\nblocked_clients:-3\r\nmaxclients:\r\n\
        # Memory\nused_memory:1152\nused_memory_rss:1073741824\n\
        used_memory_peak:1125899906842624\nmaxmemory:1048575\n\
        total_system_memory:1099511627776\nused_memory_lua:99999999999999999999\n\
        # Stats\r\ninstantaneous_input_kbps:0.05\r\n\
        total_commands_processed:9223372036854775807\r\nlatest_fork_usec:-10\r\n\
        # Keyspace\r\ndb1:keys=100,expires=1,avg_ttl=5\r\n\
        db0:keys=10,expires=2,avg_ttl=1001\r\ndb0:keys=1,expires=1,avg_ttl=1\r\n\
        # Cluster\r\ncluster_enabled:0\r\nredis_mode:standalone\r\n";

    fn odd_info(section: &str) -> String {
        let replies = vec![bulk(ODD_INFO), bulk(ODD_INFO), bulk(ODD_INFO)];
        info_text(&aggregate(&info_section(section), replies)).to_string()
    }

    #[test]
    fn info_tolerates_odd_text_like_envoy() {
        assert_eq!(
            odd_info("server"),
            "# Server\r\nredis_version:9.9.9\r\nredis_mode:cluster\r\nuptime_in_seconds:0\r\n\
             uptime_in_days:7\r\nhz:99\r\nio_threads_active:0\r\n"
        );
        assert_eq!(
            odd_info("clients"),
            "# Clients\r\nconnected_clients:15\r\ncluster_connections:0\r\n\
             client_recent_max_input_buffer:0\r\nclient_recent_max_output_buffer:0\r\n\
             blocked_clients:-9\r\ntracking_clients:0\r\npubsub_clients:0\r\n\
             watching_clients:0\r\nclients_in_timeout_table:0\r\ntotal_watched_keys:0\r\n\
             total_blocking_keys:0\r\ntotal_blocking_keys_on_nokey:0\r\n"
        );
        let memory = odd_info("memory");
        assert_eq!(memory.len(), 1199);
        for line in [
            "used_memory:3456\r\nused_memory_human:3.38K\r\n",
            "used_memory_rss:3221225472\r\nused_memory_rss_human:3.00G\r\n",
            "used_memory_peak:1125899906842624\r\nused_memory_peak_human:1.00P\r\n",
            "total_system_memory:3298534883328\r\ntotal_system_memory_human:3.00T\r\n",
            "used_memory_lua:0\r\nused_memory_vm_eval:0\r\nused_memory_scripts_eval:0\r\n",
            "maxmemory:3145725\r\nmaxmemory_human:3.00M\r\nmem_fragmentation_bytes:0\r\n",
        ] {
            assert!(memory.contains(line), "{line}");
        }
        let stats = odd_info("stats");
        assert_eq!(stats.len(), 1687);
        for line in [
            "\r\ntotal_commands_processed:9223372036854775805\r\n",
            "\r\ninstantaneous_input_kbps:0\r\n",
            "\r\nlatest_fork_usec:0\r\n",
        ] {
            assert!(stats.contains(line), "{line}");
        }
        // avg_ttl: 1001/2=500, (1+500)/2=250, (1001+250)/2=625, ... = 329.
        assert_eq!(
            odd_info("keyspace"),
            "# Keyspace\r\ndb0:keys=33,expires=9,avg_ttl=329\r\n"
        );
        assert_eq!(odd_info("cluster"), "# Cluster\r\ncluster_enabled:1\r\n");
    }

    #[test]
    fn keyspace_numbers_parse_like_absl() {
        let ks = |line: &str| bulk(&format!("# Keyspace\r\n{line}\r\n"));
        let merge = |replies: Vec<RespValue>| {
            info_text(&aggregate(&info_section("keyspace"), replies)).to_string()
        };
        let odd = || ks("db0:keys=12abc,expires=-5,avg_ttl=99999999999999999999999");
        assert_eq!(
            merge(vec![odd(), odd(), odd()]),
            "# Keyspace\r\ndb0:keys=36,expires=0,avg_ttl=2305843009213693951\r\n"
        );
        // `\v` padding, header spacing, repeated and unknown parts, `+` sign, partial digits.
        let padded = || {
            bulk("#   Keyspace\r\n\x0bdb0:keys= 7 ,expires=3 4,avg_ttl=+8,extra=1,keys=100\x0b\r\n")
        };
        assert_eq!(
            merge(vec![padded(), padded(), padded()]),
            "# Keyspace\r\ndb0:keys=300,expires=9,avg_ttl=7\r\n"
        );
        assert_eq!(
            merge(vec![odd(), padded(), padded()]),
            "# Keyspace\r\ndb0:keys=212,expires=6,avg_ttl=2305843009213693957\r\n"
        );
        let max = || ks("db0:keys=18446744073709551615,expires=1,avg_ttl=18446744073709551615");
        assert_eq!(
            merge(vec![max(), bulk(""), bulk("")]),
            "# Keyspace\r\ndb0:keys=18446744073709551615,expires=1,avg_ttl=9223372036854775807\r\n"
        );
        assert_eq!(
            merge(vec![max(), max(), max()]),
            "# Keyspace\r\ndb0:keys=18446744073709551613,expires=3,avg_ttl=2305843009213693951\r\n"
        );
    }

    #[test]
    fn human_bytes_like_redis() {
        assert_eq!(bytes_to_human(0), "0B");
        assert_eq!(bytes_to_human(1023), "1023B");
        assert_eq!(bytes_to_human(1024), "1.00K");
        // 1.125 is exact in binary: glibc's %.2f rounds half to even.
        assert_eq!(bytes_to_human(1152), "1.12K");
        assert_eq!(bytes_to_human(3456), "3.38K");
        assert_eq!(bytes_to_human(1_048_575), "1024.00K");
        assert_eq!(bytes_to_human(3_145_725), "3.00M");
        assert_eq!(bytes_to_human(1 << 50), "1.00P");
        assert_eq!(bytes_to_human((1 << 60) - 1), "1024.00P");
        assert_eq!(bytes_to_human(1 << 60), "1152921504606846976B");
    }

    // === captured INFO texts ===

    /// `INFO` from a real redis-server 7.0.15: 5 keys in db0, 2 with a TTL.
    /// Test capture kept in `testdata/` with LF line ends; Redis and Envoy send CRLF.
    static REDIS70_INFO_A: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        include_str!("../testdata/redis70_info_a.txt").replace('\n', "\r\n")
    });

    /// `INFO` from a second redis-server 7.0.15: 5 keys in db0 (3 with a TTL), 1 in db1,
    /// one error reply counted.
    /// Test capture kept in `testdata/` with LF line ends; Redis and Envoy send CRLF.
    static REDIS70_INFO_B: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        include_str!("../testdata/redis70_info_b.txt").replace('\n', "\r\n")
    });

    /// Envoy 1.40's reply to `INFO ""` (no section filter) over shards [A, B, B].
    /// Test capture kept in `testdata/` with LF line ends; Redis and Envoy send CRLF.
    static ENVOY_INFO_A_B_B: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        include_str!("../testdata/envoy_info_a_b_b.txt").replace('\n', "\r\n")
    });

    /// Envoy 1.40's reply to `INFO ""` over shards [full(1), full(2), full(2)].
    /// Test capture kept in `testdata/` with LF line ends; Redis and Envoy send CRLF.
    static ENVOY_INFO_FULL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        include_str!("../testdata/envoy_info_full.txt").replace('\n', "\r\n")
    });
}
