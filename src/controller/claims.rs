//! One database, one manager: which CacheInstance manages which Upstash database, so that no
//! other instance, in any namespace, adopts, changes, rotates or deletes it.
//!
//! An instance claims a database by its `status.databaseId`, and a database name while its
//! create call is in flight (the create record, until the status names the database). A new
//! instance that asks to adopt a database (`spec.adopt`) and was not judged yet (no `Ready`
//! condition) claims it too, so that of two new instances adopting the same database at once
//! only one wins. The index is kept from the CacheInstance watch the reconciler already has
//! (each watched scope is indexed as its events arrive, and rebuilt on every re-list), so it
//! costs one small entry per instance that claims something, and it is complete once every
//! scope has listed: a decision waits for that. Between a decision and the status write that
//! records it, this process also holds a reservation, so that two passes of this process never
//! both take a database before the watch shows either.
//!
//! Who wins (see [`judge`]): an instance whose status names the database wins over every
//! instance whose status does not; of two whose status names it (a copy restored into another
//! namespace, say), the older one (creation time, then UID). A create in flight for the
//! database's name and a reservation of this process win over an instance whose status does not
//! name it. Of two new instances adopting it, the older one.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher;

use super::{WATCH_LAG, conditions};
use crate::crd::CacheInstance;

/// An instance in the index: namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn of(obj: &CacheInstance) -> Self {
        Key {
            namespace: obj.metadata.namespace.clone().unwrap_or_default(),
            name: obj.metadata.name.clone().unwrap_or_default(),
        }
    }
}

/// A database as claims name it: by id, or by name (a create in flight, an adoption by name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Id(String),
    Name(String),
}

/// What one instance claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: Key,
    pub uid: String,
    pub created: Option<Timestamp>,
    /// `status.databaseId`.
    pub manages: Option<String>,
    /// The name of the database its create call in flight makes.
    pub creating: Option<String>,
    /// The database a new instance asks to adopt, until it is first judged.
    pub adopting: Option<Target>,
}

impl Claim {
    /// What `obj` claims, or `None` when it claims nothing.
    pub fn of(obj: &CacheInstance) -> Option<Claim> {
        let status = obj.status.as_ref();
        let manages = status.and_then(|s| s.database_id.clone());
        let (creating, adopting) = if manages.is_some() {
            (None, None)
        } else {
            let none = crate::crd::CacheInstanceStatus::default();
            let creating = super::create_record::pending_record(obj, status.unwrap_or(&none))
                .map(|p| p.database_name);
            let judged = status
                .is_some_and(|s| conditions::find(&s.conditions, conditions::READY).is_some());
            let adopting = obj.spec.adopt.as_ref().filter(|_| !judged).and_then(|a| {
                match (&a.database_id, a.by_name, &obj.spec.database_name) {
                    (Some(id), _, _) => Some(Target::Id(id.clone())),
                    (None, Some(true), Some(name)) => Some(Target::Name(name.clone())),
                    _ => None,
                }
            });
            (creating, adopting)
        };
        if manages.is_none() && creating.is_none() && adopting.is_none() {
            return None;
        }
        Some(Claim {
            key: Key::of(obj),
            uid: obj.metadata.uid.clone().unwrap_or_default(),
            created: obj.metadata.creation_timestamp.as_ref().map(|t| t.0),
            manages,
            creating,
            adopting,
        })
    }

    /// The instance as a contender for a database: `manages` is what its freshest status says.
    pub fn contender(obj: &CacheInstance, manages: Option<&str>) -> Claim {
        Claim {
            key: Key::of(obj),
            uid: obj.metadata.uid.clone().unwrap_or_default(),
            created: obj.metadata.creation_timestamp.as_ref().map(|t| t.0),
            manages: manages.map(str::to_string),
            creating: None,
            adopting: None,
        }
    }

    fn targets(&self) -> impl Iterator<Item = Target> + '_ {
        self.manages
            .iter()
            .map(|id| Target::Id(id.clone()))
            .chain(self.creating.iter().map(|n| Target::Name(n.clone())))
            .chain(self.adopting.iter().cloned())
    }

    /// Whether `self` was there first: the older creation time, then the lower UID.
    fn older_than(&self, other: &Claim) -> bool {
        match (self.created, other.created) {
            (Some(a), Some(b)) if a != b => a < b,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            _ => self.uid < other.uid,
        }
    }
}

/// Why a database is not this instance's to work with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// Another instance's status names it.
    Managed(Key),
    /// Another instance's create call in flight makes a database of that name.
    Creating(Key),
    /// An older new instance adopts it.
    Adopting(Key),
    /// A pass of this process took it a moment ago for another instance.
    Reserved(Key),
}

impl Held {
    pub fn key(&self) -> &Key {
        match self {
            Held::Managed(k) | Held::Creating(k) | Held::Adopting(k) | Held::Reserved(k) => k,
        }
    }

    /// The `AlreadyManaged` message for `me` about database `what`. The other instance is
    /// named when it is in `me`'s namespace, or when `reveal` allows naming other namespaces.
    pub fn message(&self, me: &Key, what: &str, reveal: bool) -> String {
        let other = self.key();
        let who = if other.namespace == me.namespace {
            format!("CacheInstance {} in this namespace", other.name)
        } else if reveal {
            format!("a CacheInstance in namespace {}", other.namespace)
        } else {
            "another CacheInstance".to_string()
        };
        let how = match self {
            Held::Managed(_) | Held::Reserved(_) => format!("{what} is managed by {who}"),
            Held::Creating(_) => format!("{who} is creating {what}"),
            Held::Adopting(_) => format!("{who}, created earlier, is adopting {what}"),
        };
        format!(
            "{how}; this CacheInstance does not adopt, change, rotate or delete it and writes no Secret for it"
        )
    }
}

/// Who wins database `id` (named `name`, when known) against `me`: `None` when `me` may work
/// with it, else the instance that holds it. `others` are the claims on `id` or `name`.
pub fn judge<'a>(
    me: &Claim,
    id: &str,
    name: Option<&str>,
    others: impl IntoIterator<Item = &'a Claim>,
) -> Option<Held> {
    let i_manage = me.manages.as_deref() == Some(id);
    let mut winner: Option<(u8, &Claim)> = None;
    for other in others {
        if other.key == me.key {
            continue;
        }
        let rank = if other.manages.as_deref() == Some(id) {
            // Of two whose status names it, the one there first.
            if i_manage && !other.older_than(me) {
                continue;
            }
            0
        } else if i_manage {
            continue;
        } else if name.is_some() && other.creating.as_deref() == name {
            1
        } else if other.adopting.as_ref().is_some_and(|t| match t {
            Target::Id(i) => i == id,
            Target::Name(n) => Some(n.as_str()) == name,
        }) && other.older_than(me)
        {
            2
        } else {
            continue;
        };
        let better = match winner {
            None => true,
            Some((r, w)) => rank < r || (rank == r && other.older_than(w)),
        };
        if better {
            winner = Some((rank, other));
        }
    }
    winner.map(|(rank, w)| match rank {
        0 => Held::Managed(w.key.clone()),
        1 => Held::Creating(w.key.clone()),
        _ => Held::Adopting(w.key.clone()),
    })
}

#[derive(Default)]
struct Scope {
    claims: HashMap<Key, Claim>,
    by_target: HashMap<Target, Vec<Key>>,
    /// The claims of a re-list under way, swapped in when it is complete.
    building: Option<HashMap<Key, Claim>>,
    listed: bool,
}

impl Scope {
    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.claims.remove(key) {
            for target in old.targets() {
                if let Some(keys) = self.by_target.get_mut(&target) {
                    keys.retain(|k| k != key);
                    if keys.is_empty() {
                        self.by_target.remove(&target);
                    }
                }
            }
        }
    }

    fn insert(&mut self, claim: Claim) {
        self.remove(&claim.key);
        for target in claim.targets() {
            self.by_target
                .entry(target)
                .or_default()
                .push(claim.key.clone());
        }
        self.claims.insert(claim.key.clone(), claim);
    }

    fn apply(&mut self, event: &watcher::Event<CacheInstance>) {
        match event {
            watcher::Event::Apply(obj) => match Claim::of(obj) {
                Some(claim) => self.insert(claim),
                None => self.remove(&Key::of(obj)),
            },
            watcher::Event::Delete(obj) => self.remove(&Key::of(obj)),
            watcher::Event::Init => self.building = Some(HashMap::new()),
            watcher::Event::InitApply(obj) => {
                if let Some(claim) = Claim::of(obj) {
                    self.building
                        .get_or_insert_with(HashMap::new)
                        .insert(claim.key.clone(), claim);
                }
            }
            watcher::Event::InitDone => {
                let listed = self.building.take().unwrap_or_default();
                self.claims.clear();
                self.by_target.clear();
                for claim in listed.into_values() {
                    self.insert(claim);
                }
                self.listed = true;
            }
        }
    }
}

struct Reservation {
    key: Key,
    /// Which guard holds it.
    serial: u64,
    /// `None` while the pass that took it runs; then the time by which its status write
    /// shows in the watch.
    until: Option<Instant>,
}

type Reservations = Arc<Mutex<HashMap<String, Reservation>>>;

/// The claims of every watched CacheInstance (see the module documentation).
#[derive(Clone)]
pub struct Claims {
    scopes: Arc<Mutex<Vec<Scope>>>,
    reservations: Reservations,
    /// Whether every registered scope has listed.
    complete: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Claims {
    fn default() -> Self {
        Self {
            scopes: Arc::default(),
            reservations: Reservations::default(),
            complete: Arc::new(tokio::sync::watch::Sender::new(true)),
        }
    }
}

/// A registered scope of the index, fed by its CacheInstance watch.
#[derive(Debug, Clone, Copy)]
pub struct ScopeId(usize);

impl Claims {
    fn scopes(&self) -> std::sync::MutexGuard<'_, Vec<Scope>> {
        self.scopes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a scope (one CacheInstance watch); the index is incomplete until it has listed.
    pub fn register(&self) -> ScopeId {
        let mut scopes = self.scopes();
        scopes.push(Scope::default());
        self.complete.send_replace(false);
        ScopeId(scopes.len() - 1)
    }

    /// Follows one watch event of `scope` (before the reflector stores it).
    pub fn observe(&self, scope: ScopeId, event: &watcher::Event<CacheInstance>) {
        let mut scopes = self.scopes();
        if let Some(s) = scopes.get_mut(scope.0) {
            s.apply(event);
        }
        let complete = scopes.iter().all(|s| s.listed);
        drop(scopes);
        if complete && !*self.complete.borrow() {
            self.complete.send_replace(true);
        }
    }

    /// Waits until every scope has listed once.
    pub async fn wait_complete(&self) {
        let mut rx = self.complete.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Whether the database `obj`'s status names is another instance's, or may be (the index
    /// has not listed yet). An instance that lost a tie, or a copy restored with another's
    /// status, keeps that id in its status; the monitor reads nothing of that database for it.
    pub fn held_by_other(&self, obj: &CacheInstance) -> bool {
        let Some(id) = obj.status.as_ref().and_then(|s| s.database_id.as_deref()) else {
            return false;
        };
        if !*self.complete.borrow() {
            return true;
        }
        let me = Claim::contender(obj, Some(id));
        self.find(&me, id, None).is_some()
    }

    /// Who holds database `id` (named `name`) against `me`, if anyone.
    pub async fn holder(&self, me: &Claim, id: &str, name: Option<&str>) -> Option<Held> {
        self.wait_complete().await;
        self.find(me, id, name)
    }

    fn find(&self, me: &Claim, id: &str, name: Option<&str>) -> Option<Held> {
        let scopes = self.scopes();
        let mut others = Vec::new();
        for scope in scopes.iter() {
            let targets = std::iter::once(Target::Id(id.to_string()))
                .chain(name.map(|n| Target::Name(n.to_string())));
            for target in targets {
                for key in scope.by_target.get(&target).into_iter().flatten() {
                    if let Some(claim) = scope.claims.get(key) {
                        others.push(claim);
                    }
                }
            }
        }
        judge(me, id, name, others)
    }

    /// Who holds database `id` (named `name`) against `me`, if anyone; when nobody does and
    /// `me`'s status does not name it, reserves it for `me` until the returned guard is
    /// dropped (and [`WATCH_LAG`] after, for the status write to show).
    pub async fn check(
        &self,
        me: &Claim,
        id: &str,
        name: Option<&str>,
    ) -> Result<Option<ReservationGuard>, Held> {
        self.wait_complete().await;
        // One decision at a time: a reservation is taken before another pass judges.
        let mut reservations = self.reservations.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = self.find(me, id, name) {
            return Err(held);
        }
        if me.manages.as_deref() == Some(id) {
            return Ok(None);
        }
        let now = Instant::now();
        reservations.retain(|_, r| r.until.is_none_or(|until| until > now));
        if let Some(r) = reservations.get(id)
            && r.key != me.key
        {
            return Err(Held::Reserved(r.key.clone()));
        }
        let serial = NEXT_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        reservations.insert(
            id.to_string(),
            Reservation {
                key: me.key.clone(),
                serial,
                until: None,
            },
        );
        Ok(Some(ReservationGuard {
            reservations: self.reservations.clone(),
            id: id.to_string(),
            serial,
        }))
    }
}

static NEXT_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Keeps a database reserved for the pass that took it.
pub struct ReservationGuard {
    reservations: Reservations,
    id: String,
    serial: u64,
}

impl Drop for ReservationGuard {
    fn drop(&mut self) {
        let mut reservations = self.reservations.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = reservations.get_mut(&self.id)
            && r.serial == self.serial
        {
            r.until = Some(Instant::now() + WATCH_LAG);
        }
    }
}

/// How soon an instance that another one's new adoption or create call holds back looks again.
pub const RECHECK: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests;
