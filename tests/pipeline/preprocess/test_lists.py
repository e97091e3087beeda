"""List features, hashed ids, crosses and the piecewise-linear encoding through preprocessing (issue 13).

One preprocess stage run (module fixture, in-memory DirectRunner) on a small CSV with every
list kind (``list_data``) and bad list rows; the tests check its dead letters, stats, feature
info and TFT output row by row against the raw rows, and the saved transform on the sparse
inputs a served model parses. The other formats are checked at the validation step (no TFT),
plus one slow second stage run on JSON lines.
"""
import collections
import glob
import json
import os

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from core import feature_specs, features
from core.features import PAD_ID, list_weights_key
from core.records import RecordSchema
from core.run_dir import RunDir, read_json
from core.splits import SPLITS
from pipeline.beam_options import pipeline_options
from pipeline.preprocess.raw_io import ReadRawRecords
from pipeline.preprocess.transform import CROSS_SEPARATOR, MISSING_TOKEN, vocabulary_name
from pipeline.preprocess.validation import ValidateRecords
from pipeline.stages.preprocess import run as run_preprocess
from tests.fakes import raw_records as fx
from tests.pipeline.preprocess import list_data as ld

N_GOOD = 300
ALLOWED = "preprocess.max_dead_letter_fraction=0.1"


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    d = tmp_path_factory.mktemp("lists")
    rows = ld.rows(N_GOOD, seed=1)
    rows[0].update(hist_items="", pages="", item_tags="", basket="", basket_w="")  # empty lists are valid
    rows[1]["device"] = ""  # a missing categorical in a cross
    path = ld.write_csv(d / "logs.csv", rows, [line for line, _ in ld.bad_lines()])
    return d, path, rows


@pytest.fixture(scope="module")
def stage(logs):
    d, path, _ = logs
    run_dir = RunDir(str(d / "run"))
    cfg = ld.config(path, "csv", ALLOWED)
    result = run_preprocess(cfg, run_dir, None)
    return cfg, run_dir, result


def _stored(run_dir: RunDir, splits=SPLITS) -> dict:
    """p_click key -> parsed transformed row (numpy), over ``splits``."""
    spec = tft.TFTransformOutput(run_dir.transform_output_dir).transformed_feature_spec()
    out = {}
    for s in splits:
        files = sorted(glob.glob(run_dir.split_pattern(s)))
        for r in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            p = {k: v.numpy() for k, v in tf.io.parse_single_example(r, spec).items()}
            out[_key(p["p_click"])] = p
    return out


def _key(p_click) -> int:
    return int(round(float(p_click) * 1000))


def _hash(text: str, buckets: int) -> int:
    return int(tf.strings.to_hash_bucket_fast(tf.constant([text]), buckets).numpy()[0])


def _padded(ids: list, length: int, pad=PAD_ID) -> list:
    return list(ids) + [pad] * (length - len(ids))


# ----------------------------------------------------------------------------- validation


def test_list_dead_letters_have_their_reasons_and_counts_add_up(stage):
    _, run_dir, result = stage
    stats = read_json(run_dir.stats_file)
    bad = ld.bad_lines()
    assert stats["rows_read"] == N_GOOD + len(bad) == result.rows
    assert stats["valid"] == N_GOOD and stats["dead_lettered"] == len(bad)
    assert stats["by_reason"] == ld.expected_reason_counts()
    assert sum(stats["rows_per_split"].values()) == N_GOOD
    letters = [json.loads(line) for f in glob.glob(os.path.join(run_dir.dead_letter_dir, "*.jsonl")) for line in open(f)]
    by_id = {d["record"].split(",")[0]: d for d in letters}
    expected = {line.split(",")[0]: reason for line, reason in bad}
    assert {k: d["reason"] for k, d in by_id.items()} == expected
    assert "'hist_items'[1]: an empty value" in by_id["bl1"]["detail"]
    assert "'hist_items': 13 values, more than data.max_list_length 12" in by_id["bl3"]["detail"]
    assert "'item_tags'[1]" in by_id["bl4"]["detail"] and "'abc'" in by_id["bl4"]["detail"]
    assert "'1_0'" in by_id["bl6"]["detail"]  # float() takes it, the graph's to_number does not
    assert "'basket_w': 1 weights for the 2 values of 'basket'" in by_id["bl8"]["detail"]


def test_stats_count_the_truncated_lists(stage, logs):
    _, run_dir, result = stage
    _, _, rows = logs
    stats = read_json(run_dir.stats_file)
    expected = {name: sum(len(ld.split_list(r[name])) > n for r in rows) for name, n in ld.LENGTHS.items()}
    assert all(n > 0 for n in expected.values())
    assert stats["truncated"] == expected
    for name in ld.LENGTHS:
        lengths = [len(ld.split_list(r[name])) for r in rows]
        assert stats["list_lengths"][name] == {"mean": round(float(np.mean(lengths)), 3), "max": max(lengths)}
    assert result.metrics["truncated"] == expected
    assert f"| truncated: hist_items | {expected['hist_items']} |" in result.report
    assert "hist_items (sequence, " in result.report and "item_id's table" in result.report


# ----------------------------------------------------------------------------- feature info, specs


def test_feature_info_and_transformed_spec_follow_the_contract(stage):
    cfg, run_dir, _ = stage
    info = features.FeatureInfo.from_dict(read_json(run_dir.feature_info_file))
    output = tft.TFTransformOutput(run_dir.transform_output_dir)
    item_card = output.vocabulary_size_by_name(vocabulary_name("item_id")) + 1
    assert info.categorical["user_id"] == ld.USER_BUCKETS  # hashed: no vocabulary
    assert info.categorical["device_x_hour"] == ld.CROSS_BUCKETS
    assert info.categorical["item_id"] == item_card
    assert info.lists["hist_items"] == features.ListInfo(
        cardinality=item_card, length=4, pooling="attention", weighted=False, table="item_id", target="item_id",
        kind="sequence")
    assert info.lists["pages"] == features.ListInfo(
        cardinality=output.vocabulary_size_by_name(vocabulary_name("pages")) + 1, length=3, pooling="mean",
        table="pages", kind="sequence")
    assert info.lists["item_tags"].weighted and info.lists["item_tags"].length == 3
    assert info.lists["item_tags"].cardinality == 12 + 1 + 1  # t0..t11, 'a:b', one OOV bucket
    assert info.lists["basket"] == features.ListInfo(
        cardinality=ld.BASKET_BUCKETS, length=2, pooling="sum", weighted=True, table="basket", kind="multi_valued")
    assert info.piecewise == {f"{n}_ple": ld.PLE_BINS for n in cfg.data.numeric}
    assert not [f for f in os.listdir(output.transform_savedmodel_dir + "/assets")
                if f in (vocabulary_name("hist_items"), vocabulary_name("user_id"), vocabulary_name("basket"))]
    # TFT's own schema is the contract's transformed spec
    spec = output.transformed_feature_spec()
    contract = feature_specs.transformed_feature_spec(info)
    assert {k: (v.dtype, list(v.shape)) for k, v in spec.items()} == {
        k: (v.dtype, list(v.shape)) for k, v in contract.items()}
    assert spec["hist_items"].shape == [4] and spec["hist_items"].dtype == tf.int64
    assert spec[list_weights_key("basket")].shape == [2] and spec[list_weights_key("basket")].dtype == tf.float32
    assert spec["price_ple"].shape == [ld.PLE_BINS]
    assert read_json(run_dir.raw_feature_spec_file)["hist_items"] == {"dtype": "string", "shape": [None],
                                                                      "var_len": True}


# ----------------------------------------------------------------------------- TFT output


def test_list_ids_are_truncated_padded_and_weighted_per_kind(stage, logs):
    _, run_dir, _ = stage
    _, _, rows = logs
    output = tft.TFTransformOutput(run_dir.transform_output_dir)
    vocabs = {n: [v.decode() for v in output.vocabulary_by_name(vocabulary_name(n))] for n in ("item_id", "pages",
                                                                                                  "item_tags")}

    def vocab_id(name, value):
        v = vocabs[name]
        return v.index(value) if value in v else len(v)  # one OOV bucket

    stored = _stored(run_dir)
    assert len(stored) == N_GOOD
    seen_truncated = collections.Counter()
    for i, r in enumerate(rows):
        s = stored[i]
        hist = ld.split_list(r["hist_items"])
        kept = hist[-4:]  # recent_last: the 4 most recent, in order
        assert s["hist_items"].tolist() == _padded([vocab_id("item_id", v) for v in kept], 4), i
        pages = ld.split_list(r["pages"])[:3]  # recent_first: the first 3
        assert s["pages"].tolist() == _padded([vocab_id("pages", v) for v in pages], 3), i
        tokens = ld.split_list(r["item_tags"])[:3]
        assert s["item_tags"].tolist() == _padded([vocab_id("item_tags", t.rsplit(":", 1)[0]) for t in tokens], 3)
        np.testing.assert_allclose(s["item_tags__weights"], _padded([float(t.rsplit(":", 1)[1]) for t in tokens], 3,
                                                                   0.0), rtol=1e-6)
        basket, weights = ld.split_list(r["basket"])[:2], ld.split_list(r["basket_w"])[:2]
        assert s["basket"].tolist() == _padded([_hash(ld.SALT + b, ld.BASKET_BUCKETS) for b in basket], 2)
        np.testing.assert_allclose(s["basket__weights"], _padded([float(w) for w in weights], 2, 0.0), rtol=1e-6)
        assert s["item_id"] == vocab_id("item_id", r["item_id"])
        assert s["user_id"] == _hash(ld.SALT + r["user_id"], ld.USER_BUCKETS)
        device = r["device"] or MISSING_TOKEN
        assert s["device_x_hour"] == _hash(CROSS_SEPARATOR.join([ld.SALT, device, r["hour"]]), ld.CROSS_BUCKETS)
        seen_truncated.update(name for name, n in ld.LENGTHS.items() if len(ld.split_list(r[name])) > n)
    assert all(seen_truncated[n] for n in ld.LENGTHS)  # every kind's truncation was exercised
    # an empty list is all padding, its weights 0
    assert stored[0]["hist_items"].tolist() == [PAD_ID] * 4 and stored[0]["basket__weights"].tolist() == [0.0, 0.0]
    # truncation keeps the most recent items of a recent_last sequence
    long_row = next(i for i, r in enumerate(rows) if len(ld.split_list(r["hist_items"])) == 11)
    assert stored[long_row]["hist_items"].tolist() == [vocab_id("item_id", v)
                                                       for v in ld.split_list(rows[long_row]["hist_items"])[7:]]


def test_a_shared_list_gets_the_same_id_as_its_table_owner(stage, logs):
    _, run_dir, _ = stage
    _, _, rows = logs
    stored = _stored(run_dir)
    ids = collections.defaultdict(set)
    for i, r in enumerate(rows):
        ids[r["item_id"]].add(("item_id", int(stored[i]["item_id"])))
        for v, id_ in zip(ld.split_list(r["hist_items"])[-4:], stored[i]["hist_items"]):
            ids[v].add(("hist", int(id_)))
    both = [v for v, s in ids.items() if {k for k, _ in s} == {"item_id", "hist"}]
    assert len(both) > 10
    for v in both:
        assert len({id_ for _, id_ in ids[v]}) == 1, (v, ids[v])
    # the shared vocabulary is computed over both columns: ids only in histories are not OOV
    vocab = [v.decode() for v in tft.TFTransformOutput(run_dir.transform_output_dir).vocabulary_by_name("vocab_item_id")]
    only_hist = {v for v, s in ids.items() if {k for k, _ in s} == {"hist"}}
    assert only_hist and only_hist <= set(vocab)
    assert len({id_ for v in only_hist for _, id_ in ids[v]}) == len(only_hist)  # distinct ids, none OOV


def test_piecewise_linear_encoding_is_in_unit_range_and_monotone(stage, logs):
    cfg, run_dir, _ = stage
    _, _, rows = logs
    stored = _stored(run_dir)
    for n in cfg.data.numeric:
        x = np.array([float(r[n]) for r in rows])
        enc = np.stack([stored[i][f"{n}_ple"] for i in range(len(rows))])
        assert enc.shape == (N_GOOD, ld.PLE_BINS)
        assert np.all(enc >= 0.0) and np.all(enc <= 1.0) and np.isfinite(enc).all()
        order = np.argsort(x, kind="stable")
        assert np.all(np.diff(enc[order], axis=0) >= -1e-6), n  # non-decreasing in x, every component
        assert np.all(np.diff(enc, axis=1) <= 1e-6), n  # bins below x are full before the next one starts
        fill = enc.sum(axis=1)
        assert fill[order].max() > fill[order].min()
        same = collections.defaultdict(set)
        for xi, e in zip(x, enc):
            same[xi].add(tuple(np.round(e, 5)))
        assert all(len(v) == 1 for v in same.values())  # a function of x
    # item_popularity is 0 in most rows: coinciding quantile boundaries, still fixed width and finite
    pop = np.stack([stored[i]["item_popularity_ple"] for i in range(len(rows))])
    zeros = np.array([float(r["item_popularity"]) == 0.0 for r in rows])
    assert zeros.mean() > 0.5 and len({tuple(e) for e in pop[zeros]}) == 1
    assert pop[~zeros].sum(axis=1).min() > pop[zeros].sum(axis=1).max()


def test_the_served_transform_on_sparse_inputs_equals_the_tfrecords(stage, logs):
    """Raw tf.Examples (variable-length bytes_list / float_list lists, some absent) parsed with
    the serving spec (SparseTensors) through transform_features_layer give the TFRecord rows."""
    cfg, run_dir, _ = stage
    _, _, rows = logs
    stored = _stored(run_dir)
    schema = RecordSchema(cfg, require_labels=False)
    serialized, keys = [], []
    for i, r in enumerate(rows[:120]):
        values = {k: (None if k == "device" and v == "" else v) for k, v in r.items()}
        typed = schema.typed(values)
        example = tf.train.Example.FromString(feature_specs.encode_raw_example(cfg, typed))
        for name in ld.LIST_COLUMNS:  # an absent list feature is an empty list
            if i % 2 and not typed[name]:
                del example.features.feature[name]
        if values["device"] is None:
            del example.features.feature["device"]  # a missing categorical is absent
        serialized.append(example.SerializeToString())
        keys.append(i)
    raw = tf.io.parse_example(tf.constant(serialized), feature_specs.serving_feature_spec(cfg))
    assert isinstance(raw["hist_items"], tf.SparseTensor) and isinstance(raw["basket_w"], tf.SparseTensor)
    served = tft.TFTransformOutput(run_dir.transform_output_dir).transform_features_layer()(raw)
    info = features.FeatureInfo.from_dict(read_json(run_dir.feature_info_file))
    assert set(info.model_inputs) <= set(served)
    for name in info.model_inputs:
        got = served[name].numpy()
        want = np.stack([stored[k][name] for k in keys])
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


# ----------------------------------------------------------------------------- other formats


def test_every_format_reads_the_same_list_records(logs, tmp_path):
    """JSONL / Parquet lists and variable-length tf.Example features type like the CSV fields;
    bad JSON list elements are dead letters naming the field; empty lists are valid."""
    _, _, rows = logs
    good = rows[:25]
    bad_jsonl = {
        '"hist_items": ["i1", 1.5]': "invalid_list_value",
        '"hist_items": ["i1", true]': "invalid_list_value",
        '"hist_items": [["i1"]]': "invalid_list_value",
        '"pages": [1, null]': "invalid_list_value",
        '"item_id": ["i1", "i2"]': "unparsable_record",  # a list for a single-valued column
        '"basket_w": ["x"]': "invalid_list_weight",
        '"item_tags": ["t1:0.5", "t2:x"]': "invalid_list_weight",
        '"hist_items": ' + json.dumps([f"i{k}" for k in range(ld.MAX_LIST_LENGTH + 1)]): "list_too_long",
    }
    base = ld.typed_row(dict(good[0], basket="b1", basket_w="1.0", impression_id="bad"))
    lines = []
    for fragment in bad_jsonl:
        obj = dict(base, **json.loads("{" + fragment + "}"))
        lines.append(json.dumps(obj))
    paths = {"csv": ld.write_csv(tmp_path / "a.csv", good), "jsonl": ld.write_jsonl(tmp_path / "a.jsonl", good, lines),
             "parquet": ld.write_parquet(tmp_path / "a.parquet", good),
             "tfrecord": ld.write_tfrecord(tmp_path / "a.tfrecord.gz", good)}
    cfg = ld.config(paths["csv"])
    p = beam.Pipeline(options=pipeline_options(cfg.preprocess.beam))
    pcolls = {}
    for fmt, path in paths.items():
        checked = p | f"Read[{fmt}]" >> ReadRawRecords(path, fmt, cfg) | f"Validate[{fmt}]" >> ValidateRecords(cfg)
        pcolls[fmt] = checked.valid | f"F[{fmt}]" >> beam.Map(lambda r: [r["values"]["impression_id"], r["features"]])
        pcolls[fmt + "_dead"] = checked.dead_letters
    got, result = fx.run_and_collect(p, pcolls, tmp_path / "out")

    def as_f32(feats):
        return {k: ([np.float32(x) for x in v] if isinstance(v, list) and v and isinstance(v[0], float)
                    else np.float32(v) if isinstance(v, float) else v) for k, v in feats.items()}

    expected = {k: as_f32(v) for k, v in got["csv"]}
    assert len(expected) == len(good)
    assert expected["imp0"]["hist_items"] == [] and expected["imp0"]["basket_w"] == []
    assert any(len(v["hist_items"]) > 4 for v in expected.values())  # long lists are valid (truncated later)
    for fmt in paths:
        assert {k: as_f32(v) for k, v in got[fmt]} == expected, fmt
        if fmt != "jsonl":
            assert got[fmt + "_dead"] == [], fmt
    dead = got["jsonl_dead"]
    assert collections.Counter(d["reason"] for d in dead) == collections.Counter(bad_jsonl.values())
    float_element = next(d for d in dead if "1.5" in d["detail"])
    assert float_element["detail"] == "field 'hist_items'[1]: expected a string or an integer, got float 1.5"
    # the Beam counters of the validation step count the truncated lists (4 formats, same rows)
    metrics = result.metrics().query(MetricsFilter().with_namespace("preprocess"))
    counters = collections.Counter()
    for c in metrics["counters"]:  # one per format's validation step
        counters[c.key.metric.name] += c.committed
    for name, n in ld.LENGTHS.items():
        assert counters[f"truncated_{name}"] == 4 * sum(len(ld.split_list(r[name])) > n for r in good), name
    assert counters["truncated_hist_items"] > 0
    hist = [d.committed for d in metrics["distributions"] if d.key.metric.name == "list_length_hist_items"]
    assert len(hist) == 4 and {d.max for d in hist} == {max(len(ld.split_list(r["hist_items"])) for r in good)}


@pytest.mark.slow
def test_a_second_run_on_json_lines_gives_identical_outputs(stage, logs):
    """Hashed ids, crosses, shared vocabularies and PLE are the same in another run (from
    another input format): FarmHash and the analyzers are stable (the hash function itself is
    pinned in test_list_units)."""
    _, run_dir, _ = stage
    d, _, rows = logs
    path = ld.write_jsonl(d / "logs.jsonl", rows, [])
    other = RunDir(str(d / "run_jsonl"))
    run_preprocess(ld.config(path, "jsonl", ALLOWED), other, None)
    first, second = _stored(run_dir), _stored(other)
    assert first.keys() == second.keys() and len(first) == N_GOOD
    for k in first:
        for name, v in first[k].items():
            np.testing.assert_allclose(second[k][name], v, rtol=1e-5, atol=1e-6, err_msg=name)
