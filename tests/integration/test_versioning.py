"""DVC snapshots on a real git + DVC repository: tags per iteration, read back, restore, clone."""

from __future__ import annotations

import subprocess

import pytest

from sentirefine.config import load_config
from sentirefine.data.store import LabelChange, Store
from sentirefine.integrations.versioning import VersioningError, read_snapshot, snapshot

pytestmark = pytest.mark.integration


@pytest.fixture
def workspace(tmp_path):
    config = load_config(overrides={"workspace": str(tmp_path / "ws")})
    store = Store(config.db_file, create=True)
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO sentences (id, text, original_label, current_label, split) VALUES (?, ?, ?, ?, ?)",
            [(f"r{i}", f"리뷰 {i}", i % 2, i % 2, "train" if i < 40 else "gold") for i in range(50)],
        )
    yield config, store
    store.close()


def _flip(store, sids, iteration):
    rows = store.conn.execute(f"SELECT sid, current_label FROM sentences WHERE sid IN ({','.join('?' * len(sids))})",
                              sids).fetchall()
    store.apply_labels([LabelChange(s, lab, 1 - lab, 0.9) for s, lab in rows], iteration=iteration, source="ensemble")


def _labels(store):
    return dict(store.conn.execute("SELECT id, current_label FROM sentences"))


def test_three_iterations_three_tags_read_back_restore_and_clone(workspace, cli, tmp_path):
    config, store = workspace
    expected = {}
    for iteration, sids in ((1, [1, 2, 3]), (2, [4, 5]), (3, [1, 6])):
        _flip(store, sids, iteration)
        info = snapshot(config, store, iteration, chunk_size=7)  # several chunks per export
        assert info["tag"] == f"data-iter-{iteration:03d}" and info["rows"] == 50 and info["pushed"]
        expected[iteration] = _labels(store)
    # idempotent: a replay after a crash finds the tag and only repeats the (no-op) push
    again = snapshot(config, store, 3, chunk_size=7)
    assert {k: again[k] for k in ("tag", "reused", "pushed", "rows")} == {
        "tag": "data-iter-003", "reused": True, "pushed": True, "rows": 50}
    assert len(again["md5"]) == 32  # the digest DVC recorded: the MLflow dataset input's
    tags = subprocess.run(["git", "-C", str(config.workspace), "tag"], capture_output=True, text=True).stdout.split()
    assert tags == ["data-iter-001", "data-iter-002", "data-iter-003"]
    for iteration in (1, 2, 3):
        frame = read_snapshot(config, f"data-iter-{iteration:03d}")
        assert dict(zip(frame["id"], frame["current_label"], strict=True)) == expected[iteration]
        assert list(frame.columns) == ["id", "text", "original_label", "current_label", "label_source",
                                       "confidence", "split"]
    store.close()
    out = cli("--workspace", str(config.workspace), "dataset", "restore", "--rev", "data-iter-001")
    assert "4 rows changed" in out.stdout  # rows 4, 5, 6 and (back again) 1 moved after iteration 1
    with Store(config.db_file) as reopened:
        assert _labels(reopened) == expected[1]
        assert reopened.history_is_consistent()
        assert reopened.conn.execute("SELECT count(*) FROM label_history WHERE source='restore'").fetchone()[0] == 4
    shown = cli("--workspace", str(config.workspace), "dataset", "show", "--rev", "data-iter-002",
                "--diff", "data-iter-003")
    assert "50 rows" in shown.stdout and "2 labels differ" in shown.stdout
    # a fresh clone of the workspace repository plus the remote reads rev 1
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(config.workspace), str(clone)], check=True)
    clone_config = load_config(overrides={"workspace": str(clone)})
    frame = read_snapshot(clone_config, "data-iter-001")
    assert dict(zip(frame["id"], frame["current_label"], strict=True)) == expected[1]


def test_unknown_tag_and_missing_repo_are_clear_errors(workspace, tmp_path):
    config, store = workspace
    snapshot(config, store, 1, chunk_size=100)
    with pytest.raises(VersioningError, match="no revision 'data-iter-009'") as info:
        read_snapshot(config, "data-iter-009")
    assert "data-iter-001" in info.value.hint
    with pytest.raises(VersioningError, match="not a git \\+ DVC workspace"):
        read_snapshot(load_config(overrides={"workspace": str(tmp_path / "nowhere")}), "data-iter-001")


def test_a_tag_made_before_a_rollback_is_superseded_when_the_rerun_differs(workspace):
    """Re-running iteration 1 after a rollback with other results must not leave its tag on the old labels."""
    config, store = workspace
    snapshot(config, store, 0, 100)
    _flip(store, [1, 2], 1)
    first = snapshot(config, store, 1, 100)
    assert not first.get("reused")
    assert snapshot(config, store, 1, 100)["reused"]  # same labels (a crash-resumed stage): the tag is reused
    store.rollback(0)
    _flip(store, [3], 1)  # the re-run of iteration 1 corrects another row
    again = snapshot(config, store, 1, 100)
    assert not again.get("reused")
    assert dict(zip(*(read_snapshot(config, "data-iter-001")[c] for c in ("id", "current_label")), strict=True)) \
        == _labels(store)
    old = read_snapshot(config, "data-iter-001-superseded-1")
    assert int(old.loc[old["id"] == "r0", "current_label"].iloc[0]) == 1  # sid 1 = r0, flipped in the first run
