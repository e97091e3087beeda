"""tf.data input pipeline over the transformed (and teacher-scored) TFRecord shards: streamed
(parallel reads, shuffle, batch, parse, prefetch) or from the split held in memory
(``load_split``: decompressed and parsed once, the same batches every epoch after)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import tensorflow as tf

from core import fs
from core.errors import InputError
from core.feature_specs import scored_feature_spec
from core.features import FeatureInfo

log = logging.getLogger("models.inputs")


def list_shards(file_pattern: str) -> list[str]:
    """Sorted shard paths; raises InputError naming the pattern when nothing matches."""
    files = fs.glob(file_pattern)
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


@dataclass(frozen=True)
class InMemorySplit:
    """A split's parsed examples held in memory, shard by shard (``load_split``).

    ``columns`` maps every parsed name to one tensor of all rows, ``(rows,)`` or ``(rows,
    width)``, the shards' rows one after the other in ``files`` order: shard ``i`` holds
    rows ``[bounds[i], bounds[i + 1])``. ``make_dataset`` reads it in the order it reads
    the shards themselves.
    """

    files: tuple
    bounds: tuple
    columns: dict
    teacher_logits: tuple = ()

    @property
    def rows(self) -> int:
        return int(self.bounds[-1])

    @property
    def nbytes(self) -> int:
        return int(sum(int(np.prod(v.shape)) * v.dtype.size for v in self.columns.values()))


def example_bytes(feature_info: FeatureInfo, teacher_logits: Sequence[str] = ()) -> int:
    """Bytes one parsed example takes in memory (every feature of the spec at its width)."""
    spec = scored_feature_spec(feature_info, teacher_logits)
    return int(sum(int(np.prod(f.shape or [1])) * f.dtype.size for f in spec.values()))


def load_split(file_pattern: str, feature_info: FeatureInfo, teacher_logits: Sequence[str] = (),
               batch_size: int = 8192) -> InMemorySplit:
    """Reads, decompresses and parses every shard of ``file_pattern`` once into memory.

    Args:
      file_pattern: glob of gzip TFRecord shards (as ``make_dataset``).
      feature_info: the features to parse (``FeatureInfo.select`` for a subset).
      teacher_logits: tasks whose ``teacher_logit_<task>`` the records hold.
      batch_size: records parsed per call while loading.

    Raises:
      InputError: nothing matches, or a corrupt or truncated shard (named).
    """
    files = list_shards(file_pattern)
    spec = scored_feature_spec(feature_info, teacher_logits)
    parts, bounds = {n: [] for n in spec}, [0]
    try:
        for f in files:
            rows = 0
            ds = tf.data.TFRecordDataset(f, compression_type="GZIP").batch(batch_size)
            for batch in ds.map(lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE,
                                deterministic=True).prefetch(2):
                for n, v in batch.items():
                    parts[n].append(v)
                rows += int(batch[next(iter(spec))].shape[0])
            bounds.append(bounds[-1] + rows)
    except tf.errors.OpError as e:  # name the corrupt or truncated shard
        from core.artifact_checks import shard_error

        raise shard_error([file_pattern], e) from None
    columns = {}
    for n in list(parts):  # one column at a time: the batches and their concatenation, never the split twice
        v = parts.pop(n)
        columns[n] = tf.concat(v, axis=0) if v else tf.zeros((0, *spec[n].shape), spec[n].dtype)
    return InMemorySplit(tuple(files), tuple(bounds), columns, tuple(teacher_logits))


def split_source(file_pattern: str, feature_info: FeatureInfo, cache: str, cache_max_mb: int, *,
                 rows: int | None = None, teacher_logits: Sequence[str] = (), multi_worker: bool = False,
                 what: str = "split") -> Union[str, InMemorySplit]:
    """What ``make_dataset`` reads a split from, as ``training.cache`` says: the shards
    (``file_pattern``) or the split held in memory (``load_split``). Logs the choice.

    Args:
      file_pattern: the split's gzip shards.
      feature_info: the features the batches parse.
      cache: ``"memory"`` (always hold it), ``"stream"`` (never) or ``"auto"``: hold it when
        it takes at most ``cache_max_mb`` MiB (``rows`` x ``example_bytes``), and stream
        under a multi-worker strategy (where every worker reads its share of the records).
      cache_max_mb: the size limit of ``"auto"``.
      rows: the split's examples if known (e.g. preprocess's ``stats.json``); None: counted.
      teacher_logits: tasks whose teacher logits the records hold.
      multi_worker: training runs under ``MultiWorkerMirroredStrategy``.
      what: the split's name in the log line.
    """
    if cache == "stream" or (cache == "auto" and multi_worker):
        return file_pattern
    mib = (rows if rows is not None else count_examples(file_pattern)) * example_bytes(feature_info, teacher_logits) / 2**20
    if cache == "auto" and mib > cache_max_mb:
        log.info("%s: streamed from its shards (%.0f MiB parsed > training.cache_max_mb=%d)", what, mib, cache_max_mb)
        return file_pattern
    split = load_split(file_pattern, feature_info, teacher_logits)
    log.info("%s: %d examples held in memory (%.0f MiB, training.cache=%s)", what, split.rows, split.nbytes / 2**20, cache)
    return split


def make_dataset(source: Union[str, InMemorySplit], feature_info: FeatureInfo, batch_size: int, *,
                 teacher_logits: Sequence[str] = (), shuffle: bool = False, shuffle_buffer: int = 10_000,
                 seed: int | None = None, repeat: bool = False, drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches of parsed transformed examples: dict name -> tensor ``(batch,)``, or
    ``(batch, width)`` for a list (int64 ids padded with ``PAD_ID``), its ``<list>__weights``
    and a ``<n>_ple`` encoding (fixed-length features of that width; records are batched before
    ``parse_example``, so every batch is dense).

    The one reader of training, distillation and evaluation data. The dict holds the model
    inputs, ``label_<task>``, ``example_weight`` (1.0 when absent), ``group_id`` (if any), the
    passthrough columns and, with ``teacher_logits``, ``teacher_logit_<task>``; the ranker's
    ``compute_loss`` reads labels, weights and teacher logits from it. Under a multi-worker
    strategy every worker reads its share of the records (auto-shard policy ``DATA``).

    From an ``InMemorySplit`` the batches are exactly those of its shards streamed with the
    same arguments (the same shard shuffle, interleave and example shuffle run on row
    indices, and each batch gathers its rows), without decompressing or parsing anything.

    Args:
      source: glob of gzip TFRecord shards: a split (``RunDir.split_pattern(split)``) or
        the teacher-scoring job's output (``scores/<split>-*.tfrecord.gz``); or those shards
        held in memory (``load_split``, with the same features and teacher logits).
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
    spec = scored_feature_spec(feature_info, teacher_logits)  # the transformed spec when no teacher logits
    if isinstance(source, InMemorySplit):
        missing = sorted(set(spec) - set(source.columns))
        if missing:
            raise ValueError(f"the in-memory split lacks {missing}; load it with the same features and teacher logits")
        starts, stops = tf.constant(source.bounds[:-1], tf.int64), tf.constant(source.bounds[1:], tf.int64)
        ds = tf.data.Dataset.range(len(source.files))

        def shard(i):
            return tf.data.Dataset.range(starts[i], stops[i])
    else:
        ds = tf.data.Dataset.from_tensor_slices(list_shards(source))

        def shard(f):
            return tf.data.TFRecordDataset(f, compression_type="GZIP")
    n_files = int(ds.cardinality().numpy())
    if shuffle:
        ds = ds.shuffle(n_files, seed=seed, reshuffle_each_iteration=True)
    # Shards on a remote filesystem (gs://, s3://, hdfs://) are read in parallel to hide the
    # latency; local ones in the pipeline's thread (parallel interleave costs ~30 us per
    # record, more than reading it). Both give the same order (sequential interleave, or
    # parallel interleave with `deterministic`; unseeded shuffling drops that guarantee).
    parallel = isinstance(source, str) and _remote(source)
    ds = ds.interleave(shard, cycle_length=min(4, n_files), num_parallel_calls=tf.data.AUTOTUNE if parallel else None,
                       deterministic=(seed is not None or not shuffle) if parallel else None)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if isinstance(source, InMemorySplit):
        # Its length is left unknown, as the shards': Keras re-creates the iterator of a
        # dataset whose length equals steps_per_epoch at every epoch, the first one included,
        # so a reshuffling split would train on its second order, not its first.
        columns = {n: source.columns[n] for n in spec}
        ds = ds.map(lambda rows: {n: tf.gather(v, rows) for n, v in columns.items()},
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = ds.map(lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
    # Multi-worker training: shard by record, not by file, so a split with fewer shards
    # than workers (e.g. one validation file) still gives every worker its part.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    if isinstance(source, InMemorySplit):
        # tf.data's default graph rewrites serialize the pipeline, the captured columns with
        # it: a copy of the split per iterator (+229 MB for 3 iterators of a 225 MB split).
        options.experimental_optimization.apply_default_optimizations = False
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _remote(path: str) -> bool:
    """True for a path on a filesystem other than the local one (``gs://``, ``s3://`` ...)."""
    return "://" in path and not path.startswith("file://")


def features_only(batch: dict, feature_info: FeatureInfo) -> dict:
    """The model inputs of a parsed batch (what the serving model takes)."""
    return {n: batch[n] for n in feature_info.model_inputs}
