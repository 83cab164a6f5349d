//! Restart coalescing: a workload listed in `passwordRotation.restart` of several
//! CacheInstances is restarted once for all the credentials that changed within a short window
//! (`--restart-window`), and never more than once per `--min-restart-interval`.
//!
//! The pod template's annotation `cache.upstash-operator.dev/credentials-hash` records the
//! digest of each instance's credentials the pods started with, as `<instance>=<digest>`
//! entries separated by commas (`<instance>` is a short digest of the instance's namespace and
//! name; a value without `=`, written by earlier versions for one instance, counts as that
//! instance's digest). A workload is restarted only for an instance whose entry differs from
//! its current credentials: a Secret rewritten with the same credentials restarts nothing, and
//! instances that share a workload no longer overwrite each other's entries (which restarted it
//! again at every resync).
//!
//! Passes only *request* a restart; one task per workload waits for the window (and the
//! interval), then stamps every requested entry in one write, which rolls the pods once.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
};
use serde_json::json;

use crate::{
    controller::FIELD_MANAGER,
    crd::{RestartTarget, WorkloadKind},
};

/// Annotation put on restarted workloads' pod templates: one `<instance key>=<digest>` entry of
/// the credentials per instance (see the module documentation).
pub const RESTART_ANNOTATION: &str = "cache.upstash-operator.dev/credentials-hash";

/// The API resource of a workload kind.
pub fn workload_resource(kind: WorkloadKind) -> ApiResource {
    match kind {
        WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
        WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        WorkloadKind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
    }
}

/// The entry key of an instance: 8 hex digits of a SHA-256 of its namespace and name.
pub fn instance_key(namespace: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// The entry key of the ACL user `user` of an instance (`spec.users`): a digest like an
/// instance's, of a text no instance's namespace and name can make (a `/` in a name).
pub fn user_key(namespace: &str, instance: &str, user: &str) -> String {
    instance_key(namespace, &format!("{instance}/user/{user}"))
}

/// The entry key of `obj`.
pub fn key_of(obj: &crate::crd::CacheInstance) -> String {
    instance_key(
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        obj.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// The workloads to restart for the instance `key` with credentials `fingerprint`, from each
/// target and its stamp (`None`: the workload does not exist; `Some(None)`: no annotation).
pub fn targets<'a>(
    workloads: impl Iterator<Item = (&'a RestartTarget, &'a Option<Option<String>>)>,
    key: &str,
    fingerprint: &str,
) -> Vec<RestartTarget> {
    workloads
        .filter(|(_, stamped)| {
            matches!(stamped, Some(s) if needs_restart(s.as_deref(), key, fingerprint))
        })
        .map(|(target, _)| target.clone())
        .collect()
}

/// The note of the `WorkloadsRestarted` Event.
pub fn note(restarted: &[String], window: Duration) -> String {
    format!(
        "restarting {} to pick up new credentials (one restart for every CacheInstance whose credentials it uses that change within {}s)",
        restarted.join(", "),
        window.as_secs()
    )
}

/// The entries of an annotation value. A legacy value (no `=`) is returned under `""`.
pub fn parse(value: &str) -> BTreeMap<String, String> {
    if !value.contains('=') {
        return BTreeMap::from([(String::new(), value.to_string())]);
    }
    value
        .split(',')
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The annotation value of `entries` (sorted, so equal sets give equal values).
pub fn render(entries: &BTreeMap<String, String>) -> String {
    entries
        .iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether a workload stamped with `stamped` (`None`: no annotation) needs a restart for the
/// instance `key` whose credentials digest is `fingerprint`.
pub fn needs_restart(stamped: Option<&str>, key: &str, fingerprint: &str) -> bool {
    let Some(value) = stamped else {
        return true;
    };
    let entries = parse(value);
    entries.get(key).map(String::as_str) != Some(fingerprint)
        && entries.get("").map(String::as_str) != Some(fingerprint)
}

/// `current` with `requested` entries stamped over it (a legacy entry is dropped).
pub fn merged(current: Option<&str>, requested: &BTreeMap<String, String>) -> String {
    let mut entries = current.map(parse).unwrap_or_default();
    entries.remove("");
    entries.extend(requested.iter().map(|(k, v)| (k.clone(), v.clone())));
    render(&entries)
}

/// The apply body that stamps `value` on a workload's pod template (which rolls its pods).
pub fn restart_body(kind: WorkloadKind, name: &str, value: &str) -> serde_json::Value {
    let resource = workload_resource(kind);
    json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {"name": name},
        "spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: value}}}},
    })
}

/// When a workload whose first request came at `first` may be restarted, given its last
/// restart by this process.
pub fn due(
    first: Instant,
    last: Option<Instant>,
    window: Duration,
    min_interval: Duration,
) -> Instant {
    let after_window = first + window;
    match last {
        Some(last) => after_window.max(last + min_interval),
        None => after_window,
    }
}

type WorkloadKey = (String, WorkloadKind, String);

#[derive(Default)]
struct State {
    /// Requested entries per workload, not yet stamped.
    pending: HashMap<WorkloadKey, BTreeMap<String, String>>,
    /// When this process last restarted each workload.
    last: HashMap<WorkloadKey, Instant>,
}

/// The restarts requested and not yet made, per workload.
#[derive(Clone)]
pub struct Restarts {
    state: Arc<Mutex<State>>,
    window: Duration,
    min_interval: Duration,
}

impl Restarts {
    pub fn new(window: Duration, min_interval: Duration) -> Self {
        Self {
            state: Arc::default(),
            window,
            min_interval,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a restart waits for other credentials that change meanwhile.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Requests a restart of each target for the instance `key` with credentials
    /// `fingerprint`; returns the targets newly requested (`Kind/name`; one already waiting with
    /// the same entry is not requested twice).
    pub fn request(
        &self,
        client: &Client,
        namespace: &str,
        targets: &[RestartTarget],
        key: &str,
        fingerprint: &str,
    ) -> Vec<String> {
        let mut requested = Vec::new();
        for target in targets {
            let workload = (namespace.to_string(), target.kind, target.name.clone());
            let mut state = self.lock();
            let first = !state.pending.contains_key(&workload);
            let entries = state.pending.entry(workload.clone()).or_default();
            if entries.get(key).map(String::as_str) == Some(fingerprint) {
                continue;
            }
            entries.insert(key.to_string(), fingerprint.to_string());
            requested.push(format!("{:?}/{}", target.kind, target.name));
            if first {
                let at = due(
                    Instant::now(),
                    state.last.get(&workload).copied(),
                    self.window,
                    self.min_interval,
                );
                drop(state);
                let this = self.clone();
                let client = client.clone();
                tokio::spawn(async move { this.flush(client, workload, at).await });
            }
        }
        requested
    }

    /// Waits until `at`, then stamps every entry requested for `workload` in one write.
    async fn flush(&self, client: Client, workload: WorkloadKey, at: Instant) {
        tokio::time::sleep_until(at.into()).await;
        let Some(requested) = self.lock().pending.remove(&workload) else {
            return;
        };
        let (namespace, kind, name) = &workload;
        let api: Api<DynamicObject> =
            Api::namespaced_with(client, namespace, &workload_resource(*kind));
        let result = async {
            let current = api.get_opt(name).await?;
            let Some(current) = current else {
                return Ok::<_, kube::Error>(false);
            };
            let stamped = current
                .data
                .pointer("/spec/template/metadata/annotations")
                .and_then(|a| a.get(RESTART_ANNOTATION))
                .and_then(|v| v.as_str())
                .map(str::to_string);
            let body = restart_body(*kind, name, &merged(stamped.as_deref(), &requested));
            api.patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
            Ok(true)
        }
        .await;
        match result {
            Ok(true) => {
                self.lock().last.insert(workload.clone(), Instant::now());
                tracing::info!(
                    target: "changelog",
                    namespace = %namespace,
                    workload = %format!("{kind:?}/{name}"),
                    instances = requested.len(),
                    "restarted {kind:?}/{name} once for the new credentials of {} instance(s)",
                    requested.len()
                );
            }
            Ok(false) => {}
            // The instances' next passes see the old stamp and request it again.
            Err(e) => tracing::warn!(
                namespace = %namespace,
                workload = %format!("{kind:?}/{name}"),
                error = %e,
                "restarting a workload failed"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_is_restarted_only_for_an_instance_whose_entry_differs() {
        assert!(needs_restart(None, "a1", "f1"));
        assert!(!needs_restart(Some("a1=f1,b2=g2"), "a1", "f1"));
        assert!(needs_restart(Some("a1=f0,b2=g2"), "a1", "f1"));
        assert!(needs_restart(Some("b2=g2"), "a1", "f1"));
        // A value of earlier versions: the digest of the one instance.
        assert!(!needs_restart(Some("f1"), "a1", "f1"));
        assert!(needs_restart(Some("f0"), "a1", "f1"));
    }

    #[test]
    fn entries_of_other_instances_are_kept_and_the_legacy_value_replaced() {
        let requested = BTreeMap::from([
            ("a1".to_string(), "f1".to_string()),
            ("c3".to_string(), "h3".to_string()),
        ]);
        assert_eq!(merged(Some("a1=f0,b2=g2"), &requested), "a1=f1,b2=g2,c3=h3");
        assert_eq!(merged(Some("f0"), &requested), "a1=f1,c3=h3");
        assert_eq!(merged(None, &requested), "a1=f1,c3=h3");
    }

    #[test]
    fn a_restart_waits_for_the_window_and_the_interval_since_the_last() {
        let t0 = Instant::now();
        let w = Duration::from_secs(5);
        let i = Duration::from_secs(60);
        assert_eq!(due(t0, None, w, i), t0 + w);
        assert_eq!(due(t0, Some(t0), w, i), t0 + i);
        let long_ago = t0.checked_sub(Duration::from_secs(600)).unwrap_or(t0);
        assert_eq!(due(t0, Some(long_ago), w, i).max(t0 + w), t0 + w);
    }

    #[test]
    fn a_restart_applies_only_the_annotation() {
        assert_eq!(
            restart_body(WorkloadKind::StatefulSet, "db-client", "a1=f1"),
            json!({
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": "db-client"},
                "spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: "a1=f1"}}}},
            })
        );
    }

    #[test]
    fn instance_keys_are_short_and_distinct() {
        let a = instance_key("crm", "cache-a");
        assert_eq!(a.len(), 8);
        assert_ne!(a, instance_key("crm", "cache-b"));
        assert_ne!(a, instance_key("crm2", "cache-a"));
        let user = user_key("crm", "cache-a", "orders");
        assert_eq!(user.len(), 8);
        assert_ne!(user, a);
        assert_ne!(user, user_key("crm", "cache-a", "billing"));
        assert_ne!(user, user_key("crm", "cache-b", "orders"));
    }
}
