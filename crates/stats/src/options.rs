//! The bootstrap's `stats_config` as this crate takes it: tag specifiers, whether Envoy's default
//! tag extractors apply, and the stats matcher. The config crate converts the proto into these
//! types; `Store::with_options` validates and compiles them.

use crate::regex_dialect;

/// `envoy.config.metrics.v3.StatsConfig`, the parts the store implements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsOptions {
    /// `stats_tags`, in configuration order (the order extractors run in and tags are listed).
    pub tags: Vec<TagSpecifier>,
    /// `use_all_default_tags`; unset in the proto means true.
    pub use_all_default_tags: bool,
    /// `stats_matcher`.
    pub matcher: StatsMatcher,
}

impl Default for StatsOptions {
    fn default() -> Self {
        Self {
            tags: Vec::new(),
            use_all_default_tags: true,
            matcher: StatsMatcher::AcceptAll,
        }
    }
}

/// `envoy.config.metrics.v3.TagSpecifier`. With neither `regex` nor `fixed_value`, the tag name
/// must be one of Envoy's default tags (`envoy.cluster_name`, ...) and its default extractors
/// are used; an empty `regex` counts as unset, as in Envoy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagSpecifier {
    pub tag_name: String,
    /// An ECMAScript regex: capture group 1 is removed from the name, group 2 (or 1 when there
    /// is no group 2) is the tag value.
    pub regex: Option<String>,
    /// Adds this tag to every stat, removing nothing.
    pub fixed_value: Option<String>,
}

/// `envoy.config.metrics.v3.StatsMatcher`: which stats are instantiated at all. Rejected stats
/// still hand out working handles; they are just never registered or rendered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StatsMatcher {
    #[default]
    AcceptAll,
    /// `reject_all: true`.
    RejectAll,
    /// `inclusion_list`: only stats whose full name matches one of these.
    Inclusion(Vec<StringMatcher>),
    /// `exclusion_list`: every stat except those whose full name matches one of these.
    Exclusion(Vec<StringMatcher>),
}

/// `envoy.type.matcher.v3.StringMatcher` applied to a stat's full name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    /// `safe_regex`: RE2 syntax, the whole name must match (Envoy's `FullMatch`).
    Regex(String),
    /// `ignore_case: true` around another matcher: ASCII case folding for exact, prefix, suffix
    /// and contains. Envoy ignores the flag for `safe_regex`, and so does this.
    IgnoreCase(Box<StringMatcher>),
}

impl StringMatcher {
    /// This matcher with `ignore_case: true`.
    pub fn ignoring_case(self) -> Self {
        match self {
            m @ StringMatcher::IgnoreCase(_) => m,
            m => StringMatcher::IgnoreCase(Box::new(m)),
        }
    }
}

/// A `stats_config` the store refuses, with Envoy's wording where Envoy has one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatsError {
    #[error("tag_name cannot be empty")]
    EmptyTagName,
    #[error("No regex specified for tag specifier and no default regex for name: '{0}'")]
    NoDefaultRegex(String),
    #[error("tag specifier '{0}' has both a regex and a fixed_value")]
    RegexAndFixedValue(String),
    #[error("Invalid regex '{regex}': {reason}")]
    InvalidTagRegex { regex: String, reason: String },
    #[error("stats_matcher: invalid regex '{regex}': {reason}")]
    InvalidMatcherRegex { regex: String, reason: String },
}

/// Regexes in the stats matcher are compiled with this size limit; a larger automaton is
/// refused at configuration time rather than slowing every stat creation.
const MATCHER_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// `StatsMatcher` ready to test names.
#[derive(Debug)]
pub(crate) enum CompiledMatcher {
    AcceptAll,
    RejectAll,
    Inclusion(Vec<CompiledString>),
    Exclusion(Vec<CompiledString>),
}

#[derive(Debug)]
pub(crate) enum CompiledString {
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    /// The needle is already lowercased when the bool (ignore case) is set.
    Contains(String, bool),
    Regex(regex::Regex),
}

// === impl CompiledMatcher ===

impl CompiledMatcher {
    pub(crate) fn new(m: &StatsMatcher) -> Result<Self, StatsError> {
        let all = |ms: &[StringMatcher]| {
            ms.iter()
                .map(|m| CompiledString::new(m, false))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match m {
            StatsMatcher::AcceptAll => CompiledMatcher::AcceptAll,
            StatsMatcher::RejectAll => CompiledMatcher::RejectAll,
            StatsMatcher::Inclusion(ms) => CompiledMatcher::Inclusion(all(ms)?),
            StatsMatcher::Exclusion(ms) => CompiledMatcher::Exclusion(all(ms)?),
        })
    }

    /// Whether a stat with this full name must not be instantiated.
    pub(crate) fn rejects(&self, name: &str) -> bool {
        match self {
            CompiledMatcher::AcceptAll => false,
            CompiledMatcher::RejectAll => true,
            CompiledMatcher::Inclusion(ms) => !ms.iter().any(|m| m.matches(name)),
            CompiledMatcher::Exclusion(ms) => ms.iter().any(|m| m.matches(name)),
        }
    }
}

// === impl CompiledString ===

impl CompiledString {
    fn new(m: &StringMatcher, ignore_case: bool) -> Result<Self, StatsError> {
        Ok(match m {
            StringMatcher::Exact(s) => CompiledString::Exact(s.clone(), ignore_case),
            StringMatcher::Prefix(s) => CompiledString::Prefix(s.clone(), ignore_case),
            StringMatcher::Suffix(s) => CompiledString::Suffix(s.clone(), ignore_case),
            StringMatcher::Contains(s) if ignore_case => {
                CompiledString::Contains(s.to_ascii_lowercase(), true)
            }
            StringMatcher::Contains(s) => CompiledString::Contains(s.clone(), false),
            StringMatcher::Regex(r) => {
                let anchored = format!("^(?:{})$", regex_dialect::re2(r));
                let re = regex::RegexBuilder::new(&anchored)
                    .size_limit(MATCHER_REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| StatsError::InvalidMatcherRegex {
                        regex: r.clone(),
                        reason: e.to_string(),
                    })?;
                CompiledString::Regex(re)
            }
            StringMatcher::IgnoreCase(inner) => CompiledString::new(inner, true)?,
        })
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            CompiledString::Exact(s, false) => name == s,
            CompiledString::Exact(s, true) => name.eq_ignore_ascii_case(s),
            CompiledString::Prefix(s, false) => name.starts_with(s.as_str()),
            CompiledString::Prefix(s, true) => name
                .get(..s.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(s)),
            CompiledString::Suffix(s, false) => name.ends_with(s.as_str()),
            CompiledString::Suffix(s, true) => name
                .len()
                .checked_sub(s.len())
                .and_then(|start| name.get(start..))
                .is_some_and(|t| t.eq_ignore_ascii_case(s)),
            CompiledString::Contains(s, false) => name.contains(s.as_str()),
            CompiledString::Contains(s, true) => name.to_ascii_lowercase().contains(s.as_str()),
            CompiledString::Regex(re) => re.is_match(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejects(m: StatsMatcher, name: &str) -> bool {
        CompiledMatcher::new(&m).unwrap().rejects(name)
    }

    #[test]
    fn accept_reject_inclusion_exclusion() {
        let list = || {
            vec![
                StringMatcher::Prefix("cluster_manager".into()),
                StringMatcher::Suffix("rbac.allowed".into()),
            ]
        };
        assert!(!rejects(StatsMatcher::AcceptAll, "x"));
        assert!(rejects(StatsMatcher::RejectAll, "x"));
        assert!(!rejects(
            StatsMatcher::Inclusion(list()),
            "cluster_manager.active_clusters"
        ));
        assert!(!rejects(
            StatsMatcher::Inclusion(list()),
            "http.x.rbac.allowed"
        ));
        assert!(rejects(
            StatsMatcher::Inclusion(list()),
            "redis.p.command.get.total"
        ));
        assert!(rejects(
            StatsMatcher::Exclusion(list()),
            "cluster_manager.active_clusters"
        ));
        assert!(!rejects(
            StatsMatcher::Exclusion(list()),
            "redis.p.command.get.total"
        ));
    }

    #[test]
    fn string_matchers_follow_envoy() {
        let m =
            |s: StringMatcher, name: &str| CompiledString::new(&s, false).unwrap().matches(name);
        assert!(m(StringMatcher::Exact("a.b".into()), "a.b"));
        assert!(!m(StringMatcher::Exact("a.b".into()), "A.b"));
        assert!(m(StringMatcher::Exact("a.b".into()).ignoring_case(), "A.B"));
        assert!(m(
            StringMatcher::Prefix("Server".into()).ignoring_case(),
            "server.live"
        ));
        assert!(!m(StringMatcher::Prefix("Server".into()), "server.live"));
        assert!(m(
            StringMatcher::Suffix("_ACTIVE".into()).ignoring_case(),
            "x.cx_active"
        ));
        assert!(!m(
            StringMatcher::Suffix("longer_than_name".into()).ignoring_case(),
            "x"
        ));
        assert!(m(
            StringMatcher::Contains("CX".into()).ignoring_case(),
            "a.cx_total"
        ));
        assert!(!m(StringMatcher::Contains("CX".into()), "a.cx_total"));
        // `safe_regex` is a full match: Istio's `vhost\..*\.route\..*` needs the whole name.
        let vhost = StringMatcher::Regex(r"vhost\..*\.route\..*".into());
        assert!(m(vhost.clone(), "vhost.v.route.r.upstream_rq_total"));
        assert!(!m(vhost, "x.vhost.v.route.r"));
        assert!(!m(StringMatcher::Regex("cx".into()), "a.cx_total"));
        // ignore_case does not apply to regexes, as in Envoy.
        assert!(!m(StringMatcher::Regex("A".into()).ignoring_case(), "a"));
        // Non-ASCII names never panic on a char boundary.
        assert!(!m(StringMatcher::Prefix("é".into()).ignoring_case(), "aé"));
        assert!(!m(StringMatcher::Suffix("é".into()).ignoring_case(), "éa"));
    }

    #[test]
    fn bad_matcher_regex_is_refused() {
        let err = CompiledMatcher::new(&StatsMatcher::Inclusion(vec![StringMatcher::Regex(
            "(".into(),
        )]))
        .unwrap_err();
        assert!(
            matches!(err, StatsError::InvalidMatcherRegex { .. }),
            "{err}"
        );
    }
}
