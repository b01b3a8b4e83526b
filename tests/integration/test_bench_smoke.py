"""The benchmark harness end to end at a tiny size on the bundled demo data (no ../shared needed).

Runs ``python -m bench quality`` with two cheap members and the render step, and checks that
the result JSON has every arm and that its label counts are internally consistent: the numbers
in BENCHMARKS.md are only as good as this bookkeeping. No timing assertions (timings live in
the benchmark itself).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ARMS = ["none", "cleanlab_flip", "cleanlab_iter", "sentirefine", "clean"]  # as the tables order them
RUN_ORDER = ["none", "cleanlab_flip", "sentirefine", "cleanlab_iter", "clean"]  # cleanlab_iter after the loop
SIZE = 300

pytestmark = pytest.mark.integration

SMOKE = {
    "models": {
        "lexicon": {"min_count": 1},
        "lstm": {"embedding_dim": 8, "hidden_dim": 8, "epochs": 1, "max_len": 16, "vocab_size": 1000},
    },
    "ensemble": {"workers": 0, "cross_fit_folds": 3},
    "refine": {"threshold": {"start": 0.6}},
}


def _bench(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, f"bench {args[0]} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("bench")
    config = root / "smoke.yaml"
    config.write_text(yaml.safe_dump(SMOKE))
    _bench("quality", "--data", "demo", "--size", str(SIZE), "--gold-size", "100", "--members", "lexicon,lstm",
           "--noise", "uniform20", "--arms", ",".join(RUN_ORDER), "--max-iterations", "1", "--config", str(config),
           "--scratch", str(root / "scratch"), "--results", str(root / "results"))
    result = json.loads((root / "results" / f"quality-uniform20-{SIZE}-smoke.json").read_text(encoding="utf-8"))
    return result, root


def test_every_arm_reported_with_provenance(smoke_run):
    result, _ = smoke_run
    assert [a["arm"] for a in result["arms"]] == ARMS
    assert result["smoke"] is True and result["noise"] == "uniform20"
    assert result["machine"]["cores"] >= 1 and result["command"].startswith("python -m bench quality")
    for arm in result["arms"]:
        assert set(arm) >= {"labels", "gold", "iterations", "wall_seconds"}
        assert set(arm["gold"]["members"]) == {"lexicon", "lstm"}
        assert 0.0 <= arm["gold"]["ensemble"]["accuracy"] <= 1.0


def test_label_counts_add_up(smoke_run):
    result, _ = smoke_run
    for arm in result["arms"]:
        lab = arm["labels"]
        assert lab["rows"] == SIZE == lab["injected_errors"] + lab["clean_rows"]
        assert lab["true_positives"] + lab["false_negatives"] == lab["injected_errors"]
        assert lab["true_positives"] + lab["false_positives"] == lab["detected"]
        assert lab["clean_wrongly_changed"] == lab["false_positives"]
        for key in ("precision", "recall", "f1", "clean_wrongly_changed_rate", "final_label_accuracy"):
            assert lab[key] is None or 0.0 <= lab[key] <= 1.0, (arm["arm"], key, lab[key])
        # A flip arm's label is right iff it was an injected error it changed or a clean label it kept.
        right = lab["true_positives"] + lab["clean_rows"] - lab["false_positives"]
        assert lab["final_label_accuracy"] == pytest.approx(right / SIZE)


def test_arms_share_the_same_noise_and_do_what_they_claim(smoke_run):
    result, _ = smoke_run
    arms = {a["arm"]: a for a in result["arms"]}
    injected = {arms[n]["labels"]["injected_errors"] for n in ("none", "cleanlab_flip", "sentirefine")}
    assert len(injected) == 1 and 0.1 * SIZE < injected.pop() < 0.3 * SIZE
    assert arms["none"]["labels"]["detected"] == 0 and arms["none"]["labels"]["f1"] == 0.0
    assert arms["clean"]["labels"]["injected_errors"] == 0 and arms["clean"]["labels"]["final_label_accuracy"] == 1.0
    assert arms["cleanlab_flip"]["cleanlab"]["flagged"] == arms["cleanlab_flip"]["labels"]["detected"]
    assert arms["sentirefine"]["iterations"] == 1
    # cleanlab_iter runs as many rounds as the loop ran iterations; its first round is the one-shot flip.
    rounds = arms["cleanlab_iter"]["cleanlab"]["rounds"]
    assert arms["cleanlab_iter"]["iterations"] == len(rounds) == 1
    assert rounds[0]["flagged"] == arms["cleanlab_flip"]["cleanlab"]["flagged"]
    assert arms["cleanlab_iter"]["labels"] == arms["cleanlab_flip"]["labels"]
    assert arms["cleanlab_iter"]["settings"]["cleanlab.rounds"] == 1
    assert [it["iteration"] for it in arms["sentirefine"]["per_iteration"]] == [0, 1]


def test_report_renders(smoke_run):
    _, root = smoke_run
    out = root / "BENCHMARKS.md"
    _bench("report", "--results", str(root / "results"), "--out", str(out))
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks")
    assert "SMOKE" in text and "label-error F1" in text
    assert all(f"`{arm}`" in text for arm in ARMS)


def test_a_resumed_run_keeps_measured_arms_and_adds_the_rest(smoke_run, tmp_path):
    result, root = smoke_run
    results = tmp_path / "results"
    results.mkdir()
    name = f"quality-uniform20-{SIZE}-smoke.json"
    earlier = json.loads((root / "results" / name).read_text(encoding="utf-8"))
    # As if sentirefine had been measured under an older default threshold start: it must run again.
    loop_arm = next(a for a in earlier["arms"] if a["arm"] == "sentirefine")
    loop_arm["settings"]["refine.threshold.start"] = 0.99
    (results / name).write_text(json.dumps(earlier), encoding="utf-8")
    config = root / "smoke.yaml"
    proc = _bench("quality", "--data", "demo", "--size", str(SIZE), "--gold-size", "100", "--members",
                  "lexicon,lstm", "--noise", "uniform20", "--arms", "none,cleanlab_remove,sentirefine",
                  "--max-iterations", "1", "--config", str(config), "--scratch", str(tmp_path / "scratch"),
                  "--results", str(results))
    assert "arm none: measured earlier" in proc.stdout
    assert "arm sentirefine: settings changed since it was measured (refine.threshold.start 0.99 (now 0.6))" \
        in proc.stdout
    resumed = json.loads((results / name).read_text(encoding="utf-8"))
    arms = {a["arm"]: a for a in resumed["arms"]}
    assert set(arms) == {*ARMS, "cleanlab_remove"} and resumed["complete"] is True
    before = {a["arm"]: a for a in result["arms"]}
    assert all(arms[n] == before[n] for n in ARMS if n != "sentirefine")  # kept as measured, not re-run
    assert arms["sentirefine"]["settings"] == before["sentirefine"]["settings"]  # measured again, as it is now
    assert arms["cleanlab_remove"]["labels"]["rows_trained_on"] < SIZE


def test_an_interrupted_loop_arm_continues_in_its_workspace(smoke_run, tmp_path):
    """A session may end inside a loop arm that takes hours: the next run resumes that arm, not restarts it."""
    result, root = smoke_run
    args = ["quality", "--data", "demo", "--size", str(SIZE), "--gold-size", "100", "--members", "lexicon,lstm",
            "--noise", "uniform20", "--arms", "sentirefine", "--max-iterations", "1",
            "--config", str(root / "smoke.yaml"), "--scratch", str(tmp_path / "scratch"),
            "--results", str(tmp_path / "results")]
    killed = subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                              "SENTIREFINE_KILL_AT": "correct_before_finish_stage"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (tmp_path / "scratch" / f"quality-uniform20-{SIZE}" / "sentirefine.started.json").is_file()
    proc = _bench(*args)
    assert "arm sentirefine: continuing the interrupted attempt in its workspace" in proc.stdout
    resumed = json.loads((tmp_path / "results" / f"quality-uniform20-{SIZE}-smoke.json").read_text("utf-8"))
    arm = next(a for a in resumed["arms"] if a["arm"] == "sentirefine")
    before = next(a for a in result["arms"] if a["arm"] == "sentirefine")
    assert arm["labels"] == before["labels"] and arm["gold"] == before["gold"]  # same result as uninterrupted
    assert arm["attempts"] == 2 and arm["iteration_seconds"] > 0
    assert not (tmp_path / "scratch" / f"quality-uniform20-{SIZE}" / "sentirefine.started.json").exists()
