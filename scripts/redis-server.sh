#!/usr/bin/env bash
# Finds the Redis server the emulator runs databases on (redis-server, or valkey-server, or
# $UPSTASH_EMULATOR_REDIS_SERVER) and prints its path; installs Debian's redis-server with apt
# when none is found and this runs as root. Says what to do otherwise.
set -euo pipefail

find_server() {
    if [[ -n "${UPSTASH_EMULATOR_REDIS_SERVER:-}" ]]; then
        command -v "$UPSTASH_EMULATOR_REDIS_SERVER" 2>/dev/null && return 0
        echo "UPSTASH_EMULATOR_REDIS_SERVER=$UPSTASH_EMULATOR_REDIS_SERVER is not an executable" >&2
        return 2
    fi
    command -v redis-server 2>/dev/null || command -v valkey-server 2>/dev/null
}

if path="$(find_server)"; then
    echo "$path"
    exit 0
elif [[ $? -eq 2 ]]; then
    exit 1
fi

if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "redis-server is missing: installing Debian's package (apt-get install redis-server)" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } >&2; then
        echo "installing redis-server with apt-get failed (see above)" >&2
        exit 1
    fi
    if path="$(find_server)"; then
        echo "$path"
        exit 0
    fi
    echo "apt-get installed redis-server but it is not on PATH" >&2
    exit 1
fi
echo "no Redis server found: the emulator needs redis-server (Debian/Ubuntu: sudo apt-get install redis-server;" \
    "macOS: brew install redis) or valkey-server, or UPSTASH_EMULATOR_REDIS_SERVER=/path/to/redis-server" >&2
exit 1
