#!/bin/sh
# System programs the test suite starts for real: redis-server (shared state across
# replicas), Debian's Chromium (the playground and dashboard browser tests) and nginx
# (deploy/nginx.conf in front of two replicas; the test runs its own, no service needed)
# and wrk (bench/scaling/run.sh, which also uses nginx as a fixed upstream), and PostgreSQL
# (the durable store's tests start a throwaway cluster of their own: tests/postgres_server.py;
# Debian puts initdb in /usr/lib/postgresql/<N>/bin, off PATH).
# Installs only what is missing; needs root or sudo for apt-get.
set -eu
# The official Node SDKs the end-to-end tests run as clients (Node 20+ and npm needed).
npm ci --prefix "$(dirname "$0")/node" --no-audit --no-fund >/dev/null
need=""
command -v redis-server >/dev/null 2>&1 || need="$need redis-server"
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql"
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need="$need nginx"
command -v wrk >/dev/null 2>&1 || need="$need wrk"
[ -z "$need" ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
