#!/usr/bin/env bash
# Starts a throw-away Kubernetes control plane for local runs and prints its kubeconfig:
#
#   scripts/testenv.sh                 # Ctrl-C to stop; everything is removed on exit
#   export KUBECONFIG=...              # in another shell, as printed
#
# Extra arguments go to testenv (e.g. --verbose, --keep); see `tools/testenv/bin/testenv -h`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$("$root/tools/testenv/build.sh" | tail -n1)"

# testenv prints one JSON line when ready; turn it into something a person can use.
# It runs until Ctrl-C/SIGTERM (--no-stdin-watch: a terminal's stdin is not a lifeline, and
# reading it from a background job would stop the process). `exec` makes this script's
# process testenv itself, so signals sent to the script reach it.
exec "$bin" --no-stdin-watch "$@" > >(while IFS= read -r line; do
    kubeconfig="$(printf '%s' "$line" | sed -n 's/.*"kubeconfig":"\([^"]*\)".*/\1/p')"
    server="$(printf '%s' "$line" | sed -n 's/.*"server":"\([^"]*\)".*/\1/p')"
    version="$(printf '%s' "$line" | sed -n 's/.*"version":"\([^"]*\)".*/\1/p')"
    echo "Kubernetes $version at $server (Ctrl-C to stop)"
    echo "export KUBECONFIG=$kubeconfig"
done)
