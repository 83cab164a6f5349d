//! Every check a CachePolicy spec must pass, where the API server makes the same check at
//! admission, and the example specs that break each one (for the admission tests).

use std::time::Duration;

use super::Admission;
use crate::crd::CachePolicy;

/// One check of a CachePolicy spec. The policy's status reports a failed one (`Ready=False`
/// with [`PolicyCheck::reason`]); the monitor then uses the nearest valid value (a selector that
/// selects nothing, the shortest interval).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyCheck {
    /// A `matchExpressions` operator that is not In, NotIn, Exists or DoesNotExist, or values
    /// that do not fit the operator.
    InvalidSelector,
    /// A `matchLabels` key or value that is not label syntax.
    InvalidMatchLabels,
    /// A `matchExpressions` key or value that is not label syntax.
    InvalidMatchExpressionSyntax,
    /// `spec.evaluationInterval` shorter than 1s.
    EvaluationIntervalTooShort,
    /// `spec.probe.interval` shorter than 1s.
    ProbeIntervalTooShort,
}

impl PolicyCheck {
    /// Every check.
    pub const ALL: &'static [PolicyCheck] = &[
        PolicyCheck::InvalidSelector,
        PolicyCheck::InvalidMatchLabels,
        PolicyCheck::InvalidMatchExpressionSyntax,
        PolicyCheck::EvaluationIntervalTooShort,
        PolicyCheck::ProbeIntervalTooShort,
    ];

    /// Where admission makes the same check.
    pub fn admission(self) -> Admission {
        match self {
            PolicyCheck::InvalidSelector | PolicyCheck::InvalidMatchExpressionSyntax => {
                Admission::Cel {
                    field: "spec.selector.matchExpressions",
                }
            }
            PolicyCheck::InvalidMatchLabels => Admission::Cel {
                field: "spec.selector.matchLabels",
            },
            PolicyCheck::EvaluationIntervalTooShort => Admission::Cel {
                field: "spec.evaluationInterval",
            },
            PolicyCheck::ProbeIntervalTooShort => Admission::Cel {
                field: "spec.probe.interval",
            },
        }
    }

    /// The field, as `kubectl explain` names it.
    pub fn field(self) -> &'static str {
        match self.admission() {
            Admission::Schema { field } | Admission::Cel { field } => field,
            Admission::ReconcileOnly { .. } => "spec",
        }
    }

    /// The reason of the policy's `Ready=False` condition.
    pub fn reason(self) -> &'static str {
        match self {
            PolicyCheck::InvalidSelector
            | PolicyCheck::InvalidMatchLabels
            | PolicyCheck::InvalidMatchExpressionSyntax => "InvalidSelector",
            _ => "InvalidSpec",
        }
    }
}

/// A policy spec that breaks a check, with a message for the `Ready` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    pub check: PolicyCheck,
    pub message: String,
}

/// Every problem of `policy`'s spec, in [`PolicyCheck::ALL`] order.
pub fn check_policy(policy: &CachePolicy) -> Vec<PolicyProblem> {
    let spec = &policy.spec;
    let mut problems = Vec::new();
    if let Some(selector) = &spec.selector
        && let Err(why) = kube::core::Selector::try_from(selector.clone())
    {
        problems.push(PolicyProblem {
            check: PolicyCheck::InvalidSelector,
            message: format!(
                "spec.selector.matchExpressions is invalid and selects nothing: {why}"
            ),
        });
    }
    if let Some(Err((check, message))) = spec.selector.as_ref().map(selector_label_syntax) {
        problems.push(PolicyProblem { check, message });
    }
    let too_short = |d: Option<&crate::crd::DurationString>| {
        d.is_some_and(|d| d.duration().is_ok_and(|d| d < Duration::from_secs(1)))
    };
    if too_short(spec.evaluation_interval.as_ref()) {
        problems.push(PolicyProblem {
            check: PolicyCheck::EvaluationIntervalTooShort,
            message: "spec.evaluationInterval must be at least 1s; 1s is used".into(),
        });
    }
    if too_short(spec.probe.as_ref().and_then(|p| p.interval.as_ref())) {
        problems.push(PolicyProblem {
            check: PolicyCheck::ProbeIntervalTooShort,
            message: "spec.probe.interval must be at least 1s; 1s is used".into(),
        });
    }
    problems
}

/// Whether every key and value of `selector` is label syntax, as the CRD's schema and CEL rules
/// check at admission; if not, the check that fails and a message naming the field. A selector
/// that fails selects nothing.
pub fn selector_label_syntax(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> Result<(), (PolicyCheck, String)> {
    if let Some(why) = selector
        .match_labels
        .iter()
        .flatten()
        .find_map(|(k, v)| label_syntax_problem(k, std::iter::once(v)))
    {
        return Err((
            PolicyCheck::InvalidMatchLabels,
            format!("spec.selector.matchLabels is invalid and selects nothing: {why}"),
        ));
    }
    if let Some(why) = selector
        .match_expressions
        .iter()
        .flatten()
        .find_map(|e| label_syntax_problem(&e.key, e.values.iter().flatten()))
    {
        return Err((
            PolicyCheck::InvalidMatchExpressionSyntax,
            format!("spec.selector.matchExpressions is invalid and selects nothing: {why}"),
        ));
    }
    Ok(())
}

/// Why a selector's key and values are not label syntax, if they are not.
fn label_syntax_problem<'a>(
    key: &str,
    mut values: impl Iterator<Item = &'a String>,
) -> Option<String> {
    if !crate::crd::common::is_label_key(key) {
        return Some(format!("{key:?} is not a label key"));
    }
    values
        .find(|v| !crate::crd::common::is_label_value(v))
        .map(|v| format!("{v:?} (for key {key}) is not a label value"))
}

/// A CachePolicy spec that breaks exactly `check`.
pub fn breaking_policy_spec(check: PolicyCheck) -> serde_json::Value {
    use serde_json::json;
    match check {
        PolicyCheck::InvalidSelector => json!({"selector": {"matchExpressions": [
            {"key": "tier", "operator": "Equals", "values": ["production"]}
        ]}}),
        PolicyCheck::InvalidMatchLabels => {
            json!({"selector": {"matchLabels": {"tier": "gold plated"}}})
        }
        PolicyCheck::InvalidMatchExpressionSyntax => json!({"selector": {"matchExpressions": [
            {"key": "team/", "operator": "Exists"}
        ]}}),
        PolicyCheck::EvaluationIntervalTooShort => {
            json!({"selector": {}, "evaluationInterval": "0s"})
        }
        PolicyCheck::ProbeIntervalTooShort => {
            json!({"selector": {}, "probe": {"enabled": true, "interval": "0s"}})
        }
    }
}

/// Every CachePolicy spec the admission tests show `check` refusing: [`breaking_policy_spec`]
/// and, for the label syntax, one example per place a key or value can be wrong.
pub fn breaking_policy_specs(check: PolicyCheck) -> Vec<serde_json::Value> {
    use serde_json::json;
    let mut specs = vec![breaking_policy_spec(check)];
    let long = "x".repeat(64);
    match check {
        PolicyCheck::InvalidMatchLabels => specs.extend([
            json!({"selector": {"matchLabels": {"-tier": "gold"}}}),
            json!({"selector": {"matchLabels": {"Example.com/tier": "gold"}}}),
            json!({"selector": {"matchLabels": {(long.as_str()): "gold"}}}),
            json!({"selector": {"matchLabels": {(format!("{}/tier", "a".repeat(254))): "gold"}}}),
            json!({"selector": {"matchLabels": {"tier": long}}}),
        ]),
        PolicyCheck::InvalidMatchExpressionSyntax => specs.extend([
            json!({"selector": {"matchExpressions": [{"key": "tier!", "operator": "Exists"}]}}),
            json!({"selector": {"matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["gold", "not/a/value"]}
            ]}}),
            json!({"selector": {"matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": [long]}
            ]}}),
        ]),
        _ => {}
    }
    specs
}

/// A valid CachePolicy spec next to the ones `check` refuses: the same fields, valid values.
pub fn valid_policy_neighbour(check: PolicyCheck) -> serde_json::Value {
    use serde_json::json;
    match check {
        PolicyCheck::InvalidSelector => json!({"selector": {"matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["production"]}
        ]}}),
        PolicyCheck::InvalidMatchLabels => json!({"selector": {"matchLabels": {
            "tier": "gold-plated", "example.com/team": "", "app.kubernetes.io/name": "crm_v1.2"
        }}}),
        PolicyCheck::InvalidMatchExpressionSyntax => json!({"selector": {"matchExpressions": [
            {"key": "example.com/team", "operator": "Exists"},
            {"key": "tier", "operator": "NotIn", "values": ["gold", "A.b-c_1", ""]}
        ]}}),
        PolicyCheck::EvaluationIntervalTooShort => {
            json!({"selector": {}, "evaluationInterval": "1s"})
        }
        PolicyCheck::ProbeIntervalTooShort => {
            json!({"selector": {}, "probe": {"enabled": true, "interval": "1s"}})
        }
    }
}
