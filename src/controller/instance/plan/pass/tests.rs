//! The plan of a pass and the decisions that follow a step's outcome, from fixtures.

use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::{
    controller::instance::{
        fixtures::{database, instance, status},
        plan::{Lookup, ObjectView, ProvisionInput, Sighting, provision, rotation},
        validate,
    },
    crd::{ROTATE_ANNOTATION, RotationStatus},
};

fn now() -> Timestamp {
    "2026-11-01T12:00:00.750Z".parse().unwrap()
}

fn plain() -> CacheInstance {
    instance("spec: {primaryRegion: us-east-1}")
}

/// The plan of a pass over `obj` that sees `sighting`, with the object as `object` shows it.
fn plan_of(obj: &CacheInstance, sighting: Sighting, object: &ObjectView) -> Vec<Step> {
    let valid = validate::spec(obj).unwrap();
    let decision = provision(&ProvisionInput {
        obj,
        cluster_id: "test",
        valid: &valid,
        blocked: false,
        pending: object.pending.as_ref(),
        grace: Duration::from_secs(30),
        sighting: &sighting,
        now: now(),
    });
    pass(obj, decision, object, now())
}

/// The steps by name, with what decides their order.
fn names(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .map(|s| match s {
            Step::Hold { cond, .. } => format!("Hold {}", cond.reason),
            Step::Refused(_) => "Refused".into(),
            Step::Use { how, .. } => format!("Use {how:?}"),
            Step::Fetch { id, how } => format!("Fetch {id} {how:?}"),
            Step::Replace(r) => format!("Replace {} confirm={}", r.old, r.confirm),
            Step::Finalize { record, confirm } => format!(
                "Finalize record={} confirm={}",
                record.is_some(),
                confirm.as_deref().unwrap_or("-")
            ),
            Step::Create { .. } => "Create".into(),
            other => format!("{other:?}"),
        })
        .collect()
}

const AFTER: [&str; 8] = [
    "Associate",
    "Settings",
    "Requests",
    "Rotate",
    "Publish",
    "Users",
    "Remember",
    "Announce",
];

fn then(first: &[&str]) -> Vec<String> {
    first
        .iter()
        .chain(AFTER.iter())
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn a_new_instance_checks_its_secrets_records_its_create_then_creates() {
    let object = ObjectView {
        confirm: Some("12".into()),
        ..Default::default()
    };
    let steps = plan_of(&plain(), Sighting::Candidates { matches: vec![] }, &object);
    assert_eq!(
        names(&steps),
        then(&[
            "CheckSecrets",
            "Finalize record=true confirm=12",
            "Create",
            "Admit"
        ])
    );
    let (
        Step::Finalize {
            record: Some(written),
            ..
        },
        Step::Create { record, request },
    ) = (&steps[1], &steps[2])
    else {
        panic!("the record, then the create");
    };
    assert_eq!(written, record, "the call is the one on record");
    assert_eq!(record.database_name, request.database_name);
    assert_eq!(
        record.started.0,
        "2026-11-01T12:00:00Z".parse::<Timestamp>().unwrap(),
        "in whole seconds, as the annotation holds it"
    );
    assert_eq!(record.uid, plain().metadata.uid);
}

#[test]
fn a_recorded_database_needs_no_write_before_its_settings() {
    let object = ObjectView {
        status: status("databaseId: db-1"),
        has_finalizer: true,
        ..Default::default()
    };
    let sighting = Sighting::Recorded {
        id: "db-1".into(),
        lookup: Lookup::Found(Box::new(database("{}"))),
    };
    assert_eq!(
        names(&plan_of(&plain(), sighting.clone(), &object)),
        then(&["Use Recorded", "Admit"])
    );
    // Without the finalizer (an object from before it existed), it is put in place first,
    // keeping whatever record is there.
    let bare = ObjectView {
        has_finalizer: false,
        ..object
    };
    assert_eq!(
        names(&plan_of(&plain(), sighting, &bare)),
        then(&["Use Recorded", "Admit", "Finalize record=false confirm=-"])
    );
}

#[test]
fn a_database_found_by_name_is_read_then_admitted_then_finalized() {
    let obj = plain();
    let name = crate::controller::naming::database_name(&obj, "test");
    let matches = vec![crate::controller::database_index::Entry {
        id: "db-4".into(),
        name,
    }];
    let steps = plan_of(
        &obj,
        Sighting::Candidates { matches },
        &ObjectView::default(),
    );
    assert_eq!(
        names(&steps),
        then(&[
            "Fetch db-4 TookBack",
            "Admit",
            "Finalize record=false confirm=-"
        ])
    );
}

#[test]
fn a_hold_is_the_whole_plan() {
    let steps = plan_of(
        &plain(),
        Sighting::AccountChanged("another account".into()),
        &ObjectView::default(),
    );
    assert_eq!(names(&steps), ["Hold AccountChanged"]);
}

#[test]
fn a_standing_refusal_is_the_whole_plan_and_calls_nothing() {
    let object = ObjectView {
        memory: Memory {
            refusal: Some(UpstashError::Rejected {
                status: 400,
                message: "free database limit reached".into(),
            }),
            create_answered: false,
            create_over: None,
        },
        ..Default::default()
    };
    let steps = plan_of(&plain(), Sighting::Candidates { matches: vec![] }, &object);
    assert_eq!(names(&steps), ["Refused"]);
}

#[test]
fn a_gone_database_is_confirmed_on_the_api_servers_copy_announced_then_recreated() {
    let obj = instance("spec: {primaryRegion: us-east-1, onMissing: Recreate}");
    let sighting = Sighting::Recorded {
        id: "db-1".into(),
        lookup: Lookup::Missing,
    };
    let cached = ObjectView {
        status: status("databaseId: db-1"),
        has_finalizer: true,
        ..Default::default()
    };
    let steps = plan_of(&obj, sighting.clone(), &cached);
    assert_eq!(
        names(&steps),
        then(&[
            "Replace db-1 confirm=true",
            "CheckSecrets",
            "Finalize record=true confirm=-",
            "Create",
            "Admit"
        ])
    );
    let Step::Replace(replaced) = &steps[0] else {
        panic!("a replace");
    };
    assert_eq!(replaced.notice.reason, "DatabaseRecreated");
    assert_eq!(
        replaced.notice.type_,
        kube::runtime::events::EventType::Warning
    );
    assert!(replaced.notice.note.contains(ARCHIVE_NOTE));
    // Decided on the API server's copy: nothing to confirm.
    let fresh = ObjectView {
        fresh: true,
        ..cached
    };
    assert_eq!(
        names(&plan_of(&obj, sighting, &fresh))[0],
        "Replace db-1 confirm=false"
    );
}

#[test]
fn a_failed_create_is_remembered_by_what_its_error_proves() {
    let refused = UpstashError::Rejected {
        status: 400,
        message: "no".into(),
    };
    assert_eq!(
        failed_create(&refused),
        FailedCreate {
            refusal: true,
            record: RecordAfter::Drop
        }
    );
    let throttled = UpstashError::RateLimited { retry_after: None };
    assert_eq!(
        failed_create(&throttled),
        FailedCreate {
            refusal: false,
            record: RecordAfter::Drop
        }
    );
    let answered = UpstashError::Server {
        status: 500,
        message: "internal".into(),
    };
    assert_eq!(
        failed_create(&answered),
        FailedCreate {
            refusal: false,
            record: RecordAfter::DecideFromList
        }
    );
    for lost in [
        UpstashError::Server {
            status: 504,
            message: "gateway timeout".into(),
        },
        UpstashError::Timeout(Duration::from_secs(30)),
    ] {
        assert_eq!(
            failed_create(&lost),
            FailedCreate {
                refusal: false,
                record: RecordAfter::Keep
            },
            "{lost}"
        );
    }
}

#[test]
fn a_secret_conflict_holds_the_create_and_says_why_on_both_conditions() {
    let [secret, provisioned] = secret_conflict_hold("Secret orders is someone else's".into());
    assert_eq!(
        (secret.type_, secret.reason.as_str()),
        ("SecretReady", "SecretConflict")
    );
    assert_eq!(
        (provisioned.type_, provisioned.reason.as_str()),
        ("Provisioned", "SecretConflict")
    );
    assert!(provisioned.message.contains("no database is created"));
}

fn budget() -> Vec<Change> {
    vec![Change::Budget(20)]
}

#[test]
fn a_settings_change_is_announced_by_what_caused_it() {
    let obj = instance("spec: {primaryRegion: us-east-1, budget: 20}");
    let db = database("{budget: 1000}");
    let who = Some("by alice (console) from 10.0.0.1");
    let SettingsNews::Now(drift) = settings_news(&obj, How::Recorded, &db, &budget(), true, who)
    else {
        panic!("now");
    };
    assert_eq!(drift.reason, "DriftCorrected");
    assert!(drift.note.contains("back to the spec"), "{}", drift.note);
    assert!(
        drift.note.ends_with("; by alice (console) from 10.0.0.1"),
        "{}",
        drift.note
    );
    let SettingsNews::Now(update) = settings_news(&obj, How::Recorded, &db, &budget(), false, None)
    else {
        panic!("now");
    };
    assert_eq!(update.reason, "Updated");
    let SettingsNews::Now(adopted) = settings_news(&obj, How::Adopted, &db, &budget(), false, None)
    else {
        panic!("now");
    };
    assert_eq!(adopted.reason, "Adopted");
    assert!(
        adopted.note.starts_with("adopted database"),
        "{}",
        adopted.note
    );
    assert!(adopted.note.contains("to match the spec"));
    // A database created this pass is announced once, at the end.
    assert_eq!(
        settings_news(&obj, How::Created, &db, &budget(), false, None),
        SettingsNews::AtTheEnd(vec!["budget"])
    );
}

fn written(names: &[&str], removed: &[&str]) -> Published {
    Published {
        written: names.iter().map(|n| n.to_string()).collect(),
        removed: removed.iter().map(|n| n.to_string()).collect(),
    }
}

#[test]
fn a_new_database_is_announced_once_with_what_was_set_and_written() {
    let obj = plain();
    let db = database("{}");
    let news = SettingsNews::AtTheEnd(vec!["budget", "eviction"]);
    let notice = closing_notice(
        &obj,
        How::Created,
        &db,
        Some(&news),
        &written(&["orders"], &[]),
    )
    .unwrap();
    assert_eq!(notice.reason, "Provisioned");
    assert_eq!(
        notice.note,
        "created database crm-orders-1 (db-1) in us-east-1 and set budget, eviction; wrote Secret orders"
    );
    // An adoption announced before its settings calls is not announced again.
    let announced = SettingsNews::Now(Notice::normal("Adopted", "Update", "adopted"));
    assert_eq!(
        closing_notice(
            &obj,
            How::Adopted,
            &db,
            Some(&announced),
            &written(&["orders"], &[])
        ),
        None
    );
}

#[test]
fn a_recorded_databases_secrets_are_announced_only_when_written() {
    let obj = plain();
    let db = database("{}");
    assert_eq!(
        closing_notice(&obj, How::Recorded, &db, None, &written(&[], &[])),
        None
    );
    let notice = closing_notice(
        &obj,
        How::Recorded,
        &db,
        None,
        &written(&["orders-v2"], &["orders"]),
    )
    .unwrap();
    assert_eq!(notice.reason, "SecretUpdated");
    assert_eq!(
        notice.note,
        "wrote Secret orders-v2; removed Secret orders, which the spec no longer names"
    );
}

#[test]
fn a_rotation_records_its_time_the_next_one_and_the_request_it_served() {
    let mut obj = instance("spec: {primaryRegion: us-east-1, passwordRotation: {every: 24h}}");
    obj.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ROTATE_ANNOTATION.into(), "r1".into());
    let valid = validate::spec(&obj).unwrap();
    let recorded = RotationStatus {
        last_rotation_time: Some(Time("2026-10-31T00:00:00Z".parse().unwrap())),
        ..Default::default()
    };
    let at = "2026-11-01T12:00:00Z".parse().unwrap();
    let planned = rotation(&obj, &valid, Some(&recorded), at);
    assert!(planned.due.is_some());
    let record = rotation_record(&obj, valid.rotation_every, Some(&recorded), &planned, at);
    assert_eq!(record.last_rotation_time, Some(Time(at)));
    assert_eq!(
        record.next_rotation_time,
        Some(Time("2026-11-02T12:00:00Z".parse().unwrap()))
    );
    assert_eq!(record.last_request.as_deref(), Some("r1"));
    assert_eq!(record.last_request_time, Some(Time(at)));
    assert_eq!(
        rotated_notice("db-1", planned.due.unwrap()).note,
        "rotated the password and REST tokens of database db-1 on request"
    );
    // Not due: the plan's times, nothing served.
    let later = rotation(&obj, &valid, Some(&record), at);
    let kept = rotation_record(&obj, valid.rotation_every, Some(&record), &later, at);
    assert_eq!(kept.next_rotation_time, record.next_rotation_time);
    assert_eq!(kept.last_request_time, Some(Time(at)));
}

#[test]
fn restarts_are_announced_only_when_some_ran() {
    let window = Duration::from_secs(5);
    assert_eq!(restarted_notice(&[], window), None);
    let note = restarted_notice(&["Deployment/api".into()], window)
        .unwrap()
        .note;
    assert!(
        note.starts_with("restarting Deployment/api to pick up new credentials"),
        "{note}"
    );
}

#[test]
fn only_a_change_made_outside_kubernetes_is_attributed_from_the_audit_log() {
    assert!(outside_change(How::Recorded, true));
    assert!(!outside_change(How::Recorded, false));
    assert!(!outside_change(How::Created, true));
    assert!(!outside_change(How::Adopted, true));
}
