"""Render BENCHMARKS.md from bench/results/*.json: provenance, tables, targets met or missed.

Smoke results (tiny sizes, cheap members) are shown only for a benchmark that has no full
result yet, and every table says which it is, so a smoke number is never read as the real one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import arms, effective, targets

KINDS = ("quality", "stages", "speed", "memory", "serving", "pretrain_choice")


def _read(path: Path) -> dict[str, Any]:
    payload = json.loads(path.read_text(encoding="utf-8")) | {"_file": path.name}
    if path.name.startswith("pretrain_choice"):  # files written before the payload named its benchmark
        payload.setdefault("benchmark", "pretrain_choice")
    return payload


def load(results: Path) -> list[dict[str, Any]]:
    """Result payloads of this harness (other tools' JSON files in the folder are left alone),
    smoke ones dropped where a full result of the same benchmark exists."""
    found = [_read(p) for p in sorted(results.glob("*.json"))]
    found = [r for r in found if r.get("benchmark") in KINDS]
    full = {r["benchmark"] for r in found if not r.get("smoke")}
    return [r for r in found if not (r.get("smoke") and r["benchmark"] in full)]


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _acc_f1(metrics: dict[str, Any]) -> str:
    return f"{_f(metrics.get('accuracy'))} / {_f(metrics.get('f1'))}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


# The issue's order: the targets' noise level first, then the harder cases.
_NOISE_ORDER = {"uniform20": 0, "uniform40": 1, "classcond": 2, "ambiguous25": 3}


def _rate(rate: float | dict[str, float] | str) -> str:
    """20% uniform, per true class for class-conditional noise (keys are the true label), or the
    instance-dependent rule as the result file describes it."""
    if isinstance(rate, str):
        return f"flips on ambiguous reviews, {rate}"
    if not isinstance(rate, dict):
        return f"{rate:.0%} of labels flipped at random"
    names = {"1": "positives → negative", "0": "negatives → positive"}
    return ", ".join(f"{v:.0%} of {names.get(str(k), f'class {k}')}" for k, v in sorted(rate.items(), reverse=True))


def provenance(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    return [f"`{r['command']}` — {r['date']}, {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, "
            f"no GPU, git {r.get('git_rev')}, load average at start {r.get('load_average_at_start')}, "
            f"data {r.get('data')} ({r.get('size')} train rows, {r.get('gold_size')} gold){_run_flag(r)}", ""]


def _run_flag(r: dict[str, Any]) -> str:
    """What a smoke or contended run's numbers are worth.

    A contended quality run still measures labels and accuracies exactly (every arm is seeded and
    uses a fixed thread count, so it reproduces on a quiet machine); only its wall times grow.
    """
    if r.get("smoke"):
        return " — **SMOKE RUN: not a result, only proof the harness works**"
    if not r.get("contended"):
        return ""
    if r.get("benchmark") == "quality":
        return " — **shared, busy machine: wall times are inflated; labels and accuracies are not affected**"
    return " — **CONTENDED RUN: timings on a shared, busy machine, not a result**"


def _record_note(r: dict[str, Any], a: dict[str, Any], notes: list[str]) -> str:
    """A footnote mark for a record that is stale or was measured under another arm name."""
    stale = effective.stale(r, a)
    if stale:
        notes += [f"† `{a['arm']}` is **stale**: {stale}. Measure it again with "
                  f"`--arms` naming it; until then compare it with care.", ""]
        return " †"
    if a.get("measured_as"):
        notes += [f"`{a['arm']}` is the run measured as `{a['measured_as']}`: the same settings, data and seeds "
                  "(the benchmark is deterministic), so it was not run twice.", ""]
    return ""


def _queue(labels: dict[str, Any]) -> str:
    """The open review queue and the share of the remaining wrong labels in it ("–" before it was recorded)."""
    if "queue_open" not in labels:
        return "–"
    return f"{labels['queue_open']} ({_pct(labels['remaining_errors_in_queue_share'])})"


def quality(r: dict[str, Any]) -> list[str]:
    r = {**r, "arms": arms.in_order(r["arms"])}
    members = r["members"]
    head = ["arm", "detected", "precision", "recall", "F1", "clean wrongly changed", "final label acc",
            "open queue (remaining noise in it)", *[f"gold acc / F1 {m}" for m in members], "gold acc ensemble",
            "gold F1 ensemble", "iterations", "wall s"]
    rows, notes = [], []
    for a in r["arms"]:
        lab, gold = a["labels"], a["gold"]
        mark = _record_note(r, a, notes)
        rows.append([f"`{a['arm']}`{mark}", _f(lab["detected"]), _f(lab["precision"]), _f(lab["recall"]), _f(lab["f1"]),
                     _pct(lab["clean_wrongly_changed_rate"]), _f(lab["final_label_accuracy"]), _queue(lab),
                     *[_acc_f1(gold["members"].get(m, {})) for m in members],
                     _f(gold["ensemble"]["accuracy"]), _f(gold["ensemble"]["f1"]),
                     f"{a['iterations']}{' (converged)' if a.get('converged') else ''}",
                     _f(a["wall_seconds"] + (a.get("shared_bootstrap_seconds") or 0), 0)])
    noisy = r["arms"][0]["labels"]
    out = [f"### Noise `{r['noise']}` ({_rate(r['noise_rate'])}): {noisy['injected_errors']} of {noisy['rows']} "
           f"train labels flipped", "", *_last_run(r), *bert_start(r), *_table(head, rows), ""]
    out += ["Arms: " + "; ".join(f"`{a['arm']}` = {a['doc']}" for a in r["arms"]) + ".",
            "Wall s includes the shared noisy bootstrap where an arm starts from it.", "", *notes]
    out += ablations(r)
    dates = sorted({a["measured_at"][:10] for a in r["arms"] if a.get("measured_at")})
    if len(dates) > 1:
        out += [f"Arms were measured in resumed runs on {', '.join(dates)} (same data, seeds and overrides; "
                "each arm's date, git revision and load average are in the JSON file).", ""]
    if r.get("complete") is False:
        out += ["**Partial run:** only the arms above are measured so far; the run resumes with the rest.", ""]
    return out


def _last_run(r: dict[str, Any]) -> list[str]:
    """Provenance of the run that last wrote the file (with ``--arms`` it measured only those)."""
    line, *rest = provenance(r)
    return ["Last run: " + line, *rest]


def ablations(r: dict[str, Any]) -> list[str]:
    """Each ablation against the default arm: does the measurement support the shipped default?

    The settings compared are read from the two records, so the table cannot name a setting the
    runs did not differ in. Label-error F1 decides (cleaning labels is the loop's job); a tie
    within half a point goes to the default unless the ablation's ensemble is a full
    gold-accuracy point better. A record measured under other defaults gets no verdict.
    """
    sr = next((a for a in r["arms"] if a["arm"] == "sentirefine"), None)
    found = [a for a in r["arms"] if a.get("kind") == "loop" and a["arm"] != "sentirefine"]
    if sr is None or not found or sr["labels"]["f1"] is None:
        return []
    rows = []
    for a in found:
        diff = effective.differences(sr.get("settings") or {}, a.get("settings") or {})
        stale = effective.stale(r, sr) or effective.stale(r, a)
        rows.append([f"`{a['arm']}`", ", ".join(f"`{k}`" for k in diff) or "(none)",
                     ", ".join(_setting(old) for old, _ in diff.values()),
                     ", ".join(_setting(new) for _, new in diff.values()),
                     f"{sr['labels']['f1']:.3f} vs {_f(a['labels']['f1'])}",
                     f"{_pct(sr['labels']['clean_wrongly_changed_rate'])} vs "
                     f"{_pct(a['labels']['clean_wrongly_changed_rate'])}",
                     f"{sr['gold']['ensemble']['accuracy']:.4f} vs {a['gold']['ensemble']['accuracy']:.4f}",
                     f"not comparable: a record is stale ({stale})" if stale else _verdict(sr, a)])
    return [f"#### Defaults against their ablations (`{r['noise']}`)", "",
            *_table(["ablation", "setting", "default", "ablation's", "label F1 (default vs ablation)",
                     "clean wrongly changed", "ensemble gold acc", "verdict"], rows), ""]


# An ensemble gold-accuracy gap smaller than this is within the noise of one 5k-row gold split.
_ONE_POINT = 0.01


def _verdict(sr: dict[str, Any], a: dict[str, Any]) -> str:
    f1_gap = (sr["labels"]["f1"] or 0) - (a["labels"]["f1"] or 0)
    acc_gap = sr["gold"]["ensemble"]["accuracy"] - a["gold"]["ensemble"]["accuracy"]
    supported = f1_gap > 0.005 or (f1_gap >= -0.005 and acc_gap > -_ONE_POINT)
    if supported:
        return "default supported"
    kept = arms.ARMS[a["arm"]].kept_because if a["arm"] in arms.ARMS else ""
    # Finding more errors is not "better" when the models it is for come out a point worse:
    # that is a trade-off for a person to weigh, not a call to change the default.
    if acc_gap > _ONE_POINT:
        found = f"trade-off: ablation's F1 higher, its ensemble {acc_gap * 100:.1f} points lower"
    else:
        found = "ablation better" if kept else "**ablation better: revisit the default**"
    return f"{found}; default kept: {kept}" if kept else found


def _setting(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if value is not None else "(unset)"


def bert_start(r: dict[str, Any]) -> list[str]:
    """One line on the BERT member's starting checkpoint: its pretraining budget moves BERT's numbers."""
    card = r.get("bert_checkpoint")
    if not card or "training" not in card:
        return []
    t, a = card["training"], card.get("architecture") or {}
    return [f"BERT starts from a corpus BERT pretrained on this train subset's {card['corpus_rows']:,} texts "
            f"(gold texts left out): {t['steps']:,} MLM steps, {t['epochs']} epochs, {t['seconds'] / 60:.1f} min, "
            f"{a.get('layers')} layers × {a.get('hidden')}, vocabulary {card['vocab_size']:,}, "
            f"final MLM loss {_f(card.get('final_mlm_loss'), 2)}.", ""]


def speed(r: dict[str, Any]) -> list[str]:
    p1, p2 = r["throughput"]["pool1"], r["throughput"]["pool2"]
    p1t = r["throughput"].get("pool1_one_thread")  # absent from results taken before it was measured
    rows = [[k, _f(p1[k]["sentences_per_s"], 0), *([_f(p1t[k]["sentences_per_s"], 0)] if p1t else []),
             _f(p2[k]["sentences_per_s"], 0), _f(r["pool2_over_pool1"][k], 2),
             *([_f(r["pool2_over_pool1_one_thread"][k], 2)] if p1t else [])] for k in p1]
    head = ["members", "Pool(1)", *(["Pool(1), 1 thread"] if p1t else []), "Pool(2)", "Pool(2)/Pool(1)",
            *(["Pool(2)/Pool(1, 1 thread)"] if p1t else [])]
    b, e = r["bulk_update"], r["export"]
    return ["### Speed", "", *provenance(r),
            f"Ensemble prediction of {r['predict_rows']} train sentences (sentences/s, after a warm-up pass):", "",
            *_table(head, rows), "",
            *(["Pool(1) is the pool as it ships: its one worker runs torch and Kiwi on every core. "
               "Pool(1), 1 thread is the single-core baseline of per-process scaling; "
               "each Pool(2) worker has one core.", ""] if p1t else []),
            f"Bulk label update (`Store.apply_labels`: staged with executemany, set-based history insert and "
            f"update, one transaction): "
            f"{b['bulk_rows']} rows in {b['bulk_seconds']} s = **{_f(b['bulk_rows_per_s'], 0)} rows/s**; "
            f"row by row, one commit each: {_f(b['rowwise_rows_per_s'], 0)} rows/s ({b['speedup']}× slower).", "",
            f"Snapshot export (`versioning.export_parquet`, chunk {e['chunk_size']}): {e['rows']} rows in "
            f"{e['seconds']} s = **{_f(e['rows_per_s'], 0)} rows/s**, {e['parquet_mb']} MB.", ""]


def stages(r: dict[str, Any]) -> list[str]:
    """One table per timed arm; with several arms, each one's mean iteration against the first's."""
    runs = r.get("arms") or [{"arm": "sentirefine", "bootstrap": r["bootstrap"], "iterations": r["iterations"]}]
    out = [f"### Time per iteration by stage, {r['size']} train rows", "", *provenance(r)]
    for run in runs:
        out += _stage_table(run)
    if len(runs) > 1:
        means = [_mean_iteration(run) for run in runs]
        out += ["Mean iteration against the first arm's, measured in this run: " + "; ".join(
            f"`{run['arm']}` {_f(mean, 1)} s ({_f(mean / means[0], 2)}×)"
            for run, mean in zip(runs, means, strict=True)) + ".", ""]
    return out


def _stage_table(run: dict[str, Any]) -> list[str]:
    its = [it for it in run["iterations"] if it["iteration"] > 0]
    names = list(dict.fromkeys(k for it in its for k in it["stage_seconds"]))
    members = list(dict.fromkeys(k for it in its for k in it.get("train_seconds", {})))
    rows = [[str(it["iteration"]), *[_f(it["stage_seconds"].get(n), 1) for n in names],
             *[_f(it.get("train_seconds", {}).get(m), 1) for m in members], _f(it["seconds"], 1)] for it in its]
    boot = run["bootstrap"]
    return [f"`{run['arm']}`{' (' + run['doc'] + ')' if run.get('doc') else ''}. Bootstrap: {boot['seconds']} s "
            "(fit: " + ", ".join(f"{k} {v} s" for k, v in boot["train_seconds"].items())
            + "). The train stage is split by member on the right; predict includes the cross-fitted members' k fits.",
            "", *_table(["iteration", *names, *[f"(train:{m})" for m in members], "total"], rows), ""]


def _mean_iteration(run: dict[str, Any]) -> float:
    secs = [it["seconds"] for it in run["iterations"] if it["iteration"] > 0 and it.get("seconds")]
    return sum(secs) / len(secs) if secs else float("nan")


def memory(r: dict[str, Any]) -> list[str]:
    rows = []
    writes = all("label_writes" in run["predict"] for run in r["runs"].values())  # absent from older results
    for n, run in r["runs"].items():
        imp, pred = run["import"], run["predict"]
        rows.append([n, _f(imp["peak_rss_mb"], 0), _f(pred["peak_rss_mb"], 0), _f(pred["workers_peak_rss_mb"], 0),
                     _f(imp["seconds"], 1), _f(pred["predict_rows_per_s"], 0), _f(pred["export_rows_per_s"], 0),
                     *([_f(pred["label_writes"]["rows_per_s"], 0)] if writes else [])])
    head = ["train rows", "import peak RSS MB", "predict peak RSS MB", "pool worker peak RSS MB", "import s",
            "predict rows/s (lexicon)", "export rows/s", *(["label writes rows/s"] if writes else [])]
    return [f"### Peak memory (chunk size {r['chunk_size']})", "", *provenance(r), *_table(head, rows), ""]


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def serving(r: dict[str, Any]) -> list[str]:
    """Storage before/after `gc --keep 1`, and `sentirefine predict`'s peak RSS at two input sizes."""
    stores = [(f"{r['size']:,} train rows, {r['iterations']} iterations ({', '.join(r['members'])})", r["storage"])]
    if r.get("demo"):
        stores.insert(0, ("`sentirefine demo` (8,000 rows, 3 iterations, 4 members)", r["demo"]["storage"]))
    rows = [[what, _mb(s["before_bytes"]["mlartifacts"]), _mb(s["after_gc_keep_1_bytes"]["mlartifacts"]),
             _mb(s["before_bytes"]["models"]), _mb(s["after_gc_keep_1_bytes"]["models"])] for what, s in stores]
    pred = [[f"{int(n):,}", _f(p["peak_rss_mb"], 0), _f(p["rows_per_s"], 0)] for n, p in r["predict"].items()]
    agree = r["agreement"]
    return ["### Storage and batch scoring (`python -m bench serving`)", "", *provenance(r),
            *_table(["workspace", "MLflow artifacts MB", "after `gc --keep 1`", "checkpoints MB",
                     "after `gc --keep 1`"], rows), "",
            f"`sentirefine predict` with the production ensemble, NSMC test rows, each run in a fresh process "
            f"(chunks of 2,000 rows). {_agreement(agree)}", "",
            *_table(["input rows", "peak RSS MB", "rows/s"], pred), ""]


def _agreement(a: dict[str, Any]) -> str:
    """How `predict`'s answers compare with the served pyfunc's on the same rows (matched by line)."""
    if "same_label" not in a:  # a record from before the rows were matched by line
        return f"Its answers equal the served pyfunc's on {a['identical']} of the first {a['rows']} rows."
    return (f"On the first {a['rows']:,} rows it gives the served pyfunc's label for {a['same_label']:,} and its "
            f"probability to within {a['max_abs_probability_diff']:.1e} ({a['identical']:,} within 1e-6); the "
            "pyfunc scores them in one call, `predict` in chunks, and a batch is padded to its longest text.")


def pretrain_table(r: dict[str, Any]) -> list[str]:
    """The variants of a pretrain_choice result (also printed by the benchmark itself)."""
    rows = [[name, f"{v['accuracy']:.4f}", _f(v["fit_seconds"], 1), _f(v["predict_sentences_per_s"], 1),
             _f(v.get("pretrain_minutes"), 2)] for name, v in r["results"].items()]
    return _table(["variant", "gold accuracy", "fine-tune s", "predict sentences/s", "pretraining min"], rows)


def pretrain_choice(r: dict[str, Any]) -> list[str]:
    corpus = r["pretrain_corpus"]
    arch = r["pretrain"]
    parts = [f"train {corpus['train_rows']:,}"] + [f"{Path(k).name} {v:,}" for k, v in corpus["extra_rows"].items()]
    return ["## BERT starting point (`python -m bench.pretrain_choice`)", "", *provenance(r | {
                "size": r["train_rows"], "gold_size": r["gold_rows"]}),
            f"The BERT member alone, fine-tuned on {r['train_rows']:,} NSMC train rows with their own (clean) labels "
            f"and scored on {r['gold_rows']:,} gold rows. Pretraining corpus: {corpus['rows']:,} texts "
            f"({' + '.join(parts)}; {corpus['gold_texts_excluded']:,} texts equal to a gold text left out), "
            f"{corpus['tokens_per_text']} corpus-vocabulary tokens per text; small BERT {arch['layers']} layers × "
            f"{arch['hidden']} hidden, {arch['heads']} heads, vocabulary {arch['vocab_size']:,}.", "",
            *pretrain_table(r), ""]


def _smoke_banner(by: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Say up front which benchmarks have only smoke results, so no smoke number is read as real."""
    only = [k for k in KINDS if by[k] and all(r.get("smoke") for r in by[k])]
    if not only:
        return []
    return [f"> **No full run yet of: {', '.join(only)}.** Those numbers come from smoke runs (tiny sizes, "
            "cheap members, a shared busy machine): they show the harness works, not how sentirefine performs.", ""]


def document(results: list[dict[str, Any]]) -> str:
    by = {k: [r for r in results if r["benchmark"] == k] for k in KINDS}
    out = ["# Benchmarks", "",
           "Generated by `python -m bench report` from `bench/results/*.json` (do not edit by hand). "
           "Reproduce with `make bench` (see README, \"Benchmarks\").", "",
           *_smoke_banner(by),
           "## Targets", "", *_table(["target", "measured", "status", "from"], targets.rows(results)), ""]
    if by["quality"]:
        out += ["## Quality: injected noise removed, and what it buys the models", ""]
        for r in sorted(by["quality"], key=lambda r: (r["size"], _NOISE_ORDER.get(r["noise"], 9), r["noise"])):
            out += quality(r)
    if by["speed"] or by["stages"] or by["memory"] or by["serving"]:
        out += ["## Speed and scale", ""]
    for r in by["speed"]:
        out += speed(r)
    for r in sorted(by["stages"], key=lambda r: r["size"]):
        out += stages(r)
    for r in by["memory"]:
        out += memory(r)
    for r in by["serving"]:
        out += serving(r)
    for r in by["pretrain_choice"]:
        out += pretrain_choice(r)
    return "\n".join(out).rstrip() + "\n"


def write(results: Path, out: Path) -> Path:
    """BENCHMARKS.md; a hand-written ``NOTES.md`` beside the results folder (why a target is missed,
    what the headline rows mean) is appended as it is, since that judgement cannot be generated."""
    text = document(load(results))
    notes = results.parent / "NOTES.md"
    if notes.is_file():
        text += "\n## Notes\n\n" + notes.read_text(encoding="utf-8").strip() + "\n"
    out.write_text(text, encoding="utf-8")
    return out
