"""Pieces of the list / hash / cross / PLE preprocessing without a Beam run: the graph helpers,
the Arrow batches TFT reads, the stats of truncated lists, the fake transformed run with lists."""
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from core.records import InvalidRecord, RecordSchema
from pipeline.preprocess import stats as preprocess_stats
from pipeline.preprocess.record_batches import ToRecordBatches, raw_tfxio
from pipeline.preprocess.transform import (CROSS_SEPARATOR, cross_ids, hash_ids, piecewise_linear, ple_epsilon,
                                           split_weight_tokens)
from tests.pipeline.preprocess import list_data as ld


def test_piecewise_linear_ramps_steps_and_clips():
    edges = tf.constant([0.0, 0.0, 0.0, 1.0, 3.0])  # two zero-width bins at 0 (coinciding quantiles)
    x = tf.constant([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 9.0])
    got = piecewise_linear(x, edges, 4).numpy()
    np.testing.assert_allclose(got, [
        [0, 0, 0, 0],      # below the training minimum: all zeros (clipped)
        [1, 1, 0, 0],      # at the merged boundary: the zero-width bins step to 1
        [1, 1, 0.5, 0],
        [1, 1, 1, 0],
        [1, 1, 1, 0.5],
        [1, 1, 1, 1],
        [1, 1, 1, 1],      # above the maximum: all ones (clipped)
    ], atol=1e-6)
    constant = piecewise_linear(tf.constant([4.0, 5.0]), tf.fill([4], 4.0), 3).numpy()  # a constant column
    np.testing.assert_allclose(constant, [[1, 1, 1], [1, 1, 1]])
    assert ple_epsilon(4) == 0.01 and ple_epsilon(200) == 1 / 200


def test_weight_tokens_split_at_the_last_colon():
    values, weights = split_weight_tokens(tf.constant(["t3:0.8", "a:b:0.25", "x:1e-2", "y:+3"]))
    assert [v.decode() for v in values.numpy()] == ["t3", "a:b", "x", "y"]
    np.testing.assert_allclose(weights.numpy(), [0.8, 0.25, 0.01, 3.0], rtol=1e-6)


def test_an_empty_token_what_tf_transform_feeds_for_an_absent_list_gets_weight_zero():
    """A model that does not read a token-weighted list is served without its column; TF
    Transform then feeds one '' per row, which must not fail to_number (every request would)."""
    values, weights = split_weight_tokens(tf.constant(["", "t:2"]))
    assert [v.decode() for v in values.numpy()] == ["", "t"]
    np.testing.assert_allclose(weights.numpy(), [0.0, 2.0])
    with pytest.raises(tf.errors.InvalidArgumentError):  # a malformed token still fails
        split_weight_tokens(tf.constant(["t"]))


def test_every_token_weight_the_records_accept_parses_in_the_graph():
    """core.records must not accept a weight tf.strings.to_number rejects (it would fail the
    whole transform batch): each accepted token parses to the same float32."""
    schema = RecordSchema(ld.config("x.csv"), require_labels=False)
    base = {c: "1" for c in schema.numeric} | {c: "a" for c in schema.categorical}
    accepted = []
    for w in ["0.5", ".5", "5.", "+1", "-2", "1e3", "1E-3", "1_0", "٣", " 1", "0x10", "nan", "inf", "1e39", "", "1.2.3"]:
        try:
            typed = schema.typed(dict(base, item_tags=f"t:{w}"))
        except InvalidRecord as e:
            assert e.reason == "invalid_list_weight"
            continue
        accepted.append((w, typed["item_tags"][0]))
    assert [w for w, _ in accepted] == ["0.5", ".5", "5.", "+1", "-2", "1e3", "1E-3"]
    _, parsed = split_weight_tokens(tf.constant([token for _, token in accepted]))
    np.testing.assert_allclose(parsed.numpy(), [np.float32(float(w)) for w, _ in accepted])


def test_hashed_ids_and_crosses_are_farmhash_of_salt_and_values():
    values = tf.constant(["u1", "u2", "__MISSING__"])
    assert hash_ids(values, 101, "s").numpy().tolist() == tf.strings.to_hash_bucket_fast(
        tf.constant(["su1", "su2", "s__MISSING__"]), 101).numpy().tolist()
    assert hash_ids(values, 7).numpy().tolist() == tf.strings.to_hash_bucket_fast(values, 7).numpy().tolist()
    a, b = tf.constant(["ios", "web"]), tf.constant(["3", "17"])
    want = tf.strings.to_hash_bucket_fast(tf.constant([f"s{CROSS_SEPARATOR}ios{CROSS_SEPARATOR}3",
                                                       f"s{CROSS_SEPARATOR}web{CROSS_SEPARATOR}17"]), 64)
    assert cross_ids([a, b], 64, "s").numpy().tolist() == want.numpy().tolist()
    # FarmHash Fingerprint64 (pinned by the reference implementation, pyfarmhash 0.5.1:
    # fingerprint64("x") = 13942860475667539970): a fixed function, the same in every run,
    # process, runner and TensorFlow version.
    assert hash_ids(tf.constant(["x"]), 1_000_003).numpy()[0] == 13942860475667539970 % 1_000_003
    assert hash_ids(tf.constant(["u1"]), 2**62, "s").numpy()[0] == 17742076210978095954 % 2**62


def test_record_batches_hold_variable_length_lists():
    cfg = ld.config("x.csv")
    schema = RecordSchema(cfg)
    rows = ld.rows(5, seed=3)
    rows[2].update(hist_items="", basket="", basket_w="")
    typed = [schema.typed(r) for r in rows]
    to_batches = ToRecordBatches(cfg)
    batch = to_batches._fn(typed)
    assert batch.schema == raw_tfxio(cfg).ArrowSchema()
    hist = batch.column(batch.schema.get_field_index("hist_items"))
    assert pa.types.is_large_list(hist.type) and pa.types.is_large_binary(hist.type.value_type)
    assert [[v.decode() for v in row] for row in hist.to_pylist()] == [ld.split_list(r["hist_items"]) for r in rows]
    weights = batch.column(batch.schema.get_field_index("basket_w")).to_pylist()
    assert [[round(w, 4) for w in row] for row in weights] == [[float(w) for w in ld.split_list(r["basket_w"])]
                                                               for r in rows]
    assert weights[2] == [] and batch.column(batch.schema.get_field_index("price")).to_pylist()[0] == [
        np.float32(float(rows[0]["price"]))]
    # TFXIO turns the list columns into SparseTensors, the dense ones into (batch,) tensors
    tensors = raw_tfxio(cfg).TensorAdapter().ToBatchTensors(batch)
    assert isinstance(tensors["hist_items"], tf.compat.v1.SparseTensorValue) or hasattr(tensors["hist_items"], "indices")
    assert tensors["price"].shape == (5,)


def test_stats_report_truncation_and_lengths():
    counts = {"read": 10, "valid": 9, "dead:list_too_long": 1, "split:train": 7, "split:validation": 1,
              "split:test": 1, "truncated:hist": 3, "list_length_sum:hist": 45, "list_length_max:hist": 11,
              "list_length_sum:tags": 9, "list_length_max:tags": 2}
    stats = preprocess_stats.build_stats(counts, 2.0, {}, lists=["hist", "tags"])
    assert stats["truncated"] == {"hist": 3, "tags": 0}
    assert stats["list_lengths"] == {"hist": {"mean": 5.0, "max": 11}, "tags": {"mean": 1.0, "max": 2}}
    assert "| truncated: hist | 3 |" in preprocess_stats.report_markdown(stats)
    assert "truncated" not in preprocess_stats.build_stats(counts, 2.0, {})
    with pytest.raises(Exception, match="do not add up"):
        preprocess_stats.build_stats(dict(counts, read=11), 2.0, {}, lists=["hist"])


def test_read_counts_takes_the_max_of_max_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('["valid", 2]\n["valid", 3]\n["list_length_max:h", 4]\n["list_length_max:h", 9]\n'
                    '["list_length_max:h", 1]\n["truncated:h", 1]\n["truncated:h", 2]\n')
    assert preprocess_stats.read_counts(str(path)) == {"valid": 5, "list_length_max:h": 9, "truncated:h": 3}


def test_fake_transformed_run_with_lists(tmp_path):
    from core.feature_specs import model_input_spec, model_input_types
    from tests.fakes.transformed_run import make_fake_run

    run_dir, info = make_fake_run(str(tmp_path / "run"), sizes=(64, 32, 32), lists=True, ple_bins=4)
    assert info.lists["hist_items"].table == "item_id" and info.lists["hist_items"].target == "item_id"
    assert info.lists["item_tags"].weighted and "item_tags__weights" in info.model_inputs
    assert info.piecewise == {f"{n}_ple": 4 for n in info.numeric}
    spec = model_input_spec(model_input_types(info))
    files = tf.io.gfile.glob(run_dir.split_pattern("train"))
    parsed = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    assert len(parsed) == 64
    hist = np.stack([p["hist_items"].numpy() for p in parsed])
    assert hist.shape == (64, info.lists["hist_items"].length) and hist.min() == -1
    assert hist.max() < info.lists["hist_items"].cardinality
    valid = hist >= 0  # left-aligned: padding only after the values
    assert np.all(valid[:, :-1] >= valid[:, 1:])
    w = np.stack([p["item_tags__weights"].numpy() for p in parsed])
    tags = np.stack([p["item_tags"].numpy() for p in parsed])
    assert np.all((w > 0) == (tags >= 0))
    # the default stays as it was (existing tests rely on it)
    _, plain = make_fake_run(str(tmp_path / "plain"), sizes=(8, 8, 8))
    assert not plain.lists and not plain.piecewise


def test_a_list_sharing_a_hashed_feature_uses_its_hashing_on_sparse_inputs():
    """Without a vocabulary or a numeric there is no analyzer: the preprocessing_fn runs as is,
    on the SparseTensors tf.io.parse_example gives a served model."""
    from core.config import config_from_dict
    from core.feature_specs import encode_raw_example, serving_feature_spec
    from core.features import PAD_ID
    from pipeline.preprocess.transform import make_preprocessing_fn

    cfg = config_from_dict({"data": {
        "source": "files", "path": "x", "categorical": ["item", "device"], "tasks": [{"name": "click", "label": "click"}],
        "lists": [{"name": "hist", "kind": "sequence", "shares": "item", "max_length": 3, "order": "recent_first"},
                  {"name": "tags", "weights": "tokens", "max_length": 2}],
        "hash_buckets": {"item": 50, "tags": 20, "device": 5}, "hash_salt": "z",
        "crosses": [{"columns": ["device", "item"], "hash_buckets": 30, "name": "dev_item"}]}})
    schema = RecordSchema(cfg, require_labels=False)
    raw = [{"item": "i1", "device": "ios", "hist": "i1|i2|i3|i4", "tags": "a:0.5|b:c:2"},
           {"item": "i9", "device": None, "hist": "", "tags": ""}]
    serialized = [encode_raw_example(cfg, schema.typed(r)) for r in raw]
    inputs = tf.io.parse_example(tf.constant(serialized), serving_feature_spec(cfg))
    assert isinstance(inputs["hist"], tf.SparseTensor)
    inputs["click"] = tf.zeros([2])
    out = make_preprocessing_fn(cfg)(inputs)

    def h(text, n):
        return int(tf.strings.to_hash_bucket_fast(tf.constant([text]), n).numpy()[0])

    assert out["item"].numpy().tolist() == [h("zi1", 50), h("zi9", 50)]
    assert out["hist"].numpy().tolist() == [[h("zi1", 50), h("zi2", 50), h("zi3", 50)], [PAD_ID] * 3]
    assert out["hist"].shape.as_list() == [2, 3]
    assert out["tags"].numpy().tolist() == [[h("za", 20), h("zb:c", 20)], [PAD_ID] * 2]
    np.testing.assert_allclose(out["tags__weights"].numpy(), [[0.5, 2.0], [0.0, 0.0]])
    sep = CROSS_SEPARATOR
    assert out["dev_item"].numpy().tolist() == [h(f"z{sep}ios{sep}i1", 30), h(f"z{sep}__MISSING__{sep}i9", 30)]
    assert "hist__weights" not in out
