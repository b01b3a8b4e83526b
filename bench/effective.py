"""What an arm's numbers depend on: the slice of its resolved config, recorded with its result.

A result file outlives the defaults it was measured under. Each arm record therefore carries
the settings that decide its numbers (flattened to ``section.field`` keys), so that:

- a resumed run re-measures an arm whose settings changed since (a new default), instead of
  keeping a number that no longer describes it;
- a run reuses a record measured under another arm name with the very same settings (an
  ablation that became the default) — the benchmark is deterministic for fixed data and seeds;
- BENCHMARKS.md names the settings of a kept record that no longer match its arm.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from bench.arms import ARMS
from bench.workspaces import merge
from sentirefine.config import Config, load_config

# Which config sections decide each kind of arm. The threshold schedule and the rest of
# ``refine`` only matter to arms that run the loop; the members and the ensemble to all, and so
# does the gold subset every arm is scored on.
SECTIONS = {"none": ("models", "ensemble"), "clean": ("models", "ensemble"),
            "cleanlab": ("models", "ensemble"), "loop": ("models", "ensemble", "refine")}
EVERY_ARM = ("refine.gold_eval_rows",)

# Settings that change how fast or where a run goes, not what it computes. The BERT checkpoint
# is a path to the run's shared starting point, described by the result's ``bert_checkpoint``.
OPERATIONAL = frozenset({"models.device", "models.bert.checkpoint", "ensemble.workers", "ensemble.start_method",
                         "ensemble.predict_batch_rows", "ensemble.worker_token_cache_entries",
                         "ensemble.fold_workers"})


def _leaves(model: BaseModel, prefix: str):
    """(dotted key, JSON value) for every field, descending into sub-sections, not into dict values."""
    for name in type(model).model_fields:
        value, key = getattr(model, name), f"{prefix}{name}"
        if isinstance(value, BaseModel):
            yield from _leaves(value, f"{key}.")
        else:
            # Through JSON and back: the record compared later is what the result file holds (int keys
            # of ``per_class`` become strings, paths become text).
            yield key, json.loads(json.dumps(to_jsonable_python(value)))


def settings(cfg: Config, kind: str) -> dict[str, Any]:
    """The flattened settings that decide the result of an arm of this ``kind``."""
    out: dict[str, Any] = {}
    for section in SECTIONS[kind]:
        out.update((k, v) for k, v in _leaves(getattr(cfg, section), f"{section}.") if k not in OPERATIONAL)
    out.update((k, v) for k, v in _leaves(cfg.refine, "refine.") if k in EVERY_ARM)
    # resolved: 'auto' is 1 (every row, the code before the setting) up to two folds, less above
    out["ensemble.fold_update_share"] = cfg.ensemble.update_share()
    return out


# Settings added to the config after records were measured, with the value that reproduces the
# code before them: a record without the key was measured with this value, so it stays comparable.
# The budget rule's keys (issue 27) change nothing under the threshold rule every older record ran.
ADDED_LATER: dict[str, Any] = {"refine.threshold.balance_offset": 0.0, "refine.rule": "threshold",
                               "refine.budget.share": 0.8, "refine.budget.floor": 0.0, "ensemble.folds": 1,
                               "refine.budget.estimator": "confident_joint", "ensemble.fold_update_share": 1.0}


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``key: (recorded value, current value)`` for every setting that differs (absent = None).

    A key of :data:`ADDED_LATER` that one side has and the other lacks counts as its old value there.
    """
    keys = recorded.keys() | current.keys()
    earlier = {k: v for k, v in ADDED_LATER.items() if k in keys}
    recorded, current = {**earlier, **recorded}, {**earlier, **current}
    return {k: (recorded.get(k), current.get(k)) for k in sorted(keys) if recorded.get(k) != current.get(k)}


def same(recorded: dict[str, Any] | None, current: dict[str, Any]) -> bool:
    """Whether a record's settings (None: not recorded, never the same) are today's ``current``."""
    return recorded is not None and not differences(recorded, current)


def describe(diff: dict[str, tuple[Any, Any]], limit: int = 3) -> str:
    """A short human line: ``refine.threshold.step 0.05 (now 0.02)``."""
    parts = [f"{k} {json.dumps(old)} (now {json.dumps(new)})" for k, (old, new) in list(diff.items())[:limit]]
    more = len(diff) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def stale(result: dict[str, Any], record: dict[str, Any]) -> str:
    """Why a kept record no longer describes its arm ('' when it still does).

    The arm's settings today come from the result's own setup (config file and overrides) plus the
    arm's overrides, with today's defaults: a changed default shows up here.
    """
    arm = ARMS.get(record["arm"])
    if arm is None:
        return "its arm is no longer defined"
    if "settings" not in record:
        return "its settings were not recorded"
    config_file = result.get("config_file")
    if config_file and not Path(config_file).is_file():
        return ""  # cannot tell without the config it ran with
    cfg = load_config(Path(config_file) if config_file else None, merge(result.get("overrides") or {}, arm.overrides))
    current = settings(cfg, arm.kind)
    if arm.variant == "iter":  # its rounds come from the run (the loop's iterations), not from a config
        current["cleanlab.rounds"] = record["settings"].get("cleanlab.rounds")
    diff = differences(record["settings"], current)
    if _guard_would_not_trip(record, diff.get("refine.max_balance_shift")):
        del diff["refine.max_balance_shift"]
    return f"measured with {describe(diff)}" if diff else ""


def _guard_would_not_trip(record: dict[str, Any], change: tuple[Any, Any] | None) -> bool:
    """Whether a record measured without the balance guard (issue 25) is what the guard would give.

    The guard never changes a label: it only stops a correct stage that would move the train labels'
    positive share by more than ``max_balance_shift``. If no iteration of the record moved it that
    far (net corrections to one class over the train rows; all corrections where the record lacks
    the split), the guard would not have stopped it.
    """
    if change is None or change[0] is not None or change[1] is None:
        return False
    rows = (record.get("labels") or {}).get("rows")
    iterations = record.get("per_iteration")
    if not rows or iterations is None:
        return False
    return all(_net_shift(it) / rows <= change[1] for it in iterations)


def _net_shift(iteration: dict[str, Any]) -> int:
    """Net corrections towards one class in an iteration; older records have only the total, a bound on it."""
    if "corrected_to" in iteration:
        return abs(iteration["corrected_to"][1] - iteration["corrected_to"][0])
    return iteration.get("corrected") or 0
