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
from sentirefine.logs import configure_logging, log_setup

app = typer.Typer(help="Clean the labels of a sentiment corpus and retrain its models, progressively.",
                  no_args_is_help=True, add_completion=False)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
dataset_app = typer.Typer(help="Read and restore the DVC-versioned label snapshots.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
review_app = typer.Typer(help="Human review round trip: export the rows needing a person, import their labels.",
                         no_args_is_help=True)
app.add_typer(review_app, name="review")

_state: dict[str, Any] = {}


@app.callback()
def main(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")] = None,
    workspace: Annotated[Path | None, typer.Option(help="Workspace directory (overrides config).")] = None,
    log_format: Annotated[str | None, typer.Option(help="json | text (default: config).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    _state.update(config=config, workspace=workspace, log_format=log_format, quiet=quiet)
    # Until the config is read (it may be the thing that fails), log in the asked-for format.
    configure_logging(log_format if log_format in ("json", "text") else "json", "WARNING" if quiet else "INFO")
    if quiet:  # progress bars off too, in this process and in the workers it starts
        import os

        os.environ["TQDM_DISABLE"] = "1"


def _config(default_file: Path | None = None) -> Config:
    overrides: dict[str, Any] = {}
    if _state.get("workspace"):
        overrides["workspace"] = str(_state["workspace"])
    if _state.get("log_format"):
        overrides["logging"] = {"format": _state["log_format"]}
    if _state.get("quiet"):  # in the config, so that pool and job workers, which configure from it, are quiet too
        overrides["logging"] = {**overrides.get("logging", {}), "console_level": "WARNING"}
    cfg = load_config(_state.get("config") or default_file, overrides)
    _log_to_workspace(cfg)
    return cfg


def _log_to_workspace(cfg: Config) -> None:
    """Log as ``cfg`` says, into the workspace's log file once the workspace exists.

    Called again by a command that creates the workspace (init, import, demo): it had no file to open before.
    """
    configure_logging(*log_setup(cfg))


def _check_share(option: str, value: float) -> None:
    """A share of rows must lie in [0, 1): 1.5 would flip every label and -0.2 or nan none, all silently."""
    import math

    from sentirefine.errors import UsageError

    if not (math.isfinite(value) and 0 <= value < 1):
        raise UsageError(f"{option} {value} is outside [0, 1)",
                         hint=f"pass the share of labels to flip, e.g. {option} 0.2 (0 = none)")


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a SentirefineError into a one-line message with a hint and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SentirefineError as exc:
            _log_failure(exc)
            typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
            if exc.hint:
                typer.echo(f"hint: {exc.hint}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: run the same command again to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _log_failure(exc: SentirefineError) -> None:
    """In JSON mode, the error is also one log object (type, message, hint, exit code) for machines."""
    import logging

    from sentirefine.logs import JsonFormatter

    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return  # text mode: the "error:"/"hint:" lines below are the human form
    logging.getLogger("sentirefine.cli").error(
        "command_failed",
        extra={"event": "command_failed", "exit_code": exc.exit_code,
               "error": {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}},
    )


@app.command()
@_friendly
def init() -> None:
    """Create the workspace: SQLite store, git repository with DVC (analytics off), remote."""
    from sentirefine.data.workspace import locked, open_store
    from sentirefine.integrations.versioning import ensure_repo, remote_dir

    cfg = _config()
    with locked(cfg), open_store(cfg, create=True):
        _log_to_workspace(cfg)
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
    strict: Annotated[bool, typer.Option(help="Fail at the first bad row; nothing is imported from any file.")] = False,
    inject_noise: Annotated[float, typer.Option(help="Flip this share of train labels (benchmarks).")] = 0.0,
    noise_seed: Annotated[int, typer.Option(help="Seed of the injected noise.")] = 0,
) -> None:
    """Import labelled rows into the workspace store, validating every row."""
    _check_share("--inject-noise", inject_noise)
    from sentirefine.data.ingest import ImportJob, import_files
    from sentirefine.data.workspace import locked, open_store

    cfg = _config()
    jobs = [ImportJob(path, "train", inject_noise, noise_seed)] + ([ImportJob(gold, "gold")] if gold else [])
    with locked(cfg), open_store(cfg, create=True) as store:
        _log_to_workspace(cfg)
        reports = import_files(store, jobs, rejects_dir=cfg.workspace / "rejects", strict=strict,
                               max_chars=cfg.store.max_text_chars)
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
    from sentirefine.data.workspace import locked, open_store
    from sentirefine.pipeline.loop import bootstrap as run_bootstrap
    from sentirefine.reporting.summary import iterations_table

    cfg = _config()
    _ensure_pretrained(cfg)
    with locked(cfg), open_store(cfg) as store:
        run_bootstrap(cfg, store)
        typer.echo(iterations_table(store.iterations()[:1], cfg.models.order))


@app.command()
@_friendly
def pretrain(
    from_dir: Annotated[Path | None, typer.Option("--from", help="Continue MLM from this local HF checkpoint "
                                                   "(keeps its tokenizer) instead of a new BERT.")] = None,
    extra: Annotated[list[Path] | None, typer.Option(help="Extra unlabelled text (TSV/CSV with a text column, or "
                                                     "one text per line; .gz ok). Repeatable.")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Training-time budget (total over resumes).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Step budget (total over resumes).")] = None,
    fresh: Annotated[bool, typer.Option(help="Discard saved corpus/tokenizer/state and start over.")] = False,
) -> None:
    """Masked-LM pretraining of a BERT on the corpus text (never gold); resumable; writes an HF checkpoint."""
    cfg = _config()
    budget = {k: v for k, v in (("max_minutes", max_minutes), ("max_steps", max_steps)) if v is not None}
    if budget:
        cfg = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update=budget)})
    _run_pretrain(cfg, from_dir, extra or [], fresh)


def _ensure_pretrained(cfg: Config) -> None:
    """`models.bert.checkpoint: pretrained` (the default) and no checkpoint yet: run `pretrain` first.

    The BERT member needs a Korean-capable starting point and none can be downloaded, so the
    first `refine` of a workspace makes one from its own train text, within `pretrain`'s budget
    (resumable like any `pretrain`). Run `sentirefine pretrain` yourself to add `--extra` text.
    """
    if cfg.models.bert.checkpoint != "pretrained" or "bert" not in cfg.models.order:
        return
    from sentirefine.data.workspace import open_store
    from sentirefine.pipeline.train import check_trainable
    from sentirefine.pretrain.run import output_dir

    if (output_dir(cfg) / "config.json").is_file():
        return
    with open_store(cfg) as store:  # once bootstrapped, BERT continues from its own checkpoints
        bootstrapped = any(it["iteration"] == 0 and it["finished_at"] for it in store.iterations())
        if not bootstrapped:
            check_trainable(store)  # a bad train split fails now, not after the pretraining budget
    if not bootstrapped:
        typer.echo(f"models.bert.checkpoint is 'pretrained' and {output_dir(cfg)} does not exist yet: "
                   f"pretraining it first (pretrain.max_minutes={cfg.pretrain.max_minutes}, "
                   f"max_steps={cfg.pretrain.max_steps})", err=True)
        _run_pretrain(cfg, None, [], fresh=False)


def _run_pretrain(cfg: Config, source: Path | None, extra: list[Path], fresh: bool) -> None:
    from sentirefine.data.workspace import locked, open_store
    from sentirefine.pretrain.run import pretrain as run_pretrain
    from sentirefine.pretrain.run import summary_lines

    with locked(cfg), open_store(cfg) as store:
        result = run_pretrain(cfg, store, source=source, extra=extra, fresh=fresh)
    typer.echo("\n".join(summary_lines(result)))


@app.command()
@_friendly
def refine(
    max_iterations: Annotated[int | None, typer.Option(
        help="Stop after this iteration number (0 = bootstrap only; default refine.max_iterations).")] = None,
    until_converged: Annotated[bool, typer.Option(
        "--until-converged/--ignore-convergence",
        help="Stop as soon as an iteration converged (default); --ignore-convergence runs on to max iterations, "
             "e.g. after importing human labels into a converged workspace.")] = True,
) -> None:
    """Run (or resume) the refinement loop until converged or max iterations (safe to schedule: a no-op
    once converged or at the maximum)."""
    cfg = _config()
    _run_refine(cfg, max_iterations, until_converged)


def _run_refine(cfg: Config, max_iterations: int | None, until_converged: bool = True) -> None:
    from sentirefine.data.workspace import locked, open_store
    from sentirefine.pipeline.loop import check_max_iterations
    from sentirefine.pipeline.loop import refine as run_refine
    from sentirefine.reporting.summary import iterations_table

    check_max_iterations(max_iterations)  # before a pretraining run or a lock: nothing done on a bad value
    _ensure_pretrained(cfg)
    with locked(cfg), open_store(cfg) as store:
        result = run_refine(cfg, store, max_iterations=max_iterations, until_converged=until_converged)
        typer.echo(iterations_table(store.iterations(), cfg.models.order))
        typer.echo(f"stopped: {result.stop_reason}")


def _check_rollback_checkpoints(cfg: Config, to_iteration: int) -> None:
    """The loop continues from iteration K's checkpoints: refuse a K whose checkpoints `gc` removed."""
    from sentirefine.errors import UsageError
    from sentirefine.integrations.retention import checkpoint_dirs

    dirs = checkpoint_dirs(cfg)
    if to_iteration in dirs or not dirs:
        return
    kept = ", ".join(str(i) for i in sorted(dirs))
    raise UsageError(f"iteration {to_iteration}'s checkpoints were removed (sentirefine gc): the loop could not "
                     f"continue from it", hint=f"roll back to an iteration that still has them ({kept}), or "
                     f"restore its labels from the snapshot: `sentirefine dataset restore --rev <its tag>`")


@app.command()
@_friendly
def gc(
    keep: Annotated[int, typer.Option(min=1, help="Finished iterations to keep, newest first (the newest is "
                                      "what the next iteration updates).")] = 3,
    dry_run: Annotated[bool, typer.Option(help="Print what would be removed; remove nothing.")] = False,
) -> None:
    """Remove checkpoints and registered versions of iterations neither served nor among the last KEEP.

    Versions with an alias (production, staging) and their iterations are kept; labels, history, metrics,
    runs and DVC snapshots are never touched. A kill at any point is safe: run the same command again.
    """
    from sentirefine.data.workspace import locked, open_store
    from sentirefine.integrations import retention

    cfg = _config()
    with locked(cfg), open_store(cfg) as store:
        before = {d: retention.tree_bytes(cfg.workspace / d) for d in ("models", "mlartifacts")}
        todo = retention.plan(cfg, store, keep)
        removed = todo.remove_iterations or "none"
        typer.echo(f"keeping iterations {sorted(todo.keep)}; removing checkpoints of {removed} "
                   f"and {len(todo.remove_versions)} registered version(s)")
        if dry_run:
            return
        retention.apply(cfg, todo)
        after = {d: retention.tree_bytes(cfg.workspace / d) for d in before}
    for d in before:
        typer.echo(f"  {d}/: {before[d] / 1e6:.1f} MB -> {after[d] / 1e6:.1f} MB")


@app.command()
@_friendly
def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Where the loop stands: iterations, unfinished stage, label counts, review queue."""
    from sentirefine.data.workspace import open_store
    from sentirefine.reporting.summary import iterations_table

    cfg = _config()
    with open_store(cfg) as store:
        info = {
            "workspace": str(cfg.workspace),
            "rows": {"train": store.count("train"), "gold": store.count("gold")},
            "train_labels": store.label_counts("train"),
            "unfinished_stage": store.current_stage(),
            "review_queue": store.open_review_count(),
            "last_operation": store.last_operation(),
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
    if info["last_operation"]:
        op = info["last_operation"]
        typer.echo(f"last {op['command']} at {op['created_at']}: {op['args']} -> {op['info']}")
    typer.echo(iterations_table(info["iterations"], cfg.models.order))


@app.command()
@_friendly
def rollback(
    to_iteration: Annotated[int, typer.Option(
        "--to-iteration", help="K = the labels after iteration K (those of snapshot data-iter-K); 0 = labels as "
        "imported, before any refinement. From 0 to the latest finished iteration.")],
    undo_human_labels: Annotated[bool, typer.Option(
        "--undo-human-labels/--keep-human-labels",
        help="Human labels (`review import`) are kept by default, since a person's label is final; "
             "--undo-human-labels resets those imported after iteration K too.")] = False,
) -> None:
    """Restore every train label to its value after iteration K, in one transaction (recorded in history).

    Later iterations' bookkeeping is removed so `refine` continues from K, and the changes undone no longer
    count as flips. Labels a person set stay as they are unless --undo-human-labels (the count kept is printed).
    A kill at any point leaves the labels as they were: run the same command again.
    """
    from sentirefine.data.workspace import locked, open_store
    from sentirefine.errors import UsageError

    cfg = _config()
    with locked(cfg), open_store(cfg) as store:
        latest = store.last_finished_iteration() or 0
        if not 0 <= to_iteration <= latest:
            raise UsageError(f"--to-iteration {to_iteration} is out of range: valid iterations in {cfg.workspace} "
                             f"are 0 to {latest} (0 = labels as imported)",
                             hint=f"pass a value from 0 to {latest}; `sentirefine status` lists the iterations")
        _check_rollback_checkpoints(cfg, to_iteration)
        chunk = cfg.store.chunk_size if isinstance(cfg.store.chunk_size, int) else 50_000
        result = store.rollback(to_iteration, chunk, undo_human=undo_human_labels)
    typer.echo(f"rolled back to iteration {to_iteration}: {result.changed} labels restored")
    if result.kept_human:
        typer.echo(f"kept {result.kept_human} human label(s) imported after iteration {to_iteration} "
                   f"(run again with --undo-human-labels to reset them too)")


@dataset_app.command("show")
@_friendly
def dataset_show(
    rev: Annotated[str, typer.Option(help="Tag or commit, e.g. data-iter-002.")],
    diff: Annotated[str | None, typer.Option(help="Another rev to compare labels with.")] = None,
) -> None:
    """Counts and label distribution of a snapshot (and its label diff against another rev)."""
    from sentirefine.integrations.versioning import read_snapshot

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
    from sentirefine.data.workspace import locked, open_store
    from sentirefine.integrations.versioning import restore

    cfg = _config()
    with locked(cfg), open_store(cfg) as store:
        changed = restore(cfg, store, rev)
    typer.echo(f"restored labels of {rev}: {changed} rows changed")


@app.command()
@_friendly
def report(
    output: Annotated[Path | None, typer.Option(help="HTML file (default WORKSPACE/reports/report.html).")] = None,
) -> None:
    """Write the self-contained HTML report (plots, tables, LLM usage, bias flags) and print its path."""
    _write_report(_config(), output)


def _write_report(cfg: Config, output: Path | None = None, *, echo: bool = True) -> Path:
    from sentirefine.data.workspace import open_store
    from sentirefine.reporting.report import write_report

    with open_store(cfg) as store:
        path = write_report(cfg, store, output)
        workspace_id = store.workspace_id()
    if cfg.tracking.enabled and cfg.report.log_to_mlflow:
        from sentirefine.integrations.tracking import Tracker

        try:  # the file is the result; an unreachable tracking server must not fail the command
            Tracker(cfg).log_report(workspace_id, path)
        except Exception as exc:
            typer.secho(f"warning: report not logged to MLflow ({type(exc).__name__}: {exc})", err=True,
                        fg=typer.colors.YELLOW)
    if echo:
        typer.echo(f"report: {path.resolve()}")
    return path


@review_app.command("export")
@_friendly
def review_export(
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write (.csv or .json).")],
    fmt: Annotated[str, typer.Option("--format", help="csv | labelstudio")] = "csv",
) -> None:
    """Write the rows needing a human (frozen, low-confidence, LLM-uncertain) with the ensemble's opinion."""
    from sentirefine.data.workspace import open_store
    from sentirefine.errors import UsageError
    from sentirefine.files.atomic import check_output_path
    from sentirefine.integrations import review as review_mod

    if fmt not in ("csv", "labelstudio"):
        raise UsageError(f"unknown export format {fmt!r}", hint="use --format csv or --format labelstudio")
    if fmt == "csv" and ".json" in [s.lower() for s in output.suffixes]:  # import reads *.json as Label Studio
        raise UsageError(f"{output}: a CSV export named .json could not be imported back",
                         hint="name it .csv, or pass --format labelstudio for Label Studio tasks")
    check_output_path(output, "review export")  # before the store is opened: a bad path fails first
    cfg = _config()
    with open_store(cfg) as store:
        writer = review_mod.export_csv if fmt == "csv" else review_mod.export_label_studio
        n = writer(store, output)
    typer.echo(f"{n} row(s) to review written to {output}")
    if fmt == "labelstudio":
        typer.echo("Label Studio labeling config for these tasks:\n" + review_mod.LABEL_STUDIO_CONFIG)
    else:
        typer.echo("fill in the human_label column (0/1), then: sentirefine review import " + str(output))


@review_app.command("import")
@_friendly
def review_import(
    path: Annotated[Path, typer.Argument(help="Filled-in review CSV or a Label Studio JSON export.")],
    strict: Annotated[bool, typer.Option(help="Any bad row: write nothing.")] = False,
) -> None:
    """Write human labels back (label_source='human'; later iterations never override them)."""
    from sentirefine.data.workspace import locked, open_store
    from sentirefine.integrations.review import import_labels

    cfg = _config()
    with locked(cfg), open_store(cfg) as store:
        result = import_labels(store, path, strict=strict)
    typer.echo(result.summary())
    if result.errors:
        typer.secho("some rows were rejected (listed above); the valid rows were written", err=True,
                    fg=typer.colors.YELLOW)
        raise typer.Exit(3)


@app.command()
@_friendly
def predict(
    path: Annotated[Path, typer.Argument(help="Texts to score: TSV/CSV with a text column (.gz ok); - = stdin.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV or JSONL file; - = stdout.")] = Path("-"),
    model_uri: Annotated[str | None, typer.Option(help="Model to score with (default: "
                                                  "models:/<prefix>-ensemble@production of this workspace).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="csv | jsonl (default: from the output's "
                                            "name, else csv).")] = None,
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows scored at a time (bounds memory).")] = 2000,
    strict: Annotated[bool, typer.Option(help="Fail at the first bad row (an output file is then not "
                                         "written).")] = False,
) -> None:
    """Score a file of texts with the served model: label, probability, confidence per row, streamed."""
    from sentirefine.integrations.batch_predict import fmt_for, predict_file

    cfg = _config()
    rejects = None if output == Path("-") else output.with_name(output.name + ".rejects.tsv")
    report = predict_file(cfg, path, output, fmt=fmt_for(output, fmt), model_uri=model_uri, chunk_rows=chunk_rows,
                          strict=strict, rejects=rejects)
    typer.echo(report.summary(), err=output == Path("-"))  # stdout is the predictions then
    if report.rejected:
        typer.secho("some rows were rejected (listed above); the valid rows were scored", err=True,
                    fg=typer.colors.YELLOW)
        raise typer.Exit(3)


@app.command("mlflow-ui")
@_friendly
def mlflow_ui(port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000) -> None:
    """Start the MLflow UI on 127.0.0.1 for this workspace's tracking store (Ctrl-C stops it)."""
    import os
    import shutil

    from sentirefine.integrations.tracking import tracking_uri

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
    from sentirefine.data.ingest import import_file
    from sentirefine.data.workspace import locked, open_store

    cfg = _config(default_file=demo_data.CONFIG)
    with locked(cfg), open_store(cfg, create=True) as store:
        _log_to_workspace(cfg)
        if store.count() == 0:
            for path, split, noise in ((demo_data.TRAIN, "train", demo_data.NOISE_RATE),
                                       (demo_data.GOLD, "gold", 0.0)):
                report = import_file(store, path, split=split, rejects_dir=cfg.workspace / "rejects",
                                     strict=True, noise_rate=noise, noise_seed=demo_data.NOISE_SEED)
                typer.echo(report.summary())
    _run_refine(cfg, max_iterations)
    report = _write_report(cfg, echo=False)
    typer.echo(_next_steps(cfg, report))


def _next_steps(cfg: Config, report: Path) -> str:
    """Where the demo's results are and what to run next, with the workspace the demo used."""
    import shlex
    import sys

    prog = sys.argv[0] if Path(sys.argv[0]).name == "sentirefine" else "python -m sentirefine"
    base = f"{prog} --workspace {shlex.quote(str(cfg.workspace))}"
    lines = [f"report: {report.resolve()}"]
    if cfg.log_file is not None:
        lines.append(f"log:    {cfg.log_file.resolve()} (every event as JSON, library warnings included)")
    lines.append("next:")
    for command, why in (("mlflow-ui", "runs, metrics and registered models in the MLflow UI"),
                         ("review export -o review.csv", "the rows a person should label"),
                         ("report", "the HTML report again"),
                         ("predict FILE -o scores.csv", "score texts with the production ensemble")):
        lines.append(f"  {base} {command}\n      {why}")
    return "\n".join(lines)
