//! The reported outcome: what an object last reported with an Event, per topic, so that the
//! Event fires once per new failure or difference.
//!
//! The `Ready` condition in the object's status records the failure too, but a pass can start
//! from a cached copy that predates this operator's own last status write: kube-runtime runs a
//! trigger that arrived during a pass right after it, before the watch has delivered that
//! pass's status. What this process saw last is therefore the better judge; the status decides
//! only for objects this process has not reported about yet (after a restart or a leader
//! change).

use super::Memory;
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

/// The last reported outcome per topic (none for most objects: no allocation then).
#[derive(Default)]
pub(super) struct Reported(Vec<(Topic, Outcome)>);

impl Reported {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn get(&self, topic: Topic) -> Option<&Outcome> {
        self.0.iter().find(|(t, _)| *t == topic).map(|(_, o)| o)
    }

    fn set(&mut self, topic: Topic, outcome: Outcome) {
        match self.0.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, o)) => *o = outcome,
            None => self.0.push((topic, outcome)),
        }
    }
}

impl Memory {
    /// Records that `obj` is failing with `reason`/`message` and returns whether that is news
    /// worth a Warning Event. `status_shows_it` tells whether the object's cached status already
    /// reports exactly this failure; it is consulted only when this process has no record.
    pub fn is_new_failure(
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
        self.update(obj, |e| {
            let new = match e.reported.get(topic) {
                Some(last) => *last != failing,
                None => !status_shows_it(),
            };
            e.reported.set(topic, failing);
            new
        })
    }

    /// Records that the last pass over `obj` found nothing wrong about `topic`: its next
    /// failure is news.
    ///
    /// Kept only where it matters, so that healthy instances cost no memory here: after a
    /// failure this process recorded, or while the cached status still shows a condition that
    /// is not True (a failure that a lagging cache could make look old). Otherwise the next
    /// failure is judged from the status, as for an object this process has not seen fail.
    pub fn reported_healthy(&self, obj: &CacheInstance, topic: Topic) {
        let status_shows_a_failure = obj
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.status != "True"));
        let recorded = self
            .get(obj, |e| e.reported.get(topic).is_some())
            .unwrap_or(false);
        if recorded || status_shows_a_failure {
            self.update(obj, |e| e.reported.set(topic, Outcome::Healthy));
        }
    }
}
