"""List pooling, DIN target attention, PLE embeddings and FeatureEmbedding with every feature kind:
shapes, get_config round trips, masking, the math on hand examples, shared tables."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from core.feature_specs import dummy_batch, serving_keras_inputs
from core.features import PAD_ID, FeatureInfo, ListInfo, list_weights_key
from models.embedding import FeatureEmbedding
from models.numeric_embedding import PiecewiseLinearEmbedding
from models.pooling import ListPooling, TargetAttention

E = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]],
              [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]],
              [[-50.0, 50.0], [1.0, 1.0], [2.0, 2.0]]], np.float32)  # (3, L=3, d=2)
M = np.array([[1, 1, 0], [1, 1, 1], [0, 0, 0]], np.float32)  # row 2: an empty list
W = np.array([[2.0, 0.5, 9.0], [1.0, 1.0, 3.0], [4.0, 4.0, 4.0]], np.float32)


def _no_nan(x):
    assert not np.isnan(np.asarray(x)).any()


# ------------------------------------------------------------------ ListPooling
@pytest.mark.parametrize("mode", ["sum", "mean", "sqrtn"])
def test_pooling_matches_the_formulas_on_a_hand_example(mode):
    got = ListPooling(mode)(tf.constant(E), mask=tf.constant(M)).numpy()
    total = np.array([[4.0, 6.0], [21.0, 24.0], [0.0, 0.0]])
    count = np.array([[2.0], [3.0], [0.0]])
    expected = {"sum": total, "mean": total / np.maximum(count, 1e-8), "sqrtn": total / np.sqrt(np.maximum(count, 1e-8))}
    np.testing.assert_allclose(got, expected[mode], rtol=1e-6)
    np.testing.assert_array_equal(got[2], [0.0, 0.0])  # an empty list pools to zeros, not NaN


@pytest.mark.parametrize("mode", ["sum", "mean", "sqrtn"])
def test_weighted_pooling(mode):
    got = ListPooling(mode)(tf.constant(E), mask=tf.constant(M), weights=tf.constant(W)).numpy()
    mw = M * W
    total = np.einsum("bl,bld->bd", mw, E)
    denom = {"sum": np.ones((3, 1)), "mean": np.maximum(mw.sum(1, keepdims=True), 1e-8),
             "sqrtn": np.sqrt(np.maximum((M * W ** 2).sum(1, keepdims=True), 1e-8))}[mode]
    np.testing.assert_allclose(got, total / denom, rtol=1e-6)
    np.testing.assert_allclose(got[0], {"sum": [3.5, 6.0], "mean": [3.5 / 2.5, 6.0 / 2.5],
                                        "sqrtn": [3.5 / np.sqrt(4.25), 6.0 / np.sqrt(4.25)]}[mode], rtol=1e-6)
    _no_nan(got)


@pytest.mark.parametrize("mode", ["sum", "mean", "sqrtn"])
def test_pooling_ignores_the_embeddings_of_padding(mode):
    layer = ListPooling(mode)
    changed = E.copy()
    changed[M == 0] = np.random.default_rng(0).normal(size=(int((M == 0).sum()), 2)) * 1e3
    np.testing.assert_allclose(layer(tf.constant(E), mask=tf.constant(M)),
                               layer(tf.constant(changed), mask=tf.constant(M)), rtol=1e-6)


def test_pooling_config_round_trip_and_bad_mode():
    layer = ListPooling("sqrtn", name="p")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is ListPooling and clone.mode == "sqrtn" and clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="mode"):
        ListPooling("max")


# ------------------------------------------------------------------ TargetAttention
def _numpy_din(att, q, k, m, w=None):
    """DIN's activation unit written out: a_j = MLP([q, k_j, q - k_j, q * k_j]), out = sum_j m_j w_j a_j k_j."""
    kernel, bias = att.kernel.numpy(), att.bias.numpy()
    qq = np.broadcast_to(q[:, None, :], k.shape)
    h = np.concatenate([qq, k, qq - k, qq * k], axis=-1) @ kernel + bias
    h = np.maximum(h, 0.0)
    for dense in att._hidden:
        h = np.maximum(h @ dense.kernel.numpy() + dense.bias.numpy(), 0.0)
    a = (h @ att._score.kernel.numpy() + att._score.bias.numpy())[..., 0]
    a = a * m * (1.0 if w is None else w)
    return np.einsum("bl,bld->bd", a, k)


@pytest.mark.parametrize("units", [[36], [6, 4]])
def test_attention_matches_a_hand_computed_din(units):
    rng = np.random.default_rng(1)
    q = rng.normal(size=(3, 2)).astype(np.float32)
    att = TargetAttention(units)
    out = att(tf.constant(q), tf.constant(E / 10), mask=tf.constant(M)).numpy()
    np.testing.assert_allclose(out, _numpy_din(att, q, E / 10, M), rtol=1e-5, atol=1e-5)
    weighted = att(tf.constant(q), tf.constant(E / 10), mask=tf.constant(M), weights=tf.constant(W)).numpy()
    np.testing.assert_allclose(weighted, _numpy_din(att, q, E / 10, M, W), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[2], [0.0, 0.0])  # all padding: zeros
    _no_nan(out)


def test_attention_masks_padding_and_uses_no_softmax():
    rng = np.random.default_rng(2)
    q = rng.normal(size=(3, 2)).astype(np.float32)
    att = TargetAttention([8])
    base = att(tf.constant(q), tf.constant(E), mask=tf.constant(M)).numpy()
    changed = E.copy()
    changed[M == 0] = rng.normal(size=(int((M == 0).sum()), 2)) * 1e3
    np.testing.assert_allclose(att(tf.constant(q), tf.constant(changed), mask=tf.constant(M)), base, rtol=1e-5)
    # No softmax: doubling the number of identical keys doubles the output (a normalised
    # attention would leave it unchanged).
    one = att(tf.constant(q[:1]), tf.constant(E[:1, :1]), mask=tf.ones([1, 1])).numpy()
    two = att(tf.constant(q[:1]), tf.constant(np.repeat(E[:1, :1], 2, axis=1)), mask=tf.ones([1, 2])).numpy()
    np.testing.assert_allclose(two, 2 * one, rtol=1e-5)


def test_attention_config_round_trip_gives_same_outputs():
    q, k, m = tf.constant(E[:, 0]), tf.constant(E), tf.constant(M)
    att = TargetAttention([5, 3], activation="sigmoid", name="att")
    out = att(q, k, mask=m)
    config = att.get_config()
    assert config["hidden_units"] == [5, 3] and config["activation"] == "sigmoid"
    clone = keras.layers.deserialize(keras.layers.serialize(att))
    assert type(clone) is TargetAttention
    clone(q, k, mask=m)
    clone.set_weights(att.get_weights())
    np.testing.assert_allclose(clone(q, k, mask=m), out, rtol=1e-6)
    with pytest.raises(ValueError, match="hidden_units"):
        TargetAttention([])


# ------------------------------------------------------------------ PLE
def test_ple_layer_shapes_math_and_config():
    x = tf.random.stateless_uniform([4, 3, 6], seed=[1, 1])
    layer = PiecewiseLinearEmbedding(5, name="ple")
    out = layer(x)
    assert out.shape == (4, 3, 5)
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    assert kernel.shape == (3, 6, 5) and bias.shape == (3, 5)  # one linear map per feature
    expected = np.maximum(np.einsum("bft,ftu->bfu", x.numpy(), kernel) + bias, 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert PiecewiseLinearEmbedding(5)(x[:, 0]).shape == (4, 5)
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x), out)
    assert clone.get_config()["units"] == 5 and clone.get_config()["activation"] == "relu"
    with pytest.raises(ValueError, match="units"):
        PiecewiseLinearEmbedding(0)


# ------------------------------------------------------------------ FeatureEmbedding
INFO = FeatureInfo(
    categorical={"item_id": 11, "user_id": 6, "device_x_hour": 13, "price_bucket": 4},  # incl. a cross and a bucket
    numeric=["price", "age"],
    lists={"hist_items": ListInfo(11, 5, "attention", False, "item_id", "item_id", "sequence"),
           "recent_items": ListInfo(11, 3, "mean", False, "item_id", None, "sequence"),
           "tags": ListInfo(9, 4, "sqrtn", True, "tags"),
           "hist_cats": ListInfo(7, 3, "sum", False, "item_category", None, "sequence")},  # owner not a feature
    piecewise={"price_ple": 8, "age_ple": 8, "x_ple": 3},
    tasks=["click"])


def _batch(n=6, seed=0, info=INFO):
    rng = np.random.default_rng(seed)
    b = {c: tf.constant(rng.integers(0, k, n), tf.int64) for c, k in info.categorical.items()}
    for name, li in info.lists.items():
        lengths = rng.integers(0, li.length + 1, n)
        lengths[0] = 0  # an empty list
        ids = np.full((n, li.length), PAD_ID, np.int64)
        for i, k in enumerate(lengths):
            ids[i, :k] = rng.integers(0, li.cardinality, k)
        b[name] = tf.constant(ids)
        if li.weighted:
            b[list_weights_key(name)] = tf.constant(np.where(ids >= 0, rng.uniform(0.5, 2.0, ids.shape), 0.0), tf.float32)
    b.update({x: tf.constant(rng.normal(size=n), tf.float32) for x in info.numeric})
    b.update({p: tf.constant(rng.uniform(size=(n, bins)), tf.float32) for p, bins in info.piecewise.items()})
    return b


def test_feature_embedding_with_every_kind_has_its_output_dim():
    layer = FeatureEmbedding.from_feature_info(INFO, 4, name="embedding")
    out = layer(_batch())
    # 4 categorical x 4 + 4 lists x 4 (hist_cats' table has 7 ids) + 2 numerics + 3 PLE x 4
    assert out.shape == (6, 4 * 4 + 4 * 4 + 2 + 3 * 4) == (6, layer.output_dim)
    _no_nan(out)
    # the tables: one per categorical, one for tags, one for hist_cats' owner (not a feature),
    # all 4 wide: row blocks of one variable
    assert sorted(layer.tables) == sorted(["item_id", "user_id", "device_x_hour", "price_bucket", "tags",
                                           "item_category"])
    assert [v.name for v in layer.weights if "/embeddings_" in v.name] == ["embedding/embeddings_4d/embeddings:0"]
    assert layer.table_variable("item_id").shape == (sum(layer.tables.values()), 4)
    assert layer.table("item_category").shape == (7, 4)
    # the numerics come through as they are, right after the pooled lists
    np.testing.assert_allclose(out[:, 32:34], np.stack([_batch()["price"], _batch()["age"]], -1))


def test_feature_embedding_config_round_trip_with_every_kind():
    layer = FeatureEmbedding.from_feature_info(INFO, 4, l2=0.01, attention_units=[6], name="embedding")
    batch = _batch()
    out = layer(batch)
    config = layer.get_config()
    assert config["lists"]["hist_items"]["target"] == "item_id" and config["piecewise"] == INFO.piecewise
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is FeatureEmbedding and clone.get_config() == config
    clone(batch)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(batch), out, rtol=1e-6)
    info = clone.feature_info()
    assert info.lists == INFO.lists and info.piecewise == INFO.piecewise
    assert info.model_inputs == INFO.model_inputs


def test_old_constructor_and_config_still_work():
    """A config saved before lists existed (cardinalities, numeric, embedding_dim, l2) loads."""
    old = {"name": "embedding", "trainable": True, "dtype": "float32",
           "cardinalities": {"device": 3}, "numeric": ["price"], "embedding_dim": 4, "l2": 0.0}
    layer = FeatureEmbedding.from_config(old)
    assert layer(dummy_batch(FeatureInfo(categorical={"device": 3}, numeric=["price"]))).shape == (2, 4)
    assert [v.name for v in layer.weights] == ["embedding/embeddings_3d/embeddings:0"]  # device: 3 ids, 3 wide


def test_shared_list_uses_its_owners_table():
    info = INFO.select(["item_id", "hist_items", "recent_items"])
    layer = FeatureEmbedding.from_feature_info(info, 4)
    batch = _batch(info=info)
    layer(batch)
    assert list(layer.tables) == ["item_id"]  # one table for item_id and both lists
    variable = layer.table_variable("item_id")
    with tf.GradientTape() as tape:
        out = layer(batch)
        loss = tf.reduce_sum(out[:, 4:8]) + tf.reduce_sum(out[:, 8:12])  # the two lists' parts only
    grad = tf.convert_to_tensor(tape.gradient(loss, variable))
    assert float(tf.reduce_sum(tf.abs(grad))) > 0  # the lists train item_id's table
    table = layer.table("item_id")
    # recent_items mean-pooled by hand from that table
    ids = batch["recent_items"].numpy()
    rows = table.numpy()[np.maximum(ids, 0)] * (ids >= 0)[..., None]
    expected = rows.sum(1) / np.maximum((ids >= 0).sum(1, keepdims=True), 1e-8)
    np.testing.assert_allclose(out[:, 8:12], expected, rtol=1e-5, atol=1e-6)
    # the attention's query is item_id's own embedding (the first part of the output)
    np.testing.assert_allclose(out[:, :4], table.numpy()[batch["item_id"].numpy()], rtol=1e-6)


def test_a_shared_list_without_its_owner_still_gets_the_table():
    info = INFO.select(["recent_items", "price"])
    layer = FeatureEmbedding.from_feature_info(info, 4)
    assert layer(_batch(info=info)).shape == (6, 4 + 1)
    assert list(layer.tables) == ["item_id"] and len(layer.weights) == 1
    assert layer.table("item_id").shape == (11, 4)


def test_padding_is_never_looked_up_and_empty_lists_give_zeros():
    info = INFO.select(["item_id", "hist_items", "tags", "hist_cats"])
    layer = FeatureEmbedding.from_feature_info(info, 4)
    n = 3
    batch = {"item_id": tf.constant([1, 2, 3], tf.int64),
             "hist_items": tf.constant([[4, 5, PAD_ID, PAD_ID, PAD_ID]] * n, tf.int64),
             "tags": tf.constant([[PAD_ID] * 4] * n, tf.int64),
             list_weights_key("tags"): tf.zeros([n, 4]),
             "hist_cats": tf.constant([[6, PAD_ID, PAD_ID]] * n, tf.int64)}
    out = layer(batch).numpy()
    _no_nan(out)
    np.testing.assert_array_equal(out[:, 8:12], 0.0)  # tags: all padding -> zeros
    # Other negative ids are padding too; padding never reaches the gather (no out-of-range error)
    other = dict(batch, hist_items=tf.constant([[4, 5, -7, PAD_ID, -100]] * n, tf.int64))
    np.testing.assert_allclose(layer(other), out, rtol=1e-6)


def test_list_larger_than_its_table_and_attention_without_target_are_rejected():
    with pytest.raises(ValueError, match="shares the table"):
        FeatureEmbedding({"item_id": 5}, [], 4, lists={"h": ListInfo(9, 3, "mean", False, "item_id")})
    with pytest.raises(ValueError, match="target"):
        FeatureEmbedding({"user_id": 5}, [], 4, lists={"h": ListInfo(5, 3, "attention", False, "item_id", "item_id")})
    with pytest.raises(ValueError, match="at least one"):
        FeatureEmbedding({}, [], 4, lists={}, piecewise={})


def test_feature_embedding_in_a_functional_model_with_serving_inputs():
    layer = FeatureEmbedding.from_feature_info(INFO, 4)
    inputs = serving_keras_inputs(INFO)
    model = keras.Model(inputs, layer(inputs))
    batch = _batch()
    np.testing.assert_allclose(model({k: batch[k] for k in INFO.model_inputs}), layer(batch), rtol=1e-6)
    assert inputs["hist_items"].shape.as_list() == [None, 5] and inputs["price_ple"].shape.as_list() == [None, 8]
