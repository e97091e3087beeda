"""Feature names and the feature info: the one module preprocessing, training and serving share.

The ``tf.io`` specs, Keras inputs and ``tf.Example`` encodings built from these names are in
``core.feature_specs``.

Raw records (what a file row or a serving request carries):
  * categorical columns are strings (an integer id is carried as its decimal string); a
    missing categorical value becomes ``MISSING_CATEGORY`` and is a category of its own;
  * numeric columns are float32 and required: a missing or unparsable value dead-letters
    the record at preprocessing and is a 400 error at serving;
  * label, weight, group and passthrough columns never reach a serving request.

Transformed examples (the TFRecords the model trains on, and the transform graph's output):
  * ``<categorical>``: int64 id in ``[0, cardinality)`` (vocabulary + OOV buckets);
  * ``<numeric>``: float32, z-scored (after log1p where configured);
  * ``<numeric>_bucket``: int64 quantile bucket, when quantile_buckets > 0;
  * ``label_<task>``: float32 0/1;  ``example_weight``: float32 (1.0 without a weight column);
  * ``group_id``: int64 (a hash of the group column) when a group column is configured;
  * ``<passthrough>``: float32 as read (e.g. the synthetic oracle probabilities).

Scored examples (distillation): the transformed features plus ``teacher_logit_<task>``, float32.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from core.config import PipelineConfig

MISSING_CATEGORY = ""
WEIGHT_KEY = "example_weight"
GROUP_KEY = "group_id"
BUCKET_SUFFIX = "_bucket"
TEACHER_LOGIT_PREFIX = "teacher_logit_"


def label_key(task: str) -> str:
    """Name of a task's 0/1 label in the transformed examples."""
    return f"label_{task}"


def teacher_logit_key(task: str) -> str:
    """Name of the float feature holding the teacher's logit for ``task`` in the scored data."""
    return f"{TEACHER_LOGIT_PREFIX}{task}"


@dataclass
class FeatureInfo:
    """What the model needs to know about the transformed features (``feature_info.json``)."""

    categorical: dict[str, int] = field(default_factory=dict)  # name -> cardinality incl. OOV
    numeric: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    passthrough: list[str] = field(default_factory=list)
    has_weight: bool = False
    has_group: bool = False

    def to_dict(self) -> dict:
        return {
            "categorical": dict(self.categorical),
            "numeric": list(self.numeric),
            "tasks": list(self.tasks),
            "passthrough": list(self.passthrough),
            "has_weight": self.has_weight,
            "has_group": self.has_group,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureInfo":
        return cls(**d)

    @property
    def model_inputs(self) -> list[str]:
        """Transformed feature names the model reads (never labels, weights or passthrough)."""
        return list(self.categorical) + list(self.numeric)


def raw_feature_columns(cfg: PipelineConfig) -> list[str]:
    """Raw columns a serving request must carry, in a stable order."""
    return list(cfg.data.categorical) + list(cfg.data.numeric)


def raw_columns(cfg: PipelineConfig) -> list[str]:
    """Every raw column preprocessing reads: features, labels, weight, group, passthrough."""
    cols = raw_feature_columns(cfg)
    extra = [t.label for t in cfg.data.tasks]
    if cfg.data.weight_column:
        extra.append(cfg.data.weight_column)
    if cfg.data.group_column:
        extra.append(cfg.data.group_column)
    extra += list(cfg.data.passthrough)
    for c in extra:
        if c not in cols:
            cols.append(c)
    return cols
