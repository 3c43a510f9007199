"""Instructions per request under callgrind: the same targets, configs and request bodies
as run.py, each process run under `valgrind --tool=callgrind`, its counters zeroed after
a warm-up and dumped after a fixed number of sequential requests.

Why: run.py's CPU per request moves by 10-30% between runs on a machine shared with other
work, which swamps the 5-10% that a feature's cost is judged by. A count of executed
instructions does not move (two runs of one build: 848,464 and 848,168, 0.04% apart). It counts user
space only (every thread of the process, the store's writer included): system calls, cache
misses and the socket work in the kernel are not in it, so a ratio of instructions is an
upper bound on the ratio of CPU time when a feature adds Python work and no system calls.
It is a tool for comparing builds and configurations, not a throughput figure.

    python bench/peers/instructions.py --targets aiogw,aiogw-money,aiogw-cache-hit,aiogw-cache-miss,bare
    [--requests 1000] [--warmup 300] [--scenarios nonstream,stream]

Needs valgrind (`apt-get install valgrind`); a run takes about half a minute per target
and scenario (the gateway runs about 50 times slower under callgrind).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import run as peers  # bench/peers/run.py: the targets, their configs and the request bodies

SUPPORTED = ("bare", "aiogw", "aiogw-money", "aiogw-cache-hit", "aiogw-cache-miss")


def summary(dump: Path) -> int:
    """The instruction count of a callgrind dump (its `summary:` line)."""
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"{dump}: no summary line")


def measure(t: peers.Target, body: bytes, warmup: int, n: int, out: Path) -> int:
    """Instructions per request of `t` over `n` requests after `warmup` of them."""
    assert t.popen is not None
    for _ in range(warmup):
        status, raw = peers.post(t, body, timeout=60)
        if status != 200:
            raise SystemExit(f"{t.name}: HTTP {status} {raw[:300]!r}")
    pid = str(t.popen.pid)  # valgrind runs the program in its own process: the pid is the gateway's
    before = set(out.parent.glob(out.name + ".*"))
    subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
    for _ in range(n):
        status, raw = peers.post(t, body, timeout=60)
        if status != 200:
            raise SystemExit(f"{t.name}: HTTP {status} {raw[:300]!r}")
    subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while not (dumps := set(out.parent.glob(out.name + ".*")) - before):  # written by the process
        if time.monotonic() > deadline:
            raise SystemExit(f"{t.name}: callgrind wrote no dump")
        time.sleep(0.1)
    (dump,) = dumps
    time.sleep(0.5)  # the dump is written in one go; let it finish
    return summary(dump) // n


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default="bare,aiogw,aiogw-money,aiogw-cache-hit,aiogw-cache-miss")
    ap.add_argument("--scenarios", default="nonstream,stream")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=300)
    a = ap.parse_args(argv)
    a.targets = [x for x in a.targets.split(",") if x]
    a.scenarios = [x for x in a.scenarios.split(",") if x]
    for name in a.targets:
        if name not in SUPPORTED:
            raise SystemExit(f"unknown target {name!r}: choose from {', '.join(SUPPORTED)}")
    for s in a.scenarios:
        if s not in peers.SCENARIOS:
            raise SystemExit(f"unknown scenario {s!r}: choose from {', '.join(peers.SCENARIOS)}")
    if not 1 <= a.requests <= 100_000 or not 0 <= a.warmup <= 100_000:
        raise SystemExit("--requests is 1..100000, --warmup 0..100000")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed: apt-get install valgrind")
    results: dict[tuple[str, str], int] = {}
    with tempfile.TemporaryDirectory(prefix="aiogw-instructions-") as tmp:
        work = Path(tmp)
        up_port = peers.free_port()
        upstream = peers.Target("upstream", f"http://127.0.0.1:{up_port}/v1", {}, [
            sys.executable, str(peers.HERE / "fixed_upstream.py"), "--port", str(up_port), "--chunks",
            str(peers.CHUNKS)])  # fmt: skip
        upstream.popen = peers.start(upstream.cmd or [], {}, work / "upstream.log")
        try:
            peers.wait_ready(upstream, work / "upstream.log")
            for name in a.targets:
                t = peers.make_target(name, upstream.base_url, peers.DEFAULT_PEERS_DIR)
                assert t.cmd is not None
                out = work / f"{name}.callgrind"
                t.cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *t.cmd]
                t.ready_timeout_s = 300.0  # start-up is slow under valgrind
                log = work / f"{name}.log"
                t.popen = peers.start(t.cmd, t.env, log)
                try:
                    if t.setup is not None:  # waits for the process itself (up to ready_timeout_s)
                        t.headers = t.setup(t)
                    peers.wait_ready(t, log)
                    for s in a.scenarios:
                        body = peers.chat_body(peers.SCENARIOS[s][1])
                        results[(name, s)] = n = measure(t, body, a.warmup, a.requests, out)
                        peers.note(f"{name} {s}: {n:,} instructions per request")
                finally:
                    peers.stop(t.popen)
        finally:
            peers.stop(upstream.popen)
    print(report(a, results))
    return 0


def report(a: argparse.Namespace, results: dict[tuple[str, str], int]) -> str:
    lines = [
        f"Instructions per request (callgrind, user space, {a.requests} sequential requests after "
        f"{a.warmup} of warm-up; {time.strftime('%Y-%m-%d')}):",
        "",
        "| scenario | target | instructions/request | × aiogw | × bare |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in a.scenarios:
        base, bare = results.get(("aiogw", s)), results.get(("bare", s))
        for name in a.targets:
            n = results[(name, s)]
            x_aiogw = f"{n / base:.3f}×" if base else "-"
            x_bare = f"{n / bare:.3f}×" if bare else "-"
            lines.append(f"| {peers.SCENARIOS[s][0]} | {name} | {n:,} | {x_aiogw} | {x_bare} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
