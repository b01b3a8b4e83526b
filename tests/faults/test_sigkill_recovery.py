"""A real SIGKILL inside `rollback` and `dataset restore`: the old state, then the whole operation on a rerun.

Each command is one transaction (labels, history, bookkeeping, the ``operations`` record), so a
kill after any chunk or just before the commit must leave the store byte-for-byte as it was (all
tables compared), `status` must run, and the same command run again must do all of it, with a
history that replays to every label (in full and in its live lineage).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from store_checks import LEXICON_ONLY_CONFIG, store_digest

from sentirefine.config import load_config
from sentirefine.data.store import LabelChange, Store
from sentirefine.integrations.versioning import snapshot

pytestmark = [pytest.mark.faults, pytest.mark.integration]

CONFIG = LEXICON_ONLY_CONFIG  # 600 train rows in chunks of 100: six chunks per rollback/restore
TABLES = ("sentences", "label_history", "review_queue", "iterations", "stages", "predictions", "operations",
          "reference_labels")


def digest(workspace: Path) -> str:
    return store_digest(workspace, TABLES)


def _workspace(tmp_path: Path, tiny_corpus, cli, **settings) -> tuple[Path, Path]:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, **settings, "workspace": str(tmp_path / "ws")}))
    train, gold = tiny_corpus
    cli("-c", str(config), "import", str(train), "--gold", str(gold), "--inject-noise", "0.2", "--noise-seed", "1")
    return config, tmp_path / "ws"


def _kill_then_check(cli, config: Path, workspace: Path, args: tuple[str, ...], points: tuple[str, ...]) -> None:
    """Each kill: died by SIGKILL, store unchanged and sound, `status` works."""
    before = digest(workspace)
    for point in points:
        run = cli("-c", str(config), *args, env={"SENTIREFINE_KILL_AT": point}, check=False)
        assert run.returncode == -9, f"{point}: {run.returncode}\n{run.stderr[-2000:]}"
        assert digest(workspace) == before, f"{point}: a killed {args[0]} left a partial write"
        with Store(workspace / "sentences.db") as store:
            assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert store.history_is_consistent() and store.history_is_consistent(live=True)
        assert cli("-c", str(config), "status").returncode == 0


def test_sigkill_inside_rollback_leaves_the_old_state_and_a_rerun_completes_it(tmp_path, tiny_corpus, cli):
    config, workspace = _workspace(tmp_path, tiny_corpus, cli)
    cli("-c", str(config), "refine", "--max-iterations", "2", "--ignore-convergence")
    with Store(workspace / "sentences.db") as store:
        original = dict(store.conn.execute("SELECT id, original_label FROM sentences"))
        assert dict(store.conn.execute("SELECT id, current_label FROM sentences")) != original
    args = ("rollback", "--to-iteration", "0")
    _kill_then_check(cli, config, workspace, args, ("rollback_chunk:2", "rollback_chunk:6", "rollback_before_commit"))
    out = cli("-c", str(config), *args)
    assert "rolled back to iteration 0" in out.stdout
    with Store(workspace / "sentences.db") as store:
        assert dict(store.conn.execute("SELECT id, current_label FROM sentences")) == original
        assert [it["iteration"] for it in store.iterations()] == [0]
        assert store.history_is_consistent() and store.history_is_consistent(live=True)
        assert store.conn.execute("SELECT count(*) FROM label_history WHERE undone_by IS NULL AND iteration > 0"
                                  ).fetchone()[0] == 0
        assert store.conn.execute("SELECT count(*) FROM operations").fetchone()[0] == 1  # the killed ones left none
    # and the loop continues from there
    cli("-c", str(config), "refine", "--max-iterations", "1")


def test_sigkill_inside_dataset_restore_leaves_the_old_state_and_a_rerun_completes_it(tmp_path, tiny_corpus, cli):
    config, workspace = _workspace(tmp_path, tiny_corpus, cli, versioning={"enabled": True, "push": False})
    cfg = load_config(config)
    with Store(cfg.db_file) as store:
        assert snapshot(cfg, store, 0, 100)["tag"] == "data-iter-000"
        tagged = dict(store.conn.execute("SELECT id, current_label FROM sentences"))
        rows = store.conn.execute("SELECT sid, current_label FROM sentences WHERE split='train' AND sid % 2 = 0")
        flips = [LabelChange(sid, label, 1 - label, 0.9) for sid, label in rows]
        assert store.apply_labels(flips, iteration=1, source="ensemble") == len(flips) == 300  # every chunk
    args = ("dataset", "restore", "--rev", "data-iter-000")
    _kill_then_check(cli, config, workspace, args, ("restore_chunk:2", "restore_chunk:6", "restore_before_commit"))
    out = cli("-c", str(config), *args)
    assert "300 rows changed" in out.stdout
    with Store(workspace / "sentences.db") as store:
        assert dict(store.conn.execute("SELECT id, current_label FROM sentences")) == tagged
        assert store.history_is_consistent() and store.history_is_consistent(live=True)
        assert store.conn.execute("SELECT count(*) FROM label_history WHERE source='ensemble' AND undone_by IS NULL"
                                  ).fetchone()[0] == 0  # the flips it reversed: kept, no longer counted
        assert store.flip_counts([c.sid for c in flips]) == {}
        assert store.last_operation()["command"] == "restore"
