//! The command splitter (Envoy's `command_splitter_impl`): one request becomes one upstream
//! command, a fan-out over keys or hosts, a transaction step or a local reply.

use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use redvoy_resp::{encode, Frame, RespValue};

use crate::cluster_scope;
use crate::pending::{
    error_value, split_scan_cursor, After, FragmentMerge, Outcome, INVALID_REQUEST, NOAUTH,
    NOPROTO, SCAN_HOSTS,
};
use crate::pool::ClusterPool;
use crate::request::{request_bytes, whole_request, Request};
use crate::resp3;
use crate::session_state::Session;
use crate::supported_commands::{self as commands, CommandClass};

impl Session {
    /// A request in any shape (inline, nested: what `Decoder::decode_command` did not turn
    /// into arguments).
    pub(crate) fn on_request(&mut self, frame: Frame) {
        // An empty inline line (a bare CRLF or LF, as `redis-cli --pipe` input files and
        // telnet users produce) is not a request: Redis ignores it, and so do we.
        if frame.raw.first() != Some(&b'*')
            && matches!(&frame.value, RespValue::Array(a) if a.is_empty())
        {
            return;
        }
        let Frame {
            raw,
            value,
            verbatim,
        } = frame;
        match value.into_args().filter(|a| !a.is_empty()) {
            Some(args) => self.on_command(&raw, &args, verbatim),
            None => {
                let stats = &self.filter.config.stats;
                stats.downstream_rq_total.inc();
                stats.downstream_rq_active.inc();
                stats.splitter_invalid_request.inc();
                self.push_ready(error_value(INVALID_REQUEST), None, true);
            }
        }
    }

    /// A request of one or more bulk strings: `raw` as received, `args` decoded from it.
    pub(crate) fn on_command(&mut self, raw: &Bytes, args: &[Bytes], verbatim: bool) {
        // An Rc clone (not the shared Arc) keeps the config borrowable while `self` is mutated.
        let filter = Rc::clone(&self.filter);
        let config = &filter.config;
        let stats = &config.stats;
        stats.downstream_rq_total.inc();
        stats.downstream_rq_active.inc();
        let mut lower = [0u8; 32];
        let owned;
        let cmd: &str = match commands::lowercase_into(&args[0], &mut lower) {
            Some(c) => c,
            None => {
                owned = String::from_utf8_lossy(&args[0]).to_lowercase();
                &owned
            }
        };
        if config.require_resp3
            && self.client.resp != 3
            && !matches!(cmd, "hello" | "auth" | "quit")
        {
            // `protocol_version: RESP3`: HELLO 3 first (a bare HELLO does not negotiate). As
            // in Envoy, the gate comes before the splitter, so an unknown command gets NOPROTO
            // too, and only this gate counts (a refused HELLO counts as a HELLO error).
            stats.downstream_rq_noproto.inc();
            self.push_ready(error_value(NOPROTO), None, true);
            return;
        }
        let Some(&command) = config.command(cmd) else {
            stats.splitter_unsupported_command.inc();
            // Redis discards a transaction in which a command was rejected.
            self.tx.aborted |= self.tx.active;
            let mut text = b"ERR unknown command '".to_vec();
            text.extend_from_slice(&args[0]);
            text.extend_from_slice(b"', with args beginning with: ");
            if let Some(first) = args.get(1) {
                text.extend_from_slice(first);
            }
            self.push_ready(RespValue::Error(Bytes::from(text)), None, true);
            return;
        };

        let class = command.spec.class;
        let shape = |resp: u8| (resp == 3).then(|| resp3::shape_for(cmd, args));
        self.resp3_shape.set(shape(self.client.resp));
        if cmd == "auth" {
            let reply = self.auth(args);
            self.push_ready(reply, None, false);
            return;
        }
        if cmd == "hello" {
            let reply = self.hello(args);
            // The reply is in the protocol HELLO chose.
            self.resp3_shape.set(shape(self.client.resp));
            // Envoy counts HELLO in `command.hello.*` (a refused one as an error).
            if let Some(cs) = command.stats.and_then(|i| stats.command_at(i)) {
                cs.total.inc();
            }
            let error = matches!(reply, RespValue::Error(_));
            self.push_ready(reply, command.stats, error);
            return;
        }
        if !self.authenticated {
            self.push_ready(error_value(NOAUTH), None, true);
            return;
        }
        match cmd {
            "client" => {
                let reply = self.client_command(args);
                self.push_ready(reply, None, false);
                return;
            }
            "ping" => {
                self.push_ready(RespValue::Simple(Bytes::from_static(b"PONG")), None, false);
                return;
            }
            "echo" => {
                let reply = if args.len() == 2 {
                    RespValue::Bulk(args[1].clone())
                } else {
                    error_value(INVALID_REQUEST)
                };
                self.push_ready(reply, None, false);
                return;
            }
            "time" => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                let reply = RespValue::Array(vec![
                    RespValue::Bulk(Bytes::from(now.as_secs().to_string())),
                    RespValue::Bulk(Bytes::from(now.as_micros().to_string())),
                ]);
                self.push_ready(reply, None, false);
                return;
            }
            "scan" if args.len() < 2 => {
                let text = format!(
                    "ERR wrong number of arguments for '{}' command",
                    String::from_utf8_lossy(&args[0])
                );
                self.push_ready(error_value(&text), None, true);
                return;
            }
            "quit" => {
                self.push_ready(RespValue::Simple(Bytes::from_static(b"OK")), None, false);
                if let Some(last) = self.shared.queue.borrow_mut().slots.back_mut() {
                    last.after = After::Close;
                }
                self.stop_reading = true;
                return;
            }
            _ => {}
        }
        if args.len() < 2 && !command.spec.without_args && class != CommandClass::Transaction {
            stats.splitter_invalid_request.inc();
            self.tx.aborted |= self.tx.active;
            self.push_ready(error_value(INVALID_REQUEST), None, true);
            return;
        }

        let stats_index = if self.tx.active {
            config.multi_stats
        } else {
            command.stats
        };
        if let Some(cs) = stats_index.and_then(|i| stats.command_at(i)) {
            cs.total.inc();
        }
        let fault = config.faults.pick(command.faults, &config.runtime).cloned();
        if let Some(f) = fault.as_ref().filter(|f| f.error) {
            if let Some(cs) = stats_index.and_then(|i| stats.command_at(i)) {
                cs.error_fault.inc();
            }
            let seq = self.next_seq();
            self.push_ready(error_value("Fault Injected: Error"), stats_index, true);
            if !f.delay.is_zero() {
                self.set_delay(seq, f.delay);
            }
            return;
        }
        let seq = self.next_seq();
        let request = Request {
            args,
            raw,
            verbatim,
            cmd,
            spec: command.spec,
            custom: command.custom,
            stats: stats_index,
        };
        if self.tx.active {
            self.in_transaction(&request);
        } else {
            match class {
                CommandClass::Simple => self.simple(&request, 1),
                CommandClass::Eval => {
                    if args.len() < 4 {
                        self.wrong_arity(&request);
                    } else {
                        self.simple(&request, 3)
                    }
                }
                CommandClass::Object => {
                    if args.len() < 3 {
                        self.wrong_arity(&request);
                    } else {
                        self.simple(&request, 2)
                    }
                }
                CommandClass::Mget => self.mget(&request),
                CommandClass::Mset => self.mset(&request),
                CommandClass::SumResult => self.sum(&request),
                CommandClass::Scan => self.scan(&request),
                CommandClass::InfoShard => self.info_shard(&request),
                CommandClass::RandomShard => self.random_shard(&request),
                CommandClass::Select => self.select(&request),
                CommandClass::ClusterScope => self.cluster_scope(&request),
                CommandClass::Transaction => self.transaction(&request),
                CommandClass::Local => {
                    // Every local command was answered above.
                    self.push_ready(error_value(INVALID_REQUEST), stats_index, true);
                }
            }
        }
        if let Some(f) = fault.as_ref().filter(|f| !f.delay.is_zero()) {
            self.set_delay(seq, f.delay);
        }
    }

    /// Single-server commands: routed on `args[key_index]`, reply passed through.
    fn simple(&self, r: &Request<'_>, key_index: usize) {
        let key = &r.args[key_index];
        let Some((route, routed_key)) = self.filter.config.router.route(key) else {
            return self.no_host(r);
        };
        let is_read = r.spec.read;
        let Some(client) = self
            .pool(route.pool_for(is_read))
            .and_then(|p| p.client_for_key(&routed_key, is_read))
        else {
            return self.no_host(r);
        };
        let request = request_bytes(r, key_index, &routed_key);
        let seq = self.push_waiting(FragmentMerge::Single, 1, r.stats);
        client.send(
            &request,
            Some(self.completion(seq, 0)),
            r.spec.upstream_stat,
        );
        for mirror in &route.mirrors {
            if mirror.should_mirror(is_read, &self.filter.config.runtime) {
                if let Some(m) = self
                    .pool(mirror.pool)
                    .and_then(|p| p.client_for_key(&routed_key, is_read))
                {
                    m.send(&request, None, r.spec.upstream_stat);
                }
            }
        }
    }

    /// Fan-out of one sub-command per key (MGET, DEL, EXISTS, TOUCH, UNLINK) or pair (MSET):
    /// `name` sent with `step` arguments, a read or not, counted upstream as `stat`.
    fn fan_out(&self, r: &Request<'_>, merge: FragmentMerge, sub: SubCommand<'_>, step: usize) {
        let SubCommand {
            name,
            read: sub_is_read,
            stat,
        } = sub;
        let items = &r.args[1..];
        let fragments = items.len() / step;
        let seq = self.push_waiting(merge, fragments as u32, r.stats);
        let is_read = r.spec.read;
        // One fragment at a time: room for a typical one up front, so the buffer is allocated
        // once per request rather than grown fragment by fragment.
        let mut out = BytesMut::with_capacity(128);
        for (i, chunk) in items.chunks(step).enumerate() {
            let Some((route, key)) = self.filter.config.router.route(&chunk[0]) else {
                self.complete_now(seq, i, Outcome::NoHost);
                continue;
            };
            let Some(client) = self
                .pool(route.pool_for(is_read))
                .and_then(|p| p.client_for_key(&key, sub_is_read))
            else {
                self.complete_now(seq, i, Outcome::NoHost);
                continue;
            };
            // Encoded in place: no argument list allocated per fragment.
            out.clear();
            encode::array_header(&mut out, step + 1);
            encode::bulk(&mut out, name);
            encode::bulk(&mut out, &key);
            for arg in &chunk[1..] {
                encode::bulk(&mut out, arg);
            }
            client.send(&out, Some(self.completion(seq, i)), stat);
            for mirror in &route.mirrors {
                if mirror.should_mirror(sub_is_read, &self.filter.config.runtime) {
                    if let Some(m) = self
                        .pool(mirror.pool)
                        .and_then(|p| p.client_for_key(&key, sub_is_read))
                    {
                        m.send(&out, None, stat);
                    }
                }
            }
        }
    }

    fn mget(&self, r: &Request<'_>) {
        let n = r.args.len() - 1;
        let get = SubCommand {
            name: b"get",
            read: true,
            stat: "get",
        };
        self.fan_out(r, FragmentMerge::Mget(vec![RespValue::Null; n]), get, 1);
    }

    fn mset(&self, r: &Request<'_>) {
        if !(r.args.len() - 1).is_multiple_of(2) {
            return self.wrong_arity(r);
        }
        let set = SubCommand {
            name: b"set",
            read: false,
            stat: "set",
        };
        self.fan_out(r, FragmentMerge::Mset { errors: 0 }, set, 2);
    }

    fn sum(&self, r: &Request<'_>) {
        let name = r.args[0].clone();
        let same = SubCommand {
            name: &name,
            read: r.spec.read,
            stat: r.spec.upstream_stat,
        };
        self.fan_out(r, FragmentMerge::Sum { sum: 0, errors: 0 }, same, 1);
    }

    /// The pool that commands without a key use: the route of the empty key.
    fn keyless_pool(&self, routing_key: &[u8], is_read: bool) -> Option<&ClusterPool> {
        let (route, _) = self.filter.config.router.route(routing_key)?;
        self.pool(route.pool_for(is_read))
    }

    /// Sends the request unchanged to every shard of `pool`, gathering into `merge`.
    fn broadcast(&self, r: &Request<'_>, pool: &ClusterPool, shards: usize, merge: FragmentMerge) {
        let seq = self.push_waiting(merge, shards as u32, r.stats);
        let request = whole_request(r);
        for shard in 0..shards {
            match pool.client_for_shard(shard) {
                Some(c) => c.send(
                    &request,
                    Some(self.completion(seq, shard)),
                    r.spec.upstream_stat,
                ),
                None => self.complete_now(seq, shard, Outcome::NoHost),
            }
        }
    }

    /// SCAN over every host of the catch-all route's cluster (every primary of a Redis
    /// Cluster), one host after the other, with a composite cursor: a full iteration returns
    /// every key once and ends with cursor 0. Envoy 1.40 sends the cursor to every shard and
    /// concatenates the replies, which no client can iterate.
    fn scan(&self, r: &Request<'_>) {
        let Some(pool) = self.keyless_pool(b"", true) else {
            return self.no_host(r);
        };
        let hosts = pool.shard_count();
        if hosts == 0 {
            return self.no_host(r);
        }
        if hosts as u64 > SCAN_HOSTS {
            let text = format!("ERR SCAN through the proxy covers at most {SCAN_HOSTS} hosts");
            return self.push_ready(error_value(&text), r.stats, true);
        }
        let Some((host, cursor)) = split_scan_cursor(&r.args[1]).filter(|(h, _)| *h < hosts) else {
            return self.push_ready(error_value("ERR invalid cursor"), r.stats, true);
        };
        let Some(client) = pool.client_for_shard(host) else {
            return self.no_host(r);
        };
        let cursor = cursor.to_string();
        let mut parts: Vec<&[u8]> = r.args.iter().map(|a| &a[..]).collect();
        parts[1] = cursor.as_bytes();
        let mut out = BytesMut::new();
        encode::command(&mut out, &parts);
        let seq = self.push_waiting(FragmentMerge::Scan { host, hosts }, 1, r.stats);
        client.send(&out, Some(self.completion(seq, 0)), r.spec.upstream_stat);
    }

    fn cluster_scope(&self, r: &Request<'_>) {
        // Envoy answers a missing route or empty cluster before judging the arguments.
        let Some(pool) = self.keyless_pool(b"", r.spec.read) else {
            return self.no_host(r);
        };
        let shards = pool.shard_count();
        if shards == 0 {
            return self.no_host(r);
        }
        let Some(agg) = cluster_scope::aggregation_for(r.cmd, r.args) else {
            let text = cluster_scope::UNSUPPORTED_CLUSTER_SCOPE_COMMAND;
            return self.push_ready(error_value(text), r.stats, true);
        };
        self.broadcast(
            r,
            pool,
            shards,
            FragmentMerge::ClusterScope(agg, vec![RespValue::Null; shards]),
        );
    }

    fn info_shard(&self, r: &Request<'_>) {
        if r.args.len() > 3 {
            return self.wrong_arity(r);
        }
        let Some(pool) = self.keyless_pool(b"", true) else {
            return self.no_host(r);
        };
        let shards = pool.shard_count();
        let index = std::str::from_utf8(&r.args[1])
            .ok()
            .and_then(|s| s.parse::<usize>().ok());
        let Some(index) = index else {
            let text = "ERR invalid shard_id - must be a numeric shard index";
            return self.push_ready(error_value(text), r.stats, true);
        };
        if index >= shards {
            let text = format!(
                "ERR shard_id {index} out of range (0-{})",
                shards.saturating_sub(1)
            );
            return self.push_ready(error_value(&text), r.stats, true);
        }
        let Some(client) = pool.client_for_shard(index) else {
            return self.no_host(r);
        };
        let mut out = BytesMut::new();
        let mut parts: Vec<&[u8]> = vec![b"INFO"];
        parts.extend(r.args.get(2).map(|s| &s[..]));
        encode::command(&mut out, &parts);
        let seq = self.push_waiting(FragmentMerge::Single, 1, r.stats);
        client.send(&out, Some(self.completion(seq, 0)), "unknown");
    }

    fn random_shard(&self, r: &Request<'_>) {
        if r.cmd == "cluster" {
            let sub = String::from_utf8_lossy(&r.args[1]).to_ascii_lowercase();
            if !commands::CLUSTER_SUBCOMMANDS.contains(&sub.as_str()) {
                let text = format!("ERR cluster subcommand '{sub}' is not supported");
                return self.push_ready(error_value(&text), r.stats, true);
            }
        }
        let Some(pool) = self.keyless_pool(b"", true) else {
            return self.no_host(r);
        };
        let shards = pool.shard_count();
        if shards == 0 {
            return self.no_host(r);
        }
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let shard = (micros % shards as u128) as usize;
        let Some(client) = pool.client_for_shard(shard) else {
            return self.no_host(r);
        };
        let seq = self.push_waiting(FragmentMerge::Single, 1, r.stats);
        client.send(
            &whole_request(r),
            Some(self.completion(seq, 0)),
            r.spec.upstream_stat,
        );
    }
}

/// The command each fragment of a fan-out sends.
struct SubCommand<'a> {
    name: &'a [u8],
    read: bool,
    /// Its upstream stat name (`CommandSpec::upstream_stat`).
    stat: &'static str,
}
