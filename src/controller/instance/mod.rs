//! The CacheInstance reconciler, as a pipeline: validate (pure) → observe → plan (pure) →
//! apply → report, and on deletion the cleanup pair (plan + apply).
//!
//! Steady state is quiet: one read of the database from Upstash per resync, reads of the
//! Secrets, and no write anywhere unless something differs. A new instance costs three
//! Kubernetes writes until it is Ready (the finalizer with the create record, the Secret, the
//! status) and one Event. A paused object costs nothing.

mod apply;
mod cleanup;
pub mod finalizer;
mod observe;
mod plan;
mod publish;
mod report;
mod validate;

#[cfg(test)]
pub(crate) mod fixtures;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{ResourceExt, runtime::controller::Action};

pub use cleanup::{FinishedCleanups, WAY_OUT};
pub use observe::pending_record;
pub use plan::lost_create_grace;
pub use publish::{RESTART_ANNOTATION, workload_resource};
pub use validate::paused;

use self::{
    observe::{ClusterView, Observed, Read},
    plan::{How, Notice, Provision, SettingsPlan},
    report::Report,
    validate::{PolicyVerdict, Valid},
};
use crate::{
    controller::{
        Context, INSTANCE_CONTROLLER,
        change_log::{self, Why},
        conditions::{self, Cond},
        credential_protection::{self as protection, CredentialsPlan},
        desired::RotationDue,
        reconcile_now, restarts,
        secret::{self, ConnectionDetails},
        startup,
    },
    crd::{CacheInstance, PendingCreate},
    error::{Error, Result},
    upstash::{Database, UpstashError},
};

/// How soon an instance held by a Secret of its name that the operator does not own looks
/// again (the operator does not watch Secrets it does not own).
const SECRET_CONFLICT_RECHECK: Duration = Duration::from_secs(30);

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
        cleanup::run(&obj, &ctx).await
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
    if let Some(wait) = first_read_wait(obj, ctx) {
        return Ok(Action::requeue(wait));
    }
    if ctx.recent.cache_behind(obj) {
        // The watch event of this process's own writes is on its way and triggers the next
        // pass; the requeue only covers its loss.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let mut report = Report::new(obj);
    let mut outcome = converge(obj, ctx, &mut report, Read::Cached).await;
    if matches!(outcome, Err(Error::CacheBehind)) {
        // The cached copy was not current: decide again on the API server's.
        report = Report::new(obj);
        outcome = converge(obj, ctx, &mut report, Read::Fresh).await;
    }
    if outcome.is_ok() {
        let recorded = report.status.last_handled_reconcile_at.take();
        report.status.last_handled_reconcile_at = reconcile_now::handled(obj, recorded);
    }
    let ready = report.finish(ctx, outcome.as_ref().err());
    ctx.metrics
        .instances
        .set_ready(&obj.namespace().unwrap_or_default(), &obj.name_any(), ready);
    report.write(ctx).await?;
    outcome?;
    Ok(Action::requeue(
        report.requeue(ctx.config.jittered_resync()),
    ))
}

/// How long a settled instance's first pass of this process waits for its turn to read (see
/// [`crate::controller::startup`]), if it does.
fn first_read_wait(obj: &CacheInstance, ctx: &Context) -> Option<Duration> {
    if reconcile_now::pending(obj) {
        return None;
    }
    let read_before = obj
        .status
        .as_ref()
        .and_then(|s| s.database_id.as_deref())
        .is_some_and(|id| ctx.recent.read_at(obj, id).is_some());
    if !startup::settled(obj) {
        return ctx
            .first_reads
            .wait(obj, false, read_before, ctx.config.resync);
    }
    let namespace = obj.namespace().unwrap_or_default();
    let secrets_in_place = std::iter::once(secret::secret_name(obj))
        .chain(secret::read_only_secret_name(obj))
        .all(|name| ctx.owned_secrets.get(&namespace, &name).is_some());
    if !secrets_in_place
        && !read_before
        && !ctx.owned_secrets.listed()
        && ctx.first_reads.starting()
    {
        // The Secret watch has not listed yet: decide once it has (or once the first minute
        // is over).
        return Some(Duration::from_secs(1));
    }
    let settled = {
        secrets_in_place
            && validate::spec(obj).is_ok_and(|valid| {
                let valid = valid.with_request_floor(ctx.config.min_rotation_interval);
                let policy = validate::policy_verdict(
                    obj,
                    &ctx.policies.all(),
                    ctx.config.default_deletion_policy,
                );
                let status = obj.status.clone().unwrap_or_default();
                !policy.blocked
                    && !plan::once_only_may_be_due(obj, &valid, false, &status, Timestamp::now())
            })
    };
    ctx.first_reads
        .wait(obj, settled, read_before, ctx.config.resync)
}

/// Validate → observe → plan → apply for one pass, deciding on the copy `read` says.
async fn converge(
    obj: &CacheInstance,
    ctx: &Context,
    report: &mut Report<'_>,
    read: Read,
) -> Result<()> {
    // Validate.
    let policy =
        validate::policy_verdict(obj, &ctx.policies.all(), ctx.config.default_deletion_policy);
    report.policy(&policy);
    let valid = validate::spec(obj)?.with_request_floor(ctx.config.min_rotation_interval);
    if valid.observe_only() {
        report.observe_only();
    }
    validate::templates(obj, &ctx.templates).await?;

    // Observe.
    let seen = observe::database(obj, ctx, &valid, policy.blocked, read).await?;
    report.start_from(&seen.status);
    let now = Timestamp::now();
    let decision = match plan::provision(&input(obj, ctx, &valid, &policy, &seen)) {
        Provision::Hold { cond, requeue } => {
            report.hold(cond, requeue);
            return Ok(());
        }
        other => other,
    };
    // Only a hold comes without an account binding.
    let Some(upstash) = &seen.upstash else {
        return Ok(());
    };

    // Plan and apply: the database.
    let mut finalized = seen.has_finalizer;
    let mut prefetched_view = None;
    let (mut db, how) = match decision {
        Provision::Hold { .. } => return Ok(()),
        Provision::Use { db, how } => (*db, how),
        Provision::Fetch { id, how } => match upstash.api.get_database(&id).await? {
            Some(db) => (db, how),
            None => {
                ctx.databases.deleted(&upstash.index_key, &id);
                report.hold(
                    Cond::new(
                        conditions::PROVISIONED,
                        false,
                        "Provisioning",
                        format!("database {id} is gone; looking again"),
                    ),
                    Some(std::time::Duration::from_secs(1)),
                );
                return Ok(());
            }
        },
        Provision::Create { request, replaces } => {
            if let Some(refusal) = ctx.refusals.standing(obj) {
                return Err(refusal.into());
            }
            if let Some(old) = replaces {
                // The status that names the missing database may be the cached copy's, behind
                // this operator's own write of a database made since: a new database is made
                // only if the API server's copy still names the missing one.
                if !seen.fresh && !still_recorded(obj, ctx, &old).await? {
                    return Err(Error::CacheBehind);
                }
                ctx.databases.deleted(&upstash.index_key, &old);
                report.publish(
                    ctx,
                    &Notice::warning(
                        "DatabaseRecreated",
                        "Create",
                        format!(
                            "database {old} no longer exists in Upstash; creating a new, empty one (applications get new credentials). {}",
                            plan::ARCHIVE_NOTE
                        ),
                    ),
                );
                report.status.database_id = None;
            }
            // Nothing is created that could not deliver its Secret: a Secret of the name that
            // the operator does not own is found first.
            let view = observe::cluster(obj, ctx, &seen.status).await?;
            if let Some(conflict) = plan::secret_conflict(obj, &view) {
                report.set(Cond::new(
                    conditions::SECRET_READY,
                    false,
                    "SecretConflict",
                    conflict,
                ));
                report.hold(
                    Cond::new(
                        conditions::PROVISIONED,
                        false,
                        "SecretConflict",
                        "no database is created while its connection Secret cannot be written",
                    ),
                    Some(SECRET_CONFLICT_RECHECK),
                );
                return Ok(());
            }
            // Record the attempt first (with the finalizer, in one write), so that a restart
            // after a lost answer recognises the database.
            let record = PendingCreate {
                database_name: request.database_name.clone(),
                started: Time(now),
                uid: obj.metadata.uid.clone(),
            };
            finalizer::ensure(obj, ctx, Some(&record), seen.confirm.as_deref()).await?;
            finalized = true;
            prefetched_view = Some(view);
            change_log::log_call(
                obj,
                "",
                "database",
                "none",
                &request.database_name,
                Why::Spec,
            );
            let created =
                apply::create(&upstash.api, &ctx.databases, &upstash.index_key, &request).await;
            match created {
                Ok(db) => {
                    ctx.refusals.forget(obj);
                    ctx.answered_creates.forget(obj);
                    (db, How::Created)
                }
                Err(e) => {
                    if !e.is_retryable() {
                        ctx.refusals.refused(obj, &e);
                    }
                    if e.not_performed() {
                        // Refused, throttled or never sent: nothing was created, so the next
                        // attempt needs no record of this one.
                        ctx.answered_creates.forget(obj);
                        finalizer::ensure(obj, ctx, None, None).await?;
                    } else if e.answered() {
                        // Upstash finished the call: the next pass's list is authoritative.
                        ctx.answered_creates.answered(obj, &record);
                    }
                    return Err(e.into());
                }
            }
        }
    };
    if let Err(cond) = plan::admit(obj, how, &db) {
        report.hold(cond, None);
        return Ok(());
    }
    if !finalized {
        // Keep the record of a create that may still be in flight.
        finalizer::ensure(obj, ctx, seen.pending.as_ref(), seen.confirm.as_deref()).await?;
    }
    if !seen.reused {
        // Only a database these credentials just read or created tells their account.
        upstash.bound.learn(&db).await;
    }
    report.associate(how, &db, &upstash.account_of(&db), now);
    // Credential Protection: Upstash answered no credentials (the Secret is the only copy).
    let withheld = !db.has_credentials();
    let previous = report.status.credentials_protected;
    if let Some(note) = protection::started_note(obj, &db.database_id, previous, withheld) {
        let notice = Notice::normal(protection::PROTECTED_REASON, "Observe", note);
        report.publish(ctx, &notice);
    }
    report.status.credentials_protected = protection::status_value(withheld);

    // The settings.
    let settings = plan::settings(obj, &valid, policy.blocked, how, &db, &seen.status);
    let mut announced = false;
    let mut set_at_create = Vec::new();
    if let SettingsPlan::Apply { changes, drift } = &settings {
        // One Event, before the calls, saying what changes (old → new). A database created
        // this pass gets the rest of its settings now and is announced once, at the end.
        let changes_note = plan::changes_note(changes, &db);
        let drift = *drift && how.event_reason().is_none() && how != How::Created;
        let who = change_log::drift_attribution(&upstash.api, &db, changes, drift).await;
        let notice = match how.event_reason() {
            _ if how == How::Created => None,
            Some(reason) => Some(Notice::normal(
                reason,
                "Update",
                format!(
                    "{}; changing {changes_note} to match the spec",
                    plan::association_note(obj, how, &db)
                ),
            )),
            None if drift => Some(Notice::normal(
                "DriftCorrected",
                "Update",
                format!(
                    "setting {changes_note} back to the spec after a change made outside Kubernetes; {}",
                    who.unwrap_or_default()
                ),
            )),
            None => Some(Notice::normal(
                "Updated",
                "Update",
                format!("updating {changes_note}"),
            )),
        };
        if let Some(notice) = notice {
            report.publish(ctx, &notice);
            announced = true;
        } else {
            set_at_create = changes.iter().map(|c| c.field()).collect();
        }
        change_log::log_changes(obj, &db, changes, change_log::Why::of(drift));
        apply::settings(&upstash.api, &mut db, changes).await?;
    }
    let synced = plan::synced(&settings, &db);
    report.drift(ctx, &synced);
    report.set(synced);

    // Backup and restore requests, once per request id.
    let requests = plan::requests(obj, &valid, &report.status);
    if let Some(request) = &requests.backup {
        change_log::log_request(obj, &db.database_id, "backup", &request.request_id);
        let (result, notice) =
            apply::backup(&upstash.api, &db.database_id, request, Timestamp::now()).await?;
        report.status.backup = Some(Box::new(result));
        report.publish(ctx, &notice);
    }
    if let Some(request) = &requests.restore {
        change_log::log_request(obj, &db.database_id, "restore", &request.request_id);
        let (result, notice) =
            apply::restore(&upstash.api, &db.database_id, request, Timestamp::now()).await?;
        report.status.restore = Some(Box::new(result));
        report.publish(ctx, &notice);
    }
    report.live(&db);

    // Rotation.
    let rotation = plan::rotation(obj, &valid, report.status.rotation.as_deref(), now);
    let mut record = report.status.rotation.clone().unwrap_or_default();
    record.last_rotation_time = Some(Time(rotation.last));
    record.next_rotation_time = rotation.next.map(Time);
    if let Some(after) = rotation.requeue {
        report.requeue_within(after);
    }
    if let Some(due) = rotation.due {
        change_log::log_rotation(obj, &db.database_id, due == RotationDue::Requested);
        db = apply::rotate(&upstash.api, &db).await?;
        record.last_rotation_time = Some(Time(now));
        record.next_rotation_time = valid.rotation_every.map(|e| Time(now + e));
        // A pending request is served by any rotation.
        let request = plan::rotate_request(obj);
        if request.is_some() && request != record.last_request {
            record.last_request = request;
            record.last_request_time = Some(Time(now));
        }
        let why = if due == RotationDue::Requested {
            "on request"
        } else {
            "on schedule"
        };
        report.publish(
            ctx,
            &Notice::normal(
                "PasswordRotated",
                "Rotate",
                format!(
                    "rotated the password and REST tokens of database {} {why}",
                    db.database_id
                ),
            ),
        );
    }
    report.status.rotation = Some(record);

    // The Secrets and the restarts; credentials Upstash withholds never reach a Secret.
    let present = protection::secrets_present(ctx, obj, db.has_credentials()).await?;
    let (secrets_written, removed) =
        match protection::plan(db.has_credentials(), &present, valid.observe_only()) {
            CredentialsPlan::Publish => {
                publish_credentials(obj, ctx, report, &db, prefetched_view).await?
            }
            CredentialsPlan::Keep => (Vec::new(), Vec::new()),
            CredentialsPlan::Recover { missing } => {
                report.publish(
                    ctx,
                    &Notice::warning(
                        protection::RESET_REASON,
                        "Rotate",
                        protection::reset_note(&db.database_id, &missing),
                    ),
                );
                change_log::log_call(
                    obj,
                    &db.database_id,
                    "password",
                    "lost",
                    "new",
                    Why::Recovery,
                );
                db = apply::rotate(&upstash.api, &db).await?;
                if let Some(rotation) = report.status.rotation.as_mut() {
                    rotation.last_rotation_time = Some(Time(now));
                    rotation.next_rotation_time = valid.rotation_every.map(|e| Time(now + e));
                }
                publish_credentials(obj, ctx, report, &db, prefetched_view).await?
            }
            CredentialsPlan::Unrecoverable { missing } => {
                return Err(Error::Credentials(protection::unrecoverable_message(
                    &db.database_id,
                    &missing,
                )));
            }
        };

    // Reused by reconciles that the operator's own writes trigger (forgotten if this pass
    // fails later).
    ctx.recent.record(
        obj,
        &upstash.index_key,
        if withheld {
            protection::without_credentials(&db)
        } else {
            db.clone()
        },
        seen.read_at.unwrap_or_else(Instant::now),
    );
    if let (false, Some(reason)) = (announced, how.event_reason()) {
        let mut note = plan::association_note(obj, how, &db);
        if !set_at_create.is_empty() {
            note.push_str(&format!(" and set {}", set_at_create.join(", ")));
        }
        if !secrets_written.is_empty() {
            note.push_str(&format!("; wrote Secret {}", secrets_written.join(", ")));
        }
        report.publish(ctx, &Notice::normal(reason, "Provision", note));
    } else if !secrets_written.is_empty() && how == How::Recorded {
        let mut note = format!("wrote Secret {}", secrets_written.join(", "));
        if !removed.is_empty() {
            note.push_str(&format!(
                "; removed Secret {}, which the spec no longer names",
                removed.join(", ")
            ));
        }
        report.publish(ctx, &Notice::normal("SecretUpdated", "WriteSecret", note));
    }
    Ok(())
}

/// Whether the API server's copy of `obj` still records database `id`.
async fn still_recorded(obj: &CacheInstance, ctx: &Context, id: &str) -> Result<bool> {
    let api: kube::Api<CacheInstance> =
        kube::Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let current = api.get_opt(&obj.name_any()).await?;
    Ok(current
        .and_then(|c| c.status)
        .and_then(|s| s.database_id)
        .is_some_and(|recorded| recorded == id))
}

/// Writes the connection Secrets for `db` (and removes the instance's Secrets the spec no
/// longer names), then restarts the workloads; returns the Secrets written and removed.
async fn publish_credentials(
    obj: &CacheInstance,
    ctx: &Context,
    report: &mut Report<'_>,
    db: &Database,
    view: Option<ClusterView>,
) -> Result<(Vec<String>, Vec<String>)> {
    if !db.has_credentials() {
        return Err(UpstashError::Decode(format!(
            "database {} came back without credentials",
            db.database_id
        ))
        .into());
    }
    let namespace = obj.namespace().unwrap_or_default();
    let details = ConnectionDetails::new(obj, db);
    let view = match view {
        Some(view) => view,
        None => observe::cluster(obj, ctx, &report.status).await?,
    };
    let rendered = secret::render_templates(&ctx.templates, obj, &details)
        .await
        .map_err(validate::template_error)?;
    validate::secret_size(&secret::connection_data(obj, &details, &rendered))?;
    let secrets = plan::secrets(obj, &details, &rendered, &view);
    let written = publish::secrets(ctx, &namespace, &secrets).await?;
    if secrets.conflict.is_some() {
        report.secrets(&secrets);
        return Ok((written, Vec::new()));
    }
    publish::remove_stale(ctx, &namespace, &secrets.stale).await?;
    report.secrets(&secrets);
    let (fingerprint, key) = (details.fingerprint(), restarts::key_of(obj));
    let targets = plan::restarts(&view, &key, &fingerprint);
    let restarted = ctx
        .restarts
        .request(&ctx.client, &namespace, &targets, &key, &fingerprint);
    if !restarted.is_empty() {
        let note = restarts::note(&restarted, ctx.config.restart_window);
        report.publish(ctx, &Notice::normal("WorkloadsRestarted", "Restart", note));
    }
    Ok((written, secrets.stale))
}

fn input<'a>(
    obj: &'a CacheInstance,
    ctx: &'a Context,
    valid: &'a Valid,
    policy: &PolicyVerdict,
    seen: &'a Observed,
) -> plan::ProvisionInput<'a> {
    plan::ProvisionInput {
        obj,
        cluster_id: &ctx.config.cluster_id,
        valid,
        blocked: policy.blocked,
        pending: seen.pending.as_ref(),
        grace: match &seen.pending {
            Some(p) if ctx.answered_creates.was_answered(obj, p) => Duration::ZERO,
            _ => ctx.config.lost_create_grace,
        },
        sighting: &seen.sighting,
        now: Timestamp::now(),
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
