//! INFO across shards (Envoy 1.40 `info_command_handler.cc`): each shard's text is parsed,
//! a fixed catalogue of fields is merged field by field, and the text is rebuilt.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use redvoy_resp::RespValue;

use super::errors::{error, UNEXPECTED_RESPONSE_TYPE};

/// Initial capacity of the rebuilt INFO text; a full rebuild of Redis 7 INFO is about 4 KiB.
/// Only a capacity hint: the text is bounded by the catalogue size plus the `First` values,
/// which the upstream decoder's bulk limit bounds.
const INFO_REPLY_CAPACITY: usize = 8192;

/// How one INFO field is merged across shards (Envoy `AggregationType`).
#[derive(Debug, Clone, Copy)]
pub(super) enum InfoFieldMerge {
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

pub(super) struct InfoField {
    pub(super) section: &'static str,
    pub(super) key: &'static str,
    pub(super) merge: InfoFieldMerge,
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
pub(super) const INFO_FIELDS: &[InfoField] = &[
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

pub(super) fn info(section: Option<&[u8]>, replies: &[RespValue]) -> RespValue {
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
pub(super) fn bytes_to_human(bytes: u64) -> String {
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
