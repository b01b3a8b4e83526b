"""Sequential (re)training of the members, and their evaluation on the gold split.

Members train one after another in ``models.order`` (lexicon → LSTM → BiLSTM → BERT): on a
small machine, or one GPU, the big models must not compete for memory, and memory is released
between them. Iteration 0 (bootstrap) fits from scratch; later iterations call each member's
``update`` — its own strategy — on the previous iteration's checkpoint.

Each member's training is its own recorded stage (``train:<name>``) with an atomically written
checkpoint, so a crash during BERT does not redo the lexicon, LSTM and BiLSTM.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sentirefine.config import Config
from sentirefine.data.store import Store
from sentirefine.data.store_training import gold_set, trainable_summary, unfrozen_train_set
from sentirefine.data.workspace import iteration_dir, resolve_checkpoint
from sentirefine.ensemble.metrics import classification_metrics, confusion
from sentirefine.ensemble.pool import EnsemblePool
from sentirefine.ensemble.spec import EnsembleSpec
from sentirefine.errors import TrainingError
from sentirefine.faults import crash_point
from sentirefine.logs import log_event, progress_disabled, stage_log
from sentirefine.models import SentimentModel, build_model, load_model
from sentirefine.models.batching import release_memory, resolve_device

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


def train_members(config: Config, store: Store, iteration: int) -> dict[str, dict[str, Any]]:
    """Train every member for ``iteration``; returns per-member training info."""
    texts, labels = training_set(store)
    out_dir = iteration_dir(config, iteration)
    previous = iteration_dir(config, iteration - 1) if iteration > 0 else None
    device = resolve_device(config.models.device)
    info: dict[str, dict[str, Any]] = {}
    for name in config.models.order:
        stage = f"train:{name}"
        if store.stage_done(iteration, stage) and (out_dir / name / "model.json").is_file():
            info[name] = store.stage_info(iteration, stage) or {}
            continue
        store.start_stage(iteration, stage)
        release_memory()
        with stage_log(log, stage, iteration=iteration, rows=len(texts)) as result:
            started = time.perf_counter()
            model, change = _train_one(config, name, previous, device, texts, labels)
            crash_point(f"{stage}_before_save")
            model.save(out_dir / name)
            crash_point(f"{stage}_after_save")
            result.update(seconds=round(time.perf_counter() - started, 2), change_rate=change,
                          mode="fit" if previous is None else "update")
        info[name] = {**result, "history": model.history_[-5:]}
        store.finish_stage(iteration, stage, info[name])
        del model
        release_memory()
    return info


def _train_one(config: Config, name: str, previous: Path | None, device: str, texts: list[str],
               labels: np.ndarray) -> tuple[SentimentModel, float | None]:
    if previous is None:
        return build_model(name, resolve_checkpoint(config)).fit(texts, labels), None
    model = load_model(previous / name, device=device)
    # Only members that define a change rate (the lexicon) pay for keeping a copy.
    before = copy.deepcopy(model) if type(model).change_rate is not SentimentModel.change_rate else None
    model.update(texts, labels)
    return model, (model.change_rate(before) if before is not None else None)


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
    with tqdm(total=len(texts), desc=f"iter {iteration} evaluate", unit="row", disable=progress_disabled(),
              leave=False) as bar:
        raw = pool.member_probs([iteration_dir(config, iteration) / n for n in names], texts, progress=bar.update)
    members = {n: {**classification_metrics(labels, raw[:, i]), "confusion": confusion(labels, raw[:, i] > 0.5)}
               for i, n in enumerate(names)}
    spec = EnsembleSpec.fit(names, raw, labels, config.ensemble, iteration)
    out = spec.combine(raw)
    ensemble = classification_metrics(labels, out.p_positive)
    ensemble["confusion"] = confusion(labels, out.predicted)
    return {"members": members, "ensemble": ensemble, "weights": spec.weight_map(),
            "temperatures": spec.temperature_map(), "spec": spec.to_dict()}


def _gold_sample(config: Config, store: Store) -> tuple[list[str], np.ndarray]:
    """Texts and labels of the gold split, or of a fixed sample of ``refine.gold_eval_rows`` of it."""
    texts, labels = gold_set(store)
    if config.refine.gold_eval_rows and len(texts) > config.refine.gold_eval_rows:
        pick = sorted(np.random.default_rng(0).choice(len(texts), config.refine.gold_eval_rows, replace=False))
        return [texts[i] for i in pick], labels[pick]
    return texts, labels
