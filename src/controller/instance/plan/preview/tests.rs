use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::controller::instance::fixtures::{instance, status};

fn now() -> Timestamp {
    "2026-11-02T12:00:00Z".parse().unwrap()
}

const LIVE: &str = r#"
spec: {primaryRegion: us-east-1, plan: payg, budget: 20}
status:
  databaseId: db-1
  databaseName: crm-orders-1
  plan: payg
  readRegions: [eu-west-1]
  budget: 20
  eviction: false
  autoUpgrade: false
  prodPack: false
  allowedIPs: []
  dailyBackup: false
  rotation: {lastRotationTime: "2026-11-01T00:00:00Z", nextRotationTime: "2026-12-01T00:00:00Z"}
"#;

fn with_spec(spec: &str) -> CacheInstance {
    let mut obj = instance(LIVE);
    let over = instance(&format!("spec: {spec}"));
    obj.spec = over.spec;
    obj
}

#[test]
fn a_spec_that_matches_the_live_values_has_nothing_pending() {
    assert_eq!(pending(&instance(LIVE), now()), vec![]);
    let all = with_spec(
        "{primaryRegion: us-east-1, plan: payg, budget: 20, readRegions: [eu-west-1], eviction: false, autoUpgrade: false, prodPack: false, allowedIPs: [], dailyBackup: false}",
    );
    assert_eq!(pending(&all, now()), vec![]);
}

#[test]
fn nothing_is_pending_before_the_database_is_known() {
    let obj = instance("spec: {primaryRegion: us-east-1, plan: fixed_1gb}");
    assert_eq!(pending(&obj, now()), vec![]);
}

#[test]
fn a_plan_change_is_disruptive_and_a_budget_change_is_not() {
    let obj = with_spec("{primaryRegion: us-east-1, plan: fixed_1gb, budget: 50}");
    let changes = pending(&obj, now());
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(
        changes[0],
        PendingChange {
            field: "plan".into(),
            live: "payg".into(),
            desired: "fixed_1gb".into(),
            disruptive: true,
            reason: Some(PLAN_DISRUPTS.into()),
            when: NOW.into(),
        }
    );
    assert_eq!(
        changes[1],
        PendingChange {
            field: "budget".into(),
            live: "20".into(),
            desired: "50".into(),
            disruptive: false,
            reason: None,
            when: NOW.into(),
        }
    );
}

#[test]
fn read_regions_compare_as_sets_and_their_change_is_disruptive() {
    let same = with_spec("{primaryRegion: us-east-1, readRegions: [eu-west-1, eu-west-1]}");
    assert_eq!(pending(&same, now()), vec![]);
    let more = with_spec("{primaryRegion: us-east-1, readRegions: [us-west-1, eu-west-1]}");
    let changes = pending(&more, now());
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].field, "readRegions");
    assert_eq!(changes[0].live, "[eu-west-1]");
    assert_eq!(changes[0].desired, "[eu-west-1, us-west-1]");
    assert!(changes[0].disruptive);
}

#[test]
fn allowed_ips_compare_normalised() {
    let same = with_spec("{primaryRegion: us-east-1, allowedIPs: []}");
    assert_eq!(pending(&same, now()), vec![]);
    let one = with_spec("{primaryRegion: us-east-1, allowedIPs: [10.1.2.3/8]}");
    let changes = pending(&one, now());
    assert_eq!(changes[0].field, "allowedIPs");
    assert_eq!(changes[0].desired, "[10.0.0.0/8]");
    assert!(!changes[0].disruptive);
}

#[test]
fn a_new_restore_request_is_disruptive_and_a_served_one_is_not_pending() {
    let mut obj = with_spec(
        "{primaryRegion: us-east-1, restore: {requestId: r2, backupName: nightly}, backup: {requestId: b1}}",
    );
    let changes = pending(&obj, now());
    let fields: Vec<_> = changes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["backup", "restore"]);
    assert!(!changes[0].disruptive);
    assert!(changes[1].disruptive);
    assert_eq!(changes[1].reason.as_deref(), Some(RESTORE_DISRUPTS));
    let served = status(
        r#"{restore: {requestId: r2, result: Succeeded, message: done, time: "2026-11-01T00:00:00Z"}, backup: {requestId: b1, result: Succeeded, message: done, time: "2026-11-01T00:00:00Z"}}"#,
    );
    let status = obj.status.as_mut().unwrap();
    status.restore = served.restore;
    status.backup = served.backup;
    assert_eq!(pending(&obj, now()), vec![]);
}

#[test]
fn a_due_scheduled_rotation_and_a_rotate_request_are_pending_and_disruptive() {
    let scheduled = with_spec("{primaryRegion: us-east-1, passwordRotation: {every: 720h}}");
    assert_eq!(pending(&scheduled, now()), vec![], "not due yet");
    let later: Timestamp = "2026-12-01T00:00:01Z".parse().unwrap();
    let changes = pending(&scheduled, later);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].field, "password");
    assert_eq!(changes[0].desired, "rotated (schedule)");
    assert_eq!(changes[0].reason.as_deref(), Some(ROTATION_DISRUPTS));

    let mut requested = instance(LIVE);
    requested.metadata.annotations = Some(
        [(crate::crd::ROTATE_ANNOTATION.to_string(), "t1".to_string())]
            .into_iter()
            .collect(),
    );
    let changes = pending(&requested, now());
    assert_eq!(changes[0].desired, "rotated (request t1)");
    assert!(changes[0].disruptive);
    requested
        .status
        .as_mut()
        .unwrap()
        .rotation
        .as_mut()
        .unwrap()
        .last_request = Some("t1".into());
    assert_eq!(pending(&requested, now()), vec![], "served");

    // A second request within the minimum interval waits for nextRotationTime.
    let rotation = requested
        .status
        .as_mut()
        .unwrap()
        .rotation
        .as_mut()
        .unwrap();
    rotation.last_request_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-02T11:59:00Z".parse().unwrap(),
    ));
    rotation.next_rotation_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-02T12:04:00Z".parse().unwrap(),
    ));
    requested.metadata.annotations = Some(
        [(crate::crd::ROTATE_ANNOTATION.to_string(), "t2".to_string())]
            .into_iter()
            .collect(),
    );
    let changes = pending(&requested, now());
    assert_eq!(changes[0].desired, "rotated (request t2)");
    assert_eq!(changes[0].when, "2026-11-02T12:04:00Z");
}

#[test]
fn a_manifest_is_compared_with_the_live_status_and_immutable_fields_need_a_new_object() {
    let live = instance(LIVE);
    let same = instance("spec: {primaryRegion: us-east-1, plan: payg, budget: 20}");
    assert!(against(&same, &live, None, now()).is_empty());

    let moved = instance("spec: {primaryRegion: eu-west-1, plan: fixed_1gb, budget: 20}");
    let preview = against(&moved, &live, None, now());
    assert_eq!(preview.recreate.len(), 1);
    assert_eq!(preview.recreate[0].field, "primaryRegion");
    assert_eq!(preview.recreate[0].live, "us-east-1");
    assert_eq!(preview.recreate[0].desired, "eu-west-1");
    assert_eq!(preview.changes.len(), 1);
    assert_eq!(preview.changes[0].field, "plan");

    let renamed =
        instance("spec: {primaryRegion: us-east-1, databaseName: other, plan: payg, budget: 20}");
    let preview = against(&renamed, &live, None, now());
    assert_eq!(preview.recreate[0].field, "databaseName");
    assert_eq!(preview.recreate[0].live, "crm-orders-1");
    assert_eq!(preview.recreate[0].desired, "other");
}

#[test]
fn a_manifest_with_a_closed_window_shows_when_its_disruptive_changes_are_made() {
    let live = instance(LIVE);
    // now() is Monday 2026-11-02 12:00 UTC; the window opens on Tuesday at 02:00.
    let windowed = instance(
        "spec: {primaryRegion: us-east-1, plan: fixed_1gb, budget: 50, maintenanceWindow: {days: [Tuesday], start: '02:00', duration: 1h}}",
    );
    let preview = against(&windowed, &live, None, now());
    let whens: Vec<_> = preview
        .changes
        .iter()
        .map(|c| (c.field.as_str(), c.when.as_str()))
        .collect();
    assert_eq!(whens, [("plan", "2026-11-03T02:00:00Z"), ("budget", NOW)]);
}

#[test]
fn a_manifest_without_a_window_of_its_own_waits_for_its_policies_window() {
    let live = instance(LIVE);
    let policy = instance(
        "spec: {primaryRegion: us-east-1, maintenanceWindow: {days: [Tuesday], start: '02:00', duration: 1h}}",
    );
    let policy_window = policy.spec.maintenance_window.as_deref();
    let bare = instance("spec: {primaryRegion: us-east-1, plan: fixed_1gb, budget: 20}");
    let preview = against(&bare, &live, policy_window, now());
    let whens: Vec<_> = preview
        .changes
        .iter()
        .map(|c| (c.field.as_str(), c.when.as_str()))
        .collect();
    assert_eq!(whens, [("plan", "2026-11-03T02:00:00Z")]);
    // Without the policy's window, the change is made at once.
    let at_once = against(&bare, &live, None, now());
    assert_eq!(at_once.changes[0].when, NOW);
    // The manifest's own window wins over its policies'.
    let own = instance(
        "spec: {primaryRegion: us-east-1, plan: fixed_1gb, budget: 20, maintenanceWindow: {days: [Wednesday], start: '03:00', duration: 1h}}",
    );
    let preview = against(&own, &live, policy_window, now());
    assert_eq!(preview.changes[0].when, "2026-11-04T03:00:00Z");
}
