//! The command splitter and router on arbitrary command arrays, through three redis_proxy
//! filters that between them use prefix routes (prefix removal, case-insensitive matching, a
//! key formatter, a route to a cluster that does not exist), request mirroring, hash tags,
//! downstream AUTH, delay and error faults, command stats, a Redis Cluster with redirection,
//! and RING_HASH and MAGLEV clusters. Each upstream request gets a reply the input chooses
//! (MOVED/ASK/CLUSTERDOWN, scan pages, arrays, RESP3 types, failures). Checked: no panic; the
//! client's bytes are whole RESP replies; unless the client quit or sent garbage, every
//! request got exactly one reply and none is left active.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use redvoy_config::{load_bootstrap, LoadOptions};
use redvoy_proxy::fuzzing::{command_names, Harness};

const PROXY: &str = "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy";

fn bootstrap() -> String {
    let listener = |name: &str, port: u16, body: &str| {
        format!(
            "  - name: {name}\n    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.redis_proxy\n        typed_config:\n          \"@type\": {PROXY}\n          stat_prefix: {name}\n{body}"
        )
    };
    let indent = |text: &str| -> String {
        text.lines().map(|l| format!("          {l}\n")).collect()
    };
    let a = indent(
        r#"settings: {op_timeout: 1s, enable_hashtagging: true}
downstream_auth_password: {inline_string: secret}
prefix_routes:
  routes:
  - prefix: "ab"
    remove_prefix: true
    cluster: maglev
    request_mirror_policy: [{cluster: ring, exclude_read_commands: true}]
  - prefix: "x"
    cluster: nowhere
  catch_all_route: {cluster: ring}
faults:
- fault_type: DELAY
  fault_enabled: {default_value: {numerator: 100, denominator: HUNDRED}}
  delay: 2s
  commands: [get]
- fault_type: ERROR
  fault_enabled: {default_value: {numerator: 100, denominator: HUNDRED}}
  commands: [incr]"#,
    );
    let b = indent(
        r#"settings: {op_timeout: 1s, enable_command_stats: true, max_buffer_size_before_flush: 1024}
custom_commands: [json.get]
prefix_routes:
  case_insensitive: true
  routes:
  - prefix: "AB"
    cluster: ring
    key_formatter: "{%KEY%}"
  catch_all_route: {cluster: maglev}"#,
    );
    let c = indent(
        r#"settings: {op_timeout: 1s, enable_redirection: true, read_policy: PREFER_REPLICA}
prefix_routes:
  catch_all_route: {cluster: redis_cluster}"#,
    );
    let hosts = |ports: &[u16]| -> String {
        ports
            .iter()
            .map(|p| format!("        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {p}}}}}}}\n"))
            .collect()
    };
    let cluster = |name: &str, lb: &str, ports: &[u16]| {
        format!(
            "  - name: {name}\n    connect_timeout: 1s\n    type: STATIC\n    lb_policy: {lb}\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n{}",
            hosts(ports)
        )
    };
    format!(
        "static_resources:\n  listeners:\n{}{}{}  clusters:\n{}{}  - name: redis_cluster\n    connect_timeout: 1s\n    lb_policy: CLUSTER_PROVIDED\n    cluster_type:\n      name: envoy.clusters.redis\n      typed_config:\n        \"@type\": type.googleapis.com/google.protobuf.Struct\n        value: {{cluster_refresh_rate: 10s}}\n    load_assignment:\n      cluster_name: redis_cluster\n      endpoints:\n      - lb_endpoints:\n{}",
        listener("a", 1, &a),
        listener("b", 2, &b),
        listener("c", 3, &c),
        cluster("ring", "RING_HASH", &[7001, 7002, 7003]),
        cluster("maglev", "MAGLEV", &[7004, 7005]),
        hosts(&[7006]),
    )
}

/// Commands the splitter answers itself or treats apart, beside its table.
const LOCAL: &[&str] = &[
    "auth", "ping", "echo", "quit", "hello", "multi", "exec", "discard", "watch", "unwatch",
    "select", "client", "cluster", "scan", "info", "time", "command", "dbsize", "keys", "role",
    "readonly", "readwrite", "config", "eval", "evalsha", "script", "publish", "subscribe",
    "json.get",
];

/// Arguments a byte can stand for: keys on each route, hash tags, numbers and options.
const ARGS: &[&[u8]] = &[
    b"k", b"ab:k", b"AB:k", b"xk", b"{t}1", b"{t}2", b"{}", b"secret", b"0", b"1", b"-1",
    b"3", b"100", b"*", b"MATCH", b"COUNT", b"NX", b"EX", b"WITHSCORES", b"default", b"2",
    b"SETNAME", b"GETNAME", b"SLOTS", b"KEYSLOT", b"INFO", b"LIST", b"ID", b"TYPE", b"v",
];

fn replies(byte: u8, more: &mut dyn FnMut() -> u8) -> Option<Bytes> {
    let fixed: &[u8] = match byte % 26 {
        0 => b"+OK\r\n",
        1 => b":1\r\n",
        2 => b":0\r\n",
        3 => b"$-1\r\n",
        4 => b"$3\r\nabc\r\n",
        5 => b"-ERR boom\r\n",
        6 => b"-MOVED 3999 127.0.0.1:7006\r\n",
        7 => b"-ASK 3999 127.0.0.1:7009\r\n",
        8 => b"-MOVED 12 127.0.0.1:7007\r\n",
        9 => b"-CLUSTERDOWN The cluster is down\r\n",
        10 => b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n",
        11 => b"*2\r\n$2\r\n17\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n",
        12 => b"*-1\r\n",
        13 => b"*0\r\n",
        14 => b"+QUEUED\r\n",
        15 => b"*3\r\n:1\r\n:2\r\n$-1\r\n",
        16 => return None,
        17 => b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        18 => b"%1\r\n+a\r\n:1\r\n",
        19 => b"_\r\n",
        20 => b",1.5\r\n",
        21 => b"#t\r\n",
        22 => b"-NOAUTH Authentication required.\r\n",
        23 => b"*2\r\n*1\r\n:1\r\n+x\r\n",
        24 => b"-MOVED bad\r\n",
        _ => {
            // Bytes from the input: anything an upstream could send.
            let len = usize::from(more() % 24);
            let bytes: Vec<u8> = (0..len).map(|_| more()).collect();
            return Some(Bytes::from(bytes));
        }
    };
    Some(Bytes::from_static(fixed))
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

/// Client bytes: mostly RESP arrays of known command names and arguments, sometimes raw.
fn requests(input: &mut Input, names: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = input.byte() {
        if b >= 0xF0 {
            let len = usize::from(input.byte().unwrap_or(0) % 32);
            out.extend_from_slice(input.take(len));
            continue;
        }
        let argc = 1 + usize::from(b & 7);
        let mut args: Vec<Vec<u8>> = Vec::with_capacity(argc);
        let name = names[usize::from(input.byte().unwrap_or(0)) % names.len()];
        args.push(if b & 8 != 0 {
            name.to_uppercase().into_bytes()
        } else {
            name.as_bytes().to_vec()
        });
        for _ in 1..argc {
            let a = input.byte().unwrap_or(0);
            args.push(if a < 0xE0 {
                ARGS[usize::from(a) % ARGS.len()].to_vec()
            } else {
                let len = usize::from(a - 0xE0);
                input.take(len).to_vec()
            });
        }
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(&arg);
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// The line starting at `at` (without CRLF) and where the next one starts.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len = buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[at..at + len], at + len + 2))
}

/// Where the RESP2 or RESP3 frame at `at` ends; `None` when it is broken or cut short.
fn frame_end(buf: &[u8], at: usize, depth: usize) -> Option<usize> {
    if depth > 64 {
        return None;
    }
    let kind = *buf.get(at)?;
    let (text, next) = line(buf, at + 1)?;
    let number = || -> Option<i64> { std::str::from_utf8(text).ok()?.parse().ok() };
    match kind {
        b'+' | b'-' | b':' | b',' | b'#' | b'(' | b'_' => Some(next),
        b'$' | b'=' | b'!' => match number()? {
            -1 => Some(next),
            n if n >= 0 => {
                let end = next + n as usize;
                (buf.get(end..end + 2)? == b"\r\n").then_some(end + 2)
            }
            _ => None,
        },
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = number()?;
            if n == -1 {
                return Some(next);
            }
            let items = usize::try_from(n).ok()? * if matches!(kind, b'%' | b'|') { 2 } else { 1 };
            let mut end = next;
            for _ in 0..items {
                end = frame_end(buf, end, depth + 1)?;
            }
            Some(end)
        }
        _ => None,
    }
}

static HARNESS: OnceLock<(Harness, Vec<&'static str>)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (harness, names) = HARNESS.get_or_init(|| {
        let opts = LoadOptions {
            config_yaml: Some(bootstrap()),
            ..LoadOptions::default()
        };
        let model = load_bootstrap(&opts).expect("the fuzz bootstrap loads");
        let harness = Harness::new(&model).expect("the fuzz bootstrap builds its filters");
        let mut names = command_names();
        names.extend_from_slice(LOCAL);
        (harness, names)
    });
    let [which, split, rest @ ..] = data else {
        return;
    };
    let split = usize::from(*split) * rest.len() / 256;
    let (client, upstream) = rest.split_at(split);
    let client = requests(&mut Input(client), names);
    let mut upstream = Input(upstream);
    let mut next = move || {
        let byte = upstream.byte().unwrap_or(0);
        replies(byte, &mut || upstream.byte().unwrap_or(0))
    };
    let run = harness.run(usize::from(*which), &client, &mut next);
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        // Reproducing a crash: what went in and what came out.
        eprintln!("filter {which}\nclient {:?}\n{run:?}", Bytes::from(client.clone()));
        eprintln!("output {:?}", Bytes::from(run.output.clone()));
    }
    // What the client reads is whole replies (RESP3 ones after HELLO 3).
    let mut frames = 0u64;
    let mut at = 0;
    while at < run.output.len() {
        match frame_end(&run.output, at, 0) {
            Some(end) => at = end,
            None => panic!("the client would read a broken reply at byte {at}"),
        }
        frames += 1;
    }
    if !run.closed && run.unanswered == 0 {
        assert_eq!(frames, run.dispatched, "one reply per request");
        assert_eq!(run.rq_active, 0, "downstream_rq_active after every reply");
    }
});
