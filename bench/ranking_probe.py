"""How well each member, and the ensemble, ranks the wrong labels at one iteration of a kept arm.

Every correction rule flips the top of one ranking (the vote's confidence in the other class) and
differs only in where it cuts; so the ranking bounds what any rule can reach at that iteration.
This reads a quality arm's workspace kept with ``--keep-workspaces``: the stored predictions of
iteration ``k`` (made by the models of iteration ``k-1``, before ``k``'s corrections), the labels
as they stood then (rebuilt from the history), and the pre-noise truth. For each score it gives
precision and label-error F1 among the top *N* disagreements, the best cut, and what the
threshold rule's 0.70 takes. ``--refit RULE`` also refits the vote's weights with another
``ensemble.weights`` rule (``stacked``, ``accuracy``, ...) on the gold split, as predicted by the
same models that voted (their held-out view; the recorded temperatures kept), and ranks with
those weights too, so a weight rule is judged without running the loop.
``python -m bench.ranking_probe <workspace> [--iteration 1] [--refit stacked]``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import numpy as np

DEPTHS = (1000, 2000, 3000, 4000, 5000)


def load(db: Path, iteration: int) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """(labels before ``iteration``'s corrections == truth, per-score P(positive), labels) of the train rows."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = conn.execute(
        "SELECT p.p_positive, p.members, r.label, COALESCE((SELECT h.old_label FROM label_history h "
        "WHERE h.sid = p.sid AND h.iteration >= ? ORDER BY h.hid LIMIT 1), s.current_label) "
        "FROM predictions p JOIN sentences s ON s.sid = p.sid JOIN reference_labels r ON r.sid = p.sid "
        "WHERE p.iteration = ? AND s.split = 'train' ORDER BY p.sid", (iteration, iteration)).fetchall()
    conn.close()
    if not rows:
        raise SystemExit(f"{db}: no predictions of iteration {iteration} (or no reference labels: a bench workspace?)")
    members = [json.loads(r[1]) for r in rows]
    scores = {"ensemble": np.array([r[0] for r in rows])}
    scores.update({n: np.array([m[n] for m in members]) for n in members[0]})
    labels = np.array([r[3] for r in rows])
    return labels != np.array([r[2] for r in rows]), scores, labels


def curve(wrong: np.ndarray, p_positive: np.ndarray, labels: np.ndarray) -> dict[str, object]:
    """Precision and F1 at each depth of the ranking by P(the other class), the best cut, the 0.70 cut."""
    other = np.where(labels == 1, 1.0 - p_positive, p_positive)
    order = np.argsort(-other, kind="stable")
    hits = np.cumsum(wrong[order])
    depth = np.arange(1, len(order) + 1)
    f1 = 2 * hits / (depth + wrong.sum())
    best = int(f1.argmax())
    at70 = int((other >= 0.70).sum())
    return {"at": {n: {"precision": round(float(hits[n - 1] / n), 3), "f1": round(float(f1[n - 1]), 3)}
                   for n in DEPTHS if n <= len(order)},
            "best": {"depth": best + 1, "f1": round(float(f1[best]), 3),
                     "precision": round(float(hits[best] / (best + 1)), 3)},
            "threshold_0.70": {"rows": at70,
                               "precision": round(float(hits[at70 - 1] / at70), 3) if at70 else None}}


def refitted(workspace: Path, iteration: int, rule: str) -> tuple[dict[str, float], dict[str, float]]:
    """Weights of ``rule`` fitted on the gold split for the models that voted in ``iteration``; the gold
    accuracy of the vote (their held-out view) under the recorded weights and under the refitted ones."""
    from sentirefine.ensemble.combine import apply_temperature, fit_weights
    from sentirefine.models import load_model

    conn = sqlite3.connect(f"file:{workspace / 'sentences.db'}?mode=ro", uri=True)
    gold = conn.execute("SELECT text, current_label FROM sentences WHERE split = 'gold' ORDER BY sid").fetchall()
    spec = json.loads(conn.execute("SELECT info FROM stages WHERE iteration = ? AND stage = 'evaluate'",
                                   (iteration - 1,)).fetchone()[0])["spec"]
    conn.close()
    names, texts, labels = spec["members"], [g[0] for g in gold], np.array([g[1] for g in gold])
    models = workspace / "models" / f"iter-{iteration - 1:03d}"
    raw = np.column_stack([load_model(models / n).predict_held_out(texts)[:, 1] for n in names])
    probs = apply_temperature(raw, [spec["temperatures"][n] for n in names])
    fitted = fit_weights(probs, labels, names, rule)
    weights = {"recorded": np.array([spec["weights"][n] for n in names]), rule: fitted}
    accuracy = {k: round(float(np.mean((probs @ w > 0.5) == labels)), 4) for k, w in weights.items()}
    return dict(zip(names, fitted.round(4).tolist(), strict=True)), accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--iteration", type=int, default=1)
    parser.add_argument("--refit", default=None, help="also rank with weights of this ensemble.weights rule")
    args = parser.parse_args()
    wrong, scores, labels = load(args.workspace / "sentences.db", args.iteration)
    out = {"workspace": str(args.workspace), "iteration": args.iteration, "rows": len(labels),
           "wrong_labels": int(wrong.sum()), "scores": {n: curve(wrong, p, labels) for n, p in scores.items()}}
    if args.refit:
        weights, accuracy = refitted(args.workspace, args.iteration, args.refit)
        vote = np.column_stack([scores[n] for n in weights]) @ np.array(list(weights.values()))
        out["refit"] = {"rule": args.refit, "weights": weights, "held_out_gold_accuracy": accuracy,
                        "ranking": curve(wrong, vote, labels)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
