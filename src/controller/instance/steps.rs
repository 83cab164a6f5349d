//! Apply: the steps of a pass, each carrying out one part of the plan through the two sides it
//! talks to ([`DeveloperApi`] for Upstash, [`Cluster`] for Kubernetes) and reporting its
//! outcome, in the order the plan sets: the database (a create preceded by its record), the
//! settings, the backup and restore requests, the rotation, the Secrets and restarts, and what
//! this process remembers.

use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::{
    apply,
    cluster::Cluster,
    observe::{self, Observed, Upstash},
    plan::{
        self, ClusterView, FailedCreate, How, Published, RecordAfter, SettingsNews, SettingsPlan,
        Step,
    },
    report::Report,
    validate::{self, Valid},
};
use crate::{
    controller::{
        Context,
        developer_api::DeveloperApi,
        secret::{self, ConnectionDetails},
    },
    crd::{CacheInstance, PendingCreate},
    error::{Error, Result},
    upstash::{CreateDatabase, Database, UpstashError},
};

/// The database a pass works with, and how it came to.
struct Taken {
    db: Database,
    how: How,
}

/// What the steps before pass on to the steps after.
#[derive(Default)]
struct Carried {
    /// "The database".
    taken: Option<Taken>,
    /// The cluster view observed before a create, reused by the Secrets.
    view: Option<ClusterView>,
    news: Option<SettingsNews>,
    published: Published,
}

/// Carries out the steps of a pass in order, until one ends it.
#[allow(clippy::too_many_arguments)]
pub async fn apply<A: DeveloperApi>(
    obj: &CacheInstance,
    ctx: &Context,
    kube: &impl Cluster,
    report: &mut Report<'_>,
    valid: &Valid,
    blocked: bool,
    seen: &Observed<A>,
    upstash: &Upstash<A>,
    steps: Vec<Step>,
    now: Timestamp,
) -> Result<()> {
    let mut carried = Carried::default();
    for step in steps {
        let go_on = match step {
            Step::Hold { cond, requeue } => {
                report.hold(cond, requeue);
                false
            }
            Step::Refused(refusal) => return Err(refusal.into()),
            Step::Use { db, how } => {
                carried.taken = Some(Taken { db: *db, how });
                true
            }
            Step::Fetch { id, how } => match upstash.api.get_database(&id).await? {
                Some(db) => {
                    carried.taken = Some(Taken { db, how });
                    true
                }
                None => {
                    ctx.databases.deleted(&upstash.index_key, &id);
                    let (cond, requeue) = plan::gone_hold(&id);
                    report.hold(cond, Some(requeue));
                    false
                }
            },
            Step::Replace(replaced) => {
                if replaced.confirm && !still_recorded(obj, kube, &replaced.old).await? {
                    return Err(Error::CacheBehind);
                }
                ctx.databases.deleted(&upstash.index_key, &replaced.old);
                report.publish(kube, &replaced.notice);
                report.status.database_id = None;
                true
            }
            Step::CheckSecrets => {
                let view = observe::cluster(obj, kube, &seen.object.status).await?;
                let conflict = plan::secret_conflict(obj, &view);
                carried.view = Some(view);
                match conflict {
                    Some(conflict) => {
                        let [secret, provisioned] = plan::secret_conflict_hold(conflict);
                        report.set(secret);
                        report.hold(provisioned, Some(plan::SECRET_CONFLICT_RECHECK));
                        false
                    }
                    None => true,
                }
            }
            Step::Finalize { record, confirm } => {
                kube.finalize(obj, record.as_ref(), confirm.as_deref())
                    .await?;
                true
            }
            Step::Create { request, record } => {
                let db = create(obj, ctx, kube, upstash, &request, &record).await?;
                carried.taken = Some(Taken {
                    db,
                    how: How::Created,
                });
                true
            }
            Step::Admit => match carried
                .taken
                .as_ref()
                .map(|t| plan::admit(obj, t.how, &t.db))
            {
                Some(Err(cond)) => {
                    report.hold(cond, None);
                    false
                }
                _ => true,
            },
            step => {
                let Some(taken) = carried.taken.as_mut() else {
                    // Every plan names the database before the steps that use it.
                    return Ok(());
                };
                with_database(
                    obj,
                    ctx,
                    kube,
                    report,
                    valid,
                    blocked,
                    seen,
                    upstash,
                    step,
                    taken,
                    &mut carried.view,
                    &mut carried.news,
                    &mut carried.published,
                    now,
                )
                .await?;
                true
            }
        };
        if !go_on {
            break;
        }
    }
    Ok(())
}

/// The steps that work with the database.
#[allow(clippy::too_many_arguments)]
async fn with_database<A: DeveloperApi>(
    obj: &CacheInstance,
    ctx: &Context,
    kube: &impl Cluster,
    report: &mut Report<'_>,
    valid: &Valid,
    blocked: bool,
    seen: &Observed<A>,
    upstash: &Upstash<A>,
    step: Step,
    taken: &mut Taken,
    view: &mut Option<ClusterView>,
    news: &mut Option<SettingsNews>,
    published: &mut Published,
    now: Timestamp,
) -> Result<()> {
    let (how, db) = (taken.how, &mut taken.db);
    match step {
        Step::Associate => {
            if let (false, Some(bound)) = (seen.reused, &upstash.bound) {
                // Only a database these credentials just read or created tells their account.
                bound.learn(db).await;
            }
            report.associate(how, db, &upstash.account_of(db), now);
        }
        Step::Settings => {
            let decided = plan::settings(obj, valid, blocked, how, db, &seen.object.status);
            *news = settings(obj, ctx, kube, report, &upstash.api, decided, how, db).await?;
        }
        Step::Requests => requests(obj, kube, report, &upstash.api, valid, db).await?,
        Step::Rotate => rotation(obj, kube, report, &upstash.api, valid, db, now).await?,
        Step::Publish => {
            *published = credentials(obj, ctx, kube, report, db, view.take()).await?;
        }
        Step::Remember => {
            let read = Remember::Read {
                index_key: &upstash.index_key,
                db: Box::new(db.clone()),
                at: seen.read_at.unwrap_or_else(Instant::now),
            };
            remember(ctx, obj, read);
        }
        Step::Announce => {
            if let Some(notice) = plan::closing_notice(obj, how, db, news.as_ref(), published) {
                report.publish(kube, &notice);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The create call; a failure is remembered, and a create never performed drops its record.
async fn create<A: DeveloperApi>(
    obj: &CacheInstance,
    ctx: &Context,
    kube: &impl Cluster,
    upstash: &Upstash<A>,
    request: &CreateDatabase,
    record: &PendingCreate,
) -> Result<Database> {
    match apply::create(&upstash.api, &ctx.databases, &upstash.index_key, request).await {
        Ok(db) => {
            remember(ctx, obj, Remember::Created);
            Ok(db)
        }
        Err(error) => {
            let failed = plan::failed_create(&error);
            remember(
                ctx,
                obj,
                Remember::FailedCreate {
                    failed,
                    error: &error,
                    record,
                },
            );
            if failed.record == RecordAfter::Drop {
                kube.finalize(obj, None, None).await?;
            }
            Err(error.into())
        }
    }
}

/// Whether the API server's copy of `obj` still records database `id`.
async fn still_recorded(obj: &CacheInstance, kube: &impl Cluster, id: &str) -> Result<bool> {
    Ok(kube
        .instance(obj)
        .await?
        .and_then(|c| c.status)
        .and_then(|s| s.database_id)
        .is_some_and(|recorded| recorded == id))
}

/// The settings: the announcement, the calls, the `Synced` condition, the live settings.
#[allow(clippy::too_many_arguments)]
pub async fn settings(
    obj: &CacheInstance,
    ctx: &Context,
    kube: &impl Cluster,
    report: &mut Report<'_>,
    api: &impl DeveloperApi,
    decided: SettingsPlan,
    how: How,
    db: &mut Database,
) -> Result<Option<SettingsNews>> {
    let mut news = None;
    if let SettingsPlan::Apply { changes, drift } = &decided {
        let announced = plan::settings_news(obj, how, db, changes, *drift);
        if let SettingsNews::Now(notice) = &announced {
            report.publish(kube, notice);
        }
        news = Some(announced);
        apply::settings(api, db, changes).await?;
    }
    let synced = plan::synced(&decided, db);
    report.drift(ctx, kube, &synced);
    report.set(synced);
    report.live(db);
    Ok(news)
}

/// Backup and restore requests, once per request id.
pub async fn requests(
    obj: &CacheInstance,
    kube: &impl Cluster,
    report: &mut Report<'_>,
    api: &impl DeveloperApi,
    valid: &Valid,
    db: &Database,
) -> Result<()> {
    let requests = plan::requests(obj, valid, &report.status);
    if let Some(request) = &requests.backup {
        let (result, notice) =
            apply::backup(api, &db.database_id, request, Timestamp::now()).await?;
        report.status.backup = Some(Box::new(result));
        report.publish(kube, &notice);
    }
    if let Some(request) = &requests.restore {
        let (result, notice) =
            apply::restore(api, &db.database_id, request, Timestamp::now()).await?;
        report.status.restore = Some(Box::new(result));
        report.publish(kube, &notice);
    }
    Ok(())
}

/// The rotation, when due, and its record.
pub async fn rotation(
    obj: &CacheInstance,
    kube: &impl Cluster,
    report: &mut Report<'_>,
    api: &impl DeveloperApi,
    valid: &Valid,
    db: &mut Database,
    now: Timestamp,
) -> Result<()> {
    let recorded = report.status.rotation.as_deref();
    let rotation = plan::rotation(obj, valid, recorded, now);
    let record = plan::rotation_record(obj, valid.rotation_every, recorded, &rotation, now);
    if let Some(after) = rotation.requeue {
        report.requeue_within(after);
    }
    if let Some(due) = rotation.due {
        *db = apply::rotate(api, db).await?;
        report.publish(kube, &plan::rotated_notice(&db.database_id, due));
    }
    report.status.rotation = Some(Box::new(record));
    Ok(())
}

/// Writes the connection Secrets for `db` (and removes the instance's Secrets the spec no
/// longer names), then restarts the workloads.
pub async fn credentials(
    obj: &CacheInstance,
    ctx: &Context,
    kube: &impl Cluster,
    report: &mut Report<'_>,
    db: &Database,
    view: Option<ClusterView>,
) -> Result<Published> {
    if !db.has_credentials() {
        return Err(UpstashError::Decode(format!(
            "database {} came back without credentials",
            db.database_id
        ))
        .into());
    }
    let details = ConnectionDetails::new(obj, db);
    let view = match view {
        Some(view) => view,
        None => observe::cluster(obj, kube, &report.status).await?,
    };
    let rendered = secret::render_templates(&ctx.templates, obj, &details)
        .await
        .map_err(validate::template_error)?;
    validate::secret_size(&secret::connection_data(obj, &details, &rendered))?;
    let secrets = plan::secrets(obj, &details, &rendered, &view);
    let mut published = Published::default();
    for write in &secrets.writes {
        kube.write_secret(obj, write).await?;
        published.written.push(write.secret.name_any());
    }
    if secrets.conflict.is_none() {
        for name in &secrets.stale {
            kube.delete_secret(obj, name).await?;
        }
        published.removed = secrets.stale.clone();
    }
    report.secrets(&secrets);
    if secrets.conflict.is_some() {
        return Ok(published);
    }
    let fingerprint = details.fingerprint();
    let mut restarted = Vec::new();
    for target in plan::restarts(&view, &fingerprint) {
        kube.restart(obj, &target, &fingerprint).await?;
        restarted.push(format!("{:?}/{}", target.kind, target.name));
    }
    if let Some(notice) = plan::restarted_notice(&restarted) {
        report.publish(kube, &notice);
    }
    Ok(published)
}

/// What this process remembers after a step.
pub enum Remember<'a> {
    /// A create went through.
    Created,
    /// A create call failed.
    FailedCreate {
        failed: FailedCreate,
        error: &'a UpstashError,
        record: &'a PendingCreate,
    },
    /// The database as the pass leaves it, reused by the passes the operator's own writes
    /// trigger (forgotten if this pass fails later).
    Read {
        index_key: &'a str,
        db: Box<Database>,
        at: Instant,
    },
}

/// The one place a pass updates the per-object memories.
pub fn remember(ctx: &Context, obj: &CacheInstance, what: Remember<'_>) {
    match what {
        Remember::Created => {
            ctx.refusals.forget(obj);
            ctx.answered_creates.forget(obj);
        }
        Remember::FailedCreate {
            failed,
            error,
            record,
        } => {
            if failed.refusal {
                ctx.refusals.refused(obj, error);
            }
            match failed.record {
                RecordAfter::Drop => ctx.answered_creates.forget(obj),
                RecordAfter::DecideFromList => ctx.answered_creates.answered(obj, record),
                RecordAfter::Keep => {}
            }
        }
        Remember::Read { index_key, db, at } => ctx.recent.record(obj, index_key, *db, at),
    }
}
