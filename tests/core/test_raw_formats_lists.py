"""List values in raw records (core/raw_formats.py): every format hands its lists to the record checks as lists."""
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from core import raw_formats


def test_jsonl_lists_keep_their_elements_and_objects_are_unparsable():
    lines = [json.dumps({"hist": ["i1", 2, 1.5, None], "item": "i1"}), json.dumps({"hist": {"a": 1}})]
    recs = list(raw_formats.read_jsonl(io.BytesIO("\n".join(lines).encode()), "f.jsonl"))
    assert recs[0]["values"] == {"hist": ["i1", 2, 1.5, None], "item": "i1"}  # the checks name the bad element
    assert recs[1]["error"][0] == raw_formats.UNPARSABLE_RECORD and "object" in recs[1]["error"][1]


def test_parquet_list_columns_are_lists(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"hist": [["a", "b"], [], None], "n": [1, 2, 3]}), path)
    with open(path, "rb") as f:
        recs = list(raw_formats.read_parquet(f, str(path)))
    assert [r["values"]["hist"] for r in recs] == [["a", "b"], [], None]
    assert recs[0]["values"]["n"] == "1"


def test_tf_example_features_with_several_values_are_lists():
    ex = tf.train.Example(features=tf.train.Features(feature={
        "hist": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a", b"b"])),
        "ids": tf.train.Feature(int64_list=tf.train.Int64List(value=[3, 4, 5])),
        "one": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"])),
        "none": tf.train.Feature(bytes_list=tf.train.BytesList(value=[]))}))
    values, error = raw_formats.example_values(ex.SerializeToString())
    assert error is None
    assert values == {"hist": ["a", "b"], "ids": [3, 4, 5], "one": "x", "none": None}
