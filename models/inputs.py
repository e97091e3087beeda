"""tf.data input pipeline over the transformed (and teacher-scored) TFRecord shards (parallel reads, shuffle, batch, prefetch)."""
from __future__ import annotations

import glob
import logging
from typing import Sequence

import tensorflow as tf

from core.errors import InputError
from core.feature_specs import scored_feature_spec
from core.features import FeatureInfo

log = logging.getLogger("models.inputs")


def list_shards(file_pattern: str) -> list[str]:
    """Sorted shard paths; raises InputError naming the pattern when nothing matches."""
    files = sorted(glob.glob(file_pattern))
    if not files:
        raise InputError(f"no TFRecord shards match {file_pattern}; run `python -m pipeline preprocess` first")
    return files


def count_examples(file_pattern: str) -> int:
    """Number of records in the gzip shards (reads them once, without parsing)."""
    ds = tf.data.TFRecordDataset(list_shards(file_pattern), compression_type="GZIP", num_parallel_reads=tf.data.AUTOTUNE)
    try:
        return int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1).numpy())
    except tf.errors.OpError as e:  # name the corrupt or truncated shard
        from core.artifact_checks import shard_error

        raise shard_error([file_pattern], e) from None


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of training epoch ``epoch`` (0-based) of a run seeded ``seed``.

    A function of (seed, epoch) only, so epoch e reads the same order whether the run got
    there uninterrupted or resumed from a backup (``training.train_model`` with a callable
    dataset: ``lambda e: make_dataset(..., shuffle=True, seed=epoch_seed(seed, e))``);
    distinct for distinct pairs (epoch < 1,000,003), so two seeds never share an epoch order.
    """
    return int(seed) * 1_000_003 + int(epoch)


def make_dataset(file_pattern: str, feature_info: FeatureInfo, batch_size: int, *,
                 teacher_logits: Sequence[str] = (), shuffle: bool = False, shuffle_buffer: int = 10_000,
                 seed: int | None = None, repeat: bool = False, drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches of parsed transformed examples: dict name -> tensor ``(batch,)``, or
    ``(batch, width)`` for a list (int64 ids padded with ``PAD_ID``), its ``<list>__weights``
    and a ``<n>_ple`` encoding (``FixedLenFeature([width])``; records are batched before
    ``parse_example``, so every batch is dense).

    The one reader of training, distillation and evaluation data. The dict holds the model
    inputs, ``label_<task>``, ``example_weight`` (1.0 when absent), ``group_id`` (if any), the
    passthrough columns and, with ``teacher_logits``, ``teacher_logit_<task>``; the ranker's
    ``compute_loss`` reads labels, weights and teacher logits from it. Under a multi-worker
    strategy every worker reads its share of the records (auto-shard policy ``DATA``).

    Args:
      file_pattern: glob of gzip TFRecord shards: a split (``RunDir.split_pattern(split)``) or
        the teacher-scoring job's output (``scores/<split>-*.tfrecord.gz``).
      feature_info: the feature names, dtypes and widths; only its features are parsed (pass
        ``FeatureInfo.select(...)`` for a model on a feature subset).
      batch_size: examples per batch (>= 1).
      teacher_logits: task names whose float ``teacher_logit_<task>`` feature the records hold
        (the scored examples the student is distilled on); parsed too. Default: none.
      shuffle: shuffle shard order and examples (training); seeded by ``seed``.
      shuffle_buffer: examples in the shuffle buffer.
      repeat: repeat forever (then pass ``steps_per_epoch`` to fit).
      drop_remainder: drop the last partial batch.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
    files = list_shards(file_pattern)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
                       cycle_length=min(4, len(files)), num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=seed is not None or not shuffle)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    spec = scored_feature_spec(feature_info, teacher_logits)  # the transformed spec when no teacher logits
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    # Multi-worker training: shard by record, not by file, so a split with fewer shards
    # than workers (e.g. one validation file) still gives every worker its part.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def features_only(batch: dict, feature_info: FeatureInfo) -> dict:
    """The model inputs of a parsed batch (what the serving model takes)."""
    return {n: batch[n] for n in feature_info.model_inputs}
