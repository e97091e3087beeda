"""The Beam teacher-scoring job: one output row per input row, logits equal the model's."""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from core import fs
from pipeline.beam_options import pipeline_options
from pipeline.teacher_scoring import TeacherModelHandler, score_splits

DTYPES = {"cat": "int64", "num": "float32"}


def _tiny_teacher(path):
    """A functional model with the serving contract: dict of (None,) inputs -> '<t>_logit' outputs."""
    keras.utils.set_random_seed(0)
    cat = keras.Input(shape=(), dtype=tf.int64, name="cat")
    num = keras.Input(shape=(), dtype=tf.float32, name="num")
    emb = keras.layers.Flatten()(keras.layers.Embedding(5, 3)(keras.layers.Reshape((1,))(cat)))
    h = keras.layers.Concatenate()([emb, keras.layers.Reshape((1,))(num)])
    out = {}
    for task in ("click", "conversion"):
        logit = keras.layers.Reshape(())(keras.layers.Dense(1, name=f"tower_{task}")(h))
        out[f"{task}_logit"] = logit
        out[f"{task}_probability"] = keras.layers.Activation("sigmoid")(logit)
    model = keras.Model({"cat": cat, "num": num}, out)
    model.save(path)
    return model


def _example(i, with_num=True):
    f = {"cat": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 5])),
         "label_click": tf.train.Feature(float_list=tf.train.FloatList(value=[float(i % 2)]))}
    if with_num:
        f["num"] = tf.train.Feature(float_list=tf.train.FloatList(value=[i / 10.0]))
    return tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString()


def _write(path, records):
    with tf.io.TFRecordWriter(path, options="GZIP") as w:
        for r in records:
            w.write(r)


def _read(pattern):
    files = sorted(glob.glob(pattern))
    assert files, f"no files match {pattern}"
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


class _Beam:
    runner = "DirectRunner"
    direct_running_mode = "in_memory"
    direct_num_workers = 1
    extra_args = []


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("teacher") / "serving_model")
    return path, _tiny_teacher(path)


def test_scoring_adds_teacher_logits_one_row_per_input(tmp_path, teacher):
    path, model = teacher
    data = tmp_path / "data"
    data.mkdir()
    _write(str(data / "train-00000-of-00002.tfrecord.gz"), [_example(i) for i in range(23)])
    _write(str(data / "train-00001-of-00002.tfrecord.gz"), [_example(i) for i in range(23, 37)])
    _write(str(data / "validation-00000-of-00001.tfrecord.gz"), [_example(i) for i in range(5)])
    handler = TeacherModelHandler(path, DTYPES, {"click": "click_logit", "conversion": "conversion_logit"},
                                  batch_size=8)
    out = str(tmp_path / "scores")
    counts = score_splits({"train": str(data / "train-*.tfrecord.gz"),
                           "validation": str(data / "validation-*.tfrecord.gz")},
                          out, handler, options=pipeline_options(_Beam()))
    assert counts == {"train": {"rows_in": 37, "rows_scored": 37, "rows_dead_letter": 0},
                      "validation": {"rows_in": 5, "rows_scored": 5, "rows_dead_letter": 0}}
    rows = _read(os.path.join(fs.published(out), "train-*.tfrecord.gz"))
    assert len(rows) == 37
    assert len(_read(os.path.join(fs.published(out), "validation-*.tfrecord.gz"))) == 5
    rows.sort(key=lambda e: e.features.feature["num"].float_list.value[0])
    cats = np.array([e.features.feature["cat"].int64_list.value[0] for e in rows])
    nums = np.array([e.features.feature["num"].float_list.value[0] for e in rows], np.float32)
    expected = model({"cat": tf.constant(cats), "num": tf.constant(nums)})
    for task in ("click", "conversion"):
        got = [e.features.feature[f"teacher_logit_{task}"].float_list.value[0] for e in rows]
        np.testing.assert_allclose(got, expected[f"{task}_logit"].numpy(), rtol=1e-5, atol=1e-6)
    # the original features are kept
    assert [e.features.feature["label_click"].float_list.value[0] for e in rows] == [float(i % 2) for i in range(37)]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_unscorable_records_go_to_dead_letters_with_reason(tmp_path, teacher):
    path, _ = teacher
    data = tmp_path / "data"
    data.mkdir()
    records = [_example(i) for i in range(10)] + [_example(99, with_num=False)]
    _write(str(data / "train-00000-of-00001.tfrecord.gz"), records)
    handler = TeacherModelHandler(path, DTYPES, {"click": "click_logit"}, batch_size=4)
    out = str(tmp_path / "scores")
    counts = score_splits({"train": str(data / "train-*.tfrecord.gz")}, out, handler,
                          options=pipeline_options(_Beam()))
    assert counts["train"] == {"rows_in": 11, "rows_scored": 10, "rows_dead_letter": 1}
    assert len(_read(os.path.join(fs.published(out), "train-*.tfrecord.gz"))) == 10
    lines = [json.loads(line) for f in glob.glob(os.path.join(fs.published(out), "dead_letters", "train*.jsonl"))
             for line in open(f) if line.strip()]
    assert len(lines) == 1 and lines[0]["split"] == "train"
    assert "num" in lines[0]["error"]


@pytest.mark.parametrize("kwargs, match", [
    ({"feature_dtypes": {}}, "feature_dtypes"),
    ({"feature_dtypes": {"cat": "string"}}, "feature_dtypes"),
    ({"outputs": {}}, "outputs"),
    ({"batch_size": 0}, "batch_size"),
])
def test_handler_rejects_bad_arguments(kwargs, match):
    args = {"model_path": "m", "feature_dtypes": DTYPES, "outputs": {"click": "click_logit"}, "batch_size": 2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        TeacherModelHandler(**args)


def test_score_with_teacher_transform_composes_in_a_test_pipeline(teacher):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from pipeline.teacher_scoring import ScoreWithTeacher

    path, _ = teacher
    handler = TeacherModelHandler(path, DTYPES, {"click": "click_logit"}, batch_size=3)

    def summary(serialized):
        e = tf.train.Example.FromString(serialized)
        return int(e.features.feature["cat"].int64_list.value[0]), "teacher_logit_click" in e.features.feature

    with TestPipeline(options=pipeline_options(_Beam())) as p:
        out = p | beam.Create([_example(i) for i in range(7)]) | ScoreWithTeacher(handler)
        assert_that(out.scored | beam.Map(summary), equal_to([(i % 5, True) for i in range(7)]), label="Scored")
        assert_that(out.dead_letters, equal_to([]), label="NoDeadLetters")
