"""FeatureAdaptor: linear without bias, config round trip, invalid arguments."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models.adaptors import FeatureAdaptor


def test_adaptor_is_linear_without_bias():
    adaptor = FeatureAdaptor(units=3)
    x = tf.constant([[1.0, 2.0], [0.0, 0.0]])
    y = adaptor(x).numpy()
    assert y.shape == (2, 3)
    np.testing.assert_allclose(y[1], [0.0, 0.0, 0.0])  # no bias
    np.testing.assert_allclose(y[0], x.numpy()[0] @ adaptor.kernel.numpy(), rtol=1e-6)
    assert [v.name.split("/")[-1] for v in adaptor.weights] == ["kernel:0"]


def test_adaptor_config_round_trip():
    adaptor = FeatureAdaptor(units=5, kernel_initializer="zeros", name="adaptor_click")
    clone = keras.layers.deserialize(keras.layers.serialize(adaptor))
    assert isinstance(clone, FeatureAdaptor)
    assert clone.units == 5 and clone.name == "adaptor_click"
    np.testing.assert_allclose(clone(tf.ones([1, 2])).numpy(), [[0.0] * 5])


@pytest.mark.parametrize("units", [0, -1, 2.5, True])
def test_adaptor_rejects_bad_units(units):
    with pytest.raises(ValueError, match="units"):
        FeatureAdaptor(units=units)
