#!/bin/sh
# System programs the test suite starts for real: redis-server (shared state across
# replicas), Debian's Chromium (the playground and dashboard browser tests) and nginx
# (deploy/nginx.conf in front of two replicas; the test runs its own, no service needed)
# and wrk (bench/scaling/run.sh, which also uses nginx as a fixed upstream), and PostgreSQL
# (the durable store's tests start a throwaway cluster of their own: tests/postgres_server.py;
# Debian puts initdb in /usr/lib/postgresql/<N>/bin, off PATH).
# Node and npm run the official JavaScript SDKs' end-to-end tests, at the versions pinned in
# tests/node/package-lock.json (installed below with `npm ci`, every time).
# Installs only what is missing; needs root or sudo for apt-get.
set -eu
need=""
command -v redis-server >/dev/null 2>&1 || need="$need redis-server"
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql"
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need="$need nginx"
command -v wrk >/dev/null 2>&1 || need="$need wrk"
command -v npm >/dev/null 2>&1 || need="$need nodejs npm"
if [ -n "$need" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
npm ci --prefix "$(dirname "$0")/node" --no-audit --no-fund --loglevel=error
