"""The fault suite's shared reference: one uninterrupted run of a tiny two-member config.

It runs once per session with the crash-point trace on, so the SIGKILL chain (its trace and
final state) and the log-format test (its stderr) share the one run. The LLM stage is off there
(it needs the network or a stub in every resumed process); ``secrets_run`` covers it: a run
with a sentinel API key against the loopback Gemini stub.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

SENTINEL = "AIzaSENTINEL-do-not-leak-0123456789abcdef"

# Two cheap members, in-process, MLflow (sqlite) + DVC (local remote, pushed) on: every stage runs.
# Regex tokens for both: Kiwi's start-up (~4 s) would be paid again by every killed and resumed
# process, and what these tests check (crash points, resume, logs) does not depend on morphemes.
FAULT_CONFIG = {
    "store": {"chunk_size": 150},
    "models": {"order": ["lexicon", "lstm"], "lexicon": {"min_count": 1, "tokenizer": "regex"},
               "lstm": {"tokenizer": "regex", "embedding_dim": 16, "hidden_dim": 16, "epochs": 2, "max_len": 24,
                        "vocab_size": 3000}},
    "ensemble": {"workers": 0, "predict_batch_rows": 128},
    "refine": {"max_iterations": 1, "threshold": {"start": 0.6, "step": 0.1, "max": 0.9}},
    "versioning": {"push": True},
    "llm": {"enabled": False},
    "logging": {"format": "json"},
}


@dataclass
class Reference:
    config: Path
    imported: Path
    workspace: Path
    trace: list[str]
    stdout: str
    stderr: str


def refine_args(config: Path, workspace: Path) -> tuple[str, ...]:
    return ("-c", str(config), "--workspace", str(workspace), "refine")


@pytest.fixture(scope="session")
def reference(tmp_path_factory, tiny_corpus, cli) -> Reference:
    """An imported (not bootstrapped) workspace, and an uninterrupted run from it with its trace."""
    root = tmp_path_factory.mktemp("faults")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({**FAULT_CONFIG, "workspace": str(root / "imported")}))
    train, gold = tiny_corpus
    cli("-c", str(config), "import", str(train), "--gold", str(gold), "--inject-noise", "0.2", "--noise-seed", "1")
    shutil.copytree(root / "imported", root / "ref")
    trace = root / "trace.txt"
    run = cli("--log-format", "json", *refine_args(config, root / "ref"), env={"SENTIREFINE_FAULT_TRACE": str(trace)})
    return Reference(config, root / "imported", root / "ref", trace.read_text().split(), run.stdout, run.stderr)


@pytest.fixture(scope="session")
def secrets_run(reference, tmp_path_factory, cli) -> tuple[Reference, int]:
    """One iteration with the LLM stage on, the sentinel key set, Gemini a loopback stub."""
    from llm_stub import GeminiStub

    root = tmp_path_factory.mktemp("secrets")
    settings = {**FAULT_CONFIG, "workspace": str(root / "ws"), "llm": {"max_batch_items": 25, "rpm": 600},
                "refine": {**FAULT_CONFIG["refine"], "llm_queue_below": 0.7}}
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(settings))
    shutil.copytree(reference.imported, root / "ws")
    with GeminiStub(rpm=600, tpm=10**6) as stub:
        env = {"GEMINI_API_KEY": SENTINEL, "GOOGLE_API_KEY": SENTINEL, "SENTIREFINE_LLM__BASE_URL": stub.url}
        run = cli("--log-format", "json", *refine_args(config, root / "ws"), env=env)
        requests = len(stub.ok_requests)
    return Reference(config, root / "ws", root / "ws", [], run.stdout, run.stderr), requests


