//! The controllers and what they share.

pub mod adoption;
pub mod change_log;
pub mod claims;
pub mod conditions;
pub mod context;
pub mod create_record;
pub mod credential_protection;
pub mod database_index;
pub mod desired;
pub mod developer_api;
pub mod instance;
pub mod memory;
pub mod naming;
pub mod owned_secrets;
pub mod reconcile_now;
pub mod restarts;
pub mod secret;
pub mod startup;

#[cfg(test)]
mod fake_api;

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::{Action, Config as ControllerConfig},
        reflector,
        reflector::ObjectRef,
        watcher,
    },
};

pub use context::{
    Context, FIELD_MANAGER, FINALIZER, INSTANCE_CONTROLLER, REPORTING_CONTROLLER, Settings, jitter,
};

use crate::{
    crd::{CacheInstance, CachePolicy},
    error::{Error, ErrorCategory},
    metrics::ControllerLabels,
};

/// Longest per-object backoff after a failure that says Upstash is unavailable or throttling
/// (5xx, timeouts, no connection, 429). Such failures come and go for the whole account: the
/// circuit breaker pauses every call during an outage, so an object's own count of failures
/// says little about when its next attempt will work, and a long backoff would only delay its
/// recovery once the faults stop.
pub const TRANSIENT_BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Longest per-object backoff after any other failure (refused requests, Kubernetes errors,
/// missing credentials), which usually needs someone to change something.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// How long the operator's own writes may still be missing from its watch caches: a pass right
/// after them takes what it wrote as current for that long (see `Memory::cache_behind` and
/// `OwnedSecrets::wrote`).
pub const WATCH_LAG: Duration = Duration::from_secs(10);

/// Whether a failure of this category is a transient Upstash fault.
pub fn is_transient_upstash_failure(category: ErrorCategory) -> bool {
    matches!(
        category,
        ErrorCategory::UpstashServerError
            | ErrorCategory::UpstashTimeout
            | ErrorCategory::UpstashUnreachable
            | ErrorCategory::UpstashBadResponse
            | ErrorCategory::UpstashRateLimited
    )
}

/// Per-object exponential backoff: `first`, twice that, four times, ... up to `cap`, with
/// jitter; at least what Upstash asked for with `Retry-After`.
pub fn backoff(
    failures: u32,
    first: Duration,
    retry_after: Option<Duration>,
    cap: Duration,
) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    let base = first.saturating_mul(factor).min(cap);
    jitter(base, 0.2).max(retry_after.unwrap_or_default())
}

/// The first backoff after a transient Upstash fault: a fault that comes and goes is most
/// likely gone a second later (at 25% of calls failing, three retries in four succeed).
pub const TRANSIENT_FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The first backoff after any other failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(2);

fn error_policy(obj: Arc<CacheInstance>, error: &Error, ctx: Arc<Context>) -> Action {
    // The next attempt reads the database again.
    ctx.memory.forget_read(&obj);
    if error.category() == ErrorCategory::CircuitOpen {
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
    let failures = ctx.memory.record_failure(&obj);
    let transient = is_transient_upstash_failure(error.category());
    let wait = match ctx.upstash.breaker().reopens_in() {
        // Upstash looks down: the breaker's trial call decides when to try again.
        Some(reopen) if transient => reopen + jitter(Duration::from_millis(500), 1.0),
        _ if transient => backoff(
            failures,
            TRANSIENT_FIRST_BACKOFF,
            error.retry_after(),
            TRANSIENT_BACKOFF_CAP,
        ),
        // A credentials Secret named by `spec.credentials` that no instance uses yet is not
        // watched, so its creation triggers nothing: it is looked for again at least every 30 s.
        _ if error.category() == ErrorCategory::Credentials => {
            backoff(failures, FIRST_BACKOFF, None, TRANSIENT_BACKOFF_CAP)
        }
        _ => backoff(failures, FIRST_BACKOFF, error.retry_after(), BACKOFF_CAP),
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

/// Builds the CacheInstance controller for one scope (`None` = all namespaces), triggered also
/// by `policy_changes` (the scope's shared policy watch). Its store is available through
/// `Controller::store` before it runs.
pub fn instance_controller(
    ctx: &Arc<Context>,
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
    // The store keeps every CacheInstance for the reconciler and the monitor; what no pass
    // reads is dropped on the way in (see `trim_cached`).
    // `Controller::for_stream` is behind kube's `unstable-runtime-stream-control` feature.
    let (reader, writer) = reflector::store();
    let mut departures = Departures::new(ctx.clone(), reader.clone());
    // Which instance manages which database is indexed from the same events.
    let scope = ctx.claims.register();
    let claims = ctx.claims.clone();
    let trigger = watcher(
        instances,
        watcher::Config::default().any_semantic().page_size(100),
    )
    .default_backoff()
    .modify(trim_cached)
    .inspect_ok(move |event| claims.observe(scope, event))
    .reflect(writer)
    .inspect_ok(move |event| departures.see(event))
    .applied_objects();
    let controller = Controller::for_stream(trigger, reader);
    let store = controller.store();
    let controller_store = controller.store();
    // The operator's Secrets: a change or a deletion triggers their instance, and their store
    // spares the pass a read of each Secret.
    let (secret_reader, secret_writer) = reflector::store();
    let seen = ctx.owned_secrets.seen_by_watch();
    ctx.owned_secrets
        .register(namespace.map(str::to_string), secret_reader);
    let owned = watcher(
        secrets,
        watcher::Config::default()
            .labels(&secret_selector)
            .any_semantic(),
    )
    .default_backoff()
    .modify(move |s: &mut Secret| {
        seen(s);
        secret::trim_cached(s);
    })
    .reflect(secret_writer)
    .touched_objects();
    controller
        .owns_stream(owned)
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
        // A credentials Secret created or edited (say, a missing one supplied, or another
        // account's key put in) is looked at by the instances of its namespace now.
        .reconcile_on(credentials_changes(ctx, controller_store))
        .with_config(ControllerConfig::default().concurrency(ctx.config.reconciles()))
        .graceful_shutdown_on(shutdown)
}

/// Forgets what the operator keeps about each CacheInstance the watch says is gone (its metric
/// series and per-object memories), finalizer or not: an object deleted before it ever got the
/// finalizer (an invalid spec, blocked by a policy, no credentials, its name taken) has no
/// cleanup that would. Objects missing from the list after the watch restarted are gone too.
struct Departures {
    ctx: Arc<Context>,
    /// The store of the same watch, already updated when an event is seen.
    store: reflector::Store<CacheInstance>,
    /// What the store held when the watch restarted, until the new list is complete.
    before_relist: Option<Vec<Arc<CacheInstance>>>,
}

impl Departures {
    fn new(ctx: Arc<Context>, store: reflector::Store<CacheInstance>) -> Self {
        Self {
            ctx,
            store,
            before_relist: None,
        }
    }

    fn see(&mut self, event: &watcher::Event<CacheInstance>) {
        match event {
            watcher::Event::Delete(obj) => self.ctx.memory.forget(obj),
            // The store still holds the old list; it is replaced when the new one is done.
            watcher::Event::Init => self.before_relist = Some(self.store.state()),
            watcher::Event::InitDone => {
                for obj in self.before_relist.take().unwrap_or_default() {
                    if self.store.get(&object_key(&obj)).is_none() {
                        self.ctx.memory.forget(&obj);
                    }
                }
            }
            watcher::Event::Apply(_) | watcher::Event::InitApply(_) => {}
        }
    }
}

/// The key of `obj` in the operator's per-object maps: its namespace and name only.
/// `ObjectRef::from_obj` also copies the resourceVersion and UID, which keys never compare
/// (`ObjectRef`'s equality and hash leave them out) and which a map of every instance would keep
/// for as long as the operator runs.
pub fn object_key(obj: &CacheInstance) -> ObjectRef<CacheInstance> {
    let key = ObjectRef::new(obj.metadata.name.as_deref().unwrap_or_default());
    match obj.metadata.namespace.as_deref() {
        Some(namespace) => key.within(namespace),
        None => key,
    }
}

/// kubectl's client-side apply record: a copy of the whole manifest.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from a watched CacheInstance what no pass reads, before it is cached: managedFields
/// (often more than half of an object), kubectl's `last-applied-configuration` (a second copy
/// of the manifest on objects applied client-side) and the create record once the status names
/// the database (read only while it does not, see `pending_record`). Every cached instance
/// costs memory for as long as the operator runs; an empty annotation map is dropped too.
pub fn trim_cached(obj: &mut CacheInstance) {
    obj.managed_fields_mut().clear();
    let done = obj.status.as_ref().is_some_and(|s| s.database_id.is_some());
    if let Some(annotations) = obj.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
        if done {
            annotations.remove(crate::crd::CREATE_RECORD_ANNOTATION);
        }
        if annotations.is_empty() {
            obj.metadata.annotations = None;
        }
    }
}

/// The instances whose credentials may have changed with the credentials Secret `origin`.
fn instances_using(
    credentials: &crate::credentials::CredentialResolver,
    origin: &crate::credentials::Origin,
    instances: Vec<Arc<CacheInstance>>,
) -> Vec<ObjectRef<CacheInstance>> {
    instances
        .into_iter()
        .filter(|i| credentials.may_use(origin, i))
        .map(|i| ObjectRef::from_obj(i.as_ref()))
        .collect()
}

/// The instances that use each credentials Secret that changes.
fn credentials_changes(
    ctx: &Context,
    store: kube::runtime::reflector::Store<CacheInstance>,
) -> impl futures::Stream<Item = ObjectRef<CacheInstance>> + Send + 'static {
    let receiver = ctx.credentials.changes();
    let credentials = ctx.credentials.clone();
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(origin) => return Some((origin, receiver)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .flat_map(move |origin| {
        futures::stream::iter(instances_using(&credentials, &origin, store.state()))
    })
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
        .set(i64::from(ctx.config.reconciles()));
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
                    ctx.memory.record_success(&obj);
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
    fn an_object_key_is_its_namespace_and_name_only() {
        let mut obj = instance::fixtures::instance("spec: {primaryRegion: us-east-1}");
        obj.metadata.uid = Some("4a1f0c3e-1d2b-4c5d-8e9f-0a1b2c3d4e5f".into());
        obj.metadata.resource_version = Some("12345".into());
        let key = object_key(&obj);
        assert_eq!(key, ObjectRef::from_obj(&obj), "the same key for lookups");
        assert_eq!(key.name, obj.metadata.name.clone().unwrap());
        assert_eq!(key.namespace, obj.metadata.namespace.clone());
        assert_eq!(key.extra.uid, None);
        assert_eq!(key.extra.resource_version, None);
    }

    #[test]
    fn the_cache_keeps_what_passes_read() {
        let with = |status: &str| {
            let mut obj = instance::fixtures::instance(&format!(
                r#"
                metadata:
                  annotations:
                    kubectl.kubernetes.io/last-applied-configuration: '{{"spec":{{}}}}'
                    cache.upstash-operator.dev/create-record: '{{"databaseName":"crm-orders-1"}}'
                  managedFields: [{{manager: kubectl, operation: Apply}}]
                spec: {{primaryRegion: us-east-1}}
                {status}
                "#
            ));
            trim_cached(&mut obj);
            obj
        };
        let creating = with("");
        assert!(creating.managed_fields().is_empty());
        assert_eq!(
            creating.annotations().keys().collect::<Vec<_>>(),
            [crate::crd::CREATE_RECORD_ANNOTATION],
            "the record is read until the status names the database"
        );
        let done = with("status: {databaseId: db-1}");
        assert!(done.metadata.annotations.is_none());
        let mut paused = instance::fixtures::instance(
            "metadata: {annotations: {cache.upstash-operator.dev/paused: 'true'}}\nspec: {primaryRegion: us-east-1}",
        );
        trim_cached(&mut paused);
        assert_eq!(paused.annotations().len(), 1, "other annotations stay");
    }

    #[tokio::test]
    async fn a_credentials_change_triggers_the_instances_that_use_it() {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let credentials = crate::credentials::CredentialResolver::new(
            client,
            ("upstash-system".into(), "upstash-credentials".into()),
            Some("upstash-credentials".into()),
        );
        let at = |namespace: &str, name: &str, spec: &str| {
            let mut obj = instance::fixtures::instance(spec);
            obj.metadata.namespace = Some(namespace.into());
            obj.metadata.name = Some(name.into());
            Arc::new(obj)
        };
        let everyone = || {
            vec![
                at("crm", "orders", "spec: {primaryRegion: us-east-1}"),
                at("web", "sessions", "spec: {primaryRegion: us-east-1}"),
                at(
                    "web",
                    "team-b",
                    "spec: {primaryRegion: us-east-1, credentials: {secretRef: {name: team-b}}}",
                ),
                at("upstash-system", "own", "spec: {primaryRegion: us-east-1}"),
            ]
        };
        let triggered = |namespace: &str, name: &str| {
            let origin = crate::credentials::Origin {
                namespace: namespace.into(),
                name: name.into(),
            };
            let mut refs: Vec<String> = instances_using(&credentials, &origin, everyone())
                .into_iter()
                .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
                .collect();
            refs.sort();
            refs
        };
        assert_eq!(
            triggered("upstash-system", "upstash-credentials"),
            ["crm/orders", "upstash-system/own", "web/sessions"],
            "the operator-wide Secret: every instance without spec.credentials, in any namespace"
        );
        assert_eq!(
            triggered("web", "upstash-credentials"),
            ["web/sessions"],
            "a namespace's Secret: its instances without spec.credentials"
        );
        assert_eq!(triggered("web", "team-b"), ["web/team-b"]);
        assert!(triggered("crm", "team-b").is_empty());
    }

    #[tokio::test]
    async fn an_instance_gone_before_its_finalizer_leaves_no_series_and_no_memory() {
        let ctx = Arc::new(context::tests::context());
        let (store, mut writer) = reflector::store::<CacheInstance>();
        let mut departures = Departures::new(ctx.clone(), store);
        let blocked = |name: &str| {
            let mut obj = instance::fixtures::instance("spec: {primaryRegion: us-east-1}");
            obj.metadata.name = Some(name.into());
            obj
        };
        let remembered = |obj: &CacheInstance| {
            let text = ctx.metrics.render();
            let series = text.contains(&format!(
                "upstash_cache_ready{{namespace=\"{}\",name=\"{}\"}} 0",
                obj.metadata.namespace.as_deref().unwrap_or_default(),
                obj.name_any()
            ));
            let reported = !ctx.memory.is_new_failure(
                obj,
                memory::Topic::Ready,
                "PolicyViolation",
                "blocked",
                || false,
            );
            (series, reported)
        };
        // Two instances a policy blocks: not Ready, a failure reported, a backoff counted.
        let (a, b) = (blocked("a"), blocked("b"));
        for obj in [&a, &b] {
            ctx.metrics.instances.set_ready(
                obj.metadata.namespace.as_deref().unwrap(),
                &obj.name_any(),
                false,
            );
            ctx.memory.is_new_failure(
                obj,
                memory::Topic::Ready,
                "PolicyViolation",
                "blocked",
                || false,
            );
            ctx.memory.record_failure(obj);
            let event = watcher::Event::Apply(obj.clone());
            writer.apply_watcher_event(&event);
            departures.see(&event);
        }
        assert_eq!(remembered(&a), (true, true));

        // `a` is deleted: it never had the finalizer, so it is gone at once.
        let event = watcher::Event::Delete(a.clone());
        writer.apply_watcher_event(&event);
        departures.see(&event);
        assert_eq!(
            remembered(&a),
            (false, false),
            "series and memory forgotten"
        );
        assert_eq!(ctx.memory.record_failure(&a), 1, "its backoff starts over");
        assert_eq!(remembered(&b), (true, true), "the other one is kept");

        // `b` is deleted while the watch is down: missing from the new list, it is gone too.
        for event in [watcher::Event::Init, watcher::Event::InitDone] {
            writer.apply_watcher_event(&event);
            departures.see(&event);
        }
        assert_eq!(remembered(&b), (false, false));
    }

    #[test]
    fn backoff_grows_and_caps() {
        let one = backoff(1, FIRST_BACKOFF, None, BACKOFF_CAP);
        assert!(
            one >= Duration::from_millis(1600) && one <= Duration::from_millis(2400),
            "{one:?}"
        );
        let many = backoff(30, FIRST_BACKOFF, None, BACKOFF_CAP);
        assert!(many <= Duration::from_secs(360), "{many:?}");
        assert!(many >= Duration::from_secs(240), "{many:?}");
        assert!(
            backoff(1, FIRST_BACKOFF, Some(Duration::from_secs(30)), BACKOFF_CAP)
                >= Duration::from_secs(30)
        );
        let third = backoff(3, FIRST_BACKOFF, None, BACKOFF_CAP);
        assert!(
            third >= Duration::from_millis(6400) && third <= Duration::from_millis(9600),
            "{third:?}"
        );
    }

    #[test]
    fn transient_upstash_failures_back_off_briefly() {
        let one = backoff(1, TRANSIENT_FIRST_BACKOFF, None, TRANSIENT_BACKOFF_CAP);
        assert!(
            one >= Duration::from_millis(800) && one <= Duration::from_millis(1200),
            "{one:?}"
        );
        let many = backoff(30, TRANSIENT_FIRST_BACKOFF, None, TRANSIENT_BACKOFF_CAP);
        assert!(
            many >= Duration::from_secs(24) && many <= Duration::from_secs(36),
            "{many:?}"
        );
        // Retry-After still wins.
        let asked = backoff(
            30,
            TRANSIENT_FIRST_BACKOFF,
            Some(Duration::from_secs(90)),
            TRANSIENT_BACKOFF_CAP,
        );
        assert!(asked >= Duration::from_secs(90));
        for c in [
            ErrorCategory::UpstashServerError,
            ErrorCategory::UpstashTimeout,
            ErrorCategory::UpstashUnreachable,
            ErrorCategory::UpstashBadResponse,
            ErrorCategory::UpstashRateLimited,
        ] {
            assert!(is_transient_upstash_failure(c), "{c:?}");
        }
        for c in [
            ErrorCategory::UpstashRejected,
            ErrorCategory::UpstashUnauthorized,
            ErrorCategory::UpstashNotFound,
            ErrorCategory::KubernetesApi,
            ErrorCategory::Credentials,
            ErrorCategory::InvalidSpec,
        ] {
            assert!(!is_transient_upstash_failure(c), "{c:?}");
        }
    }
}
