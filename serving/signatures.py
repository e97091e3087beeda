"""The exported ``tf.Module``: TF Transform graph + Keras serving model behind TF Serving signatures.

``ServingModule`` holds the ``tft.TFTransformOutput.transform_features_layer()`` (so its
vocabulary assets are exported with the model) and the Keras serving model (main towers
only). Its signatures:

* ``serving_default``: ``examples`` (serialized raw ``tf.Example``, string ``[None]``) ->
  one ``<task>_probability`` per model probability output (``ctcvr_probability`` in ESMM
  mode), each float32 ``[None]``;
* ``predict_raw``: one tensor per raw feature (string for categoricals, float32 for
  numerics, ``[None]``), keyed by the column names exactly as configured (``item-price``
  stays ``item-price``) -> the same outputs, for JSON clients;
* ``classification`` (method ``tensorflow/serving/classify``): ``inputs`` (serialized
  examples) -> ``scores`` float32 ``[None, 2]`` (P(0), P(1)) and ``classes`` string
  ``[None, 2]`` ("0", "1") for the configured task;
* ``regression`` (method ``tensorflow/serving/regress``): ``inputs`` -> ``outputs``
  float32 ``[None]``, the configured task's probability.

``tf.saved_model.save`` marks every signature as a predict signature; ``set_method_names``
rewrites the two method names in ``saved_model.pb`` afterwards, which is what TF Serving's
Classify/Regress APIs and tfx-bsl's RunInference check.
"""
from __future__ import annotations

import os
import re

import tensorflow as tf

from core.feature_specs import dummy_batch

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
PROBABILITY_SUFFIX = "_probability"

# What a SignatureDef input key built from a TensorSpec name can be (TensorFlow's op-name
# rule). ``core.config`` admits only feature names that match it, so this is a safety net.
SIGNATURE_KEY = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\-]*")


def probability_outputs(output_names) -> list[str]:
    """The model outputs a serving signature returns: every ``*_probability``, in order."""
    names = [n for n in output_names if n.endswith(PROBABILITY_SUFFIX)]
    if not names:
        raise ValueError(f"the serving model has no '*{PROBABILITY_SUFFIX}' output. Received outputs: {list(output_names)}")
    return names


class ServingModule(tf.Module):
    """Raw features in, per-task probabilities out; see the module docstring for signatures.

    Args:
      tft_layer: ``TFTransformOutput.transform_features_layer()``.
      keras_model: the serving model: dict of ``model_inputs`` -> dict of outputs.
      feature_spec: raw ``tf.io`` parsing spec (``core.feature_specs.serving_feature_spec``).
      model_inputs: transformed feature names the model reads.
      classification_task: task whose probability the classify/regress signatures return.
    """

    def __init__(self, tft_layer, keras_model, feature_spec: dict, model_inputs: list[str], classification_task: str):
        super().__init__(name="serving_module")
        self.tft_layer = tft_layer
        self.model = keras_model
        self._feature_spec = dict(feature_spec)
        bad = [k for k in self._feature_spec if not SIGNATURE_KEY.fullmatch(k)]
        if bad:
            raise ValueError(f"raw feature name(s) {bad} cannot be predict_raw signature keys (allowed: letters, digits, "
                             "'_', '-' and '.', not starting with '_' or '-'); rename the column(s)")
        self._model_inputs = list(model_inputs)
        self._outputs = None
        # One raw row of defaults ('' / 0) traces the chain and gives the output names.
        self._outputs = probability_outputs(self._predict(dummy_batch(self._feature_spec, 1)).keys())
        key = f"{classification_task}{PROBABILITY_SUFFIX}"
        if key not in self._outputs:
            raise ValueError(f"classification_task {classification_task!r}: the model has no output {key!r}. "
                             f"Received outputs: {self._outputs}")
        self._class_key = key

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def _predict(self, raw: dict) -> dict:
        transformed = self.tft_layer(dict(raw))
        missing = [k for k in self._model_inputs if k not in transformed]
        if missing:
            raise ValueError(f"the transform graph does not produce model input(s) {missing}")
        outputs = self.model({k: transformed[k] for k in self._model_inputs}, training=False)
        keys = self._outputs if self._outputs is not None else list(outputs)
        return {k: tf.reshape(tf.cast(outputs[k], tf.float32), [-1]) for k in keys}

    def _parse(self, examples):
        return tf.io.parse_example(examples, self._feature_spec)

    def signatures(self) -> dict:
        """Concrete functions keyed by signature name, ready for ``tf.saved_model.save``."""
        # One dict argument, keyed by the raw feature names as the user wrote them. The
        # SignatureDef input keys come from the TensorSpec names (so they are the user's names
        # too); ``**kwargs`` would not do: tf.function rewrites keyword names that are not
        # Python identifiers (``item-price`` -> ``item_price``) and the TF Transform layer
        # then rejects the inputs.
        raw_specs = {k: tf.TensorSpec([None], v.dtype, name=k) for k, v in self._feature_spec.items()}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serving_default(examples):
            return self._predict(self._parse(examples))

        @tf.function(input_signature=[raw_specs])
        def predict_raw(raw):
            return self._predict(raw)

        predict_raw_fn = predict_raw.get_concrete_function()

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classification(inputs):
            p = self._predict(self._parse(inputs))[self._class_key]
            scores = tf.stack([1.0 - p, p], axis=1)
            classes = tf.tile(tf.constant([["0", "1"]]), [tf.shape(p)[0], 1])
            return {"scores": scores, "classes": classes}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regression(inputs):
            return {"outputs": self._predict(self._parse(inputs))[self._class_key]}

        return {
            "serving_default": serving_default.get_concrete_function(),
            "predict_raw": predict_raw_fn,
            "classification": classification.get_concrete_function(),
            "regression": regression.get_concrete_function(),
        }


def save_serving_module(module: ServingModule, export_dir: str) -> None:
    """Saves the module with its signatures and sets the classify/regress method names."""
    tf.saved_model.save(module, export_dir, signatures=module.signatures())
    set_method_names(export_dir, {"classification": CLASSIFY_METHOD, "regression": REGRESS_METHOD})


def set_method_names(export_dir: str, methods: dict[str, str]) -> None:
    """Rewrites ``method_name`` of the named signatures in ``export_dir/saved_model.pb``."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(export_dir, "saved_model.pb")
    sm = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        sm.ParseFromString(f.read())
    for mg in sm.meta_graphs:
        for name, method in methods.items():
            if name not in mg.signature_def:
                raise ValueError(f"signature {name!r} not in {export_dir}. Received: {sorted(mg.signature_def)}")
            mg.signature_def[name].method_name = method
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(sm.SerializeToString())
    os.replace(tmp, path)
