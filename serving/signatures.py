"""The exported ``tf.Module``: TF Transform graph + Keras serving model behind TF Serving signatures.

``ServingModule`` holds the ``tft.TFTransformOutput.transform_features_layer()`` (so its
vocabulary assets are exported with the model) and the Keras serving model (main towers
only). Its signatures:

* ``serving_default``: ``examples`` (serialized raw ``tf.Example``, string ``[None]``) ->
  one ``<task>_probability`` per model probability output (``ctcvr_probability`` in ESMM
  mode), each float32 ``[None]``;
* ``predict_raw``: one tensor per raw feature column, keyed by the column names exactly as
  configured (``item-price`` stays ``item-price``) -> the same outputs, for JSON clients;
* ``classification`` (method ``tensorflow/serving/classify``): ``inputs`` (serialized
  examples) -> ``scores`` float32 ``[None, 2]`` (P(0), P(1)) and ``classes`` string
  ``[None, 2]`` ("0", "1") for the configured task;
* ``regression`` (method ``tensorflow/serving/regress``): ``inputs`` -> ``outputs``
  float32 ``[None]``, the configured task's probability.

List features (``data.lists``): the representation decision
-------------------------------------------------------------
* ``serving_default`` / ``classification`` / ``regression`` take the raw ``tf.Example``: a
  list feature is a ``bytes_list`` with any number of values (absent = the empty list), its
  weight column (``weights: <column>``) a ``float_list`` with one weight per value. They are
  parsed with ``core.feature_specs.serving_feature_spec`` (``VarLenFeature``) into
  ``SparseTensor``s, which the TF Transform layer takes as they are. A list and its weight
  column with different numbers of values in one example is an ``INVALID_ARGUMENT`` (400).
* ``predict_raw`` takes the **padded** representation: a list feature is a dense string
  tensor ``[batch, width]`` (TensorSpec ``[None, None]``) padded with ``""``; every ``""``
  is dropped (a real value is never ``""``: validation rejects empty values), wherever it
  stands. Its weight column is a dense float32 ``[batch, width]`` of the same shape, aligned
  with the list; the entries at the ``""`` positions are ignored (so a weight of 0.0 is a
  real weight, never padding). Inside the signature the kept positions become the same
  ``SparseTensor``s ``serving_default`` parses (row-major, column indices 0..n-1 per row,
  dense shape ``[batch, longest list]``), so both signatures feed the TF Transform layer
  identical tensors. A weight tensor whose shape differs from its list's is an
  ``INVALID_ARGUMENT``.
* Over JSON (TF Serving's REST API, row ``instances`` and columnar ``inputs``) a list
  feature is a JSON list per instance. TF Serving's JSON tensors are dense: instances whose
  lists have different lengths are rejected with 400 and TF Serving's own message
  (``serving/json_codec.py``); clients pad with ``""`` to one width (``serving.client``,
  ``serving.raw_examples.to_columns``). Over gRPC a ``TensorProto`` of dtype ``DT_STRING``
  and shape ``[batch, width]`` is the input; a ragged or composite representation (a rank-1
  tensor of values, a ``DT_VARIANT`` tensor, separate values/row-splits inputs) is an
  ``INVALID_ARGUMENT``. In short: padded representation; ragged rejected with 400.
* A model that reads a subset of the features (``model.features``, a student's
  ``distill.student.features``) is exported with only the raw columns it needs
  (``core.features.raw_columns_for``): the parsing spec and the ``predict_raw`` inputs
  leave the skipped columns out, and the TF Transform layer, called without them, drops
  the outputs that depend on them. A client need not send the skipped features.

``tf.saved_model.save`` marks every signature as a predict signature and gives each its own
input placeholder. ``save_serving_module`` then rewrites ``saved_model.pb`` once: the two
method names (what TF Serving's Classify/Regress APIs and tfx-bsl's RunInference check), and
``classification`` and ``regression`` reading one shared input tensor
(``classification_inputs:0``), which tfx-bsl's RunInference with both signatures at once (a
multi-head BulkInferrer) requires ("Input tensor must be the same for all Signatures.", as TF
Serving's MultiInference did before 2.4; since 2.4 it feeds each distinct input tensor, so
one shared tensor is also parsed once).
"""
from __future__ import annotations

import re
from typing import Mapping

import tensorflow as tf

from core import fs
from core.feature_specs import dummy_batch
from serving.raw_examples import LIST_PAD

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


def _is_var_len(spec) -> bool:
    return isinstance(spec, tf.io.VarLenFeature)


def padded_to_sparse(values, weights=None, name: str = "", weights_name: str = ""):
    """A padded list ``[batch, width]`` (``""`` = padding) as the ``SparseTensor`` that
    parsing a ``VarLenFeature`` gives (row-major, column indices 0..n-1 per row, dense shape
    ``[batch, longest list]``), and its aligned weights ``[batch, width]`` gathered at the
    same positions (None without weights).

    Every ``""`` is dropped wherever it stands; a weight's value never marks padding (0.0
    is a real weight). ``weights`` of another shape than ``values`` fails with
    ``InvalidArgumentError``.
    """
    values = tf.convert_to_tensor(values, tf.string)
    keep = tf.not_equal(values, LIST_PAD)
    positions = tf.where(keep)  # [n, 2] row-major
    kept = tf.cast(keep, tf.int64)
    columns = tf.gather_nd(tf.cumsum(kept, axis=1, exclusive=True), positions)
    indices = tf.stack([positions[:, 0], columns], axis=1)
    lengths = tf.reduce_sum(kept, axis=1)
    dense_shape = tf.stack([tf.shape(values, out_type=tf.int64)[0],
                            tf.reduce_max(tf.concat([lengths, tf.zeros([1], tf.int64)], 0))])
    sparse = tf.sparse.SparseTensor(indices, tf.gather_nd(values, positions), dense_shape)
    if weights is None:
        return sparse, None
    weights = tf.convert_to_tensor(weights, tf.float32)
    check = tf.debugging.Assert(
        tf.reduce_all(tf.equal(tf.shape(weights), tf.shape(values))),
        [f"predict_raw: weight column '{weights_name}' must have the shape of its list '{name}' ([batch, width], "
         f"aligned value by value)"])
    with tf.control_dependencies([check]):
        weight_values = tf.gather_nd(weights, positions)
    return sparse, tf.sparse.SparseTensor(indices, weight_values, dense_shape)


def _row_lengths(sparse, batch):
    return tf.math.bincount(tf.cast(sparse.indices[:, 0], tf.int32), minlength=batch, maxlength=batch,
                            dtype=tf.int64)


class InlinedTransform:
    """The TF Transform graph of a ``tft.TransformFeaturesLayer`` copied op by op into the
    ``tf.function`` being traced, instead of called as one opaque function.

    Why: the transform graph TF Transform saves has its control dependencies stripped, so its
    vocabulary lookups (stateful ops) are not reachable from the function's control outputs;
    TensorFlow's function inliner then refuses it ("Can't guarantee execution of a
    side-effectful node"), and in the served graph (TF1 session, as TF Serving runs it) the
    transform stays a separate function call: its ~400 ops run in a function executor of
    their own on every request, and grappler optimises them without seeing the caller (no
    pruning of the outputs the model does not read, no folding with the parse outputs).
    Copied into the caller (``tf.graph_util.import_graph_def`` of the restored transform
    function's graph, its inputs mapped to the raw tensors and its captured resources, the
    vocabulary tables, to the caller's captures of the same handles), the ops get the
    caller's automatic control dependencies, the whole signature inlines into one graph and
    grappler prunes and folds across it. The ops, constants and tables are the same, so the
    outputs are the layer's bit for bit.

    ``__call__(raw, keys)``: raw column -> tensor (``SparseTensor`` for a list) of any subset
    of the transform's inputs (the others are fed TF Transform's own placeholders for
    missing inputs, and outputs that depend on them are not produced, as the layer does) ->
    ``{key: tensor}`` for ``keys``; executing eagerly it calls the layer.

    Raises:
      ValueError: a key the transform does not produce from the given columns.
    """

    def __init__(self, layer):
        self.layer = layer
        self._loader = layer._saved_model_loader  # TF Transform's loaded transform_fn (TF2 SavedModel)
        self._function = self._loader._wrapped_function
        self._graph_def = None

    @staticmethod
    def supports(layer) -> bool:
        """True for a ``tft.TransformFeaturesLayer`` over a TF2 transform output (the
        pipeline's); a TF1 transform output, or any other callable, is called as it is."""
        try:
            import tensorflow_transform as tft
        except ImportError:  # pragma: no cover  (a pinned dependency)
            return False
        return isinstance(layer, tft.TransformFeaturesLayer) and not layer._saved_model_loader.load_v2_in_compat

    def __call__(self, raw: dict, keys) -> dict:
        keys = list(keys)
        loader, fn = self._loader, self._function
        unfed = loader._get_unfed_input_keys(raw.keys())
        produced = set(loader._get_fetches_keys(loader._get_feeds(unfed)))
        missing = [k for k in keys if k not in produced]
        if missing:
            raise ValueError(f"the transform graph does not produce model input(s) {missing}")
        if tf.executing_eagerly():
            out = self.layer(dict(raw))
            return {k: out[k] for k in keys}
        inputs = dict(raw)
        inputs.update(loader._get_missing_inputs(unfed, batch_size=1))
        flat = tf.nest.flatten(inputs, expand_composites=True)  # the function's argument order
        graph = tf.compat.v1.get_default_graph()
        input_map = {p.name: t for p, t in zip(fn.inputs[:len(flat)], flat)}
        input_map.update({p.name: graph.capture(c) for p, c in zip(fn.inputs[len(flat):], fn.captured_inputs)})
        structured = {k: loader.structured_outputs[k] for k in keys}
        components = tf.nest.flatten(structured, expand_composites=True)
        if self._graph_def is None:
            self._graph_def = fn.graph.as_graph_def()
        imported = tf.graph_util.import_graph_def(self._graph_def, input_map=input_map,
                                                  return_elements=[t.name for t in components], name="transform")
        for new, old in zip(imported, components):
            new.set_shape(old.shape)
        return tf.nest.pack_sequence_as(structured, imported, expand_composites=True)


class ServingModule(tf.Module):
    """Raw features in, per-task probabilities out; see the module docstring for signatures.

    Args:
      tft_layer: ``TFTransformOutput.transform_features_layer()``.
      keras_model: the serving model: dict of ``model_inputs`` -> dict of outputs.
      feature_spec: raw ``tf.io`` parsing spec (``core.feature_specs.serving_feature_spec``,
        restricted to the columns the model needs): ``FixedLenFeature`` scalars,
        variable-length ``tf.string`` lists and variable-length ``tf.float32`` weight columns.
      model_inputs: transformed feature names the model reads.
      classification_task: task whose probability the classify/regress signatures return.
      list_weights: list column -> its weight column (``core.config.weight_columns``); pairs
        whose list is not in ``feature_spec`` are ignored.
      inline_transform: copy a ``tft.TransformFeaturesLayer``'s graph into the signatures
        (``InlinedTransform``: same outputs, fewer ops per request) instead of calling it as
        one function; False exports the layer call as it is (to measure the difference).

    Raises:
      ValueError: a column name no signature key can hold, a float ``VarLenFeature`` that is
        no list's weight column, or an unknown classification task.
    """

    def __init__(self, tft_layer, keras_model, feature_spec: dict, model_inputs: list[str], classification_task: str,
                 list_weights: Mapping[str, str] | None = None, inline_transform: bool = True):
        super().__init__(name="serving_module")
        self.tft_layer = tft_layer
        self._inlined = InlinedTransform(tft_layer) if inline_transform and InlinedTransform.supports(tft_layer) else None
        self.model = keras_model
        self._feature_spec = dict(feature_spec)
        bad = [k for k in self._feature_spec if not SIGNATURE_KEY.fullmatch(k)]
        if bad:
            raise ValueError(f"raw feature name(s) {bad} cannot be predict_raw signature keys (allowed: letters, digits, "
                             "'_', '-' and '.', not starting with '_' or '-'); rename the column(s)")
        var_len = {k: s for k, s in self._feature_spec.items() if _is_var_len(s)}
        # list column -> its weight column (or None), in spec order
        self._lists = {k: None for k, s in var_len.items() if s.dtype == tf.string}
        for name, column in (list_weights or {}).items():
            if name in self._lists and column in var_len:
                self._lists[name] = column
        paired = {w for w in self._lists.values() if w}
        stray = [k for k, s in var_len.items() if s.dtype != tf.string and k not in paired]
        if stray:
            raise ValueError(f"variable-length column(s) {stray} are no list's weight column (list_weights: "
                             f"{dict(list_weights or {})})")
        self._model_inputs = list(model_inputs)
        self._outputs = None
        # One raw row of defaults ('' / 0, empty lists) traces the chain and gives the output names.
        self._outputs = probability_outputs(self._predict(dummy_batch(self._feature_spec, 1)).keys())
        key = f"{classification_task}{PROBABILITY_SUFFIX}"
        if key not in self._outputs:
            raise ValueError(f"classification_task {classification_task!r}: the model has no output {key!r}. "
                             f"Received outputs: {self._outputs}")
        self._class_key = key

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    @property
    def list_columns(self) -> dict:
        """List column -> its weight column (None when unweighted or weighted by tokens)."""
        return dict(self._lists)

    def _predict(self, raw: dict) -> dict:
        return self.score(self.transform(raw))

    def transform(self, raw: dict) -> dict:
        """The TF Transform layer on the raw columns (parsed or from ``predict_raw``): model
        input name -> transformed tensor (``core.feature_specs.model_input_types`` shapes).
        A TF Transform layer is copied into the traced graph (``InlinedTransform``) unless
        ``inline_transform=False``."""
        if self._inlined is not None:
            return self._inlined(raw, self._model_inputs)
        transformed = self.tft_layer(dict(raw))
        missing = [k for k in self._model_inputs if k not in transformed]
        if missing:
            raise ValueError(f"the transform graph does not produce model input(s) {missing}")
        return {k: transformed[k] for k in self._model_inputs}

    def score(self, transformed: dict) -> dict:
        """The Keras serving model on the transformed model inputs: probability output name
        -> float32 ``[batch]``."""
        outputs = self.model(transformed, training=False)
        keys = self._outputs if self._outputs is not None else list(outputs)
        return {k: tf.reshape(tf.cast(outputs[k], tf.float32), [-1]) for k in keys}

    def parse(self, examples) -> dict:
        """Serialized raw ``tf.Example``s ``[batch]`` -> the raw columns of the parsing spec
        (dense ``[batch]`` scalars, ``SparseTensor`` lists and weight columns), one parse op;
        a list and its weight column of different lengths fail with ``InvalidArgumentError``."""
        return self._parse(examples)

    def _parse(self, examples):
        parsed = tf.io.parse_example(examples, self._feature_spec)
        checks = []
        for name, column in self._lists.items():
            if column:
                batch = tf.shape(examples)[0]
                checks.append(tf.debugging.Assert(
                    tf.reduce_all(tf.equal(_row_lengths(parsed[name], batch), _row_lengths(parsed[column], batch))),
                    [f"feature '{column}' must hold one weight per value of the list feature '{name}'"]))
        if checks:
            with tf.control_dependencies(checks):
                parsed = {k: tf.identity(v) if isinstance(v, tf.Tensor) else
                          tf.sparse.SparseTensor(tf.identity(v.indices), v.values, v.dense_shape)
                          for k, v in parsed.items()}
        return parsed

    def _from_padded(self, raw: dict) -> dict:
        """``predict_raw``'s padded lists as the ``SparseTensor``s ``_parse`` gives."""
        out = dict(raw)
        for name, column in self._lists.items():
            values, weights = padded_to_sparse(raw[name], raw[column] if column else None, name, column or "")
            out[name] = values
            if column:
                out[column] = weights
        return out

    def signatures(self) -> dict:
        """Concrete functions keyed by signature name, ready for ``tf.saved_model.save``."""
        # One dict argument, keyed by the raw feature names as the user wrote them. The
        # SignatureDef input keys come from the TensorSpec names (so they are the user's names
        # too); ``**kwargs`` would not do: tf.function rewrites keyword names that are not
        # Python identifiers (``item-price`` -> ``item_price``) and the TF Transform layer
        # then rejects the inputs. List and weight columns are padded [batch, width].
        raw_specs = {k: tf.TensorSpec([None, None] if _is_var_len(v) else [None], v.dtype, name=k)
                     for k, v in self._feature_spec.items()}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serving_default(examples):
            return self._predict(self._parse(examples))

        @tf.function(input_signature=[raw_specs])
        def predict_raw(raw):
            return self._predict(self._from_padded(raw))

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
    """Saves the module with its signatures, sets the classify/regress method names and makes
    the two share one input tensor (``_share_input``), in one rewrite of ``saved_model.pb``."""
    tf.saved_model.save(module, export_dir, signatures=module.signatures())
    _rewrite_saved_model(export_dir, lambda mg: (
        _set_method_names(mg, {"classification": CLASSIFY_METHOD, "regression": REGRESS_METHOD}, export_dir),
        _share_input(mg, SHARED_INPUT_SIGNATURES, export_dir)))


def read_signature_defs(export_dir: str) -> dict:
    """The SignatureDefs of ``export_dir/saved_model.pb`` (tag ``serve``), read from the proto
    without loading the model."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString(fs.read_bytes(fs.join(export_dir, "saved_model.pb")))
    for mg in sm.meta_graphs:
        if "serve" in mg.meta_info_def.tags:
            return dict(mg.signature_def)
    raise ValueError(f"{export_dir}: no meta graph with tag 'serve'")


def raw_input_columns(export_dir: str, signature: str = "predict_raw") -> dict[str, int]:
    """Input key -> rank of the ``predict_raw`` signature of an export: the raw columns the
    model needs (rank 1 a scalar column, rank 2 a padded list or weight column)."""
    defs = read_signature_defs(export_dir)
    if signature not in defs:
        raise ValueError(f"signature {signature!r} not in {export_dir}. Received: {sorted(defs)}")
    return {k: len(v.tensor_shape.dim) for k, v in defs[signature].inputs.items()}




def _rewrite_saved_model(export_dir: str, edit) -> None:
    """Applies ``edit(meta_graph)`` to every meta graph of ``export_dir/saved_model.pb`` and
    replaces the file atomically (``core.fs.write_atomic``)."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = fs.join(export_dir, "saved_model.pb")
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString(fs.read_bytes(path))
    for mg in sm.meta_graphs:
        edit(mg)
    fs.write_atomic(path, sm.SerializeToString())


def _set_method_names(mg, methods: dict[str, str], export_dir: str) -> None:
    for name, method in methods.items():
        if name not in mg.signature_def:
            raise ValueError(f"signature {name!r} not in {export_dir}. Received: {sorted(mg.signature_def)}")
        mg.signature_def[name].method_name = method


def set_method_names(export_dir: str, methods: dict[str, str]) -> None:
    """Rewrites ``method_name`` of the named signatures in ``export_dir/saved_model.pb``."""
    _rewrite_saved_model(export_dir, lambda mg: _set_method_names(mg, methods, export_dir))


# The signatures that take one serialized-example input and share its tensor: tfx-bsl's
# multi-signature RunInference (and TF Serving's MultiInference before 2.4) feed one tensor to all.
SHARED_INPUT_SIGNATURES = ("classification", "regression")


def _share_input(mg, names, export_dir: str) -> None:
    """Makes the signatures ``names`` (one input each) read the first one's input tensor.

    ``tf.saved_model.save`` gives every signature its own placeholder (``<signature>_<arg>``)
    feeding its own call of the signature function. For each later signature, every node
    input that reads its placeholder is pointed at the first signature's placeholder, its
    placeholder is deleted, and its ``TensorInfo.name`` becomes the first one's. The function
    library (what TF2's ``tf.saved_model.load`` calls) is untouched; the TF1 loader (TF
    Serving's) can then feed one tensor to all of them.
    """
    missing = [n for n in names if n not in mg.signature_def]
    if missing:
        raise ValueError(f"signature(s) {missing} not in {export_dir}. Received: {sorted(mg.signature_def)}")
    infos = []
    for name in names:
        sig = mg.signature_def[name]
        if len(sig.inputs) != 1:
            raise ValueError(f"signature {name!r} of {export_dir} must have exactly one input to share it. "
                             f"Received: {sorted(sig.inputs)}")
        infos.append(next(iter(sig.inputs.values())))
    first = infos[0]
    shared = first.name.split(":")[0]
    for name, info in zip(names[1:], infos[1:]):
        if (info.dtype, info.tensor_shape) != (first.dtype, first.tensor_shape):
            raise ValueError(f"signature {name!r} input {info.name} differs in dtype or shape from {first.name}")
        own = info.name.split(":")[0]
        if own == shared:
            continue
        nodes = [n for n in mg.graph_def.node if n.name == own]
        if len(nodes) != 1 or nodes[0].op != "Placeholder":
            raise ValueError(f"signature {name!r} input {info.name} is not a placeholder of {export_dir}")
        for node in mg.graph_def.node:
            for k, ref in enumerate(node.input):
                if ref == own or ref.startswith(own + ":"):
                    node.input[k] = shared + ref[len(own):]
                elif ref == "^" + own:
                    node.input[k] = "^" + shared
        mg.graph_def.node.remove(nodes[0])
        info.name = first.name
