//! Where a CacheInstance's Upstash credentials come from: its own `spec.credentials`, else the
//! namespace's credentials Secret, else the operator-wide Secret.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use secrecy::SecretString;

use crate::{
    crd::CacheInstance,
    error::{Error, Result},
    upstash::{Credentials, UpstashApi, UpstashClient},
};

/// Default data key of the account email.
pub const EMAIL_KEY: &str = "email";
/// Default data key of the Developer API key.
pub const API_KEY_KEY: &str = "apiKey";

/// Which Secret supplied the credentials (for messages; never the values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret {}/{}", self.namespace, self.name)
    }
}

/// The Developer API bound to the account a CacheInstance works with.
pub struct Bound {
    /// Calls made with the instance's credentials.
    pub api: UpstashApi,
    /// The Secret the credentials came from.
    pub origin: Origin,
    /// The account the credentials act for, as recorded in `status.account`.
    pub account: String,
}

/// What binding an instance to its credentials found.
pub enum Binding {
    /// The credentials may act on the instance's database.
    Bound(Bound),
    /// The database belongs to another account than these credentials; the message says which
    /// and what to do. Nothing may be read, changed, recreated or deleted.
    AccountChanged(String),
}

/// Resolves credentials by reading Secrets.
#[derive(Clone)]
pub struct CredentialResolver {
    client: Client,
    /// Operator-wide Secret `(namespace, name)`.
    operator_secret: (String, String),
    /// Per-namespace Secret name, if that lookup is enabled.
    namespace_secret: Option<String>,
}

impl CredentialResolver {
    pub fn new(
        client: Client,
        operator_secret: (String, String),
        namespace_secret: Option<String>,
    ) -> Self {
        Self {
            client,
            operator_secret,
            namespace_secret: namespace_secret.filter(|s| !s.is_empty()),
        }
    }

    /// The credentials for `instance`, and where they came from.
    pub async fn for_instance(&self, instance: &CacheInstance) -> Result<(Credentials, Origin)> {
        let namespace = instance
            .metadata
            .namespace
            .clone()
            .ok_or(Error::MissingObjectKey("namespace"))?;
        if let Some(reference) = instance.spec.credentials.as_ref().map(|c| &c.secret_ref) {
            let origin = Origin {
                namespace: namespace.clone(),
                name: reference.name.clone(),
            };
            let secret = self.get(&origin).await?.ok_or_else(|| {
                Error::Credentials(format!(
                    "spec.credentials names {origin}, which does not exist"
                ))
            })?;
            let creds = extract(
                &secret,
                reference.email_key.as_deref().unwrap_or(EMAIL_KEY),
                reference.api_key_key.as_deref().unwrap_or(API_KEY_KEY),
                &origin,
            )?;
            return Ok((creds, origin));
        }
        if let Some(name) = &self.namespace_secret {
            let origin = Origin {
                namespace,
                name: name.clone(),
            };
            // Not readable (e.g. the operator runs with namespaced RBAC) counts as absent.
            if let Ok(Some(secret)) = self.get(&origin).await {
                return Ok((extract(&secret, EMAIL_KEY, API_KEY_KEY, &origin)?, origin));
            }
        }
        let origin = Origin {
            namespace: self.operator_secret.0.clone(),
            name: self.operator_secret.1.clone(),
        };
        let secret = self.get(&origin).await?.ok_or_else(|| {
            Error::Credentials(format!(
                "no Upstash credentials: create {origin} with the keys `{EMAIL_KEY}` and `{API_KEY_KEY}`, or set spec.credentials"
            ))
        })?;
        Ok((extract(&secret, EMAIL_KEY, API_KEY_KEY, &origin)?, origin))
    }

    /// Resolves the instance's credentials, checks them against the account its status records,
    /// and binds the Developer API to them: the one way every part of the operator gets an
    /// account to call Upstash with.
    pub async fn bind(&self, upstash: &UpstashClient, instance: &CacheInstance) -> Result<Binding> {
        let (creds, origin) = self.for_instance(instance).await?;
        let status = instance.status.as_ref();
        if let Some(id) = status.and_then(|s| s.database_id.as_deref())
            && let Some(why) = account_mismatch(
                id,
                status.and_then(|s| s.account.as_deref()),
                &creds.email,
                &origin,
            )
        {
            return Ok(Binding::AccountChanged(why));
        }
        let account = creds.email.clone();
        Ok(Binding::Bound(Bound {
            api: upstash.with_credentials(creds),
            origin,
            account,
        }))
    }

    async fn get(&self, origin: &Origin) -> Result<Option<Secret>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &origin.namespace);
        api.get_opt(&origin.name).await.map_err(|e| match e {
            kube::Error::Api(status) if status.code == 403 => Error::Credentials(format!(
                "the operator may not read {origin}: {}",
                status.message
            )),
            other => Error::Kube(other),
        })
    }
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
/// `status.account` as belonging to `recorded`; `None` when they may. Upstash treats emails
/// case-insensitively. A status without a recorded account (written before the operator kept
/// one) is taken to match: the next successful pass records it.
pub fn account_mismatch(
    id: &str,
    recorded: Option<&str>,
    email: &str,
    origin: &Origin,
) -> Option<String> {
    let recorded = recorded?;
    if recorded.trim().eq_ignore_ascii_case(email.trim()) {
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
