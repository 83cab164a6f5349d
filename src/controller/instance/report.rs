//! Report: the status and Events of a pass, from the plan and its outcome. Conditions go through
//! one merge ([`conditions::merge`]) and the status is written only when it differs from the
//! freshest status known, so a pass that changes nothing writes nothing.

use std::time::Duration;

use super::{
    cluster::Cluster,
    plan::{self, How, Notice, SecretsPlan},
    validate::PolicyVerdict,
};
use crate::{
    controller::{
        Context,
        conditions::{self, Cond, Status},
        desired::LiveSettings,
        memory::Topic,
    },
    crd::{Binding, CacheInstance, CacheInstanceStatus},
    error::{Error, Result},
    upstash::Database,
};
use k8s_openapi::jiff::Timestamp;

/// Condition types this reconciler writes (the monitor writes `Healthy`).
const OWN_CONDITIONS: [&str; 5] = [
    conditions::READY,
    conditions::PROVISIONED,
    conditions::SYNCED,
    conditions::SECRET_READY,
    conditions::POLICY_COMPLIANT,
];

/// The status a pass builds, and what it compares against.
pub struct Report<'a> {
    obj: &'a CacheInstance,
    /// The freshest status known when the pass started.
    previous: CacheInstanceStatus,
    /// The status being built.
    pub status: CacheInstanceStatus,
    /// Conditions set by this pass, in the order they were first set.
    conds: Vec<Cond>,
    requeue: Option<Duration>,
    observe_only: bool,
}

impl<'a> Report<'a> {
    pub fn new(obj: &'a CacheInstance) -> Self {
        let status = obj.status.clone().unwrap_or_default();
        Self {
            obj,
            previous: status.clone(),
            status,
            conds: Vec::new(),
            requeue: None,
            observe_only: false,
        }
    }

    /// Starts from `fresh`, a newer copy of the status than the cached object's.
    pub fn start_from(&mut self, fresh: &CacheInstanceStatus) {
        let policy = self.status.policy.take();
        self.previous = fresh.clone();
        self.status = fresh.clone();
        self.status.policy = policy;
    }

    /// Sets a condition, replacing one of the same type.
    pub fn set(&mut self, cond: Cond) {
        match self.conds.iter_mut().find(|c| c.type_ == cond.type_) {
            Some(c) => *c = cond,
            None => self.conds.push(cond),
        }
    }

    /// Comes back within `after` (besides the resync).
    pub fn requeue_within(&mut self, after: Duration) {
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }

    /// When to come back: the earliest requested, at most `resync`.
    pub fn requeue(&self, resync: Duration) -> Duration {
        self.requeue.map_or(resync, |r| r.min(resync))
    }

    /// The policies' verdict.
    pub fn policy(&mut self, verdict: &PolicyVerdict) {
        self.status.policy = verdict.policy.clone();
        self.set(verdict.compliance.clone());
    }

    /// The pass only observes the database.
    pub fn observe_only(&mut self) {
        self.observe_only = true;
    }

    /// Nothing to work with for now.
    pub fn hold(&mut self, cond: Cond, requeue: Option<Duration>) {
        self.set(cond);
        if let Some(r) = requeue {
            self.requeue_within(r);
        }
    }

    /// The instance works with `db` from now on.
    pub fn associate(&mut self, how: How, db: &Database, account: &str, now: Timestamp) {
        self.status.database_id = Some(db.database_id.clone());
        self.status.database_name = Some(db.database_name.clone());
        self.status.account = Some(account.to_string());
        self.status.pending_create = None;
        if how != How::Recorded {
            self.status.rotation = Some(Box::new(plan::start_clock(
                self.obj,
                self.status.rotation.take().map(|r| *r),
                db,
                now,
            )));
        }
        // The same condition on every pass, however the database came (the Event of the pass
        // that took charge of it says how), so that the next pass writes nothing.
        let reason = if self.obj.spec.adopt.is_some() {
            "Adopted"
        } else {
            "Provisioned"
        };
        self.set(Cond::new(
            conditions::PROVISIONED,
            true,
            reason,
            format!("database {} ({}) exists", db.database_name, db.database_id),
        ));
    }

    /// The live settings and state of `db`.
    pub fn live(&mut self, db: &Database) {
        let live = LiveSettings::of(db);
        let s = &mut self.status;
        s.plan = Some(live.plan);
        s.read_regions = Some(live.read_regions);
        s.budget = Some(live.budget.whole_usd());
        s.eviction = Some(live.eviction);
        s.auto_upgrade = Some(live.auto_upgrade);
        s.prod_pack = Some(live.prod_pack);
        s.allowed_ips = Some(live.allowed_ips);
        s.daily_backup = Some(live.daily_backup);
        s.endpoint = Some(db.endpoint.clone());
        s.state = Some(db.state.clone()).filter(|s| !s.is_empty());
    }

    /// The Secrets are in place (or one is someone else's).
    pub fn secrets(&mut self, plan: &SecretsPlan) {
        if let Some(conflict) = &plan.conflict {
            self.set(Cond::new(
                conditions::SECRET_READY,
                false,
                "SecretConflict",
                conflict.clone(),
            ));
            return;
        }
        self.status.binding = Some(Binding {
            name: plan.main.clone(),
        });
        self.status.read_only_secret = plan.read_only.clone().map(|name| Binding { name });
        self.set(Cond::new(
            conditions::SECRET_READY,
            true,
            "SecretWritten",
            format!("Secret {} holds the connection details", plan.main),
        ));
    }

    /// Publishes an Event about the instance.
    pub fn publish(&self, kube: &impl Cluster, notice: &Notice) {
        kube.publish(self.obj, notice);
    }

    /// One Event per new difference while only observing; a message the previous status
    /// already shows is no news either.
    pub fn drift(&self, ctx: &Context, kube: &impl Cluster, synced: &Cond) {
        if synced.reason != "Drifted" {
            ctx.memory.reported_healthy(self.obj, Topic::Drift);
            return;
        }
        let shown = || {
            conditions::find(&self.previous.conditions, conditions::SYNCED)
                .is_some_and(|c| c.reason == synced.reason && c.message == synced.message)
        };
        if ctx.memory.is_new_failure(
            self.obj,
            Topic::Drift,
            &synced.reason,
            &synced.message,
            shown,
        ) {
            self.publish(
                kube,
                &Notice::warning("Drifted", "Observe", synced.message.clone()),
            );
        }
    }

    /// Sets `Ready` from the pass's outcome; returns whether it is True. A failure is reported
    /// with a Warning Event when it is new.
    pub fn finish(&mut self, ctx: &Context, kube: &impl Cluster, error: Option<&Error>) -> bool {
        let ready = self.conclude(error);
        let is_ready = ready.status == Status::True;
        if !is_ready && ready.reason != "Provisioning" {
            self.warn_if_new(ctx, kube, Topic::Ready, &ready.reason, &ready.message);
        } else {
            ctx.memory.reported_healthy(self.obj, Topic::Ready);
        }
        self.set(ready);
        self.status.observed_generation = self.obj.metadata.generation;
        is_ready
    }

    /// The `Ready` condition of the pass: the failure, else the first condition that is not
    /// True (a drift only observed does not count), else Ready.
    fn conclude(&self, error: Option<&Error>) -> Cond {
        match error {
            Some(e) => Cond::new(
                conditions::READY,
                false,
                e.category().condition_reason(),
                e.to_string(),
            ),
            None => self.summary(),
        }
    }

    fn summary(&self) -> Cond {
        let not_ready = self.conds.iter().find(|c| {
            c.status != Status::True
                && c.type_ != conditions::READY
                && !(self.observe_only && c.type_ == conditions::SYNCED && c.reason == "Drifted")
        });
        match not_ready {
            Some(c) => Cond::new(conditions::READY, false, &c.reason, c.message.clone()),
            None if self.status.database_id.is_none() => Cond::new(
                conditions::READY,
                false,
                "Provisioning",
                "the database is being provisioned",
            ),
            None if self.observe_only => Cond::new(
                conditions::READY,
                true,
                "Ready",
                "the database exists and its Secret is written; managementPolicy is Observe, so the operator only reads it",
            ),
            None => Cond::new(
                conditions::READY,
                true,
                "Ready",
                "the database is provisioned and its Secret is written",
            ),
        }
    }

    /// A Warning Event for a failure, unless this process last reported this very failure for
    /// the object or (when it has no record) the status already reports it.
    pub fn warn_if_new(
        &self,
        ctx: &Context,
        kube: &impl Cluster,
        topic: Topic,
        reason: &str,
        message: &str,
    ) {
        let shown = || {
            conditions::find(&self.previous.conditions, conditions::READY)
                .is_some_and(|c| c.status == "False" && c.reason == reason && c.message == message)
        };
        if ctx.memory.is_new_failure(self.obj, topic, reason, message, shown) {
            kube.publish(
                self.obj,
                &Notice {
                    type_: kube::runtime::events::EventType::Warning,
                    reason: reason.to_string().into(),
                    action: "Reconcile",
                    note: message.to_string(),
                },
            );
        }
    }

    /// The status to write, or `None` when it equals the previous one (conditions this pass did
    /// not evaluate are kept; the monitor's alerts and `Healthy` condition are not this
    /// reconciler's to write).
    pub fn next_status(&self, now: Timestamp) -> Option<CacheInstanceStatus> {
        let previous = &self.previous;
        let merged = conditions::merge(
            &previous.conditions,
            &self.conds,
            &[],
            self.obj.metadata.generation,
            now,
        );
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
        next.conditions = own;
        // What is still to be made; nothing is made while only observing.
        next.pending_changes = if self.observe_only {
            Vec::new()
        } else {
            plan::preview::pending_with(self.obj, &next, now)
        };
        next.alerts = Vec::new();
        next.cost = None;
        let mut previous_own = previous.clone();
        previous_own
            .conditions
            .retain(|c| OWN_CONDITIONS.contains(&c.type_.as_str()));
        previous_own.alerts = Vec::new();
        previous_own.cost = None;
        (next != previous_own).then_some(next)
    }

    /// Writes the status if it changed, with server-side apply (only the fields this
    /// reconciler owns).
    pub async fn write(&self, kube: &impl Cluster) -> Result<()> {
        match self.next_status(Timestamp::now()) {
            Some(next) => kube.write_status(self.obj, &next).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{
        instance::{
            fixtures::{database, instance},
            plan::SettingsPlan,
        },
        secret::ConnectionDetails,
    };

    fn now() -> Timestamp {
        "2026-11-01T12:00:00Z".parse().unwrap()
    }

    /// One pass's status after working with `db` as `how`.
    fn pass<'a>(obj: &'a CacheInstance, how: How, db: &Database) -> Report<'a> {
        let mut report = Report::new(obj);
        report.set(Cond::new(
            conditions::POLICY_COMPLIANT,
            true,
            "NoPolicy",
            "no CachePolicy selects this instance",
        ));
        report.associate(how, db, "ops@example.com", now());
        report.set(plan::synced(&SettingsPlan::InLine, db));
        report.live(db);
        let view = crate::controller::instance::plan::ClusterView {
            secrets: vec![("orders".into(), None)],
            ..Default::default()
        };
        let secrets = plan::secrets(
            obj,
            &ConnectionDetails::new(obj, db),
            &Default::default(),
            &view,
        );
        report.secrets(&secrets);
        let ready = report.conclude(None);
        report.set(ready);
        report.status.observed_generation = obj.metadata.generation;
        report
    }

    #[test]
    fn the_pass_after_a_create_writes_nothing() {
        let db = database("{}");
        let mut obj = instance("spec: {primaryRegion: us-east-1}");
        let first = pass(&obj, How::Created, &db).next_status(now());
        let written = first.expect("the first pass writes the status");
        assert_eq!(written.database_id.as_deref(), Some("db-1"));
        assert_eq!(written.budget, Some(0));
        obj.status = Some(written);
        let later = "2026-11-01T12:10:00Z".parse().unwrap();
        assert_eq!(pass(&obj, How::Recorded, &db).next_status(later), None);
    }

    #[test]
    fn a_change_not_made_is_listed_once_and_goes_when_made() {
        let db = database("{}");
        let mut obj = instance("spec: {primaryRegion: us-east-1, plan: fixed_1gb}");
        // The plan call failed: the live plan stays payg.
        let written = pass(&obj, How::Created, &db).next_status(now()).unwrap();
        assert_eq!(written.pending_changes.len(), 1);
        assert_eq!(written.pending_changes[0].field, "plan");
        assert!(written.pending_changes[0].disruptive);
        obj.status = Some(written);
        let later = "2026-11-01T12:10:00Z".parse().unwrap();
        assert_eq!(
            pass(&obj, How::Recorded, &db).next_status(later),
            None,
            "the same pending change is not written again"
        );
        let mut fixed = database("{}");
        crate::controller::desired::Change::Plan(crate::crd::Plan::Fixed1Gb).apply_to(&mut fixed);
        let done = pass(&obj, How::Recorded, &fixed)
            .next_status(later)
            .unwrap();
        assert_eq!(done.pending_changes, vec![]);
    }

    #[test]
    fn observing_lists_nothing_pending() {
        let db = database("{}");
        let obj = instance(
            "spec: {primaryRegion: us-east-1, plan: fixed_1gb, managementPolicy: Observe}",
        );
        let mut report = pass(&obj, How::Recorded, &db);
        report.observe_only();
        assert_eq!(report.next_status(now()).unwrap().pending_changes, vec![]);
    }

    #[test]
    fn the_monitors_alerts_and_healthy_condition_are_not_this_reconcilers() {
        let db = database("{}");
        let mut obj = instance("spec: {primaryRegion: us-east-1}");
        let mut written = pass(&obj, How::Created, &db).next_status(now()).unwrap();
        written
            .conditions
            .push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: conditions::HEALTHY.into(),
                status: "False".into(),
                reason: "AlertsFiring".into(),
                message: "hit rate 50%".into(),
                observed_generation: Some(1),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()),
            });
        obj.status = Some(written);
        assert_eq!(pass(&obj, How::Recorded, &db).next_status(now()), None);
    }

    #[test]
    fn an_observed_drift_leaves_the_instance_ready() {
        let obj =
            instance("spec: {primaryRegion: us-east-1, managementPolicy: Observe, budget: 10}");
        let db = database("{budget: 10000}");
        let mut report = pass(&obj, How::Recorded, &db);
        report.observe_only();
        report.set(plan::synced(
            &SettingsPlan::Drifted {
                changes: vec![crate::controller::desired::Change::Budget(10)],
            },
            &db,
        ));
        let ready = report.conclude(None);
        assert_eq!(ready.status, Status::True);
        assert!(ready.message.contains("managementPolicy is Observe"));
    }

    #[test]
    fn the_first_condition_that_is_not_true_explains_ready() {
        let obj = instance("spec: {primaryRegion: us-east-1}");
        let mut report = Report::new(&obj);
        report.set(Cond::new(
            conditions::POLICY_COMPLIANT,
            false,
            "PolicyViolation",
            "spec.primaryRegion us-east-1 is not allowed",
        ));
        report.hold(
            Cond::new(conditions::PROVISIONED, false, "PolicyViolation", "blocked"),
            None,
        );
        let ready = report.conclude(None);
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (Status::False, "PolicyViolation")
        );
        assert_eq!(ready.message, "spec.primaryRegion us-east-1 is not allowed");
        let error = Error::InvalidSpec(crate::crd::validation::Problem {
            check: crate::crd::validation::Check::TemplateInvalid,
            message: "spec.secret.templates.X: bad".into(),
        });
        let failed = report.conclude(Some(&error));
        assert_eq!(failed.reason, "InvalidSpec");
        assert_eq!(failed.message, "spec.secret.templates.X: bad");
    }
}
