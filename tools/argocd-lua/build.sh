#!/usr/bin/env bash
# Builds argocd-lua (main.go): Argo CD's own Lua health-check runtime (github.com/argoproj/argo-cd
# util/lua, the version pinned in go.mod, from the Go module proxy) behind a small command line,
# and caches it under a key made of main.go, go.mod, go.sum, build.sh and `go version`, so a
# rebuild happens only when one of them changes. The deploy tests run the shipped health checks
# (deploy/argocd/) on their test cases with it.
#
#   tools/argocd-lua/build.sh           # prints the binary's path on its last line
#
# Output: $CACHE/argocd-lua/<key>/argocd-lua, linked from tools/argocd-lua/bin/argocd-lua, where
# CACHE is $UPSTASH_OPERATOR_CACHE, else $XDG_CACHE_HOME/upstash-operator, else
# ~/.cache/upstash-operator.
set -euo pipefail

export GOTOOLCHAIN=local
export CGO_ENABLED=0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if ! command -v go >/dev/null 2>&1; then
    echo "build.sh: go is not installed; argocd-lua needs Go $(sed -n 's/^go //p' go.mod) or newer" >&2
    exit 1
fi

cache_root="${UPSTASH_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/upstash-operator}"
key="$(
    {
        go version
        for f in main.go go.mod go.sum build.sh; do
            printf '%s\n' "$f"
            cat -- "$f"
        done
    } | sha256sum | cut -c1-24
)"
out_dir="$cache_root/argocd-lua/$key"
out="$out_dir/argocd-lua"
link="$here/bin/argocd-lua"

if [[ -x "$out" ]]; then
    echo "build.sh: inputs unchanged, reusing cached $out" >&2
else
    echo "build.sh: building argocd-lua with Argo CD $(go list -m -f '{{.Version}}' github.com/argoproj/argo-cd/v3) ($(go version | cut -d' ' -f3))" >&2
    mkdir -p "$out_dir"
    tmp="$(mktemp "$out_dir/argocd-lua.XXXXXX")"
    trap 'rm -f "$tmp"' EXIT
    go build -trimpath -ldflags "-s -w" -o "$tmp" .
    mv -f "$tmp" "$out"
    trap - EXIT
    echo "build.sh: built $out ($(du -h "$out" | cut -f1))" >&2
fi

mkdir -p "$here/bin"
ln -sfn "$out" "$link"
echo "$link"
