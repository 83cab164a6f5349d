//! Every check a CacheInstance spec must pass before the reconciler makes any call, and where
//! the API server makes the same check at admission.
//!
//! Admission is the first line: a manifest that breaks a rule is refused by `kubectl apply` with
//! the field named, through the CRD's schema and CEL rules (`crd/instance.rs`). The reconciler
//! repeats each check ([`check_instance`]) for objects that never passed through today's schema
//! (stored before an upgrade of the CRD, or written with validation off) and reports them as
//! `Ready=False`, reason `InvalidSpec`. [`Check::admission`] says, for each, which admission rule
//! refuses it, or why none can.

use std::time::Duration;

mod policy;

pub use policy::{
    PolicyCheck, PolicyProblem, breaking_policy_spec, breaking_policy_specs, check_policy,
    selector_label_syntax, valid_policy_neighbour,
};

use super::{CacheInstance, Region};

/// Shortest password rotation interval accepted.
pub const MIN_ROTATION: Duration = Duration::from_secs(3600);

/// The CEL test that map key `k` is a qualified name, as Kubernetes requires of label and
/// annotation keys: an optional DNS subdomain prefix (at most 253 characters) and `/`, then a
/// name of at most 63 characters.
pub const QUALIFIED_NAME_RULE: &str = r"k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && (k.indexOf('/') < 0 || k.indexOf('/') <= 253)";
/// The pattern of a label value (its length, at most 63, is checked by the schema).
pub const LABEL_VALUE_PATTERN: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
/// The most a Secret's data may hold, in bytes (the sum of its values), as Kubernetes allows.
pub const MAX_SECRET_DATA: usize = 1024 * 1024;
/// The most an object's annotations may hold, keys and values together, in bytes.
pub const MAX_ANNOTATIONS: usize = 256 * 1024;

/// A name part of a qualified name or a non-empty label value: at most 63 letters, digits, `-`,
/// `_` and `.`, starting and ending with a letter or digit.
fn is_label_name(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !s.is_empty()
        && s.len() <= 63
        && alnum(s.chars().next())
        && alnum(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A DNS-1123 subdomain: at most 253 characters, dot-separated lower-case labels of letters,
/// digits and `-` that start and end with a letter or digit.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            let alnum =
                |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            alnum(part.chars().next())
                && alnum(part.chars().last())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// Whether `key` is a valid label or annotation key.
pub fn is_qualified_name(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(key),
    }
}

/// Whether `value` is a valid label value.
pub fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_label_name(value)
}

/// One check of a CacheInstance spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Check {
    /// `spec.passwordRotation.every` is not a duration.
    RotationIntervalUnparsable,
    /// `spec.passwordRotation.every` is shorter than [`MIN_ROTATION`].
    RotationTooFrequent,
    /// The read-only Secret would overwrite the main connection Secret.
    SecretNamesCollide,
    /// `spec.readRegions` names the primary region.
    ReadRegionIsPrimary,
    /// More than one read region on the free plan.
    FreePlanReadRegions,
    /// Read regions under a GCP primary region (Upstash has them for AWS primaries only).
    ReadRegionsOnGcp,
    /// A template in `spec.secret.templates` does not render (or goes past the bounds of the
    /// template engine: steps, nesting, output, memory, time).
    TemplateInvalid,
    /// The connection Secret, with what the templates render, would hold more than Kubernetes
    /// allows a Secret (1 MiB).
    SecretTooLarge,
    /// A key or value of `spec.secret.labels` is not a valid label key or value.
    SecretLabelsInvalid,
    /// A key of `spec.secret.annotations` is not a valid annotation key, or the annotations
    /// hold more than Kubernetes allows.
    SecretAnnotationsInvalid,
    /// A region listed twice in `spec.readRegions`.
    DuplicateReadRegion,
    /// An address or range listed twice in `spec.allowedIPs`.
    DuplicateAllowedIp,
    /// A budget other than 0 on the free plan, which has none (Upstash refuses it).
    BudgetOnFreePlan,
    /// `spec.adopt.byName: true` without `spec.databaseName`, the name to adopt.
    AdoptByNameWithoutName,
}

/// Where admission refuses what a [`Check`] finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The OpenAPI schema (a pattern, a length, an enum), at this field.
    Schema { field: &'static str },
    /// A CEL rule (`x-kubernetes-validations`), reported at this field.
    Cel { field: &'static str },
    /// No admission rule can express it, for the reason given.
    ReconcileOnly { why: &'static str },
}

impl Check {
    /// Every check, in the order the reconciler makes them.
    pub const ALL: &'static [Check] = &[
        Check::RotationIntervalUnparsable,
        Check::RotationTooFrequent,
        Check::SecretNamesCollide,
        Check::ReadRegionIsPrimary,
        Check::FreePlanReadRegions,
        Check::ReadRegionsOnGcp,
        Check::SecretLabelsInvalid,
        Check::SecretAnnotationsInvalid,
        Check::TemplateInvalid,
        Check::SecretTooLarge,
        Check::DuplicateReadRegion,
        Check::DuplicateAllowedIp,
        Check::BudgetOnFreePlan,
        Check::AdoptByNameWithoutName,
    ];

    /// The spec field the problem is about, as `kubectl explain` names it.
    pub fn field(self) -> &'static str {
        match self.admission() {
            Admission::Schema { field } | Admission::Cel { field } => field,
            Admission::ReconcileOnly { .. } => "spec.secret.templates",
        }
    }

    /// Where admission makes the same check.
    pub fn admission(self) -> Admission {
        match self {
            Check::RotationIntervalUnparsable => Admission::Schema {
                field: "spec.passwordRotation.every",
            },
            Check::RotationTooFrequent => Admission::Cel {
                field: "spec.passwordRotation.every",
            },
            Check::SecretNamesCollide => Admission::Cel {
                field: "spec.secret.readOnly.name",
            },
            Check::ReadRegionIsPrimary
            | Check::FreePlanReadRegions
            | Check::ReadRegionsOnGcp
            | Check::DuplicateReadRegion => Admission::Cel {
                field: "spec.readRegions",
            },
            Check::DuplicateAllowedIp => Admission::Cel {
                field: "spec.allowedIPs",
            },
            Check::BudgetOnFreePlan => Admission::Cel {
                field: "spec.budget",
            },
            Check::SecretLabelsInvalid => Admission::Cel {
                field: "spec.secret.labels",
            },
            Check::SecretAnnotationsInvalid => Admission::Cel {
                field: "spec.secret.annotations",
            },
            Check::AdoptByNameWithoutName => Admission::Cel {
                field: "spec.databaseName",
            },
            Check::TemplateInvalid => Admission::ReconcileOnly {
                why: "templates are rendered by the operator's template engine (minijinja), whose syntax and variables CEL cannot parse",
            },
            Check::SecretTooLarge => Admission::ReconcileOnly {
                why: "the Secret's size depends on what the templates render",
            },
        }
    }
}

/// A spec that breaks a check, with a message for the `Ready` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub check: Check,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The name of the main connection Secret: `spec.secret.name`, else the instance's name.
fn main_secret_name(instance: &CacheInstance) -> Option<&str> {
    instance
        .spec
        .secret
        .as_ref()
        .and_then(|s| s.name.as_deref())
        .or(instance.metadata.name.as_deref())
}

/// Every problem of `instance`'s spec except those of templates (which need the template engine,
/// see `controller::instance::validate::templates`), in [`Check::ALL`] order.
pub fn check_instance(instance: &CacheInstance) -> Vec<Problem> {
    let spec = &instance.spec;
    let mut problems = Vec::new();
    let mut problem = |check, message: String| problems.push(Problem { check, message });
    if let Some(every) = spec
        .password_rotation
        .as_ref()
        .and_then(|r| r.every.as_ref())
    {
        match every.duration() {
            Err(e) => problem(
                Check::RotationIntervalUnparsable,
                format!("spec.passwordRotation.every: {e}"),
            ),
            Ok(d) if d < MIN_ROTATION => problem(
                Check::RotationTooFrequent,
                format!(
                    "spec.passwordRotation.every is {every}; rotate at most once an hour (1h or more)"
                ),
            ),
            Ok(_) => {}
        }
    }
    if let Some(ro) = spec
        .secret
        .as_ref()
        .and_then(|s| s.read_only.as_ref())
        .map(|r| r.name.as_str())
        && Some(ro) == main_secret_name(instance)
    {
        problem(
            Check::SecretNamesCollide,
            format!("spec.secret.readOnly.name must differ from the main Secret's name ({ro})"),
        );
    }
    let regions = spec.read_regions.as_deref().unwrap_or_default();
    if regions
        .iter()
        .any(|r| r.as_str() == spec.primary_region.as_str())
    {
        problem(
            Check::ReadRegionIsPrimary,
            "spec.readRegions must not contain the primaryRegion: the primary already serves reads"
                .into(),
        );
    }
    if spec.plan == Some(super::Plan::Free) && regions.len() > 1 {
        problem(
            Check::FreePlanReadRegions,
            "spec.readRegions: the free plan allows at most one read region".into(),
        );
    }
    if !regions.is_empty() && spec.primary_region.platform() == "gcp" {
        problem(
            Check::ReadRegionsOnGcp,
            format!(
                "spec.readRegions: read replicas are available for AWS primary regions only, and {} is a GCP region",
                spec.primary_region
            ),
        );
    }
    let secret = spec.secret.as_ref();
    let labels = secret.and_then(|s| s.labels.as_ref()).into_iter().flatten();
    let mut bad_labels = Vec::new();
    for (key, value) in labels {
        if !is_qualified_name(key) {
            bad_labels.push(format!("key {key:?} is not a valid label key"));
        } else if !is_label_value(value) {
            bad_labels.push(format!(
                "the value of {key} is not a valid label value (empty, or up to 63 letters, digits, '-', '_' and '.' starting and ending with a letter or digit)"
            ));
        }
    }
    if !bad_labels.is_empty() {
        problem(
            Check::SecretLabelsInvalid,
            format!(
                "spec.secret.labels: {}; the API server would refuse the Secret",
                bad_labels.join("; ")
            ),
        );
    }
    if let Some(annotations) = secret.and_then(|s| s.annotations.as_ref()) {
        let mut bad = Vec::new();
        for key in annotations
            .keys()
            .filter(|k| !is_qualified_name(&k.to_ascii_lowercase()))
        {
            bad.push(format!("key {key:?} is not a valid annotation key"));
        }
        let size: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > MAX_ANNOTATIONS {
            bad.push(format!(
                "keys and values hold {size} bytes, more than the {MAX_ANNOTATIONS} Kubernetes allows"
            ));
        }
        if !bad.is_empty() {
            problem(
                Check::SecretAnnotationsInvalid,
                format!(
                    "spec.secret.annotations: {}; the API server would refuse the Secret",
                    bad.join("; ")
                ),
            );
        }
    }
    if let Some(dup) = first_duplicate(regions.iter().map(|r| r.as_str())) {
        problem(
            Check::DuplicateReadRegion,
            format!("spec.readRegions lists {dup} more than once; list each read region once"),
        );
    }
    if let Some(dup) = first_duplicate(spec.allowed_ips.iter().flatten().map(String::as_str)) {
        problem(
            Check::DuplicateAllowedIp,
            format!("spec.allowedIPs lists {dup} more than once; list each address or range once"),
        );
    }
    if spec.plan == Some(super::Plan::Free) && spec.budget.is_some_and(|b| b != 0) {
        problem(
            Check::BudgetOnFreePlan,
            "spec.budget: the free plan has no budget and Upstash refuses one: set plan: payg, or leave budget out (or 0)".into(),
        );
    }
    if spec.adopt.as_ref().is_some_and(|a| a.by_name == Some(true)) && spec.database_name.is_none()
    {
        problem(
            Check::AdoptByNameWithoutName,
            "spec.databaseName is required with adopt.byName: true: it names the database to adopt"
                .into(),
        );
    }
    problems
}

/// The first item that occurs twice.
fn first_duplicate<'a>(items: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = std::collections::BTreeSet::new();
    items.into_iter().find(|&item| !seen.insert(item))
}

/// The GCP primary regions, as the CEL rule on `spec.readRegions` lists them.
pub fn gcp_regions() -> Vec<&'static str> {
    Region::ALL
        .iter()
        .filter(|r| r.platform() == "gcp")
        .map(|r| r.as_str())
        .collect()
}

/// A spec that breaks exactly `check` (for a CacheInstance named `crm-cache`): the example
/// the admission tests apply to show where each check is refused.
pub fn breaking_spec(check: Check) -> serde_json::Value {
    use serde_json::json;
    match check {
        Check::RotationIntervalUnparsable => {
            json!({"primaryRegion": "us-east-1", "passwordRotation": {"every": "90 days"}})
        }
        Check::RotationTooFrequent => {
            json!({"primaryRegion": "us-east-1", "passwordRotation": {"every": "59m59s"}})
        }
        Check::SecretNamesCollide => {
            json!({"primaryRegion": "us-east-1", "secret": {"readOnly": {"name": "crm-cache"}}})
        }
        Check::ReadRegionIsPrimary => {
            json!({"primaryRegion": "us-east-1", "readRegions": ["us-east-1"]})
        }
        Check::FreePlanReadRegions => {
            json!({"primaryRegion": "us-east-1", "plan": "free", "readRegions": ["eu-west-1", "us-west-2"]})
        }
        Check::ReadRegionsOnGcp => {
            json!({"primaryRegion": "us-central1", "readRegions": ["us-east-1"]})
        }
        Check::SecretLabelsInvalid => {
            json!({"primaryRegion": "us-east-1", "secret": {"labels": {"team": "x".repeat(64)}}})
        }
        Check::SecretAnnotationsInvalid => {
            json!({"primaryRegion": "us-east-1", "secret": {"annotations": {"note": "x".repeat(MAX_ANNOTATIONS)}}})
        }
        Check::TemplateInvalid => {
            json!({"primaryRegion": "us-east-1", "secret": {"templates": {"URL": "{{ restUrl"}}})
        }
        Check::SecretTooLarge => {
            let templates: serde_json::Map<String, serde_json::Value> = (0..20)
                .map(|i| (format!("BIG_{i}"), json!("{{ 'x' * 60000 }}")))
                .collect();
            json!({"primaryRegion": "us-east-1", "secret": {"templates": templates}})
        }
        Check::DuplicateReadRegion => {
            json!({"primaryRegion": "us-east-1", "readRegions": ["eu-west-1", "us-west-2", "eu-west-1"]})
        }
        Check::DuplicateAllowedIp => {
            json!({"primaryRegion": "us-east-1", "allowedIPs": ["10.0.0.0/8", "203.0.113.7", "10.0.0.0/8"]})
        }
        Check::BudgetOnFreePlan => {
            json!({"primaryRegion": "us-east-1", "plan": "free", "budget": 20})
        }
        Check::AdoptByNameWithoutName => {
            json!({"primaryRegion": "us-east-1", "adopt": {"byName": true}})
        }
    }
}

/// A valid spec next to [`breaking_spec`]`(check)`: the same fields, one thing changed.
pub fn valid_neighbour(check: Check) -> serde_json::Value {
    use serde_json::json;
    match check {
        Check::RotationIntervalUnparsable | Check::RotationTooFrequent => {
            json!({"primaryRegion": "us-east-1", "passwordRotation": {"every": "1h"}})
        }
        Check::SecretNamesCollide => {
            json!({"primaryRegion": "us-east-1", "secret": {"readOnly": {"name": "crm-cache-ro"}}})
        }
        Check::ReadRegionIsPrimary => {
            json!({"primaryRegion": "us-east-1", "readRegions": ["us-east-2"]})
        }
        Check::FreePlanReadRegions => {
            json!({"primaryRegion": "us-east-1", "plan": "free", "readRegions": ["eu-west-1"]})
        }
        Check::ReadRegionsOnGcp => json!({"primaryRegion": "us-central1", "readRegions": []}),
        Check::TemplateInvalid => {
            json!({"primaryRegion": "us-east-1", "secret": {"templates": {"URL": "{{ restUrl }}"}}})
        }
        Check::DuplicateReadRegion => {
            json!({"primaryRegion": "us-east-1", "readRegions": ["eu-west-1", "us-west-2"]})
        }
        Check::DuplicateAllowedIp => {
            json!({"primaryRegion": "us-east-1", "allowedIPs": ["10.0.0.0/8", "203.0.113.7", "10.0.0.1"]})
        }
        Check::BudgetOnFreePlan => {
            json!({"primaryRegion": "us-east-1", "plan": "free", "budget": 0})
        }
        Check::SecretLabelsInvalid => {
            json!({"primaryRegion": "us-east-1", "secret": {"labels": {"team": "crm"}}})
        }
        Check::SecretAnnotationsInvalid => {
            json!({"primaryRegion": "us-east-1", "secret": {"annotations": {"example.com/owner": "crm"}}})
        }
        Check::SecretTooLarge => {
            json!({"primaryRegion": "us-east-1", "secret": {"templates": {"BIG": "{{ 'x' * 60000 }}"}}})
        }
        Check::AdoptByNameWithoutName => {
            json!({"primaryRegion": "us-east-1", "databaseName": "crm-cache", "adopt": {"byName": true}})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CachePolicy;
    use serde_json::json;

    fn policy(spec: serde_json::Value) -> CachePolicy {
        serde_json::from_value(json!({
            "apiVersion": "cache.upstash-operator.dev/v1alpha1",
            "kind": "CachePolicy",
            "metadata": {"name": "production", "namespace": "crm"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn instance(spec: serde_json::Value) -> CacheInstance {
        serde_json::from_value(json!({
            "apiVersion": "cache.upstash-operator.dev/v1alpha1",
            "kind": "CacheInstance",
            "metadata": {"name": "crm-cache", "namespace": "crm"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn each_check_finds_its_problem_alone() {
        for &check in Check::ALL {
            if matches!(check, Check::TemplateInvalid | Check::SecretTooLarge) {
                continue;
            }
            let found: Vec<Check> = check_instance(&instance(breaking_spec(check)))
                .into_iter()
                .map(|p| p.check)
                .collect();
            assert_eq!(found, vec![check], "{check:?}");
        }
    }

    #[test]
    fn every_check_is_listed() {
        // Adding a check without listing it fails to compile here.
        let listed = |c: Check| match c {
            Check::RotationIntervalUnparsable
            | Check::RotationTooFrequent
            | Check::SecretNamesCollide
            | Check::ReadRegionIsPrimary
            | Check::FreePlanReadRegions
            | Check::ReadRegionsOnGcp
            | Check::SecretLabelsInvalid
            | Check::SecretAnnotationsInvalid
            | Check::TemplateInvalid
            | Check::SecretTooLarge
            | Check::DuplicateReadRegion
            | Check::DuplicateAllowedIp
            | Check::BudgetOnFreePlan
            | Check::AdoptByNameWithoutName => Check::ALL.contains(&c),
        };
        assert!(Check::ALL.iter().all(|&c| listed(c)));
        assert_eq!(Check::ALL.len(), 14);
    }

    #[test]
    fn labels_and_annotations_are_checked_as_the_api_server_does() {
        for good in [
            "team",
            "app.kubernetes.io/name",
            "a",
            "A_b.c-9",
            &format!("{}/{}", "a".repeat(253), "n".repeat(63)),
        ] {
            assert!(is_qualified_name(good), "{good}");
        }
        for bad in [
            "",
            "-team",
            "team-",
            "bad key",
            "UPPER.example.com/x",
            "/x",
            "a/",
            "a/b/c",
            &"n".repeat(64),
            &format!("{}/x", "a".repeat(254)),
        ] {
            assert!(!is_qualified_name(bad), "{bad}");
        }
        assert!(is_label_value(""));
        assert!(is_label_value(&"v".repeat(63)));
        assert!(!is_label_value(&"v".repeat(64)));
        assert!(!is_label_value("a b"));

        let bad_key = check_instance(&instance(json!({"primaryRegion": "us-east-1",
            "secret": {"labels": {"bad key": "x"}, "annotations": {"ok/fine": "x", "-no": "y"}}})));
        assert_eq!(
            bad_key.iter().map(|p| p.check).collect::<Vec<_>>(),
            vec![Check::SecretLabelsInvalid, Check::SecretAnnotationsInvalid]
        );
        assert!(bad_key[0].message.contains("\"bad key\""), "{}", bad_key[0]);
        assert!(bad_key[1].message.contains("\"-no\""), "{}", bad_key[1]);
        let near = json!({"primaryRegion": "us-east-1",
            "secret": {"annotations": {"a": "x".repeat(MAX_ANNOTATIONS - 1)}}});
        assert_eq!(check_instance(&instance(near)), vec![]);
    }

    #[test]
    fn each_policy_check_finds_its_problem_alone() {
        for &check in PolicyCheck::ALL {
            let policy: CachePolicy = serde_json::from_value(json!({
                "apiVersion": "cache.upstash-operator.dev/v1alpha1",
                "kind": "CachePolicy",
                "metadata": {"name": "production", "namespace": "crm"},
                "spec": breaking_policy_spec(check),
            }))
            .unwrap();
            let found = check_policy(&policy);
            assert_eq!(found.len(), 1, "{check:?}: {found:?}");
            assert_eq!(found[0].check, check);
            assert!(found[0].message.contains(check.field()), "{:?}", found[0]);
        }
    }

    #[test]
    fn every_neighbour_is_valid() {
        for &check in Check::ALL {
            let spec = valid_neighbour(check);
            assert_eq!(check_instance(&instance(spec.clone())), vec![], "{spec}");
        }
        for &check in PolicyCheck::ALL {
            let spec = valid_policy_neighbour(check);
            assert_eq!(check_policy(&policy(spec.clone())), vec![], "{spec}");
        }
    }

    #[test]
    fn every_label_syntax_example_is_found_and_names_its_field() {
        for check in [
            PolicyCheck::InvalidMatchLabels,
            PolicyCheck::InvalidMatchExpressionSyntax,
        ] {
            for spec in breaking_policy_specs(check) {
                let found = check_policy(&policy(spec.clone()));
                assert_eq!(found.len(), 1, "{spec}: {found:?}");
                assert_eq!(found[0].check, check, "{spec}");
                assert!(found[0].message.contains(check.field()), "{found:?}");
            }
        }
    }

    #[test]
    fn label_syntax_is_kubernetes_syntax() {
        use crate::crd::common::{is_label_key, is_label_value};
        let name63 = "a".repeat(63);
        let prefix253 = format!("{}.com", "a".repeat(249));
        for key in [
            "tier",
            "app.kubernetes.io/name",
            "example.com/a_b.c-d",
            "A",
            name63.as_str(),
            &format!("{prefix253}/{name63}"),
        ] {
            assert!(is_label_key(key), "{key}");
        }
        for key in [
            "",
            "-tier",
            "tier_",
            "a/b/c",
            "/tier",
            "example.com/",
            "Example.com/tier",
            "exa_mple.com/tier",
            &"a".repeat(64),
            &format!("a{prefix253}/x"),
        ] {
            assert!(!is_label_key(key), "{key}");
        }
        for value in ["", "gold", "A.b-c_1", name63.as_str()] {
            assert!(is_label_value(value), "{value}");
        }
        for value in ["gold plated", "-gold", "a/b", &"a".repeat(64)] {
            assert!(!is_label_value(value), "{value}");
        }
    }

    #[test]
    fn good_specs_pass() {
        for spec in [
            json!({"primaryRegion": "us-east-1"}),
            json!({"primaryRegion": "us-east-1", "readRegions": ["eu-west-1"], "passwordRotation": {"every": "1h"}}),
            json!({"primaryRegion": "us-central1", "readRegions": []}),
            json!({"primaryRegion": "us-east-1", "plan": "free", "readRegions": ["eu-west-1"]}),
            json!({"primaryRegion": "us-east-1", "secret": {"name": "app", "readOnly": {"name": "crm-cache"}}}),
        ] {
            assert_eq!(check_instance(&instance(spec.clone())), vec![], "{spec}");
        }
    }

    #[test]
    fn messages_name_the_field() {
        for &check in Check::ALL {
            if matches!(check, Check::TemplateInvalid | Check::SecretTooLarge) {
                continue;
            }
            for p in check_instance(&instance(breaking_spec(check))) {
                assert!(
                    p.message.contains(check.field()),
                    "{check:?}: {:?} does not name {}",
                    p.message,
                    check.field()
                );
            }
        }
        assert_eq!(
            gcp_regions(),
            ["us-central1", "us-east4", "europe-west1", "asia-northeast1"]
        );
    }
}
