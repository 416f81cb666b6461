//! Commands the proxy answers for the client itself (CLIENT, SELECT, AUTH, HELLO): their state
//! lives in the session because upstream connections are shared by every client.

use bytes::Bytes;
use redvoy_resp::RespValue;

use crate::pending::{error_value, INVALID_REQUEST, NOAUTH, NOPROTO};
use crate::request::Request;
use crate::session_state::Session;

impl Session {
    /// CLIENT, answered for this connection (Envoy 1.40 accepts SETNAME/SETINFO and refuses
    /// the rest; redvoy also answers GETNAME, ID and INFO as Redis would for this client).
    pub(crate) fn client_command(&mut self, args: &[Bytes]) -> RespValue {
        let Some(sub) = args.get(1) else {
            return error_value(INVALID_REQUEST);
        };
        let lower = String::from_utf8_lossy(sub).to_ascii_lowercase();
        let arity = |n: usize| {
            (args.len() != n).then(|| {
                error_value(&format!(
                    "ERR wrong number of arguments for 'client|{lower}' command"
                ))
            })
        };
        match lower.as_str() {
            "setname" => {
                if let Some(e) = arity(3) {
                    return e;
                }
                let name = &args[2];
                if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
                    return error_value(
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                self.client.names_mut().name = (!name.is_empty()).then(|| name.clone());
                RespValue::Simple(Bytes::from_static(b"OK"))
            }
            "getname" => {
                if let Some(e) = arity(2) {
                    return e;
                }
                self.client
                    .names()
                    .name
                    .clone()
                    .map_or(RespValue::Null, RespValue::Bulk)
            }
            "id" => {
                if let Some(e) = arity(2) {
                    return e;
                }
                RespValue::Integer(self.client.id as i64)
            }
            "setinfo" => {
                if let Some(e) = arity(4) {
                    return e;
                }
                let attr = String::from_utf8_lossy(&args[2]).to_ascii_lowercase();
                let value = (!args[3].is_empty()).then(|| args[3].clone());
                match attr.as_str() {
                    "lib-name" => self.client.names_mut().lib_name = value,
                    "lib-ver" => self.client.names_mut().lib_ver = value,
                    _ => {
                        return error_value(&format!(
                            "ERR Unrecognized option '{}'",
                            String::from_utf8_lossy(&args[2])
                        ))
                    }
                }
                RespValue::Simple(Bytes::from_static(b"OK"))
            }
            "info" => {
                if let Some(e) = arity(2) {
                    return e;
                }
                RespValue::Bulk(Bytes::from(self.client_info_line()))
            }
            _ => error_value(&format!(
                "ERR CLIENT subcommand '{}' is not supported by the proxy",
                String::from_utf8_lossy(sub)
            )),
        }
    }

    /// This client's line in Redis's `CLIENT INFO` format (the fields a proxy can know).
    fn client_info_line(&self) -> String {
        let c = &self.client;
        let text = |b: &Option<Bytes>| {
            b.as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        let addr = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        format!(
            "id={} addr={} laddr={} name={} db=0 multi={} resp={} lib-name={} lib-ver={}\n",
            c.id,
            addr(c.peer),
            addr(c.local),
            text(&c.names().name),
            if self.tx.active { 0 } else { -1 },
            c.resp,
            text(&c.names().lib_name),
            text(&c.names().lib_ver),
        )
    }

    /// SELECT for this client only. Upstream connections are shared by every client, so a
    /// SELECT sent there would move other clients' keys (Envoy 1.40 does send it); redvoy
    /// serves database 0 and refuses the others.
    pub(crate) fn select(&self, r: &Request<'_>) {
        if r.args.len() != 2 {
            return self.push_ready(
                error_value("ERR wrong number of arguments for 'select' command"),
                r.stats,
                true,
            );
        }
        let reply = match std::str::from_utf8(&r.args[1])
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        {
            Some(0) => RespValue::Simple(Bytes::from_static(b"OK")),
            Some(_) => error_value(
                "ERR DB index is out of range: the proxy serves database 0 only (SELECT is per client)",
            ),
            None => error_value("ERR value is not an integer or out of range"),
        };
        let error = matches!(reply, RespValue::Error(_));
        self.push_ready(reply, r.stats, error);
    }

    pub(crate) fn auth(&mut self, args: &[Bytes]) -> RespValue {
        let config = &self.filter.config;
        if args.len() < 2 {
            return error_value(INVALID_REQUEST);
        }
        if args.len() == 3 {
            return self.auth_user(&args[1], &args[2]);
        }
        if config.passwords.is_empty() {
            return error_value("ERR Client sent AUTH, but no password is set");
        }
        if config.passwords.iter().any(|p| p == &args[1]) {
            self.authenticated = true;
            RespValue::Simple(Bytes::from_static(b"OK"))
        } else {
            self.authenticated = false;
            error_value("ERR invalid password")
        }
    }

    fn auth_user(&mut self, user: &Bytes, pass: &Bytes) -> RespValue {
        let config = &self.filter.config;
        if config.username.is_none() && config.passwords.is_empty() {
            return error_value("ERR Client sent AUTH, but no username-password pair is set");
        }
        let user_ok = match &config.username {
            Some(u) => u == user,
            None => &user[..] == b"default",
        };
        if user_ok && config.passwords.iter().any(|p| p == pass) {
            self.authenticated = true;
            RespValue::Simple(Bytes::from_static(b"OK"))
        } else {
            self.authenticated = false;
            error_value("WRONGPASS invalid username-password pair")
        }
    }

    /// HELLO, answered locally with Envoy's fields. `HELLO 3` switches this client to RESP3
    /// (Envoy 1.40 answers NOPROTO); its replies are then converted from the upstreams' RESP2.
    pub(crate) fn hello(&mut self, args: &[Bytes]) -> RespValue {
        let mut resp = self.client.resp;
        if args.len() < 2 && self.filter.config.require_resp3 && resp != 3 {
            return error_value(NOPROTO);
        }
        if let Some(version) = args.get(1) {
            match std::str::from_utf8(version)
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
            {
                Some(2) if !self.filter.config.require_resp3 => resp = 2,
                Some(3) => resp = 3,
                Some(_) => return error_value(NOPROTO),
                None => {
                    return error_value("ERR Protocol version is not an integer or out of range")
                }
            }
        }
        let mut name = None;
        let mut i = 2;
        while i < args.len() {
            let opt = String::from_utf8_lossy(&args[i]).to_ascii_lowercase();
            match opt.as_str() {
                "auth" => {
                    if i + 2 >= args.len() {
                        return error_value(
                            "ERR Syntax error: HELLO AUTH requires <username> <password>",
                        );
                    }
                    let reply = self.auth_user(&args[i + 1], &args[i + 2]);
                    if matches!(reply, RespValue::Error(_)) {
                        return reply;
                    }
                    i += 3;
                }
                "setname" => {
                    if i + 1 >= args.len() {
                        return error_value(
                            "ERR Syntax error: HELLO SETNAME requires a <clientname>",
                        );
                    }
                    name = Some(args[i + 1].clone());
                    i += 2;
                }
                _ => {
                    return error_value(&format!(
                        "ERR Syntax error: unknown HELLO option '{}'",
                        String::from_utf8_lossy(&args[i])
                    ))
                }
            }
        }
        if !self.authenticated {
            return error_value(NOAUTH);
        }
        if let Some(name) = name {
            self.client.names_mut().name = (!name.is_empty()).then_some(name);
        }
        self.client.resp = resp;
        let b = |s: &'static [u8]| RespValue::Bulk(Bytes::from_static(s));
        RespValue::Array(vec![
            b(b"server"),
            b(b"envoy-redis-proxy"),
            b(b"version"),
            b(b"6.0.0"),
            b(b"proto"),
            RespValue::Integer(i64::from(resp)),
            b(b"id"),
            RespValue::Integer(0),
            b(b"mode"),
            b(b"standalone"),
            b(b"role"),
            b(b"master"),
            b(b"modules"),
            RespValue::Array(Vec::new()),
        ])
    }
}
