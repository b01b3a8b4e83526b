"""The human review round trip: export the rows a model cannot settle, import a person's labels.

Export picks the train rows that need a human — frozen (oscillating) rows and open review
queue entries (low confidence, or whatever reason the LLM step left them open with) — with the
ensemble's latest opinion, as CSV or as Label Studio tasks with predictions. Import reads the
CSV back (a ``human_label`` column) or a Label Studio JSON export, validates every row first,
and writes the labels with ``label_source='human'``: final, never overridden by a later
iteration (enforced in ``Store._apply_labels`` and in the policy's view of the predictions).

Files are written with :func:`atomic_write` (a symlink at the target is replaced, never
followed) and read with :mod:`sentirefine.files.userfile` (BOM dropped, gzip by content, another
encoding named). Every text cell of the CSV is guarded against formula injection
(:func:`guard_cell`), and import removes the guard again, so the round trip is exact.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentirefine.data import store_queries as queries
from sentirefine.data.store import Store
from sentirefine.errors import InputDataError
from sentirefine.faults import crash_point
from sentirefine.files.atomic import atomic_write
from sentirefine.files.csvguard import guard_cell, unguard_cell
from sentirefine.files.userfile import open_text, read_text

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
TEXT_COLUMNS = ("id", "text", "reason")


def review_rows(store: Store) -> Iterator[dict[str, Any]]:
    """Train rows needing a human, in sid order, with the ensemble's latest prediction."""
    for id_, text, cur, orig, frozen, reason, p_pos, conf, iteration in queries.rows_needing_review(store):
        yield {"id": id_, "text": text, "current_label": cur, "original_label": orig,
               "reason": "frozen" if frozen or reason == "oscillation" else reason,
               "p_positive": _round(p_pos), "confidence": _round(conf), "iteration": iteration}


def export_csv(store: Store, path: Path) -> int:
    """Write the review rows to ``path`` (UTF-8 CSV, empty ``human_label`` to fill in), all or nothing.

    Text cells go through :func:`guard_cell`: the file is meant to be opened in a spreadsheet,
    and a review text starting with ``=`` must not run there.
    """
    n = 0
    with atomic_write(path, newline="", what="review export") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in review_rows(store):
            guarded = {k: guard_cell(v) if k in TEXT_COLUMNS and isinstance(v, str) else v for k, v in row.items()}
            writer.writerow({**guarded, "human_label": ""})
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
    with atomic_write(path, what="review export") as handle:
        handle.write(json.dumps(tasks, ensure_ascii=False, indent=1))
    return len(tasks)


@dataclass
class ReviewImport:
    """What an import read, wrote and refused (with line or task numbers)."""

    path: Path
    read: int = 0
    unlabelled: int = 0
    written: int = 0
    changed: int = 0
    already: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (f"{self.path}: read {self.read}, left unlabelled {self.unlabelled}, human labels written "
                f"{self.written} ({self.changed} changed a label), rejected {len(self.errors)}")
        if self.already:
            text += f", already applied before {self.already}"
        text += "".join(f"\n  {e}" for e in self.errors[:MAX_EXAMPLES])
        if len(self.errors) > MAX_EXAMPLES:
            text += f"\n  ... and {len(self.errors) - MAX_EXAMPLES} more"
        return text


def import_labels(store: Store, path: Path, *, strict: bool = False) -> ReviewImport:
    """Validate every reviewed row of ``path`` (CSV or Label Studio JSON), then write the valid ones.

    With ``strict``, one bad row means nothing is written (``InputDataError``); otherwise the
    valid rows are written and the bad ones listed in the report. All labels are written in one
    transaction, and a label already in place is not written again: a run killed at any point
    left the old state or the new one, and running the same command again completes it.
    """
    report = ReviewImport(path)
    is_json = ".json" in [suffix.lower() for suffix in path.suffixes]
    parsed = _parse_json(path, report) if is_json else _parse_csv(path, report)
    labels = _validate(store, parsed, report)
    if strict and report.errors:
        raise InputDataError(f"{len(report.errors)} bad row(s) in {path}; nothing was written:\n  "
                             + "\n  ".join(report.errors[:MAX_EXAMPLES]),
                             hint="fix the rows named above, or drop --strict to write the valid ones")
    pending = _not_yet_applied(store, labels)
    report.already = len(labels) - len(pending)
    iteration = queries.last_finished_iteration(store)
    crash_point("review_import_before_write")
    report.changed = store.apply_human_labels(pending, iteration=iteration)
    crash_point("review_import_after_write")
    report.written = len(pending)
    return report


def _not_yet_applied(store: Store, labels: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Drop labels a person already gave (a re-run after a crash, or the same file twice): no repeated history."""
    done = queries.human_labels_among(store, (sid for sid, _ in labels))
    return [(sid, label) for sid, label in labels if (sid, label) not in done]


def _parse_csv(path: Path, report: ReviewImport) -> list[tuple[str, str, str]]:
    """(where, id, raw label) of every row with a human_label filled in; the export's cell guard removed."""
    out = []
    with open_text(path, "review file") as handle:
        reader = csv.DictReader(handle)
        try:
            if not reader.fieldnames or not {"id", "human_label"} <= set(reader.fieldnames):
                raise InputDataError(f"{path}: a review CSV needs the columns 'id' and 'human_label' "
                                     f"(found {reader.fieldnames})", hint="start from `sentirefine review export`")
            for row in reader:
                report.read += 1
                raw = unguard_cell((row.get("human_label") or "").strip())
                if not raw:
                    report.unlabelled += 1
                    continue
                where, id_ = f"{path.name}:{reader.line_num}", unguard_cell((row.get("id") or "").strip())
                if any("\udc80" <= ch <= "\udcff" for ch in id_):  # open_text's stand-ins for undecodable bytes
                    report.errors.append(f"{where}: id is not valid UTF-8 (save the file as CSV UTF-8)")
                    continue
                out.append((where, id_, raw))
        except csv.Error as exc:  # an unterminated quote, a field over csv's size limit
            raise InputDataError(f"{path}:{reader.line_num}: not a readable CSV row ({exc})",
                                 hint="re-save the file as CSV (UTF-8) or start from `sentirefine review export`") \
                from exc
    return out


def _parse_json(path: Path, report: ReviewImport) -> list[tuple[str, str, str]]:
    """Label Studio export: a list of tasks with ``annotations`` (or the JSON-MIN flat form).

    Every task's shape is checked; a task that is not what Label Studio writes is reported
    with its number and id and what was expected, never guessed at.
    """
    text = read_text(path, "review file")
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputDataError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                             hint="export the Label Studio project as JSON (or JSON-MIN) again") from exc
    if not isinstance(tasks, list):
        raise InputDataError(f"{path}: expected a list of Label Studio tasks, found a JSON {_json_type(tasks)}",
                             hint="export the project as JSON (a list of tasks)")
    out = []
    for n, task in enumerate(tasks, start=1):
        report.read += 1
        where = f"{path.name}: task {n}"
        try:
            if not isinstance(task, dict):
                raise _Shape(f"expected an object, found {_json_type(task)}")
            where += f" (id {task['id']!r})" if isinstance(task.get("id"), str | int) else ""
            id_, choice = _task_id(task), _annotation_choice(task)
        except _Shape as exc:
            report.errors.append(f"{where}: {exc}")
            continue
        if choice is None:
            report.unlabelled += 1
            continue
        out.append((where, id_, choice))
    return out


class _Shape(ValueError):
    """A Label Studio task that is not shaped as Label Studio writes one (the message says what was expected)."""


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _scalar(value: Any, what: str) -> str:
    """A string or integer field as text (``"positive"``, ``1``, an id); anything else is a shape error."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value).strip()
    raise _Shape(f"{what} should be a string, found {_json_type(value)}")


def _task_id(task: dict[str, Any]) -> str:
    data = task.get("data", task)
    if not isinstance(data, dict):
        raise _Shape(f"'data' should be an object, found {_json_type(data)}")
    value = data.get("sentirefine_id")
    return "" if value is None else _scalar(value, "'sentirefine_id'")


def _annotation_choice(task: dict[str, Any]) -> str | None:
    """The choice of the task's latest non-cancelled annotation (None: not annotated)."""
    if "sentiment" in task and "annotations" not in task:  # JSON-MIN export
        return _one_choice(task["sentiment"], "'sentiment'")
    annotations = task.get("annotations")
    annotations = [] if annotations is None else annotations
    if not isinstance(annotations, list):
        raise _Shape(f"'annotations' should be a list of annotations, found {_json_type(annotations)}")
    for number, annotation in reversed(list(enumerate(annotations, start=1))):
        if not isinstance(annotation, dict):
            raise _Shape(f"annotation {number} should be an object, found {_json_type(annotation)}")
        if annotation.get("was_cancelled"):
            continue
        results = annotation.get("result")
        results = [] if results is None else results
        if not isinstance(results, list):
            raise _Shape(f"annotation {number}: 'result' should be a list, found {_json_type(results)}")
        for result in results:
            value = result.get("value") if isinstance(result, dict) else None
            if not isinstance(value, dict):
                raise _Shape(f"annotation {number}: each result should be an object with a 'value' object")
            if value.get("choices"):
                return _one_choice(value["choices"], f"annotation {number}: 'choices'")
    return None


def _one_choice(value: Any, what: str) -> str:
    """A single choice: ``"negative"`` or ``["negative"]`` (the labeling config is choice="single")."""
    if isinstance(value, list):
        if len(value) != 1:
            raise _Shape(f"{what} should hold one choice (negative or positive), found {len(value)}")
        value = value[0]
    return _scalar(value, what)


def _validate(store: Store, parsed: list[tuple[str, str, str]], report: ReviewImport) -> list[tuple[int, int]]:
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
    return queries.rows_by_id(store, ids)


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
