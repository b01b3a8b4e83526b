"""The promotion gate through a real MLflow registry (SQLite store): worse stays staging."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from sentirefine.config import LexiconConfig, load_config
from sentirefine.integrations import model_code
from sentirefine.integrations.serving import INPUT_EXAMPLE, signature
from sentirefine.integrations.tracking import Tracker, passes_gate
from sentirefine.models.lexicon import LexiconModel

pytestmark = pytest.mark.integration


def test_gate_rule():
    assert passes_gate(0.80, None, 0.0) == (True, "no production version yet")
    assert passes_gate(0.80, 0.80, 0.0)[0]
    assert not passes_gate(0.79, 0.80, 0.0)[0]
    assert passes_gate(0.79, 0.80, 0.02)[0]


def _member_source(tracker, run_id: str, checkpoint, tmp_path) -> str:
    """A member's MLflow model (models from code, as the bundle holds it) logged into ``run_id``'s artifacts."""
    import mlflow.pyfunc

    folder = tmp_path / "member-model"
    mlflow.pyfunc.save_model(folder, python_model=str(model_code.MEMBER), artifacts={"member": str(checkpoint)},
                             signature=signature(ensemble=False), input_example=INPUT_EXAMPLE)
    tracker.client.log_artifacts(run_id, str(folder), "member")
    return f"{tracker.client.get_run(run_id).info.artifact_uri}/member"


def test_worse_version_is_not_promoted_better_one_is(tmp_path):
    config = load_config(overrides={"workspace": str(tmp_path / "ws")})
    model = LexiconModel("lexicon", LexiconConfig(tokenizer="regex", min_count=1))
    model.fit(["good fun", "great film", "bad boring", "awful plot"] * 5, np.array([1, 1, 0, 0] * 5))
    model.save(tmp_path / "lexicon")
    tracker = Tracker(config)
    run_id = tracker.client.create_run(tracker.experiment_id, run_name="gate-test").info.run_id
    source = _member_source(tracker, run_id, tmp_path / "lexicon", tmp_path)
    decisions = [tracker.register_version(run_id, "lexicon", source, value, iteration, "ws-test", always=True)
                 for iteration, value in enumerate([0.80, 0.70, 0.85])]
    assert [d["promoted"] for d in decisions] == [True, False, True]
    assert "0.7000 < production 0.8000" in decisions[1]["reason"]
    client = tracker.client
    production = client.get_model_version_by_alias("sentirefine-lexicon", "production")
    assert str(production.version) == decisions[2]["version"]
    assert str(client.get_model_version_by_alias("sentirefine-lexicon", "staging").version) == decisions[2]["version"]
    rejected = client.get_model_version("sentirefine-lexicon", decisions[1]["version"])
    assert rejected.tags["promotion"] == "rejected" and rejected.tags["previous_production"] == "1"
    assert rejected.tags["iteration"] == "1" and rejected.source == source
    served = mlflow.pyfunc.load_model("models:/sentirefine-lexicon@production").predict(
        pd.DataFrame({"text": ["good fun", "awful plot"]}))
    assert served["label"].tolist() == [1, 0]
    # members that fail the gate are not registered at all (always=False)
    skipped = tracker.register_version(run_id, "lexicon", source, 0.5, 3, "ws-test", always=False)
    assert skipped == {"registered": False, "reason": "0.5000 < production 0.8500 - tolerance 0.0"}


def test_a_second_workspace_in_the_same_process_tracks_into_its_own_store(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri exports $MLFLOW_TRACKING_URI, which tracking_uri reads as the user's
    choice: without care, workspace B (and every command this process starts) would track into A's store."""
    import os

    from sentirefine.integrations.tracking import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first, second = (load_config(overrides={"workspace": str(tmp_path / n)}) for n in ("a", "b"))
    Tracker(first)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert tracking_uri(second) == f"sqlite:///{(tmp_path / 'b' / 'mlflow.db').resolve()}"
    tracker = Tracker(second)
    assert tracker.uri == mlflow.get_tracking_uri() == mlflow.get_registry_uri() == tracking_uri(second)
    assert tracker.client.get_experiment_by_name(second.tracking.experiment) is not None
    # A user's own setting is kept as it was.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'server.db'}")
    Tracker(second)
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'server.db'}"
