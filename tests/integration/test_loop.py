"""The whole loop on a real SQLite file with real (tiny) models and a real multiprocessing Pool."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from mlflow_server import MlflowServer

from sentirefine.data.store import Store

pytestmark = pytest.mark.integration


def test_whole_loop(tiny_corpus, tiny_config_file, cli, tmp_path):
    """Import, bootstrap and two iterations, tracked by a real `mlflow server` process."""
    train, gold = tiny_corpus
    # A class offset in force, so the check below that every change cleared its threshold covers it.
    cfg = yaml.safe_load(tiny_config_file.read_text())
    cfg["refine"]["threshold"].update(per_class={0: 0.03}, balance_offset=0.5)
    tiny_config_file.write_text(yaml.safe_dump(cfg))
    cli("-c", str(tiny_config_file), "import", str(train), "--gold", str(gold),
        "--inject-noise", "0.2", "--noise-seed", "1")
    with MlflowServer(tmp_path) as server:
        out = cli("-c", str(tiny_config_file), "refine", env={"SENTIREFINE_TRACKING__URI": server.uri})
        _check_loop(out, tmp_path, cli, tiny_config_file)
        _check_mlflow(server.uri, cli)


def _check_mlflow(uri, cli):
    import mlflow

    client = mlflow.MlflowClient(uri, uri)
    experiment = client.get_experiment_by_name("sentirefine")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on training runs
    runs = client.search_runs([experiment.experiment_id])
    names = sorted(r.info.run_name for r in runs)
    assert names == ["iteration-000", "iteration-001", "iteration-002", "refine"]
    child = next(r for r in runs if r.info.run_name == "iteration-001")
    assert child.data.tags["mlflow.parentRunId"] == next(r for r in runs if r.info.run_name == "refine").info.run_id
    for key in ("refine.label_change_rate", "refine.threshold", "refine.class_offset.0",
                "gold.ensemble.accuracy", "gold.lstm.accuracy",
                "weight.lexicon", "refine.lexicon_change_rate"):
        assert key in child.data.metrics, key
    # each iteration's run names the label snapshot its models trained on (the UI's Dataset column)
    for run in (r for r in runs if r.info.run_name.startswith("iteration-")):
        (data,) = run.inputs.dataset_inputs
        tag = f"data-iter-{int(run.info.run_name[-3:]):03d}"
        assert data.dataset.name == f"labels@{tag}" and json.loads(data.dataset.source)["rev"] == tag
        assert json.loads(data.dataset.profile)["train_rows"] == 600 and len(data.dataset.digest) == 32
        assert {t.key: t.value for t in data.tags}["mlflow.data.context"] == "training"
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"confusion_ensemble.png", "corrected_sample.csv", "metrics.json"} <= artifacts
    versions = client.search_model_versions("name='sentirefine-ensemble'")
    assert len(versions) == 3  # one per iteration, bootstrap included
    production = client.get_model_version_by_alias("sentirefine-ensemble", "production")
    assert production.tags["promotion"] == "promoted"
    assert production.tags["dataset_rev"] == f"data-iter-{int(production.tags['iteration']):03d}"
    # A fresh Python process — the downstream service — loads production by name and predicts.
    code = (
        "import mlflow, pandas as pd; "
        f"mlflow.set_tracking_uri({uri!r}); "
        "m = mlflow.pyfunc.load_model('models:/sentirefine-ensemble@production'); "
        "out = m.predict(pd.DataFrame({'text': ['정말 재밌어요 최고', '최악 지루하다 돈 아깝다']})); "
        "print(out.to_json(orient='records'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(rows) == 2 and all(set(r) == {"label", "probability", "confidence"} for r in rows)
    assert all(r["label"] in (0, 1) and 0.5 <= r["confidence"] <= 1 for r in rows)


def _check_loop(out, tmp_path, cli, tiny_config_file):
    assert "stopped: max_iterations=2 reached" in out.stdout
    with Store(tmp_path / "ws" / "sentences.db") as store:
        assert store.history_is_consistent()
        its = store.iterations()
        assert [it["iteration"] for it in its] == [0, 1, 2] and all(it["finished_at"] for it in its)
        thresholds = [it["threshold"] for it in its[1:]]
        assert thresholds == sorted(thresholds) and thresholds[0] < thresholds[1]
        # gold rows: never relabelled, never touched
        assert store.conn.execute(
            "SELECT count(*) FROM sentences WHERE split='gold' AND (current_label != original_label "
            "OR label_source != 'original')").fetchone()[0] == 0
        assert store.conn.execute("SELECT count(*) FROM label_history h JOIN sentences s USING (sid) "
                                  "WHERE s.split='gold'").fetchone()[0] == 0
        # every train row predicted in every iteration, by every member
        for it in (1, 2):
            assert store.conn.execute("SELECT count(*) FROM predictions WHERE iteration=?",
                                      (it,)).fetchone()[0] == 600
        # each change in history matches a prediction above that iteration's threshold plus the
        # offset of its predicted class (per_class, and a balance offset if the labels lean)
        for it in (1, 2):
            offsets = {int(c): o for c, o in store.stage_info(it, "predict")["class_offsets"].items()}
            assert offsets[0] >= 0.03 and its[it]["metrics"]["class_offsets"] == {str(c): o for c, o in offsets.items()}
            changes = store.conn.execute(
                "SELECT p.confidence, p.predicted, h.new_label, i.threshold FROM label_history h JOIN predictions p "
                "ON p.sid=h.sid AND p.iteration=h.iteration JOIN iterations i ON i.iteration=h.iteration "
                "WHERE h.iteration=?", (it,)).fetchall()
            assert all(conf >= threshold + offsets.get(predicted, 0) and predicted == new
                       for conf, predicted, new, threshold in changes)
        metrics = its[-1]["metrics"]
        assert set(metrics["members"]) == {"lexicon", "lstm", "bilstm", "bert"}
        assert metrics["lexicon_change_rate"] is not None
        assert 0 <= metrics["label_change_rate"] <= 1
    for it in (0, 1, 2):
        for name in ("lexicon", "lstm", "bilstm", "bert"):
            assert (tmp_path / "ws" / "models" / f"iter-{it:03d}" / name / "model.json").is_file()
    tags = subprocess.run(["git", "-C", str(tmp_path / "ws"), "tag"], capture_output=True, text=True).stdout.split()
    assert tags == ["data-iter-000", "data-iter-001", "data-iter-002"]
    status = cli("-c", str(tiny_config_file), "status")
    assert "600 train rows, 200 gold rows" in status.stdout
