"""The instance-dependent bench noise: flips concentrate on reviews a reader finds ambiguous."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from sentirefine import demo

pytest.importorskip("sklearn", reason="the ambiguous noise kind needs scikit-learn (the bench extra)")


def test_ambiguous_rates_average_the_target_and_follow_the_reader(tmp_path):
    from bench import noise

    train = tmp_path / "train.tsv"
    with gzip.open(demo.TRAIN, "rb") as src, open(train, "wb") as dst:
        shutil.copyfileobj(src, dst)
    rates = noise.rate("ambiguous25", train, seed=1)
    values = np.array(list(rates.rates.values()))
    assert len(values) == 8000 and values.max() <= noise.AMBIGUOUS_CAP
    assert values.mean() == pytest.approx(noise.AMBIGUOUS_MEAN, abs=0.02)
    # instance-dependent, not uniform: the most ambiguous tenth flips far more often than the surest tenth
    ranked = np.sort(values)
    assert ranked[-800:].mean() > 5 * ranked[:800].mean()
    assert noise.rate("ambiguous25", train, seed=1) == rates  # fixed seed: the same rates every run


def test_unknown_kind_and_missing_file_are_clear():
    from bench import noise

    with pytest.raises(SystemExit, match="choose from"):
        noise.rate("nope")
    with pytest.raises(SystemExit, match="pass it"):
        noise.rate("ambiguous25")
