//! Envoy 1.40's command tables (`common/redis/supported_commands.h`): which handler serves a
//! command, which commands count as writes, which may be sent without arguments.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The handler class a command name maps to (Envoy's splitter handler types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandClass {
    /// Routed on `args[1]`, reply passed through.
    Simple,
    /// EVAL/EVALSHA, routed on `args[3]`.
    Eval,
    /// OBJECT, routed on `args[2]`.
    Object,
    Mget,
    Mset,
    /// DEL/EXISTS/TOUCH/UNLINK: one fragment per key, integer replies summed.
    SumResult,
    Scan,
    InfoShard,
    /// CLUSTER: one shard's raw reply.
    RandomShard,
    /// Broadcast to every shard and aggregated.
    ClusterScope,
    Transaction,
    /// SELECT: answered for the client that sent it (Envoy broadcasts it over the shared
    /// connections), with `command.select.*` stats as Envoy keeps them.
    Select,
    /// Answered by the proxy itself (AUTH, PING, ECHO, TIME, QUIT, HELLO, CLIENT).
    Local,
}

const SIMPLE: &[&str] = &[
    "append",
    "bf.add",
    "bf.card",
    "bf.exists",
    "bf.info",
    "bf.insert",
    "bf.loadchunk",
    "bf.madd",
    "bf.mexists",
    "bf.reserve",
    "bf.scandump",
    "bitcount",
    "bitfield",
    "bitfield_ro",
    "bitpos",
    "decr",
    "decrby",
    "dump",
    "expire",
    "expireat",
    "geoadd",
    "geodist",
    "geohash",
    "geopos",
    "georadius_ro",
    "georadiusbymember_ro",
    "geosearch",
    "get",
    "getbit",
    "getdel",
    "getex",
    "getrange",
    "getset",
    "hdel",
    "hexists",
    "hexpire",
    "hexpireat",
    "hexpiretime",
    "hget",
    "hgetall",
    "hincrby",
    "hincrbyfloat",
    "hkeys",
    "hlen",
    "hmget",
    "hmset",
    "hpersist",
    "hpexpire",
    "hpexpireat",
    "hpexpiretime",
    "hpttl",
    "hscan",
    "hset",
    "hsetnx",
    "hstrlen",
    "httl",
    "hvals",
    "incr",
    "incrby",
    "incrbyfloat",
    "lindex",
    "linsert",
    "llen",
    "lmove",
    "lpop",
    "lpush",
    "lpushx",
    "lrange",
    "lrem",
    "lset",
    "ltrim",
    "persist",
    "pexpire",
    "pexpireat",
    "pfadd",
    "pfcount",
    "psetex",
    "pttl",
    "publish",
    "restore",
    "rpop",
    "rpush",
    "rpushx",
    "sadd",
    "scard",
    "set",
    "setbit",
    "setex",
    "setnx",
    "setrange",
    "sismember",
    "smembers",
    "spop",
    "srandmember",
    "srem",
    "sscan",
    "strlen",
    "ttl",
    "type",
    "xack",
    "xadd",
    "xautoclaim",
    "xclaim",
    "xdel",
    "xlen",
    "xpending",
    "xrange",
    "xrevrange",
    "xtrim",
    "zadd",
    "zcard",
    "zcount",
    "zincrby",
    "zlexcount",
    "zpopmin",
    "zpopmax",
    "zrange",
    "zrangebylex",
    "zrangebyscore",
    "zrank",
    "zrem",
    "zremrangebylex",
    "zremrangebyrank",
    "zremrangebyscore",
    "zrevrange",
    "zrevrangebylex",
    "zrevrangebyscore",
    "zrevrank",
    "zscan",
    "zscore",
    // Multi-key commands Envoy routes by their first argument.
    "copy",
    "rpoplpush",
    "smove",
    "sunion",
    "sdiff",
    "sinter",
    "sinterstore",
    "zunionstore",
    "zinterstore",
    "pfmerge",
    "georadius",
    "georadiusbymember",
    "rename",
    "sort",
    "sort_ro",
    "zmscore",
    "sdiffstore",
    "msetnx",
    "substr",
    "zrangestore",
    "zunion",
    "zdiff",
    "sunionstore",
    "smismember",
    "hrandfield",
    "geosearchstore",
    "zdiffstore",
    "zinter",
    "zrandmember",
    "bitop",
    "lpos",
    "renamenx",
];

/// Everything not listed here is a "read" for mirroring, read_command_policy and read policies.
const WRITES: &[&str] = &[
    "append",
    "bitfield",
    "decr",
    "decrby",
    "del",
    "discard",
    "exec",
    "expire",
    "expireat",
    "eval",
    "evalsha",
    "geoadd",
    "getdel",
    "hdel",
    "hexpire",
    "hexpireat",
    "hincrby",
    "hincrbyfloat",
    "hmset",
    "hpersist",
    "hpexpire",
    "hpexpireat",
    "hset",
    "hsetnx",
    "incr",
    "incrby",
    "incrbyfloat",
    "linsert",
    "lmove",
    "lpop",
    "lpush",
    "lpushx",
    "lrem",
    "lset",
    "ltrim",
    "mset",
    "multi",
    "persist",
    "pexpire",
    "pexpireat",
    "pfadd",
    "psetex",
    "restore",
    "rpop",
    "rpush",
    "rpushx",
    "sadd",
    "set",
    "setbit",
    "setex",
    "setnx",
    "setrange",
    "spop",
    "srem",
    "zadd",
    "zincrby",
    "touch",
    "zpopmin",
    "zpopmax",
    "zrem",
    "zremrangebylex",
    "zremrangebyrank",
    "zremrangebyscore",
    "unlink",
    "copy",
    "rpoplpush",
    "smove",
    "sinterstore",
    "zunionstore",
    "zinterstore",
    "pfmerge",
    "georadius",
    "georadiusbymember",
    "rename",
    "sort",
    "sdiffstore",
    "msetnx",
    "zrangestore",
    "sunionstore",
    "geosearchstore",
    "zdiffstore",
    "bitop",
    "renamenx",
];

/// Commands allowed with no argument besides their name.
const WITHOUT_MANDATORY_ARGS: &[&str] = &[
    "ping",
    "time",
    "flushall",
    "flushdb",
    "randomkey",
    "dbsize",
    "quit",
    "role",
    "info",
    "hello",
    "multi",
    "exec",
    "discard",
    "unwatch",
];

/// Multi-key commands: queued whole inside MULTI (Envoy's list, plus EXISTS, which Envoy 1.40
/// refuses there), their keys checked against the transaction's slot.
const MULTI_KEY: &[&str] = &["del", "exists", "mget", "mset", "touch", "unlink", "msetnx"];

pub const CLUSTER_SUBCOMMANDS: &[&str] = &["info", "slots", "keyslot", "nodes", "shards"];

struct Tables {
    class: HashMap<&'static str, CommandClass>,
    writes: HashMap<&'static str, ()>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut class = HashMap::new();
        for c in SIMPLE {
            class.insert(*c, CommandClass::Simple);
        }
        let fixed: &[(&str, CommandClass)] = &[
            ("eval", CommandClass::Eval),
            ("evalsha", CommandClass::Eval),
            ("object", CommandClass::Object),
            ("mget", CommandClass::Mget),
            ("mset", CommandClass::Mset),
            ("del", CommandClass::SumResult),
            ("exists", CommandClass::SumResult),
            ("touch", CommandClass::SumResult),
            ("unlink", CommandClass::SumResult),
            ("scan", CommandClass::Scan),
            ("info.shard", CommandClass::InfoShard),
            ("cluster", CommandClass::RandomShard),
            ("randomkey", CommandClass::ClusterScope),
            ("script", CommandClass::ClusterScope),
            ("flushall", CommandClass::ClusterScope),
            ("flushdb", CommandClass::ClusterScope),
            ("slowlog", CommandClass::ClusterScope),
            ("config", CommandClass::ClusterScope),
            ("info", CommandClass::ClusterScope),
            ("keys", CommandClass::ClusterScope),
            ("dbsize", CommandClass::ClusterScope),
            ("select", CommandClass::Select),
            ("role", CommandClass::ClusterScope),
            ("multi", CommandClass::Transaction),
            ("exec", CommandClass::Transaction),
            ("discard", CommandClass::Transaction),
            ("watch", CommandClass::Transaction),
            ("unwatch", CommandClass::Transaction),
            ("auth", CommandClass::Local),
            ("ping", CommandClass::Local),
            ("echo", CommandClass::Local),
            ("time", CommandClass::Local),
            ("quit", CommandClass::Local),
            ("hello", CommandClass::Local),
            ("client", CommandClass::Local),
        ];
        for (c, k) in fixed {
            class.insert(*c, *k);
        }
        let writes = WRITES.iter().map(|w| (*w, ())).collect();
        Tables { class, writes }
    })
}

/// The handler class of a lowercased command name, `None` when Envoy does not support it.
pub fn class_of(cmd: &str) -> Option<CommandClass> {
    tables().class.get(cmd).copied()
}

/// Envoy's `isReadCommand`: anything that is not in the write list.
pub fn is_read(cmd: &str) -> bool {
    !tables().writes.contains_key(cmd)
}

pub fn valid_without_args(cmd: &str) -> bool {
    WITHOUT_MANDATORY_ARGS.contains(&cmd)
}

/// Whether a command takes every argument as a key (MSET/MSETNX: every other one).
pub fn is_multi_key(cmd: &str) -> bool {
    MULTI_KEY.contains(&cmd)
}

/// Whether a command may be queued inside MULTI (Envoy: simple, multi-key, transaction commands).
pub fn allowed_in_transaction(cmd: &str) -> bool {
    matches!(
        class_of(cmd),
        Some(CommandClass::Simple | CommandClass::Transaction)
    ) || MULTI_KEY.contains(&cmd)
}

/// Commands redvoy supports beyond Envoy 1.40. They get no `command.<name>.*` stats, so that
/// `/stats` lists exactly Envoy's names.
const BEYOND_ENVOY: &[&str] = &["dbsize"];

/// Every command name Envoy creates `command.<name>.*` stats for at start-up: all supported
/// commands except the locally answered ones, HELLO excepted (Envoy 1.40 lists its stats too).
pub fn stat_command_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = tables()
        .class
        .iter()
        .filter(|(n, k)| {
            (**k != CommandClass::Local || **n == "hello") && !BEYOND_ENVOY.contains(n)
        })
        .map(|(n, _)| *n)
        .collect();
    names.sort_unstable();
    names
}

/// The name Envoy records upstream per-command stats under (`redis_command_stats.cc`): the
/// command itself for simple, eval, sum, MGET and MSET commands, `unknown` for anything else.
pub fn upstream_stat_name(cmd: &str) -> &'static str {
    match tables().class.get_key_value(cmd) {
        Some((
            name,
            CommandClass::Simple
            | CommandClass::Eval
            | CommandClass::SumResult
            | CommandClass::Mget
            | CommandClass::Mset,
        )) => name,
        _ => "unknown",
    }
}

/// Lowercases an ASCII command name into `buf`, returning it as `&str` when it is short and
/// valid UTF-8 (every supported name is ASCII and shorter than the buffer).
pub fn lowercase_into<'a>(name: &[u8], buf: &'a mut [u8; 32]) -> Option<&'a str> {
    if name.len() > buf.len() {
        return None;
    }
    let out = &mut buf[..name.len()];
    for (o, b) in out.iter_mut().zip(name) {
        *o = b.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(class_of("get"), Some(CommandClass::Simple));
        assert_eq!(class_of("del"), Some(CommandClass::SumResult));
        assert_eq!(class_of("watch"), Some(CommandClass::Transaction));
        assert_eq!(class_of("dbsize"), Some(CommandClass::ClusterScope));
        assert!(!stat_command_names().contains(&"dbsize"));
        assert!(is_read("get"));
        assert!(is_read("xadd"));
        assert!(!is_read("set"));
        assert!(allowed_in_transaction("del"));
        assert!(!allowed_in_transaction("keys"));
        assert!(!allowed_in_transaction("eval"));
    }

    #[test]
    fn lowercase() {
        let mut buf = [0u8; 32];
        assert_eq!(lowercase_into(b"GeT", &mut buf), Some("get"));
        assert_eq!(lowercase_into(&[b'a'; 40], &mut buf), None);
    }
}
