use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use super::*;
use crate::{
    controller::instance::fixtures::instance as fixture,
    crd::{CREATE_RECORD_ANNOTATION, CacheInstanceStatus, PendingCreate},
    upstash::{Database, UpstashError},
};

fn memory() -> Memory {
    Memory::new(Duration::from_secs(300), Arc::new(Metrics::new()))
}

fn instance(generation: i64) -> CacheInstance {
    let mut obj = fixture("spec: {primaryRegion: us-east-1}");
    obj.metadata.generation = Some(generation);
    obj
}

fn with_uid(uid: &str) -> CacheInstance {
    let mut obj = instance(1);
    obj.metadata.uid = Some(uid.into());
    obj
}

fn database(id: &str) -> Database {
    serde_json::from_value(serde_json::json!({
        "database_id": id,
        "database_name": "crm-orders",
    }))
    .expect("a database")
}

fn rejected() -> UpstashError {
    UpstashError::Rejected {
        status: 400,
        message: "database limit reached".into(),
    }
}

fn call(name: &str, started: &str) -> PendingCreate {
    PendingCreate {
        database_name: name.into(),
        started: Time(started.parse().unwrap()),
        uid: None,
    }
}

fn ready_series(metrics: &Metrics, obj: &CacheInstance) -> bool {
    metrics.render().contains(&format!(
        "upstash_cache_ready{{namespace=\"{}\",name=\"{}\"}}",
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    ))
}

// The memory as a whole.

#[test]
fn a_gone_object_is_forgotten_whole_with_its_metric_series() {
    let metrics = Arc::new(Metrics::new());
    let memory = Memory::new(Duration::from_secs(300), metrics.clone());
    let obj = instance(1);
    let other = {
        let mut o = instance(1);
        o.metadata.name = Some("other".into());
        o
    };
    for o in [&obj, &other] {
        metrics
            .instances
            .set_ready(&o.namespace().unwrap(), &o.name_any(), false);
        memory.record_read(o, "k", database("db-1"), Instant::now());
        memory.is_new_failure(o, Topic::Ready, "InvalidSpec", "bad", || false);
        memory.create_refused(o, &rejected());
        memory.create_answered(o, &call("crm-orders-1", "2026-11-01T12:00:00Z"));
        memory.record_failure(o);
        memory.cleanup_finished(o);
    }
    assert_eq!(memory.len(), 2, "one entry per object, whatever it holds");
    assert!(ready_series(&metrics, &obj));

    memory.forget(&obj);
    assert_eq!(memory.len(), 1);
    assert!(!ready_series(&metrics, &obj), "its series goes with it");
    assert!(ready_series(&metrics, &other), "another object's stays");
    assert!(memory.reusable_read(&obj, "db-1", "k").is_none());
    assert!(memory.is_new_failure(&obj, Topic::Ready, "InvalidSpec", "bad", || false));
    assert!(memory.standing_refusal(&obj).is_none());
    assert!(!memory.create_was_answered(&obj, &call("crm-orders-1", "2026-11-01T12:00:00Z")));
    assert_eq!(memory.record_failure(&obj), 1);
    assert!(!memory.cleanup_done(&obj));
    assert!(memory.cleanup_done(&other));
}

#[test]
fn an_entry_with_nothing_in_it_is_not_kept() {
    let memory = memory();
    let obj = instance(1);
    memory.record_success(&obj);
    memory.reported_healthy(&obj, Topic::Ready);
    assert!(memory.is_empty(), "a healthy instance that never failed");
    memory.record_failure(&obj);
    assert_eq!(memory.len(), 1);
    memory.record_success(&obj);
    assert!(memory.is_empty());
    memory.record_read(&obj, "k", database("db-1"), Instant::now());
    memory.forget_read(&obj);
    assert!(memory.is_empty(), "a failure drops the last read");
}

#[test]
fn a_recreated_object_of_the_same_name_starts_afresh() {
    let memory = memory();
    let (old, new) = (with_uid("u1"), with_uid("u2"));
    memory.record_read(&old, "k", database("db-1"), Instant::now());
    memory.create_refused(&old, &rejected());
    assert_eq!(memory.record_failure(&old), 1);
    assert_eq!(memory.record_failure(&old), 2);
    memory.cleanup_finished(&old);
    assert!(memory.reusable_read(&new, "db-1", "k").is_none());
    assert!(memory.standing_refusal(&new).is_none());
    assert!(!memory.cleanup_done(&new));
    assert_eq!(memory.record_failure(&new), 1, "backoff starts over");
    assert!(
        memory.standing_refusal(&old).is_none(),
        "one object per name"
    );
}

#[test]
fn failures_count_until_a_success() {
    let memory = memory();
    let obj = instance(1);
    assert_eq!(memory.record_failure(&obj), 1);
    assert_eq!(memory.record_failure(&obj), 2);
    memory.record_success(&obj);
    assert_eq!(memory.record_failure(&obj), 1);
}

#[test]
fn a_finished_cleanup_is_remembered_until_the_object_is_gone() {
    let memory = memory();
    let obj = instance(1);
    assert!(!memory.cleanup_done(&obj));
    memory.cleanup_finished(&obj);
    assert!(memory.cleanup_done(&obj));
    memory.record_success(&obj);
    assert!(memory.cleanup_done(&obj), "other kinds leave it alone");
    memory.forget(&obj);
    assert!(!memory.cleanup_done(&obj));
}

// Last reads.

#[test]
fn reuses_a_fresh_read_of_the_same_inputs() {
    let memory = memory();
    let obj = instance(1);
    assert!(memory.reusable_read(&obj, "db-1", "k").is_none());
    memory.record_read(&obj, "k", database("db-1"), Instant::now());
    assert_eq!(
        memory.reusable_read(&obj, "db-1", "k").unwrap().database_id,
        "db-1"
    );
    assert!(
        memory.reusable_read(&obj, "db-2", "k").is_none(),
        "another database"
    );
    assert!(
        memory.reusable_read(&obj, "db-1", "other").is_none(),
        "other credentials"
    );
}

#[test]
fn a_spec_label_or_annotation_change_reads_again() {
    let memory = memory();
    memory.record_read(&instance(1), "k", database("db-1"), Instant::now());
    assert!(
        memory.reusable_read(&instance(2), "db-1", "k").is_none(),
        "generation"
    );
    let mut labelled = instance(1);
    labelled.labels_mut().insert("tier".into(), "gold".into());
    assert!(
        memory.reusable_read(&labelled, "db-1", "k").is_none(),
        "labels"
    );
    let mut annotated = instance(1);
    annotated
        .annotations_mut()
        .insert(crate::crd::ROTATE_ANNOTATION.into(), "now".into());
    assert!(
        memory.reusable_read(&annotated, "db-1", "k").is_none(),
        "annotations"
    );
    let mut pending = instance(1);
    pending
        .annotations_mut()
        .insert(CREATE_RECORD_ANNOTATION.into(), "{}".into());
    assert!(
        memory.reusable_read(&pending, "db-1", "k").is_some(),
        "the operator's own bookkeeping"
    );
    let mut replaced = instance(1);
    replaced.metadata.uid = Some("another".into());
    assert!(
        memory.reusable_read(&replaced, "db-1", "k").is_none(),
        "uid"
    );
}

#[test]
fn reads_expire_before_the_next_resync() {
    let memory = Memory::new(Duration::from_secs(10), Arc::new(Metrics::new()));
    assert_eq!(memory.read_max_age(), Duration::from_secs(8));
    let obj = instance(1);
    let old = Instant::now()
        .checked_sub(Duration::from_secs(9))
        .expect("a past instant");
    memory.record_read(&obj, "k", database("db-1"), old);
    assert!(memory.reusable_read(&obj, "db-1", "k").is_none());
    assert!(memory.peek_read(&obj, "db-1").unwrap().1 >= Duration::from_secs(9));
    assert!(memory.read_at(&obj, "db-1").is_some());
    assert!(memory.read_at(&obj, "db-2").is_none());
    let ages = memory.read_ages();
    assert_eq!(ages.len(), 1);
    assert_eq!(ages[0].0, crate::controller::memory::uid_key(&obj));
}

#[test]
fn a_cached_copy_without_the_database_just_recorded_is_behind() {
    let memory = memory();
    let cached = instance(1);
    assert!(!memory.cache_behind(&cached), "nothing recorded yet");
    memory.record_read(&cached, "k", database("db-1"), Instant::now());
    assert!(memory.cache_behind(&cached));
    let mut current = cached.clone();
    current.status = Some(CacheInstanceStatus {
        database_id: Some("db-1".into()),
        ..Default::default()
    });
    assert!(!memory.cache_behind(&current));
    // Another object of the same name (deleted and created again) is not behind.
    let mut other = cached.clone();
    other.metadata.uid = Some("1a2b".into());
    assert!(!memory.cache_behind(&other));
}

// Reported outcomes.

#[test]
fn a_failure_is_news_once_even_when_the_status_lags() {
    let obj = with_uid("u1");
    let m = memory();
    assert!(!m.is_new_failure(
        &obj,
        Topic::Ready,
        "UpstashUnauthorized",
        "rejected",
        || true
    ));
    let m = memory();
    assert!(m.is_new_failure(
        &obj,
        Topic::Ready,
        "UpstashUnauthorized",
        "rejected",
        || false
    ));
    assert!(!m.is_new_failure(
        &obj,
        Topic::Ready,
        "UpstashUnauthorized",
        "rejected",
        || false
    ));
    // Another message or reason is.
    assert!(m.is_new_failure(&obj, Topic::Ready, "UpstashUnauthorized", "again", || true));
    assert!(m.is_new_failure(&obj, Topic::Ready, "UpstashUnavailable", "again", || true));
}

#[test]
fn recovery_makes_the_same_failure_news_again() {
    let m = memory();
    let obj = with_uid("u1");
    assert!(
        m.is_new_failure(&obj, Topic::Ready, "UpstashUnavailable", "timeout", || {
            false
        })
    );
    m.reported_healthy(&obj, Topic::Ready);
    // A stale status still showing the old failure does not hide the new one.
    assert!(m.is_new_failure(&obj, Topic::Ready, "UpstashUnavailable", "timeout", || true));
}

#[test]
fn a_healthy_instance_that_never_failed_is_judged_from_its_status() {
    let m = memory();
    let obj = with_uid("u1");
    m.reported_healthy(&obj, Topic::Ready);
    assert!(m.is_empty());
    // Its first failure is judged from the status.
    assert!(!m.is_new_failure(&obj, Topic::Ready, "UpstashUnavailable", "timeout", || true));
    // Once it failed here, recovery is remembered.
    m.reported_healthy(&obj, Topic::Ready);
    assert_eq!(m.len(), 1);
    assert!(m.is_new_failure(&obj, Topic::Ready, "UpstashUnavailable", "timeout", || true));
}

#[test]
fn topics_are_reported_independently() {
    let m = memory();
    let obj = with_uid("u1");
    assert!(m.is_new_failure(&obj, Topic::Ready, "Drifted", "budget", || false));
    assert!(m.is_new_failure(&obj, Topic::Drift, "Drifted", "budget", || false));
    assert!(!m.is_new_failure(&obj, Topic::Drift, "Drifted", "budget", || false));
    m.reported_healthy(&obj, Topic::Ready);
    assert!(!m.is_new_failure(&obj, Topic::Drift, "Drifted", "budget", || false));
    m.forget(&obj);
    assert!(!m.is_new_failure(&obj, Topic::Drift, "Drifted", "budget", || true));
}

// Refused and answered creates.

#[test]
fn a_refusal_stands_for_its_pause_and_a_spec_change_ends_it() {
    let m = memory();
    let obj = instance(1);
    m.create_refused(&obj, &rejected());
    assert!(matches!(
        m.standing_refusal(&obj),
        Some(UpstashError::Rejected { .. })
    ));
    assert!(
        m.standing_refusal(&instance(2)).is_none(),
        "a new spec is tried at once"
    );
    m.forget_refusal(&obj);
    assert!(m.standing_refusal(&obj).is_none());
    assert!(m.is_empty());
}

#[test]
fn each_refusal_doubles_the_pause() {
    let m = memory();
    let obj = instance(1);
    for _ in 0..3 {
        m.create_refused(&obj, &rejected());
    }
    let entries = m.lock();
    let refused = entries
        .values()
        .next()
        .and_then(|e| e.refused_create.as_ref())
        .unwrap();
    assert_eq!(refused.count, 3);
    let left = refused.until.saturating_duration_since(Instant::now());
    assert!(
        left > Duration::from_secs(3) && left <= Duration::from_secs(4),
        "{left:?}"
    );
}

#[test]
fn only_the_same_call_counts_as_answered() {
    let m = memory();
    let obj = instance(1);
    let first = call("crm-orders-1", "2026-11-01T12:00:00Z");
    assert!(!m.create_was_answered(&obj, &first));
    m.create_answered(&obj, &first);
    assert!(m.create_was_answered(&obj, &first));
    // A later attempt (a new record) is another call.
    assert!(!m.create_was_answered(&obj, &call("crm-orders-1", "2026-11-01T12:00:09Z")));
    assert!(!m.create_was_answered(&obj, &call("crm-orders-2", "2026-11-01T12:00:00Z")));
    m.forget_answered_create(&obj);
    assert!(!m.create_was_answered(&obj, &first));
}

#[test]
fn a_call_is_over_at_its_answer_else_a_grace_after_it_started() {
    let m = memory();
    let obj = instance(1);
    let first = call("crm-orders-1", "2026-11-01T12:00:00Z");
    let grace = Duration::from_secs(5);
    assert_eq!(
        m.create_over_at(&obj, &first, grace),
        "2026-11-01T12:00:05Z".parse::<Timestamp>().unwrap()
    );
    let before = Timestamp::now();
    m.create_answered(&obj, &first);
    let over = m.create_over_at(&obj, &first, grace);
    assert!(over >= before && over <= Timestamp::now(), "{over}");
}

#[test]
fn an_entry_is_small_and_rare_kinds_are_boxed() {
    // Every instance the operator reconciled successfully keeps one entry (its last read); the
    // kinds most instances never have (a refused or answered create) are boxed.
    let size = std::mem::size_of::<Entry>();
    println!("entry: {size} bytes");
    assert!(size <= 160, "{size} bytes");
}
