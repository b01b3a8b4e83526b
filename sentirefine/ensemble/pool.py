"""The prediction pool: every member predicts batches of texts in a ``multiprocessing.Pool``.

One pool lives for a whole command; each worker loads an iteration's members on the first
batch that names them and answers batches of texts. ``workers=0`` predicts in-process.
``pool_factory`` (or any object with the Pool's ``imap``/``close``/``terminate``/``join``) lets
a cluster pool such as Ray's replace the local one when one machine is not enough.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sentirefine.config import Config
from sentirefine.ensemble.orphans import exit_when_orphaned
from sentirefine.logs import LogSetup, configure_logging, log_event, log_setup
from sentirefine.models.text import set_cache_limit, set_threads

log = logging.getLogger(__name__)


def cpu_count() -> int:
    """Cores this process may use (respects CPU affinity / container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def resolve_workers(setting: int | str) -> int:
    return cpu_count() if setting == "auto" else int(setting)


# Per-process state of a Pool worker: the members it holds, keyed by their directories, so a
# pool that lives for a whole command loads each iteration's members once per worker.
_WORKER: dict[str, Any] = {"key": None, "models": []}


def _init_worker(threads: int, log: LogSetup, token_cache_entries: int) -> None:
    """Pool initializer: the command's logging, torch threads bound so that workers x threads <= cores,
    and the token cache."""
    import torch

    exit_when_orphaned()
    configure_logging(*log)
    torch.set_num_threads(threads)
    set_threads(threads)
    set_cache_limit(token_cache_entries)


def _members(model_dirs: tuple[str, ...]) -> list[Any]:
    """The members in ``model_dirs``, loaded on first use in this process."""
    if _WORKER["key"] != model_dirs:
        from sentirefine.models import load_model

        _WORKER["models"] = []  # free the previous iteration's members first
        _WORKER["models"] = [load_model(Path(d)) for d in model_dirs]
        _WORKER["key"] = model_dirs
        log_event(log, "members_loaded", pid=os.getpid(), members=len(model_dirs))
    return _WORKER["models"]


def _predict_task(task: tuple[tuple[str, ...], list[str], str]) -> np.ndarray:
    """P(positive) per member of one batch: (n, m), or (n, 2m) for ``both`` (served view, then held-out)."""
    model_dirs, texts, view = task
    members = _members(model_dirs)
    if view == "both":
        pairs = [m.predict_both(texts) for m in members]
        probs = [p[:, 1] for p, _ in pairs] + [h[:, 1] for _, h in pairs]
    else:
        probs = [(m.predict_held_out(texts) if view == "held_out" else m.predict_proba(texts))[:, 1] for m in members]
    return np.stack(probs, axis=1).astype(np.float32)


class EnsemblePool:
    """A ``multiprocessing.Pool`` for member prediction, alive for a whole command.

    Workers start once (spawn: each imports torch), then load whichever members a task names.
    ``workers=0`` predicts in the calling process. ``pool_factory`` lets a cluster pool with
    the same ``imap`` API (e.g. Ray's) replace the local one when one machine is not enough.
    """

    def __init__(self, *, workers: int, start_method: str = "spawn", batch_rows: int = 512,
                 log: LogSetup | None = None, token_cache_entries: int = 10_000,
                 threads_per_worker: int | None = None, pool_factory: Any = None) -> None:
        self.workers = workers
        self.start_method = start_method
        self.batch_rows = batch_rows
        self._log = log or LogSetup()
        self._token_cache = token_cache_entries
        self._threads = threads_per_worker  # None = cores // workers
        self._pool_factory = pool_factory
        self._pool: Any = None

    def __enter__(self) -> EnsemblePool:
        threads = self._threads or max(1, cpu_count() // max(1, self.workers))
        args = (threads, self._log, self._token_cache)
        if self.workers > 0 and self._pool_factory is not None:
            self._pool = self._pool_factory(self.workers, _init_worker, args)
        elif self.workers > 0:
            ctx = multiprocessing.get_context(self.start_method)
            self._pool = ctx.Pool(self.workers, initializer=_init_worker, initargs=args)
        log_event(log, "ensemble_pool_started", workers=self.workers, threads_per_worker=threads,
                  start_method=self.start_method)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.terminate() if exc[0] else self._pool.close()
            self._pool.join()
            self._pool = None
        _WORKER.update(key=None, models=[])

    def member_probs(self, model_dirs: Sequence[Path], texts: Sequence[str],
                     progress: Callable[[int], object] | None = None, *, held_out: bool = False,
                     folds: int = 1) -> np.ndarray:
        """P(positive) of every member, shape (len(texts), len(model_dirs)).

        ``progress(n)`` is called as each batch of ``n`` rows comes back (for a progress bar).
        ``held_out``: the texts are train rows, answered by ``predict_held_out`` (a fold set's
        fold model that never saw them); otherwise ``predict_proba`` (gold rows, new texts).
        ``folds``: the fold models a held-out batch is split among; a task then takes that many
        batches' rows, so each fold model still predicts about ``batch_rows`` at a time (split
        five ways, BERT's batches of 100 rows cost 1.6x its batches of 512).
        """
        view, rows = ("held_out", self.batch_rows * max(1, folds)) if held_out else ("proba", self.batch_rows)
        return self._run(model_dirs, texts, progress, view, rows)

    def member_views(self, model_dirs: Sequence[Path], texts: Sequence[str],
                     progress: Callable[[int], object] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Both views of ``texts`` in one pass: ``predict_proba`` and ``predict_held_out`` per member.

        For gold rows under fold sets (the evaluate stage): each fold model predicts each text
        once, instead of once for the average and again for the held-out view.
        """
        both = self._run(model_dirs, texts, progress, "both", self.batch_rows)
        m = len(model_dirs)
        return both[:, :m], both[:, m:]

    def _run(self, model_dirs: Sequence[Path], texts: Sequence[str], progress: Callable[[int], object] | None,
             view: str, rows: int) -> np.ndarray:
        """Batches of ``texts`` through the workers (or in-process), each answered in ``view``."""
        key = tuple(str(d) for d in model_dirs)
        if not texts or not key:
            return np.zeros((len(texts), len(key) * (2 if view == "both" else 1)), dtype=np.float32)
        tasks = [(key, list(texts[i : i + rows]), view) for i in range(0, len(texts), rows)]
        results = map(_predict_task, tasks) if self._pool is None else self._pool.imap(_predict_task, tasks)
        parts = []
        for part in results:
            parts.append(part)
            if progress is not None:
                progress(len(part))
        return np.concatenate(parts, axis=0)


def ensemble_pool(config: Config) -> EnsemblePool:
    """The prediction pool a command uses for all its stages."""
    return EnsemblePool(
        workers=resolve_workers(config.ensemble.workers),
        start_method=config.ensemble.start_method,
        batch_rows=config.ensemble.predict_batch_rows,
        token_cache_entries=config.ensemble.worker_token_cache_entries,
        log=log_setup(config),
    )
