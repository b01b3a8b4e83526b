"""The finished checkpoint: model, tokenizer and ``pretrain_card.json``, swapped in atomically.

Why a card: a checkpoint alone does not say what it was trained on or how long; the card
records the corpus counts (gold texts excluded included), the architecture, the training budget
and the MLM loss curve, for the summary, the MLflow run and whoever picks the checkpoint later.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from sentirefine.config import PretrainConfig
from sentirefine.files.atomic import atomic_directory
from sentirefine.pretrain.state import Progress

CARD = "pretrain_card.json"


def make_card(params: PretrainConfig, source: Path | None, corpus: dict[str, Any], tokenizer: Any,
              model: nn.Module, progress: Progress, device: str, ids: np.ndarray) -> dict[str, Any]:
    """The card's fields, from the corpus counts, the model and the training progress."""
    rows = max(corpus["rows"], 1)
    cfg = model.config
    return {
        "format_version": 1,
        "mode": "continued" if source else "scratch",
        "from": str(source) if source else None,
        "corpus": {**corpus, "tokens": len(ids), "tokens_per_text": round(len(ids) / rows, 2)},
        "vocab_size": len(tokenizer),
        "architecture": {"model_type": cfg.model_type, "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size,
                         "heads": cfg.num_attention_heads, "max_len": params.max_len,
                         "parameters": sum(p.numel() for p in model.parameters())},
        "training": {"steps": progress.step, "sentences_seen": progress.sentences,
                     "epochs": round(progress.sentences / rows, 3), "seconds": round(progress.seconds, 1),
                     "batch_size": params.batch_size, "lr": params.lr, "mask_prob": params.mask_prob,
                     "device": device, "budget": {"max_minutes": params.max_minutes, "max_steps": params.max_steps}},
        "mlm_loss_curve": progress.curve,
        "final_mlm_loss": progress.curve[-1][1] if progress.curve else None,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_output(out: Path, model: nn.Module, tokenizer: Any, card: dict[str, Any]) -> None:
    """Model, tokenizer and card, swapped in atomically: the BERT member never sees half of one."""
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.model_max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)
        tokenizer.save_pretrained(tmp)
        (tmp / CARD).write_text(json.dumps(card, ensure_ascii=False, indent=1), encoding="utf-8")
