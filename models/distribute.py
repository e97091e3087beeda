"""The tf.distribute strategy a model is built and trained under (cfg.training.distribute)."""
from __future__ import annotations

import json
import os

import tensorflow as tf

from core.errors import ConfigError


def get_strategy(distribute_cfg) -> tf.distribute.Strategy:
    """'default': the current strategy; 'mirrored': all local devices; 'multi_worker':
    ``MultiWorkerMirroredStrategy`` over the cluster in ``tf_config`` (JSON) or ``$TF_CONFIG``."""
    kind = distribute_cfg.strategy
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        if distribute_cfg.tf_config:
            try:
                json.loads(distribute_cfg.tf_config)
            except json.JSONDecodeError as e:
                raise ConfigError(f"training.distribute.tf_config: not valid JSON ({e})") from None
            os.environ["TF_CONFIG"] = distribute_cfg.tf_config
        if not os.environ.get("TF_CONFIG"):
            raise ConfigError("training.distribute.strategy=multi_worker needs a cluster: set training.distribute.tf_config or $TF_CONFIG")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"training.distribute.strategy: expected default, mirrored or multi_worker, got {kind!r}")
