"""The per-process tokenisation cache stays within its bound, and members of a batch still share it."""

from __future__ import annotations

import pytest

from sentirefine.models import text


@pytest.fixture
def small_cache():
    before = text._CACHE_LIMIT["entries"]
    text._CACHE.pop("regex", None)
    text.set_cache_limit(50)
    yield text._CACHE
    text.set_cache_limit(before)
    text._CACHE.pop("regex", None)


def test_cache_never_holds_more_than_its_bound_plus_the_current_batch(small_cache):
    tok = text.Tokenizer("regex")
    for start in range(0, 1000, 20):
        batch = [f"review number {i}" for i in range(start, start + 20)]
        assert tok.tokenize(batch)[0] == ["review", "number", str(start)]
        assert len(small_cache["regex"]) <= 50
        assert all(t in small_cache["regex"] for t in batch)  # the next member of this batch hits the cache


def test_lowering_the_bound_drops_a_larger_cache(small_cache):
    text.set_cache_limit(1000)
    text.Tokenizer("regex").tokenize([f"t {i}" for i in range(300)])
    assert len(small_cache["regex"]) == 300
    text.set_cache_limit(100)
    assert len(small_cache["regex"]) == 0


def test_reading_cached_texts_again_keeps_them(small_cache):
    # 40 texts under a bound of 50. A fold re-reading 30 of them (a cross-fit copy fitting on the
    # other folds) hits the cache; it must not clear it because 40 + 30 > 50 and so lose the 10
    # held-out texts the fold predicts next.
    tok = text.Tokenizer("regex")
    texts = [f"review {i}" for i in range(40)]
    tok.tokenize(texts)
    tok.tokenize(texts[10:])
    assert all(t in small_cache["regex"] for t in texts[:10])
    tok.tokenize([f"other {i}" for i in range(20)])  # 40 + 20 new > 50: now it clears
    assert len(small_cache["regex"]) == 20


def test_every_tokenizer_in_a_process_shares_one_kiwi_analyser():
    # A fold set at k = 5 holds 15 Kiwi-reading members per pool worker: one analyser each cost
    # ~4 s and 100-200 MB apiece. Copies (the lexicon's change-rate snapshot) and pickles (a job
    # sent to a worker) leave it behind and find the process's one again.
    import copy
    import pickle

    first, second = text.Tokenizer("kiwi", num_workers=1), text.Tokenizer("kiwi", num_workers=1)
    text._CACHE.pop("kiwi", None)
    assert first.tokenize(["영화 정말 재밌었다"])[0][:2] == ["영화", "정말"]
    assert second.tokenize(["배우 연기가 지루했다"])[0][0] == "배우"
    assert first._kiwi is second._kiwi
    copied = copy.deepcopy(first)
    assert "_kiwi" not in copied.__dict__ and "_kiwi" not in pickle.loads(pickle.dumps(first)).__dict__
    assert copied._kiwi is first._kiwi
