//! Cleanup, the stage pair that runs when a CacheInstance is deleted: a pure plan (keep or
//! delete the database, by the deletion and management policies) and its apply. A database that
//! is already gone never blocks a deletion; a cleanup that cannot run says so in the status,
//! with the way out (`deletionPolicy: Retain` lets the object go without calling Upstash).

use kube::{ResourceExt, runtime::controller::Action};

use super::{cluster::Cluster, observe, plan::Notice, report::Report, validate};
use crate::{
    controller::{
        Context, FINALIZER,
        change_log::{self, Why},
        claims::{Claim, Held},
        conditions::{self, Cond},
        database_index,
        developer_api::DeveloperApi,
        memory::Topic,
    },
    crd::{
        CacheInstance, CacheInstanceStatus, DeletionPolicy, ManagementPolicy, PendingCreate,
        deletion_protection,
    },
    credentials::Binding,
    error::{Error, Result},
    upstash::UpstashApi,
};

/// The way out of a cleanup that cannot run, as conditions and Events say it.
pub const WAY_OUT: &str = "To let this CacheInstance go and keep the database in Upstash, set spec.deletionPolicy: Retain";

/// What deleting the instance does.
#[derive(Debug, Clone, PartialEq)]
pub enum CleanupPlan {
    /// The finalizer is not there: nothing is left to do.
    Done,
    /// Keep the database (or there is none): let the object go without calling Upstash.
    Release { notice: Option<Notice> },
    /// Delete these databases, and whatever a create call in flight left behind, with the
    /// instance's credentials; then let the object go.
    Delete {
        ids: Vec<String>,
        pending: Option<PendingCreate>,
    },
    /// The cleanup would delete the database but `spec.deletionProtection` holds it (the
    /// admission policy did not stop the delete): the object waits, Ready False.
    Protected,
}

/// Decides what deleting `obj` does.
pub fn plan(
    obj: &CacheInstance,
    deletion_policy: DeletionPolicy,
    status: &CacheInstanceStatus,
    pending: Option<PendingCreate>,
) -> CleanupPlan {
    if !obj.finalizers().iter().any(|f| f == FINALIZER) {
        return CleanupPlan::Done;
    }
    let id = status.database_id.clone();
    let kept = |why: &str| CleanupPlan::Release {
        notice: id.as_ref().map(|id| {
            Notice::normal(
                "Retained",
                "Delete",
                format!("kept database {id} in Upstash ({why})"),
            )
        }),
    };
    if obj.spec.management_policy == Some(ManagementPolicy::Observe) {
        return kept("managementPolicy: Observe");
    }
    if deletion_policy == DeletionPolicy::Retain {
        if validate::adopted(obj) && obj.spec.deletion_policy.is_none() {
            return kept(
                "adopted: only deletionPolicy: Delete in its own spec deletes an adopted database",
            );
        }
        return kept("deletionPolicy: Retain");
    }
    // A create in flight matters only while no database is recorded.
    let pending = pending.filter(|_| id.is_none());
    if id.is_none() && pending.is_none() {
        return CleanupPlan::Release { notice: None };
    }
    if deletion_protection::holds_cleanup(obj) {
        return CleanupPlan::Protected;
    }
    CleanupPlan::Delete {
        ids: id.into_iter().collect(),
        pending,
    }
}

/// Why a delete could not run.
pub(super) enum Blocked {
    /// The credentials belong to another account: deleting with them would answer "not found"
    /// and leave the database running, and billed, in the other account.
    AccountChanged(String),
    Failed(Error),
}

/// Runs the cleanup of a deleted `obj`.
pub async fn run(obj: &CacheInstance, ctx: &Context, kube: &impl Cluster) -> Result<Action> {
    let uid = obj.uid().unwrap_or_default();
    if !uid.is_empty() && ctx.memory.cleanup_done(obj) {
        return Ok(Action::await_change());
    }
    let verdict =
        validate::policy_verdict(obj, &ctx.policies.all(), ctx.config.default_deletion_policy);
    let status = obj.status.clone().unwrap_or_default();
    let pending = observe::pending_record(obj, &status);
    let decided = plan(obj, verdict.deletion_policy, &status, pending);
    // Only a delete needs the instance's Upstash account.
    let account = match decided {
        CleanupPlan::Delete { .. } => Some(bind(obj, ctx).await),
        _ => None,
    };
    carry_out(obj, ctx, kube, decided, account).await
}

/// The Developer API of `obj`'s account and its key in the database index.
async fn bind(obj: &CacheInstance, ctx: &Context) -> Result<(UpstashApi, String), Blocked> {
    match ctx.bind(obj).await {
        Ok(Binding::Bound(bound)) => Ok((bound.api.clone(), database_index::key(&bound))),
        Ok(Binding::AccountChanged(why)) => Err(Blocked::AccountChanged(why)),
        Err(e) => Err(Blocked::Failed(e)),
    }
}

/// Carries out the cleanup plan; `account`: the Developer API a delete makes its calls with.
pub(super) async fn carry_out<A: DeveloperApi>(
    obj: &CacheInstance,
    ctx: &Context,
    kube: &impl Cluster,
    decided: CleanupPlan,
    account: Option<Result<(A, String), Blocked>>,
) -> Result<Action> {
    match decided {
        CleanupPlan::Done => return Ok(Action::await_change()),
        CleanupPlan::Protected => {
            let (reason, message) = ("DeletionProtected", deletion_protection::HELD_MESSAGE);
            let mut report = Report::new(obj);
            report.set(Cond::new(conditions::READY, false, reason, message));
            report.warn_if_new(ctx, kube, Topic::Cleanup, reason, message);
            report.write(kube).await?;
            return Ok(Action::await_change());
        }
        CleanupPlan::Release { notice } => {
            if let Some(n) = notice {
                kube.publish(obj, &n);
            }
        }
        CleanupPlan::Delete { ids, pending } => {
            let deleted = match account {
                Some(Ok((api, index_key))) => {
                    delete(obj, ctx, kube, &api, &index_key, &ids, pending.as_ref()).await
                }
                Some(Err(blocked)) => Err(blocked),
                None => Err(Blocked::Failed(Error::Credentials(
                    "no Upstash account to delete the database with".into(),
                ))),
            };
            if let Err(blocked) = deleted {
                return Err(report_blocked(obj, ctx, kube, &ids, pending.as_ref(), blocked).await);
            }
        }
    }
    // From here on this instance needs neither its database nor its Upstash credentials:
    // whatever keeps the credentials readable for the cleanup may let go of them.
    kube.release(obj).await?;
    let uid = obj.uid().unwrap_or_default();
    if !uid.is_empty() {
        ctx.memory.cleanup_finished(obj);
    }
    ctx.credentials.cleanup_finished();
    Ok(Action::await_change())
}

async fn delete(
    obj: &CacheInstance,
    ctx: &Context,
    kube: &impl Cluster,
    api: &impl DeveloperApi,
    index_key: &str,
    ids: &[String],
    pending: Option<&PendingCreate>,
) -> Result<(), Blocked> {
    let mut ids = ids.to_vec();
    if let Some(p) = pending {
        // A create was in flight: delete what it may have left behind.
        let found = ctx
            .databases
            .lookup(
                index_key,
                api,
                std::slice::from_ref(&p.database_name),
                Some(p.started.0),
            )
            .await
            .map_err(|e| Blocked::Failed(e.into()))?;
        ids.extend(found.into_iter().map(|e| e.id));
    }
    // A database another instance manages is never deleted through this one (see
    // `controller::claims`): its status may name it as a copy's would.
    let me = Claim::contender(
        obj,
        obj.status.as_ref().and_then(|s| s.database_id.as_deref()),
    );
    for id in ids {
        if let Some(held @ Held::Managed(_)) = ctx.claims.holder(&me, &id, None).await {
            let why = held.message(
                &me.key,
                &format!("database {id}"),
                ctx.config.reveal_managing_namespace,
            );
            kube.publish(
                obj,
                &Notice::normal(
                    "Retained",
                    "Delete",
                    format!("kept database {id} in Upstash: {why}"),
                ),
            );
            continue;
        }
        change_log::log_call(obj, &id, "database", &id, "deleted", Why::Spec);
        let deleted = api
            .delete_database(&id)
            .await
            .map_err(|e| Blocked::Failed(e.into()))?;
        ctx.databases.deleted(index_key, &id);
        if deleted {
            kube.publish(
                obj,
                &Notice::normal("Deleted", "Delete", format!("deleted database {id}")),
            );
        } else {
            tracing::info!(database = %id, "database already gone");
        }
    }
    Ok(())
}

/// Reports a cleanup that cannot run (condition and one Warning Event per new failure) and
/// returns the error that makes it come back.
async fn report_blocked(
    obj: &CacheInstance,
    ctx: &Context,
    kube: &impl Cluster,
    ids: &[String],
    pending: Option<&PendingCreate>,
    blocked: Blocked,
) -> Error {
    let (reason, message, error) = match blocked {
        Blocked::AccountChanged(why) => (
            "DeletionBlocked",
            format!("{why}. {WAY_OUT}"),
            Error::Credentials(why),
        ),
        Blocked::Failed(e) => {
            let what = match (ids, pending) {
                ([], Some(p)) => format!(
                    "database {} (from a create call in flight)",
                    p.database_name
                ),
                _ => format!("database {}", ids.join(", ")),
            };
            (
                "CleanupFailed",
                format!("could not delete {what}: {e}. {WAY_OUT}"),
                e,
            )
        }
    };
    let mut report = Report::new(obj);
    report.set(Cond::new(conditions::READY, false, reason, message.clone()));
    report.warn_if_new(ctx, kube, Topic::Cleanup, reason, &message);
    if let Err(e) = report.write(kube).await {
        tracing::warn!(err = %e, "could not report the failed cleanup in the status");
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::instance::fixtures::{instance, status};

    fn deleting(spec: &str) -> CacheInstance {
        instance(&format!(
            "metadata: {{finalizers: [{FINALIZER}], deletionTimestamp: '2026-11-01T00:00:00Z'}}\nspec: {spec}"
        ))
    }

    fn recorded() -> CacheInstanceStatus {
        status("{databaseId: db-1, databaseName: crm-orders-1, account: ops@example.com}")
    }

    #[test]
    fn delete_deletes_the_recorded_database() {
        let obj = deleting("{primaryRegion: us-east-1}");
        assert_eq!(
            plan(&obj, DeletionPolicy::Delete, &recorded(), None),
            CleanupPlan::Delete {
                ids: vec!["db-1".into()],
                pending: None
            }
        );
    }

    #[test]
    fn retain_lets_go_without_calling_upstash() {
        let obj = deleting("{primaryRegion: us-east-1, deletionPolicy: Retain}");
        let CleanupPlan::Release { notice: Some(n) } =
            plan(&obj, DeletionPolicy::Retain, &recorded(), None)
        else {
            panic!("Retain keeps the database");
        };
        assert_eq!(n.reason, "Retained");
        assert!(n.note.contains("deletionPolicy: Retain"));
    }

    #[test]
    fn observe_keeps_the_database_whatever_the_deletion_policy() {
        let obj = deleting(
            "{primaryRegion: us-east-1, managementPolicy: Observe, deletionPolicy: Delete}",
        );
        let CleanupPlan::Release { notice: Some(n) } =
            plan(&obj, DeletionPolicy::Delete, &recorded(), None)
        else {
            panic!("Observe keeps the database");
        };
        assert!(n.note.contains("managementPolicy: Observe"));
    }

    #[test]
    fn an_adopted_database_is_kept_unless_the_spec_says_delete() {
        let obj = deleting("{primaryRegion: us-east-1, adopt: {databaseId: db-1}}");
        let verdict = validate::policy_verdict(&obj, &[], DeletionPolicy::Delete);
        let CleanupPlan::Release { notice: Some(n) } =
            plan(&obj, verdict.deletion_policy, &recorded(), None)
        else {
            panic!("an adopted database is kept by default");
        };
        assert_eq!(n.reason, "Retained");
        assert!(n.note.contains("adopted"), "{}", n.note);
        let explicit = deleting(
            "{primaryRegion: us-east-1, adopt: {databaseId: db-1}, deletionPolicy: Delete}",
        );
        let verdict = validate::policy_verdict(&explicit, &[], DeletionPolicy::Retain);
        assert_eq!(
            plan(&explicit, verdict.deletion_policy, &recorded(), None),
            CleanupPlan::Delete {
                ids: vec!["db-1".into()],
                pending: None
            }
        );
    }

    #[test]
    fn nothing_recorded_lets_go_at_once() {
        let obj = deleting("{primaryRegion: us-east-1}");
        assert_eq!(
            plan(&obj, DeletionPolicy::Delete, &Default::default(), None),
            CleanupPlan::Release { notice: None }
        );
    }

    #[test]
    fn a_create_in_flight_is_looked_for_and_deleted() {
        let obj = deleting("{primaryRegion: us-east-1}");
        let pending = PendingCreate {
            database_name: "crm-orders-1".into(),
            started: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-01T00:00:00Z".parse().unwrap(),
            ),
            uid: None,
        };
        assert_eq!(
            plan(
                &obj,
                DeletionPolicy::Delete,
                &Default::default(),
                Some(pending.clone())
            ),
            CleanupPlan::Delete {
                ids: vec![],
                pending: Some(pending.clone())
            }
        );
        // Once a database is recorded, the record of the call no longer matters.
        assert_eq!(
            plan(&obj, DeletionPolicy::Delete, &recorded(), Some(pending)),
            CleanupPlan::Delete {
                ids: vec!["db-1".into()],
                pending: None
            }
        );
    }

    #[test]
    fn without_the_finalizer_there_is_nothing_to_do() {
        let obj = instance(
            "metadata: {deletionTimestamp: '2026-11-01T00:00:00Z'}\nspec: {primaryRegion: us-east-1}",
        );
        assert_eq!(
            plan(&obj, DeletionPolicy::Delete, &recorded(), None),
            CleanupPlan::Done
        );
    }

    #[test]
    fn deletion_protection_holds_only_a_delete() {
        let protected = deleting("{primaryRegion: us-east-1, deletionProtection: true}");
        assert_eq!(
            plan(&protected, DeletionPolicy::Delete, &recorded(), None),
            CleanupPlan::Protected
        );
        // A database kept, or none, lets the object go.
        assert!(matches!(
            plan(&protected, DeletionPolicy::Retain, &recorded(), None),
            CleanupPlan::Release { .. }
        ));
        assert_eq!(
            plan(&protected, DeletionPolicy::Delete, &status("{}"), None),
            CleanupPlan::Release { notice: None }
        );
    }
}
