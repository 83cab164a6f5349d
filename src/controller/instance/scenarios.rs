//! Whole passes without a cluster: the pass and the cleanup as the controller runs them, with an
//! in-memory cluster ([`FakeCluster`]) and an in-memory Upstash account ([`FakeApi`]). Each
//! scenario checks the order of what the pass does on both sides: the finalizer with the create
//! record before the create call, the conditional first write of a new object, the Secrets
//! before the status, what a failed create leaves for the next pass, and a cleanup that lets the
//! object go only once its database is deleted (or kept).

use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::{
    cleanup::{self, CleanupPlan},
    cluster::Cluster,
    fake_cluster::FakeCluster,
    fixtures::instance,
    observe::{self, Account, Observed, Read, Upstash},
    plan::{Lookup, Sighting},
    run,
    validate::{self, Valid},
};
use crate::{
    controller::{
        Context, FINALIZER, context::tests::context, credential_protection as protection,
        developer_api::DeveloperApi, fake_api::FakeApi, naming,
    },
    crd::{CREATE_RECORD_ANNOTATION, CacheInstance},
    error::{Error, Result},
    upstash::UpstashError,
};

/// The index key of the fake account.
const KEY: &str = "ops";

/// The in-memory account: the object side as the pass observes it, and a simple sighting (the
/// recorded database by id, else the databases under the object's names).
struct FakeAccount {
    api: FakeApi,
}

impl Account for FakeAccount {
    type Api = FakeApi;

    async fn observe(
        &self,
        obj: &CacheInstance,
        ctx: &Context,
        kube: &impl Cluster,
        valid: &Valid,
        blocked: bool,
        read: Read,
    ) -> Result<Observed<FakeApi>> {
        let (mut seen, _) = observe::object(obj, ctx, kube, valid, blocked, read).await?;
        seen.sighting = match seen.object.status.database_id.clone() {
            Some(id) => Sighting::Recorded {
                lookup: match self.api.get_database(&id).await? {
                    Some(db) => Lookup::Found(Box::new(db)),
                    None => Lookup::Missing,
                },
                id,
            },
            None => {
                let mut names = naming::candidate_names(obj, &ctx.config.cluster_id);
                names.extend(
                    seen.object
                        .pending
                        .as_ref()
                        .map(|p| p.database_name.clone()),
                );
                let fresh_since = seen
                    .object
                    .memory
                    .create_over
                    .filter(|over| *over <= Timestamp::now());
                let matches = ctx
                    .databases
                    .lookup(KEY, &self.api, &names, fresh_since)
                    .await?;
                Sighting::Candidates { matches }
            }
        };
        seen.read_at = Some(Instant::now());
        seen.upstash = Some(Upstash {
            api: self.api.clone(),
            account: "ops@example.com".into(),
            index_key: KEY.into(),
            bound: None,
        });
        Ok(seen)
    }
}

/// A world: the operator's context, a cluster holding `obj`, an empty Upstash account.
struct World {
    ctx: Context,
    kube: FakeCluster,
    api: FakeApi,
}

impl World {
    fn new(obj: &CacheInstance) -> Self {
        let api = FakeApi::default();
        Self {
            ctx: context(),
            kube: FakeCluster::with(obj).beside(&api),
            api,
        }
    }

    /// One pass over the object as the watch shows it now.
    async fn pass(&self) -> Result<()> {
        self.pass_over(&self.kube.stored()).await
    }

    /// One pass over `obj` (a cached copy).
    async fn pass_over(&self, obj: &CacheInstance) -> Result<()> {
        let account = FakeAccount {
            api: self.api.clone(),
        };
        run(obj, &self.ctx, &self.kube, &account).await.map(|_| ())
    }

    /// The writes and the Upstash calls that change something, in the order they happened.
    fn timeline(&self) -> Vec<String> {
        self.kube.timeline(&self.api)
    }
}

/// A new CacheInstance, at resourceVersion 12 as the watch shows it.
fn new_instance() -> CacheInstance {
    instance("metadata: {resourceVersion: '12'}\nspec: {primaryRegion: us-east-1}")
}

fn database_name(obj: &CacheInstance) -> String {
    naming::database_name(obj, "test")
}

#[tokio::test]
async fn a_new_instance_records_its_create_before_the_call_and_writes_its_secret_before_its_status()
{
    let obj = new_instance();
    let world = World::new(&obj);
    world.pass_over(&obj).await.unwrap();
    let name = database_name(&obj);
    assert_eq!(
        world.timeline(),
        [
            format!("finalizer+record {name} (at 12)"),
            "upstash create".into(),
            "secret orders".into(),
            "status".into(),
        ]
    );
    assert_eq!(world.kube.events(), ["Provisioned"]);
    let stored = world.kube.stored();
    let status = stored.status.unwrap();
    assert_eq!(status.database_id.as_deref(), Some("db-1"));
    assert_eq!(
        status.binding.map(|b| b.name).as_deref(),
        Some("orders"),
        "the status names the Secret written before it"
    );
}

#[tokio::test]
async fn the_pass_after_a_create_writes_nothing_and_calls_nothing_that_changes() {
    let obj = new_instance();
    let world = World::new(&obj);
    world.pass_over(&obj).await.unwrap();
    world.kube.clear();
    let calls = world.api.mutating_calls().len();
    world.pass().await.unwrap();
    assert_eq!(world.kube.log(), Vec::<String>::new());
    assert_eq!(world.api.mutating_calls().len(), calls);
}

#[tokio::test]
async fn a_stale_copy_of_a_new_object_is_refused_at_its_first_write_and_decided_again() {
    let obj = new_instance();
    let world = World::new(&obj);
    // Someone wrote the object after the watch showed it.
    world.kube.touch();
    world.pass_over(&obj).await.unwrap();
    let name = database_name(&obj);
    assert_eq!(
        world.timeline(),
        [
            "refused finalizer+record (at 12)".to_string(),
            format!("finalizer+record {name}"),
            "upstash create".into(),
            "secret orders".into(),
            "status".into(),
        ]
    );
    assert_eq!(world.kube.gets(), 1, "one read of the API server's copy");
    assert_eq!(world.api.calls_to("create"), 1);
}

#[tokio::test]
async fn a_refused_create_drops_its_record_and_is_not_asked_again_by_the_next_pass() {
    let obj = new_instance();
    let world = World::new(&obj);
    world.api.fail_next(
        "create",
        UpstashError::Rejected {
            status: 400,
            message: "free database limit reached".into(),
        },
    );
    let e = world.pass_over(&obj).await.unwrap_err();
    assert!(matches!(e, Error::Upstash(_)), "{e}");
    let name = database_name(&obj);
    assert_eq!(
        world.timeline(),
        [
            format!("finalizer+record {name} (at 12)"),
            "upstash create".into(),
            "finalizer".into(),
            "status".into(),
        ]
    );
    let stored = world.kube.stored();
    assert!(!stored.annotations().contains_key(CREATE_RECORD_ANNOTATION));
    // The write of the pass triggers another one: it does not ask again.
    world.kube.clear();
    world.pass().await.unwrap_err();
    assert_eq!(world.api.calls_to("create"), 1);
    assert_eq!(world.kube.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_create_that_failed_with_an_answer_is_decided_from_the_list_at_once() {
    let obj = new_instance();
    let world = World::new(&obj);
    world.api.fail_next(
        "create",
        UpstashError::Server {
            status: 500,
            message: "internal error".into(),
        },
    );
    world.pass_over(&obj).await.unwrap_err();
    let stored = world.kube.stored();
    assert!(
        stored.annotations().contains_key(CREATE_RECORD_ANNOTATION),
        "the record stays: the call may have made the database"
    );
    // The list shows no database: the next pass creates again without waiting.
    world.pass().await.unwrap();
    assert_eq!(world.api.calls_to("create"), 2);
    assert_eq!(world.api.count(), 1);
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_waited_for_not_made_again() {
    let obj = new_instance();
    let world = World::new(&obj);
    world.api.lose_next_answer("create");
    world.pass_over(&obj).await.unwrap_err();
    world.pass().await.unwrap();
    assert_eq!(world.api.calls_to("create"), 1);
    let status = world.kube.stored().status.unwrap();
    let provisioned = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Provisioned")
        .unwrap();
    assert!(
        provisioned.message.contains("from an earlier create call"),
        "{}",
        provisioned.message
    );
}

#[tokio::test]
async fn a_create_never_performed_drops_its_record_and_is_made_again() {
    let obj = new_instance();
    let world = World::new(&obj);
    world
        .api
        .fail_next("create", UpstashError::RateLimited { retry_after: None });
    world.pass_over(&obj).await.unwrap_err();
    assert!(
        !world
            .kube
            .stored()
            .annotations()
            .contains_key(CREATE_RECORD_ANNOTATION)
    );
    world.pass().await.unwrap();
    assert_eq!(world.api.calls_to("create"), 2);
    assert_eq!(world.api.count(), 1);
}

#[tokio::test]
async fn a_secret_of_the_name_the_operator_does_not_own_holds_the_create() {
    let obj = new_instance();
    let world = World::new(&obj);
    world
        .kube
        .insert_secret(k8s_openapi::api::core::v1::Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("orders".into()),
                namespace: Some("crm".into()),
                ..Default::default()
            },
            ..Default::default()
        });
    world.pass_over(&obj).await.unwrap();
    assert_eq!(world.timeline(), ["status"]);
    assert_eq!(world.api.calls_to("create"), 0);
}

#[tokio::test]
async fn a_requested_rotation_writes_the_new_credentials_then_restarts_the_workloads() {
    let obj = instance(
        "metadata: {resourceVersion: '12'}\nspec: {primaryRegion: us-east-1, passwordRotation: {restart: [{kind: Deployment, name: api}]}}",
    );
    let world = World::new(&obj);
    world.kube.insert_workload("api", None);
    world.pass_over(&obj).await.unwrap();
    let mut stored = world.kube.stored();
    stored
        .annotations_mut()
        .insert(crate::crd::ROTATE_ANNOTATION.into(), "now".into());
    world.kube.clear();
    world.pass_over(&stored).await.unwrap();
    // The create (before the log was cleared), then the rotation's pass.
    assert_eq!(
        world.timeline(),
        [
            "upstash create",
            "upstash reset-password",
            "secret orders",
            "restart api",
            "status"
        ]
    );
    assert_eq!(
        world.kube.events(),
        ["PasswordRotated", "WorkloadsRestarted", "SecretUpdated"]
    );
}

#[tokio::test]
async fn a_gone_database_is_confirmed_on_the_api_servers_copy_then_announced_and_recreated() {
    let obj = new_instance();
    let world = World::new(&obj);
    world.pass_over(&obj).await.unwrap();
    let mut recreate = world.kube.stored();
    recreate.spec.on_missing = Some(crate::crd::OnMissing::Recreate);
    let old = recreate
        .status
        .as_ref()
        .unwrap()
        .database_id
        .clone()
        .unwrap();
    world.api.delete_database(&old).await.unwrap();
    world.kube.clear();
    let gets = world.kube.gets();
    world.pass_over(&recreate).await.unwrap();
    assert!(
        world.kube.gets() > gets,
        "the API server's copy is read first"
    );
    assert_eq!(
        world.kube.events(),
        ["DatabaseRecreated", "Provisioned"],
        "the Warning, then the new database's one Event"
    );
    let status = world.kube.stored().status.unwrap();
    assert_ne!(status.database_id, Some(old));
    assert_eq!(world.api.count(), 1);
}

#[tokio::test]
async fn a_change_made_in_upstash_is_set_back_and_announced_as_drift() {
    let obj =
        instance("metadata: {resourceVersion: '12'}\nspec: {primaryRegion: us-east-1, budget: 20}");
    let world = World::new(&obj);
    world.pass_over(&obj).await.unwrap();
    let id = world.kube.stored().status.unwrap().database_id.unwrap();
    world
        .api
        .edit(&id, |db| db.budget = crate::upstash::Budget::from_usd(50));
    world.kube.clear();
    world.pass().await.unwrap();
    assert_eq!(world.kube.events(), ["DriftCorrected"]);
    assert_eq!(
        world.api.mutating_calls().last().map(String::as_str),
        Some("update-budget")
    );
    assert_eq!(
        world.kube.writes(),
        Vec::<String>::new(),
        "the status already shows the spec's value"
    );
}

#[tokio::test]
async fn a_change_not_made_is_listed_in_status_once_and_cleared_when_made() {
    let obj = new_instance();
    let world = World::new(&obj);
    world.pass_over(&obj).await.unwrap();
    world.kube.edit(|o| {
        o.spec.plan = Some(crate::crd::Plan::Fixed1Gb);
        o.metadata.generation = Some(2);
    });
    world.api.fail_next(
        "change-plan",
        UpstashError::Rejected {
            status: 400,
            message: "payment method required".into(),
        },
    );
    world.kube.clear();
    world.pass().await.unwrap_err();
    assert_eq!(world.kube.writes(), ["status"]);
    let pending = world.kube.stored().status.unwrap().pending_changes;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(
        (pending[0].field.as_str(), pending[0].live.as_str()),
        ("plan", "payg")
    );
    assert_eq!(pending[0].desired, "fixed_1gb");
    assert!(pending[0].disruptive);
    // The same failure again: the status already says so.
    world.api.fail_next(
        "change-plan",
        UpstashError::Rejected {
            status: 400,
            message: "payment method required".into(),
        },
    );
    world.kube.clear();
    world.pass().await.unwrap_err();
    assert_eq!(world.kube.writes(), Vec::<String>::new());
    // Made: the list is cleared in the same status write.
    world.kube.clear();
    world.pass().await.unwrap();
    assert_eq!(world.api.calls_to("change-plan"), 3);
    assert_eq!(world.kube.writes(), ["status"]);
    assert_eq!(world.kube.stored().status.unwrap().pending_changes, vec![]);
}

/// The object, deleted, with the finalizer and database `id` recorded.
fn deleted(spec: &str, id: &str) -> CacheInstance {
    instance(&format!(
        "metadata: {{finalizers: [{FINALIZER}], deletionTimestamp: '2026-11-01T00:00:00Z'}}\nspec: {spec}\nstatus: {{databaseId: {id}, account: ops@example.com}}"
    ))
}

async fn clean_up(world: &World, obj: &CacheInstance) -> Result<()> {
    let verdict = validate::policy_verdict(obj, &[], world.ctx.config.default_deletion_policy);
    let status = obj.status.clone().unwrap_or_default();
    let pending = observe::pending_record(obj, &status);
    let decided = cleanup::plan(obj, verdict.deletion_policy, &status, pending);
    let account = matches!(decided, CleanupPlan::Delete { .. })
        .then(|| Ok((world.api.clone(), KEY.to_string())));
    cleanup::carry_out(obj, &world.ctx, &world.kube, decided, account)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_cleanup_lets_the_object_go_only_after_its_database_is_deleted() {
    let world = World::new(&new_instance());
    let id = world.api.insert_database("crm-orders-1", "us-east-1");
    let obj = deleted("{primaryRegion: us-east-1}", &id);
    world.api.fail_next(
        "delete",
        UpstashError::Server {
            status: 500,
            message: "internal error".into(),
        },
    );
    clean_up(&world, &obj).await.unwrap_err();
    assert_eq!(world.timeline(), ["upstash delete", "status"]);
    assert_eq!(world.api.count(), 1);
    clean_up(&world, &obj).await.unwrap();
    assert_eq!(
        world.timeline(),
        ["upstash delete", "status", "upstash delete", "release"]
    );
    assert_eq!(
        world.kube.events().last().map(String::as_str),
        Some("Deleted")
    );
    assert_eq!(world.api.count(), 0);
}

#[tokio::test]
async fn retain_lets_the_object_go_without_calling_upstash() {
    let world = World::new(&new_instance());
    let id = world.api.insert_database("crm-orders-1", "us-east-1");
    let obj = deleted("{primaryRegion: us-east-1, deletionPolicy: Retain}", &id);
    clean_up(&world, &obj).await.unwrap();
    assert_eq!(world.timeline(), ["release"]);
    assert_eq!(world.kube.events(), ["Retained"]);
    assert!(world.api.calls().is_empty());
}

#[tokio::test]
async fn a_database_a_create_in_flight_made_is_deleted_before_the_object_goes() {
    let world = World::new(&new_instance());
    world.api.insert_database("crm-orders-7", "us-east-1");
    let obj = instance(&format!(
        r#"
        metadata:
          finalizers: [{FINALIZER}]
          deletionTimestamp: '2026-11-01T00:00:00Z'
          annotations:
            {CREATE_RECORD_ANNOTATION}: '{{"databaseName":"crm-orders-7","started":"2026-10-01T00:00:00Z"}}'
        spec: {{primaryRegion: us-east-1}}
        "#
    ));
    clean_up(&world, &obj).await.unwrap();
    assert_eq!(world.timeline(), ["upstash delete", "release"]);
    assert_eq!(world.api.count(), 0);
}

#[tokio::test]
async fn a_protected_instance_keeps_its_database_and_waits() {
    let world = World::new(&new_instance());
    let id = world.api.insert_database("crm-orders-1", "us-east-1");
    let obj = deleted("{primaryRegion: us-east-1, deletionProtection: true}", &id);
    clean_up(&world, &obj).await.unwrap();
    assert_eq!(world.timeline(), ["status"]);
    assert_eq!(world.kube.events(), ["DeletionProtected"]);
    assert!(world.api.calls().is_empty());
    assert_eq!(world.api.count(), 1);
}

#[tokio::test]
async fn a_database_without_credentials_keeps_its_secret_and_a_lost_one_is_recovered_by_one_reset()
{
    let world = World::new(&new_instance());
    world.pass().await.unwrap();
    let id = world.kube.stored().status.unwrap().database_id.unwrap();
    // Upstash withholds the credentials (Credential Protection).
    world
        .api
        .edit(&id, |db| *db = protection::without_credentials(db));
    world.kube.clear();
    world.pass().await.unwrap();
    assert_eq!(world.kube.writes(), ["status"], "the Secret is kept");
    assert_eq!(world.api.calls_to("reset-password"), 0);
    assert_eq!(world.kube.events(), ["CredentialsProtected"]);
    let status = world.kube.stored().status.unwrap();
    assert_eq!(status.credentials_protected, Some(true));
    // The Secret is lost: one reset, then the Secret.
    let stored = world.kube.stored();
    world.kube.delete_secret(&stored, "orders").await.unwrap();
    world
        .api
        .edit(&id, |db| *db = protection::without_credentials(db));
    world.kube.clear();
    world.pass().await.unwrap();
    assert_eq!(
        world.timeline(),
        [
            "upstash create",
            "upstash reset-password",
            "secret orders",
            "status"
        ]
    );
    assert_eq!(world.kube.events(), ["CredentialsReset", "SecretUpdated"]);
    assert_eq!(world.api.calls_to("reset-password"), 1);
}

/// A window of 1h on every day, starting `offset_minutes` from now (UTC).
fn window_from_now(offset_minutes: i64, minutes: u32) -> Box<crate::crd::MaintenanceWindow> {
    let start = Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_mins(offset_minutes);
    let start = start.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC);
    Box::new(
        serde_json::from_value(serde_json::json!({
            "days": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
            "start": format!("{:02}:{:02}", start.hour(), start.minute()),
            "duration": format!("{minutes}m"),
        }))
        .unwrap(),
    )
}

#[tokio::test]
async fn a_plan_change_outside_the_window_waits_for_it_and_a_budget_change_does_not() {
    let obj = new_instance();
    let world = World::new(&obj);
    world.pass_over(&obj).await.unwrap();
    world.kube.edit(|o| {
        o.spec.plan = Some(crate::crd::Plan::Fixed1Gb);
        o.spec.budget = Some(40);
        o.spec.maintenance_window = Some(window_from_now(120, 1));
        o.metadata.generation = Some(2);
    });
    world.kube.clear();
    world.pass().await.unwrap();
    assert_eq!(world.api.calls_to("change-plan"), 0);
    assert_eq!(world.api.calls_to("update-budget"), 1, "made at once");
    assert_eq!(world.kube.events(), ["Updated", "ChangeDeferred"]);
    let status = world.kube.stored().status.unwrap();
    assert_eq!(
        status.pending_changes.len(),
        1,
        "{:?}",
        status.pending_changes
    );
    assert_eq!(status.pending_changes[0].field, "plan");
    assert_ne!(status.pending_changes[0].when, "Now");
    let synced = crate::controller::conditions::find(&status.conditions, "Synced").unwrap();
    assert_eq!(synced.reason, "WaitingForMaintenanceWindow");
    // A resync while it waits: no call, no write, no Event.
    world.kube.clear();
    world.pass().await.unwrap();
    assert_eq!(world.api.calls_to("change-plan"), 0);
    assert_eq!(world.kube.events(), Vec::<String>::new());
    assert_eq!(world.kube.writes(), Vec::<String>::new());
    // The window opens: the change is made, once.
    world.kube.edit(|o| {
        o.spec.maintenance_window = Some(window_from_now(-1, 60));
        o.metadata.generation = Some(3);
    });
    world.kube.clear();
    world.pass().await.unwrap();
    world.pass().await.unwrap();
    assert_eq!(world.api.calls_to("change-plan"), 1);
    assert_eq!(world.kube.events(), ["Updated"]);
    assert_eq!(world.kube.stored().status.unwrap().pending_changes, vec![]);
}

#[tokio::test]
async fn an_approval_makes_the_pending_change_at_once_and_only_once() {
    let obj = new_instance();
    let world = World::new(&obj);
    world.pass_over(&obj).await.unwrap();
    world.kube.edit(|o| {
        o.spec.plan = Some(crate::crd::Plan::Fixed1Gb);
        o.spec.maintenance_window = Some(window_from_now(120, 1));
        o.metadata.generation = Some(2);
    });
    world.pass().await.unwrap();
    assert_eq!(world.api.calls_to("change-plan"), 0);
    world.kube.edit(|o| {
        o.annotations_mut()
            .insert(crate::crd::APPROVE_ANNOTATION.into(), "ok-1".into());
    });
    world.kube.clear();
    world.pass().await.unwrap();
    assert_eq!(world.api.calls_to("change-plan"), 1);
    assert_eq!(world.kube.events(), ["Updated"]);
    let status = world.kube.stored().status.unwrap();
    assert_eq!(status.last_approval.as_deref(), Some("ok-1"));
    assert_eq!(status.pending_changes, vec![]);
    // The same approval does not let a later change through.
    world.kube.edit(|o| {
        o.spec.plan = Some(crate::crd::Plan::Fixed250Mb);
        o.metadata.generation = Some(3);
    });
    world.pass().await.unwrap();
    assert_eq!(world.api.calls_to("change-plan"), 1);
}
