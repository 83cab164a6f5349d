//! The cluster's identity, part of every database name the operator derives (so that the same
//! namespace and name in two clusters sharing an Upstash account never share a database):
//! `--cluster-id` when set, else the UID of namespace `kube-system`, else, when that is not
//! readable (namespaced permissions), the UID of the operator's own namespace.

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};

/// Where the identity came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    KubeSystem,
    OwnNamespace(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag => f.write_str("--cluster-id"),
            Source::KubeSystem => f.write_str("the UID of namespace kube-system"),
            Source::OwnNamespace(ns) => write!(
                f,
                "the UID of the operator's namespace {ns} (namespace kube-system is not readable)"
            ),
        }
    }
}

/// Picks the identity from the flag and what reading the two namespaces gave (`Ok(None)`: not
/// found or not readable).
pub fn choose(
    flag: Option<&str>,
    kube_system: Option<String>,
    own: Option<String>,
    own_namespace: &str,
) -> Option<(String, Source)> {
    if let Some(id) = flag.map(str::trim).filter(|s| !s.is_empty()) {
        return Some((id.to_string(), Source::Flag));
    }
    if let Some(uid) = kube_system.filter(|s| !s.is_empty()) {
        return Some((uid, Source::KubeSystem));
    }
    own.filter(|s| !s.is_empty())
        .map(|uid| (uid, Source::OwnNamespace(own_namespace.to_string())))
}

async fn uid_of(client: &Client, name: &str) -> Option<String> {
    let api: Api<Namespace> = Api::all(client.clone());
    match api.get_opt(name).await {
        Ok(ns) => ns.and_then(|ns| ns.metadata.uid),
        Err(e) => {
            tracing::debug!(namespace = name, err = %e, "cannot read namespace for the cluster identity");
            None
        }
    }
}

/// Resolves the identity, logging where it came from.
pub async fn resolve(
    client: &Client,
    flag: Option<&str>,
    own_namespace: &str,
) -> anyhow::Result<String> {
    let flagged = flag.is_some_and(|f| !f.trim().is_empty());
    let kube_system = if flagged {
        None
    } else {
        uid_of(client, "kube-system").await
    };
    let own = if flagged || kube_system.is_some() {
        None
    } else {
        uid_of(client, own_namespace).await
    };
    let Some((id, source)) = choose(flag, kube_system, own, own_namespace) else {
        anyhow::bail!(
            "cannot determine the cluster identity: neither namespace kube-system nor the operator's namespace {own_namespace} is readable; set --cluster-id (UPSTASH_OPERATOR_CLUSTER_ID) to a value unique to this cluster"
        );
    };
    tracing::info!(cluster_id = %id, source = %source, "cluster identity for derived database names");
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_then_kube_system_then_the_own_namespace() {
        assert_eq!(
            choose(Some(" prod-eu "), Some("ks".into()), None, "ops"),
            Some(("prod-eu".into(), Source::Flag))
        );
        assert_eq!(
            choose(
                Some(""),
                Some("ks-uid".into()),
                Some("ops-uid".into()),
                "ops"
            ),
            Some(("ks-uid".into(), Source::KubeSystem))
        );
        let (id, source) = choose(None, None, Some("ops-uid".into()), "ops").unwrap();
        assert_eq!(id, "ops-uid");
        assert!(source.to_string().contains("namespace ops"));
        assert_eq!(choose(None, None, None, "ops"), None);
    }
}
