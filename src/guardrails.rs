//! Which CachePolicy applies to a CacheInstance, and whether the instance's spec respects that
//! policy's guardrails (pure: no I/O).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use crate::crd::{CacheInstance, CachePolicy, DeletionPolicy};

/// The outcome of looking for an instance's policy.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// No policy applies.
    None,
    /// Exactly one policy applies.
    One(Box<CachePolicy>),
    /// `spec.policyRef` names a policy that does not exist.
    MissingRef(String),
    /// Several policies select the instance and none is named by `spec.policyRef`.
    Conflict(Vec<String>),
}

impl Selection {
    pub fn policy(&self) -> Option<&CachePolicy> {
        match self {
            Selection::One(p) => Some(p),
            _ => None,
        }
    }
}

/// Whether `selector` matches `labels` (matchLabels and matchExpressions with In, NotIn,
/// Exists, DoesNotExist). An empty selector matches everything.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// Finds the policy of `instance` among `policies` (any namespace; only those in the
/// instance's namespace count). `spec.policyRef` wins over selectors.
pub fn select<'a>(
    instance: &CacheInstance,
    policies: impl IntoIterator<Item = &'a CachePolicy>,
) -> Selection {
    let namespace = instance.namespace().unwrap_or_default();
    let same_ns: Vec<&CachePolicy> = policies
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
        .collect();
    if let Some(reference) = &instance.spec.policy_ref {
        return match same_ns.iter().find(|p| p.name_any() == reference.name) {
            Some(p) => Selection::One(Box::new((*p).clone())),
            None => Selection::MissingRef(reference.name.clone()),
        };
    }
    let labels = instance.labels();
    let mut matching: Vec<&CachePolicy> = same_ns
        .into_iter()
        .filter(|p| {
            p.spec
                .selector
                .as_ref()
                .is_some_and(|s| selector_matches(s, labels))
        })
        .collect();
    match matching.len() {
        0 => Selection::None,
        1 => Selection::One(Box::new(matching.remove(0).clone())),
        _ => {
            let mut names: Vec<String> = matching.iter().map(|p| p.name_any()).collect();
            names.sort();
            Selection::Conflict(names)
        }
    }
}

/// Guardrail violations of `instance` under `policy`, as sentences naming the field.
pub fn violations(instance: &CacheInstance, policy: &CachePolicy) -> Vec<String> {
    let Some(g) = &policy.spec.guardrails else {
        return Vec::new();
    };
    let spec = &instance.spec;
    let mut out = Vec::new();
    if let Some(allowed) = g.allowed_regions.as_ref().filter(|a| !a.is_empty()) {
        if !allowed.contains(&spec.primary_region) {
            out.push(format!(
                "spec.primaryRegion {} is not among the regions CachePolicy {} allows ({})",
                spec.primary_region,
                policy.name_any(),
                allowed
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for read in spec.read_regions.iter().flatten() {
            if !allowed.iter().any(|a| a.as_str() == read.as_str()) {
                out.push(format!(
                    "spec.readRegions contains {read}, which CachePolicy {} does not allow",
                    policy.name_any()
                ));
            }
        }
    }
    if let Some(highest) = g.highest_plan {
        let plan = spec.plan.unwrap_or(crate::crd::Plan::DEFAULT);
        if plan > highest {
            out.push(format!(
                "spec.plan {plan} is above {highest}, the highest plan CachePolicy {} allows",
                policy.name_any()
            ));
        }
    }
    if g.require_eviction == Some(true) && spec.eviction != Some(true) {
        out.push(format!(
            "CachePolicy {} requires spec.eviction: true",
            policy.name_any()
        ));
    }
    if g.require_allowed_ips == Some(true) && spec.allowed_ips.as_ref().is_none_or(|a| a.is_empty())
    {
        out.push(format!(
            "CachePolicy {} requires spec.allowedIPs to list the networks allowed to connect",
            policy.name_any()
        ));
    }
    if g.require_daily_backup == Some(true) && spec.daily_backup != Some(true) {
        out.push(format!(
            "CachePolicy {} requires spec.dailyBackup: true",
            policy.name_any()
        ));
    }
    out
}

/// The deletion policy in force: the spec's, else the policy's default, else the operator's.
pub fn deletion_policy(
    instance: &CacheInstance,
    policy: Option<&CachePolicy>,
    operator_default: DeletionPolicy,
) -> DeletionPolicy {
    instance
        .spec
        .deletion_policy
        .or_else(|| policy.and_then(|p| p.spec.guardrails.as_ref()?.default_deletion_policy))
        .unwrap_or(operator_default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(labels: serde_json::Value, spec: serde_json::Value) -> CacheInstance {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cache.upstash-operator.dev/v1alpha1",
            "kind": "CacheInstance",
            "metadata": {"name": "i", "namespace": "crm", "labels": labels},
            "spec": spec,
        }))
        .unwrap()
    }

    fn policy(name: &str, ns: &str, spec: serde_json::Value) -> CachePolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cache.upstash-operator.dev/v1alpha1",
            "kind": "CachePolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn selectors() {
        let labels = BTreeMap::from([("tier".to_string(), "production".to_string())]);
        let sel: LabelSelector =
            serde_json::from_value(serde_json::json!({"matchLabels": {"tier": "production"}}))
                .unwrap();
        assert!(selector_matches(&sel, &labels));
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["staging"]}]
        }))
        .unwrap();
        assert!(!selector_matches(&sel, &labels));
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        assert!(selector_matches(&sel, &labels));
        assert!(selector_matches(&LabelSelector::default(), &labels));
    }

    #[test]
    fn selection_by_label_ref_and_conflict() {
        let i = instance(
            serde_json::json!({"tier": "production"}),
            serde_json::json!({"primaryRegion": "us-east-1"}),
        );
        let prod = policy(
            "prod",
            "crm",
            serde_json::json!({"selector": {"matchLabels": {"tier": "production"}}}),
        );
        let all = policy("all", "crm", serde_json::json!({"selector": {}}));
        let none = policy("none", "crm", serde_json::json!({}));
        let elsewhere = policy("prod", "other", serde_json::json!({"selector": {}}));
        assert_eq!(select(&i, [&none, &elsewhere]), Selection::None);
        assert_eq!(
            select(&i, [&prod, &none]).policy().unwrap().name_any(),
            "prod"
        );
        assert_eq!(
            select(&i, [&prod, &all]),
            Selection::Conflict(vec!["all".into(), "prod".into()])
        );
        let with_ref = instance(
            serde_json::json!({"tier": "production"}),
            serde_json::json!({"primaryRegion": "us-east-1", "policyRef": {"name": "none"}}),
        );
        assert_eq!(
            select(&with_ref, [&prod, &all, &none])
                .policy()
                .unwrap()
                .name_any(),
            "none"
        );
        let bad_ref = instance(
            serde_json::json!({}),
            serde_json::json!({"primaryRegion": "us-east-1", "policyRef": {"name": "gone"}}),
        );
        assert_eq!(
            select(&bad_ref, [&prod]),
            Selection::MissingRef("gone".into())
        );
    }

    #[test]
    fn guardrail_violations_name_the_field() {
        let p = policy(
            "prod",
            "crm",
            serde_json::json!({"guardrails": {
                "allowedRegions": ["us-east-1", "eu-west-1"], "highestPlan": "fixed_1gb", "requireEviction": true
            }}),
        );
        let ok = instance(
            serde_json::json!({}),
            serde_json::json!({
                "primaryRegion": "us-east-1", "readRegions": ["eu-west-1"], "plan": "fixed_1gb", "eviction": true
            }),
        );
        assert!(violations(&ok, &p).is_empty());
        let bad = instance(
            serde_json::json!({}),
            serde_json::json!({
                "primaryRegion": "ap-south-1", "readRegions": ["us-west-2"], "plan": "fixed_5gb"
            }),
        );
        let v = violations(&bad, &p);
        assert_eq!(v.len(), 4, "{v:?}");
        assert!(v[0].starts_with("spec.primaryRegion ap-south-1"));
        assert!(v[1].starts_with("spec.readRegions contains us-west-2"));
        assert!(v[2].starts_with("spec.plan fixed_5gb"));
        assert!(v[3].contains("spec.eviction"));
    }

    #[test]
    fn deletion_policy_precedence() {
        let p = policy(
            "prod",
            "crm",
            serde_json::json!({"guardrails": {"defaultDeletionPolicy": "Retain"}}),
        );
        let unset = instance(
            serde_json::json!({}),
            serde_json::json!({"primaryRegion": "us-east-1"}),
        );
        let set = instance(
            serde_json::json!({}),
            serde_json::json!({"primaryRegion": "us-east-1", "deletionPolicy": "Delete"}),
        );
        assert_eq!(
            deletion_policy(&unset, None, DeletionPolicy::Delete),
            DeletionPolicy::Delete
        );
        assert_eq!(
            deletion_policy(&unset, Some(&p), DeletionPolicy::Delete),
            DeletionPolicy::Retain
        );
        assert_eq!(
            deletion_policy(&set, Some(&p), DeletionPolicy::Retain),
            DeletionPolicy::Delete
        );
    }
}
