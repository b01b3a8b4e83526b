"""One way to run a stage: the bookkeeping, logging, timing and crash points every stage shares.

A :class:`Stage` is a named unit of an iteration; bootstrap and a refinement iteration are two
lists of them (``pipeline/loop.py``), run in order by :func:`run_stages`. Why one runner: each
stage used to pick one of three mechanisms by hand, and the crash points a SIGKILL test plans
its kills on (``docs/reliability.md``, "Crash points") differed with the mechanism. Here they
are passed in one place, in the order they always were:

* a recorded stage already finished in an earlier attempt is not run again: its recorded info
  is read back (a chunked stage returns nothing, and reports no time: it did nothing);
* else ``guard`` runs before anything is written (a stage it stops leaves no trace), the stage
  is recorded as started, its work runs (inside ``<stage>_start``/``<stage>_end`` log lines,
  unless it is chunked and logs its own fields), then ``<stage>_before_finish_stage``, and its
  info is recorded in the ``stages`` table, keys as the work returned them.

A *chunked* stage commits its rows one chunk per transaction and resumes after a crash from
what is committed (predict after its last predicted row, correct by replaying chunks whose
writes carry the label they expect to replace): it walks its chunks through
:func:`committed_chunks`, which passes ``<stage>_chunk`` after each committed chunk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sentirefine.config import Config
from sentirefine.data.records import IterationMetrics
from sentirefine.data.store import Store
from sentirefine.ensemble.jobs import JobRunner
from sentirefine.ensemble.pool import EnsemblePool
from sentirefine.faults import crash_point
from sentirefine.integrations.tracking import Tracker
from sentirefine.logs import stage_log

# Stage log lines keep the logger they have always had (the JSON log names it).
log = logging.getLogger("sentirefine.pipeline.loop")

T = TypeVar("T")
Info = dict[str, Any]


@dataclass
class StageRun:
    """What the stages of one iteration share: where they run, and what earlier stages returned.

    ``results`` holds each stage's info by name, ``timings`` its seconds (the iteration's
    ``stage_seconds``), and ``metrics`` the iteration's metrics as the stages' folds build them.
    ``prepared`` is what a stage's guard worked out for its work, so that both see the same
    values (the correct stage's chunk size, which ``auto`` derives from free memory).
    """

    config: Config
    store: Store
    iteration: int
    pool: EnsemblePool
    tracker: Tracker | None
    threshold: float = float("nan")
    started: float = field(default_factory=time.perf_counter)
    results: dict[str, Info] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    metrics: IterationMetrics = field(init=False)
    prepared: dict[str, Any] = field(default_factory=dict)
    runner: JobRunner | None = None  # the command's fold-job runner (None: the train stage makes its own)

    def __post_init__(self) -> None:
        self.metrics = IterationMetrics(iteration=self.iteration)  # the evaluate stage's fold fills it


def _always(config: Config) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """A named unit of an iteration.

    ``work`` does it and returns its info; ``enabled`` says whether the configuration runs it at
    all (a disabled stage returns ``{}``, unrecorded); ``guard`` checks before the stage is
    recorded as started; ``chunked`` marks a stage that commits chunk by chunk (see the module
    docstring); ``own_records`` a stage whose work records its own sub-stages (train: one per
    member, each with its checkpoint) and is only timed here; ``fold`` folds the info into
    the iteration's metrics.
    """

    name: str
    work: Callable[[StageRun], Info]
    enabled: Callable[[Config], bool] = _always
    guard: Callable[[StageRun], None] | None = None
    chunked: bool = False
    own_records: bool = False
    fold: Callable[[StageRun, Info], None] | None = None


def run_stages(stages: Sequence[Stage], run: StageRun) -> None:
    """Run ``stages`` in order, each at most once across crashes and resumes."""
    for stage in stages:
        run_stage(stage, run)


def run_stage(stage: Stage, run: StageRun) -> Info:
    """Run (or read back) one stage, time it, and fold its info into the iteration's metrics."""
    started = time.perf_counter()
    info = _execute(stage, run)
    if info is None:  # a chunked stage finished in an earlier attempt: nothing ran, nothing to time
        return {}
    run.timings[stage.name] = round(time.perf_counter() - started, 2)
    run.results[stage.name] = info
    if stage.fold is not None:
        stage.fold(run, info)
    return info


def _execute(stage: Stage, run: StageRun) -> Info | None:
    """The stage's info: recorded earlier, or from running it now with its bookkeeping."""
    if not stage.enabled(run.config):
        return {}
    if stage.own_records:
        return stage.work(run)
    store, iteration = run.store, run.iteration
    if store.stage_done(iteration, stage.name):
        return None if stage.chunked else store.stage_info(iteration, stage.name) or {}
    if stage.guard is not None:
        stage.guard(run)
    store.start_stage(iteration, stage.name)
    info = stage.work(run) if stage.chunked else _logged_work(stage, run)
    crash_point(f"{stage.name}_before_finish_stage")
    store.finish_stage(iteration, stage.name, info)
    return info


def _logged_work(stage: Stage, run: StageRun) -> Info:
    """Run the work inside its log lines; the end line carries the info's scalar values."""
    with stage_log(log, stage.name, iteration=run.iteration) as result:
        info = stage.work(run)
        result.update({k: v for k, v in info.items() if v is None or isinstance(v, int | float | str)})
    return info


def committed_chunks(stage: str, chunks: Iterable[T]) -> Iterator[T]:
    """Hand out a chunked stage's chunks; ``<stage>_chunk`` is passed once the caller committed one.

    The crash point runs when the caller asks for the next chunk, i.e. after its loop body (the
    chunk's transaction) has finished, and after the last chunk too.
    """
    for chunk in chunks:
        yield chunk
        crash_point(f"{stage}_chunk")
