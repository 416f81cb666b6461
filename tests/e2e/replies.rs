//! Oracle comparison: the replies to unsupported, malformed and wrong-arity commands.
//!
//! Each case runs on a fresh connection behind one redis-server: the case's bytes are written,
//! followed (for most cases) by a sentinel `ECHO SENTINEL`; everything read before the
//! sentinel's reply is the case's observation, together with whether the connection stayed in
//! sync, was closed, or went quiet. Observations must be byte-identical on every target, and
//! equal the expectation recorded from Envoy 1.40 where the proxy generates the reply.
//!
//! `REDVOY_OBSERVE=1` prints each target's observations as table rows (to record new cases).

use std::time::Duration;

use redvoy_test_util::{
    encode_command, escape, same_on_all_targets, simple_bootstrap, Proxy, ReadOutcome, RedisServer,
    RespClient, Rows, Target,
};

use crate::targets;

/// Sentinel command written after a case; its reply marks the end of the case's replies.
const SENTINEL: &[u8] = b"*2\r\n$4\r\nECHO\r\n$8\r\nSENTINEL\r\n";
const SENTINEL_REPLY: &[u8] = b"$8\r\nSENTINEL\r\n";
/// How long a case may take to answer before the connection counts as quiet.
const CASE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait for "no reply" in cases that expect silence.
const QUIET_TIMEOUT: Duration = Duration::from_millis(500);

/// One row of the table.
struct Case {
    name: &'static str,
    send: Vec<u8>,
    /// Follow with the sentinel (false for cases that leave the parser mid-frame).
    sentinel: bool,
    /// Expected observation (`<escaped bytes> | <open|closed|quiet>`), as recorded on
    /// Envoy 1.40; `None` when the reply comes from Redis (then only targets are compared).
    expect: Option<&'static str>,
}

fn cmds(commands: &[&[&str]]) -> Vec<u8> {
    commands.iter().flat_map(|c| encode_command(c)).collect()
}

fn case(name: &'static str, commands: &[&[&str]], expect: Option<&'static str>) -> Case {
    Case {
        name,
        send: cmds(commands),
        sentinel: true,
        expect,
    }
}

fn raw(name: &'static str, bytes: &[u8], sentinel: bool, expect: Option<&'static str>) -> Case {
    Case {
        name,
        send: bytes.to_vec(),
        sentinel,
        expect,
    }
}

/// The table. Expectations were recorded by running this file against Envoy 1.40.
fn cases() -> Vec<Case> {
    vec![
        // --- unsupported commands: name as typed, first argument only, trailing space
        case("unknown bare", &[&["FOO"]], Some("-ERR unknown command 'FOO', with args beginning with: \\r\\n | open")),
        case("unknown with args", &[&["foo", "bar", "baz"]], Some("-ERR unknown command 'foo', with args beginning with: bar\\r\\n | open")),
        case("unknown mixed case", &[&["FoO", "Bar"]], Some("-ERR unknown command 'FoO', with args beginning with: Bar\\r\\n | open")),
        case("unknown empty arg", &[&["FOO", ""]], Some("-ERR unknown command 'FOO', with args beginning with: \\r\\n | open")),
        // A line break quoted from the client is written as spaces (else the reply would end early).
        case("unknown CRLF in arg", &[&["FOO", "a\r\nb"]], Some("-ERR unknown command 'FOO', with args beginning with: a  b\\r\\n | open")),
        case("cluster CRLF in subcommand", &[&["CLUSTER", "a\rb\n"]], Some("-ERR cluster subcommand 'a b ' is not supported\\r\\n | open")),
        case("COMMAND", &[&["COMMAND"]], Some("-ERR unknown command 'COMMAND', with args beginning with: \\r\\n | open")),
        case("MONITOR", &[&["MONITOR"]], Some("-ERR unknown command 'MONITOR', with args beginning with: \\r\\n | open")),
        case("SUBSCRIBE ch", &[&["SUBSCRIBE", "ch"]], Some("-ERR unknown command 'SUBSCRIBE', with args beginning with: ch\\r\\n | open")),
        case("BLPOP k 0", &[&["BLPOP", "k", "0"]], Some("-ERR unknown command 'BLPOP', with args beginning with: k\\r\\n | open")),
        // --- arity
        case("GET bare", &[&["GET"]], Some("-invalid request\\r\\n | open")),
        case("get bare lowercase", &[&["get"]], Some("-invalid request\\r\\n | open")),
        case("DEL bare", &[&["DEL"]], Some("-invalid request\\r\\n | open")),
        case("MGET bare", &[&["MGET"]], Some("-invalid request\\r\\n | open")),
        case("MSET bare", &[&["MSET"]], Some("-invalid request\\r\\n | open")),
        case("EXISTS bare", &[&["EXISTS"]], Some("-invalid request\\r\\n | open")),
        case("AUTH bare", &[&["AUTH"]], Some("-invalid request\\r\\n | open")),
        case("CLUSTER bare", &[&["CLUSTER"]], Some("-invalid request\\r\\n | open")),
        case("ECHO bare", &[&["ECHO"]], Some("-invalid request\\r\\n | open")),
        case("ECHO a b", &[&["ECHO", "a", "b"]], Some("-invalid request\\r\\n | open")),
        case("KEYS bare", &[&["KEYS"]], Some("-invalid request\\r\\n | open")),
        case("CONFIG bare", &[&["CONFIG"]], Some("-invalid request\\r\\n | open")),
        case("OBJECT bare", &[&["OBJECT"]], Some("-invalid request\\r\\n | open")),
        case("OBJECT encoding", &[&["OBJECT", "encoding"]], Some("-wrong number of arguments for 'OBJECT' command\\r\\n | open")),
        case("INFO.SHARD bare", &[&["INFO.SHARD"]], Some("-invalid request\\r\\n | open")),
        case("INFO.SHARD x", &[&["INFO.SHARD", "x"]], Some("-ERR invalid shard_id - must be a numeric shard index\\r\\n | open")),
        case("INFO.SHARD 9", &[&["INFO.SHARD", "9"]], Some("-ERR shard_id 9 out of range (0-0)\\r\\n | open")),
        case("EVAL s", &[&["EVAL", "s"]], Some("-wrong number of arguments for 'EVAL' command\\r\\n | open")),
        case("EVAL s 0", &[&["EVAL", "s", "0"]], Some("-wrong number of arguments for 'EVAL' command\\r\\n | open")),
        case("eval s 0 lowercase", &[&["eval", "s", "0"]], Some("-wrong number of arguments for 'eval' command\\r\\n | open")),
        case("EVALSHA x 0", &[&["EVALSHA", "x", "0"]], Some("-wrong number of arguments for 'EVALSHA' command\\r\\n | open")),
        case("MSET odd", &[&["MSET", "a"]], Some("-wrong number of arguments for 'MSET' command\\r\\n | open")),
        case("mset odd lowercase", &[&["mset", "a", "b", "c"]], Some("-wrong number of arguments for 'mset' command\\r\\n | open")),
        case("SCAN bare", &[&["SCAN"]], Some("-ERR wrong number of arguments for 'SCAN' command\\r\\n | open")),
        case("scan bare lowercase", &[&["scan"]], Some("-ERR wrong number of arguments for 'scan' command\\r\\n | open")),
        case("SET x (Redis arity error)", &[&["SET", "x"]], None),
        case("WATCH bare", &[&["WATCH"]], Some("-wrong number of arguments for 'WATCH' command\\r\\n | open")),
        // --- local commands
        case("PING", &[&["PING"]], Some("+PONG\\r\\n | open")),
        case("PING x", &[&["PING", "x"]], Some("+PONG\\r\\n | open")),
        case("ping lowercase", &[&["ping"]], Some("+PONG\\r\\n | open")),
        case("ECHO hello", &[&["ECHO", "hello"]], Some("$5\\r\\nhello\\r\\n | open")),
        case("ECHO empty", &[&["ECHO", ""]], Some("$0\\r\\n\\r\\n | open")),
        case("QUIT", &[&["QUIT"]], Some("+OK\\r\\n | closed")),
        case("QUIT then PING", &[&["QUIT"], &["PING"]], Some("+OK\\r\\n | closed")),
        case("HELLO", &[&["HELLO"]], Some("*14\\r\\n$6\\r\\nserver\\r\\n$17\\r\\nenvoy-redis-proxy\\r\\n$7\\r\\nversion\\r\\n$5\\r\\n6.0.0\\r\\n$5\\r\\nproto\\r\\n:2\\r\\n$2\\r\\nid\\r\\n:0\\r\\n$4\\r\\nmode\\r\\n$10\\r\\nstandalone\\r\\n$4\\r\\nrole\\r\\n$6\\r\\nmaster\\r\\n$7\\r\\nmodules\\r\\n*0\\r\\n | open")),
        case("CLIENT SETNAME x", &[&["CLIENT", "SETNAME", "x"]], Some("+OK\\r\\n | open")),
        case("CLIENT LIST", &[&["CLIENT", "LIST"]], Some("-ERR CLIENT subcommand 'LIST' is not supported by the proxy\\r\\n | open")),
        // --- CLUSTER subcommands
        case("CLUSTER RESET", &[&["CLUSTER", "RESET"]], Some("-ERR cluster subcommand 'reset' is not supported\\r\\n | open")),
        case("cluster foo lowercase", &[&["cluster", "foo"]], Some("-ERR cluster subcommand 'foo' is not supported\\r\\n | open")),
        case("CLUSTER INFO (forwarded)", &[&["CLUSTER", "INFO"]], None),
        // --- AUTH with no password configured
        case("AUTH secret, none configured", &[&["AUTH", "secret"]], Some("-ERR Client sent AUTH, but no password is set\\r\\n | open")),
        case("AUTH u p, none configured", &[&["AUTH", "u", "p"]], Some("-ERR Client sent AUTH, but no username-password pair is set\\r\\n | open")),
        case("AUTH a b c, none configured", &[&["AUTH", "a", "b", "c"]], Some("-ERR Client sent AUTH, but no password is set\\r\\n | open")),
        // --- transactions
        case("MULTI MULTI", &[&["MULTI"], &["MULTI"]], Some("+OK\\r\\n-MULTI calls can not be nested\\r\\n | open")),
        case("EXEC without MULTI", &[&["EXEC"]], Some("-EXEC without MULTI\\r\\n | open")),
        case("DISCARD without MULTI", &[&["DISCARD"]], Some("-DISCARD without MULTI\\r\\n | open")),
        case("MULTI EXEC (empty)", &[&["MULTI"], &["EXEC"]], Some("+OK\\r\\n*0\\r\\n | open")),
        case("MULTI DISCARD (empty)", &[&["MULTI"], &["DISCARD"]], Some("+OK\\r\\n+OK\\r\\n | open")),
        case("MULTI KEYS", &[&["MULTI"], &["KEYS", "*"]], Some("+OK\\r\\n-'KEYS' command is not supported within transaction\\r\\n | open")),
        case("MULTI eval", &[&["MULTI"], &["eval", "return 1", "1", "k"]], Some("+OK\\r\\n-'eval' command is not supported within transaction\\r\\n | open")),
        case("MULTI SCAN", &[&["MULTI"], &["SCAN", "0"]], Some("+OK\\r\\n-'SCAN' command is not supported within transaction\\r\\n | open")),
        case("MULTI PING", &[&["MULTI"], &["PING"]], Some("+OK\\r\\n+PONG\\r\\n | open")),
        case("MULTI FOO", &[&["MULTI"], &["FOO"]], Some("+OK\\r\\n-ERR unknown command 'FOO', with args beginning with: \\r\\n | open")),
        case("MULTI UNWATCH", &[&["MULTI"], &["UNWATCH"]], Some("+OK\\r\\n+QUEUED\\r\\n | open")),
        case("UNWATCH alone", &[&["UNWATCH"]], Some("+OK\\r\\n | open")),
        // --- well-formed frames that are not commands: `invalid request`, connection kept
        raw("empty array *0", b"*0\r\n", true, Some("-invalid request\\r\\n | open")),
        raw("null array *-1", b"*-1\r\n", true, Some("-invalid request\\r\\n | open")),
        raw("integer element", b"*2\r\n$3\r\nGET\r\n:1\r\n", true, Some("-invalid request\\r\\n | open")),
        raw("null bulk element", b"*2\r\n$3\r\nGET\r\n$-1\r\n", true, Some("-invalid request\\r\\n | open")),
        raw("nested array", b"*1\r\n*1\r\n$4\r\nPING\r\n", true, Some("-invalid request\\r\\n | open")),
        raw("top-level integer", b":1\r\n", true, Some("-invalid request\\r\\n | open")),
        raw("top-level simple string", b"+PING\r\n", true, Some("-invalid request\\r\\n | open")),
        raw("top-level error", b"-ERR x\r\n", true, Some("-invalid request\\r\\n | open")),
        raw("top-level bulk", b"$4\r\nPING\r\n", true, Some("-invalid request\\r\\n | open")),
        // --- undecodable bytes: `downstream protocol error`, then close
        raw("bad type byte", b"!x\r\n", true, Some("-downstream protocol error\\r\\n | closed")),
        raw("bad array length", b"*x\r\n", true, Some("-downstream protocol error\\r\\n | closed")),
        raw("bad bulk length", b"*1\r\n$x\r\n", true, Some("-downstream protocol error\\r\\n | closed")),
        raw("bulk not followed by CRLF", b"*1\r\n$4\r\nPINGxx", true, Some("-downstream protocol error\\r\\n | closed")),
        raw("bulk length -2", b"*1\r\n$-2\r\n", true, Some("-downstream protocol error\\r\\n | closed")),
        // --- inline commands
        raw("inline PING", b"PING\r\n", true, Some("+PONG\\r\\n | open")),
        raw("inline lowercase with arg", b"echo hi\r\n", true, Some("$2\\r\\nhi\\r\\n | open")),
        raw("inline double quotes", b"ECHO \"a b\"\r\n", true, Some("$3\\r\\na b\\r\\n | open")),
        raw("inline single quotes", b"ECHO 'a b'\r\n", true, Some("$3\\r\\na b\\r\\n | open")),
        raw("inline escapes", b"ECHO \"\\x41\\n\\t\"\r\n", true, Some("$3\\r\\nA\\n\\t\\r\\n | open")),
        raw("inline unknown", b"FOO bar\r\n", true, Some("-ERR unknown command 'FOO', with args beginning with: bar\\r\\n | open")),
        raw("inline then RESP", b"PING\r\n*1\r\n$4\r\nPING\r\n", true, Some("+PONG\\r\\n+PONG\\r\\n | open")),
        raw("inline leading spaces", b"   PING\r\n", true, Some("+PONG\\r\\n | open")),
        raw("inline quoted command", b"\"PING\"\r\n", true, Some("+PONG\\r\\n | open")),
        raw("inline unbalanced double quote", b"GET \"abc\r\n", true, Some("-downstream protocol error\\r\\n | closed")),
        raw("inline unbalanced single quote", b"GET 'abc\r\n", true, Some("-downstream protocol error\\r\\n | closed")),
        raw("inline quote then char", b"ECHO \"a\"b\r\n", true, Some("-downstream protocol error\\r\\n | closed")),
    ]
}

/// Runs one case on a fresh connection and renders what came back.
fn observe(port: u16, case: &Case) -> String {
    let mut client = RespClient::connect(port);
    client.send_raw(&case.send);
    if case.sentinel {
        client.send_raw(SENTINEL);
    }
    let mut got = Vec::new();
    let timeout = if case.sentinel {
        CASE_TIMEOUT
    } else {
        QUIET_TIMEOUT
    };
    let state = loop {
        match client.read_outcome(timeout) {
            ReadOutcome::Frame { raw, .. } if raw == SENTINEL_REPLY => break "open",
            ReadOutcome::Frame { raw, .. } => got.extend_from_slice(&raw),
            ReadOutcome::Closed { pending } => {
                got.extend_from_slice(&pending);
                break "closed";
            }
            ReadOutcome::Timeout { pending } => {
                got.extend_from_slice(&pending);
                break "quiet";
            }
        }
    };
    format!("{} | {state}", escape(&got))
}

fn run_table(target: Target, redis: &RedisServer) -> Rows {
    redis.flushall();
    let proxy = Proxy::start(target, &simple_bootstrap("MAGLEV", &[redis.port()]), &[]);
    let observe_mode = std::env::var_os("REDVOY_OBSERVE").is_some();
    let mut rows = Vec::new();
    let mut mismatches = Vec::new();
    for case in cases() {
        let got = observe(proxy.port(), &case);
        if observe_mode {
            eprintln!("OBSERVED {target} {:?} => {:?}", case.name, got);
        }
        if let Some(expect) = case.expect {
            if got != expect {
                mismatches.push(format!(
                    "  {}\n    expected {expect}\n    got      {got}",
                    case.name
                ));
            }
        }
        rows.push((case.name.to_string(), got));
    }
    assert!(
        mismatches.is_empty(),
        "{target}: {} case(s) differ from the Envoy 1.40 table:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    rows
}

#[test]
fn unsupported_malformed_and_wrong_arity_replies_match_envoy() {
    let redis = RedisServer::start();
    same_on_all_targets(&targets(), |target| run_table(target, &redis));
}

/// A deliberate difference from Envoy 1.40, which never answers an inline command ended by a
/// bare `\n`: redvoy accepts it as Redis does (tools such as `nc` and telnet send it).
#[test]
fn inline_command_ended_by_bare_lf_is_answered() {
    let redis = RedisServer::start();
    for target in targets().into_iter().filter(|t| *t == Target::Redvoy) {
        let proxy = Proxy::start(target, &simple_bootstrap("MAGLEV", &[redis.port()]), &[]);
        let got = observe(proxy.port(), &raw("inline bare LF", b"PING\n", true, None));
        assert_eq!(got, "+PONG\\r\\n | open", "{target}");
    }
}

/// A deliberate difference from Envoy 1.40, which answers a blank inline line with
/// `-invalid request` (so `redis-cli --pipe` reports an error for a trailing empty line):
/// redvoy ignores it, as Redis does, and answers the next command.
#[test]
fn blank_inline_lines_are_ignored() {
    let redis = RedisServer::start();
    for target in targets().into_iter().filter(|t| *t == Target::Redvoy) {
        let proxy = Proxy::start(target, &simple_bootstrap("MAGLEV", &[redis.port()]), &[]);
        for (name, bytes) in [
            ("CRLF", &b"\r\n"[..]),
            ("bare LF", b"\n"),
            ("spaces", b"   \r\n"),
            ("blank lines around PING", b"\r\n\nPING\r\n\r\n"),
        ] {
            let got = observe(proxy.port(), &raw("blank", bytes, true, None));
            let expect = if name.contains("PING") {
                "+PONG\\r\\n | open"
            } else {
                " | open"
            };
            assert_eq!(got, expect, "{target}: {name}");
        }
        assert_eq!(proxy.stat("redis.redis.downstream_rq_total"), 5, "{target}");
    }
}

/// TIME's value moves, so its shape is checked instead of its bytes: two bulk strings, the
/// seconds and the *total* microseconds since the epoch (Envoy's quirk).
#[test]
fn time_is_seconds_and_total_microseconds() {
    let redis = RedisServer::start();
    for target in targets() {
        let proxy = Proxy::start(target, &simple_bootstrap("MAGLEV", &[redis.port()]), &[]);
        let reply = proxy.client().cmd(&["TIME"]);
        let items = reply
            .as_array()
            .unwrap_or_else(|| panic!("{target}: TIME -> {reply:?}"));
        assert_eq!(items.len(), 2, "{target}: TIME -> {reply:?}");
        let secs: u64 = items[0].text().unwrap().parse().unwrap();
        let micros: u64 = items[1].text().unwrap().parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            secs.abs_diff(now) < 60,
            "{target}: TIME seconds {secs} vs now {now}"
        );
        assert!(
            micros / 1_000_000 == secs || micros / 1_000_000 == secs + 1,
            "{target}: TIME micros {micros} vs secs {secs}"
        );
    }
}
