"""The preprocess stage end to end on a small CSV with bad rows (in-memory DirectRunner)."""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from core import fs
from core import feature_specs, features
from pipeline.cli import main
from core.errors import DataValidationError
from pipeline.stages.preprocess import run as run_preprocess
from core.run_dir import RunDir, read_json
from core.splits import assign_split
from pipeline.preprocess.transform import MISSING_TOKEN
from tests.fakes import raw_records as fx

N_GOOD = 300
ALLOWED = "preprocess.max_dead_letter_fraction=0.05"
BUCKETS = "preprocess.numeric.quantile_buckets=4"


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    d = tmp_path_factory.mktemp("stage")
    rows = fx.good_rows(N_GOOD, seed=1)
    in_train = next(i for i, r in enumerate(rows) if assign_split(r["impression_id"], (0.8, 0.1, 0.1)) == 0)
    rows[in_train]["device"] = ""  # missing categorical, in the training split: its own category
    path = fx.write_csv(d / "logs.csv", rows, [line for line, _ in fx.bad_lines()])
    return d, path, rows


@pytest.fixture(scope="module")
def stage(logs):
    d, path, _ = logs
    run_dir = RunDir(str(d / "run1"))
    result = run_preprocess(fx.files_config(path, "csv", ALLOWED, BUCKETS), run_dir, None)
    return run_dir, result


def _read_split(run_dir: RunDir, split: str) -> list[bytes]:
    files = sorted(glob.glob(run_dir.split_pattern(split)))
    assert files, split
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def test_counts_add_up_and_dead_letters_have_reasons(stage):
    run_dir, result = stage
    stats = read_json(run_dir.stats_file)
    n_bad = len(fx.bad_lines())
    assert result.rows == stats["rows_read"] == N_GOOD + n_bad
    assert stats["valid"] == N_GOOD and stats["dead_lettered"] == n_bad
    assert stats["by_reason"] == fx.expected_reason_counts()
    assert sum(stats["rows_per_split"].values()) == N_GOOD
    for split, n in stats["rows_per_split"].items():
        assert len(_read_split(run_dir, split)) == n
    letters = [line for f in glob.glob(os.path.join(run_dir.dead_letter_dir, "*.jsonl")) for line in open(f)]
    assert len(letters) == n_bad
    assert result.metrics["by_reason"] == stats["by_reason"]
    assert "| dead: funnel_violation | 1 |" in result.report
    assert os.path.exists(os.path.join(run_dir.root, result.plots[0]))


def test_outputs_follow_the_feature_contract(stage):
    run_dir, _ = stage
    spec = tft.TFTransformOutput(run_dir.transform_output_dir).transformed_feature_spec()
    info = features.FeatureInfo.from_dict(read_json(run_dir.feature_info_file))
    cfg = fx.files_config("x")
    expected = {c: tf.int64 for c in cfg.data.categorical}
    expected.update({n: tf.float32 for n in cfg.data.numeric})
    expected.update({n + features.BUCKET_SUFFIX: tf.int64 for n in cfg.data.numeric})
    expected.update({features.label_key(t): tf.float32 for t in cfg.task_names})
    expected.update({features.WEIGHT_KEY: tf.float32, features.GROUP_KEY: tf.int64,
                     "p_click": tf.float32, "p_conversion": tf.float32})
    assert {k: v.dtype for k, v in spec.items()} == expected
    assert all(isinstance(v, tf.io.FixedLenFeature) and v.shape == [] for v in spec.values())
    assert info.has_group and not info.has_weight and info.tasks == ["click", "conversion"]
    # ids stay below the cardinality the model will size its embeddings with
    parsed = [tf.io.parse_single_example(r, spec) for r in _read_split(run_dir, "train")]
    for c, card in info.categorical.items():
        assert max(int(p[c]) for p in parsed) < card
    assert info.categorical["device"] == 3 + 1 + 1  # ios/android/web, missing, one OOV bucket
    assert info.categorical["price_bucket"] == 4
    assert {int(p["price_bucket"]) for p in parsed} == {0, 1, 2, 3}  # quartiles of the training split
    vocab = tft.TFTransformOutput(run_dir.transform_output_dir).vocabulary_by_name("vocab_device")
    assert MISSING_TOKEN.encode() in vocab
    assert read_json(run_dir.raw_feature_spec_file)["price"] == {"dtype": "float32", "shape": []}


def test_saved_transform_reproduces_the_tfrecords(stage, logs):
    """A raw serving request through transform_features_layer equals the TFRecord rows."""
    run_dir, _ = stage
    _, _, rows = logs
    cfg = fx.files_config("x")
    test_rows = [r for r in rows if assign_split(r["impression_id"], (0.8, 0.1, 0.1)) == 2]
    serving_spec = feature_specs.serving_feature_spec(cfg)
    serialized = []
    for r in test_rows:
        feats = {c: tf.train.Feature(bytes_list=tf.train.BytesList(value=[r[c].encode()]))
                 for c in cfg.data.categorical if r[c]}  # a missing categorical is simply absent
        feats.update({n: tf.train.Feature(float_list=tf.train.FloatList(value=[float(r[n])])) for n in cfg.data.numeric})
        serialized.append(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    raw = tf.io.parse_example(tf.constant(serialized), serving_spec)
    output = tft.TFTransformOutput(run_dir.transform_output_dir)
    served = output.transform_features_layer()(raw)
    inputs = features.FeatureInfo.from_dict(read_json(run_dir.feature_info_file)).model_inputs

    stored = [tf.io.parse_single_example(r, output.transformed_feature_spec()) for r in _read_split(run_dir, "test")]
    assert len(stored) == len(test_rows) > 0

    def key(values):
        return tuple(round(float(v), 4) for v in values)

    served_rows = sorted(key(served[k].numpy()[i] for k in inputs) for i in range(len(test_rows)))
    stored_rows = sorted(key(s[k].numpy() for k in inputs) for s in stored)
    np.testing.assert_allclose(np.array(served_rows), np.array(stored_rows), atol=1e-5)


@pytest.mark.slow
def test_rerun_through_the_cli_gives_identical_splits(stage, logs):
    """A second run, with one shard per split and the records reshuffled after reading, gives
    the same transformed rows per split as the first (streaming, runner-sharded) run."""
    run_dir, _ = stage
    d, path, _ = logs
    other = str(d / "run2")
    code = main(["preprocess", "--run-dir", other, "--set", "data.source=files", "--set", f"data.path={path}",
                 "--set", "data.lists=[]",
                 "--set", "preprocess.beam.direct_running_mode=in_memory", "--set", "preprocess.num_shards=1",
                 "--set", "preprocess.beam.reshuffle_records=true", "--set", ALLOWED, "--set", BUCKETS])
    assert code == 0
    spec = tft.TFTransformOutput(run_dir.transform_output_dir).transformed_feature_spec()

    def rows(rd, split):
        parsed = [tf.io.parse_single_example(r, spec) for r in _read_split(rd, split)]
        return sorted(tuple(p[k].numpy().item() for k in sorted(spec)) for p in parsed)

    for split in ("train", "validation", "test"):
        first, second = rows(run_dir, split), rows(RunDir(other), split)
        assert len(first) == len(second) > 0
        np.testing.assert_allclose(np.array(first, dtype=np.float64), np.array(second, dtype=np.float64), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_stage_fails_above_the_dead_letter_threshold(logs):
    d, path, _ = logs
    run_dir = RunDir(str(d / "run3"))
    with pytest.raises(DataValidationError) as e:
        run_preprocess(fx.files_config(path), run_dir, None)  # default maximum: 1%
    message = str(e.value)
    assert "max_dead_letter_fraction=0.01" in message
    assert "wrong_column_count: 2" in message and "non_finite_value: 2" in message
    assert run_dir.rejected_dir in message
    assert not fs.is_published(run_dir.preprocess_dir) and not fs.walk_files(run_dir.preprocess_dir)  # nothing half-written for later stages
    letters = [line for f in glob.glob(os.path.join(fs.published(run_dir.rejected_dir), "dead_letters", "*.jsonl")) for line in open(f)]
    assert len(letters) == len(fx.bad_lines())


@pytest.mark.parametrize("content", ["", "header", "header+blank", "empty.gz"])
def test_an_input_without_records_fails_naming_it(tmp_path, content):
    """Used to "succeed" with 0 records (and `train` crashed); caught before the pipeline runs."""
    import gzip

    from core.errors import InputError

    header = ",".join(fx.COLUMNS) + "\n"
    path = tmp_path / ("in.csv.gz" if content == "empty.gz" else "in.csv")
    if content == "empty.gz":
        path.write_bytes(gzip.compress(b""))
    else:
        path.write_text({"": "", "header": header, "header+blank": header + "\n\n"}[content])
    run_dir = RunDir(str(tmp_path / "run"))
    with pytest.raises(InputError, match="no records in the input") as e:
        run_preprocess(fx.files_config(str(path)), run_dir, None)
    assert str(path) in str(e.value)
    assert not fs.is_published(run_dir.preprocess_dir) and not fs.walk_files(run_dir.preprocess_dir)


def test_no_valid_training_records_is_an_error_naming_the_input():
    from core.errors import InputError
    from pipeline.preprocess.stats import check_training_records

    stats = {"rows_read": 3, "valid": 2, "dead_lettered": 1, "by_reason": {"missing_value": 1},
             "rows_per_split": {"train": 0, "validation": 1, "test": 1}, "input": {"pattern": "/d/x-*.csv", "files": 2}}
    with pytest.raises(DataValidationError, match=r"no valid training records in the input '/d/x-\*\.csv' \(2 files\)"):
        check_training_records(stats, "/d/x-*.csv")
    with pytest.raises(InputError, match="no records in the input"):
        check_training_records(dict(stats, rows_read=0, valid=0, dead_lettered=0, by_reason={},
                                    rows_per_split={"train": 0, "validation": 0, "test": 0}), "/d/x-*.csv")
    check_training_records(dict(stats, rows_per_split={"train": 1, "validation": 1, "test": 0}), "/d/x-*.csv")


@pytest.mark.slow
def test_a_truncated_gzip_input_fails_the_stage_with_one_error_line(tmp_path, capfd, caplog):
    """Used to exit 0 with the rows before the cut; now exit 2 and one `error:` line naming the file."""
    import gzip

    rows = fx.good_rows(1000, seed=2)
    data = gzip.compress(open(fx.write_csv(tmp_path / "all.csv", rows), "rb").read())
    path = tmp_path / "logs.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    run_dir = str(tmp_path / "run")
    code = main(["preprocess", "--run-dir", run_dir, "--set", "data.source=files", "--set", f"data.path={path}",
                 "--set", "data.lists=[]",
                 "--set", "preprocess.beam.direct_running_mode=in_memory", "--set", "preprocess.num_shards=1"])
    err = capfd.readouterr().err
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: input file {path} is a truncated or corrupt gzip file: "
                      "Compressed file ended before the end-of-stream marker was reached"]
    assert "Traceback" not in err and "Traceback" not in caplog.text
    assert not fs.walk_files(os.path.join(run_dir, "preprocess"))
