//! Which namespaces may adopt existing databases through the operator-wide credentials.
//!
//! Every namespace without credentials of its own shares the operator-wide Upstash account, so
//! an adoption through it could take over any database of that account, another team's
//! included. The platform team names the namespaces that may (`--adoption-namespace-selector`,
//! a label selector on namespaces, in the spirit of external-secrets' ClusterSecretStore
//! `conditions`); elsewhere adoption needs the namespace's own credentials Secret or
//! `spec.credentials`, which act within the team's own account.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::Namespace, apimachinery::pkg::apis::meta::v1::LabelSelector};
use kube::{
    Api, Client,
    core::{Selector, SelectorExt},
};

/// The namespaces whose CacheInstances may adopt through the operator-wide credentials.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum AdoptionScope {
    /// None (the default).
    #[default]
    Nobody,
    /// Those whose labels the selector matches (`{}`: every namespace).
    Selector(Selector),
}

impl AdoptionScope {
    /// Parses the flag's value: empty for none, else a Kubernetes label selector as JSON or
    /// YAML (`{"matchLabels": {...}, "matchExpressions": [...]}`).
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.trim().is_empty() {
            return Ok(Self::Nobody);
        }
        let selector: LabelSelector = serde_saphyr::from_str(value).map_err(|e| {
            format!(
                "expected a label selector such as {{\"matchLabels\": {{\"upstash.example.com/adopt\": \"true\"}}}}: {e}"
            )
        })?;
        Selector::try_from(selector)
            .map(Self::Selector)
            .map_err(|e| e.to_string())
    }

    /// Whether a namespace with these labels may adopt.
    pub fn allows_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Nobody => false,
            Self::Selector(selector) => selector.matches(labels),
        }
    }

    /// Whether `namespace` may adopt (reads its labels unless the answer does not depend on
    /// them).
    pub async fn allows(&self, client: &Client, namespace: &str) -> kube::Result<bool> {
        match self {
            Self::Nobody => Ok(false),
            Self::Selector(s) if s.selects_all() => Ok(true),
            Self::Selector(_) => {
                let ns = Api::<Namespace>::all(client.clone()).get(namespace).await?;
                Ok(self.allows_labels(&ns.metadata.labels.unwrap_or_default()))
            }
        }
    }
}

/// The `AdoptionNotAllowed` message for an instance in `namespace`.
pub fn refusal(namespace: &str) -> String {
    format!(
        "adopting an existing database through the operator-wide Upstash credentials is not allowed in namespace {namespace}: the platform team allows it per namespace. Adopt with this namespace's own credentials Secret or spec.credentials, or ask the platform team"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nobody_may_adopt_unless_the_platform_says_so() {
        let none = AdoptionScope::parse("").unwrap();
        assert_eq!(none, AdoptionScope::Nobody);
        assert!(!none.allows_labels(&labels(&[("team", "a")])));
        let all = AdoptionScope::parse("{}").unwrap();
        assert!(all.allows_labels(&labels(&[])));
    }

    #[test]
    fn a_selector_picks_namespaces_by_label() {
        let scope =
            AdoptionScope::parse(r#"{"matchLabels": {"upstash.example.com/adopt": "true"}}"#)
                .unwrap();
        assert!(scope.allows_labels(&labels(&[("upstash.example.com/adopt", "true")])));
        assert!(!scope.allows_labels(&labels(&[("upstash.example.com/adopt", "false")])));
        assert!(!scope.allows_labels(&labels(&[])));
        let by_name = AdoptionScope::parse(
            "matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [team-a]}]",
        )
        .unwrap();
        assert!(by_name.allows_labels(&labels(&[("kubernetes.io/metadata.name", "team-a")])));
        assert!(!by_name.allows_labels(&labels(&[("kubernetes.io/metadata.name", "team-b")])));
    }

    #[test]
    fn a_bad_selector_is_refused_with_an_example() {
        let e = AdoptionScope::parse("team=a").unwrap_err();
        assert!(e.contains("matchLabels"), "{e}");
        assert!(
            AdoptionScope::parse(r#"{"matchExpressions": [{"key": "a", "operator": "Near"}]}"#)
                .is_err()
        );
    }
}
