"""Layers: config round trips, shapes, and invalid arguments."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models.backbones import MMoE, PLE, SharedBottom
from models.embedding import FeatureEmbedding
from models.interaction import CrossNetwork
from models.mlp import MLP
from models.towers import FunnelProduct, Tower

X = tf.random.stateless_normal([5, 12], seed=[1, 2])

LAYERS = [
    (MLP, {"units": [8, 4], "dropout": 0.1, "l2": 0.01}),
    (Tower, {"units": [6], "dropout": 0.0, "l2": 0.0}),
    (Tower, {"units": [], "dropout": 0.0, "l2": 0.0}),
    (SharedBottom, {"num_tasks": 2, "units": [8], "dropout": 0.0, "l2": 0.0}),
    (MMoE, {"num_tasks": 2, "num_experts": 3, "expert_units": [8], "dropout": 0.0, "l2": 0.0}),
    (PLE, {"num_tasks": 2, "num_shared": 2, "num_specific": 1, "expert_units": [8], "levels": 2, "dropout": 0.0, "l2": 0.0}),
    (CrossNetwork, {"num_layers": 2, "projection_dim": 4, "l2": 0.0}),
]


@pytest.mark.parametrize("cls,kwargs", LAYERS, ids=lambda x: getattr(x, "__name__", ""))
def test_get_config_round_trip_gives_same_outputs(cls, kwargs):
    layer = cls(**kwargs)
    out = layer(X)
    config = layer.get_config()
    for k, v in kwargs.items():
        assert config[k] == v
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is cls
    clone(X)
    clone.set_weights(layer.get_weights())
    tf.nest.map_structure(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), out, clone(X))


def test_feature_embedding_config_round_trip_and_width():
    layer = FeatureEmbedding({"device": 3, "user": 50}, ["price"], embedding_dim=8, name="emb")
    feats = {"device": tf.constant([0, 2]), "user": tf.constant([7, 49]), "price": tf.constant([0.5, -1.0])}
    out = layer(feats)
    assert out.shape == (2, 3 + 8 + 1) == (2, layer.output_dim)  # device capped at its 3 categories
    np.testing.assert_allclose(out[:, -1], [0.5, -1.0])
    clone = FeatureEmbedding.from_config(layer.get_config())
    clone(feats)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(feats), out)


def test_backbones_return_one_representation_per_task():
    for layer in (SharedBottom(3, [8]), MMoE(3, 2, [8]), PLE(3, 1, 1, [8], levels=2)):
        reps = layer(X)
        assert len(reps) == 3 and all(r.shape == (5, 8) for r in reps)


def test_mmoe_task_representations_differ_through_their_gates():
    reps = MMoE(2, 4, [8])(X)
    assert not np.allclose(reps[0], reps[1])


def test_funnel_product_is_the_logit_of_the_product_of_probabilities():
    a, b = tf.constant([-3.0, 0.0, 2.0, 8.0]), tf.constant([1.0, -2.0, 0.5, 9.0])
    got = tf.sigmoid(FunnelProduct()([a, b]))
    np.testing.assert_allclose(got, tf.sigmoid(a) * tf.sigmoid(b), rtol=1e-5)


@pytest.mark.parametrize("make,match", [
    (lambda: MLP([8, 0]), "units"),
    (lambda: MLP([8], dropout=1.0), "dropout"),
    (lambda: SharedBottom(0, [8]), "num_tasks"),
    (lambda: MMoE(2, 0, [8]), "num_experts"),
    (lambda: MMoE(2, 2, []), "expert_units"),
    (lambda: PLE(2, 1, -1, [8]), "num_specific"),
    (lambda: PLE(2, 1, 1, [8], levels=0), "levels"),
    (lambda: CrossNetwork(0), "num_layers"),
    (lambda: CrossNetwork(1, projection_dim=0), "projection_dim"),
    (lambda: FeatureEmbedding({}, [], 4), "at least one"),
    (lambda: FeatureEmbedding({"a": 0}, [], 4), "'a'"),
    (lambda: FeatureEmbedding({"a": 3}, [], 0), "embedding_dim"),
])
def test_invalid_arguments_raise_naming_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_feature_embedding_names_missing_inputs():
    layer = FeatureEmbedding({"device": 3}, ["price"], 4)
    with pytest.raises(ValueError, match="price"):
        layer({"device": tf.constant([1])})


def test_cross_network_represents_a_pairwise_product():
    """With W = the swap of two coordinates and b = 0, one cross layer outputs x * swap(x) + x,
    so the product x_0 * x_1 (an affinity an MLP can only approximate) is in its output."""
    cross = CrossNetwork(num_layers=1)
    x = tf.constant([[2.0, 3.0], [-1.0, 4.0]])
    cross(x)
    kernel = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    dense = cross.crosses[0]._dense
    dense.set_weights([kernel, np.zeros(2, np.float32)])
    np.testing.assert_allclose(cross(x).numpy(), [[2 * 3 + 2, 3 * 2 + 3], [-1 * 4 - 1, 4 * -1 + 4]])
