//! Tokens for ServiceAccounts, to run requests (or the operator) with exactly the RBAC a
//! ServiceAccount is granted.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::{Api, PostParams};

/// Mints a token for ServiceAccount `ns/sa` with the TokenRequest API (the `token`
/// subresource), valid for `audiences` (empty: the API server's own audience) and for
/// `expiration` (the API server requires at least 10 minutes).
///
/// Use it with [`crate::Cluster::client_for_token`], or hand it to a child process.
pub async fn service_account_token(
    client: Client,
    ns: &str,
    sa: &str,
    audiences: &[&str],
    expiration: Duration,
) -> Result<String, kube::Error> {
    let api: Api<ServiceAccount> = Api::namespaced(client, ns);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            expiration_seconds: Some(expiration.as_secs().try_into().unwrap_or(i64::MAX)),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let response = api
        .create_token_request(sa, &PostParams::default(), &request)
        .await?;
    Ok(response
        .status
        .map(|s| s.token)
        .expect("a TokenRequest response carries a status with the token"))
}
