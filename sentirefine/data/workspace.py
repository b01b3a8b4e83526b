"""The workspace directory and its single-writer lock.

One workspace = one DB, its models, rejects and (later) MLflow store and DVC repo. Two
``refine`` processes on one workspace would interleave label writes and model checkpoints, so
every command that writes takes an exclusive, non-blocking file lock and names the owner's pid
when it cannot.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from sentirefine.config import Config
from sentirefine.data.store import Store
from sentirefine.errors import StoreError, WorkspaceBusyError


@contextmanager
def locked(config: Config) -> Iterator[None]:
    """Hold the workspace's writer lock for the duration of the block.

    The paths are made absolute once, here: the snapshot runs DVC with the cwd moved into the
    workspace, and a relative workspace must still name the same lock and owner files at release.
    """
    ws = config.workspace.resolve()
    ws.mkdir(parents=True, exist_ok=True)
    lock_path = ws / ".sentirefine.lock"
    owner_path = ws / ".sentirefine.owner"
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        owner = owner_path.read_text().strip() if owner_path.exists() else "unknown"
        raise WorkspaceBusyError(
            f"workspace {config.workspace} is in use by another sentirefine process (pid {owner})",
            hint="wait for it to finish, or stop it; `sentirefine status` is safe to run meanwhile",
        ) from exc
    except OSError as exc:  # after Timeout (itself an OSError): a read-only workspace, not a traceback
        raise StoreError(
            f"cannot take the workspace lock {lock_path}: {exc.strerror or exc}",
            hint="the workspace must be writable (check permissions, a read-only mount, free space); "
                 "`sentirefine status` only reads",
        ) from exc
    try:
        owner_path.write_text(str(os.getpid()))
        yield
    finally:
        owner_path.unlink(missing_ok=True)
        lock.release()


def open_store(config: Config, *, create: bool = False) -> Store:
    return Store(config.db_file, busy_timeout_s=config.store.busy_timeout_s, create=create)


def iteration_dir(config: Config, iteration: int) -> Path:
    """Where the members trained in ``iteration`` live (0 = bootstrap)."""
    return config.models_dir / f"iter-{iteration:03d}"


def pretrained_dir(config: Config) -> Path:
    """Where `sentirefine pretrain` writes its checkpoint: ``pretrain.output_dir``, relative to the workspace.

    One rule for both sides: pretraining writes here and ``models.bert.checkpoint: pretrained``
    reads here, so the two can never disagree about the path.
    """
    out = config.pretrain.output_dir
    return out if out.is_absolute() else config.workspace / out


def resolve_checkpoint(config: Config) -> Config:
    """The config with ``models.bert.checkpoint: pretrained`` replaced by this workspace's directory.

    Applied where members are built for a workspace (before ``build_model``), so a member only
    ever sees a concrete path or None and :mod:`sentirefine.models` needs no workspace layout.
    The directory is not checked here: loading it reports a missing or damaged one by its path.
    """
    bert = config.models.bert
    if bert.checkpoint != "pretrained":
        return config
    bert = bert.model_copy(update={"checkpoint": pretrained_dir(config).resolve()})
    return config.model_copy(update={"models": config.models.model_copy(update={"bert": bert})})
