//! The database names of each Upstash account, so that a new CacheInstance finds the database
//! it had before (re-applied, or restored without its status) without listing the account.
//!
//! Each account is listed once per process, lazily, by the first reconcile that needs it; every
//! reconcile that asks meanwhile waits for that one list (single flight). The index then follows
//! this process's own creates and deletes. A caller that must see databases created after some
//! moment (a create whose answer was lost, a name the user chose for an object created after the
//! last list) asks for a listing at least that fresh, and the account is listed again, once for
//! all callers waiting.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use k8s_openapi::jiff::Timestamp;

use super::developer_api::{ApiResult, DeveloperApi};

/// A database as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone)]
enum Op {
    Created(Entry),
    Deleted(String),
}

#[derive(Default)]
struct Listing {
    /// When the list call that filled it started.
    built_at: Option<Timestamp>,
    by_name: HashMap<String, Vec<String>>,
}

impl Listing {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Created(entry) => {
                let ids = self.by_name.entry(entry.name.clone()).or_default();
                if !ids.contains(&entry.id) {
                    ids.push(entry.id.clone());
                }
            }
            Op::Deleted(id) => {
                self.by_name.retain(|_, ids| {
                    ids.retain(|i| i != id);
                    !ids.is_empty()
                });
            }
        }
    }
}

#[derive(Default)]
struct State {
    listing: Option<Listing>,
    /// Changes recorded while a list call is in flight, applied on top of its answer.
    during_build: Option<Vec<Op>>,
}

#[derive(Default)]
struct Account {
    /// Held while listing: the single flight.
    build: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

/// Ends the collection of changes for a build when the build ends, finished or not.
struct BuildGuard<'a>(&'a Account);

impl Drop for BuildGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().during_build = None;
    }
}

impl Account {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, since: Option<Timestamp>) -> bool {
        let state = self.lock();
        state
            .listing
            .as_ref()
            .is_some_and(|l| match (since, l.built_at) {
                (Some(since), Some(built)) => built >= since,
                (Some(_), None) => false,
                (None, _) => true,
            })
    }

    fn record(&self, op: Op) {
        let mut state = self.lock();
        if let Some(listing) = state.listing.as_mut() {
            listing.apply(&op);
        }
        if let Some(ops) = state.during_build.as_mut() {
            ops.push(op);
        }
    }
}

/// The index key of credentials: what they can see depends on the key itself (a personal and a
/// team key of the same email see different databases), so each set of credentials has its own
/// listing, keyed by their one-way digest (see `credentials::identity::key_digest`).
pub fn key(bound: &crate::credentials::Bound) -> String {
    bound.key_digest().to_string()
}

/// Database names per account (keyed by [`key`]).
#[derive(Default)]
pub struct DatabaseIndex {
    accounts: Mutex<HashMap<String, Arc<Account>>>,
}

impl DatabaseIndex {
    fn account(&self, account: &str) -> Arc<Account> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        accounts.entry(account.to_string()).or_default().clone()
    }

    /// The databases of `account` named any of `names`, from a listing made at or after
    /// `fresh_since` (any listing when `None`); lists the account through `api` when there is
    /// none yet.
    pub async fn lookup<A: DeveloperApi>(
        &self,
        account: &str,
        api: &A,
        names: &[String],
        fresh_since: Option<Timestamp>,
    ) -> ApiResult<Vec<Entry>> {
        let entry = self.account(account);
        if !entry.fresh(fresh_since) {
            let _flight = entry.build.lock().await;
            // Someone else may have listed while this caller waited.
            if !entry.fresh(fresh_since) {
                let started = Timestamp::now();
                entry.lock().during_build = Some(Vec::new());
                // A caller that gives up while the list call is in flight (its reconcile
                // cancelled) must not leave the changes collecting for a build nobody finishes.
                let _building = BuildGuard(&entry);
                let listed = api.list_databases().await;
                let mut state = entry.lock();
                let ops = state.during_build.take().unwrap_or_default();
                let databases = listed?;
                let mut listing = Listing {
                    built_at: Some(started),
                    by_name: HashMap::new(),
                };
                for db in databases {
                    listing.apply(&Op::Created(Entry {
                        id: db.database_id,
                        name: db.database_name,
                    }));
                }
                for op in &ops {
                    listing.apply(op);
                }
                state.listing = Some(listing);
            }
        }
        let state = entry.lock();
        let listing = state.listing.as_ref();
        Ok(names
            .iter()
            .flat_map(|name| {
                listing
                    .and_then(|l| l.by_name.get(name))
                    .into_iter()
                    .flatten()
                    .map(|id| Entry {
                        id: id.clone(),
                        name: name.clone(),
                    })
            })
            .collect())
    }

    /// Records a database this process created.
    pub fn created(&self, account: &str, id: &str, name: &str) {
        self.account(account).record(Op::Created(Entry {
            id: id.to_string(),
            name: name.to_string(),
        }));
    }

    /// Records a database that is gone (deleted by this process, or found missing).
    pub fn deleted(&self, account: &str, id: &str) {
        self.account(account).record(Op::Deleted(id.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fake_api::FakeApi;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn one_list_serves_every_lookup_of_an_account() {
        let api = FakeApi::default();
        let a = api.insert_database("crm-orders-1", "us-east-1");
        api.insert_database("crm-carts-2", "us-east-1");
        let index = DatabaseIndex::default();
        let found = index
            .lookup("ops@example.com", &api, &names(&["crm-orders-1"]), None)
            .await
            .unwrap();
        assert_eq!(
            found,
            [Entry {
                id: a.clone(),
                name: "crm-orders-1".into()
            }]
        );
        for _ in 0..5 {
            let none = index
                .lookup("ops@example.com", &api, &names(&["crm-new-3"]), None)
                .await
                .unwrap();
            assert!(none.is_empty());
        }
        assert_eq!(api.calls_to("list"), 1);
        // Another account is listed on its own.
        index
            .lookup("team@example.com", &api, &names(&["x"]), None)
            .await
            .unwrap();
        assert_eq!(api.calls_to("list"), 2);
    }

    #[tokio::test]
    async fn concurrent_first_lookups_share_one_list() {
        let api = Arc::new(FakeApi::default());
        api.set_list_delay(std::time::Duration::from_millis(20));
        let index = Arc::new(DatabaseIndex::default());
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (api, index) = (api.clone(), index.clone());
            tasks.push(tokio::spawn(async move {
                index
                    .lookup("ops@example.com", api.as_ref(), &[format!("db-{i}")], None)
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(api.calls_to("list"), 1);
    }

    #[tokio::test]
    async fn own_creates_and_deletes_are_followed_without_listing() {
        let api = FakeApi::default();
        let index = DatabaseIndex::default();
        let wanted = names(&["crm-orders-1"]);
        assert!(
            index
                .lookup("a", &api, &wanted, None)
                .await
                .unwrap()
                .is_empty()
        );
        index.created("a", "db-9", "crm-orders-1");
        assert_eq!(
            index.lookup("a", &api, &wanted, None).await.unwrap(),
            [Entry {
                id: "db-9".into(),
                name: "crm-orders-1".into()
            }]
        );
        index.deleted("a", "db-9");
        assert!(
            index
                .lookup("a", &api, &wanted, None)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(api.calls_to("list"), 1);
    }

    #[tokio::test]
    async fn a_fresher_listing_is_made_when_asked_for_once() {
        let api = FakeApi::default();
        let index = DatabaseIndex::default();
        let wanted = names(&["crm-lost-1"]);
        assert!(
            index
                .lookup("a", &api, &wanted, None)
                .await
                .unwrap()
                .is_empty()
        );
        // A create whose answer was lost: the database exists, this process never heard.
        let id = api.insert_database("crm-lost-1", "us-east-1");
        let started = Timestamp::now();
        let found = index
            .lookup("a", &api, &wanted, Some(started))
            .await
            .unwrap();
        assert_eq!(found[0].id, id);
        assert_eq!(api.calls_to("list"), 2);
        // That listing is fresh enough for the same moment again.
        index
            .lookup("a", &api, &wanted, Some(started))
            .await
            .unwrap();
        assert_eq!(api.calls_to("list"), 2);
    }

    #[tokio::test]
    async fn a_cancelled_list_leaves_no_build_in_progress() {
        let api = FakeApi::default();
        api.set_list_delay(std::time::Duration::from_secs(60));
        let index = DatabaseIndex::default();
        let cancelled = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            index.lookup("a", &api, &names(&["x"]), None),
        )
        .await;
        assert!(cancelled.is_err(), "the lookup was cancelled mid-list");
        let account = index.account("a");
        assert!(
            account.lock().during_build.is_none(),
            "no build is in progress after the cancelled one"
        );
        // Changes are not collected for a build nobody finishes.
        for i in 0..3 {
            index.created("a", &format!("db-{i}"), "crm-orders-1");
        }
        assert!(account.lock().during_build.is_none());
    }

    #[tokio::test]
    async fn a_failed_list_is_reported_and_tried_again_next_time() {
        let api = FakeApi::default();
        api.fail_next(
            "list",
            crate::upstash::UpstashError::Server {
                status: 503,
                message: "down".into(),
            },
        );
        let index = DatabaseIndex::default();
        assert!(index.lookup("a", &api, &names(&["x"]), None).await.is_err());
        assert!(index.lookup("a", &api, &names(&["x"]), None).await.is_ok());
        assert_eq!(api.calls_to("list"), 2);
    }
}
