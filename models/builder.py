"""build_ranker: a MultiTaskRanker from the typed config, the feature info and the tasks."""
from __future__ import annotations

from typing import Callable, Optional

import tf_keras as keras

from core.feature_specs import dummy_batch
from models.backbones import backbone_from_config
from models.embedding import FeatureEmbedding
from models.interaction import CrossNetwork
from models.ranker import MultiTaskRanker
from models.towers import MAIN_PREFIX, Tower, aux_tower


def model_features(model_cfg, feature_info):
    """The ``FeatureInfo`` a model built from ``model_cfg`` reads: ``feature_info`` restricted
    to ``model_cfg.features`` (empty or absent: all of it).

    Raises:
      ValueError: a name in ``model_cfg.features`` that is not a model feature of ``feature_info``.
    """
    return feature_info.select(list(getattr(model_cfg, "features", None) or []))


def build_ranker(model_cfg, feature_info, tasks, funnel=None, seed: Optional[int] = None,
                 loss_hook: Optional[Callable] = None, cls=MultiTaskRanker, **kwargs) -> MultiTaskRanker:
    """Builds (and creates the variables of) a ranker.

    Call inside ``strategy.scope()`` to distribute it (see ``models.distribute``).

    Args:
      model_cfg: a ``core.config.ModelConfig`` (teacher's ``cfg.model`` or the student's).
      feature_info: ``core.features.FeatureInfo`` (cardinalities size the embeddings); the
        model reads ``feature_info.select(model_cfg.features)`` (empty: every feature), so a
        student may read any subset of the teacher's features.
      tasks: list of ``TaskConfig`` (name, weight); their order is the task order.
      funnel: ``FunnelConfig`` (parent, child) or None; needed for esmm / masked_child_loss.
      seed: seeds Python, NumPy and TF before the variables are created (repeatable init).
      loss_hook: see ``MultiTaskRanker``.
      cls: the model class (a subclass adding loss terms may be passed).
      **kwargs: passed to ``cls``.
    """
    if not tasks:
        raise ValueError("build_ranker: `tasks` must list at least one task. Received: tasks=[]")
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    names = [t.name for t in tasks]
    feature_info = model_features(model_cfg, feature_info)
    embedding_l2 = model_cfg.l2 if model_cfg.embedding_l2 is None else model_cfg.embedding_l2
    attention_units = model_cfg.attention_units  # the DIN target-attention MLP
    embedding = FeatureEmbedding.from_feature_info(feature_info, model_cfg.embedding_dim, l2=embedding_l2,
                                                   attention_units=attention_units, name="embedding")
    interaction = (CrossNetwork(model_cfg.cross_layers, model_cfg.cross_projection_dim, l2=model_cfg.l2, name="cross_network")
                   if model_cfg.cross_layers else None)
    backbone = backbone_from_config(model_cfg, len(names))
    towers = {t: Tower(model_cfg.tower_units, model_cfg.dropout, model_cfg.l2, name=f"{MAIN_PREFIX}{t}") for t in names}
    aux = model_cfg.aux
    aux_towers = {t: aux_tower(t, aux) for t in names} if aux.enabled else {}
    fun = (funnel.parent, funnel.child) if funnel is not None and (model_cfg.esmm or model_cfg.masked_child_loss) else None
    model = cls(embedding, backbone, towers, {t.name: t.weight for t in tasks}, aux_towers=aux_towers,
                aux_gamma=aux.gamma if aux.enabled else 0.0, funnel=fun, esmm=model_cfg.esmm,
                masked_child_loss=model_cfg.masked_child_loss, loss_hook=loss_hook,
                interaction=interaction, **kwargs)
    model.forward(dummy_batch(feature_info), training=False)  # creates the aux towers too
    model(dummy_batch(feature_info), training=False)  # marks the model built (BackupAndRestore needs it)
    return model
