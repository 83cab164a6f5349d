//! Apply: the steps of a pass, each carrying out one part of the plan through the two sides it
//! talks to ([`DeveloperApi`] for Upstash, [`Cluster`] for Kubernetes) and reporting its
//! outcome, in the order the plan sets: the database (a create preceded by its record), the
//! settings, the backup and restore requests, the rotation, the Secrets and restarts, and what
//! this process remembers.

use std::time::Instant;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
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
        change_log::{self, Why},
        credential_protection::{self as protection, CredentialsPlan},
        desired::RotationDue,
        developer_api::DeveloperApi,
        restarts,
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
    /// Upstash answered the database without its credentials (Credential Protection).
    withheld: bool,
}

/// What every step of a pass works with.
pub struct Pass<'p, A, K> {
    pub obj: &'p CacheInstance,
    pub ctx: &'p Context,
    pub kube: &'p K,
    pub valid: &'p Valid,
    /// The guardrails block changes.
    pub blocked: bool,
    pub seen: &'p Observed<A>,
    pub upstash: &'p Upstash<A>,
    pub now: Timestamp,
    /// Whether changes that disrupt clients may be made (the maintenance window).
    pub gate: plan::window::Gate,
}

impl<A: DeveloperApi, K: Cluster> Pass<'_, A, K> {
    /// Carries out the steps in order, until one ends the pass.
    pub async fn apply(&self, report: &mut Report<'_>, steps: Vec<Step>) -> Result<()> {
        let mut carried = Carried::default();
        for step in steps {
            if !self.step(report, step, &mut carried).await? {
                break;
            }
        }
        Ok(())
    }

    /// Carries out one step; `false`: it ends the pass.
    async fn step(
        &self,
        report: &mut Report<'_>,
        step: Step,
        carried: &mut Carried,
    ) -> Result<bool> {
        let (obj, ctx, kube, upstash) = (self.obj, self.ctx, self.kube, self.upstash);
        let step = match step {
            Step::Hold { cond, requeue } => {
                report.hold(cond, requeue);
                return Ok(false);
            }
            Step::Refused(refusal) => return Err(refusal.into()),
            Step::Use { db, how } => {
                carried.taken = Some(Taken { db: *db, how });
                return Ok(true);
            }
            Step::Fetch { id, how } => {
                let Some(db) = upstash.api.get_database(&id).await? else {
                    ctx.databases.deleted(&upstash.index_key, &id);
                    let (cond, requeue) = plan::gone_hold(&id);
                    report.hold(cond, Some(requeue));
                    return Ok(false);
                };
                carried.taken = Some(Taken { db, how });
                return Ok(true);
            }
            Step::Replace(replaced) => {
                if replaced.confirm && !still_recorded(obj, kube, &replaced.old).await? {
                    return Err(Error::CacheBehind);
                }
                ctx.databases.deleted(&upstash.index_key, &replaced.old);
                report.publish(kube, &replaced.notice);
                report.status.database_id = None;
                return Ok(true);
            }
            Step::CheckSecrets => {
                let view = observe::cluster(obj, kube, &self.seen.object.status).await?;
                let conflict = plan::secret_conflict(obj, &view);
                carried.view = Some(view);
                let Some(conflict) = conflict else {
                    return Ok(true);
                };
                let [secret, provisioned] = plan::secret_conflict_hold(conflict);
                report.set(secret);
                report.hold(provisioned, Some(plan::SECRET_CONFLICT_RECHECK));
                return Ok(false);
            }
            Step::Finalize { record, confirm } => {
                kube.finalize(obj, record.as_ref(), confirm.as_deref())
                    .await?;
                return Ok(true);
            }
            Step::Create { request, record } => {
                let db = self.create(&request, &record).await?;
                carried.taken = Some(Taken {
                    db,
                    how: How::Created,
                });
                return Ok(true);
            }
            step => step,
        };
        // The steps that work with the database, which every plan names before them.
        let Some(Taken { db, how }) = carried.taken.as_mut() else {
            return Ok(false);
        };
        let how = *how;
        match step {
            Step::Admit => {
                if let Err(cond) = plan::admit(obj, how, db) {
                    report.hold(cond, None);
                    return Ok(false);
                }
            }
            Step::Associate => {
                if let (false, Some(bound)) = (self.seen.reused, &upstash.bound) {
                    // Only a database these credentials just read or created tells their
                    // account.
                    bound.learn(db).await;
                }
                report.associate(how, db, &upstash.account_of(db), self.now);
                carried.withheld = self.protection(report, db);
            }
            Step::Settings => carried.news = self.settings(report, how, db).await?,
            Step::Requests => self.requests(report, db).await?,
            Step::Rotate => self.rotate(report, db).await?,
            Step::Publish => {
                carried.published = self.credentials(report, db, carried.view.take()).await?;
            }
            Step::Users => {
                let recorded = report.status.users.clone();
                let observe_only = self.valid.observe_only();
                let users = crate::acl::reconcile(obj, ctx, db, observe_only, &recorded).await?;
                if let Some(cond) = users.cond {
                    report.set(cond);
                }
                if let Some(after) = users.retry {
                    report.requeue_within(after);
                }
                if let Some(statuses) = users.users {
                    report.status.users = statuses;
                }
            }
            Step::Remember => {
                // A protected database is remembered as a read answers it, not with the
                // credentials a reset showed once.
                let db = if carried.withheld {
                    protection::without_credentials(db)
                } else {
                    db.clone()
                };
                let read = Remember::Read {
                    index_key: &upstash.index_key,
                    db: Box::new(db),
                    at: self.seen.read_at.unwrap_or_else(Instant::now),
                };
                remember(ctx, obj, read);
            }
            Step::Announce => {
                let news = carried.news.as_ref();
                if let Some(notice) = plan::closing_notice(obj, how, db, news, &carried.published) {
                    report.publish(kube, &notice);
                }
            }
            _ => {}
        }
        Ok(true)
    }

    /// The create call; a failure is remembered, and a create never performed drops its
    /// record.
    async fn create(&self, request: &CreateDatabase, record: &PendingCreate) -> Result<Database> {
        let (obj, ctx, upstash) = (self.obj, self.ctx, self.upstash);
        let name = &request.database_name;
        change_log::log_call(obj, "", "database", "none", name, Why::Spec);
        match apply::create(&upstash.api, &ctx.databases, &upstash.index_key, request).await {
            Ok(db) => {
                remember(ctx, obj, Remember::Created);
                Ok(db)
            }
            Err(error) => {
                let failed = plan::failed_create(&error);
                let what = Remember::FailedCreate {
                    failed,
                    error: &error,
                    record,
                };
                remember(ctx, obj, what);
                if failed.record == RecordAfter::Drop {
                    self.kube.finalize(obj, None, None).await?;
                }
                Err(error.into())
            }
        }
    }

    /// The settings: the announcement, the calls, the `Synced` condition, the live settings.
    async fn settings(
        &self,
        report: &mut Report<'_>,
        how: How,
        db: &mut Database,
    ) -> Result<Option<SettingsNews>> {
        let (obj, kube) = (self.obj, self.kube);
        let status = &self.seen.object.status;
        let decided = plan::settings(obj, self.valid, self.blocked, how, db, status);
        let (decided, waiting) = plan::window::defer(decided, &self.gate, &status.pending_changes);
        if !waiting.is_empty()
            && let Some(after) = plan::window::until(&self.gate, self.now)
        {
            report.requeue_within(after);
        }
        let mut news = None;
        if let SettingsPlan::Apply { changes, drift } = &decided {
            let drift = plan::outside_change(how, *drift);
            let api = &self.upstash.api;
            let who = change_log::drift_attribution(api, db, changes, drift).await;
            let announced = plan::settings_news(obj, how, db, changes, drift, who.as_deref());
            if let SettingsNews::Now(notice) = &announced {
                report.publish(kube, notice);
            }
            news = Some(announced);
            change_log::log_changes(obj, db, changes, Why::of(drift));
            apply::settings(&self.upstash.api, db, changes).await?;
        }
        let synced = plan::window::waiting_synced(&waiting, &self.gate, db)
            .unwrap_or_else(|| plan::synced(&decided, db));
        report.drift(self.ctx, kube, &synced);
        report.set(synced);
        report.live(db);
        Ok(news)
    }

    /// Backup and restore requests, once per request id.
    async fn requests(&self, report: &mut Report<'_>, db: &Database) -> Result<()> {
        let api = &self.upstash.api;
        let requests = plan::requests(self.obj, self.valid, &report.status);
        if let Some(request) = &requests.backup {
            change_log::log_request(self.obj, &db.database_id, "backup", &request.request_id);
            let (result, notice) =
                apply::backup(api, &db.database_id, request, Timestamp::now()).await?;
            report.status.backup = Some(Box::new(result));
            report.publish(self.kube, &notice);
        }
        if let Some(request) = &requests.restore {
            change_log::log_request(self.obj, &db.database_id, "restore", &request.request_id);
            let (result, notice) =
                apply::restore(api, &db.database_id, request, Timestamp::now()).await?;
            report.status.restore = Some(Box::new(result));
            report.publish(self.kube, &notice);
        }
        Ok(())
    }

    /// The rotation, when due, and its record.
    async fn rotate(&self, report: &mut Report<'_>, db: &mut Database) -> Result<()> {
        let (obj, valid, now) = (self.obj, self.valid, self.now);
        let recorded = report.status.rotation.as_deref();
        let rotation =
            plan::window::rotation(plan::rotation(obj, valid, recorded, now), &self.gate, now);
        let record = plan::rotation_record(obj, valid.rotation_every, recorded, &rotation, now);
        if let Some(after) = rotation.requeue {
            report.requeue_within(after);
        }
        if let Some(due) = rotation.due {
            change_log::log_rotation(obj, &db.database_id, due == RotationDue::Requested);
            *db = apply::rotate(&self.upstash.api, db).await?;
            report.publish(self.kube, &plan::rotated_notice(&db.database_id, due));
        }
        report.status.rotation = Some(Box::new(record));
        Ok(())
    }

    /// Writes the connection Secrets for `db` (and removes the instance's Secrets the spec no
    /// longer names), then restarts the workloads.
    async fn credentials(
        &self,
        report: &mut Report<'_>,
        db: &mut Database,
        view: Option<ClusterView>,
    ) -> Result<Published> {
        let (obj, kube) = (self.obj, self.kube);
        // Credentials Upstash withholds never reach a Secret.
        if !self.recovered(report, db).await? {
            return Ok(Published::default());
        }
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
        let rendered = secret::render_templates(&self.ctx.templates, obj, &details)
            .await
            .map_err(validate::template_error)?;
        validate::secret_size(&secret::connection_data(obj, &details, &rendered))?;
        let secrets = plan::secrets(obj, &details, &rendered, &view);
        let mut published = Published::default();
        for write in &secrets.writes {
            kube.write_secret(obj, write).await?;
            published.written.push(write.secret.name_any());
        }
        if secrets.conflict.is_some() {
            report.secrets(&secrets);
            return Ok(published);
        }
        for name in &secrets.stale {
            kube.delete_secret(obj, name).await?;
        }
        published.removed = secrets.stale.clone();
        report.secrets(&secrets);
        let (fingerprint, key) = (details.fingerprint(), restarts::key_of(obj));
        let targets = plan::restarts(&view, &key, &fingerprint);
        let restarted = kube.request_restarts(obj, &targets, &key, &fingerprint);
        let window = self.ctx.config.restart_window;
        if let Some(notice) = plan::restarted_notice(&restarted, window) {
            report.publish(kube, &notice);
        }
        Ok(published)
    }
}

impl<A: DeveloperApi, K: Cluster> Pass<'_, A, K> {
    /// Credential Protection: whether the database came without its credentials; the status
    /// says so, and one Event when it starts.
    fn protection(&self, report: &mut Report<'_>, db: &Database) -> bool {
        let withheld = !db.has_credentials();
        let previous = report.status.credentials_protected;
        if let Some(note) = protection::started_note(self.obj, &db.database_id, previous, withheld)
        {
            let notice = plan::Notice::normal(protection::PROTECTED_REASON, "Observe", note);
            report.publish(self.kube, &notice);
        }
        report.status.credentials_protected = protection::status_value(withheld);
        withheld
    }

    /// For a database without its credentials: `false` when the Secrets stay as they are;
    /// `true` when the Secrets are to be written, after a password reset if one is lost (and
    /// the instance may change the database).
    async fn recovered(&self, report: &mut Report<'_>, db: &mut Database) -> Result<bool> {
        let (obj, kube) = (self.obj, self.kube);
        let mut present = Vec::new();
        if !db.has_credentials() {
            // The operator's own Secrets from its watch, any other from the API server.
            let names =
                std::iter::once(secret::secret_name(obj)).chain(secret::read_only_secret_name(obj));
            for name in names {
                let there = kube.secret(obj, &name).await?.is_some();
                present.push((name, there));
            }
        }
        match protection::plan(db.has_credentials(), &present, self.valid.observe_only()) {
            CredentialsPlan::Publish => Ok(true),
            CredentialsPlan::Keep => Ok(false),
            CredentialsPlan::Recover { missing } => {
                let id = db.database_id.clone();
                let note = protection::reset_note(&id, &missing);
                report.publish(
                    kube,
                    &plan::Notice::warning(protection::RESET_REASON, "Rotate", note),
                );
                change_log::log_call(obj, &id, "password", "lost", "new", Why::Recovery);
                *db = apply::rotate(&self.upstash.api, db).await?;
                let (now, every) = (self.now, self.valid.rotation_every);
                if let Some(rotation) = report.status.rotation.as_mut() {
                    rotation.last_rotation_time = Some(Time(now));
                    rotation.next_rotation_time = every.map(|e| Time(now + e));
                }
                Ok(true)
            }
            CredentialsPlan::Unrecoverable { missing } => Err(Error::Credentials(
                protection::unrecoverable_message(&db.database_id, &missing),
            )),
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
            ctx.memory.forget_refusal(obj);
            ctx.memory.forget_answered_create(obj);
        }
        Remember::FailedCreate {
            failed,
            error,
            record,
        } => {
            if failed.refusal {
                ctx.memory.create_refused(obj, error);
            }
            match failed.record {
                RecordAfter::Drop => ctx.memory.forget_answered_create(obj),
                RecordAfter::DecideFromList => ctx.memory.create_answered(obj, record),
                RecordAfter::Keep => {}
            }
        }
        Remember::Read { index_key, db, at } => ctx.memory.record_read(obj, index_key, *db, at),
    }
}
