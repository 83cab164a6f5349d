//! Where a CacheInstance's Upstash credentials come from (its own `spec.credentials`, else the
//! namespace's credentials Secret, else the operator-wide Secret), which account they act for,
//! and keeping them readable until the instances using them are cleaned up.
//!
//! * [`cache`]: the Secrets, from watches (no API server read in steady state);
//! * [`usage`]: claims on per-namespace and per-instance Secrets, released when unused;
//! * [`identity`]: the Upstash account (`customer_id`) each set of credentials acts for.

mod bound;
pub mod cache;
pub mod identity;
pub mod usage;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::{Client, runtime::reflector::Store};
use secrecy::SecretString;

pub use self::bound::{Binding, Bound};
use self::{cache::SecretCache, identity::Identities, usage::Marks};
use crate::{
    crd::CacheInstance,
    error::{Error, Result},
    upstash::{Credentials, UpstashClient},
};

/// Default data key of the account email.
pub const EMAIL_KEY: &str = "email";
/// Default data key of the Developer API key.
pub const API_KEY_KEY: &str = "apiKey";

/// Which Secret supplied the credentials (for messages; never the values).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret {}/{}", self.namespace, self.name)
    }
}

/// Which kind of source supplied the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `spec.credentials.secretRef`.
    Instance,
    /// The namespace's credentials Secret.
    Namespace,
    /// The operator-wide Secret.
    Operator,
}

impl Source {
    /// Whether Secrets of this source are claimed while instances use them (see [`usage`]).
    pub fn claimed(self) -> bool {
        self != Source::Operator
    }
}

/// Credentials read from a Secret.
pub struct Resolved {
    pub credentials: Credentials,
    pub origin: Origin,
    pub source: Source,
    secret: Arc<Secret>,
}

/// [`CredentialResolver::may_use`] for the operator-wide Secret `operator_secret` and the
/// namespace Secret name `namespace_secret`.
fn may_use(
    origin: &Origin,
    instance: &CacheInstance,
    operator_secret: &Origin,
    namespace_secret: Option<&str>,
) -> bool {
    let in_namespace = instance.metadata.namespace.as_deref() == Some(origin.namespace.as_str());
    match &instance.spec.credentials {
        Some(own) => in_namespace && own.secret_ref.name == origin.name,
        None => {
            origin == operator_secret
                || (in_namespace && namespace_secret == Some(origin.name.as_str()))
        }
    }
}

struct Inner {
    client: Client,
    /// Operator-wide Secret.
    operator_secret: Origin,
    /// Per-namespace Secret name, if that lookup is enabled.
    namespace_secret: Option<String>,
    cache: SecretCache,
    identities: Identities,
    /// Woken when an instance's cleanup finished, so its credentials are released promptly.
    released: tokio::sync::Notify,
    /// What this process last wrote on each credentials Secret: the resourceVersion the Secret
    /// had before the write, and the marks written. A watch copy still at that version is
    /// stale: the Secret carries the marks written.
    marked: std::sync::Mutex<std::collections::HashMap<Origin, (Option<String>, Marks)>>,
    /// One marks write at a time, so that passes racing on the same Secret write it once.
    marking: tokio::sync::Mutex<()>,
}

/// Resolves credentials from Secrets (served by watches once [`CredentialResolver::watch`]
/// runs), binds the Developer API to them, and claims the Secrets instances use.
#[derive(Clone)]
pub struct CredentialResolver {
    inner: Arc<Inner>,
}

impl CredentialResolver {
    pub fn new(
        client: Client,
        operator_secret: (String, String),
        namespace_secret: Option<String>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                cache: SecretCache::new(client.clone()),
                client,
                operator_secret: Origin {
                    namespace: operator_secret.0,
                    name: operator_secret.1,
                },
                namespace_secret: namespace_secret.filter(|s| !s.is_empty()),
                identities: Identities::default(),
                released: tokio::sync::Notify::new(),
                marked: Default::default(),
                marking: Default::default(),
            }),
        }
    }

    /// Starts the credentials watches for the given scopes (`None` = all namespaces).
    pub fn watch(&self, scopes: &[Option<String>]) {
        self.inner.cache.watch(
            &self.inner.operator_secret,
            self.inner.namespace_secret.as_deref(),
            scopes,
        );
    }

    /// The credentials Secrets created or changed from now on, as the watches see them.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Origin> {
        self.inner.cache.changes()
    }

    /// Whether a change of the credentials Secret `origin` may change the credentials of
    /// `instance`: a Secret its `spec.credentials` names; its namespace's credentials Secret;
    /// and for every instance without `spec.credentials`, the operator-wide Secret (an instance
    /// whose namespace has its own Secret takes one needless look).
    pub fn may_use(&self, origin: &Origin, instance: &CacheInstance) -> bool {
        may_use(
            origin,
            instance,
            &self.inner.operator_secret,
            self.inner.namespace_secret.as_deref(),
        )
    }

    /// Waits until the credentials watches have listed once.
    pub async fn wait_until_ready(&self) {
        self.inner.cache.wait_until_ready().await;
    }

    /// Secret reads this resolver sent to the API server (watches not counted).
    pub fn api_reads(&self) -> u64 {
        self.inner.cache.reads()
    }

    /// The credentials for `instance`, and where they came from.
    pub async fn for_instance(&self, instance: &CacheInstance) -> Result<(Credentials, Origin)> {
        let resolved = self.resolve(instance).await?;
        Ok((resolved.credentials, resolved.origin))
    }

    /// Reads the credentials for `instance` from its source.
    pub async fn resolve(&self, instance: &CacheInstance) -> Result<Resolved> {
        let namespace = instance
            .metadata
            .namespace
            .clone()
            .ok_or(Error::MissingObjectKey("namespace"))?;
        let cache = &self.inner.cache;
        if let Some(reference) = instance.spec.credentials.as_ref().map(|c| &c.secret_ref) {
            let origin = Origin {
                namespace: namespace.clone(),
                name: reference.name.clone(),
            };
            let secret = cache.get(&origin).await?.ok_or_else(|| {
                Error::Credentials(format!(
                    "spec.credentials names {origin}, which does not exist"
                ))
            })?;
            let credentials = extract(
                &secret,
                reference.email_key.as_deref().unwrap_or(EMAIL_KEY),
                reference.api_key_key.as_deref().unwrap_or(API_KEY_KEY),
                &origin,
            )?;
            return Ok(Resolved {
                credentials,
                source: self.source_of(&origin, Source::Instance),
                origin,
                secret,
            });
        }
        if let Some(name) = &self.inner.namespace_secret {
            let origin = Origin {
                namespace,
                name: name.clone(),
            };
            // Not readable (e.g. the operator runs with namespaced RBAC) counts as absent.
            if let Ok(Some(secret)) = cache.get(&origin).await {
                let credentials = extract(&secret, EMAIL_KEY, API_KEY_KEY, &origin)?;
                return Ok(Resolved {
                    credentials,
                    source: self.source_of(&origin, Source::Namespace),
                    origin,
                    secret,
                });
            }
        }
        let origin = self.inner.operator_secret.clone();
        let secret = cache.get(&origin).await?.ok_or_else(|| {
            Error::Credentials(format!(
                "no Upstash credentials: create {origin} with the keys `{EMAIL_KEY}` and `{API_KEY_KEY}`, or set spec.credentials"
            ))
        })?;
        let credentials = extract(&secret, EMAIL_KEY, API_KEY_KEY, &origin)?;
        Ok(Resolved {
            credentials,
            origin,
            source: Source::Operator,
            secret,
        })
    }

    /// The kind of source of the Secret at `origin` found as `found`: the operator-wide Secret
    /// is that whichever way it was found (a CacheInstance in the operator's own namespace
    /// finds it as its namespace's Secret, or may name it in `spec.credentials`), so that it is
    /// never claimed.
    fn source_of(&self, origin: &Origin, found: Source) -> Source {
        if *origin == self.inner.operator_secret {
            Source::Operator
        } else {
            found
        }
    }

    /// Resolves the instance's credentials, checks them against the account its status records,
    /// claims their Secret while the instance uses it (see [`usage`]), and binds the Developer
    /// API to them: the one way every part of the operator gets an account to call Upstash with.
    pub async fn bind(&self, upstash: &UpstashClient, instance: &CacheInstance) -> Result<Binding> {
        let resolved = self.resolve(instance).await?;
        let digest = identity::key_digest(&resolved.credentials);
        // What the Secret says these very credentials act for (kept from an earlier process).
        if let Some((account, key)) = Marks::of(&resolved.secret).account
            && key == digest
        {
            self.inner.identities.learn(&digest, &account);
        }
        let known = self.inner.identities.get(&digest);
        let status = instance.status.as_ref();
        if let Some(id) = status.and_then(|s| s.database_id.as_deref())
            && let Some(recorded) = status.and_then(|s| s.account.as_deref())
        {
            let why = match &known {
                Some(current) if !identity::same_account(current, recorded) => {
                    Some(account_changed(id, recorded, current, &resolved.origin))
                }
                Some(_) => None,
                // Unknown yet: an account named by an email can only be that email's.
                None => account_mismatch(
                    id,
                    Some(recorded),
                    &resolved.credentials.email,
                    &resolved.origin,
                ),
            };
            if let Some(why) = why {
                return Ok(Binding::AccountChanged(why));
            }
        }
        if instance.metadata.deletion_timestamp.is_none() {
            // Credentials whose account is known have worked (a Database answer told it); the
            // others are claimed once they do (see `Bound::learn`).
            self.mark(
                &resolved.origin,
                &resolved.secret,
                resolved.source,
                known.is_some(),
                known.as_deref(),
                &digest,
            )
            .await;
        }
        let account = known.unwrap_or_else(|| resolved.credentials.email.clone());
        Ok(Binding::Bound(Bound {
            api: upstash.with_credentials(resolved.credentials),
            origin: resolved.origin,
            account,
            digest,
            source: resolved.source,
            secret: resolved.secret,
            resolver: self.clone(),
        }))
    }

    /// Brings the operator's marks on a credentials Secret in line: the claim for claimed
    /// sources whose credentials have `worked` (never for the operator-wide Secret, which
    /// loses a claim an earlier version put there), the learned account where one is known.
    /// Best effort: a failed write is logged and tried again on the next pass.
    async fn mark(
        &self,
        origin: &Origin,
        secret: &Arc<Secret>,
        source: Source,
        worked: bool,
        account: Option<&str>,
        digest: &str,
    ) {
        let current = self.marks_of(origin, secret);
        let wanted = Marks {
            claimed: source.claimed() && (worked || current.claimed),
            account: account
                .map(|a| (a.to_string(), digest.to_string()))
                .or(current.account.clone()),
        };
        if wanted == current {
            return;
        }
        if let Err(e) = self.write_marks(origin, secret, &wanted).await {
            tracing::warn!(secret = %origin, error = %e, "could not mark the credentials Secret")
        }
    }

    /// The marks `secret` carries, or those this process wrote if `secret` is a copy from
    /// before that write.
    fn marks_of(&self, origin: &Origin, secret: &Secret) -> Marks {
        let marked = self.inner.marked.lock().unwrap_or_else(|e| e.into_inner());
        match marked.get(origin) {
            Some((before, marks)) if secret.metadata.resource_version == *before => marks.clone(),
            _ => Marks::of(secret),
        }
    }

    /// Writes `wanted` on the Secret at `origin` unless it carries them already (checked again
    /// once no other write is under way). Returns whether it wrote.
    async fn write_marks(
        &self,
        origin: &Origin,
        secret: &Arc<Secret>,
        wanted: &Marks,
    ) -> kube::Result<bool> {
        let _one = self.inner.marking.lock().await;
        if self.marks_of(origin, secret) == *wanted {
            return Ok(false);
        }
        let Some(written) = usage::mark(&self.inner.client, origin, secret, wanted).await? else {
            return Ok(false);
        };
        self.inner
            .marked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                origin.clone(),
                (
                    secret.metadata.resource_version.clone(),
                    Marks::of(&written),
                ),
            );
        self.inner.cache.remember(origin, Some(Arc::new(written)));
        Ok(true)
    }

    /// Tells the release loop that an instance is done with its credentials.
    pub fn cleanup_finished(&self) {
        self.inner.released.notify_one();
    }

    /// Releases unused credentials Secrets until `shutdown`: shortly after each finished
    /// cleanup, and every [`RELEASE_SWEEP`] in case a notification was missed. Runs only where
    /// the controllers run (on the leader), once the instance caches are warm.
    pub async fn release_loop(
        self,
        stores: Vec<Store<CacheInstance>>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let run = async {
            tracing::debug!(stores = stores.len(), "release loop started");
            for store in &stores {
                crate::policies::wait_until_ready(store).await;
            }
            tracing::debug!("release loop: instance caches ready");
            self.wait_until_ready().await;
            tracing::debug!("release loop: credentials caches ready");
            loop {
                self.release_unused(&stores).await;
                // While a Secret's last users are being deleted, look again every second (their
                // cleanups may have run in a process that no longer runs, so no notification
                // comes); otherwise at the next cleanup or sweep.
                let claimed = self.inner.cache.claimed();
                let namespace_secret = self.inner.namespace_secret.as_deref();
                if !usage::about_to_be_unused(&claimed, namespace_secret, &stores) {
                    let _ =
                        tokio::time::timeout(RELEASE_SWEEP, self.inner.released.notified()).await;
                }
                // The finalizer of the instance whose cleanup just finished is removed after
                // the cleanup returns: give that write time to reach the cache.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        };
        tokio::select! {
            _ = run => {}
            _ = shutdown => {}
        }
    }

    /// Releases every claimed credentials Secret that no CacheInstance in `stores` uses any
    /// more. Returns how many were released.
    pub async fn release_unused(&self, stores: &[Store<CacheInstance>]) -> usize {
        let claimed = self.inner.cache.claimed();
        tracing::debug!(
            claimed = claimed.len(),
            "looking for unused credentials Secrets"
        );
        let mut released = 0;
        for origin in usage::unused(&claimed, self.inner.namespace_secret.as_deref(), stores) {
            let Some(secret) = claimed.iter().find(|s| {
                s.metadata.namespace.as_deref() == Some(&origin.namespace)
                    && s.metadata.name.as_deref() == Some(&origin.name)
            }) else {
                continue;
            };
            match self.write_marks(&origin, secret, &Marks::default()).await {
                Ok(written) => {
                    if written {
                        released += 1;
                        tracing::info!(secret = %origin, "released the credentials Secret: no CacheInstance uses it any more");
                    }
                }
                Err(e) => {
                    tracing::warn!(secret = %origin, error = %e, "could not release the credentials Secret")
                }
            }
        }
        released
    }
}

/// How often unused credentials Secrets are looked for without a notification.
pub const RELEASE_SWEEP: std::time::Duration = std::time::Duration::from_secs(10);

/// The message for credentials known to act for another account than the recorded one.
fn account_changed(id: &str, recorded: &str, current: &str, origin: &Origin) -> String {
    format!(
        "database {id} belongs to Upstash account {recorded}, but the credentials now come from {origin} for account {current}; the database is not read, changed, recreated or deleted until credentials for {recorded} are back"
    )
}

fn extract(
    secret: &Secret,
    email_key: &str,
    api_key_key: &str,
    origin: &Origin,
) -> Result<Credentials> {
    let value = |key: &str| -> Result<String> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|s| s.clone().into_bytes())
            })
            .ok_or_else(|| Error::Credentials(format!("{origin} has no key `{key}`")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::Credentials(format!("{origin} key `{key}` is not UTF-8")))?;
        let text = text.trim().to_string();
        if text.is_empty() {
            return Err(Error::Credentials(format!("{origin} key `{key}` is empty")));
        }
        Ok(text)
    };
    Ok(Credentials {
        email: value(email_key)?,
        api_key: SecretString::from(value(api_key_key)?),
    })
}

/// Why credentials for `email` (from `origin`) must not act on database `id`, recorded in
/// `status.account` as belonging to `recorded`, judged from the email alone (before any call);
/// `None` when they may. A personal account is named by its owner's email, which Upstash treats
/// case-insensitively; a team account (named by its id) is judged by [`Bound::lookup`] instead.
/// A status without a recorded account (written before the operator kept one) is taken to
/// match: the next successful pass records it.
pub fn account_mismatch(
    id: &str,
    recorded: Option<&str>,
    email: &str,
    origin: &Origin,
) -> Option<String> {
    let recorded = recorded?;
    // A team's account is named by the team's id, which an email cannot be compared with.
    if !recorded.contains('@') || identity::same_account(recorded, email) {
        return None;
    }
    Some(format!(
        "database {id} belongs to Upstash account {recorded}, but the credentials now come from {origin} for account {email}; the database is not read, changed, recreated or deleted until credentials for {recorded} are back"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use secrecy::ExposeSecret;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn origin() -> Origin {
        Origin {
            namespace: "ops".into(),
            name: "upstash".into(),
        }
    }

    #[test]
    fn reads_keys_and_trims() {
        let c = extract(
            &secret(&[("email", "a@b.c\n"), ("apiKey", " k ")]),
            "email",
            "apiKey",
            &origin(),
        )
        .unwrap();
        assert_eq!(c.email, "a@b.c");
        assert_eq!(c.api_key.expose_secret(), "k");
    }

    #[test]
    fn missing_or_empty_keys_are_explained_without_values() {
        let e = extract(&secret(&[("email", "a@b.c")]), "email", "apiKey", &origin()).unwrap_err();
        assert_eq!(e.to_string(), "Secret ops/upstash has no key `apiKey`");
        let e = extract(
            &secret(&[("email", "a@b.c"), ("apiKey", "  ")]),
            "email",
            "apiKey",
            &origin(),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "Secret ops/upstash key `apiKey` is empty");
    }

    #[test]
    fn a_database_is_only_touched_with_its_own_account() {
        assert_eq!(account_mismatch("db1", None, "a@b.c", &origin()), None);
        assert_eq!(
            account_mismatch(
                "db1",
                Some("Ops@Example.com"),
                "ops@example.com ",
                &origin()
            ),
            None
        );
        let why = account_mismatch(
            "db1",
            Some("ops@example.com"),
            "team@example.com",
            &origin(),
        )
        .unwrap();
        assert_eq!(
            why,
            "database db1 belongs to Upstash account ops@example.com, but the credentials now come from Secret ops/upstash for account team@example.com; the database is not read, changed, recreated or deleted until credentials for ops@example.com are back"
        );
    }
}
