//! The CachePolicy status controller: how many CacheInstances each policy applies to, how many
//! alerts fire across them, and whether the policy is usable (its selector compiles).
//!
//! It is fed by the scope's shared policy watch, by the monitor whenever an instance's firing
//! alerts change ([`Nudger`]), and by a slow resync that picks up instances created, deleted
//! or relabelled. A pass reads only the caches and writes only when the status changes.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, channel::mpsc};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use serde_json::json;

use super::{Policies, ScopeWatch};
use crate::{
    controller::{FIELD_MANAGER, conditions},
    crd::{CacheInstance, CachePolicy, CachePolicyStatus},
    guardrails,
};

/// How often each policy's counts are recomputed without a trigger.
pub const RESYNC: Duration = Duration::from_secs(30);

/// What the status controller reads.
pub struct StatusContext {
    pub client: Client,
    /// Every CacheInstance store (one per scope).
    pub instances: Vec<Store<CacheInstance>>,
}

/// The status `policy` should have, given every known instance (pure).
pub fn desired_status<'a>(
    policy: &CachePolicy,
    instances: impl IntoIterator<Item = &'a CacheInstance>,
    now: Timestamp,
) -> CachePolicyStatus {
    let previous = policy.status.clone().unwrap_or_default();
    let invalid = crate::crd::validation::check_policy(policy)
        .into_iter()
        .next();
    let (mut selected, mut firing) = (0i32, 0i32);
    for instance in instances {
        if instance.metadata.deletion_timestamp.is_none() && guardrails::applies(policy, instance) {
            selected += 1;
            firing += instance
                .status
                .as_ref()
                .map_or(0, |s| s.alerts.len() as i32);
        }
    }
    let ready = match &invalid {
        Some(problem) => conditions::Cond::new(
            conditions::READY,
            false,
            problem.check.reason(),
            problem.message.clone(),
        ),
        None => conditions::Cond::new(
            conditions::READY,
            true,
            "Applied",
            format!("applies to {selected} CacheInstance(s)"),
        ),
    };
    CachePolicyStatus {
        observed_generation: policy.metadata.generation,
        conditions: conditions::merge(
            &previous.conditions,
            &[ready],
            &[],
            policy.metadata.generation,
            now,
        ),
        selected_instances: Some(selected),
        firing_alerts: Some(firing),
    }
}

async fn reconcile(
    policy: Arc<CachePolicy>,
    ctx: Arc<StatusContext>,
) -> Result<Action, kube::Error> {
    let instances: Vec<Arc<CacheInstance>> = ctx.instances.iter().flat_map(|s| s.state()).collect();
    let next = desired_status(
        &policy,
        instances.iter().map(|i| i.as_ref()),
        Timestamp::now(),
    );
    if policy.status.as_ref() != Some(&next) {
        let api: Api<CachePolicy> =
            Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
        let body = json!({
            "apiVersion": CachePolicy::api_version(&()),
            "kind": CachePolicy::kind(&()),
            "status": next,
        });
        api.patch_status(
            &policy.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    }
    Ok(Action::requeue(crate::controller::jitter(RESYNC, 0.2)))
}

fn error_policy(policy: Arc<CachePolicy>, error: &kube::Error, _: Arc<StatusContext>) -> Action {
    tracing::debug!(policy = %policy.name_any(), err = %error, "could not write CachePolicy status");
    Action::requeue(Duration::from_secs(5))
}

/// Asks the status controllers to recount the policies of an instance (the monitor calls it
/// when the instance's firing alerts change).
#[derive(Clone)]
pub struct Nudger {
    policies: Policies,
    scopes: Vec<(
        Option<String>,
        mpsc::UnboundedSender<ObjectRef<CachePolicy>>,
    )>,
}

impl Nudger {
    /// Recounts every policy that applies to `instance`.
    pub fn instance_changed(&self, instance: &CacheInstance) {
        let namespace = instance.namespace();
        let Some((_, tx)) = self
            .scopes
            .iter()
            .find(|(scope, _)| scope.is_none() || *scope == namespace)
        else {
            return;
        };
        for policy in self.policies.applicable(instance).policies {
            let _ = tx.unbounded_send(ObjectRef::from_obj(policy.as_ref()));
        }
    }
}

/// The status controllers of every scope, built before they run.
pub struct StatusControllers {
    controllers: Vec<(
        Controller<CachePolicy>,
        mpsc::UnboundedReceiver<ObjectRef<CachePolicy>>,
    )>,
    nudger: Nudger,
}

impl StatusControllers {
    /// One controller per scope watch, fed by its shared stream.
    pub fn new(policies: &Policies, scopes: &[ScopeWatch]) -> Self {
        let mut controllers = Vec::new();
        let mut senders = Vec::new();
        for scope in scopes {
            let (tx, rx) = mpsc::unbounded();
            senders.push((scope.scope.clone(), tx));
            controllers.push((
                Controller::for_shared_stream(scope.status_trigger(), scope.store.clone()),
                rx,
            ));
        }
        Self {
            controllers,
            nudger: Nudger {
                policies: policies.clone(),
                scopes: senders,
            },
        }
    }

    /// The handle the monitor nudges with.
    pub fn nudger(&self) -> Nudger {
        self.nudger.clone()
    }

    /// Runs every controller until `shutdown` resolves.
    pub async fn run<F>(self, ctx: Arc<StatusContext>, shutdown: impl Fn() -> F)
    where
        F: std::future::Future<Output = ()> + Send + Sync + 'static,
    {
        let runs = self.controllers.into_iter().map(|(controller, nudges)| {
            controller
                .reconcile_on(nudges)
                .graceful_shutdown_on(shutdown())
                .run(reconcile, error_policy, ctx.clone())
                .for_each(|result| async move {
                    if let Err(e) = result {
                        tracing::debug!(err = %e, "CachePolicy status controller event");
                    }
                })
        });
        futures::future::join_all(runs).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(name: &str, labels: serde_json::Value, alerts: usize) -> CacheInstance {
        let alerts: Vec<serde_json::Value> = (0..alerts)
            .map(|i| serde_json::json!({"type": format!("A{i}"), "since": "2026-01-01T00:00:00Z", "message": "m"}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cache.upstash-operator.dev/v1alpha1",
            "kind": "CacheInstance",
            "metadata": {"name": name, "namespace": "crm", "labels": labels},
            "spec": {"primaryRegion": "us-east-1"},
            "status": {"alerts": alerts},
        }))
        .unwrap()
    }

    fn policy(spec: serde_json::Value) -> CachePolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cache.upstash-operator.dev/v1alpha1",
            "kind": "CachePolicy",
            "metadata": {"name": "prod", "namespace": "crm", "generation": 3},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn counts_the_instances_it_applies_to_and_their_alerts() {
        let p = policy(serde_json::json!({"selector": {"matchLabels": {"tier": "production"}}}));
        let instances = [
            instance("a", serde_json::json!({"tier": "production"}), 2),
            instance("b", serde_json::json!({"tier": "production"}), 0),
            instance("c", serde_json::json!({"tier": "dev"}), 5),
        ];
        let s = desired_status(&p, &instances, Timestamp::UNIX_EPOCH);
        assert_eq!(s.selected_instances, Some(2));
        assert_eq!(s.firing_alerts, Some(2));
        assert_eq!(s.observed_generation, Some(3));
        let ready = conditions::find(&s.conditions, "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Applied")
        );
        // Recomputing an unchanged status is identical (no write).
        let mut written = p.clone();
        written.status = Some(s.clone());
        assert_eq!(
            desired_status(&written, &instances, Timestamp::now()),
            s,
            "an unchanged status keeps its transition time"
        );
    }

    #[test]
    fn an_invalid_selector_is_reported() {
        let p = policy(
            serde_json::json!({"selector": {"matchExpressions": [{"key": "tier", "operator": "Near"}]}}),
        );
        let s = desired_status(
            &p,
            &[instance("a", serde_json::json!({"tier": "x"}), 0)],
            Timestamp::UNIX_EPOCH,
        );
        let ready = conditions::find(&s.conditions, "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSelector")
        );
        assert_eq!(s.selected_instances, Some(0));
    }
}
