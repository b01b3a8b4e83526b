"""BENCHMARKS.md verdicts that are computed, not written: the ablation table and the BERT line."""

from __future__ import annotations

from bench import effective, render
from bench.arms import ARMS
from bench.workspaces import merge
from sentirefine.config import load_config


def _arm(name: str, f1: float, acc: float, wrong: float = 0.01, **changed) -> dict:
    """A loop arm's record as the quality run writes it, with the settings its arm has today."""
    overrides = merge(ARMS[name].overrides, changed)
    return {"arm": name, "kind": "loop", "labels": {"f1": f1, "clean_wrongly_changed_rate": wrong},
            "gold": {"ensemble": {"accuracy": acc}},
            "settings": effective.settings(load_config(None, overrides), "loop")}


def _verdicts(*arms: dict) -> dict[str, str]:
    lines = render.ablations({"noise": "uniform20", "arms": [_arm("sentirefine", 0.70, 0.84), *arms]})
    rows = [line.split(" | ") for line in lines if line.startswith("| `")]
    return {row[0].strip("| `"): row[-1].rstrip(" |") for row in rows}


def test_a_better_ablation_is_called_out():
    # sr_step05 carries no recorded reason to keep the default, so the table asks for a revisit.
    verdicts = _verdicts(_arm("sr_step05", 0.72, 0.84), _arm("sr_insample", 0.40, 0.83))
    assert verdicts["sr_step05"].startswith("**ablation better")
    assert verdicts["sr_insample"] == "default supported"


def test_a_tie_goes_to_the_default_unless_the_ensemble_gains_a_point():
    assert _verdicts(_arm("sr_perclass", 0.703, 0.845))["sr_perclass"] == "default supported"
    assert _verdicts(_arm("sr_perclass", 0.703, 0.851))["sr_perclass"].startswith("**ablation")


def test_more_errors_found_at_the_cost_of_a_worse_ensemble_is_a_trade_off_not_a_win():
    verdict = _verdicts(_arm("sr_step05", 0.75, 0.825))["sr_step05"]
    assert verdict.startswith("trade-off") and "1.5 points lower" in verdict


def test_the_table_names_the_settings_the_two_records_differ_in():
    lines = render.ablations({"noise": "uniform20", "arms": [_arm("sentirefine", 0.7, 0.84),
                                                             _arm("sr_fixed", 0.72, 0.84)]})
    row = next(line for line in lines if line.startswith("| `sr_fixed`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    default_step = load_config(None, {}).refine.threshold.step
    assert cells[1:4] == ["`refine.threshold.step`", str(default_step), "0.0"]


def test_a_record_measured_under_other_defaults_gets_no_verdict():
    # sr_perclass measured when the threshold rose by 0.5 a step: no longer its arm today.
    stale = _arm("sr_perclass", 0.9, 0.9, refine={"threshold": {"step": 0.5}})
    verdict = _verdicts(stale)["sr_perclass"]
    assert verdict.startswith("not comparable") and "refine.threshold.step 0.5" in verdict
    notes = []
    assert render._record_note({}, stale, notes) == " †" and "stale" in notes[0]
    assert render._record_note({}, _arm("sr_fixed", 0.7, 0.8), []) == ""


def test_no_table_without_the_default_arm_or_any_ablation():
    assert render.ablations({"noise": "uniform20", "arms": [_arm("sr_fixed", 0.7, 0.8)]}) == []
    assert render.ablations({"noise": "uniform20", "arms": [_arm("sentirefine", 0.7, 0.8)]}) == []


def test_bert_line_names_the_pretraining_budget():
    card = {"corpus_rows": 20000, "vocab_size": 16000, "final_mlm_loss": 3.21,
            "architecture": {"layers": 4, "hidden": 256},
            "training": {"steps": 2000, "epochs": 6.4, "seconds": 900.0, "budget": {"max_steps": 2000}}}
    line = render.bert_start({"bert_checkpoint": card})[0]
    assert "2,000 MLM steps" in line and "15.0 min" in line and "20,000 texts" in line
    assert render.bert_start({"bert_checkpoint": {"path": "/x"}}) == []
    assert render.bert_start({}) == []


def test_default_arms_put_each_noise_kinds_ablations_before_the_ceiling() -> None:
    """And cleanlab_iter after sentirefine: it runs as many rounds as the loop ran iterations."""
    from bench import arms

    assert arms.default_arms("uniform40") == ["none", "cleanlab_flip", "cleanlab_remove", "sentirefine",
                                              "cleanlab_iter", "sr_fixed", "sr_step05", "sr_nobalance",
                                              "sr_crossfit_rnn", "clean"]
    assert arms.default_arms("unknown") == arms.DEFAULT_ARMS
    assert all(arms.ARMS[n].kind == "loop" and arms.ARMS[n].overrides for ab in arms.ABLATIONS.values() for n in ab)


def test_a_contended_quality_run_keeps_its_accuracies_but_a_contended_timing_run_is_not_a_result() -> None:
    base = {"command": "python -m bench", "date": "d", "machine": {"cpu": "x", "cores": 2, "ram_gb": 1},
            "contended": True}
    quality = render.provenance({**base, "benchmark": "quality"})[0]
    stages = render.provenance({**base, "benchmark": "stages"})[0]
    smoke = render.provenance({**base, "benchmark": "quality", "smoke": True})[0]
    assert "labels and accuracies are not affected" in quality and "not a result" not in quality
    assert "not a result" in stages
    assert "SMOKE RUN" in smoke
    assert "RUN" not in render.provenance({**base, "contended": False, "benchmark": "stages"})[0]


def test_noise_rates_read_as_words() -> None:
    assert render._rate(0.2) == "20% of labels flipped at random"
    assert render._rate({"1": 0.3, "0": 0.1}) == "30% of positives → negative, 10% of negatives → positive"


def test_a_default_kept_on_purpose_says_why_beside_the_measured_verdict() -> None:
    # sr_fixed carries a recorded reason (SPEC: the threshold must rise); sr_step05 carries none.
    verdicts = _verdicts(_arm("sr_fixed", 0.72, 0.84), _arm("sr_step05", 0.72, 0.84), _arm("sr_insample", 0.4, 0.8))
    assert verdicts["sr_fixed"].startswith("ablation better; default kept: SPEC requires")
    assert verdicts["sr_step05"] == "**ablation better: revisit the default**"
    assert verdicts["sr_insample"] == "default supported"  # a supported default needs no reason
    traded = _verdicts(_arm("sr_crossfit_rnn", 0.75, 0.825))["sr_crossfit_rnn"]
    assert traded.startswith("trade-off") and "1.5 points lower; default kept: " in traded


def test_the_stages_table_gives_each_arm_its_cost_against_the_first_arm_of_the_same_run() -> None:
    def run(arm: str, *seconds: float) -> dict:
        its = [{"iteration": 0, "stage_seconds": {}, "seconds": 500.0}]
        its += [{"iteration": i, "stage_seconds": {"predict": s / 4, "train": s / 2}, "train_seconds": {"bert": s / 3},
                 "seconds": s} for i, s in enumerate(seconds, start=1)]
        return {"arm": arm, "bootstrap": {"seconds": 500.0, "train_seconds": {"bert": 60.0}}, "iterations": its}

    r = {"command": "python -m bench stages", "date": "d", "machine": {"cpu": "x", "cores": 2, "ram_gb": 1},
         "size": 20000, "arms": [run("sr_v1", 130.0, 140.0), run("sr_folds5_stacked", 190.0, 200.0, 195.0)]}
    text = "\n".join(render.stages(r))
    assert text.count("| iteration |") == 2  # one table per arm, bootstraps (iteration 0) left out of the rows
    assert "`sr_v1` 135.0 s (1.00×); `sr_folds5_stacked` 195.0 s (1.44×)" in text
    old = {k: v for k, v in r.items() if k != "arms"} | {"bootstrap": r["arms"][0]["bootstrap"],
                                                          "iterations": r["arms"][0]["iterations"]}
    assert "`sentirefine`" in "\n".join(render.stages(old)) and "against the first arm" not in "\n".join(
        render.stages(old))  # a result file from before arms were timed side by side still renders
