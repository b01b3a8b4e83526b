"""Import labelled text files into the store, validating every row.

Accepted: NSMC-style TSV (``id<TAB>document<TAB>label``, extra columns such as ``movie_id`` or
``rating`` allowed) and CSV with a header holding ``text``/``document`` and ``label`` (``id``
optional: the line number stands in). ``.gz`` is read transparently.

Nothing is dropped silently: every bad row is counted, the first examples are reported with
their line numbers, and all of them are written to a rejects file. The whole file is imported
in one transaction, so ``--strict`` (stop at the first bad row) leaves the database untouched.
Re-importing the same file is a no-op: a row whose id exists with the same content is skipped.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sentirefine.errors import InputDataError
from sentirefine.logs import log_event
from sentirefine.sqlbatch import select_in
from sentirefine.store import Store, utcnow

log = logging.getLogger(__name__)

TEXT_COLUMNS = ("document", "text", "sentence", "review")
GROUP_COLUMNS = ("movie_id", "group", "group_key")
MAX_EXAMPLES = 5


@dataclass
class ImportReport:
    path: Path
    split: str
    read: int = 0
    inserted: int = 0
    already_present: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    rejects_path: Path | None = None
    noise_flipped: int = 0

    def reject(self, line: int, reason: str, raw: str) -> None:
        self.rejected += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{self.path}:{line}: {reason}: {raw[:80]!r}")

    def summary(self) -> str:
        text = (f"{self.path} ({self.split}): read {self.read}, inserted {self.inserted}, "
                f"already present {self.already_present}, rejected {self.rejected}")
        if self.noise_flipped:
            text += f", noise flips injected {self.noise_flipped}"
        if self.rejected:
            text += "\n  reasons: " + ", ".join(f"{k}={v}" for k, v in sorted(self.reasons.items()))
            text += "".join(f"\n  {e}" for e in self.examples)
            text += f"\n  all rejected rows: {self.rejects_path}"
        return text


@dataclass(frozen=True)
class _Parsed:
    line: int
    id: str
    text: str
    label: int
    group: str | None
    raw: str  # the record as read, for the rejects file should the id turn out to be a duplicate


class _SeenIds:
    """The ids this import has taken so far, with their line numbers, in a SQLite temp table.

    A dict of them would grow with the file (≈130 B an id: +36 MB from 200k to 480k rows,
    ``bench memory``); SQLite pages the temp table, so import memory stays flat.
    """

    def __init__(self, conn) -> None:
        self.conn = conn
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS import_seen (id TEXT PRIMARY KEY, line INTEGER NOT NULL)")
        conn.execute("DELETE FROM temp.import_seen")

    def claim(self, rows: list[_Parsed]) -> tuple[list[_Parsed], list[tuple[_Parsed, int]]]:
        """Split ``rows`` (in line order) into first occurrences and duplicates (with the first line)."""
        first = dict(select_in(self.conn, "SELECT id, line FROM temp.import_seen WHERE id IN ({marks})",
                               [r.id for r in rows]))
        fresh, duplicates = [], []
        for r in rows:
            if r.id in first:
                duplicates.append((r, first[r.id]))
            else:
                first[r.id] = r.line
                fresh.append(r)
        self.conn.executemany("INSERT INTO temp.import_seen (id, line) VALUES (?, ?)", [(r.id, r.line) for r in fresh])
        return fresh, duplicates


def _open_text(path: Path) -> io.TextIOBase:
    """Open as text; undecodable bytes become surrogates so the row (not the file) is rejected."""
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")


def _delimiter(path: Path, header_line: str) -> str:
    inner = path.with_suffix("") if path.suffix == ".gz" else path
    if inner.suffix in (".tsv", ".txt"):
        return "\t"
    if inner.suffix == ".csv":
        return ","
    return "\t" if header_line.count("\t") >= header_line.count(",") else ","


class _RowParser:
    """Maps raw CSV records to validated rows, reporting the first problem of each bad one."""

    def __init__(self, header: list[str], path: Path, max_chars: int) -> None:
        names = [h.strip().lower() for h in header]
        self.width = len(names)
        self.i_text = next((names.index(c) for c in TEXT_COLUMNS if c in names), None)
        self.i_label = names.index("label") if "label" in names else None
        self.i_id = names.index("id") if "id" in names else None
        self.i_group = next((names.index(c) for c in GROUP_COLUMNS if c in names), None)
        if self.i_text is None or self.i_label is None:
            raise InputDataError(
                f"{path}: header {header} lacks a text column ({'/'.join(TEXT_COLUMNS)}) or a 'label' column",
                hint="use NSMC format 'id<TAB>document<TAB>label' or a CSV with 'text,label' header",
            )
        self.path, self.max_chars = path, max_chars

    def parse(self, record: list[str], line: int) -> _Parsed | str:
        """A valid row, or the reason it is rejected."""
        if len(record) != self.width:
            return f"wrong column count ({len(record)} instead of {self.width})"
        if any(_has_surrogates(f) for f in record):
            return "invalid UTF-8"
        text = record[self.i_text].strip()
        if not text:
            return "empty text"
        if "\x00" in text:
            return "NUL byte in text"
        if len(text) > self.max_chars:
            return f"text longer than store.max_text_chars={self.max_chars} ({len(text)} chars)"
        label = record[self.i_label].strip()
        if label not in ("0", "1"):
            return f"label {label!r} not in {{0, 1}}"
        row_id = record[self.i_id].strip() if self.i_id is not None else f"{self.path.name}:{line}"
        if not row_id:
            return "empty id"
        group = record[self.i_group].strip() if self.i_group is not None else None
        return _Parsed(line, row_id, text, int(label), group or None, "\t".join(record))


def _has_surrogates(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    with _open_text(path) as handle:
        first = handle.readline()
        if not first:
            raise InputDataError(f"{path} is empty", hint="check the file path")
        delimiter = _delimiter(path, first)
        yield 1, next(csv.reader([first], delimiter=delimiter))
        reader = csv.reader(handle, delimiter=delimiter)
        line = 1
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield reader.line_num + 1, [f"\x00csv-error: {exc}"]
                continue
            line = reader.line_num + 1
            yield line, record


def import_file(
    store: Store,
    path: Path,
    *,
    split: str,
    rejects_dir: Path,
    strict: bool = False,
    max_chars: int = 5000,
    batch: int = 2000,
    noise_rate: float | dict[int, float] = 0.0,
    noise_seed: int = 0,
) -> ImportReport:
    """Import one file into ``split``; returns the report (raises on strict failure).

    ``noise_rate`` flips that share of the imported labels (fixed seed) and records the
    pre-noise label as the reference truth: the demo and benchmarks measure the loop with it.
    A ``{label: rate}`` mapping flips each class at its own rate (class-conditional noise,
    e.g. ``{1: 0.3, 0: 0.1}``); one random draw per train row either way, so a seed picks the
    same rows whatever the rates.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"input file not found: {path}")
    report = ImportReport(path=path, split=split)
    rng = random.Random(noise_seed)
    rejects_dir.mkdir(parents=True, exist_ok=True)
    report.rejects_path = rejects_dir / f"{path.name}.rejects.tsv"
    records = _records(path)
    _, header = next(records)
    parser = _RowParser(header, path, max_chars)
    with store.transaction() as conn, open(report.rejects_path, "w", encoding="utf-8",
                                           errors="backslashreplace") as rejects:
        rejects.write("line\treason\traw\n")
        seen = _SeenIds(conn)

        def flush(rows: list[_Parsed]) -> None:
            fresh, duplicates = seen.claim(rows)
            for r, first in duplicates:
                _reject(report, rejects, strict, r.line, f"duplicate id {r.id!r} (first on line {first})", r.raw)
            _insert(conn, fresh, split, report, rejects, strict, rng, noise_rate)

        pending: list[_Parsed] = []
        for line, record in records:
            report.read += 1
            if not record:
                parsed: _Parsed | str = "blank line"
            elif record[0].startswith("\x00csv-error"):
                parsed = record[0][1:]
            else:
                parsed = parser.parse(record, line)
            if isinstance(parsed, str):
                _reject(report, rejects, strict, line, parsed, "\t".join(record))
                continue
            pending.append(parsed)
            if len(pending) >= batch:
                flush(pending)
                pending = []
        flush(pending)
    if not report.rejected:
        report.rejects_path.unlink()
        report.rejects_path = None
    log_event(log, "import_done", path=str(path), split=split, read=report.read, inserted=report.inserted,
              already_present=report.already_present, rejected=report.rejected, noise_flipped=report.noise_flipped)
    return report


def _reject(report: ImportReport, rejects, strict: bool, line: int, reason: str, raw: str) -> None:
    """Count and write one bad row; under ``strict`` stop the import (its transaction rolls back)."""
    if strict:
        raise InputDataError(f"{report.path}:{line}: {reason}: {raw[:80]!r}",
                             hint="fix the row or import without --strict to collect rejects")
    report.reject(line, reason, raw)
    rejects.write(f"{line}\t{reason}\t{raw!r}\n")


def _insert(conn, rows: list[_Parsed], split: str, report: ImportReport, rejects, strict: bool,
            rng: random.Random, noise_rate: float | dict[int, float]) -> None:
    """Insert a batch; ids already in the DB must hold identical content (idempotent re-import)."""
    if not rows:
        return
    existing = {r[0]: r[1:] for r in select_in(
        conn, "SELECT id, text, original_label, split FROM sentences WHERE id IN ({marks})", [r.id for r in rows])}
    fresh: list[tuple] = []
    truth: list[tuple[str, int]] = []
    now = utcnow()
    for r in rows:
        if r.id in existing:
            if existing[r.id] == (r.text, r.label, split) or (
                existing[r.id][0] == r.text and existing[r.id][2] == split and _noisy(noise_rate)
            ):
                report.already_present += 1
                continue
            _reject(report, rejects, strict, r.line,
                    f"id {r.id!r} already in the store with different text/label/split", r.raw)
            continue
        label = r.label
        if _noisy(noise_rate) and split == "train" and rng.random() < _rate(noise_rate, r.label):
            label = 1 - label
            report.noise_flipped += 1
        if _noisy(noise_rate) and split == "train":
            truth.append((r.id, r.label))
        fresh.append((r.id, r.text, label, label, now, split, r.group))
    conn.executemany(
        "INSERT INTO sentences (id, text, original_label, current_label, label_last_updated, split, group_key) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        fresh,
    )
    if truth:
        conn.executemany(
            "INSERT OR REPLACE INTO reference_labels (sid, label) SELECT sid, ? FROM sentences WHERE id = ?",
            [(label, rid) for rid, label in truth],
        )
    report.inserted += len(fresh)


def _rate(noise_rate: float | dict[int, float], label: int) -> float:
    """Flip probability of a row whose true label is ``label``."""
    return noise_rate.get(label, 0.0) if isinstance(noise_rate, dict) else noise_rate


def _noisy(noise_rate: float | dict[int, float]) -> bool:
    return any(v > 0 for v in noise_rate.values()) if isinstance(noise_rate, dict) else noise_rate > 0
