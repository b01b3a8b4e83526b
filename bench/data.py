"""Benchmark inputs: fixed-seed subsets of NSMC (or of the bundled demo files) written as TSV.

Why files: every arm imports through ``sentirefine.data.ingest`` exactly as a user would, so the
subset is materialised once per run and each arm's fresh workspace imports the same bytes.
"""

from __future__ import annotations

import csv
import gzip
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sentirefine import demo

REPO = Path(__file__).resolve().parents[1]
SHARED_NSMC = REPO.parent / "shared" / "data" / "nsmc"


@dataclass(frozen=True)
class Source:
    """Where train/gold (and the extra scale file) come from."""

    name: str
    train: Path
    gold: Path
    extra: Path | None = None


def source(name: str) -> Source:
    """``nsmc`` (../shared/data/nsmc, skipped clearly when absent) or ``demo`` (bundled)."""
    if name == "demo":
        return Source("demo", demo.TRAIN, demo.GOLD)
    if name != "nsmc":
        raise SystemExit(f"unknown data source {name!r}: use 'nsmc' or 'demo'")
    if not (SHARED_NSMC / "train.tsv.gz").is_file():
        raise SystemExit(f"NSMC not found at {SHARED_NSMC}: the quality benchmark needs ../shared/data/nsmc "
                         "(or pass --data demo for the bundled 8k/2k sample)")
    return Source("nsmc", SHARED_NSMC / "train.tsv.gz", SHARED_NSMC / "test.tsv.gz", SHARED_NSMC / "extra.tsv.gz")


def _rows(path: Path) -> Iterator[tuple[str, str, str]]:
    """(id, document, label) of a NSMC-style gzipped TSV (extra columns such as rating dropped)."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = [h.strip().lower() for h in next(reader)]
        i_id, i_doc, i_label = header.index("id"), header.index("document"), header.index("label")
        for rec in reader:
            if len(rec) == len(header):
                yield rec[i_id], rec[i_doc], rec[i_label]


def _write(rows: list[tuple[str, str, str]] | Iterator[tuple[str, str, str]], target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(target, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", "document", "label"])
        for row in rows:
            writer.writerow(row)
            n += 1
    return n


def subset(path: Path, size: int | None, seed: int, target: Path) -> int:
    """Write a fixed-seed sample of ``size`` rows (file order kept; None = all) to ``target``."""
    rows = list(_rows(path))
    if size is not None and size < len(rows):
        keep = sorted(random.Random(seed).sample(range(len(rows)), size))
        rows = [rows[i] for i in keep]
    return _write(rows, target)


def head(paths: list[Path], size: int, target: Path) -> int:
    """The first ``size`` rows of ``paths`` read one after another, streamed (constant memory)."""

    def stream() -> Iterator[tuple[str, str, str]]:
        left = size
        for path in paths:
            for row in _rows(path):
                if left <= 0:
                    return
                left -= 1
                yield row

    return _write(stream(), target)
