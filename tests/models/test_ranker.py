"""MultiTaskRanker: self-auxiliary towers, ESMM, masked child loss, serving sub-model."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models.builder import build_ranker
from models.outputs import eval_output_key
from models.ranker import MultiTaskRanker
from models.towers import AUX_PREFIX
from tests.fakes.transformed_run import fake_examples


def _batch(info, n=64, seed=3):
    cols = fake_examples(n, seed)
    keep = info.model_inputs + ["label_click", "label_conversion", "example_weight"]
    return {k: tf.constant(cols[k]) for k in keep}


def _model(cfg, info, seed=1, **model_changes):
    model_cfg = dataclasses.replace(cfg.model, **model_changes)
    return build_ranker(model_cfg, info, cfg.data.tasks, cfg.data.funnel, seed=seed)


def _with_aux(cfg, **aux):
    return dataclasses.replace(cfg.model.aux, **aux)


def _sgd_step(model, batch, lr=0.5):
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
    grads = [tf.convert_to_tensor(g) if g is not None else None for g in tape.gradient(loss, model.trainable_variables)]
    for v, g in zip(model.trainable_variables, grads):
        if g is not None:
            v.assign_sub(lr * g)
    return dict(zip([v.name for v in model.trainable_variables], grads))


def _shared_weights(model):
    return [v.numpy() for v in model.backbone.trainable_variables + model.embedding.trainable_variables]


@pytest.mark.parametrize("backbone", ["shared_bottom", "mmoe", "ple"])
def test_aux_towers_get_gradients_and_change_the_shared_weights(fake_run, backbone):
    cfg, _, info = fake_run
    batch = _batch(info)
    with_aux = _model(cfg, info, backbone=backbone, aux=_with_aux(cfg, gamma=1.0))
    without = _model(cfg, info, backbone=backbone, aux=_with_aux(cfg, gamma=0.0))
    before = _shared_weights(with_aux)
    for a, b in zip(before, _shared_weights(without)):
        np.testing.assert_array_equal(a, b)  # same seed, same start
    grads = _sgd_step(with_aux, batch)
    aux_grads = {n: g for n, g in grads.items() if AUX_PREFIX in n}
    assert aux_grads and all(g is not None and np.abs(g.numpy()).sum() > 0 for g in aux_grads.values())
    no_aux_grads = _sgd_step(without, batch)
    assert all(g is None for n, g in no_aux_grads.items() if AUX_PREFIX in n)  # gamma=0: aux untouched
    diffs = [np.abs(a - b).max() for a, b in zip(_shared_weights(with_aux), _shared_weights(without))]
    assert max(diffs) > 1e-6, "the aux loss must reach the shared layers (no stop-gradient)"


def test_serving_model_has_no_aux_variables_and_saved_model_reload_matches(fake_run, tmp_path):
    cfg, _, info = fake_run
    model = _model(cfg, info, aux=_with_aux(cfg, kind="mlp", units=[4]))
    assert any(AUX_PREFIX in v.name for v in model.trainable_variables)
    serving = model.serving_model()
    assert not [v.name for v in serving.variables if AUX_PREFIX in v.name]
    assert len(serving.trainable_variables) == len(model.trainable_variables) - 2 * 4  # 2 tasks x (mlp + logit) x (kernel, bias)
    feats = {k: v for k, v in _batch(info).items() if k in info.model_inputs}
    expected = serving(feats)
    serving.save(str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    saved_vars = [v.name for v in loaded.variables]
    assert saved_vars and not [n for n in saved_vars if AUX_PREFIX in n]
    reloaded = keras.models.load_model(str(tmp_path / "sm"), compile=False)(feats)
    signature = loaded.signatures["serving_default"](**feats)
    assert sorted(reloaded) == sorted(expected) == sorted(signature)
    for k in expected:
        np.testing.assert_allclose(reloaded[k], expected[k], rtol=1e-5)
        np.testing.assert_allclose(signature[k], expected[k], rtol=1e-5)
        assert expected[k].shape == (64,)


def test_esmm_output_is_the_product_of_its_heads(fake_run):
    cfg, _, info = fake_run
    model = _model(cfg, info, esmm=True)
    out = model.serving_model()({k: v for k, v in _batch(info).items() if k in info.model_inputs})
    np.testing.assert_allclose(out["ctcvr_probability"], out["click_probability"] * out["conversion_probability"], rtol=1e-5)
    np.testing.assert_allclose(tf.sigmoid(out["ctcvr_logit"]), out["ctcvr_probability"], rtol=1e-5)
    assert eval_output_key("conversion", model_cfg=dataclasses.replace(cfg.model, esmm=True), funnel=cfg.data.funnel) == "ctcvr_probability"
    assert eval_output_key("click", model_cfg=dataclasses.replace(cfg.model, esmm=True), funnel=cfg.data.funnel) == "click_probability"


def test_esmm_loss_uses_conversion_labels_of_every_impression(fake_run):
    cfg, _, info = fake_run
    model = _model(cfg, info, esmm=True)
    batch = _batch(info)
    flipped = dict(batch, label_conversion=tf.where(batch["label_click"] == 0, 1.0, batch["label_conversion"]))
    assert abs(float(model.compute_loss(batch)) - float(model.compute_loss(flipped))) > 1e-4


def test_masked_child_loss_ignores_unclicked_rows(fake_run):
    cfg, _, info = fake_run
    batch = _batch(info)
    assert 0 < float(tf.reduce_sum(batch["label_click"])) < 64
    flipped = dict(batch, label_conversion=tf.where(batch["label_click"] == 0, 1.0, batch["label_conversion"]))
    masked = _model(cfg, info, masked_child_loss=True, esmm=False, aux=_with_aux(cfg, enabled=False))
    assert float(masked.compute_loss(batch)) == pytest.approx(float(masked.compute_loss(flipped)), abs=1e-6)
    clicked_flip = dict(batch, label_conversion=tf.where(batch["label_click"] == 1, 1.0 - batch["label_conversion"], 0.0))
    assert abs(float(masked.compute_loss(batch)) - float(masked.compute_loss(clicked_flip))) > 1e-4
    unmasked = _model(cfg, info, masked_child_loss=False, aux=_with_aux(cfg, enabled=False))
    assert abs(float(unmasked.compute_loss(batch)) - float(unmasked.compute_loss(flipped))) > 1e-4


def test_loss_is_the_weighted_sum_of_main_and_aux_task_losses(fake_run):
    cfg, _, info = fake_run
    batch = _batch(info)
    model = _model(cfg, info, aux=_with_aux(cfg, gamma=0.3))
    fwd = model.forward(batch)
    bce = lambda y, z: float(tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z)))  # noqa: E731
    expected = sum(w.weight * (bce(batch[f"label_{w.name}"], fwd["logits"][w.name])
                               + 0.3 * bce(batch[f"label_{w.name}"], fwd["aux_logits"][w.name])) for w in cfg.data.tasks)
    assert float(model.compute_loss(batch)) == pytest.approx(expected, rel=1e-5)


def test_example_weights_are_sample_weights(fake_run):
    cfg, _, info = fake_run
    batch = _batch(info)
    model = _model(cfg, info)
    doubled = dict(batch, example_weight=2 * batch["example_weight"])
    assert float(model.compute_loss(doubled)) == pytest.approx(2 * float(model.compute_loss(batch)), rel=1e-5)


def test_loss_hook_adds_a_term(fake_run):
    cfg, _, info = fake_run
    batch = _batch(info)
    plain = _model(cfg, info)
    hooked = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=1, loss_hook=lambda m, i, f, t: 10.0)
    assert float(hooked.compute_loss(batch)) == pytest.approx(float(plain.compute_loss(batch)) + 10.0, rel=1e-5)


def test_task_representations_feed_the_towers(fake_run):
    cfg, _, info = fake_run
    model = _model(cfg, info, backbone="mmoe")
    batch = _batch(info)
    reps = model.task_representations(batch)
    assert sorted(reps) == ["click", "conversion"] and reps["click"].shape == (64, 8)
    np.testing.assert_allclose(model.towers["click"](reps["click"]), model(batch)["click_logit"], rtol=1e-5)


def test_invalid_ranker_arguments(fake_run):
    cfg, _, info = fake_run
    m = _model(cfg, info)
    with pytest.raises(ValueError, match="funnel"):
        MultiTaskRanker(m.embedding, m.backbone, m.towers, {"click": 1.0, "conversion": 1.0}, esmm=True, funnel=None)
    with pytest.raises(ValueError, match="one tower per task"):
        MultiTaskRanker(m.embedding, m.backbone, {"click": m.towers["click"]}, {"click": 1.0, "conversion": 1.0})
    with pytest.raises(ValueError, match="aux_gamma"):
        MultiTaskRanker(m.embedding, m.backbone, m.towers, {"click": 1.0, "conversion": 1.0}, aux_gamma=-1.0)
    with pytest.raises(ValueError, match="tasks"):
        build_ranker(cfg.model, info, [], None)


def test_embedding_l2_penalises_the_embedding_tables_only(fake_run):
    """model.embedding_l2 sets the L2 penalty on the embedding tables (None: model.l2), while
    the dense and cross kernels keep model.l2; the penalty is embedding_l2 * sum of squares."""
    cfg, _, info = fake_run
    tables = lambda m: [v for v in m.embedding.trainable_variables if "embedding" in v.name]  # noqa: E731
    reg = lambda m: float(tf.add_n(m.losses))  # noqa: E731

    plain = _model(cfg, info, l2=0.0, embedding_l2=None, cross_layers=1)
    assert plain.losses == [] or reg(plain) == 0.0

    emb_only = _model(cfg, info, l2=0.0, embedding_l2=0.01, cross_layers=1)
    assert emb_only.embedding.l2 == 0.01
    squares = sum(float(tf.reduce_sum(tf.square(v))) for v in tables(emb_only))
    assert squares > 0
    np.testing.assert_allclose(reg(emb_only), 0.01 * squares, rtol=1e-5)

    inherit = _model(cfg, info, l2=0.02, embedding_l2=None, cross_layers=1)
    assert inherit.embedding.l2 == 0.02
    override = _model(cfg, info, l2=0.02, embedding_l2=0.0, cross_layers=1)
    assert override.embedding.l2 == 0.0
    dense_only = reg(override)
    assert dense_only > 0  # the kernels are still penalised
    inherit_tables = 0.02 * sum(float(tf.reduce_sum(tf.square(v))) for v in tables(inherit))
    np.testing.assert_allclose(reg(inherit), dense_only + inherit_tables, rtol=1e-5)  # same seed, same weights

    # The penalty's gradient reaches every row of every table (ids absent from a batch too).
    with tf.GradientTape() as tape:
        penalty = tf.add_n(emb_only.losses)
    for v, g in zip(tables(emb_only), tape.gradient(penalty, tables(emb_only))):
        np.testing.assert_allclose(tf.convert_to_tensor(g).numpy(), 2 * 0.01 * v.numpy(), rtol=1e-5, atol=1e-8)


def test_the_auc_metric_is_nan_not_zero_on_labels_of_one_class():
    """Keras' AUC is 0.0 when the labels hold one class; ``DefinedAUC`` says undefined (NaN)."""
    from models.ranker import DefinedAUC

    logits = np.array([[-1.0], [0.5], [2.0], [0.1]], np.float32)
    for labels in (np.zeros((4, 1), np.float32), np.ones((4, 1), np.float32)):
        assert float(keras.metrics.AUC(from_logits=True)(labels, logits)) == 0.0
        assert np.isnan(float(DefinedAUC(from_logits=True)(labels, logits)))
    mixed = np.array([[0.0], [1.0], [1.0], [0.0]], np.float32)
    assert float(DefinedAUC(from_logits=True)(mixed, logits)) == pytest.approx(
        float(keras.metrics.AUC(from_logits=True)(mixed, logits)))
    weighted = DefinedAUC(from_logits=True)  # the positives have weight 0: one class left
    assert np.isnan(float(weighted(mixed, logits, sample_weight=1.0 - mixed)))
