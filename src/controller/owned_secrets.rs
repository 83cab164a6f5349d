//! The connection Secrets the operator wrote, from the controller's own watch of them, so that
//! a pass reads no Secret from the API server once an instance's Secret exists.
//!
//! The watch selects the operator's `managed-by` label, so a Secret it does not hold may still
//! exist without that label (someone else's Secret of the same name, which must never be
//! overwritten): only a Secret found here spares the read; an absent one is read from the API
//! server, as before.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};

use super::WATCH_LAG;

/// A Secret's namespace and name.
fn key_of(secret: &Secret) -> (String, String) {
    (
        secret.metadata.namespace.clone().unwrap_or_default(),
        secret.metadata.name.clone().unwrap_or_default(),
    )
}

/// Secrets this process wrote, as the API server answered, until their watch shows an event
/// of theirs.
type Written = Arc<Mutex<HashMap<(String, String), (Arc<Secret>, Instant)>>>;

/// One store per watched scope (`None` = every namespace), and the Secrets this process wrote
/// that their watch has not shown yet (as the API server answered the write, trimmed like the
/// cache): a pass right after the write takes them as current instead of reading them.
#[derive(Default)]
pub struct OwnedSecrets {
    stores: Mutex<Vec<(Option<String>, Store<Secret>)>>,
    written: Written,
    /// Stores whose watch has not listed its Secrets yet.
    listing: Arc<std::sync::atomic::AtomicUsize>,
}

impl OwnedSecrets {
    /// Adds the store of the controller watching `scope`.
    pub fn register(&self, scope: Option<String>, store: Store<Secret>) {
        let listing = self.listing.clone();
        listing.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let waiting = store.clone();
        tokio::spawn(async move {
            if waiting.wait_until_ready().await.is_ok() {
                listing.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            }
        });
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((scope, store));
    }

    /// Whether every store has its watch's initial list: until then a Secret missing from them
    /// may still exist.
    pub fn listed(&self) -> bool {
        self.listing.load(std::sync::atomic::Ordering::Acquire) == 0
    }

    /// The operator's Secret `namespace/name` as its watch last saw it, if it holds one, else
    /// as this process wrote it moments ago (the watch is about to show it).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        let key = ObjectRef::new(name).within(namespace);
        let watched = self
            .stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(scope, _)| scope.as_deref().is_none_or(|s| s == namespace))
            .find_map(|(_, store)| store.get(&key));
        watched.or_else(|| {
            self.written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(namespace.to_string(), name.to_string()))
                .filter(|(_, at)| at.elapsed() < WATCH_LAG)
                .map(|(secret, _)| secret.clone())
        })
    }

    /// The operator's Secrets in `namespace` that carry the label `key`, as the watch last saw
    /// them or as this process wrote them moments ago (used for the ACL users' Secrets).
    pub fn with_label(&self, namespace: &str, key: &str) -> Vec<Arc<Secret>> {
        let has = |s: &Secret| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(key))
        };
        let mut found: HashMap<(String, String), Arc<Secret>> = HashMap::new();
        for (scope, store) in self.stores.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if scope.as_deref().is_some_and(|s| s != namespace) {
                continue;
            }
            for secret in store.state() {
                if has(&secret) {
                    found.insert(key_of(&secret), secret);
                }
            }
        }
        for (k, (secret, at)) in self
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if at.elapsed() < WATCH_LAG && has(secret) {
                found.entry(k.clone()).or_insert_with(|| secret.clone());
            }
        }
        found.into_values().collect()
    }

    /// Keeps `secret`, as the API server answered its write, until the watch shows it.
    pub fn wrote(&self, mut secret: Secret) {
        crate::controller::secret::trim_cached(&mut secret);
        let key = key_of(&secret);
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.retain(|_, (_, at)| at.elapsed() < WATCH_LAG);
        written.insert(key, (Arc::new(secret), Instant::now()));
    }

    /// What the Secret watch calls for each object of each event (applied or deleted): from
    /// then on its store is the truth about that Secret.
    pub fn seen_by_watch(&self) -> impl Fn(&Secret) + Send + Sync + 'static {
        let written = self.written.clone();
        move |secret: &Secret| {
            let key = key_of(secret);
            let mut written = written.lock().unwrap_or_else(|e| e.into_inner());
            if !written.is_empty() {
                written.remove(&key);
            }
        }
    }

    /// Forgets what this process wrote of `namespace/name` (it deleted it).
    pub fn deleted(&self, namespace: &str, name: &str) {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(namespace.to_string(), name.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str) -> Secret {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "crm"},
            "data": {"REDIS_PASSWORD": "c2VjcmV0"},
        }))
        .unwrap()
    }

    #[test]
    fn a_secret_just_written_counts_until_its_watch_shows_an_event_of_it() {
        let owned = OwnedSecrets::default();
        assert!(owned.get("crm", "orders").is_none());
        owned.wrote(secret("orders"));
        let held = owned.get("crm", "orders").expect("taken as current");
        assert!(held.data.is_none(), "trimmed like the cache");
        assert!(owned.get("web", "orders").is_none());
        // The watch saw it (applied or deleted): its store answers from now on.
        (owned.seen_by_watch())(&secret("orders"));
        assert!(owned.get("crm", "orders").is_none());
        owned.wrote(secret("orders"));
        owned.deleted("crm", "orders");
        assert!(owned.get("crm", "orders").is_none());
    }
}
