//! Test support for the workspace's integration tests: a real Kubernetes control plane,
//! a fresh namespace per test, polling helpers, ServiceAccount tokens and child processes
//! whose output is kept in log files, and witnesses (see [`witness`]) for tests that assert
//! that nothing happened.
//!
//! # The control plane
//!
//! [`cluster()`] starts `tools/testenv/bin/testenv` (etcd, kube-apiserver and
//! kube-controller-manager built from upstream Kubernetes, see `tools/testenv/`) the first
//! time it is called in a test process and returns the same [`Cluster`] afterwards. Put a
//! crate's integration tests in one test binary (`tests/integration/main.rs` with modules)
//! so that one control plane serves all of them; tests share it concurrently, each in its
//! own [`TestNamespace`]. The control plane exits with the test process (its stdin is a
//! pipe held by this crate).
//!
//! Environment, following controller-runtime's envtest conventions:
//!
//! * `USE_EXISTING_CLUSTER=true`: use the cluster of `KUBECONFIG` (or `~/.kube/config`)
//!   instead of starting one. Never the default, so tests cannot touch a developer's
//!   current cluster by accident.
//! * `KUBEBUILDER_ASSETS=DIR`: when `DIR` holds `kube-apiserver` and `etcd` (and optionally
//!   `kube-controller-manager`), testenv runs those binaries instead of its built-in ones.
//! * `TESTENV_BIN=PATH`: the testenv binary to run (default `tools/testenv/bin/testenv`,
//!   built with `tools/testenv/build.sh` when missing).
//! * `TESTENV_KUBERNETES=1.31`: without `TESTENV_BIN`, the control plane of an older
//!   Kubernetes minor (`tools/testenv/bin/testenv-v1.31`, from `tools/testenv/v1.31/go.mod`).
//! * `CARGO_TARGET_DIR`: logs go to `$CARGO_TARGET_DIR/test-logs/` (default `target/`).
//!
//! # Runtimes
//!
//! Every `#[tokio::test]` has its own runtime, and a [`kube::Client`] must not outlive the
//! runtime it was created on. [`Cluster::client`] therefore builds a new client each time;
//! create clients inside the test that uses them.
//!
//! # Example
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, PostParams};
//! use std::time::Duration;
//!
//! #[tokio::test]
//! async fn creates_a_config_map() {
//!     let cluster = testkit::cluster().await;
//!     let ns = cluster.namespace("configmaps").await;
//!     let api: Api<ConfigMap> = Api::namespaced(ns.client().await, ns.name());
//!     let cm = serde_json::from_value(serde_json::json!({"metadata": {"name": "a"}})).unwrap();
//!     api.create(&PostParams::default(), &cm).await.unwrap();
//!     testkit::wait_for("config map a", Duration::from_secs(10), || async {
//!         api.get_opt("a").await.ok().flatten()
//!     })
//!     .await;
//! }
//! ```

mod cluster;
pub mod emulator;
mod namespace;
pub mod operator;
mod process;
mod token;
mod wait;
pub mod witness;

pub use cluster::{Cluster, cluster, target_dir, workspace_root};
pub use namespace::TestNamespace;
pub use process::{Process, ProcessBuilder, cargo_bin};
pub use token::service_account_token;
pub use wait::{WaitOutcome, await_condition, wait_for, wait_for_condition};
