"""A full disk during the DVC snapshot: a clear error (exit 8), the store and earlier snapshots
intact, and the snapshot completes once space is back.

Two ways to fill the disk: a real, tiny tmpfs as the DVC remote (needs permission to mount;
skipped otherwise), and ``OSError(ENOSPC)`` raised where the Parquet export writes (always).
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pytest

from sentirefine.config import load_config
from sentirefine.data.ingest import import_file
from sentirefine.data.store import LabelChange, Store
from sentirefine.integrations.versioning import SNAPSHOT, VersioningError, snapshot

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def _tags(workspace: Path) -> list[str]:
    return subprocess.run(["git", "-C", str(workspace), "tag"], capture_output=True, text=True).stdout.split()


def _content(store: Store) -> list[tuple]:
    return store.conn.execute("SELECT * FROM sentences ORDER BY sid").fetchall() + \
        store.conn.execute("SELECT * FROM label_history ORDER BY hid").fetchall()


@pytest.fixture
def workspace(tmp_path, tiny_corpus):
    train, _ = tiny_corpus
    ws = tmp_path / "ws"
    store = Store(ws / "sentences.db", create=True)
    import_file(store, train, split="train", rejects_dir=ws / "rejects")
    yield ws, store
    store.close()


def _relabel_one(store: Store) -> None:
    sid, label = store.conn.execute("SELECT sid, current_label FROM sentences ORDER BY sid LIMIT 1").fetchone()
    store.apply_labels([LabelChange(sid, label, 1 - label, 0.9)], iteration=1, source="ensemble")


def test_enospc_while_exporting(workspace, monkeypatch):
    import pyarrow.parquet as pq

    ws, store = workspace
    config = load_config(overrides={"workspace": str(ws), "versioning": {"push": False}})
    assert snapshot(config, store, 0, 200)["tag"] == "data-iter-000"
    committed = (ws / f"{SNAPSHOT}.dvc").read_text()
    _relabel_one(store)
    before = _content(store)

    def full(self, table, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    with pytest.raises(VersioningError, match=r"iteration 1 .*\(disk full\)") as info:
        snapshot(config, store, 1, 200)
    assert info.value.exit_code == 8 and "free space" in info.value.hint
    assert _content(store) == before and store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert _tags(ws) == ["data-iter-000"] and (ws / f"{SNAPSHOT}.dvc").read_text() == committed
    assert not list((ws / SNAPSHOT.parent).glob("*.tmp"))  # no half-written export left behind

    monkeypatch.undo()  # space is back: the same call completes
    assert snapshot(config, store, 1, 200)["tag"] == "data-iter-001"
    assert _tags(ws) == ["data-iter-000", "data-iter-001"]


def test_full_remote_filesystem(workspace, tmp_path):
    """A real full filesystem: the DVC remote on a 512 KiB tmpfs filled to the last byte."""
    ws, store = workspace
    remote = tmp_path / "remote"
    remote.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(remote)],
                      capture_output=True).returncode != 0:
        pytest.skip("no permission to mount a tmpfs here (the ENOSPC injection test covers the code path)")
    try:
        filler = remote / "filler"
        with open(filler, "wb") as handle, pytest.raises(OSError):
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        config = load_config(overrides={"workspace": str(ws), "versioning": {"push": True, "remote": str(remote)}})
        before = _content(store)
        with pytest.raises(VersioningError, match="snapshot of iteration 0") as info:
            snapshot(config, store, 0, 200)
        assert info.value.exit_code == 8
        assert _content(store) == before
        filler.unlink()  # space is back: the resumed stage pushes the snapshot it had tagged
        result = snapshot(config, store, 0, 200)
        assert result["tag"] == "data-iter-000" and result["pushed"] is True
        assert any(p.is_file() for p in (remote / "files").rglob("*"))
    finally:
        subprocess.run(["umount", str(remote)], check=False)
        shutil.rmtree(remote, ignore_errors=True)
