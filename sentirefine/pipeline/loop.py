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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
import psutil
from tqdm import tqdm

from sentirefine.config import Config, StoreConfig
from sentirefine.data.records import (
    Convergence,
    Corrections,
    Evaluation,
    IterationMetrics,
    IterationRow,
    iteration_rows,
)
from sentirefine.data.store import Store
from sentirefine.data.store_training import frozen_count, live_ensemble_changes, predictions_written, unlocked_votes
from sentirefine.data.workspace import iteration_dir
from sentirefine.ensemble.combine import EnsembleOutput
from sentirefine.ensemble.crossfit import CrossFit
from sentirefine.ensemble.jobs import JobRunner, job_runner
from sentirefine.ensemble.pool import EnsemblePool, ensemble_pool
from sentirefine.ensemble.spec import EnsembleSpec
from sentirefine.errors import ConfigError, SentirefineError, UsageError
from sentirefine.faults import crash_point
from sentirefine.integrations.tracking import Tracker
from sentirefine.integrations.versioning import snapshot
from sentirefine.logs import log_event, progress_disabled, stage_log
from sentirefine.pipeline import noise_budget, policy
from sentirefine.pipeline.stages import Stage, StageRun, committed_chunks, run_stage, run_stages
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
    iterations: list[IterationMetrics] = field(default_factory=list)
    stop_reason: str = ""


class Session(NamedTuple):
    """What a command holds for all its iterations."""

    pool: EnsemblePool
    tracker: Tracker
    runner: JobRunner  # fold fits (ensemble.folds > 1); its workers start on the first fold job


@contextmanager
def _session(config: Config, store: Store, command: str) -> Iterator[Session]:
    """The prediction pool, the fold-job runner and the MLflow run, alive for the whole command.

    The job runner lives as long as the pool so that its workers keep their tokenisation cache
    from one iteration to the next, as the command's own process does for unfolded members:
    restarted per train stage, each of its workers re-ran Kiwi over the whole train split every
    iteration (about 20 s on 2 cores at 20k rows, on top of the restart).
    """
    tracker = Tracker(config)
    with ensemble_pool(config) as pool, job_runner(config, config.ensemble.folds) as runner, \
            tracker.command_run(command, store.workspace_id()):
        yield Session(pool, tracker, runner)


def bootstrap(config: Config, store: Store,
              session: Session | None = None) -> IterationMetrics:
    """Iteration 0: fit every member from scratch on the current labels and evaluate it."""
    done = [it for it in iteration_rows(store) if it.iteration == 0 and it.finished_at]
    if done:
        return done[0].metrics or IterationMetrics(iteration=0)
    if session is None:
        with _session(config, store, "bootstrap") as own:
            return bootstrap(config, store, own)
    check_trainable(store)  # before any bookkeeping: a bad train split leaves the store as it was
    store.begin_iteration(0, threshold=float("nan"))
    run = StageRun(config, store, 0, session.pool, session.tracker, runner=session.runner)
    run_stages(BOOTSTRAP, run)
    store.finish_iteration(0, run.metrics.to_json())
    return run.metrics


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


def _iterate(config: Config, store: Store, limit: int, session: Session,
             until_converged: bool = True) -> RefineResult:
    bootstrap(config, store, session)
    result = RefineResult()
    while True:
        done = [it for it in iteration_rows(store) if it.finished_at and it.iteration > 0]
        if until_converged and done and _converged(done[-1]):
            result.stop_reason = f"converged at iteration {done[-1].iteration}"
            break
        iteration = (done[-1].iteration if done else 0) + 1
        if iteration > limit:
            result.stop_reason = f"max_iterations={limit} reached"
            break
        result.iterations.append(run_iteration(config, store, iteration, session))
    return result


def _converged(it: IterationRow) -> bool:
    return it.metrics is not None and bool(it.metrics.convergence.converged)


def run_iteration(config: Config, store: Store, iteration: int,
                  session: Session) -> IterationMetrics:
    """All stages of one iteration, skipping those already recorded as finished."""
    threshold = config.refine.threshold.at(iteration)
    if not store.stage_done(iteration, "predict"):
        _check_checkpoints(config, iteration - 1)
    store.begin_iteration(iteration, threshold)
    crash_point("iteration_begun")
    run = StageRun(config, store, iteration, session.pool, session.tracker, threshold=threshold,
                   runner=session.runner)
    run_stages(ITERATION, run)
    metrics = run.metrics
    metrics.seconds = round(time.perf_counter() - run.started, 1)
    crash_point("before_finish_iteration")
    store.finish_iteration(iteration, metrics.to_json())
    log_event(log, "iteration_done", iteration=iteration, threshold=threshold,
              label_change_rate=metrics.convergence.label_change_rate, converged=metrics.convergence.converged,
              ensemble_accuracy=metrics.evaluation.accuracy("ensemble"), seconds=metrics.seconds)
    return metrics


def predict(config: Config, store: Store, iteration: int, pool: EnsemblePool) -> None:
    """The predict stage alone, with its bookkeeping (the memory bench measures it so)."""
    run_stage(PREDICT, StageRun(config, store, iteration, pool, tracker=None))


def _check_checkpoints(config: Config, iteration: int) -> None:
    """Load every member an iteration starts from before writing anything.

    A damaged or mismatched checkpoint is then a :class:`ModelLoadError` (exit 5) with the store
    untouched, instead of a failure after predict and correct have already moved labels (the
    lexicon, cross-fitted, is first loaded only when it is updated). Costs one load per member.
    """
    from sentirefine.models import load_model
    from sentirefine.models.batching import release_memory

    for name in config.models.order:
        model = load_model(iteration_dir(config, iteration) / name, device="cpu")
        _check_fold_count(config, iteration, name, model.fold_count)
    release_memory()


def _check_fold_count(config: Config, iteration: int, name: str, folds: int) -> None:
    """Refuse to continue a workspace whose members have another fold count than ``ensemble.folds``.

    A fold model is updated from its own previous checkpoint; with another k there is none, and
    refitting silently would discard the member's history.
    """
    if folds != config.ensemble.folds:
        raise ConfigError(
            f"the {name} member of iteration {iteration} has {folds} fold model(s) but ensemble.folds is "
            f"{config.ensemble.folds}: fold models are updated from their own checkpoints, so k cannot change mid-run",
            hint=f"set ensemble.folds: {folds} (or SENTIREFINE_ENSEMBLE__FOLDS={folds}) to continue this workspace, "
                 f"or import the data into a new workspace to start with the new k",
        )


def _predict_stage(run: StageRun) -> dict[str, Any]:
    """Predict every train row with the previous iteration's members; resumes after its last chunk."""
    config, store, iteration = run.config, run.store, run.iteration
    spec = _previous_spec(config, store, iteration)
    chunk = resolve_chunk_size(config.store)
    total = store.count("train")
    resume_after = store.last_predicted_sid(iteration)
    already = predictions_written(store, iteration)
    crossfit = CrossFit.prepare(config, store, spec.members, iteration)
    dirs = spec.checkpoint_dirs(config)
    with (stage_log(log, "predict", iteration=iteration, rows=total, chunk_size=chunk,
                    cross_fit=list(crossfit.oof), folds=config.ensemble.folds) as result,
          tqdm(total=total, initial=already, desc=f"iter {iteration} predict", unit="row",
               disable=progress_disabled()) as bar):
        for rows in committed_chunks("predict", store.iter_chunks("train", chunk, after_sid=resume_after)):
            probs = crossfit.member_probs(run.pool, dirs, [r.sid for r in rows], [r.text for r in rows], bar.update)
            store.save_predictions(iteration, _prediction_rows(spec, rows, spec.combine(probs)))
        result["weights"] = dict(zip(spec.members, np.round(spec.weights, 4).tolist(), strict=True))
    # Fixed here, before correct moves any label, so a resumed correct stage uses the same offsets
    # (the correct stage's log line names them).
    offsets = policy.class_offsets(config.refine.threshold, store.label_counts("train"), store.label_counts("gold"))
    return PredictRecord(result["weights"], chunk, offsets, *_flip_plan(config, store, iteration, offsets)).to_info()


def _flip_plan(config: Config, store: Store, iteration: int,
               offsets: dict[int, float]) -> tuple[dict[int, float], dict[str, Any] | None]:
    """The per-class flip thresholds of this iteration, and the budget rule's noise estimate (None otherwise).

    Fixed at the end of predict, from the labels before any correction: a resumed correct stage
    and the balance guard then decide by the same mapping as the first attempt.
    """
    if config.refine.rule != "budget":
        return policy.flip_thresholds(config.refine, iteration, offsets), None
    refine, votes = config.refine, unlocked_votes(store, iteration)
    share = refine.budget.share_at(refine.threshold, iteration)
    gold = _gold_confusion(store, iteration - 1) if refine.budget.estimator == "gold" else None
    if gold is None:
        estimate = noise_budget.estimate(*votes, share=share)
    else:
        estimate = noise_budget.estimate_with_gold(votes.labels, votes.predicted, votes.confidence, gold, share=share)
    thresholds = noise_budget.flip_thresholds(estimate, refine.budget.floor_at(refine.threshold, iteration), offsets)
    log_event(log, "noise_estimated", iteration=iteration, estimated_errors=estimate.estimated_errors,
              budget=estimate.budget, flip_thresholds=thresholds)
    return thresholds, estimate.to_json()


def _gold_confusion(store: Store, iteration: int) -> list[list[int]] | None:
    """The gold confusion of the models that predicted the train rows (their held-out view), if measured.

    None without a gold split: the budget rule then falls back to the confident joint, and says so.
    """
    evaluation = store.stage_info(iteration, "evaluate") or {}
    confusion = (evaluation.get("held_out") or evaluation.get("ensemble") or {}).get("confusion")
    if confusion is None:
        log_event(log, "gold_estimate_unavailable", level=logging.WARNING, iteration=iteration,
                  hint="import a gold split (--gold); refine.budget.estimator: gold counts errors against it")
    return confusion


def _check_previous_spec(run: StageRun) -> None:
    """Refuse to start a predict stage that has no previous ensemble to vote with."""
    _previous_spec(run.config, run.store, run.iteration)


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
    used the hand-set ``per_class`` offsets only. ``flip_thresholds`` (per predicted class, what
    a flip needs) is None for a stage recorded before the mapping was (the threshold rule's is
    then derived from the offsets); ``noise`` is the budget rule's estimate.
    """

    weights: dict[str, float]
    chunk_size: int | None
    class_offsets: dict[int, float] | None
    flip_thresholds: dict[int, float] | None = None
    noise: dict[str, Any] | None = None

    def to_info(self) -> dict[str, Any]:
        """The stage info, keys as the store has always held them (older workspaces read the same)."""
        info: dict[str, Any] = {"weights": self.weights, "chunk_size": self.chunk_size,
                                "class_offsets": self.class_offsets, "flip_thresholds": self.flip_thresholds}
        if self.noise is not None:  # the budget rule's estimate
            info["noise"] = self.noise
        return info

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> PredictRecord:
        """Read a predict stage's info; a key it lacks (an older stage) comes back empty or None."""
        return cls(dict(info.get("weights") or {}), info.get("chunk_size"), _by_class(info.get("class_offsets")),
                   _by_class(info.get("flip_thresholds")), info.get("noise"))


def _by_class(saved: dict[str, float] | None) -> dict[int, float] | None:
    """A per-class mapping read back from JSON (whose keys are strings)."""
    return None if saved is None else {int(k): float(v) for k, v in saved.items()}


def _class_offsets(config: Config, store: Store, iteration: int) -> dict[int, float]:
    """The offsets the predict stage fixed for this iteration (per_class if it predates them)."""
    record = PredictRecord.from_info(store.stage_info(iteration, "predict") or {})
    if record.class_offsets is None:
        return dict(config.refine.threshold.per_class)
    return record.class_offsets


def _flip_thresholds(config: Config, store: Store, iteration: int) -> dict[int, float]:
    """The per-class thresholds the predict stage fixed (derived from its offsets if it predates them)."""
    record = PredictRecord.from_info(store.stage_info(iteration, "predict") or {})
    if record.flip_thresholds is not None:
        return record.flip_thresholds
    return policy.flip_thresholds(config.refine, iteration, _class_offsets(config, store, iteration))


def _correct_guard(run: StageRun) -> None:
    """The balance guard, run before the correct stage is even recorded: a stage it stops writes nothing."""
    chunk = run.prepared["correct_chunk_size"] = resolve_chunk_size(run.config.store)
    thresholds = run.prepared["flip_thresholds"] = _flip_thresholds(run.config, run.store, run.iteration)
    _balance_guard(run.config, run.store, run.iteration, thresholds, chunk)


def _correct_stage(run: StageRun) -> dict[str, Any]:
    """Apply threshold/oscillation/queue decisions chunk by chunk, one transaction each."""
    config, store, iteration = run.config, run.store, run.iteration
    chunk, thresholds = run.prepared["correct_chunk_size"], run.prepared["flip_thresholds"]  # the guard's
    with stage_log(log, "correct", iteration=iteration, threshold=config.refine.threshold.at(iteration),
                   rule=config.refine.rule, flip_thresholds=thresholds) as result:
        changed = 0
        for rows in committed_chunks("correct", store.iter_predictions(iteration, chunk)):
            flips = store.flip_counts(policy.candidates(rows, thresholds))
            decision = policy.decide(rows, iteration=iteration, refine=config.refine, flip_counts=flips,
                                     thresholds=thresholds)
            changed += store.apply_decision(decision.changes, decision.freeze, decision.queue,
                                            iteration=iteration, source="ensemble", confident=decision.confident)
        result["changed_this_attempt"] = changed
    return {"changed": store.changes_in_iteration(iteration)}


def _balance_guard(config: Config, store: Store, iteration: int, thresholds: dict[int, float], chunk: int) -> None:
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
    moved = Counter(live_ensemble_changes(store, iteration))
    now = store.label_counts("train")
    before = {1: now.get(1, 0) - moved[1] + moved[0], 0: now.get(0, 0) - moved[0] + moved[1]}
    for rows in store.iter_predictions(iteration, chunk):
        flips = store.flip_counts(policy.candidates(rows, thresholds))
        stats = policy.decide(rows, iteration=iteration, refine=config.refine, flip_counts=flips,
                              thresholds=thresholds).stats
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


def _llm_stage(run: StageRun) -> dict[str, Any]:
    """Relabel queued rows with the LLM (skipped, with its reason, when disabled or without a key).

    Runs before training so the members learn from the LLM's labels; resumable because every
    answer is cached and every write carries the label it expects to replace.
    """
    from sentirefine.integrations.llm.relabel import relabel_stage

    return relabel_stage(run.config, run.store, run.iteration)


def _train_stage(run: StageRun) -> dict[str, Any]:
    """Every member in turn; each records its own ``train:<member>`` stage with its checkpoint."""
    return train_members(run.config, run.store, run.iteration, run.runner)


def _evaluate_stage(run: StageRun) -> dict[str, Any]:
    """Gold metrics, weights and temperatures of this iteration's members."""
    evaluation = evaluate_members(run.config, run.store, run.iteration, run.pool)
    crash_point("evaluate_end")
    return evaluation


def _audit_stage(run: StageRun) -> dict[str, Any]:
    """Label distribution, per-group bias flags and an LLM critique → reports/audit-iter-NNN.md."""
    from sentirefine.reporting.audit import audit_stage

    return audit_stage(run.config, run.store, run.iteration)


def _snapshot_stage(run: StageRun) -> dict[str, Any]:
    """DVC snapshot + git tag of the labels after this iteration."""
    return snapshot(run.config, run.store, run.iteration, resolve_chunk_size(run.config.store))


def _track_stage(run: StageRun) -> dict[str, Any]:
    """Log the iteration to MLflow and apply the registry gate."""
    assert run.tracker is not None, "the track stage runs inside a command's session"
    return run.tracker.log_iteration(run.store, run.iteration, run.metrics, run.results["train"],
                                     snapshot=run.results.get("snapshot"))


def _bootstrap_metrics(run: StageRun, evaluation: dict[str, Any]) -> None:
    """Iteration 0's metrics, once it is evaluated (its seconds count training and evaluation)."""
    run.metrics = IterationMetrics(
        iteration=0, train_rows=run.store.count("train"), label_accuracy=run.store.reference_accuracy(),
        training=_strip_history(run.results["train"]), evaluation=Evaluation.from_json(evaluation),
        seconds=round(time.perf_counter() - run.started, 1),
    )


def _refined_metrics(run: StageRun, evaluation: dict[str, Any]) -> None:
    """A refinement iteration's metrics, once it is evaluated; the later stages add their parts."""
    run.metrics = _iteration_metrics(run.config, run.store, run.iteration, run.threshold,
                                     run.results["train"], evaluation)
    run.metrics.stage_seconds = run.timings  # the later stages' times join it as they run
    run.metrics.llm = run.results["llm"]


def _audit_fold(run: StageRun, info: dict[str, Any]) -> None:
    run.metrics.audit = info


def _snapshot_fold(run: StageRun, info: dict[str, Any]) -> None:
    run.metrics.dataset_tag = info.get("tag")


def _track_fold(run: StageRun, info: dict[str, Any]) -> None:
    run.metrics.registry = info


PREDICT = Stage("predict", _predict_stage, guard=_check_previous_spec, chunked=True)
CORRECT = Stage("correct", _correct_stage, guard=_correct_guard, chunked=True)
LLM = Stage("llm", _llm_stage)
TRAIN = Stage("train", _train_stage, own_records=True)
EVALUATE = Stage("evaluate", _evaluate_stage, fold=_refined_metrics)
AUDIT = Stage("audit", _audit_stage, enabled=lambda config: config.llm.audit, fold=_audit_fold)
SNAPSHOT = Stage("snapshot", _snapshot_stage, enabled=lambda config: config.versioning.enabled, fold=_snapshot_fold)
TRACK = Stage("track", _track_stage, fold=_track_fold)

# Bootstrap fits and evaluates; an iteration predicts, corrects and relabels before it does.
BOOTSTRAP: tuple[Stage, ...] = (TRAIN, replace(EVALUATE, fold=_bootstrap_metrics), SNAPSHOT, TRACK)
ITERATION: tuple[Stage, ...] = (PREDICT, CORRECT, LLM, TRAIN, EVALUATE, AUDIT, SNAPSHOT, TRACK)


def _iteration_metrics(config: Config, store: Store, iteration: int, threshold: float,
                       training: dict[str, Any], evaluation: dict[str, Any]) -> IterationMetrics:
    """Convergence metrics and refinement statistics of a finished iteration."""
    n_train, record = store.count("train"), PredictRecord.from_info(store.stage_info(iteration, "predict") or {})
    corrected = live_ensemble_changes(store, iteration)
    label_change_rate = store.changes_in_iteration(iteration) / max(1, n_train)
    model_change = {n: t["change_rate"] for n, t in training.items() if t.get("change_rate") is not None}
    streak, converged = policy.convergence(label_change_rate, model_change, config.refine,
                                           _quiet_streak(store, iteration - 1))
    return IterationMetrics(
        iteration=iteration, threshold=threshold, class_offsets=_class_offsets(config, store, iteration),
        flip_thresholds=record.flip_thresholds, noise=record.noise,
        train_rows=n_train, corrections=Corrections(corrected.get(0, 0), corrected.get(1, 0)),
        convergence=Convergence(label_change_rate, model_change, model_change.get("lexicon"), streak, converged),
        queued_low_confidence=store.open_review_count().get("low_confidence", 0),
        frozen=frozen_count(store),
        label_accuracy=store.reference_accuracy(), training=_strip_history(training),
        evaluation=Evaluation.from_json(evaluation),
    )


def _quiet_streak(store: Store, iteration: int) -> int:
    """Quiet iterations in a row up to ``iteration`` (0 before any, or for the bootstrap)."""
    previous = [it for it in iteration_rows(store) if it.iteration == iteration]
    if not previous or previous[0].metrics is None:
        return 0
    streak = previous[0].metrics.convergence.quiet_streak
    return 0 if streak is None else streak


def _strip_history(training: dict[str, Any]) -> dict[str, Any]:
    return {n: {k: v for k, v in t.items() if k != "history"} for n, t in training.items()}
