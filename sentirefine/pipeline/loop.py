"""The progressive self-training loop: ordered stages per iteration, iterations until converged.

One iteration ``k`` (models of iteration ``k-1`` predict; iteration 0 is the bootstrap):

    predict   stream the train split in chunks through the Pool ensemble → ``predictions``
    correct   threshold / oscillation / review-queue decisions → bulk label writes + history
    llm       queued rows relabelled by Gemini (skipped without an API key) → label writes + history
    train     lexicon → LSTM → BiLSTM → BERT, each with its own update strategy
    evaluate  gold metrics per member and ensemble → the EnsembleSpec iteration ``k+1`` votes with
    audit     label distribution, per-group bias flags, LLM critique → reports/audit-iter-NNN.md
    finish    convergence metrics; stop when label and lexicon change rates stay low

Every stage records its completion in the store, and each is safe to replay, so a crashed
run resumes at the first unfinished stage (``sentirefine refine`` again) and reaches the same
labels as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
from tqdm import tqdm

from sentirefine.config import Config, StoreConfig
from sentirefine.data.store import Store
from sentirefine.data.workspace import iteration_dir
from sentirefine.ensemble.combine import EnsembleOutput
from sentirefine.ensemble.crossfit import CrossFit
from sentirefine.ensemble.pool import EnsemblePool, ensemble_pool
from sentirefine.ensemble.spec import EnsembleSpec
from sentirefine.errors import ConfigError, SentirefineError, UsageError
from sentirefine.faults import crash_point
from sentirefine.integrations.tracking import Tracker
from sentirefine.integrations.versioning import snapshot
from sentirefine.logs import log_event, progress_disabled, stage_log
from sentirefine.pipeline import policy
from sentirefine.pipeline.train import check_trainable, evaluate_members, train_members

log = logging.getLogger(__name__)

_BYTES_PER_ROW = 4096  # text, tokens, member probabilities and tensors of one row, generously


def resolve_chunk_size(cfg: StoreConfig) -> int:
    """The configured chunk size, or one derived from available memory ('auto')."""
    if isinstance(cfg.chunk_size, int):
        return cfg.chunk_size
    budget = psutil.virtual_memory().available * cfg.auto_chunk_memory_fraction
    return int(min(50_000, max(1_000, budget // _BYTES_PER_ROW)))


@dataclass
class RefineResult:
    iterations: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""


@contextmanager
def _session(config: Config, store: Store, command: str) -> Iterator[tuple[EnsemblePool, Tracker]]:
    """What a command holds for all its iterations: the prediction pool and the MLflow run."""
    tracker = Tracker(config)
    with ensemble_pool(config) as pool, tracker.command_run(command, store.workspace_id()):
        yield pool, tracker


def bootstrap(config: Config, store: Store, session: tuple[EnsemblePool, Tracker] | None = None) -> dict[str, Any]:
    """Iteration 0: fit every member from scratch on the current labels and evaluate it."""
    done = [it for it in store.iterations() if it["iteration"] == 0 and it["finished_at"]]
    if done:
        return done[0]["metrics"]
    if session is None:
        with _session(config, store, "bootstrap") as own:
            return bootstrap(config, store, own)
    pool, tracker = session
    check_trainable(store)  # before any bookkeeping: a bad train split leaves the store as it was
    store.begin_iteration(0, threshold=float("nan"))
    started = time.perf_counter()
    training = train_members(config, store, 0)
    evaluation = _evaluate_stage(config, store, 0, pool)
    metrics = {
        "iteration": 0,
        "train_rows": store.count("train"),
        "label_accuracy": store.reference_accuracy(),
        "training": _strip_history(training),
        **evaluation,
        "seconds": round(time.perf_counter() - started, 1),
    }
    metrics["dataset_tag"] = _snapshot_stage(config, store, 0).get("tag")
    metrics["registry"] = _track_stage(tracker, store, 0, metrics, training)
    store.finish_iteration(0, metrics)
    return metrics


def refine(config: Config, store: Store, *, max_iterations: int | None = None,
           until_converged: bool = True) -> RefineResult:
    """Run (or resume) iterations until converged or ``max_iterations`` (absolute) is reached.

    ``until_converged=False`` ignores convergence and runs up to ``max_iterations``: a
    converged workspace otherwise never moves again, e.g. after human labels were imported.
    ``max_iterations=0`` bootstraps only; ``None`` takes ``refine.max_iterations``.
    """
    check_max_iterations(max_iterations)
    limit = config.refine.max_iterations if max_iterations is None else max_iterations
    crash_point("refine_start")
    with _session(config, store, "refine") as session:
        result = _iterate(config, store, limit, session, until_converged)
    log_event(log, "refine_stopped", reason=result.stop_reason, iterations_run=len(result.iterations))
    return result


def check_max_iterations(max_iterations: int | None) -> None:
    """Refuse a negative ``--max-iterations`` before anything runs (0 is valid: bootstrap only)."""
    if max_iterations is not None and max_iterations < 0:
        raise UsageError(f"--max-iterations {max_iterations} is out of range: it must be 0 (bootstrap only) or more",
                         hint="pass an iteration number from 0 up, or leave it out to use refine.max_iterations")


def _iterate(config: Config, store: Store, limit: int, session: tuple[EnsemblePool, Tracker],
             until_converged: bool = True) -> RefineResult:
    bootstrap(config, store, session)
    result = RefineResult()
    while True:
        done = [it for it in store.iterations() if it["finished_at"] and it["iteration"] > 0]
        if until_converged and done and done[-1]["metrics"].get("converged"):
            result.stop_reason = f"converged at iteration {done[-1]['iteration']}"
            break
        iteration = (done[-1]["iteration"] if done else 0) + 1
        if iteration > limit:
            result.stop_reason = f"max_iterations={limit} reached"
            break
        result.iterations.append(run_iteration(config, store, iteration, session))
    return result


def _once(store: Store, iteration: int, stage: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a stage whose result is its recorded info, at most once across crashes and resumes."""
    if store.stage_done(iteration, stage):
        return store.stage_info(iteration, stage) or {}
    store.start_stage(iteration, stage)
    with stage_log(log, stage, iteration=iteration) as result:
        info = work()
        result.update({k: v for k, v in info.items() if v is None or isinstance(v, int | float | str)})
    crash_point(f"{stage}_before_finish_stage")
    store.finish_stage(iteration, stage, info)
    return info


def _snapshot_stage(config: Config, store: Store, iteration: int) -> dict[str, Any]:
    """DVC snapshot + git tag of the labels after this iteration."""
    if not config.versioning.enabled:
        return {}
    return _once(store, iteration, "snapshot",
                 lambda: snapshot(config, store, iteration, resolve_chunk_size(config.store)))


def _track_stage(tracker: Tracker, store: Store, iteration: int, metrics: dict[str, Any],
                 training: dict[str, Any]) -> dict[str, Any]:
    """Log the iteration to MLflow and apply the registry gate."""
    return _once(store, iteration, "track", lambda: tracker.log_iteration(store, iteration, metrics, training))


def run_iteration(config: Config, store: Store, iteration: int,
                  session: tuple[EnsemblePool, Tracker]) -> dict[str, Any]:
    """All stages of one iteration, skipping those already recorded as finished."""
    pool, tracker = session
    threshold = config.refine.threshold.at(iteration)
    if not store.stage_done(iteration, "predict"):
        _check_checkpoints(config, iteration - 1)
    store.begin_iteration(iteration, threshold)
    crash_point("iteration_begun")
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(stage: str, fn: Any, *args: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args)
        timings[stage] = round(time.perf_counter() - t0, 2)
        return out

    if not store.stage_done(iteration, "predict"):
        timed("predict", _predict_stage, config, store, iteration, pool)
    if not store.stage_done(iteration, "correct"):
        timed("correct", _correct_stage, config, store, iteration)
    llm = timed("llm", _llm_stage, config, store, iteration)
    training = timed("train", train_members, config, store, iteration)
    evaluation = timed("evaluate", _evaluate_stage, config, store, iteration, pool)
    metrics = _iteration_metrics(config, store, iteration, threshold, training, evaluation)
    metrics["stage_seconds"] = timings
    metrics["llm"] = llm
    metrics["audit"] = timed("audit", _audit_stage, config, store, iteration)
    metrics["dataset_tag"] = timed("snapshot", _snapshot_stage, config, store, iteration).get("tag")
    metrics["registry"] = timed("track", _track_stage, tracker, store, iteration, metrics, training)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    crash_point("before_finish_iteration")
    store.finish_iteration(iteration, metrics)
    log_event(log, "iteration_done", iteration=iteration, threshold=threshold,
              label_change_rate=metrics["label_change_rate"], converged=metrics["converged"],
              ensemble_accuracy=metrics["ensemble"].get("accuracy"), seconds=metrics["seconds"])
    return metrics


def _check_checkpoints(config: Config, iteration: int) -> None:
    """Load every member an iteration starts from before writing anything.

    A damaged or mismatched checkpoint is then a :class:`ModelLoadError` (exit 5) with the store
    untouched, instead of a failure after predict and correct have already moved labels (the
    lexicon, cross-fitted, is first loaded only when it is updated). Costs one load per member.
    """
    from sentirefine.models import load_model
    from sentirefine.models.batching import release_memory

    for name in config.models.order:
        load_model(iteration_dir(config, iteration) / name, device="cpu")
    release_memory()


def _predict_stage(config: Config, store: Store, iteration: int, pool: EnsemblePool) -> None:
    """Predict every train row with the previous iteration's members; resumable per chunk."""
    spec = _previous_spec(config, store, iteration)
    chunk = resolve_chunk_size(config.store)
    total = store.count("train")
    resume_after = store.last_predicted_sid(iteration)
    already = store.conn.execute("SELECT count(*) FROM predictions WHERE iteration=?", (iteration,)).fetchone()[0]
    store.start_stage(iteration, "predict")
    crossfit = CrossFit.prepare(config, store, spec.members, iteration)
    dirs = spec.checkpoint_dirs(config)
    with (stage_log(log, "predict", iteration=iteration, rows=total, chunk_size=chunk,
                    cross_fit=list(crossfit.oof)) as result,
          tqdm(total=total, initial=already, desc=f"iter {iteration} predict", unit="row",
               disable=progress_disabled()) as bar):
        for rows in store.iter_chunks("train", chunk, after_sid=resume_after):
            probs = crossfit.member_probs(pool, dirs, [r.sid for r in rows], [r.text for r in rows], bar.update)
            store.save_predictions(iteration, _prediction_rows(spec, rows, spec.combine(probs)))
            crash_point("predict_chunk")
        result["weights"] = dict(zip(spec.members, np.round(spec.weights, 4).tolist(), strict=True))
    crash_point("predict_before_finish_stage")
    # Fixed here, before correct moves any label, so a resumed correct stage uses the same offsets
    # (the correct stage's log line names them).
    offsets = policy.class_offsets(config.refine.threshold, store.label_counts("train"), store.label_counts("gold"))
    store.finish_stage(iteration, "predict", PredictRecord(result["weights"], chunk, offsets).to_info())


def _previous_spec(config: Config, store: Store, iteration: int) -> EnsembleSpec:
    """The ensemble the previous iteration's evaluate stage fitted: what this iteration votes with."""
    previous = store.stage_info(iteration - 1, "evaluate")
    if previous is None:
        raise SentirefineError(f"iteration {iteration - 1} has no evaluation to take weights from",
                               hint="run `sentirefine bootstrap` (or `refine`, which bootstraps first)")
    return EnsembleSpec.from_stage_info(previous, config, iteration - 1)


def _prediction_rows(spec: EnsembleSpec, rows: list[Any], out: EnsembleOutput) -> list[tuple[Any, ...]]:
    """``predictions`` rows of one chunk: the vote, and the (temperature-scaled) member probabilities."""
    return [(r.sid, float(out.p_positive[i]), int(out.predicted[i]), float(out.confidence[i]),
             float(out.agreement[i]), json.dumps(dict(zip(spec.members, np.round(out.member_p[i], 4).tolist(),
                                                          strict=True))))
            for i, r in enumerate(rows)]


@dataclass(frozen=True)
class PredictRecord:
    """What a predict stage records for its iteration (its stage info): the weights it voted with
    (rounded, for reading), its chunk size, and the class offsets it fixed for the correct stage.

    ``class_offsets`` is None for a stage recorded before the offsets existed: those iterations
    used the hand-set ``per_class`` offsets only.
    """

    weights: dict[str, float]
    chunk_size: int | None
    class_offsets: dict[int, float] | None

    def to_info(self) -> dict[str, Any]:
        """The stage info, keys as the store has always held them (older workspaces read the same)."""
        return {"weights": self.weights, "chunk_size": self.chunk_size, "class_offsets": self.class_offsets}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> PredictRecord:
        """Read a predict stage's info; a key it lacks (an older stage) comes back empty or None."""
        saved = info.get("class_offsets")
        offsets = None if saved is None else {int(k): float(v) for k, v in saved.items()}  # JSON keys are strings
        return cls(dict(info.get("weights") or {}), info.get("chunk_size"), offsets)


def _class_offsets(config: Config, store: Store, iteration: int) -> dict[int, float]:
    """The offsets the predict stage fixed for this iteration (per_class if it predates them)."""
    record = PredictRecord.from_info(store.stage_info(iteration, "predict") or {})
    if record.class_offsets is None:
        return dict(config.refine.threshold.per_class)
    return record.class_offsets


def _correct_stage(config: Config, store: Store, iteration: int) -> None:
    """Apply threshold/oscillation/queue decisions chunk by chunk, one transaction each.

    The balance guard runs first, before the stage is even recorded: a stage it stops writes nothing.
    """
    chunk = resolve_chunk_size(config.store)
    offsets = _class_offsets(config, store, iteration)
    _balance_guard(config, store, iteration, offsets, chunk)
    store.start_stage(iteration, "correct")
    with stage_log(log, "correct", iteration=iteration, threshold=config.refine.threshold.at(iteration),
                   class_offsets=offsets) as result:
        changed = 0
        for rows in store.iter_predictions(iteration, chunk):
            flips = store.flip_counts(policy.candidates(rows, iteration, config.refine, offsets))
            decision = policy.decide(rows, iteration=iteration, refine=config.refine, flip_counts=flips,
                                     offsets=offsets)
            changed += store.apply_decision(decision.changes, decision.freeze, decision.queue,
                                            iteration=iteration, source="ensemble", confident=decision.confident)
            crash_point("correct_chunk")
        result["changed_this_attempt"] = changed
    crash_point("correct_before_finish_stage")
    store.finish_stage(iteration, "correct", {"changed": store.changes_in_iteration(iteration)})


def _corrected(store: Store, iteration: int) -> dict[int, int]:
    """Live ensemble changes of ``iteration`` by new label (changes a rollback undid do not count)."""
    return {int(k): int(v) for k, v in store.conn.execute(
        "SELECT new_label, count(*) FROM label_history WHERE iteration=? AND source='ensemble' "
        "AND undone_by IS NULL GROUP BY new_label", (iteration,)).fetchall()}


def _balance_guard(config: Config, store: Store, iteration: int, offsets: dict[int, float], chunk: int) -> None:
    """Stop a correct stage that would move the train class balance far away from the gold split's.

    Why: a threshold the models clear for almost every row (a valid ``threshold.start`` of 0.55)
    let one iteration relabel most of the corpus to one class, and the next iteration then blamed
    the imported data. The stage's changes are counted from the stored predictions with the same
    policy (nothing is written), plus those an interrupted attempt already wrote, so a resumed
    stage decides as its first attempt did. ``ConfigError`` (exit 2) names the keys to change.
    """
    tolerance = config.refine.max_balance_shift
    gold = store.label_counts("gold")
    if tolerance is None or not sum(gold.values()):
        return
    moved = Counter(_corrected(store, iteration))
    now = store.label_counts("train")
    before = {1: now.get(1, 0) - moved[1] + moved[0], 0: now.get(0, 0) - moved[0] + moved[1]}
    for rows in store.iter_predictions(iteration, chunk):
        flips = store.flip_counts(policy.candidates(rows, iteration, config.refine, offsets))
        stats = policy.decide(rows, iteration=iteration, refine=config.refine, flip_counts=flips,
                              offsets=offsets).stats
        moved.update({label: stats[f"corrected_to_{label}"] for label in (0, 1)})
    shift = policy.balance_shift(before, moved, gold)
    if shift.away <= tolerance:
        return
    raise ConfigError(
        f"iteration {iteration} would change {moved[1] + moved[0]} of {sum(before.values())} train labels "
        f"({moved[1]} to 1, {moved[0]} to 0), moving the positive share from {shift.before:.3f} to "
        f"{shift.after:.3f} against {shift.gold:.3f} on the gold split: {shift.away:.3f} further from gold, "
        f"beyond refine.max_balance_shift={tolerance}; nothing was written",
        hint=f"the threshold is too low for these models: raise refine.threshold.start (now "
             f"{config.refine.threshold.start}); or, if the gold split is not drawn like the train split, raise "
             f"refine.max_balance_shift or set it to null to disable the guard; then run `sentirefine refine` again",
    )


def _llm_stage(config: Config, store: Store, iteration: int) -> dict[str, Any]:
    """Relabel queued rows with the LLM (skipped, with its reason, when disabled or without a key).

    Runs before training so the members learn from the LLM's labels; resumable because every
    answer is cached and every write carries the label it expects to replace.
    """
    from sentirefine.integrations.llm.relabel import relabel_stage

    return _once(store, iteration, "llm", lambda: relabel_stage(config, store, iteration))


def _audit_stage(config: Config, store: Store, iteration: int) -> dict[str, Any]:
    """Label distribution, per-group bias flags and an LLM critique → reports/audit-iter-NNN.md."""
    if not config.llm.audit:
        return {}
    from sentirefine.reporting.audit import audit_stage

    return _once(store, iteration, "audit", lambda: audit_stage(config, store, iteration))


def _evaluate_stage(config: Config, store: Store, iteration: int, pool: EnsemblePool) -> dict[str, Any]:
    """Gold metrics, weights and temperatures of this iteration's members."""

    def work() -> dict[str, Any]:
        evaluation = evaluate_members(config, store, iteration, pool)
        crash_point("evaluate_end")
        return evaluation

    return _once(store, iteration, "evaluate", work)


def _iteration_metrics(config: Config, store: Store, iteration: int, threshold: float,
                       training: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    """Convergence metrics and refinement statistics of a finished iteration."""
    n_train = store.count("train")
    corrected = _corrected(store, iteration)
    label_change_rate = store.changes_in_iteration(iteration) / max(1, n_train)
    model_change = {n: t["change_rate"] for n, t in training.items() if t.get("change_rate") is not None}
    previous = [it for it in store.iterations() if it["iteration"] == iteration - 1]
    streak, converged = policy.convergence(label_change_rate, model_change, config.refine,
                                           previous[0]["metrics"].get("quiet_streak", 0) if previous else 0)
    queued = store.open_review_count()
    return {
        "iteration": iteration,
        "threshold": threshold,
        "class_offsets": _class_offsets(config, store, iteration),
        "train_rows": n_train,
        "corrected_to_0": corrected.get(0, 0),
        "corrected_to_1": corrected.get(1, 0),
        "label_change_rate": label_change_rate,
        "model_change_rates": model_change,
        "lexicon_change_rate": model_change.get("lexicon"),
        "queued_low_confidence": queued.get("low_confidence", 0),
        "frozen": store.conn.execute("SELECT count(*) FROM sentences WHERE frozen=1").fetchone()[0],
        "label_accuracy": store.reference_accuracy(),
        "quiet_streak": streak,
        "converged": converged,
        "training": _strip_history(training),
        **evaluation,
    }


def _strip_history(training: dict[str, Any]) -> dict[str, Any]:
    return {n: {k: v for k, v in t.items() if k != "history"} for n, t in training.items()}
