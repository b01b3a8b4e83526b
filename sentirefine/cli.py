"""The ``sentirefine`` command line: argument handling only; the work lives in the modules."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from sentirefine.config import Config, load_config
from sentirefine.errors import SentirefineError
from sentirefine.logs import configure_logging

app = typer.Typer(help="Clean the labels of a sentiment corpus and retrain its models, progressively.",
                  no_args_is_help=True, add_completion=False)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
dataset_app = typer.Typer(help="Read and restore the DVC-versioned label snapshots.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")

_state: dict[str, Any] = {}


@app.callback()
def main(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")] = None,
    workspace: Annotated[Path | None, typer.Option(help="Workspace directory (overrides config).")] = None,
    log_format: Annotated[str | None, typer.Option(help="json | text (default: config).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    _state.update(config=config, workspace=workspace, log_format=log_format, quiet=quiet)


def _config(default_file: Path | None = None) -> Config:
    overrides: dict[str, Any] = {}
    if _state.get("workspace"):
        overrides["workspace"] = str(_state["workspace"])
    if _state.get("log_format"):
        overrides["logging"] = {"format": _state["log_format"]}
    cfg = load_config(_state.get("config") or default_file, overrides)
    configure_logging(cfg.logging.format, "WARNING" if _state.get("quiet") else cfg.logging.level)
    return cfg


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a SentirefineError into a one-line message with a hint and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SentirefineError as exc:
            typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
            if exc.hint:
                typer.echo(f"hint: {exc.hint}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: run the same command again to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@_friendly
def init() -> None:
    """Create the workspace: SQLite store, git repository with DVC (analytics off), remote."""
    from sentirefine.versioning import ensure_repo, remote_dir
    from sentirefine.workspace import locked, open_store

    cfg = _config()
    with locked(cfg), open_store(cfg, create=True):
        if cfg.versioning.enabled:
            ensure_repo(cfg)
    typer.echo(f"workspace {cfg.workspace} ready (store {cfg.db_file}"
               + (f", DVC remote {remote_dir(cfg)})" if cfg.versioning.enabled else ")"))


@config_app.command("show")
@_friendly
def config_show() -> None:
    """Print the effective configuration (defaults + file + SENTIREFINE_* env) as YAML."""
    cfg = _config()
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True))


@config_app.command("docs")
@_friendly
def config_docs() -> None:
    """Print the configuration reference (every key, default and meaning) as Markdown."""
    from sentirefine.config import reference_markdown

    typer.echo(reference_markdown())


@app.command("import")
@_friendly
def import_cmd(
    path: Annotated[Path, typer.Argument(help="Train file: NSMC TSV or text,label CSV (.gz ok).")],
    gold: Annotated[Path | None, typer.Option(help="Gold evaluation file (never relabelled).")] = None,
    strict: Annotated[bool, typer.Option(help="Fail at the first bad row; nothing is imported.")] = False,
    inject_noise: Annotated[float, typer.Option(help="Flip this share of train labels (benchmarks).")] = 0.0,
    noise_seed: Annotated[int, typer.Option(help="Seed of the injected noise.")] = 0,
) -> None:
    """Import labelled rows into the workspace store, validating every row."""
    from sentirefine.ingest import import_file
    from sentirefine.workspace import locked, open_store

    cfg = _config()
    with locked(cfg), open_store(cfg, create=True) as store:
        reports = [import_file(store, path, split="train", rejects_dir=cfg.workspace / "rejects", strict=strict,
                               max_chars=cfg.store.max_text_chars, noise_rate=inject_noise, noise_seed=noise_seed)]
        if gold:
            reports.append(import_file(store, gold, split="gold", rejects_dir=cfg.workspace / "rejects",
                                       strict=strict, max_chars=cfg.store.max_text_chars))
    for report in reports:
        typer.echo(report.summary())
    if any(r.rejected for r in reports):
        typer.secho("some rows were rejected (listed above); the valid rows were imported", err=True,
                    fg=typer.colors.YELLOW)
        raise typer.Exit(3)


@app.command()
@_friendly
def bootstrap() -> None:
    """Train the four baseline members on the current labels and evaluate them on gold."""
    from sentirefine.loop import bootstrap as run_bootstrap
    from sentirefine.summary import iterations_table
    from sentirefine.workspace import locked, open_store

    cfg = _config()
    with locked(cfg), open_store(cfg) as store:
        run_bootstrap(cfg, store)
        typer.echo(iterations_table(store.iterations()[:1], cfg.models.order))


@app.command()
@_friendly
def refine(
    max_iterations: Annotated[int | None, typer.Option(help="Stop after this iteration number.")] = None,
) -> None:
    """Run (or resume) the refinement loop until converged or max iterations."""
    cfg = _config()
    _run_refine(cfg, max_iterations)


def _run_refine(cfg: Config, max_iterations: int | None) -> None:
    from sentirefine.loop import refine as run_refine
    from sentirefine.summary import iterations_table
    from sentirefine.workspace import locked, open_store

    with locked(cfg), open_store(cfg) as store:
        result = run_refine(cfg, store, max_iterations=max_iterations)
        typer.echo(iterations_table(store.iterations(), cfg.models.order))
        typer.echo(f"stopped: {result.stop_reason}")


@app.command()
@_friendly
def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Where the loop stands: iterations, unfinished stage, label counts, review queue."""
    from sentirefine.summary import iterations_table
    from sentirefine.workspace import open_store

    cfg = _config()
    with open_store(cfg) as store:
        info = {
            "workspace": str(cfg.workspace),
            "rows": {"train": store.count("train"), "gold": store.count("gold")},
            "train_labels": store.label_counts("train"),
            "unfinished_stage": store.current_stage(),
            "review_queue": store.open_review_count(),
            "iterations": store.iterations(),
        }
    if as_json:
        typer.echo(json.dumps(info, indent=1, default=str))
        return
    typer.echo(f"workspace {info['workspace']}: {info['rows']['train']} train rows, {info['rows']['gold']} gold rows")
    typer.echo(f"train labels now: {info['train_labels']}; review queue: {info['review_queue'] or 'empty'}")
    if info["unfinished_stage"]:
        it, stage = info["unfinished_stage"]
        typer.echo(f"unfinished: iteration {it} stage {stage} (run `sentirefine refine` to resume)")
    typer.echo(iterations_table(info["iterations"], cfg.models.order))


@app.command()
@_friendly
def rollback(
    to_iteration: Annotated[int, typer.Option("--to-iteration", help="0 = labels as imported.")],
) -> None:
    """Restore every train label to its value after iteration K (recorded in history)."""
    from sentirefine.workspace import locked, open_store

    cfg = _config()
    with locked(cfg), open_store(cfg) as store:
        changed = store.rollback(to_iteration)
    typer.echo(f"rolled back to iteration {to_iteration}: {changed} labels restored")


@dataset_app.command("show")
@_friendly
def dataset_show(
    rev: Annotated[str, typer.Option(help="Tag or commit, e.g. data-iter-002.")],
    diff: Annotated[str | None, typer.Option(help="Another rev to compare labels with.")] = None,
) -> None:
    """Counts and label distribution of a snapshot (and its label diff against another rev)."""
    from sentirefine.versioning import read_snapshot

    cfg = _config()
    frame = read_snapshot(cfg, rev)
    typer.echo(f"{rev}: {len(frame)} rows")
    for split, part in frame.groupby("split"):
        counts = part["current_label"].value_counts().sort_index().to_dict()
        changed = int((part["current_label"] != part["original_label"]).sum())
        typer.echo(f"  {split}: {len(part)} rows, labels {counts}, differing from original {changed}")
    if diff:
        other = read_snapshot(cfg, diff).set_index("id")["current_label"]
        joined = frame.set_index("id")["current_label"].to_frame("a").join(other.rename("b"), how="inner")
        moved = joined[joined["a"] != joined["b"]]
        typer.echo(f"  vs {diff}: {len(moved)} labels differ "
                   f"({int((moved['b'] == 1).sum())} now 1 there, {int((moved['b'] == 0).sum())} now 0 there)")


@dataset_app.command("restore")
@_friendly
def dataset_restore(rev: Annotated[str, typer.Option(help="Tag or commit to restore labels from.")]) -> None:
    """Load a snapshot's labels back into the store (recorded in history, source 'restore')."""
    from sentirefine.versioning import restore
    from sentirefine.workspace import locked, open_store

    cfg = _config()
    with locked(cfg), open_store(cfg) as store:
        changed = restore(cfg, store, rev)
    typer.echo(f"restored labels of {rev}: {changed} rows changed")


@app.command("mlflow-ui")
@_friendly
def mlflow_ui(port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000) -> None:
    """Start the MLflow UI on 127.0.0.1 for this workspace's tracking store (Ctrl-C stops it)."""
    import os
    import shutil

    from sentirefine.tracking import tracking_uri

    cfg = _config()
    uri = tracking_uri(cfg)
    if not uri.startswith("sqlite:"):
        typer.echo(f"tracking goes to {uri}: open that server's UI instead")
        return
    exe = shutil.which("mlflow") or "mlflow"
    typer.echo(f"MLflow UI for {uri} on http://127.0.0.1:{port}")
    os.execvp(exe, [exe, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)])


@app.command()
@_friendly
def demo(
    max_iterations: Annotated[int | None, typer.Option(help="Refinement iterations to run.")] = None,
) -> None:
    """Run the whole loop on the bundled demo corpus (real NSMC reviews + 15% injected flips)."""
    from sentirefine import demo as demo_data
    from sentirefine.ingest import import_file
    from sentirefine.workspace import locked, open_store

    cfg = _config(default_file=demo_data.CONFIG)
    with locked(cfg), open_store(cfg, create=True) as store:
        if store.count() == 0:
            for path, split, noise in ((demo_data.TRAIN, "train", demo_data.NOISE_RATE),
                                       (demo_data.GOLD, "gold", 0.0)):
                report = import_file(store, path, split=split, rejects_dir=cfg.workspace / "rejects",
                                     strict=True, noise_rate=noise, noise_seed=demo_data.NOISE_SEED)
                typer.echo(report.summary())
    _run_refine(cfg, max_iterations)
