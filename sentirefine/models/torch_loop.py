"""The training and prediction loops the neural members (LSTM/BiLSTM, BERT) share.

Both train the same way: epochs over length-bucketed batches drawn from a generator seeded by
the member's seed and its history length, one optimizer step per batch with clipped gradients,
out-of-memory back-off that resumes at the failed batch (:func:`.batching.run_in_batches`), and
one ``history_`` record per epoch. Both predict in batches sorted by length. Only what differs
is left to the member: how a batch becomes a loss or logits, the optimizer, which parameters
are clipped, and whether the learning rate follows a warm-up/decay schedule.

Written once so that a fix (a seed, the back-off, a history field) reaches every member.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import nn

from sentirefine.models.base import SentimentModel
from sentirefine.models.batching import (
    length_bucketed_order,
    linear_warmup_decay,
    run_in_batches,
    seeded,
    sorted_order,
)

logger = logging.getLogger(__name__)

GRAD_CLIP = 1.0  # gradients spike on long texts and fresh heads; clipping keeps early steps stable

# The rows of one batch (indices into the encoded texts) -> its loss or its logits.
BatchFn = Callable[[np.ndarray], torch.Tensor]


class RowSchedule:
    """Sets the learning rate from the share of training rows seen (robust to batch back-off)."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, *, total_rows: int) -> None:
        """Start at the warm-up's first factor, before the first step."""
        self.optimizer, self.lr, self.total, self.seen = optimizer, lr, max(total_rows, 1), 0
        self._apply()

    def advance(self, rows: int) -> None:
        """Count the rows of a finished step and move the rate on."""
        self.seen += rows
        self._apply()

    def _apply(self) -> None:
        """Write the scheduled rate into every parameter group."""
        factor = linear_warmup_decay(min(1.0, self.seen / self.total))
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * factor


class TorchMember(SentimentModel):
    """A member trained and applied by the shared loops; ``_batch_size`` carries the back-off."""

    # Inference keeps no activations for backward, so it fits bigger batches than training.
    predict_batch_factor: ClassVar[int] = 1
    _batch_size: int

    def _update_as_fit(self, texts: Sequence[str], labels: np.ndarray) -> Self:
        """``update`` on a member never fitted: fit it instead (logged, since it costs a full fit)."""
        logger.info(
            "update before fit: fitting from scratch",
            extra={"event": "update_as_fit", "model": self.name},
        )
        return self.fit(texts, labels)

    def _train_epochs(
        self,
        module: nn.Module,
        encoded: list[list[int]],
        loss_of: BatchFn,
        optimizer: torch.optim.Optimizer,
        *,
        clip: list[nn.Parameter],
        epochs: int,
        lr: float,
        phase: str,
        warmup: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Train ``module`` for ``epochs``; one history record (plus ``extra``) per epoch.

        Seeded by history length: the same call sequence gives the same weights, but two
        updates do not shuffle identically.
        """
        lengths = np.fromiter((len(s) for s in encoded), dtype=np.int64, count=len(encoded))
        rng = np.random.default_rng([self.seed, len(self.history_)])
        schedule = RowSchedule(optimizer, lr, total_rows=epochs * len(encoded)) if warmup else None
        with seeded(self.seed + len(self.history_), self.device):
            module.train()
            for epoch in range(1, epochs + 1):
                start = time.perf_counter()
                order = length_bucketed_order(lengths, self._batch_size, rng)
                loss = self._run_epoch(order, loss_of, optimizer, clip, schedule, phase)
                self.history_.append(
                    {
                        "epoch": epoch,
                        "phase": phase,
                        "loss": loss,
                        "batch_size": self._batch_size,
                        "seconds": round(time.perf_counter() - start, 3),
                        "rows": len(encoded),
                        "lr": lr,
                        **(extra or {}),
                    }
                )
        module.eval()

    def _run_epoch(
        self,
        order: np.ndarray,
        loss_of: BatchFn,
        optimizer: torch.optim.Optimizer,
        clip: list[nn.Parameter],
        schedule: RowSchedule | None,
        phase: str,
    ) -> float:
        """One pass over ``order`` with OOM back-off; returns the row-weighted mean loss."""
        loss_sum = 0.0

        def step(idx: np.ndarray) -> None:
            """One optimizer step on the rows ``idx`` (redone smaller if it runs out of memory)."""
            nonlocal loss_sum
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(idx)
            loss.backward()
            nn.utils.clip_grad_norm_(clip, GRAD_CLIP)
            optimizer.step()
            if schedule is not None:
                schedule.advance(len(idx))
            loss_sum += float(loss.detach()) * len(idx)

        self._batch_size = run_in_batches(
            order, self._batch_size, step, context=f"{self.name} {phase}", progress=True
        )
        return loss_sum / max(len(order), 1)

    def _predict(self, module: nn.Module, encoded: list[list[int]], logits_of: BatchFn) -> np.ndarray:
        """Softmax probabilities, shape (n, 2), computed in batches of similar length."""
        out = np.zeros((len(encoded), 2), dtype=np.float32)
        if not encoded:
            return out
        lengths = np.fromiter((len(s) for s in encoded), dtype=np.int64, count=len(encoded))
        module.eval()

        def predict(idx: np.ndarray) -> None:
            """Fill the rows ``idx`` of ``out`` (results go back by index, so order is free)."""
            out[idx] = torch.softmax(logits_of(idx).float(), dim=1).cpu().numpy()

        with torch.inference_mode():
            run_in_batches(
                sorted_order(lengths),
                self._batch_size * self.predict_batch_factor,
                predict,
                context=f"{self.name} predict",
            )
        return out
