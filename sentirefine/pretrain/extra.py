"""Reading ``--extra`` unlabelled text files for the pretraining corpus.

Why its own reader: extra text comes from anywhere (NSMC-style TSV, CSV, one text per line,
gzipped), is unlabelled, and may be large, so it is read like an import — bounded memory per
line, no quote swallowing — but forgivingly: what is not usable text is skipped, not rejected.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sentirefine.files.tabular import TEXT_COLUMNS, read_records
from sentirefine.files.userfile import check_readable, iter_lines

EXTRA_MAX_CHARS = 20_000  # per line of an --extra file: longer lines are skipped, never held whole


def read_text_file(path: Path, max_chars: int = EXTRA_MAX_CHARS) -> Iterator[str]:
    """Texts of an unlabelled file: TSV/CSV with a text column (NSMC: ``document``), else one per line.

    Read like an import (:mod:`sentirefine.files.tabular`): gzip by content, BOM dropped, TSV without
    quoting (a review opening with ``"`` does not swallow the lines after it), bounded memory per
    line; rows without the column and over-long lines are skipped (this text is unlabelled).
    """
    path = check_readable(path, "extra text file")
    first = next(iter_lines(path, max_chars=max_chars, what="extra text file"), None)
    names = [c.strip().lower() for c in (first.text if first else "").replace(",", "\t").split("\t")]
    if not any(c in names for c in TEXT_COLUMNS):  # plain text: the first line is a text too
        yield from (line.text for line in iter_lines(path, max_chars=max_chars) if not line.overlong)
        return
    header, _, records = read_records(path, max_chars=max_chars)
    column = next(header.index(h) for h in header if h.strip().lower() in TEXT_COLUMNS)
    for record in records:
        if record.problem is None and len(record.fields) > column:
            yield record.fields[column]
