#!/usr/bin/env bash
# Installs the optional peers of bench/peers/run.py, each in its own folder, from PyPI and
# npm only:
#   bash bench/peers/install.sh            # both
#   bash bench/peers/install.sh litellm    # or only one: litellm | portkey
# Where: $PEERS_DIR, default ~/.cache/aiogw-bench-peers (run.py looks there too).
# Versions: $LITELLM_VERSION, $PORTKEY_VERSION (the ones below were measured). LiteLLM
# 1.110.2 (the newest when measured) cannot be installed with its proxy extra: that needs a
# litellm-proxy 1.110.2 PyPI does not have; 1.106.2 resolves.
# wrk, the load generator, is a Debian package: tests/system-deps.sh installs it.
set -euo pipefail
PEERS_DIR=${PEERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aiogw-bench-peers}
LITELLM_VERSION=${LITELLM_VERSION:-1.106.2}
PORTKEY_VERSION=${PORTKEY_VERSION:-1.15.2}
PY=${PYTHON:-python3}
WHICH=${1:-all}
mkdir -p "$PEERS_DIR"

if [ "$WHICH" = all ] || [ "$WHICH" = litellm ]; then
  # Its own venv: LiteLLM's proxy extra pins dozens of packages we must not mix with aiogw's.
  [ -x "$PEERS_DIR/litellm/bin/python" ] || "$PY" -m venv "$PEERS_DIR/litellm"
  "$PEERS_DIR/litellm/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION"
  echo "litellm $LITELLM_VERSION: $PEERS_DIR/litellm/bin/litellm"
fi

if [ "$WHICH" = all ] || [ "$WHICH" = portkey ]; then
  mkdir -p "$PEERS_DIR/portkey"
  # With a newer @hono/node-server the gateway answers chat completions with a 500,
  # "TypeError: immutable" (Portkey-AI/gateway issue 1389): 1.14.2 still fails every
  # stream, 1.13.8 relays both kinds.
  cat > "$PEERS_DIR/portkey/package.json" <<JSON
{
  "name": "aiogw-bench-portkey",
  "private": true,
  "dependencies": {"@portkey-ai/gateway": "$PORTKEY_VERSION"},
  "overrides": {"@hono/node-server": "1.13.8"}
}
JSON
  (cd "$PEERS_DIR/portkey" && npm install --no-audit --no-fund --loglevel=error)
  echo "portkey $PORTKEY_VERSION: $PEERS_DIR/portkey/node_modules/@portkey-ai/gateway"
fi
