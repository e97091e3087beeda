"""The strategy chooser (the multi-worker run itself is tested elsewhere)."""
import pytest
import tensorflow as tf

from models.builder import build_ranker
from models.distribute import get_strategy
from core.config import DistributeConfig
from core.errors import ConfigError
from core.features import FeatureInfo
from tests.fakes.transformed_run import CARDINALITIES, NUMERIC


def test_default_and_mirrored_strategies(tiny_model_config):
    assert get_strategy(DistributeConfig()) is tf.distribute.get_strategy()
    mirrored = get_strategy(DistributeConfig(strategy="mirrored"))
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    info = FeatureInfo(categorical=dict(CARDINALITIES), numeric=list(NUMERIC), tasks=["click", "conversion"])
    cfg = tiny_model_config
    with mirrored.scope():
        model = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=1)
    assert model.distribute_strategy is mirrored


def test_multi_worker_needs_a_cluster(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        get_strategy(DistributeConfig(strategy="multi_worker"))
    with pytest.raises(ConfigError, match="not valid JSON"):
        get_strategy(DistributeConfig(strategy="multi_worker", tf_config="{oops"))
