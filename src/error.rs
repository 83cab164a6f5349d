//! The reconcilers' error type. Each variant maps to a fixed metric label and condition reason;
//! messages carry what went wrong for humans and never a credential.

use std::time::Duration;

use crate::upstash::UpstashError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API error: {}", kube_message(.0))]
    Kube(#[from] kube::Error),

    /// An Upstash call failed.
    #[error("{0}")]
    Upstash(#[from] UpstashError),

    /// No usable Upstash credentials for the object.
    #[error("{0}")]
    Credentials(String),

    /// The spec breaks a check that admission normally makes (see `crd::validation`).
    #[error("{0}")]
    InvalidSpec(crate::crd::validation::Problem),

    /// The finalizer helper failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    /// The object has no namespace or name.
    #[error("object without {0}")]
    MissingObjectKey(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the API server said, for conditions and Events: its message and reason for a refused
/// request (never the whole response structure), else the client error.
pub fn kube_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => {
            let reason = status.reason.trim();
            if reason.is_empty() {
                format!("{} ({})", status.message, status.code)
            } else {
                format!("{} ({reason}, {})", status.message, status.code)
            }
        }
        other => other.to_string(),
    }
}

impl Error {
    /// A short, fixed label for metrics (`upstash_operator_reconcile_failures_total{reason}`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesAPI",
            Error::Upstash(e) => e.label(),
            Error::Credentials(_) => "Credentials",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "Finalizer",
            },
            Error::MissingObjectKey(_) => "MissingObjectKey",
        }
    }

    /// How long Upstash asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Upstash(e) => e.retry_after(),
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.retry_after(),
                _ => None,
            },
            _ => None,
        }
    }
}
