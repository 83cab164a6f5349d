//! Deployment tests: the Helm chart, the plain manifests, the Argo CD health checks, the
//! container image, and the operator installed by the chart on a real control plane (its own,
//! from `testkit::cluster()`), with the chart's RBAC and leader election, and `helm upgrade` from
//! the previous chart release with instances in place (on a control plane of its own).
//!
//! helm and kubectl come from `scripts/tools.sh` (`HELM_BIN`, `KUBECTL_BIN`; `scripts/test.sh`
//! sets both).

mod argocd;
mod chart;
mod guardrails;
mod image;
mod install;
mod leader;
mod manifests;
mod monitoring;
mod support;
mod upgrade;
