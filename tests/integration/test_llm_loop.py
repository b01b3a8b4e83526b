"""The loop with the loopback Gemini stub as its LLM: queued rows relabelled, audited, tracked."""

from __future__ import annotations

import pytest
import yaml
from llm_stub import GeminiStub

from sentirefine.data.store import Store

pytestmark = pytest.mark.integration


def test_loop_with_stub_llm_relabels_queue_and_audits(tiny_corpus, cli, tmp_path):
    from tiny_config import TINY_CONFIG

    workspace = tmp_path / "ws"
    settings = {**TINY_CONFIG, "workspace": str(workspace), "ensemble": {"workers": 0},
                "models": {**TINY_CONFIG["models"], "order": ["lexicon", "lstm"]},
                "refine": {**TINY_CONFIG["refine"], "max_iterations": 1, "llm_queue_below": 0.7},
                "versioning": {"enabled": False}, "tracking": {"register_members": False},
                "llm": {"max_batch_items": 25, "audit_sample_rows": 6, "bias_min_rows": 10, "rpm": 600}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(settings))
    train, gold = tiny_corpus
    cli("-c", str(config), "import", str(train), "--gold", str(gold), "--inject-noise", "0.2", "--noise-seed", "1")
    with GeminiStub(rpm=600, tpm=10**6) as stub:
        env = {"GEMINI_API_KEY": "integration-key", "GOOGLE_API_KEY": "", "SENTIREFINE_LLM__BASE_URL": stub.url}
        out = cli("-c", str(config), "refine", env=env)
        assert stub.violations == 0 and stub.ok_requests
    assert "integration-key" not in out.stderr + out.stdout
    with Store(workspace / "sentences.db") as store:
        metrics = store.iterations()[1]["metrics"]
        llm = metrics["llm"]
        assert llm["skipped"] is False and llm["requests"] > 0 and llm["accepted"] > 0 and llm["rejected"] == 0
        queued = store.conn.execute("SELECT count(*) FROM review_queue WHERE reason='low_confidence'").fetchone()[0]
        still_open = store.open_review_count().get("low_confidence", 0)
        assert still_open < queued and metrics["queued_low_confidence"] == still_open
        llm_rows = store.conn.execute("SELECT count(*) FROM label_history h JOIN sentences s USING (sid) "
                                      "WHERE h.source='llm' AND h.iteration=1 AND s.label_source='llm' "
                                      "AND s.split='train'").fetchone()[0]
        assert llm_rows == llm["changed"] > 0
        assert store.history_is_consistent()
        audit = metrics["audit"]
    report = (workspace / "reports" / "audit-iter-001.md").read_text(encoding="utf-8")
    assert audit["path"].endswith("audit-iter-001.md") and isinstance(audit["flags"], list)
    assert "## Per-group rates" in report and "stub critique summary" in report
    _check_mlflow(workspace)


def _check_mlflow(workspace):
    import mlflow

    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sentirefine").experiment_id],
                              filter_string="attributes.run_name = 'iteration-001'")
    assert runs and runs[0].data.metrics["llm.requests"] > 0
    assert [a.path for a in client.list_artifacts(runs[0].info.run_id, "audit")] == ["audit/audit-iter-001.md"]
