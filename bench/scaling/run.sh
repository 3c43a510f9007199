#!/usr/bin/env bash
# Throughput of `aiogw serve --workers 1` against `--workers 2`, everything else equal.
#   bash bench/scaling/run.sh [duration_s=6] [connections=64]
# (env: NGINX_PORT, GW_PORT, WARMUP_S=2)
# Needs wrk and nginx (apt install wrk nginx). The load generator (wrk) and the upstream
# (nginx, a fixed answer) are C and cost a few µs per request, which gives them their
# share without a third core; nothing is pinned. Reports requests/s and the CPU seconds
# each process group used, so the split can be checked.
set -euo pipefail
DUR=${1:-6}; CONNS=${2:-64}
HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT
NGINX_PORT=${NGINX_PORT:-19400}; GW_PORT=${GW_PORT:-19401}
mkdir -p "$TMP/body"
sed "s|@DIR@|$TMP|g; s|@PORT@|$NGINX_PORT|g" "$HERE/nginx.conf" > "$TMP/nginx.conf"
cat > "$TMP/body.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"bench-chat","messages":[{"role":"user","content":"hi"}]}'
wrk.headers["Content-Type"] = "application/json"
LUA
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
"$NGINX" -c "$TMP/nginx.conf" -e "$TMP/error.log" &
NG=$!
cpu() {  # utime+stime+cutime+cstime of a process, in clock ticks
  awk '{print $14+$15+$16+$17}' "/proc/$1/stat"
}
tree_cpu() {  # a process and its live children
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do total=$((total + $(cpu "$p"))); done
  echo $total
}
for W in 1 2; do
  AIOGW_PORT=$GW_PORT AIOGW_UPSTREAM=http://127.0.0.1:$NGINX_PORT/v1 \
    aiogw serve --config "$HERE/../peers/aiogw.yaml" --workers "$W" > "$TMP/aiogw.log" 2>&1 &
  GW=$!
  python3 - "$GW_PORT" <<'PY'
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
PY
  wrk -t1 -c"$CONNS" -d"${WARMUP_S:-2}s" -s "$TMP/body.lua" "http://127.0.0.1:$GW_PORT/v1/chat/completions" > /dev/null
  G0=$(tree_cpu $GW); N0=$(tree_cpu $NG); S0=$(cpu $$)
  OUT=$(wrk -t1 -c"$CONNS" -d"${DUR}s" -s "$TMP/body.lua" "http://127.0.0.1:$GW_PORT/v1/chat/completions")
  G1=$(tree_cpu $GW); N1=$(tree_cpu $NG); S1=$(cpu $$)  # wrk: a reaped child of this shell
  RPS=$(echo "$OUT" | awk '/Requests\/sec/{print $2}')
  NON2XX=$(echo "$OUT" | awk '/Non-2xx/{print $5}')
  awk -v w="$W" -v rps="$RPS" -v bad="${NON2XX:-0}" -v t="$(getconf CLK_TCK)" -v d="$DUR" \
    -v g=$((G1 - G0)) -v n=$((N1 - N0)) -v s=$((S1 - S0)) 'BEGIN {
      printf "workers=%s requests/s=%s non-2xx=%s CPU cores used: gateway %.2f, nginx %.2f, wrk %.2f\n",
        w, rps, bad, g / t / d, n / t / d, s / t / d }'
  kill -TERM $GW; wait $GW 2>/dev/null || true
  eval "RPS_$W=$RPS"
done
awk -v a="$RPS_1" -v b="$RPS_2" 'BEGIN { printf "scaling: %.2fx (--workers 2 over --workers 1)\n", b / a }'
