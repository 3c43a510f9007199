"""`aiogw serve`, `aiogw check-config` and `aiogw store migrate`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

import msgspec

from aiogw import config as config_mod
from aiogw import config_load
from aiogw.adapters import REGISTRY
from aiogw.alerts.webhooks import webhook_name
from aiogw.demo import create_demo_key, demo_config, new_master_key, start_demo_simulator
from aiogw.errors import ConfigError
from aiogw.routing.slo import objectives
from aiogw.runtime import Runtime, account_type
from aiogw.server.app import LISTEN_BACKLOG, ListenError, create_app
from aiogw.server.app import serve as serve_app
from aiogw.server.money import needed as money_needed
from aiogw.store.base import Unreachable, connect, masked
from aiogw.store.migrations import migrate
from aiogw.telemetry.logs import configure as configure_logs
from aiogw.version import __version__

EXIT_CONFIG = 2
EXIT_LISTEN = 3  # a port (the API's or a metrics port) could not be listened on


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aiogw", description="OpenAI-compatible gateway for many LLM providers.")
    p.add_argument("--version", action="version", version=f"aiogw {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the gateway")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--config", help="config file (YAML, JSON or TOML); default: $AIOGW_CONFIG")
    src.add_argument("--demo", action="store_true", help="built-in simulated providers, no keys needed")
    s.add_argument("--host", help="override server.host")
    s.add_argument("--port", type=int, help="override server.port (0 picks a free port)")
    s.add_argument("--workers", type=int, help="override server.workers (processes sharing the port)")
    s.add_argument("--log-format", choices=["auto", "json", "console"], help="override log.format")
    s.add_argument("--worker-child", action="store_true", help=argparse.SUPPRESS)
    s.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    s.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)  # the listening socket to serve
    s.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)  # written to once serving
    c = sub.add_parser("check-config", help="validate a config and print the routing table")
    c.add_argument("file")
    st = sub.add_parser("store", help="the durable store (keys, budgets, the spend ledger)")
    st_sub = st.add_subparsers(dest="store_command", required=True)
    m = st_sub.add_parser("migrate", help="bring the store's schema to this version (serve also does, at start)")
    m.add_argument("--config", help="config file; default: $AIOGW_CONFIG, else the default SQLite store")
    from aiogw.bench.run import add_arguments  # noqa: PLC0415 - keeps `serve` start-up lean

    b = sub.add_parser("bench", help="load-test aiogw against the simulator (and it directly)")
    add_arguments(b)
    from aiogw.eval.cli import add_arguments as eval_arguments  # noqa: PLC0415

    e = sub.add_parser("eval", help="score models on a labelled dataset through the gateway")
    eval_arguments(e)
    return p


def _version() -> str:
    return __version__


def _config_invalid(exc: ConfigError) -> int:
    for error in exc.errors:  # every problem found, one line each
        print(f"aiogw: invalid config: {error}", file=sys.stderr)
    return EXIT_CONFIG


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "store":
        return store_migrate(args.config or os.environ.get("AIOGW_CONFIG"))
    if args.command == "bench":
        from aiogw.bench.run import run  # noqa: PLC0415

        return run(args)
    if args.command == "eval":
        from aiogw.eval.cli import run as run_eval  # noqa: PLC0415

        return run_eval(args)
    return serve(args)


def check_config(file: str) -> int:
    try:
        cfg = config_load.load(file)
        runtime = Runtime.build(cfg, file=file)
    except ConfigError as exc:
        return _config_invalid(exc)
    print(f"{file}: OK")
    print(f"server: {cfg.server.host}:{cfg.server.port} workers={cfg.server.workers}")
    if cfg.state.redis_url:
        from aiogw.state.link import redacted  # noqa: PLC0415 - the redis client only when configured

        print(f"state: shared through Redis at {redacted(cfg.state.redis_url)} (prefix {cfg.state.key_prefix!r})")
    else:
        print("state: in-process (limits, breakers and windows are this process's own)")
    print(_auth_line(cfg))
    if cfg.telemetry.otlp_endpoint:
        print(f"traces: OTLP/HTTP to {cfg.telemetry.otlp_endpoint} (sample ratio {cfg.telemetry.sample_ratio})")
    print(
        f"store: {masked(cfg.store_url)}" + ("" if cfg.store else " (the default; opened when keys or budgets need it)")
    )
    if cfg.server.cors is not None:
        print(f"cors: origins {', '.join(cfg.server.cors.allow_origins) or '(none)'}")
    print("providers:")
    for name, account in cfg.providers.items():
        adapter = REGISTRY[account_type(account)]
        via = runtime.egress.get(name)
        notes = [f"{k}={v}" for k, v in (("ca_bundle", account.ca_bundle), ("client_cert", account.client_cert)) if v]
        if via is not None and via.proxy is not None:  # host:port only, never its credentials
            notes.append(f"proxy={via.proxy}" + ("" if account.proxy else " (from the environment)"))
        line = f"  {name:<20} type={adapter.name:<18} base_url={account.base_url or adapter.default_base_url}"
        print(" ".join([line, *notes]))
    print("models:")
    for route in runtime.routes.values():
        hedge = (
            f", hedge after {route.hedge.delay_ms}{'' if route.hedge.delay_ms == 'p95' else ' ms'}"
            if route.hedge
            else ""
        )
        print(f"  {route.name}  (strategy: {route.strategy}, retry rounds: {route.retry.max_rounds}{hedge})")
        if route.slo is not None:
            goals = [f"{k} <= {v:g}" for k, v in objectives(route.slo).items()]
            print(f"    slo: {', '.join(goals)} (over the 60 s window, at least {route.slo.min_calls} calls)")
        for i, t in enumerate(route.targets, 1):
            extras = []
            if t.first_token_timeout_s:
                extras.append(f"first_token={t.first_token_timeout_s:g}s")
            if t.context_window:
                extras.append(f"context_window={t.context_window}")
            price = t.price
            extras.append(f"price={price.input:g}/{price.output:g} per M" if price else "price=unknown")
            limits = [f"{k}={v}" for k, v in (("rpm", t.rpm), ("tpm", t.tpm), ("concurrency", t.concurrency)) if v]
            extras += limits
            if (check := runtime.health_checks.get(t.id)) is not None:
                extras.append(f"health_check=every {check[1].interval_s:g}s while open")
            print(f"    {i}. {t.id}  -> {t.base_url}  {' '.join(extras)}".rstrip())
    print("direct addressing: <provider>/<model> for " + ", ".join(sorted(cfg.providers)))
    _print_alerts(cfg)
    _print_money(cfg)
    return 0


def _print_alerts(cfg: config_mod.Config) -> None:
    """Webhooks by index and host only: a webhook's path or query may itself be a secret."""
    alerts = cfg.alerts
    if not alerts.webhooks:
        print("alerts: log lines and metrics only (no webhooks)")
        return
    fleet = " (sent once per fleet through Redis)" if cfg.state.redis_url else ""
    print(f"alerts: {len(alerts.webhooks)} webhook(s), queue {alerts.queue_size}{fleet}")
    for i, hook in enumerate(alerts.webhooks):
        signed = "signed" if hook.secret is not None else "UNSIGNED (no secret)"
        print(
            f"  {webhook_name(i, hook)}  events={','.join(hook.events)} {signed} "
            f"timeout={hook.timeout_s:g}s max_attempts={hook.max_attempts} "
            f"backoff={hook.backoff_base_s:g}..{hook.backoff_max_s:g}s"
        )
    print(f"  key.expiring: {alerts.key_expiring_s / 86400:g} days before a key expires")


def store_migrate(file: str | None) -> int:
    """`aiogw store migrate`: apply the steps the store lacks and say which (0), or that it
    is up to date; 2 when the config is invalid or the store cannot be reached."""
    try:
        url = (config_load.load(file) if file else config_mod.Config()).store_url
    except ConfigError as exc:
        return _config_invalid(exc)

    async def run() -> list[tuple[str, int]]:
        store = await connect(url)
        try:
            return await migrate(store)
        finally:
            await store.close()

    try:
        applied = asyncio.run(run())
    except Unreachable as exc:
        print(f"aiogw: cannot reach the store at {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for component, version in applied:
        print(f"applied {component} {version}")
    print(f"store {masked(url)}: " + (f"{len(applied)} step(s) applied" if applied else "up to date"))
    return 0


def _print_money(cfg: config_mod.Config) -> None:
    """The store (when something needs it) and the config's budgets."""
    from aiogw.admission.budgets import config_budget_id  # noqa: PLC0415

    needs = money_needed(cfg)
    if needs:  # the store itself is on check-config's store line
        sc = cfg.store or config_mod.StoreConfig()
        print(f"ledger: written every {sc.ledger_flush_ms} ms or {sc.ledger_batch} rows")
    else:
        print("ledger: none (no store, budgets or admin API configured)")
    if not cfg.budgets:
        print("budgets: none in the config" + (" (more at /admin/v1/budgets)" if needs else ""))
        return
    print("budgets:" + (" (more at /admin/v1/budgets)" if cfg.auth.master_key is not None else ""))
    for b in cfg.budgets:
        what = "global" if b.scope == "global" else f"{b.scope} {b.match!r}"
        alerts = ", ".join(f"{a:g}" for a in sorted(b.alert_at))
        print(f"  {config_budget_id(b)}  {what:<28} ${b.limit_usd:g} per {b.period}  alerts at {alerts}")


def _auth_line(cfg: config_mod.Config) -> str:
    """Auth settings, never a secret: whether each is set, not what it is."""
    auth = cfg.auth
    if not auth.configured:
        return "auth: off (no master key: no admin API; /v1 open to whoever reaches the port)"
    return (
        f"auth: keys {'required' if auth.require_keys else 'optional'} on /v1; admin API "
        f"{'on (master key set)' if auth.master_key is not None else 'off (no master key)'}; "
        f"pepper {'set' if auth.pepper is not None else 'derived from the master key'}; "
        f"key cache {auth.key_cache_size}"
    )


def _load(args: argparse.Namespace) -> config_mod.Config:
    if args.demo:
        return demo_config("http://127.0.0.1:0")  # the simulator's address is known once it runs
    path = args.config or os.environ.get("AIOGW_CONFIG")
    if not path:
        raise ConfigError("<none>", "", "no config: pass --config FILE, set AIOGW_CONFIG, or use --demo")
    return config_load.load(path)


def _with_overrides(cfg: config_mod.Config, args: argparse.Namespace) -> config_mod.Config:
    changes = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers)) if v is not None}
    server = msgspec.structs.replace(cfg.server, **changes) if changes else cfg.server
    log = msgspec.structs.replace(cfg.log, format=args.log_format) if args.log_format else cfg.log
    return msgspec.structs.replace(cfg, server=server, log=log)


def serve(args: argparse.Namespace) -> int:
    try:
        cfg = _with_overrides(_load(args), args)
        Runtime.build(cfg, file=args.config or "<demo>")
    except ConfigError as exc:
        return _config_invalid(exc)
    configure_logs(cfg.log.level, cfg.log.format)
    try:
        if cfg.server.workers > 1 and not args.worker_child:
            return _supervise(cfg, args)
        _install_uvloop()
        _tune_gc()
        asyncio.run(_serve_one(cfg, args))
    except ListenError as exc:
        print(f"aiogw: {exc}", file=sys.stderr)
        return EXIT_LISTEN
    return 0


# Per-request garbage is freed by reference counting; the cycle collector mostly re-scans
# long-lived objects (modules, config, pools). Freezing what exists at start-up and running
# generation 0 less often cut its share of a loaded worker's CPU from ~11% (py-spy).
GC_THRESHOLDS = (20_000, 20, 20)


def _tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _install_uvloop() -> None:
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _serve_one(cfg: config_mod.Config, args: argparse.Namespace) -> None:
    sim = None
    if args.demo:
        sim = await start_demo_simulator()
        # Keys for the demo only when one process serves it (each worker would make its own).
        master = new_master_key() if not args.worker_child else None
        cfg = _with_overrides(demo_config(sim.url, master), args)
    announce = not args.worker_child
    app = create_app(cfg)

    async def ready(host: str, port: int) -> None:
        if args.ready_fd is not None:  # tell the parent of `--workers N`
            os.write(args.ready_fd, b"1")
            os.close(args.ready_fd)
        if announce:
            shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
            print(f"aiogw listening on http://{shown}:{port}", flush=True)
            if args.demo:
                print(_demo_hint(shown, port), flush=True)
                if cfg.auth.master_key is not None:
                    print(_demo_keys(shown, port, cfg.auth.master_key.reveal(), await create_demo_key(app)), flush=True)

    sock = socket.socket(fileno=args.worker_fd) if args.worker_fd is not None else None
    try:
        await serve_app(
            app, host=cfg.server.host, port=cfg.server.port, sock=sock, on_ready=ready,
            worker_index=args.worker_index,
        )  # fmt: skip
    finally:
        if sim is not None:
            await sim.close()


def _demo_hint(host: str, port: int) -> str:
    return (
        "demo mode: simulated providers, no keys needed. Try:\n"
        f"  curl -s http://{host}:{port}/v1/chat/completions -H 'content-type: application/json' \\\n"
        '    -d \'{"model": "demo-fast", "messages": [{"role": "user", "content": "Hello"}]}\'\n'
        f"  or open http://{host}:{port}/playground (stream in the browser) and http://{host}:{port}/dashboard"
    )


def _demo_keys(host: str, port: int, master: str, demo_key: str) -> str:
    return (
        "keys (not required in the demo; the store is in memory and gone at exit):\n"
        f"  master key: {master}\n"
        f"  demo key:   {demo_key}  (models demo-*)\n"
        f"  curl -s http://{host}:{port}/admin/v1/keys -H 'authorization: Bearer {master}'\n"
        f"  curl -s http://{host}:{port}/v1/key -H 'authorization: Bearer {demo_key}'"
    )


def _supervise(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    """Run N worker processes on one port and forward signals to them.

    The port is this gateway's alone: it is checked free, then this process opens one
    SO_REUSEPORT listening socket per worker (the kernel spreads connections across them)
    and hands each to its worker. A second gateway on the same port fails the check instead
    of silently taking a share of the connections. Connections arriving before a worker
    serves wait in its socket's backlog."""
    host, n = cfg.server.host, cfg.server.workers
    socks = _listening_sockets(host, cfg.server.port, n)
    port = socks[0].getsockname()[1]
    ready_r, ready_w = os.pipe()
    # -P: never import a checkout from the working directory instead of the installed package.
    argv = [sys.executable, "-P", "-m", "aiogw", "serve", "--worker-child", "--port", str(port), "--workers", "1",
            "--ready-fd", str(ready_w)]  # fmt: skip
    if args.demo:
        argv.append("--demo")
    else:
        argv += ["--config", args.config or os.environ["AIOGW_CONFIG"]]
    for flag, value in (("--host", args.host), ("--log-format", args.log_format)):
        if value:
            argv += [flag, value]
    children = [
        subprocess.Popen(
            [*argv, "--worker-index", str(i), "--worker-fd", str(sock.fileno())], pass_fds=(sock.fileno(), ready_w)
        )
        for i, sock in enumerate(socks)
    ]
    for sock in socks:  # the workers have their own copies
        sock.close()
    os.close(ready_w)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    if _wait_ready(ready_r, children):
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        print(f"aiogw listening on http://{shown}:{port} ({n} workers)", flush=True)
    else:  # a worker failed to start (it said why on stderr): stop the others
        forward(signal.SIGTERM, None)
    os.close(ready_r)
    codes = [child.wait() for child in children]
    return max(codes, default=0)


def _listening_sockets(host: str, port: int, n: int) -> list[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port != 0:  # taken by anyone (a single gateway, another --workers N, another program)?
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as listeners: TIME_WAIT is no conflict
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise ListenError(host, port, exc) from None
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]  # --port 0: the first socket picks it for all
            sock.listen(LISTEN_BACKLOG)
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise ListenError(host, port, exc) from None
    return socks


def _wait_ready(ready_fd: int, children: list[subprocess.Popen[bytes]], timeout_s: float = 60.0) -> bool:
    """True once every worker wrote its byte; False if one exited first (or time ran out)."""
    deadline = time.monotonic() + timeout_s
    got = 0
    while got < len(children) and time.monotonic() < deadline:
        if select.select([ready_fd], [], [], 0.1)[0]:
            data = os.read(ready_fd, len(children))
            if not data:  # every worker closed its end without a word
                return False
            got += len(data)
        elif any(child.poll() is not None for child in children):
            return False
    return got >= len(children)


if __name__ == "__main__":
    sys.exit(main())
