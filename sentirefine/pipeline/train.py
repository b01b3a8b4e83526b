"""Sequential (re)training of the members, and their evaluation on the gold split.

Members train one after another in ``models.order`` (lexicon → LSTM → BiLSTM → BERT): on a
small machine, or one GPU, the big models must not compete for memory, and memory is released
between them. Iteration 0 (bootstrap) fits from scratch; later iterations call each member's
``update`` — its own strategy — on the previous iteration's checkpoint.

Each member's training is its own recorded stage (``train:<name>``) with an atomically written
checkpoint, so a crash during BERT does not redo the lexicon, LSTM and BiLSTM.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sentirefine.config import Config
from sentirefine.data.store import Store
from sentirefine.data.store_training import gold_set, trainable_summary, unfrozen_train_set
from sentirefine.data.workspace import iteration_dir
from sentirefine.ensemble.jobs import JobRunner, job_runner
from sentirefine.ensemble.metrics import classification_metrics, confusion
from sentirefine.ensemble.pool import EnsemblePool
from sentirefine.ensemble.spec import EnsembleSpec
from sentirefine.errors import TrainingError
from sentirefine.faults import crash_point
from sentirefine.logs import log_event, progress_disabled, stage_log
from sentirefine.models.batching import release_memory, resolve_device
from sentirefine.pipeline.train_folds import train_fold_set, train_one

log = logging.getLogger(__name__)


def check_trainable(store: Store) -> None:
    """Fail before any bookkeeping is written if the train split cannot train a classifier."""
    rows, classes, label = trainable_summary(store)
    if rows == 0:
        train, gold = store.count("train"), store.count("gold")
        if train:
            raise TrainingError(f"all {train} train rows of {store.path} are frozen (oscillating labels)",
                                hint="`sentirefine rollback` to an earlier iteration, or review the frozen rows")
        raise TrainingError(f"the train split is empty (0 train rows, {gold} gold rows) in {store.path}",
                            hint="import a training file first (gold rows are never trained on)")
    if classes < 2:
        raise TrainingError(
            f"the train split holds a single class ({label}) in {store.path}: a classifier cannot be trained",
            hint="import data with both labels (0 and 1)",
        )


def training_set(store: Store) -> tuple[list[str], np.ndarray]:
    """Texts and current labels of the train split, without frozen (oscillating) rows."""
    check_trainable(store)
    return unfrozen_train_set(store)


def train_members(config: Config, store: Store, iteration: int,
                  runner: JobRunner | None = None) -> dict[str, dict[str, Any]]:
    """Train every member for ``iteration``, one after another; returns per-member training info.

    With ``ensemble.folds`` > 1 a member's fold models are jobs of one runner: the command's
    (``runner``), or one alive for this stage; members still train in order, so two big
    members never compete for memory.
    """
    data = training_set(store)
    out_dir = iteration_dir(config, iteration)
    previous = iteration_dir(config, iteration - 1) if iteration > 0 else None
    info: dict[str, dict[str, Any]] = {}
    with nullcontext(runner) if runner is not None else job_runner(config, config.ensemble.folds) as runner:
        for name in config.models.order:
            stage = f"train:{name}"
            if store.stage_done(iteration, stage) and (out_dir / name / "model.json").is_file():
                info[name] = store.stage_info(iteration, stage) or {}
                continue
            store.start_stage(iteration, stage)
            release_memory()
            dirs = (out_dir / name, None if previous is None else previous / name)
            with stage_log(log, stage, iteration=iteration, rows=len(data[0])) as result:
                started = time.perf_counter()
                trained = (train_fold_set(config, store, name, iteration, dirs, data, runner)
                           if config.ensemble.folds > 1 else _train_single(config, name, dirs, data))
                result.update(seconds=round(time.perf_counter() - started, 2), change_rate=trained.pop("change_rate"),
                              mode=trained.pop("mode"), **{k: v for k, v in trained.items() if k != "history"})
            info[name] = {**result, "history": trained["history"]}
            store.finish_stage(iteration, stage, info[name])
            release_memory()
    return info


def _train_single(config: Config, name: str, dirs: tuple[Path, Path | None],
                  data: tuple[list[str], np.ndarray]) -> dict[str, Any]:
    """One model for the member, trained on every unfrozen row (``ensemble.folds`` = 1)."""
    out, previous = dirs
    model, change = train_one(config, name, previous, resolve_device(config.models.device), *data)
    crash_point(f"train:{name}_before_save")
    model.save(out)
    crash_point(f"train:{name}_after_save")
    return {"change_rate": change, "mode": "fit" if previous is None else "update", "history": model.history_[-5:]}


def evaluate_members(config: Config, store: Store, iteration: int, pool: EnsemblePool) -> dict[str, Any]:
    """Gold metrics of each member and of the weighted ensemble; the ensemble for what follows.

    The :class:`EnsembleSpec` fitted here (temperatures, weights) is recorded under ``spec`` and
    is what the next iteration's predict stage and the registered model vote with. The weights
    are derived from the same gold metrics they are evaluated with; with four scalar weights
    the optimism is small, and it is documented in the README.
    """
    names = config.models.order
    texts, labels = _gold_sample(config, store)
    if not texts:
        log_event(log, "gold_split_empty", level=logging.WARNING, iteration=iteration,
                  hint="import a gold file (--gold) to measure models honestly")
        spec = EnsembleSpec.uniform(names, config.ensemble, iteration)
        return {"members": {}, "ensemble": {}, "weights": spec.weight_map(), "spec": spec.to_dict()}
    dirs, folded = [iteration_dir(config, iteration) / n for n in names], config.ensemble.folds > 1
    with tqdm(total=len(texts), desc=f"iter {iteration} evaluate", unit="row",
              disable=progress_disabled(), leave=False) as bar:
        raw, held = (pool.member_views(dirs, texts, progress=bar.update) if folded
                     else (pool.member_probs(dirs, texts, progress=bar.update), None))
    members = {n: {**classification_metrics(labels, raw[:, i]), "confusion": confusion(labels, raw[:, i] > 0.5)}
               for i, n in enumerate(names)}
    spec = EnsembleSpec.fit(names, raw, labels, config.ensemble, iteration)
    out = spec.combine(raw)
    ensemble = classification_metrics(labels, out.p_positive)
    ensemble["confusion"] = confusion(labels, out.predicted)
    result = {"members": members, "ensemble": ensemble, "weights": spec.weight_map(),
              "temperatures": spec.temperature_map(), "spec": spec.to_dict()}
    if held is not None:  # one fold model per member, as each train row is predicted: the budget's evidence
        vote = spec.combine(held)
        result["held_out"] = {"accuracy": classification_metrics(labels, vote.p_positive)["accuracy"],
                              "confusion": confusion(labels, vote.predicted)}
    return result


def _gold_sample(config: Config, store: Store) -> tuple[list[str], np.ndarray]:
    """Texts and labels of the gold split, or of a fixed sample of ``refine.gold_eval_rows`` of it."""
    texts, labels = gold_set(store)
    if config.refine.gold_eval_rows and len(texts) > config.refine.gold_eval_rows:
        pick = sorted(np.random.default_rng(0).choice(len(texts), config.refine.gold_eval_rows, replace=False))
        return [texts[i] for i in pick], labels[pick]
    return texts, labels
