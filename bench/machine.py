"""Where and how a benchmark ran (machine, date, command, contention) and how results are saved.

Every result JSON carries this header so BENCHMARKS.md can say which machine produced which
number, and so numbers taken on a shared (contended) machine or at smoke sizes are never
mistaken for the quiet-machine results.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.data import REPO

RESULTS = REPO / "bench" / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    return {
        "cpu": cpu_model(),
        "cores": cores,
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": platform.platform(terse=True),
        "gpu": False,
    }


def git_rev() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def header(*, smoke: bool, contended: bool) -> dict[str, Any]:
    """The provenance block of a result; load average is recorded to back the contention flag."""
    return {
        "command": "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "git_rev": git_rev(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "smoke": smoke,
        "contended": contended,
    }


def result_path(results_dir: Path, name: str, *, smoke: bool) -> Path:
    """``<name>[-smoke].json``: smoke results never share a file with a full run's."""
    return results_dir / f"{name}{'-smoke' if smoke else ''}.json"


def save(results_dir: Path, name: str, payload: dict[str, Any]) -> Path:
    """Write ``<name>[-smoke].json``; smoke results never overwrite a full run's file."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = result_path(results_dir, name, smoke=bool(payload.get("smoke")))
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=float) + "\n", encoding="utf-8")
    return path
