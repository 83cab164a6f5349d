//! The plan stage from fixtures: every decision a pass makes, from a CacheInstance, what
//! Upstash has and the status, written as YAML.

use k8s_openapi::jiff::Timestamp;

use super::{input::Workload, *};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    controller::{
        database_index::Entry,
        instance::{
            fixtures::{CLUSTER, database, instance, status},
            validate,
        },
        memory::{LOST_CREATE_GRACE, MIN_LOST_CREATE_GRACE},
    },
    crd::{Plan, WorkloadKind},
};
use crate::{
    controller::{desired::RotationDue, secret::ConnectionDetails},
    crd::{ROTATE_ANNOTATION, RestartTarget, RotationStatus},
};

fn now() -> Timestamp {
    "2026-11-01T12:00:00Z".parse().unwrap()
}

fn valid(obj: &CacheInstance) -> Valid {
    validate::spec(obj).expect("a valid spec")
}

fn decide(obj: &CacheInstance, sighting: Sighting) -> Provision {
    decide_with(obj, sighting, false, None)
}

fn decide_with(
    obj: &CacheInstance,
    sighting: Sighting,
    blocked: bool,
    pending: Option<&PendingCreate>,
) -> Provision {
    decide_in(obj, sighting, blocked, pending, LOST_CREATE_GRACE)
}

fn decide_in(
    obj: &CacheInstance,
    sighting: Sighting,
    blocked: bool,
    pending: Option<&PendingCreate>,
    grace: Duration,
) -> Provision {
    let valid = valid(obj);
    provision(&ProvisionInput {
        obj,
        cluster_id: CLUSTER,
        valid: &valid,
        blocked,
        pending,
        grace,
        sighting: &sighting,
        now: now(),
    })
}

fn held(p: Provision) -> Cond {
    match p {
        Provision::Hold { cond, .. } => cond,
        other => panic!("expected a hold, got {other:?}"),
    }
}

fn entry(id: &str, name: &str) -> Entry {
    Entry {
        id: id.into(),
        name: name.into(),
    }
}

fn pending(name: &str, started: &str) -> PendingCreate {
    PendingCreate {
        database_name: name.into(),
        started: Time(started.parse().unwrap()),
        uid: None,
    }
}

fn found(db: Database) -> Lookup {
    Lookup::Found(Box::new(db))
}

fn plain() -> CacheInstance {
    instance("spec: {primaryRegion: us-east-1}")
}

// Provisioning.

#[test]
fn a_new_instance_with_no_database_of_its_names_creates_one_with_the_defaults() {
    let obj = plain();
    let Provision::Create { request, replaces } =
        decide(&obj, Sighting::Candidates { matches: vec![] })
    else {
        panic!("a create");
    };
    assert_eq!(
        request.database_name,
        naming::derived_name(CLUSTER, "crm", "orders")
    );
    assert_eq!(request.plan, "payg");
    assert!(request.read_regions.is_empty());
    assert_eq!(replaces, None);
}

#[test]
fn a_recorded_database_is_reused() {
    let obj = plain();
    let p = decide(
        &obj,
        Sighting::Recorded {
            id: "db-1".into(),
            lookup: found(database("{}")),
        },
    );
    assert!(matches!(
        p,
        Provision::Use {
            how: How::Recorded,
            ..
        }
    ));
}

#[test]
fn adoption_by_id_takes_the_named_database_or_reports_it_missing() {
    let obj = instance("spec: {primaryRegion: us-east-1, adopt: {databaseId: db-7}}");
    let p = decide(
        &obj,
        Sighting::AdoptById {
            id: "db-7".into(),
            lookup: found(database("database_id: db-7")),
        },
    );
    assert!(matches!(
        p,
        Provision::Use {
            how: How::Adopted,
            ..
        }
    ));
    let cond = held(decide(
        &obj,
        Sighting::AdoptById {
            id: "db-7".into(),
            lookup: Lookup::Missing,
        },
    ));
    assert_eq!(cond.reason, "AdoptionFailed");
    assert!(cond.message.contains("db-7 does not exist"));
}

#[test]
fn adoption_by_name_takes_the_one_database_of_that_name() {
    let obj = instance(
        "spec: {primaryRegion: us-east-1, databaseName: legacy-carts, adopt: {byName: true}}",
    );
    let p = decide(
        &obj,
        Sighting::AdoptByName {
            name: "legacy-carts".into(),
            matches: vec![entry("db-3", "legacy-carts")],
        },
    );
    assert!(matches!(p, Provision::Fetch { ref id, how: How::Adopted } if id == "db-3"));
}

#[test]
fn adoption_by_name_reports_no_match_and_several_matches() {
    let obj = instance(
        "spec: {primaryRegion: us-east-1, databaseName: legacy-carts, adopt: {byName: true}}",
    );
    let none = held(decide(
        &obj,
        Sighting::AdoptByName {
            name: "legacy-carts".into(),
            matches: vec![],
        },
    ));
    assert_eq!(none.reason, "AdoptionFailed");
    assert!(
        none.message
            .contains("no Upstash database is named legacy-carts")
    );
    let two = held(decide(
        &obj,
        Sighting::AdoptByName {
            name: "legacy-carts".into(),
            matches: vec![entry("db-3", "legacy-carts"), entry("db-4", "legacy-carts")],
        },
    ));
    assert_eq!(two.reason, "AdoptionFailed");
    assert!(
        two.message
            .starts_with("2 Upstash databases are named legacy-carts")
    );
}

#[test]
fn a_chosen_name_taken_by_a_database_this_object_did_not_create_is_name_taken() {
    let obj = instance("spec: {primaryRegion: us-east-1, databaseName: legacy-sessions}");
    let cond = held(decide(
        &obj,
        Sighting::Candidates {
            matches: vec![entry("db-9", "legacy-sessions")],
        },
    ));
    assert_eq!(cond.reason, "NameTaken");
    assert!(
        cond.message.contains("spec.adopt.byName"),
        "{}",
        cond.message
    );
}

#[test]
fn a_database_under_the_derived_name_is_taken_back_by_a_new_object() {
    // Applied again after a delete with Retain, or restored without status: a new UID.
    let obj = instance(
        "metadata: {uid: 77777777-0000-4000-8000-000000000000}\nspec: {primaryRegion: us-east-1}",
    );
    let name = naming::derived_name(CLUSTER, "crm", "orders");
    let p = decide(
        &obj,
        Sighting::Candidates {
            matches: vec![entry("db-5", &name)],
        },
    );
    assert!(matches!(p, Provision::Fetch { ref id, how: How::TookBack } if id == "db-5"));
}

#[test]
fn a_database_under_the_earlier_uid_derived_name_is_still_the_objects_own() {
    let obj = plain();
    let p = decide(
        &obj,
        Sighting::Candidates {
            matches: vec![entry("db-6", "crm-orders-3f2a9c1d")],
        },
    );
    assert!(matches!(
        p,
        Provision::Fetch {
            how: How::TookBack,
            ..
        }
    ));
}

#[test]
fn two_databases_under_the_objects_names_are_ambiguous() {
    let obj = plain();
    let name = naming::derived_name(CLUSTER, "crm", "orders");
    let cond = held(decide(
        &obj,
        Sighting::Candidates {
            matches: vec![entry("db-5", &name), entry("db-6", &name)],
        },
    ));
    assert_eq!(cond.reason, "AmbiguousDatabase");
    assert!(cond.message.contains("db-5, db-6"));
}

#[test]
fn a_pending_create_that_is_listed_is_found_not_created_again() {
    let obj = instance("spec: {primaryRegion: us-east-1, databaseName: prod-cache}");
    let record = pending("prod-cache", "2026-11-01T11:59:50Z");
    let p = decide_with(
        &obj,
        Sighting::Candidates {
            matches: vec![entry("db-8", "prod-cache")],
        },
        false,
        Some(&record),
    );
    assert!(matches!(
        p,
        Provision::Fetch {
            how: How::FoundOwnCreate,
            ..
        }
    ));
}

fn decide_after(record: &PendingCreate, grace: Duration) -> Provision {
    let none_listed = Sighting::Candidates { matches: vec![] };
    decide_in(&plain(), none_listed, false, Some(record), grace)
}

#[test]
fn a_create_that_failed_with_an_answer_is_made_again_at_once_when_not_listed() {
    let name = naming::derived_name(CLUSTER, "crm", "orders");
    // One second ago, and Upstash answered (a 500): the list is authoritative.
    let record = pending(&name, "2026-11-01T11:59:59Z");
    let p = decide_after(&record, Duration::ZERO);
    assert!(matches!(p, Provision::Create { .. }), "{p:?}");
}

#[test]
fn the_wait_for_a_lost_create_follows_the_request_timeout() {
    assert_eq!(
        lost_create_grace(Duration::from_secs(3)),
        MIN_LOST_CREATE_GRACE
    );
    assert_eq!(
        lost_create_grace(Duration::from_secs(12)),
        Duration::from_secs(12)
    );
    assert_eq!(
        lost_create_grace(Duration::from_secs(120)),
        LOST_CREATE_GRACE
    );
    let name = naming::derived_name(CLUSTER, "crm", "orders");
    let grace = lost_create_grace(Duration::from_secs(3));
    // 4 s after a call whose answer was lost: one more second to wait, then look again.
    let p = decide_after(&pending(&name, "2026-11-01T11:59:56Z"), grace);
    let Provision::Hold { cond, requeue } = p else {
        panic!("waits: {p:?}");
    };
    assert_eq!(cond.reason, "Provisioning");
    assert_eq!(requeue, Some(Duration::from_secs(1)));
    // 6 s after it: past the grace, so the database is created again.
    let p = decide_after(&pending(&name, "2026-11-01T11:59:54Z"), grace);
    assert!(matches!(p, Provision::Create { .. }), "{p:?}");
}

#[test]
fn a_pending_create_not_listed_yet_is_waited_for_then_created_again() {
    let obj = plain();
    let name = naming::derived_name(CLUSTER, "crm", "orders");
    let recent = pending(&name, "2026-11-01T11:59:50Z");
    let p = decide_with(
        &obj,
        Sighting::Candidates { matches: vec![] },
        false,
        Some(&recent),
    );
    let Provision::Hold { cond, requeue } = p else {
        panic!("waits");
    };
    assert_eq!(cond.reason, "Provisioning");
    // Until the call is over: no list taken before then could rule its database out.
    assert_eq!(requeue, Some(Duration::from_secs(20)));
    let old = pending(&name, "2026-11-01T11:00:00Z");
    let p = decide_with(
        &obj,
        Sighting::Candidates { matches: vec![] },
        false,
        Some(&old),
    );
    assert!(
        matches!(p, Provision::Create { .. }),
        "after the grace: {p:?}"
    );
}

#[test]
fn a_recorded_database_that_is_gone_is_recreated() {
    let obj = plain();
    let p = decide(
        &obj,
        Sighting::Recorded {
            id: "db-1".into(),
            lookup: Lookup::Missing,
        },
    );
    assert!(matches!(p, Provision::Create { replaces: Some(ref id), .. } if id == "db-1"));
}

#[test]
fn a_gone_database_is_only_reported_when_the_spec_asks() {
    let obj = instance("spec: {primaryRegion: us-east-1, onMissing: Report}");
    let cond = held(decide(
        &obj,
        Sighting::Recorded {
            id: "db-1".into(),
            lookup: Lookup::Missing,
        },
    ));
    assert_eq!(cond.reason, "DatabaseMissing");
    assert!(cond.message.contains("30 days"), "{}", cond.message);
    assert!(cond.message.contains("keeps a backup"), "{}", cond.message);
}

#[test]
fn a_database_other_credentials_cannot_see_is_account_changed_never_recreated() {
    let obj = plain();
    let cond = held(decide(
        &obj,
        Sighting::Recorded {
            id: "db-1".into(),
            lookup: Lookup::NotVisible("database db-1 belongs to Upstash account a".into()),
        },
    ));
    assert_eq!(cond.reason, "AccountChanged");
    let cond = held(decide(
        &obj,
        Sighting::AccountChanged("another account".into()),
    ));
    assert_eq!(cond.reason, "AccountChanged");
    assert_eq!(cond.message, "another account");
}

#[test]
fn a_guardrail_violation_creates_nothing_and_recreates_nothing() {
    let obj = plain();
    let cond = held(decide_with(&obj, Sighting::NotLooked, true, None));
    assert_eq!(cond.reason, "PolicyViolation");
    let cond = held(decide_with(
        &obj,
        Sighting::Recorded {
            id: "db-1".into(),
            lookup: Lookup::Missing,
        },
        true,
        None,
    ));
    assert_eq!(cond.reason, "DatabaseMissing");
}

#[test]
fn observe_never_creates() {
    let obj = instance("spec: {primaryRegion: us-east-1, managementPolicy: Observe}");
    let cond = held(decide(&obj, Sighting::Candidates { matches: vec![] }));
    assert_eq!(cond.reason, "NotManaged");
    let cond = held(decide(
        &obj,
        Sighting::Recorded {
            id: "db-1".into(),
            lookup: Lookup::Missing,
        },
    ));
    assert_eq!(cond.reason, "DatabaseMissing");
    assert!(cond.message.contains("managementPolicy is Observe"));
}

#[test]
fn a_database_in_another_primary_region_is_not_taken() {
    let obj = plain();
    let elsewhere = database("primary_region: eu-west-1");
    for how in [How::Adopted, How::TookBack, How::FoundOwnCreate] {
        let cond = admit(&obj, how, &elsewhere).unwrap_err();
        assert_eq!(cond.reason, "AdoptionConflict");
    }
    assert!(admit(&obj, How::Recorded, &elsewhere).is_ok());
    assert!(admit(&obj, How::Adopted, &database("{}")).is_ok());
}

#[test]
fn each_new_association_has_its_event() {
    let obj = plain();
    let db = database("{database_id: db-5, database_name: crm-orders-1}");
    assert_eq!(
        association_note(&obj, How::Created, &db),
        "created database crm-orders-1 (db-5) in us-east-1"
    );
    assert!(association_note(&obj, How::TookBack, &db).contains("took back"));
    assert_eq!(How::Adopted.event_reason(), Some("Adopted"));
    assert_eq!(How::TookBack.event_reason(), Some("Provisioned"));
    assert_eq!(How::Recorded.event_reason(), None);
}

// Settings.

/// A spec setting every mutable field, and a database matching it.
fn full_spec() -> (CacheInstance, Database) {
    let obj = instance(
        r#"
        status: {databaseId: db-1, observedGeneration: 1}
        spec:
          primaryRegion: us-east-1
          readRegions: [eu-west-1]
          plan: fixed_1gb
          budget: 50
          eviction: true
          autoUpgrade: true
          prodPack: true
          allowedIPs: [10.0.0.0/8]
          dailyBackup: true
        "#,
    );
    let db = database(
        r#"
        type: paid
        db_disk_threshold: 1000000000
        read_regions: [eu-west-1]
        budget: 5000
        eviction: true
        auto_upgrade: true
        prod_pack_enabled: true
        allowed_ip_ranges: [10.0.0.0/8]
        daily_backup_enabled: true
        "#,
    );
    (obj, db)
}

fn settings_of(obj: &CacheInstance, db: &Database, how: How) -> SettingsPlan {
    let status = obj.status.clone().unwrap_or_default();
    settings(obj, &valid(obj), false, how, db, &status)
}

#[test]
fn a_database_matching_every_set_field_needs_no_call() {
    let (obj, db) = full_spec();
    assert_eq!(settings_of(&obj, &db, How::Recorded), SettingsPlan::InLine);
}

#[test]
fn drift_of_each_mutable_field_is_one_change_back_to_the_spec() {
    let (obj, base) = full_spec();
    type Edit = (&'static str, fn(&mut Database), Change);
    let edits: Vec<Edit> = vec![
        (
            "readRegions",
            |d| d.read_regions.clear(),
            Change::ReadRegions(vec!["eu-west-1".into()]),
        ),
        (
            "plan",
            |d| d.plan_type = "payg".into(),
            Change::Plan(Plan::Fixed1Gb),
        ),
        (
            "budget",
            |d| d.budget = crate::upstash::Budget::from_usd(999),
            Change::Budget(50),
        ),
        ("eviction", |d| d.eviction = false, Change::Eviction(true)),
        (
            "autoUpgrade",
            |d| d.auto_upgrade = false,
            Change::AutoUpgrade(true),
        ),
        (
            "prodPack",
            |d| d.prod_pack_enabled = false,
            Change::ProdPack(true),
        ),
        (
            "allowedIPs",
            |d| d.allowed_ip_ranges.clear(),
            Change::AllowedIps(vec!["10.0.0.0/8".into()]),
        ),
        (
            "dailyBackup",
            |d| d.daily_backup_enabled = false,
            Change::DailyBackup(true),
        ),
    ];
    for (field, edit, want) in edits {
        let mut db = base.clone();
        edit(&mut db);
        assert_eq!(
            settings_of(&obj, &db, How::Recorded),
            SettingsPlan::Apply {
                changes: vec![want.clone()],
                drift: true
            },
            "{field}"
        );
        assert_eq!(want.field(), field);
    }
}

#[test]
fn a_spec_change_is_an_update_not_drift() {
    let (mut obj, mut db) = full_spec();
    obj.metadata.generation = Some(2);
    db.budget = crate::upstash::Budget::from_usd(20);
    assert_eq!(
        settings_of(&obj, &db, How::Recorded),
        SettingsPlan::Apply {
            changes: vec![Change::Budget(50)],
            drift: false
        }
    );
}

#[test]
fn an_adopted_database_keeps_every_setting_the_spec_omits() {
    let obj = instance(
        "spec: {primaryRegion: us-east-1, deletionPolicy: Retain, adopt: {databaseId: db-1}}",
    );
    let db = database(
        r#"
        type: paid
        db_disk_threshold: 1000000000
        read_regions: [eu-west-1]
        allowed_ip_ranges: [10.0.0.0/8]
        eviction: true
        budget: 300
        "#,
    );
    assert_eq!(settings_of(&obj, &db, How::Adopted), SettingsPlan::InLine);
}

#[test]
fn observe_reports_each_difference_with_the_spec_and_the_live_value() {
    let obj = instance(
        "spec: {primaryRegion: us-east-1, managementPolicy: Observe, budget: 10, eviction: true}",
    );
    let db = database("{budget: 10000}");
    let plan = settings_of(&obj, &db, How::Recorded);
    assert_eq!(
        plan,
        SettingsPlan::Drifted {
            changes: vec![Change::Budget(10), Change::Eviction(true)]
        }
    );
    let cond = synced(&plan, &db);
    assert_eq!(
        (cond.status, cond.reason.as_str()),
        (conditions::Status::False, "Drifted")
    );
    assert!(
        cond.message
            .contains("budget (spec 10, live 100), eviction (spec true, live false)"),
        "{}",
        cond.message
    );
}

#[test]
fn guardrails_block_changes() {
    let (obj, mut db) = full_spec();
    db.budget = crate::upstash::Budget::from_usd(1);
    let status = obj.status.clone().unwrap_or_default();
    let plan = settings(&obj, &valid(&obj), true, How::Recorded, &db, &status);
    assert_eq!(plan, SettingsPlan::Blocked);
    assert_eq!(synced(&plan, &db).status, conditions::Status::Unknown);
}

#[test]
fn the_change_event_lists_old_and_new_values() {
    let (obj, mut db) = full_spec();
    db.budget = crate::upstash::Budget::from_usd(100);
    db.plan_type = "payg".into();
    let SettingsPlan::Apply { changes, .. } = settings_of(&obj, &db, How::Adopted) else {
        panic!("changes");
    };
    assert_eq!(
        changes_note(&changes, &db),
        "plan payg → fixed_1gb, budget 100 → 50"
    );
}

// Requests.

#[test]
fn backup_and_restore_run_once_per_request_id() {
    let obj = instance(
        r#"
        spec:
          primaryRegion: us-east-1
          backup: {requestId: before-migration}
          restore: {requestId: undo-1, backupName: before-migration}
        "#,
    );
    let v = valid(&obj);
    let fresh = requests(&obj, &v, &Default::default());
    assert_eq!(fresh.backup.unwrap().request_id, "before-migration");
    assert_eq!(fresh.restore.unwrap().request_id, "undo-1");
    let served = status(
        r#"
        backup: {requestId: before-migration, result: Succeeded, message: ok, time: '2026-11-01T00:00:00Z'}
        restore: {requestId: undo-1, result: Failed, message: no backup, time: '2026-11-01T00:00:00Z'}
        "#,
    );
    assert_eq!(requests(&obj, &v, &served), Requests::default());
    let observe = instance(
        "spec: {primaryRegion: us-east-1, managementPolicy: Observe, backup: {requestId: b2}}",
    );
    assert_eq!(
        requests(&observe, &valid(&observe), &Default::default()),
        Requests::default()
    );
}

// Rotation.

fn rotating(annotation: Option<&str>) -> CacheInstance {
    let mut obj = instance("spec: {primaryRegion: us-east-1, passwordRotation: {every: 24h}}");
    if let Some(a) = annotation {
        obj.annotations_mut()
            .insert(ROTATE_ANNOTATION.into(), a.into());
    }
    obj
}

fn last(at: &str, request: Option<&str>) -> RotationStatus {
    RotationStatus {
        last_rotation_time: Some(Time(at.parse().unwrap())),
        next_rotation_time: None,
        last_request: request.map(str::to_string),
        last_request_time: None,
    }
}

#[test]
fn a_rotation_is_due_when_its_interval_has_passed() {
    let obj = rotating(None);
    let plan = rotation(
        &obj,
        &valid(&obj),
        Some(&last("2026-10-31T11:00:00Z", None)),
        now(),
    );
    assert_eq!(plan.due, Some(RotationDue::Scheduled));
    assert_eq!(plan.requeue, None);
}

#[test]
fn a_rotation_not_due_comes_back_when_it_will_be() {
    let obj = rotating(None);
    let plan = rotation(
        &obj,
        &valid(&obj),
        Some(&last("2026-11-01T00:00:00Z", None)),
        now(),
    );
    assert_eq!(plan.due, None);
    assert_eq!(plan.next, Some("2026-11-02T00:00:00Z".parse().unwrap()));
    assert_eq!(plan.requeue, Some(Duration::from_secs(12 * 3600)));
}

#[test]
fn a_rotation_requested_twice_with_the_same_value_runs_once() {
    let obj = rotating(Some("2026-11-01T11:59:00Z"));
    let v = valid(&obj);
    let first = rotation(&obj, &v, Some(&last("2026-11-01T00:00:00Z", None)), now());
    assert_eq!(first.due, Some(RotationDue::Requested));
    let served = last("2026-11-01T11:59:30Z", Some("2026-11-01T11:59:00Z"));
    assert_eq!(rotation(&obj, &v, Some(&served), now()).due, None);
}

#[test]
fn requests_within_the_minimum_interval_wait_for_its_end_and_are_served_together() {
    let obj = rotating(Some("third"));
    let v = valid(&obj).with_request_floor(Duration::from_secs(300));
    // The last request was served two minutes ago.
    let mut served = last("2026-11-01T11:58:00Z", Some("first"));
    served.last_request_time = Some(Time("2026-11-01T11:58:00Z".parse().unwrap()));
    let plan = rotation(&obj, &v, Some(&served), now());
    assert_eq!(plan.due, None);
    assert_eq!(plan.next, Some("2026-11-01T12:03:00Z".parse().unwrap()));
    assert_eq!(plan.requeue, Some(Duration::from_secs(180)));
    // Once the interval is over, one rotation serves it.
    let later: Timestamp = "2026-11-01T12:03:00Z".parse().unwrap();
    assert_eq!(
        rotation(&obj, &v, Some(&served), later).due,
        Some(RotationDue::Requested)
    );
    // Without a floor, or with no request served before, it runs at once.
    assert_eq!(
        rotation(&obj, &valid(&obj), Some(&served), now()).due,
        Some(RotationDue::Requested)
    );
    let never = last("2026-11-01T11:58:00Z", None);
    assert_eq!(
        rotation(&obj, &v, Some(&never), now()).due,
        Some(RotationDue::Requested)
    );
    // A scheduled rotation due meanwhile still runs.
    let mut overdue = last("2026-10-31T11:00:00Z", Some("first"));
    overdue.last_request_time = Some(Time("2026-11-01T11:58:00Z".parse().unwrap()));
    assert_eq!(
        rotation(&obj, &v, Some(&overdue), now()).due,
        Some(RotationDue::Scheduled)
    );
}

#[test]
fn observe_never_rotates() {
    let mut obj = instance(
        "spec: {primaryRegion: us-east-1, managementPolicy: Observe, passwordRotation: {every: 1h}}",
    );
    obj.annotations_mut()
        .insert(ROTATE_ANNOTATION.into(), "now".into());
    let plan = rotation(
        &obj,
        &valid(&obj),
        Some(&last("2026-01-01T00:00:00Z", None)),
        now(),
    );
    assert_eq!((plan.due, plan.next), (None, None));
}

#[test]
fn a_new_database_starts_the_rotation_clock_and_serves_an_earlier_request() {
    let obj = rotating(Some("r1"));
    let db = database("creation_time: 1790000000");
    let clock = start_clock(&obj, None, &db, now());
    assert_eq!(
        clock.last_rotation_time.unwrap().0,
        Timestamp::from_second(1_790_000_000).unwrap()
    );
    assert_eq!(clock.last_request.as_deref(), Some("r1"));
}

#[test]
fn a_stale_status_is_confirmed_before_once_only_actions() {
    let obj = plain();
    let v = valid(&obj);
    assert!(once_only_may_be_due(
        &obj,
        &v,
        false,
        &Default::default(),
        now()
    ));
    assert!(
        !once_only_may_be_due(&obj, &v, true, &Default::default(), now()),
        "blocked"
    );
    let adopt = instance("spec: {primaryRegion: us-east-1, adopt: {databaseId: db-7}}");
    assert!(
        once_only_may_be_due(&adopt, &valid(&adopt), true, &Default::default(), now()),
        "an adoption happens once"
    );
    let recorded =
        status("{databaseId: db-1, rotation: {lastRotationTime: '2026-11-01T00:00:00Z'}}");
    assert!(!once_only_may_be_due(&obj, &v, false, &recorded, now()));
    let backup = instance("spec: {primaryRegion: us-east-1, backup: {requestId: b1}}");
    assert!(once_only_may_be_due(
        &backup,
        &valid(&backup),
        false,
        &recorded,
        now()
    ));
}

// Secrets and restarts.

fn details(obj: &CacheInstance) -> ConnectionDetails {
    ConnectionDetails::new(obj, &database("{}"))
}

/// No rendered templates.
fn none() -> std::collections::BTreeMap<String, String> {
    Default::default()
}

#[test]
fn an_absent_secret_is_written_and_an_up_to_date_one_is_not() {
    let obj = instance("spec: {primaryRegion: us-east-1, secret: {readOnly: {name: orders-ro}}}");
    let d = details(&obj);
    let view = ClusterView {
        secrets: vec![("orders".into(), None), ("orders-ro".into(), None)],
        ..Default::default()
    };
    let plan = secrets(&obj, &d, &none(), &view);
    assert_eq!(plan.writes.len(), 2);
    assert_eq!(plan.read_only.as_deref(), Some("orders-ro"));
    let written = ClusterView {
        secrets: plan
            .writes
            .iter()
            .map(|w| (w.secret.name_any(), Some(w.secret.clone())))
            .collect(),
        ..Default::default()
    };
    assert!(secrets(&obj, &d, &none(), &written).writes.is_empty());
}

#[test]
fn a_secret_someone_else_owns_is_a_conflict_and_untouched() {
    let obj = plain();
    let foreign = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("orders".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let view = ClusterView {
        secrets: vec![("orders".into(), Some(foreign))],
        stale: vec!["old".into()],
        ..Default::default()
    };
    assert!(
        secret_conflict(&obj, &view)
            .unwrap()
            .contains("Secret orders already exists"),
        "found before any database is created"
    );
    let plan = secrets(&obj, &details(&obj), &none(), &view);
    assert!(plan.writes.is_empty());
    assert!(
        plan.conflict
            .unwrap()
            .contains("not owned by this CacheInstance")
    );
    assert!(
        plan.stale.is_empty(),
        "nothing is removed while the new Secret is not written"
    );
}

#[test]
fn a_secret_changing_type_is_replaced_and_a_renamed_ones_old_secret_goes() {
    let obj = instance(
        "spec: {primaryRegion: us-east-1, secret: {name: orders-redis, presets: [ServiceBinding]}}",
    );
    let d = details(&obj);
    let plain_obj = instance("spec: {primaryRegion: us-east-1, secret: {name: orders-redis}}");
    let mut before = secrets(
        &plain_obj,
        &d,
        &none(),
        &ClusterView {
            secrets: vec![("orders-redis".into(), None)],
            ..Default::default()
        },
    );
    let old = before.writes.remove(0).secret;
    let view = ClusterView {
        secrets: vec![("orders-redis".into(), Some(old))],
        stale: vec!["orders".into()],
        ..Default::default()
    };
    let plan = secrets(&obj, &d, &none(), &view);
    assert_eq!(plan.writes.len(), 1);
    assert!(plan.writes[0].replace, "Opaque → servicebinding.io/redis");
    assert_eq!(plan.stale, ["orders"]);
}

#[test]
fn only_workloads_without_the_current_credentials_are_restarted() {
    let target = |name: &str| RestartTarget {
        kind: WorkloadKind::Deployment,
        name: name.into(),
    };
    let view = ClusterView {
        workloads: vec![
            Workload {
                target: target("fresh"),
                stamped: Some(Some("abc".into())),
            },
            Workload {
                target: target("stale"),
                stamped: Some(Some("old".into())),
            },
            Workload {
                target: target("unstamped"),
                stamped: Some(None),
            },
            Workload {
                target: target("missing"),
                stamped: None,
            },
        ],
        ..Default::default()
    };
    let names: Vec<String> = restarts(&view, "k1", "abc")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["stale", "unstamped"]);
}
