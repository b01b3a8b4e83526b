"""Serving benchmark: what a user's storage and batch scoring cost (issue 28).

* **storage**: MLflow artifact and checkpoint bytes of a workspace after `refine` (the demo's, or
  a NSMC subset's), then after `sentirefine gc --keep 1`;
* **batch scoring**: peak RSS of `sentirefine predict` on the first ``small`` rows and on all rows
  of the NSMC test file (50,000) with the workspace's production ensemble, each in a fresh
  process, and whether its answers equal the served pyfunc's on a sample.

Everything runs through the real command line, in child processes, so each peak RSS is that
command's alone (``resource.getrusage(RUSAGE_CHILDREN)`` of a wrapper that runs only it).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sentirefine.integrations.retention import tree_bytes

_RSS_WRAPPER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)")


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sentirefine", "-c", str(config), "--quiet", *args],
                          capture_output=True, text=True)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"sentirefine {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def storage(workspace: Path, config: Path) -> dict[str, Any]:
    """Bytes of mlartifacts/ and models/ now, and after `gc --keep 1`."""
    before = {d: tree_bytes(workspace / d) for d in ("mlartifacts", "models")}
    t0 = time.perf_counter()
    out = cli(config, "gc", "--keep", "1").stdout.strip().splitlines()[0]
    after = {d: tree_bytes(workspace / d) for d in before}
    return {"before_bytes": before, "after_gc_keep_1_bytes": after, "gc_seconds": round(time.perf_counter() - t0, 1),
            "gc_plan": out}


def predict_rss(config: Path, source: Path, out: Path) -> dict[str, Any]:
    """Peak RSS (MB) and rows/s of one `sentirefine predict` run in a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, sys.executable, "-m", "sentirefine", "-c", str(config),
                           "--quiet", "predict", str(source), "-o", str(out)], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    kib, rc = proc.stdout.split()[-2:]
    if int(rc) not in (0, 3):
        raise SystemExit(f"sentirefine predict exited {rc}:\n{proc.stderr[-3000:]}")
    with open(out, encoding="utf-8", newline="") as handle:
        rows = sum(1 for _ in csv.DictReader(handle))
    return {"rows": rows, "peak_rss_mb": round(int(kib) / 1024, 1), "seconds": round(seconds, 1),
            "rows_per_s": round(rows / seconds, 1)}


def agreement(workspace: Path, scores: Path, texts: list[str]) -> dict[str, Any]:
    """Do `predict`'s answers equal the production pyfunc's on the same texts?"""
    import mlflow
    import pandas as pd

    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    served = mlflow.pyfunc.load_model("models:/sentirefine-ensemble@production").predict(pd.DataFrame({"text": texts}))
    with open(scores, encoding="utf-8", newline="") as handle:
        rows = [r for _, r in zip(range(len(texts)), csv.DictReader(handle), strict=False)]
    same = sum(int(r["label"]) == int(label) and abs(float(r["probability"]) - float(p)) < 1e-6
               for r, label, p in zip(rows, served["label"], served["probability"], strict=True))
    return {"rows": len(rows), "identical": int(same)}


def first_texts(path: Path, n: int) -> list[str]:
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as handle:
        next(handle)
        return [line.rstrip("\n").split("\t")[1] for _, line in zip(range(n), handle, strict=False)]


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
