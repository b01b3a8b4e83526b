"""Quality benchmark: how much injected noise each arm removes and what it buys the models.

One run = one noise kind at one size: the shared noisy bootstrap (members fitted on the noisy
labels, evaluated on gold) is the ``none`` arm and the starting point of every loop arm and of
cleanlab's ensemble weights; ``clean`` refits on the true labels; ``cleanlab_*`` refit after
cleanlab's flags are applied; loop arms run ``sentirefine.pipeline.loop.refine`` with their overrides.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import cleanlab_arm, effective, machine
from bench.arms import Arm
from bench.detection import label_scores
from bench.workspaces import Setup, clone, create
from sentirefine.data.workspace import locked, open_store
from sentirefine.pipeline import loop

BOOTSTRAP = "_bootstrap"


def _gold(metrics: dict[str, Any]) -> dict[str, Any]:
    """Gold accuracy/F1 of each member and of the ensemble, from an iteration's metrics."""
    pick = ("accuracy", "f1", "log_loss")
    return {
        "members": {n: {k: m.get(k) for k in pick} for n, m in metrics.get("members", {}).items()},
        "ensemble": {k: metrics.get("ensemble", {}).get(k) for k in pick},
    }


def _iteration_rows(store) -> list[dict[str, Any]]:
    out = []
    for it in store.iterations():
        m = it["metrics"]
        out.append({
            "iteration": it["iteration"],
            "threshold": m.get("threshold"),
            "corrected": (m.get("corrected_to_0") or 0) + (m.get("corrected_to_1") or 0),
            "corrected_to": [m.get("corrected_to_0") or 0, m.get("corrected_to_1") or 0],
            "class_offsets": m.get("class_offsets") or {},
            "label_accuracy": m.get("label_accuracy"),
            "ensemble_gold_accuracy": m.get("ensemble", {}).get("accuracy"),
            "stage_seconds": m.get("stage_seconds", {}),
            "train_seconds": {n: t.get("seconds") for n, t in m.get("training", {}).items()},
            "seconds": m.get("seconds"),
        })
    return out


class QualityRun:
    """Runs the arms of one noise setting, sharing the noisy bootstrap between them."""

    def __init__(self, setup: Setup, max_iterations: int) -> None:
        self.setup = setup
        self.max_iterations = max_iterations
        # cleanlab_iter's rounds: the default loop's iterations once this run has measured them.
        self.rounds = max_iterations
        self._boot: dict[str, Any] | None = None

    def bootstrap(self) -> dict[str, Any]:
        """The noisy-label bootstrap: built once, and kept beside its workspace so a resumed run reuses it."""
        saved = self.setup.scratch / f"{BOOTSTRAP}.json"
        if self._boot is None and saved.is_file() and (self.setup.scratch / BOOTSTRAP).is_dir():
            self._boot = json.loads(saved.read_text(encoding="utf-8"))
        if self._boot is None:
            cfg = self.setup.config(BOOTSTRAP)
            t0 = time.perf_counter()
            create(cfg, self.setup)
            with locked(cfg), open_store(cfg) as store:
                metrics = loop.bootstrap(cfg, store).to_json()
                evaluation = store.stage_info(0, "evaluate") or {}
                scores = label_scores(store)
            self._boot = {"metrics": metrics, "evaluation": evaluation, "labels": scores,
                          "seconds": round(time.perf_counter() - t0, 1), "workspace": str(cfg.workspace)}
            saved.write_text(json.dumps(self._boot, default=float), encoding="utf-8")
        return self._boot

    def run(self, arm: Arm) -> dict[str, Any]:
        start = machine.header(smoke=False, contended=False)  # date, git revision, load: taken at the start
        t0 = time.perf_counter()
        out = getattr(self, f"_{arm.kind}_iter" if arm.variant == "iter" else f"_{arm.kind}")(arm)
        # Arms of one result file may be measured in different sessions: each carries its own provenance.
        out.update(arm=arm.name, kind=arm.kind, variant=arm.variant, doc=arm.doc, overrides=arm.overrides,
                   settings=self.settings(arm), wall_seconds=round(time.perf_counter() - t0, 1),
                   measured_at=start["date"], git_rev=start["git_rev"],
                   load_average_at_start=start["load_average_at_start"])
        return out

    def settings(self, arm: Arm) -> dict[str, Any]:
        """The config settings that decide this arm's numbers (see :mod:`bench.effective`)."""
        out = effective.settings(self.setup.config(arm.name, arm.overrides), arm.kind)
        return {**out, "cleanlab.rounds": self.rounds} if arm.variant == "iter" else out

    def _none(self, arm: Arm) -> dict[str, Any]:
        boot = self.bootstrap()
        return {"labels": boot["labels"], "gold": _gold(boot["metrics"]), "iterations": 0, "converged": None,
                "own_seconds": boot["seconds"], "shared_bootstrap_seconds": 0.0}

    def _clean(self, arm: Arm) -> dict[str, Any]:
        cfg = self.setup.config(arm.name, arm.overrides)
        create(cfg, self.setup, noisy=False)
        with locked(cfg), open_store(cfg) as store:
            metrics = loop.bootstrap(cfg, store).to_json()
            return {"labels": label_scores(store), "gold": _gold(metrics), "iterations": 0, "converged": None,
                    "shared_bootstrap_seconds": 0.0}

    def _cleanlab(self, arm: Arm) -> dict[str, Any]:
        boot = self.bootstrap()
        cfg = self.setup.config(arm.name, arm.overrides)
        create(cfg, self.setup)
        with locked(cfg), open_store(cfg) as store:
            flags = self._first_flags(cfg, store, boot)
            applied = cleanlab_arm.apply(store, flags["flagged_ids"], arm.variant)
            metrics = loop.bootstrap(cfg, store).to_json()
            scores = label_scores(store, removed_mode=arm.variant == "remove")
        info = {k: v for k, v in flags.items() if k != "flagged_ids"}
        return {"labels": scores, "gold": _gold(metrics), "iterations": 0, "converged": None,
                "cleanlab": {**info, "flagged": len(flags["flagged_ids"]), "applied": applied},
                "shared_bootstrap_seconds": boot["seconds"]}

    def _cleanlab_iter(self, arm: Arm) -> dict[str, Any]:
        """The anchor cleanlab's maintainers recommend: flag on out-of-fold probabilities, flip, refit, repeat.

        Each round starts from a fresh workspace holding the labels as the earlier rounds left
        them, so its members are fitted from scratch on those labels (cleanlab's refit) and their
        gold evaluation weights the next round's ensemble, as the bootstrap's weights the first.
        As many rounds as the default loop ran iterations in this run (else ``max_iterations``);
        fewer when a round flags nothing. Round 1 is the one-shot ``cleanlab_flip`` (its flags are
        reused). Finished rounds are kept beside the workspace, so an interrupted arm resumes.
        """
        boot = self.bootstrap()
        cfg = self.setup.config(arm.name, arm.overrides)
        state_file = self.setup.scratch / f"{arm.name}.rounds.json"
        state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else {"rounds": []}
        evaluation = state["rounds"][-1]["evaluation"] if state["rounds"] else boot["evaluation"]
        while len(state["rounds"]) < self.rounds and (not state["rounds"] or state["rounds"][-1]["flagged"]):
            create(cfg, self.setup)
            with locked(cfg), open_store(cfg) as store:
                for done in state["rounds"]:
                    cleanlab_arm.apply(store, done["flagged_ids"], "flip")
                flags = self._first_flags(cfg, store, boot) if not state["rounds"] else \
                    cleanlab_arm.find_issues(cfg, store, evaluation)
                cleanlab_arm.apply(store, flags["flagged_ids"], "flip")
                metrics = loop.bootstrap(cfg, store).to_json()
                evaluation = store.stage_info(0, "evaluate") or {}
                scores = label_scores(store)
            state["rounds"].append({**flags, "flagged": len(flags["flagged_ids"]), "evaluation": evaluation,
                                    "labels": scores, "gold": _gold(metrics)})
            state_file.write_text(json.dumps(state, default=float), encoding="utf-8")
        last = state["rounds"][-1]
        per_round = [{"round": i + 1, "flagged": r["flagged"], "label_accuracy": r["labels"]["final_label_accuracy"],
                      "label_f1": r["labels"]["f1"], "ensemble_gold_accuracy": r["gold"]["ensemble"]["accuracy"]}
                     for i, r in enumerate(state["rounds"])]
        state_file.unlink()
        return {"labels": last["labels"], "gold": last["gold"], "iterations": len(per_round), "converged": None,
                "cleanlab": {"rounds": per_round, "folds": last["folds"]}, "shared_bootstrap_seconds": boot["seconds"]}

    def _first_flags(self, cfg, store, boot: dict[str, Any]) -> dict[str, Any]:
        """The one-shot flags on the shared bootstrap (what ``cleanlab_flip`` applies), computed once per run."""
        flags_file = self.setup.scratch / "cleanlab_flags.json"
        if flags_file.is_file():
            return json.loads(flags_file.read_text(encoding="utf-8"))
        flags = cleanlab_arm.find_issues(cfg, store, boot["evaluation"])
        flags_file.write_text(json.dumps(flags), encoding="utf-8")
        return flags

    def _loop(self, arm: Arm) -> dict[str, Any]:
        cfg = self.setup.config(arm.name, arm.overrides)
        # Another fold count means other bootstrap models (k fold models per member): such an arm
        # bootstraps itself from the same noisy labels, and its time includes that bootstrap.
        own_bootstrap = cfg.ensemble.folds != self.setup.config(BOOTSTRAP).ensemble.folds
        started = self._started(arm)
        if started is None:
            boot = {"seconds": 0.0} if own_bootstrap else self.bootstrap()
            if own_bootstrap:
                create(cfg, self.setup)
            else:
                clone(Path(boot["workspace"]), cfg)
            started = {"settings": self.settings(arm), "shared_bootstrap_seconds": boot["seconds"], "attempts": 0}
        started["attempts"] += 1
        _marker(self.setup, arm).write_text(json.dumps(started), encoding="utf-8")
        # An interrupted arm (session end, kill) continues here: `refine` resumes its workspace.
        with locked(cfg), open_store(cfg) as store:
            result = loop.refine(cfg, store, max_iterations=self.max_iterations)
            finished = [it for it in store.iterations() if it["finished_at"]]
            rows = _iteration_rows(store)
            out = {"labels": label_scores(store), "gold": _gold(finished[-1]["metrics"]),
                   "iterations": len([it for it in finished if it["iteration"] > 0]),
                   "converged": result.stop_reason.startswith("converged"), "stop_reason": result.stop_reason,
                   "per_iteration": rows, "shared_bootstrap_seconds": started["shared_bootstrap_seconds"]}
        if started["attempts"] > 1:  # wall_seconds is the last attempt's only: the iterations' own times add up
            out.update(attempts=started["attempts"],
                       iteration_seconds=round(sum(r["seconds"] or 0.0 for r in rows), 1))
        return out

    def _started(self, arm: Arm) -> dict[str, Any] | None:
        """The record of this arm's interrupted attempt, if its workspace is there with the same settings."""
        marker = _marker(self.setup, arm)
        if not marker.is_file() or not self.setup.config(arm.name, arm.overrides).db_file.is_file():
            return None
        started = json.loads(marker.read_text(encoding="utf-8"))
        if not effective.same(started.get("settings"), self.settings(arm)):
            print(f"[bench] arm {arm.name}: an interrupted attempt had other settings: starting it again")
            return None
        print(f"[bench] arm {arm.name}: continuing the interrupted attempt in its workspace")
        return started


def _marker(setup: Setup, arm: Arm) -> Path:
    """Written once an arm's workspace is created: a later run continues that attempt instead of restarting."""
    return setup.scratch / f"{arm.name}.started.json"


def reusable(arm: Arm, settings: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """An earlier record that measured exactly this arm, or None (then the arm is measured).

    Same kind, variant and settings is the same computation (fixed data and seeds), whatever the
    arm was called then: an ablation that became the default is reused under its new name, with
    ``measured_as`` keeping the old one. A record without settings predates them and is not trusted.
    """
    def same(r: dict[str, Any]) -> bool:
        return (effective.same(r.get("settings"), settings) and r.get("kind") == arm.kind
                and r.get("variant", "") == arm.variant)

    match = next((r for r in records if r["arm"] == arm.name and same(r)), None)
    if match is None:
        twin = next((r for r in records if same(r)), None)
        if twin is None:
            return None
        match = {**twin, "arm": arm.name, "doc": arm.doc, "overrides": arm.overrides,
                 "measured_as": twin.get("measured_as", twin["arm"])}
    return {k: v for k, v in match.items() if k != "shelved"}  # back in the tables


def run_all(setup: Setup, arms: list[Arm], max_iterations: int, *, keep: bool = False,
            done: list[dict[str, Any]] | None = None,
            on_result: Callable[[list[dict[str, Any]]], None] | None = None,
            progress=print) -> list[dict[str, Any]]:
    """Every arm in order, reusing what ``done`` (an earlier run's records) already measured.

    A fresh run (nothing ``done``) first drops the bootstrap an earlier run may have left; a
    resumed one reuses it and its cleanlab flags, so its arms start from the same noisy models.
    ``on_result`` sees the results so far after every arm (to save them as they come).
    Unless ``keep``, each arm's workspace is deleted once measured (checkpoints of every
    iteration add up to gigabytes over a full run), the shared bootstrap at the end.
    """
    done = done or []
    if not done:
        (setup.scratch / f"{BOOTSTRAP}.json").unlink(missing_ok=True)
    if not (setup.scratch / f"{BOOTSTRAP}.json").is_file():  # flags belong to the bootstrap they came from
        (setup.scratch / "cleanlab_flags.json").unlink(missing_ok=True)
    runner = QualityRun(setup, max_iterations)
    results = []
    for arm in arms:
        if arm.variant == "iter":
            runner.rounds = next((r["iterations"] for r in results if r["arm"] == "sentirefine"), max_iterations)
        now = runner.settings(arm)
        earlier = reusable(arm, now, done)
        if earlier is not None:
            alias = f" as {earlier['measured_as']}" if earlier.get("measured_as") else ""
            progress(f"[bench] arm {arm.name}: measured earlier{alias} ({earlier.get('measured_at')}), kept")
            results.append(earlier)
            continue
        stale = next((r for r in done if r["arm"] == arm.name and not r.get("shelved")), None)
        if stale is not None:
            changed = effective.differences(stale.get("settings") or {}, now)
            progress(f"[bench] arm {arm.name}: settings changed since it was measured "
                     f"({effective.describe(changed) or 'no settings recorded'}): measuring it again")
        progress(f"[bench] arm {arm.name} ...")
        results.append(runner.run(arm))
        if on_result is not None:
            on_result(results)
        r = results[-1]
        progress(f"[bench] arm {arm.name}: label F1 {r['labels']['f1']}, "
                 f"ensemble gold acc {r['gold']['ensemble']['accuracy']}, {r['wall_seconds']} s")
        _marker(setup, arm).unlink(missing_ok=True)
        if not keep and arm.kind != "none":
            shutil.rmtree(setup.scratch / arm.name, ignore_errors=True)
    if not keep:
        shutil.rmtree(setup.scratch / BOOTSTRAP, ignore_errors=True)
        (setup.scratch / f"{BOOTSTRAP}.json").unlink(missing_ok=True)
    return results


def scratch_dir(base: Path, noise: str, size: int) -> Path:
    return base / f"quality-{noise}-{size}"
