"""The workspace report: one self-contained HTML file a person can open, mail or archive.

Everything is read from the store (``iterations.metrics``, ``label_history``,
``sentences``, ``review_queue``), so the report can be written at any time, also for a
workspace another machine produced. Plots are matplotlib (Agg) PNGs embedded as base64
``data:`` URIs and the stylesheet is inline: the file loads no network asset and renders the
same offline, in a mail attachment or an MLflow artifact view. Every text taken from the data
(review texts, ids) is escaped with ``html.escape``.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sentirefine.config import Config
from sentirefine.data import store_queries as queries
from sentirefine.data.records import IterationMetrics, IterationRow, iteration_rows
from sentirefine.data.store import Store
from sentirefine.errors import UsageError
from sentirefine.figures import confusion_figure, pyplot
from sentirefine.files.atomic import atomic_write, check_output_path

AUTO_SOURCES = ("ensemble", "llm")
_DPI = 90  # readable on screen, a few tens of kB per embedded PNG
_CSS = """
body{font-family:system-ui,'Noto Sans CJK KR','Malgun Gothic','Apple SD Gothic Neo',sans-serif;
  margin:2em;color:#222;max-width:1100px}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top}
td.text{text-align:left;max-width:520px}th{background:#f3f3f3;text-align:center}
figure{display:inline-block;margin:.5em}figcaption{font-size:.8em;color:#555;text-align:center}
.flag{color:#a40000;font-weight:bold}.note{color:#666;font-style:italic}
"""


def report_path(config: Config) -> Path:
    return config.workspace / "reports" / "report.html"


def write_report(config: Config, store: Store, out: Path | None = None) -> Path:
    """Render the report of ``store`` to ``out`` (default WORKSPACE/reports/report.html).

    A given ``out`` must name a file in an existing directory, checked before the rendering
    work (a typo'd directory is the user's to fix, not ours to create); the default's
    directory is ours and is created. Written with :func:`atomic_write`: a reader never sees
    half a report, and a symlink at ``out`` is replaced, never written through.
    """
    if out is None:
        out = report_path(config)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the report directory {out.parent}: {exc.strerror or exc}",
                             hint="check the workspace is writable, or pass --output FILE") from exc
    check_output_path(out, "report")
    page = render_report(config, store)
    with atomic_write(out, what="report") as handle:
        handle.write(page)
    return out


def render_report(config: Config, store: Store) -> str:
    """The whole HTML document as a string."""
    its = [it for it in iteration_rows(store) if it.finished_at]
    members = list(config.models.order)
    rows = config.report.table_rows
    body = [
        _overview(config, store, its),
        "<h2>Convergence</h2>", _plots(config, store, its, members),
        "<h2>Iterations</h2>", _iteration_table(its, members),
        "<h2>Confusion matrices (gold, last iteration)</h2>", _confusions(its, members),
        f"<h2>Most confident corrections (top {rows})</h2>", _confident_corrections(store, rows),
        f"<h2>Frozen and oscillating rows (first {rows})</h2>", _frozen_rows(store, rows),
        "<h2>LLM usage</h2>", _llm_usage(its),
        "<h2>Bias audit</h2>", _bias_flags(its),
    ]
    title = f"sentirefine report: {html.escape(str(config.workspace))}"
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{_CSS}</style></head><body><h1>{title}</h1>\n" + "\n".join(body) + "\n</body></html>\n")


# -- sections ----------------------------------------------------------------------------------
def _measured(it: IterationRow) -> IterationMetrics:
    """A finished iteration's metrics (empty ones for a row that holds none)."""
    return it.metrics or IterationMetrics(iteration=it.iteration)


def _overview(config: Config, store: Store, its: list[IterationRow]) -> str:
    last = _measured(its[-1]) if its else IterationMetrics(iteration=0)
    queue = store.open_review_count()
    human = queries.human_label_count(store)
    facts = [
        ("generated", datetime.now(UTC).isoformat(timespec="seconds")),
        ("train rows", store.count("train")), ("gold rows", store.count("gold")),
        ("train labels now", store.label_counts("train")),
        ("finished iterations", f"{len(its)} (last: {its[-1].iteration})" if its else "none"),
        ("converged", "yes" if last.convergence.converged else "no"),
        ("ensemble gold accuracy", _num(last.evaluation.accuracy("ensemble"))),
        ("open review queue", ", ".join(f"{k}: {v}" for k, v in queue.items()) or "empty"),
        ("human labels", human),
    ]
    return _table(["", ""], [[k, v] for k, v in facts], id_="overview")


def _plots(config: Config, store: Store, its: list[IterationRow], members: list[str]) -> str:
    if not its:
        return _note("no finished iteration yet: run `sentirefine bootstrap` / `refine`")
    refined = [it for it in its if it.iteration > 0]
    x = [it.iteration for it in refined]
    figs = []
    if refined:
        series = {"label change rate": [_measured(it).convergence.label_change_rate for it in refined],
                  "lexicon change rate": [_measured(it).convergence.lexicon_change_rate for it in refined]}
        bounds = {"label bound": config.refine.label_change_bound,
                  "lexicon bound": config.refine.lexicon_change_bound}
        figs.append(_figure(_line_plot(x, series, "change rate", bounds), "Label and lexicon change rate"))
        figs.append(_figure(_line_plot(x, {"threshold": [it.threshold for it in refined]}, "threshold"),
                            "Correction threshold"))
        figs.append(_figure(_source_bars(store, x), "Corrections by source"))
    measured = [_measured(it) for it in its]
    acc = {n: [m.evaluation.accuracy(n) for m in measured] for n in [*members, "ensemble"]}
    if any(m.label_accuracy is not None for m in measured):
        acc["train labels vs truth"] = [m.label_accuracy for m in measured]
    figs.append(_figure(_line_plot([it.iteration for it in its], acc, "accuracy"), "Gold accuracy"))
    return "\n".join(figs)


def _iteration_table(its: list[IterationRow], members: list[str]) -> str:
    head = ["iter", "threshold", "to 0", "to 1", "label chg", "lexicon chg", "queued", "frozen", "label acc",
            *members, "ensemble", "converged"]
    body = []
    for it in its:
        m = _measured(it)
        body.append([it.iteration, _num(it.threshold, ".2f"), _or_dash(m.corrections.to_0),
                     _or_dash(m.corrections.to_1), _num(m.convergence.label_change_rate),
                     _num(m.convergence.lexicon_change_rate), _or_dash(m.queued_low_confidence), _or_dash(m.frozen),
                     _num(m.label_accuracy), *[_num(m.evaluation.accuracy(n)) for n in members],
                     _num(m.evaluation.accuracy("ensemble")), "yes" if m.convergence.converged else ""])
    return _table(head, body, id_="iterations")


def _or_dash(value: Any) -> Any:
    """A count as recorded, or a dash where the iteration did not record it (the bootstrap)."""
    return "-" if value is None else value


def _confusions(its: list[IterationRow], members: list[str]) -> str:
    if not its:
        return _note("no evaluation yet")
    evaluation = _measured(its[-1]).evaluation
    golds = [(n, evaluation.members.get(n)) for n in members] + [("ensemble", evaluation.ensemble)]
    found = [(name, gold.confusion if gold is not None else None) for name, gold in golds]
    figs = [_figure(_confusion_plot(matrix, name), f"{name}, iteration {its[-1].iteration}")
            for name, matrix in found if matrix]
    return "\n".join(figs) or _note("no confusion counts recorded")


def _confident_corrections(store: Store, limit: int) -> str:
    rows = queries.most_confident_corrections(store, AUTO_SOURCES, limit)
    if not rows:
        return _note("no automatic corrections yet")
    body = [[it, id_, _Text(text), old, new, _num(conf), src] for it, id_, text, old, new, conf, src in rows]
    return _table(["iter", "id", "text", "old", "new", "confidence", "source"], body, id_="corrections")


def _frozen_rows(store: Store, limit: int) -> str:
    total, rows = queries.frozen_rows(store, limit)
    if not total:
        return _note("no frozen or oscillating rows")
    body = [[id_, _Text(text), orig, cur, src, flips, reason or "-", status or "-"]
            for id_, text, orig, cur, src, flips, reason, status in rows]
    head = ["id", "text", "original", "current", "label source", "ensemble flips", "queue reason", "queue status"]
    return f"<p>{total} row(s) in all.</p>" + _table(head, body, id_="frozen")


def _llm_usage(its: list[IterationRow]) -> str:
    usage = [(it.iteration, m.llm) for it in its if isinstance((m := _measured(it)).llm, dict)]
    if not usage:
        return _note("no LLM usage recorded")
    keys = list(dict.fromkeys(k for _, u in usage for k in u if k != "skip_reason"))  # the stage's own order
    body = [[i, *[_num(u.get(k)) if isinstance(u.get(k), float) else u.get(k, "-") for k in keys]] for i, u in usage]
    reasons = dict.fromkeys(str(u["skip_reason"]) for _, u in usage if u.get("skip_reason"))
    notes = "".join(_note(f"skipped: {r}") for r in reasons)
    return _table(["iter", *keys], body, id_="llm") + notes


def _bias_flags(its: list[IterationRow]) -> str:
    audited = [(it, m.audit) for it in its if isinstance((m := _measured(it)).audit, dict)]
    if not audited:
        return _note("no bias audit")
    it, audit = audited[-1]
    flags = audit.get("flags") or []
    where = f" (details: {html.escape(str(audit['path']))})" if audit.get("path") else ""
    critique = _note(f"LLM critique: {audit['critique']}") if audit.get("critique") else ""
    if not flags:
        return _note(f"bias audit of iteration {it.iteration}: no group flagged{where}") + critique
    body = [[_Text(str(f.get("group"))), f.get("rows", "-"), _num(f.get("correction_rate")),
             _num(f.get("overall_rate")), _num(f.get("ratio"), ".2f")] for f in flags]
    head = ["group", "rows", "correction rate", "overall rate", "ratio"]
    return (f"<p class=\"flag\">{len(flags)} group(s) flagged in iteration {it.iteration}{where}</p>"
            + _table(head, body, id_="bias") + critique)


# -- plots -------------------------------------------------------------------------------------
def _line_plot(x: Sequence[int], series: dict[str, list[Any]], ylabel: str,
               hlines: dict[str, float] | None = None) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    for name, ys in series.items():
        pts = [(xi, y) for xi, y in zip(x, ys, strict=True) if y is not None and y == y]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    for name, y in (hlines or {}).items():
        ax.axhline(y, linestyle="--", linewidth=0.8, color="grey")
        ax.annotate(name, (x[0] if x else 0, y), fontsize=7, color="grey")
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_xticks(list(x))
    ax.legend(fontsize=7)
    return _png(fig)


def _source_bars(store: Store, x: Sequence[int]) -> bytes:
    counts = queries.live_changes_by_source(store, ("ensemble", "llm", "human"))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    bottom = [0] * len(x)
    for src in ("ensemble", "llm", "human"):
        ys = [counts.get(src, {}).get(i, 0) for i in x]
        ax.bar(list(x), ys, bottom=bottom, label=src)
        bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
    ax.set_xlabel("iteration")
    ax.set_ylabel("labels changed")
    ax.set_xticks(list(x))
    ax.legend(fontsize=7)
    return _png(fig)


def _confusion_plot(matrix: list[list[int]], name: str) -> bytes:
    return _png(confusion_figure(matrix, name, (2.6, 2.4)))


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=_DPI)
    pyplot().close(fig)
    return buf.getvalue()


# -- HTML helpers ------------------------------------------------------------------------------
class _Text(str):
    """A cell holding free text (left-aligned)."""


def _figure(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    alt = html.escape(caption, quote=True)
    return (f"<figure><img alt=\"{alt}\" src=\"data:image/png;base64,{data}\">"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], *, id_: str) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    trs = []
    for row in rows:
        cells = "".join(f"<td class=\"text\">{html.escape(c)}</td>" if isinstance(c, _Text)
                        else f"<td>{html.escape(str(c))}</td>" for c in row)
        trs.append(f"<tr>{cells}</tr>")
    return f"<table id=\"{id_}\"><thead><tr>{th}</tr></thead><tbody>{''.join(trs)}</tbody></table>"


def _note(text: str) -> str:
    return f"<p class=\"note\">{html.escape(text)}</p>"


def _num(value: Any, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)
