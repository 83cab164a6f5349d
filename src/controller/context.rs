//! What every reconcile shares: the clients, the operator's settings, the per-object memory
//! (see [`super::memory`]), the database name index, and the names
//! the operator writes under (field manager, finalizer, Event reporter).

use std::{sync::Arc, time::Duration};

use kube::{Client, Resource};
use rand::Rng;

use super::{database_index::DatabaseIndex, memory::Memory};
use crate::{
    crd::{CacheInstance, DeletionPolicy},
    credentials::{Binding, CredentialResolver},
    events::{EventType, Publisher, Reporter},
    metrics::Metrics,
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
    /// Developer API requests of the reconcilers in flight at once (`--concurrency`).
    pub concurrency: u16,
    /// This cluster's identity, part of every derived database name (see
    /// [`super::naming::derived_name`]).
    pub cluster_id: String,
    /// How long a create whose answer was lost is given to show up in the account's list
    /// before it is made again (see [`super::instance::lost_create_grace`]).
    pub lost_create_grace: Duration,
    /// The namespaces that may adopt through the operator-wide credentials.
    pub adoption: super::adoption::AdoptionScope,
    /// Name the namespace of the instance that manages a database in the `AlreadyManaged`
    /// condition of an instance in another namespace.
    pub reveal_managing_namespace: bool,
    /// The least time between two on-demand password rotations of one instance
    /// (`--min-rotation-interval`).
    pub min_rotation_interval: Duration,
    /// How long a workload's restart waits for the credentials of other instances that change
    /// meanwhile (`--restart-window`).
    pub restart_window: Duration,
    /// The least time between two restarts of one workload (`--min-restart-interval`).
    pub min_restart_interval: Duration,
}

impl Settings {
    /// CacheInstances reconciled at the same time: twice the Upstash requests in flight, so
    /// that the Kubernetes reads and writes of some instances (the finalizer before a create,
    /// the Secret and the status after it) overlap the Upstash calls of others instead of
    /// leaving a request slot idle.
    pub fn reconciles(&self) -> u16 {
        self.concurrency.saturating_mul(2)
    }

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
    /// The Events of every controller and the monitor.
    pub events: Publisher,
    pub metrics: Arc<Metrics>,
    pub policies: Policies,
    pub config: Settings,
    /// What the operator remembers about each object between passes, forgotten when the watch
    /// says the object is gone.
    pub memory: Memory,
    /// The database names of each account, listed once per process.
    pub databases: DatabaseIndex,
    /// Which instance manages which database.
    pub claims: super::claims::Claims,
    /// Settled instances whose first read of this process waits for its turn.
    pub first_reads: super::startup::FirstReads,
    /// The connection Secrets the operator wrote, as its watch sees them.
    pub owned_secrets: super::owned_secrets::OwnedSecrets,
    /// The reconcilers' Developer API requests in flight (`--concurrency` slots; the monitor's
    /// samples have their own limit).
    pub upstash_slots: Arc<tokio::sync::Semaphore>,
    /// Renders Secret templates within bounds, in worker processes.
    pub templates: crate::templates::Renderer,
    /// Workload restarts requested and not made yet, coalesced per workload.
    pub restarts: super::restarts::Restarts,
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
            events: Publisher::new(client.clone(), reporter),
            client,
            upstash,
            credentials,
            memory: Memory::new(config.resync, metrics.clone()),
            metrics,
            policies,
            databases: DatabaseIndex::default(),
            claims: Default::default(),
            first_reads: Default::default(),
            owned_secrets: Default::default(),
            upstash_slots: Arc::new(tokio::sync::Semaphore::new(usize::from(
                config.concurrency.max(1),
            ))),
            restarts: super::restarts::Restarts::new(
                config.restart_window,
                config.min_restart_interval,
            ),
            config,
            templates: crate::templates::Renderer::new(),
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
        let events = self.events.clone();
        let (reason, action, note) = (reason.to_string(), action.to_string(), note.to_string());
        tokio::spawn(async move {
            if let Err(e) = events
                .publish(&reference, type_, &reason, &action, &note)
                .await
            {
                tracing::warn!(error = %crate::error::kube_message(&e), %reason, "could not publish Event");
            }
        });
    }

    /// Binds `obj` to its account for a reconcile: its Developer API requests share the
    /// reconcilers' `--concurrency` slots.
    pub async fn bind(&self, obj: &CacheInstance) -> crate::Result<Binding> {
        Ok(match self.credentials.bind(&self.upstash, obj).await? {
            Binding::Bound(mut bound) => {
                bound.api = bound.api.gated(&self.upstash_slots);
                Binding::Bound(bound)
            }
            other => other,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A context whose clients point at an address nothing listens on.
    pub(crate) fn context() -> Context {
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let metrics = Arc::new(Metrics::new());
        Context::new(
            client.clone(),
            UpstashClient::new(Default::default(), metrics.clone()).unwrap(),
            CredentialResolver::new(
                client,
                ("upstash-system".into(), "upstash-credentials".into()),
                None,
            ),
            Reporter {
                controller: REPORTING_CONTROLLER.into(),
                instance: None,
            },
            metrics,
            Policies::default(),
            Settings {
                resync: Duration::from_secs(300),
                default_deletion_policy: DeletionPolicy::Delete,
                concurrency: 4,
                cluster_id: "test".into(),
                lost_create_grace: Duration::from_secs(60),
                adoption: Default::default(),
                reveal_managing_namespace: false,
                min_rotation_interval: Duration::from_secs(300),
                restart_window: Duration::from_secs(5),
                min_restart_interval: Duration::from_secs(30),
            },
        )
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(100), 0.1);
            assert!(d >= Duration::from_secs(90) && d <= Duration::from_secs(110));
        }
    }
}
