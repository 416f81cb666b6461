//! Loopback tests: a real downstream client, the connection manager, and a tiny upstream.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use redvoy_config::model::{
    self, DiscoveryType, DnsLookupFamily, HttpRoute, HttpRouteAction, LbPolicy, PathMatch,
};
use redvoy_stats::Store;
use redvoy_upstream::{Cluster, Host};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{spawn_local, LocalSet};

use crate::{serve_connection, Hcm};

type Seen = Rc<RefCell<Vec<String>>>;

/// A tiny HTTP/1.1 upstream: records each raw request and answers by path.
async fn upstream() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Rc::default();
    let record = seen.clone();
    spawn_local(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            spawn_local(upstream_conn(s, record.clone()));
        }
    });
    (addr, seen)
}

async fn upstream_conn(mut s: TcpStream, seen: Seen) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut tmp = [0u8; 4096];
            let n = s.read(&mut tmp).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let lower = head.to_ascii_lowercase();
        let body_end = if let Some(i) = lower.find("content-length: ") {
            let n: usize = lower[i + 16..]
                .split("\r\n")
                .next()
                .unwrap()
                .parse()
                .unwrap();
            head_end + n
        } else if lower.contains("transfer-encoding: chunked") {
            loop {
                if let Some(p) = buf[head_end..].windows(5).position(|w| w == b"0\r\n\r\n") {
                    break head_end + p + 5;
                }
                let mut tmp = [0u8; 4096];
                let n = s.read(&mut tmp).await.unwrap();
                assert!(n > 0);
                buf.extend_from_slice(&tmp[..n]);
            }
        } else {
            head_end
        };
        while buf.len() < body_end {
            let mut tmp = [0u8; 4096];
            let n = s.read(&mut tmp).await.unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&tmp[..n]);
        }
        let raw: Vec<u8> = buf.drain(..body_end).collect();
        seen.borrow_mut()
            .push(String::from_utf8_lossy(&raw).to_string());
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        let reply: &[u8] = if path.ends_with("/slow") {
            tokio::time::sleep(Duration::from_secs(2)).await;
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        } else if path.ends_with("/reset") {
            return;
        } else if path.ends_with("/chunked") {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-up: 1\r\n\r\n3\r\nabc\r\n2;e=1\r\nde\r\n0\r\nt: 1\r\n\r\n"
        } else if path.ends_with("/close") {
            s.write_all(b"HTTP/1.1 200 OK\r\nfoo: bar\r\n\r\nclosedbody")
                .await
                .unwrap();
            return;
        } else if path.ends_with("/continue") {
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nServer: upstream\r\nDate: x\r\nConnection: keep-alive\r\n\r\nok"
        };
        s.write_all(reply).await.unwrap();
    }
}

fn cluster(name: &str, hosts: &[SocketAddr], store: &Store) -> Arc<Cluster> {
    let c = Cluster::new(
        model::Cluster {
            name: name.into(),
            discovery: DiscoveryType::Static,
            lb_policy: LbPolicy::RoundRobin,
            connect_timeout: Duration::from_millis(250),
            dns_refresh_rate: Duration::from_secs(5),
            dns_lookup_family: DnsLookupFamily::Auto,
            endpoints: Vec::new(),
            redis_protocol_options: None,
            use_hostname_for_hashing: false,
            eds: None,
            redis_cluster: None,
            circuit_breakers: Default::default(),
            healthy_panic_threshold: Default::default(),
            tcp_keepalive: None,
            transport_socket_matches: Default::default(),
            health_check: None,
            outlier_detection: None,
            ignore_health_on_host_removal: false,
            upstream_tls: None,
        },
        store,
    );
    c.set_hosts(
        hosts
            .iter()
            .map(|a| Arc::new(Host::new(*a, "", 1)))
            .collect(),
    );
    Arc::new(c)
}

fn route(prefix: &str, action: HttpRouteAction) -> HttpRoute {
    HttpRoute {
        path_match: PathMatch::Prefix(prefix.into()),
        action,
    }
}

fn to(cluster: &str, rewrite: Option<&str>, timeout_ms: u64) -> HttpRouteAction {
    HttpRouteAction::Cluster {
        cluster: cluster.into(),
        prefix_rewrite: rewrite.map(str::to_string),
        timeout: Duration::from_millis(timeout_ms),
    }
}

struct Harness {
    addr: SocketAddr,
    store: Store,
    seen: Seen,
}

/// An HCM listener (stat prefix `stats`) in front of the tiny upstream, like Istio's 15090.
async fn harness() -> Harness {
    let store = Store::new();
    let (up, seen) = upstream().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut clusters = HashMap::new();
    clusters.insert(
        "prometheus_stats",
        cluster("prometheus_stats", &[up], &store),
    );
    clusters.insert("dead", cluster("dead", &[dead], &store));
    clusters.insert("empty", cluster("empty", &[], &store));
    let config = model::HttpConnectionManager {
        stat_prefix: "stats".into(),
        virtual_hosts: vec![
            model::VirtualHost {
                name: "other".into(),
                domains: vec!["foo.com".into()],
                routes: vec![route(
                    "/",
                    HttpRouteAction::DirectResponse {
                        status: 200,
                        body: Some("other".into()),
                    },
                )],
            },
            model::VirtualHost {
                name: "backend".into(),
                domains: vec!["*".into()],
                routes: vec![
                    route("/stats/prometheus", to("prometheus_stats", None, 15_000)),
                    route("/rw/", to("prometheus_stats", Some("/x/"), 0)),
                    route("/timeout/", to("prometheus_stats", None, 200)),
                    route("/dead", to("dead", None, 15_000)),
                    route("/empty", to("empty", None, 15_000)),
                    route("/missing", to("missing", None, 15_000)),
                    route(
                        "/direct",
                        HttpRouteAction::DirectResponse {
                            status: 503,
                            body: None,
                        },
                    ),
                ],
            },
        ],
    };
    let hcm = Arc::new(Hcm::new(&config, &store));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let clusters = Rc::new(clusters);
    spawn_local(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let clusters = clusters.clone();
            spawn_local(serve_connection(
                redvoy_tls::Stream::Plain(s),
                hcm.clone(),
                move |name: &str| clusters.get(name).cloned(),
            ));
        }
    });
    Harness { addr, store, seen }
}

/// Reads one response: (status line + headers as text, decoded body).
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (String, String) {
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let mut tmp = [0u8; 4096];
        let n = s.read(&mut tmp).await.unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    buf.drain(..head_end);
    let mut body = Vec::new();
    if head.starts_with("HTTP/1.1 100") {
        return (head, String::new());
    }
    if let Some(i) = head.find("content-length: ") {
        let n: usize = head[i + 16..]
            .split("\r\n")
            .next()
            .unwrap()
            .parse()
            .unwrap();
        while buf.len() < n {
            let mut tmp = [0u8; 4096];
            let r = s.read(&mut tmp).await.unwrap();
            assert!(r > 0);
            buf.extend_from_slice(&tmp[..r]);
        }
        body = buf.drain(..n).collect();
    } else if head.contains("transfer-encoding: chunked") {
        loop {
            if let Some(p) = buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                if p == 0 || buf[p - 1] == b'\n' {
                    let raw: Vec<u8> = buf.drain(..p + 5).collect();
                    body = raw;
                    break;
                }
            }
            let mut tmp = [0u8; 4096];
            let r = s.read(&mut tmp).await.unwrap();
            assert!(r > 0);
            buf.extend_from_slice(&tmp[..r]);
        }
    }
    (head, String::from_utf8_lossy(&body).to_string())
}

async fn exchange(addr: SocketAddr, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    read_response(&mut s, &mut Vec::new()).await
}

fn lines(head: &str) -> Vec<&str> {
    head.trim_end().split("\r\n").collect()
}

fn stat(store: &Store, name: &str) -> u64 {
    store
        .value_of(name)
        .unwrap_or_else(|| panic!("no stat {name}"))
}

fn run(test: impl std::future::Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    LocalSet::new().block_on(&rt, test);
}

#[test]
fn forwards_with_envoy_headers_and_keeps_alive() {
    run(async {
        let h = harness().await;
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        let mut buf = Vec::new();
        for _ in 0..2 {
            s.write_all(b"GET /stats/prometheus HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\n\r\n")
                .await
                .unwrap();
            let (head, body) = read_response(&mut s, &mut buf).await;
            let l = lines(&head);
            assert_eq!(l[0], "HTTP/1.1 200 OK");
            assert_eq!(l[1], "content-length: 2");
            assert_eq!(l[2], "server: envoy");
            assert!(
                l[3].starts_with("date: ") && l[3].ends_with(" GMT"),
                "{head}"
            );
            assert!(l[4].starts_with("x-envoy-upstream-service-time: "));
            assert_eq!(l.len(), 5, "{head}");
            assert_eq!(body, "ok");
        }
        let seen = h.seen.borrow().clone();
        assert_eq!(seen.len(), 2);
        let req = &seen[0];
        assert!(req.starts_with(
            "GET /stats/prometheus HTTP/1.1\r\nhost: h\r\nuser-agent: t\r\nx-forwarded-proto: http\r\nx-request-id: "
        ));
        assert!(
            req.ends_with("\r\nx-envoy-expected-rq-timeout-ms: 15000\r\n\r\n"),
            "{req}"
        );
        drop(s);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(stat(&h.store, "http.stats.downstream_cx_total"), 1);
        assert_eq!(stat(&h.store, "http.stats.downstream_cx_active"), 0);
        assert_eq!(stat(&h.store, "http.stats.downstream_cx_destroy_remote"), 1);
        assert_eq!(stat(&h.store, "http.stats.downstream_rq_total"), 2);
        assert_eq!(stat(&h.store, "http.stats.downstream_rq_2xx"), 2);
        assert_eq!(stat(&h.store, "http.stats.downstream_rq_completed"), 2);
        assert_eq!(stat(&h.store, "http.stats.rq_total"), 2);
        assert_eq!(stat(&h.store, "http.stats.downstream_rq_active"), 0);
        assert_eq!(
            stat(&h.store, "cluster.prometheus_stats.upstream_rq_total"),
            2
        );
        assert!(stat(&h.store, "http.stats.downstream_cx_rx_bytes_total") > 0);
    });
}

#[test]
fn local_replies_match_envoy() {
    run(async {
        let h = harness().await;
        let (head, body) = exchange(h.addr, "GET /nope HTTP/1.1\r\nhost: a\r\n\r\n").await;
        let l = lines(&head);
        assert_eq!(l[0], "HTTP/1.1 404 Not Found");
        assert!(l[1].starts_with("date: "));
        assert_eq!(&l[2..], ["server: envoy", "content-length: 0"]);
        assert_eq!(body, "");

        let (head, body) = exchange(h.addr, "GET /empty HTTP/1.1\r\nhost: a\r\n\r\n").await;
        assert!(head.starts_with(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 19\r\ncontent-type: text/plain\r\ndate: "
        ));
        assert_eq!(body, "no healthy upstream");

        let (head, body) = exchange(h.addr, "GET /dead HTTP/1.1\r\nhost: a\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 98\r\n"));
        assert_eq!(
            body,
            "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
        );

        let (head, body) = exchange(h.addr, "GET /missing HTTP/1.1\r\nhost: a\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\ndate: "));
        assert!(head.ends_with("server: envoy\r\ncontent-length: 0\r\n\r\n"));
        assert_eq!(body, "");

        let (head, body) = exchange(h.addr, "GET /direct HTTP/1.1\r\nhost: a\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\ndate: "));
        assert_eq!(body, "");

        let (head, body) = exchange(h.addr, "GET /x HTTP/1.1\r\nhost: FOO.com\r\n\r\n").await;
        assert!(head
            .starts_with("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: text/plain\r\n"));
        assert_eq!(body, "other");

        // A body the router never read: Envoy closes the connection after replying.
        let (head, _) = exchange(
            h.addr,
            "POST /nope HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabc",
        )
        .await;
        assert!(
            head.ends_with("connection: close\r\ncontent-length: 0\r\n\r\n"),
            "{head}"
        );

        assert_eq!(stat(&h.store, "http.stats.no_route"), 2);
        assert_eq!(stat(&h.store, "http.stats.no_cluster"), 1);
        assert_eq!(stat(&h.store, "http.stats.rq_direct_response"), 2);
        assert_eq!(stat(&h.store, "cluster.empty.upstream_cx_none_healthy"), 1);
        assert_eq!(stat(&h.store, "cluster.dead.upstream_cx_connect_fail"), 1);
        assert_eq!(stat(&h.store, "http.stats.downstream_rq_5xx"), 4);
        assert_eq!(stat(&h.store, "http.stats.downstream_rq_4xx"), 2);
    });
}

#[test]
fn codec_errors_match_envoy() {
    run(async {
        let h = harness().await;
        let (head, body) = exchange(h.addr, "GARBAGE\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\n"));
        assert!(head.ends_with("server: envoy\r\nconnection: close\r\n\r\n"));
        assert_eq!(body, "Bad Request");

        let (head, _) = exchange(h.addr, "GET / HTTP/1.1\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\ndate: "));
        assert!(head.ends_with("connection: close\r\ncontent-length: 0\r\n\r\n"));

        let (head, body) = exchange(h.addr, "GET / HTTP/1.0\r\nhost: a\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 426 Upgrade Required\r\ncontent-length: 16\r\n"));
        assert_eq!(body, "Upgrade Required");

        let big = format!(
            "GET / HTTP/1.1\r\nhost: a\r\nx-big: {}\r\n\r\n",
            "a".repeat(70_000)
        );
        let (head, body) = exchange(h.addr, &big).await;
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("connection: close"));
        assert_eq!(body, "Request Header Fields Too Large");

        let (head, _) = exchange(
            h.addr,
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
    });
}

#[test]
fn bodies_rewrite_and_reframing() {
    run(async {
        let h = harness().await;
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        let mut buf = Vec::new();
        // Chunked request body with an extension and a trailer; prefix rewrite.
        s.write_all(
            b"POST /rw/a?q=1 HTTP/1.1\r\nhost: a\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n3;x=1\r\nabc\r\n0\r\nt: 1\r\n\r\n",
        )
        .await
        .unwrap();
        let (head, body) = read_response(&mut s, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(body, "ok");
        let seen = h.seen.borrow().last().unwrap().clone();
        assert!(
            seen.starts_with("POST /x/a?q=1 HTTP/1.1\r\nhost: a\r\nx-forwarded-proto: http\r\n")
        );
        assert!(seen.ends_with(
            "\r\nx-envoy-original-path: /rw/a?q=1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        ), "{seen}");
        assert!(!seen.contains("x-envoy-expected-rq-timeout-ms"));

        // Content-Length body, with Expect: 100-continue answered by the proxy.
        s.write_all(b"PUT /rw/continue HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n")
            .await
            .unwrap();
        let (head, _) = read_response(&mut s, &mut buf).await;
        assert_eq!(head, "HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(b"hello").await.unwrap();
        let (head, _) = read_response(&mut s, &mut buf).await;
        assert!(
            head.starts_with("HTTP/1.1 201 Created\r\ncontent-length: 0\r\n"),
            "{head}"
        );
        let seen = h.seen.borrow().last().unwrap().clone();
        assert!(seen.contains("content-length: 5\r\n") && !seen.contains("expect"));
        assert!(seen.ends_with("\r\n\r\nhello"));

        // A chunked response is re-chunked (trailers dropped).
        s.write_all(b"GET /rw/chunked HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut s, &mut buf).await;
        let l = lines(&head);
        assert_eq!(l[1], "x-up: 1");
        assert_eq!(l.last().copied(), Some("transfer-encoding: chunked"));
        assert_eq!(body, "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");

        // A close-delimited response becomes chunked; the downstream connection stays up.
        s.write_all(b"GET /rw/close HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut s, &mut buf).await;
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\nfoo: bar\r\n"),
            "{head}"
        );
        assert!(head.ends_with("transfer-encoding: chunked\r\n\r\n"));
        assert_eq!(body, "a\r\nclosedbody\r\n0\r\n\r\n");

        // `connection: close` from the client: answered, then the connection closes.
        s.write_all(b"GET /stats/prometheus HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut s, &mut buf).await;
        assert!(head.contains("\r\nconnection: close\r\n"));
        assert_eq!(body, "ok");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty() && buf.is_empty());
    });
}

#[test]
fn upstream_timeout_and_reset() {
    run(async {
        let h = harness().await;
        let started = std::time::Instant::now();
        let (head, body) = exchange(h.addr, "GET /timeout/slow HTTP/1.1\r\nhost: a\r\n\r\n").await;
        assert!(started.elapsed() < Duration::from_millis(1500));
        assert!(head.starts_with("HTTP/1.1 504 Gateway Timeout\r\ncontent-length: 24\r\n"));
        assert_eq!(body, "upstream request timeout");
        assert_eq!(
            stat(&h.store, "cluster.prometheus_stats.upstream_rq_timeout"),
            1
        );
        let seen = h.seen.borrow().last().unwrap().clone();
        assert!(seen.contains("x-envoy-expected-rq-timeout-ms: 200\r\n"));

        let (head, body) = exchange(h.addr, "GET /rw/reset HTTP/1.1\r\nhost: a\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 95\r\n"));
        assert_eq!(
            body,
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
        );
    });
}
