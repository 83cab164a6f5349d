#!/usr/bin/env bash
# Runs the README's first command, `scripts/run-local.sh`, as a new user would: from a clean clone
# of this repository at HEAD, with the machine's CA settings as they are (npm's cafile,
# NODE_EXTRA_CA_CERTS, SSL_CERT_FILE, a company proxy's CA: nothing here sets or clears them) and
# an empty npm cache, so every npm download really happens. The local control plane and the
# emulator are used (KUBECONFIG and Upstash credentials are cleared). The cached control plane
# (~/.cache/upstash-operator) and this checkout's cargo target directory are reused
# (CARGO_TARGET_DIR), so nothing is rebuilt that CI already built.
#
#   scripts/check-run-local.sh        # prints the time the run took on its last line
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/run-local-check.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
git clone --quiet --no-hardlinks "$root" "$tmp/repo"
git -C "$tmp/repo" log -1 --format='clean clone at %h %s'
mkdir "$tmp/npm-cache"

started=$SECONDS
status=0
(
    cd "$tmp/repo"
    env -u KUBECONFIG -u UPSTASH_EMAIL -u UPSTASH_API_KEY \
        npm_config_cache="$tmp/npm-cache" CARGO_TARGET_DIR="$target" \
        scripts/run-local.sh
) || status=$?
elapsed=$((SECONDS - started))
if ((status != 0)); then
    echo "scripts/run-local.sh from a clean clone failed (exit $status) after ${elapsed}s" >&2
    exit "$status"
fi
# The clean clone had no node_modules, so the clients were installed from the registry with the
# empty cache.
if [[ ! -d "$tmp/npm-cache/_cacache" ]]; then
    echo "npm downloaded nothing into the empty cache: the clean clone's npm ci did not run" >&2
    exit 1
fi
echo "scripts/run-local.sh from a clean clone passed in ${elapsed}s (npm cache: $(du -sh "$tmp/npm-cache" | cut -f1))"
