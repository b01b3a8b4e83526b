"""The job runner: independent jobs (fold fits) in this process or in local worker processes.

A fold model's fit needs nothing from its siblings, so the ``k`` folds of a member can run side
by side. :class:`JobRunner` takes a picklable function and its jobs and yields the results as
they finish; ``workers <= 1`` runs them one after another in the calling process (with its
threads: results are reproducible for a given ``fold_workers``, not across settings of it). Workers are
spawned (torch's thread pools do not survive a fork) and each takes ``cores // workers`` torch
and Kiwi threads, so workers x threads <= cores, as in the prediction pool.

``executor_factory`` (any ``concurrent.futures.Executor`` maker taking ``max_workers``,
``initializer``, ``initargs``) is where a cluster backend plugs in, the same seam as the pool's
``pool_factory``.

A worker that dies (SIGKILL, the kernel's OOM killer) breaks the executor; the command then
stops with a :class:`TrainingError` saying that finished jobs are kept and the same command
resumes, instead of a traceback.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, TypeVar

from sentirefine.config import Config
from sentirefine.ensemble.orphans import exit_when_orphaned
from sentirefine.ensemble.pool import cpu_count
from sentirefine.errors import TrainingError
from sentirefine.logs import LogSetup, configure_logging, log_event, log_setup
from sentirefine.models.text import set_threads

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")


def _init_job_worker(threads: int, log: LogSetup) -> None:
    """Worker initializer: the command's logging, and this worker's share of the cores."""
    import torch

    exit_when_orphaned()
    configure_logging(*log)
    torch.set_num_threads(threads)
    set_threads(threads)


class JobRunner:
    """Runs independent jobs; workers start on the first job and live until the runner closes.

    The loop holds one for a whole command (``pipeline/loop.py``'s session), beside the
    prediction pool: a worker's tokenisation cache then carries over from one iteration's
    fits to the next. Restarted for every train stage, the workers cost a spawn and a torch
    import (about 6 s on 2 cores) plus a Kiwi pass over the train split each (about 20 s at 20k
    rows) per iteration. The price is the memory an idle worker keeps between train stages
    (its allocator arenas, its bounded token cache), about 1 GB each after a BERT fold fit.
    """

    def __init__(self, workers: int, *, start_method: str = "spawn", log: LogSetup | None = None,
                 executor_factory: Callable[..., Executor] | None = None) -> None:
        self.workers = max(1, workers)
        self.threads = max(1, cpu_count() // self.workers)
        self._start_method = start_method
        self._log = log or LogSetup()
        self._factory = executor_factory
        self._executor: Executor | None = None

    def __enter__(self) -> JobRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=exc[0] is None, cancel_futures=exc[0] is not None)
            self._executor = None

    def _pool(self) -> Executor:
        if self._executor is None:
            args = (self.threads, self._log)
            if self._factory is not None:
                self._executor = self._factory(max_workers=self.workers, initializer=_init_job_worker, initargs=args)
            else:
                ctx = multiprocessing.get_context(self._start_method)
                self._executor = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_job_worker,
                                                     initargs=args)
            log_event(log, "job_workers_started", workers=self.workers, threads_per_worker=self.threads)
        return self._executor

    def run(self, fn: Callable[[J], R], jobs: Sequence[J]) -> Iterator[R]:
        """``fn(job)`` for every job, yielded as each finishes (in order when run in-process).

        With workers, even a single job goes to one: a job's threads (cores // workers) decide
        its float rounding, so a resumed run that has one fold left must fit it as the first
        attempt did, or it would not reach the same weights.
        """
        if self.workers == 1:
            yield from map(fn, jobs)
            return
        if not jobs:
            return
        futures = [self._pool().submit(fn, job) for job in jobs]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BrokenProcessPool as exc:
            raise TrainingError(
                "a job's worker process died (killed, or out of memory) before its job finished",
                hint="run the same command again: finished jobs are kept and only the rest are redone; if it was "
                     "memory, lower ensemble.fold_workers",
            ) from exc


def tail_threads(runner: JobRunner, jobs: int) -> dict[int, int]:
    """Threads for the jobs of the last, partial round (by job index); the others keep their worker's.

    ``jobs`` jobs on ``workers`` processes run in rounds; when ``workers`` does not divide
    ``jobs`` (5 folds on 2 workers), the last round would leave cores idle for a whole job. Run
    after the full rounds, its ``jobs mod workers`` jobs share every core instead (the 5th BERT
    fold: ~1.6x faster on 2 threads). A fixed function of the job's index, so a job redone after
    a kill gets the threads, hence the float rounding, of its first attempt.
    """
    left = jobs % runner.workers if runner.workers > 1 else 0
    if not left:
        return {}
    threads = max(1, cpu_count() // left)
    return {j: threads for j in range(jobs - left, jobs)} if threads != runner.threads else {}


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block on ``threads`` torch threads (None: as the process is), then restore them."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def job_runner(config: Config, jobs: int) -> JobRunner:
    """The runner for ``jobs`` independent jobs: ``ensemble.fold_workers`` processes ('auto': min(jobs, cores))."""
    setting = config.ensemble.fold_workers
    workers = min(jobs, cpu_count()) if setting == "auto" else int(setting)
    return JobRunner(workers, start_method=config.ensemble.start_method, log=log_setup(config))


def describe(runner: JobRunner) -> dict[str, Any]:
    """The runner's shape, for a stage's log line."""
    return {"workers": runner.workers, "threads_per_worker": runner.threads}
