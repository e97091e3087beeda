"""Feature adaptors (Li & Bilen): a linear map, without bias, from the student's shared
representation to the teacher's representation of one task (the input of its task tower).

The adaptor exists only inside the distillation training model: the student's serving model
is built from the student alone, so no adaptor variable is ever exported.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


@keras.utils.register_keras_serializable(package="ranker")
class FeatureAdaptor(keras.layers.Layer):
    """Projects a student representation to a teacher's width: ``y = x W`` (no bias).

    Example:

    >>> adaptor = FeatureAdaptor(units=64, name="adaptor_click")
    >>> adaptor(tf.zeros([2, 32])).shape
    TensorShape([2, 64])

    Args:
      units: width of the teacher representation to match (> 0).
      kernel_initializer: initializer of ``W``.

    Call arguments:
      inputs: ``(batch, student_width)`` float tensor.

    Returns:
      ``(batch, units)`` float32 tensor.

    Raises:
      ValueError: if ``units`` is not a positive integer.
    """

    def __init__(self, units: int, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"units must be a positive integer. Received: units={units!r}")
        self.units = units
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        width = tf.TensorShape(input_shape)[-1]
        if width is None:
            raise ValueError(f"the last dimension of the input must be known. Received: input_shape={input_shape}")
        self.kernel = self.add_weight(name="kernel", shape=(int(width), self.units),
                                      initializer=self.kernel_initializer, trainable=True)
        super().build(input_shape)

    def call(self, inputs):
        return tf.matmul(tf.cast(inputs, self.kernel.dtype), self.kernel)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.units])

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units,
                       "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)})
        return config
