"""files/atomic.py: a file or directory is replaced whole or not at all."""

from __future__ import annotations

import pytest

from sentirefine.files.atomic import atomic_directory, atomic_write


def test_directory_swap_keeps_the_old_one_on_error(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:
        (tmp / "w").write_text("v1")
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "w").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (target / "w").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_kill_between_the_renames_leaves_the_old_version_until_a_new_one_is_in(tmp_path):
    target, old = tmp_path / "ckpt", tmp_path / "ckpt.old"
    old.mkdir()
    (old / "w").write_text("v1")  # as a kill after `ckpt -> ckpt.old` and before `ckpt.tmp -> ckpt` leaves it
    with atomic_directory(target) as tmp:
        assert (old / "w").read_text() == "v1"  # still there while the new version is written
        (tmp / "w").write_text("v2")
    assert (target / "w").read_text() == "v2" and not old.exists()


def test_file_write_is_all_or_nothing(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("old")
    with pytest.raises(ValueError), atomic_write(path) as out:
        out.write("new, half")
        raise ValueError
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
