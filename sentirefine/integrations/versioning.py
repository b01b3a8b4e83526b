"""DVC: a versioned, tagged snapshot of the labels after every iteration.

The workspace is a git repository with DVC initialised (``sentirefine`` sets it up on first
use: analytics off, DVC's site cache inside the workspace, so nothing is written elsewhere; a
half-made setup is finished by the next command). git and DVC always run on the workspace
(cwd and repository = the workspace), whatever directory the command was started from.
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

import contextlib
import errno
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sentirefine.config import Config
from sentirefine.data import store_queries as queries
from sentirefine.data.store import Store
from sentirefine.errors import SentirefineError
from sentirefine.faults import crash_point
from sentirefine.logs import log_event

log = logging.getLogger(__name__)

os.environ.setdefault("DVC_NO_ANALYTICS", "1")

SNAPSHOT = Path("snapshots") / "sentences.parquet"
COLUMNS = ("id", "text", "original_label", "current_label", "label_source", "confidence", "split")
_IGNORED = ["*.db", "*.db-wal", "*.db-shm", "models/", "mlartifacts/", "rejects/", "dvc-remote/",
            ".sentirefine.lock", ".sentirefine.owner", "*.tmp/", "*.old/", "pretrained/", "pretrained-work/",
            "logs/"]


class VersioningError(SentirefineError):
    """The workspace's git/DVC repository is missing, broken, or lacks what was asked for."""

    exit_code = 8


# Variables that make git use another repository, index or work tree than the one named: a parent process
# (a git hook, a CI step) may export them, and they would silently redirect every command below.
_GIT_LOCATION_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR",
                      "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_PREFIX", "GIT_CEILING_DIRECTORIES")
# What ``dvc init`` writes besides the config (DVC's on-disk format): rewritten when a killed init left them out.
_DVC_GITIGNORE = "/config.local\n/tmp\n/cache\n"
_DVCIGNORE = ("# Add patterns of files dvc should ignore, which could improve\n# the performance. Learn more at\n"
              "# https://dvc.org/doc/user-guide/dvcignore\n")
_SETUP_FILES = (".gitignore", ".dvc/config", ".dvc/.gitignore", ".dvcignore")
_REMOTE_SECTION = 'remote "storage"'


def _git_env(ws: Path, *, bind: bool = True) -> dict[str, str]:
    """The environment of a git call on ``ws``: that repository and work tree, whatever the caller's cwd/env.

    ``bind`` pins ``GIT_DIR``/``GIT_WORK_TREE`` to the workspace, so a broken or missing ``ws/.git`` is an
    error instead of git walking up into an enclosing repository (the cwd's, a home-directory one) and
    committing there. ``git init`` runs unbound (a bound init would write ``core.worktree``), but with a
    ceiling at the workspace's parent so nothing above it is ever found.
    """
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARS}
    if bind:
        env.update(GIT_DIR=str(ws / ".git"), GIT_WORK_TREE=str(ws))
    else:
        env["GIT_CEILING_DIRECTORIES"] = str(ws.parent)
    return env


def _git(workspace: Path, *args: str, check: bool = True, bind: bool = True) -> subprocess.CompletedProcess:
    """Run git in the workspace (cwd = workspace, repository = its ``.git``), never in the process cwd.

    Output is decoded as UTF-8 with replacement: git writes paths and messages in UTF-8, and a non-UTF-8
    locale must not turn a Hangul path in an error message into a UnicodeDecodeError.
    """
    ws = workspace.resolve()
    proc = subprocess.run(["git", *args], cwd=ws, env=_git_env(ws, bind=bind), capture_output=True,
                          text=True, encoding="utf-8", errors="replace")
    if check and proc.returncode != 0:
        raise VersioningError(f"git {' '.join(args)} failed in {ws}: {proc.stderr.strip()}")
    return proc


def _quiet_dvc() -> None:
    """Silence DVC's console hints ("to track the changes with git, run ..."): we run git ourselves."""
    from dvc.ui import ui

    ui._enabled = False
    logging.getLogger("dvc").setLevel(logging.WARNING)  # DVC logs its hints at INFO to its own handler


@contextlib.contextmanager
def _dvc_repo(ws: Path) -> Iterator[Any]:
    """DVC's ``Repo`` of the workspace, used with the process cwd = the workspace.

    DVC resolves some targets against the cwd, not the repo root: ``push(["…/sentences.parquet"])``
    parses a target that is not a ``.dvc`` file as a stage of ``./dvc.yaml``, so a ``dvc.yaml`` in the
    directory the command was started from broke the push after the tag was made. The cwd is restored
    after; the snapshot runs in the main process while no other thread uses relative paths.
    """
    from dvc.repo import Repo

    _quiet_dvc()
    with contextlib.chdir(ws), Repo(str(ws)) as repo:
        yield repo


def remote_dir(config: Config) -> Path | str:
    """The DVC remote: a URL as given, a relative directory under the workspace, never under the cwd.

    A scheme of two letters or more (so ``C:/`` stays a path) marks a URL; ``s3:/b/k`` (a URL
    folded by a path type somewhere on its way) is put back as ``s3://b/k``.
    """
    remote = config.versioning.remote
    if remote is None:
        return config.workspace.resolve() / "dvc-remote"
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+):/+(.*)$", str(remote))
    if match:
        scheme, rest = match.groups()
        return f"{scheme}:///{rest}" if scheme == "file" else f"{scheme}://{rest}"
    return (config.workspace / remote).resolve()  # an absolute remote stays itself: / drops the left side


def ensure_repo(config: Config) -> None:
    """Make the workspace a git + DVC repository, or finish one a crash or a bug left half made (idempotent).

    Each piece is checked on every call, not only on first use: a killed ``git init`` or ``dvc init``, an
    empty ``.dvc/config`` (DVC 3.67 writes its config as ASCII and truncates it before failing on a
    Hangul path) or a repository without a commit would otherwise make every later command exit 8.
    """
    ws = config.workspace.resolve()
    ws.mkdir(parents=True, exist_ok=True)
    _ensure_git(ws)
    fresh = _git(ws, "rev-parse", "-q", "--verify", "HEAD", check=False).returncode != 0
    written = _ensure_setup_files(ws)
    if _write_dvc_config(ws, str(remote_dir(config))):
        written.append(".dvc/config")
    if _commit_setup(ws, written, unborn=fresh):
        log_event(log, "workspace_repo_initialised" if fresh else "workspace_repo_repaired", workspace=str(ws),
                  remote=str(remote_dir(config)), written=sorted(written))


def _ensure_git(ws: Path) -> None:
    """A working ``ws/.git`` (re-running ``git init`` repairs a partial one) with a committer identity."""
    if _git(ws, "rev-parse", "--git-dir", check=False).returncode != 0:
        _git(ws, "init", "-q", str(ws), bind=False)
    for key, value in (("user.email", "sentirefine@localhost"), ("user.name", "sentirefine")):
        if not _git(ws, "config", key, check=False).stdout.strip():  # each: a kill may fall between the two
            _git(ws, "config", key, value)


def _ensure_setup_files(ws: Path) -> list[str]:
    """``.gitignore``, ``.dvc/``, ``.dvc/.gitignore`` and ``.dvcignore``; returns the ones written now."""
    written = []
    if not (ws / ".dvc").is_dir():
        from dvc.repo import Repo

        _quiet_dvc()
        with contextlib.chdir(ws):
            Repo.init(str(ws)).close()
    for name, text in ((".gitignore", "\n".join(_IGNORED) + "\n"), (".dvc/.gitignore", _DVC_GITIGNORE),
                       (".dvcignore", _DVCIGNORE)):
        if not (ws / name).is_file():
            _write_atomic(ws, ws / name, text)
            written.append(name)
    return written


def _write_dvc_config(ws: Path, remote: str) -> bool:
    """Write the settings sentirefine needs into ``.dvc/config`` as UTF-8; True when it changed.

    DVC's own ``config.edit()`` encodes with ConfigObj's default, ASCII, after truncating the file: a
    non-ASCII workspace or remote left ``.dvc/config`` empty. Other keys (a user's own remotes) are kept;
    an unreadable file is replaced. DVC reads the file back in the locale's encoding, UTF-8 here.
    """
    from configobj import ConfigObj, ConfigObjError

    path = ws / ".dvc" / "config"
    try:
        conf = ConfigObj(str(path), encoding="utf-8", file_error=False)
    except (ConfigObjError, UnicodeDecodeError):
        conf = ConfigObj(encoding="utf-8")
    wanted = {("core", "analytics"): "False", ("core", "site_cache_dir"): str(ws / ".dvc" / "site-cache"),
              ("core", "remote"): "storage", (_REMOTE_SECTION, "url"): remote}
    if all(conf.get(section, {}).get(key) == value for (section, key), value in wanted.items()):
        return False
    for (section, key), value in wanted.items():
        conf.setdefault(section, {})[key] = value
    conf.filename = None
    lines = conf.write()  # bytes when an encoding is set
    _write_atomic(ws, path, b"".join((ln if isinstance(ln, bytes) else ln.encode("utf-8")) + b"\n" for ln in lines))
    return True


def _write_atomic(ws: Path, path: Path, data: str | bytes) -> None:
    """Write via a temporary file in ``.dvc/tmp`` (git-ignored), so a kill never leaves a half file."""
    tmp_dir = ws / ".dvc" / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"sentirefine-{path.name}.tmp"
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def _commit_setup(ws: Path, written: list[str], *, unborn: bool) -> bool:
    """Stage the setup files written now or untracked, commit any staged change of them; True if committed.

    Staged changes count too: a kill between ``git add`` and ``git commit`` is finished here. Only these
    paths are committed (``commit -- paths``): a snapshot's ``.dvc`` file staged by a killed ``refine``
    stays staged for its own commit.
    """
    tracked = set(_git(ws, "ls-files", "--", *_SETUP_FILES).stdout.split())
    paths = [p for p in _SETUP_FILES if unborn or p in written or p not in tracked]
    if paths:
        _git(ws, "add", "--", *paths)
    if not unborn and _git(ws, "diff", "--cached", "--quiet", "--", *_SETUP_FILES, check=False).returncode == 0:
        return False
    _git(ws, "commit", "-q", "-m", "sentirefine workspace: git + DVC set up", "--", *_SETUP_FILES)
    return True


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
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in queries.sentence_columns(store, COLUMNS, chunk_size):
                columns = list(zip(*batch, strict=True))
                writer.write_table(pa.table(dict(zip(COLUMNS, columns, strict=True)), schema=schema))
                rows += len(batch)
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
    ws = config.workspace.resolve()
    ensure_repo(config)
    tag = tag_name(config, iteration)
    rows = export_parquet(store, ws / SNAPSHOT, chunk_size)
    crash_point("snapshot_after_export")
    if _tag_exists(ws, tag):
        digest = _md5(ws / SNAPSHOT)
        if _tagged_md5(ws, tag) == digest:
            # Tagged by an attempt that died before the stage was recorded: it may not have pushed.
            return {"tag": tag, "rows": rows, "md5": digest, "reused": True, "pushed": _push(config, ws)}
        _retire_tag(ws, tag)  # made before a rollback/restore: it holds labels that are no longer these
    with _dvc_repo(ws) as repo:
        repo.scm_context.quiet = True  # no "to track the changes with git, run ..." hint: we commit below
        repo.add([str(ws / SNAPSHOT)])
    crash_point("snapshot_after_dvc_add")
    _git(ws, "add", "--", f"{SNAPSHOT}.dvc", str(SNAPSHOT.parent / ".gitignore"))
    if _git(ws, "diff", "--cached", "--quiet", check=False).returncode != 0:
        _git(ws, "commit", "-q", "-m", f"data: labels after iteration {iteration}")
    crash_point("snapshot_before_tag")
    _git(ws, "tag", tag)
    crash_point("snapshot_after_tag")
    pushed = _push(config, ws)
    digest = _tagged_md5(ws, tag)  # what DVC recorded: the digest a `dvc pull` of the tag checks
    log_event(log, "snapshot_done", iteration=iteration, tag=tag, rows=rows, md5=digest, pushed=pushed)
    return {"tag": tag, "rows": rows, "md5": digest, "pushed": pushed}


def _tag_exists(ws: Path, tag: str) -> bool:
    return _git(ws, "rev-parse", "-q", "--verify", f"refs/tags/{tag}", check=False).returncode == 0


def _tagged_md5(ws: Path, tag: str) -> str | None:
    """The md5 DVC recorded for the snapshot at ``tag`` (None if the tag holds no snapshot)."""
    import yaml

    shown = _git(ws, "show", f"{tag}:{SNAPSHOT.as_posix()}.dvc", check=False)
    if shown.returncode != 0:
        return None
    outs = (yaml.safe_load(shown.stdout) or {}).get("outs") or [{}]
    return outs[0].get("md5")


def _md5(path: Path) -> str:
    import hashlib

    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def _retire_tag(ws: Path, tag: str) -> None:
    """Keep a superseded tag as ``<tag>-superseded-N`` (its snapshot stays readable), then free the name.

    The iteration was rolled back (or labels restored) and run again with other results: the
    name must point at the labels the store now holds after that iteration.
    """
    taken = _git(ws, "tag", "--list", f"{tag}-superseded-*").stdout.split()
    keep = f"{tag}-superseded-{len(taken) + 1}"
    _git(ws, "tag", keep, tag)
    _git(ws, "tag", "-d", tag)
    log_event(log, "snapshot_tag_superseded", tag=tag, kept_as=keep)


def _push(config: Config, ws: Path) -> bool:
    """Push the snapshot to the remote if configured (idempotent: DVC skips what is there)."""
    if not config.versioning.push:
        return False
    with _dvc_repo(ws) as repo:  # the .dvc file as target: never parsed as a stage of some dvc.yaml
        repo.push([str(ws / f"{SNAPSHOT}.dvc")])
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
        with contextlib.chdir(ws), dvc.api.open(SNAPSHOT.as_posix(), repo=str(ws), rev=rev, mode="rb") as handle:
            return pd.read_parquet(io.BytesIO(handle.read()))
    except Exception as exc:  # DVC reports a missing remote copy as PathMissingError
        raise VersioningError(
            f"snapshot {SNAPSHOT} at {rev} cannot be read from the DVC cache or remote {remote_dir(config)}: {exc}",
            hint="No storage files available? run `dvc pull` in the workspace or configure versioning.remote",
        ) from exc


def restore(config: Config, store: Store, rev: str) -> int:
    """Load the train labels of snapshot ``rev`` back into the store; returns rows changed.

    Recorded in history (source ``restore``, iteration = the latest one) like any label write, and
    written in one transaction (``Store.restore_labels``): a kill leaves the labels as they were,
    never part restored, and the same command run again restores all of them.
    """
    frame = read_snapshot(config, rev)
    wanted = dict(zip(frame["id"], frame["current_label"].astype(int), strict=True))
    iteration = max([it["iteration"] for it in store.iterations()] or [0])
    chunk = config.store.chunk_size if isinstance(config.store.chunk_size, int) else 50_000
    changed = store.restore_labels(wanted, iteration=iteration, rev=rev, chunk_size=chunk)
    log_event(log, "snapshot_restored", rev=rev, changed=changed)
    return changed
