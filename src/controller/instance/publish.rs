//! The workload restarts: the annotation a restart stamps on a pod template and the API resource
//! of a workload kind. The restarts themselves are requested by [`super::cluster::Cluster`] and
//! coalesced per workload by [`crate::controller::restarts`].

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::ApiResource;

use crate::crd::WorkloadKind;

/// Annotation put on restarted workloads' pod templates: one `<instance key>=<digest>` entry of
/// the credentials per instance (see [`crate::controller::restarts`]).
pub const RESTART_ANNOTATION: &str = "cache.upstash-operator.dev/credentials-hash";

/// The API resource of a workload kind.
pub fn workload_resource(kind: WorkloadKind) -> ApiResource {
    match kind {
        WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
        WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        WorkloadKind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
    }
}
