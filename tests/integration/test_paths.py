"""Paths: a Hangul workspace and remote with spaces, any cwd, and half-made git/DVC setups that repair themselves.

The end-to-end test runs the real CLI from a directory that is itself a git + DVC repository with a
(broken) ``dvc.yaml``: DVC used to parse ``./dvc.yaml`` when pushing, and DVC 3.67 writes its config as
ASCII, which left ``.dvc/config`` empty in a Hangul workspace and made every later command exit 8.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_config import TINY_CONFIG

from sentirefine.config import load_config
from sentirefine.data.store import Store
from sentirefine.integrations.versioning import ensure_repo, read_snapshot, remote_dir, snapshot

pytestmark = pytest.mark.integration

DVC = [sys.executable, "-m", "dvc"]


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real CLI, started from ``cwd`` (not the repository root)."""
    proc = subprocess.run([sys.executable, "-m", "sentirefine", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "DVC_NO_ANALYTICS": "1", **(env or {})})
    assert proc.returncode == 0, f"sentirefine {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True).stdout


def _foreign_repo(root: Path) -> Path:
    """A git + DVC repository with a committed, unparseable dvc.yaml: the cwd the commands run from."""
    root.mkdir(parents=True)
    _git(root, "init", "-q")
    subprocess.run([*DVC, "init", "-q"], cwd=root, check=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    (root / "dvc.yaml").write_text("stages: [\n  broken", encoding="utf-8")
    _git(root, "add", "-A")
    _git(root, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "foreign")
    return root


def _state(root: Path) -> dict[str, object]:
    """Everything a command could change in a repository: files (outside .git), HEAD, refs, status."""
    files = {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
             for p in sorted(root.rglob("*")) if p.is_file() and ".git" not in p.relative_to(root).parts}
    return {"files": files, "head": _git(root, "rev-parse", "HEAD"), "refs": _git(root, "show-ref"),
            "status": _git(root, "status", "--porcelain", "--ignored")}


def test_hangul_workspace_and_remote_from_a_foreign_cwd(tmp_path, tiny_corpus):
    base = tmp_path / "작업 공간"
    ws, remote = base / "ws", base / "원격 저장소" / "dvc"
    cwd = _foreign_repo(tmp_path / "다른 저장소")
    before = _state(cwd)
    cfg = {**TINY_CONFIG, "workspace": str(ws), "models": {**TINY_CONFIG["models"], "order": ["lexicon", "lstm"]},
           "ensemble": {"workers": 0}, "refine": {**TINY_CONFIG["refine"], "max_iterations": 1},
           "versioning": {"remote": str(remote)}}
    config_file = base / "설정 파일.yaml"
    base.mkdir()
    config_file.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    train, gold = tiny_corpus
    hostile = {"GIT_DIR": str(cwd / ".git"), "GIT_WORK_TREE": str(cwd)}  # as exported by a git hook or CI step
    _run("-c", str(config_file), "init", cwd=cwd)
    _run("-c", str(config_file), "import", str(train), "--gold", str(gold), cwd=cwd)
    _run("-c", str(config_file), "bootstrap", cwd=cwd, env=hostile)
    _run("-c", str(config_file), "refine", cwd=cwd)
    assert _git(ws, "tag").split() == ["data-iter-000", "data-iter-001"]
    for tag in ("data-iter-000", "data-iter-001"):  # each tag's snapshot is in the Hangul remote
        md5 = yaml.safe_load(_git(ws, "show", f"{tag}:snapshots/sentences.parquet.dvc"))["outs"][0]["md5"]
        assert (remote / "files" / "md5" / md5[:2] / md5[2:]).is_file()
    assert _git(ws, "status", "--porcelain", "--", ".dvc", ".gitignore", ".dvcignore", "snapshots") == ""
    shown = _run("-c", str(config_file), "dataset", "show", "--rev", "data-iter-001", "--diff", "data-iter-000",
                 cwd=cwd)
    assert "data-iter-001: 800 rows" in shown.stdout
    restored = _run("-c", str(config_file), "dataset", "restore", "--rev", "data-iter-000", cwd=cwd)
    assert "rows changed" in restored.stdout
    for command in (["status"], ["rollback", "--to-iteration", "0"], ["report"]):
        _run("-c", str(config_file), *command, cwd=cwd)
    with Store(ws / "sentences.db") as store:
        assert store.history_is_consistent()
    assert (ws / "reports" / "report.html").is_file() and any((ws / "mlartifacts").rglob("metrics.json"))
    assert not [p for p in tmp_path.rglob("*%*")]  # no percent-encoded twin of a Hangul directory (MLflow URIs)
    assert _state(cwd) == before  # the cwd's repository: no file, commit, tag, index entry or DVC object added


@pytest.fixture
def nested(tmp_path):
    """A store in a Hangul workspace that sits inside another git repository (discovery must not climb)."""
    outer = tmp_path / "바깥 저장소"
    outer.mkdir()
    _git(outer, "init", "-q")
    _git(outer, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "outer")
    config = load_config(overrides={"workspace": str(outer / "작업 공간" / "ws")})
    store = Store(config.db_file, create=True)
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO sentences (id, text, original_label, current_label, split) VALUES (?, ?, ?, ?, ?)",
            [(f"r{i}", f"리뷰 {i}", i % 2, i % 2, "train" if i < 16 else "gold") for i in range(20)])
    yield config, store, outer
    store.close()


def _break(ws: Path, how: str) -> None:
    """The half-made states a crash or the ASCII-config bug left behind."""
    if how == "killed git init":
        (ws / ".git").mkdir()
        return
    _git(ws, "init", "-q")  # a repository without a commit
    (ws / ".dvc").mkdir()
    if how == "empty dvc config":  # what DVC's ASCII write left: the file truncated, nothing committed
        (ws / ".dvc" / "config").write_bytes(b"")
        (ws / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n", encoding="utf-8")
        (ws / ".dvcignore").write_text("# dvcignore\n", encoding="utf-8")
    elif how == "garbage dvc config":
        (ws / ".dvc" / "config").write_bytes(b"[core\n\xff\xfe not a config")


@pytest.mark.parametrize("how", ["killed git init", "killed dvc init", "empty dvc config", "garbage dvc config"])
def test_half_made_setup_repairs_itself(nested, how):
    config, store, outer = nested
    ws = config.workspace.resolve()
    outer_head = _git(outer, "rev-parse", "HEAD")
    _break(ws, how)
    info = snapshot(config, store, 1, chunk_size=7)
    assert info["tag"] == "data-iter-001" and info["pushed"] and info["rows"] == 20
    assert "url = " + str(ws / "dvc-remote") in (ws / ".dvc" / "config").read_text(encoding="utf-8")
    assert _git(ws, "log", "--format=%s").splitlines() == ["data: labels after iteration 1",
                                                          "sentirefine workspace: git + DVC set up"]
    assert _git(ws, "status", "--porcelain", "--", ".dvc", ".gitignore", ".dvcignore", "snapshots") == ""
    frame = read_snapshot(config, "data-iter-001")
    assert sorted(frame["id"]) == sorted(f"r{i}" for i in range(20))
    ensure_repo(config)  # a sound workspace: nothing rewritten, nothing committed
    assert len(_git(ws, "log", "--format=%s").splitlines()) == 2
    assert _git(outer, "rev-parse", "HEAD") == outer_head and _git(outer, "tag") == ""


def test_remote_is_a_url_or_under_the_workspace_never_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ws = tmp_path / "작업 공간" / "ws"
    for given, expected in ((None, ws / "dvc-remote"), ("원격", ws / "원격"), (str(tmp_path / "r 1"), tmp_path / "r 1"),
                            ("s3://bucket/작업/key", "s3://bucket/작업/key"), ("file:///srv/dvc", "file:///srv/dvc")):
        config = load_config(overrides={"workspace": str(ws), "versioning": {"remote": given}})
        assert remote_dir(config) == expected, given
    ensure_repo(load_config(overrides={"workspace": "작업 공간/ws", "versioning": {"remote": "원격"}}))
    assert f"url = {ws / '원격'}\n" in (ws / ".dvc" / "config").read_text(encoding="utf-8")
    assert not (tmp_path / "원격").exists() and not (tmp_path / ".git").exists()


def test_setup_change_staged_by_a_killed_command_is_committed_and_user_keys_kept(nested, tmp_path):
    config, _, outer = nested
    ws = config.workspace.resolve()
    ensure_repo(config)
    dvc_config = ws / ".dvc" / "config"
    dvc_config.write_text(dvc_config.read_text(encoding="utf-8") + "['remote \"내 원격\"']\nurl = /srv/내 원격\n",
                          encoding="utf-8")
    _git(ws, "add", ".dvc/config")  # killed before its commit
    ensure_repo(config)
    assert _git(ws, "status", "--porcelain", "--", ".dvc") == ""
    moved = load_config(overrides={"workspace": str(ws), "versioning": {"remote": str(tmp_path / "새 원격")}})
    ensure_repo(moved)  # versioning.remote changed: the storage remote follows, the user's own one stays
    text = dvc_config.read_text(encoding="utf-8")
    assert f"url = {tmp_path / '새 원격'}\n" in text and "url = /srv/내 원격\n" in text
    assert _git(ws, "log", "--format=%s").splitlines() == ["sentirefine workspace: git + DVC set up"] * 3
    assert _git(ws, "status", "--porcelain", "--", ".dvc") == "" and _git(outer, "tag") == ""
