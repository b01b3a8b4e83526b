"""The loop with ``ensemble.folds: 2``: every member a fold set, fold fits as jobs in worker processes.

Real command line, real SQLite, real MLflow (embedded store), two tiny members (lexicon with
regex tokens, a small LSTM) on 600 train rows with 20% injected noise + 200 gold rows.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml
from store_checks import LEXICON_ONLY_CONFIG

from sentirefine.data.store import Store
from sentirefine.ensemble.spec import EnsembleSpec
from sentirefine.models import load_model
from sentirefine.models.folds import fold_of
from sentirefine.pipeline import noise_budget

pytestmark = pytest.mark.integration

MEMBERS = ("lexicon", "lstm")
CONFIG = {
    **LEXICON_ONLY_CONFIG,
    "models": {"order": list(MEMBERS), "lexicon": {"min_count": 1, "tokenizer": "regex"},
               "lstm": {"tokenizer": "regex", "embedding_dim": 16, "hidden_dim": 16, "epochs": 2, "max_len": 24,
                        "vocab_size": 3000}},
    # calibrate off: the stored member probabilities are then the fold models' own, comparable below
    "ensemble": {"workers": 0, "folds": 2, "fold_workers": 2, "calibrate": False},
    "tracking": {"enabled": True},
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory, tiny_corpus, cli) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("folds")
    config, workspace = root / "folds.yaml", root / "ws"
    config.write_text(yaml.safe_dump({**CONFIG, "workspace": str(workspace)}))
    train, gold = tiny_corpus
    cli("-c", str(config), "import", str(train), "--gold", str(gold), "--inject-noise", "0.2", "--noise-seed", "1")
    return config, workspace


@pytest.fixture(scope="module")
def reference(imported, tmp_path_factory, cli) -> Path:
    """One uninterrupted iteration, the result every resumed run must reach."""
    config, source = imported
    workspace = tmp_path_factory.mktemp("reference") / "ws"
    shutil.copytree(source, workspace)
    cli("-c", str(config), "--workspace", str(workspace), "refine", "--max-iterations", "1")
    return workspace


def test_each_train_row_is_predicted_by_the_fold_model_that_never_saw_it(reference):
    for it in (0, 1):
        for name in MEMBERS:
            member = reference / "models" / f"iter-{it:03d}" / name
            assert sorted(p.name for p in member.iterdir()) == ["fold-0", "fold-1", "model.json"]
    with Store(reference / "sentences.db") as store:
        rows = store.conn.execute("SELECT s.text, p.members FROM predictions p JOIN sentences s USING (sid) "
                                  "WHERE p.iteration=1 ORDER BY sid").fetchall()
        stages = {r[0] for r in store.conn.execute("SELECT stage FROM stages WHERE finished_at IS NOT NULL")}
        metrics = next(it["metrics"] for it in store.iterations() if it["iteration"] == 1)
    assert len(rows) == 600
    assert {f"train:{n}:fold-{j}" for n in MEMBERS for j in (0, 1)} <= stages
    texts, folds = [r[0] for r in rows], fold_of([r[0] for r in rows], 2)
    for name in MEMBERS:
        stored = np.array([json.loads(r[1])[name] for r in rows])
        fold_set = load_model(reference / "models" / "iter-000" / name)
        own = np.empty(len(texts))
        for j, model in enumerate(fold_set.models_):
            idx = np.flatnonzero(folds == j)
            own[idx] = model.predict_proba([texts[i] for i in idx])[:, 1]
        np.testing.assert_allclose(stored, own, atol=6e-5)  # stored rounded to 4 digits
        assert np.abs(stored - fold_set.predict_proba(texts)[:, 1]).max() > 1e-3  # not the average
    # convergence is defined over the fold models: the lexicon's change rate is their mean
    assert metrics["lexicon_change_rate"] is not None and metrics["training"]["lexicon"]["folds"] == 2
    # one set of job workers for the command (bootstrap and iteration 1): their caches carry over
    events = [json.loads(line) for line in (reference / "logs" / "sentirefine.jsonl").read_text().splitlines()]
    assert [e["workers"] for e in events if e.get("event") == "job_workers_started"] == [2]


def test_gold_evaluation_and_the_served_model_use_the_average_of_the_folds(reference):
    import mlflow
    import pandas as pd

    with Store(reference / "sentences.db") as store:
        gold = store.conn.execute(
            "SELECT text, current_label FROM sentences WHERE split='gold' ORDER BY sid").fetchall()
        evaluations = {it: store.stage_info(it, "evaluate") for it in (0, 1)}
    texts, labels = [g[0] for g in gold], np.array([g[1] for g in gold])
    lexicon = load_model(reference / "models" / "iter-001" / "lexicon")
    accuracy = float(np.mean((lexicon.predict_proba(texts)[:, 1] > 0.5) == labels))
    assert evaluations[1]["members"]["lexicon"]["accuracy"] == pytest.approx(accuracy)
    mlflow.set_tracking_uri(f"sqlite:///{reference / 'mlflow.db'}")
    version = mlflow.MlflowClient().get_model_version_by_alias("sentirefine-ensemble", "production")
    assert version.tags["folds"] == "2"
    served = mlflow.pyfunc.load_model("models:/sentirefine-ensemble@production").predict(
        pd.DataFrame({"text": texts[:50]}))
    # the production version serves its iteration's fold sets, each the average of its two folds
    iteration = int(version.tags["iteration"])
    raw = np.stack([load_model(reference / "models" / f"iter-{iteration:03d}" / n).predict_proba(texts[:50])[:, 1]
                    for n in MEMBERS], axis=1)
    expected = EnsembleSpec.from_dict(evaluations[iteration]["spec"]).combine(raw)
    np.testing.assert_allclose(served["probability"].to_numpy(), expected.p_positive, atol=1e-6)


@pytest.mark.parametrize(("workers", "point", "code"), [
    (2, "train:lstm:fold-1_before_save", 6),  # in a job worker (bootstrap): the command stops with a TrainingError
    (1, "train:lstm_before_seal:2", -signal.SIGKILL),  # in the command's own process, folds done, set unsealed
])
def test_a_kill_inside_fold_training_resumes_to_the_uninterrupted_result(imported, reference, tmp_path, cli,
                                                                          workers, point, code):
    config, source = imported
    workspace = tmp_path / "ws"
    shutil.copytree(source, workspace)
    args = ("-c", str(config), "--workspace", str(workspace), "refine", "--max-iterations", "1")
    env = {"SENTIREFINE_ENSEMBLE__FOLD_WORKERS": str(workers)}
    killed = cli(*args, env={**env, "SENTIREFINE_KILL_AT": point}, check=False)
    assert killed.returncode == code, killed.stderr[-3000:]
    if code > 0:
        assert "run the same command again" in killed.stderr
    cli(*args, env=env)
    if workers == 1:  # one process with every core: other float roundings than the reference's 1-thread workers
        reference = tmp_path / "reference"
        shutil.copytree(source, reference)
        cli("-c", str(config), "--workspace", str(reference), "refine", "--max-iterations", "1", env=env)
    assert _outcome(workspace) == _outcome(reference)


def _outcome(workspace: Path) -> tuple:
    """Labels, live changes, and every fold checkpoint's weights: what an iteration decides and trains."""
    with Store(workspace / "sentences.db") as store:
        db = tuple(store.conn.execute(sql).fetchall() for sql in (
            "SELECT sid, current_label, frozen FROM sentences ORDER BY sid",
            "SELECT sid, iteration, old_label, new_label, confidence FROM label_history WHERE undone_by IS NULL "
            "ORDER BY sid, iteration"))
    weights = sorted((str(p.relative_to(workspace)), p.read_bytes()) for p in (workspace / "models").rglob("*")
                     if p.is_file() and p.name != "model.json")
    return db, weights


def test_another_fold_count_on_a_running_workspace_is_refused_before_anything_is_written(reference, tmp_path, cli):
    workspace = tmp_path / "ws"
    shutil.copytree(reference, workspace)
    config = tmp_path / "k3.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "workspace": str(workspace),
                                      "ensemble": {**CONFIG["ensemble"], "folds": 3}}))
    before = _outcome(workspace)
    out = cli("-c", str(config), "refine", "--max-iterations", "2", check=False)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "ensemble.folds" in out.stderr and "has 2 fold model(s)" in out.stderr
    assert "Traceback" not in out.stderr
    assert _outcome(workspace) == before


def test_the_budget_counts_wrong_labels_against_the_held_out_gold_confusion(imported, tmp_path, cli):
    config, source = imported
    workspace = tmp_path / "ws"
    shutil.copytree(source, workspace)
    with Store(workspace / "sentences.db") as store:
        before = dict(store.conn.execute("SELECT sid, current_label FROM sentences WHERE split='train'"))
    out = cli("-c", str(config), "--workspace", str(workspace), "-q", "refine", "--max-iterations", "1",
              env={"SENTIREFINE_REFINE__RULE": "budget", "SENTIREFINE_REFINE__BUDGET__ESTIMATOR": "gold",
                   "SENTIREFINE_ENSEMBLE__WORKERS": "1"})
    # --quiet reaches the pool and job workers too (they configure their logging from the config)
    assert '"level": "info"' not in out.stderr, out.stderr[:2000]
    with Store(workspace / "sentences.db") as store:
        held_out = store.stage_info(0, "evaluate")["held_out"]
        record = store.stage_info(1, "predict")
        noise = record["noise"]
        votes = store.conn.execute("SELECT sid, predicted, confidence FROM predictions WHERE iteration=1 "
                                   "ORDER BY sid").fetchall()
        changed = store.changes_in_iteration(1)
    assert sum(map(sum, held_out["confusion"])) == 200  # every gold row, by the fold models' held-out view
    labels = np.array([before[v[0]] for v in votes])
    predicted, confidence = np.array([v[1] for v in votes]), np.array([v[2] for v in votes])
    expected = noise_budget.estimate_with_gold(labels, predicted, confidence, held_out["confusion"], share=0.8)
    assert noise["method"] == "gold" and noise["joint"] == [list(r) for r in expected.joint]
    assert noise["budget"] == {str(j): expected.budget[j] for j in (0, 1)}
    assert sum(expected.budget.values()) > 0
    offsets = {int(k): v for k, v in record["class_offsets"].items()}
    thresholds = noise_budget.flip_thresholds(expected, 0.5, offsets)  # floor 0: a majority, plus the offsets
    assert record["flip_thresholds"] == {str(j): thresholds[j] for j in (0, 1)}
    eligible = sum(int(((labels != j) & (predicted == j) & (confidence >= thresholds[j])).sum()) for j in (0, 1))
    assert changed == eligible > 0
