"""Record checks: a raw record's values -> typed values, or the reason it is a dead letter.

Checks, in order (the first failure is the record's reason):

  ==================  ==========================================================
  reason              when
  ==================  ==========================================================
  wrong_column_count  a CSV row has more or fewer fields than the header
  unparsable_record   invalid JSON, not an object, not a tf.Example, a list value for a
                      single-valued column; a CSV
                      line the csv module rejects (a field over 131,072 characters, a
                      carriage return inside an unquoted field)
  invalid_encoding    the line is not valid UTF-8, or holds a NUL byte
  missing_value       a numeric, label, weight or passthrough value is missing
  unparsable_value    such a value does not parse as a number
  non_finite_value    such a value is NaN or +-infinity, or beyond float32's range
                      (``1e308``: finite as float64, ``inf`` in the float32 training data)
  invalid_label       a label is not 0/1 (without ``positive_values``)
  label_not_allowed   with ``positive_values``, a label in neither ``positive_values`` nor
                      ``negative_values`` (unless ``negative_values: any``)
  invalid_weight      the example weight is negative
  funnel_violation    the funnel child is 1 where the parent is 0
  invalid_list_value  a list element that is not a string or an integer (a float, a
                      boolean, null, a nested list in JSON), an empty one (``a||b``), or one
                      holding the list's separator (a list where a single value is expected
                      is an ``unparsable_record``)
  list_too_long       a list with more than ``data.max_list_length`` values
  invalid_list_weight a per-value weight (a ``value:weight`` token's, or the weight column's)
                      that is missing or not a finite float32
  list_weight_mismatch a weight column with another number of values than its list
  ==================  ==========================================================

List columns (``data.lists``): a string (CSV, or a one-value ``tf.Example`` feature) is split
by the list's ``separator``, the empty string being the empty list; a list keeps its elements
(integers become their decimal strings); a missing list is empty. Lists longer than
``max_length`` are valid (the transform truncates them); ``RecordSchema.truncated`` names them
so preprocessing can count them.
A missing categorical value is not an error: it becomes ``features.MISSING_CATEGORY``.
Whole-file failures (a truncated or corrupt file) are not reasons: they fail the stage with
an ``InputError`` naming the file (``core.raw_formats.read_file``).

A *typed record* is ``{"source", "position", "values", "features"}``: ``values`` are the raw
strings (the split hashes them), ``features`` maps the raw column names of
``core.feature_specs.raw_tft_feature_spec`` to Python values (str for categorical and group columns,
float for the rest). A *dead letter* is ``{"source", "position", "record", "reason",
"detail"}``; ``detail`` names the field.
"""
from __future__ import annotations

import math
import re

from core.config import NEGATIVE_ANY, WEIGHTS_TOKENS
from core.errors import ConfigError
from core.features import MISSING_CATEGORY
from core.raw_formats import INVALID_ENCODING, UNPARSABLE_RECORD, WRONG_COLUMN_COUNT

MISSING_VALUE = "missing_value"
UNPARSABLE_VALUE = "unparsable_value"
NON_FINITE_VALUE = "non_finite_value"
INVALID_LABEL = "invalid_label"
LABEL_NOT_ALLOWED = "label_not_allowed"
INVALID_WEIGHT = "invalid_weight"
FUNNEL_VIOLATION = "funnel_violation"
INVALID_LIST_VALUE = "invalid_list_value"
LIST_TOO_LONG = "list_too_long"
INVALID_LIST_WEIGHT = "invalid_list_weight"
LIST_WEIGHT_MISMATCH = "list_weight_mismatch"

REASONS = (WRONG_COLUMN_COUNT, UNPARSABLE_RECORD, INVALID_ENCODING, MISSING_VALUE, UNPARSABLE_VALUE,
           NON_FINITE_VALUE, INVALID_LABEL, LABEL_NOT_ALLOWED, INVALID_WEIGHT, FUNNEL_VIOLATION,
           INVALID_LIST_VALUE, LIST_TOO_LONG, INVALID_LIST_WEIGHT, LIST_WEIGHT_MISMATCH)

# The smallest magnitude float32 rounds to infinity (2**128 - 2**103, halfway between
# float32's largest value and 2**128): such a value is finite in Python but not in training.
FLOAT32_OVERFLOW = 2.0 ** 128 - 2.0 ** 103

DEAD_LETTERS = "dead_letters"


class InvalidRecord(ValueError):
    """A record failed a check: ``reason`` is one of ``REASONS``, ``detail`` names the field."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class RecordSchema:
    """What validation needs from the config, as plain picklable data.

    Args:
      cfg: the ``PipelineConfig``.
      require_labels: check and emit labels, weight, group and passthrough columns (training
        data); False for scoring inputs that carry only the features.
    """

    def __init__(self, cfg, require_labels: bool = True):
        d = cfg.data
        self.categorical = list(d.categorical)
        self.numeric = list(d.numeric)
        # (name, separator, max_length, weights: None | "tokens" | column)
        self.lists = [(f.name, f.separator, f.max_length, f.weights) for f in d.lists]
        self.max_list_length = d.max_list_length
        self.require_labels = require_labels
        self.labels = [(t.label, *_label_values(t)) for t in d.tasks] if require_labels else []
        self.weight = d.weight_column if require_labels else None
        self.group = d.group_column if require_labels else None
        self.passthrough = list(d.passthrough) if require_labels else []
        by_task = {t.name: t.label for t in d.tasks}
        self.funnel = (by_task[d.funnel.parent], by_task[d.funnel.child]) if (require_labels and d.funnel) else None

    def typed(self, values: dict) -> dict:
        """The typed features of one record's raw ``values``; raises ``InvalidRecord``."""
        out = {}
        for c in self.categorical:
            v = values.get(c)
            if isinstance(v, list):
                raise InvalidRecord(UNPARSABLE_RECORD, f"field {c!r}: expected a scalar value, got a list")
            out[c] = MISSING_CATEGORY if v is None else v
        for c in self.numeric:
            out[c] = _number(values, c)
        for name, separator, _, weights in self.lists:
            items = self._list(values, name, separator)
            if weights == WEIGHTS_TOKENS:
                for i, token in enumerate(items):
                    _token_weight(name, i, token)
            elif weights:
                w = _weights(values, weights, separator, self.max_list_length)
                if len(w) != len(items):
                    raise InvalidRecord(LIST_WEIGHT_MISMATCH, f"field {weights!r}: {len(w)} weights for the "
                                                              f"{len(items)} values of {name!r}")
                out[weights] = w
            out[name] = items
        for column, positive, negative in self.labels:
            out[column] = _label(values, column, positive, negative)
        if self.weight:
            w = _number(values, self.weight)
            if w < 0:
                raise InvalidRecord(INVALID_WEIGHT, f"field {self.weight!r}: expected a weight >= 0, got {w!r}")
            out[self.weight] = w
        if self.group and self.group not in out:
            v = values.get(self.group)
            if isinstance(v, list):
                raise InvalidRecord(UNPARSABLE_RECORD, f"field {self.group!r}: expected a scalar value, got a list")
            out[self.group] = MISSING_CATEGORY if v is None else v
        for c in self.passthrough:
            if c not in out:
                out[c] = _number(values, c)
        if self.funnel:
            parent, child = self.funnel
            if out[child] == 1.0 and out[parent] == 0.0:
                raise InvalidRecord(FUNNEL_VIOLATION, f"field {child!r} is 1 where its funnel parent {parent!r} is 0")
        return out


    def _list(self, values: dict, name: str, separator: str) -> list[str]:
        raw = values.get(name)
        if raw is None:
            return []
        if isinstance(raw, str):  # a CSV field (or one tf.Example value): the values joined
            items = raw.split(separator) if raw != "" else []
            self._check_length(name, len(items))
            if "" in items:
                raise InvalidRecord(INVALID_LIST_VALUE, f"field {name!r}[{items.index('')}]: an empty value")
            return items
        self._check_length(name, len(raw))
        out = []
        for i, v in enumerate(raw):
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise InvalidRecord(INVALID_LIST_VALUE, f"field {name!r}[{i}]: expected a string or an integer, "
                                                        f"got {type(v).__name__} {v!r}")
            v = str(v)
            if not v:
                raise InvalidRecord(INVALID_LIST_VALUE, f"field {name!r}[{i}]: an empty value")
            if separator in v:
                # The same list in CSV would be more values; a served tf.Example keeps it whole.
                raise InvalidRecord(INVALID_LIST_VALUE, f"field {name!r}[{i}]: {v!r} contains the list separator "
                                                        f"{separator!r}")
            out.append(v)
        return out

    def _check_length(self, name: str, n: int) -> None:
        if n > self.max_list_length:
            raise InvalidRecord(LIST_TOO_LONG, f"field {name!r}: {n} values, more than "
                                               f"data.max_list_length {self.max_list_length}")

    def truncated(self, features: dict) -> list[str]:
        """The list columns of a typed record longer than their ``max_length`` (the transform
        keeps the first, or a sequence's most recent, ``max_length`` values)."""
        return [name for name, _, max_length, _ in self.lists if len(features.get(name, ())) > max_length]


# A token's weight as the transform graph parses it (``tf.strings.to_number``): a plain decimal
# number. Python's float() also takes forms that op rejects ('1_0', non-ASCII digits), which
# would fail the whole transform batch, so those are dead letters here.
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _token_weight(name: str, i: int, token: str) -> float:
    """The weight of a ``value:weight`` token (the transform splits at the last ':')."""
    value, sep, weight = token.rpartition(":")
    if not sep or not value:
        raise InvalidRecord(INVALID_LIST_WEIGHT, f"field {name!r}[{i}]: {token!r} is not a value:weight token")
    if not _DECIMAL.fullmatch(weight):
        raise InvalidRecord(INVALID_LIST_WEIGHT, f"field {name!r}[{i}]: weight {weight!r} of {token!r} is not a "
                                                 f"decimal number")
    return _finite_weight(name, i, weight)


def _finite_weight(name: str, i: int, raw) -> float:
    try:
        if isinstance(raw, bool):
            raise ValueError
        w = float(raw)
    except (TypeError, ValueError):
        raise InvalidRecord(INVALID_LIST_WEIGHT, f"field {name!r}[{i}]: weight {raw!r} is not a number") from None
    if not math.isfinite(w) or abs(w) >= FLOAT32_OVERFLOW:
        raise InvalidRecord(INVALID_LIST_WEIGHT, f"field {name!r}[{i}]: weight {raw!r} is not a finite float32")
    return w


def _weights(values: dict, column: str, separator: str, cap: int) -> list[float]:
    raw = values.get(column)
    if raw is None:
        return []
    items = (raw.split(separator) if raw != "" else []) if isinstance(raw, str) else raw
    if len(items) > cap:
        raise InvalidRecord(LIST_TOO_LONG, f"field {column!r}: {len(items)} weights, more than "
                                           f"data.max_list_length {cap}")
    return [_finite_weight(column, i, w) for i, w in enumerate(items)]


def _number(values: dict, column: str) -> float:
    raw = values.get(column)
    if isinstance(raw, list):
        raise InvalidRecord(UNPARSABLE_RECORD, f"field {column!r}: expected a scalar value, got a list")
    if raw is None:
        raise InvalidRecord(MISSING_VALUE, f"field {column!r} is missing")
    try:
        x = float(raw)
    except ValueError:
        raise InvalidRecord(UNPARSABLE_VALUE, f"field {column!r}: {raw!r} is not a number") from None
    if not math.isfinite(x):
        raise InvalidRecord(NON_FINITE_VALUE, f"field {column!r}: {raw!r} is not finite")
    if abs(x) >= FLOAT32_OVERFLOW:
        raise InvalidRecord(NON_FINITE_VALUE, f"field {column!r}: {raw!r} is not finite as float32 "
                                              f"(beyond +-3.4028235e38)")
    return x


def _label_values(task) -> tuple[set, set | None]:
    """(positive values, negative values or None for ``negative_values: any``) of a task."""
    positive = {v.strip() for v in task.positive_values}
    if not positive:
        return positive, set()
    if task.negative_values == NEGATIVE_ANY:
        return positive, None
    if not task.negative_values:
        raise ConfigError(f"data.tasks ({task.name}): positive_values is set but negative_values is not; list the "
                          f"label values that mean 0 or write negative_values: {NEGATIVE_ANY}")
    return positive, {v.strip() for v in task.negative_values}


def _label(values: dict, column: str, positive: set, negative: set | None) -> float:
    raw = values.get(column)
    if isinstance(raw, list):
        raise InvalidRecord(UNPARSABLE_RECORD, f"label {column!r}: expected a scalar value, got a list")
    if raw is None:
        raise InvalidRecord(MISSING_VALUE, f"label {column!r} is missing")
    if positive:
        value = raw.strip()
        if value in positive:
            return 1.0
        if negative is None or value in negative:
            return 0.0
        raise InvalidRecord(LABEL_NOT_ALLOWED, f"label {column!r}: {raw!r} is in neither positive_values "
                                               f"{sorted(positive)} nor negative_values {sorted(negative)}")
    x = _number(values, column)
    if x not in (0.0, 1.0):
        raise InvalidRecord(INVALID_LABEL, f"label {column!r}: expected 0 or 1, got {raw!r}")
    return x


def dead_letter(record: dict, reason: str, detail: str) -> dict:
    return {"source": record.get("source"), "position": record.get("position"), "record": record.get("raw"),
            "reason": reason, "detail": detail}


