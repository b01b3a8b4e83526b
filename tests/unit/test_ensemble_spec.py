"""EnsembleSpec: JSON round trip, the old formats, and the same numbers as the chain it replaced."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from sentirefine.config import EnsembleConfig, load_config
from sentirefine.ensemble.combine import apply_temperature, combine, fit_temperature, member_weights
from sentirefine.ensemble.crossfit import CrossFit
from sentirefine.ensemble.metrics import classification_metrics
from sentirefine.ensemble.spec import EnsembleSpec

NAMES = ("lexicon", "lstm", "bilstm", "bert")


def _member_p(rng: np.random.Generator, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Members of different quality on one label vector (float32, as the pool returns them)."""
    labels = rng.integers(0, 2, n)
    noise = rng.normal(0, 1, (n, len(NAMES))) * np.array([0.5, 1.0, 2.0, 4.0])
    p = 1 / (1 + np.exp(-((2 * labels[:, None] - 1) * 1.5 + noise)))
    return p.astype(np.float32), labels


def _old_chain(member_p: np.ndarray, weights: dict[str, float], temperatures: dict[str, float],
               rule: str, gamma: float, names: tuple[str, ...] = NAMES):
    """The chain as predict, evaluate and serving each wrote it before the spec."""
    probs = apply_temperature(member_p, [temperatures[n] for n in names])
    return combine(probs, np.array([weights[n] for n in names]), rule=rule, gamma=gamma)


def _assert_same(a, b) -> None:
    for field in ("p_positive", "predicted", "confidence", "agreement", "member_p"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field


@pytest.mark.parametrize("weights", ["equal", "accuracy", "log_loss"])
@pytest.mark.parametrize("confidence", ["probability", "agreement"])
@pytest.mark.parametrize("calibrate", [True, False])
def test_fit_and_combine_equal_the_old_evaluate_chain(weights: str, confidence: str, calibrate: bool) -> None:
    raw, labels = _member_p(np.random.default_rng(7))
    settings = EnsembleConfig(weights=weights, confidence=confidence, calibrate=calibrate, agreement_gamma=1.7)
    spec = EnsembleSpec.fit(list(NAMES), raw, labels, settings, iteration=3)
    # what train.evaluate_members did inline
    temps = [fit_temperature(raw[:, i], labels) if calibrate else 1.0 for i in range(len(NAMES))]
    probs = apply_temperature(raw, temps)
    w = member_weights({n: classification_metrics(labels, probs[:, i]) for i, n in enumerate(NAMES)},
                       NAMES, weights)
    assert spec.temperatures == tuple(temps) and spec.weights == tuple(float(x) for x in w)
    assert (spec.weight_rule, spec.confidence_rule, spec.agreement_gamma, spec.iteration) == (
        weights, confidence, 1.7, 3)
    _assert_same(spec.combine(raw), combine(probs, w, rule=confidence, gamma=1.7))


@pytest.mark.parametrize("seed", range(5))
def test_combine_equals_the_old_chain_on_random_inputs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    member_p = rng.random((300, len(NAMES)))
    member_p[:5] = [0.0, 1.0, 0.5, 1e-9]  # clipped ends and the 0.5 boundary
    raw_w = rng.random(len(NAMES))
    weights = dict(zip(NAMES, (raw_w / raw_w.sum()).tolist(), strict=True))
    temperatures = dict(zip(NAMES, np.exp(rng.normal(0, 1, len(NAMES))).tolist(), strict=True))
    rule = ("probability", "agreement")[seed % 2]
    spec = EnsembleSpec(NAMES, tuple(weights.values()), tuple(temperatures.values()), "accuracy", rule, 0.5 + seed)
    _assert_same(spec.combine(member_p), _old_chain(member_p, weights, temperatures, rule, 0.5 + seed))
    _assert_same(EnsembleSpec.from_json(spec.to_json()).combine(member_p),
                 _old_chain(member_p, weights, temperatures, rule, 0.5 + seed))


def test_json_round_trip_is_exact() -> None:
    raw, labels = _member_p(np.random.default_rng(1))
    spec = EnsembleSpec.fit(list(NAMES), raw, labels, EnsembleConfig(confidence="agreement"), iteration=2)
    text = spec.to_json()
    assert EnsembleSpec.from_json(text) == spec
    data = json.loads(text)
    assert data["format"] == 2 and data["members"] == list(NAMES) and set(data["weights"]) == set(NAMES)
    # through the store: stage info is JSON too
    info = json.loads(json.dumps({"weights": spec.weight_map(), "spec": spec.to_dict()}))
    assert EnsembleSpec.from_stage_info(info, load_config(None, {}), 2) == spec


def test_reads_the_format_1_artifact() -> None:
    old = {"members": list(NAMES), "weights": {"lexicon": 0.4, "lstm": 0.3, "bilstm": 0.2, "bert": 0.1},
           "temperatures": {"lexicon": 1.0, "lstm": 2.5, "bilstm": 0.7, "bert": 1.3},
           "confidence_rule": "agreement", "agreement_gamma": 2.0, "iteration": 4}
    spec = EnsembleSpec.from_json(json.dumps(old))
    assert spec.members == NAMES and spec.weight_rule is None and spec.iteration == 4
    assert spec.weight_map() == old["weights"] and spec.temperature_map() == old["temperatures"]
    member_p = np.random.default_rng(3).random((100, 4))
    _assert_same(spec.combine(member_p), _old_chain(member_p, old["weights"], old["temperatures"], "agreement", 2.0))


def test_reads_the_old_evaluate_stage_info_as_the_old_predict_did() -> None:
    config = load_config(None, {"models": {"order": ["lexicon", "lstm"]},
                                "ensemble": {"confidence": "agreement", "agreement_gamma": 3.0}})
    spec = EnsembleSpec.from_stage_info({"members": {}, "ensemble": {}, "weights": {"lstm": 0.5, "lexicon": 0.5}},
                                        config, 0)
    assert spec.members == ("lexicon", "lstm") and spec.temperatures == (1.0, 1.0)  # no temperatures: 1
    assert (spec.confidence_rule, spec.agreement_gamma, spec.iteration) == ("agreement", 3.0, 0)
    assert spec.checkpoint_dirs(config) == [config.models_dir / "iter-000" / n for n in ("lexicon", "lstm")]
    with_t = EnsembleSpec.from_stage_info({"weights": {"lexicon": 0.7, "lstm": 0.3},
                                           "temperatures": {"lexicon": 1.5, "lstm": 0.5}}, config, 1)
    assert with_t.temperature_map() == {"lexicon": 1.5, "lstm": 0.5} and with_t.weights == (0.7, 0.3)


def test_uniform_spec_of_an_iteration_without_gold() -> None:
    spec = EnsembleSpec.uniform(["a", "b", "c"], EnsembleConfig())
    assert spec.weight_map() == dict.fromkeys("abc", 1 / 3) and spec.temperatures == (1.0, 1.0, 1.0)


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="2 members, 1 weights"):
        EnsembleSpec(("a", "b"), (1.0,), (1.0, 1.0))
    with pytest.raises(ValueError, match="confidence rule"):
        EnsembleSpec(("a",), (1.0,), (1.0,), confidence_rule="vibes")
    with pytest.raises(ValueError, match="format 3"):
        EnsembleSpec.from_dict({"format": 3, "members": ["a"], "weights": {"a": 1.0}})
    with pytest.raises(ValueError, match="names no iteration"):
        EnsembleSpec(("a",), (1.0,), (1.0,)).checkpoint_dirs(load_config(None, {}))


def test_crossfit_merge_keeps_member_order() -> None:
    sids = [10, 11, 12]
    crossfit = CrossFit(NAMES, {"lstm": {10: 0.1, 11: 0.2, 12: 0.3}})
    assert crossfit.pooled == ["lexicon", "bilstm", "bert"]
    pooled = np.array([[0.5, 0.6, 0.7], [0.4, 0.3, 0.2], [0.9, 0.8, 0.1]], dtype=np.float32)
    merged = crossfit.merge(sids, pooled)
    assert merged.dtype == np.float64
    assert np.array_equal(merged[:, 1], [0.1, 0.2, 0.3]) and np.array_equal(merged[:, [0, 2, 3]], pooled)


def test_crossfit_member_probs_sends_only_pooled_members_and_counts_rows_once() -> None:
    calls, seen, split = [], [], []

    class Pool:
        def member_probs(self, dirs, texts, progress=None, *, held_out=False, folds=1):
            assert held_out  # train rows: a fold set answers with the model that held them out
            calls.append([d.name for d in dirs])
            split.append(folds)  # how many fold models a held-out batch is shared among
            if dirs and progress:
                progress(len(texts))
            return np.full((len(texts), len(dirs)), 0.25, dtype=np.float32)

    dirs = [Path("/m") / n for n in ("lexicon", "lstm")]
    out = CrossFit(("lexicon", "lstm"), {"lexicon": {1: 0.9, 2: 0.8}}).member_probs(
        Pool(), dirs, [1, 2], ["a", "b"], seen.append)
    assert calls == [["lstm"]] and seen == [2] and out.tolist() == [[0.9, 0.25], [0.8, 0.25]]
    all_oof = CrossFit(("lexicon",), {"lexicon": {1: 0.9, 2: 0.8}})
    assert all_oof.member_probs(Pool(), dirs[:1], [1, 2], ["a", "b"], seen.append).tolist() == [[0.9], [0.8]]
    assert seen == [2, 2]  # nothing went through the pool, the rows still count
    CrossFit(("lstm",), {}, folds=5).member_probs(Pool(), dirs[1:], [1, 2], ["a", "b"])
    assert split == [1, 1, 5]  # ensemble.folds reaches the pool, which sizes its held-out tasks by it


def test_served_model_reads_a_format_1_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A version registered by the old code (its ensemble.json) predicts as the old pyfunc did."""
    from sentirefine.integrations import serving

    class Member:
        def __init__(self, shift: float) -> None:
            self.shift = shift

        def predict_proba(self, texts):
            p = np.clip(np.array([len(t) / 10 for t in texts]) + self.shift, 0.01, 0.99)
            return np.column_stack([1 - p, p])

    shifts = {"lexicon": 0.0, "lstm": 0.2, "bilstm": -0.1, "bert": 0.3}
    monkeypatch.setattr(serving, "load_model", lambda path: Member(shifts[path.name]))
    old = {"members": list(NAMES), "weights": {"lexicon": 0.4, "lstm": 0.3, "bilstm": 0.2, "bert": 0.1},
           "temperatures": {"lexicon": 1.0, "lstm": 2.5, "bilstm": 0.7, "bert": 1.3},
           "confidence_rule": "probability", "agreement_gamma": 1.0, "iteration": 1}
    (tmp_path / "ensemble.json").write_text(json.dumps(old), encoding="utf-8")
    context = SimpleNamespace(artifacts={serving.SPEC_ARTIFACT: str(tmp_path / "ensemble.json")}
                              | {n: str(tmp_path / n) for n in NAMES})
    model = serving.EnsemblePyfunc()
    model.load_context(context)
    texts = ["좋다", "정말 재밌어요", "돈 아깝다 진짜로"]
    got = model.predict(context, pd.DataFrame({"text": texts}))
    member_p = np.stack([Member(shifts[n]).predict_proba(texts)[:, 1] for n in NAMES], axis=1)
    want = _old_chain(member_p, old["weights"], old["temperatures"], "probability", 1.0)
    assert got["label"].tolist() == want.predicted.tolist()
    assert np.array_equal(got["probability"].to_numpy(), want.p_positive)
    assert np.array_equal(got["confidence"].to_numpy(), want.confidence)


def _log_loss(p: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def test_stacked_weights_give_a_twin_one_share_and_the_vote_the_least_gold_loss() -> None:
    """Two copies of one mediocre member and one good member: per-member rules let the copies
    outvote it (2 of 3 by accuracy); stacking gives the pair about one member's share, and no
    mix of the weights nearby has a lower loss than the one it found."""
    from sentirefine.ensemble.combine import stacked_weights

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 4000)
    sign = 2 * labels - 1
    good = 1 / (1 + np.exp(-(1.5 * sign + rng.normal(0, 1.0, labels.size))))
    mediocre = 1 / (1 + np.exp(-(1.0 * sign + rng.normal(0, 1.5, labels.size))))
    probs = np.column_stack([good, mediocre, mediocre])
    w = stacked_weights(probs, labels)
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0)
    assert w[0] > 0.6 and w[1] == pytest.approx(w[2])  # the twins split one share
    accuracy = member_weights({n: classification_metrics(labels, probs[:, i]) for i, n in enumerate("abc")},
                              list("abc"), "accuracy")
    assert accuracy[0] < 0.5  # the rule it replaces: the twins outvote the good member
    best = _log_loss(probs @ w, labels)
    for step in rng.normal(0, 0.05, (50, 3)):
        other = np.clip(w + step, 0, None)
        assert _log_loss(probs @ (other / other.sum()), labels) >= best - 1e-6


def test_a_stacked_spec_round_trips_and_votes_with_its_weights(tmp_path) -> None:
    raw, labels = _member_p(np.random.default_rng(11))
    spec = EnsembleSpec.fit(list(NAMES), raw, labels, EnsembleConfig(weights="stacked"), iteration=1)
    assert spec.weight_rule == "stacked" and spec.weights[0] == max(spec.weights)  # the least noisy member
    again = EnsembleSpec.from_json(spec.to_json())
    assert again == spec
    _assert_same(again.combine(raw), spec.combine(raw))
