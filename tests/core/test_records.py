"""List record checks (core/records.py): how a list column's raw value becomes a typed list or a dead letter."""
import pytest

from core.config import config_from_dict
from core.records import (INVALID_LIST_VALUE, INVALID_LIST_WEIGHT, LIST_TOO_LONG, LIST_WEIGHT_MISMATCH,
                          UNPARSABLE_RECORD, InvalidRecord, RecordSchema)

LISTS = [
    {"name": "hist", "kind": "sequence", "shares": "item", "pooling": "attention", "target": "item", "max_length": 3},
    {"name": "tags", "weights": "tokens", "max_length": 4, "separator": ";"},
    {"name": "basket", "weights": "basket_w", "max_length": 4},
]
BASE = {"item": "i1", "price": "1.5", "click": "1"}


def _schema(**data):
    cfg = config_from_dict({"data": {
        "source": "files", "path": "x", "categorical": ["item"], "numeric": ["price"], "lists": LISTS,
        "max_list_length": 6, "tasks": [{"name": "click", "label": "click"}], **data}})
    return RecordSchema(cfg)


def _typed(**values):
    return _schema().typed({**BASE, **values})


def test_delimited_strings_lists_and_missing_become_typed_lists():
    out = _typed(hist="i1|i2", tags="t1:0.5;t2:2", basket=[3, "b"], basket_w="0|1.5")
    assert out["hist"] == ["i1", "i2"]
    assert out["tags"] == ["t1:0.5", "t2:2"]  # tokens are kept whole: the transform graph splits them
    assert out["basket"] == ["3", "b"] and out["basket_w"] == [0.0, 1.5]  # integers as decimal strings
    empty = _typed(hist="", tags=None)
    assert empty["hist"] == [] and empty["tags"] == [] and empty["basket"] == [] and empty["basket_w"] == []


def test_lists_longer_than_max_length_are_valid_and_named_by_truncated():
    schema = _schema()
    out = schema.typed({**BASE, "hist": "a|b|c|d"})
    assert out["hist"] == ["a", "b", "c", "d"]
    assert schema.truncated(out) == ["hist"]
    assert schema.truncated(schema.typed({**BASE, "hist": "a|b|c"})) == []


@pytest.mark.parametrize("values, reason, field", [
    ({"hist": ["i1", 1.5]}, INVALID_LIST_VALUE, "'hist'[1]"),  # a float in a JSON list
    ({"hist": ["i1", True]}, INVALID_LIST_VALUE, "'hist'[1]"),
    ({"hist": ["i1", None]}, INVALID_LIST_VALUE, "'hist'[1]"),
    ({"hist": [["i1"]]}, INVALID_LIST_VALUE, "'hist'[0]"),  # nested
    ({"hist": "i1||i2"}, INVALID_LIST_VALUE, "'hist'[1]"),  # an empty value
    ({"item": ["i1", "i2"]}, UNPARSABLE_RECORD, "'item'"),  # a list for a single-valued column
    ({"hist": ["i1", "i2|i3"]}, INVALID_LIST_VALUE, "'hist'[1]"),  # would be two values in CSV
    ({"price": ["1", "2"]}, UNPARSABLE_RECORD, "'price'"),
    ({"hist": "a|b|c|d|e|f|g"}, LIST_TOO_LONG, "'hist'"),  # over data.max_list_length (6)
    ({"tags": "t1"}, INVALID_LIST_WEIGHT, "'tags'[0]"),  # no ':weight'
    ({"tags": "t1:1;t2:x"}, INVALID_LIST_WEIGHT, "'tags'[1]"),
    ({"tags": "t1:inf"}, INVALID_LIST_WEIGHT, "'tags'[0]"),
    ({"tags": "t1:1e39"}, INVALID_LIST_WEIGHT, "'tags'[0]"),  # beyond float32
    ({"basket": "a|b", "basket_w": "1"}, LIST_WEIGHT_MISMATCH, "'basket_w'"),
    ({"basket": "a", "basket_w": "nan"}, INVALID_LIST_WEIGHT, "'basket_w'[0]"),
    ({"basket": "a"}, LIST_WEIGHT_MISMATCH, "'basket_w'"),  # values without their weights
])
def test_bad_lists_are_dead_letters_naming_the_field(values, reason, field):
    with pytest.raises(InvalidRecord) as e:
        _typed(**values)
    assert e.value.reason == reason
    assert field in e.value.detail
