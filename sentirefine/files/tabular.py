"""Splitting a user's TSV or CSV file into records, every physical line accounted for.

* **TSV (NSMC)** has no quoting: one physical line is one record, fields split on TAB. A ``"``
  is an ordinary character (NSMC reviews often open with a quoted line), so a stray quote can
  never swallow the lines after it.
* **CSV** follows RFC 4180: a quoted field may hold commas, quotes (doubled) and line breaks.
  A record that opens a quote is extended line by line only while the quote is open and the
  record stays within the size bound; a quote still open at the bound (or at the end of the
  file) rejects that one line as an "unterminated quoted field" and reading resumes on the next
  line, so one bad quote costs one row, not the rest of the file.

Each record carries its first line number and how many lines it spans, so an import can say
which records a quoted line break joined.
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sentirefine.errors import InputDataError
from sentirefine.files.userfile import Line, iter_lines

# Header names that mark the text column (NSMC calls it ``document``), for labelled and unlabelled files.
TEXT_COLUMNS = ("document", "text", "sentence", "review")
# Room for the id, label and extra columns around a text of the maximum length.
LINE_SLACK_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Record:
    """The fields of one record, or why it has none (``problem``, with ``detail``), at line ``line``."""

    line: int
    fields: list[str]
    raw: str
    problem: str | None = None
    detail: str = ""
    lines: int = 1


def delimiter_for(path: Path, header: str) -> str:
    """TAB for ``.tsv``/``.txt``, comma for ``.csv`` (under any ``.gz``), else whichever the header uses more."""
    inner = path.with_suffix("") if path.suffix == ".gz" else path
    if inner.suffix in (".tsv", ".txt"):
        return "\t"
    if inner.suffix == ".csv":
        return ","
    return "\t" if header.count("\t") >= header.count(",") else ","


def read_records(path: Path, *, max_chars: int) -> tuple[list[str], str, Iterator[Record]]:
    """(header fields, delimiter, the data records) of ``path``; a field may hold ``max_chars`` characters."""
    lines = iter_lines(path, max_chars=max_chars + LINE_SLACK_CHARS)
    first = next(lines, None)
    if first is None or not first.text.strip():
        raise InputDataError(f"{path} is empty or starts with a blank line",
                             hint="the first line must be a header, e.g. 'id<TAB>document<TAB>label'")
    if first.overlong:
        raise InputDataError(f"{path}:1: the header line is longer than {max_chars + LINE_SLACK_CHARS} characters",
                             hint="is this a labelled TSV/CSV file?")
    delimiter = delimiter_for(path, first.text)
    if delimiter == "\t":
        return first.text.split("\t"), delimiter, _tsv_records(lines, max_chars)
    header = _parse_csv([first.text], delimiter)
    if not isinstance(header, list):
        raise InputDataError(f"{path}:1: the CSV header cannot be parsed ({header})",
                             hint="the first line must be a header such as 'text,label'")
    return header, delimiter, _csv_records(lines, delimiter, max_chars + LINE_SLACK_CHARS)


def _overlong(line: Line, limit: int) -> Record:
    return Record(line.number, [], line.text[:200], "line too long",
                  f"line longer than {limit} characters (the rest was skipped unread)")


def _tsv_records(lines: Iterator[Line], max_chars: int) -> Iterator[Record]:
    for line in lines:
        if line.overlong:
            yield _overlong(line, max_chars + LINE_SLACK_CHARS)
        elif not line.text.strip():
            yield Record(line.number, [], line.text, "blank line")
        else:
            yield Record(line.number, line.text.split("\t"), line.text)


_OPEN = "open"  # a quoted field continues on the next line


def _parse_csv(texts: list[str], delimiter: str) -> list[str] | str:
    """The one record ``texts`` (consecutive lines) form, ``_OPEN``, or a parse error's text."""
    try:
        rows = list(csv.reader([t + "\n" for t in texts], delimiter=delimiter, strict=True))
    except csv.Error as exc:
        return _OPEN if "unexpected end of data" in str(exc) else f"malformed CSV: {exc}"
    if len(rows) != 1:
        return f"malformed CSV: {len(rows)} records on one line"
    return rows[0]


def _csv_records(lines: Iterator[Line], delimiter: str, limit: int) -> Iterator[Record]:
    queue: deque[Line] = deque()  # lines read ahead for a record whose quote is still open

    def fill() -> bool:
        line = next(lines, None)
        if line is not None:
            queue.append(line)
        return line is not None

    while queue or fill():
        first = queue[0]
        if first.overlong:
            queue.popleft()
            yield _overlong(first, limit)
            continue
        span, parsed = _extend(queue, fill, delimiter, limit)
        if parsed == _OPEN:
            queue.popleft()
            yield Record(first.number, [], first.text, "unterminated quoted field",
                         f"quoted field not closed within {limit} characters or before the end of the file")
            continue
        raw = "\n".join(queue.popleft().text for _ in range(span))
        if isinstance(parsed, str):
            yield Record(first.number, [], raw, "malformed CSV", parsed, lines=span)
        elif not raw.strip():
            yield Record(first.number, [], raw, "blank line", lines=span)
        else:
            yield Record(first.number, parsed, raw, lines=span)


def _extend(queue: deque[Line], fill, delimiter: str, limit: int) -> tuple[int, list[str] | str]:
    """How many queued lines the first record spans, and what they parse to (``_OPEN`` if unfinished)."""
    span, size = 1, len(queue[0].text)
    while True:
        parsed = _parse_csv([queue[i].text for i in range(span)], delimiter)
        if parsed != _OPEN:
            return span, parsed
        if span == len(queue) and not fill():
            return span, _OPEN
        if queue[span].overlong or size + len(queue[span].text) > limit:
            return span, _OPEN
        size += len(queue[span].text) + 1
        span += 1
