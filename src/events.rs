//! Kubernetes Events (`events.k8s.io/v1`) about the operator's objects, from one shared
//! [`Publisher`].
//!
//! An Event that repeats (same object, type, reason and action within six minutes) is not
//! created again: the first one's `series` is counted up, as `kubectl` and kube's recorder do.
//! Written here rather than using `kube::runtime::events::Recorder` because that recorder keeps
//! every Event it published in the last six minutes, whole, and scans that cache under a write
//! lock on every publish: at 10,000 instances that was a third of the operator's heap and a
//! cost per Event that grows with the number of objects. This one keeps, per repeating key, the
//! Event's name and its series (about 100 bytes), and expires them at most once per 30 s.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event, events::v1::EventSeries},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};

pub use kube::runtime::events::{EventType, Reporter};

/// How long an Event is counted up instead of created again.
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// How often expired keys are dropped.
const EXPIRY_PASS: SignedDuration = SignedDuration::from_secs(30);

/// The longest note the API server keeps (`note` is limited to 1 kB).
const NOTE_MAX: usize = 1000;

/// What makes two Events the same one, repeated: the note too (a digest of it). `note` is
/// immutable in events.k8s.io/v1, so a repeat with another note counted up on the first Event
/// would show the first note only: a new drift, say, described by the old one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    uid: String,
    name: String,
    warning: bool,
    reason: String,
    action: String,
    note: u64,
}

impl Key {
    fn digest(&self) -> u64 {
        crate::digest::of(self)
    }
}

/// The Event published last under a key.
#[derive(Debug, Clone)]
struct Published {
    name: String,
    count: i32,
    last: Timestamp,
}

#[derive(Default)]
struct Seen {
    /// By the key's digest: the strings of a key are not kept.
    published: HashMap<u64, Published>,
    expired_at: Option<Timestamp>,
}

impl Seen {
    /// Drops keys whose Event is older than the window, at most once per [`EXPIRY_PASS`].
    fn expire(&mut self, now: Timestamp) {
        if self
            .expired_at
            .is_some_and(|at| now.duration_since(at) < EXPIRY_PASS)
        {
            return;
        }
        self.expired_at = Some(now);
        self.published
            .retain(|_, p| now.duration_since(p.last) < SERIES_WINDOW);
    }

    /// The repeat of `key`, if it is one: the Event to count up and its new count.
    fn repeat(&mut self, key: &Key, now: Timestamp) -> Option<(String, i32)> {
        self.expire(now);
        let p = self.published.get(&key.digest())?;
        (now.duration_since(p.last) < SERIES_WINDOW).then(|| (p.name.clone(), p.count + 1))
    }

    fn record(&mut self, key: Key, name: String, count: i32, now: Timestamp) {
        self.published.insert(
            key.digest(),
            Published {
                name,
                count,
                last: now,
            },
        );
    }
}

/// Publishes of keys with the same digest modulo this run one after the other.
const PUBLISH_LANES: usize = 64;

/// Publishes Events on behalf of one reporter (the operator's controller name and pod).
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    reporter: Reporter,
    seen: Arc<Mutex<Seen>>,
    /// Two publishes of the same key at once would both find no Event to count up and both
    /// create one: the publishes of a key take turns (in lanes by the key's digest, so that
    /// memory does not grow with the keys).
    lanes: Arc<[tokio::sync::Mutex<()>; PUBLISH_LANES]>,
}

impl Publisher {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            seen: Arc::default(),
            lanes: Arc::new(std::array::from_fn(|_| tokio::sync::Mutex::new(()))),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many repeating keys are kept (for tests and the bench).
    pub fn kept(&self) -> usize {
        self.seen().published.len()
    }

    /// Publishes an Event about the object `regarding`: a new Event, or the count of the same
    /// Event published less than six minutes ago raised.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) -> kube::Result<()> {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let key = Key {
            namespace: namespace.clone(),
            uid: regarding.uid.clone().unwrap_or_default(),
            name: regarding.name.clone().unwrap_or_default(),
            warning: type_ == EventType::Warning,
            reason: reason.to_string(),
            action: action.to_string(),
            note: crate::digest::of(&note),
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let lane = usize::try_from(key.digest() % PUBLISH_LANES as u64).unwrap_or_default();
        let _turn = self.lanes[lane].lock().await;
        let now = Timestamp::now();
        let repeat = self.seen().repeat(&key, now);
        if let Some((name, count)) = repeat {
            // `note` is immutable in events.k8s.io/v1: the repeat counts up the series only.
            let patch = serde_json::json!({
                "series": EventSeries { count, last_observed_time: MicroTime(now) },
            });
            match events
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.seen().record(key, name, count, now);
                    return Ok(());
                }
                // The API server dropped it (its Event TTL): a new one follows.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.event(regarding, &namespace, now, (type_, reason, action, note));
        let name = event.metadata.name.clone().unwrap_or_default();
        events.create(&PostParams::default(), &event).await?;
        self.seen().record(key, name, 1, now);
        Ok(())
    }

    /// A new Event, named as `kubectl` and kube's recorder name them (`<object>.<hex nanos>`,
    /// the object's part shortened when the whole would pass 253 characters).
    fn event(
        &self,
        regarding: &ObjectReference,
        namespace: &str,
        now: Timestamp,
        (type_, reason, action, note): (EventType, &str, &str, &str),
    ) -> Event {
        let object = regarding
            .name
            .as_deref()
            .unwrap_or(&self.reporter.controller);
        Event {
            action: Some(action.to_string()),
            reason: Some(reason.to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: Some(truncate(note)),
            metadata: ObjectMeta {
                namespace: Some(namespace.to_string()),
                name: Some(crate::names::event_name(object, now.as_nanosecond())),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        }
    }
}

/// `note` cut to the API server's limit, at a character boundary.
fn truncate(note: &str) -> String {
    let mut end = note.len().min(NOTE_MAX);
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str) -> Key {
        noted(reason, "created")
    }

    fn noted(reason: &str, note: &str) -> Key {
        Key {
            namespace: "crm".into(),
            uid: "u1".into(),
            name: "orders".into(),
            warning: false,
            reason: reason.into(),
            action: "Create".into(),
            note: crate::digest::of(&note),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_repeat_within_six_minutes_counts_up_the_first_event() {
        let mut seen = Seen::default();
        let t0 = at("2026-11-01T12:00:00Z");
        assert_eq!(seen.repeat(&key("Provisioned"), t0), None);
        seen.record(key("Provisioned"), "orders.1".into(), 1, t0);
        assert_eq!(
            seen.repeat(&key("Provisioned"), at("2026-11-01T12:05:00Z")),
            Some(("orders.1".into(), 2))
        );
        assert_eq!(
            seen.repeat(&key("Updated"), at("2026-11-01T12:05:00Z")),
            None,
            "another reason is another Event"
        );
        assert_eq!(
            seen.repeat(
                &noted("Provisioned", "something else"),
                at("2026-11-01T12:05:00Z")
            ),
            None,
            "another note is another Event (its note could not be changed)"
        );
        assert_eq!(
            seen.repeat(&key("Provisioned"), at("2026-11-01T12:06:01Z")),
            None,
            "after six minutes a new Event"
        );
    }

    #[test]
    fn expired_keys_are_dropped_at_most_every_30_seconds() {
        let mut seen = Seen::default();
        let t0 = at("2026-11-01T12:00:00Z");
        for i in 0..100 {
            seen.record(key(&format!("R{i}")), format!("e{i}"), 1, t0);
        }
        seen.expire(at("2026-11-01T12:05:50Z"));
        assert_eq!(seen.published.len(), 100, "none is six minutes old yet");
        seen.expire(at("2026-11-01T12:06:10Z"));
        assert_eq!(seen.published.len(), 100, "a pass ran less than 30 s ago");
        seen.expire(at("2026-11-01T12:06:30Z"));
        assert!(seen.published.is_empty());
    }

    /// An API server that answers Event creates and patches slowly, counting them.
    fn slow_event_api(
        creates: Arc<std::sync::atomic::AtomicUsize>,
        patches: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Client {
        use axum::{Json, Router, routing::post};
        use std::sync::atomic::Ordering;
        let router = Router::new()
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events",
                post(move |Json(event): Json<serde_json::Value>| async move {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    creates.fetch_add(1, Ordering::SeqCst);
                    (axum::http::StatusCode::CREATED, Json(event))
                }),
            )
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}",
                axum::routing::patch(move || async move {
                    patches.fetch_add(1, Ordering::SeqCst);
                    Json(serde_json::json!({"metadata": {"name": "orders.1"}}))
                }),
            );
        Client::new(router, "default")
    }

    #[tokio::test]
    async fn the_same_event_published_twice_at_once_is_created_once() {
        use std::sync::atomic::Ordering;
        let (creates, patches) = (Arc::default(), Arc::default());
        let publisher = Publisher::new(
            slow_event_api(Arc::clone(&creates), Arc::clone(&patches)),
            Reporter {
                controller: "test".into(),
                instance: None,
            },
        );
        let regarding = ObjectReference {
            namespace: Some("crm".into()),
            name: Some("orders".into()),
            uid: Some("u1".into()),
            ..Default::default()
        };
        let publish = || {
            publisher.publish(
                &regarding,
                EventType::Warning,
                "UpstashUnavailable",
                "Reconcile",
                "Upstash answered 503",
            )
        };
        let (a, b) = tokio::join!(publish(), publish());
        a.unwrap();
        b.unwrap();
        assert_eq!(creates.load(Ordering::SeqCst), 1, "one Event created");
        assert_eq!(patches.load(Ordering::SeqCst), 1, "and counted up once");
    }

    #[test]
    fn notes_are_cut_at_a_character_boundary() {
        let long = "é".repeat(600);
        let cut = truncate(&long);
        assert!(cut.len() <= NOTE_MAX && cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate("short"), "short");
    }
}
