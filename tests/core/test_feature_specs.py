"""The feature contract (core/feature_specs.py): every spec from one small schema, and that they agree."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from core import feature_specs as fs
from core.config import TaskConfig, config_from_dict, load_config
from core.features import MISSING_CATEGORY, FeatureInfo, teacher_logit_key
from tests.fakes.transformed_run import REPO, TINY

DATA = {"source": "files", "path": "x.csv", "categorical": ["device", "user"], "numeric": ["price", "age"],
        "tasks": [{"name": "click", "label": "clicked"}, {"name": "conversion", "label": "converted"}],
        "weight_column": "w", "group_column": "session", "passthrough": ["oracle_p"]}
INFO = FeatureInfo(categorical={"device": 4, "user": 9, "price_bucket": 5}, numeric=["price", "age"],
                   tasks=["click", "conversion"], passthrough=["oracle_p"], has_weight=True, has_group=True)


def _cfg(**data):
    return config_from_dict({"data": {**DATA, **data}})


def _summary(spec):
    """name -> (dtype name, shape, default) of a FixedLenFeature spec."""
    assert all(isinstance(f, tf.io.FixedLenFeature) for f in spec.values())
    return {k: (f.dtype.name, list(f.shape), f.default_value) for k, f in spec.items()}


def test_raw_tft_spec_types_every_column_preprocessing_reads():
    assert _summary(fs.raw_tft_feature_spec(_cfg())) == {
        "device": ("string", [], None), "user": ("string", [], None),
        "price": ("float32", [], None), "age": ("float32", [], None),
        "clicked": ("float32", [], None), "converted": ("float32", [], None),
        "w": ("float32", [], None), "session": ("string", [], None), "oracle_p": ("float32", [], None)}
    # A group column that is also a feature keeps the feature's dtype; no weight: no weight column.
    spec = fs.raw_tft_feature_spec(_cfg(group_column="user", weight_column=None))
    assert spec["user"].dtype == tf.string and "w" not in spec and "session" not in spec


def test_transformed_spec_holds_ids_numerics_labels_weight_group_passthrough():
    assert _summary(fs.transformed_feature_spec(INFO)) == {
        "device": ("int64", [], None), "user": ("int64", [], None), "price_bucket": ("int64", [], None),
        "price": ("float32", [], None), "age": ("float32", [], None),
        "label_click": ("float32", [], None), "label_conversion": ("float32", [], None),
        "example_weight": ("float32", [], 1.0), "group_id": ("int64", [], None), "oracle_p": ("float32", [], None)}
    no_group = FeatureInfo(categorical={"device": 4}, numeric=[], tasks=["click"])
    assert list(fs.transformed_feature_spec(no_group)) == ["device", "label_click", "example_weight"]


def test_scored_spec_is_the_transformed_spec_plus_one_teacher_logit_per_task():
    transformed = _summary(fs.transformed_feature_spec(INFO))
    scored = _summary(fs.scored_feature_spec(INFO, INFO.tasks))
    extra = {k: v for k, v in scored.items() if k not in transformed}
    assert {k: scored[k] for k in transformed} == transformed
    assert extra == {teacher_logit_key(t): ("float32", [], None) for t in INFO.tasks}
    assert list(extra) == ["teacher_logit_click", "teacher_logit_conversion"]
    assert _summary(fs.scored_feature_spec(INFO, [])) == transformed


def test_serving_spec_holds_features_only_with_a_missing_category_default():
    assert _summary(fs.serving_feature_spec(_cfg())) == {
        "device": ("string", [], MISSING_CATEGORY), "user": ("string", [], MISSING_CATEGORY),
        "price": ("float32", [], None), "age": ("float32", [], None)}


def test_raw_example_parses_with_the_serving_spec_to_the_same_values():
    cfg = _cfg()
    typed = {"device": "ios", "user": "u-\u00e9", "price": 2.5, "age": -1.0, "clicked": 1.0, "w": 3.0, "session": "s"}
    serialized = fs.encode_raw_example(cfg, typed)
    parsed = tf.io.parse_example([serialized, serialized], fs.serving_feature_spec(cfg))
    assert sorted(parsed) == ["age", "device", "price", "user"]  # labels, weight, group left out
    assert [v.decode("utf-8") for v in parsed["user"].numpy()] == ["u-\u00e9"] * 2
    assert parsed["device"].numpy().tolist() == [b"ios", b"ios"]
    np.testing.assert_array_equal(parsed["price"].numpy(), [2.5, 2.5])
    np.testing.assert_array_equal(parsed["age"].numpy(), [-1.0, -1.0])
    # A request without a categorical parses it as the missing category; without a numeric, fails.
    numerics_only = fs.encode_raw_example(config_from_dict({"data": {**DATA, "categorical": []}}), typed)
    parsed = tf.io.parse_example([numerics_only], fs.serving_feature_spec(cfg))
    assert parsed["device"].numpy().tolist() == [MISSING_CATEGORY.encode()]
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.parse_example([fs.encode_raw_example(config_from_dict({"data": {**DATA, "numeric": []}}), typed)],
                            fs.serving_feature_spec(cfg))


def test_teacher_logits_added_to_a_transformed_example_parse_with_the_scored_spec():
    info = FeatureInfo(categorical={"device": 4}, numeric=["price"], tasks=["click", "conversion"])
    example = tf.train.Example(features=tf.train.Features(feature={
        "device": tf.train.Feature(int64_list=tf.train.Int64List(value=[3])),
        "price": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5])),
        "label_click": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0])),
        "label_conversion": tf.train.Feature(float_list=tf.train.FloatList(value=[0.0]))})).SerializeToString()
    scored = fs.add_teacher_logits(example, {"click": 1.25, "conversion": -2.0})
    parsed = tf.io.parse_example([scored], fs.scored_feature_spec(info, info.tasks))
    assert parsed["teacher_logit_click"].numpy().tolist() == [1.25]
    assert parsed["teacher_logit_conversion"].numpy().tolist() == [-2.0]
    assert parsed["device"].numpy().tolist() == [3] and parsed["example_weight"].numpy().tolist() == [1.0]
    # The teacher scorer's model-input spec parses the same records.
    inputs = tf.io.parse_example([scored], fs.model_input_spec(fs.model_input_dtypes(info)))
    assert sorted(inputs) == ["device", "price"] and inputs["device"].dtype == tf.int64


def test_model_inputs_dtypes_keras_inputs_and_dummy_batch_agree():
    assert fs.model_input_dtypes(INFO) == {"device": "int64", "user": "int64", "price_bucket": "int64",
                                           "price": "float32", "age": "float32"}
    assert list(fs.model_input_dtypes(INFO)) == INFO.model_inputs
    inputs = fs.serving_keras_inputs(INFO)
    assert {k: (v.dtype.name, v.shape.as_list()) for k, v in inputs.items()} == {
        k: (d, [None]) for k, d in fs.model_input_dtypes(INFO).items()}
    batch = fs.dummy_batch(INFO, 3)
    assert {k: (v.dtype.name, v.shape.as_list()) for k, v in batch.items()} == {
        k: (d, [3]) for k, d in fs.model_input_dtypes(INFO).items()}
    assert all(not np.any(v.numpy()) for v in batch.values())


def test_dummy_batch_of_a_raw_spec_holds_empty_strings_and_zeros():
    batch = fs.dummy_batch(fs.serving_feature_spec(_cfg()), 1)
    assert batch["device"].numpy().tolist() == [b""] and batch["device"].dtype == tf.string
    assert batch["price"].numpy().tolist() == [0.0] and batch["price"].dtype == tf.float32
    specs = fs.dummy_batch({"a": tf.TensorSpec([None], tf.int64), "b": "float32"})
    assert specs["a"].numpy().tolist() == [0, 0] and specs["b"].dtype == tf.float32


def test_dummy_batch_feeds_a_built_ranker_and_its_serving_model():
    from models.builder import build_ranker

    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), TINY)
    info = FeatureInfo(categorical={"device": 4, "user": 9}, numeric=["price"], tasks=["click", "conversion"])
    tasks = [TaskConfig(name="click", label="c"), TaskConfig(name="conversion", label="v")]
    model = build_ranker(cfg.model, info, tasks)
    batch = fs.dummy_batch(info, 3)
    out = model(batch, training=False)
    assert out["click_probability"].shape[0] == 3
    serving = model.serving_model()
    assert {k: v.dtype for k, v in model.serving_inputs().items()} == {k: v.dtype for k, v in fs.serving_keras_inputs(info).items()}
    served = serving(batch)
    np.testing.assert_allclose(served["click_probability"].numpy().reshape(-1),
                               out["click_probability"].numpy().reshape(-1), rtol=1e-6)


def test_spec_json_names_dtype_shape_and_default():
    got = fs.feature_spec_to_json(fs.serving_feature_spec(_cfg()))
    assert got == {"device": {"dtype": "string", "shape": [], "default_value": ""},
                   "user": {"dtype": "string", "shape": [], "default_value": ""},
                   "price": {"dtype": "float32", "shape": []}, "age": {"dtype": "float32", "shape": []}}
    assert json.loads(json.dumps(got)) == got
    assert fs.feature_spec_to_json(fs.transformed_feature_spec(INFO))["example_weight"] == {
        "dtype": "float32", "shape": [], "default_value": 1.0}


def test_importing_the_contract_does_not_load_tensorflow():
    code = ("import sys, core.feature_specs as fs; from core.features import FeatureInfo; "
            "fs.model_input_dtypes(FeatureInfo(categorical={'a': 2})); "
            "print([m for m in ('tensorflow', 'tf_keras') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- list and PLE features

from core.features import PAD_ID, ListInfo, list_weights_key  # noqa: E402

LIST_INFO = FeatureInfo(categorical={"item": 7}, numeric=["price"],
                        lists={"hist": ListInfo(cardinality=7, length=3, pooling="attention", table="item",
                                                target="item", kind="sequence"),
                               "tags": ListInfo(cardinality=5, length=2, weighted=True, table="tags")},
                        piecewise={"price_ple": 4}, tasks=["click"])


def _list_cfg():
    return _cfg(lists=[{"name": "hist", "kind": "sequence", "shares": "device"},
                       {"name": "tags", "weights": "tag_w"}])


def test_list_columns_are_var_len_in_raw_specs_and_padded_in_the_transformed_one():
    cfg = _list_cfg()
    for spec in (fs.raw_tft_feature_spec(cfg), fs.serving_feature_spec(cfg)):
        assert isinstance(spec["hist"], tf.io.VarLenFeature) and spec["hist"].dtype == tf.string
        assert isinstance(spec["tag_w"], tf.io.VarLenFeature) and spec["tag_w"].dtype == tf.float32
    spec = fs.transformed_feature_spec(LIST_INFO)
    assert (spec["hist"].dtype, list(spec["hist"].shape)) == (tf.int64, [3])
    assert (spec[list_weights_key("tags")].dtype, list(spec["tags__weights"].shape)) == (tf.float32, [2])
    assert (spec["price_ple"].dtype, list(spec["price_ple"].shape)) == (tf.float32, [4])
    assert LIST_INFO.model_inputs == ["item", "hist", "tags", "tags__weights", "price", "price_ple"]
    assert FeatureInfo.from_dict(json.loads(json.dumps(LIST_INFO.to_dict()))) == LIST_INFO


def test_serving_spec_of_a_feature_subset_holds_only_its_columns():
    from core.features import raw_columns_for
    cfg = _list_cfg()
    columns = raw_columns_for(cfg, ["tags", "price"])
    assert columns == ["price", "tags", "tag_w"]
    assert list(fs.serving_feature_spec(cfg, columns)) == columns


def test_a_raw_example_with_lists_parses_with_the_serving_spec():
    cfg = _list_cfg()
    typed = {"device": "d", "user": "u", "price": 1.0, "age": 2.0, "hist": ["a", "b", "c"], "tags": [], "tag_w": []}
    parsed = tf.io.parse_example([fs.encode_raw_example(cfg, typed)], fs.serving_feature_spec(cfg))
    assert parsed["hist"].values.numpy().tolist() == [b"a", b"b", b"c"]
    assert parsed["tags"].values.shape[0] == 0 and parsed["tag_w"].values.shape[0] == 0


def test_model_input_types_keras_inputs_and_dummy_batch_agree_for_lists():
    types = fs.model_input_types(LIST_INFO)
    assert types["hist"] == ("int64", [3]) and types["price_ple"] == ("float32", [4]) and types["item"] == ("int64", [])
    inputs = fs.serving_keras_inputs(LIST_INFO)
    assert {k: v.shape.as_list() for k, v in inputs.items()} == {k: [None] + s for k, (_, s) in types.items()}
    batch = fs.dummy_batch(LIST_INFO, 2)
    assert batch["hist"].numpy().tolist() == [[PAD_ID] * 3] * 2  # empty lists
    assert batch["price_ple"].shape == (2, 4) and batch["item"].shape == (2,)
    parsing = fs.model_input_spec(types)
    assert list(parsing["tags__weights"].shape) == [2]
    raw = fs.dummy_batch(fs.serving_feature_spec(_list_cfg()), 3)
    assert isinstance(raw["hist"], tf.sparse.SparseTensor) and raw["hist"].dense_shape.numpy().tolist() == [3, 0]
    assert fs.feature_spec_to_json(fs.serving_feature_spec(_list_cfg()))["hist"] == {
        "dtype": "string", "shape": [None], "var_len": True}


def test_select_keeps_the_chosen_features():
    student = LIST_INFO.select(["tags", "price"])
    assert student.model_inputs == ["tags", "tags__weights", "price"]
    assert student.tasks == ["click"]
    assert LIST_INFO.select([]) is LIST_INFO
    with pytest.raises(ValueError, match="not model features"):
        LIST_INFO.select(["nope"])
