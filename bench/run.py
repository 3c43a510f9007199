"""`aiogw bench`: load-test aiogw against the simulator and, in the same run, the simulator
directly, and report what the gateway adds (latency, CPU per request, memory).

By default it starts the simulator and one gateway worker as separate processes, pins the
gateway to one core and the simulator and load generator to the other (on machines with
at least two cores), then for each concurrency runs the same load direct and through the
gateway, alternating, `--reps` times. `--target URL` benchmarks any running
OpenAI-compatible endpoint instead (no direct comparison unless `--direct URL` is given).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from aiogw.bench.load import LoadSpec, Samples, cpu_seconds, peak_rss_mb, run_load, summary

SIM_KEY = "sk-bench-simulated"


@dataclass(slots=True)
class Proc:
    popen: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()


def _pin(pid: int, cpus: set[int] | None) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cpus)


def _cpu_plan() -> tuple[set[int] | None, set[int] | None]:
    """(gateway cores, load generator + simulator cores)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        return None, None
    return {cpus[-1]}, set(cpus[:-1])


def start_simulator(args: argparse.Namespace, cpus: set[int] | None) -> Proc:
    cmd = [
        sys.executable, "-P", "-m", "aiogw.bench.simulator", "--port", "0",
        "--ttft-ms", str(args.ttft_ms), "--tokens-per-s", str(args.tokens_per_s),
        "--chunk-tokens", str(args.chunk_tokens), "--completion-tokens", str(args.completion_tokens),
        "--error-rate", str(args.error_rate), "--error-status", str(args.error_status),
    ]  # fmt: skip
    return start_listening(cmd, "the simulator", cpus)


def start_listening(cmd: list[str], what: str, cpus: set[int] | None) -> Proc:
    """A server of ours that prints "… listening on URL" once it listens, pinned to `cpus`."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert p.stdout is not None
    line = p.stdout.readline().decode()
    if "listening on" not in line:
        p.kill()
        raise SystemExit(f"{what} did not start: {line!r}")
    _pin(p.pid, cpus)
    return Proc(p, line.rsplit(" ", 1)[-1].strip())


def gateway_config(sim_url: str, fmt: str, port: int) -> dict[str, Any]:
    provider: dict[str, Any] = {"type": fmt, "api_key": SIM_KEY}
    provider["base_url"] = f"{sim_url}/v1" if fmt == "openai" else sim_url
    return {
        "server": {"host": "127.0.0.1", "port": port, "shutdown_grace": 2},
        "log": {"level": "info", "format": "json"},  # every feature on, the log line included
        "providers": {"sim": provider},
        "models": [{"name": "bench", "targets": [{"provider": "sim", "model": "sim-bench"}]}],
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gateway(
    sim_url: str, fmt: str, cpus: set[int] | None, workdir: Path, extra: dict[str, Any] | None = None
) -> Proc:
    """The gateway in front of the simulator; `extra`: top-level config sections to add."""
    port = _free_port()
    cfg = workdir / "aiogw-bench.json"
    cfg.write_text(json.dumps({**gateway_config(sim_url, fmt, port), **(extra or {})}))
    cmd = [sys.executable, "-P", "-m", "aiogw", "serve", "--config", str(cfg)]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pin(p.pid, cpus)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as r:
                if r.status == 200:
                    return Proc(p, url)
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit("the gateway did not become ready within 15 s")


def request_body(model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Benchmark, please."}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


@dataclass(slots=True)
class Row:
    target: str
    concurrency: int
    rep: int
    samples: Samples
    cpu_ms_per_req: float | None = None
    peak_rss_mb: float | None = None
    clients: int | None = None

    def as_dict(self) -> dict[str, Any]:
        s = self.samples
        return {
            "target": self.target,
            "concurrency": self.concurrency,
            "clients": self.clients,
            "rep": self.rep,
            "requests_sent": s.sent,
            "requests_ok": s.ok,
            "errors": dict(s.errors),
            "rps": round(s.ok / s.wall_s, 1) if s.wall_s else 0.0,
            "latency_ms": summary(s.latency_ms),
            "ttft_ms": summary(s.ttft_ms),
            "gap_ms": summary(s.gap_ms),
            "cpu_ms_per_req": self.cpu_ms_per_req,
            "peak_rss_mb": self.peak_rss_mb,
        }


@contextlib.contextmanager
def _progress(total_s: float) -> Iterator[Any]:
    try:
        from tqdm import tqdm
    except ImportError:
        yield lambda n: None
        return
    bar = tqdm(total=None, unit="req", desc="bench", leave=False, mininterval=0.5)
    try:
        yield bar.update
    finally:
        bar.close()


async def measure(name: str, url: str, spec_args: dict[str, Any], body: bytes, pid: int | None, rep: int,
                  concurrency: int, progress: Any, clients: int | None = None) -> Row:  # fmt: skip
    """One load run; `clients` (paired runs) overrides the number of clients, not the row's
    concurrency, which says which gateway run it belongs to."""
    spec = LoadSpec(url=url, body=body, headers={"content-type": "application/json", "authorization": f"Bearer {SIM_KEY}"},
                    concurrency=clients or concurrency, **spec_args)  # fmt: skip
    cpu0 = cpu_seconds(pid) if pid else None
    samples = await run_load(spec, progress)
    row = Row(name, concurrency, rep, samples, clients=spec.concurrency)
    if pid is not None and cpu0 is not None and samples.ok:
        row.cpu_ms_per_req = round((cpu_seconds(pid) - cpu0) * 1000 / samples.ok, 4)
        row.peak_rss_mb = round(peak_rss_mb(pid), 1)
    return row


def medians(runs: list[dict[str, Any]], paired: bool = False) -> list[dict[str, Any]]:
    """One line per (target, concurrency) of `Row.as_dict()`s: medians over the repetitions.
    Paired runs also get the median of each repetition's own difference in p99 gap (the
    noise the two loads shared cancels within a repetition, not across them)."""
    from statistics import median

    out = []
    keys = sorted({(r["target"], r["concurrency"]) for r in runs}, key=lambda k: (k[1], k[0]))
    for target, conc in keys:
        rs = [r for r in runs if r["target"] == target and r["concurrency"] == conc]

        def med(path: tuple[str, ...], rs: list[dict[str, Any]] = rs) -> float | None:
            vals = []
            for r in rs:
                v: Any = r
                for p in path:
                    v = v.get(p) if isinstance(v, dict) else None
                if v is not None:
                    vals.append(v)
            return round(median(vals), 3) if vals else None

        out.append({
            "target": target, "concurrency": conc, "clients": med(("clients",)), "rps": med(("rps",)),
            "p50_ms": med(("latency_ms", "p50")), "p99_ms": med(("latency_ms", "p99")),
            "ttft_p50_ms": med(("ttft_ms", "p50")), "gap_p99_ms": med(("gap_ms", "p99")),
            "cpu_ms_per_req": med(("cpu_ms_per_req",)), "peak_rss_mb": med(("peak_rss_mb",)),
            "errors": sum(sum(r["errors"].values()) for r in rs),
        })  # fmt: skip
        if paired and target != "direct":
            base = {r["rep"]: r["gap_ms"]["p99"] for r in runs if r["target"] == "direct" and r["concurrency"] == conc}
            diffs = [
                r["gap_ms"]["p99"] - base[r["rep"]]
                for r in rs
                if r["gap_ms"]["p99"] is not None and base.get(r["rep"]) is not None
            ]
            out[-1]["paired_added_gap_p99_ms"] = round(median(diffs), 3) if diffs else None
    return out


def markdown(lines: list[dict[str, Any]]) -> str:
    direct = {m["concurrency"]: m for m in lines if m["target"] == "direct"}
    paired = any("paired_added_gap_p99_ms" in m for m in lines)
    head = ("| target | conc | req/s | ×direct | p50 ms | p99 ms | added p50 ms | ttft p50 ms | gap p99 ms "
            "| added gap p99 ms | CPU ms/req | peak RSS MB | errors |")  # fmt: skip
    out = [head, "| --- " * 13 + "|"]

    def added(m: dict[str, Any], d: dict[str, Any] | None, key: str) -> str:
        if key == "gap_p99_ms" and m.get("paired_added_gap_p99_ms") is not None:
            return f"{m['paired_added_gap_p99_ms']:.2f}"
        if d is None or m["target"] == "direct" or m[key] is None or d[key] is None:
            return ""
        return f"{m[key] - d[key]:.2f}"

    for m in lines:
        d = direct.get(m["concurrency"])
        # Paired: direct ran fewer clients at the same time, so only per-request figures compare.
        ratio = f"{m['rps'] / d['rps']:.2f}" if d and d["rps"] and m["rps"] and not paired else ""
        conc = f"{m['clients']:g} (paired)" if paired and m["target"] == "direct" else m["concurrency"]
        cells = [m["target"], conc, m["rps"], ratio, m["p50_ms"], m["p99_ms"], added(m, d, "p50_ms"), m["ttft_p50_ms"],
                 m["gap_p99_ms"], added(m, d, "gap_p99_ms"), m["cpu_ms_per_req"], m["peak_rss_mb"], m["errors"]]  # fmt: skip
        out.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    return "\n".join(out)


def plot(rows: list[Row], lines: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for target in sorted({r.target for r in rows}):
        lat = sorted(x for r in rows if r.target == target for x in r.samples.latency_ms)
        if lat:
            ax1.plot(lat, [i / len(lat) for i in range(len(lat))], label=target)
        pts = [(m["concurrency"], m["rps"]) for m in lines if m["target"] == target]
        ax2.plot([c for c, _ in pts], [r for _, r in pts], marker="o", label=target)
    ax1.set_xscale("log")
    ax1.set(title="latency distribution (all runs)", xlabel="ms", ylabel="fraction of requests")
    ax2.set(title="throughput against concurrency", xlabel="concurrent clients", ylabel="requests/s")
    ax2.set_xscale("log", base=2)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


async def _bench(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any load runs
    gw_cpus, load_cpus = _cpu_plan() if not args.no_pin else (None, None)
    _pin(0, load_cpus)
    procs: list[Proc] = []
    targets: list[tuple[str, str, int | None]] = []  # (name, endpoint, pid to measure)
    try:
        if args.target:
            targets.append(("target", args.target.rstrip("/") + "/v1/chat/completions", args.pid))
            if args.direct:
                targets.insert(0, ("direct", args.direct.rstrip("/") + "/v1/chat/completions", None))
            model_gw = model_direct = args.model
        else:
            sim = start_simulator(args, load_cpus)
            procs.append(sim)
            with tempfile.TemporaryDirectory() as tmp:
                gw = start_gateway(sim.url, args.format, gw_cpus, Path(tmp))
            procs.append(gw)
            if args.format == "openai":  # the direct baseline speaks the same (OpenAI) wire format
                targets.append(("direct", f"{sim.url}/v1/chat/completions", None))
            targets.append(("aiogw", f"{gw.url}/v1/chat/completions", gw.popen.pid))
            model_gw, model_direct = "bench", "sim-bench"
        spec_args = {"stream": args.stream, "mode": args.mode, "rate": args.rate, "duration_s": args.duration,
                     "max_requests": args.requests, "ramp_up_s": args.ramp_up}  # fmt: skip
        rows: list[Row] = []
        with _progress(args.duration) as progress:
            for conc in args.concurrency:
                for rep in range(args.reps):
                    runs = [
                        measure(name, url, spec_args, request_body(model_direct if name == "direct" else model_gw, args.stream),
                                pid, rep, conc, progress, args.paired if name == "direct" else None)
                        for name, url, pid in targets
                    ]  # fmt: skip
                    if args.paired:
                        # Both loads at once from one load generator: its own delays (a busy
                        # core, timers falling due together) hit both alike, so the difference
                        # is the gateway's.
                        rows.extend(await asyncio.gather(*runs))
                    else:
                        for run in runs:  # interleaved: drift hits every target alike
                            rows.append(await run)
    finally:
        for p in reversed(procs):
            p.stop()
    runs = [r.as_dict() for r in rows]
    lines = medians(runs, bool(args.paired))
    result = {"args": {k: v for k, v in vars(args).items() if k != "func"}, "summary": lines, "runs": runs}
    (out_dir / "results.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    table = markdown(lines)
    (out_dir / "results.md").write_text(table + "\n")
    plotted = plot(rows, lines, out_dir / "results.png")
    print(table)
    print(
        f"\nresults: {out_dir / 'results.json'}, {out_dir / 'results.md'}"
        + (f", {out_dir / 'results.png'}" if plotted else "")
    )
    return 0


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--target", help="benchmark this running endpoint (base URL) instead of starting aiogw")
    ap.add_argument("--direct", help="with --target: the upstream's base URL, measured alongside")
    ap.add_argument("--pid", type=int, help="with --target: the process whose CPU and RSS to read")
    ap.add_argument("--model", default="bench", help="with --target: the model name to ask for")
    ap.add_argument("--stream", action="store_true", help="streaming requests")
    ap.add_argument("--mode", choices=["closed", "open"], default="closed")
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[32],
                    help="closed loop: clients, comma-separated for a sweep (open loop: in-flight cap)")  # fmt: skip
    ap.add_argument("--rate", type=float, default=200.0, help="open loop: arrivals per second")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    ap.add_argument(
        "--paired",
        type=int,
        default=0,
        metavar="N",
        help="run N direct clients at the same time as the load through the gateway (not after it)",
    )
    ap.add_argument(
        "--ramp-up",
        type=float,
        default=0.0,
        help="closed loop: start the clients spread over this many seconds (within the duration)",
    )
    ap.add_argument("--requests", type=int, default=1_000_000, help="cap on requests per run")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--ttft-ms", type=float, default=0.0)
    ap.add_argument("--tokens-per-s", type=float, default=0.0)
    ap.add_argument("--chunk-tokens", type=int, default=1)
    ap.add_argument("--completion-tokens", type=int, default=20)
    ap.add_argument("--error-rate", type=float, default=0.0, help="share of simulator answers that are errors")
    ap.add_argument("--error-status", type=int, default=503)
    ap.add_argument("--format", choices=["openai", "anthropic", "gemini"], default="openai",
                    help="the simulator's wire format behind aiogw (direct runs only for openai)")  # fmt: skip
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    ap.add_argument("--out", default="bench-results")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_bench(args))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="aiogw bench", description=__doc__.split("\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
