//! The admin endpoints over real TCP, with a raw HTTP/1.1 client, checked against what Envoy
//! 1.40 answers.

// Test helpers outside `#[test]` functions are not covered by `allow-unwrap-in-tests`.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redvoy_admin::{serve, AdminState};
use redvoy_stats::{HistogramUnit, Store};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Admin {
    addr: SocketAddr,
    stats: Store,
    ready: Arc<AtomicBool>,
    quit: watch::Receiver<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start() -> Admin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Store::new();
    stats.counter("redis.egress.command.get.total").add(4);
    stats.counter("redis.egress.command.getbit.total");
    stats.gauge("server.live").set(1);
    stats.gauge("server.state").set(0);
    stats.counter("listener_manager.workers_started").inc();
    stats
        .histogram(
            "redis.egress.command.get.latency",
            HistogramUnit::Milliseconds,
        )
        .record(92);
    let ready = Arc::new(AtomicBool::new(false));
    let (shutdown, quit) = watch::channel(false);
    let state = AdminState {
        stats: stats.clone(),
        ready: Arc::clone(&ready),
        shutdown,
    };
    let task = tokio::spawn(serve(listener, state));
    Admin {
        addr,
        stats,
        ready,
        quit,
        task,
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response framed by content-length (`head` = response to HEAD, no body).
async fn read_reply(r: &mut BufReader<TcpStream>, head: bool) -> Reply {
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(": ").unwrap();
        headers.push((k.to_owned(), v.to_owned()));
    }
    let mut reply = Reply {
        status,
        headers,
        body: String::new(),
    };
    if !head {
        let n: usize = reply.header("content-length").unwrap().parse().unwrap();
        let mut body = vec![0; n];
        r.read_exact(&mut body).await.unwrap();
        reply.body = String::from_utf8(body).unwrap();
    }
    reply
}

async fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(addr).await.unwrap())
}

async fn request(addr: SocketAddr, method: &str, target: &str) -> Reply {
    let mut c = connect(addr).await;
    let raw = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    c.get_mut().write_all(raw.as_bytes()).await.unwrap();
    read_reply(&mut c, method == "HEAD").await
}

async fn get(addr: SocketAddr, target: &str) -> Reply {
    request(addr, "GET", target).await
}

const TEXT: &str = "text/plain; charset=UTF-8";

#[tokio::test]
async fn ready_follows_the_flag() {
    let a = start().await;
    let r = get(a.addr, "/ready").await;
    assert_eq!((r.status, r.body.as_str()), (503, "PRE_INITIALIZING\n"));
    assert_eq!(r.header("content-type"), Some(TEXT));
    a.ready.store(true, Ordering::Relaxed);
    let r = get(a.addr, "/ready?x=1").await;
    assert_eq!((r.status, r.body.as_str()), (200, "LIVE\n"));
    assert_eq!(r.header("content-type"), Some(TEXT));
    assert_eq!(r.header("cache-control"), Some("no-cache, max-age=0"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(r.header("date").is_some_and(|d| d.ends_with(" GMT")));
}

#[tokio::test]
async fn stats_text_with_pilot_agent_query() {
    let a = start().await;
    // Exactly as pilot-agent sends it: nothing percent-encoded.
    let r = get(
        a.addr,
        r"/stats?usedonly&filter=^(server\.state|listener_manager\.workers_started)",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(TEXT));
    assert_eq!(
        r.body,
        "listener_manager.workers_started: 1\nserver.state: 0\n"
    );

    let r = get(a.addr, "/stats?filter=%5Eredis%5C.egress%5C.command%5C.get").await;
    assert_eq!(
        r.body,
        "redis.egress.command.get.total: 4\n\
         redis.egress.command.getbit.total: 0\n\
         redis.egress.command.get.latency: No recorded values\n"
    );
    let r = get(a.addr, "/stats?usedonly&filter=command").await;
    assert_eq!(r.body, "redis.egress.command.get.total: 4\n");

    a.stats.flush();
    let r = get(a.addr, "/stats?usedonly&filter=latency").await;
    assert!(
        r.body.starts_with(
            "redis.egress.command.get.latency: P0(92.5,92.5) P25(92.5,92.5) P50(92.5,92.5)"
        ),
        "{}",
        r.body
    );
    let r = get(a.addr, "/stats?filter=nothing-matches").await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
}

#[tokio::test]
async fn stats_json() {
    let a = start().await;
    let r = get(a.addr, "/stats?format=json&filter=^server").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.body,
        r#"{"stats":[{"name":"server.live","value":1},{"name":"server.state","value":0}]}"#
    );
    let r = get(a.addr, "/stats?format=json&filter=nothing").await;
    assert_eq!(r.body, r#"{"stats":[]}"#);
}

#[tokio::test]
async fn stats_errors() {
    let a = start().await;
    let r = get(a.addr, "/stats?filter=(").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some(TEXT));
    assert!(r.body.starts_with("Invalid re2 regex: "), "{}", r.body);
    let r = get(a.addr, "/stats?format=bogus").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        "usage: /stats?format=(html|active-html|json|prometheus|text)\n\n"
    );
}

#[tokio::test]
async fn quitquitquit_needs_post() {
    let mut a = start().await;
    let r = get(a.addr, "/quitquitquit").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("content-type"), Some(TEXT));
    assert_eq!(r.body, "Method GET not allowed, POST required.");
    assert!(!*a.quit.borrow());

    let r = request(a.addr, "POST", "/quitquitquit").await;
    assert_eq!((r.status, r.body.as_str()), (200, "OK\n"));
    tokio::time::timeout(Duration::from_secs(5), a.quit.wait_for(|q| *q))
        .await
        .unwrap()
        .unwrap();
    let served = tokio::time::timeout(Duration::from_secs(5), a.task)
        .await
        .unwrap()
        .unwrap();
    assert!(served.is_ok(), "serve returns once shutdown is requested");
}

#[tokio::test]
async fn unknown_path_is_404_with_envoys_help() {
    let a = start().await;
    let help = get(a.addr, "/help").await;
    assert_eq!(help.status, 200);
    assert!(help
        .body
        .starts_with("admin commands are:\n  /: Admin home page\n"));
    assert!(help
        .body
        .contains("  /quitquitquit (POST): exit the server\n"));
    for path in ["/nonexistent", "/stats/", "/Ready"] {
        let r = get(a.addr, path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.header("content-type"), Some(TEXT));
        assert_eq!(r.body, format!("invalid path. {}", help.body));
    }
}

#[tokio::test]
async fn keep_alive_pipelining_and_head() {
    let a = start().await;
    a.ready.store(true, Ordering::Relaxed);
    let mut c = connect(a.addr).await;
    // Two pipelined requests and a chunked POST body that must be consumed, then HEAD.
    c.get_mut()
        .write_all(
            b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /stats?filter=^server.live HTTP/1.1\r\nHost: a\r\n\r\n\
              POST /ready HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
              HEAD /ready HTTP/1.1\r\n\r\n",
        )
        .await
        .unwrap();
    assert_eq!(read_reply(&mut c, false).await.body, "LIVE\n");
    assert_eq!(read_reply(&mut c, false).await.body, "server.live: 1\n");
    assert_eq!(read_reply(&mut c, false).await.body, "LIVE\n");
    let head = read_reply(&mut c, true).await;
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("5"))
    );
    // Still open: one more request with a content-length body, then close.
    c.get_mut()
        .write_all(b"PUT /ready HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nxy")
        .await
        .unwrap();
    let last = read_reply(&mut c, false).await;
    assert_eq!(last.body, "LIVE\n");
    assert_eq!(last.header("connection"), Some("close"));
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "server closed after Connection: close");
}

#[tokio::test]
async fn bad_requests_get_an_answer_and_a_close() {
    let a = start().await;
    let mut c = connect(a.addr).await;
    let big = format!(
        "GET /ready HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    // The server may stop reading once the head is too large; a failed write is fine.
    let _ = c.get_mut().write_all(big.as_bytes()).await;
    assert_eq!(read_reply(&mut c, false).await.status, 431);

    let mut c = connect(a.addr).await;
    c.get_mut().write_all(b"GARBAGE\r\n\r\n").await.unwrap();
    let r = read_reply(&mut c, false).await;
    assert_eq!(r.status, 400);
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());

    // The server is still serving others.
    assert_eq!(get(a.addr, "/ready").await.status, 503);
}
