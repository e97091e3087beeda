"""Feature names and the feature info: the one module preprocessing, training and serving share.

The ``tf.io`` specs, Keras inputs and ``tf.Example`` encodings built from these names are in
``core.feature_specs``.

Raw records (what a file row or a serving request carries):
  * categorical columns are strings (an integer id is carried as its decimal string); a
    missing categorical value becomes ``MISSING_CATEGORY`` and is a category of its own;
  * list columns (``data.lists``) are lists of strings (``value:weight`` tokens with
    ``weights: tokens``), possibly empty; a missing list is empty; a parallel weight column
    is a list of floats, one per value;
  * numeric columns are float32 and required: a missing or unparsable value dead-letters
    the record at preprocessing and is a 400 error at serving;
  * label, weight, group and passthrough columns never reach a serving request.

Transformed examples (the TFRecords the model trains on, and the transform graph's output):
  * ``<categorical>``: int64 id in ``[0, cardinality)`` (vocabulary + OOV buckets);
  * ``<numeric>``: float32, z-scored (after log1p where configured);
  * ``<numeric>_bucket``: int64 quantile bucket, when quantile_buckets > 0;
  * ``<numeric>_ple``: float32 ``[bins]``, the piecewise-linear encoding over the quantile
    bins, when piecewise_linear_bins > 0;
  * ``<list>``: int64 ``[max_length]``, the list's ids (vocabulary or hash buckets; a shared
    list uses its owner's), left-aligned, padded with ``PAD_ID`` (-1); a sequence in its
    declared order, truncated to its most recent ``max_length`` values;
  * ``<list>__weights``: float32 ``[max_length]``, per-value weights (0 on padding), for a
    list with ``weights``;
  * ``<cross>``: int64 hashed cross id in ``[0, hash_buckets)``;
  * ``label_<task>``: float32 0/1;  ``example_weight``: float32 (1.0 without a weight column);
  * ``group_id``: int64 (a hash of the group column) when a group column is configured;
  * ``<passthrough>``: float32 as read (e.g. the synthetic oracle probabilities).

Scored examples (distillation): the transformed features plus ``teacher_logit_<task>``, float32.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from core.config import PipelineConfig, cross_name, weight_columns

MISSING_CATEGORY = ""
WEIGHT_KEY = "example_weight"
GROUP_KEY = "group_id"
BUCKET_SUFFIX = "_bucket"
TEACHER_LOGIT_PREFIX = "teacher_logit_"
PLE_SUFFIX = "_ple"
LIST_WEIGHTS_SUFFIX = "__weights"
PAD_ID = -1  # the id of a padding slot of a list feature


def list_weights_key(name: str) -> str:
    """Name of a weighted list's per-value weights in the transformed examples."""
    return f"{name}{LIST_WEIGHTS_SUFFIX}"


@dataclass
class ListInfo:
    """A list feature in the transformed data (``FeatureInfo.lists``).

    Attributes:
      cardinality: ids in ``[0, cardinality)`` (those of ``table`` when shared).
      length: the padded width ``max_length``.
      pooling: ``sum`` | ``mean`` | ``sqrtn`` | ``attention``.
      weighted: per-value weights come in ``<name>__weights``.
      table: the feature whose embedding table the list uses (itself unless shared).
      target: with attention, the categorical feature that queries it.
      kind: ``multi_valued`` | ``sequence``.
    """

    cardinality: int
    length: int
    pooling: str = "mean"
    weighted: bool = False
    table: str = ""
    target: str | None = None
    kind: str = "multi_valued"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


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
    lists: dict[str, ListInfo] = field(default_factory=dict)
    # '<numeric>_ple' -> number of bins (its float32 vector's width)
    piecewise: dict[str, int] = field(default_factory=dict)

    tasks: list[str] = field(default_factory=list)
    passthrough: list[str] = field(default_factory=list)
    has_weight: bool = False
    has_group: bool = False

    def to_dict(self) -> dict:
        return {
            "categorical": dict(self.categorical),
            "numeric": list(self.numeric),
            "lists": {k: v.to_dict() for k, v in self.lists.items()},
            "piecewise": dict(self.piecewise),
            "tasks": list(self.tasks),
            "passthrough": list(self.passthrough),
            "has_weight": self.has_weight,
            "has_group": self.has_group,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureInfo":
        d = dict(d)
        d["lists"] = {k: ListInfo(**v) for k, v in d.get("lists", {}).items()}
        return cls(**d)

    @property
    def features(self) -> list[str]:
        """The model features: categorical (incl. crosses and buckets), lists, numerics, PLE."""
        return list(self.categorical) + list(self.lists) + list(self.numeric) + list(self.piecewise)

    @property
    def model_inputs(self) -> list[str]:
        """Transformed tensor names the model reads (never labels, weights or passthrough):
        ``features`` plus ``<list>__weights`` of the weighted lists."""
        names = list(self.categorical)
        for name, info in self.lists.items():
            names.append(name)
            if info.weighted:
                names.append(list_weights_key(name))
        return names + list(self.numeric) + list(self.piecewise)

    def select(self, names) -> "FeatureInfo":
        """This info restricted to the model features ``names`` (empty: all), e.g. a student's
        ``distill.student.features``; tasks, weight, group and passthrough are kept.

        Raises:
          ValueError: a name that is not a model feature.
        """
        names = list(names or [])
        if not names:
            return self
        unknown = [n for n in names if n not in self.features]
        if unknown:
            raise ValueError(f"features {unknown} are not model features; known: {self.features}")
        keep = set(names)
        return FeatureInfo(
            categorical={k: v for k, v in self.categorical.items() if k in keep},
            numeric=[n for n in self.numeric if n in keep],
            lists={k: v for k, v in self.lists.items() if k in keep},
            piecewise={k: v for k, v in self.piecewise.items() if k in keep},
            tasks=list(self.tasks), passthrough=list(self.passthrough),
            has_weight=self.has_weight, has_group=self.has_group)


def raw_feature_columns(cfg: PipelineConfig) -> list[str]:
    """Raw columns a serving request carries, in a stable order: categorical, numeric, lists
    and the lists' weight columns."""
    d = cfg.data
    return list(d.categorical) + list(d.numeric) + [f.name for f in d.lists] + list(weight_columns(d).values())


def raw_columns_for(cfg: PipelineConfig, model_features) -> list[str]:
    """The raw feature columns a model reading ``model_features`` needs (empty: all of
    ``raw_feature_columns``), in ``raw_feature_columns`` order: a categorical, numeric or list
    feature needs its column (a list also its weight column), a cross its columns, a
    ``<n>_bucket`` / ``<n>_ple`` the numeric ``n``, an attention-pooled list its target."""
    all_columns = raw_feature_columns(cfg)
    if not model_features:
        return all_columns
    d = cfg.data
    crosses = {cross_name(c): c.columns for c in d.crosses}
    weights = weight_columns(d)
    targets = {f.name: f.target for f in d.lists if f.target}
    need = set()
    for name in model_features:
        if name in crosses:
            need.update(crosses[name])
        elif name.endswith(BUCKET_SUFFIX) and name[: -len(BUCKET_SUFFIX)] in d.numeric:
            need.add(name[: -len(BUCKET_SUFFIX)])
        elif name.endswith(PLE_SUFFIX) and name[: -len(PLE_SUFFIX)] in d.numeric:
            need.add(name[: -len(PLE_SUFFIX)])
        else:
            need.add(name)
            if name in weights:
                need.add(weights[name])
            if name in targets:
                need.add(targets[name])
    return [c for c in all_columns if c in need]


def list_columns(cfg: PipelineConfig) -> list[str]:
    """Raw columns holding a list of strings (``data.lists``)."""
    return [f.name for f in cfg.data.lists]


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
