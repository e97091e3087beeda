"""Fixtures of the serving tests: tiny SavedModels, the exported fake run, a running server."""
import os
import shutil

import pytest

from tests.fakes.serving_models import publish_tiny


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A base directory with model 'tiny' version 1 (scale 1.0)."""
    base = str(tmp_path_factory.mktemp("tiny_base"))
    publish_tiny(base, 1, 1.0)
    return base


@pytest.fixture(scope="session")
def fake_run(exported_fake_run):
    """The session's exported fake run (``tests/conftest.py``): teacher only, one blessed version."""
    return exported_fake_run


@pytest.fixture(scope="module")
def server(tiny_base):
    """A server on ephemeral ports over ``tiny_base`` (read-only: tests that publish use ``own_base``)."""
    from serving.server import ModelServer

    srv = ModelServer(tiny_base, rest_port=0, grpc_port=0, poll_seconds=0.1, max_batch_size=8).start()
    assert srv.store.wait_for_version("tiny", 1, timeout=30)
    yield srv
    srv.stop()


@pytest.fixture
def own_base(tmp_path, tiny_base):
    base = str(tmp_path / "base")
    shutil.copytree(tiny_base, base)
    return base


@pytest.fixture(scope="session")
def list_run(tmp_path_factory):
    """The session's exported fake run with list features (``exported_list_run``): teacher
    ``ranker`` and student ``student`` (without ``hist_items``), one blessed version each."""
    from tests.fakes.serving_models import exported_list_run

    return exported_list_run(tmp_path_factory)


# ----------------------------------------------------------------------------- multi-head models (helper A)
def build_multi_head_savedmodel(path: str, scale: float = 1.0, share_input: bool = True) -> str:
    """A tiny SavedModel with one signature per TF Serving API over one float feature ``x``
    of serialized ``tf.Example``s, p = sigmoid(scale * x):

    * ``serving_default`` (predict): ``examples`` -> ``click_probability`` [n];
    * ``predict_raw`` (predict): ``x`` float32 [n] -> ``click_probability`` [n];
    * ``classification`` (classify): ``inputs`` -> ``scores`` float32 [n, 2] (1 - p, p) and
      ``classes`` string [n, 2] ("0", "1");
    * ``regression`` (regress): ``inputs`` -> ``outputs`` float32 [n] (p);
    * ``regression_half`` (regress): ``inputs`` -> ``outputs`` [n] (p / 2), always with its own
      input tensor.

    ``share_input``: ``classification`` and ``regression`` read one input tensor (what the
    export's rewrite does, ``serving.signatures``); else each has its own placeholder.
    """
    import tensorflow as tf

    from core.feature_specs import FLOAT32, _scalar
    from serving.signatures import CLASSIFY_METHOD, REGRESS_METHOD, _rewrite_saved_model, _share_input
    from serving.signatures import set_method_names

    spec = {"x": _scalar(FLOAT32)}  # one float per example (the spec builders live in core.feature_specs)

    class _Multi(tf.Module):
        def __init__(self):
            super().__init__()
            self.scale = tf.Variable(scale, dtype=tf.float32)

        def _p(self, examples):
            return tf.sigmoid(self.scale * tf.io.parse_example(examples, spec)["x"])

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            return {"click_probability": self._p(examples)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def raw(self, x):
            return {"click_probability": tf.sigmoid(self.scale * x)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            p = self._p(inputs)
            n = tf.shape(p)[0]
            return {"scores": tf.stack([1.0 - p, p], axis=1), "classes": tf.tile([["0", "1"]], [n, 1])}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": self._p(inputs)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress_half(self, inputs):
            return {"outputs": self._p(inputs) / 2.0}

    m = _Multi()
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve, "predict_raw": m.raw,
                                             "classification": m.classify, "regression": m.regress,
                                             "regression_half": m.regress_half})
    set_method_names(path, {"classification": CLASSIFY_METHOD, "regression": REGRESS_METHOD,
                            "regression_half": REGRESS_METHOD})
    if share_input:
        _rewrite_saved_model(path, lambda mg: _share_input(mg, ("classification", "regression"), path))
    return path


def publish_multi(base: str, version: int, scale: float, name: str = "multi", share_input: bool = True) -> str:
    """``build_multi_head_savedmodel`` in a hidden dir renamed into ``<base>/<name>/<version>``."""
    model_dir = os.path.join(base, name)
    os.makedirs(model_dir, exist_ok=True)
    tmp = os.path.join(model_dir, f".tmp-{version}")
    build_multi_head_savedmodel(tmp, scale, share_input)
    os.rename(tmp, os.path.join(model_dir, str(version)))
    return os.path.join(model_dir, str(version))


@pytest.fixture(scope="session")
def multi_base(tmp_path_factory):
    """Model ``multi`` versions 1 (scale 1.0) and 2 (scale 3.0), inputs shared, and model
    ``separate`` version 1 (scale 1.0) whose classification and regression inputs differ."""
    base = str(tmp_path_factory.mktemp("multi_base"))
    publish_multi(base, 1, 1.0)
    publish_multi(base, 2, 3.0)
    publish_multi(base, 1, 1.0, name="separate", share_input=False)
    return base
