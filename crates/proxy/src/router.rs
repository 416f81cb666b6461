//! Prefix routes (Envoy's `redis_proxy/router_impl`): longest matching prefix, optional case
//! folding, prefix removal and key formatting, mirror policies and the read-command policy.

use std::borrow::Cow;

use rand::Rng;
use redvoy_config::model;
use redvoy_runtime::Runtime;

/// A mirror policy with its cluster resolved to a pool index.
#[derive(Debug, Clone)]
pub(crate) struct MirrorPolicy {
    pub pool: usize,
    pub exclude_read_commands: bool,
    /// The runtime fraction: runtime key, default numerator and denominator; `None` = always.
    pub fraction: Option<(String, u32, u32)>,
}

impl MirrorPolicy {
    /// Envoy's `shouldMirror`: the read exclusion, then the runtime fraction (the runtime key
    /// overrides the default as in Envoy's `featureEnabled`).
    pub(crate) fn should_mirror(&self, is_read: bool, runtime: &Runtime) -> bool {
        if self.exclude_read_commands && is_read {
            return false;
        }
        match &self.fraction {
            None => true,
            Some((key, numerator, denominator)) => runtime.snapshot().feature_enabled(
                key,
                *numerator,
                *denominator,
                rand::thread_rng().gen(),
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// Lowercased when the routes are case-insensitive.
    pub prefix: Vec<u8>,
    pub remove_prefix: bool,
    pub pool: usize,
    pub read_pool: Option<usize>,
    pub mirrors: Vec<MirrorPolicy>,
    /// The key formatter split around each `%KEY%`.
    pub key_format: Option<Vec<Vec<u8>>>,
}

impl Route {
    /// The pool for a command on this route (read_command_policy sends reads elsewhere).
    pub(crate) fn pool_for(&self, is_read: bool) -> usize {
        match self.read_pool {
            Some(p) if is_read => p,
            _ => self.pool,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Router {
    /// Sorted by descending prefix length, so the first match is the longest.
    routes: Vec<Route>,
    case_insensitive: bool,
    catch_all: Option<Route>,
}

impl Router {
    pub(crate) fn new(
        config: &model::PrefixRoutes,
        mut pool_of: impl FnMut(&str) -> usize,
    ) -> Router {
        let mut compile = |r: &model::Route| -> Route {
            let prefix = if config.case_insensitive {
                r.prefix.to_lowercase().into_bytes()
            } else {
                r.prefix.clone().into_bytes()
            };
            Route {
                prefix,
                remove_prefix: r.remove_prefix,
                pool: pool_of(&r.cluster),
                read_pool: r.read_command_cluster.as_deref().map(&mut pool_of),
                mirrors: r
                    .request_mirror_policy
                    .iter()
                    .map(|m| MirrorPolicy {
                        pool: pool_of(&m.cluster),
                        exclude_read_commands: m.exclude_read_commands,
                        fraction: m
                            .runtime_fraction
                            .as_ref()
                            .map(|f| (f.runtime_key.clone(), f.numerator, f.denominator)),
                    })
                    .collect(),
                key_format: r.key_formatter.as_ref().filter(|f| !f.is_empty()).map(|f| {
                    f.split("%KEY%")
                        .map(|part| part.as_bytes().to_vec())
                        .collect()
                }),
            }
        };
        let mut routes: Vec<Route> = config.routes.iter().map(&mut compile).collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let catch_all = config.catch_all_route.as_ref().map(compile);
        Router {
            routes,
            case_insensitive: config.case_insensitive,
            catch_all,
        }
    }

    /// Finds the route for `key` and returns it with the key as it must be forwarded.
    pub(crate) fn route<'k>(&self, key: &'k [u8]) -> Option<(&Route, Cow<'k, [u8]>)> {
        let found = self
            .routes
            .iter()
            .find(|r| {
                key.len() >= r.prefix.len()
                    && if self.case_insensitive {
                        key[..r.prefix.len()].eq_ignore_ascii_case(&r.prefix)
                    } else {
                        key.starts_with(&r.prefix)
                    }
            })
            .or(self.catch_all.as_ref())?;
        let mut key = Cow::Borrowed(key);
        if found.remove_prefix && !found.prefix.is_empty() {
            key = match key {
                Cow::Borrowed(k) => Cow::Borrowed(&k[found.prefix.len()..]),
                Cow::Owned(k) => Cow::Owned(k[found.prefix.len()..].to_vec()),
            };
        }
        if let Some(parts) = &found.key_format {
            let mut formatted = Vec::with_capacity(key.len() + 16);
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    formatted.extend_from_slice(&key);
                }
                formatted.extend_from_slice(part);
            }
            // Envoy keeps the key unchanged when formatting yields nothing.
            if !formatted.is_empty() {
                key = Cow::Owned(formatted);
            }
        }
        Some((found, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, cluster: &str, remove: bool) -> model::Route {
        model::Route {
            prefix: prefix.into(),
            remove_prefix: remove,
            cluster: cluster.into(),
            request_mirror_policy: vec![],
            key_formatter: None,
            read_command_cluster: None,
        }
    }

    fn pools(name: &str) -> usize {
        match name {
            "a" => 0,
            "b" => 1,
            _ => 2,
        }
    }

    #[test]
    fn longest_prefix_wins_and_removal() {
        let cfg = model::PrefixRoutes {
            routes: vec![route("ab", "a", false), route("abc", "b", true)],
            case_insensitive: false,
            catch_all_route: Some(route("", "c", false)),
        };
        let r = Router::new(&cfg, pools);
        let (rt, k) = r.route(b"abcd").unwrap();
        assert_eq!((rt.pool, &*k), (1, &b"d"[..]));
        let (rt, k) = r.route(b"abx").unwrap();
        assert_eq!((rt.pool, &*k), (0, &b"abx"[..]));
        let (rt, _) = r.route(b"zzz").unwrap();
        assert_eq!(rt.pool, 2);
        let (rt, _) = r.route(b"ABC").unwrap();
        assert_eq!(rt.pool, 2);
    }

    #[test]
    fn case_insensitive_keeps_key_case() {
        let cfg = model::PrefixRoutes {
            routes: vec![route("AB:", "a", false)],
            case_insensitive: true,
            catch_all_route: None,
        };
        let r = Router::new(&cfg, pools);
        let (rt, k) = r.route(b"aB:X").unwrap();
        assert_eq!((rt.pool, &*k), (0, &b"aB:X"[..]));
        assert!(r.route(b"zz").is_none());
    }

    #[test]
    fn key_formatter() {
        let mut rt = route("", "a", false);
        rt.key_formatter = Some("{%KEY%}-suffix".into());
        let cfg = model::PrefixRoutes {
            routes: vec![rt],
            ..Default::default()
        };
        let r = Router::new(&cfg, pools);
        let (_, k) = r.route(b"foo").unwrap();
        assert_eq!(&*k, b"{foo}-suffix");
    }
}
