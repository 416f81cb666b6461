//! Envoy's tag extraction (`source/common/stats/tag_producer_impl.cc`, `tag_extractor_impl.cc`,
//! defaults from `source/common/config/well_known_names.cc`): each stat's full name is split,
//! once, into a tag-extracted name and a list of tags, which `/stats/prometheus` renders as the
//! metric name and its labels.
//!
//! Semantics kept from Envoy:
//! - every extractor looks at the original full name; the characters they claim are removed
//!   together at the end;
//! - extractors without a leading literal token run first, in configuration order, then those
//!   registered under the name's first `.`-token, in configuration order; tags are listed in
//!   that order (so `envoy_worker_id` comes before `envoy_listener_address`);
//! - when several extractors share a tag name, the first that matches wins;
//! - defaults come first (regex descriptors, then tokenized ones), then `stats_tags`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::options::{StatsError, TagSpecifier};
use crate::regex_dialect;

/// One tag of a stat: `envoy.cluster_name` = `redis_cluster`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag {
    pub name: String,
    pub value: String,
}

/// Tag regexes are compiled with this automaton size limit: configuration is refused above it.
const TAG_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Backtracking steps a look-around tag regex may take on one name before it counts as not
/// matching (fancy-regex's default is 1,000,000; stat names are short, so this is generous).
const TAG_REGEX_BACKTRACK_LIMIT: usize = 100_000;

// Substitutions Envoy applies to its default regexes (`expandRegex`). Written with ASCII classes
// because RE2's `\d` and `\w` are ASCII.
const TAG_VALUE: &str = r"[^\.]+";
const ADDRESS: &str =
    r"(?:(?:[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|\[[a-fA-F_0-9]+\])_[0-9]+)";
const CIPHER: &str = r"[0-9A-Za-z_\-]+";
const TLS_VERSION: &str = r"TLSv[0-9]\.[0-9]";
const ROUTE_CONFIG_NAME: &str = r"[0-9A-Za-z_\-\.]+";
const LISTENER_OR_CLUSTER_WITH_NAME: &str = r"(?:listener|cluster)\..*?";

fn expand(regex: &str) -> String {
    regex
        .replace("<ADDRESS>", ADDRESS)
        .replace("<CIPHER>", CIPHER)
        .replace("<TLS_VERSION>", TLS_VERSION)
        .replace("<TAG_VALUE>", TAG_VALUE)
        .replace("<ROUTE_CONFIG_NAME>", ROUTE_CONFIG_NAME)
        .replace(
            "<LISTENER_OR_CLUSTER_WITH_NAME>",
            LISTENER_OR_CLUSTER_WITH_NAME,
        )
}

/// Envoy's default regex extractors: (tag name, RE2 regex, required substring, value that does
/// not count as a match). Order as in `TagNameValues::TagNameValues()`; the last two exist in
/// Envoy 1.40's binary, their place in the list is not known (it only matters for a stat that
/// two of these match, which cannot happen with these names).
const DEFAULT_REGEXES: &[(&str, &str, &str, &str)] = &[
    ("envoy.response_code", r"_rq(_([0-9]{3}))$", "_rq_", ""),
    ("envoy.response_code_class", r"_rq_(([0-9]))xx$", "_rq_", ""),
    (
        "envoy.dynamo_partition_id",
        r"^http\.<TAG_VALUE>\.dynamodb\.table\.<TAG_VALUE>\.capacity\.<TAG_VALUE>(\.__partition_id=([0-9A-Za-z_]{7}))$",
        ".dynamodb.table.",
        "",
    ),
    (
        "envoy.dynamo_operation",
        r"^http\.<TAG_VALUE>\.dynamodb.(?:operation|table\.<TAG_VALUE>\.capacity)(\.(<TAG_VALUE>))(?:\.|$)",
        ".dynamodb.",
        "",
    ),
    (
        "envoy.dynamo_table",
        r"^http\.<TAG_VALUE>\.dynamodb.(?:table|error)\.((<TAG_VALUE>)\.)",
        ".dynamodb.",
        "",
    ),
    (
        "envoy.ssl_cipher",
        r"^listener\..*?\.ssl\.ciphers(\.(<CIPHER>))$",
        ".ssl.ciphers.",
        "",
    ),
    (
        "envoy.ssl_curve",
        r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.curves(\.(<CIPHER>))$",
        ".ssl.curves.",
        "",
    ),
    (
        "envoy.ssl_sigalg",
        r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.sigalgs(\.(<CIPHER>))$",
        ".ssl.sigalgs.",
        "",
    ),
    (
        "envoy.ssl_version",
        r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.versions(\.(<TLS_VERSION>))$",
        ".ssl.versions.",
        "",
    ),
    (
        "cipher_suite",
        r"^cluster\.<TAG_VALUE>\.ssl\.ciphers(\.(<CIPHER>))$",
        ".ssl.ciphers.",
        "",
    ),
    (
        "envoy.http_conn_manager_prefix",
        r"^listener\..*?\.http\.((<TAG_VALUE>)\.)",
        ".http.",
        "",
    ),
    (
        "envoy.worker_id",
        r"^(?:listener\.(?:<ADDRESS>|<TAG_VALUE>)|server|listener_manager|thread_local_cluster_manager)\.worker_(([0-9]+)\.)",
        "",
        "",
    ),
    (
        "envoy.listener_address",
        r"^listener\.((<ADDRESS>|<TAG_VALUE>)\.)",
        "",
        "admin",
    ),
    (
        "envoy.rds_route_config",
        r"^http\.<TAG_VALUE>\.rds\.((<ROUTE_CONFIG_NAME>)\.)[0-9A-Za-z_]+?$",
        ".rds.",
        "",
    ),
    (
        "envoy.health_check_name",
        r"^cluster\.<TAG_VALUE>\.health_check(\.name\.(<TAG_VALUE>))\..+",
        ".health_check.name.",
        "",
    ),
    (
        "envoy.tls_certificate",
        r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.certificate\.((<TAG_VALUE>)\.).*$",
        ".ssl.certificate.",
        "",
    ),
];

/// Envoy's default tokenized extractors: `$` is the tag value, `*` any one token, `**` any run.
const DEFAULT_TOKENS: &[(&str, &str)] = &[
    (
        "envoy.mongo_callsite",
        "mongo.*.collection.*.callsite.$.query.**",
    ),
    ("envoy.mongo_collection", "mongo.*.collection.$.**.query.*"),
    ("envoy.mongo_cmd", "mongo.*.cmd.$.**"),
    ("envoy.grpc_bridge_method", "cluster.*.grpc.*.$.**"),
    ("envoy.http_user_agent", "http.*.user_agent.$.**"),
    ("envoy.virtual_cluster", "vhost.*.vcluster.$.**"),
    ("envoy.fault_downstream_cluster", "http.*.fault.$.**"),
    ("envoy.grpc_bridge_service", "cluster.*.grpc.$.**"),
    ("envoy.tcp_prefix", "tcp.$.**"),
    ("envoy.udp_prefix", "udp.$.**"),
    ("envoy.clientssl_prefix", "auth.clientssl.$.**"),
    ("envoy.ratelimit_prefix", "ratelimit.$.**"),
    ("envoy.cluster_name", "cluster.$.**"),
    ("envoy.ext_authz_prefix", "cluster.*.ext_authz.$.**"),
    ("envoy.ext_authz_prefix", "http.*.ext_authz.$.**"),
    ("envoy.http_conn_manager_prefix", "http.$.**"),
    ("envoy.virtual_host", "vhost.$.**"),
    ("envoy.mongo_prefix", "mongo.$.**"),
    ("envoy.route", "vhost.*.route.$.**"),
    ("envoy.thrift_prefix", "thrift.$.**"),
    ("envoy.redis_prefix", "redis.$.**"),
    (
        "envoy.local_http_ratelimit_prefix",
        "$.http_local_rate_limit.**",
    ),
    (
        "envoy.local_network_ratelimit_prefix",
        "local_rate_limit.$.**",
    ),
    (
        "envoy.local_listener_ratelimit_prefix",
        "listener_local_ratelimit.$.**",
    ),
    ("envoy.dns_filter_prefix", "dns_filter.$.**"),
    ("envoy.connection_limit_prefix", "connection_limit.$.**"),
];

#[derive(Debug)]
enum Matcher {
    /// Envoy's own extractors (RE2): the match needs a non-empty group 1. `None` never matches
    /// (a built-in pattern the engine refused; a test keeps that from happening).
    Re2(Option<regex::Regex>),
    /// User extractors (`std::regex`, ECMAScript): any match with at least one group.
    Std(fancy_regex::Regex),
    Tokens {
        tokens: Vec<String>,
        /// Index of `$` in `tokens`.
        value_at: usize,
    },
    Fixed(String),
}

#[derive(Debug)]
struct Extractor {
    name: String,
    /// The first token a name must have for this extractor to run; empty: runs on every name.
    prefix: String,
    /// A substring the name must contain (a cheap pre-filter, as in Envoy).
    substr: &'static str,
    /// A tag value that does not count as a match (`admin` for the listener address).
    negative: &'static str,
    matcher: Matcher,
}

/// Computes (tag-extracted name, tags) for stat names.
#[derive(Debug)]
pub(crate) struct TagProducer {
    extractors: Vec<Arc<Extractor>>,
    /// Extractors that run on every name, in order.
    without_prefix: Vec<usize>,
    /// Extractors keyed by the first token of the names they apply to, in order.
    by_prefix: HashMap<String, Vec<usize>>,
    /// Per extractor: another extractor has the same tag name.
    shared_name: Vec<bool>,
}

// === impl TagProducer ===

impl TagProducer {
    pub(crate) fn new(
        specs: &[TagSpecifier],
        use_all_default_tags: bool,
    ) -> Result<Self, StatsError> {
        let mut extractors: Vec<Arc<Extractor>> = Vec::new();
        if use_all_default_tags {
            extractors.extend(defaults().iter().cloned());
        }
        for spec in specs {
            if spec.tag_name.is_empty() {
                return Err(StatsError::EmptyTagName);
            }
            let regex = spec.regex.as_deref().filter(|r| !r.is_empty());
            match (regex, spec.fixed_value.as_deref()) {
                (Some(_), Some(_)) => {
                    return Err(StatsError::RegexAndFixedValue(spec.tag_name.clone()))
                }
                (None, Some(value)) => extractors.push(Arc::new(Extractor {
                    name: spec.tag_name.clone(),
                    // Envoy derives a fixed extractor's prefix from its value as if it were a
                    // regex; a value like `^a\.b` would limit it to `a.` names there too.
                    prefix: regex_prefix(value),
                    substr: "",
                    negative: "",
                    matcher: Matcher::Fixed(value.to_owned()),
                })),
                (Some(regex), None) => {
                    extractors.push(Arc::new(Extractor::std(&spec.tag_name, regex)?))
                }
                (None, None) => {
                    let found: Vec<Arc<Extractor>> = defaults()
                        .iter()
                        .filter(|e| e.name == spec.tag_name)
                        .cloned()
                        .collect();
                    if found.is_empty() {
                        return Err(StatsError::NoDefaultRegex(spec.tag_name.clone()));
                    }
                    extractors.extend(found);
                }
            }
        }
        let mut without_prefix = Vec::new();
        let mut by_prefix: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, e) in extractors.iter().enumerate() {
            if e.prefix.is_empty() {
                without_prefix.push(i);
            } else {
                by_prefix.entry(e.prefix.clone()).or_default().push(i);
            }
        }
        let shared_name = extractors
            .iter()
            .enumerate()
            .map(|(i, e)| {
                extractors
                    .iter()
                    .enumerate()
                    .any(|(j, o)| j != i && o.name == e.name)
            })
            .collect();
        Ok(Self {
            extractors,
            without_prefix,
            by_prefix,
            shared_name,
        })
    }

    /// No extractors at all: names stay whole, no tags.
    pub(crate) fn empty() -> Self {
        Self {
            extractors: Vec::new(),
            without_prefix: Vec::new(),
            by_prefix: HashMap::new(),
            shared_name: Vec::new(),
        }
    }

    /// Envoy's `produceTags`: the tag-extracted name and the tags, in extraction order.
    pub(crate) fn produce(&self, name: &str) -> (String, Vec<Tag>) {
        let mut tags = Vec::new();
        let mut removed: Vec<(usize, usize)> = Vec::new();
        let mut matched_shared: Vec<&str> = Vec::new();
        let tokens: Vec<&str> = name.split('.').collect();
        let keyed = name
            .split_once('.')
            .and_then(|(first, _)| self.by_prefix.get(first))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for &i in self.without_prefix.iter().chain(keyed) {
            let e = &self.extractors[i];
            let shared = self.shared_name[i];
            if shared && matched_shared.contains(&e.name.as_str()) {
                continue;
            }
            if let Some((value, range)) = e.extract(name, &tokens) {
                tags.push(Tag {
                    name: e.name.clone(),
                    value,
                });
                if let Some(range) = range {
                    removed.push(range);
                }
                if shared {
                    matched_shared.push(&e.name);
                }
            }
        }
        let mut out = String::with_capacity(name.len());
        for (i, c) in name.char_indices() {
            if !removed.iter().any(|&(s, e)| (s..e).contains(&i)) {
                out.push(c);
            }
        }
        (out, tags)
    }
}

// === impl Extractor ===

impl Extractor {
    fn re2(name: &str, regex: &str, substr: &'static str, negative: &'static str) -> Self {
        let expanded = expand(regex);
        // The built-in patterns are constants and compile (a test checks every one); should
        // that ever break, a never-matching extractor keeps stats working without the tag.
        let re = regex::RegexBuilder::new(&expanded)
            .size_limit(TAG_REGEX_SIZE_LIMIT)
            .build()
            .ok();
        Self {
            name: name.to_owned(),
            prefix: regex_prefix(&expanded),
            substr,
            negative,
            matcher: Matcher::Re2(re),
        }
    }

    fn std(name: &str, regex: &str) -> Result<Self, StatsError> {
        let re = fancy_regex::RegexBuilder::new(&regex_dialect::ecmascript(regex))
            .delegate_size_limit(TAG_REGEX_SIZE_LIMIT)
            .backtrack_limit(TAG_REGEX_BACKTRACK_LIMIT)
            .build()
            .map_err(|e| StatsError::InvalidTagRegex {
                regex: regex.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            name: name.to_owned(),
            prefix: regex_prefix(regex),
            substr: "",
            negative: "",
            matcher: Matcher::Std(re),
        })
    }

    fn tokens(name: &str, pattern: &str) -> Self {
        let tokens: Vec<String> = pattern.split('.').map(str::to_owned).collect();
        let value_at = tokens.iter().position(|t| t == "$").unwrap_or(0);
        let prefix = match tokens.first().map(String::as_str) {
            Some("$" | "*" | "**") | None => String::new(),
            Some(first) => first.to_owned(),
        };
        Self {
            name: name.to_owned(),
            prefix,
            substr: "",
            negative: "",
            matcher: Matcher::Tokens { tokens, value_at },
        }
    }

    /// The tag value and the byte range to remove from the name, when this extractor applies.
    fn extract(&self, name: &str, tokens: &[&str]) -> Option<(String, Option<(usize, usize)>)> {
        if !self.substr.is_empty() && !name.contains(self.substr) {
            return None;
        }
        match &self.matcher {
            Matcher::Fixed(value) => Some((value.clone(), None)),
            Matcher::Re2(re) => {
                let caps = re.as_ref()?.captures(name)?;
                let remove = caps.get(1).filter(|m| !m.is_empty())?;
                let value = caps
                    .get(2)
                    .filter(|m| !m.is_empty())
                    .unwrap_or(remove)
                    .as_str();
                if !self.negative.is_empty() && value == self.negative {
                    return None;
                }
                Some((value.to_owned(), Some((remove.start(), remove.end()))))
            }
            Matcher::Std(re) => {
                // A regex that gives up (backtrack limit) counts as not matching.
                let caps = re.captures(name).ok().flatten()?;
                let groups = re.captures_len();
                if groups < 2 {
                    return None;
                }
                let remove = caps.get(1);
                // std::regex: group 2's text when the regex has a group 2 (empty if it did not
                // participate), otherwise group 1's.
                let value = if groups > 2 {
                    caps.get(2).map_or("", |m| m.as_str())
                } else {
                    remove.map_or("", |m| m.as_str())
                };
                // A group 1 that did not participate sits at the end: nothing is removed.
                let range = remove.map_or((name.len(), name.len()), |m| (m.start(), m.end()));
                Some((value.to_owned(), Some(range)))
            }
            Matcher::Tokens {
                tokens: pattern,
                value_at,
            } => {
                let mut start = 0;
                let mut value_index = tokens.len();
                if !search_tokens(
                    pattern,
                    *value_at,
                    tokens,
                    0,
                    0,
                    0,
                    &mut start,
                    &mut value_index,
                ) {
                    return None;
                }
                let value = tokens.get(value_index)?;
                let mut end = start + value.len();
                // Remove the value with the dot that follows it, or the one before it when it
                // is the last token.
                if value_index + 1 < tokens.len() {
                    end += 1;
                } else {
                    start = start.saturating_sub(1);
                }
                Some(((*value).to_owned(), Some((start, end))))
            }
        }
    }
}

/// Envoy's `TagExtractorTokensImpl::searchTags`, including its bookkeeping: `char_index` is not
/// advanced over the `$` token, which only matters after `$`, where nothing reads it.
#[allow(clippy::too_many_arguments)]
fn search_tokens(
    pattern: &[String],
    value_at: usize,
    input: &[&str],
    mut input_index: usize,
    mut pattern_index: usize,
    mut char_index: usize,
    start: &mut usize,
    value_index: &mut usize,
) -> bool {
    while input_index < input.len() && pattern_index < pattern.len() {
        if pattern_index == value_at {
            *start = char_index;
            *value_index = input_index;
        } else {
            let expected = pattern[pattern_index].as_str();
            if expected == "**" {
                if pattern_index == pattern.len() - 1 {
                    return true;
                }
                // `**` in the middle: the rest of the pattern must match from some later token.
                pattern_index += 1;
                while input_index < input.len() {
                    if search_tokens(
                        pattern,
                        value_at,
                        input,
                        input_index,
                        pattern_index,
                        char_index,
                        start,
                        value_index,
                    ) {
                        return true;
                    }
                    char_index += input[input_index].len() + 1;
                    input_index += 1;
                }
                return false;
            }
            let token = input[input_index];
            if expected != "*" && expected != token {
                return false;
            }
            char_index += token.len() + 1;
        }
        input_index += 1;
        pattern_index += 1;
    }
    pattern_index == pattern.len() && input_index == input.len()
}

/// Envoy's `extractRegexPrefix`: for `^word\.` or `^word(?=\.)` (or `^word$`), `word`.
fn regex_prefix(regex: &str) -> String {
    let Some(rest) = regex.strip_prefix('^') else {
        return String::new();
    };
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    if end == 0 || end == rest.len() {
        return String::new();
    }
    let after = &rest[end..];
    let dotted = after.starts_with("\\.") || after.starts_with("(?=\\.)");
    if dotted || after == "$" {
        rest[..end].to_owned()
    } else {
        String::new()
    }
}

/// The default extractors, compiled once per process and shared by every store.
fn defaults() -> &'static [Arc<Extractor>] {
    static DEFAULTS: OnceLock<Vec<Arc<Extractor>>> = OnceLock::new();
    DEFAULTS.get_or_init(|| {
        DEFAULT_REGEXES
            .iter()
            .map(|&(name, re, substr, neg)| Arc::new(Extractor::re2(name, re, substr, neg)))
            .chain(
                DEFAULT_TOKENS
                    .iter()
                    .map(|&(name, pattern)| Arc::new(Extractor::tokens(name, pattern))),
            )
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, regex: &str) -> TagSpecifier {
        TagSpecifier {
            tag_name: name.into(),
            regex: Some(regex.into()),
            fixed_value: None,
        }
    }

    fn tags(p: &TagProducer, name: &str) -> (String, Vec<(String, String)>) {
        let (n, t) = p.produce(name);
        (n, t.into_iter().map(|t| (t.name, t.value)).collect())
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn every_default_regex_compiles() {
        for &(name, re, _, _) in DEFAULT_REGEXES {
            regex::Regex::new(&expand(re)).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    // Each expectation below was read from Envoy 1.40's /stats/prometheus.
    #[test]
    fn defaults_match_envoy_1_40() {
        let p = TagProducer::new(&[], true).unwrap();
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
        let cases: &[Case<'_>] = &[
            (
                "redis.egress_redis.command.get.total",
                "redis.command.get.total",
                &[("envoy.redis_prefix", "egress_redis")],
            ),
            (
                "cluster.redis_cluster.redis_cluster.upstream_commands.get.total",
                "cluster.redis_cluster.upstream_commands.get.total",
                &[("envoy.cluster_name", "redis_cluster")],
            ),
            (
                "cluster.down-cluster.upstream_cx_total",
                "cluster.upstream_cx_total",
                &[("envoy.cluster_name", "down-cluster")],
            ),
            (
                "listener.127.0.0.1_43981.downstream_cx_total",
                "listener.downstream_cx_total",
                &[("envoy.listener_address", "127.0.0.1_43981")],
            ),
            (
                "listener.127.0.0.1_43981.worker_1.downstream_cx_total",
                "listener.worker_downstream_cx_total",
                &[
                    ("envoy.worker_id", "1"),
                    ("envoy.listener_address", "127.0.0.1_43981"),
                ],
            ),
            (
                "listener.admin.downstream_cx_total",
                "listener.admin.downstream_cx_total",
                &[],
            ),
            (
                "server.worker_0.watchdog_miss",
                "server.worker_watchdog_miss",
                &[("envoy.worker_id", "0")],
            ),
            (
                "http.admin.downstream_rq_2xx",
                "http.downstream_rq_xx",
                &[
                    ("envoy.response_code_class", "2"),
                    ("envoy.http_conn_manager_prefix", "admin"),
                ],
            ),
            (
                "http.async-client.no_route",
                "http.no_route",
                &[("envoy.http_conn_manager_prefix", "async-client")],
            ),
            (
                "listener_manager.listener_added",
                "listener_manager.listener_added",
                &[],
            ),
            ("server.live", "server.live", &[]),
        ];
        for (name, extracted, want) in cases {
            assert_eq!(
                tags(&p, name),
                ((*extracted).to_owned(), pairs(want)),
                "{name}"
            );
        }
    }

    #[test]
    fn ipv6_listener_address_and_stat_prefix_listeners() {
        let p = TagProducer::new(&[], true).unwrap();
        assert_eq!(
            tags(&p, "listener.[__1]_6379.downstream_cx_total"),
            (
                "listener.downstream_cx_total".to_owned(),
                pairs(&[("envoy.listener_address", "[__1]_6379")])
            )
        );
        assert_eq!(
            tags(&p, "listener.my_prefix.downstream_cx_active"),
            (
                "listener.downstream_cx_active".to_owned(),
                pairs(&[("envoy.listener_address", "my_prefix")])
            )
        );
    }

    #[test]
    fn a_dotted_stat_prefix_is_only_partly_captured() {
        let p = TagProducer::new(&[], true).unwrap();
        assert_eq!(
            tags(&p, "redis.a.b.command.get.total"),
            (
                "redis.b.command.get.total".to_owned(),
                pairs(&[("envoy.redis_prefix", "a")])
            )
        );
    }

    #[test]
    fn tokens_follow_envoys_search() {
        let pattern = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
        let run = |p: &str, name: &str| {
            let pat = pattern(p);
            let at = pat.iter().position(|t| t == "$").unwrap();
            let input: Vec<&str> = name.split('.').collect();
            let (mut start, mut idx) = (0, input.len());
            search_tokens(&pat, at, &input, 0, 0, 0, &mut start, &mut idx)
                .then(|| (start, input[idx].to_owned()))
        };
        assert_eq!(run("redis.$.**", "redis.p.x"), Some((6, "p".into())));
        assert_eq!(run("redis.$.**", "redis.p"), None, "`**` needs a token");
        assert_eq!(run("redis.$.**", "tcp.p.x"), None);
        assert_eq!(
            run(
                "mongo.*.collection.$.**.query.*",
                "mongo.m.collection.c.a.b.query.x"
            ),
            Some((19, "c".into()))
        );
        assert_eq!(
            run("$.http_local_rate_limit.**", "p.http_local_rate_limit.ok"),
            Some((0, "p".into()))
        );
        // The value as the last token removes the dot before it.
        let e = Extractor::tokens("t", "a.$");
        let input: Vec<&str> = "a.v".split('.').collect();
        assert_eq!(
            e.extract("a.v", &input),
            Some(("v".to_owned(), Some((1, 3))))
        );
    }

    #[test]
    fn use_all_default_tags_false_disables_defaults() {
        let p = TagProducer::new(&[], false).unwrap();
        assert_eq!(
            tags(&p, "cluster.c.upstream_cx_total"),
            ("cluster.c.upstream_cx_total".to_owned(), vec![])
        );
        // A named default can be brought back alone.
        let only = TagProducer::new(
            &[TagSpecifier {
                tag_name: "envoy.redis_prefix".into(),
                ..TagSpecifier::default()
            }],
            false,
        )
        .unwrap();
        assert_eq!(
            tags(&only, "redis.p.downstream_cx_total").1,
            pairs(&[("envoy.redis_prefix", "p")])
        );
        assert_eq!(tags(&only, "cluster.c.x").1, vec![]);
    }

    #[test]
    fn fixed_values_and_errors() {
        let p = TagProducer::new(
            &[TagSpecifier {
                tag_name: "pod".into(),
                regex: None,
                fixed_value: Some("redis-0".into()),
            }],
            true,
        )
        .unwrap();
        assert_eq!(
            tags(&p, "redis.p.downstream_cx_total"),
            (
                "redis.downstream_cx_total".to_owned(),
                // Fixed tags have no prefix token, so they run (and are listed) first.
                pairs(&[("pod", "redis-0"), ("envoy.redis_prefix", "p")])
            )
        );
        assert_eq!(
            TagProducer::new(&[spec("", "x")], true).unwrap_err(),
            StatsError::EmptyTagName
        );
        assert_eq!(
            TagProducer::new(
                &[TagSpecifier {
                    tag_name: "nope".into(),
                    ..TagSpecifier::default()
                }],
                true
            )
            .unwrap_err()
            .to_string(),
            "No regex specified for tag specifier and no default regex for name: 'nope'"
        );
        assert!(matches!(
            TagProducer::new(&[spec("bad", "(")], true).unwrap_err(),
            StatsError::InvalidTagRegex { .. }
        ));
    }

    #[test]
    fn std_regex_groups_follow_std_regex() {
        // One group: it is both removed and the value.
        let p = TagProducer::new(&[spec("one", r"(ab\.)")], false).unwrap();
        assert_eq!(
            tags(&p, "x.ab.y"),
            ("x.y".to_owned(), pairs(&[("one", "ab.")]))
        );
        // No group: a match is not enough.
        let p = TagProducer::new(&[spec("none", r"ab")], false).unwrap();
        assert_eq!(tags(&p, "x.ab.y"), ("x.ab.y".to_owned(), vec![]));
        // A group 2 that does not take part gives an empty value.
        let p = TagProducer::new(&[spec("opt", r"(x\.(q)?)")], false).unwrap();
        assert_eq!(tags(&p, "x.ab"), ("ab".to_owned(), pairs(&[("opt", "")])));
        // Look-ahead, as in Istio's listener patterns.
        let p = TagProducer::new(&[spec("la", r"^a(?=\.)\.(b)")], false).unwrap();
        assert_eq!(
            tags(&p, "a.b.c"),
            ("a..c".to_owned(), pairs(&[("la", "b")]))
        );
    }

    #[test]
    fn shared_tag_names_take_the_first_match() {
        // Istio adds its own response_code regex next to Envoy's default one.
        let p = TagProducer::new(&[spec("envoy.response_code", r"_rq(_(\d{3}))$")], true).unwrap();
        let (name, t) = tags(&p, "http.admin.downstream_rq_200");
        assert_eq!(name, "http.downstream_rq");
        assert_eq!(
            t,
            pairs(&[
                ("envoy.response_code", "200"),
                ("envoy.http_conn_manager_prefix", "admin")
            ])
        );
    }

    #[test]
    fn regex_prefix_follows_envoy() {
        assert_eq!(regex_prefix(r"^cluster\.((.*?)\.)"), "cluster");
        assert_eq!(regex_prefix(r"^listener(?=\.).*?\.http\."), "listener");
        assert_eq!(regex_prefix(r"^cluster(\.(.+);)"), "");
        assert_eq!(regex_prefix(r"^(?:listener|server)\."), "");
        assert_eq!(regex_prefix(r"_rq(_(\d{3}))$"), "");
        assert_eq!(regex_prefix(r"^abc$"), "abc");
        assert_eq!(regex_prefix(r"^abc"), "");
    }
}
