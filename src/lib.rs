//! upstash-operator: Upstash Redis caches as Kubernetes resources.
//!
//! `CacheInstance` provisions an Upstash Redis database and writes its connection Secret;
//! `CachePolicy` watches the instances it selects and raises Events when thresholds are crossed.
#![forbid(unsafe_code)]

pub mod acl;
pub mod cli;
pub mod cluster_id;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod credentials;
pub mod digest;
pub mod error;
pub mod events;
pub mod guardrails;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod monitor;
pub mod names;
pub mod operator;
pub mod plugin;
pub mod policies;
pub mod telemetry;
pub mod templates;
pub mod upstash;

pub use error::{Error, Result};
