"""Fold sets: k persistent models of one member, each judging only the rows it never trained on.

Real lexicon members (regex tokens, so no Kiwi start-up): the held-out claim is checked on the
lexicon's own dictionary, which holds exactly the tokens its training rows contained.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from sentirefine.config import load_config
from sentirefine.ensemble.jobs import JobRunner
from sentirefine.errors import TrainingError, UsageError
from sentirefine.models import load_model
from sentirefine.models.folds import FoldSet, fold_of
from sentirefine.models.registry import build_fold_set

GOOD = ["good", "great", "lovely", "superb"]
BAD = ["bad", "awful", "boring", "dull"]


def corpus(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Labelled sentences, each with one token of its own (``uniq<i>``) that no other row has."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n).astype(np.int64)
    texts = [f"uniq{i} it was {rng.choice(GOOD if y else BAD)} and {rng.choice(GOOD if y else BAD)}"
             for i, y in enumerate(labels)]
    return texts, labels


def fold_config(tmp_path: Path, folds: int = 3):
    return load_config(overrides={"workspace": str(tmp_path), "ensemble": {"folds": folds},
                                  "models": {"lexicon": {"min_count": 1, "tokenizer": "regex"}}})


def test_a_rows_fold_depends_on_its_words_only_and_spreads_evenly():
    texts = [f"review number {i}" for i in range(3000)]
    folds = fold_of(texts, 3)
    assert set(folds.tolist()) == {0, 1, 2}
    assert np.all(np.abs(np.bincount(folds) / len(texts) - 1 / 3) < 0.03)
    # fixed for the row's life (no salted hash): the same texts give the same folds in another order
    assert fold_of(texts[::-1], 3).tolist() == folds[::-1].tolist()
    # a duplicate differing only in spacing lands in the same fold, so no fold model learns its twin
    assert fold_of(["  review   number 7 "], 3)[0] == folds[7]


def test_each_fold_model_trains_only_outside_its_fold(tmp_path):
    texts, labels = corpus(300, seed=1)
    model = build_fold_set("lexicon", fold_config(tmp_path)).fit(texts, labels)
    folds = fold_of(texts, 3)
    for j, member in enumerate(model.models_):
        seen = {t for t in member.dictionary_ if t.startswith("uniq") and " " not in t}  # unigrams
        assert seen == {f"uniq{i}" for i in np.flatnonzero(folds != j)}  # the rows outside fold j, all of them


def test_held_out_predictions_come_from_the_fold_model_that_never_saw_the_row(tmp_path):
    texts, labels = corpus(300, seed=2)
    model = build_fold_set("lexicon", fold_config(tmp_path)).fit(texts, labels)
    held, folds = model.predict_held_out(texts), fold_of(texts, 3)
    for j, member in enumerate(model.models_):
        rows = np.flatnonzero(folds == j)
        np.testing.assert_allclose(held[rows], member.predict_proba([texts[i] for i in rows]), rtol=1e-6)
    mean = np.mean([m.predict_proba(texts) for m in model.models_], axis=0)
    np.testing.assert_allclose(model.predict_proba(texts), mean, rtol=1e-6)  # gold and serving: the average
    assert not np.allclose(held, model.predict_proba(texts))  # the two views differ on train rows
    both = model.predict_both(texts)  # the evaluate stage's one pass gives the same two views
    np.testing.assert_allclose(both[0], model.predict_proba(texts), rtol=1e-6)
    np.testing.assert_allclose(both[1], held, rtol=1e-6)


def test_the_pool_returns_both_views_of_fold_sets_and_single_models_in_one_pass(tmp_path):
    from sentirefine.ensemble.pool import EnsemblePool
    from sentirefine.models import build_model

    texts, labels = corpus(200, seed=5)
    build_fold_set("lexicon", fold_config(tmp_path)).fit(texts, labels).save(tmp_path / "folded")
    build_model("lexicon", fold_config(tmp_path)).fit(texts, labels).save(tmp_path / "single")
    dirs = [tmp_path / "folded", tmp_path / "single"]
    with EnsemblePool(workers=0, batch_rows=64) as pool:
        served, held = pool.member_views(dirs, texts)
        np.testing.assert_allclose(served, pool.member_probs(dirs, texts), rtol=1e-6)
        np.testing.assert_allclose(held, pool.member_probs(dirs, texts, held_out=True), rtol=1e-6)
        # held-out tasks three batches long (one per fold model) answer every row the same
        np.testing.assert_allclose(held, pool.member_probs(dirs, texts, held_out=True, folds=3), rtol=1e-6)
    assert not np.allclose(served[:, 0], held[:, 0]) and np.array_equal(served[:, 1], held[:, 1])


def test_a_saved_fold_set_loads_back_and_updates_each_fold_from_its_own_state(tmp_path):
    texts, labels = corpus(300, seed=3)
    model = build_fold_set("lexicon", fold_config(tmp_path)).fit(texts, labels)
    model.save(tmp_path / "lexicon")
    assert sorted(p.name for p in (tmp_path / "lexicon").iterdir()) == ["fold-0", "fold-1", "fold-2", "model.json"]
    loaded = load_model(tmp_path / "lexicon")
    assert isinstance(loaded, FoldSet) and loaded.fold_count == 3
    np.testing.assert_array_equal(loaded.predict_held_out(texts), model.predict_held_out(texts))
    before = load_model(tmp_path / "lexicon")
    flipped = labels.copy()
    flipped[:60] = 1 - flipped[:60]
    loaded.update(texts, flipped)
    rates = [m.change_rate(p) for m, p in zip(loaded.models_, before.models_, strict=True)]
    assert loaded.change_rate(before) == pytest.approx(np.mean(rates)) and max(rates) > 0
    for j, member in enumerate(loaded.models_):  # updated on its own fold's complement, never on fold j
        assert not any(f"uniq{i}" in member.dictionary_ for i in np.flatnonzero(fold_of(texts, 3) == j))


def test_a_fold_set_missing_a_fold_is_a_clear_load_error(tmp_path):
    texts, labels = corpus(120, seed=4)
    build_fold_set("lexicon", fold_config(tmp_path, folds=2)).fit(texts, labels).save(tmp_path / "lexicon")
    (tmp_path / "lexicon" / "fold-1" / "model.json").unlink()
    with pytest.raises(Exception, match="fold-1"):
        load_model(tmp_path / "lexicon")


def _square(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def _fail(x: int) -> int:
    raise UsageError(f"job {x} refused", hint="a hint that must survive the trip")


def _die(x: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return x


def test_the_job_runner_runs_jobs_in_worker_processes_and_reports_their_errors_whole():
    with JobRunner(2) as runner:
        results = sorted(runner.run(_square, [1, 2, 3, 4]))
        assert [r[0] for r in results] == [1, 4, 9, 16]
        assert os.getpid() not in {r[1] for r in results}  # ran in the workers
        with pytest.raises(UsageError, match="job") as caught:
            list(runner.run(_fail, [1, 2]))
        assert caught.value.hint == "a hint that must survive the trip"
    with JobRunner(1) as runner:
        assert {r[1] for r in runner.run(_square, [1, 2])} == {os.getpid()}  # one worker: in this process


def _threads_in_job(threads: int | None) -> int:
    import torch

    from sentirefine.ensemble.jobs import torch_threads

    with torch_threads(threads):
        inside = torch.get_num_threads()
    assert torch.get_num_threads() == 1  # the worker's own share (2 cores // 2 workers), restored
    return inside


def test_the_last_partial_round_of_jobs_shares_every_core(monkeypatch):
    """5 folds on 2 workers: folds 0-3 in two full rounds on one thread each, then fold 4 alone on
    both cores instead of beside an idle one; a fixed function of the index (a redone fold 4 gets 2)."""
    from sentirefine.ensemble import jobs

    monkeypatch.setattr(jobs, "cpu_count", lambda: 2)
    assert jobs.tail_threads(JobRunner(2), 5) == {4: 2}
    assert jobs.tail_threads(JobRunner(2), 4) == jobs.tail_threads(JobRunner(2), 2) == {}
    assert jobs.tail_threads(JobRunner(1), 5) == {}  # in-process: the caller's threads
    monkeypatch.setattr(jobs, "cpu_count", lambda: 8)
    assert jobs.tail_threads(JobRunner(3), 5) == {3: 4, 4: 4}
    assert jobs.tail_threads(JobRunner(4), 5) == {4: 8}


def test_a_job_runs_on_its_own_threads_and_leaves_its_worker_as_it_was(monkeypatch):
    from sentirefine.ensemble import jobs

    if jobs.cpu_count() != 2:
        pytest.skip("sized for a 2-core machine (CI's)")
    with JobRunner(2) as runner:
        assert sorted(runner.run(_threads_in_job, [None, 2])) == [1, 2]


def test_a_killed_job_worker_stops_the_command_with_a_resumable_error():
    with JobRunner(2) as runner, pytest.raises(TrainingError, match="worker process died") as caught:
        list(runner.run(_die, [1, 2]))
    assert "run the same command again" in caught.value.hint


def test_a_fold_update_trains_on_a_seeded_sample_and_the_lexicon_on_every_row(tmp_path):
    """``fold_update_share`` 'auto' with k = 3: an update sees half of its fold model's rows (a new
    half each iteration, the same half when redone); a fit, and the lexicon's blending update, all."""
    from sentirefine.pipeline.train_folds import FoldJob, fit_fold

    texts, labels = corpus(300, seed=4)
    config = load_config(overrides={
        "workspace": str(tmp_path), "ensemble": {"folds": 3},
        "models": {"lexicon": {"min_count": 1, "tokenizer": "regex"},
                   "lstm": {"tokenizer": "regex", "embedding_dim": 8, "hidden_dim": 8, "epochs": 1, "max_len": 8,
                            "vocab_size": 200}}})
    assignment = fold_of(texts, 3)
    outside = int((assignment != 0).sum())

    def job(name: str, iteration: int, previous: Path | None, out: str) -> FoldJob:
        return FoldJob(config, name, 0, assignment, previous, tmp_path / out, "cpu", iteration, texts, labels)

    for name in ("lstm", "lexicon"):
        assert fit_fold(job(name, 0, None, f"{name}-0")).rows == outside
    first = fit_fold(job("lstm", 1, tmp_path / "lstm-0", "lstm-1"))
    assert first.rows == round(outside / 2)
    assert fit_fold(job("lexicon", 1, tmp_path / "lexicon-0", "lexicon-1")).rows == outside
    # redone (a kill before the save): the same sample, so the same weights
    again = fit_fold(job("lstm", 1, tmp_path / "lstm-0", "lstm-1b"))
    assert (tmp_path / "lstm-1" / "weights.pt").read_bytes() == (tmp_path / "lstm-1b" / "weights.pt").read_bytes()
    assert again.rows == first.rows


def test_an_update_sample_is_new_each_iteration_and_keeps_row_order():
    from sentirefine.models.folds import update_sample

    texts, labels = [f"t{i}" for i in range(100)], np.arange(100) % 2
    one, one_labels = update_sample(texts, labels, 0.25, (13, 1, 0))
    assert len(one) == 25 and one == sorted(one, key=lambda t: int(t[1:]))
    assert [int(t[1:]) % 2 for t in one] == one_labels.tolist()
    assert update_sample(texts, labels, 0.25, (13, 1, 0))[0] == one
    assert update_sample(texts, labels, 0.25, (13, 2, 0))[0] != one
    assert update_sample(texts, labels, 1.0, (13, 1, 0))[0] == texts


ORPHAN_SCRIPT = '''
import os, signal, time
from sentirefine.ensemble.jobs import JobRunner

def worker_pid(_):
    time.sleep(0.2)
    return os.getpid()

if __name__ == "__main__":
    with JobRunner(2) as runner:
        print(" ".join(str(p) for p in sorted(set(runner.run(worker_pid, [1, 2, 3, 4])))), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # the command dies with its workers idle
'''


def test_job_workers_end_with_a_command_killed_by_sigkill(tmp_path):
    """They used to wait on their queue for good, holding their models' memory."""
    import subprocess
    import sys
    import time

    script = tmp_path / "command.py"
    script.write_text(ORPHAN_SCRIPT, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    workers = [int(p) for p in proc.stdout.split()]
    assert workers

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:  # a zombie is gone too
            return stat.read().split(")")[-1].split()[0] != "Z"

    deadline = time.monotonic() + 15
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in workers if alive(p)], "job workers outlived the killed command"
