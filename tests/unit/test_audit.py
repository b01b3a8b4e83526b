"""The per-iteration audit: bias statistics without an LLM, critique through the stub with one."""

from __future__ import annotations

import pytest
from llm_stub import GeminiStub

from sentirefine.config import Config
from sentirefine.data.store import LabelChange, Store
from sentirefine.reporting.audit import audit_stage, bias_flags, group_rates, load_rows


@pytest.fixture
def store(tmp_path):
    """200 train rows in 4 movies; rows with profanity are corrected 5x as often as the rest."""
    s = Store(tmp_path / "ws" / "sentences.db", create=True)
    rows = []
    for i in range(200):
        swear = i % 4 == 0
        text = (f"이 영화 {i} 존나 별로" if swear else f"영화 {i} 볼만했어요 " + "정말 " * (i % 30))
        rows.append((f"r{i}", text, i % 2, i % 2, f"movie{i % 4 if i < 100 else 9}"))
    with s.transaction() as conn:
        conn.executemany("INSERT INTO sentences (id, text, original_label, current_label, split, group_key) "
                         "VALUES (?, ?, ?, ?, 'train', ?)", rows)
        conn.executemany("INSERT INTO predictions VALUES (1, ?, ?, ?, 0.9, 1.0, '{}')",
                         [(sid, 0.9, 1 - (sid - 1) % 2) for sid in range(1, 201, 3)])
    # 20 of the 50 profanity rows corrected, 8 of the 150 others
    swear_rows = [sid for sid in range(1, 201) if (sid - 1) % 4 == 0][:20]
    other_rows = [sid for sid in range(1, 201) if (sid - 1) % 4 != 0][:8]
    s.apply_labels([LabelChange(sid, (sid - 1) % 2, 1 - (sid - 1) % 2, 0.95) for sid in swear_rows + other_rows],
                   iteration=1, source="ensemble")
    yield s
    s.close()


def test_bias_statistics_flag_the_over_corrected_group(store):
    frame = load_rows(store, 1)
    groups = group_rates(frame, top_groups=3)
    assert {"length<15", "profanity=yes", "jamo_slang=no", "movie=movie9"} <= set(groups["group"])
    flags = bias_flags(groups, frame, min_rows=30, ratio=2.0)
    swear = next(f for f in flags if f["group"] == "profanity=yes")
    assert swear == {"group": "profanity=yes", "rows": 50, "correction_rate": 0.4, "overall_rate": 0.14,
                     "ratio": round(0.4 / 0.14, 3)}
    assert all(f["rows"] >= 30 for f in flags)


def test_audit_without_key_writes_report_and_skips_critique(store, tmp_path, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    cfg = Config(workspace=tmp_path / "ws", llm={"bias_min_rows": 30})
    out = audit_stage(cfg, store, 1)
    report = (tmp_path / "ws" / "reports" / "audit-iter-001.md").read_text(encoding="utf-8")
    assert out["path"].endswith("audit-iter-001.md") and "profanity=yes" in {f["group"] for f in out["flags"]}
    assert out["critique"].startswith("skipped: no API key")
    assert "## Bias flags" in report and "**profanity=yes**" in report and "Status: skipped" in report


def test_audit_critique_through_the_stub_is_cached(store, tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "audit-key")
    with GeminiStub() as stub:
        cfg = Config(workspace=tmp_path / "ws", llm={"base_url": stub.url, "audit_sample_rows": 6})
        out = audit_stage(cfg, store, 1)
        again = audit_stage(cfg, store, 1)
        assert len(stub.ok_requests) == 1  # the second audit was answered from the cache
    assert out["critique"] == again["critique"] == "done" and out["critique_agreement"] == 1.0
    sent = stub.requests[0]["body"]["contents"][-1]["parts"][-1]["text"]
    assert "correction" in sent and "disagreement" in sent
    report = (tmp_path / "ws" / "reports" / "audit-iter-001.md").read_text(encoding="utf-8")
    assert "stub critique summary" in report and "| correction |" in report
