"""The MLM training loop: length-bucketed batches, warm-up/decay, budgets, checkpoints.

Why this shape: budgets (steps, minutes) are totals over resumed runs, and the batch order of
an epoch is a function of seed and epoch only, so a run resumed from a checkpoint (at its saved
epoch and corpus position) takes the very batches the killed run would have taken.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from sentirefine.config import PretrainConfig
from sentirefine.errors import TrainingError
from sentirefine.faults import crash_point
from sentirefine.logs import progress_disabled
from sentirefine.pretrain.mlm import mask_tokens, mlm_loss
from sentirefine.pretrain.state import Progress

GRAD_CLIP = 1.0


class LossLog(Protocol):
    """Where the loop reports each point of the MLM loss curve (the MLflow run, or nothing)."""

    def log(self, step: int, loss: float) -> None:
        """Record the mean loss of the steps since the last point."""


class Trainer:
    """The MLM loop: length-bucketed batches in a per-epoch seeded order, masked-only loss."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                 tokenizer: Any, ids: np.ndarray, offsets: np.ndarray, params: PretrainConfig, device: str,
                 seed: int) -> None:
        """Hold the model and the token ids; the tokenizer only supplies its special ids."""
        self.model, self.optimizer, self.generator = model, optimizer, generator
        self.ids, self.offsets, self.params, self.device, self.seed = ids, offsets, params, device, seed
        self.lengths = np.diff(offsets)
        self.pad_id = tokenizer.pad_token_id or 0
        self.mask_id = tokenizer.mask_token_id
        self.special = torch.as_tensor(sorted(set(tokenizer.all_special_ids)))
        self.vocab_size = model.get_input_embeddings().weight.shape[0]

    def order(self, epoch: int) -> np.ndarray:
        """The row order of ``epoch``: a function of seed and epoch only, so a resume repeats it."""
        from sentirefine.models.batching import length_bucketed_order

        return length_bucketed_order(self.lengths, self.params.batch_size, np.random.default_rng([self.seed, epoch]))

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids of ``rows`` padded to the longest of them, and the attention mask."""
        width = int(self.lengths[rows].max())
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        for i, r in enumerate(rows):
            seq = self.ids[self.offsets[r] : self.offsets[r + 1]]
            ids[i, : len(seq)] = seq
        tensor = torch.from_numpy(ids)
        return tensor, (tensor != self.pad_id)

    def done(self, progress: Progress) -> bool:
        """Whether either budget is spent (totals over every resumed run)."""
        p = self.params
        return (p.max_steps is not None and progress.step >= p.max_steps) or (
            p.max_minutes is not None and progress.seconds >= 60 * p.max_minutes)

    def lr_factor(self, progress: Progress) -> float:
        """Warm-up/decay on the share of the budget used (steps or time, whichever is further)."""
        from sentirefine.models.batching import linear_warmup_decay

        p = self.params
        shares = [progress.step / p.max_steps if p.max_steps else 0.0,
                  progress.seconds / (60 * p.max_minutes) if p.max_minutes else 0.0]
        return linear_warmup_decay(min(1.0, max(shares)))

    def step(self, rows: np.ndarray) -> float:
        """One optimizer step on one batch; returns its loss."""
        ids, attention = self.batch(rows)
        candidates = attention & ~torch.isin(ids, self.special)
        inputs, chosen, labels = mask_tokens(ids, candidates, mask_id=self.mask_id, vocab_size=self.vocab_size,
                                             prob=self.params.mask_prob, generator=self.generator)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = mlm_loss(self.model, inputs.to(self.device), attention.long().to(self.device),
                        chosen.to(self.device), labels.to(self.device))
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.optimizer.step()
        return float(loss.detach())

    def timed_step(self, rows: np.ndarray, progress: Progress) -> float:
        """:meth:`step`, its time added to the budget; out of memory becomes an actionable error."""
        start = time.perf_counter()
        try:
            loss = self.step(rows)
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower():
                raise TrainingError(f"out of memory in pretraining at batch size {self.params.batch_size}: {exc}",
                                    hint="lower pretrain.batch_size, max_len or hidden") from exc
            raise
        progress.seconds += time.perf_counter() - start
        return loss

    def run(self, progress: Progress, checkpoint: Callable[[], None], run: LossLog) -> None:
        """Train until a budget is spent, logging every ``log_every_steps`` and checkpointing as configured."""
        from tqdm import tqdm

        p = self.params
        order = self.order(progress.epoch)
        window: list[float] = []
        total = p.max_steps if p.max_steps is not None else None
        with tqdm(total=total, initial=progress.step, desc="pretrain", unit="step", disable=progress_disabled()) as bar:
            while not self.done(progress):
                if progress.position >= len(order):
                    progress.epoch, progress.position = progress.epoch + 1, 0
                    order = self.order(progress.epoch)
                rows = order[progress.position : progress.position + p.batch_size]
                for group in self.optimizer.param_groups:
                    group["lr"] = p.lr * self.lr_factor(progress)
                window.append(self.timed_step(rows, progress))
                progress.step += 1
                progress.position += len(rows)
                progress.sentences += len(rows)
                crash_point("pretrain_step")
                bar.update(1)
                if progress.step % p.log_every_steps == 0 or self.done(progress):
                    loss = float(np.mean(window))
                    window.clear()
                    progress.curve.append([progress.step, round(loss, 4)])
                    bar.set_postfix(loss=f"{loss:.3f}", min=f"{progress.seconds / 60:.1f}")
                    run.log(progress.step, loss)
                if progress.step % p.checkpoint_every_steps == 0 or self.done(progress):
                    checkpoint()
        if progress.step and not (progress.curve and progress.curve[-1][0] == progress.step) and window:
            progress.curve.append([progress.step, round(float(np.mean(window)), 4)])
