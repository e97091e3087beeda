"""The tf.data input pipeline over transformed TFRecord shards."""
import numpy as np
import pytest

from core.feature_specs import transformed_feature_spec
from models.inputs import count_examples, make_dataset
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


def test_scored_shards_parse_teacher_logits_with_record_sharding(fake_run, tmp_path):
    """The reader of the students' data: the transformed features plus ``teacher_logit_<task>``,
    auto-sharded by record (DATA) like every split, so each worker reads its share."""
    import tensorflow as tf

    from core.features import teacher_logit_key
    from tests.fakes.transformed_run import fake_examples, write_split

    _, _, info = fake_run
    cols = fake_examples(40, seed=3)
    cols.update({teacher_logit_key(t): np.full(40, 0.5 + i, np.float32) for i, t in enumerate(info.tasks)})
    pattern = str(tmp_path / "scores" / "validation-*.tfrecord.gz")
    write_split(pattern, cols, shards=2)
    ds = make_dataset(pattern, info, 16, teacher_logits=info.tasks)
    batch = next(iter(ds))
    assert set(batch) == set(transformed_feature_spec(info)) | {"teacher_logit_click", "teacher_logit_conversion"}
    np.testing.assert_allclose(batch["teacher_logit_conversion"].numpy(), 1.5)
    assert sum(int(b["user_id"].shape[0]) for b in ds) == 40
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
    plain = make_dataset(pattern, info, 16)  # the same shards without teacher logits: they are not parsed
    assert "teacher_logit_click" not in next(iter(plain))
