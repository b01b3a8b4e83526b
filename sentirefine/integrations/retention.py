"""`sentirefine gc`: bounded storage: drop the checkpoints and registered versions nobody serves.

Every iteration writes each member's checkpoint (``models/iter-NNN/``) and logs one model bundle
(its registered versions' files, each checkpoint once: :mod:`~sentirefine.integrations.model_bundle`),
so a workspace grows by two model sets per iteration. ``gc --keep N`` keeps what can still be
used and removes the rest:

* kept: the last ``N`` finished iterations (the newest is what the next iteration updates), an
  unfinished iteration's partial checkpoints (a resume needs them), and every iteration one of
  this workspace's registered versions with an alias (``production``, ``staging``) comes from;
* removed, for every other iteration: its registered versions (members first, then the ensemble
  with the bundle, deleted from disk where the artifact store is a local directory; a remote
  store's files go with the server's own ``mlflow gc``; versions registered before bundles take
  their logged model with them), then ``models/iter-NNN/``.

Never touched: the store (labels, ``label_history``, iteration metrics), the iteration runs and
their metrics, DVC snapshots and tags. An iteration without checkpoints can no longer be rolled
back to (`rollback` says so and names the iterations that can); its labels can still be read and
restored from its snapshot (`dataset show`, `dataset restore`).

A kill at any point is safe: versions are deleted one by one and a checkpoint directory is first
renamed to ``iter-NNN.gc.tmp`` (atomic), then removed; the same command finishes the job.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from sentirefine.config import Config
from sentirefine.data.store import Store
from sentirefine.faults import crash_point
from sentirefine.integrations.model_bundle import ARTIFACT_PATH, local_dir, remove_local
from sentirefine.logs import log_event

log = logging.getLogger(__name__)
_ALIASES = ("production", "staging")


@dataclass(frozen=True)
class Version:
    model: str
    version: str
    iteration: int
    model_id: str | None
    aliases: tuple[str, ...] = ()
    source: str = ""


@dataclass
class RetentionPlan:
    """What ``gc`` keeps and removes, worked out before anything is deleted (``--dry-run`` prints it)."""

    keep: set[int]
    remove_iterations: list[int]
    remove_versions: list[Version]


def checkpoint_dirs(config: Config) -> dict[int, Path]:
    """The iterations that have a checkpoint directory, and where (leftover ``.gc.tmp`` dirs excluded)."""
    root = config.models_dir
    if not root.is_dir():
        return {}
    return {int(p.name[5:]): p for p in root.iterdir()
            if p.is_dir() and p.name.startswith("iter-") and p.name[5:].isdigit()}


def plan(config: Config, store: Store, keep_last: int) -> RetentionPlan:
    """Which iterations and registered versions ``gc --keep keep_last`` removes.

    Anything after the last finished iteration belongs to a run a resume continues, and is kept.
    """
    finished = sorted(it["iteration"] for it in store.iterations() if it["finished_at"])
    last = finished[-1] if finished else -1
    versions = _versions(config, store.workspace_id())
    on_disk = checkpoint_dirs(config)
    keep = set(finished[-keep_last:]) | {v.iteration for v in versions if v.aliases} | {i for i in on_disk if i > last}
    return RetentionPlan(keep=keep, remove_iterations=sorted(i for i in on_disk if i not in keep),
                         remove_versions=[v for v in versions if v.iteration not in keep and v.iteration <= last])


def apply(config: Config, plan: RetentionPlan) -> None:
    """Delete what ``plan`` names: registered versions first, then checkpoint directories."""
    if plan.remove_versions:
        client = _client(config)
        # Members before their ensemble: a member version's files lie inside the ensemble's bundle.
        for v in sorted(plan.remove_versions, key=lambda v: (v.iteration, v.model.endswith("-ensemble"))):
            _delete_version(client, v, config.workspace.resolve())
            crash_point("gc_after_version")
    for iteration in plan.remove_iterations:
        directory = config.models_dir / f"iter-{iteration:03d}"
        doomed = directory.with_name(directory.name + ".gc.tmp")
        if directory.is_dir():
            directory.rename(doomed)
        crash_point("gc_after_rename")
        shutil.rmtree(doomed, ignore_errors=True)
        log_event(log, "checkpoints_removed", iteration=iteration)
    for leftover in config.models_dir.glob("iter-*.gc.tmp") if config.models_dir.is_dir() else []:
        shutil.rmtree(leftover, ignore_errors=True)  # an earlier gc killed between rename and removal


def _client(config: Config):
    import mlflow

    from sentirefine.integrations.tracking import tracking_uri

    uri = tracking_uri(config)
    return mlflow.MlflowClient(uri, uri)


def _versions(config: Config, workspace_id: str) -> list[Version]:
    """This workspace's registered versions (ensemble and members), with their iteration and aliases."""
    if not config.tracking.enabled:
        return []
    client = _client(config)
    names = [f"{config.tracking.model_prefix}-{label}" for label in ("ensemble", *config.models.order)]
    found: list[Version] = []
    for name in names:
        # Asked per alias: a registry search leaves the versions' aliases empty (MLflow 3.17, SQLite store).
        aliased: dict[str, list[str]] = {}
        for alias in _ALIASES:
            try:
                aliased.setdefault(str(client.get_model_version_by_alias(name, alias).version), []).append(alias)
            except Exception:  # no such model or alias
                continue
        for mv in client.search_model_versions(f"name='{name}'"):
            if mv.tags.get("workspace") != workspace_id or not mv.tags.get("iteration", "").isdigit():
                continue
            found.append(Version(name, str(mv.version), int(mv.tags["iteration"]), _model_id(mv),
                                 tuple(aliased.get(str(mv.version), ())), mv.source or ""))
    return found


def _model_id(mv) -> str | None:
    """The logged model behind a version: ``model_id`` where the search fills it, else from its
    ``models:/m-...`` source (a registry search leaves ``model_id`` empty in MLflow 3.17)."""
    if getattr(mv, "model_id", None):
        return mv.model_id
    source = mv.source or ""
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def _delete_version(client, v: Version, workspace: Path) -> None:
    """The version, and its files where they are a local directory inside the workspace (the
    embedded store's ``mlartifacts``; nothing outside it is deleted): an iteration's model bundle
    goes with its ensemble version (its members' versions point inside it), an older version's
    logged model with the version itself."""
    files = None
    if v.source.rstrip("/").endswith("/" + ARTIFACT_PATH):
        bundle = local_dir(v.source.rstrip("/"))
        files = None if bundle is None else bundle.parent  # registered/ in the iteration run's artifacts
    elif v.model_id:
        try:
            files = local_dir(client.get_logged_model(v.model_id).artifact_location)
        except Exception:  # already deleted by an earlier, interrupted gc
            files = None
        files = files.parent if files is not None and files.name == "artifacts" else files
    try:
        client.delete_model_version(v.model, v.version)
    except Exception as exc:  # already gone: a killed gc deleted it and died before the rest
        log_event(log, "version_already_deleted", level=logging.DEBUG, model=v.model, version=v.version,
                  error=str(exc))
    if v.model_id:
        try:
            client.delete_logged_model(v.model_id)
        except Exception as exc:
            log_event(log, "logged_model_already_deleted", level=logging.DEBUG, model_id=v.model_id,
                      error=str(exc))
    remove_local(files, workspace)
    log_event(log, "version_removed", model=v.model, version=v.version, iteration=v.iteration)


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 if absent): what the store and checkpoints take on disk."""
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
