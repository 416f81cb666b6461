//! Envoy 1.40's command tables (`common/redis/supported_commands.h`): which handler serves a
//! command, which commands count as writes, which may be sent without arguments.

use rustc_hash::FxHashMap;
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

/// What the tables say about one supported command. The splitter looks a request's command
/// up once and carries this with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// Position in [`all`], for per-filter arrays indexed by command.
    pub id: usize,
    pub class: CommandClass,
    /// Envoy's `isReadCommand`: anything that is not in the write list.
    pub read: bool,
    /// Allowed with no argument besides its name.
    pub without_args: bool,
    /// Takes every argument as a key (MSET/MSETNX: every other one).
    pub multi_key: bool,
    /// The name Envoy records upstream per-command stats under (`redis_command_stats.cc`): the
    /// command itself for simple, eval, sum, MGET and MSET commands, `unknown` for anything
    /// else.
    pub upstream_stat: &'static str,
}

impl CommandSpec {
    /// A `custom_commands` entry: a simple read command without stats of its own upstream.
    pub fn custom(id: usize) -> Self {
        Self {
            id,
            class: CommandClass::Simple,
            read: true,
            without_args: false,
            multi_key: false,
            upstream_stat: "unknown",
        }
    }

    /// Whether the command may be queued inside MULTI (Envoy: simple, multi-key, transaction
    /// commands).
    pub fn allowed_in_transaction(&self) -> bool {
        matches!(self.class, CommandClass::Simple | CommandClass::Transaction) || self.multi_key
    }
}

struct Tables {
    /// FxHash, not SipHash: looked up once per request with names from a fixed list, so
    /// there is no hash flooding to defend against and SipHash was 2 % of a worker's time.
    by_name: FxHashMap<&'static str, CommandSpec>,
    /// Every command and its spec, indexed by `CommandSpec::id`.
    all: Vec<(&'static str, CommandSpec)>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut class: Vec<(&'static str, CommandClass)> =
            SIMPLE.iter().map(|c| (*c, CommandClass::Simple)).collect();
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
        class.extend_from_slice(fixed);
        let mut by_name = FxHashMap::default();
        let mut all = Vec::new();
        // Every name is listed once (a test checks it), so ids follow the lists' order.
        for (name, class) in class {
            let upstream_stat = match class {
                CommandClass::Simple
                | CommandClass::Eval
                | CommandClass::SumResult
                | CommandClass::Mget
                | CommandClass::Mset => name,
                _ => "unknown",
            };
            let spec = CommandSpec {
                id: all.len(),
                class,
                read: !WRITES.contains(&name),
                without_args: WITHOUT_MANDATORY_ARGS.contains(&name),
                multi_key: MULTI_KEY.contains(&name),
                upstream_stat,
            };
            by_name.insert(name, spec);
            all.push((name, spec));
        }
        Tables { by_name, all }
    })
}

/// The spec of a lowercased command name, `None` when Envoy does not support it.
pub fn lookup(cmd: &str) -> Option<&'static CommandSpec> {
    tables().by_name.get(cmd)
}

/// Every supported command and its spec, indexed by `CommandSpec::id`.
pub fn all() -> &'static [(&'static str, CommandSpec)] {
    &tables().all
}

/// Commands redvoy supports beyond Envoy 1.40. They get no `command.<name>.*` stats, so that
/// `/stats` lists exactly Envoy's names.
const BEYOND_ENVOY: &[&str] = &["dbsize"];

/// Every command name Envoy creates `command.<name>.*` stats for at start-up: all supported
/// commands except the locally answered ones, HELLO excepted (Envoy 1.40 lists its stats too).
pub fn stat_command_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = tables()
        .by_name
        .iter()
        .filter(|(n, s)| {
            (s.class != CommandClass::Local || **n == "hello") && !BEYOND_ENVOY.contains(n)
        })
        .map(|(n, _)| *n)
        .collect();
    names.sort_unstable();
    names
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

    fn class_of(cmd: &str) -> Option<CommandClass> {
        lookup(cmd).map(|s| s.class)
    }

    fn is_read(cmd: &str) -> bool {
        lookup(cmd).is_none_or(|s| s.read)
    }

    fn upstream_stat_name(cmd: &str) -> &'static str {
        lookup(cmd).map_or("unknown", |s| s.upstream_stat)
    }

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
        let allowed = |c| lookup(c).is_some_and(CommandSpec::allowed_in_transaction);
        assert!(allowed("del"));
        assert!(!allowed("keys"));
        assert!(!allowed("eval"));
        assert_eq!(upstream_stat_name("get"), "get");
        assert_eq!(upstream_stat_name("multi"), "unknown");
        let custom = CommandSpec::custom(7);
        assert_eq!(
            (custom.upstream_stat, custom.read, custom.id),
            ("unknown", true, 7)
        );
        // Each name once: ids are positions, and no list silently overrides another.
        assert_eq!(all().len(), tables().by_name.len());
        for (id, (name, spec)) in all().iter().enumerate() {
            assert_eq!(spec.id, id);
            assert_eq!(lookup(name), Some(spec));
        }
    }

    #[test]
    fn lowercase() {
        let mut buf = [0u8; 32];
        assert_eq!(lowercase_into(b"GeT", &mut buf), Some("get"));
        assert_eq!(lowercase_into(&[b'a'; 40], &mut buf), None);
    }
}
