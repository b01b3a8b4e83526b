"""The budget rule in the loop: flips per class within the confident joint's estimate, fixed at predict, resumable.

Runs the real command line on 600 train rows with 20% injected noise + 200 gold rows, the lexicon
alone (cross-fitted, so its train predictions are out-of-fold, as the rule needs).
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml
from store_checks import LEXICON_ONLY_CONFIG
from typer.testing import CliRunner

from sentirefine.cli import app
from sentirefine.data.store import Store
from sentirefine.pipeline import noise_budget

runner = CliRunner()


def _config(tmp: Path, **budget) -> Path:
    path = tmp / "budget.yaml"
    refine = {**LEXICON_ONLY_CONFIG["refine"], "rule": "budget", "budget": budget}
    path.write_text(yaml.safe_dump({**LEXICON_ONLY_CONFIG, "refine": refine}))
    return path


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory, tiny_corpus) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("budget")
    config, workspace = _config(root), root / "ws"
    train, gold = tiny_corpus
    for args in (("import", str(train), "--gold", str(gold), "--inject-noise", "0.2", "--noise-seed", "1"),
                 ("bootstrap",)):
        result = runner.invoke(app, ["-c", str(config), "--workspace", str(workspace), *args])
        assert result.exit_code == 0, result.output
    return config, workspace


def _copy(bootstrapped, tmp_path: Path, name: str) -> Path:
    shutil.copytree(bootstrapped[1], tmp_path / name)
    return tmp_path / name


def test_iteration_flips_within_the_budget_the_predict_stage_fixed(bootstrapped, tmp_path):
    config, _ = bootstrapped
    workspace = _copy(bootstrapped, tmp_path, "ws")
    with Store(workspace / "sentences.db") as store:
        before = dict(store.conn.execute("SELECT sid, current_label FROM sentences WHERE split='train'"))
    result = runner.invoke(app, ["-c", str(config), "--workspace", str(workspace), "refine", "--max-iterations", "1"])
    assert result.exit_code == 0, result.output
    with Store(workspace / "sentences.db") as store:
        metrics = next(it["metrics"] for it in store.iterations() if it["iteration"] == 1)
        votes = store.conn.execute("SELECT sid, p_positive, predicted, confidence FROM predictions "
                                   "WHERE iteration=1 ORDER BY sid").fetchall()
        changed = dict(store.conn.execute("SELECT sid, new_label FROM label_history WHERE iteration=1"))
    sids = np.array([v[0] for v in votes])
    labels = np.array([before[s] for s in sids])
    p, predicted, confidence = (np.array([v[i] for v in votes]) for i in (1, 2, 3))
    # the recorded plan is the estimate of these very predictions under iteration 1's share and floor
    estimate = noise_budget.estimate(labels, p, predicted.astype(int), confidence, share=0.8)  # the default
    assert metrics["noise"]["budget"] == {str(j): estimate.budget[j] for j in (0, 1)}
    thresholds = {int(k): v for k, v in metrics["flip_thresholds"].items()}
    assert thresholds == noise_budget.flip_thresholds(estimate, 0.5, {})
    assert sum(estimate.budget.values()) > 0
    for j in (0, 1):
        to_j = [s for s, label in changed.items() if label == j]
        eligible = sids[(labels != j) & (predicted == j) & (confidence >= thresholds[j])]
        assert sorted(to_j) == sorted(eligible.tolist())  # exactly the rows inside the budget (ties included)
        assert len(to_j) >= estimate.budget[j]


def test_a_higher_floor_flips_fewer(bootstrapped, tmp_path):
    counts = []
    for floor in (0.0, 1.0):
        workspace = _copy(bootstrapped, tmp_path, f"ws{floor}")
        config = _config(tmp_path, floor=floor)
        result = runner.invoke(app, ["-c", str(config), "--workspace", str(workspace), "refine",
                                     "--max-iterations", "1"])
        assert result.exit_code == 0, result.output
        with Store(workspace / "sentences.db") as store:
            counts.append(store.changes_in_iteration(1))
            metrics = next(it["metrics"] for it in store.iterations() if it["iteration"] == 1)
        assert all(v >= 0.5 + floor * 0.1 - 1e-9 for v in metrics["flip_thresholds"].values())
    assert counts[1] < counts[0]


def test_sigkill_inside_correct_resumes_to_the_same_labels(bootstrapped, tmp_path, cli):
    config, _ = bootstrapped
    reference = _copy(bootstrapped, tmp_path, "reference")
    cli("-c", str(config), "--workspace", str(reference), "refine", "--max-iterations", "1")
    killed = _copy(bootstrapped, tmp_path, "killed")
    args = ("-c", str(config), "--workspace", str(killed), "refine", "--max-iterations", "1")
    proc = cli(*args, env={"SENTIREFINE_KILL_AT": "correct_chunk:2"}, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    cli(*args)
    assert _outcome(killed) == _outcome(reference)
    assert _outcome(killed)[1]  # the iteration did change labels, so the resume had work to get right


def _outcome(workspace: Path) -> tuple[list, list, list]:
    """Labels, live label changes and queue entries: what the correct stage decides (no timestamps)."""
    with Store(workspace / "sentences.db") as store:
        return tuple(store.conn.execute(sql).fetchall() for sql in (
            "SELECT sid, current_label, frozen, label_source FROM sentences ORDER BY sid",
            "SELECT sid, iteration, old_label, new_label, confidence, source FROM label_history "
            "WHERE undone_by IS NULL ORDER BY sid, iteration",
            "SELECT sid, reason, status FROM review_queue ORDER BY sid, reason"))
