"""Import labelled text files into the store, validating every row.

Accepted: NSMC-style TSV (``id<TAB>document<TAB>label``, extra columns such as ``movie_id`` or
``rating`` allowed; no quoting: one line is one row) and CSV with a header holding
``text``/``document`` and ``label`` (RFC 4180 quoting; ``id`` optional). gzip is recognised by
content; a UTF-8 byte-order mark is dropped; other encodings are refused with the ``iconv``
line that converts them (:mod:`sentirefine.files.userfile`, :mod:`sentirefine.files.tabular`).

Nothing is dropped or changed silently: every record is inserted, found already present, or
rejected with its line number and reason (all rejects go to a rejects file, the summary shows
counts per reason and the first examples). Texts and ids are stored NFC-normalised with
surrounding whitespace removed, so the same review typed on macOS (NFD) and elsewhere is one
row. A file without an ``id`` column gets ids from its content digest and line number: the
same file re-imported is a no-op, and two different files never collide, whatever their names.

Transactions: each file is imported in one transaction (committed files are named in the
summary); ``strict`` (stop at the first bad row) puts all files in one transaction, so a bad
row anywhere imports nothing from any file. Re-importing a file is a no-op.
"""

from __future__ import annotations

import hashlib
import logging
import random
import unicodedata
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sentirefine.data import store_import
from sentirefine.data.store import Store, utcnow
from sentirefine.errors import InputDataError
from sentirefine.faults import crash_point
from sentirefine.files.atomic import atomic_write
from sentirefine.files.tabular import TEXT_COLUMNS, Record, read_records
from sentirefine.files.userfile import check_readable, sniff_encoding
from sentirefine.logs import log_event

log = logging.getLogger(__name__)

GROUP_COLUMNS = ("movie_id", "group", "group_key")
EXAMPLES_PER_REASON = 3
MAX_EXAMPLES = 10


@dataclass(frozen=True)
class RowNoise:
    """Instance-dependent injected noise: each row's own flip probability, by row id (absent: 0).

    Benchmarks use it to model annotators who err on ambiguous reviews (``bench/noise.py``);
    the same seeded draw as the other kinds decides each flip.
    """

    rates: Mapping[str, float]


NoiseRate = float | dict[int, float] | RowNoise


@dataclass(frozen=True)
class ImportJob:
    """One file to import into one split, with the label noise to inject (benchmarks, demo)."""

    path: Path
    split: str
    noise_rate: NoiseRate = 0.0
    noise_seed: int = 0


@dataclass
class ImportReport:
    """What one file's import did: counts, reasons with their first examples, where the rejects are."""

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
    multiline: int = 0
    first_multiline: int | None = None
    legacy_encoding: str | None = None
    committed: bool = False

    def reject(self, line: int, reason: str, detail: str, raw: str) -> None:
        """Count one bad row under ``reason``; keep it as an example while its reason has few."""
        self.rejected += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if self.reasons[reason] <= EXAMPLES_PER_REASON and len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{self.path}:{line}: {detail or reason}: {raw[:80]!r}")

    def summary(self) -> str:
        text = (f"{self.path} ({self.split}): read {self.read}, inserted {self.inserted}, "
                f"already present {self.already_present}, rejected {self.rejected}")
        if self.noise_flipped:
            text += f", noise flips injected {self.noise_flipped}"
        text += " — committed" if self.committed else " — nothing committed"
        if self.multiline:
            text += (f"\n  {self.multiline} record(s) hold quoted line breaks and span several lines "
                     f"(first at line {self.first_multiline})")
        if self.rejected:
            text += "\n  rejected by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items()))
            text += "".join(f"\n  {e}" for e in self.examples)
            text += f"\n  all rejected rows: {self.rejects_path}"
        if self.legacy_encoding:
            text += (f"\n  hint: the rows rejected as invalid UTF-8 read as {self.legacy_encoding}: convert the file "
                     f"with iconv (e.g. `iconv -f {self.legacy_encoding.split()[0]} -t utf-8`) and import it again")
        return text


def normalise(value: str) -> str:
    """The stored form of a text or id: NFC (macOS writes Hangul decomposed), surrounding space removed."""
    return unicodedata.normalize("NFC", value).strip()


@dataclass(frozen=True)
class _Parsed:
    line: int
    id: str
    text: str
    label: int
    group: str | None
    raw: str  # the record as read, for the rejects file should the id turn out to be a duplicate


class _RowParser:
    """Maps records to validated rows, naming the first problem of each bad one."""

    def __init__(self, header: list[str], path: Path, max_chars: int, *, legacy_ids: bool = False) -> None:
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
        # Id-less rows: "<name>@<digest>:<line>"; a store that already holds this file's rows under the
        # earlier "<name>:<line>" ids keeps them, so re-importing the file stays a no-op.
        self.id_prefix = None if self.i_id is not None else path.name if legacy_ids else f"{path.name}@{_digest(path)}"

    def parse(self, record: Record) -> _Parsed | tuple[str, str]:
        """A valid row, or (reason, detail) of why it is rejected."""
        fields = record.fields
        text = checked_text(fields, self.width, self.i_text, self.max_chars)
        if isinstance(text, tuple):
            return text
        label = fields[self.i_label].strip()
        if label not in ("0", "1"):
            return "label not 0/1", f"label {label!r} not in {{0, 1}}"
        row_id = normalise(fields[self.i_id]) if self.i_id is not None else f"{self.id_prefix}:{record.line}"
        if not row_id:
            return "empty id", ""
        group = normalise(fields[self.i_group]) if self.i_group is not None else None
        return _Parsed(record.line, row_id, text, int(label), group or None, record.raw)


def checked_text(fields: list[str], width: int, i_text: int, max_chars: int) -> str | tuple[str, str]:
    """A record's text in its stored form, or (reason, detail) of why the record is rejected.

    The checks every text a user hands in passes, whether it is imported or only scored
    (``sentirefine predict``), so both reject the same rows for the same reasons.
    """
    if len(fields) != width:
        return "wrong column count", f"wrong column count ({len(fields)} instead of {width})"
    if any(_has_surrogates(f) for f in fields):
        return "invalid UTF-8", ""
    if any("\x00" in f for f in fields):
        return "NUL byte", "NUL byte in a field"
    text = normalise(fields[i_text])
    if not text:
        return "empty text", ""
    if len(text) > max_chars:
        return "text too long", f"text longer than store.max_text_chars={max_chars} ({len(text)} chars)"
    return text


def _has_legacy_ids(conn, path: Path) -> bool:
    """Whether this file's id-less rows were imported before ids carried the file's digest."""
    pattern = path.name.replace("[", "[[]").replace("*", "[*]").replace("?", "[?]") + ":[0-9]*"
    return store_import.has_id_matching(conn, pattern)


def _digest(path: Path) -> str:
    """A short digest of the file's bytes: the id prefix of a file that has no id column."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:10]


def _has_surrogates(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def rejects_path_for(rejects_dir: Path, path: Path, split: str) -> Path:
    """One rejects file per (split, input file): same-named train and gold files never share one."""
    where = hashlib.sha1(str(Path(path).resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:6]
    return rejects_dir / f"{split}-{Path(path).name}-{where}.rejects.tsv"


def import_file(store: Store, path: Path, *, split: str, rejects_dir: Path, strict: bool = False,
                max_chars: int = 5000, batch: int = 2000, noise_rate: NoiseRate = 0.0,
                noise_seed: int = 0) -> ImportReport:
    """Import one file into ``split`` in one transaction; returns its report (raises on strict failure).

    ``noise_rate`` flips that share of the imported labels (fixed seed) and records the
    pre-noise label as the reference truth: the demo and benchmarks measure the loop with it.
    A ``{label: rate}`` mapping flips each class at its own rate (class-conditional noise,
    e.g. ``{1: 0.3, 0: 0.1}``); one random draw per train row either way, so a seed picks the
    same rows whatever the rates.
    """
    job = ImportJob(Path(path), split, noise_rate, noise_seed)
    return import_files(store, [job], rejects_dir=rejects_dir, strict=strict, max_chars=max_chars, batch=batch)[0]


def import_files(store: Store, jobs: Sequence[ImportJob], *, rejects_dir: Path, strict: bool = False,
                 max_chars: int = 5000, batch: int = 2000) -> list[ImportReport]:
    """Import several files: one transaction each, or (``strict``) one for all of them.

    A file that cannot be read at all (truncated gzip, another encoding, no header) raises an
    :class:`InputDataError` that also names the files already committed before it.
    """
    for job in jobs:
        check_readable(job.path)
    rejects_dir.mkdir(parents=True, exist_ok=True)
    reports = [ImportReport(path=job.path, split=job.split) for job in jobs]
    if strict:
        with store.transaction() as conn:
            for job, report in zip(jobs, reports, strict=True):
                _import_strict(conn, job, report, max_chars=max_chars, batch=batch, files=len(jobs))
                crash_point("import_strict_file_done")
        for report in reports:
            report.committed = True
    else:
        for job, report in zip(jobs, reports, strict=True):
            _import_one(store, job, report, reports, rejects_dir=rejects_dir, max_chars=max_chars, batch=batch)
    for report in reports:
        log_event(log, "import_done", path=str(report.path), split=report.split, read=report.read,
                  inserted=report.inserted, already_present=report.already_present, rejected=report.rejected,
                  reasons=report.reasons, noise_flipped=report.noise_flipped)
    return reports


def _import_strict(conn, job: ImportJob, report: ImportReport, *, max_chars: int, batch: int, files: int) -> None:
    try:
        _import_rows(conn, job, report, None, strict=True, max_chars=max_chars, batch=batch)
    except InputDataError as exc:
        scope = "nothing imported from any file" if files > 1 else "nothing imported"
        raise InputDataError(f"{exc.message} ({scope}: --strict)", hint=exc.hint) from None


def _import_one(store: Store, job: ImportJob, report: ImportReport, reports: list[ImportReport], *,
                rejects_dir: Path, max_chars: int, batch: int) -> None:
    """One file in its own transaction, its rejects file replaced only once the rows are committed."""
    report.rejects_path = rejects_path_for(rejects_dir, job.path, job.split)
    try:
        with ExitStack() as stack:
            rejects = stack.enter_context(atomic_write(report.rejects_path, errors="backslashreplace"))
            rejects.write("line\treason\traw\n")
            with store.transaction() as conn:
                _import_rows(conn, job, report, rejects, strict=False, max_chars=max_chars, batch=batch)
            crash_point("import_after_commit")  # rows committed, rejects file not yet in place
    except InputDataError as exc:
        done = [f"{r.path} ({r.read} rows read, {r.inserted} inserted)" for r in reports if r.committed]
        note = f"; already committed: {', '.join(done)}" if done else ""
        raise InputDataError(f"{exc.message} (nothing imported from {job.path}{note})", hint=exc.hint) from None
    report.committed = True
    if not report.rejected:
        report.rejects_path.unlink(missing_ok=True)
        report.rejects_path = None


def _import_rows(conn, job: ImportJob, report: ImportReport, rejects: IO[str] | None, *, strict: bool,
                 max_chars: int, batch: int) -> None:
    """Validate and insert every record of ``job.path`` inside the caller's transaction."""
    header, _, records = read_records(job.path, max_chars=max_chars)
    parser = _RowParser(header, job.path, max_chars, legacy_ids=_has_legacy_ids(conn, job.path))
    seen, rng = store_import.SeenIds(conn), random.Random(job.noise_seed)

    def flush(rows: list[_Parsed]) -> None:
        fresh, duplicates = seen.claim(rows)
        for r, first in duplicates:
            _reject(report, rejects, strict, r.line, "duplicate id", f"duplicate id {r.id!r} (first on line {first})",
                    r.raw)
        _insert(conn, fresh, job, report, rejects, strict, rng)
        crash_point("import_batch")  # inside the file's transaction: a kill here commits nothing of it

    pending: list[_Parsed] = []
    for record in records:
        report.read += 1
        _note_span(report, record)
        parsed = parser.parse(record) if record.problem is None else (record.problem, record.detail)
        if isinstance(parsed, tuple):
            _reject_record(report, rejects, strict, record, *parsed)
            continue
        pending.append(parsed)
        if len(pending) >= batch:
            flush(pending)
            pending = []
    flush(pending)


def _note_span(report: ImportReport, record: Record) -> None:
    if record.lines > 1:
        report.multiline += 1
        report.first_multiline = report.first_multiline or record.line


def _reject_record(report: ImportReport, rejects: IO[str] | None, strict: bool, record: Record, reason: str,
                   detail: str) -> None:
    if reason == "invalid UTF-8" and report.legacy_encoding is None:
        report.legacy_encoding = _legacy_encoding(record.raw)
    _reject(report, rejects, strict, record.line, reason, detail, record.raw)


def _legacy_encoding(raw: str) -> str | None:
    guess = sniff_encoding(raw.encode("utf-8", "surrogateescape"))
    return guess if guess and "unknown" not in guess else None


def _reject(report: ImportReport, rejects: IO[str] | None, strict: bool, line: int, reason: str, detail: str,
            raw: str) -> None:
    """Count and write one bad row; under ``strict`` stop the import (its transaction rolls back)."""
    if strict or rejects is None:
        raise InputDataError(f"{report.path}:{line}: {detail or reason}: {raw[:80]!r}",
                             hint="fix the row or import without --strict to collect rejects")
    report.reject(line, reason, detail, raw)
    rejects.write(f"{line}\t{detail or reason}\t{raw!r}\n")


def _insert(conn, rows: list[_Parsed], job: ImportJob, report: ImportReport, rejects: IO[str] | None, strict: bool,
            rng: random.Random) -> None:
    """Insert a batch; ids already in the DB must hold identical content (idempotent re-import)."""
    if not rows:
        return
    existing = store_import.stored_content(conn, [r.id for r in rows])
    fresh: list[tuple] = []
    truth: list[tuple[str, int]] = []
    now, noisy = utcnow(), _noisy(job.noise_rate) and job.split == "train"
    for r in rows:
        if r.id in existing:
            _already_present(report, rejects, strict, r, existing[r.id], job)
            continue
        label = r.label
        if noisy and rng.random() < _rate(job.noise_rate, r.label, r.id):
            label = 1 - label
            report.noise_flipped += 1
        if noisy:
            truth.append((r.id, r.label))
        fresh.append((r.id, r.text, label, label, now, job.split, r.group))
    store_import.insert_sentences(conn, fresh)
    if truth:
        store_import.insert_reference_labels(conn, truth)
    report.inserted += len(fresh)


def _already_present(report: ImportReport, rejects: IO[str] | None, strict: bool, row: _Parsed,
                     stored: tuple, job: ImportJob) -> None:
    """A row whose id is stored: the same content is a no-op, anything else a conflict (never overwritten)."""
    same = stored == (row.text, row.label, job.split) or (
        stored[0] == row.text and stored[2] == job.split and _noisy(job.noise_rate))
    if same:
        report.already_present += 1
        return
    _reject(report, rejects, strict, row.line, "conflicts with a stored row",
            f"id {row.id!r} already in the store with different text/label/split", row.raw)


def _rate(noise_rate: NoiseRate, label: int, row_id: str) -> float:
    """Flip probability of the row ``row_id`` whose true label is ``label``."""
    if isinstance(noise_rate, RowNoise):
        return noise_rate.rates.get(row_id, 0.0)
    return noise_rate.get(label, 0.0) if isinstance(noise_rate, dict) else noise_rate


def _noisy(noise_rate: NoiseRate) -> bool:
    if isinstance(noise_rate, RowNoise):
        return any(v > 0 for v in noise_rate.rates.values())
    return any(v > 0 for v in noise_rate.values()) if isinstance(noise_rate, dict) else noise_rate > 0
