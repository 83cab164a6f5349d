//! upstash-operator: Upstash Redis caches as Kubernetes resources.
//!
//! `CacheInstance` provisions an Upstash Redis database and writes its connection Secret;
//! `CachePolicy` watches the instances it selects and raises Events when thresholds are crossed.
#![forbid(unsafe_code)]

pub mod crd;
pub mod crdgen;
pub mod metrics;
pub mod upstash;
