#!/usr/bin/env bash
# Builds Prometheus's promtool from the Go module proxy (the version pinned in go.mod) and caches
# it under a key made of go.mod, go.sum and `go version`, so a rebuild happens only when one of
# them changes. The tests use it to run `promtool test rules` on the chart's PrometheusRule.
#
#   tools/promtool/build.sh           # prints the binary's path on its last line
#
# Output: $CACHE/promtool/<key>/promtool, linked from tools/promtool/bin/promtool, where CACHE
# is $UPSTASH_OPERATOR_CACHE, else $XDG_CACHE_HOME/upstash-operator, else
# ~/.cache/upstash-operator. The service-discovery plugins are left out (`remove_all_sd`):
# rule tests need none of them, and the build takes about 2 minutes on 2 cores.
set -euo pipefail

export GOTOOLCHAIN=local
export CGO_ENABLED=0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if ! command -v go >/dev/null 2>&1; then
    echo "build.sh: go is not installed; promtool needs Go $(sed -n 's/^go //p' go.mod) or newer" >&2
    exit 1
fi

cache_root="${UPSTASH_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/upstash-operator}"
key="$(
    {
        go version
        for f in go.mod go.sum build.sh; do
            printf '%s\n' "$f"
            cat -- "$f"
        done
    } | sha256sum | cut -c1-24
)"
out_dir="$cache_root/promtool/$key"
out="$out_dir/promtool"
link="$here/bin/promtool"

if [[ -x "$out" ]]; then
    echo "build.sh: inputs unchanged, reusing cached $out" >&2
else
    module_version="$(go list -m -f '{{.Version}}' github.com/prometheus/prometheus)"
    # Prometheus 3.x publishes its Go module as v0.3MM.P for release 3.MM.P.
    if [[ ! "$module_version" =~ ^v0\.3([0-9]{2})\.([0-9]+)$ ]]; then
        echo "build.sh: unexpected github.com/prometheus/prometheus version '$module_version' in go.mod" >&2
        exit 1
    fi
    release="3.$((10#${BASH_REMATCH[1]})).${BASH_REMATCH[2]}"
    v=github.com/prometheus/common/version
    ldflags="-s -w -X $v.Version=$release -X $v.Branch=module -X $v.Revision=$module_version"
    echo "build.sh: building promtool $release ($(go version | cut -d' ' -f3))" >&2
    mkdir -p "$out_dir"
    tmp="$(mktemp "$out_dir/promtool.XXXXXX")"
    trap 'rm -f "$tmp"' EXIT
    go build -trimpath -tags remove_all_sd -ldflags "$ldflags" -o "$tmp" github.com/prometheus/prometheus/cmd/promtool
    mv -f "$tmp" "$out"
    trap - EXIT
    echo "build.sh: built $out ($(du -h "$out" | cut -f1))" >&2
fi

mkdir -p "$here/bin"
ln -sfn "$out" "$link"
echo "$link"
