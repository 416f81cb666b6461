//! Redis Cluster redirections: recognising a MOVED/ASK/CLUSTERDOWN reply and what an upstream
//! client hands to its pool to resend a request elsewhere. The pool implements [`Redirector`]
//! so that the client needs no knowledge of pools.

use bytes::Bytes;

use crate::pending::Completion;

/// Redirections followed for one request before its MOVED/ASK is passed through. Envoy has no
/// limit; a cap keeps two nodes that disagree about a slot from bouncing a request forever.
pub(crate) const MAX_REDIRECT_HOPS: u8 = 16;

/// A MOVED or ASK reply, as Envoy recognises them: exactly three tokens split on single
/// spaces, the first exactly `MOVED` or `ASK`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Redirection<'a> {
    Moved(&'a [u8]),
    Ask(&'a [u8]),
    /// `CLUSTERDOWN ...`: the request fails (`upstream failure`) when redirection is on.
    ClusterDown,
}

impl<'a> Redirection<'a> {
    pub(crate) fn parse(error: &'a [u8]) -> Option<Self> {
        let mut tokens = error.split(|b| *b == b' ');
        let first = tokens.next()?;
        if first == b"CLUSTERDOWN" {
            return Some(Redirection::ClusterDown);
        }
        let ask = match first {
            b"MOVED" => false,
            b"ASK" => true,
            _ => return None,
        };
        let _slot = tokens.next()?;
        let target = tokens.next()?;
        if tokens.next().is_some() {
            return None;
        }
        Some(if ask {
            Redirection::Ask(target)
        } else {
            Redirection::Moved(target)
        })
    }
}

/// What a redirection needs to resend a request.
pub(crate) struct RedirectRequest {
    pub request: Bytes,
    pub completion: Option<Completion>,
    /// The upstream stat name (`CommandSpec::upstream_stat`).
    pub stat: &'static str,
    pub hops: u8,
}

/// What a pooled client calls on its pool when a reply redirects or fails a request.
pub(crate) trait Redirector {
    /// Follows a MOVED (`ask` false) or ASK reply by resending the request to `target`
    /// (`host:port`). On failure the request is handed back so that the caller passes the
    /// original error through, as Envoy does.
    fn redirect(
        &self,
        ask: bool,
        target: &[u8],
        request: RedirectRequest,
    ) -> Result<(), RedirectRequest>;

    /// A pooled request failed (connection failure, timeout, CLUSTERDOWN): Envoy's refresh
    /// manager counts it towards `failure_refresh_threshold`.
    fn on_request_failure(&self);
}

/// Splits `host:port` at the last `:` (so a bare IPv6 address works, as in Envoy); a missing
/// or invalid port fails the redirection.
pub(crate) fn split_host_port(target: &[u8]) -> Option<(&[u8], u16)> {
    let colon = target.iter().rposition(|b| *b == b':')?;
    let (host, port) = (&target[..colon], &target[colon + 1..]);
    if host.is_empty() {
        return None;
    }
    let port = std::str::from_utf8(port).ok()?.parse::<u16>().ok()?;
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirection_strings() {
        assert_eq!(
            Redirection::parse(b"MOVED 3999 127.0.0.1:6381"),
            Some(Redirection::Moved(b"127.0.0.1:6381"))
        );
        assert_eq!(
            Redirection::parse(b"ASK 3999 10.0.0.1:7000"),
            Some(Redirection::Ask(b"10.0.0.1:7000"))
        );
        assert_eq!(
            Redirection::parse(b"CLUSTERDOWN Hash slot not served"),
            Some(Redirection::ClusterDown)
        );
        // Envoy's BadRedirectStrings: truncated, extra field, lowercase.
        assert_eq!(Redirection::parse(b"MOVED 3999"), None);
        assert_eq!(Redirection::parse(b"MOVED 3999 1.2.3.4:1 x"), None);
        assert_eq!(Redirection::parse(b"moved 3999 1.2.3.4:1"), None);
        assert_eq!(Redirection::parse(b"ERR wrong"), None);
    }

    #[test]
    fn host_port_split() {
        assert_eq!(
            split_host_port(b"127.0.0.1:6379"),
            Some((&b"127.0.0.1"[..], 6379))
        );
        assert_eq!(split_host_port(b"::1:7000"), Some((&b"::1"[..], 7000)));
        assert_eq!(split_host_port(b"1.2.3.4:65536"), None);
        assert_eq!(split_host_port(b"1.2.3.4:x"), None);
        assert_eq!(split_host_port(b"1.2.3.4"), None);
    }
}
