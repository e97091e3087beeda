"""Typed pipeline configuration: YAML mapped onto dataclasses and validated on load.

Every section is a dataclass; ``load_config`` reads a YAML file, applies ``--set`` style
overrides (``dotted.key=value``, the value parsed as YAML) and validates the result:
an unknown key, a value of the wrong type or a value out of range raises ``ConfigError``
naming the dotted key. Nothing here imports TensorFlow or Beam.
"""
from __future__ import annotations

import dataclasses
import io
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from core.errors import ConfigError
from core.registries import BACKBONES, INPUT_FORMATS, KD_MODES
from core.registry import Registry
from core import raw_formats  # noqa: F401,E402  (registers the INPUT_FORMATS that data.format names)


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader that also reads ``1e-5`` (no dot) as a float, as people write it."""


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _read_yaml(stream):
    return yaml.load(stream, Loader=_ConfigLoader)  # noqa: S506  (a SafeLoader subclass)


def _range(lo=None, hi=None, *, lo_open=False, choices=None):
    """Field metadata: inclusive bounds (``lo_open`` makes the lower one exclusive)."""
    return {"lo": lo, "hi": hi, "lo_open": lo_open, "choices": choices}


def _f(default=None, *, factory=None, **check):
    meta = _range(**check) if check else {}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# The trained models a run directory can hold (``<run-dir>/<role>/``): the teacher of
# ``train`` and the student of ``distill``.
ROLES = ("teacher", "student")
# ``export.serve_model``: a role, or the KD student of ``distill.sizes`` with the best mean
# test AUC whose serving p50 (recorded by distill) is within ``export.latency_budget_ms``.
BEST_UNDER_BUDGET = "best_under_budget"
SERVE_MODELS = ROLES + (BEST_UNDER_BUDGET,)
# The frontier name of the configured student (``distill.student``, saved as ``student/``).
CONFIGURED_STUDENT = "student"


# ----------------------------------------------------------------------------- data


@dataclass
class TaskConfig:
    """One prediction task: its label column and how a raw value becomes 0/1."""

    name: str = ""
    label: str = ""
    # When set, label = 1 iff the stripped raw value is one of these; otherwise the raw
    # value must parse as 0 or 1.
    positive_values: list[str] = _f(factory=list)
    # Required with positive_values: the stripped raw values that mean 0 (a list), or the
    # string "any" (every value not in positive_values is 0). With a list, a value in
    # neither list is a dead letter (label_not_allowed).
    negative_values: Any = None
    weight: float = _f(1.0, lo=0.0)


NEGATIVE_ANY = "any"  # TaskConfig.negative_values: every value not in positive_values is 0


def _validate_task_values(i: int, t: TaskConfig) -> None:
    """positive_values / negative_values of task ``i``: see ``TaskConfig``."""
    where = f"data.tasks[{i}] ({t.name})"
    neg = t.negative_values
    if not t.positive_values:
        if neg is not None:
            raise ConfigError(f"{where}.negative_values: needs positive_values (without them the label must be 0 or 1)")
        return
    if neg is None:
        raise ConfigError(
            f"{where}: positive_values is set but negative_values is not; list the label values that mean 0 "
            f"(negative_values: [...]) or write negative_values: {NEGATIVE_ANY} to treat every other value as 0")
    if isinstance(neg, str):
        if neg != NEGATIVE_ANY:
            raise ConfigError(f"{where}.negative_values: expected a list of strings or '{NEGATIVE_ANY}', got {neg!r}")
        return
    if not isinstance(neg, list) or not neg or not all(isinstance(v, str) for v in neg):
        raise ConfigError(f"{where}.negative_values: expected a non-empty list of strings or '{NEGATIVE_ANY}', "
                          f"got {neg!r}")
    both = {v.strip() for v in t.positive_values} & {v.strip() for v in neg}
    if both:
        raise ConfigError(f"{where}: value(s) {sorted(both)} are in both positive_values and negative_values")


@dataclass
class FunnelConfig:
    """A funnel constraint: ``child`` may be 1 only where ``parent`` is 1 (e.g. click -> conversion)."""

    parent: str = ""
    child: str = ""


@dataclass
class CsvConfig:
    """How ``data.format: csv`` files are read (``core.raw_formats.read_csv``).

    The column names come from each file's first line (``header: true``) or from
    ``column_names`` (``header: false``); ``rename`` then maps them to the names the rest of
    the config uses. Columns the config does not name are read and ignored; every column it
    names must be among the (renamed) names, which preprocessing checks against each file's
    header before it starts.
    """

    # true: the first line of every file names the columns (names are stripped of spaces)
    # and is not a record. false: every line is a record, named by ``column_names``.
    header: bool = True
    # header: false only (required there): the name of every field, in file order, used or
    # not. With header: true it is an error (the header names the columns; rename them with
    # ``rename``).
    column_names: list[str] = _f(factory=list)
    # {name in the file: name in this config}, applied to the header line (or to
    # column_names): e.g. {"user country": user_country, "ctx.device": device}. Columns not
    # listed keep their name; a listed name missing from a file's header is an error.
    rename: dict[str, str] = _f(factory=dict)
    # The field separator, one character ("\t" for tab-separated files).
    delimiter: str = ","
    # One character; a field in quotes may hold the delimiter, doubled quotes and line breaks.
    quotechar: str = '"'
    # Strip spaces around every field before matching missing_values (and around the names).
    strip_whitespace: bool = True
    # Field values read as missing: a missing categorical is a category of its own; a record
    # with a missing numeric or label goes to the dead letters.
    missing_values: list[str] = _f(factory=lambda: [""])


def _validate_csv(csv_cfg: CsvConfig) -> None:
    """``data.csv`` (format csv): see ``CsvConfig``."""
    if not csv_cfg.header and not csv_cfg.column_names:
        raise ConfigError("data.csv.column_names: required when data.csv.header is false")
    if csv_cfg.header and csv_cfg.column_names:
        raise ConfigError("data.csv.column_names: only for files without a header line (header: false); with "
                          "header: true the header names the columns; to give them other names use "
                          "data.csv.rename: {name in the header: new name}")
    for key in ("delimiter", "quotechar"):
        if len(getattr(csv_cfg, key)) != 1:
            raise ConfigError(f"data.csv.{key}: expected one character, got {getattr(csv_cfg, key)!r}")
    names = list(csv_cfg.column_names)
    if len(set(names)) != len(names):
        raise ConfigError(f"data.csv.column_names: a name is listed twice: {sorted({n for n in names if names.count(n) > 1})}")
    for old, new in csv_cfg.rename.items():
        if not str(old).strip() or not isinstance(new, str) or not new.strip():
            raise ConfigError(f"data.csv.rename: expected {{name in the file: new name}}, got {old!r}: {new!r}")
        if names and old not in names:
            raise ConfigError(f"data.csv.rename: {old!r} is not in data.csv.column_names")
    targets = list(csv_cfg.rename.values())
    if len(set(targets)) != len(targets):
        raise ConfigError(f"data.csv.rename: two columns get the same new name: {targets}")
    if names:
        final = [csv_cfg.rename.get(n, n) for n in names]
        if len(set(final)) != len(final):
            raise ConfigError(f"data.csv.rename: a new name equals another column's name: {final}")


# A model feature or task name: TensorFlow builds layer, variable scope and signature names
# from it, which allow letters, digits, '_' and '-' (models/embedding.py keys its tables by
# name, so '.' breaks loading the model; a space breaks building it).
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _validate_model_names(d: "DataConfig") -> None:
    """Feature columns (categorical, numeric, lists, crosses) and task names: ``MODEL_NAME``,
    named at load, before any stage runs (they would otherwise break training, model loading
    or export)."""
    for key, values in (("data.categorical", d.categorical), ("data.numeric", d.numeric),
                        ("data.lists[].name", [f.name for f in d.lists]),
                        ("data.crosses[].name", [cross_name(c) for c in d.crosses]),
                        ("data.tasks[].name", [t.name for t in d.tasks])):
        for name in values:
            if MODEL_NAME.fullmatch(name):
                continue
            safe = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_-]", "_", name)).strip("_-") or "column"
            if key in ("data.tasks[].name", "data.crosses[].name"):
                fix = f"name it e.g. {safe!r}"
            elif d.format == "csv":
                fix = (f"rename the column, e.g. data.csv.rename: {{{name!r}: {safe}}}, and use {safe!r} here"
                       if name not in d.csv.rename.values() else f"rename it to e.g. {safe!r} in data.csv.rename")
            else:
                fix = f"rename the field in the data (e.g. to {safe!r})"
            raise ConfigError(f"{key}: {name!r} cannot be a model name: use letters, digits, '_' and '-' only, "
                              f"starting with a letter or digit (TensorFlow builds layer and signature names "
                              f"from it); {fix}")


LIST_KINDS = ("multi_valued", "sequence")
POOLINGS = ("sum", "mean", "sqrtn", "attention")
SEQUENCE_ORDERS = ("recent_last", "recent_first")
WEIGHTS_TOKENS = "tokens"  # ListFeatureConfig.weights: per-value weights as ``value:weight`` tokens


@dataclass
class ListFeatureConfig:
    """A variable-length categorical feature: a multi-valued set (tags, a basket) or a sequence.

    In CSV the values are one field joined by ``separator`` (``"a|b|c"``; an empty field is an
    empty list); in JSONL and Parquet a list; in ``tf.Example`` a ``bytes_list`` (or
    ``int64_list``) with any number of values. TF Transform maps the values to ids (a
    vocabulary with ``preprocess.vocab``'s options, or ``data.hash_buckets``), keeps the first
    ``max_length`` (a sequence: the ``max_length`` most recent) and pads to ``max_length``;
    the model pools the value embeddings into one vector.
    """

    name: str = ""
    kind: str = _f("multi_valued", choices=list(LIST_KINDS))
    separator: str = "|"  # CSV only: joins the values within the field
    # The padded width in the transformed data: longer lists are truncated (a sequence keeps
    # its most recent values), counted in stats.json; a list longer than data.max_list_length
    # is a dead letter (list_too_long).
    max_length: int = _f(16, lo=1, hi=4096)
    # How the value embeddings become one vector: sum | mean | sqrtn (sum / sqrt(count)),
    # weighted by the per-value weights when given; attention (sequence only): DIN target
    # attention queried by ``target``. An empty list pools to zeros.
    pooling: str = _f("mean", choices=list(POOLINGS))
    # Per-value weights: None (all 1), "tokens" (each value is ``value:weight``), or the name
    # of a parallel list column holding one finite weight per value.
    weights: Optional[str] = None
    # A categorical feature (data.categorical or another list) whose vocabulary (or hash
    # buckets) and embedding table this list uses: e.g. hist_items shares item_id's.
    shares: Optional[str] = None
    # pooling: attention only: the categorical feature whose embedding queries the sequence
    # (it must have the same embedding table, i.e. be ``shares`` or share it).
    target: Optional[str] = None
    # sequence only: where the most recent value is.
    order: str = _f("recent_last", choices=list(SEQUENCE_ORDERS))


@dataclass
class CrossConfig:
    """A hashed cross of two or more categorical columns: one id per combination of values."""

    columns: list[str] = _f(factory=list)
    hash_buckets: int = _f(10_000, lo=1)
    name: str = ""  # default: the columns joined by "_x_"


def cross_name(cross: CrossConfig) -> str:
    """The model feature name of a cross: ``name`` or ``<a>_x_<b>...``."""
    return cross.name or "_x_".join(cross.columns)


@dataclass
class DataConfig:
    """Where the raw records come from and what their columns mean."""

    source: str = _f("synthetic", choices=["synthetic", "files"])
    path: str = ""  # a file or glob; for source=synthetic, filled in by the generate stage
    format: str = _f("csv", choices=INPUT_FORMATS)
    csv: CsvConfig = _f(factory=CsvConfig)
    categorical: list[str] = _f(factory=list)
    numeric: list[str] = _f(factory=list)
    tasks: list[TaskConfig] = _f(factory=list)
    funnel: Optional[FunnelConfig] = None
    weight_column: Optional[str] = None
    group_column: Optional[str] = None
    # Columns carried to the evaluation data but never to the model (e.g. oracle probabilities).
    passthrough: list[str] = _f(factory=list)
    # task name -> passthrough column holding the true probability of that task's label.
    oracle: dict[str, str] = _f(factory=dict)
    # Variable-length categorical features (multi-valued and sequences): see ListFeatureConfig.
    lists: list[ListFeatureConfig] = _f(factory=list)
    # Categorical or list features whose ids are hashed into N buckets instead of a
    # vocabulary (no vocabulary pass; FarmHash64 of salt + value: stable across runs,
    # processes and runners). A list that shares another feature's table uses its hashing.
    hash_buckets: dict[str, int] = _f(factory=dict, lo=1)
    hash_salt: str = ""
    # Hashed crosses of categorical (single-valued) columns.
    crosses: list[CrossConfig] = _f(factory=list)
    # A list with more values than this is a dead letter (list_too_long).
    max_list_length: int = _f(1000, lo=1)


@dataclass
class SyntheticConfig:
    """The click/conversion log generator (the embedded default data)."""

    rows: int = _f(200_000, lo=1)
    seed: int = 7
    format: str = _f("csv", choices=["csv", "parquet"])
    chunk_rows: int = _f(100_000, lo=1)
    num_users: int = _f(1_000, lo=1)
    num_items: int = _f(300, lo=1)
    num_categories: int = _f(12, lo=1)
    latent_dim: int = _f(16, lo=1)
    # 1.0: conversion given click is driven by the same user x item affinity as click;
    # 0.0: by an independent one.
    task_correlation: float = _f(0.5, lo=0.0, hi=1.0)
    # Weight of the latent user x item affinities in both logits (see pipeline/synthetic/click_model.py).
    interaction_scale: float = _f(1.0, lo=0.0)
    click_rate: float = _f(0.08, lo=0.0, hi=1.0, lo_open=True)
    conversion_rate: float = _f(0.025, lo=0.0, hi=1.0, lo_open=True)  # per impression


# ----------------------------------------------------------------------------- preprocess


@dataclass
class SplitConfig:
    keys: list[str] = _f(factory=list)  # hash keys; empty: the whole record
    train: float = _f(0.8, lo=0.0, hi=1.0, lo_open=True)
    validation: float = _f(0.1, lo=0.0, hi=1.0)
    test: float = _f(0.1, lo=0.0, hi=1.0)


@dataclass
class VocabConfig:
    min_count: int = _f(1, lo=1)
    top_k: Optional[int] = _f(None, lo=1)
    oov_buckets: int = _f(1, lo=1)


@dataclass
class NumericTransformConfig:
    log1p: list[str] = _f(factory=list)  # numeric columns z-scored after log1p
    quantile_buckets: int = _f(0, lo=0)  # >0 adds a bucketized copy '<name>_bucket' (embedded)
    # >0: also a piecewise-linear encoding over that many TFT quantile bins, '<name>_ple'
    # (Gorishniy et al. 2022), embedded by a per-feature linear layer. Besides the z-score.
    piecewise_linear_bins: int = _f(0, lo=0, hi=1024)


@dataclass
class BeamConfig:
    """Options passed to Beam's ``PipelineOptions``: any runner (Dataflow, Flink, Spark)."""

    runner: str = "DirectRunner"
    direct_running_mode: str = _f("multi_processing", choices=["in_memory", "multi_threading", "multi_processing"])
    direct_num_workers: int = _f(0, lo=0)  # 0: one per core
    extra_args: list[str] = _f(factory=list)  # e.g. ['--project=p', '--region=r']
    # Redistribute records after reading (a Reshuffle). Helps a distributed runner when the
    # input is a few large unsplittable files (one gzip CSV); costs a shuffle of every record,
    # which the DirectRunner holds in memory. Off: parallelism comes from the number of files.
    reshuffle_records: bool = False


@dataclass
class PreprocessConfig:
    split: SplitConfig = _f(factory=SplitConfig)
    vocab: VocabConfig = _f(factory=VocabConfig)
    numeric: NumericTransformConfig = _f(factory=NumericTransformConfig)
    max_dead_letter_fraction: float = _f(0.01, lo=0.0, hi=1.0)
    num_shards: int = _f(0, lo=0)  # 0: one file per bundle (streams); N > 0: N files (a shuffle)
    beam: BeamConfig = _f(factory=BeamConfig)


# ----------------------------------------------------------------------------- model


@dataclass
class ExpertsConfig:
    """MMoE / PLE experts."""

    num_shared: int = _f(4, lo=1)  # MMoE: all experts; PLE: shared experts per level
    num_specific: int = _f(1, lo=0)  # PLE only: experts per task per level
    units: list[int] = _f(factory=lambda: [64], lo=1)
    levels: int = _f(1, lo=1)  # PLE only: number of CGC layers


@dataclass
class AuxTowerConfig:
    """Self-auxiliary towers (Wang et al.): a small extra tower per task, training only."""

    enabled: bool = True
    kind: str = _f("linear", choices=["linear", "mlp"])
    units: list[int] = _f(factory=lambda: [8], lo=1)  # kind=mlp only
    gamma: float = _f(0.5, lo=0.0)


@dataclass
class ModelConfig:
    backbone: str = _f("shared_bottom", choices=BACKBONES)
    # The model features this model reads (categorical, list, cross, numeric names and the
    # derived '<n>_bucket' / '<n>_ple'); empty: all. A student may skip the teacher's most
    # expensive features; its served model then needs only their raw columns.
    features: list[str] = _f(factory=list)
    embedding_dim: int = _f(16, lo=1)
    # Hidden units of the DIN target-attention MLP of attention-pooled sequences.
    attention_units: list[int] = _f(factory=lambda: [36], lo=1)
    # DCN-v2 cross layers between the embedding and the backbone (0: none).
    cross_layers: int = _f(0, lo=0)
    cross_projection_dim: Optional[int] = _f(None, lo=1)  # None: full-rank cross kernels
    bottom_units: list[int] = _f(factory=lambda: [256, 128], lo=1)
    experts: ExpertsConfig = _f(factory=ExpertsConfig)
    tower_units: list[int] = _f(factory=lambda: [64], lo=1)
    dropout: float = _f(0.0, lo=0.0, hi=1.0)
    l2: float = _f(0.0, lo=0.0)  # L2 on the dense / cross kernels (and the embeddings unless embedding_l2 is set)
    # L2 on the embedding tables (None: model.l2). The id embeddings (e.g. 1000 users x 16)
    # are what a multi-epoch teacher overfits first.
    embedding_l2: Optional[float] = _f(None, lo=0.0)
    aux: AuxTowerConfig = _f(factory=AuxTowerConfig)
    # ESMM: the funnel child is predicted as pCTCVR = pCTR x pCVR on all impressions.
    esmm: bool = False
    # Compute the funnel child's loss only on rows where the parent label is 1.
    masked_child_loss: bool = False


@dataclass
class DistributeConfig:
    strategy: str = _f("default", choices=["default", "mirrored", "multi_worker"])
    tf_config: Optional[str] = None  # JSON cluster spec; default: the TF_CONFIG environment


@dataclass
class TrainingConfig:
    batch_size: int = _f(512, lo=1)
    epochs: int = _f(5, lo=1)
    steps_per_epoch: Optional[int] = _f(None, lo=1)  # None: one pass over the training split
    learning_rate: float = _f(1e-3, lo=0.0, lo_open=True)
    lr_decay_rate: float = _f(0.9, lo=0.0, hi=1.0, lo_open=True)  # per epoch, exponential
    early_stopping_patience: int = _f(2, lo=0)
    monitor: str = "val_auc_mean"
    shuffle_buffer: int = _f(10_000, lo=1)
    # Batches per tf.function call (Keras ``steps_per_execution``): fewer Python round trips
    # (bench/train_profile.py: 2.7 vs 5.4 ms per step of the census SharedBottom at 32 vs 1);
    # batch-level callbacks then run every this many batches. Epochs stay whole passes.
    steps_per_execution: int = _f(32, lo=1)
    # Where the training and validation examples come from each epoch: "memory" holds the
    # splits parsed in memory (read and decompressed once; the same batches as streaming),
    # "stream" reads the gzip shards every epoch (memory stays flat however large the data),
    # "auto" holds them when they take at most cache_max_mb (and streams under multi_worker).
    cache: str = _f("auto", choices=["auto", "memory", "stream"])
    cache_max_mb: int = _f(1024, lo=0)
    seed: int = 1
    # Keras' fit output: None (default) shows a step progress bar on a terminal and nothing
    # more in a log (each epoch already ends with one log line); 0, 1, 2 as Keras.
    verbose: Optional[int] = _f(None, choices=[0, 1, 2])
    distribute: DistributeConfig = _f(factory=DistributeConfig)


@dataclass
class StudentSizeConfig:
    """One extra student size of the AUC-vs-serving-cost frontier (``distill.sizes``): the
    configured student (``distill.student``) with these fields replaced (None: the student's)."""

    name: str = ""
    embedding_dim: Optional[int] = _f(None, lo=1)
    bottom_units: Optional[list[int]] = _f(None, lo=1)
    tower_units: Optional[list[int]] = _f(None, lo=1)
    # The model features this size reads (a subset of the teacher's; None: the student's). A
    # size that skips a costly feature (a long sequence) is exported with fewer raw columns:
    # less to parse and transform per request, which is most of a small model's serving cost.
    features: Optional[list[str]] = None


@dataclass
class DistillConfig:
    enabled: bool = True
    student: ModelConfig = _f(
        factory=lambda: ModelConfig(
            embedding_dim=4, bottom_units=[32], tower_units=[8], aux=AuxTowerConfig(enabled=False)
        )
    )
    # Extra student sizes, each trained with ``mode`` and without KD (mode none) on the first
    # seed, for ``size_epochs`` epochs, and placed with the teacher and the configured student
    # (named "student") on the AUC vs serving-p50 plot of the report. None: two sizes around
    # the student, "small" (embedding and every layer halved) and "large" (doubled); []: none.
    sizes: Optional[list[StudentSizeConfig]] = None
    # Epochs of the extra sizes (None: training.epochs); the configured student keeps training.epochs.
    size_epochs: Optional[int] = _f(None, lo=1)
    # The batch size (serialized raw tf.Examples per call) of the serving p50 that distill
    # measures for every model in TF Serving's path (a TF1 session, one thread).
    latency_batch_size: int = _f(64, lo=1, hi=4096)
    latency_calls: int = _f(200, lo=10)  # timed calls per model (after 10 warmup calls)
    mode: str = _f("kd", choices=KD_MODES)
    alpha: float = _f(0.5, lo=0.0, hi=1.0)
    temperature: float = _f(2.0, lo=0.0, lo_open=True)
    feature_alignment_weight: float = _f(0.0, lo=0.0)  # lambda_t, one for all tasks
    seeds: list[int] = _f(factory=lambda: [1])
    score_batch_size: int = _f(1024, lo=1)
    ablation: bool = False  # also train the other modes for the report


@dataclass
class ExportConfig:
    base_dir: str = ""  # default: <run-dir>/serving_models
    model_name: str = "ranker"
    # teacher | student | best_under_budget (the KD student of distill's frontier with the
    # best mean test AUC whose serving p50 <= latency_budget_ms; none under it: an export error).
    serve_model: str = _f("student", choices=list(SERVE_MODELS))
    # Required with serve_model: best_under_budget (and only then): the largest serving p50 (ms)
    # at distill.latency_batch_size, in TF Serving's path, that the published student may have.
    latency_budget_ms: Optional[float] = _f(None, lo=0.0, lo_open=True)
    min_auc: dict[str, float] = _f(factory=dict)  # task -> minimum test AUC
    max_auc_drop: float = _f(0.01, lo=0.0)  # against the currently published version
    warmup_examples: int = _f(16, lo=0, hi=1000)
    skew_tolerance: float = _f(1e-5, lo=0.0)
    classification_task: Optional[str] = None  # default: the first task


@dataclass
class ServingConfig:
    host: str = "127.0.0.1"
    rest_port: int = _f(8501, lo=0, hi=65535)
    grpc_port: int = _f(8500, lo=0, hi=65535)
    poll_seconds: float = _f(2.0, lo=0.0, lo_open=True)
    max_batch_size: int = _f(1024, lo=1)
    # Server limits (README "Server limits"). Largest REST request body and gRPC request
    # message: a larger REST body is answered 413 before it is read (gRPC: RESOURCE_EXHAUSTED).
    max_body_bytes: int = _f(4 << 20, lo=1024, hi=1 << 30)
    # REST: an idle keep-alive connection, or one whose request line and headers have not all
    # arrived, is closed after this long (with a 408 if a request had begun).
    header_timeout_seconds: float = _f(10.0, lo=0.0, hi=3600.0, lo_open=True)
    # REST: the body must arrive within this long after the headers (else 408); also the
    # time allowed for writing a response.
    body_timeout_seconds: float = _f(30.0, lo=0.0, hi=3600.0, lo_open=True)
    # Threads that run requests, per front end: at most this many requests in progress.
    worker_threads: int = _f(16, lo=1, hi=1024)
    # REST: open connections (idle, reading headers, waiting for a worker, running); one
    # more closes the longest-idle keep-alive connection, or gets 503 if none is idle.
    max_connections: int = _f(256, lo=1, hi=65536)


@dataclass
class ParetoConfig:
    backbone: str = _f("shared_bottom", choices=BACKBONES)
    # Weight of the first task; the second gets 1 - w.
    first_task_weights: list[float] = _f(factory=lambda: [0.2, 0.35, 0.5, 0.65, 0.8])
    seeds: list[int] = _f(factory=lambda: [1, 2, 3])
    epochs: int = _f(2, lo=1)
    reference_point: list[float] = _f(factory=lambda: [0.5, 0.5])


@dataclass
class PipelineConfig:
    name: str = "default"
    data: DataConfig = _f(factory=DataConfig)
    synthetic: SyntheticConfig = _f(factory=SyntheticConfig)
    preprocess: PreprocessConfig = _f(factory=PreprocessConfig)
    model: ModelConfig = _f(factory=ModelConfig)
    training: TrainingConfig = _f(factory=TrainingConfig)
    distill: DistillConfig = _f(factory=DistillConfig)
    export: ExportConfig = _f(factory=ExportConfig)
    serving: ServingConfig = _f(factory=ServingConfig)
    pareto: ParetoConfig = _f(factory=ParetoConfig)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.data.tasks]


# ----------------------------------------------------------------------------- loading


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Checks ``value`` against the annotation ``tp`` and builds nested dataclasses."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        k_tp, v_tp = typing.get_args(tp)
        return {_convert(k, k_tp, key): _convert(v, v_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {tp.__name__}, got boolean {value!r}")
    if tp in (int, float, str) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _check_range(value: Any, meta: dict, key: str) -> None:
    if not meta or value is None:
        return
    values = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [value]
    for v in values:
        choices = meta.get("choices")
        if isinstance(choices, Registry):
            # A registry is filled where its implementations are defined; one not imported
            # yet (core used on its own) is checked again by ``Registry.get`` at build time.
            if len(choices) and v not in choices:
                raise ConfigError(f"{key}: expected one of {choices.names()}, got {v!r}")
        elif choices is not None and v not in choices:
            raise ConfigError(f"{key}: expected one of {choices}, got {v!r}")
        lo, hi = meta.get("lo"), meta.get("hi")
        if lo is not None and (v < lo or (meta.get("lo_open") and v == lo)):
            op = ">" if meta.get("lo_open") else ">="
            raise ConfigError(f"{key}: expected a value {op} {lo}, got {v!r}")
        if hi is not None and v > hi:
            raise ConfigError(f"{key}: expected a value <= {hi}, got {v!r}")


def _build(cls, data: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key '{key}' (known keys here: {known})")
        converted = _convert(value, hints[name], key)
        _check_range(converted, fields[name].metadata, key)
        kwargs[name] = converted
    return cls(**kwargs)


def list_feature(d: "DataConfig", name: str) -> Optional[ListFeatureConfig]:
    """The ``data.lists`` entry named ``name``, or None."""
    return next((f for f in d.lists if f.name == name), None)


def weight_columns(d: "DataConfig") -> dict[str, str]:
    """List feature -> its parallel weight column (``weights: <column>``)."""
    return {f.name: f.weights for f in d.lists if f.weights and f.weights != WEIGHTS_TOKENS}


def table_owner(d: "DataConfig", name: str) -> str:
    """The feature whose vocabulary and embedding table ``name`` uses (following ``shares``)."""
    seen = []
    while True:
        f = list_feature(d, name)
        if f is None or not f.shares:
            return name
        seen.append(name)
        name = f.shares
        if name in seen:
            raise ConfigError(f"data.lists: 'shares' forms a cycle: {' -> '.join(seen + [name])}")


def _validate_lists(d: "DataConfig", columns: list[str]) -> None:
    """``data.lists``, ``data.hash_buckets`` and ``data.crosses``: see their dataclasses."""
    categorical = set(d.categorical) | {f.name for f in d.lists}
    weights = weight_columns(d)
    for i, f in enumerate(d.lists):
        where = f"data.lists[{i}] ({f.name or '?'})"
        if not f.name:
            raise ConfigError(f"data.lists[{i}].name: required")
        if len(f.separator) != 1 or f.separator in "\r\n":
            raise ConfigError(f"{where}.separator: expected one character (not a line break), got {f.separator!r}")
        if f.max_length > d.max_list_length:
            raise ConfigError(f"{where}.max_length: {f.max_length} exceeds data.max_list_length {d.max_list_length}")
        if f.pooling == "attention":
            if f.kind != "sequence":
                raise ConfigError(f"{where}.pooling: attention is for kind: sequence (multi_valued lists pool by "
                                  f"sum, mean or sqrtn)")
            if not f.target:
                raise ConfigError(f"{where}.target: pooling: attention needs the categorical feature that queries "
                                  f"the sequence (e.g. target: item_id)")
            if f.target not in d.categorical:
                raise ConfigError(f"{where}.target: {f.target!r} is not in data.categorical")
            if table_owner(d, f.target) != table_owner(d, f.name):
                raise ConfigError(f"{where}.target: {f.target!r} must use the same embedding table as {f.name!r} "
                                  f"(set shares: {f.target})")
        elif f.target:
            raise ConfigError(f"{where}.target: only with pooling: attention")
        if f.shares is not None:
            if f.shares not in categorical or f.shares == f.name:
                raise ConfigError(f"{where}.shares: expected another feature of data.categorical or data.lists, "
                                  f"got {f.shares!r}")
            table_owner(d, f.name)
            if f.name in d.hash_buckets:
                raise ConfigError(f"data.hash_buckets.{f.name}: {f.name!r} shares {f.shares!r}'s table; hash "
                                  f"{f.shares!r} instead")
        if f.weights and f.weights != WEIGHTS_TOKENS:
            if f.weights in columns or f.weights in categorical:
                raise ConfigError(f"{where}.weights: column {f.weights!r} is also a feature")
    if len(set(weights.values())) != len(weights):
        raise ConfigError("data.lists: two lists name the same weights column")
    for name in d.hash_buckets:
        if name not in categorical:
            raise ConfigError(f"data.hash_buckets: {name!r} is not in data.categorical or data.lists")
    names = [cross_name(c) for c in d.crosses]
    for i, c in enumerate(d.crosses):
        if len(c.columns) < 2 or len(set(c.columns)) != len(c.columns):
            raise ConfigError(f"data.crosses[{i}].columns: expected two or more different columns, got {c.columns}")
        bad = [col for col in c.columns if col not in d.categorical]
        if bad:
            raise ConfigError(f"data.crosses[{i}].columns: {bad} not in data.categorical (crosses are of "
                              f"single-valued categorical columns)")
    taken = set(columns)
    for n in names:
        if n in taken:
            raise ConfigError(f"data.crosses: the name {n!r} is taken by another feature or cross")
        taken.add(n)


def model_feature_names(cfg: "PipelineConfig") -> list[str]:
    """Every model feature the config produces (before ``model.features`` selects): categorical,
    lists, crosses, numerics and their derived ``_bucket`` / ``_ple`` features."""
    d, num = cfg.data, cfg.preprocess.numeric
    names = list(d.categorical) + [f.name for f in d.lists] + [cross_name(c) for c in d.crosses] + list(d.numeric)
    if num.quantile_buckets > 0:
        names += [f"{n}_bucket" for n in d.numeric]
    if num.piecewise_linear_bins > 0:
        names += [f"{n}_ple" for n in d.numeric]
    return names


def _validate_model_features(cfg: "PipelineConfig") -> None:
    """``model.features`` / ``distill.student.features``: known names; attention needs its target."""
    known = model_feature_names(cfg)
    teacher = cfg.model.features or known
    models = [(cfg.model, "model", known), (cfg.distill.student, "distill.student", teacher)]
    models += [(m, f"distill.sizes[{i}]", teacher) for i, (z, (_, m)) in
               enumerate(zip(cfg.distill.sizes or [], student_sizes(cfg.distill)[1:])) if z.features is not None]
    for m, where, allowed in models:
        bad = [n for n in m.features if n not in allowed]
        if bad:
            scope = "the model features" if where == "model" else "the teacher's features (model.features)"
            raise ConfigError(f"{where}.features: {bad} not among {scope}: {allowed}")
        chosen = set(m.features or allowed)
        for f in cfg.data.lists:
            if f.pooling == "attention" and f.name in chosen and f.target not in chosen:
                raise ConfigError(f"{where}.features: {f.name!r} attends with {f.target!r}; list it too")


def student_sizes(d: "DistillConfig") -> list[tuple[str, "ModelConfig"]]:
    """(name, ModelConfig) of every student size of the frontier: the configured student as
    ``CONFIGURED_STUDENT``, then each ``distill.sizes`` entry (its fields over
    ``distill.student``'s) as listed. ``sizes`` None: "small" (embedding_dim and every layer
    width halved, at least 1), the student, "large" (all doubled)."""
    s = d.student
    if d.sizes is None:
        def scaled(f):
            return dataclasses.replace(s, embedding_dim=max(1, int(s.embedding_dim * f)),
                                       bottom_units=[max(1, int(u * f)) for u in s.bottom_units],
                                       tower_units=[max(1, int(u * f)) for u in s.tower_units])
        return [("small", scaled(0.5)), (CONFIGURED_STUDENT, s), ("large", scaled(2))]
    out = [(CONFIGURED_STUDENT, s)]
    for z in d.sizes:
        changes = {k: getattr(z, k) for k in ("embedding_dim", "bottom_units", "tower_units", "features")
                   if getattr(z, k) is not None}
        out.append((z.name, dataclasses.replace(s, **changes)))
    return out


def _validate_sizes(cfg: PipelineConfig) -> None:
    """``distill.sizes`` names and ``export.serve_model`` / ``export.latency_budget_ms``."""
    names = []
    for i, z in enumerate(cfg.distill.sizes or []):
        where = f"distill.sizes[{i}].name"
        if not z.name:
            raise ConfigError(f"{where}: required (e.g. small, large)")
        if not MODEL_NAME.fullmatch(z.name):
            raise ConfigError(f"{where}: {z.name!r}: use letters, digits, '_' and '-' only (it names the "
                              f"directory students/<name>)")
        if z.name == CONFIGURED_STUDENT:
            raise ConfigError(f"{where}: {CONFIGURED_STUDENT!r} is the configured student (distill.student), "
                              f"always on the frontier; name the extra size otherwise")
        if z.name in names:
            raise ConfigError(f"{where}: {z.name!r} is listed twice")
        names.append(z.name)
        if all(getattr(z, k) in (None, getattr(cfg.distill.student, k))
               for k in ("embedding_dim", "bottom_units", "tower_units", "features")):
            raise ConfigError(f"distill.sizes[{i}] ({z.name}): the same model as distill.student (set "
                              f"embedding_dim, bottom_units, tower_units or features to differ)")
    e = cfg.export
    if e.serve_model == BEST_UNDER_BUDGET:
        if e.latency_budget_ms is None:
            raise ConfigError(f"export.latency_budget_ms: required with export.serve_model: {BEST_UNDER_BUDGET} "
                              f"(the largest serving p50 in ms at distill.latency_batch_size="
                              f"{cfg.distill.latency_batch_size})")
        if not cfg.distill.enabled:
            raise ConfigError(f"export.serve_model: {BEST_UNDER_BUDGET} picks among distill's students, but "
                              f"distill.enabled is false")
    elif e.latency_budget_ms is not None:
        raise ConfigError(f"export.latency_budget_ms: only with export.serve_model: {BEST_UNDER_BUDGET} "
                          f"(serve_model is {e.serve_model!r})")


def _validate(cfg: PipelineConfig) -> None:
    """Cross-field checks that a single field's type and range cannot express."""
    d = cfg.data
    if not d.tasks:
        raise ConfigError("data.tasks: at least one task is required")
    names = [t.name for t in d.tasks]
    for i, t in enumerate(d.tasks):
        if not t.name or not t.label:
            raise ConfigError(f"data.tasks[{i}]: both 'name' and 'label' are required")
        _validate_task_values(i, t)
    if len(set(names)) != len(names):
        raise ConfigError(f"data.tasks: task names must be unique, got {names}")
    if not (d.categorical or d.numeric or d.lists):
        raise ConfigError("data: at least one of data.categorical, data.numeric or data.lists must list a column")
    columns = d.categorical + d.numeric + [f.name for f in d.lists]
    if len(set(columns)) != len(columns):
        raise ConfigError("data: a column is listed twice across data.categorical, data.numeric and data.lists")
    _validate_model_names(d)
    _validate_lists(d, columns)
    columns = columns + list(weight_columns(d).values())
    labels = {t.label for t in d.tasks}
    overlap = labels & set(columns)
    if overlap:
        raise ConfigError(f"data.tasks: label column(s) {sorted(overlap)} are also listed as features")
    if d.funnel is not None:
        for side in ("parent", "child"):
            if getattr(d.funnel, side) not in names:
                raise ConfigError(f"data.funnel.{side}: expected a task name from {names}, got {getattr(d.funnel, side)!r}")
    for task, column in d.oracle.items():
        if task not in names:
            raise ConfigError(f"data.oracle: '{task}' is not a task (tasks: {names})")
        if column not in d.passthrough:
            raise ConfigError(f"data.oracle.{task}: column {column!r} must also be listed in data.passthrough")
    if d.source == "files" and not d.path:
        raise ConfigError("data.path: required when data.source is 'files'")
    if d.format == "csv":
        _validate_csv(d.csv)
    s = cfg.preprocess.split
    if abs(s.train + s.validation + s.test - 1.0) > 1e-6:
        raise ConfigError(
            f"preprocess.split: train + validation + test must sum to 1, got {s.train + s.validation + s.test:g}"
        )
    for m, where in ((cfg.model, "model"), (cfg.distill.student, "distill.student")):
        if (m.esmm or m.masked_child_loss) and d.funnel is None:
            raise ConfigError(f"{where}.esmm/masked_child_loss: need data.funnel to name the parent and child tasks")
    for task in cfg.export.min_auc:
        if task not in names:
            raise ConfigError(f"export.min_auc: '{task}' is not a task (tasks: {names})")
    if cfg.export.classification_task is not None and cfg.export.classification_task not in names:
        raise ConfigError(f"export.classification_task: expected one of {names}, got {cfg.export.classification_task!r}")
    _validate_model_features(cfg)
    _validate_sizes(cfg)
    if len(cfg.pareto.reference_point) != 2:
        raise ConfigError("pareto.reference_point: expected two values (one AUC per task)")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parses ``dotted.key=value``; the value is read as YAML (so 3, 0.5, true, [1, 2] work)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected dotted.key=value")
    try:
        value = _read_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({e.problem})") from None
    return key.split("."), value


def _apply_override(data: dict, path: list[str], value: Any) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(path)}: '{'.'.join(path[: i + 1])}' is not a section")
        node = child
    node[path[-1]] = value


def config_from_dict(data: dict, overrides: list[str] = ()) -> PipelineConfig:
    data = dict(data or {})
    for text in overrides:
        path, value = parse_override(text)
        _apply_override(data, path, value)
    cfg = _build(PipelineConfig, data, "")
    _validate(cfg)
    return cfg


def load_config(path: str | os.PathLike, overrides: list[str] = ()) -> PipelineConfig:
    """Reads, overrides and validates a YAML config; raises ``ConfigError`` naming what is wrong."""
    path = os.fspath(path)
    from core import fs

    if not fs.exists(path):
        raise ConfigError(f"--config: file not found: {path}")
    try:
        data = _read_yaml(io.StringIO(fs.read_text(path)))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    # Relative paths in the config (data.path, export.base_dir) are relative to the
    # working directory, like every path given on the command line.
    return config_from_dict(data, overrides)


def config_to_dict(cfg: PipelineConfig) -> dict:
    return dataclasses.asdict(cfg)
