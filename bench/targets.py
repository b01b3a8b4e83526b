"""The issue's targets, checked against whatever results exist (met / missed / not measured).

Each check names the result it read; a smoke or contended result is labelled so, because a
target "met" at 1,500 rows on a busy machine proves nothing about 20,000 on a quiet one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Row = list[str]


def _pick(results: list[dict[str, Any]], benchmark: str, noise: str | None = None) -> dict[str, Any] | None:
    """The largest run of ``benchmark`` (preferring full over smoke) for ``noise``."""
    found = [r for r in results if r["benchmark"] == benchmark and (noise is None or r.get("noise") == noise)]
    return max(found, key=lambda r: (not r.get("smoke"), r.get("size") or 0), default=None)


def _src(r: dict[str, Any]) -> str:
    flags = [f for f in ("smoke", "contended") if r.get(f)]
    return f"{r['_file'] if '_file' in r else r['benchmark']}" + (f" ({', '.join(flags)})" if flags else "")


def _arm(r: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((a for a in r["arms"] if a["arm"] == name), None)


# The cleanlab anchors a target is measured against: the best of them counts.
CLEANLAB_ARMS = ("cleanlab_flip", "cleanlab_remove", "cleanlab_iter")


def _status(ok: bool, r: dict[str, Any] | None = None) -> str:
    if r is not None and r.get("smoke"):
        return f"not judged: smoke run ({'met' if ok else 'missed'} at that size)"
    return "met" if ok else "**missed**"


def _quality(results: list[dict[str, Any]]) -> list[Row]:
    r = _pick(results, "quality", "uniform20")
    names = ["label-error F1 ≥ cleanlab's + 2 points (20% uniform)", "clean labels wrongly changed ≤ 1% (20% uniform)",
             "ensemble on refined labels within 1 gold-acc point of clean ceiling (20% uniform)",
             "ensemble on refined labels ≥ 3 gold-acc points above noisy floor (20% uniform)"]
    if r is None:
        return [[n, "–", "not measured", "–"] for n in names]
    sr, none, clean = _arm(r, "sentirefine"), _arm(r, "none"), _arm(r, "clean")
    cls = [a for a in (_arm(r, name) for name in CLEANLAB_ARMS) if a and a["labels"]["f1"] is not None]
    out: list[Row] = []
    checks: list[tuple[str, Callable[[], tuple[str, bool]] | None]] = [
        (names[0], (lambda: _f1_vs_cleanlab(sr, cls)) if sr and cls and sr["labels"]["f1"] is not None else None),
        (names[1], (lambda: (f"{100 * sr['labels']['clean_wrongly_changed_rate']:.2f}%",
                             sr["labels"]["clean_wrongly_changed_rate"] <= 0.01)) if sr else None),
        (names[2], (lambda: _gap(sr, clean, "ceiling")) if sr and clean else None),
        (names[3], (lambda: _gap(sr, none, "floor")) if sr and none else None),
    ]
    for name, check in checks:
        if check is None:
            out.append([name, "–", "not measured", _src(r)])
        else:
            value, ok = check()
            out.append([name, value, _status(ok, r), _src(r)])
    return out


def _f1_vs_cleanlab(sr: dict[str, Any], cls: list[dict[str, Any]]) -> tuple[str, bool]:
    best = max(cls, key=lambda a: a["labels"]["f1"])
    diff = 100 * (sr["labels"]["f1"] - best["labels"]["f1"])
    return f"{sr['labels']['f1']:.3f} vs {best['labels']['f1']:.3f} ({diff:+.1f} points)", diff >= 2.0


def _gap(sr: dict[str, Any], other: dict[str, Any], kind: str) -> tuple[str, bool]:
    a, b = sr["gold"]["ensemble"]["accuracy"], other["gold"]["ensemble"]["accuracy"]
    diff = 100 * (a - b)
    ok = diff >= -1.0 if kind == "ceiling" else diff >= 3.0
    return f"{a:.4f} vs {kind} {b:.4f} ({diff:+.1f} points)", ok


def _speed(results: list[dict[str, Any]]) -> list[Row]:
    r = _pick(results, "speed")
    if r is None:
        return [["Pool(2)/Pool(1) speedup ≥ 1.7", "–", "not measured", "–"],
                ["bulk update ≥ 100k rows/s", "–", "not measured", "–"]]
    ratio, bulk = r["pool2_over_pool1"]["total"], r["bulk_update"]["bulk_rows_per_s"]
    scaling = r.get("pool2_over_pool1_one_thread", {}).get("total")
    # Judged as shipped: Pool(1)'s lone worker already uses every core through its threads.
    value = f"{ratio:.2f}" + (f" (against a one-thread Pool(1): {scaling:.2f})" if scaling else "")
    return [["Pool(2)/Pool(1) speedup ≥ 1.7", value, _status(ratio >= 1.7, r), _src(r)],
            ["bulk update ≥ 100k rows/s", f"{bulk:,.0f} rows/s ({r['bulk_update']['bulk_rows']} rows)",
             _status(bulk >= 100_000, r), _src(r)]]


def _memory(results: list[dict[str, Any]]) -> list[Row]:
    r = _pick(results, "memory")
    name = "peak RSS at the largest size within 10% of the smallest (150k vs ~500k)"
    if r is None:
        return [[name, "–", "not measured", "–"]]
    small, large = str(min(r["sizes"])), str(max(r["sizes"]))

    def peak(n: str) -> float:
        """The larger of the main process's peak (import or predict) and one Pool worker's peak."""
        run = r["runs"][n]
        return max(run["import"]["peak_rss_mb"], run["predict"]["peak_rss_mb"],
                   run["predict"].get("workers_peak_rss_mb") or 0.0)

    growth = peak(large) / peak(small) - 1
    return [[name, f"{peak(small):.0f} MB at {small} → {peak(large):.0f} MB at {large} ({100 * growth:+.1f}%)",
             _status(growth <= 0.10, r), _src(r)]]


def rows(results: list[dict[str, Any]]) -> list[Row]:
    return _quality(results) + _speed(results) + _memory(results)
