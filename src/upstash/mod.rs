//! Upstash's Developer API and REST data API, as the operator uses them.
//!
//! [`client::UpstashClient`] is the only way the operator talks to Upstash: every call goes
//! through a global rate limit, the circuit breaker, a timeout and the request metrics.

pub mod breaker;
pub mod client;
pub mod error;
pub mod limiter;
pub mod types;

pub use client::{Credentials, UpstashApi, UpstashClient};
pub use error::UpstashError;
pub use types::{AuditLogEntry, Budget, CreateDatabase, Database, DatabaseStats, ListedDatabase};
