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
    /// Who the Events say reported them.
    reporter: Reporter,
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
            recorder: Recorder::new(client.clone(), reporter.clone()),
            reporter,
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
        // kube's recorder names Events `<object>.<hex nanos>`, which the API server refuses for
        // objects named close to the 253-character limit: those get a shortened name.
        let long_name = reference.name.as_deref().is_some_and(|n| {
            let nanos = k8s_openapi::jiff::Timestamp::now().as_nanosecond();
            n.len() + format!(".{nanos:x}").len() > crate::names::NAME_MAX
        });
        if long_name {
            let client = self.client.clone();
            let reporter = self.reporter.clone();
            tokio::spawn(async move {
                if let Err(e) = publish_shortened(&client, &reporter, &event, &reference).await {
                    tracing::warn!(error = %crate::error::kube_message(&e), reason = %event.reason, "could not publish Event");
                }
            });
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(error = %crate::error::kube_message(&e), reason = %event.reason, "could not publish Event");
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

/// Publishes `event` as kube's recorder would, under a name shortened to fit (see
/// [`crate::names::event_name`]). Used for objects whose names leave no room for the recorder's.
async fn publish_shortened(
    client: &Client,
    reporter: &Reporter,
    event: &Event,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
) -> kube::Result<()> {
    use k8s_openapi::{
        api::events::v1::Event as K8sEvent, apimachinery::pkg::apis::meta::v1::MicroTime,
        jiff::Timestamp,
    };
    let now = Timestamp::now();
    let namespace = reference
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let k8s = K8sEvent {
        action: Some(event.action.clone()),
        reason: Some(event.reason.clone()),
        event_time: Some(MicroTime(now)),
        regarding: Some(reference.clone()),
        note: event.note.clone(),
        metadata: kube::api::ObjectMeta {
            namespace: Some(namespace.clone()),
            name: Some(crate::names::event_name(
                reference.name.as_deref().unwrap_or_default(),
                now.as_nanosecond(),
            )),
            ..Default::default()
        },
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        type_: Some(
            match event.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        related: event.secondary.clone(),
        ..Default::default()
    };
    Api::<K8sEvent>::namespaced(client.clone(), &namespace)
        .create(&Default::default(), &k8s)
        .await
        .map(|_| ())
}

/// Per-object exponential backoff: 2 s, 4 s, 8 s, ... up to 5 minutes, with jitter; at least
/// what Upstash asked for with `Retry-After`.
pub fn backoff(failures: u32, retry_after: Option<Duration>) -> Duration {
    let exp = 2u64.saturating_pow(failures.min(16));
    let base = Duration::from_secs(exp).min(Duration::from_secs(300));
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
    let wait = backoff(failures, error.retry_after());
    tracing::warn!(
        object = %format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
        err = %error,
        reason = error.metric_label(),
        retry_in_s = wait.as_secs(),
        "reconcile failed"
    );
    Action::requeue(wait)
}

/// Builds the CacheInstance controller for one scope (`None` = all namespaces), triggered also
/// by `policy_changes` (the scope's shared policy watch). Its store is available through
/// `Controller::store` before it runs.
pub fn instance_controller(
    ctx: &Context,
    namespace: Option<&str>,
    policy_changes: impl futures::Stream<Item = Arc<CachePolicy>> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Controller<CacheInstance> {
    let client = ctx.client.clone();
    let (instances, secrets): (Api<CacheInstance>, Api<Secret>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
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
        // A policy change can change guardrails and deletion defaults of its namespace's instances.
        .watches_shared_stream(policy_changes, move |policy: Arc<CachePolicy>| {
            let ns = policy.namespace();
            store
                .state()
                .into_iter()
                .filter(|i| i.namespace() == ns)
                .map(|i| ObjectRef::from_obj(i.as_ref()))
                .collect::<Vec<_>>()
        })
        .with_config(ControllerConfig::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(shutdown)
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
        let one = backoff(1, None);
        assert!(
            one >= Duration::from_millis(1600) && one <= Duration::from_millis(2400),
            "{one:?}"
        );
        let many = backoff(30, None);
        assert!(many <= Duration::from_secs(360), "{many:?}");
        assert!(many >= Duration::from_secs(240), "{many:?}");
        assert!(backoff(1, Some(Duration::from_secs(30))) >= Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(100), 0.1);
            assert!(d >= Duration::from_secs(90) && d <= Duration::from_secs(110));
        }
    }
}
