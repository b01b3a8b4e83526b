"""Per-iteration audit: label distribution, per-group correction rates (bias flags) and an LLM
critique of a sample of corrections and disagreements, written to ``reports/audit-iter-NNN.md``.

Why groups: a self-training loop amplifies whatever its models get systematically wrong, so a
group whose labels are corrected far more (or far less) often than the corpus as a whole —
short reviews, reviews with profanity or jamo slang (ㅋㅋ, ㅠㅠ), one movie — is where to look
for bias in the data or the models. The statistics are plain pandas over the store and work
without an LLM; only the critique needs one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from sentirefine.config import Config
from sentirefine.data import store_queries as queries
from sentirefine.data.store import Store
from sentirefine.files.atomic import atomic_write
from sentirefine.logs import log_event

log = logging.getLogger(__name__)

PROFANITY = ("시발", "씨발", "ㅅㅂ", "ㅆㅂ", "병신", "ㅂㅅ", "ㅄ", "좆", "존나", "졸라", "ㅈㄴ", "개새", "새끼",
             "지랄", "염병", "썅", "fuck", "shit")
_PROFANITY = re.compile("|".join(map(re.escape, PROFANITY)), re.IGNORECASE)
_JAMO_SLANG = re.compile(r"[ㄱ-ㅎㅏ-ㅣ]{2,}")  # ㅋㅋ, ㅎㅎ, ㅠㅠ, ㄷㄷ: internet slang written in bare jamo
LENGTH_BUCKETS = ((0, 15, "length<15"), (15, 40, "length 15-39"), (40, 80, "length 40-79"), (80, 10**9, "length 80+"))


def audit_path(config: Config, iteration: int) -> Path:
    return config.workspace / "reports" / f"audit-iter-{iteration:03d}.md"


def audit_stage(config: Config, store: Store, iteration: int) -> dict[str, Any]:
    """Write the audit report of ``iteration``; returns ``{"flags": [...], "path": str, ...}``."""
    frame = load_rows(store, iteration)
    groups = group_rates(frame, config.llm.bias_top_groups)
    flags = bias_flags(groups, frame, config.llm.bias_min_rows, config.llm.bias_ratio)
    critique = run_critique(config, store, iteration)
    path = audit_path(config, iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as out:  # a symlink at the report is replaced, never followed
        out.write(render(iteration, store, frame, groups, flags, critique))
    log_event(log, "audit_written", iteration=iteration, path=str(path), flags=len(flags),
              critique=critique.get("status"))
    return {"flags": flags, "path": str(path), "critique": critique.get("status"),
            "critique_agreement": critique.get("agreement")}


def load_rows(store: Store, iteration: int) -> pd.DataFrame:
    """One row per train sentence: length, slang/profanity flags, group, corrected?, disagreement."""
    frame = queries.train_rows_frame(store, iteration)
    frame["length"] = frame["text"].str.len()
    frame["profanity"] = frame["text"].str.contains(_PROFANITY)
    frame["jamo_slang"] = frame["text"].str.contains(_JAMO_SLANG)
    frame["corrected"] = frame["current_label"] != frame["original_label"]
    frame["disagrees"] = frame["predicted"].notna() & (frame["predicted"] != frame["current_label"])
    return frame.drop(columns="text")


def _masks(frame: pd.DataFrame, top_groups: int) -> dict[str, pd.Series]:
    masks = {name: (frame["length"] >= lo) & (frame["length"] < hi) for lo, hi, name in LENGTH_BUCKETS}
    for column in ("profanity", "jamo_slang"):
        masks[f"{column}=yes"] = frame[column]
        masks[f"{column}=no"] = ~frame[column]
    if frame["group_key"].notna().any() and top_groups:
        for key in frame["group_key"].value_counts().head(top_groups).index:
            masks[f"movie={key}"] = frame["group_key"] == key
    return masks


def group_rates(frame: pd.DataFrame, top_groups: int) -> pd.DataFrame:
    """Rows, correction rate, ensemble disagreement rate and (if known) error rate per group."""
    records = []
    for name, mask in _masks(frame, top_groups).items():
        part = frame[mask]
        if part.empty:
            continue
        known = part["reference"].notna()
        records.append({
            "group": name, "rows": len(part), "correction_rate": float(part["corrected"].mean()),
            "disagreement_rate": float(part["disagrees"].mean()),
            "error_rate": float((part.loc[known, "current_label"] != part.loc[known, "reference"]).mean())
            if known.any() else None,
            "positive_share": float(part["current_label"].mean()),
        })
    return pd.DataFrame.from_records(records)


def bias_flags(groups: pd.DataFrame, frame: pd.DataFrame, min_rows: int, ratio: float) -> list[dict[str, Any]]:
    """Groups of at least ``min_rows`` whose correction rate is ``ratio`` times above or below overall."""
    overall = float(frame["corrected"].mean()) if len(frame) else 0.0
    if overall <= 0 or groups.empty:
        return []
    flags = []
    for g in groups.itertuples():
        r = g.correction_rate / overall
        if g.rows >= min_rows and (r >= ratio or r <= 1 / ratio):
            flags.append({"group": g.group, "rows": int(g.rows), "correction_rate": round(g.correction_rate, 4),
                          "overall_rate": round(overall, 4), "ratio": round(r, 3)})
    return flags


# -- critique ---------------------------------------------------------------------------------------
def critique_sample(store: Store, iteration: int, size: int) -> list[dict[str, Any]]:
    """Half corrections made this iteration, half confident disagreements left unchanged."""
    corrections = queries.corrections_judged(store, iteration, (size + 1) // 2)
    disagreements = queries.confident_disagreements(store, iteration, size - len(corrections))
    items = []
    for kind, rows in (("correction", corrections), ("disagreement", disagreements)):
        for sid, text, before, now, predicted, conf in rows:
            items.append({"sid": sid, "text": text, "label_before": before, "label_now": now,
                          "ensemble_prediction": predicted,
                          "ensemble_confidence": None if conf is None else round(conf, 3), "kind": kind})
    return items


def run_critique(config: Config, store: Store, iteration: int) -> dict[str, Any]:
    """Ask the LLM to judge the sample; ``status`` says whether it ran and why not."""
    from sentirefine.integrations.llm.relabel import unavailable_reason

    reason = unavailable_reason(config) or (None if config.llm.critique else "llm.critique is false")
    if reason:
        return {"status": f"skipped: {reason}"}
    sample = critique_sample(store, iteration, config.llm.audit_sample_rows)
    if not sample:
        return {"status": "skipped: nothing to critique"}
    try:
        return asyncio.run(_critique(config, sample))
    except Exception as exc:  # an audit must never fail the iteration
        log_event(log, "critique_failed", level=logging.WARNING, error=type(exc).__name__)
        return {"status": f"failed: {type(exc).__name__}", "items": sample}


async def _critique(config: Config, sample: list[dict[str, Any]]) -> dict[str, Any]:
    from sentirefine.integrations.llm.cache import cache_key
    from sentirefine.integrations.llm.client import LLMError
    from sentirefine.integrations.llm.prompts import CRITIQUE, CritiqueBatch, estimate_tokens, items_part
    from sentirefine.integrations.llm.relabel import open_client

    client = open_client(config)
    payload = [{"id": i, **{k: v for k, v in it.items() if k != "sid"}} for i, it in enumerate(sample, 1)]
    data = items_part(payload)
    key = cache_key(CRITIQUE.version, config.llm.model, data)
    try:
        answer = client.cache.get_many([key]).get(key)
        if answer is None:
            try:
                reply = await client.generate(CRITIQUE.system, data, CritiqueBatch,
                                              estimate_tokens(CRITIQUE.system, data))
            except LLMError as exc:
                return {"status": f"failed: {exc.message}", "items": sample}
            answer = _valid_critique(reply.text, len(sample))
            if answer is None:
                return {"status": "failed: malformed critique", "items": sample}
            client.cache.put_many({key: answer})
    finally:
        await client.aclose()
        client.cache.close()
    for i, item in enumerate(sample, 1):
        item.update(answer["verdicts"].get(str(i), {}))
    judged = [it for it in sample if it.get("verdict") in ("right", "wrong")]
    agreement = round(sum(it["verdict"] == "right" for it in judged) / len(judged), 3) if judged else None
    return {"status": "done", "items": sample, "summary": answer["summary"], "agreement": agreement}


def _valid_critique(text: str, n_items: int) -> dict[str, Any] | None:
    try:
        payload = json.loads(text)
        verdicts = {str(it["id"]): {"verdict": str(it["verdict"]), "comment": str(it.get("comment", ""))[:200]}
                    for it in payload["items"]
                    if type(it.get("id")) is int and 1 <= it["id"] <= n_items
                    and it.get("verdict") in ("right", "wrong", "unsure")}
        return {"verdicts": verdicts, "summary": str(payload.get("summary", ""))[:2000]}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


# -- rendering -------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "/").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(_cell(v) for v in row) + " |" for row in rows)]


def render(iteration: int, store: Store, frame: pd.DataFrame, groups: pd.DataFrame, flags: list[dict[str, Any]],
           critique: dict[str, Any]) -> str:
    lines = [f"# Audit — iteration {iteration}", ""]
    lines += ["## Label distribution (train split)", ""]
    lines += _table(["label", "original", "current"],
                    [[label, int((frame["original_label"] == label).sum()),
                      int((frame["current_label"] == label).sum())] for label in (0, 1)])
    sources = frame["label_source"].value_counts()
    lines += ["", "Label source of current labels: " + ", ".join(f"{k} {v}" for k, v in sources.items()), ""]
    llm = store.stage_info(iteration, "llm")
    if llm:
        shown = {k: llm.get(k) for k in ("skipped", "skip_reason", "rows", "requests", "cache_hits", "accepted",
                                         "changed", "rejected", "rpm_utilisation", "tpm_utilisation")
                 if llm.get(k) is not None}
        lines += ["## LLM relabelling", "", ", ".join(f"{k}: {v}" for k, v in shown.items()), ""]
    overall = float(frame["corrected"].mean()) if len(frame) else 0.0
    lines += ["## Per-group rates", "",
              f"Correction rate = share of rows whose current label differs from the original (overall "
              f"{overall:.4f}); disagreement = ensemble prediction differs from the current label; error = current "
              "label differs from the known-true label (only where reference labels exist).", ""]
    if not groups.empty:
        flagged = {f["group"] for f in flags}
        lines += _table(["group", "rows", "correction", "disagreement", "error", "positive share", "flag"],
                        [[g.group, g.rows, g.correction_rate, g.disagreement_rate, g.error_rate, g.positive_share,
                          "**flagged**" if g.group in flagged else ""] for g in groups.itertuples()])
    lines += ["", "## Bias flags", ""]
    lines += [f"- **{f['group']}** ({f['rows']} rows): correction rate {f['correction_rate']:.4f} = "
              f"{f['ratio']:.2f}× the overall {f['overall_rate']:.4f}" for f in flags] or ["None."]
    lines += ["", "## LLM critique of corrections and disagreements", "", f"Status: {critique['status']}.", ""]
    if critique.get("summary"):
        lines += [f"Summary: {critique['summary']}", "",
                  f"Share judged right (of right/wrong): {_cell(critique.get('agreement'))}", ""]
    if critique.get("items"):
        lines += _table(["kind", "text", "before", "now", "ensemble", "conf.", "verdict", "comment"],
                        [[it["kind"], it["text"][:80], it["label_before"], it["label_now"],
                          it["ensemble_prediction"], it["ensemble_confidence"], it.get("verdict"), it.get("comment")]
                         for it in critique["items"]])
    return "\n".join(lines) + "\n"
