"""The Beam teacher-scoring job on a teacher reading lists, list weights and PLE encodings:
the handler parses every model input with its shape (``model_input_types``)."""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from core import fs
from core.config import load_config
from core.feature_specs import model_input_types
from core.features import teacher_logit_key
from models.builder import build_ranker
from pipeline.beam_options import pipeline_options
from pipeline.teacher_scoring import TeacherModelHandler, score_splits
from tests.fakes.transformed_run import REPO, TINY
from tests.models.list_data import list_examples, list_info, write_examples


class _Beam:
    runner = "DirectRunner"
    direct_running_mode = "in_memory"
    direct_num_workers = 1
    extra_args = []


def test_scoring_a_teacher_with_lists_matches_the_model(tmp_path):
    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), TINY)
    info = list_info()
    model = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=1)
    path = str(tmp_path / "teacher" / "serving_model")
    model.serving_model().save(path)
    cols = list_examples(30, seed=4)
    cols["row"] = np.arange(30, dtype=np.int64)
    write_examples(str(tmp_path / "data" / "train-00000-of-00001.tfrecord.gz"), cols)
    types = model_input_types(info)
    assert types["hist_items"] == ("int64", [6]) and types["price_ple"] == ("float32", [4])
    handler = TeacherModelHandler(path, types, {"click": "click_logit"}, batch_size=7)
    out = str(tmp_path / "scores")
    counts = score_splits({"train": str(tmp_path / "data" / "train-*.tfrecord.gz")}, out, handler,
                          options=pipeline_options(_Beam()))
    assert counts["train"] == {"rows_in": 30, "rows_scored": 30, "rows_dead_letter": 0}
    files = sorted(glob.glob(os.path.join(fs.published(out), "train-*.tfrecord.gz")))
    rows = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    got = {int(e.features.feature["row"].int64_list.value[0]):
           e.features.feature[teacher_logit_key("click")].float_list.value[0] for e in rows}
    expected = model.serving_model()({k: tf.constant(cols[k]) for k in info.model_inputs})["click_logit"].numpy()
    np.testing.assert_allclose([got[i] for i in range(30)], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [("int64", [0]), ("string", [3]), ("float32", ["x"]), ("int64",)])
def test_handler_rejects_bad_shaped_types(bad):
    with pytest.raises(ValueError, match="feature_dtypes"):
        TeacherModelHandler("m", {"a": bad}, {"click": "click_logit"})
