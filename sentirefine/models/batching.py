"""Devices, memory release and out-of-memory back-off, shared by every neural member.

Why one module: the loop trains four models one after another on one accelerator, so every
model must free what it holds and must survive an out-of-memory error by working in smaller
batches instead of killing an iteration that has already run for an hour.

The back-off is *resumable*: :func:`run_in_batches` walks a fixed row order and, when a batch
runs out of memory, continues from the first unfinished row at half the batch size. Rows
already processed are not processed twice, so an epoch stays an epoch.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
import torch

from sentirefine.errors import TrainingError
from sentirefine.logs import progress_disabled

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How many batches are sorted together by length: large enough that neighbours have similar
# lengths (little padding), small enough that batches still mix the corpus (regularisation).
_BUCKET_BATCHES = 50


def resolve_device(setting: str) -> str:
    """Map the config's ``auto`` to ``cuda`` when an accelerator is present, else ``cpu``."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def release_memory() -> None:
    """Give cached accelerator memory back so the next model starts with all of it."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_oom(exc: BaseException) -> bool:
    """True for the errors torch raises when an accelerator (or CPU allocator) runs out of memory."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def run_with_backoff(work: Callable[[int], T], batch_size: int, *, context: str = "") -> tuple[T, int]:
    """Call ``work(batch_size)``, halving the batch size on out-of-memory until it succeeds.

    Returns the result and the batch size that worked, so the caller can start its next call
    there instead of hitting the same wall again. ``work`` is retried whole; make it resumable
    (see :func:`run_in_batches`) when repeating work would be wrong.

    Raises :class:`TrainingError` when even batch size 1 runs out of memory.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    while True:
        try:
            return work(batch_size), batch_size
        except Exception as exc:
            if not is_oom(exc):
                raise
            if batch_size == 1:
                raise TrainingError(
                    f"out of memory even at batch size 1{f' ({context})' if context else ''}: {exc}",
                    hint="use a smaller model or max_len, free the accelerator, or set models.device=cpu",
                ) from exc
        # Outside the except block: the failed batch's tensors, held by the traceback, are gone.
        new_size = batch_size // 2
        logger.warning(
            "out of memory at batch size %d, retrying at %d",
            batch_size,
            new_size,
            extra={
                "event": "oom_backoff",
                "context": context,
                "old_batch_size": batch_size,
                "new_batch_size": new_size,
            },
        )
        release_memory()
        batch_size = new_size


def run_in_batches(
    order: np.ndarray,
    batch_size: int,
    fn: Callable[[np.ndarray], None],
    *,
    context: str = "",
    progress: bool = False,
) -> int:
    """Call ``fn(indices)`` on consecutive slices of ``order``; back off on out-of-memory.

    A batch that fails is redone at half the size starting at its first row, so every row is
    seen exactly once. Returns the batch size in use at the end. ``progress`` shows a bar
    (training epochs; it switches itself off when stderr is not a terminal).
    """
    from tqdm import tqdm

    done = 0
    with tqdm(total=len(order), desc=context, unit="row", disable=progress_disabled() if progress else True,
              leave=False) as bar:

        def work(size: int) -> None:
            """Walk on from the first unfinished row, so a retry at a smaller size repeats nothing."""
            nonlocal done
            while done < len(order):
                fn(order[done : done + size])
                step = min(size, len(order) - done)
                done += step
                bar.update(step)

        _, final = run_with_backoff(work, batch_size, context=context)
    return final


def length_bucketed_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """A random row order in which consecutive ``batch_size`` rows have similar lengths.

    Padding to the batch's longest text is wasted compute; sorting within buckets of
    ~50 batches removes most of it while batch order stays random.
    """
    perm = rng.permutation(len(lengths))
    bucket = batch_size * _BUCKET_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, len(perm), bucket):
        chunk = perm[start : start + bucket]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    if not batches:
        return np.zeros(0, dtype=np.int64)
    shuffled = [batches[i] for i in rng.permutation(len(batches))]
    return np.concatenate(shuffled).astype(np.int64)


def sorted_order(lengths: np.ndarray) -> np.ndarray:
    """Rows by length, for prediction: minimal padding, and results are put back by index."""
    return np.argsort(lengths, kind="stable").astype(np.int64)


def iter_slices(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``size`` covering ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def pad_batch(sequences: list[list[int]], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists to the longest one; returns (ids, lengths) on ``device``."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    ids = np.full((len(sequences), int(lengths.max())), pad_id, dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
    return torch.from_numpy(ids).to(device), torch.from_numpy(lengths)


def linear_warmup_decay(progress: float, warmup: float = 0.1) -> float:
    """Learning-rate factor for ``progress`` in [0, 1]: linear warm-up, then linear decay to 0.

    Defined on the share of rows seen rather than on steps, so a batch-size back-off in the
    middle of training does not stretch or cut the schedule.
    """
    if progress < warmup:
        return max(progress / warmup, 0.01)
    return max(0.0, (1.0 - progress) / (1.0 - warmup))


def check_labels(texts: Sequence[str], labels: np.ndarray) -> np.ndarray:
    """Labels as int64 0/1 of the texts' length, both classes present.

    Checked before any work: a single-class training set would train a constant model (and
    make log-odds undefined) without any error, which the loop would then trust.
    """
    labels = np.asarray(labels).astype(np.int64)
    if len(labels) != len(texts):
        raise TrainingError(f"{len(texts)} texts but {len(labels)} labels")
    if not np.isin(labels, (0, 1)).all():
        raise TrainingError("labels must be 0 or 1")
    if len(np.unique(labels)) < 2:
        raise TrainingError(
            "training data holds a single class; both 0 and 1 are needed",
            hint="check the label column of the imported data",
        )
    return labels


@contextmanager
def seeded(seed: int, device: str) -> Iterator[None]:
    """Seed torch (weight init, dropout) inside the block; the caller's random state is restored.

    Training is reproducible from the model's ``seed`` without a library call silently
    reseeding the application's global generator.
    """
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []):
        torch.manual_seed(seed)
        yield
