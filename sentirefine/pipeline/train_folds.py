"""Training one member: as one model, or as ``ensemble.folds`` fold models fitted as separate jobs.

:func:`train_one` is the member's fit (bootstrap) or update (its own strategy, from its previous
checkpoint), shared by both shapes. :func:`train_fold_set` turns a fold-set member into ``k``
:class:`FoldJob` s run through the job runner: fold model *j* trains on the rows outside fold *j*
(:func:`sentirefine.models.folds.out_of_fold_rows`) and is updated from *its own* previous
checkpoint, so it never learns fold *j*'s labels. Each fold is its own recorded stage
(``train:<member>:fold-<j>``) with an atomically written checkpoint, so a crash in fold 2 of BERT
redoes only what was unfinished; the set is sealed (its card written) when every fold is done.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sentirefine.config import Config
from sentirefine.data.store import Store
from sentirefine.data.workspace import resolve_checkpoint
from sentirefine.ensemble.jobs import JobRunner, describe, tail_threads, torch_threads
from sentirefine.faults import crash_point
from sentirefine.logs import stage_log
from sentirefine.models import SentimentModel, build_model, load_model
from sentirefine.models.batching import release_memory, resolve_device
from sentirefine.models.folds import FoldSet, fold_dir, fold_of, out_of_fold_rows, update_sample
from sentirefine.models.registry import member_classes

log = logging.getLogger(__name__)


def train_one(config: Config, name: str, previous: Path | None, device: str, texts: list[str],
              labels: np.ndarray, fold: int = 0) -> tuple[SentimentModel, float | None]:
    """Fit ``name`` from scratch (no ``previous`` checkpoint) or update that checkpoint; with its change rate."""
    if previous is None:
        return build_model(name, resolve_checkpoint(config), fold=fold).fit(texts, labels), None
    model = load_model(previous, device=device)
    # Only members that define a change rate (the lexicon) pay for keeping a copy.
    before = copy.deepcopy(model) if type(model).change_rate is not SentimentModel.change_rate else None
    model.update(texts, labels)
    return model, (model.change_rate(before) if before is not None else None)


@dataclass(frozen=True)
class FoldJob:
    """Everything one fold fit needs, picklable: a worker process reads neither the store nor the config file."""

    config: Config
    name: str
    fold: int
    assignment: np.ndarray  # each row's fold (models.folds.fold_of), computed once for all of a member's jobs
    previous: Path | None  # this fold's checkpoint of the previous iteration (None: fit from scratch)
    out: Path
    device: str
    iteration: int
    texts: list[str]
    labels: np.ndarray
    threads: int | None = None  # torch threads for this fit (None: the worker's share; see jobs.tail_threads)


@dataclass(frozen=True)
class FoldOutcome:
    """What a finished fold fit reports back (its stage info)."""

    fold: int
    seconds: float
    change_rate: float | None
    history: list[dict[str, Any]]
    rows: int  # trained on: the rows outside the fold, or an update's sample of them

    def to_info(self) -> dict[str, Any]:
        return {"fold": self.fold, "seconds": self.seconds, "change_rate": self.change_rate, "history": self.history,
                "rows": self.rows}


def fit_fold(job: FoldJob) -> FoldOutcome:
    """One fold model: train on the rows outside its fold, save it atomically (runs in a job worker)."""
    stage = f"train:{job.name}:fold-{job.fold}"
    texts, labels = out_of_fold_rows(job.texts, job.labels, job.assignment, job.fold)
    if job.previous is not None and member_classes()[job.name].updates_on_a_sample:
        texts, labels = update_sample(texts, labels, job.config.ensemble.update_share(),
                                      (job.config.models.seed, job.iteration, job.fold))
    with stage_log(log, stage, iteration=job.iteration, rows=len(texts), threads=job.threads), \
            torch_threads(job.threads):
        started = time.perf_counter()
        model, change = train_one(job.config, job.name, job.previous, job.device, texts, labels, fold=job.fold)
        crash_point(f"{stage}_before_save")
        model.save(job.out)
        crash_point(f"{stage}_after_save")
        outcome = FoldOutcome(job.fold, round(time.perf_counter() - started, 2), change, model.history_[-5:],
                              len(texts))
    del model
    release_memory()
    return outcome


def train_fold_set(config: Config, store: Store, name: str, iteration: int, member_dirs: tuple[Path, Path | None],
                   data: tuple[list[str], np.ndarray], runner: JobRunner) -> dict[str, Any]:
    """Fit or update the ``k`` fold models of ``name`` (the unfinished ones), then seal the set.

    ``member_dirs``: this iteration's and the previous one's directory of the member (None at
    bootstrap). Returns the member's training info: each fold's seconds, the mean fold change rate.
    """
    out, previous = member_dirs
    folds, device = config.ensemble.folds, resolve_device(config.models.device)
    assignment, tail = fold_of(data[0], folds), tail_threads(runner, folds)
    jobs = [FoldJob(config, name, j, assignment, None if previous is None else fold_dir(previous, j),
                    fold_dir(out, j), device, iteration, *data, threads=tail.get(j))
            for j in range(folds) if not _fold_done(store, iteration, name, j, out)]
    with stage_log(log, f"train:{name}:folds", iteration=iteration, folds=folds, pending=len(jobs), **describe(runner)):
        for job in jobs:
            store.start_stage(iteration, _fold_stage(name, job.fold))
        # The full rounds first, then the partial last round on every core (jobs.tail_threads).
        for batch in ([j for j in jobs if j.fold not in tail], [j for j in jobs if j.fold in tail]):
            for outcome in runner.run(fit_fold, batch):
                store.finish_stage(iteration, _fold_stage(name, outcome.fold), outcome.to_info())
    outcomes = [store.stage_info(iteration, _fold_stage(name, j)) or {} for j in range(folds)]
    crash_point(f"train:{name}_before_seal")
    history = [{"fold": o["fold"], **h} for o in outcomes for h in o.get("history", [])]
    FoldSet.seal(out, name, folds, config.models.seed, history)
    rates = [o.get("change_rate") for o in outcomes]
    return {"fold_seconds": [o.get("seconds") for o in outcomes], "fold_rows": [o.get("rows") for o in outcomes],
            "change_rate": None if None in rates else float(np.mean(rates)),
            "mode": "fit" if previous is None else "update", "folds": folds, "history": history[-5:]}


def _fold_stage(name: str, fold: int) -> str:
    return f"train:{name}:fold-{fold}"


def _fold_done(store: Store, iteration: int, name: str, fold: int, out: Path) -> bool:
    """A fold whose stage is recorded and whose checkpoint is complete is not fitted again."""
    return store.stage_done(iteration, _fold_stage(name, fold)) and (fold_dir(out, fold) / "model.json").is_file()

