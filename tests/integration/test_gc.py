"""`sentirefine gc --keep N`: unserved, old checkpoints and registered versions go; nothing else does."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest
import yaml

from sentirefine.data.store import Store
from sentirefine.integrations.model_bundle import local_dir

pytestmark = pytest.mark.integration


def _state(ws):
    with Store(ws / "sentences.db") as store:
        history = store.conn.execute("SELECT count(*), sum(new_label) FROM label_history").fetchone()
        labels = store.conn.execute("SELECT sum(current_label), count(*) FROM sentences").fetchone()
        metrics = [it["metrics"] for it in store.iterations()]
    tags = subprocess.run(["git", "-C", str(ws), "tag"], capture_output=True, text=True).stdout.split()
    return history, labels, metrics, tags


def _versions(ws):
    import mlflow

    uri = f"sqlite:///{ws / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, uri)
    out = {}
    for name in ("sentirefine-ensemble", "sentirefine-lexicon"):
        aliased = set()
        for alias in ("production", "staging"):
            with contextlib.suppress(Exception):  # no such alias
                aliased.add(int(client.get_model_version_by_alias(name, alias).tags["iteration"]))
        versions = client.search_model_versions(f"name='{name}'")
        out[name] = ({int(v.tags["iteration"]) for v in versions}, aliased,
                     {int(v.tags["iteration"]): v.source for v in versions})
    return out


def _lexicon_workspace(tmp_path):
    """A workspace of the tiny config with the lexicon as its only member, and its config file."""
    from tiny_config import TINY_CONFIG

    ws = tmp_path / "ws"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**TINY_CONFIG, "workspace": str(ws),
                                      "models": {**TINY_CONFIG["models"], "order": ["lexicon"]}}))
    return ws, config


def _assert_checkpoints_stored_once(ws, registry):
    """The ensemble version and a member version of one iteration share one copy of the checkpoint."""
    iterations = registry["sentirefine-ensemble"][0]
    member_iterations = registry["sentirefine-lexicon"][0]
    assert member_iterations
    for iteration in member_iterations:
        ensemble = local_dir(registry["sentirefine-ensemble"][2][iteration])
        member = local_dir(registry["sentirefine-lexicon"][2][iteration])
        assert member.parent.parent == ensemble and (member / "MLmodel").is_file()
    checkpoint_files = {p.name for p in (ws / "models" / "iter-001" / "lexicon").rglob("*") if p.is_file()}
    stored = [p for p in (ws / "mlartifacts").rglob("*") if p.is_file() and p.name in checkpoint_files]
    assert len(stored) == len(checkpoint_files) * len(iterations), sorted(map(str, stored))


def test_gc_keeps_the_served_and_the_newest_and_removes_the_rest(tiny_corpus, tmp_path, cli):
    ws, config = _lexicon_workspace(tmp_path)
    train, gold = tiny_corpus
    cli("-c", str(config), "import", str(train), "--gold", str(gold), "--inject-noise", "0.2", "--noise-seed", "3")
    cli("-c", str(config), "refine", "--max-iterations", "3", "--ignore-convergence")
    before, registry = _state(ws), _versions(ws)
    served = registry["sentirefine-ensemble"][1] | registry["sentirefine-lexicon"][1]
    keep = {3} | served
    assert {0, 1, 2, 3} == registry["sentirefine-ensemble"][0]
    _assert_checkpoints_stored_once(ws, registry)

    dry = cli("-c", str(config), "gc", "--keep", "1", "--dry-run")
    assert f"keeping iterations {sorted(keep)}" in dry.stdout
    assert all((ws / "models" / f"iter-{i:03d}").is_dir() for i in range(4))

    # killed after the first version's deletion: the same command finishes the job
    killed = cli("-c", str(config), "gc", "--keep", "1", env={"SENTIREFINE_KILL_AT": "gc_after_version"}, check=False)
    assert killed.returncode == -9
    cli("-c", str(config), "gc", "--keep", "1")

    assert {i for i in range(4) if (ws / "models" / f"iter-{i:03d}").is_dir()} == keep
    assert not list((ws / "models").glob("*.gc.tmp"))
    after = _versions(ws)
    for name, (iterations, aliased, _) in after.items():
        assert iterations == registry[name][0] & keep and aliased == registry[name][1]
        for iteration, source in registry[name][2].items():  # removed versions' artifact files are gone
            assert (iteration in keep) == local_dir(source).exists()
    assert _state(ws) == before  # labels, history, iteration metrics, DVC tags: untouched

    # the production model still serves, the loop still continues, a removed iteration cannot be rolled back to
    code = ("import mlflow, pandas as pd, sys; mlflow.set_tracking_uri(sys.argv[1]); "
            "print(mlflow.pyfunc.load_model('models:/sentirefine-ensemble@production')"
            ".predict(pd.DataFrame({'text': ['좋다', '별로']})).shape)")
    served_model = subprocess.run([sys.executable, "-c", code, f"sqlite:///{ws / 'mlflow.db'}"],
                                  capture_output=True, text=True, timeout=300)
    assert served_model.returncode == 0 and "(2, 3)" in served_model.stdout, served_model.stderr[-2000:]
    assert set(range(4)) - keep, f"every iteration is served or newest ({keep}): nothing to remove"
    gone = min(set(range(4)) - keep)
    refused = cli("-c", str(config), "rollback", "--to-iteration", str(gone), check=False)
    assert refused.returncode == 2 and "checkpoints were removed" in refused.stderr and "hint:" in refused.stderr
    cli("-c", str(config), "refine", "--max-iterations", "4", "--ignore-convergence")
    assert (ws / "models" / "iter-004").is_dir()
