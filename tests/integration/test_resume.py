"""SIGKILL the loop mid-stage, resume, and get exactly the labels of an uninterrupted run."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from sentirefine.store import Store

pytestmark = pytest.mark.integration


def _state(workspace):
    with Store(workspace / "sentences.db") as store:
        assert store.history_is_consistent()
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        labels = store.conn.execute("SELECT sid, current_label, frozen FROM sentences ORDER BY sid").fetchall()
        history = store.conn.execute(
            "SELECT sid, iteration, old_label, new_label, source FROM label_history ORDER BY sid, iteration"
        ).fetchall()
    return labels, history


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_corpus, cli):
    """A bootstrapped workspace (iteration 0) and the state after an uninterrupted iteration 1."""
    from conftest import TINY_CONFIG

    root = tmp_path_factory.mktemp("resume")
    config = root / "config.yaml"
    # Three members in-process keep each of the many runs short; the stages and their
    # bookkeeping are the same for any member list and pool size.
    settings = {**TINY_CONFIG, "workspace": str(root / "boot"), "ensemble": {"workers": 0},
                "models": {**TINY_CONFIG["models"], "order": ["lexicon", "lstm", "bilstm"]}}
    config.write_text(yaml.safe_dump(settings))
    train, gold = tiny_corpus
    cli("-c", str(config), "import", str(train), "--gold", str(gold), "--inject-noise", "0.2", "--noise-seed", "1")
    cli("-c", str(config), "bootstrap")
    shutil.copytree(root / "boot", root / "ref")
    cli("-c", str(config), "--workspace", str(root / "ref"), "refine", "--max-iterations", "1")
    return config, root / "boot", _state(root / "ref")


@pytest.mark.parametrize("point", ["predict_chunk:2", "correct_chunk:2", "train:bilstm_before_save",
                                   "snapshot_before_tag", "track_before_register"])
def test_sigkill_then_resume_gives_same_labels(reference, cli, tmp_path, point):
    config, boot, expected = reference
    workspace = tmp_path / "ws"
    shutil.copytree(boot, workspace)
    args = ("-c", str(config), "--workspace", str(workspace), "refine", "--max-iterations", "1")
    killed = cli(*args, env={"SENTIREFINE_KILL_AT": point}, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    cli(*args)
    assert _state(workspace) == expected
    _check_registry(workspace)
    tags = subprocess.run(["git", "-C", str(workspace), "tag"], capture_output=True, text=True).stdout.split()
    assert tags == ["data-iter-000", "data-iter-001"]


def _check_registry(workspace):
    """One live run and one ensemble version per iteration, whatever the attempt that died did."""
    import mlflow

    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)  # explicit: other tests set a global registry
    versions = client.search_model_versions("name='sentirefine-ensemble'")
    assert sorted(v.tags["iteration"] for v in versions) == ["0", "1"]
    experiment = client.get_experiment_by_name("sentirefine")
    names = [r.info.run_name for r in client.search_runs([experiment.experiment_id])]
    assert sorted(n for n in names if n.startswith("iteration")) == ["iteration-000", "iteration-001"]
