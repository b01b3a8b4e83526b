"""LSTM and BiLSTM classifiers: one class, the ``bidirectional`` flag tells them apart.

Architecture: Embedding(padding 0) -> stacked single-layer LSTMs (a ``ModuleList`` so that
``update`` can freeze the lower layers one by one) with dropout between them -> masked mean
and max pooling over the real (unpadded) time steps -> dropout -> Linear(2).

``fit`` trains from scratch (vocabulary built here, fixed afterwards); ``update`` continues
from the current weights with ``update_lr`` for ``update_epochs`` and freezes what
``freeze_on_update`` names: the LSTM member fine-tunes everything, the BiLSTM member keeps its
embedding and lower layers (partial retraining), which limits how far one iteration's label
noise can pull the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sentirefine.config import RNNConfig
from sentirefine.errors import ModelLoadError
from sentirefine.models.base import DAMAGED_HINT, SentimentModel
from sentirefine.models.batching import (
    check_labels,
    length_bucketed_order,
    pad_batch,
    release_memory,
    run_in_batches,
    seeded,
    sorted_order,
)
from sentirefine.models.text import Tokenizer, Vocabulary

logger = logging.getLogger(__name__)

_WEIGHTS = "weights.pt"
_VOCAB = "vocab.json"
_GRAD_CLIP = 1.0  # LSTM gradients spike on long texts; clipping keeps early steps stable
_PREDICT_BATCH_FACTOR = 4  # inference holds no activations for backward: bigger batches fit


class LSTMClassifier(nn.Module):
    """Embedding -> stacked LSTMs -> masked mean+max pooling -> Linear(2)."""

    def __init__(self, vocab_size: int, params: RNNConfig) -> None:
        super().__init__()
        directions = 2 if params.bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, params.embedding_dim, padding_idx=0)
        sizes = [params.embedding_dim] + [params.hidden_dim * directions] * (params.num_layers - 1)
        self.layers = nn.ModuleList(
            nn.LSTM(size, params.hidden_dim, batch_first=True, bidirectional=params.bidirectional)
            for size in sizes
        )
        self.dropout = nn.Dropout(params.dropout)
        self.head = nn.Linear(2 * params.hidden_dim * directions, 2)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, 2); ``lengths`` (on CPU) are the unpadded lengths."""
        x = self.embedding(ids)
        for i, lstm in enumerate(self.layers):
            if i > 0:
                x = self.dropout(x)
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = lstm(packed)
            x, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths.to(ids.device)[:, None]
        mask = mask.unsqueeze(-1)
        mean = (x * mask).sum(1) / lengths.to(x.device, x.dtype)[:, None]
        peak = x.masked_fill(~mask, float("-inf")).amax(1)
        return self.head(self.dropout(torch.cat([mean, peak], dim=1)))


class RNNModel(SentimentModel):
    """LSTM / BiLSTM member over a vocabulary of the training corpus."""

    kind = "rnn"
    params: RNNConfig

    def __init__(self, name: str, params: RNNConfig, *, device: str = "cpu", seed: int = 13) -> None:
        super().__init__(name, params, device=device, seed=seed)
        self.tokenizer = Tokenizer(params.tokenizer)
        self.vocab_: Vocabulary | None = None
        self.net_: LSTMClassifier | None = None
        self._batch_size = params.batch_size

    @classmethod
    def params_type(cls) -> type[RNNConfig]:
        return RNNConfig

    # -- training -------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], labels: np.ndarray) -> Self:
        """Build the vocabulary and train fresh weights for ``epochs`` (``history_`` restarts)."""
        labels = check_labels(texts, labels)
        release_memory()
        self.history_ = []
        tokens = self.tokenizer.tokenize(list(texts))
        self.vocab_ = Vocabulary.build(tokens, max_size=self.params.vocab_size, min_freq=self.params.min_freq)
        with seeded(self.seed, self.device):
            self.net_ = LSTMClassifier(len(self.vocab_), self.params).to(self.device)
        self._batch_size = self.params.batch_size
        self._set_trainable(frozen=[])
        self._train(
            self._encode_tokens(tokens), labels, epochs=self.params.epochs, lr=self.params.lr, phase="fit"
        )
        return self

    def update(self, texts: Sequence[str], labels: np.ndarray) -> Self:
        """Continue from the current weights, with the parts in ``freeze_on_update`` frozen."""
        if self.net_ is None:
            logger.info(
                "update before fit: fitting from scratch",
                extra={"event": "update_as_fit", "model": self.name},
            )
            return self.fit(texts, labels)
        labels = check_labels(texts, labels)
        release_memory()
        self._set_trainable(frozen=list(self.params.freeze_on_update))
        encoded = self._encode(texts)
        self._train(
            encoded, labels, epochs=self.params.update_epochs, lr=self.params.update_lr, phase="update"
        )
        return self

    def _set_trainable(self, frozen: list[str]) -> None:
        """Freeze the named parts; everything else trains."""
        net = self._require_net()
        for p in net.parameters():
            p.requires_grad_(True)
        if "embedding" in frozen:
            net.embedding.weight.requires_grad_(False)
        if "lower_layers" in frozen:
            for layer in net.layers[:-1]:
                layer.requires_grad_(False)

    def _train(
        self, encoded: list[list[int]], labels: np.ndarray, *, epochs: int, lr: float, phase: str
    ) -> None:
        """Adam over the trainable parameters; one history record per epoch."""
        net = self._require_net()
        optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
        lengths = np.fromiter((len(s) for s in encoded), dtype=np.int64, count=len(encoded))
        # Seeded by history length: the same call sequence gives the same weights, but two
        # updates do not shuffle identically.
        rng = np.random.default_rng([self.seed, len(self.history_)])
        with seeded(self.seed + len(self.history_), self.device):
            net.train()
            for epoch in range(1, epochs + 1):
                start = time.perf_counter()
                order = length_bucketed_order(lengths, self._batch_size, rng)
                loss = self._run_epoch(encoded, torch.as_tensor(labels), order, optimizer, phase)
                self.history_.append(
                    {
                        "epoch": epoch,
                        "phase": phase,
                        "loss": loss,
                        "batch_size": self._batch_size,
                        "seconds": round(time.perf_counter() - start, 3),
                        "rows": len(labels),
                        "lr": lr,
                    }
                )
        net.eval()

    def _run_epoch(
        self,
        encoded: list[list[int]],
        y: torch.Tensor,
        order: np.ndarray,
        optimizer: torch.optim.Optimizer,
        phase: str,
    ) -> float:
        """One pass over ``order`` with OOM back-off; returns the row-weighted mean loss."""
        net, loss_fn = self._require_net(), nn.CrossEntropyLoss()
        loss_sum = 0.0

        def step(idx: np.ndarray) -> None:
            nonlocal loss_sum
            ids, lens = pad_batch([encoded[i] for i in idx], 0, self.device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(ids, lens), y[idx].to(self.device))
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), _GRAD_CLIP)
            optimizer.step()
            loss_sum += float(loss.detach()) * len(idx)

        self._batch_size = run_in_batches(
            order, self._batch_size, step, context=f"{self.name} {phase}", progress=True
        )
        return loss_sum / max(len(order), 1)

    # -- prediction -----------------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        net = self._require_net()
        encoded = self._encode(texts)
        out = np.zeros((len(encoded), 2), dtype=np.float32)
        if not encoded:
            return out
        lengths = np.fromiter((len(s) for s in encoded), dtype=np.int64, count=len(encoded))
        net.eval()

        def predict(idx: np.ndarray) -> None:
            ids, lens = pad_batch([encoded[i] for i in idx], 0, self.device)
            out[idx] = torch.softmax(net(ids, lens).float(), dim=1).cpu().numpy()

        with torch.inference_mode():
            run_in_batches(
                sorted_order(lengths),
                self._batch_size * _PREDICT_BATCH_FACTOR,
                predict,
                context=f"{self.name} predict",
            )
        return out

    # -- helpers --------------------------------------------------------------------------
    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self._encode_tokens(self.tokenizer.tokenize(list(texts)))

    def _encode_tokens(self, tokens: list[list[str]]) -> list[list[int]]:
        vocab = self.vocab_
        if vocab is None:
            raise RuntimeError(f"RNN model {self.name!r} is not fitted; call fit() first")
        return [vocab.encode(t, self.params.max_len) for t in tokens]

    def _require_net(self) -> LSTMClassifier:
        if self.net_ is None:
            raise RuntimeError(f"RNN model {self.name!r} is not fitted; call fit() first")
        return self.net_

    # -- persistence ----------------------------------------------------------------------
    def _save_state(self, directory: Path) -> None:
        if self.vocab_ is None:
            raise RuntimeError(f"RNN model {self.name!r} is not fitted; nothing to save")
        torch.save(self._require_net().state_dict(), directory / _WEIGHTS)
        self.vocab_.save(directory / _VOCAB)

    def _load_state(self, directory: Path) -> None:
        weights = directory / _WEIGHTS
        if not weights.is_file():
            raise ModelLoadError(f"RNN weights missing: {weights}", hint="re-run `sentirefine bootstrap`")
        vocab = Vocabulary.load(directory / _VOCAB)
        try:
            state = torch.load(weights, map_location=self.device, weights_only=True)
        except Exception as exc:  # torch raises several types for a truncated or foreign file
            raise ModelLoadError(f"RNN weights corrupt: {weights}: {exc!r}", hint=DAMAGED_HINT) from exc
        rows = state.get("embedding.weight", torch.empty(0)).shape[0] if isinstance(state, dict) else -1
        if rows != len(vocab):
            raise ModelLoadError(
                f"vocabulary mismatch in {directory}: {_VOCAB} has {len(vocab)} tokens "
                f"but the embedding in {_WEIGHTS} has {rows} rows",
                hint="the two files come from different trainings; restore both or re-run bootstrap",
            )
        net = LSTMClassifier(len(vocab), self.params)
        net.load_state_dict(state)
        self.vocab_, self.net_ = vocab, net.to(self.device).eval()
