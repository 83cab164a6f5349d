//! Types shared by both kinds: regions, plans, durations, deletion and management policies and
//! status conditions.

use std::{fmt, str::FromStr, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Declares a string enum whose variants serialize to the given wire names, with `as_str`,
/// `Display`, `FromStr` and the list of all values.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The value as Upstash and the manifest spell it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    other => Err(UnknownValue { kind: stringify!($name), value: other.to_string() }),
                }
            }
        }
    };
}

/// A string that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownValue {
    kind: &'static str,
    value: String,
}

wire_enum!(
    /// An Upstash region: the 14 AWS and 4 GCP locations a database's primary can live in.
    Region {
        UsEast1 = "us-east-1",
        UsEast2 = "us-east-2",
        UsWest1 = "us-west-1",
        UsWest2 = "us-west-2",
        CaCentral1 = "ca-central-1",
        SaEast1 = "sa-east-1",
        EuWest1 = "eu-west-1",
        EuWest2 = "eu-west-2",
        EuCentral1 = "eu-central-1",
        ApSouth1 = "ap-south-1",
        ApSoutheast1 = "ap-southeast-1",
        ApNortheast1 = "ap-northeast-1",
        ApSoutheast2 = "ap-southeast-2",
        AfSouth1 = "af-south-1",
        UsCentral1 = "us-central1",
        UsEast4 = "us-east4",
        EuropeWest1 = "europe-west1",
        AsiaNortheast1 = "asia-northeast1",
    }
);

impl Region {
    /// The cloud platform the region belongs to, as Upstash's create request names it.
    pub fn platform(self) -> &'static str {
        match self {
            Region::UsCentral1 | Region::UsEast4 | Region::EuropeWest1 | Region::AsiaNortheast1 => {
                "gcp"
            }
            _ => "aws",
        }
    }
}

wire_enum!(
    /// A region Upstash can place read replicas in: the AWS regions except `af-south-1`.
    ReadRegion {
        UsEast1 = "us-east-1",
        UsEast2 = "us-east-2",
        UsWest1 = "us-west-1",
        UsWest2 = "us-west-2",
        CaCentral1 = "ca-central-1",
        SaEast1 = "sa-east-1",
        EuWest1 = "eu-west-1",
        EuWest2 = "eu-west-2",
        EuCentral1 = "eu-central-1",
        ApSouth1 = "ap-south-1",
        ApSoutheast1 = "ap-southeast-1",
        ApNortheast1 = "ap-northeast-1",
        ApSoutheast2 = "ap-southeast-2",
    }
);

wire_enum!(
    /// An Upstash Redis plan, from the smallest to the largest.
    Plan {
        Free = "free",
        Payg = "payg",
        Fixed250Mb = "fixed_250mb",
        Fixed1Gb = "fixed_1gb",
        Fixed5Gb = "fixed_5gb",
        Fixed10Gb = "fixed_10gb",
        Fixed50Gb = "fixed_50gb",
        Fixed100Gb = "fixed_100gb",
        Fixed500Gb = "fixed_500gb",
    }
);

impl Plan {
    /// The plan a CacheInstance gets when `spec.plan` is not set.
    pub const DEFAULT: Plan = Plan::Payg;

    /// Maximum data size of the plan in bytes (Upstash's pricing table).
    pub fn data_limit_bytes(self) -> u64 {
        const MB: u64 = 1_000_000;
        const GB: u64 = 1_000_000_000;
        match self {
            Plan::Free => 256 * MB,
            Plan::Payg => 100 * GB,
            Plan::Fixed250Mb => 250 * MB,
            Plan::Fixed1Gb => GB,
            Plan::Fixed5Gb => 5 * GB,
            Plan::Fixed10Gb => 10 * GB,
            Plan::Fixed50Gb => 50 * GB,
            Plan::Fixed100Gb => 100 * GB,
            Plan::Fixed500Gb => 500 * GB,
        }
    }

    /// Fixed monthly price in USD, or `None` for plans billed per request.
    pub fn monthly_price_usd(self) -> Option<f64> {
        match self {
            Plan::Free => Some(0.0),
            Plan::Payg => None,
            Plan::Fixed250Mb => Some(10.0),
            Plan::Fixed1Gb => Some(20.0),
            Plan::Fixed5Gb => Some(100.0),
            Plan::Fixed10Gb => Some(200.0),
            Plan::Fixed50Gb => Some(400.0),
            Plan::Fixed100Gb => Some(800.0),
            Plan::Fixed500Gb => Some(1500.0),
        }
    }
}

wire_enum!(
    /// What happens to the Upstash database when its CacheInstance is deleted.
    DeletionPolicy {
        Delete = "Delete",
        Retain = "Retain",
    }
);

wire_enum!(
    /// How far the operator manages a CacheInstance's database.
    ManagementPolicy {
        Full = "Full",
        Observe = "Observe",
    }
);

impl ManagementPolicy {
    /// The policy of a CacheInstance that sets none.
    pub const DEFAULT: ManagementPolicy = ManagementPolicy::Full;
}

wire_enum!(
    /// What happens when a database the operator created is no longer in Upstash.
    OnMissing {
        Recreate = "Recreate",
        Report = "Report",
    }
);

/// Pattern accepted for durations: one or more `<integer><unit>` groups, units `s`, `m`, `h`,
/// `d` (24 h) and `w` (7 d), for example `90d`, `12h`, `1h30m`, `45s`.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,6}(s|m|h|d|w))+$";

/// A CEL rule on a [`DurationString`] field: the duration is at least `seconds` long (a value
/// that does not match [`DURATION_PATTERN`] is left to the schema's pattern, which names it).
pub fn duration_at_least_rule(seconds: u64) -> String {
    format!(
        "!self.matches('{DURATION_PATTERN}') || self.findAll('[0-9]+[smhdw]').map(g, int(g.substring(0, size(g) - 1)) * (g.endsWith('w') ? 604800 : g.endsWith('d') ? 86400 : g.endsWith('h') ? 3600 : g.endsWith('m') ? 60 : 1)).sum() >= {seconds}"
    )
}

/// A duration written as in `90d`, `12h`, `1h30m` or `45s`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DurationString(String);

impl DurationString {
    /// Wraps a duration string without checking it; [`DurationString::duration`] does.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The duration as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the duration. The schema pattern guarantees this succeeds for stored objects; the
    /// error exists for values that bypassed admission (for example in unit tests).
    pub fn duration(&self) -> Result<Duration, InvalidDuration> {
        parse_duration(&self.0)
    }
}

impl fmt::Display for DurationString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for DurationString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 32,
        })
    }
}

/// A duration string that does not follow [`DURATION_PATTERN`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {0:?}: expected groups of <number><unit> with units s, m, h, d or w, e.g. 90d or 1h30m"
)]
pub struct InvalidDuration(String);

/// Parses `<number><unit>` groups with units `s`, `m`, `h`, `d`, `w`.
pub fn parse_duration(s: &str) -> Result<Duration, InvalidDuration> {
    let err = || InvalidDuration(s.to_string());
    if s.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(err()),
        };
        if digits.is_empty() || digits.len() > 6 {
            return Err(err());
        }
        let n: u64 = digits.parse().map_err(|_| err())?;
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(err)?)
            .ok_or_else(err)?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

/// Reference to an object in the same namespace, by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalRef {
    /// Name of the object, in the same namespace as the referring object.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// Pattern of a Kubernetes object name that is a DNS-1123 subdomain (Secrets, ConfigMaps, ...).
pub const DNS1123_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Pattern of a label value: empty, or at most 63 letters, digits, `-`, `_` and `.`, starting and
/// ending with a letter or digit (Kubernetes' `IsValidLabelValue`).
pub const LABEL_VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$";

/// Pattern of a label key: an optional DNS subdomain prefix and `/`, then a name of 1 to 63
/// letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit (Kubernetes'
/// `IsQualifiedName`; the prefix is also at most 253 characters, see [`LABEL_KEY_PREFIX`]).
/// Written without backslashes so that CEL rules can embed it as is.
pub const LABEL_KEY: &str = "^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$";

/// What a label key with a prefix must also match: a prefix of at most 253 characters.
pub const LABEL_KEY_PREFIX: &str = "^[^/]{1,253}/";

/// The CEL expression that a label key `k` passes exactly when it is valid label syntax.
pub fn label_key_cel(k: &str) -> String {
    format!(
        "{k}.matches('{LABEL_KEY}') && (!{k}.contains('/') || {k}.matches('{LABEL_KEY_PREFIX}'))"
    )
}

/// Whether `key` is a valid label key (what [`label_key_cel`] checks at admission).
pub fn is_label_key(key: &str) -> bool {
    static KEY: std::sync::LazyLock<regex_lite::Regex> =
        std::sync::LazyLock::new(|| regex_lite::Regex::new(LABEL_KEY).unwrap());
    static PREFIX: std::sync::LazyLock<regex_lite::Regex> =
        std::sync::LazyLock::new(|| regex_lite::Regex::new(LABEL_KEY_PREFIX).unwrap());
    KEY.is_match(key) && (!key.contains('/') || PREFIX.is_match(key))
}

/// Whether `value` is a valid label value (what [`LABEL_VALUE`] checks at admission).
pub fn is_label_value(value: &str) -> bool {
    static VALUE: std::sync::LazyLock<regex_lite::Regex> =
        std::sync::LazyLock::new(|| regex_lite::Regex::new(LABEL_VALUE).unwrap());
    VALUE.is_match(value)
}

/// Most `matchLabels` entries, `matchExpressions` and values of one expression a CachePolicy's
/// selector may have (bounds that keep the CEL rules on them cheap for the API server).
pub const SELECTOR_MAX_LABELS: u64 = 64;
pub const SELECTOR_MAX_EXPRESSIONS: u64 = 32;
pub const SELECTOR_MAX_VALUES: u64 = 64;

/// Schema for a CachePolicy's `spec.selector`: Kubernetes' `LabelSelector`, with the label
/// syntax checked at admission as Kubernetes checks its own selectors: keys of `matchLabels` and
/// `matchExpressions` must be label keys, their values label values.
pub fn label_selector_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    use serde_json::json;
    let mut schema = LabelSelector::json_schema(generator);
    let value = || json!({"type": "string", "maxLength": 63, "pattern": LABEL_VALUE});
    let key_rule = json!([{
        "rule": label_key_cel("self"),
        "message": "must be a label key: an optional DNS subdomain prefix of at most 253 characters and '/', then a name of 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        "reason": "FieldValueInvalid",
    }]);
    let mut requirement = LabelSelectorRequirement::json_schema(generator);
    if let Some(props) = requirement
        .get_mut("properties")
        .and_then(|p| p.as_object_mut())
    {
        if let Some(key) = props.get_mut("key").and_then(|k| k.as_object_mut()) {
            key.insert("maxLength".into(), json!(253 + 1 + 63));
            key.insert("x-kubernetes-validations".into(), key_rule);
        }
        if let Some(values) = props.get_mut("values").and_then(|v| v.as_object_mut()) {
            values.insert("maxItems".into(), json!(SELECTOR_MAX_VALUES));
            values.insert("items".into(), value());
        }
    }
    if let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
        if let Some(labels) = props.get_mut("matchLabels").and_then(|m| m.as_object_mut()) {
            labels.insert("maxProperties".into(), json!(SELECTOR_MAX_LABELS));
            labels.insert("additionalProperties".into(), value());
            labels.insert(
                "x-kubernetes-validations".into(),
                json!([{
                    "rule": format!("self.all(k, {})", label_key_cel("k")),
                    "message": "keys must be label keys: an optional DNS subdomain prefix of at most 253 characters and '/', then a name of 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
                    "reason": "FieldValueInvalid",
                }]),
            );
        }
        if let Some(exprs) = props
            .get_mut("matchExpressions")
            .and_then(|m| m.as_object_mut())
        {
            exprs.insert("maxItems".into(), json!(SELECTOR_MAX_EXPRESSIONS));
            exprs.insert("items".into(), requirement.to_value());
        }
    }
    schema
}

/// Schema for `status.conditions`: a list of `metav1.Condition` merged by `type`, so that
/// server-side apply treats each condition as its own entry.
pub fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = <Vec<Condition>>::json_schema(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(
            parse_duration("90d").unwrap(),
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        assert_eq!(parse_duration("45s").unwrap(), Duration::from_secs(45));
        for bad in ["", "90", "d", "1.5h", "10x", "h10", "1h-30m", "1234567s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn duration_pattern_matches_parser() {
        let re = regex_lite::Regex::new(DURATION_PATTERN).unwrap();
        for s in ["90d", "1h30m", "45s", "2w", "0s", "999999h"] {
            assert!(re.is_match(s), "{s}");
            assert!(parse_duration(s).is_ok(), "{s}");
        }
        for s in ["", "90", "1.5h", "10x", "1234567s", "1h 30m"] {
            assert!(!re.is_match(s), "{s}");
            assert!(parse_duration(s).is_err(), "{s}");
        }
    }

    #[test]
    fn enums_round_trip_wire_names() {
        for r in Region::ALL {
            assert_eq!(r.as_str().parse::<Region>().unwrap(), *r);
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert_eq!("fixed_250mb".parse::<Plan>().unwrap(), Plan::Fixed250Mb);
        assert!("mars-1".parse::<Region>().is_err());
        assert!(Plan::Payg < Plan::Fixed1Gb && Plan::Fixed1Gb < Plan::Fixed500Gb);
        assert_eq!(Region::EuropeWest1.platform(), "gcp");
        assert_eq!(Region::EuWest1.platform(), "aws");
    }
}
