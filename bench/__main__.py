"""``python -m bench <quality|stages|speed|memory|report>``: run benchmarks, write JSON + BENCHMARKS.md."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import arms as arm_specs
from bench import data, machine, noise, render
from sentirefine.logs import configure_logging

if TYPE_CHECKING:
    from bench.workspaces import Setup

# The runners (torch, the loop) are imported inside the commands that need them: `report`
# and `--help` stay fast.

SCRATCH = data.REPO / "bench" / ".scratch"
ALL_MEMBERS = "lexicon,lstm,bilstm,bert"


def _common(p: argparse.ArgumentParser, size: int) -> None:
    p.add_argument("--data", default="nsmc", help="nsmc (../shared/data/nsmc) or demo (bundled 8k/2k sample)")
    p.add_argument("--size", type=int, default=size, help="train rows (fixed-seed subset)")
    p.add_argument("--gold-size", type=int, default=5000, help="gold rows (fixed-seed subset of NSMC test)")
    p.add_argument("--seed", type=int, default=1, help="seed of the subsets and of the injected noise")
    p.add_argument("--members", default=ALL_MEMBERS, help="ensemble members (models.order)")
    p.add_argument("--bert-rows", type=int, default=None,
                   help="models.bert.max_train_rows (default: the config's, all rows; a CPU budget for large sizes)")
    p.add_argument("--bert-checkpoint", type=Path, default=None,
                   help="models.bert.checkpoint for every arm (default: the config's; 'pretrained' is made once "
                   "per train subset in the scratch dir and shared by all arms)")
    p.add_argument("--config", type=Path, default=None, help="sentirefine YAML applied under the bench overrides")
    p.add_argument("--workers", default=None, help="ensemble.workers (default: the config's)")
    p.add_argument("--scratch", type=Path, default=SCRATCH, help="where the per-arm workspaces go")
    p.add_argument("--results", type=Path, default=machine.RESULTS, help="where result JSON files go")
    p.add_argument("--smoke", action="store_true", help="mark results as a smoke run (also implied by --size<5000)")
    p.add_argument("--contended", action="store_true", help="mark results as taken on a shared, busy machine")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality", help="noise removed and gold accuracy per arm")
    _common(q, 20_000)
    q.add_argument("--noise", default=",".join(noise.NOISE_KINDS), help="noise kinds, comma-separated")
    q.add_argument("--arms", default=None, help=f"comma-separated, from {', '.join(arm_specs.ARMS)}")
    q.add_argument("--max-iterations", type=int, default=None, help="refine.max_iterations (default: config's)")
    q.add_argument("--full-stack", action="store_true", help="keep MLflow tracking and DVC snapshots on")
    q.add_argument("--keep-workspaces", action="store_true", help="keep each arm's workspace (default: deleted)")
    q.add_argument("--fresh", action="store_true",
                   help="measure every arm again (default: arms already in a matching result file are kept, "
                   "so a long run can be interrupted and resumed, e.g. across sessions)")
    s = sub.add_parser("stages", help="time per iteration by stage (default config, full stack)")
    _common(s, 20_000)
    s.add_argument("--max-iterations", type=int, default=2)
    s.add_argument("--arms", default="sentirefine",
                   help="loop arms timed one after another in this run, the first the base of the ratios "
                   "(e.g. sr_v1,sr_folds5_stacked)")
    sp = sub.add_parser("speed", help="Pool(1) vs Pool(2) throughput, bulk updates, export")
    _common(sp, 20_000)
    sp.add_argument("--predict-rows", type=int, default=8000)
    sp.add_argument("--update-rows", type=int, default=150_000)
    sp.add_argument("--rowwise-rows", type=int, default=2000)
    sp.add_argument("--chunk-size", type=int, default=5000)
    m = sub.add_parser("memory", help="peak RSS of import and predict at two table sizes")
    _common(m, 0)
    m.add_argument("--sizes", default="150000,500000",
                   help="train rows wanted (NSMC train, then extra.tsv.gz: 429,709 at most)")
    m.set_defaults(gold_size=50_000)  # the whole NSMC test: 200k and ~480k rows in the table
    m.add_argument("--chunk-size", type=int, default=5000)
    sv = sub.add_parser("serving", help="storage before/after gc, peak RSS of `sentirefine predict` at two sizes")
    _common(sv, 20_000)
    sv.add_argument("--max-iterations", type=int, default=5, help="iterations refined before measuring storage")
    sv.add_argument("--small", type=int, default=5000, help="rows of the smaller predict input (the larger: all)")
    sv.add_argument("--demo", action="store_true", help="also run `sentirefine demo` and measure its storage")
    r = sub.add_parser("report", help="render BENCHMARKS.md from the result files")
    r.add_argument("--results", type=Path, default=machine.RESULTS)
    r.add_argument("--out", type=Path, default=data.REPO / "BENCHMARKS.md")
    return ap


def _overrides(args: argparse.Namespace, full_stack: bool = False, max_iterations: int | None = None) -> dict:
    members = [m.strip() for m in args.members.split(",") if m.strip()]
    models: dict[str, Any] = {"order": members}
    if "bert" in members and args.bert_rows:
        models["bert"] = {"max_train_rows": args.bert_rows}
    out: dict[str, Any] = {"models": models, "tracking": {"enabled": full_stack},
                           "versioning": {"enabled": full_stack}, "logging": {"level": "WARNING"},
                           # The ensemble loop alone: an API key in the environment must not change results.
                           "llm": {"enabled": False, "critique": False}}
    if args.workers is not None:
        out["ensemble"] = {"workers": args.workers if args.workers == "auto" else int(args.workers)}
    if max_iterations is not None:
        out["refine"] = {"max_iterations": max_iterations}
    return out


def _with_checkpoint(args: argparse.Namespace, setup: Setup) -> Setup:
    """Point every arm's BERT member at one checkpoint (see ``workspaces.shared_pretrained``)."""
    from bench.workspaces import shared_pretrained

    path = args.bert_checkpoint or shared_pretrained(
        setup, args.scratch / f"pretrained-{args.data}-{args.size}-s{args.seed}")
    if path is not None:
        models = setup.overrides["models"]
        models["bert"] = {**models.get("bert", {}), "checkpoint": str(Path(path).resolve())}
    return setup


def _checkpoint_card(setup: Setup) -> dict[str, Any] | None:
    """What the arms' BERT started from: the pretrain card's headline (None when no card exists).

    The pretraining budget changes the BERT member's quality, so a result says which one it used.
    """
    path = setup.overrides["models"].get("bert", {}).get("checkpoint")
    card_file = Path(path) / "pretrain_card.json" if path else None
    if card_file is None or not card_file.is_file():
        return {"path": path} if path else None
    card = json.loads(card_file.read_text(encoding="utf-8"))
    return {"path": path, "mode": card.get("mode"), "corpus_rows": card.get("corpus", {}).get("rows"),
            "vocab_size": card.get("vocab_size"), "architecture": card.get("architecture"),
            "training": {k: card.get("training", {}).get(k) for k in ("steps", "epochs", "seconds", "budget")},
            "final_mlm_loss": card.get("final_mlm_loss")}


def _inputs(args: argparse.Namespace) -> tuple[Path, Path, data.Source]:
    src = data.source(args.data)
    folder = args.scratch / "data"
    train = folder / f"train-{src.name}-{args.size}-s{args.seed}.tsv"
    gold = folder / f"gold-{src.name}-{args.gold_size}-s{args.seed}.tsv"
    if not train.is_file():
        data.subset(src.train, args.size, args.seed, train)
    if not gold.is_file():
        data.subset(src.gold, args.gold_size, args.seed, gold)
    return train, gold, src


def _meta(args: argparse.Namespace, src: data.Source, **extra: Any) -> dict[str, Any]:
    smoke = args.smoke or (args.size and args.size < 5000) or src.name == "demo"
    return {**machine.header(smoke=bool(smoke), contended=args.contended), "data": src.name,
            "size": args.size, "gold_size": getattr(args, "gold_size", None), "seed": args.seed,
            "members": args.members.split(","), **extra}


def cmd_quality(args: argparse.Namespace) -> list[Path]:
    from bench import quality
    from bench.workspaces import Setup

    train, gold, src = _inputs(args)
    paths = []
    for kind in [k.strip() for k in args.noise.split(",") if k.strip()]:
        overrides = _overrides(args, args.full_stack, args.max_iterations)
        scratch = quality.scratch_dir(args.scratch, kind, args.size)
        rate = noise.rate(kind, train, args.seed)
        setup = _with_checkpoint(args, Setup(train, gold, rate, args.seed, scratch, args.config, overrides))
        chosen = arm_specs.parse(args.arms, kind)
        limit = args.max_iterations or setup.config("_probe").refine.max_iterations
        meta = {**_meta(args, src, overrides=overrides), "benchmark": "quality", "noise": kind,
                "bert_checkpoint": _checkpoint_card(setup),
                "noise_rate": noise.NOISE_KINDS[kind], "config_file": str(args.config) if args.config else None}
        name = f"quality-{kind}-{args.size}"
        done = [] if args.fresh else _measured_arms(args.results, name, meta)
        save = partial(_save_quality, args.results, name, meta, done)
        results = quality.run_all(setup, chosen, limit, keep=args.keep_workspaces, done=done, on_result=save)
        paths.append(save(results, complete=True))
    return paths


def _save_quality(results_dir: Path, name: str, meta: dict[str, Any], done: list[dict[str, Any]],
                  results: list[dict[str, Any]], complete: bool = False) -> Path:
    """The result file so far. Nothing measured is dropped from it.

    Records of earlier runs that this run did not reuse stay: shown if their arm was not chosen
    this time; *shelved* (kept in the file, not in the tables) if an arm of this run replaced
    them or their arm is no longer defined, since a later run may still reuse them under another
    name (an old default that becomes an ablation). A record reused under a new name is not kept twice.
    """
    used = {_measurement(r) for r in results}
    names = {r["arm"] for r in results}
    shown, shelved = [], []
    for r in done:
        if _measurement(r) in used:
            continue
        if r.get("shelved") or r["arm"] in names or r["arm"] not in arm_specs.ARMS:
            shelved.append({k: v for k, v in r.items() if k != "shelved"})
        else:
            shown.append(r)
    return machine.save(results_dir, name, {**meta, "complete": complete, "arms": arm_specs.in_order(results + shown),
                                            "shelved": shelved})


def _measurement(record: dict[str, Any]) -> tuple[str, Any]:
    """Which run a record is, whatever arm name it is shown under now."""
    return record.get("measured_as") or record["arm"], record.get("measured_at")


# What must match for arms of an earlier (interrupted) result file to be reused.
_SAME_RUN = ("data", "size", "gold_size", "seed", "members", "overrides", "noise", "config_file", "smoke")


def _measured_arms(results_dir: Path, name: str, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Arm records of an earlier run with the same data, seeds, members and overrides.

    Which of them still describe an arm is decided per arm by their settings (``quality.reusable``).
    """
    path = machine.result_path(results_dir, name, smoke=bool(meta.get("smoke")))
    if not path.is_file():
        return []
    old = json.loads(path.read_text(encoding="utf-8"))
    if any(old.get(k) != meta.get(k) for k in _SAME_RUN):
        print(f"[bench] {path.name} is from a different setup: measuring every arm again")
        return []
    return list(old.get("arms", [])) + [{**r, "shelved": True} for r in old.get("shelved", [])]


def cmd_stages(args: argparse.Namespace) -> list[Path]:
    """Time per iteration by stage of each arm, one after another in one run, so their ratio is one run's.

    The result is written after each arm; run again, a finished arm's kept workspace answers at
    once and an interrupted one resumes (``quality.QualityRun``), so the command is resumable.
    """
    from bench import quality
    from bench.workspaces import Setup

    train, gold, src = _inputs(args)
    overrides = _overrides(args, full_stack=True, max_iterations=args.max_iterations)
    setup = _with_checkpoint(args, Setup(train, gold, noise.rate("uniform20"), args.seed,
                                         args.scratch / f"stages-{args.size}", args.config, overrides))
    runner = quality.QualityRun(setup, args.max_iterations)
    meta = {**_meta(args, src, overrides=overrides), "benchmark": "stages", "noise": "uniform20",
            "bert_checkpoint": _checkpoint_card(setup)}
    runs: list[dict[str, Any]] = []
    path = None
    for arm in arm_specs.parse(args.arms, "uniform20"):
        runs.append(_stage_run(runner, arm))
        path = machine.save(args.results, f"stages-{args.size}", {**meta, "arms": runs})
    return [path] if path else []


def _stage_run(runner: Any, arm: arm_specs.Arm) -> dict[str, Any]:
    """One arm's bootstrap and iterations, with the seconds of each stage and member."""
    result = runner.run(arm)
    its = result.get("per_iteration", [])
    if result.get("shared_bootstrap_seconds"):  # the run's shared bootstrap, timed when it was built
        boot = runner.bootstrap()
        boot = {"seconds": boot["seconds"],
                "train_seconds": {n: t.get("seconds") for n, t in boot["metrics"]["training"].items()}}
    else:  # an arm with its own bootstrap (other fold count): iteration 0 of its own workspace
        first = next((it for it in its if it["iteration"] == 0), {})
        boot = {"seconds": first.get("seconds"), "train_seconds": first.get("train_seconds", {})}
    return {"arm": arm.name, "doc": arm.doc, "overrides": arm.overrides, "settings": result["settings"],
            "measured_at": result["measured_at"], "git_rev": result["git_rev"], "bootstrap": boot,
            "iterations": its}


def cmd_speed(args: argparse.Namespace) -> list[Path]:
    from bench import speed
    from bench.workspaces import Setup, create

    train, gold, src = _inputs(args)
    setup = _with_checkpoint(args, Setup(train, gold, 0.0, args.seed, args.scratch, args.config, _overrides(args)))
    cfg = setup.config(f"speed-{args.size}")
    create(cfg, setup, noisy=False)
    result = speed.run(cfg, predict_rows=args.predict_rows, update_rows=args.update_rows,
                       rowwise_rows=args.rowwise_rows, chunk=args.chunk_size)
    payload = {**_meta(args, src), "benchmark": "speed", "bert_checkpoint": _checkpoint_card(setup), **result}
    return [machine.save(args.results, f"speed-{args.size}", payload)]


def cmd_memory(args: argparse.Namespace) -> list[Path]:
    from bench import memory

    src = data.source(args.data)
    sizes = [int(s) for s in args.sizes.split(",")]
    folder = args.scratch / "memory"
    gold = folder / "gold.tsv"
    data.subset(src.gold, args.gold_size, args.seed, gold)
    runs = {}
    for n in sizes:
        train = folder / f"train-{n}.tsv"
        n = data.head([p for p in (src.train, src.extra) if p is not None], n, train)  # what exists
        ws = folder / f"ws-{n}"
        shutil.rmtree(ws, ignore_errors=True)
        runs[str(n)] = memory.measure(ws, train, gold, args.chunk_size)
        shutil.rmtree(ws, ignore_errors=True)
        train.unlink()
        print(f"[bench] memory at {n} train rows: {runs[str(n)]}")
    sizes = [int(k) for k in runs]
    args.size = max(sizes)
    payload = {**_meta(args, src), "benchmark": "memory", "chunk_size": args.chunk_size, "sizes": sizes,
               "runs": runs}
    return [machine.save(args.results, "memory", payload)]


def cmd_serving(args: argparse.Namespace) -> list[Path]:
    import yaml

    from bench import serving
    from bench.workspaces import Setup, merge

    train, gold, src = _inputs(args)
    folder = args.scratch / "serving"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    overrides = _overrides(args, full_stack=True, max_iterations=args.max_iterations)
    setup = _with_checkpoint(args, Setup(train, gold, noise.rate("uniform20"), args.seed, args.scratch,
                                         args.config, overrides))
    # The CLI reads one YAML file: the bench's base config under the same overrides every other bench uses.
    base = yaml.safe_load(args.config.read_text(encoding="utf-8")) if args.config else {}
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(merge(base or {}, {**setup.overrides, "workspace": str(folder / "ws")})))
    t0 = time.perf_counter()
    serving.cli(config, "import", str(train), "--gold", str(gold), "--inject-noise", "0.2", "--noise-seed",
                str(args.seed))
    serving.cli(config, "refine", "--max-iterations", str(args.max_iterations), "--ignore-convergence")
    out: dict[str, Any] = {"refine_seconds": round(time.perf_counter() - t0, 1), "iterations": args.max_iterations,
                           "storage": serving.storage(folder / "ws", config)}
    small = folder / "small.tsv"
    data.head([src.gold], args.small, small)
    out["predict"] = {str(args.small): serving.predict_rss(config, small, folder / "small.csv")}
    full = serving.predict_rss(config, src.gold, folder / "full.csv")
    out["predict"][str(full["rows"])] = full
    out["agreement"] = serving.agreement(config, folder / "full.csv", serving.first_rows(src.gold, 500))
    print(f"[bench] serving: {json.dumps(out)}")
    if args.demo:
        demo = folder / "demo"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sentirefine", "--quiet", "--workspace", str(demo), "demo"],
                       check=True, capture_output=True, env=serving.own_store_env())
        demo_cfg = folder / "demo.yaml"
        demo_cfg.write_text(yaml.safe_dump({"workspace": str(demo)}))
        out["demo"] = {"seconds": round(time.perf_counter() - t0, 1), "storage": serving.storage(demo, demo_cfg)}
        print(f"[bench] serving, demo: {json.dumps(out['demo'])}")
    payload = {**_meta(args, src, overrides=overrides), "benchmark": "serving",
               "bert_checkpoint": _checkpoint_card(setup), **out}
    shutil.rmtree(folder, ignore_errors=True)
    return [machine.save(args.results, "serving", payload)]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "memory-child":
        from bench import memory

        configure_logging("json", "WARNING")
        memory.child_main(argv[1:])
        return
    args = _parser().parse_args(argv)
    configure_logging("json", "WARNING")
    if args.cmd == "report":
        print(f"[bench] wrote {render.write(args.results, args.out)}")
        return
    commands = {"quality": cmd_quality, "stages": cmd_stages, "speed": cmd_speed, "memory": cmd_memory,
                "serving": cmd_serving}
    for path in commands[args.cmd](args):
        print(f"[bench] wrote {path}")


if __name__ == "__main__":
    main()
