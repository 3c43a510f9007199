"""Gateways side by side under the same load, from a checkout: `python bench/peers/run.py`.

It starts fixed_upstream.py (an OpenAI upstream answering fixed bytes) and each target:
  direct   no gateway: wrk talks to the upstream itself (what the machine and harness allow)
  bare     bare_proxy.py: aiohttp in, aiohttp's client out, nothing else (the Python floor)
  aiogw    `aiogw serve --config bench/peers/aiogw.yaml`, one worker, every feature on
  aiogw-money  the same with virtual keys required and three budgets per request (aiogw-money.yaml)
  aiogw-cache-hit  the same with the response cache on in memory, every request after the
           first a hit (aiogw-cache-hit.yaml; the requests opt in with `x-aiogw-cache: on`)
  aiogw-cache-miss  aiogw-cache-hit.yaml with every request a miss that is stored (the
           requests also send `cache-control: no-cache`: the lookup is skipped, the answer
           recorded and written): what a miss adds to the fast path
  aiogw-cache-hit-redis  the same with the cache in Redis (a redis-server of its own, on the
           load generator's core: aiogw-cache-hit-redis.yaml)
  portkey  Portkey's gateway on Node, when bench/peers/install.sh has installed it
  litellm  LiteLLM's proxy, one worker, when bench/peers/install.sh has installed it
then drives each with wrk (chat.lua) for every scenario and connection count, targets
interleaved and repeated, and prints medians as Markdown: requests/s, latency p50/p99, the
gateway's CPU time per request (utime+stime of its processes, from /proc) and the ratios
to `direct` and to `bare`.

With two or more cores the gateway runs alone on one core and wrk and the upstream share
another (taskset), so a gateway's CPU per request is not blurred by the load it serves.
Before each measured run the targets are left to go idle (a gateway may still be working
off requests the previous run abandoned) and get --warmup seconds of the same load.

    python bench/peers/run.py                                  # every installed target
    python bench/peers/run.py --targets direct,bare,aiogw --conns 16,64 --reps 2 --duration 5

Needs wrk (tests/system-deps.sh installs it) and a Python with aiogw installed (this one).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fixed_upstream import CONTENT

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEFAULT_PEERS_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aiogw-bench-peers"
MODEL = "bench-chat"  # the model every target routes to the upstream (aiogw.yaml, litellm.yaml)
UPSTREAM_KEY = "sk-peers-upstream"
LITELLM_KEY = "sk-peers-litellm-master"
MASTER_KEY = "sk-peers-master"  # aiogw-money.yaml
CHUNKS = 20
SCENARIOS = {"nonstream": ("non-streaming", False), "stream": (f"streaming, {CHUNKS} chunks", True)}
LABELS = {
    "direct": "direct",
    "bare": "bare aiohttp proxy",
    "aiogw": "**aiogw**",
    "aiogw-money": "aiogw, keys + 3 budgets",
    "aiogw-cache-hit": "aiogw, cache hits",
    "aiogw-cache-hit-redis": "aiogw, cache hits (Redis)",
    "aiogw-cache-miss": "aiogw, cache misses",
    "portkey": "Portkey",
    "litellm": "LiteLLM",
}
ALL_TARGETS = tuple(LABELS)
OPTIONAL = ("portkey", "litellm")
ON_REQUEST = (
    "aiogw-money",
    "aiogw-cache-hit",
    "aiogw-cache-hit-redis",
    "aiogw-cache-miss",
)  # measured when named in --targets


@dataclass
class Target:
    name: str
    base_url: str
    headers: dict[str, str]
    cmd: list[str] | None = None  # None: nothing to start (direct)
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 30.0
    popen: subprocess.Popen[bytes] | None = None
    # Run once the process listens, before the first chat: returns the headers to send.
    setup: Callable[[Target], dict[str, str]] | None = None
    # A server the target needs, started before it on the load generator's cores (Redis).
    companion: list[str] | None = None

    @property
    def chat_url(self) -> str:
        return self.base_url + "/chat/completions"


# ------------------------------------------------------------------ the targets
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def installed(name: str, peers_dir: Path) -> Path | None:
    """The program of an optional peer, if bench/peers/install.sh put it in peers_dir."""
    path = {
        "portkey": peers_dir / "portkey/node_modules/@portkey-ai/gateway/build/start-server.js",
        "litellm": peers_dir / "litellm/bin/litellm",
    }[name]
    return path if path.exists() and (name != "portkey" or shutil.which("node")) else None


def make_target(name: str, upstream: str, peers_dir: Path) -> Target:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    bearer = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
    if name == "direct":
        return Target(name, upstream, bearer)
    if name == "bare":
        return Target(
            name,
            url,
            bearer,
            [sys.executable, str(HERE / "bare_proxy.py"), "--port", str(port), "--upstream", upstream],
        )
    if name in ("aiogw", "aiogw-money", "aiogw-cache-hit", "aiogw-cache-hit-redis", "aiogw-cache-miss"):
        config = "aiogw-cache-hit" if name == "aiogw-cache-miss" else name
        cmd = [sys.executable, "-P", "-m", "aiogw", "serve", "--config", str(HERE / f"{config}.yaml")]
        env = {"AIOGW_PORT": str(port), "AIOGW_UPSTREAM": upstream}
        if name == "aiogw":
            return Target(name, url, {}, cmd, env)
        if name == "aiogw-cache-hit":  # opted in: the bench body's temperature is not 0
            return Target(name, url, {"x-aiogw-cache": "on"}, cmd, env)
        if name == "aiogw-cache-miss":
            return Target(name, url, {"x-aiogw-cache": "on", "cache-control": "no-cache"}, cmd, env)
        if name == "aiogw-cache-hit-redis":
            redis_port = free_port()
            env["AIOGW_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
            redis = [
                "redis-server",
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            return Target(name, url, {"x-aiogw-cache": "on"}, cmd, env, companion=redis)
        env["AIOGW_DATA_DIR"] = tempfile.mkdtemp(prefix="aiogw-peers-store-")
        return Target(name, url, {}, cmd, env, setup=create_key)
    program = installed(name, peers_dir)
    assert program is not None  # parse_args checked
    if name == "portkey":  # the provider and upstream travel in headers; it keeps no config
        headers = {**bearer, "x-portkey-provider": "openai", "x-portkey-custom-host": upstream}
        return Target(
            name, url, headers, ["node", str(program), f"--port={port}", "--headless"], {"NODE_ENV": "production"}
        )
    env = {"PEERS_UPSTREAM": upstream, "LITELLM_MASTER_KEY": LITELLM_KEY, "LITELLM_LOG": "ERROR",
           "LITELLM_MODE": "PRODUCTION", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # fmt: skip
    cmd = [
        str(program),
        "--config",
        str(HERE / "litellm.yaml"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    return Target(name, url, {"Authorization": f"Bearer {LITELLM_KEY}"}, cmd, env, ready_timeout_s=180.0)


def create_key(t: Target) -> dict[str, str]:
    """A virtual key with its own budget (the third that applies to every request)."""
    admin = t.base_url.removesuffix("/v1") + "/admin/v1/keys"
    body = {"name": "bench", "budgets": [{"limit_usd": 1_000_000, "period": "30d"}]}
    req = urllib.request.Request(
        admin,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {MASTER_KEY}"},
    )
    deadline = time.monotonic() + t.ready_timeout_s
    while True:  # until the process listens (bounded)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return {"Authorization": f"Bearer {json.loads(r.read())['key']}"}
        except OSError:
            if time.monotonic() > deadline or (t.popen is not None and t.popen.poll() is not None):
                raise
            time.sleep(0.2)


def pinned(cpus: str | None, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd  # taskset execs: the pid is cmd's


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            cmd,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop(p: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group it leads (its own session: only what we started)."""
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        if p.poll() is not None:
            return
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(wait_s)
        except subprocess.TimeoutExpired:
            pass


# ------------------------------------------------------------------- requests
def chat_body(stream: bool) -> bytes:
    user = "Explain in one paragraph why a gateway keeps upstream connections alive. " * 3
    body: dict = {
        "model": MODEL, "max_tokens": 256, "temperature": 0.2,
        "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": user}],
    }  # fmt: skip
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(body).encode()


def post(t: Target, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(
        t.chat_url, data=body, method="POST", headers={"Content-Type": "application/json", **t.headers}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(t: Target, log: Path) -> None:
    deadline = time.monotonic() + t.ready_timeout_s
    last = ""
    while time.monotonic() < deadline:
        if t.popen is not None and t.popen.poll() is not None:
            raise SystemExit(f"{t.name} exited with {t.popen.returncode}:\n{tail(log)}")
        try:
            status, raw = post(t, chat_body(False), timeout=5)
            if status == 200:
                return
            last = f"HTTP {status}: {raw[:300]!r}"
        except OSError as e:  # still starting
            last = repr(e)
        time.sleep(0.2)
    raise SystemExit(
        f"{t.name} did not answer a chat completion within {t.ready_timeout_s:.0f} s ({last}):\n{tail(log)}"
    )


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def check_answers(t: Target) -> str | None:
    """Why the target's answers are not the upstream's (None: they are). A gateway that
    answers fast but wrong must not get a row."""
    status, raw = post(t, chat_body(False))
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        content = None
    if status != 200 or content != CONTENT:
        return f"non-streaming: HTTP {status} {raw[:300]!r}"
    status, raw = post(t, chat_body(True))
    datas = [line[5:].strip() for line in raw.decode(errors="replace").splitlines() if line.startswith("data:")]
    pieces = []
    for d in datas[:-1]:
        for choice in json.loads(d).get("choices") or []:
            pieces.append((choice.get("delta") or {}).get("content") or "")
    if status != 200 or not datas or datas[-1] != "[DONE]" or "".join(pieces) != CONTENT:
        return f"streaming: HTTP {status} {raw[:300]!r}"
    return None


# ------------------------------------------------------------------ /proc
def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out = [pid]
    for p in out:  # grows as it goes: breadth first
        out.extend(children.get(p, ()))
    return out


def cpu_s(pids: list[int]) -> float:
    """utime + stime of the processes, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    ticks = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def wait_idle(pids: list[int], max_s: float) -> bool:
    """Until the processes use under 5% of a core (bounded by max_s)."""
    deadline = time.monotonic() + max_s
    before = cpu_s(pids)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = cpu_s(pids)
        if now - before < 0.25 * 0.05:
            return True
        before = now
    return False


# -------------------------------------------------------------------- wrk
def run_wrk(t: Target, body_file: Path, conns: int, duration_s: float, cpus: str | None) -> dict[str, int]:
    env = {
        **os.environ,
        "PEERS_BODY": str(body_file),
        "PEERS_HEADERS": "\n".join(f"{k}: {v}" for k, v in t.headers.items()),
    }
    cmd = pinned(
        cpus,
        [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{duration_s:g}s",
            "--timeout",
            "10s",
            "-s",
            str(HERE / "chat.lua"),
            t.chat_url,
        ],
    )
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    for line in r.stdout.splitlines():
        if line.startswith("PEERS_RESULT "):
            return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    raise SystemExit(f"wrk failed (exit {r.returncode}) against {t.name}: {r.stdout[-500:]} {r.stderr[-500:]}")


def measure(
    t: Target, scenario: str, conns: int, rep: int, a: argparse.Namespace, bodies: dict[str, Path], idle_pids: list[int]
) -> dict:
    quiet = wait_idle(idle_pids + (process_tree(t.popen.pid) if t.popen else []), a.idle_max_s)
    if a.warmup > 0:
        run_wrk(t, bodies[scenario], conns, a.warmup, a.client_cpus)
    gw = process_tree(t.popen.pid) if t.popen else []
    cpu0 = cpu_s(gw)
    w = run_wrk(t, bodies[scenario], conns, a.duration, a.client_cpus)
    cpu1 = cpu_s(process_tree(t.popen.pid)) if t.popen else 0.0
    ok = max(0, w["requests"] - w["non2xx"])
    return {
        "rep": rep, "scenario": scenario, "conns": conns, "target": t.name,
        "rps": ok / (w["duration_us"] / 1e6), "p50_ms": w["p50_us"] / 1000, "p99_ms": w["p99_us"] / 1000,
        "cpu_ms_per_req": (cpu1 - cpu0) * 1000 / ok if t.popen and ok else None,
        "errors": w["non2xx"] + w["socket_errors"], "requests": w["requests"], "idle_before": quiet,
    }  # fmt: skip


# ---------------------------------------------------------------- reporting
def fmt_rps(x: float) -> str:
    return f"{x:,.0f}"


def fmt_cpu(x: float | None) -> str:
    return "-" if x is None else (f"{x:.3f}" if x < 1 else f"{x:.1f}")


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else (f"{x:.2f}×" if x >= 0.1 else f"{x:.4f}×")


def medians(rows: list[dict]) -> dict[tuple[str, int, str], dict]:
    groups: dict[tuple[str, int, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["scenario"], r["conns"], r["target"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        cpus = [r["cpu_ms_per_req"] for r in rs if r["cpu_ms_per_req"] is not None]
        out[key] = {
            "rps": statistics.median(r["rps"] for r in rs),
            "p50_ms": statistics.median(r["p50_ms"] for r in rs),
            "p99_ms": statistics.median(r["p99_ms"] for r in rs),
            "cpu": statistics.median(cpus) if cpus else None,
            "errors": sum(r["errors"] for r in rs),
            "lo": min(r["rps"] for r in rs), "hi": max(r["rps"] for r in rs), "n": len(rs),
        }  # fmt: skip
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def tables(rows: list[dict], targets: list[str], scenarios: list[str], conns: list[int]) -> str:
    m = medians(rows)
    head = ["requests/s (gateway CPU ms per request)", "conc", *(LABELS[t] for t in targets)]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for s in scenarios:
        for c in conns:
            cells = []
            for t in targets:
                r = m.get((s, c, t))
                if r is None:
                    cells.append("-")
                    continue
                cell = fmt_rps(r["rps"]) + ("" if r["cpu"] is None else f" ({fmt_cpu(r['cpu'])})")
                cell += f" ⚠ {r['errors']} errors" if r["errors"] else ""
                cells.append(f"**{cell}**" if t == "aiogw" else cell)
            out.append(f"| {SCENARIOS[s][0]} | {c} | " + " | ".join(cells) + " |")
    out += ["", "| scenario | conc | target | requests/s | ×direct | ×bare | p50 ms | p99 ms | CPU ms/request | CPU ×bare | errors | requests/s range | runs |",
            "|" + " --- |" * 13]  # fmt: skip
    for s in scenarios:
        for c in conns:
            direct, bare = m.get((s, c, "direct")), m.get((s, c, "bare"))
            for t in targets:
                r = m.get((s, c, t))
                if r is None:
                    continue
                out.append("| " + " | ".join([
                    SCENARIOS[s][0], str(c), t, fmt_rps(r["rps"]),
                    fmt_ratio(ratio(r["rps"], direct and direct["rps"])), fmt_ratio(ratio(r["rps"], bare and bare["rps"])),
                    f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", fmt_cpu(r["cpu"]),
                    fmt_ratio(ratio(r["cpu"], bare and bare["cpu"])), str(r["errors"]),
                    f"{fmt_rps(r['lo'])}–{fmt_rps(r['hi'])}", str(r["n"]),
                ]) + " |")  # fmt: skip
    return "\n".join(out)


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def describe(a: argparse.Namespace, targets: list[str], load_before: str) -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "unknown CPU"
    pin = (
        f"the gateway on core {a.gw_cpus}, wrk and the upstream on core {a.client_cpus}"
        if a.gw_cpus
        else "nothing pinned"
    )
    return (f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores ({model}), Python "
            f"{sys.version.split()[0]}; {pin}; medians of {a.reps} run(s) of {a.duration:g} s after {a.warmup:g} s of "
            f"warm-up each; targets {', '.join(targets)}; load average {load_before} before, "
            f"{load_average()} after (other work on the machine skews every number).")  # fmt: skip


# --------------------------------------------------------------------- main
def cpu_plan(a: argparse.Namespace) -> None:
    """Fill --gw-cpus / --client-cpus: two distinct cores when there are two and taskset."""
    if a.no_pin or not shutil.which("taskset"):
        a.gw_cpus = a.client_cpus = None
        return
    cores = sorted(os.sched_getaffinity(0))
    if a.gw_cpus is None and a.client_cpus is None and len(cores) >= 2:
        a.client_cpus, a.gw_cpus = str(cores[0]), str(cores[1])
    elif (a.gw_cpus is None) != (a.client_cpus is None):
        raise SystemExit("give both --gw-cpus and --client-cpus, or neither")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python bench/peers/run.py", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])  # fmt: skip
    ap.add_argument("--targets", help=f"comma-separated, of {','.join(ALL_TARGETS)} (default: all installed)")
    ap.add_argument("--scenarios", default="nonstream,stream", help="comma-separated, of nonstream,stream")
    ap.add_argument("--conns", default="16,64,256", help="wrk connections, comma-separated")
    ap.add_argument("--reps", type=int, default=2, help="runs of each measurement, interleaved (median reported)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of the same load before each measured run")
    ap.add_argument(
        "--idle-max-s",
        type=float,
        default=15.0,
        help="before each run, wait up to this long for the targets to go idle",
    )
    ap.add_argument("--peers-dir", type=Path, default=Path(os.environ.get("PEERS_DIR") or DEFAULT_PEERS_DIR),
                    help=f"where bench/peers/install.sh put the peers (env PEERS_DIR; default {DEFAULT_PEERS_DIR})")  # fmt: skip
    ap.add_argument("--gw-cpus", help="taskset CPU list of the gateway (default: the second core)")
    ap.add_argument("--client-cpus", help="taskset CPU list of wrk and the upstream (default: the first core)")
    ap.add_argument("--no-pin", action="store_true", help="pin nothing")
    ap.add_argument(
        "--max-minutes", type=float, default=30.0, help="stop measuring after this long, report what was measured"
    )
    ap.add_argument("--out", type=Path, help="folder for results.md, raw.jsonl and the processes' logs")
    a = ap.parse_args(argv)
    try:
        a.scenarios = a.scenarios.split(",")
        a.conns = [int(c) for c in a.conns.split(",")]
    except ValueError:
        ap.error("--conns takes whole numbers, e.g. 16,64")
    if bad := [s for s in a.scenarios if s not in SCENARIOS]:
        ap.error(f"unknown scenario {bad[0]!r}: use {','.join(SCENARIOS)}")
    if min(a.conns) < 1 or a.reps < 1 or a.duration <= 0 or a.warmup < 0:
        ap.error("--conns, --reps and --duration must be positive, --warmup not negative")
    if a.targets:
        a.targets = a.targets.split(",")
        if bad := [t for t in a.targets if t not in ALL_TARGETS]:
            ap.error(f"unknown target {bad[0]!r}: use {','.join(ALL_TARGETS)}")
        if missing := [t for t in a.targets if t in OPTIONAL and not installed(t, a.peers_dir)]:
            ap.error(
                f"{missing[0]} is not installed in {a.peers_dir}: run `bash bench/peers/install.sh {missing[0]}` (or pass --peers-dir)"
            )
    else:
        a.targets = [t for t in ALL_TARGETS if t not in ON_REQUEST and (t not in OPTIONAL or installed(t, a.peers_dir))]
        if missing := [t for t in OPTIONAL if t not in a.targets]:
            note(f"not installed, left out: {', '.join(missing)} (bash bench/peers/install.sh)")
    return a


def note(msg: str) -> None:
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: tests/system-deps.sh installs it (apt-get install wrk)")
    cpu_plan(a)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="aiogw-peers-") as tmp:
        work = a.out or Path(tmp)
        (work / "logs").mkdir(parents=True, exist_ok=True)
        bodies = {s: work / f"body-{s}.json" for s in SCENARIOS}
        for s, path in bodies.items():
            path.write_bytes(chat_body(SCENARIOS[s][1]))
        started: list[subprocess.Popen[bytes]] = []
        rows: list[dict] = []
        try:
            up_port = free_port()
            up_log = work / "logs" / "upstream.log"
            upstream = Target("upstream", f"http://127.0.0.1:{up_port}/v1", {}, pinned(a.client_cpus, [
                sys.executable, str(HERE / "fixed_upstream.py"), "--port", str(up_port), "--chunks", str(CHUNKS)]))  # fmt: skip
            upstream.popen = start(upstream.cmd or [], {}, up_log)
            started.append(upstream.popen)
            wait_ready(upstream, up_log)
            targets = [make_target(name, upstream.base_url, a.peers_dir) for name in a.targets]
            for t in targets:
                log = work / "logs" / f"{t.name}.log"
                if t.companion:
                    started.append(
                        start(pinned(a.client_cpus, t.companion), {}, work / "logs" / f"{t.name}-companion.log")
                    )
                if t.cmd:
                    t.popen = start(pinned(a.gw_cpus, t.cmd), t.env, log)
                    started.append(t.popen)
                if t.setup is not None:
                    t.headers = t.setup(t)
                wait_ready(t, log)
                if why := check_answers(t):
                    raise SystemExit(f"{t.name} does not relay the upstream's answer: {why}")
                note(f"{t.name} ready, answers checked")
            rows = run_all(a, targets, bodies, upstream)
        finally:
            for p in reversed(started):
                stop(p)
        if not rows:
            raise SystemExit("nothing was measured")
        report = describe(a, a.targets, load_before) + "\n\n" + tables(rows, a.targets, a.scenarios, a.conns)
        if a.out:
            (a.out / "results.md").write_text(report + "\n")
            (a.out / "raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(report)
    return 0


def run_all(a: argparse.Namespace, targets: list[Target], bodies: dict[str, Path], upstream: Target) -> list[dict]:
    """Every measurement, targets interleaved and their order rotated each repetition, so a
    slow drift of the machine spreads over all of them."""
    runs = a.reps * len(a.scenarios) * len(a.conns) * len(targets)
    note(
        f"{runs} runs of {a.duration:g} s (+{a.warmup:g} s warm-up): about {runs * (a.duration + a.warmup + 1) / 60:.1f} min"
    )
    deadline = time.monotonic() + a.max_minutes * 60
    assert upstream.popen is not None
    rows = []
    for rep in range(a.reps):
        order = targets[rep % len(targets) :] + targets[: rep % len(targets)]
        for s in a.scenarios:
            for c in a.conns:
                for t in order:
                    if time.monotonic() > deadline:
                        note("--max-minutes reached: reporting what was measured")
                        return rows
                    if t.popen is not None and t.popen.poll() is not None:
                        raise SystemExit(f"{t.name} exited with {t.popen.returncode} during the runs")
                    r = measure(t, s, c, rep, a, bodies, process_tree(upstream.popen.pid))
                    rows.append(r)
                    note(f"rep {rep + 1} {s} c={c} {t.name}: {fmt_rps(r['rps'])} req/s, p50 {r['p50_ms']:.2f} ms, "
                         f"p99 {r['p99_ms']:.2f} ms, CPU {fmt_cpu(r['cpu_ms_per_req'])} ms/req, errors {r['errors']}"
                         f"{'' if r['idle_before'] else ' (was not idle before)'}")  # fmt: skip
    return rows


if __name__ == "__main__":
    sys.exit(main())
