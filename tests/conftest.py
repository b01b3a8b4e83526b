"""Shared fixtures: tiny real corpora cut from the bundled demo data, and a tiny-model config."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_config import TINY_CONFIG

from sentirefine import demo

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One torch (OpenMP) thread in the test process and every command it starts, set before torch is
# imported. The suite's models are tiny and its processes overlap (two SIGKILL chains side by side,
# a CLI beside its pool workers): with two threads each, OpenMP's spin-waiting barriers made a
# 400-row BiLSTM fit take 62 s instead of 2-3 s whenever another process was busy. Pool and job
# workers set their own share of the cores (cores // workers) and are unaffected.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tests never talk to the real Gemini: an LLM test sets its own key and points it at a loopback stub.
for _name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY"):
    os.environ.pop(_name, None)

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(autouse=True)
def _isolated_environ():
    """Undo environment changes a test makes (mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI,
    which subprocesses of later tests would otherwise inherit)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _head(source: Path, target: Path, rows: int) -> Path:
    with gzip.open(source, "rt", encoding="utf-8") as src:
        lines = [next(src) for _ in range(rows + 1)]
    target.write_text("".join(lines), encoding="utf-8")
    return target


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """600 train + 200 gold real reviews (NSMC, from the bundled demo files)."""
    root = tmp_path_factory.mktemp("corpus")
    return _head(demo.TRAIN, root / "train.tsv", 600), _head(demo.GOLD, root / "gold.tsv", 200)


@pytest.fixture
def tiny_config_file(tmp_path) -> Path:
    cfg = {**TINY_CONFIG, "workspace": str(tmp_path / "ws")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run_cli(*args: str, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m sentirefine`` in a fresh process, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "sentirefine", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"sentirefine {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def cli():
    """``cli("refine", ...)`` runs the real command line in a subprocess."""
    return _run_cli
