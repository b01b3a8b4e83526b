"""`sentirefine pretrain`: a Korean-capable BERT checkpoint made from the corpus itself.

Why: no Korean transformer ships in an installable package and nothing is downloaded at run
time, while the shipped English MiniLM turns a third of Korean words into ``[UNK]``. So the
corpus supplies both the vocabulary and the pretraining signal (domain-adaptive pretraining,
Gururangan et al. 2020):

* **from scratch** (default): a WordPiece vocabulary trained on the corpus text (NFC, no
  lower-casing, no accent stripping — stripping accents decomposes Hangul into jamo), then a
  small ``BertForMaskedLM`` trained with masked-language modelling;
* **continued** (``--from DIR``): MLM continues from an existing checkpoint, keeping its tokenizer.

Text used: the store's train split plus any ``--extra`` unlabelled files — never the gold split,
and no text identical to a gold text, wherever it comes from (the gold split must stay unseen).

The loss is computed on the masked positions only: the encoder's hidden states are gathered
at those positions before the vocabulary-sized output layer, which otherwise dominates the
cost (a 16k-way softmax at every position). Training is resumable: every
``checkpoint_every_steps`` the model, optimizer, step, RNG states and corpus position are saved
atomically (written to a temporary directory, then renamed), so a SIGKILL at any moment
resumes from the last checkpoint. Budgets (minutes, steps) are totals over resumed runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sentirefine.config import Config, PretrainConfig
from sentirefine.data.store import Store
from sentirefine.errors import ConfigError, InputDataError, ModelLoadError, TrainingError
from sentirefine.faults import crash_point
from sentirefine.files.tabular import read_records
from sentirefine.files.userfile import check_readable, iter_lines
from sentirefine.logs import log_event, progress_disabled

log = logging.getLogger(__name__)

CARD = "pretrain_card.json"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXT_COLUMNS = ("document", "text", "sentence", "review")
_EXTRA_MAX_CHARS = 20_000  # per line of an --extra file: longer lines are skipped, never held whole
_STATE, _TRAINER = "state", "trainer.pt"
_CORPUS, _CORPUS_INFO, _IDS, _OFFSETS = "corpus.txt", "corpus.json", "ids.npy", "offsets.npy"
_TOKENIZER_DIR, _RUN_FILE = "tokenizer", "mlflow_run.json"
_WEIGHT_DECAY, _GRAD_CLIP, _CHUNK = 0.01, 1.0, 10_000


# -- where things live --------------------------------------------------------------------------
def output_dir(config: Config) -> Path:
    """The finished checkpoint directory (what ``models.bert.checkpoint: pretrained`` means)."""
    out = config.pretrain.output_dir
    return out if out.is_absolute() else config.workspace / out


def work_dir(config: Config) -> Path:
    """Corpus, tokenizer, token ids and the resumable training state."""
    out = output_dir(config)
    return out.with_name(out.name + "-work")


def normalise(text: str) -> str:
    """One line of NFC text: what the corpus stores and what gold texts are compared on."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()


# -- corpus ---------------------------------------------------------------------------------------
@dataclass
class CorpusInfo:
    """What went into the corpus file (the card reports it)."""

    rows: int = 0
    train_rows: int = 0
    extra_rows: dict[str, int] = field(default_factory=dict)
    gold_texts_excluded: int = 0
    empty_skipped: int = 0


def read_text_file(path: Path, max_chars: int = _EXTRA_MAX_CHARS) -> Iterator[str]:
    """Texts of an unlabelled file: TSV/CSV with a text column (NSMC: ``document``), else one per line.

    Read like an import (:mod:`sentirefine.files.tabular`): gzip by content, BOM dropped, TSV without
    quoting (a review opening with ``"`` does not swallow the lines after it), bounded memory per
    line; rows without the column and over-long lines are skipped (this text is unlabelled).
    """
    path = check_readable(path, "extra text file")
    first = next(iter_lines(path, max_chars=max_chars, what="extra text file"), None)
    names = [c.strip().lower() for c in (first.text if first else "").replace(",", "\t").split("\t")]
    if not any(c in names for c in TEXT_COLUMNS):  # plain text: the first line is a text too
        yield from (line.text for line in iter_lines(path, max_chars=max_chars) if not line.overlong)
        return
    header, _, records = read_records(path, max_chars=max_chars)
    column = next(header.index(h) for h in header if h.strip().lower() in TEXT_COLUMNS)
    for record in records:
        if record.problem is None and len(record.fields) > column:
            yield record.fields[column]


def build_corpus(store: Store, extra: Sequence[Path], path: Path) -> CorpusInfo:
    """Write train-split text and the extra files' text to ``path``, one text per line, gold excluded.

    Gold texts are held as 8-byte digests, so memory stays small for large gold splits.
    """
    gold = {_digest(normalise(r.text)) for chunk in store.iter_chunks("gold", _CHUNK) for r in chunk}
    info = CorpusInfo()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:

        def add(text: str) -> bool:
            line = normalise(text)
            if not line:
                info.empty_skipped += 1
                return False
            if _digest(line) in gold:
                info.gold_texts_excluded += 1
                return False
            out.write(line + "\n")
            info.rows += 1
            return True

        for chunk in store.iter_chunks("train", _CHUNK):
            info.train_rows += sum(add(r.text) for r in chunk)
        for extra_path in extra:
            info.extra_rows[str(extra_path)] = sum(add(t) for t in read_text_file(Path(extra_path)))
    if info.rows == 0:
        tmp.unlink()
        raise InputDataError("no text to pretrain on: the train split is empty and no --extra file added text",
                             hint="import a corpus first (`sentirefine import`) or pass --extra FILE")
    tmp.replace(path)
    return info


def iter_corpus(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield line.rstrip("\n")


# -- tokenizer ----------------------------------------------------------------------------------
def train_tokenizer(corpus: Path, params: PretrainConfig) -> Any:
    """A cased WordPiece tokenizer trained on the corpus, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    # NFC first: decomposed (jamo) input would otherwise become pieces the vocabulary never saw.
    tok.normalizer = normalizers.Sequence([
        normalizers.NFC(),
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False),
    ])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=params.vocab_size, min_frequency=params.min_frequency,
                                        special_tokens=SPECIAL_TOKENS, limit_alphabet=params.alphabet_limit,
                                        show_progress=False)
    tok.train_from_iterator(iter_corpus(corpus), trainer)
    # The trainer numbers pieces of equal frequency in a hash order that varies between runs;
    # sorted ids make the vocabulary (and so a resumed or repeated pretraining) reproducible.
    pieces = sorted(set(tok.get_vocab()) - set(SPECIAL_TOKENS))
    tok.model = models.WordPiece({t: i for i, t in enumerate(SPECIAL_TOKENS + pieces)}, unk_token="[UNK]")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=params.max_len)


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"tokenizer at {path} could not be loaded: {exc}",
                             hint="the directory must hold a Hugging Face tokenizer") from exc


def encode_corpus(corpus: Path, tokenizer: Any, max_len: int, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of every corpus line (with [CLS]/[SEP], truncated) as one flat array plus offsets."""
    pieces: list[np.ndarray] = []
    lengths: list[int] = []
    batch: list[str] = []

    def flush() -> None:
        for ids in tokenizer(batch, truncation=True, max_length=max_len)["input_ids"]:
            pieces.append(np.asarray(ids, dtype=np.int32))
            lengths.append(len(ids))
        batch.clear()

    for line in iter_corpus(corpus):
        batch.append(line)
        if len(batch) >= _CHUNK:
            flush()
    if batch:
        flush()
    ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    for name, array in ((_IDS, ids), (_OFFSETS, offsets)):
        tmp = work / f"{name}.tmp.npy"
        np.save(tmp, array)
        tmp.replace(work / name)
    return ids, offsets


# -- masking and loss ----------------------------------------------------------------------------
def mask_tokens(ids: torch.Tensor, candidates: torch.Tensor, *, mask_id: int, vocab_size: int, prob: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BERT masking: choose ``prob`` of the candidate positions; 80% [MASK], 10% random, 10% kept.

    Returns (inputs, chosen positions as a bool mask, original ids at those positions).
    """
    chosen = (torch.rand(ids.shape, generator=generator) < prob) & candidates
    if not chosen.any():  # a batch of very short texts: mask one token so the step has a loss
        chosen.view(-1)[int(candidates.view(-1).float().argmax())] = True
    labels = ids[chosen]
    inputs = ids.clone()
    r = torch.rand(labels.shape, generator=generator)
    values = labels.clone()
    values[r < 0.8] = mask_id
    random_pos = (r >= 0.8) & (r < 0.9)
    values[random_pos] = torch.randint(len(SPECIAL_TOKENS), vocab_size, (int(random_pos.sum()),),
                                       generator=generator)
    inputs[chosen] = values
    return inputs, chosen, labels


def mlm_loss(model: nn.Module, inputs: torch.Tensor, attention: torch.Tensor, chosen: torch.Tensor,
             labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the masked positions only: the output layer sees only those hidden states."""
    head = getattr(model, "cls", None)
    head = getattr(model, "lm_head", None) if head is None else head
    if head is None:  # an MLM architecture without a separable head: score every position
        full = torch.full_like(inputs, -100)
        full[chosen] = labels
        return model(input_ids=inputs, attention_mask=attention, labels=full).loss
    hidden = model.base_model(input_ids=inputs, attention_mask=attention)[0]
    logits = head(hidden[chosen])
    return F.cross_entropy(logits.float(), labels)


# -- the training state -----------------------------------------------------------------------
@dataclass
class Progress:
    """Everything besides weights and optimizer that a resumed run needs."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    seconds: float = 0.0
    sentences: int = 0
    curve: list[list[float]] = field(default_factory=list)


def _signature(config: Config, source: Path | None) -> dict[str, Any]:
    """What the saved state must match to be resumed (a changed architecture cannot be)."""
    p = config.pretrain
    arch = {"vocab_size": p.vocab_size, "alphabet_limit": p.alphabet_limit, "min_frequency": p.min_frequency,
            "layers": p.layers, "hidden": p.hidden, "heads": p.heads, "intermediate": p.intermediate}
    return {"from": str(source) if source else None, "max_len": p.max_len, **({} if source else arch)}


def save_state(work: Path, model: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress,
               generator: torch.Generator, signature: dict[str, Any]) -> None:
    """Write the state to ``state.tmp`` and swap it in by renames: a kill never leaves half a state."""
    final, tmp, old = work / _STATE, work / f"{_STATE}.tmp", work / f"{_STATE}.old"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "model")
    torch.save({"progress": progress.__dict__, "optimizer": optimizer.state_dict(),
                "rng_torch": torch.get_rng_state(), "rng_mask": generator.get_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "signature": signature}, tmp / _TRAINER)
    crash_point("pretrain_checkpoint")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def saved_state_dir(work: Path) -> Path | None:
    """The newest complete state (``state.old`` survives a kill between the two renames)."""
    for name in (_STATE, f"{_STATE}.old"):
        if (work / name / _TRAINER).is_file():
            return work / name
    return None


# -- the command -----------------------------------------------------------------------------------
@dataclass
class PretrainResult:
    output: Path
    card: dict[str, Any]
    resumed_from_step: int


def pretrain(config: Config, store: Store, *, source: Path | None = None, extra: Sequence[Path] = (),
             fresh: bool = False) -> PretrainResult:
    """Build corpus and tokenizer (once), run MLM within the budget, write the checkpoint + card."""
    from transformers.utils import logging as hf_logging

    from sentirefine.models.batching import resolve_device

    hf_logging.disable_progress_bar()  # one bar per checkpoint save is noise; ours shows the steps
    params = config.pretrain
    work, out = work_dir(config), output_dir(config)
    if source is not None and not source.is_dir():  # before any work is done or discarded
        raise ModelLoadError(f"checkpoint directory to continue from not found: {source}",
                             hint="--from takes a local Hugging Face model directory")
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    signature = _signature(config, source)
    corpus_info = _corpus(store, extra, work)
    tokenizer = _tokenizer(work, params, source)
    ids, offsets = _token_ids(work, tokenizer, params.max_len)
    device = resolve_device(params.device)
    model, progress, generator, optimizer = _model_and_state(config, work, source, tokenizer, signature, device)
    resumed_from = progress.step
    run = _MlflowRun(config, store, work, params, corpus_info)
    log_event(log, "pretrain_start", corpus_rows=corpus_info["rows"], vocab=len(tokenizer), device=device,
              resumed_from_step=resumed_from, mode="continued" if source else "scratch")
    trainer = _Trainer(model, optimizer, generator, tokenizer, ids, offsets, params, device, config.models.seed)
    trainer.run(progress, lambda: save_state(work, model, optimizer, progress, generator, signature), run)
    card = _card(params, source, corpus_info, tokenizer, model, progress, device, ids)
    _write_output(out, model, tokenizer, card)
    run.finish(out / CARD)
    log_event(log, "pretrain_done", output=str(out), steps=progress.step, seconds=round(progress.seconds, 1))
    return PretrainResult(out, card, resumed_from)


def _corpus(store: Store, extra: Sequence[Path], work: Path) -> dict[str, Any]:
    """The corpus file and its counts; built once, then reused by every resume."""
    info_path = work / _CORPUS_INFO
    wanted = sorted(str(p) for p in extra)
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if sorted(info["extra_rows"]) != wanted:
            raise ConfigError(f"{work} holds a corpus built with --extra {sorted(info['extra_rows']) or 'none'}",
                              hint="pass the same --extra files to resume, or --fresh to start over")
        return info
    built = build_corpus(store, extra, work / _CORPUS).__dict__
    info_path.write_text(json.dumps(built, ensure_ascii=False, indent=1), encoding="utf-8")
    return built


def _tokenizer(work: Path, params: PretrainConfig, source: Path | None) -> Any:
    """The source checkpoint's tokenizer (continued mode), else the corpus WordPiece (trained once)."""
    if source is not None:
        return load_tokenizer(source)
    path = work / _TOKENIZER_DIR
    if (path / "tokenizer.json").is_file():
        return load_tokenizer(path)
    tokenizer = train_tokenizer(work / _CORPUS, params)
    tmp = work / f"{_TOKENIZER_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return tokenizer


def _token_ids(work: Path, tokenizer: Any, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    if (work / _IDS).is_file() and (work / _OFFSETS).is_file():
        return np.load(work / _IDS), np.load(work / _OFFSETS)
    return encode_corpus(work / _CORPUS, tokenizer, max_len, work)


def _new_model(config: Config, source: Path | None, tokenizer: Any) -> nn.Module:
    from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if source is not None:
        if not source.is_dir():
            raise ModelLoadError(f"checkpoint directory to continue from not found: {source}",
                                 hint="--from takes a local Hugging Face model directory")
        try:
            return AutoModelForMaskedLM.from_pretrained(source, local_files_only=True)
        except Exception as exc:
            raise ModelLoadError(f"checkpoint at {source} could not be loaded for masked-LM training: {exc}",
                                 hint="the directory must hold config.json and weights") from exc
    p = config.pretrain
    bert = BertConfig(vocab_size=len(tokenizer), hidden_size=p.hidden, num_hidden_layers=p.layers,
                      num_attention_heads=p.heads, intermediate_size=p.intermediate,
                      max_position_embeddings=p.max_len, pad_token_id=tokenizer.pad_token_id)
    return BertForMaskedLM(bert)


def _model_and_state(config: Config, work: Path, source: Path | None, tokenizer: Any, signature: dict[str, Any],
                     device: str) -> tuple[nn.Module, Progress, torch.Generator, torch.optim.Optimizer]:
    """A fresh model and state, or the saved ones when a state matching this configuration exists."""
    from transformers import AutoModelForMaskedLM

    generator = torch.Generator().manual_seed(config.models.seed)
    state_dir = saved_state_dir(work)
    saved = torch.load(state_dir / _TRAINER, weights_only=False) if state_dir else None
    if saved is not None and saved["signature"] != signature:
        raise ConfigError(f"{work} holds pretraining state of another configuration: {saved['signature']}",
                          hint="restore the earlier pretrain settings to resume, or pass --fresh to start over")
    torch.manual_seed(config.models.seed)
    if saved is None:
        model = _new_model(config, source, tokenizer)
    else:
        model = AutoModelForMaskedLM.from_pretrained(state_dir / "model", local_files_only=True)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.pretrain.lr, weight_decay=_WEIGHT_DECAY)
    progress = Progress()
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        progress = Progress(**saved["progress"])
        torch.set_rng_state(saved["rng_torch"])
        generator.set_state(saved["rng_mask"])
        if saved.get("rng_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["rng_cuda"])
    return model, progress, generator, optimizer


class _Trainer:
    """The MLM loop: length-bucketed batches in a per-epoch seeded order, masked-only loss."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                 tokenizer: Any, ids: np.ndarray, offsets: np.ndarray, params: PretrainConfig, device: str,
                 seed: int) -> None:
        self.model, self.optimizer, self.generator = model, optimizer, generator
        self.ids, self.offsets, self.params, self.device, self.seed = ids, offsets, params, device, seed
        self.lengths = np.diff(offsets)
        self.pad_id = tokenizer.pad_token_id or 0
        self.mask_id = tokenizer.mask_token_id
        self.special = torch.as_tensor(sorted(set(tokenizer.all_special_ids)))
        self.vocab_size = model.get_input_embeddings().weight.shape[0]

    def order(self, epoch: int) -> np.ndarray:
        """The row order of ``epoch``: a function of seed and epoch only, so a resume repeats it."""
        from sentirefine.models.batching import length_bucketed_order

        return length_bucketed_order(self.lengths, self.params.batch_size, np.random.default_rng([self.seed, epoch]))

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        width = int(self.lengths[rows].max())
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        for i, r in enumerate(rows):
            seq = self.ids[self.offsets[r] : self.offsets[r + 1]]
            ids[i, : len(seq)] = seq
        tensor = torch.from_numpy(ids)
        return tensor, (tensor != self.pad_id)

    def done(self, progress: Progress) -> bool:
        p = self.params
        return (p.max_steps is not None and progress.step >= p.max_steps) or (
            p.max_minutes is not None and progress.seconds >= 60 * p.max_minutes)

    def lr_factor(self, progress: Progress) -> float:
        """Warm-up/decay on the share of the budget used (steps or time, whichever is further)."""
        from sentirefine.models.batching import linear_warmup_decay

        p = self.params
        shares = [progress.step / p.max_steps if p.max_steps else 0.0,
                  progress.seconds / (60 * p.max_minutes) if p.max_minutes else 0.0]
        return linear_warmup_decay(min(1.0, max(shares)))

    def step(self, rows: np.ndarray) -> float:
        ids, attention = self.batch(rows)
        candidates = attention & ~torch.isin(ids, self.special)
        inputs, chosen, labels = mask_tokens(ids, candidates, mask_id=self.mask_id, vocab_size=self.vocab_size,
                                             prob=self.params.mask_prob, generator=self.generator)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = mlm_loss(self.model, inputs.to(self.device), attention.long().to(self.device),
                        chosen.to(self.device), labels.to(self.device))
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), _GRAD_CLIP)
        self.optimizer.step()
        return float(loss.detach())

    def run(self, progress: Progress, checkpoint: Any, run: _MlflowRun) -> None:
        from tqdm import tqdm

        p = self.params
        order = self.order(progress.epoch)
        window: list[float] = []
        total = p.max_steps if p.max_steps is not None else None
        with tqdm(total=total, initial=progress.step, desc="pretrain", unit="step", disable=progress_disabled()) as bar:
            while not self.done(progress):
                if progress.position >= len(order):
                    progress.epoch, progress.position = progress.epoch + 1, 0
                    order = self.order(progress.epoch)
                rows = order[progress.position : progress.position + p.batch_size]
                for group in self.optimizer.param_groups:
                    group["lr"] = p.lr * self.lr_factor(progress)
                start = time.perf_counter()
                try:
                    window.append(self.step(rows))
                except RuntimeError as exc:
                    if "out of memory" in str(exc).lower():
                        raise TrainingError(f"out of memory in pretraining at batch size {p.batch_size}: {exc}",
                                            hint="lower pretrain.batch_size, max_len or hidden") from exc
                    raise
                progress.seconds += time.perf_counter() - start
                progress.step += 1
                progress.position += len(rows)
                progress.sentences += len(rows)
                crash_point("pretrain_step")
                bar.update(1)
                if progress.step % p.log_every_steps == 0 or self.done(progress):
                    loss = float(np.mean(window))
                    window.clear()
                    progress.curve.append([progress.step, round(loss, 4)])
                    bar.set_postfix(loss=f"{loss:.3f}", min=f"{progress.seconds / 60:.1f}")
                    run.log(progress.step, loss)
                if progress.step % p.checkpoint_every_steps == 0 or self.done(progress):
                    checkpoint()
        if progress.step and not (progress.curve and progress.curve[-1][0] == progress.step) and window:
            progress.curve.append([progress.step, round(float(np.mean(window)), 4)])


def _card(params: PretrainConfig, source: Path | None, corpus: dict[str, Any], tokenizer: Any,
          model: nn.Module, progress: Progress, device: str, ids: np.ndarray) -> dict[str, Any]:
    rows = max(corpus["rows"], 1)
    cfg = model.config
    return {
        "format_version": 1,
        "mode": "continued" if source else "scratch",
        "from": str(source) if source else None,
        "corpus": {**corpus, "tokens": len(ids), "tokens_per_text": round(len(ids) / rows, 2)},
        "vocab_size": len(tokenizer),
        "architecture": {"model_type": cfg.model_type, "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size,
                         "heads": cfg.num_attention_heads, "max_len": params.max_len,
                         "parameters": sum(p.numel() for p in model.parameters())},
        "training": {"steps": progress.step, "sentences_seen": progress.sentences,
                     "epochs": round(progress.sentences / rows, 3), "seconds": round(progress.seconds, 1),
                     "batch_size": params.batch_size, "lr": params.lr, "mask_prob": params.mask_prob,
                     "device": device, "budget": {"max_minutes": params.max_minutes, "max_steps": params.max_steps}},
        "mlm_loss_curve": progress.curve,
        "final_mlm_loss": progress.curve[-1][1] if progress.curve else None,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _write_output(out: Path, model: nn.Module, tokenizer: Any, card: dict[str, Any]) -> None:
    """Model, tokenizer and card, swapped in atomically: the BERT member never sees half of one."""
    tmp, old = out.with_name(out.name + ".tmp"), out.with_name(out.name + ".old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.model_max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)
    tokenizer.save_pretrained(tmp)
    (tmp / CARD).write_text(json.dumps(card, ensure_ascii=False, indent=1), encoding="utf-8")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


class _MlflowRun:
    """The pretraining run in the workspace's experiment: params, the MLM loss curve, the card.

    Its id is kept in the work directory, so a resumed pretraining logs into the same run.
    """

    def __init__(self, config: Config, store: Store, work: Path, params: PretrainConfig,
                 corpus: dict[str, Any]) -> None:
        self.tracker: Any = None
        if not config.tracking.enabled:
            return
        from sentirefine.integrations.tracking import Tracker

        self.tracker = Tracker(config)
        run_file = work / _RUN_FILE
        if run_file.is_file():
            self.run_id = json.loads(run_file.read_text())["run_id"]
            return
        run = self.tracker.client.create_run(
            self.tracker.experiment_id, run_name="pretrain",
            tags={"sentirefine.command": "pretrain", "sentirefine.data.workspace": store.workspace_id()})
        self.run_id = run.info.run_id
        run_file.write_text(json.dumps({"run_id": self.run_id}))
        flat = {f"pretrain.{k}": v for k, v in params.model_dump(mode="json").items()}
        flat.update({"corpus.rows": corpus["rows"], "corpus.train_rows": corpus["train_rows"],
                     "corpus.gold_texts_excluded": corpus["gold_texts_excluded"],
                     "corpus.extra": ",".join(Path(p).name for p in corpus["extra_rows"]) or "none"})
        self.tracker._log_batch(self.run_id, params=flat)

    def log(self, step: int, loss: float) -> None:
        if self.tracker is not None:
            self.tracker._log_batch(self.run_id, metrics={"mlm_loss": loss}, step=step)

    def finish(self, card: Path) -> None:
        if self.tracker is None:
            return
        self.tracker.client.log_artifact(self.run_id, str(card))
        summary = json.loads(card.read_text(encoding="utf-8"))["training"]
        self.tracker._log_batch(self.run_id, metrics={"steps": summary["steps"], "seconds": summary["seconds"]},
                                step=summary["steps"])
        self.tracker.client.set_terminated(self.run_id)


def summary_lines(result: PretrainResult) -> list[str]:
    """The one-screen summary the CLI prints."""
    card = result.card
    corpus, train, arch = card["corpus"], card["training"], card["architecture"]
    extra = ", ".join(f"{Path(p).name} {n:,}" for p, n in corpus["extra_rows"].items())
    curve = card["mlm_loss_curve"]
    lines = [
        f"pretrained checkpoint: {result.output} ({card['mode']}"
        + (f" from {card['from']})" if card["from"] else ")"),
        f"corpus: {corpus['rows']:,} texts (train {corpus['train_rows']:,}" + (f", {extra}" if extra else "")
        + f"); gold texts excluded: {corpus['gold_texts_excluded']:,}; {corpus['tokens_per_text']} tokens/text",
        f"model: {arch['model_type']} {arch['layers']} layers x {arch['hidden']} hidden, "
        f"{arch['parameters'] / 1e6:.1f}M parameters, vocabulary {card['vocab_size']:,}, on {train['device']}",
        f"training: {train['steps']:,} steps ({train['epochs']} epochs, {train['sentences_seen']:,} texts) "
        f"in {train['seconds'] / 60:.1f} min" + (f", resumed at step {result.resumed_from_step:,}"
                                                if result.resumed_from_step else ""),
    ]
    if curve:
        lines.append(f"MLM loss: {curve[0][1]:.3f} (step {curve[0][0]}) -> {curve[-1][1]:.3f} (step {curve[-1][0]})")
    lines.append("use it: models.bert.checkpoint: pretrained (or the path above); "
                 "run again with a larger --max-minutes/--max-steps to train further")
    return lines
