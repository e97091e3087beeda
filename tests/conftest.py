"""Shared fixtures: small configs and paths that tests across the tree use."""
import os

import pytest

from core.config import config_from_dict, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CENSUS_PATH = os.path.join(REPO, "..", "shared", "data", "census_income_kdd", "census-income.test.gz")


@pytest.fixture
def default_config():
    return load_config(os.path.join(REPO, "configs", "default.yaml"))


@pytest.fixture
def tiny_config(tmp_path):
    """The default config shrunk to seconds: 3,000 synthetic rows, one epoch, tiny models."""
    return load_config(
        os.path.join(REPO, "configs", "default.yaml"),
        [
            "synthetic.rows=3000",
            "synthetic.chunk_rows=1000",
            "synthetic.num_users=200",
            "synthetic.num_items=100",
            "preprocess.beam.direct_running_mode=in_memory",
            "model.embedding_dim=4",
            "model.bottom_units=[16]",
            "model.tower_units=[8]",
            "training.epochs=1",
            "training.batch_size=256",
            "export.min_auc={}",
        ],
    )


@pytest.fixture
def census_path():
    if not os.path.exists(CENSUS_PATH):
        pytest.skip(f"census-income data not found at {CENSUS_PATH} (only on the project's machines)")
    return CENSUS_PATH


def make_config(**sections):
    """A config from a dict of sections, for tests that need a custom schema."""
    return config_from_dict(sections)
