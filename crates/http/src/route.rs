//! The static route table: virtual host by `Host` header, then the first matching route.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use redvoy_config::model::{self, HttpRouteAction, PathMatch};

/// What a matched route does.
#[derive(Debug)]
pub(crate) enum Action {
    Cluster {
        cluster: String,
        prefix_rewrite: Option<String>,
        /// `None`: the route's timeout is 0 (disabled).
        timeout: Option<Duration>,
    },
    Direct {
        status: u16,
        body: Option<Bytes>,
    },
}

#[derive(Debug)]
pub(crate) struct Route {
    path_match: PathMatch,
    pub(crate) action: Action,
}

#[derive(Debug)]
struct VirtualHost {
    routes: Vec<Route>,
}

/// Envoy's virtual host lookup order: exact domain, then `*.suffix` wildcards (longest suffix
/// first), then `prefix.*` wildcards (longest first), then `*`. Domains compare
/// case-insensitively and the `Host` header's port is part of the name (no port stripping).
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    vhosts: Vec<VirtualHost>,
    exact: HashMap<String, usize>,
    /// (suffix including the leading `.`/`-`, vhost), longest first.
    suffixes: Vec<(String, usize)>,
    /// (prefix including the trailing `.`/`-`, vhost), longest first.
    prefixes: Vec<(String, usize)>,
    default: Option<usize>,
}

// === impl RouteTable ===

impl RouteTable {
    pub(crate) fn new(vhosts: &[model::VirtualHost]) -> Self {
        let mut table = RouteTable::default();
        for (i, vh) in vhosts.iter().enumerate() {
            for domain in &vh.domains {
                let domain = domain.to_ascii_lowercase();
                // First definition wins; Envoy refuses duplicates at config load anyway.
                if domain == "*" {
                    table.default.get_or_insert(i);
                } else if let Some(suffix) = domain.strip_prefix('*') {
                    table.suffixes.push((suffix.to_string(), i));
                } else if let Some(prefix) = domain.strip_suffix('*') {
                    table.prefixes.push((prefix.to_string(), i));
                } else {
                    table.exact.entry(domain).or_insert(i);
                }
            }
            table.vhosts.push(VirtualHost {
                routes: vh
                    .routes
                    .iter()
                    .map(|r| Route {
                        path_match: r.path_match.clone(),
                        action: match &r.action {
                            HttpRouteAction::Cluster {
                                cluster,
                                prefix_rewrite,
                                timeout,
                            } => Action::Cluster {
                                cluster: cluster.clone(),
                                prefix_rewrite: prefix_rewrite.clone(),
                                timeout: (!timeout.is_zero()).then_some(*timeout),
                            },
                            HttpRouteAction::DirectResponse { status, body } => Action::Direct {
                                status: *status,
                                body: body.as_ref().map(|b| Bytes::from(b.clone().into_bytes())),
                            },
                        },
                    })
                    .collect(),
            });
        }
        // Stable sorts keep config order among equal lengths.
        table.suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        table.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        table
    }

    fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        let host = host.to_ascii_lowercase();
        let index = self
            .exact
            .get(&host)
            .copied()
            // A wildcard stands for at least one character.
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
                    .map(|(_, i)| *i)
            })
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()))
                    .map(|(_, i)| *i)
            })
            .or(self.default)?;
        self.vhosts.get(index)
    }

    /// The first route of the request's virtual host matching `path` (which includes the query
    /// string: `prefix` matches against all of it, `path` against the part before `?`).
    pub(crate) fn route(&self, host: &str, path: &str) -> Option<&Route> {
        let vhost = self.virtual_host(host)?;
        let without_query = path.split_once('?').map_or(path, |(p, _)| p);
        vhost.routes.iter().find(|r| match &r.path_match {
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Path(p) => without_query == p,
        })
    }
}

// === impl Route ===

impl Route {
    /// The path sent upstream: the matched prefix (or exact path) replaced by `rewrite`.
    pub(crate) fn rewrite(&self, path: &str, rewrite: &str) -> String {
        let matched = match &self.path_match {
            PathMatch::Prefix(p) | PathMatch::Path(p) => p.len(),
        };
        let rest = path.get(matched..).unwrap_or("");
        format!("{rewrite}{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vh(name: &str, domains: &[&str], prefix: &str) -> model::VirtualHost {
        model::VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes: vec![model::HttpRoute {
                path_match: PathMatch::Prefix(prefix.into()),
                action: HttpRouteAction::DirectResponse {
                    status: 200,
                    body: Some(name.into()),
                },
            }],
        }
    }

    fn body(t: &RouteTable, host: &str, path: &str) -> Option<String> {
        match &t.route(host, path)?.action {
            Action::Direct { body, .. } => body
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            Action::Cluster { .. } => None,
        }
    }

    #[test]
    fn virtual_host_precedence_matches_envoy() {
        let t = RouteTable::new(&[
            vh("star", &["*"], "/"),
            vh("exact", &["foo.com"], "/"),
            vh("suffix", &["*.bar.com"], "/"),
            vh("longer", &["*.x.bar.com"], "/"),
            vh("prefix", &["api.*"], "/"),
        ]);
        assert_eq!(body(&t, "foo.com", "/").as_deref(), Some("exact"));
        assert_eq!(body(&t, "FOO.com", "/").as_deref(), Some("exact"));
        // The port is part of the host: no exact match, falls to `*` (as Envoy answered).
        assert_eq!(body(&t, "foo.com:80", "/").as_deref(), Some("star"));
        assert_eq!(body(&t, "a.bar.com", "/").as_deref(), Some("suffix"));
        assert_eq!(body(&t, "a.x.bar.com", "/").as_deref(), Some("longer"));
        assert_eq!(body(&t, ".bar.com", "/").as_deref(), Some("star"));
        assert_eq!(body(&t, "api.foo", "/").as_deref(), Some("prefix"));
        let none = RouteTable::new(&[vh("exact", &["foo.com"], "/")]);
        assert!(none.route("other", "/").is_none());
    }

    #[test]
    fn path_matching_and_rewrite() {
        let t = RouteTable::new(&[model::VirtualHost {
            name: "v".into(),
            domains: vec!["*".into()],
            routes: vec![
                model::HttpRoute {
                    path_match: PathMatch::Path("/exact".into()),
                    action: HttpRouteAction::DirectResponse {
                        status: 200,
                        body: Some("exact".into()),
                    },
                },
                model::HttpRoute {
                    path_match: PathMatch::Prefix("/stats/prometheus".into()),
                    action: HttpRouteAction::DirectResponse {
                        status: 200,
                        body: Some("prom".into()),
                    },
                },
            ],
        }]);
        assert_eq!(body(&t, "h", "/exact?q=1").as_deref(), Some("exact"));
        assert!(t.route("h", "/exactly").is_none());
        assert_eq!(
            body(&t, "h", "/stats/prometheus?x").as_deref(),
            Some("prom")
        );
        assert!(t.route("h", "/Stats/prometheus").is_none());
        let r = t.route("h", "/exact?q=1").unwrap();
        assert_eq!(r.rewrite("/exact?q=1", "/ex"), "/ex?q=1");
    }
}
