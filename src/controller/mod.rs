//! The controllers and what they share.

pub mod conditions;
pub mod desired;
pub mod instance;
pub mod recent;
pub mod reported;
pub mod secret;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::{Action, Config as ControllerConfig},
        events::{Event, EventType, Recorder, Reporter},
        reflector,
        reflector::ObjectRef,
        watcher,
    },
};
use rand::Rng;

use crate::{
    crd::{CacheInstance, CachePolicy, DeletionPolicy},
    credentials::CredentialResolver,
    error::Error,
    metrics::{ControllerLabels, Metrics},
    policies::Policies,
    upstash::UpstashClient,
};

/// Finalizer that guards the Upstash database of a CacheInstance.
pub const FINALIZER: &str = "cache.upstash-operator.dev/cleanup";
/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "upstash-operator";
/// `controller` label of the CacheInstance reconciler's metrics.
pub const INSTANCE_CONTROLLER: &str = "cacheinstance";
/// `reportingController` of Events.
pub const REPORTING_CONTROLLER: &str = "cache.upstash-operator.dev/operator";

/// Operator-wide settings the reconcilers need.
#[derive(Debug, Clone)]
pub struct Settings {
    pub resync: Duration,
    pub default_deletion_policy: DeletionPolicy,
    pub concurrency: u16,
}

impl Settings {
    /// The resync interval with ±10% jitter, so that many instances do not resync in lockstep.
    pub fn jittered_resync(&self) -> Duration {
        jitter(self.resync, 0.1)
    }
}

/// `base` scaled by a random factor in `[1 - spread, 1 + spread]`.
pub fn jitter(base: Duration, spread: f64) -> Duration {
    let factor = rand::rng().random_range((1.0 - spread)..=(1.0 + spread));
    base.mul_f64(factor)
}

/// Everything a reconcile needs.
pub struct Context {
    pub client: Client,
    pub upstash: UpstashClient,
    pub credentials: CredentialResolver,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub policies: Policies,
    pub config: Settings,
    /// The database each object's last successful reconcile saw.
    pub recent: recent::RecentReads,
    /// The failure each object last reported, for one Warning Event per new failure.
    pub reported: reported::ReportedFailures,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<CacheInstance>, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        upstash: UpstashClient,
        credentials: CredentialResolver,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        policies: Policies,
        config: Settings,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            upstash,
            credentials,
            metrics,
            policies,
            recent: recent::RecentReads::new(config.resync),
            reported: reported::ReportedFailures::default(),
            config,
            failures: Mutex::default(),
        }
    }

    /// Publishes an Event about `obj` in the background (Events are best effort and must not
    /// slow a reconcile down or fail it).
    pub fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let reference = obj.object_ref(&());
        let recorder = self.recorder.clone();
        let mut note = note.to_string();
        if note.len() > 1000 {
            let mut end = 1000;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
        }
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(error = %e, reason = %event.reason, "could not publish Event");
            }
        });
    }

    fn record_success(&self, obj: &CacheInstance) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ObjectRef::from_obj(obj));
    }

    fn record_failure(&self, obj: &CacheInstance) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(ObjectRef::from_obj(obj)).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }
}

/// Longest per-object backoff after a failure that says Upstash is unavailable or throttling
/// (5xx, timeouts, no connection, 429). Such failures come and go for the whole account: the
/// circuit breaker pauses every call during an outage, so an object's own count of failures
/// says little about when its next attempt will work, and a long backoff would only delay its
/// recovery once the faults stop.
pub const TRANSIENT_BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Longest per-object backoff after any other failure (refused requests, Kubernetes errors,
/// missing credentials), which usually needs someone to change something.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Whether a failure, by its metric label, is a transient Upstash fault.
pub fn is_transient_upstash_failure(label: &str) -> bool {
    matches!(
        label,
        "ServerError" | "Timeout" | "Unreachable" | "BadResponse" | "RateLimited"
    )
}

/// Per-object exponential backoff: 2 s, 4 s, 8 s, ... up to `cap`, with jitter; at least what
/// Upstash asked for with `Retry-After`.
pub fn backoff(failures: u32, retry_after: Option<Duration>, cap: Duration) -> Duration {
    let exp = 2u64.saturating_pow(failures.min(16));
    let base = Duration::from_secs(exp).min(cap);
    jitter(base, 0.2).max(retry_after.unwrap_or_default())
}

fn error_policy(obj: Arc<CacheInstance>, error: &Error, ctx: Arc<Context>) -> Action {
    // The next attempt reads the database again.
    ctx.recent.forget(&obj);
    if error.metric_label() == "CircuitOpen" {
        // Nothing was tried: come back when the breaker lets a trial call through, without
        // growing this object's backoff.
        let wait = error.retry_after().unwrap_or(Duration::from_secs(1));
        tracing::debug!(
            object = %format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
            retry_in_s = wait.as_secs(),
            "Upstash calls paused by the circuit breaker"
        );
        return Action::requeue(wait + jitter(Duration::from_millis(500), 1.0));
    }
    let failures = ctx.record_failure(&obj);
    let transient = is_transient_upstash_failure(error.metric_label());
    let wait = match ctx.upstash.breaker().reopens_in() {
        // Upstash looks down: the breaker's trial call decides when to try again.
        Some(reopen) if transient => reopen + jitter(Duration::from_millis(500), 1.0),
        _ if transient => backoff(failures, error.retry_after(), TRANSIENT_BACKOFF_CAP),
        _ => backoff(failures, error.retry_after(), BACKOFF_CAP),
    };
    ctx.metrics
        .reconcile_backoff_seconds
        .get_or_create(&ControllerLabels {
            controller: INSTANCE_CONTROLLER.into(),
        })
        .observe(wait.as_secs_f64());
    tracing::warn!(
        object = %format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
        err = %error,
        reason = error.metric_label(),
        failures,
        retry_in_s = wait.as_secs(),
        "reconcile failed"
    );
    Action::requeue(wait)
}

/// Builds the CacheInstance controller for one scope (`None` = all namespaces). Its store is
/// available through `Controller::store` before it runs.
pub fn instance_controller(
    ctx: &Context,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Controller<CacheInstance> {
    let client = ctx.client.clone();
    let (instances, secrets, policies): (Api<CacheInstance>, Api<Secret>, Api<CachePolicy>) =
        match namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client),
            ),
        };
    let secret_selector = format!("{}={}", secret::MANAGED_BY.0, secret::MANAGED_BY.1);
    // The store keeps every CacheInstance for the reconciler and the monitor; managedFields
    // (often more than half of an object) are never read, so they are dropped on the way in.
    // `Controller::for_stream` is behind kube's `unstable-runtime-stream-control` feature.
    let (reader, writer) = reflector::store();
    let trigger = watcher(
        instances,
        watcher::Config::default().any_semantic().page_size(100),
    )
    .default_backoff()
    .modify(|obj: &mut CacheInstance| obj.managed_fields_mut().clear())
    .reflect(writer)
    .applied_objects();
    let controller = Controller::for_stream(trigger, reader);
    let store = controller.store();
    controller
        .owns(
            secrets,
            watcher::Config::default()
                .labels(&secret_selector)
                .any_semantic(),
        )
        // A policy change can change guardrails and deletion defaults of its namespace's
        // instances; its status writes cannot.
        .watches_stream(
            policy_changes(
                watcher(policies, watcher::Config::default().any_semantic()).default_backoff(),
            ),
            move |policy: CachePolicy| {
                let ns = policy.namespace();
                store
                    .state()
                    .into_iter()
                    .filter(|i| i.namespace() == ns)
                    .map(|i| ObjectRef::from_obj(i.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .with_config(ControllerConfig::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(shutdown)
}

/// The CachePolicy events that can change what the instances of its namespace should do: a
/// policy seen for the first time, a new spec (`metadata.generation`), a deletion. Status
/// writes are left out: the monitor updates `status.selectedInstances` while instances come
/// and go, and each such write would otherwise requeue every instance of the namespace.
fn policy_changes(
    events: impl futures::Stream<Item = Result<watcher::Event<CachePolicy>, watcher::Error>>
    + Send
    + 'static,
) -> impl futures::Stream<Item = Result<CachePolicy, watcher::Error>> + Send + 'static {
    let mut generations = HashMap::new();
    events.filter_map(move |event| {
        std::future::ready(match event {
            Ok(event) => policy_trigger(&mut generations, event).map(Ok),
            Err(e) => Some(Err(e)),
        })
    })
}

/// The policy to trigger on for `event`, given the generation last seen of each policy.
fn policy_trigger(
    generations: &mut HashMap<ObjectRef<CachePolicy>, Option<i64>>,
    event: watcher::Event<CachePolicy>,
) -> Option<CachePolicy> {
    match event {
        watcher::Event::Apply(policy) | watcher::Event::InitApply(policy) => {
            let generation = policy.metadata.generation;
            let before = generations.insert(ObjectRef::from_obj(&policy), generation);
            (before != Some(generation)).then_some(policy)
        }
        watcher::Event::Delete(policy) => {
            generations.remove(&ObjectRef::from_obj(&policy));
            Some(policy)
        }
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

/// Runs a controller built by [`instance_controller`]; `warm` fires once its cache is filled.
pub async fn run_instances(
    controller: Controller<CacheInstance>,
    ctx: Arc<Context>,
    warm: tokio::sync::oneshot::Sender<()>,
) {
    let labels = ControllerLabels {
        controller: INSTANCE_CONTROLLER.into(),
    };
    let metrics = &ctx.metrics;
    metrics
        .max_concurrent_reconciles
        .get_or_create(&labels)
        .set(i64::from(ctx.config.concurrency));
    // Start the series at zero so that dashboards and alerts see them before the first error.
    let _ = metrics.reconcile_errors_total.get_or_create(&labels);
    let _ = metrics.active_workers.get_or_create(&labels);
    let store = controller.store();
    tokio::spawn(async move {
        crate::policies::wait_until_ready(&store).await;
        let _ = warm.send(());
    });
    controller
        .run(
            |obj, ctx: Arc<Context>| async move {
                let result = instance::reconcile(obj.clone(), ctx.clone()).await;
                if result.is_ok() {
                    ctx.record_success(&obj);
                }
                result
            },
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(err = %e, "controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let one = backoff(1, None, BACKOFF_CAP);
        assert!(
            one >= Duration::from_millis(1600) && one <= Duration::from_millis(2400),
            "{one:?}"
        );
        let many = backoff(30, None, BACKOFF_CAP);
        assert!(many <= Duration::from_secs(360), "{many:?}");
        assert!(many >= Duration::from_secs(240), "{many:?}");
        assert!(backoff(1, Some(Duration::from_secs(30)), BACKOFF_CAP) >= Duration::from_secs(30));
    }

    #[test]
    fn transient_upstash_failures_back_off_briefly() {
        let many = backoff(30, None, TRANSIENT_BACKOFF_CAP);
        assert!(
            many >= Duration::from_secs(24) && many <= Duration::from_secs(36),
            "{many:?}"
        );
        // Retry-After still wins.
        let asked = backoff(30, Some(Duration::from_secs(90)), TRANSIENT_BACKOFF_CAP);
        assert!(asked >= Duration::from_secs(90));
        for label in [
            "ServerError",
            "Timeout",
            "Unreachable",
            "BadResponse",
            "RateLimited",
        ] {
            assert!(is_transient_upstash_failure(label), "{label}");
        }
        for label in [
            "Rejected",
            "Unauthorized",
            "NotFound",
            "KubernetesAPI",
            "Credentials",
            "InvalidSpec",
        ] {
            assert!(!is_transient_upstash_failure(label), "{label}");
        }
    }

    #[test]
    fn policy_status_writes_do_not_requeue_instances() {
        let policy = |generation: i64, selected: i32| -> CachePolicy {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "cache.upstash-operator.dev/v1alpha1",
                "kind": "CachePolicy",
                "metadata": {"name": "prod", "namespace": "crm", "generation": generation},
                "spec": {},
                "status": {"selectedInstances": selected},
            }))
            .unwrap()
        };
        let mut seen = HashMap::new();
        assert!(policy_trigger(&mut seen, watcher::Event::InitApply(policy(1, 0))).is_some());
        assert!(policy_trigger(&mut seen, watcher::Event::InitDone).is_none());
        // Status only.
        assert!(policy_trigger(&mut seen, watcher::Event::Apply(policy(1, 7))).is_none());
        // A relist after a watch restart.
        assert!(policy_trigger(&mut seen, watcher::Event::InitApply(policy(1, 7))).is_none());
        // A new spec.
        assert!(policy_trigger(&mut seen, watcher::Event::Apply(policy(2, 7))).is_some());
        // Deleted, then created again with the same name.
        assert!(policy_trigger(&mut seen, watcher::Event::Delete(policy(2, 7))).is_some());
        assert!(policy_trigger(&mut seen, watcher::Event::Apply(policy(1, 0))).is_some());
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(100), 0.1);
            assert!(d >= Duration::from_secs(90) && d <= Duration::from_secs(110));
        }
    }
}
