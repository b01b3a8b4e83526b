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
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sentirefine.integrations.retention import tree_bytes

_RSS_WRAPPER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)")


def own_store_env() -> dict[str, str]:
    """The environment for the bench's commands: each tracks into its own workspace's store, even
    where the caller's shell points ``$MLFLOW_TRACKING_URI`` at a server."""
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sentirefine", "-c", str(config), "--quiet", *args],
                          capture_output=True, text=True, env=own_store_env())
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
                           "--quiet", "predict", str(source), "-o", str(out)], capture_output=True, text=True,
                          env=own_store_env())
    seconds = time.perf_counter() - t0
    kib, rc = proc.stdout.split()[-2:]
    if int(rc) not in (0, 3):
        raise SystemExit(f"sentirefine predict exited {rc}:\n{proc.stderr[-3000:]}")
    with open(out, encoding="utf-8", newline="") as handle:
        rows = sum(1 for _ in csv.DictReader(handle))
    return {"rows": rows, "peak_rss_mb": round(int(kib) / 1024, 1), "seconds": round(seconds, 1),
            "rows_per_s": round(rows / seconds, 1)}


def agreement(config: Path, scores: Path, rows: dict[int, str]) -> dict[str, Any]:
    """Do `predict`'s answers equal the production pyfunc's on the same texts?

    The pyfunc is loaded as `predict` loads it (:func:`batch_predict.load_scorer` on the same config
    file), so the two name the same registry and model whatever the config says.
    ``rows`` maps an input line number to its text; `predict`'s output names each row's line, so
    the two are matched by line, not by position (a rejected line would shift every later row).
    The pyfunc scores all the texts in one call, `predict` in chunks: a recurrent or BERT member
    pads a batch to its longest text, so the two can differ in the last float32 digits.
    """
    import pandas as pd

    from sentirefine.config import load_config
    from sentirefine.integrations.batch_predict import load_scorer

    model, _ = load_scorer(load_config(config), None)  # point_mlflow_at: nothing exported to the next command
    lines = list(rows)
    served = model.predict(pd.DataFrame({"text": [rows[n] for n in lines]}))
    by_line = dict(zip(lines, zip(served["label"], served["probability"], strict=True), strict=True))
    with open(scores, encoding="utf-8", newline="") as handle:
        scored = [r for r in csv.DictReader(handle) if int(r["line"]) in by_line]
    deltas = [abs(float(r["probability"]) - float(by_line[int(r["line"])][1])) for r in scored]
    labels = sum(int(r["label"]) == int(by_line[int(r["line"])][0]) for r in scored)
    return {"rows": len(scored), "same_label": int(labels), "identical": sum(d < 1e-6 for d in deltas),
            "max_abs_probability_diff": max(deltas, default=0.0)}


def first_rows(path: Path, n: int) -> dict[int, str]:
    """The first ``n`` data rows of an NSMC TSV (.gz) as {line number: its ``document``} (line 1 is the header)."""
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as handle:
        column = next(handle).rstrip("\n").split("\t").index("document")
        return {i: line.rstrip("\n").split("\t")[column] for i, line in zip(range(2, n + 2), handle, strict=False)}


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
