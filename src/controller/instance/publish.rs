//! What a pass writes into the cluster besides its status: the connection Secrets (and the
//! removal of the instance's Secrets the spec no longer names) and the workload restarts, all
//! with server-side apply under the operator's field manager.

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, StatefulSet},
    core::v1::Secret,
};
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams},
};
use serde_json::json;

use super::plan::SecretsPlan;
use crate::{
    controller::{Context, FIELD_MANAGER},
    crd::{RestartTarget, WorkloadKind},
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

/// Stamps the credentials' digest on each target's pod template, which rolls its pods; returns
/// the workloads restarted, as `Kind/name`.
pub async fn restart(
    ctx: &Context,
    namespace: &str,
    targets: &[RestartTarget],
    fingerprint: &str,
) -> Result<Vec<String>> {
    let mut restarted = Vec::new();
    for target in targets {
        let api: Api<DynamicObject> = Api::namespaced_with(
            ctx.client.clone(),
            namespace,
            &workload_resource(target.kind),
        );
        api.patch(
            &target.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&restart_apply(target, fingerprint)),
        )
        .await?;
        restarted.push(format!("{:?}/{}", target.kind, target.name));
    }
    Ok(restarted)
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
