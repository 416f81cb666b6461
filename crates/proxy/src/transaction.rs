//! Transactions (Envoy's `TransactionRequest`): WATCH, MULTI, the queued commands and
//! EXEC/DISCARD on connections dedicated to one client.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use redvoy_resp::{encode, RespValue};

use crate::pending::{error_value, Completion, FragmentMerge, INVALID_REQUEST, NO_UPSTREAM_HOST};
use crate::request::{whole_request, Request};
use crate::session_state::Session;

/// Redis's reply to keys of different slots in one transaction or command.
const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

impl Session {
    /// MULTI/EXEC/DISCARD/WATCH/UNWATCH outside a transaction. Replies the proxy makes up
    /// here count only in `command.<cmd>.total`, as in Envoy (neither success nor error).
    pub(crate) fn transaction(&mut self, r: &Request<'_>) {
        match r.cmd {
            "multi" => {
                self.tx.active = true;
                self.tx.aborted = false;
                if self.tx.clients.is_empty() {
                    // Envoy's way: MULTI goes upstream with the first keyed command.
                    self.push_ready(RespValue::Simple(Bytes::from_static(b"OK")), None, false);
                } else {
                    // WATCH opened the connection: MULTI follows it there.
                    self.send_in_transaction(r);
                }
            }
            "exec" => self.push_ready(error_value("EXEC without MULTI"), None, true),
            "discard" => self.push_ready(error_value("DISCARD without MULTI"), None, true),
            "watch" if r.args.len() < 2 => self.wrong_arity(r),
            "watch" => {
                let keys = &r.args[1..];
                match self.join_transaction(keys) {
                    Ok(()) => self.send_in_transaction(r),
                    Err(reply) => self.push_ready(reply, r.stats, true),
                }
            }
            "unwatch" => {
                if self.tx.clients.is_empty() {
                    self.push_ready(RespValue::Simple(Bytes::from_static(b"OK")), None, false);
                } else {
                    self.send_in_transaction(r);
                    self.tx.close();
                }
            }
            _ => self.push_ready(error_value(INVALID_REQUEST), None, true),
        }
    }

    /// Checks that `keys` belong where the transaction runs (one slot of a Redis Cluster, one
    /// host otherwise) and opens the dedicated connections with the first key if none are
    /// open yet. The error is the reply for the client.
    fn join_transaction(&mut self, keys: &[Bytes]) -> Result<(), RespValue> {
        let config = Arc::clone(&self.filter.config);
        let mut joined = self.tx.placement();
        for key in keys {
            let Some((route, routed_key)) = config.router.route(key) else {
                return Err(error_value(NO_UPSTREAM_HOST));
            };
            let Some(placement) = self.pool(route.pool).and_then(|p| p.placement(&routed_key))
            else {
                return Err(error_value(NO_UPSTREAM_HOST));
            };
            match joined {
                Some(p) if p != (route.pool, placement) => return Err(error_value(CROSSSLOT)),
                Some(_) => {}
                None => joined = Some((route.pool, placement)),
            }
        }
        if self.tx.clients.is_empty() {
            let Some(key) = keys.first() else {
                return Err(error_value(INVALID_REQUEST));
            };
            if !self.open_transaction(key) {
                return Err(error_value(NO_UPSTREAM_HOST));
            }
        }
        self.tx.detail().placement = joined;
        Ok(())
    }

    /// Opens the dedicated connections of a transaction routed by `key`: the route's primary
    /// pool, then each mirror's.
    fn open_transaction(&mut self, key: &[u8]) -> bool {
        let Some((route, routed_key)) = self.filter.config.router.route(key) else {
            return false;
        };
        let Some(primary) = self
            .pool(route.pool)
            .and_then(|p| p.dedicated_client_for_key(&routed_key))
        else {
            return false;
        };
        let mut clients = vec![primary];
        let mut excludes = Vec::new();
        for mirror in &route.mirrors {
            // The runtime fraction is decided once per transaction.
            if !mirror.should_mirror(false, &self.filter.config.runtime) {
                continue;
            }
            if let Some(m) = self
                .pool(mirror.pool)
                .and_then(|p| p.dedicated_client_for_key(&routed_key))
            {
                clients.push(m);
                excludes.push(mirror.exclude_read_commands);
            }
        }
        self.tx.clients = clients;
        self.tx.detail().mirror_excludes_reads = excludes;
        true
    }

    /// Sends a client's request on the transaction's dedicated connections; the primary's
    /// reply is the client's.
    fn send_in_transaction(&self, r: &Request<'_>) {
        // Only with a connection to answer: a slot nothing completes would block the queue.
        let completion = (!self.tx.clients.is_empty()).then(|| {
            let seq = self.push_waiting(FragmentMerge::Single, 1, r.stats);
            self.completion(seq, 0)
        });
        let request = whole_request(r);
        self.send_on_dedicated(&request, r.spec.read, r.spec.upstream_stat, completion);
    }

    /// Sends a command of the proxy's own (MULTI, DISCARD) on the dedicated connections, its
    /// replies dropped. Both are writes (mirrors get them too) and count upstream as
    /// `unknown`, as Envoy counts them.
    fn send_own_in_transaction(&self, name: &'static [u8]) {
        let mut request = BytesMut::new();
        encode::command(&mut request, &[name]);
        self.send_on_dedicated(&request, false, "unknown", None);
    }

    /// The primary connection gets `request` (its reply to `completion`, if any); each mirror
    /// gets it too unless it is a read and that mirror excludes reads.
    fn send_on_dedicated(
        &self,
        request: &[u8],
        read: bool,
        stat: &'static str,
        completion: Option<Completion>,
    ) {
        let mut clients = self.tx.clients.iter();
        if let Some(primary) = clients.next() {
            primary.send(request, completion, stat);
        }
        for (client, excludes_reads) in clients.zip(self.tx.mirror_excludes_reads()) {
            if !(read && *excludes_reads) {
                client.send(request, None, stat);
            }
        }
    }

    /// Refuses a command while queuing: Redis's rule, the transaction will not commit.
    fn refuse_in_transaction(&mut self, reply: RespValue) {
        self.tx.aborted = true;
        self.push_ready(reply, None, true);
    }

    /// Every command while MULTI is active (Envoy's MULTI handler, with Redis's rules for
    /// refused commands: EXEC then answers EXECABORT and nothing is committed).
    pub(crate) fn in_transaction(&mut self, r: &Request<'_>) {
        match r.cmd {
            "multi" => {
                return self.push_ready(error_value("MULTI calls can not be nested"), None, true)
            }
            "exec" if self.tx.aborted => {
                if !self.tx.clients.is_empty() {
                    self.send_own_in_transaction(b"DISCARD");
                }
                self.tx.close();
                return self.push_ready(error_value(EXECABORT), None, true);
            }
            "exec" | "discard" => {
                if self.tx.clients.is_empty() {
                    let reply = if r.cmd == "exec" {
                        RespValue::Array(Vec::new())
                    } else {
                        RespValue::Simple(Bytes::from_static(b"OK"))
                    };
                    self.tx.close();
                    return self.push_ready(reply, None, false);
                }
                let seq = self.next_seq();
                self.send_in_transaction(r);
                if r.cmd == "exec" && self.resp3_shape.get().is_some() {
                    let shapes =
                        std::mem::take(&mut self.tx.detail().queued_shapes).into_boxed_slice();
                    self.with_slot(seq, |slot| slot.exec_shapes = Some(shapes));
                }
                self.tx.close();
                return;
            }
            "watch" => {
                return self.push_ready(
                    error_value("ERR WATCH inside MULTI is not allowed"),
                    None,
                    true,
                )
            }
            "unwatch" if self.tx.clients.is_empty() => {
                return self.push_ready(
                    RespValue::Simple(Bytes::from_static(b"QUEUED")),
                    None,
                    false,
                )
            }
            _ => {}
        }
        if !r.spec.allowed_in_transaction() && !r.custom {
            let text = format!(
                "'{}' command is not supported within transaction",
                String::from_utf8_lossy(&r.args[0])
            );
            return self.refuse_in_transaction(error_value(&text));
        }
        let keys = transaction_keys(r);
        let opened = self.tx.clients.is_empty();
        if let Err(reply) = self.join_transaction(keys.as_slice()) {
            return self.refuse_in_transaction(reply);
        }
        if opened {
            // Envoy sends MULTI itself, uppercase, and discards its reply.
            self.send_own_in_transaction(b"MULTI");
        }
        self.send_in_transaction(r);
        if let Some(shape) = self.resp3_shape.get() {
            // A RESP3 client's EXEC reply is converted element by element.
            self.tx.detail().queued_shapes.push(shape);
        }
    }
}

/// The keys of a command queued in a transaction: every key of the multi-key commands, else
/// the routing key (Envoy's `args[1]`).
fn transaction_keys(r: &Request<'_>) -> Vec<Bytes> {
    let rest = r.args.get(1..).unwrap_or_default();
    match r.cmd {
        "mset" | "msetnx" => rest.iter().step_by(2).cloned().collect(),
        _ if r.spec.multi_key => rest.to_vec(),
        _ => rest.iter().take(1).cloned().collect(),
    }
}
