"""LLM rate-limit benchmark: a backlog through the limiter and the real SDK against the loopback stub.

Measures how much of the allowed rate (rpm or tpm, whichever binds) the relabel stage uses
while a backlog exists, and checks the stub never had to answer 429. Windows are shortened
(``--window``, with ``arrival_allowance_s`` scaled alike) so a run takes a minute or two.

    .venv/bin/python bench/llm_rate.py            # writes bench/results/llm_rate.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from llm_stub import GeminiStub  # noqa: E402

from sentirefine.config import Config  # noqa: E402
from sentirefine.data.store import Store  # noqa: E402
from sentirefine.integrations.llm.ratelimit import window_fill  # noqa: E402
from sentirefine.integrations.llm.relabel import relabel_stage  # noqa: E402


def _store(path: Path, rows: int) -> Store:
    store = Store(path, create=True)
    texts = [f"리뷰 {i}: " + ("재밌고 감동적인 영화 " if i % 2 else "지루하고 돈 아까운 영화 ") * (1 + i % 4)
             for i in range(rows)]
    with store.transaction() as conn:
        conn.executemany("INSERT INTO sentences (id, text, original_label, current_label, split) "
                         "VALUES (?, ?, 0, 0, 'train')", [(f"r{i}", t) for i, t in enumerate(texts)])
        conn.execute("INSERT INTO review_queue (sid, iteration, reason, confidence) "
                     "SELECT sid, 1, 'low_confidence', 0.55 FROM sentences")
    return store


def scenario(name: str, *, rpm: int, tpm: int, window: float, rows: int, items: int, latency: float,
             concurrency: int, allowance: float | None = None) -> dict:
    os.environ["GEMINI_API_KEY"] = "bench-key"
    with tempfile.TemporaryDirectory() as tmp, GeminiStub(rpm=rpm, tpm=tpm, window_s=window) as stub:
        stub.delay_s = latency
        store = _store(Path(tmp) / "ws" / "sentences.db", rows)
        cfg = Config(workspace=Path(tmp) / "ws", llm={
            "base_url": stub.url, "rpm": rpm, "tpm": tpm, "window_s": window, "max_batch_items": items,
            "concurrency": concurrency, "max_rows_per_iteration": None, "backoff_s": 0.05,
            "arrival_allowance_s": allowance})
        started = time.perf_counter()
        out = relabel_stage(cfg, store, iteration=1)
        seconds = time.perf_counter() - started
        ok = [(r["t"], r["tokens"]) for r in stub.requests if r["status"] == 200]
        result = {
            "scenario": name, "rpm": rpm, "tpm": tpm, "window_s": window, "rows": rows, "items_per_request": items,
            "stub_latency_s": latency, "concurrency": concurrency, "seconds": round(seconds, 2),
            "requests": out["requests"], "tokens_in": out["tokens_in"], "accepted": out["accepted"],
            "rpm_utilisation": out["rpm_utilisation"], "tpm_utilisation": out["tpm_utilisation"],
            "server_rpm_utilisation": round(window_fill([(t, 1) for t, _ in ok], rpm, window), 4),
            "server_tpm_utilisation": round(window_fill(ok, tpm, window), 4), "arrival_allowance_s": allowance,
            "server_429": stub.violations,
        }
        store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=5.0, help="seconds standing in for a minute")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "llm_rate.json")
    args = parser.parse_args()
    w = args.window
    # Request sizes are ~2% of tpm (Gemini: ~2-3k tokens against 250k), five windows of backlog each.
    # Slots return a window after the answer (allowance = window) unless the scenario says otherwise.
    results = [
        scenario("rpm-bound", rpm=20, tpm=10**7, window=w, rows=2000, items=20, latency=0.05, concurrency=8),
        scenario("tpm-bound", rpm=10_000, tpm=40_000, window=w, rows=4400, items=20, latency=0.05, concurrency=8),
        scenario("rpm-bound, slow answers", rpm=20, tpm=10**7, window=w, rows=2000, items=20, latency=0.5,
                 concurrency=8),
        scenario("rpm-bound, slow answers, allowance", rpm=20, tpm=10**7, window=w, rows=2000, items=20,
                 latency=0.5, concurrency=8, allowance=w / 20),
    ]
    for r in results:
        binding = "rpm" if r["scenario"].startswith("rpm") else "tpm"
        print(f"{r['scenario']:>36}: {r['requests']} requests in {r['seconds']} s, "
              f"{binding} utilisation {r[f'{binding}_utilisation']:.3f} (server-side "
              f"{r[f'server_{binding}_utilisation']:.3f}), 429s {r['server_429']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    "note": "2 shared CPU cores, contended; windows shortened to --window s",
                                    "results": results}, indent=1), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
