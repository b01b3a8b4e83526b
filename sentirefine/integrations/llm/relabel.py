"""The loop's ``llm`` stage: relabel queued rows with Gemini, validated, cached, in bulk.

Rows come from the review queue (low confidence, and frozen oscillating rows), lowest
ensemble confidence first. Many reviews go into one request as numbered items; every item of
every answer is validated (known id, once, label in {0, 1}, confidence in [0, 1]) and anything
else is rejected and logged, never written. Accepted labels at or above ``llm.min_confidence``
are written through the store's bulk path (``label_source='llm'`` + history; idempotent, each
change carries the label it expects to replace) and their queue entries are resolved. Rows the
LLM is unsure about stay queued for a human.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sentirefine.config import Config
from sentirefine.data import store_queries as queries
from sentirefine.data.store import LABELS, LabelChange, Store
from sentirefine.data.store_queries import Queued
from sentirefine.integrations.llm.cache import AnswerCache, cache_key
from sentirefine.integrations.llm.client import (
    KEY_VARIABLES,
    DailyQuotaExhausted,
    GeminiClient,
    LLMClient,
    LLMError,
    api_key,
)
from sentirefine.integrations.llm.prompts import LabelBatch, Prompt, estimate_tokens, items_part, relabel_prompt
from sentirefine.integrations.llm.ratelimit import RequestTooLarge
from sentirefine.logs import log_event

log = logging.getLogger(__name__)

_GIVE_UP_AFTER = 3  # failed batches (each after all its retries) before the stage stops sending

METRIC_KEYS = ("requests", "tokens_in", "tokens_out", "cache_hits", "accepted", "rejected",
               "rpm_utilisation", "tpm_utilisation", "skipped")


@dataclass
class Outcome:
    verdicts: dict[int, dict[str, Any]] = field(default_factory=dict)  # sid -> {label, confidence, reason}
    rejected: Counter = field(default_factory=Counter)
    cache_hits: int = 0
    failed_batches: int = 0
    quota_exhausted: bool = False


def skipped(reason: str) -> dict[str, Any]:
    """The stage's metrics when nothing was sent (logged once, as one clear line)."""
    log_event(log, "llm_skipped", reason=reason)
    return {**dict.fromkeys(METRIC_KEYS, 0), "rpm_utilisation": 0.0, "tpm_utilisation": 0.0,
            "skipped": True, "skip_reason": reason}


def unavailable_reason(config: Config) -> str | None:
    if not config.llm.enabled:
        return "llm.enabled is false"
    if api_key(config.llm.backend) is None:
        names = " or ".join(KEY_VARIABLES[config.llm.backend])
        return f"no API key: set {names} to relabel queued rows with llm.backend={config.llm.backend}"
    return None


def open_client(config: Config) -> LLMClient:
    """The configured backend's client over the workspace cache (caller closes both)."""
    cfg = config.llm
    path = cfg.cache_path if cfg.cache_path.is_absolute() else config.workspace / cfg.cache_path
    key = api_key(cfg.backend) or ""
    if cfg.backend == "openai":
        from sentirefine.integrations.llm.openai_compat import OpenAICompatClient

        return OpenAICompatClient(cfg, key, AnswerCache(path))
    return GeminiClient(cfg, key, AnswerCache(path))


def relabel_stage(config: Config, store: Store, iteration: int) -> dict[str, Any]:
    """Relabel this iteration's queued rows; returns the flat ``llm`` metrics of the iteration."""
    reason = unavailable_reason(config)
    if reason:
        return skipped(reason)
    rows = queued_rows(store, config)
    if not rows:
        return skipped("review queue is empty")
    prompt = relabel_prompt(config.llm.prompt_version, config.llm.prompt_path)
    client = open_client(config)
    try:
        outcome = asyncio.run(_relabel(client, prompt, rows))
    finally:
        client.cache.close()
    changed, accepted, unsure = write_verdicts(store, rows, outcome, iteration, config.llm.min_confidence)
    metrics = {
        "requests": client.counters.requests, "tokens_in": client.counters.tokens_in,
        "tokens_out": client.counters.tokens_out, "cache_hits": outcome.cache_hits, "accepted": accepted,
        "rejected": sum(outcome.rejected.values()), **client.limiter.utilisation(), "skipped": False,
        "rows": len(rows), "changed": changed, "below_min_confidence": unsure, "retries": client.counters.retries,
        "failed_batches": outcome.failed_batches, "quota_exhausted": outcome.quota_exhausted,
    }
    log_event(log, "llm_relabelled", iteration=iteration, **metrics, rejected_by_reason=dict(outcome.rejected))
    return metrics


def queued_rows(store: Store, config: Config) -> list[Queued]:
    reasons = ("low_confidence", "oscillation") if config.llm.include_oscillating else ("low_confidence",)
    limit = config.llm.max_rows_per_iteration or -1
    return queries.open_queue(store, reasons, limit)


def batches(rows: list[Queued], max_items: int, max_tokens: int, system: str) -> list[list[Queued]]:
    """Pack rows into requests of at most ``max_items`` reviews and ``max_tokens`` estimated tokens."""
    out: list[list[Queued]] = []
    current: list[Queued] = []
    base = estimate_tokens(system)
    used = base
    for row in rows:
        cost = estimate_tokens(row.text) - 64 + 8  # per-item framing instead of per-request overhead
        if current and (len(current) >= max_items or used + cost > max_tokens):
            out.append(current)
            current, used = [], base
        current.append(row)
        used += cost
    if current:
        out.append(current)
    return out


async def _relabel(client: LLMClient, prompt: Prompt, rows: list[Queued]) -> Outcome:
    cfg = client.cfg
    outcome = Outcome()
    keys = {r.sid: cache_key(prompt.version, cfg.model, r.text) for r in rows}
    cached = client.cache.get_many(keys.values())
    todo = []
    for r in rows:
        if keys[r.sid] in cached:
            outcome.verdicts[r.sid] = cached[keys[r.sid]]
            outcome.cache_hits += 1
        else:
            todo.append(r)
    # the same text queued twice is asked once
    unique = list({keys[r.sid]: r for r in todo}.values())
    gate = asyncio.Semaphore(cfg.concurrency)

    async def one(batch: list[Queued]) -> None:
        async with gate:
            await _send(client, prompt, batch, keys, outcome)

    try:
        await asyncio.gather(*(one(b) for b in batches(unique, cfg.max_batch_items,
                                                         min(cfg.max_batch_tokens, cfg.tpm), prompt.system)))
    finally:
        await client.aclose()
    answered = client.cache.get_many(keys[r.sid] for r in todo)
    for r in todo:
        if keys[r.sid] in answered:
            outcome.verdicts[r.sid] = answered[keys[r.sid]]
    return outcome


async def _send(client: LLMClient, prompt: Prompt, batch: list[Queued], keys: dict[int, str],
                outcome: Outcome) -> None:
    """One request; valid verdicts go to the cache (that is how they reach the outcome)."""
    if outcome.quota_exhausted or outcome.failed_batches >= _GIVE_UP_AFTER:
        return  # out of quota, or the endpoint is down: the rows stay queued for the next run
    items = [{"id": i, "text": r.text} for i, r in enumerate(batch, 1)]
    data = items_part(items)
    try:
        reply = await client.generate(prompt.system, data, LabelBatch, estimate_tokens(prompt.system, data))
    except DailyQuotaExhausted as exc:
        outcome.quota_exhausted = True
        log_event(log, "llm_quota_exhausted", level=logging.WARNING, error=str(exc))
        return
    except LLMError as exc:
        outcome.failed_batches += 1
        log_event(log, "llm_batch_failed", level=logging.WARNING, items=len(batch), error=str(exc))
        return
    except RequestTooLarge as exc:  # one request larger than llm.tpm can never be sent: skip it
        outcome.rejected["too_large"] += len(batch)
        log_event(log, "llm_batch_too_large", level=logging.WARNING, items=len(batch), error=str(exc))
        return
    valid, rejected = validate(reply.text, len(batch))
    outcome.rejected.update(rejected)
    if rejected:
        log_event(log, "llm_items_rejected", level=logging.WARNING, items=len(batch), accepted=len(valid),
                  **dict(rejected))
    client.cache.put_many({keys[batch[i - 1].sid]: verdict for i, verdict in valid.items()})


def validate(text: str, n_items: int) -> tuple[dict[int, dict[str, Any]], Counter]:
    """Valid verdicts by item id (1..n) and the count of rejected items by reason."""
    rejected: Counter = Counter()
    try:
        payload = json.loads(text)
        raw_items = payload["items"] if isinstance(payload, dict) else payload
        if not isinstance(raw_items, list):
            raise TypeError("items is not a list")
    except (ValueError, KeyError, TypeError):
        rejected["unparseable"] += n_items
        return {}, rejected
    valid: dict[int, dict[str, Any]] = {}
    answered: set[int] = set()  # ids that came back at all, well-formed or not
    duplicated: set[int] = set()
    for item in raw_items:
        problem = _problem(item, n_items, answered)
        if isinstance(item, dict) and type(item.get("id")) is int and 1 <= item["id"] <= n_items:
            duplicated |= {item["id"]} & answered
            answered.add(item["id"])
        if problem:
            rejected[problem] += 1
            continue
        valid[item["id"]] = {"label": int(item["label"]), "confidence": float(item["confidence"]),
                             "reason": str(item.get("reason", ""))[:200]}
    for dup in duplicated & set(valid):  # an id answered twice: neither answer is trusted
        del valid[dup]
        rejected["duplicate_id"] += 1
    if n_items - len(answered):
        rejected["missing"] += n_items - len(answered)
    return valid, rejected


def _problem(item: Any, n_items: int, seen: set[int]) -> str | None:
    if not isinstance(item, dict):
        return "not_an_object"
    item_id = item.get("id")
    if type(item_id) is not int or not 1 <= item_id <= n_items:
        return "unknown_id"
    if item_id in seen:
        return "duplicate_id"
    if type(item.get("label")) is not int or item["label"] not in LABELS:
        return "label_outside_label_set"
    conf = item.get("confidence")
    if type(conf) not in (int, float) or not 0 <= conf <= 1:
        return "bad_confidence"
    return None


def write_verdicts(store: Store, rows: list[Queued], outcome: Outcome, iteration: int,
                   min_confidence: float) -> tuple[int, int, int]:
    """Apply confident verdicts in bulk and resolve their queue entries: (changed, accepted, unsure)."""
    changes, resolved, unsure = [], [], 0
    for r in rows:
        v = outcome.verdicts.get(r.sid)
        if v is None:
            continue
        if v["confidence"] < min_confidence:
            unsure += 1
            continue
        resolved.append(r.sid)
        if v["label"] != r.current_label:
            changes.append(LabelChange(r.sid, r.current_label, v["label"], v["confidence"]))
    changed = store.apply_decision(changes, resolved=resolved, iteration=iteration, source="llm")
    return changed, len(resolved), unsure
