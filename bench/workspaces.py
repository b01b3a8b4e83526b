"""Fresh per-arm workspaces: config from overrides, import through the real ingest path.

Every arm gets its own directory under the scratch dir, so arms never see each other's labels
or models; arms that start from the same noisy bootstrap copy its finished workspace instead
of refitting identical members (same data, same seeds, same code).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentirefine.config import Config, load_config
from sentirefine.data.ingest import NoiseRate, import_file
from sentirefine.data.workspace import locked, open_store


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Nested dict merge, ``extra`` winning (an arm's overrides on top of the shared base)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass
class Setup:
    """What every arm of one quality run shares."""

    train: Path
    gold: Path
    noise: NoiseRate
    noise_seed: int
    scratch: Path
    config_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def config(self, name: str, extra: dict[str, Any] | None = None) -> Config:
        merged = merge(self.overrides, extra or {})
        return load_config(self.config_file, {**merged, "workspace": str(self.scratch / name)})


def create(cfg: Config, setup: Setup, *, noisy: bool = True) -> None:
    """A new workspace holding the train split (noise injected unless ``noisy`` is False) and gold."""
    shutil.rmtree(cfg.workspace, ignore_errors=True)
    with locked(cfg), open_store(cfg, create=True) as store:
        rejects = cfg.workspace / "rejects"
        import_file(store, setup.train, split="train", rejects_dir=rejects, strict=True,
                    max_chars=cfg.store.max_text_chars, noise_rate=setup.noise if noisy else 0.0,
                    noise_seed=setup.noise_seed)
        import_file(store, setup.gold, split="gold", rejects_dir=rejects, strict=True,
                    max_chars=cfg.store.max_text_chars)


def clone(source: Path, cfg: Config) -> None:
    """Copy a finished (closed) workspace to ``cfg.workspace``."""
    shutil.rmtree(cfg.workspace, ignore_errors=True)
    shutil.copytree(source, cfg.workspace, ignore=shutil.ignore_patterns(".sentirefine.lock", ".sentirefine.owner"))


def shared_pretrained(setup: Setup, folder: Path) -> Path | None:
    """One `sentirefine pretrain` checkpoint for every arm that asks for ``checkpoint: pretrained``.

    Arms differ in labels, never in text, and MLM reads only the text: pretraining once per
    train subset (same budget a user's first `refine` spends) and pointing every arm at it
    measures what the default gives without paying the budget once per arm. Reused when present.
    Returns None when the config does not use a workspace-pretrained BERT.
    """
    from sentirefine.pretrain.run import output_dir, pretrain

    cfg = load_config(setup.config_file, {**setup.overrides, "workspace": str(folder)})
    if cfg.models.bert.checkpoint != "pretrained" or "bert" not in cfg.models.order:
        return None
    out = output_dir(cfg).resolve()
    if (out / "config.json").is_file():
        return out
    if not cfg.db_file.is_file():
        create(cfg, setup, noisy=False)  # gold is imported too, so pretrain can keep its text out
    with locked(cfg), open_store(cfg) as store:
        pretrain(cfg, store)
    return out
