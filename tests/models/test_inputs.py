"""The tf.data input pipeline over transformed TFRecord shards."""
import numpy as np
import pytest

from models.inputs import count_examples, make_dataset, transformed_feature_spec
from core.errors import InputError


def test_batches_hold_every_contract_feature_as_scalars(fake_run):
    _, run_dir, info = fake_run
    batch = next(iter(make_dataset(run_dir.split_pattern("train"), info, 32, shuffle=True, seed=1)))
    assert set(batch) == set(transformed_feature_spec(info))
    assert {"label_click", "label_conversion", "example_weight", "group_id", "p_click"} <= set(batch)
    assert all(v.shape == (32,) for v in batch.values())
    assert batch["user_id"].dtype.name == "int64" and batch["price"].dtype.name == "float32"


def test_every_example_read_once_per_epoch_and_seeded_shuffle_repeats(fake_run):
    _, run_dir, info = fake_run
    pattern = run_dir.split_pattern("train")
    assert count_examples(pattern) == 768

    def order(seed):
        return np.concatenate([b["p_click"].numpy() for b in make_dataset(pattern, info, 100, shuffle=True, seed=seed)])

    a, b = order(5), order(5)
    assert len(a) == 768
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, order(6))


def test_missing_shards_name_the_pattern(fake_run, tmp_path):
    _, _, info = fake_run
    with pytest.raises(InputError, match="nothing-here"):
        make_dataset(str(tmp_path / "nothing-here-*.tfrecord.gz"), info, 8)
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(str(tmp_path / "x"), info, 0)
