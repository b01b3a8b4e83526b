"""Memory benchmark: peak RSS of import and of one predict pass at two table sizes (and the
rate of bulk label writes at each, which must not fall as the table grows).

Each phase runs in a fresh child process (``python -m bench memory-child``) so its peak RSS
(``resource.getrusage``: the child itself, and separately its Pool workers) belongs to that
phase and that size alone. The chunk size is fixed, so with streaming reads and writes the
peak must not grow with the table.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import REPO
from bench.speed import label_writes
from sentirefine.config import Config, load_config
from sentirefine.data.ingest import import_file
from sentirefine.data.workspace import iteration_dir, locked, open_store
from sentirefine.ensemble.pool import ensemble_pool
from sentirefine.integrations.versioning import export_parquet
from sentirefine.models import build_model
from sentirefine.pipeline import loop

LEXICON_SAMPLE = 5000  # rows the predicting member is fitted on: the same at every size
LABEL_WRITE_ROWS = 50_000  # label changes written at every size, in chunk-size transactions


def child_config(workspace: Path, chunk: int) -> Config:
    return load_config(None, {
        "workspace": str(workspace), "store": {"chunk_size": chunk},
        "models": {"order": ["lexicon"]}, "ensemble": {"cross_fit": []},
        "tracking": {"enabled": False}, "versioning": {"enabled": False}, "logging": {"level": "WARNING"},
    })


def _peaks() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(own, 1), "workers_peak_rss_mb": round(kids, 1)}


def phase_import(cfg: Config, train: Path, gold: Path) -> dict[str, Any]:
    with locked(cfg), open_store(cfg, create=True) as store:
        import_file(store, train, split="train", rejects_dir=cfg.workspace / "rejects")
        import_file(store, gold, split="gold", rejects_dir=cfg.workspace / "rejects")
        return {"rows": store.count()}


def phase_predict(cfg: Config) -> dict[str, Any]:
    """The loop's own predict stage (iteration 1) with a lexicon fitted on a fixed sample, then export."""
    with locked(cfg), open_store(cfg) as store:
        rows = store.conn.execute(
            "SELECT text, current_label FROM sentences WHERE split='train' ORDER BY sid LIMIT ?", (LEXICON_SAMPLE,)
        ).fetchall()
        model = build_model("lexicon", cfg).fit([r[0] for r in rows], np.array([r[1] for r in rows]))
        model.save(iteration_dir(cfg, 0) / "lexicon")
        store.begin_iteration(0, threshold=float("nan"))
        store.start_stage(0, "evaluate")
        store.finish_stage(0, "evaluate", {"weights": {"lexicon": 1.0}, "temperatures": {"lexicon": 1.0}})
        store.begin_iteration(1, cfg.refine.threshold.at(1))
        t0 = time.perf_counter()
        with ensemble_pool(cfg) as pool:
            loop.predict(cfg, store, 1, pool)
        predict_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        exported = export_parquet(store, cfg.workspace / "export.parquet", loop.resolve_chunk_size(cfg.store))
        export_s = time.perf_counter() - t0
        n = store.count("train")
        writes = label_writes(store, LABEL_WRITE_ROWS, cfg.store.chunk_size)
    return {"train_rows": n, "predict_seconds": round(predict_s, 1), "predict_rows_per_s": round(n / predict_s, 1),
            "export_rows": exported, "export_rows_per_s": round(exported / export_s, 1), "label_writes": writes}


def child_main(argv: list[str]) -> None:
    """Entry of ``python -m bench memory-child PHASE WORKSPACE CHUNK [TRAIN GOLD]``: prints one JSON line."""
    phase, workspace, chunk = argv[0], Path(argv[1]), int(argv[2])
    cfg = child_config(workspace, chunk)
    t0 = time.perf_counter()
    out = phase_import(cfg, Path(argv[3]), Path(argv[4])) if phase == "import" else phase_predict(cfg)
    print(json.dumps({"phase": phase, **out, "seconds": round(time.perf_counter() - t0, 1), **_peaks()}))


def measure(workspace: Path, train: Path, gold: Path, chunk: int) -> dict[str, Any]:
    """Both phases for one table size, each in its own child process."""
    out: dict[str, Any] = {}
    for phase, extra in (("import", [str(train), str(gold)]), ("predict", [])):
        proc = subprocess.run([sys.executable, "-m", "bench", "memory-child", phase, str(workspace), str(chunk),
                               *extra], capture_output=True, text=True, check=False, cwd=REPO)
        if proc.returncode != 0:
            raise SystemExit(f"memory child ({phase}) failed:\n{proc.stderr[-3000:]}")
        out[phase] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out
