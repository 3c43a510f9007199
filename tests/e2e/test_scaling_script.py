"""bench/scaling/run.sh, tiny and bounded: it starts nginx as a fixed upstream and one
then two aiogw workers, drives both with wrk, and reports the split of CPU and the ratio.
The numbers are not asserted (never wall-clock in tests); that it runs and that every
request succeeded is."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "scaling" / "run.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_workers_scaling_script_runs_both_and_reports_the_ratio():
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # this aiogw
        "NGINX_PORT": str(_free_port()),
        "GW_PORT": str(_free_port()),
        "WARMUP_S": "1",
    }
    proc = subprocess.run(
        ["bash", str(SCRIPT), "1", "8"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    for workers, line in zip(("1", "2"), lines[:2], strict=True):
        m = re.match(
            rf"workers={workers} requests/s=([\d.]+)k? non-2xx=0 CPU cores used: gateway ([\d.]+), nginx", line
        )
        assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0, line
    assert re.match(r"scaling: [\d.]+x", lines[2]), proc.stdout
