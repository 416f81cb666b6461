//! Envoy's TLS inspector: whether a connection's first bytes are a TLS ClientHello, and its
//! server name (SNI) and ALPN protocols, read from peeked bytes that stay in the socket for
//! the handshake (or for a filter chain that passes TLS through).

/// The parts of a ClientHello that choose a filter chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` of the `server_name` extension, lower-cased as Envoy matches it.
    pub server_name: Option<String>,
    /// The `application_layer_protocol_negotiation` extension's protocols, in order.
    pub alpn: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    /// A ClientHello has begun and is not complete: peek again once more bytes arrived.
    NeedMore,
    /// Not TLS (or not a ClientHello Envoy's inspector would accept).
    NotTls,
    Tls(ClientHello),
}

/// TLS record type of handshake messages, and the ClientHello handshake type.
const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const RECORD_HEADER: usize = 5;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;

/// Reads a ClientHello from the start of `bytes` (which may hold it only in part).
pub fn inspect_client_hello(bytes: &[u8]) -> Inspection {
    // The handshake message, gathered from as many records as it spans.
    let mut message = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = bytes.get(at..at + RECORD_HEADER) else {
            // What is there of a first record header already tells a non-TLS connection.
            let not_tls = at == 0
                && (bytes.first().is_some_and(|&b| b != HANDSHAKE)
                    || bytes.get(1).is_some_and(|&v| v != 3));
            return if not_tls {
                Inspection::NotTls
            } else {
                Inspection::NeedMore
            };
        };
        if header[0] != HANDSHAKE || header[1] != 3 {
            return Inspection::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Inspection::NotTls;
        }
        let Some(fragment) = bytes.get(at + RECORD_HEADER..at + RECORD_HEADER + len) else {
            return Inspection::NeedMore;
        };
        message.extend_from_slice(fragment);
        at += RECORD_HEADER + len;
        if message[0] != CLIENT_HELLO {
            return Inspection::NotTls;
        }
        let Some(body_len) = message.get(1..4) else {
            continue;
        };
        let body_len = (usize::from(body_len[0]) << 16)
            | (usize::from(body_len[1]) << 8)
            | usize::from(body_len[2]);
        if message.len() >= 4 + body_len {
            return match parse_client_hello(&message[4..4 + body_len]) {
                Some(hello) => Inspection::Tls(hello),
                None => Inspection::NotTls,
            };
        }
    }
}

/// A cursor over a ClientHello's fields; `None` on a truncated or malformed field.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one- or two-byte length.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

fn parse_client_hello(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    let _legacy_version = r.u16()?;
    let _random = r.take(32)?;
    let _session_id = r.vec8()?;
    let _cipher_suites = r.vec16()?;
    let _compression = r.vec8()?;
    let mut hello = ClientHello::default();
    if r.0.is_empty() {
        // No extensions at all (an old client): still TLS.
        return Some(hello);
    }
    let mut extensions = Reader(r.vec16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let mut data = Reader(extensions.vec16()?);
        match kind {
            EXT_SERVER_NAME => {
                let mut names = Reader(data.vec16()?);
                while !names.0.is_empty() {
                    let name_type = names.u8()?;
                    let name = names.vec16()?;
                    if name_type == 0 && hello.server_name.is_none() {
                        let name = std::str::from_utf8(name).ok()?;
                        hello.server_name = Some(name.to_ascii_lowercase());
                    }
                }
            }
            EXT_ALPN => {
                let mut protocols = Reader(data.vec16()?);
                while !protocols.0.is_empty() {
                    let p = protocols.vec8()?;
                    hello.alpn.push(String::from_utf8_lossy(p).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls writes it, with the given SNI and ALPN.
    fn client_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
        #[allow(deprecated)] // ring's provider, as in `TlsConnector::new`
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).expect("name");
        let mut conn =
            rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("conn");
        let mut out = Vec::new();
        conn.write_tls(&mut out).expect("hello");
        out
    }

    #[test]
    fn reads_sni_and_alpn_from_a_client_hello() {
        let hello = client_hello("Outbound.Redis.svc", &["istio-peer-exchange", "istio"]);
        assert_eq!(
            inspect_client_hello(&hello),
            Inspection::Tls(ClientHello {
                server_name: Some("outbound.redis.svc".into()),
                alpn: vec!["istio-peer-exchange".into(), "istio".into()],
            })
        );
        // Any prefix of it asks for more bytes.
        for cut in [1, 3, 5, 6, 40, hello.len() - 1] {
            assert_eq!(
                inspect_client_hello(&hello[..cut]),
                Inspection::NeedMore,
                "{cut}"
            );
        }
        // The same message split over two records.
        let body = &hello[RECORD_HEADER..];
        let (a, b) = body.split_at(30);
        let mut split = Vec::new();
        for part in [a, b] {
            split.extend_from_slice(&[HANDSHAKE, 3, 1]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        assert!(matches!(inspect_client_hello(&split), Inspection::Tls(_)));
    }

    #[test]
    fn plaintext_is_not_tls() {
        assert_eq!(
            inspect_client_hello(b"*1\r\n$4\r\nPING\r\n"),
            Inspection::NotTls
        );
        assert_eq!(inspect_client_hello(b"PING\r\n"), Inspection::NotTls);
        assert_eq!(
            inspect_client_hello(b"GET / HTTP/1.1\r\n"),
            Inspection::NotTls
        );
        // A handshake record whose version is not TLS's.
        assert_eq!(
            inspect_client_hello(&[22, 9, 1, 0, 1, 1]),
            Inspection::NotTls
        );
        assert_eq!(inspect_client_hello(&[22]), Inspection::NeedMore);
        assert_eq!(inspect_client_hello(&[]), Inspection::NeedMore);
    }
}
