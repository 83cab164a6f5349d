//! What a pass writes into the cluster besides its status: the connection Secrets (and the
//! removal of the instance's Secrets the spec no longer names), with server-side apply under the
//! operator's field manager. Workload restarts are coalesced per workload by
//! [`crate::controller::restarts`].

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, StatefulSet},
    core::v1::Secret,
};
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DeleteParams, Patch, PatchParams},
};

use super::plan::SecretsPlan;
use crate::{
    controller::{Context, FIELD_MANAGER},
    crd::WorkloadKind,
    error::Result,
};

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

/// Writes the planned Secrets; returns the names written.
pub async fn secrets(ctx: &Context, namespace: &str, plan: &SecretsPlan) -> Result<Vec<String>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut written = Vec::new();
    for write in &plan.writes {
        let name = write.secret.name_any();
        if write.replace {
            ctx.owned_secrets.deleted(namespace, &name);
            api.delete(&name, &DeleteParams::default()).await?;
        }
        let applied = api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&write.secret),
            )
            .await?;
        ctx.owned_secrets.wrote(applied);
        written.push(name);
    }
    Ok(written)
}

/// Deletes the instance's Secrets the spec no longer names (after the new ones are written).
pub async fn remove_stale(ctx: &Context, namespace: &str, names: &[String]) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    for name in names {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
