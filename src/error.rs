//! The reconcilers' error type and its categories. Each category gives the metric label
//! (`upstash_operator_reconcile_failures_total{reason}`) and the condition reason of a failure;
//! messages carry what went wrong for humans (the API server's or Upstash's own words) and never
//! a credential.

use std::time::Duration;

use crate::upstash::UpstashError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{}", kube_message(.0))]
    Kube(#[from] kube::Error),

    /// An Upstash call failed.
    #[error("{0}")]
    Upstash(#[from] UpstashError),

    /// No usable Upstash credentials for the object.
    #[error("{0}")]
    Credentials(String),

    /// The spec cannot be acted on (beyond what admission validation catches).
    #[error("{0}")]
    InvalidSpec(crate::crd::validation::Problem),

    /// The object has no namespace or name.
    #[error("object without {0}")]
    MissingObjectKey(&'static str),

    /// A write conditional on the cached copy's resourceVersion was refused: the object changed
    /// since the copy was taken, so the decision built on it is taken again on a fresh read.
    #[error("the object changed since it was read; reading it again")]
    CacheBehind,

    /// No template render worker could be run (see [`crate::templates`]).
    #[error("{0}")]
    TemplateEngine(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is: one place decides both how it is counted and how it
/// is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCategory {
    KubernetesApi,
    UpstashUnauthorized,
    UpstashNotFound,
    UpstashRejected,
    UpstashRateLimited,
    UpstashServerError,
    UpstashTimeout,
    UpstashUnreachable,
    UpstashBadResponse,
    /// The circuit breaker is open: no call was made.
    CircuitOpen,
    Credentials,
    InvalidSpec,
    MissingObjectKey,
    TemplateEngine,
}

impl ErrorCategory {
    /// The metric label.
    pub fn metric_label(self) -> &'static str {
        match self {
            ErrorCategory::KubernetesApi => "KubernetesAPI",
            ErrorCategory::UpstashUnauthorized => "Unauthorized",
            ErrorCategory::UpstashNotFound => "NotFound",
            ErrorCategory::UpstashRejected => "Rejected",
            ErrorCategory::UpstashRateLimited => "RateLimited",
            ErrorCategory::UpstashServerError => "ServerError",
            ErrorCategory::UpstashTimeout => "Timeout",
            ErrorCategory::UpstashUnreachable => "Unreachable",
            ErrorCategory::UpstashBadResponse => "BadResponse",
            ErrorCategory::CircuitOpen => "CircuitOpen",
            ErrorCategory::Credentials => "Credentials",
            ErrorCategory::InvalidSpec => "InvalidSpec",
            ErrorCategory::MissingObjectKey => "MissingObjectKey",
            ErrorCategory::TemplateEngine => "TemplateEngine",
        }
    }

    /// The reason of the `Ready` condition (and of the Warning Event) that reports it.
    pub fn condition_reason(self) -> &'static str {
        match self {
            ErrorCategory::UpstashUnauthorized => "UpstashUnauthorized",
            ErrorCategory::UpstashRejected => "UpstashRejected",
            ErrorCategory::UpstashNotFound
            | ErrorCategory::UpstashRateLimited
            | ErrorCategory::UpstashServerError
            | ErrorCategory::UpstashTimeout
            | ErrorCategory::UpstashUnreachable
            | ErrorCategory::UpstashBadResponse
            | ErrorCategory::CircuitOpen => "UpstashUnavailable",
            ErrorCategory::Credentials => "CredentialsMissing",
            ErrorCategory::InvalidSpec => "InvalidSpec",
            ErrorCategory::KubernetesApi
            | ErrorCategory::MissingObjectKey
            | ErrorCategory::TemplateEngine => "ReconcileError",
        }
    }
}

impl From<&UpstashError> for ErrorCategory {
    fn from(e: &UpstashError) -> Self {
        match e {
            UpstashError::Unauthorized { .. } => ErrorCategory::UpstashUnauthorized,
            UpstashError::NotFound { .. } => ErrorCategory::UpstashNotFound,
            UpstashError::Rejected { .. } => ErrorCategory::UpstashRejected,
            UpstashError::RateLimited { .. } => ErrorCategory::UpstashRateLimited,
            UpstashError::Server { .. } => ErrorCategory::UpstashServerError,
            UpstashError::Timeout(_) => ErrorCategory::UpstashTimeout,
            UpstashError::Connect(_) | UpstashError::Transport(_) => {
                ErrorCategory::UpstashUnreachable
            }
            UpstashError::Decode(_) => ErrorCategory::UpstashBadResponse,
            UpstashError::CircuitOpen(_) => ErrorCategory::CircuitOpen,
        }
    }
}

impl Error {
    /// The category of this failure.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Kube(_) => ErrorCategory::KubernetesApi,
            Error::Upstash(e) => e.into(),
            Error::Credentials(_) => ErrorCategory::Credentials,
            Error::InvalidSpec(_) => ErrorCategory::InvalidSpec,
            Error::MissingObjectKey(_) => ErrorCategory::MissingObjectKey,
            Error::CacheBehind => ErrorCategory::KubernetesApi,
            Error::TemplateEngine(_) => ErrorCategory::TemplateEngine,
        }
    }

    /// A short, fixed label for metrics (`upstash_operator_reconcile_failures_total{reason}`).
    pub fn metric_label(&self) -> &'static str {
        self.category().metric_label()
    }

    /// How long Upstash asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Upstash(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// What the API server said, without the `Debug` dump of its answer.
pub fn kube_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                "no message"
            } else {
                status.message.as_str()
            };
            match (status.code, status.reason.as_str()) {
                (0, "") => format!("the Kubernetes API refused the request: {message}"),
                (code, "") => format!("the Kubernetes API refused the request ({code}): {message}"),
                (code, reason) => {
                    format!("the Kubernetes API refused the request ({code} {reason}): {message}")
                }
            }
        }
        other => format!("Kubernetes API error: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_category_has_one_label_and_one_reason() {
        let cases: [(Error, &str, &str); 6] = [
            (
                UpstashError::Unauthorized {
                    status: 401,
                    message: "no".into(),
                }
                .into(),
                "Unauthorized",
                "UpstashUnauthorized",
            ),
            (
                UpstashError::Rejected {
                    status: 400,
                    message: "bad plan".into(),
                }
                .into(),
                "Rejected",
                "UpstashRejected",
            ),
            (
                UpstashError::CircuitOpen(Duration::from_secs(3)).into(),
                "CircuitOpen",
                "UpstashUnavailable",
            ),
            (
                UpstashError::Timeout(Duration::from_secs(3)).into(),
                "Timeout",
                "UpstashUnavailable",
            ),
            (
                Error::Credentials("gone".into()),
                "Credentials",
                "CredentialsMissing",
            ),
            (
                Error::InvalidSpec(crate::crd::validation::Problem {
                    check: crate::crd::validation::Check::RotationTooFrequent,
                    message: "bad".into(),
                }),
                "InvalidSpec",
                "InvalidSpec",
            ),
        ];
        for (error, label, reason) in cases {
            assert_eq!(error.metric_label(), label, "{error}");
            assert_eq!(error.category().condition_reason(), reason, "{error}");
        }
        assert_eq!(
            Error::Upstash(UpstashError::CircuitOpen(Duration::from_secs(3))).category(),
            ErrorCategory::CircuitOpen
        );
    }

    #[test]
    fn kubernetes_refusals_carry_the_api_servers_message_not_a_dump() {
        let status = kube::core::Status::failure(
            "Secret \"x\" is invalid: metadata.labels: Invalid value",
            "Invalid",
        )
        .with_code(422);
        let e = Error::Kube(kube::Error::Api(Box::new(status)));
        assert_eq!(
            e.to_string(),
            "the Kubernetes API refused the request (422 Invalid): Secret \"x\" is invalid: metadata.labels: Invalid value"
        );
        assert_eq!(e.category().condition_reason(), "ReconcileError");
    }
}
