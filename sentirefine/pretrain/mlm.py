"""The masked-language model: a small BERT, BERT-style masking, and a loss on masked positions only.

Why masked positions only: the vocabulary-sized output layer otherwise dominates the cost (a
16k-way softmax at every position), so the encoder's hidden states are gathered at the masked
positions before the head, and the 2-CPU-core default stays trainable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from sentirefine.config import Config
from sentirefine.errors import ModelLoadError
from sentirefine.pretrain.vocab import SPECIAL_TOKENS


def new_model(config: Config, source: Path | None, tokenizer: Any) -> nn.Module:
    """The model to start from: the ``--from`` checkpoint (continued mode), else a fresh small BERT."""
    from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if source is not None:
        if not source.is_dir():
            raise ModelLoadError(f"checkpoint directory to continue from not found: {source}",
                                 hint="--from takes a local Hugging Face model directory")
        try:
            return AutoModelForMaskedLM.from_pretrained(source, local_files_only=True)
        except Exception as exc:
            raise ModelLoadError(f"checkpoint at {source} could not be loaded for masked-LM training: {exc}",
                                 hint="the directory must hold config.json and weights") from exc
    p = config.pretrain
    bert = BertConfig(vocab_size=len(tokenizer), hidden_size=p.hidden, num_hidden_layers=p.layers,
                      num_attention_heads=p.heads, intermediate_size=p.intermediate,
                      max_position_embeddings=p.max_len, pad_token_id=tokenizer.pad_token_id)
    return BertForMaskedLM(bert)


def mask_tokens(ids: torch.Tensor, candidates: torch.Tensor, *, mask_id: int, vocab_size: int, prob: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BERT masking: choose ``prob`` of the candidate positions; 80% [MASK], 10% random, 10% kept.

    Returns (inputs, chosen positions as a bool mask, original ids at those positions).
    """
    chosen = (torch.rand(ids.shape, generator=generator) < prob) & candidates
    if not chosen.any():  # a batch of very short texts: mask one token so the step has a loss
        chosen.view(-1)[int(candidates.view(-1).float().argmax())] = True
    labels = ids[chosen]
    inputs = ids.clone()
    r = torch.rand(labels.shape, generator=generator)
    values = labels.clone()
    values[r < 0.8] = mask_id
    random_pos = (r >= 0.8) & (r < 0.9)
    values[random_pos] = torch.randint(len(SPECIAL_TOKENS), vocab_size, (int(random_pos.sum()),),
                                       generator=generator)
    inputs[chosen] = values
    return inputs, chosen, labels


def mlm_loss(model: nn.Module, inputs: torch.Tensor, attention: torch.Tensor, chosen: torch.Tensor,
             labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the masked positions only: the output layer sees only those hidden states."""
    head = getattr(model, "cls", None)
    head = getattr(model, "lm_head", None) if head is None else head
    if head is None:  # an MLM architecture without a separable head: score every position
        full = torch.full_like(inputs, -100)
        full[chosen] = labels
        return model(input_ids=inputs, attention_mask=attention, labels=full).loss
    hidden = model.base_model(input_ids=inputs, attention_mask=attention)[0]
    logits = head(hidden[chosen])
    return F.cross_entropy(logits.float(), labels)
