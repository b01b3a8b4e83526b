"""The resumable training state: what is saved at each checkpoint and how a run picks it up again.

Why: a pretraining budget can be hours and a run may be SIGKILLed at any moment. Every
``checkpoint_every_steps`` the model, optimizer, step, RNG states and corpus position are saved
atomically (written to a temporary directory, then swapped in by renames), so a rerun resumes
from the last checkpoint with the same random state, and ends where an uninterrupted run ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sentirefine.config import Config
from sentirefine.errors import ConfigError
from sentirefine.faults import crash_point
from sentirefine.files.atomic import atomic_directory
from sentirefine.pretrain.mlm import new_model

STATE, TRAINER = "state", "trainer.pt"
WEIGHT_DECAY = 0.01


@dataclass
class Progress:
    """Everything besides weights and optimizer that a resumed run needs."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    seconds: float = 0.0
    sentences: int = 0
    curve: list[list[float]] = field(default_factory=list)


def state_signature(config: Config, source: Path | None) -> dict[str, Any]:
    """What the saved state must match to be resumed (a changed architecture cannot be)."""
    p = config.pretrain
    arch = {"vocab_size": p.vocab_size, "alphabet_limit": p.alphabet_limit, "min_frequency": p.min_frequency,
            "layers": p.layers, "hidden": p.hidden, "heads": p.heads, "intermediate": p.intermediate}
    return {"from": str(source) if source else None, "max_len": p.max_len, **({} if source else arch)}


def save_state(work: Path, model: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress,
               generator: torch.Generator, signature: dict[str, Any]) -> None:
    """Write the state to ``state.tmp`` and swap it in by renames: a kill never leaves half a state."""
    with atomic_directory(work / STATE) as tmp:
        model.save_pretrained(tmp / "model")
        torch.save({"progress": progress.__dict__, "optimizer": optimizer.state_dict(),
                    "rng_torch": torch.get_rng_state(), "rng_mask": generator.get_state(),
                    "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "signature": signature}, tmp / TRAINER)
        crash_point("pretrain_checkpoint")


def saved_state_dir(work: Path) -> Path | None:
    """The newest complete state (``state.old`` survives a kill between the two renames)."""
    for name in (STATE, f"{STATE}.old"):
        if (work / name / TRAINER).is_file():
            return work / name
    return None


def model_and_state(config: Config, work: Path, source: Path | None, tokenizer: Any, signature: dict[str, Any],
                    device: str) -> tuple[nn.Module, Progress, torch.Generator, torch.optim.Optimizer]:
    """A fresh model and state, or the saved ones when a state matching this configuration exists.

    The seeding order is part of the resume contract: the global seed is set before the model is
    built and then overwritten by the saved RNG states, so fresh and resumed runs draw alike.
    """
    from transformers import AutoModelForMaskedLM

    generator = torch.Generator().manual_seed(config.models.seed)
    state_dir = saved_state_dir(work)
    saved = torch.load(state_dir / TRAINER, weights_only=False) if state_dir else None
    if saved is not None and saved["signature"] != signature:
        raise ConfigError(f"{work} holds pretraining state of another configuration: {saved['signature']}",
                          hint="restore the earlier pretrain settings to resume, or pass --fresh to start over")
    torch.manual_seed(config.models.seed)
    if saved is None:
        model = new_model(config, source, tokenizer)
    else:
        model = AutoModelForMaskedLM.from_pretrained(state_dir / "model", local_files_only=True)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.pretrain.lr, weight_decay=WEIGHT_DECAY)
    progress = Progress()
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        progress = Progress(**saved["progress"])
        torch.set_rng_state(saved["rng_torch"])
        generator.set_state(saved["rng_mask"])
        if saved.get("rng_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["rng_cuda"])
    return model, progress, generator, optimizer
