#!/usr/bin/env bash
# Builds tools/testenv (etcd + kube-apiserver + kube-controller-manager in one binary) and
# caches the result under a key made of go.mod, go.sum, the Go sources and `go version`,
# so a rebuild happens only when one of them changes.
#
#   tools/testenv/build.sh            # Kubernetes of ./go.mod; prints the binary's path on its last line
#   tools/testenv/build.sh v1.31      # Kubernetes of ./v1.31/go.mod (an older minor), same sources
#
# A version directory holds only go.mod and go.sum, used with `go build -modfile`; the sources
# are shared, with the few API differences in files tagged `k8s_v1_<minor>` (the build passes
# that tag for the minor it builds).
#
# Output: $CACHE/testenv/<key>/testenv, linked from tools/testenv/bin/testenv (or
# bin/testenv-<version dir>), where CACHE is $UPSTASH_OPERATOR_CACHE, else
# $XDG_CACHE_HOME/upstash-operator, else ~/.cache/upstash-operator. A cold build downloads
# ~0.2 GB of Go modules and compiles for 10-20 minutes on 2 cores.
set -euo pipefail

export GOTOOLCHAIN=local
export CGO_ENABLED=0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if ! command -v go >/dev/null 2>&1; then
    echo "build.sh: go is not installed; testenv needs Go $(sed -n 's/^go //p' go.mod) or newer" >&2
    exit 1
fi

modfile=go.mod
link="$here/bin/testenv"
if [[ $# -gt 0 ]]; then
    if [[ ! "$1" =~ ^v1\.[0-9]+$ || ! -f "$1/go.mod" ]]; then
        echo "build.sh: '$1' is not a version directory of tools/testenv (e.g. v1.31 with a go.mod)" >&2
        exit 1
    fi
    modfile="$1/go.mod"
    link="$here/bin/testenv-$1"
fi
modsum="${modfile%.mod}.sum"

cache_root="${UPSTASH_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/upstash-operator}"
key="$(
    {
        go version
        for f in "$modfile" "$modsum" $(ls -- *.go | LC_ALL=C sort); do
            printf '%s\n' "$f"
            cat -- "$f"
        done
    } | sha256sum | cut -c1-24
)"
out_dir="$cache_root/testenv/$key"
out="$out_dir/testenv"

if [[ -x "$out" ]]; then
    echo "build.sh: inputs unchanged, reusing cached $out ($(sed -n 's#^\tk8s.io/kubernetes \(v[0-9.]*\)$#Kubernetes \1#p' "$modfile"))" >&2
else
    k8s_version="$(go list -modfile="$modfile" -m -f '{{.Version}}' k8s.io/kubernetes)"
    # The module's publication time, not the wall clock: the build stays reproducible.
    k8s_time="$(go list -modfile="$modfile" -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
    if [[ ! "$k8s_version" =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]]; then
        echo "build.sh: unexpected k8s.io/kubernetes version '$k8s_version' in go.mod" >&2
        exit 1
    fi
    major="${BASH_REMATCH[1]}"
    minor="${BASH_REMATCH[2]}"
    v=k8s.io/component-base/version
    ldflags="-s -w -X $v.gitVersion=$k8s_version -X $v.gitMajor=$major -X $v.gitMinor=$minor"
    # The module proxy does not record the release commit, so gitCommit is left empty.
    ldflags+=" -X $v.gitCommit= -X $v.gitTreeState=clean -X $v.buildDate=$k8s_time"
    echo "build.sh: building testenv with Kubernetes $k8s_version ($(go version | cut -d' ' -f3)); a cold build takes 10-20 minutes" >&2
    mkdir -p "$out_dir"
    tmp="$(mktemp "$out_dir/testenv.XXXXXX")"
    trap 'rm -f "$tmp"' EXIT
    go build -modfile="$modfile" -tags "k8s_v1_$minor" -trimpath -ldflags "$ldflags" -o "$tmp" .
    mv -f "$tmp" "$out"
    trap - EXIT
    echo "build.sh: built $out ($(du -h "$out" | cut -f1))" >&2
fi

mkdir -p "$here/bin"
ln -sfn "$out" "$link"
echo "$link"
