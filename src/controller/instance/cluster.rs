//! The Kubernetes side of a pass, as a trait: every read and write a pass makes besides the
//! watches. [`Live`] makes them over the operator's client (server-side apply under
//! [`FIELD_MANAGER`], the same requests as the reconciler always made); the tests' in-memory
//! double records the writes in order, so that the ordering rules (the finalizer with the
//! create record before the create call, the conditional first write, the Secrets before the
//! status) are tested without a cluster.

use std::future::Future;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams},
};
use serde_json::json;

use super::{
    finalizer,
    plan::{Notice, SecretWrite},
};
use crate::{
    controller::{
        Context, FIELD_MANAGER,
        restarts::{RESTART_ANNOTATION, workload_resource},
        secret,
    },
    crd::{CacheInstance, CacheInstanceStatus, PendingCreate, RestartTarget},
    error::{Error, Result},
};

/// The Kubernetes reads and writes of a pass over one CacheInstance.
pub trait Cluster: Send + Sync {
    /// The API server's current copy of `obj` (`None`: it is gone).
    fn instance(
        &self,
        obj: &CacheInstance,
    ) -> impl Future<Output = Result<Option<CacheInstance>>> + Send;
    /// Puts the finalizer in place with the create record (or without one, which clears an
    /// earlier record), in one write; with `expected`, only if the object is still at that
    /// resourceVersion ([`Error::CacheBehind`] otherwise).
    fn finalize(
        &self,
        obj: &CacheInstance,
        record: Option<&PendingCreate>,
        expected: Option<&str>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Removes the finalizer (guarded against a changed list), letting a deletion complete.
    fn release(&self, obj: &CacheInstance) -> impl Future<Output = Result<()>> + Send;
    /// The Secret `name` in the namespace of `obj` (`None`: there is none).
    fn secret(
        &self,
        obj: &CacheInstance,
        name: &str,
    ) -> impl Future<Output = Result<Option<Secret>>> + Send;
    /// The names of the Secrets `obj` owns.
    fn owned_secrets(
        &self,
        obj: &CacheInstance,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// The credentials digest on a workload's pod template (`None`: no such workload).
    fn stamp(
        &self,
        obj: &CacheInstance,
        target: &RestartTarget,
    ) -> impl Future<Output = Result<Option<Option<String>>>> + Send;
    /// Writes a Secret (deleting it first when its type changes).
    fn write_secret(
        &self,
        obj: &CacheInstance,
        write: &SecretWrite,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Deletes a Secret; one that is gone already is fine.
    fn delete_secret(
        &self,
        obj: &CacheInstance,
        name: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Requests a restart of each target for the instance `key` with credentials `fingerprint`
    /// (the stamp on the pod template, which rolls its pods, is written later, once for all the
    /// instances that use the workload: see [`crate::controller::restarts`]); returns the
    /// workloads newly requested, as `Kind/name`.
    fn request_restarts(
        &self,
        obj: &CacheInstance,
        targets: &[RestartTarget],
        key: &str,
        fingerprint: &str,
    ) -> Vec<String>;
    /// Writes the fields of the status this reconciler owns.
    fn write_status(
        &self,
        obj: &CacheInstance,
        status: &CacheInstanceStatus,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Publishes an Event about `obj` (best effort, in the background).
    fn publish(&self, obj: &CacheInstance, notice: &Notice);
}

/// The cluster, through the operator's client.
pub struct Live<'a> {
    ctx: &'a Context,
}

impl<'a> Live<'a> {
    pub fn new(ctx: &'a Context) -> Self {
        Self { ctx }
    }

    fn api<K>(&self, obj: &CacheInstance) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(
            self.ctx.client.clone(),
            &obj.namespace().unwrap_or_default(),
        )
    }
}

impl Cluster for Live<'_> {
    async fn instance(&self, obj: &CacheInstance) -> Result<Option<CacheInstance>> {
        Ok(self
            .api::<CacheInstance>(obj)
            .get_opt(&obj.name_any())
            .await?)
    }

    async fn finalize(
        &self,
        obj: &CacheInstance,
        record: Option<&PendingCreate>,
        expected: Option<&str>,
    ) -> Result<()> {
        match self
            .api::<CacheInstance>(obj)
            .patch(
                &obj.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&finalizer::metadata_apply(obj, record, expected)),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && expected.is_some() => {
                Err(Error::CacheBehind)
            }
            Err(e) => Err(Error::Kube(e)),
        }
    }

    async fn release(&self, obj: &CacheInstance) -> Result<()> {
        let Some(patch) = finalizer::removal(obj) else {
            return Ok(());
        };
        match self
            .api::<CacheInstance>(obj)
            .patch(
                &obj.name_any(),
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Already gone: the deletion completed.
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Error::Kube(e)),
        }
    }

    async fn secret(&self, obj: &CacheInstance, name: &str) -> Result<Option<Secret>> {
        let namespace = obj.namespace().unwrap_or_default();
        // The operator's own Secrets come from its watch.
        if let Some(ours) = self.ctx.owned_secrets.get(&namespace, name) {
            return Ok(Some(ours.as_ref().clone()));
        }
        Ok(self.api::<Secret>(obj).get_opt(name).await?)
    }

    async fn owned_secrets(&self, obj: &CacheInstance) -> Result<Vec<String>> {
        let listed = self
            .api::<Secret>(obj)
            .list_metadata(&ListParams::default().labels(&secret::selector(obj)))
            .await?;
        Ok(listed
            .items
            .iter()
            .filter(|s| secret::owned_by(&s.metadata, obj))
            .map(|s| s.name_any())
            .collect())
    }

    async fn stamp(
        &self,
        obj: &CacheInstance,
        target: &RestartTarget,
    ) -> Result<Option<Option<String>>> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.ctx.client.clone(),
            &obj.namespace().unwrap_or_default(),
            &workload_resource(target.kind),
        );
        Ok(api.get_opt(&target.name).await?.map(|w| {
            w.data
                .pointer("/spec/template/metadata/annotations")
                .and_then(|a| a.get(RESTART_ANNOTATION))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        }))
    }

    async fn write_secret(&self, obj: &CacheInstance, write: &SecretWrite) -> Result<()> {
        let namespace = obj.namespace().unwrap_or_default();
        let api = self.api::<Secret>(obj);
        let name = write.secret.name_any();
        if write.replace {
            self.ctx.owned_secrets.deleted(&namespace, &name);
            api.delete(&name, &DeleteParams::default()).await?;
        }
        let applied = api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&write.secret),
            )
            .await?;
        self.ctx.owned_secrets.wrote(applied);
        Ok(())
    }

    async fn delete_secret(&self, obj: &CacheInstance, name: &str) -> Result<()> {
        match self
            .api::<Secret>(obj)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn request_restarts(
        &self,
        obj: &CacheInstance,
        targets: &[RestartTarget],
        key: &str,
        fingerprint: &str,
    ) -> Vec<String> {
        let namespace = obj.namespace().unwrap_or_default();
        self.ctx
            .restarts
            .request(&self.ctx.client, &namespace, targets, key, fingerprint)
    }

    async fn write_status(&self, obj: &CacheInstance, status: &CacheInstanceStatus) -> Result<()> {
        let body = json!({
            "apiVersion": CacheInstance::api_version(&()),
            "kind": CacheInstance::kind(&()),
            "status": status,
        });
        self.api::<CacheInstance>(obj)
            .patch_status(
                &obj.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        Ok(())
    }

    fn publish(&self, obj: &CacheInstance, notice: &Notice) {
        self.ctx.publish(
            obj,
            notice.type_,
            &notice.reason,
            notice.action,
            &notice.note,
        );
    }
}
