"""What `sentirefine pretrain` returns and the one-screen summary the CLI prints of it.

Why separate from the card: the card is the durable record next to the checkpoint; this is
the result of one invocation (it also says at which step a resume picked up).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class PretrainResult:
    """The finished checkpoint directory, its card, and the step this invocation resumed from."""

    output: Path
    card: dict[str, Any]
    resumed_from_step: int


def summary_lines(result: PretrainResult) -> list[str]:
    """The one-screen summary the CLI prints."""
    card = result.card
    corpus, train, arch = card["corpus"], card["training"], card["architecture"]
    extra = ", ".join(f"{Path(p).name} {n:,}" for p, n in corpus["extra_rows"].items())
    curve = card["mlm_loss_curve"]
    lines = [
        f"pretrained checkpoint: {result.output} ({card['mode']}"
        + (f" from {card['from']})" if card["from"] else ")"),
        f"corpus: {corpus['rows']:,} texts (train {corpus['train_rows']:,}" + (f", {extra}" if extra else "")
        + f"); gold texts excluded: {corpus['gold_texts_excluded']:,}; {corpus['tokens_per_text']} tokens/text",
        f"model: {arch['model_type']} {arch['layers']} layers x {arch['hidden']} hidden, "
        f"{arch['parameters'] / 1e6:.1f}M parameters, vocabulary {card['vocab_size']:,}, on {train['device']}",
        f"training: {train['steps']:,} steps ({train['epochs']} epochs, {train['sentences_seen']:,} texts) "
        f"in {train['seconds'] / 60:.1f} min" + (f", resumed at step {result.resumed_from_step:,}"
                                                if result.resumed_from_step else ""),
    ]
    if curve:
        lines.append(f"MLM loss: {curve[0][1]:.3f} (step {curve[0][0]}) -> {curve[-1][1]:.3f} (step {curve[-1][0]})")
    lines.append("use it: models.bert.checkpoint: pretrained (or the path above); "
                 "run again with a larger --max-minutes/--max-steps to train further")
    return lines
