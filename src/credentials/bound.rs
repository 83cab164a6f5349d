//! The Developer API bound to the account one CacheInstance works with: which Secret the
//! credentials came from, which account they act for, and what a Database answer teaches about
//! that account.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;

use super::{CredentialResolver, Origin, Source, identity, identity::Lookup};
use crate::upstash::{Database, UpstashApi, UpstashError};

/// What binding an instance to its credentials found.
pub enum Binding {
    /// The credentials may act on the instance's database.
    Bound(Bound),
    /// The database belongs to another account than these credentials; the message says which
    /// and what to do. Nothing may be read, changed, recreated or deleted.
    AccountChanged(String),
}

/// The Developer API bound to the account a CacheInstance works with.
pub struct Bound {
    /// Calls made with the instance's credentials.
    pub api: UpstashApi,
    /// The Secret the credentials came from.
    pub origin: Origin,
    /// The account the credentials act for, as recorded in `status.account`: the Upstash
    /// account when it is known, else the credentials' email (a personal account's name).
    pub account: String,
    pub(super) digest: String,
    pub(super) source: Source,
    pub(super) secret: Arc<Secret>,
    pub(super) resolver: CredentialResolver,
}

impl Bound {
    /// The one-way digest of these credentials (see [`identity::key_digest`]).
    pub fn key_digest(&self) -> &str {
        &self.digest
    }

    /// Which kind of Secret supplied the credentials.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The account the credentials are known to act for, if a Database answer has told.
    pub fn known_account(&self) -> Option<String> {
        self.resolver.inner.identities.get(&self.digest)
    }

    /// Learns the account from a Database these credentials read or created, and keeps it on
    /// the credentials Secret (once per new account).
    /// A Database answer also proves that the credentials work: from then on their Secret is
    /// claimed while the instance uses it.
    pub async fn learn(&self, db: &Database) {
        self.learn_account(identity::account_of(db)).await;
    }

    /// Learns `account` (as named by a Database answer) for these credentials; see [`learn`].
    ///
    /// [`learn`]: Self::learn
    async fn learn_account(&self, account: Option<&str>) {
        if let Some(account) = account {
            self.resolver.inner.identities.learn(&self.digest, account);
        }
        self.resolver
            .mark(
                &self.origin,
                &self.secret,
                self.source,
                true,
                account,
                &self.digest,
            )
            .await;
    }

    /// Reads database `id`, recorded in the status as belonging to account `recorded`. When
    /// these credentials do not see it, tells a database that is gone from one that is only
    /// invisible to credentials of another account (learning the credentials' account from
    /// the account's database list when it is not known yet).
    pub async fn lookup(&self, id: &str, recorded: Option<&str>) -> Result<Lookup, UpstashError> {
        if let Some(db) = self.api.get_database(id).await? {
            self.learn(&db).await;
            return Ok(Lookup::Found(Box::new(db)));
        }
        let mut current = self.known_account();
        if current.is_none() {
            let listed = self.api.list_databases().await?;
            if let Some(account) = listed.iter().find_map(identity::listed_account_of) {
                self.learn_account(Some(account)).await;
                current = Some(account.to_string());
            }
        }
        Ok(identity::judge_absence(
            id,
            recorded,
            current.as_deref(),
            &self.origin.to_string(),
        ))
    }
}
