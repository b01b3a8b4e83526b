"""Which starting point should the BERT member use by default? (issue 12, step 3)

``python -m bench.pretrain_choice`` fine-tunes the BERT member alone on the same fixed-seed NSMC
train rows with their clean (NSMC) labels and scores it on gold, for:

* ``minilm``          all-MiniLM-L6-v2 as shipped (English vocabulary);
* ``minilm_vocab``    MiniLM's transformer layers under the corpus WordPiece vocabulary, new embeddings;
* ``scratch``         the small BERT of ``pretrain`` with its corpus vocabulary, no pretraining (0 steps);
* ``pretrained_<M>``  the same after ``sentirefine pretrain`` for M minutes on train + extra + neutral text;
* ``bilstm``          the BiLSTM member on the same rows, for reference.

Per variant: gold accuracy, fine-tune seconds, prediction sentences/s, pretraining minutes.
Results go to ``bench/results/pretrain_choice[-smoke].json`` with the machine/contention header.
A smoke run (``--smoke``, tiny sizes) checks the script, never the choice.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import data, machine, render
from sentirefine.config import BertConfig, BiLSTMConfig, Config, load_config
from sentirefine.data.ingest import import_file
from sentirefine.data.store import Store
from sentirefine.models.base import SentimentModel
from sentirefine.models.bert import BertModel
from sentirefine.models.rnn import RNNModel
from sentirefine.pretrain.run import output_dir, pretrain, work_dir

SCRATCH = data.REPO / "bench" / ".scratch" / "pretrain_choice"
# MiniLM "as shipped": fine-tuned the way a BERT-base-like checkpoint is (the library's defaults
# until this benchmark chose the corpus BERT): small lr, embeddings and 3 lower layers frozen.
MINILM = {"checkpoint": None, "lr": 5e-5, "update_lr": 3e-5, "freeze_layers": 3, "freeze_embeddings": True}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.pretrain_choice", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="nsmc", help="nsmc (../shared/data/nsmc) or demo (bundled sample)")
    ap.add_argument("--train-rows", type=int, default=20_000, help="labelled rows the member is fine-tuned on")
    ap.add_argument("--gold-rows", type=int, default=5_000, help="gold rows scored")
    ap.add_argument("--pretrain-train-rows", type=int, default=None,
                    help="train-split texts in the pretraining corpus (default: the whole train file)")
    ap.add_argument("--no-extra", action="store_true", help="pretrain on train text only (no extra/neutral)")
    ap.add_argument("--minutes", default="15,30,60", help="pretraining budgets of the pretrained_<M> variants")
    ap.add_argument("--variants", default="minilm,minilm_vocab,scratch,pretrained,bilstm")
    ap.add_argument("--config", type=Path, default=None, help="sentirefine YAML (pretrain/models.bert sizes)")
    ap.add_argument("--small-lr", type=float, default=3e-4, help="fine-tune lr of the corpus-vocabulary variants")
    ap.add_argument("--small-freeze-layers", type=int, default=0,
                    help="frozen layers of the corpus-vocabulary variants (their embeddings stay trainable)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scratch", type=Path, default=SCRATCH)
    ap.add_argument("--results", type=Path, default=machine.RESULTS)
    ap.add_argument("--smoke", action="store_true", help="mark results as a smoke run")
    ap.add_argument("--contended", action="store_true", help="mark results as taken on a shared, busy machine")
    return ap


def _read(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))[1:]
    return [r[1] for r in rows], np.array([int(r[2]) for r in rows])


def _fit_and_score(model: SentimentModel, train: tuple[list[str], np.ndarray],
                   gold: tuple[list[str], np.ndarray]) -> dict[str, Any]:
    start = time.perf_counter()
    model.fit(*train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    proba = model.predict_proba(gold[0])
    predict_s = time.perf_counter() - start
    return {"accuracy": round(float((proba.argmax(1) == gold[1]).mean()), 4), "fit_seconds": round(fit_s, 1),
            "predict_sentences_per_s": round(len(gold[0]) / max(predict_s, 1e-9), 1)}


def _pretrain_workspace(cfg: Config, src: data.Source, args: argparse.Namespace) -> list[Path]:
    """A store with the train text (for the corpus) and all gold text (excluded from it)."""
    if cfg.db_file.exists():
        return _extras(src, args)
    with Store(cfg.db_file, create=True) as store:
        train = args.scratch / "pretrain-train.tsv"
        data.subset(src.train, args.pretrain_train_rows, args.seed, train)
        import_file(store, train, split="train", rejects_dir=cfg.workspace / "rejects")
        import_file(store, src.gold, split="gold", rejects_dir=cfg.workspace / "rejects")
    return _extras(src, args)


def _extras(src: data.Source, args: argparse.Namespace) -> list[Path]:
    if args.no_extra or src.extra is None:
        return []
    return [p for p in (src.extra, src.extra.with_name("neutral.tsv.gz")) if p.is_file()]


def _pretrained(base: Config, minutes: float | None, extra: list[Path]) -> tuple[Path, dict[str, Any]]:
    """Run ``sentirefine pretrain`` for ``minutes`` (None = 0 steps), reusing one corpus and vocabulary."""
    name = "scratch" if minutes is None else f"pretrained-{minutes:g}m"
    budget = {"max_steps": 0, "max_minutes": None} if minutes is None else {"max_minutes": minutes, "max_steps": None}
    cfg = base.model_copy(update={"pretrain": base.pretrain.model_copy(update={"output_dir": Path(name), **budget})})
    first = work_dir(base)
    if work_dir(cfg) != first and (first / "ids.npy").is_file() and not work_dir(cfg).exists():
        shutil.copytree(first, work_dir(cfg), ignore=shutil.ignore_patterns("state*", "mlflow_run.json"))
    with Store(cfg.db_file) as store:
        result = pretrain(cfg, store, extra=extra)
    return output_dir(cfg), result.card


def _minilm_vocab(base: Config, tokenizer_dir: Path, target: Path) -> Path:
    """MiniLM's encoder layers under the corpus vocabulary: new (random) word embeddings, rest kept."""
    from transformers import AutoModel, AutoTokenizer, BertForMaskedLM

    from sentirefine.models.bert import default_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    minilm = AutoModel.from_pretrained(default_checkpoint(), local_files_only=True)
    config = minilm.config
    config.vocab_size, config.pad_token_id = len(tokenizer), tokenizer.pad_token_id
    model = BertForMaskedLM(config)
    state = {k: v for k, v in minilm.state_dict().items() if "word_embeddings" not in k and "pooler" not in k}
    missing = model.bert.load_state_dict(state, strict=False).missing_keys
    assert all("word_embeddings" in k for k in missing), missing
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def run(args: argparse.Namespace) -> dict[str, Any]:
    src = data.source(args.data)
    args.scratch.mkdir(parents=True, exist_ok=True)
    train_tsv, gold_tsv = args.scratch / "train.tsv", args.scratch / "gold.tsv"
    data.subset(src.train, args.train_rows, args.seed, train_tsv)
    data.subset(src.gold, args.gold_rows, args.seed, gold_tsv)
    train, gold = _read(train_tsv), _read(gold_tsv)
    base = load_config(args.config, {"workspace": str(args.scratch / "ws"), "tracking": {"enabled": False}})
    wanted = args.variants.split(",")
    extra = _pretrain_workspace(base, src, args)
    bert_default = base.models.bert
    small = bert_default.model_copy(update={"lr": args.small_lr, "freeze_layers": args.small_freeze_layers,
                                            "freeze_embeddings": False, "max_train_rows": None})
    # Variants take minutes to an hour each: every result is kept in the scratch directory as it
    # comes, so a killed run resumes at the first variant not yet measured.
    partial = args.scratch / "results.partial.json"
    results: dict[str, Any] = json.loads(partial.read_text(encoding="utf-8")) if partial.is_file() else {}

    def keep(name: str, result: dict[str, Any]) -> None:
        results[name] = result
        partial.write_text(json.dumps(results, indent=2), encoding="utf-8")
        print(f"[pretrain_choice] {name}: {result}", file=sys.stderr, flush=True)

    def bert(name: str, params: BertConfig, extra_info: dict[str, Any] | None = None) -> None:
        if name in results:
            return
        print(f"[pretrain_choice] {name} ...", file=sys.stderr, flush=True)
        model = BertModel("bert", params, device="cpu", seed=base.models.seed)
        keep(name, {**_fit_and_score(model, train, gold), **(extra_info or {})})

    if "minilm" in wanted:
        bert("minilm", bert_default.model_copy(update={**MINILM, "max_train_rows": None}))
    scratch_dir, card = _pretrained(base, None, extra)  # also builds the shared corpus and vocabulary
    corpus = card["corpus"]
    if "minilm_vocab" in wanted:
        path = _minilm_vocab(base, scratch_dir, args.scratch / "minilm-vocab")
        bert("minilm_vocab", small.model_copy(update={"checkpoint": path}))
    if "scratch" in wanted:
        bert("scratch", small.model_copy(update={"checkpoint": scratch_dir}), {"pretrain_minutes": 0})
    if "pretrained" in wanted:
        for minutes in (float(m) for m in args.minutes.split(",")):
            if f"pretrained_{minutes:g}m" in results:
                continue
            path, card = _pretrained(base, minutes, extra)
            info = {"pretrain_minutes": round(card["training"]["seconds"] / 60, 2),
                    "pretrain_steps": card["training"]["steps"], "pretrain_epochs": card["training"]["epochs"],
                    "final_mlm_loss": card["final_mlm_loss"]}
            bert(f"pretrained_{minutes:g}m", small.model_copy(update={"checkpoint": path}), info)
    if "bilstm" in wanted and "bilstm" not in results:
        print("[pretrain_choice] bilstm ...", file=sys.stderr, flush=True)
        model = RNNModel("bilstm", BiLSTMConfig(), device="cpu", seed=base.models.seed)
        keep("bilstm", _fit_and_score(model, train, gold))
    return {
        **machine.header(smoke=args.smoke, contended=args.contended),
        "benchmark": "pretrain_choice",
        "command": "python -m bench.pretrain_choice " + " ".join(sys.argv[1:]),
        "data": args.data, "train_rows": len(train[0]), "gold_rows": len(gold[0]),
        "pretrain_corpus": corpus, "pretrain": base.pretrain.model_dump(mode="json"),
        "fine_tune": {"minilm": bert_default.model_copy(update=MINILM).model_dump(mode="json"),
                      "corpus_vocab": small.model_dump(mode="json")},
        "results": results,
    }


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    payload = run(args)
    path = machine.save(args.results, "pretrain_choice", payload)
    (args.scratch / "results.partial.json").unlink(missing_ok=True)
    print("\n".join(render.pretrain_table(payload)))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
