"""Fixtures of the model tests: fake transformed data (tests/fakes/transformed_run.py) and tiny configs."""
import os

import pytest

from core.config import load_config
from tests.fakes.transformed_run import REPO, TINY, make_fake_run


@pytest.fixture
def fake_run(tmp_path):
    """(cfg, run_dir, feature_info): tiny model config over fake transformed data."""
    run_dir, info = make_fake_run(str(tmp_path / "run"))
    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), TINY)
    return cfg, run_dir, info


@pytest.fixture
def tiny_model_config():
    """A PipelineConfig with the tiny model/training sections (no data written)."""
    return load_config(os.path.join(REPO, "configs", "default.yaml"), TINY)
