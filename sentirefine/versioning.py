"""DVC: a versioned, tagged snapshot of the labels after every iteration.

The workspace is a git repository with DVC initialised (``sentirefine`` sets it up on first
use: analytics off, DVC's site cache inside the workspace, so nothing is written elsewhere).
After each iteration the ``sentences`` table is exported to ``snapshots/sentences.parquet``
(streamed chunk by chunk, rows in ``sid`` order, so the same labels give the same file),
``dvc add``-ed, committed and tagged ``data-iter-NNN``; the tag is logged to MLflow with the
iteration's models. The file path stays the same across iterations: DVC versions it through
git history, and ``dvc.api`` reads any tag back.

Python API vs CLI: ``dvc.repo.Repo`` (add, push) is 5-10x faster than spawning ``dvc`` for
each call, and ``dvc.api.open`` is DVC's documented read API; git itself is driven through its
CLI, whose interface is the stable one.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from sentirefine.config import Config
from sentirefine.errors import SentirefineError
from sentirefine.faults import crash_point
from sentirefine.logs import log_event
from sentirefine.store import Store

log = logging.getLogger(__name__)

os.environ.setdefault("DVC_NO_ANALYTICS", "1")

SNAPSHOT = Path("snapshots") / "sentences.parquet"
COLUMNS = ("id", "text", "original_label", "current_label", "label_source", "confidence", "split")
_IGNORED = ["*.db", "*.db-wal", "*.db-shm", "models/", "mlartifacts/", "rejects/", "dvc-remote/",
            ".sentirefine.lock", ".sentirefine.owner", "*.tmp/", "*.old/", "pretrained/", "pretrained-work/"]


class VersioningError(SentirefineError):
    """The workspace's git/DVC repository is missing, broken, or lacks what was asked for."""

    exit_code = 8


def _git(workspace: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", "-C", str(workspace), *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise VersioningError(f"git {' '.join(args)} failed in {workspace}: {proc.stderr.strip()}")
    return proc


def _quiet_dvc() -> None:
    """Silence DVC's console hints ("to track the changes with git, run ..."): we run git ourselves."""
    from dvc.ui import ui

    ui._enabled = False
    logging.getLogger("dvc").setLevel(logging.WARNING)  # DVC logs its hints at INFO to its own handler


def remote_dir(config: Config) -> Path:
    remote = config.versioning.remote
    return Path(remote) if remote else config.workspace / "dvc-remote"


def ensure_repo(config: Config) -> None:
    """Make the workspace a git + DVC repository if it is not one yet (idempotent)."""
    ws = config.workspace.resolve()
    ws.mkdir(parents=True, exist_ok=True)
    if not (ws / ".git").exists():
        _git(ws, "init", "-q")
    if not _git(ws, "config", "user.email", check=False).stdout.strip():
        _git(ws, "config", "user.email", "sentirefine@localhost")
        _git(ws, "config", "user.name", "sentirefine")
    gitignore = ws / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text("\n".join(_IGNORED) + "\n", encoding="utf-8")
    if not (ws / ".dvc").exists():
        from dvc.repo import Repo

        _quiet_dvc()
        Repo.init(str(ws))
        with Repo(str(ws)) as repo, repo.config.edit() as conf:
            conf["core"]["analytics"] = False
            conf["core"]["site_cache_dir"] = str(ws / ".dvc" / "site-cache")
            remote = remote_dir(config).resolve()
            conf["remote"]["storage"] = {"url": str(remote)}
            conf["core"]["remote"] = "storage"
        _git(ws, "add", ".gitignore", ".dvc/config", ".dvc/.gitignore", ".dvcignore")
        _git(ws, "commit", "-q", "-m", "sentirefine workspace: git + DVC initialised")
        log_event(log, "workspace_repo_initialised", workspace=str(ws), remote=str(remote_dir(config)))


def tag_name(config: Config, iteration: int) -> str:
    return f"{config.versioning.tag_prefix}{iteration:03d}"


def export_parquet(store: Store, path: Path, chunk_size: int) -> int:
    """Stream the sentences table into Parquet, ``chunk_size`` rows at a time; returns rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("original_label", pa.int8()),
                        ("current_label", pa.int8()), ("label_source", pa.string()),
                        ("confidence", pa.float64()), ("split", pa.string())])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    rows, last = 0, 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            while True:
                batch = store.conn.execute(
                    f"SELECT sid, {', '.join(COLUMNS)} FROM sentences WHERE sid > ? ORDER BY sid LIMIT ?",
                    (last, chunk_size),
                ).fetchall()
                if not batch:
                    break
                columns = list(zip(*[r[1:] for r in batch], strict=True))
                writer.write_table(pa.table(dict(zip(COLUMNS, columns, strict=True)), schema=schema))
                rows += len(batch)
                last = batch[-1][0]
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written export (disk full) must not take space or be mistaken
        raise
    tmp.replace(path)
    return rows


def snapshot(config: Config, store: Store, iteration: int, chunk_size: int) -> dict[str, Any]:
    """Export, ``dvc add``, commit, tag (and push): the labels after ``iteration``. Idempotent.

    A full disk (or any I/O failure) while exporting, caching or pushing becomes a
    :class:`VersioningError` (exit 8): the store is only read here, the half-written export is a
    ``.tmp`` file, earlier tags are untouched, and the stage reruns on the next ``refine``.
    """
    from dvc.exceptions import DvcException

    try:
        return _snapshot(config, store, iteration, chunk_size)
    except (OSError, DvcException) as exc:
        full = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left" in str(exc)
        raise VersioningError(
            f"snapshot of iteration {iteration} failed in {config.workspace.resolve()}"
            f"{' (disk full)' if full else ''}: {type(exc).__name__}: {exc}",
            hint="free space (workspace, its .dvc/cache and the DVC remote), then run `sentirefine refine` "
                 "again: it resumes at the snapshot" if full else
                 "check the workspace and the DVC remote, then run `sentirefine refine` again to resume",
        ) from exc


def _snapshot(config: Config, store: Store, iteration: int, chunk_size: int) -> dict[str, Any]:
    from dvc.repo import Repo

    _quiet_dvc()

    ws = config.workspace.resolve()
    ensure_repo(config)
    tag = tag_name(config, iteration)
    if _git(ws, "rev-parse", "-q", "--verify", f"refs/tags/{tag}", check=False).returncode == 0:
        # Tagged by an attempt that died before the stage was recorded: it may not have pushed.
        return {"tag": tag, "reused": True, "pushed": _push(config, ws)}
    rows = export_parquet(store, ws / SNAPSHOT, chunk_size)
    crash_point("snapshot_after_export")
    with Repo(str(ws)) as repo:
        repo.scm_context.quiet = True  # no "to track the changes with git, run ..." hint: we commit below
        repo.add([str(ws / SNAPSHOT)])
    crash_point("snapshot_after_dvc_add")
    _git(ws, "add", f"{SNAPSHOT}.dvc", str(SNAPSHOT.parent / ".gitignore"))
    if _git(ws, "diff", "--cached", "--quiet", check=False).returncode != 0:
        _git(ws, "commit", "-q", "-m", f"data: labels after iteration {iteration}")
    crash_point("snapshot_before_tag")
    _git(ws, "tag", tag)
    crash_point("snapshot_after_tag")
    pushed = _push(config, ws)
    log_event(log, "snapshot_done", iteration=iteration, tag=tag, rows=rows, pushed=pushed)
    return {"tag": tag, "rows": rows, "pushed": pushed}


def _push(config: Config, ws: Path) -> bool:
    """Push the snapshot to the remote if configured (idempotent: DVC skips what is there)."""
    if not config.versioning.push:
        return False
    from dvc.repo import Repo

    with Repo(str(ws)) as repo:
        repo.push([str(ws / SNAPSHOT)])
    crash_point("snapshot_after_push")
    return True


def read_snapshot(config: Config, rev: str) -> Any:
    """The snapshot at ``rev`` (a tag such as ``data-iter-002``) as a pandas DataFrame."""
    import io

    import dvc.api
    import pandas as pd

    ws = config.workspace.resolve()
    if not (ws / ".git").exists() or not (ws / ".dvc").exists():
        raise VersioningError(f"{ws} is not a git + DVC workspace",
                              hint="run `sentirefine refine` (it initialises the repository) or check --workspace")
    if _git(ws, "rev-parse", "-q", "--verify", f"{rev}^{{commit}}", check=False).returncode != 0:
        tags = _git(ws, "tag", "--list", f"{config.versioning.tag_prefix}*").stdout.split()
        raise VersioningError(f"no revision {rev!r} in {ws}", hint=f"known tags: {', '.join(tags) or 'none'}")
    try:
        with dvc.api.open(str(SNAPSHOT), repo=str(ws), rev=rev, mode="rb") as handle:
            return pd.read_parquet(io.BytesIO(handle.read()))
    except Exception as exc:  # DVC reports a missing remote copy as PathMissingError
        raise VersioningError(
            f"snapshot {SNAPSHOT} at {rev} cannot be read from the DVC cache or remote {remote_dir(config)}: {exc}",
            hint="No storage files available? run `dvc pull` in the workspace or configure versioning.remote",
        ) from exc


def restore(config: Config, store: Store, rev: str) -> int:
    """Load the train labels of snapshot ``rev`` back into the store; returns rows changed.

    Recorded in history (source ``restore``, iteration = the latest one) like any label write.
    """
    from sentirefine.store import LabelChange

    frame = read_snapshot(config, rev)
    wanted = dict(zip(frame["id"], frame["current_label"].astype(int), strict=True))
    iteration = max([it["iteration"] for it in store.iterations()] or [0])
    changed = 0
    for rows in store.iter_chunks("train", 50_000):
        changes = [LabelChange(r.sid, r.current_label, wanted[r.id], None)
                   for r in rows if r.id in wanted and wanted[r.id] != r.current_label]
        changed += store.apply_labels(changes, iteration=iteration, source="restore")
    log_event(log, "snapshot_restored", rev=rev, changed=changed)
    return changed
