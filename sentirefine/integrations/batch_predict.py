"""`sentirefine predict`: score a file of texts with a registered model, streamed in chunks.

The downstream service loads ``models:/<prefix>-ensemble@production`` and calls ``predict``;
this command does the same for a file, so a batch job and the service answer alike. The input
is read the way ``import`` reads it (TSV/CSV, gzip by content, BOM, legacy encodings named,
one bounded line at a time) and each text passes import's checks (:func:`checked_text`); a
label column may be there and is ignored. Rows are scored ``chunk_rows`` at a time, so memory
stays flat in the file's size, and written as CSV or JSON Lines with the input line, the id (if
the file has one), label, probability and confidence.

Nothing is lost: every data record is either an output row (with its line number) or a reject
(line, reason) in the rejects file; ``strict`` stops at the first bad record instead. An output
file is written atomically: a kill leaves the old file or none, never half of one.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Any, Literal

from sentirefine.config import Config
from sentirefine.data.ingest import checked_text, normalise
from sentirefine.errors import InputDataError, ModelLoadError, UsageError
from sentirefine.files.atomic import atomic_write
from sentirefine.files.csvguard import guard_cell
from sentirefine.files.tabular import TEXT_COLUMNS, Record, read_records
from sentirefine.files.userfile import STDIN
from sentirefine.logs import log_event, progress_disabled

log = logging.getLogger(__name__)

Format = Literal["csv", "jsonl"]
COLUMNS = ("line", "id", "label", "probability", "confidence")


@dataclass(frozen=True, slots=True)
class TextRow:
    line: int
    id: str
    text: str


@dataclass(frozen=True, slots=True)
class Reject:
    line: int
    reason: str
    detail: str
    raw: str


@dataclass
class PredictReport:
    """What one `predict` read, scored and rejected."""

    source: str
    output: str
    model_uri: str
    read: int = 0
    predicted: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    rejects_path: str | None = None

    @property
    def rejected(self) -> int:
        return sum(self.reasons.values())

    def summary(self) -> str:
        text = (f"{self.source}: read {self.read}, predicted {self.predicted}, rejected {self.rejected} "
                f"-> {self.output} ({self.model_uri})")
        if self.rejected:
            text += "\n  rejected by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items()))
            text += "".join(f"\n  {e}" for e in self.examples)
            if self.rejects_path:
                text += f"\n  all rejected rows: {self.rejects_path}"
        return text


def default_model_uri(config: Config) -> str:
    return f"models:/{config.tracking.model_prefix}-ensemble@production"


def text_rows(path: Path, *, max_chars: int) -> Iterator[TextRow | Reject]:
    """Every data record of ``path`` (or stdin) as a row to score or a reject, in file order.

    Not a generator itself: the file is opened and its header checked on the call, so a bad
    input fails before any model is loaded.
    """
    header, _, records = read_records(path, max_chars=max_chars)
    names = [h.strip().lower() for h in header]
    i_text = next((names.index(c) for c in TEXT_COLUMNS if c in names), None)
    if i_text is None:
        raise InputDataError(f"{_name(path)}: header {header} has no text column ({'/'.join(TEXT_COLUMNS)})",
                             hint="the first line must be a header such as 'id<TAB>document' or 'text'")
    i_id = names.index("id") if "id" in names else None
    return (_row(record, len(names), i_text, i_id, max_chars) for record in records)


def _row(record: Record, width: int, i_text: int, i_id: int | None, max_chars: int) -> TextRow | Reject:
    if record.problem:
        return Reject(record.line, record.problem, record.detail or record.problem, record.raw)
    text = checked_text(record.fields, width, i_text, max_chars)
    if isinstance(text, tuple):
        return Reject(record.line, text[0], text[1] or text[0], record.raw)
    return TextRow(record.line, normalise(record.fields[i_id]) if i_id is not None else "", text)  # as import stores it


def load_scorer(config: Config, model_uri: str | None) -> tuple[Any, str]:
    """The pyfunc behind ``model_uri`` (default: the production ensemble of this workspace's registry)."""
    import mlflow

    from sentirefine.integrations.tracking import point_mlflow_at, tracking_uri

    uri = model_uri or default_model_uri(config)
    registry = tracking_uri(config)
    point_mlflow_at(registry)
    try:
        return mlflow.pyfunc.load_model(uri), uri
    except Exception as exc:  # MlflowException, OSError: a missing alias, model or directory
        raise ModelLoadError(
            f"cannot load model {uri} from {registry}: {str(exc).splitlines()[0][:300]}",
            hint="run `sentirefine refine` (with tracking enabled) so that a production version exists, "
                 "or pass --model-uri (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/PATH or a directory)",
        ) from exc


def predict_file(config: Config, source: Path, output: Path, *, fmt: Format, model_uri: str | None = None,
                 chunk_rows: int = 2000, strict: bool = False, rejects: Path | None = None) -> PredictReport:
    """Score ``source`` into ``output`` (``-`` = stdout); bad records go to ``rejects`` (or fail, ``strict``)."""
    from tqdm import tqdm

    rows = text_rows(source, max_chars=config.store.max_text_chars)
    model, uri = load_scorer(config, model_uri)
    report = PredictReport(_name(source), "stdout" if output == STDIN else str(output), uri)
    log_event(log, "predict_start", source=report.source, output=report.output, model_uri=uri, chunk_rows=chunk_rows)
    with _sink(output) as out, _rejects_sink(rejects) as bad, \
            tqdm(desc="predict", unit="row", disable=progress_disabled()) as bar:
        writer = _writer(out, fmt)
        for chunk in _chunks(_valid(rows, report, bad, strict, source), chunk_rows):
            report.predicted += _score(model, chunk, writer)
            bar.update(len(chunk))
    if rejects is not None and not report.rejected:
        rejects.unlink(missing_ok=True)  # no stale list from an earlier run beside a clean result
    report.rejects_path = str(rejects) if rejects is not None and report.rejected else None
    log_event(log, "predict_done", source=report.source, read=report.read, predicted=report.predicted,
              rejected=report.rejected, reasons=dict(report.reasons))
    return report


def _valid(rows: Iterable[TextRow | Reject], report: PredictReport, bad: IO[str] | None, strict: bool,
           source: Path) -> Iterator[TextRow]:
    """The rows that can be scored; each one that cannot is counted and listed (or, ``strict``, fatal)."""
    for item in rows:
        report.read += 1
        if isinstance(item, Reject):
            _reject(report, item, bad, strict, source)
        else:
            yield item


def _chunks(rows: Iterator[TextRow], size: int) -> Iterator[list[TextRow]]:
    """Lists of ``size`` rows (the last shorter): the memory bound of a run is one chunk, whatever the input."""
    while chunk := list(islice(rows, size)):
        yield chunk


def _score(model: Any, chunk: list[TextRow], writer: Any) -> int:
    import pandas as pd

    out = model.predict(pd.DataFrame({"text": [r.text for r in chunk]}))
    for row, label, p, conf in zip(chunk, out["label"], out["probability"], out["confidence"], strict=True):
        writer(row.line, row.id, int(label), float(p), float(conf))
    return len(chunk)


def _reject(report: PredictReport, item: Reject, bad: IO[str] | None, strict: bool, source: Path) -> None:
    if strict:
        raise InputDataError(f"{_name(source)}:{item.line}: {item.detail}",
                             hint="fix or remove that line, or leave out --strict to score the valid rows "
                                  "and list the rejected ones")
    report.reasons[item.reason] += 1
    if len(report.examples) < 5:
        report.examples.append(f"line {item.line}: {item.detail}")
    if bad is not None:
        bad.write(f"{item.line}\t{item.reason}\t{item.raw[:1000].replace(chr(9), ' ').replace(chr(10), ' ')}\n")


def _writer(out: IO[str], fmt: Format):
    """A function writing one scored row in ``fmt`` (CSV cells guarded against spreadsheet formulas)."""
    if fmt == "jsonl":
        def write_json(line: int, id_: str, label: int, p: float, conf: float) -> None:
            out.write(json.dumps(dict(zip(COLUMNS, (line, id_, label, p, conf), strict=True)),
                                 ensure_ascii=False) + "\n")
        return write_json
    table = csv.writer(out)
    table.writerow(COLUMNS)

    def write_csv(line: int, id_: str, label: int, p: float, conf: float) -> None:
        table.writerow((line, guard_cell(id_), label, repr(p), repr(conf)))
    return write_csv


@contextmanager
def _sink(output: Path) -> Iterator[IO[str]]:
    if output == STDIN:
        yield sys.stdout
        sys.stdout.flush()
        return
    with atomic_write(output, newline="") as out:
        yield out


def _rejects_sink(path: Path | None):
    if path is None:
        return nullcontext(None)
    return atomic_write(path, what="rejects file")


def fmt_for(output: Path, asked: str | None) -> Format:
    """The output format: as asked, else from the output's name (``.jsonl``/``.json``), else CSV."""
    if asked:
        if asked not in ("csv", "jsonl"):
            raise UsageError(f"--format {asked!r} is not csv or jsonl", hint="pass --format csv or --format jsonl")
        return asked  # type: ignore[return-value]
    return "jsonl" if output.suffix in (".jsonl", ".json", ".ndjson") else "csv"


def _name(path: Path) -> str:
    return "stdin" if path == STDIN else str(path)
