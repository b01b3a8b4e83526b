"""MLflow: a run per command, a nested run per iteration, a registry with a promotion gate.

* Embedded default: ``sqlite:///<workspace>/mlflow.db`` with artifacts in
  ``<workspace>/mlartifacts`` — no server. ``tracking.uri`` (or ``$MLFLOW_TRACKING_URI``)
  points at a separate ``mlflow server`` instead.
* Each iteration (bootstrap = 0) is a nested run holding its refinement statistics,
  convergence metrics, gold metrics per member and ensemble, weights, temperatures, training
  curves, a confusion-matrix PNG and a CSV sample of the corrections.
* Registry: ``<prefix>-ensemble`` gets a version every iteration (alias ``staging``); it
  becomes ``production`` only if its gold metric is not worse than the current production
  version's by more than ``gate_tolerance`` (the regression test the spec asks for). Members
  are registered as ``<prefix>-<name>`` when they pass the same gate. MLflow 3 deprecates
  stages; the legacy stage is set too where the installed MLflow still accepts it.

The tracking stage of an iteration is recorded in the store like any other stage; if a crash
interrupts it, the half-logged run and any unpromoted versions it created are deleted and the
stage is redone, so the registry never holds two versions for one iteration.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sentirefine.config import Config
from sentirefine.data import store_queries as queries
from sentirefine.data.records import GoldMetrics, IterationMetrics
from sentirefine.data.store import Store
from sentirefine.data.workspace import iteration_dir
from sentirefine.faults import crash_point
from sentirefine.files.csvguard import guard_cell
from sentirefine.logs import log_event

log = logging.getLogger(__name__)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


# MLflow 3's UI opens an experiment on its GenAI overview (traces, judges) unless told it holds
# model training: this tag makes it open on the training runs.
_EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def point_mlflow_at(uri: str) -> None:
    """Make ``uri`` this process's MLflow tracking and registry store, without exporting it.

    ``mlflow.set_tracking_uri`` also writes ``$MLFLOW_TRACKING_URI`` into the environment, and
    :func:`tracking_uri` reads that variable as the user's choice of store: a process that opened
    one workspace and then another (a benchmark, a notebook, a scheduler), and every command it
    starts, would track into the *first* workspace's store. The user's own setting (or its
    absence) is put back; MLflow keeps the URI in its module state for this process.
    """
    import mlflow

    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def tracking_uri(config: Config) -> str:
    if config.tracking.uri:
        return config.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(config.workspace / 'mlflow.db').resolve()}"


def passes_gate(new: float, production: float | None, tolerance: float) -> tuple[bool, str]:
    """Whether a candidate with gold metric ``new`` may replace production, and why."""
    if production is None:
        return True, "no production version yet"
    if new >= production - tolerance:
        return True, f"{new:.4f} >= production {production:.4f} - tolerance {tolerance}"
    return False, f"{new:.4f} < production {production:.4f} - tolerance {tolerance}"


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    else:
        out[prefix] = value
    return out


class Tracker:
    """MLflow logging for one command; every method is a no-op when tracking is disabled."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.enabled = config.tracking.enabled
        self._parent: str | None = None
        if not self.enabled:
            return
        import mlflow

        self.mlflow = mlflow
        self.uri = tracking_uri(config)
        point_mlflow_at(self.uri)
        self.client = mlflow.MlflowClient(self.uri, self.uri)
        self.experiment_id = self._experiment()

    def _experiment(self) -> str:
        name = self.config.tracking.experiment
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            for key, value in _EXPERIMENT_TAGS.items():  # experiments created before the tag get it too
                if found.tags.get(key) != value:
                    self.client.set_experiment_tag(found.experiment_id, key, value)
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:"):
            location = (self.config.workspace / "mlartifacts").resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=location, tags=_EXPERIMENT_TAGS)

    @contextmanager
    def command_run(self, command: str, workspace_id: str) -> Iterator[None]:
        """The parent run of one command, holding the effective config as parameters."""
        if not self.enabled:
            yield
            return
        self._close_orphans(workspace_id)
        run = self.client.create_run(self.experiment_id, run_name=command,
                                     tags={"sentirefine.command": command, "sentirefine.data.workspace": workspace_id})
        self._parent = run.info.run_id
        params = _flatten("", self.config.model_dump(mode="json"), {})
        self._log_batch(self._parent, params=params)
        crash_point("track_command_run_started")
        status = "FAILED"
        try:
            yield
            status = "FINISHED"
        finally:
            self.client.set_terminated(self._parent, status=status)
            self._parent = None

    def _close_orphans(self, workspace_id: str) -> None:
        """Mark KILLED the command runs a killed process left RUNNING in this workspace.

        Commands hold the workspace lock, so none of them can still be alive; without this the
        MLflow UI shows every crashed command as running forever. (Iteration runs of an
        unfinished iteration are deleted when it resumes, see ``_discard_partial``.)
        """
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`sentirefine.data.workspace` = '{workspace_id}' and attributes.status = 'RUNNING'",
        )
        for run in runs:
            if "sentirefine.command" in run.data.tags:
                self.client.set_terminated(run.info.run_id, status="KILLED")
                log_event(log, "orphan_run_closed", run_id=run.info.run_id,
                          command=run.data.tags["sentirefine.command"])

    def _log_batch(self, run_id: str, *, params: dict[str, Any] | None = None,
                   metrics: dict[str, float] | None = None, step: int = 0) -> None:
        from mlflow.entities import Metric, Param

        param_list = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        now = int(1000 * time.time())
        metric_list = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()
                       if isinstance(v, int | float) and v == v]
        for i in range(0, max(len(param_list), len(metric_list)), 100):
            self.client.log_batch(run_id, metrics=metric_list[i : i + 100], params=param_list[i : i + 100])

    # -- one iteration --------------------------------------------------------------------------
    def log_iteration(self, store: Store, iteration: int, metrics: IterationMetrics,
                      training: dict[str, Any], snapshot: dict[str, Any] | None = None) -> dict[str, Any]:
        """Log an iteration's run, register its models and apply the gate; returns decisions.

        ``snapshot`` (the snapshot stage's info: DVC tag, md5, rows) becomes the run's dataset input.
        """
        if not self.enabled:
            return {}
        workspace_id = store.workspace_id()
        self._discard_partial(workspace_id, iteration)
        tags = {"sentirefine.data.workspace": workspace_id, "sentirefine.iteration": str(iteration),
                "sentirefine.dataset_rev": metrics.dataset_tag or ""}
        if self._parent:
            tags["mlflow.parentRunId"] = self._parent
        run = self.client.create_run(self.experiment_id, run_name=f"iteration-{iteration:03d}", tags=tags)
        run_id = run.info.run_id
        crash_point("track_after_run_start")
        flat = self._iteration_metrics(metrics)
        self._log_batch(run_id, metrics=flat, step=iteration)
        if self._parent:
            self._log_batch(self._parent, metrics=flat, step=iteration)
        crash_point("track_after_metrics")
        if snapshot and snapshot.get("md5"):
            self._log_dataset(run_id, store, snapshot)
        self._log_curves(run_id, training)
        self._log_artifacts(run_id, store, iteration, metrics)
        crash_point("track_before_register")
        decisions = self._register(run_id, run.info.artifact_uri, iteration, metrics, workspace_id,
                                   metrics.dataset_tag or "")
        crash_point("track_before_terminate")
        self.client.set_tag(run_id, "sentirefine.complete", "true")
        self.client.set_terminated(run_id)
        # Aliases last: whatever moment a crash strikes, staging/production never point at a
        # version of an unfinished run (a resumed stage deletes this run's versions and redoes it).
        for decision in decisions.values():
            if decision.get("registered"):
                self._set_aliases(decision)
        log_event(log, "iteration_tracked", iteration=iteration, run_id=run_id, decisions=decisions)
        return decisions

    def _iteration_metrics(self, metrics: IterationMetrics) -> dict[str, float]:
        """The iteration's numbers, flat, as MLflow metrics (names as they have always been)."""
        c, v = metrics.corrections, metrics.convergence
        refine = {"threshold": metrics.threshold, "label_change_rate": v.label_change_rate,
                  "lexicon_change_rate": v.lexicon_change_rate, "corrected_to_0": c.to_0, "corrected_to_1": c.to_1,
                  "queued_low_confidence": metrics.queued_low_confidence, "frozen": metrics.frozen,
                  "label_accuracy": metrics.label_accuracy, "seconds": metrics.seconds,
                  "train_rows": metrics.train_rows}
        flat: dict[str, float] = {f"refine.{k}": x for k, x in refine.items() if x is not None}
        evaluation = metrics.evaluation
        for name, gold in evaluation.members.items():
            flat.update({f"gold.{name}.{k}": x for k, x in _scores(gold).items()})
        flat.update({f"gold.ensemble.{k}": x for k, x in _scores(evaluation.ensemble).items()})
        flat.update({f"refine.class_offset.{c}": o for c, o in (metrics.class_offsets or {}).items()})
        flat.update({f"weight.{n}": w for n, w in evaluation.weights.items()})
        flat.update({f"temperature.{n}": t for n, t in (evaluation.temperatures or {}).items()})
        flat.update({f"change_rate.{n}": r for n, r in (v.model_change_rates or {}).items()})
        flat.update({f"stage_seconds.{s}": t for s, t in (metrics.stage_seconds or {}).items()})
        flat.update({f"llm.{k}": x for k, x in (metrics.llm or {}).items()
                     if isinstance(x, int | float) and not isinstance(x, bool)})
        flat["audit.flags"] = len((metrics.audit or {}).get("flags") or [])
        return flat

    def _log_dataset(self, run_id: str, store: Store, snapshot: dict[str, Any]) -> None:
        """The label snapshot the iteration's models were trained on, as the run's dataset input.

        The MLflow UI's Dataset column then names the data version (DVC tag and md5) of each
        model; `sentirefine dataset show --rev <tag>` reads that version back (`dataset restore` reinstates it).
        """
        from mlflow.entities import Dataset, DatasetInput, InputTag

        from sentirefine.integrations.versioning import SNAPSHOT

        source = {"repo": str(self.config.workspace.resolve()), "rev": snapshot["tag"], "path": str(SNAPSHOT)}
        schema = {"mlflow_colspec": [{"type": "string", "name": "id"}, {"type": "string", "name": "text"},
                                     {"type": "long", "name": "current_label"},
                                     {"type": "long", "name": "original_label"}]}
        profile = {"rows": snapshot.get("rows"), "train_rows": store.count("train"), "gold_rows": store.count("gold")}
        dataset = Dataset(name=f"labels@{snapshot['tag']}", digest=snapshot["md5"], source_type="dvc",
                          source=json.dumps(source), schema=json.dumps(schema), profile=json.dumps(profile))
        self.client.log_inputs(run_id, [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])])

    def _log_curves(self, run_id: str, training: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        for name, info in training.items():
            curves: dict[str, list[float]] = {}  # a fold set's folds each get their own curve
            for h in info.get("history", []):
                if h.get("loss") is not None:
                    key = f"train_loss.{name}" + (f".fold-{h['fold']}" if "fold" in h else "")
                    curves.setdefault(key, []).append(float(h["loss"]))
            points = [Metric(key, loss, 0, i) for key, losses in curves.items() for i, loss in enumerate(losses)]
            if points:
                self.client.log_batch(run_id, metrics=points)

    def _log_artifacts(self, run_id: str, store: Store, iteration: int, metrics: IterationMetrics) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            (out / "metrics.json").write_text(json.dumps(metrics.to_json(), indent=1, default=str), encoding="utf-8")
            ensemble = metrics.evaluation.ensemble
            matrix = ensemble.confusion if ensemble is not None else None
            if matrix:
                _confusion_png(matrix, out / "confusion_ensemble.png", f"ensemble, iteration {iteration} (gold)")
            if iteration > 0 and self.config.tracking.corrected_sample_rows:
                _corrected_sample(store, iteration, self.config.tracking.corrected_sample_rows,
                                  out / "corrected_sample.csv")
            self.client.log_artifacts(run_id, str(out))
        audit = Path((metrics.audit or {}).get("path") or "")
        if audit.is_file():
            self.client.log_artifact(run_id, str(audit), artifact_path="audit")

    # -- registry -------------------------------------------------------------------------------
    def _register(self, run_id: str, artifact_uri: str, iteration: int, metrics: IterationMetrics,
                  workspace_id: str, dataset_rev: str) -> dict[str, Any]:
        """Log the iteration's model bundle once, then register the ensemble and each member that passes.

        Every version's source lies in the one bundle (:mod:`~sentirefine.integrations.model_bundle`):
        a checkpoint is stored once per iteration, however many versions serve it.
        """
        from sentirefine.ensemble.spec import EnsembleSpec
        from sentirefine.integrations import model_bundle

        cfg = self.config
        metric = cfg.tracking.gate_metric
        spec = EnsembleSpec.from_stage_info(metrics.evaluation.to_json(), cfg, iteration)  # what evaluate fitted
        with tempfile.TemporaryDirectory() as tmp:
            bundle = model_bundle.build(Path(tmp), iteration_dir(cfg, iteration), spec)
            model_bundle.check(bundle, list(spec.members))
            self.client.log_artifacts(run_id, str(bundle), model_bundle.ARTIFACT_PATH)
        crash_point("register:after_bundle")
        source = f"{artifact_uri.rstrip('/')}/{model_bundle.ARTIFACT_PATH}"
        decisions: dict[str, Any] = {"ensemble": self.register_version(
            run_id, "ensemble", source, _score(metrics.evaluation.ensemble, metric), iteration, workspace_id,
            always=True, dataset_rev=dataset_rev, defer_aliases=True)}
        if cfg.tracking.register_members:
            for name in spec.members:
                decisions[name] = self.register_version(
                    run_id, name, f"{source}/{model_bundle.member_path(name)}",
                    _score(metrics.evaluation.members.get(name), metric), iteration, workspace_id, always=False,
                    dataset_rev=dataset_rev, defer_aliases=True)
        return decisions

    def register_version(self, run_id: str, label: str, source: str, value: float | None, iteration: int,
                         workspace_id: str, *, always: bool, dataset_rev: str = "",
                         defer_aliases: bool = False) -> dict[str, Any]:
        """Register the MLflow model at ``source`` (inside ``run_id``'s artifacts) as a version of
        ``<prefix>-<label>`` (staging), and promote it to production if it passes the gate.

        The version is created with its tags in one call, so no version exists half-described.
        ``defer_aliases``: only register; the caller sets the aliases (:meth:`_set_aliases`) once
        the run is complete.
        """
        cfg = self.config.tracking
        registered = f"{cfg.model_prefix}-{label}"
        production, production_version = self._production(registered)
        ok, reason = passes_gate(value, production, cfg.gate_tolerance) if value is not None else (False, "no metric")
        if not always and not ok:
            return {"registered": False, "reason": reason}
        self._ensure_registered_model(registered)
        tags = {"iteration": str(iteration), "workspace": workspace_id, "run_id": run_id,
                f"gold_{cfg.gate_metric}": "" if value is None else f"{value:.6f}",
                "promotion": "promoted" if ok else "rejected", "promotion_reason": reason,
                "previous_production": production_version or "", "dataset_rev": dataset_rev,
                "folds": str(self.config.ensemble.folds)}  # fold models in each member's checkpoint
        version = str(self.client.create_model_version(registered, source, run_id=run_id, tags=tags).version)
        crash_point(f"register:{label}_after_create_version")
        decision = {"registered": True, "version": version, "promoted": ok, "reason": reason,
                    "model": registered, "label": label}
        if not defer_aliases:
            self._set_aliases(decision)
        log_event(log, "model_registered", model=registered, version=version, promoted=ok, reason=reason)
        return decision

    def _ensure_registered_model(self, registered: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(registered)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def _set_aliases(self, decision: dict[str, Any]) -> None:
        """``staging`` on a registered version, and ``production`` if it passed the gate."""
        registered, version, label = decision["model"], decision["version"], decision["label"]
        self.client.set_registered_model_alias(registered, "staging", version)
        self._legacy_stage(registered, version, "Staging")
        crash_point(f"register:{label}_after_staging_alias")
        if decision["promoted"]:
            self.client.set_registered_model_alias(registered, "production", version)
            self._legacy_stage(registered, version, "Production")
            crash_point(f"register:{label}_after_production_alias")

    def _production(self, registered: str) -> tuple[float | None, str | None]:
        """Gate metric and version number of the current production version (None, None if none)."""
        try:
            current = self.client.get_model_version_by_alias(registered, "production")
        except Exception:  # no such model or alias yet
            return None, None
        raw = current.tags.get(f"gold_{self.config.tracking.gate_metric}")
        return (float(raw) if raw else None), str(current.version)

    def _legacy_stage(self, registered: str, version: str, stage: str) -> None:
        """Stages are deprecated in MLflow 3; set them where still accepted, never fail on them."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.client.transition_model_version_stage(registered, version, stage,
                                                           archive_existing_versions=stage == "Production")
        except Exception as exc:
            log_event(log, "legacy_stage_skipped", level=logging.DEBUG, model=registered, error=str(exc))

    def log_report(self, workspace_id: str, path: Path) -> str | None:
        """Attach the HTML report to this workspace's latest command run (its parent run).

        The report is written after the command that produced its numbers, so it goes to that
        finished run rather than opening a run of its own; returns the run id (None: no run).
        """
        if not self.enabled:
            return None
        runs = self.client.search_runs([self.experiment_id],
                                       filter_string=f"tags.`sentirefine.data.workspace` = '{workspace_id}'",
                                       order_by=["attributes.start_time DESC"], max_results=50)
        parent = next((r for r in runs if "sentirefine.command" in r.data.tags), None)
        if parent is None:
            return None
        self.client.log_artifact(parent.info.run_id, str(path), artifact_path="report")
        log_event(log, "report_logged", run_id=parent.info.run_id, path=str(path))
        return parent.info.run_id

    def _discard_partial(self, workspace_id: str, iteration: int) -> None:
        """Delete what an interrupted earlier attempt at this iteration logged or registered."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`sentirefine.data.workspace` = '{workspace_id}' and "
                          f"tags.`sentirefine.iteration` = '{iteration}'",
        )
        for run in runs:
            for version in self.client.search_model_versions(f"run_id = '{run.info.run_id}'"):
                previous = version.tags.get("previous_production")
                is_production = "production" in (version.aliases or [])
                self.client.delete_model_version(version.name, version.version)
                if is_production and previous:  # hand production back to the version it replaced
                    self.client.set_registered_model_alias(version.name, "production", previous)
            self._remove_local_bundle(run.info.artifact_uri)
            log_event(log, "partial_run_discarded", iteration=iteration, run_id=run.info.run_id)
            self.client.delete_run(run.info.run_id)

    def _remove_local_bundle(self, artifact_uri: str) -> None:
        """The model bundle a discarded run logged (its ``registered/`` folder)."""
        from sentirefine.integrations.model_bundle import ARTIFACT_PATH, local_dir, remove_local

        run_artifacts = local_dir(artifact_uri)
        if run_artifacts is not None:
            remove_local(run_artifacts / ARTIFACT_PATH.split("/")[0], self.config.workspace)


def _confusion_png(matrix: list[list[int]], path: Path, title: str) -> None:
    from sentirefine.figures import confusion_figure, pyplot

    fig = confusion_figure(matrix, title, (3.2, 3))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)


def _corrected_sample(store: Store, iteration: int, limit: int, path: Path) -> None:
    rows = [(c.id, c.text, c.old_label, c.new_label, c.confidence, c.source)
            for c in queries.corrections_in(store, iteration, limit)]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "old_label", "new_label", "confidence", "source"])
        writer.writerows((guard_cell(id_), guard_cell(text), *rest) for id_, text, *rest in rows)  # opened in sheets


def _scores(gold: GoldMetrics | None) -> dict[str, float]:
    """A model's gold accuracy, F1 and log loss, those it has (none without a gold split)."""
    if gold is None:
        return {}
    return {k: x for k, x in (("accuracy", gold.accuracy), ("f1", gold.f1), ("log_loss", gold.log_loss))
            if x is not None}


def _score(gold: GoldMetrics | None, metric: str) -> float | None:
    """The gate metric (``tracking.gate_metric``: accuracy or f1) of a model, None where not measured."""
    return _scores(gold).get(metric)
