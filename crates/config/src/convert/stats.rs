//! `stats_config` and `stats_flush_interval` (`Stats::TagProducerImpl`, `StatsMatcherImpl`,
//! `Matchers::StringMatcherImpl` checks).

use std::time::Duration;

use envoy_types::pb::envoy::config::metrics::v3::stats_matcher::StatsMatcher as MatcherKind;
use envoy_types::pb::envoy::config::metrics::v3::tag_specifier::TagValue;
use envoy_types::pb::envoy::config::metrics::v3::{
    HistogramBucketSettings, StatsConfig, StatsMatcher, TagSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{ListStringMatcher, RegexMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::Duration as PbDuration;

use super::duration;
use crate::error::FieldPath;
use crate::{model, ConfigError};

/// `stats_flush_interval` when unset.
const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Its proto constraint: `gte: 1ms`, `lt: 300s`.
const MIN_FLUSH_INTERVAL: Duration = Duration::from_millis(1);
const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(300);
/// Largest compiled RE2-style program accepted for a `safe_regex` (the `regex` crate's own
/// default limit; Envoy's RE2 limit is a program size, not comparable byte for byte).
const MAX_REGEX_SIZE: usize = 10 << 20;

/// The tag names Envoy 1.40 has built-in extractors for (`Config::TagNames`; each checked
/// against `envoy --mode validate` with a regex-less `stats_tags` entry).
pub const DEFAULT_TAG_NAMES: &[&str] = &[
    "envoy.cluster_name",
    "envoy.listener_address",
    "envoy.http_conn_manager_prefix",
    "envoy.http_user_agent",
    "envoy.ssl_cipher",
    "cipher_suite",
    "envoy.clientssl_prefix",
    "envoy.mongo_prefix",
    "envoy.mongo_cmd",
    "envoy.mongo_collection",
    "envoy.mongo_callsite",
    "envoy.ratelimit_prefix",
    "envoy.local_http_ratelimit_prefix",
    "envoy.local_network_ratelimit_prefix",
    "envoy.tcp_prefix",
    "envoy.udp_prefix",
    "envoy.fault_downstream_cluster",
    "envoy.dynamo_operation",
    "envoy.dynamo_table",
    "envoy.dynamo_partition_id",
    "envoy.grpc_bridge_service",
    "envoy.grpc_bridge_method",
    "envoy.virtual_host",
    "envoy.virtual_cluster",
    "envoy.response_code",
    "envoy.response_code_class",
    "envoy.rds_route_config",
    "envoy.route",
    "envoy.ext_authz_prefix",
    "envoy.worker_id",
    "envoy.thrift_prefix",
    "envoy.redis_prefix",
];

pub(super) fn flush_interval(
    d: Option<&PbDuration>,
    p: &FieldPath,
) -> Result<Duration, ConfigError> {
    let Some(d) = d else {
        return Ok(DEFAULT_FLUSH_INTERVAL);
    };
    let out_of_range = || ConfigError::invalid(p, "value must be inside range [1ms, 5m0s)");
    let d = duration(d, p).map_err(|_| out_of_range())?;
    if d < MIN_FLUSH_INTERVAL || d >= MAX_FLUSH_INTERVAL {
        return Err(out_of_range());
    }
    Ok(d)
}

pub(super) fn stats_config(
    s: &StatsConfig,
    p: &FieldPath,
) -> Result<model::StatsConfig, ConfigError> {
    let StatsConfig {
        stats_tags: tags,
        use_all_default_tags,
        stats_matcher,
        histogram_bucket_settings: bucket_settings,
        // Refused by the allowlist.
        allow_default_tag_overrides: _,
    } = s;
    let mut stats_tags = Vec::with_capacity(tags.len());
    for (i, t) in tags.iter().enumerate() {
        stats_tags.push(tag_specifier(t, &p.field("stats_tags").index(i))?);
    }
    let mp = p.field("stats_matcher");
    let matcher = match stats_matcher
        .as_ref()
        .map(|StatsMatcher { stats_matcher }| stats_matcher)
    {
        None => model::StatsMatcher::AcceptAll,
        Some(None) => return Err(ConfigError::invalid(mp, "stats_matcher is required")),
        Some(Some(MatcherKind::RejectAll(true))) => model::StatsMatcher::RejectAll,
        // Envoy: `is_inclusive_ = !reject_all` with no patterns, which rejects nothing.
        Some(Some(MatcherKind::RejectAll(false))) => model::StatsMatcher::AcceptAll,
        Some(Some(MatcherKind::InclusionList(l))) => {
            model::StatsMatcher::Inclusion(list(l, &mp.field("inclusion_list"))?)
        }
        Some(Some(MatcherKind::ExclusionList(l))) => {
            model::StatsMatcher::Exclusion(list(l, &mp.field("exclusion_list"))?)
        }
    };
    let mut histogram_bucket_settings = Vec::with_capacity(bucket_settings.len());
    for (i, h) in bucket_settings.iter().enumerate() {
        let HistogramBucketSettings {
            r#match,
            buckets,
            bins,
        } = h;
        let hp = p.field("histogram_bucket_settings").index(i);
        let Some(m) = r#match else {
            return Err(ConfigError::invalid(hp.field("match"), "value is required"));
        };
        let matcher = string_matcher(m, &hp.field("match"))?;
        for (j, b) in buckets.iter().enumerate() {
            let bp = hp.field("buckets").index(j);
            // `!(b > 0)` also catches NaN, which the proto constraint refuses too.
            if b.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
                return Err(ConfigError::invalid(bp, "value must be greater than 0"));
            }
            if buckets[..j].contains(b) {
                return Err(ConfigError::invalid(
                    bp,
                    "repeated value must contain unique items",
                ));
            }
        }
        histogram_bucket_settings.push(model::HistogramBucketSettings {
            matcher,
            buckets: buckets.clone(),
            bins: bins.map(|b| b.value),
        });
    }
    Ok(model::StatsConfig {
        stats_tags,
        use_all_default_tags: use_all_default_tags.is_none_or(|v| v.value),
        matcher,
        histogram_bucket_settings,
    })
}

fn tag_specifier(t: &TagSpecifier, p: &FieldPath) -> Result<model::TagSpecifier, ConfigError> {
    let TagSpecifier {
        tag_name,
        tag_value,
    } = t;
    if tag_name.is_empty() {
        return Err(ConfigError::invalid(
            p.field("tag_name"),
            "tag_name cannot be empty",
        ));
    }
    let (regex, fixed_value) = match tag_value {
        Some(TagValue::Regex(r)) if !r.is_empty() => (Some(r.clone()), None),
        Some(TagValue::FixedValue(v)) => (None, Some(v.clone())),
        // Unset or empty: Envoy falls back to its built-in extractor(s) of that name.
        Some(TagValue::Regex(_)) | None => {
            if !DEFAULT_TAG_NAMES.contains(&tag_name.as_str()) {
                return Err(ConfigError::invalid(
                    p,
                    format!(
                        "No regex specified for tag specifier and no default regex for name: \
                         '{tag_name}'"
                    ),
                ));
            }
            (None, None)
        }
    };
    Ok(model::TagSpecifier {
        tag_name: tag_name.clone(),
        regex,
        fixed_value,
    })
}

fn list(l: &ListStringMatcher, p: &FieldPath) -> Result<Vec<model::StringMatcher>, ConfigError> {
    let ListStringMatcher { patterns } = l;
    let pp = p.field("patterns");
    if patterns.is_empty() {
        return Err(ConfigError::invalid(
            pp,
            "value must contain at least 1 item(s)",
        ));
    }
    patterns
        .iter()
        .enumerate()
        .map(|(i, m)| string_matcher(m, &pp.index(i)))
        .collect()
}

/// `type.matcher.v3.StringMatcher` with its proto constraints and Envoy's own check.
pub(crate) fn string_matcher(
    m: &StringMatcher,
    p: &FieldPath,
) -> Result<model::StringMatcher, ConfigError> {
    let non_empty = |v: &str, field: &str| {
        if v.is_empty() {
            Err(ConfigError::invalid(
                p.field(field),
                "value length must be at least 1 characters",
            ))
        } else {
            Ok(v.to_owned())
        }
    };
    let StringMatcher {
        match_pattern,
        ignore_case,
    } = m;
    let (kind, value) = match match_pattern {
        None => return Err(ConfigError::invalid(p, "match_pattern is required")),
        Some(MatchPattern::Exact(v)) => (model::StringMatchKind::Exact, v.clone()),
        Some(MatchPattern::Prefix(v)) => (model::StringMatchKind::Prefix, non_empty(v, "prefix")?),
        Some(MatchPattern::Suffix(v)) => (model::StringMatchKind::Suffix, non_empty(v, "suffix")?),
        Some(MatchPattern::Contains(v)) => {
            (model::StringMatchKind::Contains, non_empty(v, "contains")?)
        }
        Some(MatchPattern::SafeRegex(RegexMatcher {
            regex,
            // Only tunes RE2's program-size limits (ignored by the allowlist).
            engine_type: _,
        })) => {
            let rp = p.field("safe_regex").field("regex");
            if *ignore_case {
                return Err(ConfigError::invalid(
                    p.field("ignore_case"),
                    "ignore_case has no effect for safe_regex.",
                ));
            }
            let regex = non_empty(regex, "safe_regex.regex")?;
            // RE2 syntax is the `regex` crate's: what one refuses (look-around, back-references)
            // the other refuses too, so a bad pattern fails at load as in Envoy.
            if let Err(e) = regex::RegexBuilder::new(&regex)
                .size_limit(MAX_REGEX_SIZE)
                .build()
            {
                return Err(ConfigError::invalid(
                    rp,
                    format!("invalid regex: {}", one_line(&e)),
                ));
            }
            (model::StringMatchKind::SafeRegex, regex)
        }
        Some(MatchPattern::Custom(_)) => {
            return Err(ConfigError::unsupported(p.field("custom")));
        }
    };
    Ok(model::StringMatcher {
        kind,
        value,
        ignore_case: *ignore_case,
    })
}

/// The `regex` crate's syntax errors span several lines (pattern, caret, message).
pub(crate) fn one_line(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or(text.trim())
        .to_owned()
}
