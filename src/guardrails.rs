//! Which CachePolicies apply to a CacheInstance, and whether the instance's spec respects their
//! guardrails (pure: no I/O).
//!
//! Every policy in the instance's namespace whose selector matches its labels applies, and so
//! does the one `spec.policyRef` names: a reference adds a policy, it never takes the instance
//! out of a policy that selects it. Guardrails combine so that the strictest wins: a spec must
//! satisfy each applicable policy's rules (the allowed regions intersect, the lowest highest
//! plan holds, any `require*` holds), and `Retain` wins over `Delete` as the default deletion
//! policy.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{
    ResourceExt,
    core::{Selector, SelectorExt},
};

use crate::crd::{CacheInstance, CachePolicy, DeletionPolicy, MaintenanceWindow};

/// The policies that apply to one instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applicable {
    /// Every applicable policy, sorted by name, each once.
    pub policies: Vec<Arc<CachePolicy>>,
    /// `spec.policyRef` names a policy that does not exist in the instance's namespace.
    pub missing_ref: Option<String>,
}

impl Applicable {
    /// Whether no policy applies (and none is missing).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty() && self.missing_ref.is_none()
    }

    /// The maintenance window of the first applicable policy (by name) that sets one: the
    /// default for instances without a window of their own.
    pub fn window(&self) -> Option<MaintenanceWindow> {
        self.policies
            .iter()
            .find_map(|p| p.spec.maintenance_window.as_deref().cloned())
    }

    /// The applicable policies' names, comma-separated (`None` when no policy applies).
    pub fn names(&self) -> Option<String> {
        (!self.policies.is_empty()).then(|| {
            self.policies
                .iter()
                .map(|p| p.name_any())
                .collect::<Vec<_>>()
                .join(", ")
        })
    }

    /// The policies as references.
    pub fn iter(&self) -> impl Iterator<Item = &CachePolicy> {
        self.policies.iter().map(|p| p.as_ref())
    }
}

/// `selector` as kube's [`Selector`], or why it is invalid (an unknown operator, `In` without
/// values, a key or value that is not label syntax).
pub fn compile(selector: &LabelSelector) -> Result<Selector, String> {
    crate::crd::validation::selector_label_syntax(selector).map_err(|(_, why)| why)?;
    Selector::try_from(selector.clone()).map_err(|e| e.to_string())
}

/// Whether `selector` matches `labels`. An empty selector matches everything; an invalid one
/// matches nothing.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    compile(selector).is_ok_and(|s| s.matches(labels))
}

/// Whether `policy` selects `instance` by label (same namespace, a selector that matches).
/// Policies without a selector select nothing.
pub fn selects(policy: &CachePolicy, instance: &CacheInstance) -> bool {
    policy.namespace() == instance.namespace()
        && policy
            .spec
            .selector
            .as_ref()
            .is_some_and(|s| selector_matches(s, instance.labels()))
}

/// Whether `policy` applies to `instance`: it selects it, or `spec.policyRef` names it.
pub fn applies(policy: &CachePolicy, instance: &CacheInstance) -> bool {
    selects(policy, instance)
        || (policy.namespace() == instance.namespace()
            && instance
                .spec
                .policy_ref
                .as_ref()
                .is_some_and(|r| r.name == policy.name_any()))
}

/// The policies among `policies` (any namespace) that apply to `instance`.
pub fn applicable<'a>(
    instance: &CacheInstance,
    policies: impl IntoIterator<Item = &'a Arc<CachePolicy>>,
) -> Applicable {
    let mut out: Vec<Arc<CachePolicy>> = policies
        .into_iter()
        .filter(|p| applies(p, instance))
        .cloned()
        .collect();
    out.sort_by_key(|p| p.name_any());
    out.dedup_by_key(|p| p.name_any());
    let missing_ref = instance
        .spec
        .policy_ref
        .as_ref()
        .filter(|r| !out.iter().any(|p| p.name_any() == r.name))
        .map(|r| r.name.clone());
    Applicable {
        policies: out,
        missing_ref,
    }
}

/// Guardrail violations of `instance` under `policy`, as sentences naming the field.
pub fn violations(instance: &CacheInstance, policy: &CachePolicy) -> Vec<String> {
    let Some(g) = &policy.spec.guardrails else {
        return Vec::new();
    };
    let spec = &instance.spec;
    let name = policy.name_any();
    let mut out = Vec::new();
    if let Some(allowed) = g.allowed_regions.as_ref().filter(|a| !a.is_empty()) {
        if !allowed.contains(&spec.primary_region) {
            out.push(format!(
                "spec.primaryRegion {} is not among the regions CachePolicy {name} allows ({})",
                spec.primary_region,
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
                    "spec.readRegions contains {read}, which CachePolicy {name} does not allow"
                ));
            }
        }
    }
    if let Some(highest) = g.highest_plan {
        let plan = spec.plan.unwrap_or(crate::crd::Plan::DEFAULT);
        if plan > highest {
            out.push(format!(
                "spec.plan {plan} is above {highest}, the highest plan CachePolicy {name} allows"
            ));
        }
    }
    if g.require_eviction == Some(true) && spec.eviction != Some(true) {
        out.push(format!("CachePolicy {name} requires spec.eviction: true"));
    }
    if g.require_allowed_ips == Some(true) {
        match spec.allowed_ips.as_deref() {
            None | Some([]) => out.push(format!(
                "CachePolicy {name} requires spec.allowedIPs to list the networks allowed to connect"
            )),
            Some(entries) => {
                if let Some(open) = admits_every_address(entries) {
                    out.push(format!(
                        "CachePolicy {name} requires spec.allowedIPs to list the networks allowed to connect, and {open} admits every address"
                    ));
                }
            }
        }
    }
    if g.require_daily_backup == Some(true) && spec.daily_backup != Some(true) {
        out.push(format!(
            "CachePolicy {name} requires spec.dailyBackup: true"
        ));
    }
    out
}

/// Whether the `allowedIPs` entries together admit every IPv4 or every IPv6 address (a `/0`
/// range such as `0.0.0.0/0` or `::/0`, or ranges that add up to one, such as `0.0.0.0/1` and
/// `128.0.0.0/1`; IPv4-mapped IPv6 ranges count as IPv4): the entries that do so, for the
/// message. Unparsable entries admit nothing.
pub fn admits_every_address(entries: &[String]) -> Option<String> {
    use ipnet::{IpNet, Ipv4Net, Ipv6Net};
    let parsed: Vec<(&str, IpNet)> = entries
        .iter()
        .filter_map(|e| {
            let t = e.trim();
            t.parse::<IpNet>()
                .or_else(|_| t.parse::<std::net::IpAddr>().map(IpNet::from))
                .ok()
                .map(|n| (e.as_str(), n.trunc()))
        })
        .collect();
    // An IPv4-mapped IPv6 range (`::ffff:0:0/96` and within) is the IPv4 range it maps.
    let as_v4 = |n: &Ipv6Net| -> Option<Ipv4Net> {
        let mapped = n.network().to_ipv4_mapped()?;
        if n.prefix_len() < 96 {
            return None;
        }
        Ipv4Net::new(mapped, n.prefix_len() - 96).ok()
    };
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut v4_entries = Vec::new();
    let mut v6_entries = Vec::new();
    for (entry, net) in &parsed {
        match net {
            IpNet::V4(n) => {
                v4.push(*n);
                v4_entries.push(*entry);
            }
            IpNet::V6(n) => match as_v4(n) {
                Some(n) => {
                    v4.push(n);
                    v4_entries.push(*entry);
                }
                None => {
                    v6.push(*n);
                    v6_entries.push(*entry);
                }
            },
        }
    }
    let describe = |list: &[&str]| match list {
        [one] => one.to_string(),
        many => format!("together, {}", many.join(", ")),
    };
    // The entry with prefix length 0 alone, when there is one; else all ranges of that family.
    if let Some((entry, _)) = parsed.iter().find(|(_, n)| n.prefix_len() == 0) {
        return Some(entry.to_string());
    }
    if Ipv4Net::aggregate(&v4).iter().any(|n| n.prefix_len() == 0) {
        return Some(describe(&v4_entries));
    }
    if Ipv6Net::aggregate(&v6).iter().any(|n| n.prefix_len() == 0) {
        return Some(describe(&v6_entries));
    }
    None
}

/// What the `PolicyCompliant` condition says, and whether provisioning and changes are blocked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compliance {
    pub compliant: bool,
    pub reason: &'static str,
    pub message: String,
    /// The spec may not be provisioned or applied.
    pub blocked: bool,
}

/// Judges `instance` against every applicable policy: each policy's guardrails must hold.
pub fn compliance(instance: &CacheInstance, applicable: &Applicable) -> Compliance {
    let blocked = |reason, message| Compliance {
        compliant: false,
        reason,
        message,
        blocked: true,
    };
    if let Some(name) = &applicable.missing_ref {
        return blocked(
            "PolicyNotFound",
            format!(
                "spec.policyRef names CachePolicy {name}, which does not exist in this namespace"
            ),
        );
    }
    let broken: Vec<String> = applicable
        .iter()
        .flat_map(|p| violations(instance, p))
        .collect();
    if !broken.is_empty() {
        return blocked("PolicyViolation", broken.join("; "));
    }
    match applicable.policies.as_slice() {
        [] => Compliance {
            compliant: true,
            reason: "NoPolicy",
            message: "no CachePolicy selects this instance".into(),
            blocked: false,
        },
        [one] => Compliance {
            compliant: true,
            reason: "Compliant",
            message: format!("the spec respects CachePolicy {}", one.name_any()),
            blocked: false,
        },
        _ => Compliance {
            compliant: true,
            reason: "Compliant",
            message: format!(
                "the spec respects CachePolicies {}",
                applicable.names().unwrap_or_default()
            ),
            blocked: false,
        },
    }
}

/// The deletion policy in force: the spec's, else the strictest default of the applicable
/// policies (`Retain` over `Delete`), else the operator's.
pub fn deletion_policy(
    instance: &CacheInstance,
    applicable: &Applicable,
    operator_default: DeletionPolicy,
) -> DeletionPolicy {
    if let Some(own) = instance.spec.deletion_policy {
        return own;
    }
    let defaults: Vec<DeletionPolicy> = applicable
        .iter()
        .filter_map(|p| p.spec.guardrails.as_ref()?.default_deletion_policy)
        .collect();
    if defaults.contains(&DeletionPolicy::Retain) {
        DeletionPolicy::Retain
    } else {
        defaults.first().copied().unwrap_or(operator_default)
    }
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

    fn policy(name: &str, ns: &str, spec: serde_json::Value) -> Arc<CachePolicy> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "cache.upstash-operator.dev/v1alpha1",
                "kind": "CachePolicy",
                "metadata": {"name": name, "namespace": ns},
                "spec": spec,
            }))
            .unwrap(),
        )
    }

    fn names(a: &Applicable) -> Vec<String> {
        a.policies.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn required_allowed_ips_are_not_satisfied_by_a_range_that_admits_everyone() {
        let policy = policy(
            "locked",
            "crm",
            serde_json::json!({"selector": {}, "guardrails": {"requireAllowedIPs": true}}),
        );
        let judge = |ips: serde_json::Value| {
            let i = instance(
                serde_json::json!({}),
                serde_json::json!({"primaryRegion": "us-east-1", "allowedIPs": ips}),
            );
            violations(&i, &policy)
        };
        for open in [
            serde_json::json!(["0.0.0.0/0"]),
            serde_json::json!(["::/0"]),
            serde_json::json!(["10.0.0.0/8", "0.0.0.0/0"]),
            serde_json::json!(["1.2.3.4/0"]),
            serde_json::json!(["0.0.0.0/1", "128.0.0.0/1"]),
            serde_json::json!(["::/1", "8000::/1"]),
            serde_json::json!(["::ffff:0:0/96"]),
        ] {
            let v = judge(open.clone());
            assert_eq!(v.len(), 1, "{open}: {v:?}");
            assert!(v[0].contains("admits every address"), "{open}: {}", v[0]);
        }
        assert!(judge(serde_json::json!(["0.0.0.0/0"]))[0].contains("0.0.0.0/0 admits"));
        assert!(
            judge(serde_json::json!(["0.0.0.0/1", "128.0.0.0/1"]))[0]
                .contains("together, 0.0.0.0/1, 128.0.0.0/1 admits")
        );
        for closed in [
            serde_json::json!(["10.0.0.0/8", "203.0.113.7"]),
            serde_json::json!(["0.0.0.0/1"]),
            serde_json::json!(["2001:db8::/32"]),
            serde_json::json!(["0.0.0.0/1", "::/1", "8000::/2"]),
        ] {
            assert_eq!(judge(closed.clone()), Vec::<String>::new(), "{closed}");
        }
        assert!(judge(serde_json::json!([]))[0].contains("requires spec.allowedIPs"));
    }

    #[test]
    fn selectors_use_kubes_semantics() {
        let labels = BTreeMap::from([("tier".to_string(), "production".to_string())]);
        let sel = |v: serde_json::Value| serde_json::from_value::<LabelSelector>(v).unwrap();
        assert!(selector_matches(
            &sel(serde_json::json!({"matchLabels": {"tier": "production"}})),
            &labels
        ));
        assert!(!selector_matches(
            &sel(
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["staging"]}]})
            ),
            &labels
        ));
        assert!(selector_matches(
            &sel(
                serde_json::json!({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]})
            ),
            &labels
        ));
        assert!(selector_matches(
            &sel(
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["dev"]}]})
            ),
            &labels
        ));
        assert!(selector_matches(&LabelSelector::default(), &labels));
        // Invalid selectors match nothing and say why.
        let bad =
            sel(serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "Near"}]}));
        assert!(!selector_matches(&bad, &labels));
        assert!(compile(&bad).is_err());
        let no_values =
            sel(serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "In"}]}));
        assert!(!selector_matches(&no_values, &labels));
    }

    #[test]
    fn every_selecting_policy_applies_and_a_reference_only_adds() {
        let prod_labels = serde_json::json!({"tier": "production"});
        let i = instance(
            prod_labels.clone(),
            serde_json::json!({"primaryRegion": "us-east-1"}),
        );
        let prod = policy(
            "prod",
            "crm",
            serde_json::json!({"selector": {"matchLabels": {"tier": "production"}}}),
        );
        let all = policy("all", "crm", serde_json::json!({"selector": {}}));
        let unselecting = policy("opt-in", "crm", serde_json::json!({}));
        let elsewhere = policy("prod", "other", serde_json::json!({"selector": {}}));
        let set = [prod.clone(), all.clone(), unselecting.clone(), elsewhere];
        assert_eq!(names(&applicable(&i, &set)), ["all", "prod"]);
        assert!(applicable(&i, std::slice::from_ref(&unselecting)).is_empty());

        // A reference adds its policy; it does not escape the selecting ones.
        let with_ref = instance(
            prod_labels.clone(),
            serde_json::json!({"primaryRegion": "us-east-1", "policyRef": {"name": "opt-in"}}),
        );
        assert_eq!(
            names(&applicable(&with_ref, &set)),
            ["all", "opt-in", "prod"]
        );
        // Referencing a selecting policy counts it once.
        let ref_prod = instance(
            prod_labels,
            serde_json::json!({"primaryRegion": "us-east-1", "policyRef": {"name": "prod"}}),
        );
        let a = applicable(&ref_prod, &set);
        assert_eq!(names(&a), ["all", "prod"]);
        assert_eq!(a.missing_ref, None);
        assert_eq!(a.names().as_deref(), Some("all, prod"));

        let bad_ref = instance(
            serde_json::json!({}),
            serde_json::json!({"primaryRegion": "us-east-1", "policyRef": {"name": "gone"}}),
        );
        let a = applicable(&bad_ref, &set);
        assert_eq!(names(&a), ["all"]);
        assert_eq!(a.missing_ref.as_deref(), Some("gone"));
        let c = compliance(&bad_ref, &a);
        assert_eq!((c.reason, c.blocked), ("PolicyNotFound", true));
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
    fn the_strictest_guardrail_wins() {
        let selected = serde_json::json!({"tier": "production"});
        let lenient = policy(
            "lenient",
            "crm",
            serde_json::json!({"selector": {}, "guardrails": {"highestPlan": "fixed_5gb"}}),
        );
        let strict = policy(
            "strict",
            "crm",
            serde_json::json!({"selector": {"matchLabels": {"tier": "production"}},
                "guardrails": {"highestPlan": "fixed_1gb", "allowedRegions": ["eu-west-1"]}}),
        );
        let set = [lenient, strict];
        // Naming the lenient policy does not escape the strict one that selects the instance.
        let i = instance(
            selected,
            serde_json::json!({"primaryRegion": "eu-west-1", "plan": "fixed_5gb", "policyRef": {"name": "lenient"}}),
        );
        let c = compliance(&i, &applicable(&i, &set));
        assert!(!c.compliant && c.blocked);
        assert_eq!(c.reason, "PolicyViolation");
        assert!(
            c.message.contains("highest plan CachePolicy strict allows"),
            "{}",
            c.message
        );
        let fine = instance(
            serde_json::json!({"tier": "production"}),
            serde_json::json!({"primaryRegion": "eu-west-1", "plan": "fixed_1gb"}),
        );
        let c = compliance(&fine, &applicable(&fine, &set));
        assert_eq!(
            (c.compliant, c.reason, c.message.as_str()),
            (
                true,
                "Compliant",
                "the spec respects CachePolicies lenient, strict"
            )
        );
        let none = compliance(&fine, &Applicable::default());
        assert_eq!((none.compliant, none.reason), (true, "NoPolicy"));
    }

    #[test]
    fn deletion_policy_precedence() {
        let retain = policy(
            "retain",
            "crm",
            serde_json::json!({"selector": {}, "guardrails": {"defaultDeletionPolicy": "Retain"}}),
        );
        let delete = policy(
            "delete",
            "crm",
            serde_json::json!({"selector": {}, "guardrails": {"defaultDeletionPolicy": "Delete"}}),
        );
        let unset = instance(
            serde_json::json!({}),
            serde_json::json!({"primaryRegion": "us-east-1"}),
        );
        let set = instance(
            serde_json::json!({}),
            serde_json::json!({"primaryRegion": "us-east-1", "deletionPolicy": "Delete"}),
        );
        let both = applicable(&unset, &[delete.clone(), retain.clone()]);
        assert_eq!(
            deletion_policy(&unset, &Applicable::default(), DeletionPolicy::Delete),
            DeletionPolicy::Delete
        );
        assert_eq!(
            deletion_policy(&unset, &both, DeletionPolicy::Delete),
            DeletionPolicy::Retain,
            "Retain is the stricter default"
        );
        assert_eq!(
            deletion_policy(
                &unset,
                &applicable(&unset, &[delete]),
                DeletionPolicy::Retain
            ),
            DeletionPolicy::Delete
        );
        assert_eq!(
            deletion_policy(&set, &both, DeletionPolicy::Retain),
            DeletionPolicy::Delete
        );
    }
}
