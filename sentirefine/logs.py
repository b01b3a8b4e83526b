"""Structured logging: one JSON object per line (or a readable line with ``--log-format text``).

Why stdlib ``logging`` and not a framework: every library we use (MLflow, DVC, transformers)
already logs through it, so one formatter makes their lines structured too. Call sites pass
fields with ``extra={"event": ..., "iteration": ..., ...}``; :func:`log_event` is the short form.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from sentirefine.config import Config

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line: ts, level, logger, event/message and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or record.getMessage(),
        }
        if getattr(record, "event", None) and record.getMessage() != record.event:
            payload["message"] = record.getMessage()
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key != "event":
                payload[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            exc = record.exc_info[1]
            payload["error"] = {"type": type(exc).__name__, "message": str(exc)}
            if getattr(exc, "hint", None):
                payload["error"]["hint"] = exc.hint
        return json.dumps(payload, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable: ``HH:MM:SS level event key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD and k != "event"
        )
        head = getattr(record, "event", None) or record.getMessage()
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname.lower():7s} {head} {extras}".rstrip()
        if record.exc_info and record.exc_info[1] is not None:
            line += f" error={type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return line


class _OwnOrSevere(logging.Filter):
    """The console's filter once a log file is open: our own records, and other libraries' errors.

    Libraries' warnings (MLflow's, torch's, ``warnings.warn`` through ``py.warnings``) are for
    whoever debugs a run: they go to the JSON log file, and the console keeps what a user acts on.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("sentirefine") or record.levelno >= logging.ERROR


def configure_logging(fmt: str = "json", level: str = "INFO", log_file: str | os.PathLike | None = None,
                      console_level: str | None = None) -> None:
    """Logs to stderr in ``fmt`` (stdout stays free for command output), and to ``log_file`` as JSON.

    With a file, every record at ``level`` or above goes to it, libraries' included; the console
    shows ``console_level`` (default ``level``) and up, of which libraries' records only from
    ERROR. Without one (no workspace yet) the console gets everything, as nothing else would.
    Processes share the file by appending one line per write (the pool's and the job runner's
    workers open it too).
    """
    # MLflow otherwise installs its own handler and prints plain-text lines into the JSON stream
    # (read when mlflow is first imported, which is after this in every command and worker).
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # bars are for terminals, not logs
    # Library warnings become log records (py.warnings) in the same format. Off, then on: a second
    # captureWarnings(True) is a no-op, and whoever replaced warnings.showwarning since (pytest does
    # per test, a notebook may) would otherwise keep them.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    console.setLevel(console_level or level)
    handlers: list[logging.Handler] = [console]
    file = _file_handler(log_file) if log_file is not None else None
    if file is not None:
        file.setFormatter(JsonFormatter())
        file.setLevel(level)
        handlers.append(file)
        console.addFilter(_OwnOrSevere())
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = handlers
    root.setLevel(min(logging.getLevelName(level), logging.getLevelName(console_level or level)))
    # MLflow imported before this (a test, a notebook) installed its own stderr handler, and DVC
    # does once a Repo has been used: route both through ours. DVC's handler keeps the stream
    # it found, so in a later call (a second command in one process) it would write to a closed
    # one and raise instead of logging.
    for library in ("mlflow", "dvc"):
        library_log = logging.getLogger(library)
        library_log.handlers.clear()
        library_log.propagate = True
    # Third-party chatter stays at WARNING unless asked for.
    for noisy in ("urllib3", "filelock", "httpx", "transformers", "mlflow", "alembic", "git", "dvc", "scmrepo",
                  "google_genai"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a structured event: ``log_event(log, "chunk_corrected", rows=512, iteration=2)``."""
    logger.log(level, event, extra={"event": event, **fields})


def _file_handler(path: str | os.PathLike) -> logging.FileHandler | None:
    """The log file opened for appending, or None where it cannot be (a read-only workspace, a full
    disk): a command must not fail for its diary; the console then shows everything, as without one."""
    try:
        os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
        return logging.FileHandler(path, encoding="utf-8")
    except OSError:
        return None


class LogSetup(NamedTuple):
    """``configure_logging``'s arguments, picklable: a worker process receives them to log as its command does."""

    fmt: str = "json"
    level: str = "INFO"
    log_file: str | None = None
    console_level: str | None = None


def log_setup(config: Config) -> LogSetup:
    """The :class:`LogSetup` of ``config`` (``configure_logging(*log_setup(config))``)."""
    file = config.log_file
    log = config.logging
    return LogSetup(log.format, log.level, None if file is None else str(file), log.console_level)


@contextmanager
def stage_log(logger: logging.Logger, stage: str, **fields: Any) -> Iterator[dict[str, Any]]:
    """Log ``<stage>_start`` and ``<stage>_end`` with duration; the yielded dict adds end fields."""
    log_event(logger, f"{stage}_start", stage=stage, **fields)
    started = time.perf_counter()
    result: dict[str, Any] = {}
    try:
        yield result
    except BaseException as exc:
        logger.error(
            f"{stage}_failed",
            exc_info=True,
            extra={"event": f"{stage}_failed", "stage": stage, "error_type": type(exc).__name__, **fields},
        )
        raise
    log_event(
        logger,
        f"{stage}_end",
        stage=stage,
        duration_s=round(time.perf_counter() - started, 3),
        **fields,
        **result,
    )


def progress_disabled() -> bool | None:
    """tqdm's ``disable`` for every progress bar: None = automatic (off when stderr is not a
    terminal, e.g. under cron or Airflow), True under ``--quiet``, which sets ``TQDM_DISABLE=1``
    so that worker processes inherit the choice."""
    import os

    return True if os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true") else None
