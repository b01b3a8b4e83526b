"""SIGKILL `sentirefine pretrain` mid-training; the rerun resumes and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from sentirefine.config import load_config
from sentirefine.data.ingest import import_file
from sentirefine.data.store import Store
from sentirefine.models.bert import load_pretrained

pytestmark = pytest.mark.integration

TINY_PRETRAIN = {"vocab_size": 500, "alphabet_limit": 300, "layers": 1, "hidden": 32, "heads": 2, "intermediate": 64,
                 "max_len": 24, "batch_size": 16, "max_steps": 12, "checkpoint_every_steps": 4, "log_every_steps": 2}


def _workspace(root, name, tiny_corpus, tracking: bool):
    """A workspace holding the tiny corpus (imported in-process: only pretrain itself runs as a CLI)."""
    settings = {"workspace": str(root / name), "pretrain": TINY_PRETRAIN, "tracking": {"enabled": tracking},
                "logging": {"format": "json"}}
    config = root / f"{name}.yaml"
    config.write_text(yaml.safe_dump(settings))
    cfg = load_config(config)
    with Store(cfg.db_file, create=True) as store:
        for path, split in zip(tiny_corpus, ("train", "gold"), strict=True):
            import_file(store, path, split=split, rejects_dir=cfg.workspace / "rejects")
    return config


def test_pretrain_killed_then_resumed_matches_uninterrupted(tmp_path, tiny_corpus, cli):
    killed = _workspace(tmp_path, "killed", tiny_corpus, tracking=True)
    proc = cli("-c", str(killed), "pretrain", env={"SENTIREFINE_KILL_AT": "pretrain_step:7"}, check=False)
    assert proc.returncode == -9, proc.stderr
    work = tmp_path / "killed" / "pretrained-work"
    assert (work / "state" / "trainer.pt").is_file() and not (tmp_path / "killed" / "pretrained").exists()

    resumed = cli("-c", str(killed), "pretrain")
    assert "resumed at step 4" in resumed.stdout
    card = json.loads((tmp_path / "killed" / "pretrained" / "pretrain_card.json").read_text(encoding="utf-8"))
    assert card["training"]["steps"] == 12 and card["corpus"]["gold_texts_excluded"] >= 0

    clean = _workspace(tmp_path, "clean", tiny_corpus, tracking=False)
    # Same corpus and vocabulary (the WordPiece trainer breaks frequency ties in hash order), no kill.
    # A subprocess like the killed run: the test process's torch threads (set by earlier tests) would
    # change the order of float reductions, and with it the last bits of the weights.
    shutil.copytree(work, tmp_path / "clean" / "pretrained-work",
                    ignore=shutil.ignore_patterns("state*", "mlflow_run.json"))
    cli("-c", str(clean), "pretrain")
    a = load_file(tmp_path / "killed" / "pretrained" / "model.safetensors")
    b = load_file(tmp_path / "clean" / "pretrained" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)  # same weights

    os.environ["HF_HUB_OFFLINE"] = "1"
    tokenizer, model = load_pretrained(tmp_path / "killed" / "pretrained", "cpu")
    assert model.config.num_labels == 2 and tokenizer.unk_token_id not in tokenizer("정말 재밌어요")["input_ids"]

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'killed' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="attributes.run_name = 'pretrain'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the resumed run logged into the same run
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "mlm_loss")][-1] == 12
