"""Typed records -> Arrow RecordBatches in TFXIO's tf.Example layout, the input TFT reads fastest.

TF Transform accepts instance dicts, but then encodes every one as a ``tf.Example`` and
decodes it again. ``ToRecordBatches`` builds the columnar batches directly: each column a
``large_list`` of one value per row (the layout ``TFExampleBeamRecord`` produces), or, for a
list column (``data.lists``, typed ``list[str]``) and its weight column (``list[float]``), of
that row's values (``large_list<large_binary>`` / ``large_list<float>``, any length, an empty
list an empty row: TFXIO's ``VarLenFeature`` layout, a ``SparseTensor`` in the
``preprocessing_fn``). ``AnalyzeDataset`` and ``TransformDataset`` get
``(record_batches, raw_tensor_adapter_config(cfg))``.

Example::

    batches = typed | "ToRecordBatches" >> ToRecordBatches(cfg)
    transform_fn = (batches, raw_tensor_adapter_config(cfg)) | tft_beam.AnalyzeDataset(fn)
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow as tf
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.tfxio import tf_example_record

from core.feature_specs import raw_tft_feature_spec

_BATCH_MIN, _BATCH_MAX = 256, 4096


def raw_tfxio(cfg) -> tf_example_record.TFExampleBeamRecord:
    """The TFXIO describing the raw typed records (schema from ``raw_tft_feature_spec``)."""
    schema = schema_utils.schema_from_feature_spec(raw_tft_feature_spec(cfg))
    return tf_example_record.TFExampleBeamRecord(physical_format="inmem", schema=schema)


def raw_tensor_adapter_config(cfg):
    return raw_tfxio(cfg).TensorAdapterConfig()


class _ToBatchFn:
    """Builds one RecordBatch from a list of typed feature dicts (private: use ``ToRecordBatches``)."""

    def __init__(self, arrow_schema: pa.Schema, var_len: set):
        self._schema = arrow_schema
        self._var_len = var_len

    def __call__(self, rows: list[dict]) -> pa.RecordBatch:
        n = len(rows)
        offsets = pa.array(np.arange(n + 1, dtype=np.int64))
        arrays = []
        for field in self._schema:
            name, value_type = field.name, field.type.value_type
            if name in self._var_len:
                lists = [r[name] for r in rows]
                lengths = np.fromiter((len(v) for v in lists), dtype=np.int64, count=n)
                row_offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
                flat = [v for values in lists for v in values]
                if pa.types.is_large_binary(value_type):
                    values = pa.array(flat, type=value_type)
                else:
                    values = pa.array(np.asarray(flat, dtype=value_type.to_pandas_dtype()), type=value_type)
                arrays.append(pa.LargeListArray.from_arrays(row_offsets, values))
                continue
            if pa.types.is_large_binary(value_type):
                values = pa.array([r[name] for r in rows], type=value_type)
            else:
                values = pa.array(np.fromiter((r[name] for r in rows), dtype=value_type.to_pandas_dtype(), count=n))
            arrays.append(pa.LargeListArray.from_arrays(offsets, values))
        return pa.RecordBatch.from_arrays(arrays, schema=self._schema)


class ToRecordBatches(beam.PTransform):
    """Typed feature dicts (``validation`` records' ``features``) -> ``pa.RecordBatch``es.

    Args:
      cfg: the ``PipelineConfig`` (its raw TFT feature spec fixes columns and types).
    """

    def __init__(self, cfg):
        super().__init__()
        var_len = set()
        for name, spec in raw_tft_feature_spec(cfg).items():
            if spec.dtype not in (tf.string, tf.float32):
                raise ValueError(f"ToRecordBatches: unsupported dtype {spec.dtype.name} for column {name!r}")
            if isinstance(spec, tf.io.VarLenFeature):
                var_len.add(name)
        self._fn = _ToBatchFn(raw_tfxio(cfg).ArrowSchema(), var_len)

    def expand(self, features):
        return (features
                | "Batch" >> beam.BatchElements(min_batch_size=_BATCH_MIN, max_batch_size=_BATCH_MAX)
                | "ToRecordBatch" >> beam.Map(self._fn))
