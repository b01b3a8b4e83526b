"""`sentirefine pretrain`: a Korean-capable BERT checkpoint made from the corpus itself.

Why: no Korean transformer ships in an installable package and nothing is downloaded at run
time, while the shipped English MiniLM turns a third of Korean words into ``[UNK]``. So the
corpus supplies both the vocabulary and the pretraining signal (domain-adaptive pretraining,
Gururangan et al. 2020):

* **from scratch** (default): a WordPiece vocabulary trained on the corpus text (NFC, no
  lower-casing, no accent stripping — stripping accents decomposes Hangul into jamo), then a
  small ``BertForMaskedLM`` trained with masked-language modelling;
* **continued** (``--from DIR``): MLM continues from an existing checkpoint, keeping its tokenizer.

This module is the entry point and says where things live; each step is its own module:
:mod:`~sentirefine.pretrain.corpus` (train + ``--extra`` text, never gold, read by
:mod:`~sentirefine.pretrain.extra`), :mod:`~sentirefine.pretrain.vocab` (WordPiece, token ids),
:mod:`~sentirefine.pretrain.mlm` (model, masking, masked-only loss),
:mod:`~sentirefine.pretrain.state` (atomic checkpoints, resume), :mod:`~sentirefine.pretrain.trainer`
(the loop and its budgets), :mod:`~sentirefine.pretrain.card` (the output directory and its card),
:mod:`~sentirefine.pretrain.mlflow_run` and :mod:`~sentirefine.pretrain.summary`. The names
callers used from this module are re-exported here.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from sentirefine.config import Config
from sentirefine.data.store import Store
from sentirefine.data.workspace import pretrained_dir
from sentirefine.errors import ModelLoadError
from sentirefine.logs import log_event
from sentirefine.pretrain.card import CARD, make_card, write_output
from sentirefine.pretrain.corpus import CorpusInfo, build_corpus, iter_corpus, normalise, prepare_corpus
from sentirefine.pretrain.extra import TEXT_COLUMNS, read_text_file
from sentirefine.pretrain.mlflow_run import MlflowRun
from sentirefine.pretrain.mlm import mask_tokens, mlm_loss
from sentirefine.pretrain.state import Progress, model_and_state, save_state, saved_state_dir, state_signature
from sentirefine.pretrain.summary import PretrainResult, summary_lines
from sentirefine.pretrain.trainer import Trainer
from sentirefine.pretrain.vocab import (
    SPECIAL_TOKENS,
    encode_corpus,
    load_tokenizer,
    prepare_tokenizer,
    token_ids,
    train_tokenizer,
)

__all__ = [
    "CARD", "SPECIAL_TOKENS", "TEXT_COLUMNS", "CorpusInfo", "PretrainResult", "Progress", "build_corpus",
    "encode_corpus", "iter_corpus", "load_tokenizer", "mask_tokens", "mlm_loss", "normalise", "output_dir",
    "pretrain", "read_text_file", "save_state", "saved_state_dir", "summary_lines", "train_tokenizer", "work_dir",
]

log = logging.getLogger(__name__)


# -- where things live --------------------------------------------------------------------------
def output_dir(config: Config) -> Path:
    """The finished checkpoint directory (what ``models.bert.checkpoint: pretrained`` means)."""
    return pretrained_dir(config)


def work_dir(config: Config) -> Path:
    """Corpus, tokenizer, token ids and the resumable training state."""
    out = output_dir(config)
    return out.with_name(out.name + "-work")


# -- the command -----------------------------------------------------------------------------------
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
    signature = state_signature(config, source)
    corpus_info = prepare_corpus(store, extra, work)
    tokenizer = prepare_tokenizer(work, params, source)
    ids, offsets = token_ids(work, tokenizer, params.max_len)
    device = resolve_device(params.device)
    model, progress, generator, optimizer = model_and_state(config, work, source, tokenizer, signature, device)
    resumed_from = progress.step
    run = MlflowRun(config, store, work, params, corpus_info)
    log_event(log, "pretrain_start", corpus_rows=corpus_info["rows"], vocab=len(tokenizer), device=device,
              resumed_from_step=resumed_from, mode="continued" if source else "scratch")
    trainer = Trainer(model, optimizer, generator, tokenizer, ids, offsets, params, device, config.models.seed)
    trainer.run(progress, lambda: save_state(work, model, optimizer, progress, generator, signature), run)
    card = make_card(params, source, corpus_info, tokenizer, model, progress, device, ids)
    write_output(out, model, tokenizer, card)
    run.finish(out / CARD)
    log_event(log, "pretrain_done", output=str(out), steps=progress.step, seconds=round(progress.seconds, 1))
    return PretrainResult(out, card, resumed_from)
