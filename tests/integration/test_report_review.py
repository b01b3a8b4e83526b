"""The report in a real headless Chromium, and the human review round trip through the CLI.

One small workspace (real tiny corpus, the lexicon member only, so that it is quick) is built
once for the module: import, bootstrap and one iteration, tracked in the embedded MLflow store.
The lexicon keeps its default ``min_count`` (TINY_CONFIG's 1 makes the updated lexicon of a
600-row corpus collapse to one class with low confidence, which would leave the round trip
nothing to protect the human labels from).
"""

from __future__ import annotations

import base64
import csv
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sentirefine.data.store import Store

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def workspace(tiny_corpus, tmp_path_factory, cli):
    from tiny_config import TINY_CONFIG

    root = tmp_path_factory.mktemp("review")
    cfg = {**TINY_CONFIG, "workspace": str(root / "ws"), "models": {"order": ["lexicon"]},
           "ensemble": {"workers": 0},  # predict in-process: no Pool workers to start (the loop tests cover it)
           "versioning": {"enabled": False}, "tracking": {"register_members": False}}
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    train, gold = tiny_corpus
    cli("-c", str(config), "import", str(train), "--gold", str(gold), "--inject-noise", "0.2", "--noise-seed", "1")
    cli("-c", str(config), "-q", "refine", "--max-iterations", "1", env={"GEMINI_API_KEY": "", "GOOGLE_API_KEY": ""})
    return config, root / "ws"


def test_report_renders_in_headless_chromium(workspace, cli, tmp_path):
    config, ws = workspace
    out = cli("-c", str(config), "report")
    path = re.search(r"^report: (.+)$", out.stdout, re.M).group(1)
    assert path.endswith("reports/report.html")
    page = Path(path).read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # no network asset
    if not CHROMIUM:
        pytest.skip("Debian chromium is not installed (.ci/run installs it with apt-get; that failed here)")
    dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          f"file://{path}"], capture_output=True, text=True, timeout=120).stdout
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', dom)
    assert len(images) >= 6, [alt for alt, _ in images]  # 4 plots + confusion of lexicon and ensemble
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for _, data in images)
    assert {"Gold accuracy", "Corrections by source", "Label and lexicon change rate"} <= {a for a, _ in images}
    iterations = re.search(r'<table id="iterations">.*?<tbody>(.*?)</tbody>', dom, re.S).group(1)
    assert iterations.count("<tr>") == 2  # bootstrap + iteration 1
    corrections = re.search(r'<table id="corrections">.*?<tbody>(.*?)</tbody>', dom, re.S).group(1)
    assert corrections.count("<tr>") >= 1 and "ensemble" in corrections
    # and the same file is attached to the command's MLflow run
    import mlflow

    uri = f"sqlite:///{ws / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sentirefine").experiment_id],
                              filter_string="tags.`sentirefine.command` = 'refine'")
    assert [a.path for a in client.list_artifacts(runs[0].info.run_id, "report")] == ["report/report.html"]


def test_review_round_trip_human_labels_survive_the_next_iteration(workspace, cli, tmp_path):
    config, ws = workspace
    exported = tmp_path / "review.csv"
    cli("-c", str(config), "review", "export", "-o", str(exported))
    rows = list(csv.DictReader(exported.read_text(encoding="utf-8").splitlines()))
    assert rows and {r["reason"] for r in rows} <= {"frozen", "low_confidence"}
    with Store(ws / "sentences.db") as store:
        # rows the ensemble is sure about: a person disagreeing with it is what must survive
        sure = store.conn.execute("SELECT s.id, p.predicted FROM predictions p JOIN sentences s ON s.sid = p.sid "
                                  "WHERE p.iteration = 1 ORDER BY p.confidence DESC LIMIT 10").fetchall()
        gold_id = store.conn.execute("SELECT id FROM sentences WHERE split='gold' LIMIT 1").fetchone()[0]
    human = {r["id"]: 1 - int(r["current_label"]) for r in rows[:5]} | {i: 1 - pred for i, pred in sure}
    filled = tmp_path / "filled.csv"
    with open(filled, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "human_label"])
        writer.writerows([*human.items(), (gold_id, 1)])
    bad = cli("-c", str(config), "review", "import", str(filled), "--strict", check=False)
    assert bad.returncode == 3 and "is a gold row" in bad.stderr
    lenient = cli("-c", str(config), "review", "import", str(filled), check=False)
    assert lenient.returncode == 3 and f"human labels written {len(human)}" in lenient.stdout

    cli("-c", str(config), "-q", "refine", "--max-iterations", "2",  # MLflow was checked above: save the time
        env={"GEMINI_API_KEY": "", "GOOGLE_API_KEY": "", "SENTIREFINE_TRACKING__ENABLED": "false"})
    with Store(ws / "sentences.db") as store:
        now = dict(store.conn.execute("SELECT id, current_label FROM sentences WHERE label_source='human'"))
        assert now == human
        assert store.conn.execute(
            "SELECT count(*) FROM label_history h JOIN sentences s ON s.sid = h.sid "
            "WHERE s.label_source = 'human' AND h.iteration = 2").fetchone()[0] == 0
        # not vacuous: iteration 2's ensemble wanted to change some of them back, confidently
        wanted = store.conn.execute(
            "SELECT count(*) FROM predictions p JOIN sentences s ON s.sid = p.sid WHERE p.iteration = 2 "
            "AND s.label_source = 'human' AND p.predicted != s.current_label AND p.confidence >= 0.7").fetchone()[0]
        assert wanted >= 1
        assert store.history_is_consistent()
