"""Out of memory in the middle of a member's training: the loop's training stage backs off to a
smaller batch, logs it, and completes (the real LSTM; only its forward pass is made to fail)."""

from __future__ import annotations

import logging

import pytest
import torch

from sentirefine.config import load_config
from sentirefine.data.ingest import import_file
from sentirefine.data.store import Store
from sentirefine.models.rnn import LSTMClassifier
from sentirefine.pipeline.train import train_members

pytestmark = [pytest.mark.faults]

LIMIT = 16  # the "accelerator" holds at most this many rows per forward pass


def test_training_stage_backs_off_on_oom_and_completes(tmp_path, tiny_corpus, monkeypatch, caplog):
    train, _ = tiny_corpus
    config = load_config(overrides={"workspace": str(tmp_path / "ws"), "models": {
        "order": ["lstm"], "lstm": {"embedding_dim": 8, "hidden_dim": 8, "epochs": 1, "max_len": 16,
                                     "vocab_size": 500, "batch_size": 64}}})
    forward = LSTMClassifier.forward
    sizes: list[int] = []

    def limited(self, ids, lengths):
        if ids.shape[0] > LIMIT:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {ids.shape[0]} rows")
        sizes.append(ids.shape[0])
        return forward(self, ids, lengths)

    monkeypatch.setattr(LSTMClassifier, "forward", limited)
    with Store(config.db_file, create=True) as store, \
            caplog.at_level(logging.WARNING, logger="sentirefine.models.batching"):
        import_file(store, train, split="train", rejects_dir=tmp_path / "rejects")
        info = train_members(config, store, 0)
        assert store.stage_done(0, "train:lstm")
    assert info["lstm"]["history"][-1]["batch_size"] <= LIMIT
    assert sizes and max(sizes) <= LIMIT and sum(sizes) >= 600  # every row trained, only in small batches
    backoffs = [r for r in caplog.records if getattr(r, "event", None) == "oom_backoff"]
    assert [(r.old_batch_size, r.new_batch_size) for r in backoffs][:2] == [(64, 32), (32, 16)]
    assert all("lstm" in r.context for r in backoffs)
    assert (config.models_dir / "iter-000" / "lstm" / "weights.pt").is_file()
