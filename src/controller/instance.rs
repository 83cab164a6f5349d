//! The CacheInstance reconciler: read → validate → locate or create the database → bring its
//! settings in line → rotate → write the Secret(s) → restart workloads → status.
//!
//! Steady state is quiet: one read of the database from Upstash, reads of the Secrets, and no
//! write anywhere unless something differs. Events fire on transitions only.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, StatefulSet},
        core::v1::Secret,
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
    },
};
use secrecy::SecretString;
use serde_json::json;

use super::{
    Context, FIELD_MANAGER, FINALIZER,
    conditions::{self, Cond, Status},
    desired::{self, Change},
    secret::{self, ConnectionDetails, Ownership},
};
use crate::{
    crd::{
        Binding, CacheInstance, CacheInstanceStatus, DeletionPolicy, PendingCreate,
        ROTATE_ANNOTATION, RequestResult, RotationStatus, WorkloadKind,
    },
    credentials::{self, identity::Lookup},
    error::{Error, Result},
    guardrails,
    upstash::{Database, UpstashApi, UpstashError},
};

/// Annotation put on restarted workloads' pod templates: a digest of the credentials.
pub const RESTART_ANNOTATION: &str = "cache.upstash-operator.dev/credentials-hash";

/// How long to wait for a database whose create answer was lost to show up in the list before
/// creating again.
const LOST_CREATE_GRACE: Duration = Duration::from_secs(30);

/// Objects at least this old are listed for a database of their derived name before a create
/// even when their status records no attempt (it may have been lost); younger ones are not,
/// which keeps provisioning from listing the whole account once per new instance.
const UNRECORDED_CREATE_AGE: Duration = Duration::from_secs(600);

/// Condition types this reconciler writes (the monitor writes `Healthy`).
const OWN_CONDITIONS: [&str; 5] = [
    conditions::READY,
    conditions::PROVISIONED,
    conditions::SYNCED,
    conditions::SECRET_READY,
    conditions::POLICY_COMPLIANT,
];

/// Entry point for the controller.
pub async fn reconcile(obj: Arc<CacheInstance>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = obj
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let api: Api<CacheInstance> = Api::namespaced(ctx.client.clone(), &namespace);
    let _timer = ctx.metrics.reconcile_started(super::INSTANCE_CONTROLLER);
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(obj, &ctx).await,
            Finalizer::Cleanup(obj) => {
                let done = cleanup(obj, &ctx).await;
                if done.is_ok() {
                    ctx.credentials.cleanup_finished();
                }
                done
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    match &result {
        Ok(_) => ctx
            .metrics
            .reconcile_finished(super::INSTANCE_CONTROLLER, "requeue_after"),
        Err(e) => ctx
            .metrics
            .reconcile_failed(super::INSTANCE_CONTROLLER, e.metric_label()),
    }
    result
}

/// One reconcile pass over a live (not deleting) CacheInstance.
struct Run<'a> {
    ctx: &'a Context,
    obj: &'a CacheInstance,
    api: Api<CacheInstance>,
    name: String,
    namespace: String,
    /// The status being built; written once at the end if it differs.
    status: CacheInstanceStatus,
    conds: Vec<Cond>,
    /// When to come back (rotation due, lost create grace, ...), besides the resync.
    requeue: Option<Duration>,
    /// When the database this pass works with was read from Upstash.
    read_at: Option<Instant>,
    /// Whether this pass has re-read its status from the API server.
    refreshed: bool,
}

async fn apply(obj: Arc<CacheInstance>, ctx: &Context) -> Result<Action> {
    let namespace = obj
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let mut run = Run {
        ctx,
        obj: &obj,
        api: Api::namespaced(ctx.client.clone(), &namespace),
        name: obj.name_any(),
        namespace,
        status: obj.status.clone().unwrap_or_default(),
        conds: Vec::new(),
        requeue: None,
        read_at: None,
        refreshed: false,
    };
    let outcome = run.converge().await;
    let ready = match &outcome {
        Ok(()) => run.summarise(),
        Err(e) => {
            run.fail(e);
            false
        }
    };
    ctx.metrics
        .instance_ready
        .get_or_create(&crate::metrics::InstanceLabels {
            namespace: run.namespace.clone(),
            name: run.name.clone(),
        })
        .set(i64::from(ready));
    run.write_status().await?;
    outcome?;
    let resync = ctx.config.jittered_resync();
    Ok(Action::requeue(
        run.requeue.map_or(resync, |r| r.min(resync)),
    ))
}

impl Run<'_> {
    async fn converge(&mut self) -> Result<()> {
        // Read and validate.
        let applicable = self.ctx.policies.applicable(self.obj);
        let blocked = self.check_policy(&applicable);
        self.validate()?;
        let bound = match self
            .ctx
            .credentials
            .bind(&self.ctx.upstash, self.obj)
            .await?
        {
            credentials::Binding::Bound(bound) => bound,
            // A database recorded under another account would look deleted to these
            // credentials: stop before any call rather than create a replacement in the wrong
            // account.
            credentials::Binding::AccountChanged(why) => {
                self.conds.push(Cond::new(
                    conditions::PROVISIONED,
                    false,
                    "AccountChanged",
                    why,
                ));
                return Ok(());
            }
        };
        // The database.
        let Some(mut db) = self.locate_or_create(&bound, blocked).await? else {
            return Ok(());
        };
        bound.learn(&db).await;
        let upstash = bound.api.clone();
        self.status.database_id = Some(db.database_id.clone());
        self.status.database_name = Some(db.database_name.clone());
        self.status.account = Some(
            credentials::identity::account_of(&db)
                .map(str::to_string)
                .unwrap_or_else(|| bound.account.clone()),
        );

        // Settings.
        if blocked {
            self.conds.push(Cond::new(
                conditions::SYNCED,
                Status::Unknown,
                "PolicyViolation",
                "settings are not changed while the spec breaks its CachePolicy's guardrails",
            ));
        } else {
            self.sync_settings(&upstash, &mut db).await?;
        }

        // On-demand backup and restore, once per request id.
        self.run_requests(&upstash, &db).await?;
        self.status.allowed_ips = Some(desired::normalize_ips(&db.allowed_ip_ranges));
        self.status.daily_backup = Some(db.daily_backup_enabled);

        // Credentials: rotation, then the Secret(s) and restarts.
        self.rotate_if_due(&upstash, &mut db).await?;
        if !db.has_credentials() {
            return Err(UpstashError::Decode(format!(
                "database {} came back without credentials",
                db.database_id
            ))
            .into());
        }
        let details = self.connection_details(&db);
        let secret_ok = self.sync_secrets(&details).await?;
        if secret_ok {
            self.restart_workloads(&details).await?;
        }

        self.status.endpoint = Some(db.endpoint.clone());
        self.status.state = Some(db.state.clone()).filter(|s| !s.is_empty());
        // Reused by reconciles that our own writes trigger (forgotten if this pass fails later).
        let read_at = self.read_at.unwrap_or_else(Instant::now);
        self.ctx.recent.record(self.obj, db.clone(), read_at);
        self.status.plan = db
            .plan()
            .map(|p| p.to_string())
            .or(Some(db.plan_type.clone()));
        Ok(())
    }

    /// Records the applicable policies; returns whether guardrails block provisioning and changes.
    fn check_policy(&mut self, applicable: &guardrails::Applicable) -> bool {
        self.status.policy = applicable.names();
        let c = guardrails::compliance(self.obj, applicable);
        self.conds.push(Cond::new(
            conditions::POLICY_COMPLIANT,
            c.compliant,
            c.reason,
            c.message,
        ));
        c.blocked
    }

    /// Every check of the spec before any call (see [`crate::crd::validation`]); templates
    /// are rendered with placeholders so that a bad one is reported before a database exists.
    fn validate(&self) -> Result<()> {
        if let Some(problem) = crate::crd::validation::check_instance(self.obj)
            .into_iter()
            .next()
        {
            return Err(Error::InvalidSpec(problem));
        }
        secret::check_templates(self.obj).map_err(|e| {
            Error::InvalidSpec(crate::crd::validation::Problem {
                check: crate::crd::validation::Check::TemplateInvalid,
                message: format!("spec.secret.templates: {e}"),
            })
        })
    }

    /// Finds the database this object manages, adopting or creating it as the spec says.
    /// `None` means there is nothing to do until something changes (condition set).
    async fn locate_or_create(
        &mut self,
        bound: &credentials::Bound,
        blocked: bool,
    ) -> Result<Option<Database>> {
        let upstash = &bound.api;
        if self.status.database_id.is_none() && self.obj.spec.adopt.is_none() && !blocked {
            self.refresh_status().await?;
        }
        if let Some(id) = self.status.database_id.clone() {
            // Triggered by our own writes (or the monitor's) since the last read: nothing the
            // database could have drifted in is worth a call before the next resync.
            if let Some(db) = self.ctx.recent.reuse(self.obj, &id) {
                self.read_at = self.ctx.recent.read_at(self.obj, &id);
                self.provisioned(
                    "Provisioned",
                    format!("database {} ({}) exists", db.database_name, db.database_id),
                );
                return Ok(Some(db));
            }
            self.read_at = Some(Instant::now());
            match bound.lookup(&id, self.status.account.as_deref()).await? {
                Lookup::Found(db) => {
                    self.provisioned(
                        "Provisioned",
                        format!("database {} ({}) exists", db.database_name, db.database_id),
                    );
                    return Ok(Some(*db));
                }
                Lookup::NotVisible(why) => {
                    self.conds.push(Cond::new(
                        conditions::PROVISIONED,
                        false,
                        "AccountChanged",
                        why,
                    ));
                    return Ok(None);
                }
                Lookup::Missing => {}
            }
            // Deleted behind our back.
            if blocked {
                self.conds.push(Cond::new(
                    conditions::PROVISIONED,
                    false,
                    "DatabaseMissing",
                    format!("database {id} no longer exists and the CachePolicy's guardrails block creating a new one"),
                ));
                return Ok(None);
            }
            let message = format!(
                "database {id} no longer exists in Upstash; creating a new one (applications get new credentials)"
            );
            self.event(EventType::Warning, "DatabaseRecreated", "Create", &message);
            self.status.database_id = None;
            self.status.pending_create = None;
            return self.create(upstash).await;
        }

        if let Some(adopt) = self.obj.spec.adopt.clone() {
            return self.adopt(upstash, adopt.database_id.as_deref()).await;
        }

        if blocked {
            self.conds.push(Cond::new(
                conditions::PROVISIONED,
                false,
                "PolicyViolation",
                "no database is created while the spec breaks its CachePolicy's guardrails",
            ));
            return Ok(None);
        }
        self.find_own_or_create(upstash).await
    }

    /// The watch cache can lag behind this operator's own last status write (a trigger from the
    /// Secret it just applied can come first), so a pass about to do something that must happen
    /// once (create a database, rotate, back up, restore) first takes what the status records
    /// from the API server's current copy: one quorum read, at most once per pass, and only
    /// when the cached status says the action is due.
    async fn refresh_status(&mut self) -> Result<()> {
        if self.refreshed {
            return Ok(());
        }
        self.refreshed = true;
        let Some(fresh) = self.api.get_opt(&self.name).await?.and_then(|o| o.status) else {
            return Ok(());
        };
        if self.status.database_id.is_none() {
            if fresh.database_id.is_some() {
                // The create finished (and cleared its pending record).
                self.status.database_id = fresh.database_id;
                self.status.account = fresh.account;
                self.status.pending_create = fresh.pending_create;
            } else if fresh.pending_create.is_some() {
                self.status.pending_create = fresh.pending_create;
            }
        }
        if fresh.rotation.is_some() {
            self.status.rotation = fresh.rotation;
        }
        if fresh.backup.is_some() {
            self.status.backup = fresh.backup;
        }
        if fresh.restore.is_some() {
            self.status.restore = fresh.restore;
        }
        Ok(())
    }

    async fn adopt(&mut self, upstash: &UpstashApi, id: Option<&str>) -> Result<Option<Database>> {
        let found = match id {
            Some(id) => match upstash.get_database(id).await? {
                Some(db) => Ok(db),
                None => Err(format!(
                    "spec.adopt.databaseId {id} does not exist in the Upstash account"
                )),
            },
            None => {
                let name = desired::database_name(self.obj);
                let mut matches: Vec<Database> = upstash
                    .list_databases()
                    .await?
                    .into_iter()
                    .filter(|d| d.database_name == name)
                    .collect();
                match matches.len() {
                    1 => {
                        let id = matches.remove(0).database_id;
                        upstash
                            .get_database(&id)
                            .await?
                            .ok_or_else(|| format!("database {id} disappeared while being adopted"))
                    }
                    0 => Err(format!(
                        "no Upstash database is named {name}; nothing to adopt"
                    )),
                    n => Err(format!(
                        "{n} Upstash databases are named {name}; adopt one by spec.adopt.databaseId"
                    )),
                }
            }
        };
        let db = match found {
            Ok(db) => db,
            Err(message) => {
                self.conds.push(Cond::new(
                    conditions::PROVISIONED,
                    false,
                    "AdoptionFailed",
                    message,
                ));
                return Ok(None);
            }
        };
        if let Some(conflict) = desired::adoption_conflict(self.obj, &db) {
            self.conds.push(Cond::new(
                conditions::PROVISIONED,
                false,
                "AdoptionConflict",
                conflict,
            ));
            return Ok(None);
        }
        self.status.database_id = Some(db.database_id.clone());
        self.init_rotation_clock(&db);
        let message = format!("adopted database {} ({})", db.database_name, db.database_id);
        self.event(EventType::Normal, "Adopted", "Adopt", &message);
        self.provisioned("Adopted", message);
        Ok(Some(db))
    }

    /// The crash-safe create: look for a database this object already created (by its
    /// derived name, or by the name recorded in `status.pendingCreate`), and create one only
    /// when there is none.
    async fn find_own_or_create(&mut self, upstash: &UpstashApi) -> Result<Option<Database>> {
        let name = desired::database_name(self.obj);
        let pending = self
            .status
            .pending_create
            .clone()
            .filter(|p| p.database_name == name);
        if pending.is_none() && !self.may_have_created_unrecorded(&name) {
            return self.create(upstash).await;
        }
        let matches: Vec<Database> = upstash
            .list_databases()
            .await?
            .into_iter()
            .filter(|d| d.database_name == name)
            .collect();
        let ours = desired::is_derived_name_of(&name, self.obj) || pending.is_some();
        match matches.len() {
            0 => {
                if let Some(p) = &pending {
                    let age = Timestamp::now().duration_since(p.started.0);
                    let grace = SignedDuration::try_from(LOST_CREATE_GRACE).unwrap_or_default();
                    if age < grace {
                        // A create whose answer was lost may not be listed yet.
                        self.conds.push(Cond::new(
                            conditions::PROVISIONED,
                            false,
                            "Provisioning",
                            format!(
                                "waiting for database {name} from an earlier create call to appear"
                            ),
                        ));
                        self.requeue = Some(Duration::from_secs(5));
                        return Ok(None);
                    }
                }
                self.create(upstash).await
            }
            1 if ours => {
                let id = &matches[0].database_id;
                let Some(db) = upstash.get_database(id).await? else {
                    return Ok(None);
                };
                self.status.pending_create = None;
                self.status.database_id = Some(db.database_id.clone());
                self.init_rotation_clock(&db);
                let message = format!(
                    "found database {} ({}) created by an earlier attempt",
                    db.database_name, db.database_id
                );
                self.event(EventType::Normal, "Provisioned", "Create", &message);
                self.provisioned("Provisioned", message);
                Ok(Some(db))
            }
            1 => {
                self.conds.push(Cond::new(
                    conditions::PROVISIONED,
                    false,
                    "NameTaken",
                    format!(
                        "an Upstash database named {name} already exists and this CacheInstance did not create it; set spec.adopt.byName: true to manage it, or choose another spec.databaseName"
                    ),
                ));
                Ok(None)
            }
            n => {
                let ids: Vec<&str> = matches.iter().map(|d| d.database_id.as_str()).collect();
                self.conds.push(Cond::new(
                    conditions::PROVISIONED,
                    false,
                    "AmbiguousDatabase",
                    format!(
                        "{n} Upstash databases are named {name} ({}); delete the extra ones or adopt one with spec.adopt.databaseId",
                        ids.join(", ")
                    ),
                ));
                Ok(None)
            }
        }
    }

    /// Whether a database named `name` may exist although the API server records no create
    /// attempt, so that Upstash must be listed before creating. Every create is recorded in
    /// `status.pendingCreate` first, so for a derived name (which carries this object's uid)
    /// that takes a status lost after the fact; only objects older than
    /// [`UNRECORDED_CREATE_AGE`] are checked for it. A name the user chose may belong to any
    /// database of the account and is always checked.
    fn may_have_created_unrecorded(&self, name: &str) -> bool {
        if !desired::is_derived_name_of(name, self.obj) {
            return true;
        }
        let age = self
            .obj
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| Timestamp::now().duration_since(t.0));
        let limit = SignedDuration::try_from(UNRECORDED_CREATE_AGE).unwrap_or_default();
        age.is_none_or(|a| a >= limit)
    }

    async fn create(&mut self, upstash: &UpstashApi) -> Result<Option<Database>> {
        let request = desired::create_request(self.obj);
        // Record the attempt first, so a restart after a lost answer recognises the database.
        self.status.pending_create = Some(PendingCreate {
            database_name: request.database_name.clone(),
            started: Time(Timestamp::now()),
        });
        self.conds.push(Cond::new(
            conditions::PROVISIONED,
            false,
            "Provisioning",
            format!("creating database {}", request.database_name),
        ));
        self.write_status().await?;
        self.conds.clear_type(conditions::PROVISIONED);
        match upstash.create_database(&request).await {
            Ok(db) => {
                self.status.pending_create = None;
                self.status.database_id = Some(db.database_id.clone());
                self.init_rotation_clock(&db);
                let message = format!(
                    "created database {} ({}) in {}",
                    db.database_name, db.database_id, request.primary_region
                );
                self.event(EventType::Normal, "Provisioned", "Create", &message);
                self.provisioned("Provisioned", message);
                if db.has_credentials() {
                    Ok(Some(db))
                } else {
                    Ok(upstash.get_database(&db.database_id).await?)
                }
            }
            Err(e) => {
                if !e.is_retryable() {
                    // Refused: nothing was created.
                    self.status.pending_create = None;
                }
                Err(e.into())
            }
        }
    }

    async fn sync_settings(&mut self, upstash: &UpstashApi, db: &mut Database) -> Result<()> {
        let changes = desired::changes(self.obj, db);
        if changes.is_empty() {
            self.conds.push(Cond::new(
                conditions::SYNCED,
                true,
                "Synced",
                "the database's settings match the spec",
            ));
            return Ok(());
        }
        let id = db.database_id.clone();
        for change in &changes {
            match change {
                Change::ReadRegions(r) => upstash.update_regions(&id, r).await?,
                Change::Plan(p) => upstash.change_plan(&id, p.as_str()).await?,
                Change::Budget(b) => upstash.update_budget(&id, *b).await?,
                Change::Eviction(e) => upstash.set_eviction(&id, *e).await?,
                Change::AutoUpgrade(a) => upstash.set_auto_upgrade(&id, *a).await?,
                Change::ProdPack(p) => upstash.set_prod_pack(&id, *p).await?,
                Change::AllowedIps(ips) => upstash.update_allowlist(&id, ips).await?,
                Change::DailyBackup(d) => upstash.set_daily_backup(&id, *d).await?,
            }
            change.apply_to(db);
        }
        let fields: Vec<&str> = changes.iter().map(Change::field).collect();
        // Spec unchanged since the last successful pass: someone changed the database itself.
        let drift = self.obj.status.as_ref().and_then(|s| s.observed_generation)
            == self.obj.metadata.generation
            && self
                .obj
                .status
                .as_ref()
                .and_then(|s| s.database_id.as_ref())
                .is_some();
        if drift {
            self.event(
                EventType::Normal,
                "DriftCorrected",
                "Update",
                &format!(
                    "set {} back to the spec after a change made outside Kubernetes",
                    fields.join(", ")
                ),
            );
        } else {
            self.event(
                EventType::Normal,
                "Updated",
                "Update",
                &format!("updated {}", fields.join(", ")),
            );
        }
        self.conds.push(Cond::new(
            conditions::SYNCED,
            true,
            "Synced",
            "the database's settings match the spec",
        ));
        Ok(())
    }

    /// Takes the requested backup and performs the requested restore, each once per request id;
    /// the outcome goes to `status.backup` / `status.restore` and an Event.
    async fn run_requests(&mut self, upstash: &UpstashApi, db: &Database) -> Result<()> {
        let id = db.database_id.as_str();
        let unserved = |wanted: Option<&str>, served: Option<&RequestResult>| {
            wanted.is_some_and(|w| served.is_none_or(|r| r.request_id != w))
        };
        if unserved(
            self.obj.spec.backup.as_ref().map(|r| r.request_id.as_str()),
            self.status.backup.as_ref(),
        ) || unserved(
            self.obj
                .spec
                .restore
                .as_ref()
                .map(|r| r.request_id.as_str()),
            self.status.restore.as_ref(),
        ) {
            self.refresh_status().await?;
        }
        if let Some(request) = self.obj.spec.backup.clone()
            && self
                .status
                .backup
                .as_ref()
                .is_none_or(|r| r.request_id != request.request_id)
        {
            let name = request.request_id.clone();
            // A backup with this name may exist already from an attempt whose answer was lost.
            let mut taken = upstash
                .list_backups(id)
                .await?
                .into_iter()
                .find(|b| b.name == name);
            if taken.is_none() {
                match upstash.create_backup(id, &name).await {
                    Ok(()) => {
                        taken = upstash
                            .list_backups(id)
                            .await?
                            .into_iter()
                            .find(|b| b.name == name)
                    }
                    Err(e) if !e.is_retryable() => {
                        let message = format!("backup {name} failed: {e}");
                        self.event(EventType::Warning, "BackupFailed", "Backup", &message);
                        self.status.backup = Some(request_result(
                            &request.request_id,
                            false,
                            None,
                            Some(name),
                            message,
                        ));
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let Some(backup) = taken else {
                return Err(UpstashError::Decode(format!(
                    "backup {name} was taken but is not listed"
                ))
                .into());
            };
            let message = format!("took backup {name} ({})", backup.backup_id);
            self.event(EventType::Normal, "BackupTaken", "Backup", &message);
            self.status.backup = Some(request_result(
                &request.request_id,
                true,
                Some(backup.backup_id),
                Some(name),
                message,
            ));
        }
        if let Some(request) = self.obj.spec.restore.clone()
            && self
                .status
                .restore
                .as_ref()
                .is_none_or(|r| r.request_id != request.request_id)
        {
            let backups = upstash.list_backups(id).await?;
            let found = match (&request.backup_id, &request.backup_name) {
                (Some(bid), _) => backups.into_iter().find(|b| &b.backup_id == bid),
                (None, Some(name)) => backups.into_iter().find(|b| &b.name == name),
                (None, None) => None,
            };
            let wanted = request
                .backup_id
                .clone()
                .or(request.backup_name.clone())
                .unwrap_or_default();
            let Some(backup) = found else {
                let message = format!(
                    "restore {}: no backup {wanted} exists for database {id}",
                    request.request_id
                );
                self.event(EventType::Warning, "RestoreFailed", "Restore", &message);
                self.status.restore = Some(request_result(
                    &request.request_id,
                    false,
                    None,
                    Some(wanted),
                    message,
                ));
                return Ok(());
            };
            match upstash.restore_backup(id, &backup.backup_id).await {
                Ok(()) => {
                    let message = format!(
                        "restored backup {} ({}) into database {id}",
                        backup.name, backup.backup_id
                    );
                    self.event(EventType::Normal, "Restored", "Restore", &message);
                    self.status.restore = Some(request_result(
                        &request.request_id,
                        true,
                        Some(backup.backup_id),
                        Some(backup.name),
                        message,
                    ));
                }
                Err(e) if !e.is_retryable() => {
                    let message = format!("restore of backup {} failed: {e}", backup.name);
                    self.event(EventType::Warning, "RestoreFailed", "Restore", &message);
                    self.status.restore = Some(request_result(
                        &request.request_id,
                        false,
                        Some(backup.backup_id),
                        Some(backup.name),
                        message,
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Starts the rotation clock of a database this object just took charge of.
    fn init_rotation_clock(&mut self, db: &Database) {
        let request = self.rotate_request();
        let rotation = self
            .status
            .rotation
            .get_or_insert_with(RotationStatus::default);
        if rotation.last_rotation_time.is_none() {
            let created = i64::try_from(db.creation_time)
                .ok()
                .filter(|s| *s > 0)
                .and_then(|s| Timestamp::from_second(s).ok())
                .unwrap_or_else(Timestamp::now);
            rotation.last_rotation_time = Some(Time(created));
        }
        // A request made before the database existed is served by its fresh credentials.
        if let Some(request) = request {
            rotation.last_request = Some(request);
        }
    }

    fn rotate_request(&self) -> Option<String> {
        self.obj
            .annotations()
            .get(ROTATE_ANNOTATION)
            .cloned()
            .filter(|v| !v.is_empty())
    }

    /// Whether the cached status says a rotation is requested or due.
    fn rotation_due(&self) -> bool {
        let rotation = self.status.rotation.as_ref();
        let request = self.rotate_request();
        desired::rotation_plan(
            desired::rotation_every(self.obj),
            rotation
                .and_then(|r| r.last_rotation_time.as_ref())
                .map(|t| t.0),
            request.as_deref(),
            rotation.and_then(|r| r.last_request.as_deref()),
            Timestamp::now(),
        )
        .1
        .is_some()
    }

    async fn rotate_if_due(&mut self, upstash: &UpstashApi, db: &mut Database) -> Result<()> {
        if self.rotation_due() {
            // Rotating twice would cut applications off twice: confirm on the current status.
            self.refresh_status().await?;
        }
        let every = desired::rotation_every(self.obj);
        let now = Timestamp::now();
        let request = self.rotate_request();
        let rotation = self
            .status
            .rotation
            .get_or_insert_with(RotationStatus::default);
        let last = rotation
            .last_rotation_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(now);
        if rotation.last_rotation_time.is_none() {
            rotation.last_rotation_time = Some(Time(last));
        }
        let (next, due) = desired::rotation_plan(
            every,
            Some(last),
            request.as_deref(),
            rotation.last_request.as_deref(),
            now,
        );
        rotation.next_rotation_time = next.map(Time);
        let Some(due) = due else {
            if let Some(n) = next {
                let wait = n.duration_since(now).unsigned_abs();
                self.requeue = Some(self.requeue.map_or(wait, |r| r.min(wait)));
            }
            return Ok(());
        };
        let requested = due == desired::RotationDue::Requested;
        let rotated = upstash.reset_password(&db.database_id).await?;
        let fresh = if rotated.has_credentials() {
            rotated
        } else {
            upstash
                .get_database(&db.database_id)
                .await?
                .ok_or_else(|| UpstashError::NotFound {
                    message: "database not found".into(),
                })?
        };
        *db = fresh;
        let rotation = self
            .status
            .rotation
            .get_or_insert_with(RotationStatus::default);
        rotation.last_rotation_time = Some(Time(now));
        rotation.next_rotation_time = every.map(|e| Time(now + e));
        if requested {
            rotation.last_request = request;
        }
        let why = if requested {
            "on request"
        } else {
            "on schedule"
        };
        self.event(
            EventType::Normal,
            "PasswordRotated",
            "Rotate",
            &format!(
                "rotated the password and REST tokens of database {} {why}",
                db.database_id
            ),
        );
        Ok(())
    }

    fn connection_details(&self, db: &Database) -> ConnectionDetails {
        let secret = |s: &Option<SecretString>| s.clone().unwrap_or_else(|| SecretString::from(""));
        ConnectionDetails {
            database_id: db.database_id.clone(),
            database_name: db.database_name.clone(),
            endpoint: db.endpoint.clone(),
            port: if db.port == 0 { 6379 } else { db.port },
            password: secret(&db.password),
            rest_token: secret(&db.rest_token),
            read_only_rest_token: secret(&db.read_only_rest_token),
            key_prefix: self.obj.spec.key_prefix.clone().unwrap_or_default(),
        }
    }

    /// Writes the connection Secret and, if asked for, the read-only one. Returns whether both
    /// are in place.
    async fn sync_secrets(&mut self, details: &ConnectionDetails) -> Result<bool> {
        let main_name = secret::secret_name(self.obj);
        let data = match secret::connection_data(self.obj, details) {
            Ok(data) => data,
            Err(e) => {
                self.conds.push(Cond::new(
                    conditions::SECRET_READY,
                    false,
                    "TemplateError",
                    e.to_string(),
                ));
                return Ok(false);
            }
        };
        let main = secret::build_secret(self.obj, &main_name, secret::secret_type(self.obj), data);
        let mut wanted = vec![main];
        if let Some(ro_name) = secret::read_only_secret_name(self.obj) {
            wanted.push(secret::build_secret(
                self.obj,
                &ro_name,
                "Opaque",
                secret::read_only_data(details),
            ));
        }
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let mut written = Vec::new();
        for desired in &wanted {
            let name = desired.name_any();
            let existing = secrets.get_opt(&name).await?;
            match secret::ownership(existing.as_ref(), self.obj) {
                Ownership::Foreign => {
                    let message = format!(
                        "Secret {name} already exists and is not owned by this CacheInstance; it was left untouched. Delete it or set spec.secret.name to another name"
                    );
                    self.conds.push(Cond::new(
                        conditions::SECRET_READY,
                        false,
                        "SecretConflict",
                        message,
                    ));
                    return Ok(false);
                }
                Ownership::Ours
                    if existing
                        .as_ref()
                        .is_some_and(|e| secret::up_to_date(e, desired)) => {}
                ownership => {
                    let type_changed = existing.as_ref().is_some_and(|e| {
                        e.type_.as_deref().unwrap_or("Opaque")
                            != desired.type_.as_deref().unwrap_or("Opaque")
                    });
                    if ownership == Ownership::Ours && type_changed {
                        // The type of a Secret cannot change in place.
                        secrets.delete(&name, &DeleteParams::default()).await?;
                    }
                    secrets
                        .patch(
                            &name,
                            &PatchParams::apply(FIELD_MANAGER).force(),
                            &Patch::Apply(desired),
                        )
                        .await?;
                    written.push(name.clone());
                }
            }
        }
        if !written.is_empty() {
            self.event(
                EventType::Normal,
                "SecretUpdated",
                "WriteSecret",
                &format!("wrote Secret {}", written.join(", ")),
            );
        }
        self.status.binding = Some(Binding {
            name: main_name.clone(),
        });
        self.conds.push(Cond::new(
            conditions::SECRET_READY,
            true,
            "SecretWritten",
            format!("Secret {main_name} holds the connection details"),
        ));
        Ok(true)
    }

    /// Stamps the credentials' digest on each restart target's pod template, which rolls its
    /// pods whenever the credentials change. Missing workloads are reported, not fatal.
    async fn restart_workloads(&mut self, details: &ConnectionDetails) -> Result<()> {
        let Some(targets) = self
            .obj
            .spec
            .password_rotation
            .as_ref()
            .and_then(|r| r.restart.as_ref())
        else {
            return Ok(());
        };
        let fingerprint = details.fingerprint();
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: fingerprint}}}}});
        let params = PatchParams::default();
        let mut restarted = Vec::new();
        for target in targets {
            let resource = match target.kind {
                WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
                WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
                WorkloadKind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
            };
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.ctx.client.clone(), &self.namespace, &resource);
            let Some(workload) = api.get_opt(&target.name).await? else {
                tracing::debug!(kind = ?target.kind, name = %target.name, "restart target not found");
                continue;
            };
            let current = workload
                .data
                .pointer("/spec/template/metadata/annotations")
                .and_then(|a| a.get(RESTART_ANNOTATION))
                .and_then(|v| v.as_str());
            if current == Some(fingerprint.as_str()) {
                continue;
            }
            api.patch(&target.name, &params, &Patch::Merge(&patch))
                .await?;
            restarted.push(format!("{:?}/{}", target.kind, target.name));
        }
        if !restarted.is_empty() {
            self.event(
                EventType::Normal,
                "WorkloadsRestarted",
                "Restart",
                &format!(
                    "restarted {} to pick up new credentials",
                    restarted.join(", ")
                ),
            );
        }
        Ok(())
    }

    fn provisioned(&mut self, reason: &str, message: String) {
        self.conds.clear_type(conditions::PROVISIONED);
        self.conds
            .push(Cond::new(conditions::PROVISIONED, true, reason, message));
    }

    /// Sets `Ready` from the other conditions; returns whether it is True.
    fn summarise(&mut self) -> bool {
        let not_ready = self
            .conds
            .iter()
            .find(|c| c.status != Status::True && c.type_ != conditions::READY)
            .cloned();
        let ready = match not_ready {
            None if self.status.database_id.is_some() => Cond::new(
                conditions::READY,
                true,
                "Ready",
                "the database is provisioned and its Secret is written",
            ),
            None => Cond::new(
                conditions::READY,
                false,
                "Provisioning",
                "the database is being provisioned",
            ),
            Some(c) => Cond::new(conditions::READY, false, &c.reason, c.message.clone()),
        };
        let is_ready = ready.status == Status::True;
        if !is_ready && ready.reason != "Provisioning" {
            self.warn_if_new(&ready.reason, &ready.message);
        } else {
            self.ctx.reported.healthy(self.obj);
        }
        self.conds.clear_type(conditions::READY);
        self.conds.push(ready);
        self.status.observed_generation = self.obj.metadata.generation;
        is_ready
    }

    /// Turns an error into `Ready=False` (and a Warning Event when the failure is new).
    fn fail(&mut self, error: &Error) {
        let reason = match error {
            Error::Upstash(e) => match e {
                UpstashError::Unauthorized { .. } => "UpstashUnauthorized",
                UpstashError::Rejected { .. } => "UpstashRejected",
                _ => "UpstashUnavailable",
            },
            Error::Credentials(_) => "CredentialsMissing",
            Error::InvalidSpec(_) => "InvalidSpec",
            _ => "ReconcileError",
        };
        let message = error.to_string();
        self.warn_if_new(reason, &message);
        self.conds.clear_type(conditions::READY);
        self.conds
            .push(Cond::new(conditions::READY, false, reason, message));
        self.status.observed_generation = self.obj.metadata.generation;
    }

    /// A Warning Event for a failure, unless this process last reported this very failure for
    /// the object or (when it has no record) `Ready` already reports it.
    fn warn_if_new(&self, reason: &str, message: &str) {
        let new = self.ctx.reported.is_new(self.obj, reason, message, || {
            self.obj
                .status
                .as_ref()
                .and_then(|s| conditions::find(&s.conditions, conditions::READY))
                .is_some_and(|c| c.status == "False" && c.reason == reason && c.message == message)
        });
        if new {
            self.event(EventType::Warning, reason, "Reconcile", message);
        }
    }

    /// Writes the status if it changed, with server-side apply (only the fields this
    /// reconciler owns).
    async fn write_status(&mut self) -> Result<()> {
        let previous = self.obj.status.clone().unwrap_or_default();
        let merged = conditions::merge(
            &previous.conditions,
            &self.conds,
            &[],
            self.obj.metadata.generation,
            Timestamp::now(),
        );
        // Keep conditions this pass did not evaluate (for example after an early error).
        let mut own: Vec<_> = previous
            .conditions
            .iter()
            .filter(|c| {
                OWN_CONDITIONS.contains(&c.type_.as_str())
                    && !merged.iter().any(|m| m.type_ == c.type_)
            })
            .cloned()
            .collect();
        own.extend(merged);
        own.sort_by(|a, b| a.type_.cmp(&b.type_));
        let mut next = self.status.clone();
        next.conditions = own.clone();
        next.alerts = Vec::new();
        next.cost = None;
        let mut previous_own = previous.clone();
        previous_own
            .conditions
            .retain(|c| OWN_CONDITIONS.contains(&c.type_.as_str()));
        previous_own.alerts = Vec::new();
        previous_own.cost = None;
        if next == previous_own {
            return Ok(());
        }
        let body = json!({
            "apiVersion": CacheInstance::api_version(&()),
            "kind": CacheInstance::kind(&()),
            "status": next,
        });
        self.api
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        Ok(())
    }

    fn event(&self, type_: EventType, reason: &str, action: &str, note: &str) {
        self.ctx.publish(self.obj, type_, reason, action, note);
    }
}

fn request_result(
    request_id: &str,
    ok: bool,
    backup_id: Option<String>,
    backup_name: Option<String>,
    message: String,
) -> RequestResult {
    RequestResult {
        request_id: request_id.to_string(),
        result: if ok { "Succeeded" } else { "Failed" }.to_string(),
        backup_id,
        backup_name,
        message,
        time: Time(Timestamp::now()),
    }
}

/// Small helpers on the condition list being built.
trait CondList {
    fn clear_type(&mut self, type_: &str);
}

impl CondList for Vec<Cond> {
    fn clear_type(&mut self, type_: &str) {
        self.retain(|c| c.type_ != type_);
    }
}

/// Deletion: honour the deletion policy; a database that is already gone never blocks.
async fn cleanup(obj: Arc<CacheInstance>, ctx: &Context) -> Result<Action> {
    let applicable = ctx.policies.applicable(&obj);
    let policy = guardrails::deletion_policy(&obj, &applicable, ctx.config.default_deletion_policy);
    ctx.metrics
        .forget_instance(&obj.namespace().unwrap_or_default(), &obj.name_any());
    ctx.recent.forget(&obj);
    ctx.reported.forget(&obj);
    let status = obj.status.clone().unwrap_or_default();
    if policy == DeletionPolicy::Retain {
        if let Some(id) = &status.database_id {
            ctx.publish(
                obj.as_ref(),
                EventType::Normal,
                "Retained",
                "Delete",
                &format!("kept database {id} in Upstash (deletionPolicy: Retain)"),
            );
        }
        return Ok(Action::await_change());
    }
    let mut ids: Vec<String> = status.database_id.iter().cloned().collect();
    if ids.is_empty() && status.pending_create.is_none() {
        return Ok(Action::await_change());
    }
    let upstash = match ctx.credentials.bind(&ctx.upstash, &obj).await? {
        credentials::Binding::Bound(bound) => bound.api,
        credentials::Binding::AccountChanged(why) => {
            // Deleting with these credentials would answer "not found" and leave the database
            // running, and billed, in the other account: keep the finalizer until they are back.
            ctx.publish(
                obj.as_ref(),
                EventType::Warning,
                "DeletionBlocked",
                "Delete",
                &why,
            );
            return Err(Error::Credentials(why));
        }
    };
    if ids.is_empty() {
        // A create was in flight: delete what it may have left behind.
        if let Some(p) = &status.pending_create {
            ids = upstash
                .list_databases()
                .await?
                .into_iter()
                .filter(|d| d.database_name == p.database_name)
                .map(|d| d.database_id)
                .collect();
        }
    }
    for id in ids {
        if upstash.delete_database(&id).await? {
            ctx.publish(
                obj.as_ref(),
                EventType::Normal,
                "Deleted",
                "Delete",
                &format!("deleted database {id}"),
            );
        } else {
            tracing::info!(database = %id, "database already gone");
        }
    }
    Ok(Action::await_change())
}
