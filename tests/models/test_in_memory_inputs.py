"""Splits held in memory (``training.cache``): the same batches and weights as streaming,
chosen by size and strategy, loaded once; and the train step traced once per fit."""
import dataclasses
import gzip
import os
import struct

import numpy as np
import pytest
import tensorflow as tf

from core.errors import InputError
from models.builder import build_ranker
from models.inputs import InMemorySplit, count_examples, example_bytes, load_split, make_dataset, split_source
from models.training import train_model
from pipeline.stages.train import training_datasets


def _batches(ds):
    return [{k: v.numpy() for k, v in b.items()} for b in ds]


def _assert_same_batches(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert sorted(x) == sorted(y)
        for k in x:
            assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape, k
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("kwargs", [
    dict(shuffle=True, seed=5, shuffle_buffer=100),
    dict(shuffle=True, seed=5, shuffle_buffer=100, repeat=True, drop_remainder=True),
    dict(),
])
def test_an_in_memory_split_gives_exactly_the_streamed_batches(fake_run, kwargs):
    _, run_dir, info = fake_run
    pattern = run_dir.split_pattern("train")
    split = load_split(pattern, info)
    assert isinstance(split, InMemorySplit) and split.rows == count_examples(pattern) == 768
    assert len(split.files) == 2 and split.bounds[0] == 0 and split.bounds[-1] == 768  # shard by shard
    assert split.nbytes == 768 * example_bytes(info)
    streamed, held = make_dataset(pattern, info, 100, **kwargs), make_dataset(split, info, 100, **kwargs)
    if kwargs.get("repeat"):
        streamed, held = streamed.take(20), held.take(20)  # 2.6 passes: every repetition reshuffles alike
    _assert_same_batches(_batches(streamed), _batches(held))


@pytest.mark.parametrize("epochs", [1, 2])
def test_cached_and_streamed_training_give_the_same_first_epoch_weights(fake_run, epochs):
    """One epoch (a stream of the length of an epoch, which Keras iterates afresh) and two."""
    cfg, run_dir, info = fake_run
    weights = {}
    for cache in ("memory", "stream"):
        c = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, cache=cache, steps_per_execution=4))
        data = training_datasets(c, run_dir, info)
        assert data.in_memory == (cache == "memory") and data.train_rows == 768
        assert data.validation_rows == (256 if cache == "memory" else None)  # no stats.json: streamed ones are counted
        model = build_ranker(c.model, info, c.data.tasks, c.data.funnel, seed=3)
        result = train_model(model, data.epoch_batches, data.validation, c.training, None, tasks=c.task_names,
                             train_rows=data.train_rows, validation_rows=data.validation_rows, epochs=epochs)
        weights[cache] = (model.get_weights(), result.history)
    (wa, ha), (wb, hb) = weights["memory"], weights["stream"]
    for a, b in zip(wa, wb):
        np.testing.assert_array_equal(a, b)
    assert ha == hb  # the same losses and AUCs, validation included


def test_the_source_is_chosen_by_size_strategy_and_setting(fake_run):
    _, run_dir, info = fake_run
    pattern = run_dir.split_pattern("validation")
    mib = 256 * example_bytes(info) / 2**20
    assert split_source(pattern, info, "stream", 10_000) == pattern
    assert split_source(pattern, info, "auto", 0, rows=256) == pattern  # larger than the limit: streamed
    assert isinstance(split_source(pattern, info, "auto", int(mib) + 1, rows=256), InMemorySplit)
    assert split_source(pattern, info, "auto", 10_000, multi_worker=True) == pattern  # workers read their share
    assert isinstance(split_source(pattern, info, "memory", 0), InMemorySplit)  # asked for: held however large
    assert isinstance(split_source(pattern, info, "auto", 10_000), InMemorySplit)  # rows unknown: counted


def test_a_truncated_shard_fails_the_load_naming_it(fake_run, tmp_path):
    _, run_dir, info = fake_run
    shard = sorted(tf.io.gfile.glob(run_dir.split_pattern("train")))[1]
    with open(shard, "rb") as f:
        records = gzip.decompress(f.read())
    # Cut the TFRecord stream inside its middle record, as a killed copy leaves it. (Cutting the
    # gzip bytes in half instead sometimes ends the inflated stream on a record boundary, which
    # no reader can tell from a shorter file: the record bytes vary with Python's hash seed.)
    ends, at = [], 0
    while at < len(records):
        at += 8 + 4 + struct.unpack("<Q", records[at:at + 8])[0] + 4  # length, its crc, data, data crc
        ends.append(at)
    middle = ends[len(ends) // 2]
    with open(shard, "wb") as f:
        f.write(gzip.compress(records[: middle - 3]))
    with pytest.raises(InputError, match=os.path.basename(shard)):
        load_split(run_dir.split_pattern("train"), info)


def test_the_split_sizes_come_from_the_preprocess_stats(fake_run):
    import json

    _, run_dir, _ = fake_run
    assert run_dir.split_rows("train") is None  # no stats.json: unknown (counted by the stage)
    with open(run_dir.stats_file, "w") as f:
        json.dump({"rows_per_split": {"train": 768, "validation": 256}}, f)
    assert (run_dir.split_rows("train"), run_dir.split_rows("validation"), run_dir.split_rows("test")) == (768, 256, None)


def test_several_steps_per_execution_trace_the_train_and_test_steps_once(fake_run):
    """Keras' multi-step loop traced the step twice (AutoGraph learning its loop variables),
    and a first call creating the optimizer's slots traced the whole function twice more."""
    cfg, run_dir, info = fake_run
    t = dataclasses.replace(cfg.training, steps_per_execution=4)
    model = build_ranker(cfg.model, info, cfg.data.tasks, cfg.data.funnel, seed=1)
    traces = {"train": 0, "test": 0}
    gradient_step, evaluation_step = model.gradient_step, model.evaluation_step  # what train_step / test_step run

    def counted(kind, step):
        def wrapped(data):
            traces[kind] += 1
            return step(data)
        return wrapped

    model.gradient_step, model.evaluation_step = counted("train", gradient_step), counted("test", evaluation_step)
    train = make_dataset(run_dir.split_pattern("train"), info, t.batch_size, shuffle=True, seed=1)
    val = make_dataset(run_dir.split_pattern("validation"), info, t.batch_size)
    result = train_model(model, train, val, t, None, train_rows=768, validation_rows=256, epochs=2)
    assert traces == {"train": 1, "test": 1}
    steps = -(-768 // t.batch_size)
    assert int(model.optimizer.iterations.numpy()) == 2 * steps and len(result.history["val_loss"]) == 2
