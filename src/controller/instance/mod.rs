//! The CacheInstance reconciler, as a pipeline: validate (pure) → observe → plan (pure) →
//! apply → report, and on deletion the cleanup pair (plan + apply).
//!
//! - observe (`observe`): the object (its freshest status, the create record, the finalizer,
//!   what this process remembers of it) and the database side (through an `observe::Account`:
//!   Upstash through the instance's credentials, or this process's last read); the Secrets and
//!   workloads when a step needs them;
//! - plan (`plan`): one list of steps (`plan::Step`) naming every Upstash call, Kubernetes
//!   write and Event of the pass in order, from types the plan owns (`plan::input`);
//! - apply (`steps`): carries the steps out through two small traits, `DeveloperApi` for
//!   Upstash and `cluster::Cluster` for Kubernetes, until one ends the pass, and updates the
//!   per-object memories in one place (`steps::remember`);
//! - report (`report`): the status and its conditions from the steps' outcomes, written once.
//!
//! Steady state is quiet: one read of the database from Upstash per resync, reads of the
//! Secrets, and no write anywhere unless something differs. A new instance costs three
//! Kubernetes writes until it is Ready (the finalizer with the create record, the Secret, the
//! status) and one Event. A paused object costs nothing.

mod apply;
mod cleanup;
mod cluster;
pub mod finalizer;
mod observe;
mod plan;
mod report;
mod steps;
mod validate;

#[cfg(test)]
mod fake_cluster;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod scenarios;

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, runtime::controller::Action};

pub use crate::controller::restarts::{RESTART_ANNOTATION, workload_resource};
pub use cleanup::WAY_OUT;
pub use observe::pending_record;
pub use plan::{lost_create_grace, preview};
pub use validate::paused;

use self::{
    cluster::{Cluster, Live},
    observe::{Account, Observed, Read},
    plan::Step,
    report::Report,
    validate::{PolicyVerdict, Valid},
};
use crate::{
    controller::{Context, INSTANCE_CONTROLLER, developer_api::DeveloperApi, reconcile_now},
    crd::CacheInstance,
    error::{Error, Result},
};

/// Entry point for the controller.
pub async fn reconcile(obj: Arc<CacheInstance>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(INSTANCE_CONTROLLER);
    // Counted when it starts: a cleanup that lets the object go forgets its series at the end.
    ctx.metrics
        .instances
        .count_reconcile(&obj.namespace().unwrap_or_default(), &obj.name_any());
    let result = if validate::paused(&obj) {
        // No Upstash call and no write, deletion included, until the annotation goes.
        tracing::debug!(object = %format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()), "paused");
        Ok(Action::await_change())
    } else if obj.metadata.deletion_timestamp.is_some() {
        cleanup::run(&obj, &ctx, &Live::new(&ctx)).await
    } else {
        pass(&obj, &ctx).await
    };
    match &result {
        Ok(action) => ctx
            .metrics
            .reconcile_finished(INSTANCE_CONTROLLER, result_label(action)),
        Err(e) => ctx
            .metrics
            .reconcile_failed(INSTANCE_CONTROLLER, e.metric_label()),
    }
    result
}

/// The `result` label of a successful reconcile, as controller-runtime reports it: `success`
/// when it waits for a change, `requeue_after` when it comes back after a while.
fn result_label(action: &Action) -> &'static str {
    if *action == Action::await_change() {
        "success"
    } else {
        "requeue_after"
    }
}

/// One pass over a live (not deleting) CacheInstance.
async fn pass(obj: &CacheInstance, ctx: &Context) -> Result<Action> {
    if let Some(wait) = observe::wait(obj, ctx) {
        return Ok(Action::requeue(wait));
    }
    run(obj, ctx, &Live::new(ctx), &observe::Credentials).await
}

/// A pass on the cached copy (again on the API server's if the cached one was behind), then
/// its report: `Ready`, the status write, when to come back.
async fn run(
    obj: &CacheInstance,
    ctx: &Context,
    kube: &impl Cluster,
    account: &impl Account,
) -> Result<Action> {
    let (mut report, mut outcome) = attempt(obj, ctx, kube, account, Read::Cached).await;
    if matches!(outcome, Err(Error::CacheBehind)) {
        // The cached copy was not current: decide again on the API server's.
        (report, outcome) = attempt(obj, ctx, kube, account, Read::Fresh).await;
    }
    if outcome.is_ok() {
        // "Reconcile now": the request this pass served.
        let recorded = report.status.last_handled_reconcile_at.take();
        report.status.last_handled_reconcile_at = reconcile_now::handled(obj, recorded);
    }
    let ready = report.finish(ctx, kube, outcome.as_ref().err());
    ctx.metrics
        .instances
        .set_ready(&obj.namespace().unwrap_or_default(), &obj.name_any(), ready);
    report.write(kube).await?;
    outcome?;
    Ok(Action::requeue(
        report.requeue(ctx.config.jittered_resync()),
    ))
}

/// Validate → observe → converge, deciding on the copy `read` says.
async fn attempt<'a>(
    obj: &'a CacheInstance,
    ctx: &Context,
    kube: &impl Cluster,
    account: &impl Account,
    read: Read,
) -> (Report<'a>, Result<()>) {
    let mut report = Report::new(obj);
    let outcome = async {
        let policy =
            validate::policy_verdict(obj, &ctx.policies.all(), ctx.config.default_deletion_policy);
        report.policy(&policy);
        let valid = validate::spec(obj)?.with_request_floor(ctx.config.min_rotation_interval);
        if valid.observe_only() {
            report.observe_only();
        }
        validate::templates(obj, &ctx.templates).await?;
        let seen = account
            .observe(obj, ctx, kube, &valid, policy.blocked, read)
            .await?;
        converge(obj, ctx, kube, &mut report, &valid, &policy, seen).await
    }
    .await;
    (report, outcome)
}

/// Plan → apply for one pass over what observe found: the steps of the pass, in order (see
/// [`plan::Step`]), carried out until one ends the pass.
async fn converge<A: DeveloperApi>(
    obj: &CacheInstance,
    ctx: &Context,
    kube: &impl Cluster,
    report: &mut Report<'_>,
    valid: &Valid,
    policy: &PolicyVerdict,
    seen: Observed<A>,
) -> Result<()> {
    report.start_from(&seen.object.status);
    let now = Timestamp::now();
    let decision = plan::provision(&input(obj, ctx, valid, policy, &seen, now));
    let steps = plan::pass(obj, decision, &seen.object, now);
    let window = plan::window::chosen(obj, policy.window.as_ref());
    let approval = plan::window::approval(obj, &seen.object.status);
    let gate = plan::window::gate(window, approval.is_some(), now);
    report.window(gate.clone());
    let Some(upstash) = &seen.upstash else {
        // Only a hold comes without an account binding.
        if let Some(Step::Hold { cond, requeue }) = steps.into_iter().next() {
            report.hold(cond, requeue);
        }
        return Ok(());
    };
    let pass = steps::Pass {
        obj,
        ctx,
        kube,
        valid,
        blocked: policy.blocked,
        seen: &seen,
        upstash,
        now,
        gate,
    };
    pass.apply(report, steps).await?;
    if let (Some(_), Some(approval)) = (window, approval) {
        // Acted on: the same value approves nothing more.
        report.status.last_approval = Some(approval.to_string());
    }
    Ok(())
}

fn input<'a, A>(
    obj: &'a CacheInstance,
    ctx: &'a Context,
    valid: &'a Valid,
    policy: &PolicyVerdict,
    seen: &'a Observed<A>,
    now: Timestamp,
) -> plan::ProvisionInput<'a> {
    plan::ProvisionInput {
        obj,
        cluster_id: &ctx.config.cluster_id,
        valid,
        blocked: policy.blocked,
        pending: seen.object.pending.as_ref(),
        grace: if seen.object.memory.create_answered {
            Duration::ZERO
        } else {
            ctx.config.lost_create_grace
        },
        sighting: &seen.sighting,
        now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_label_tells_a_wait_for_change_from_a_requeue() {
        assert_eq!(result_label(&Action::await_change()), "success");
        assert_eq!(
            result_label(&Action::requeue(Duration::from_secs(300))),
            "requeue_after"
        );
    }
}
