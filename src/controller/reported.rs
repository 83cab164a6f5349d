//! What each CacheInstance last reported with an Event, per topic (its `Ready` failure, its
//! drift from the spec in `Observe` mode, a failing cleanup), so that the Event fires once per
//! new failure or difference.
//!
//! The `Ready` condition in the object's status records the failure too, but a reconcile can
//! start from a cached copy that predates this operator's own last status write: kube-runtime
//! runs a trigger that arrived during a pass right after it, before the watch has delivered that
//! pass's status. What this process saw last is therefore the better judge; the status decides
//! only for objects this process has not reconciled yet (after a restart or a leader change).

use std::{collections::HashMap, sync::Mutex};

use kube::{ResourceExt, runtime::reflector::ObjectRef};

use crate::crd::CacheInstance;

/// What a report is about: each topic has its own last outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// The `Ready` condition's failure.
    Ready,
    /// Settings that differ from the spec while only observed.
    Drift,
    /// A cleanup that cannot finish.
    Cleanup,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Healthy,
    Failing { reason: String, message: u64 },
}

#[derive(Debug)]
struct Entry {
    uid: String,
    outcome: Outcome,
}

/// Last reported outcome per object and topic.
#[derive(Default)]
pub struct ReportedFailures {
    entries: Mutex<HashMap<(ObjectRef<CacheInstance>, Topic), Entry>>,
}

impl ReportedFailures {
    /// Records that `obj` is failing with `reason`/`message` and returns whether that is news
    /// worth a Warning Event. `status_shows_it` tells whether the object's cached status already
    /// reports exactly this failure; it is consulted only when this process has no record.
    pub fn is_new(
        &self,
        obj: &CacheInstance,
        topic: Topic,
        reason: &str,
        message: &str,
        status_shows_it: impl FnOnce() -> bool,
    ) -> bool {
        let failing = Outcome::Failing {
            reason: reason.to_string(),
            message: crate::digest::of(message),
        };
        let uid = obj.uid().unwrap_or_default();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = (super::object_key(obj), topic);
        let new = match entries.get(&key) {
            Some(entry) if entry.uid == uid => entry.outcome != failing,
            _ => !status_shows_it(),
        };
        entries.insert(
            key,
            Entry {
                uid,
                outcome: failing,
            },
        );
        new
    }

    /// Records that the last pass over `obj` found nothing wrong about `topic`: its next
    /// failure is news.
    ///
    /// Kept only where it matters, so that healthy instances cost no memory here: after a
    /// failure this process recorded, or while the cached status still shows a condition that
    /// is not True (a failure that a lagging cache could make look old). Otherwise the next
    /// failure is judged from the status, as for an object this process has not seen fail.
    pub fn healthy(&self, obj: &CacheInstance, topic: Topic) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = (super::object_key(obj), topic);
        let status_shows_a_failure = obj
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.status != "True"));
        if !entries.contains_key(&key) && !status_shows_a_failure {
            return;
        }
        entries.insert(
            key,
            Entry {
                uid: obj.uid().unwrap_or_default(),
                outcome: Outcome::Healthy,
            },
        );
    }

    /// Drops every record of a deleted object.
    pub fn forget(&self, obj: &CacheInstance) {
        let key = super::object_key(obj);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(k, _), _| *k != key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CacheInstanceSpec;

    fn instance(uid: &str) -> CacheInstance {
        let spec: CacheInstanceSpec =
            serde_json::from_value(serde_json::json!({"primaryRegion": "us-east-1"}))
                .expect("a valid spec");
        let mut obj = CacheInstance::new("cache", spec);
        obj.metadata.namespace = Some("team".into());
        obj.metadata.uid = Some(uid.into());
        obj
    }

    #[test]
    fn a_failure_is_news_once_even_when_the_status_lags() {
        let r = ReportedFailures::default();
        let obj = instance("u1");
        // Nothing known here: the status decides.
        assert!(!r.is_new(
            &obj,
            Topic::Ready,
            "UpstashUnauthorized",
            "rejected",
            || true
        ));
        let r = ReportedFailures::default();
        assert!(r.is_new(
            &obj,
            Topic::Ready,
            "UpstashUnauthorized",
            "rejected",
            || false
        ));
        // The next pass starts from a copy without that status: still not news.
        assert!(!r.is_new(
            &obj,
            Topic::Ready,
            "UpstashUnauthorized",
            "rejected",
            || false
        ));
        // Another message or reason is.
        assert!(r.is_new(
            &obj,
            Topic::Ready,
            "UpstashUnauthorized",
            "rejected again",
            || true
        ));
        assert!(r.is_new(
            &obj,
            Topic::Ready,
            "UpstashUnavailable",
            "rejected again",
            || true
        ));
    }

    #[test]
    fn recovery_makes_the_same_failure_news_again() {
        let r = ReportedFailures::default();
        let obj = instance("u1");
        assert!(
            r.is_new(&obj, Topic::Ready, "UpstashUnavailable", "timeout", || {
                false
            })
        );
        r.healthy(&obj, Topic::Ready);
        // A stale status still showing the old failure does not hide the new one.
        assert!(r.is_new(&obj, Topic::Ready, "UpstashUnavailable", "timeout", || true));
    }

    #[test]
    fn a_healthy_instance_that_never_failed_is_not_kept() {
        let r = ReportedFailures::default();
        let obj = instance("u1");
        r.healthy(&obj, Topic::Ready);
        assert!(r.entries.lock().unwrap().is_empty());
        // Its first failure is judged from the status.
        assert!(!r.is_new(&obj, Topic::Ready, "UpstashUnavailable", "timeout", || true));
        // Once it failed here, recovery is remembered.
        r.healthy(&obj, Topic::Ready);
        assert_eq!(r.entries.lock().unwrap().len(), 1);
        assert!(r.is_new(&obj, Topic::Ready, "UpstashUnavailable", "timeout", || true));
    }

    #[test]
    fn topics_are_reported_independently() {
        let r = ReportedFailures::default();
        let obj = instance("u1");
        assert!(r.is_new(&obj, Topic::Ready, "Drifted", "budget", || false));
        assert!(r.is_new(&obj, Topic::Drift, "Drifted", "budget", || false));
        assert!(!r.is_new(&obj, Topic::Drift, "Drifted", "budget", || false));
        r.healthy(&obj, Topic::Ready);
        assert!(!r.is_new(&obj, Topic::Drift, "Drifted", "budget", || false));
        r.forget(&obj);
        assert!(!r.is_new(&obj, Topic::Drift, "Drifted", "budget", || true));
    }

    #[test]
    fn a_recreated_object_of_the_same_name_starts_afresh() {
        let r = ReportedFailures::default();
        assert!(
            r.is_new(&instance("u1"), Topic::Ready, "InvalidSpec", "bad", || {
                false
            })
        );
        assert!(
            r.is_new(&instance("u2"), Topic::Ready, "InvalidSpec", "bad", || {
                false
            })
        );
        // Forgotten: the status decides again.
        r.forget(&instance("u2"));
        assert!(!r.is_new(&instance("u2"), Topic::Ready, "InvalidSpec", "bad", || true));
    }
}
