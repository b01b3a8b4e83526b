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

from collections.abc import Sequence
from pathlib import Path
from typing import Self

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sentirefine.config import RNNConfig
from sentirefine.errors import ModelLoadError
from sentirefine.models.base import DAMAGED_HINT
from sentirefine.models.batching import check_labels, pad_batch, release_memory, seeded
from sentirefine.models.text import Tokenizer, Vocabulary
from sentirefine.models.torch_loop import TorchMember

_WEIGHTS = "weights.pt"
_VOCAB = "vocab.json"


class LSTMClassifier(nn.Module):
    """Embedding -> stacked LSTMs -> masked mean+max pooling -> Linear(2)."""

    def __init__(self, vocab_size: int, params: RNNConfig) -> None:
        """Layers sized by the vocabulary and the config; a ModuleList so layers freeze one by one."""
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


class RNNModel(TorchMember):
    """LSTM / BiLSTM member over a vocabulary of the training corpus."""

    kind = "rnn"
    params: RNNConfig
    predict_batch_factor = 4

    def __init__(self, name: str, params: RNNConfig, *, device: str = "cpu", seed: int = 13) -> None:
        """Settings only; the vocabulary and the network come from ``fit`` or a checkpoint."""
        super().__init__(name, params, device=device, seed=seed)
        self.tokenizer = Tokenizer(params.tokenizer)
        self.vocab_: Vocabulary | None = None
        self.net_: LSTMClassifier | None = None
        self._batch_size = params.batch_size

    @classmethod
    def params_type(cls) -> type[RNNConfig]:
        """Both the LSTM and the BiLSTM section are an :class:`RNNConfig`."""
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
            return self._update_as_fit(texts, labels)
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
        """Adam over the trainable parameters, cross-entropy on the pooled logits.

        Gradients are clipped over all parameters, not only the trainable ones: a part frozen
        by ``update`` may still hold the gradient of its last trainable step and counts in the
        norm. That is how it has always been, and the trained numbers depend on it.
        """
        net = self._require_net()
        optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
        y, loss_fn = torch.as_tensor(labels), nn.CrossEntropyLoss()

        def loss_of(idx: np.ndarray) -> torch.Tensor:
            """Mean cross-entropy of the rows ``idx``."""
            ids, lens = pad_batch([encoded[i] for i in idx], 0, self.device)
            return loss_fn(net(ids, lens), y[idx].to(self.device))

        self._train_epochs(net, encoded, loss_of, optimizer, clip=list(net.parameters()),
                           epochs=epochs, lr=lr, phase=phase)

    # -- prediction -----------------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(negative), P(positive) per text, from the network's logits."""
        net = self._require_net()
        encoded = self._encode(texts)

        def logits_of(idx: np.ndarray) -> torch.Tensor:
            """Logits of the rows ``idx``, padded to their longest."""
            ids, lens = pad_batch([encoded[i] for i in idx], 0, self.device)
            return net(ids, lens)

        return self._predict(net, encoded, logits_of)

    # -- helpers --------------------------------------------------------------------------
    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of raw texts (tokenised with the member's tokenizer)."""
        return self._encode_tokens(self.tokenizer.tokenize(list(texts)))

    def _encode_tokens(self, tokens: list[list[str]]) -> list[list[int]]:
        """Token ids, truncated to ``max_len``; ``fit`` passes tokens it already has."""
        vocab = self.vocab_
        if vocab is None:
            raise RuntimeError(f"RNN model {self.name!r} is not fitted; call fit() first")
        return [vocab.encode(t, self.params.max_len) for t in tokens]

    def _require_net(self) -> LSTMClassifier:
        """The network, or a clear error instead of an AttributeError on None."""
        if self.net_ is None:
            raise RuntimeError(f"RNN model {self.name!r} is not fitted; call fit() first")
        return self.net_

    # -- persistence ----------------------------------------------------------------------
    def _save_state(self, directory: Path) -> None:
        """Weights and vocabulary: the two must travel together (ids index the embedding)."""
        if self.vocab_ is None:
            raise RuntimeError(f"RNN model {self.name!r} is not fitted; nothing to save")
        torch.save(self._require_net().state_dict(), directory / _WEIGHTS)
        self.vocab_.save(directory / _VOCAB)

    def _load_state(self, directory: Path) -> None:
        """Read both files and check they belong together before trusting either."""
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
