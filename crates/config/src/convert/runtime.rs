//! `layered_runtime` (`Runtime::LoaderImpl` and `ProtoLayer` checks and flattening).

use std::collections::{BTreeMap, HashSet};

use envoy_types::pb::envoy::config::bootstrap::v3::runtime_layer::LayerSpecifier;
use envoy_types::pb::envoy::config::bootstrap::v3::{LayeredRuntime, RuntimeLayer};
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Struct, Value};

use crate::error::FieldPath;
use crate::{model, ConfigError};

/// Nesting accepted in a `static_layer` (each level is one dotted key segment). Far beyond any
/// real runtime key; bounds the recursion.
const MAX_STATIC_LAYER_DEPTH: usize = 64;

pub(super) fn layered_runtime(
    r: &LayeredRuntime,
    p: &FieldPath,
) -> Result<model::Runtime, ConfigError> {
    let LayeredRuntime {
        layers: proto_layers,
    } = r;
    let mut layers = Vec::with_capacity(proto_layers.len());
    let mut names = HashSet::new();
    let mut has_admin = false;
    for (i, layer) in proto_layers.iter().enumerate() {
        let RuntimeLayer {
            name,
            layer_specifier,
        } = layer;
        let lp = p.field("layers").index(i);
        if name.is_empty() {
            return Err(ConfigError::invalid(
                lp.field("name"),
                "value length must be at least 1 characters",
            ));
        }
        let kind = match layer_specifier {
            None => return Err(ConfigError::invalid(lp, "layer_specifier is required")),
            Some(LayerSpecifier::StaticLayer(s)) => {
                let mut values = BTreeMap::new();
                flatten(s, "", 0, &lp.field("static_layer"), &mut values)?;
                model::RuntimeLayerKind::Static(values)
            }
            Some(LayerSpecifier::AdminLayer(_)) => {
                if has_admin {
                    return Err(ConfigError::invalid(
                        lp.field("admin_layer"),
                        "Too many admin layers specified in LayeredRuntime, at most one may be \
                         specified",
                    ));
                }
                has_admin = true;
                model::RuntimeLayerKind::Admin
            }
            // Refused by the allowlist already, with their paths.
            Some(LayerSpecifier::DiskLayer(_)) => {
                return Err(ConfigError::unsupported(lp.field("disk_layer")));
            }
            Some(LayerSpecifier::RtdsLayer(_)) => {
                return Err(ConfigError::unsupported(lp.field("rtds_layer")));
            }
        };
        if !names.insert(name.as_str()) {
            return Err(ConfigError::invalid(
                lp.field("name"),
                format!("Duplicate layer name: {name}"),
            ));
        }
        layers.push(model::RuntimeLayer {
            name: name.clone(),
            kind,
        });
    }
    Ok(model::Runtime { layers })
}

/// Envoy's `ProtoLayer::walkProtoValue`: objects nest into dotted keys, except an empty one or
/// one with `numerator`/`denominator`, which is a FractionalPercent value.
fn flatten(
    s: &Struct,
    prefix: &str,
    depth: usize,
    p: &FieldPath,
    out: &mut BTreeMap<String, model::RuntimeValue>,
) -> Result<(), ConfigError> {
    if depth > MAX_STATIC_LAYER_DEPTH {
        return Err(ConfigError::unsupported_because(
            p,
            format!("static_layer nests deeper than redvoy's limit of {MAX_STATIC_LAYER_DEPTH}"),
        ));
    }
    // Sorted, so the first error reported does not depend on hashing.
    let mut fields: Vec<(&String, &Value)> = s.fields.iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    for (name, v) in fields {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let value = match &v.kind {
            Some(Kind::StringValue(s)) => model::RuntimeValue::String(s.clone()),
            Some(Kind::NumberValue(n)) => model::RuntimeValue::Number(*n),
            Some(Kind::BoolValue(b)) => model::RuntimeValue::Bool(*b),
            Some(Kind::StructValue(inner))
                if !inner.fields.is_empty()
                    && !inner.fields.contains_key("numerator")
                    && !inner.fields.contains_key("denominator") =>
            {
                flatten(inner, &key, depth + 1, p, out)?;
                continue;
            }
            Some(Kind::StructValue(inner)) => fractional_percent(inner, &p.key(&key))?,
            Some(Kind::NullValue(_)) | Some(Kind::ListValue(_)) | None => {
                return Err(ConfigError::invalid(
                    p.key(&key),
                    format!("Invalid runtime entry value for {key}"),
                ));
            }
        };
        out.insert(key, value);
    }
    Ok(())
}

/// A runtime FractionalPercent: `numerator` (default 0) and `denominator` (default HUNDRED),
/// read as Envoy's JSON conversion does. Anything else in the object is refused: Envoy keeps
/// such an entry as an unusable value and only logs, which redvoy does not imitate.
fn fractional_percent(s: &Struct, p: &FieldPath) -> Result<model::RuntimeValue, ConfigError> {
    let mut numerator = 0u32;
    let mut denominator = 100u32;
    let bad = |what: &str| {
        ConfigError::unsupported_because(
            p,
            format!("runtime FractionalPercent with {what} is not supported by redvoy"),
        )
    };
    for (name, v) in &s.fields {
        match (name.as_str(), &v.kind) {
            ("numerator", Some(Kind::NumberValue(n)))
                if n.fract() == 0.0 && *n >= 0.0 && *n <= f64::from(u32::MAX) =>
            {
                // Checked integral and in range just above.
                numerator = *n as u32;
            }
            ("numerator", Some(Kind::StringValue(s))) if s.parse::<u32>().is_ok() => {
                numerator = s.parse().unwrap_or(0);
            }
            ("denominator", Some(Kind::StringValue(s))) => {
                denominator = DenominatorType::from_str_name(&s.to_ascii_uppercase())
                    .map(denominator_value)
                    .ok_or_else(|| bad(&format!("denominator '{s}'")))?;
            }
            ("denominator", Some(Kind::NumberValue(n))) => {
                // JSON may give an enum by its number; only an exact integral one names it.
                denominator = Some(*n)
                    .filter(|n| n.fract() == 0.0 && *n >= 0.0 && *n <= f64::from(i32::MAX))
                    .and_then(|n| DenominatorType::try_from(n as i32).ok())
                    .map(denominator_value)
                    .ok_or_else(|| bad(&format!("denominator {n}")))?;
            }
            (other, _) => return Err(bad(&format!("field '{other}'"))),
        }
    }
    Ok(model::RuntimeValue::FractionalPercent {
        numerator,
        denominator,
    })
}

/// What a `FractionalPercent.denominator` divides by.
fn denominator_value(d: DenominatorType) -> u32 {
    match d {
        DenominatorType::Hundred => 100,
        DenominatorType::TenThousand => 10_000,
        DenominatorType::Million => 1_000_000,
    }
}
