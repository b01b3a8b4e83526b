"""The human review round trip: export the rows a model cannot settle, import a person's labels.

Export picks the train rows that need a human — frozen (oscillating) rows and open review
queue entries (low confidence, or whatever reason the LLM step left them open with) — with the
ensemble's latest opinion, as CSV or as Label Studio tasks with predictions. Import reads the
CSV back (a ``human_label`` column) or a Label Studio JSON export, validates every row first,
and writes the labels with ``label_source='human'``: final, never overridden by a later
iteration (enforced in ``Store._apply_labels`` and in the policy's view of the predictions).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentirefine.errors import InputDataError
from sentirefine.sqlbatch import select_in
from sentirefine.store import Store

CSV_COLUMNS = ["id", "text", "current_label", "original_label", "reason", "p_positive", "confidence", "iteration",
               "human_label"]
CHOICES = {"negative": 0, "positive": 1, "0": 0, "1": 1}
LABEL_STUDIO_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single">
    <Choice value="negative"/>
    <Choice value="positive"/>
  </Choices>
</View>"""
MAX_EXAMPLES = 20


def review_rows(store: Store) -> Iterator[dict[str, Any]]:
    """Train rows needing a human, in sid order, with the ensemble's latest prediction."""
    cursor = store.conn.execute(
        """
        SELECT s.id, s.text, s.current_label, s.original_label, s.frozen, q.reason, p.p_positive, p.confidence,
               p.iteration
        FROM sentences s
        LEFT JOIN review_queue q ON q.sid = s.sid AND q.status = 'open'
        LEFT JOIN predictions p ON p.sid = s.sid AND p.iteration = (SELECT max(iteration) FROM predictions)
        WHERE s.split = 'train' AND s.label_source != 'human' AND (s.frozen = 1 OR q.sid IS NOT NULL)
        ORDER BY s.sid
        """
    )
    for id_, text, cur, orig, frozen, reason, p_pos, conf, iteration in cursor:
        yield {"id": id_, "text": text, "current_label": cur, "original_label": orig,
               "reason": "frozen" if frozen or reason == "oscillation" else reason,
               "p_positive": _round(p_pos), "confidence": _round(conf), "iteration": iteration}


def export_csv(store: Store, path: Path) -> int:
    """Write the review rows to ``path`` (UTF-8 CSV, empty ``human_label`` to fill in)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in review_rows(store):
            writer.writerow({**row, "human_label": ""})
            n += 1
    return n


def export_label_studio(store: Store, path: Path) -> int:
    """Write Label Studio tasks (``data`` + the ensemble's choice as a prediction) to ``path``.

    Import the file into a project whose labeling config is ``LABEL_STUDIO_CONFIG``
    (printed by ``sentirefine review export --format labelstudio``).
    """
    tasks = []
    for row in review_rows(store):
        task: dict[str, Any] = {"data": {"text": row["text"], "sentirefine_id": row["id"], "reason": row["reason"],
                                         "current_label": row["current_label"]}}
        if row["p_positive"] is not None:
            choice = "positive" if row["p_positive"] > 0.5 else "negative"
            task["predictions"] = [{
                "model_version": f"sentirefine-iter-{row['iteration']}", "score": row["confidence"],
                "result": [{"from_name": "sentiment", "to_name": "text", "type": "choices",
                            "value": {"choices": [choice]}}],
            }]
        tasks.append(task)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tasks, ensure_ascii=False, indent=1), encoding="utf-8")
    return len(tasks)


@dataclass
class ImportReport:
    """What an import read, wrote and refused (with line or task numbers)."""

    path: Path
    read: int = 0
    unlabelled: int = 0
    written: int = 0
    changed: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (f"{self.path}: read {self.read}, left unlabelled {self.unlabelled}, human labels written "
                f"{self.written} ({self.changed} changed a label), rejected {len(self.errors)}")
        text += "".join(f"\n  {e}" for e in self.errors[:MAX_EXAMPLES])
        if len(self.errors) > MAX_EXAMPLES:
            text += f"\n  ... and {len(self.errors) - MAX_EXAMPLES} more"
        return text


def import_labels(store: Store, path: Path, *, strict: bool = False) -> ImportReport:
    """Validate every reviewed row of ``path`` (CSV or Label Studio JSON), then write the valid ones.

    With ``strict``, one bad row means nothing is written (``InputDataError``); otherwise the
    valid rows are written and the bad ones listed in the report.
    """
    if not path.is_file():
        raise InputDataError(f"review file not found: {path}", hint="pass the file `review export` wrote")
    report = ImportReport(path)
    parsed = _parse_json(path, report) if path.suffix.lower() == ".json" else _parse_csv(path, report)
    labels = _validate(store, parsed, report)
    if strict and report.errors:
        raise InputDataError(f"{len(report.errors)} bad row(s) in {path}; nothing was written:\n  "
                             + "\n  ".join(report.errors[:MAX_EXAMPLES]),
                             hint="fix the rows named above, or drop --strict to write the valid ones")
    iteration = store.conn.execute("SELECT coalesce(max(iteration), 0) FROM iterations "
                                   "WHERE finished_at IS NOT NULL").fetchone()[0]
    report.changed = store.apply_human_labels(labels, iteration=iteration)
    report.written = len(labels)
    return report


def _parse_csv(path: Path, report: ImportReport) -> list[tuple[str, str, str]]:
    """(where, id, raw label) of every row with a human_label filled in."""
    out = []
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"id", "human_label"} <= set(reader.fieldnames):
            raise InputDataError(f"{path}: a review CSV needs the columns 'id' and 'human_label' "
                                 f"(found {reader.fieldnames})", hint="start from `sentirefine review export`")
        for row in reader:
            report.read += 1
            raw = (row.get("human_label") or "").strip()
            if not raw:
                report.unlabelled += 1
                continue
            out.append((f"{path.name}:{reader.line_num}", (row.get("id") or "").strip(), raw))
    return out


def _parse_json(path: Path, report: ImportReport) -> list[tuple[str, str, str]]:
    """Label Studio export: a list of tasks with ``annotations`` (or the JSON-MIN flat form)."""
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{path} is not valid JSON: {exc}", hint="export the project as JSON") from exc
    if not isinstance(tasks, list):
        raise InputDataError(f"{path}: expected a list of Label Studio tasks", hint="export the project as JSON")
    out = []
    for n, task in enumerate(tasks, start=1):
        report.read += 1
        where = f"{path.name}: task {n}"
        if not isinstance(task, dict):
            report.errors.append(f"{where}: not an object")
            continue
        data = task.get("data", task)
        choice = _annotation_choice(task)
        if choice is None:
            report.unlabelled += 1
            continue
        out.append((where, str(data.get("sentirefine_id", "")).strip(), choice))
    return out


def _annotation_choice(task: dict[str, Any]) -> str | None:
    """The choice of the task's latest non-cancelled annotation (None: not annotated)."""
    if "sentiment" in task and "annotations" not in task:  # JSON-MIN export
        value = task["sentiment"]
        return str(value[0] if isinstance(value, list) else value)
    for annotation in reversed(task.get("annotations") or []):
        if annotation.get("was_cancelled"):
            continue
        for result in annotation.get("result") or []:
            choices = (result.get("value") or {}).get("choices")
            if choices:
                return str(choices[0])
    return None


def _validate(store: Store, parsed: list[tuple[str, str, str]], report: ImportReport) -> list[tuple[int, int]]:
    """(sid, label) of the valid rows; every bad one is named in ``report.errors``."""
    known = _lookup(store, [id_ for _, id_, _ in parsed])
    seen: dict[str, tuple[str, int]] = {}
    conflicted: set[str] = set()
    for where, id_, raw in parsed:
        label = CHOICES.get(raw.strip().lower())
        if not id_:
            report.errors.append(f"{where}: missing id")
        elif id_ not in known:
            report.errors.append(f"{where}: unknown id {id_!r}")
        elif known[id_][1] == "gold":
            report.errors.append(f"{where}: id {id_!r} is a gold row (gold rows are never relabelled)")
        elif label is None:
            report.errors.append(f"{where}: label {raw!r} is not 0/1 (or negative/positive)")
        elif id_ in seen:
            if seen[id_][1] != label:  # a conflict: neither label is trusted
                conflicted.add(id_)
                report.errors.append(f"{where}: id {id_!r} labelled {label} here but {seen[id_][1]} at "
                                     f"{seen[id_][0]}")
        else:
            seen[id_] = (where, label)
    return [(known[id_][0], label) for id_, (_, label) in seen.items() if id_ not in conflicted]


def _lookup(store: Store, ids: list[str]) -> dict[str, tuple[int, str]]:
    rows = select_in(store.conn, "SELECT sid, id, split FROM sentences WHERE id IN ({marks})", (i for i in ids if i))
    return {i: (sid, split) for sid, i, split in rows}


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
