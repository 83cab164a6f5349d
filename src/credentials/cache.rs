//! Credentials Secrets read from watches instead of the API server.
//!
//! Three kinds of watch feed one lookup, so that steady state costs no Secret read at all:
//!
//! * the operator-wide Secret (a watch on that one name in its namespace);
//! * the per-namespace Secrets (a watch on that one name in every watched namespace), which
//!   also tells authoritatively that a namespace has none;
//! * Secrets the operator has claimed for instances that name them in `spec.credentials`
//!   (a watch on the claim label, see [`super::usage`]).
//!
//! A Secret none of them covers yet (a per-instance Secret before its first claim) is read from
//! the API server once and kept until the claim's watch event arrives.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};

use super::{Origin, usage::CLAIM_LABEL};
use crate::error::{Error, Result};

/// How long a Secret read from the API server is served before it is read again, while no watch
/// covers it (a claimed Secret is soon in a watch).
const READ_TTL: Duration = Duration::from_secs(30);
/// How long an absent Secret is taken as absent without reading again: just long enough for the
/// reconciles of one burst to share a read, so that a Secret created next is seen at once.
const ABSENT_TTL: Duration = Duration::from_secs(2);

fn fresh(secret: &Option<Arc<Secret>>, at: Instant) -> bool {
    at.elapsed()
        < if secret.is_some() {
            READ_TTL
        } else {
            ABSENT_TTL
        }
}

/// One watch and whether it has listed everything once.
#[derive(Clone)]
struct Watched {
    store: Store<Secret>,
    ready: Arc<AtomicBool>,
    /// `None`: every namespace.
    namespace: Option<String>,
    /// The only name it watches, if it watches one.
    name: Option<String>,
}

impl Watched {
    /// Whether the watch would hold the Secret at `origin`, whether or not it has listed yet.
    fn would_cover(&self, origin: &Origin) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| *ns == origin.namespace)
            && self.name.as_ref().is_some_and(|n| *n == origin.name)
    }

    fn covers(&self, origin: &Origin) -> bool {
        self.ready.load(Ordering::Acquire) && self.would_cover(origin)
    }

    fn get(&self, origin: &Origin) -> Option<Arc<Secret>> {
        self.store
            .get(&ObjectRef::new(&origin.name).within(&origin.namespace))
    }
}

/// How long a read waits for a watch that will hold the Secret to list it, before reading it
/// from the API server instead.
const FIRST_LIST_WAIT: Duration = Duration::from_secs(5);

/// Secrets read from the API server (`None`: absent), by namespace and name, with the time.
type Reads = HashMap<(String, String), (Option<Arc<Secret>>, Instant)>;

/// Credentials Secrets by namespace and name.
#[derive(Clone)]
pub struct SecretCache {
    client: Client,
    watched: Arc<Mutex<Vec<Watched>>>,
    read: Arc<Mutex<Reads>>,
    reads: Arc<std::sync::atomic::AtomicU64>,
    /// Each credentials Secret the watches see created or changed.
    changes: tokio::sync::broadcast::Sender<Origin>,
}

impl SecretCache {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            watched: Arc::default(),
            read: Arc::default(),
            reads: Arc::default(),
            changes: tokio::sync::broadcast::channel(1024).0,
        }
    }

    /// Credentials Secrets created or changed from now on (a receiver that falls behind skips
    /// what it missed).
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Origin> {
        self.changes.subscribe()
    }

    /// Starts the watches: the operator-wide Secret, the per-namespace Secret name in each
    /// scope (`None` = all namespaces), and claimed Secrets in each scope. They run until the
    /// process ends.
    pub fn watch(
        &self,
        operator_secret: &Origin,
        namespace_secret: Option<&str>,
        scopes: &[Option<String>],
    ) {
        self.spawn(
            Some(operator_secret.namespace.clone()),
            Some(operator_secret.name.clone()),
            None,
        );
        for scope in scopes {
            if let Some(name) = namespace_secret {
                self.spawn(scope.clone(), Some(name.to_string()), None);
            }
            self.spawn(scope.clone(), None, Some(CLAIM_LABEL));
        }
    }

    fn spawn(&self, namespace: Option<String>, name: Option<String>, label: Option<&str>) {
        let api: Api<Secret> = match &namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let mut config = watcher::Config::default().any_semantic();
        if let Some(name) = &name {
            config = config.fields(&format!("metadata.name={name}"));
        }
        if let Some(label) = label {
            config = config.labels(label);
        }
        let (store, writer) = reflector::store();
        let ready = Arc::new(AtomicBool::new(false));
        self.watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Watched {
                store: store.clone(),
                ready: ready.clone(),
                namespace: namespace.clone(),
                name: name.clone(),
            });
        let stream = watcher(api, config)
            .default_backoff()
            .modify(|s: &mut Secret| s.managed_fields_mut().clear())
            .reflect(writer)
            .applied_objects();
        tokio::spawn(async move {
            crate::policies::wait_until_ready(&store).await;
            ready.store(true, Ordering::Release);
        });
        let changes = self.changes.clone();
        tokio::spawn(async move {
            stream
                .for_each(|event| {
                    match event {
                        Ok(secret) => {
                            let _ = changes.send(Origin {
                                namespace: secret.namespace().unwrap_or_default(),
                                name: secret.name_any(),
                            });
                        }
                        Err(e) => tracing::debug!(error = %e, "credentials Secret watch"),
                    }
                    futures::future::ready(())
                })
                .await;
        });
    }

    /// The Secret at `origin`, `None` when it does not exist. Served from a watch when one has
    /// it or covers its name; otherwise read from the API server at most every [`READ_TTL`].
    pub async fn get(&self, origin: &Origin) -> Result<Option<Arc<Secret>>> {
        // A watch that will hold it is about to: waiting for its first list (a start's first
        // passes) spares a read of the API server.
        let listing = {
            let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
            watched
                .iter()
                .find(|w| w.would_cover(origin) && !w.ready.load(Ordering::Acquire))
                .map(|w| w.store.clone())
        };
        if let Some(store) = listing
            && let Ok(Ok(())) =
                tokio::time::timeout(FIRST_LIST_WAIT, store.wait_until_ready()).await
        {
            return Ok(store.get(&ObjectRef::new(&origin.name).within(&origin.namespace)));
        }
        let covered = {
            let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(secret) = watched.iter().find_map(|w| w.get(origin)) {
                return Ok(Some(secret));
            }
            watched.iter().any(|w| w.covers(origin))
        };
        if covered {
            return Ok(None);
        }
        let key = (origin.namespace.clone(), origin.name.clone());
        if let Some((secret, at)) = self
            .read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
            && fresh(&secret, at)
        {
            return Ok(secret);
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &origin.namespace);
        self.reads.fetch_add(1, Ordering::Relaxed);
        let secret = api
            .get_opt(&origin.name)
            .await
            .map_err(|e| match e {
                kube::Error::Api(status) if status.code == 403 => Error::Credentials(format!(
                    "the operator may not read {origin}: {}",
                    status.message
                )),
                other => Error::Kube(other),
            })?
            .map(|mut s| {
                s.managed_fields_mut().clear();
                Arc::new(s)
            });
        self.remember(origin, secret.clone());
        Ok(secret)
    }

    /// Keeps what a write answered until the watch catches up.
    pub fn remember(&self, origin: &Origin, secret: Option<Arc<Secret>>) {
        self.read.lock().unwrap_or_else(|e| e.into_inner()).insert(
            (origin.namespace.clone(), origin.name.clone()),
            (secret, Instant::now()),
        );
    }

    /// Whether `origin` is known to exist without reading the API server: it is in a watch,
    /// or was read recently. `None` when only a read could tell.
    pub fn known(&self, origin: &Origin) -> Option<bool> {
        let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        if watched.iter().any(|w| w.get(origin).is_some()) {
            return Some(true);
        }
        if watched.iter().any(|w| w.covers(origin)) {
            return Some(false);
        }
        drop(watched);
        self.read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(origin.namespace.clone(), origin.name.clone()))
            .filter(|(secret, at)| fresh(secret, *at))
            .map(|(s, _)| s.is_some())
    }

    /// Every claimed Secret the watches hold.
    pub fn claimed(&self) -> Vec<Arc<Secret>> {
        let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Arc<Secret>> = watched
            .iter()
            .flat_map(|w| w.store.state())
            .filter(|s| s.labels().contains_key(CLAIM_LABEL))
            .collect();
        out.sort_by_key(|s| (s.namespace(), s.name_any()));
        out.dedup_by_key(|s| (s.namespace(), s.name_any()));
        out
    }

    /// Secret reads sent to the API server so far (the watches' lists not counted).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Waits until every watch has listed once.
    pub async fn wait_until_ready(&self) {
        let stores: Vec<Store<Secret>> = self
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|w| w.store.clone())
            .collect();
        for store in stores {
            crate::policies::wait_until_ready(&store).await;
        }
    }
}
