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
from sentirefine.data.store import LabelChange, Store
from sentirefine.data.workspace import iteration_dir, locked, open_store
from sentirefine.ensemble.pool import EnsemblePool
from sentirefine.integrations.versioning import export_parquet
from sentirefine.pipeline.train import train_members


def _rate(rows: int, seconds: float) -> float:
    return round(rows / seconds, 1) if seconds > 0 else float("inf")


def throughput(cfg: Config, warm: list[str], texts: list[str], workers: int,
               threads: int | None = None) -> dict[str, Any]:
    """Sentences/s of all members together and of each alone, through one Pool of ``workers``.

    Each worker keeps only the batch in hand in its token cache (the regime of a corpus larger
    than ``ensemble.worker_token_cache_entries``, where the members of a batch share its tokens
    and no pass reuses an earlier one's), so every set may read the same texts. A warm-up pass
    per member set (members and Kiwi loaded in every worker) is timed apart. ``threads`` per
    worker defaults to the pool's own rule (cores // workers).
    """
    names = cfg.models.order
    sets = {"total": names, **{n: [n] for n in names}}
    out: dict[str, Any] = {}
    with EnsemblePool(workers=workers, start_method=cfg.ensemble.start_method,
                      batch_rows=cfg.ensemble.predict_batch_rows, log=("json", "WARNING"),
                      token_cache_entries=cfg.ensemble.predict_batch_rows, threads_per_worker=threads) as pool:
        for label, members in sets.items():
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
        bulk = label_writes(store, rows, chunk=rows, iteration=2)
    copy.unlink()
    return {
        "bulk_rows": bulk["rows"], "bulk_seconds": bulk["seconds"], "bulk_rows_per_s": bulk["rows_per_s"],
        "rowwise_rows": len(one_by_one), "rowwise_seconds": round(rowwise_s, 3),
        "rowwise_rows_per_s": _rate(len(one_by_one), rowwise_s),
        "speedup": round(bulk["rows_per_s"] / max(_rate(len(one_by_one), rowwise_s), 1e-9), 1),
    }


def label_writes(store: Store, rows: int, chunk: int, iteration: int = 1) -> dict[str, Any]:
    """Flip the first ``rows`` train labels with ``apply_labels``, ``chunk`` rows per transaction
    (as the correct stage writes them); building the changes is timed too, as the loop pays it."""
    labels = store.conn.execute(
        "SELECT sid, current_label FROM sentences WHERE split='train' ORDER BY sid LIMIT ?", (rows,)
    ).fetchall()
    t0 = time.perf_counter()
    changed = sum(store.apply_labels([LabelChange(sid, lab, 1 - lab, 0.9) for sid, lab in labels[i:i + chunk]],
                                     iteration=iteration, source="ensemble") for i in range(0, len(labels), chunk))
    seconds = time.perf_counter() - t0
    return {"rows": changed, "chunk_size": chunk, "seconds": round(seconds, 3), "rows_per_s": _rate(changed, seconds)}


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
    batch = cfg.ensemble.predict_batch_rows
    warm_n = 4 * batch  # two tasks per worker of Pool(2)
    per = min(predict_rows, len(texts) - warm_n)
    if per < 2 * batch:
        raise SystemExit(f"--size too small for the throughput passes: {warm_n} warm-up rows and at least "
                         f"{2 * batch} measured rows are needed")
    warm, measured = texts[:warm_n], texts[warm_n : warm_n + per]
    # Pool(1) as it ships (its lone worker takes every core through torch's and Kiwi's threads)
    # and with one thread, the baseline of per-process scaling; Pool(2) gives each worker one core.
    pools = {"pool1": throughput(cfg, warm, measured, 1), "pool2": throughput(cfg, warm, measured, 2),
             "pool1_one_thread": throughput(cfg, warm, measured, 1, threads=1)}
    speedup = {k: round(pools["pool2"][k]["sentences_per_s"] / pools["pool1"][k]["sentences_per_s"], 2)
               for k in pools["pool1"]}
    scaling = {k: round(pools["pool2"][k]["sentences_per_s"] / pools["pool1_one_thread"][k]["sentences_per_s"], 2)
               for k in pools["pool1"]}
    return {
        "train_rows": train_rows,
        "fit_seconds": {n: t.get("seconds") for n, t in training.items()},
        "predict_rows": per,
        "throughput": pools,
        "pool2_over_pool1": speedup,
        "pool2_over_pool1_one_thread": scaling,
        "bulk_update": bulk_update(cfg.db_file, cfg.workspace, update_rows, rowwise_rows),
        "export": exported,
    }
