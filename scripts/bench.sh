#!/usr/bin/env bash
# Benchmarks at scale and the chaos run (not part of scripts/test.sh): builds the release
# binaries (operator, emulator, bench) and the test control plane (cached), then runs
# upstash-bench. Results are printed as Markdown and written to $CARGO_TARGET_DIR/bench/
# (default target/bench/); see BENCHMARKS.md.
#
#   scripts/bench.sh                          # all: scale (N = 100 and 1,000) and chaos (N = 200)
#   scripts/bench.sh scale --n 100,1000 --latency-ms 50 --concurrency 32 --upstash-rate-limit 100
#   scripts/bench.sh chaos --n 200 --fault-rate 0.2 --kills 6 --delete-kills 3 --seed 7
#   scripts/bench.sh scale --help             # every option
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export GOTOOLCHAIN=local

cargo build --release --locked -p upstash-operator -p upstash-emulator -p upstash-bench

# A real kube-apiserver, etcd and kube-controller-manager (a cold build takes 10-20 minutes).
TESTENV_BIN="$(tools/testenv/build.sh | tail -n1)"
export TESTENV_BIN

target="${CARGO_TARGET_DIR:-$root/target}"
exec "$target/release/upstash-bench" "$@"
