"""Speed benchmark: ensemble throughput with Pool(1) vs Pool(2), bulk label writes, export.

Everything is measured in one run on one workspace, so the ratios (Pool(2)/Pool(1),
executemany-in-one-transaction vs row-by-row commits) compare like with like.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from sentirefine.config import Config
from sentirefine.ensemble import EnsemblePool
from sentirefine.store import LabelChange, Store
from sentirefine.train import train_members
from sentirefine.versioning import export_parquet
from sentirefine.workspace import iteration_dir, locked, open_store


def _rate(rows: int, seconds: float) -> float:
    return round(rows / seconds, 1) if seconds > 0 else float("inf")


def throughput(cfg: Config, slices: list[tuple[list[str], list[str]]], workers: int) -> dict[str, Any]:
    """Sentences/s of all members together and of each alone, through one Pool of ``workers``.

    Workers cache tokenisations per text and create their Kiwi analyser on the first uncached
    text, so every pass gets texts the pool has never seen: per member set, a warm-up slice
    (loads the members and Kiwi in every worker; timed separately) and a measured slice, as a
    pass over a corpus larger than the cache would.
    """
    names = cfg.models.order
    sets = {"total": names, **{n: [n] for n in names}}
    out: dict[str, Any] = {}
    with EnsemblePool(workers=workers, start_method=cfg.ensemble.start_method,
                      batch_rows=cfg.ensemble.predict_batch_rows, log_level="WARNING") as pool:
        for (label, members), (warm, texts) in zip(sets.items(), slices, strict=True):
            dirs = [iteration_dir(cfg, 0) / n for n in members]
            t0 = time.perf_counter()
            pool.member_probs(dirs, warm)
            warm_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            pool.member_probs(dirs, texts)
            out[label] = {"sentences_per_s": _rate(len(texts), time.perf_counter() - t0),
                          "rows": len(texts), "warmup_seconds": round(warm_s, 2)}
    return out


def bulk_update(db: Path, scratch: Path, rows: int, rowwise_rows: int) -> dict[str, Any]:
    """Label writes on a copy of the store: row-by-row commits vs ``apply_labels`` in one transaction."""
    copy = scratch / "bulk-update.db"
    shutil.copyfile(db, copy)
    with Store(copy) as store:
        labels = store.conn.execute(
            "SELECT sid, current_label FROM sentences WHERE split='train' ORDER BY sid LIMIT ?", (rows,)
        ).fetchall()
        one_by_one = labels[:rowwise_rows]
        t0 = time.perf_counter()
        for sid, label in one_by_one:
            store.apply_labels([LabelChange(sid, label, 1 - label, 0.9)], iteration=1, source="ensemble")
        rowwise_s = time.perf_counter() - t0
        labels = store.conn.execute(
            "SELECT sid, current_label FROM sentences WHERE split='train' ORDER BY sid LIMIT ?", (rows,)
        ).fetchall()
        t0 = time.perf_counter()
        changed = store.apply_labels([LabelChange(s, lab, 1 - lab, 0.9) for s, lab in labels],
                                     iteration=2, source="ensemble")
        bulk_s = time.perf_counter() - t0
    copy.unlink()
    return {
        "bulk_rows": changed, "bulk_seconds": round(bulk_s, 3), "bulk_rows_per_s": _rate(changed, bulk_s),
        "rowwise_rows": len(one_by_one), "rowwise_seconds": round(rowwise_s, 3),
        "rowwise_rows_per_s": _rate(len(one_by_one), rowwise_s),
        "speedup": round(_rate(changed, bulk_s) / max(_rate(len(one_by_one), rowwise_s), 1e-9), 1),
    }


def export(store: Store, scratch: Path, chunk: int) -> dict[str, Any]:
    """The snapshot's Parquet export (versioning.export_parquet), streamed in ``chunk``-row pieces."""
    path = scratch / "export.parquet"
    t0 = time.perf_counter()
    rows = export_parquet(store, path, chunk)
    seconds = time.perf_counter() - t0
    size = path.stat().st_size
    path.unlink()
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": _rate(rows, seconds),
            "parquet_mb": round(size / 2**20, 2), "chunk_size": chunk}


def run(cfg: Config, *, predict_rows: int, update_rows: int, rowwise_rows: int, chunk: int) -> dict[str, Any]:
    """Fit the members once on the workspace's train split, then take every measurement."""
    with locked(cfg), open_store(cfg) as store:
        training = train_members(cfg, store, 0)
        texts = [r[0] for r in store.conn.execute("SELECT text FROM sentences WHERE split='train' ORDER BY sid")]
        exported = export(store, cfg.workspace, chunk)
        train_rows = store.count("train")
    warm = 4 * cfg.ensemble.predict_batch_rows  # two tasks per worker of Pool(2)
    sets = len(cfg.models.order) + 1
    per = min(predict_rows, len(texts) // sets - warm)
    if per < cfg.ensemble.predict_batch_rows:
        raise SystemExit(f"--size too small for the throughput passes: {sets} member sets need {warm} warm-up rows "
                         f"and at least {cfg.ensemble.predict_batch_rows} measured rows each, all distinct")
    step = warm + per
    slices = [(texts[i * step : i * step + warm], texts[i * step + warm : (i + 1) * step]) for i in range(sets)]
    pools = {f"pool{w}": throughput(cfg, slices, w) for w in (1, 2)}
    speedup = {k: round(pools["pool2"][k]["sentences_per_s"] / pools["pool1"][k]["sentences_per_s"], 2)
               for k in pools["pool1"]}
    return {
        "train_rows": train_rows,
        "fit_seconds": {n: t.get("seconds") for n, t in training.items()},
        "predict_rows": per,
        "throughput": pools,
        "pool2_over_pool1": speedup,
        "bulk_update": bulk_update(cfg.db_file, cfg.workspace, update_rows, rowwise_rows),
        "export": exported,
    }
