//! The workload restarts: the annotation a restart stamps on a pod template, and the apply body
//! that does it (made by [`super::cluster::Cluster::restart`]).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::ApiResource;
use serde_json::json;

use crate::crd::{RestartTarget, WorkloadKind};

/// Annotation put on restarted workloads' pod templates: a digest of the credentials.
pub const RESTART_ANNOTATION: &str = "cache.upstash-operator.dev/credentials-hash";

/// The API resource of a workload kind.
pub fn workload_resource(kind: WorkloadKind) -> ApiResource {
    match kind {
        WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
        WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        WorkloadKind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
    }
}

/// The apply body that stamps `fingerprint` on a workload's pod template.
pub fn restart_apply(target: &RestartTarget, fingerprint: &str) -> serde_json::Value {
    let resource = workload_resource(target.kind);
    json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {"name": target.name},
        "spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: fingerprint}}}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_applies_only_the_annotation() {
        let target = RestartTarget {
            kind: WorkloadKind::StatefulSet,
            name: "db-client".into(),
        };
        assert_eq!(
            restart_apply(&target, "0123abcd"),
            json!({
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": "db-client"},
                "spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: "0123abcd"}}}},
            })
        );
    }
}
