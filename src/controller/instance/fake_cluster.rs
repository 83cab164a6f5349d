//! An in-memory cluster for the tests of a whole pass: the CacheInstance as the API server
//! holds it, the Secrets and workloads of its namespace, and every write and Event of the
//! pass, in order.

use std::{collections::BTreeMap, sync::Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::{
    cluster::Cluster,
    finalizer,
    plan::{Notice, SecretWrite},
};
use crate::{
    controller::{FINALIZER, fake_api::FakeApi, restarts, secret},
    crd::{
        CREATE_RECORD_ANNOTATION, CacheInstance, CacheInstanceStatus, PendingCreate, RestartTarget,
    },
    error::{Error, Result},
};

#[derive(Default)]
struct State {
    instance: Option<CacheInstance>,
    secrets: BTreeMap<String, Secret>,
    workloads: BTreeMap<String, Option<String>>,
    /// Each write and Event, with the number of Upstash calls made before it.
    log: Vec<(usize, String)>,
    gets: usize,
    /// The Upstash account beside the cluster, whose calls the timeline interleaves.
    upstash: Option<FakeApi>,
}

/// The in-memory cluster.
#[derive(Default)]
pub struct FakeCluster {
    state: Mutex<State>,
}

impl FakeCluster {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A cluster holding `obj` (at resourceVersion 1 unless it has one).
    pub fn with(obj: &CacheInstance) -> Self {
        let mut stored = obj.clone();
        stored
            .metadata
            .resource_version
            .get_or_insert_with(|| "1".into());
        let cluster = Self::default();
        cluster.lock().instance = Some(stored);
        cluster
    }

    /// The cluster beside the Upstash account `api`.
    pub fn beside(self, api: &FakeApi) -> Self {
        self.lock().upstash = Some(api.clone());
        self
    }

    /// The writes and Events (`event Reason`) and, between them, the Upstash calls that
    /// change something (`upstash create`), in the order they happened.
    pub fn timeline(&self, api: &FakeApi) -> Vec<String> {
        let calls = api.calls();
        let changes = |range: &[String]| {
            range
                .iter()
                .filter(|c| !matches!(c.as_str(), "get" | "list" | "list-backup"))
                .map(|c| format!("upstash {c}"))
                .collect::<Vec<_>>()
        };
        let mut timeline = Vec::new();
        let mut seen = 0;
        for (at, entry) in self.lock().log.iter() {
            let at = (*at).min(calls.len());
            if at > seen {
                timeline.extend(changes(&calls[seen..at]));
                seen = at;
            }
            if !entry.starts_with("event ") {
                timeline.push(entry.clone());
            }
        }
        timeline.extend(changes(&calls[seen..]));
        timeline
    }

    /// The object as the API server holds it now.
    pub fn stored(&self) -> CacheInstance {
        self.lock().instance.clone().expect("an object")
    }

    /// Someone else writes the object (its resourceVersion moves on).
    pub fn touch(&self) {
        let mut state = self.lock();
        if let Some(obj) = state.instance.as_mut() {
            bump(obj);
        }
    }

    /// Someone edits the object (its resourceVersion moves on).
    pub fn edit(&self, change: impl FnOnce(&mut CacheInstance)) {
        let mut state = self.lock();
        if let Some(obj) = state.instance.as_mut() {
            change(obj);
            bump(obj);
        }
    }

    /// A Secret that exists already.
    pub fn insert_secret(&self, secret: Secret) {
        self.lock().secrets.insert(secret.name_any(), secret);
    }

    /// A workload to restart, with the digest its pod template carries.
    pub fn insert_workload(&self, name: &str, stamped: Option<&str>) {
        self.lock()
            .workloads
            .insert(name.to_string(), stamped.map(str::to_string));
    }

    /// Every write and Event, in order.
    pub fn log(&self) -> Vec<String> {
        self.lock().log.iter().map(|(_, e)| e.clone()).collect()
    }

    /// The writes, in order (Events left out).
    pub fn writes(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|w| !w.starts_with("event "))
            .collect()
    }

    /// The reasons of the Events, in order.
    pub fn events(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter_map(|w| w.strip_prefix("event ").map(str::to_string))
            .collect()
    }

    /// Reads of the object from the API server.
    pub fn gets(&self) -> usize {
        self.lock().gets
    }

    /// Clears the log.
    pub fn clear(&self) {
        self.lock().log.clear();
    }
}

impl State {
    fn push(&mut self, entry: String) {
        let calls = self.upstash.as_ref().map_or(0, |api| api.calls().len());
        self.log.push((calls, entry));
    }
}

fn bump(obj: &mut CacheInstance) {
    let next = obj
        .metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    obj.metadata.resource_version = Some(next.to_string());
}

impl Cluster for FakeCluster {
    async fn instance(&self, _obj: &CacheInstance) -> Result<Option<CacheInstance>> {
        let mut state = self.lock();
        state.gets += 1;
        Ok(state.instance.clone())
    }

    async fn finalize(
        &self,
        _obj: &CacheInstance,
        record: Option<&PendingCreate>,
        expected: Option<&str>,
    ) -> Result<()> {
        let mut state = self.lock();
        let current = state
            .instance
            .as_ref()
            .and_then(|o| o.metadata.resource_version.clone());
        if let Some(version) = expected
            && Some(version) != current.as_deref()
        {
            let what = if record.is_some() {
                "finalizer+record"
            } else {
                "finalizer"
            };
            state.push(format!("refused {what} (at {version})"));
            return Err(Error::CacheBehind);
        }
        let obj = state.instance.as_mut().expect("an object");
        let finalizers = obj.metadata.finalizers.get_or_insert_with(Vec::new);
        if !finalizers.iter().any(|f| f == FINALIZER) {
            finalizers.push(FINALIZER.into());
        }
        let annotations = obj
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        let entry = match record {
            Some(p) => {
                annotations.insert(
                    CREATE_RECORD_ANNOTATION.into(),
                    serde_json::to_string(p).expect("a record"),
                );
                format!("finalizer+record {}", p.database_name)
            }
            None => {
                annotations.remove(CREATE_RECORD_ANNOTATION);
                "finalizer".to_string()
            }
        };
        bump(obj);
        let entry = match expected {
            Some(version) => format!("{entry} (at {version})"),
            None => entry,
        };
        state.push(entry);
        Ok(())
    }

    async fn release(&self, obj: &CacheInstance) -> Result<()> {
        if finalizer::removal(obj).is_none() {
            return Ok(());
        }
        let mut state = self.lock();
        if let Some(stored) = state.instance.as_mut() {
            stored
                .metadata
                .finalizers
                .get_or_insert_with(Vec::new)
                .retain(|f| f != FINALIZER);
        }
        state.push("release".into());
        Ok(())
    }

    async fn secret(&self, _obj: &CacheInstance, name: &str) -> Result<Option<Secret>> {
        Ok(self.lock().secrets.get(name).cloned())
    }

    async fn owned_secrets(&self, obj: &CacheInstance) -> Result<Vec<String>> {
        Ok(self
            .lock()
            .secrets
            .values()
            .filter(|s| secret::owned_by(&s.metadata, obj))
            .map(|s| s.name_any())
            .collect())
    }

    async fn stamp(
        &self,
        _obj: &CacheInstance,
        target: &RestartTarget,
    ) -> Result<Option<Option<String>>> {
        Ok(self.lock().workloads.get(&target.name).cloned())
    }

    async fn write_secret(&self, _obj: &CacheInstance, write: &SecretWrite) -> Result<()> {
        let mut state = self.lock();
        let name = write.secret.name_any();
        state.secrets.insert(name.clone(), write.secret.clone());
        let replaced = if write.replace { " (replaced)" } else { "" };
        state.push(format!("secret {name}{replaced}"));
        Ok(())
    }

    async fn delete_secret(&self, _obj: &CacheInstance, name: &str) -> Result<()> {
        let mut state = self.lock();
        state.secrets.remove(name);
        state.push(format!("delete secret {name}"));
        Ok(())
    }

    fn request_restarts(
        &self,
        _obj: &CacheInstance,
        targets: &[RestartTarget],
        key: &str,
        fingerprint: &str,
    ) -> Vec<String> {
        // Applied at once here; the live cluster coalesces them in the background.
        let mut state = self.lock();
        let mut requested = Vec::new();
        for target in targets {
            let entry = std::iter::once((key.to_string(), fingerprint.to_string())).collect();
            let stamped = state.workloads.get(&target.name).cloned().flatten();
            let merged = restarts::merged(stamped.as_deref(), &entry);
            state.workloads.insert(target.name.clone(), Some(merged));
            state.push(format!("restart {}", target.name));
            requested.push(format!("{:?}/{}", target.kind, target.name));
        }
        requested
    }

    async fn write_status(&self, _obj: &CacheInstance, status: &CacheInstanceStatus) -> Result<()> {
        let mut state = self.lock();
        if let Some(stored) = state.instance.as_mut() {
            stored.status = Some(status.clone());
            bump(stored);
        }
        state.push("status".into());
        Ok(())
    }

    fn publish(&self, _obj: &CacheInstance, notice: &Notice) {
        self.lock().push(format!("event {}", notice.reason));
    }
}
