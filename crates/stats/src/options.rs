//! The bootstrap's `stats_config`: tag specifiers, whether Envoy's default tag extractors apply,
//! the stats matcher and histogram bucket settings. These are the only Rust types for it: the
//! config crate converts the proto into them (checking Envoy's proto constraints, with field
//! paths in its errors) and re-exports them in its model; `Store::with_config` compiles them.

use crate::regex_dialect;

/// `envoy.config.metrics.v3.StatsConfig`, Envoy's defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct StatsConfig {
    /// `stats_tags`, in configuration order (the order extractors run in and tags are listed);
    /// applied after the default extractors when those are enabled.
    pub stats_tags: Vec<TagSpecifier>,
    /// `use_all_default_tags`; unset in the proto means true.
    pub use_all_default_tags: bool,
    /// `stats_matcher`.
    pub matcher: StatsMatcher,
    /// `histogram_bucket_settings`, in order (the first match wins in Envoy). Validated at load
    /// but not applied yet: every histogram renders Envoy's default buckets.
    pub histogram_bucket_settings: Vec<HistogramBucketSettings>,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            stats_tags: Vec::new(),
            use_all_default_tags: true,
            matcher: StatsMatcher::AcceptAll,
            histogram_bucket_settings: Vec::new(),
        }
    }
}

/// `envoy.config.metrics.v3.TagSpecifier`. At most one of `regex` and `fixed_value` is set.
///
/// Both `None`: the tag takes Envoy's built-in extractor(s) of the same name, so the name must
/// be one of Envoy's default tags (`envoy.cluster_name`, ...). An empty `regex` counts as unset,
/// as in Envoy (the config crate never produces one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagSpecifier {
    /// Non-empty.
    pub tag_name: String,
    /// An ECMAScript (std::regex) pattern, compiled by the store (Istio's use look-ahead):
    /// capture group 1 is removed from the name, group 2 (or 1 when there is no group 2) is the
    /// tag value.
    pub regex: Option<String>,
    /// Adds this tag to every stat, removing nothing.
    pub fixed_value: Option<String>,
}

/// `envoy.config.metrics.v3.StatsMatcher`: which stats are instantiated at all. Rejected stats
/// still hand out working handles; they are just never registered or rendered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StatsMatcher {
    /// No matcher, or `reject_all: false`.
    #[default]
    AcceptAll,
    /// `reject_all: true`.
    RejectAll,
    /// `inclusion_list`: only stats whose full name matches one of these.
    Inclusion(Vec<StringMatcher>),
    /// `exclusion_list`: every stat except those whose full name matches one of these.
    Exclusion(Vec<StringMatcher>),
}

/// `envoy.type.matcher.v3.StringMatcher` applied to a stat's full name (without `custom`,
/// which the config crate refuses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StringMatcher {
    pub kind: StringMatchKind,
    /// The pattern; for `SafeRegex` an RE2 pattern matched against the whole name (Envoy's
    /// `FullMatch`), already checked at load to compile with the `regex` crate.
    pub value: String,
    /// ASCII case folding for exact, prefix, suffix and contains. Envoy refuses it with
    /// `safe_regex` at load and ignores it there otherwise, and so does the store.
    pub ignore_case: bool,
}

/// Which `match_pattern` a [`StringMatcher`] has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StringMatchKind {
    Exact,
    Prefix,
    Suffix,
    Contains,
    SafeRegex,
}

/// `envoy.config.metrics.v3.HistogramBucketSettings`.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramBucketSettings {
    pub matcher: StringMatcher,
    /// Upper bounds, each > 0 and unique, in configuration order (Envoy sorts them).
    pub buckets: Vec<f64>,
    /// `bins`, when set.
    pub bins: Option<u32>,
}

// === impl StringMatcher ===

impl StringMatcher {
    /// A case-sensitive matcher.
    pub fn new(kind: StringMatchKind, value: impl Into<String>) -> Self {
        Self {
            kind,
            value: value.into(),
            ignore_case: false,
        }
    }

    /// This matcher with `ignore_case: true`.
    pub fn ignoring_case(self) -> Self {
        Self {
            ignore_case: true,
            ..self
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
                .map(CompiledString::new)
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
    fn new(m: &StringMatcher) -> Result<Self, StatsError> {
        let StringMatcher {
            kind,
            value,
            ignore_case,
        } = m;
        let ignore_case = *ignore_case;
        Ok(match kind {
            StringMatchKind::Exact => CompiledString::Exact(value.clone(), ignore_case),
            StringMatchKind::Prefix => CompiledString::Prefix(value.clone(), ignore_case),
            StringMatchKind::Suffix => CompiledString::Suffix(value.clone(), ignore_case),
            StringMatchKind::Contains if ignore_case => {
                CompiledString::Contains(value.to_ascii_lowercase(), true)
            }
            StringMatchKind::Contains => CompiledString::Contains(value.clone(), false),
            StringMatchKind::SafeRegex => {
                let anchored = format!("^(?:{})$", regex_dialect::re2(value));
                let re = regex::RegexBuilder::new(&anchored)
                    .size_limit(MATCHER_REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| StatsError::InvalidMatcherRegex {
                        regex: value.clone(),
                        reason: e.to_string(),
                    })?;
                CompiledString::Regex(re)
            }
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
    use StringMatchKind::*;

    fn sm(kind: StringMatchKind, value: &str) -> StringMatcher {
        StringMatcher::new(kind, value)
    }

    fn rejects(m: StatsMatcher, name: &str) -> bool {
        CompiledMatcher::new(&m).unwrap().rejects(name)
    }

    #[test]
    fn accept_reject_inclusion_exclusion() {
        let list = || vec![sm(Prefix, "cluster_manager"), sm(Suffix, "rbac.allowed")];
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
        let m = |s: StringMatcher, name: &str| CompiledString::new(&s).unwrap().matches(name);
        assert!(m(sm(Exact, "a.b"), "a.b"));
        assert!(!m(sm(Exact, "a.b"), "A.b"));
        assert!(m(sm(Exact, "a.b").ignoring_case(), "A.B"));
        assert!(m(sm(Prefix, "Server").ignoring_case(), "server.live"));
        assert!(!m(sm(Prefix, "Server"), "server.live"));
        assert!(m(sm(Suffix, "_ACTIVE").ignoring_case(), "x.cx_active"));
        assert!(!m(sm(Suffix, "longer_than_name").ignoring_case(), "x"));
        assert!(m(sm(Contains, "CX").ignoring_case(), "a.cx_total"));
        assert!(!m(sm(Contains, "CX"), "a.cx_total"));
        // `safe_regex` is a full match: Istio's `vhost\..*\.route\..*` needs the whole name.
        let vhost = sm(SafeRegex, r"vhost\..*\.route\..*");
        assert!(m(vhost.clone(), "vhost.v.route.r.upstream_rq_total"));
        assert!(!m(vhost, "x.vhost.v.route.r"));
        assert!(!m(sm(SafeRegex, "cx"), "a.cx_total"));
        // ignore_case does not apply to regexes, as in Envoy.
        assert!(!m(sm(SafeRegex, "A").ignoring_case(), "a"));
        // Non-ASCII names never panic on a char boundary.
        assert!(!m(sm(Prefix, "é").ignoring_case(), "aé"));
        assert!(!m(sm(Suffix, "é").ignoring_case(), "éa"));
    }

    #[test]
    fn bad_matcher_regex_is_refused() {
        let err =
            CompiledMatcher::new(&StatsMatcher::Inclusion(vec![sm(SafeRegex, "(")])).unwrap_err();
        assert!(
            matches!(err, StatsError::InvalidMatcherRegex { .. }),
            "{err}"
        );
    }
}
