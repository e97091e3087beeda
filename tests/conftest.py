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


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """A local GCS emulator for Beam's gs:// IO (``tests/fakes/gcs_emulator.py``), one per test
    module (its environment variables are set only while that module runs)."""
    from tests.fakes.gcs_emulator import GcsEmulator, emulator_available

    if not emulator_available():
        pytest.skip("gcp-storage-emulator is not installed (pinned in requirements.txt)")
    with GcsEmulator(str(tmp_path_factory.mktemp("gcs"))) as emulator:
        yield emulator


def make_config(**sections):
    """A config from a dict of sections, for tests that need a custom schema."""
    return config_from_dict(sections)


@pytest.fixture(scope="session")
def exported_fake_run(tmp_path_factory):
    """A fake run directory (raw CSV, TFT output, teacher) with one exported, blessed version.

    Built once per session (TF Transform analysis + export take most of a minute on 2 cores)
    and shared by the serving, batch-prediction and scale tests; tests that damage it work on
    a copy. ``(cfg, run_dir, result, model_dir)``."""
    import types

    from pipeline.stages.export import run as run_export
    from tests.fakes import serving_models

    cfg = serving_models.serving_config()
    run_dir = serving_models.build_fake_run(cfg, str(tmp_path_factory.mktemp("fake_run")))
    result = run_export(cfg, run_dir, types.SimpleNamespace(model=None))
    return types.SimpleNamespace(cfg=cfg, run_dir=run_dir, result=result,
                                 model_dir=os.path.join(run_dir.serving_base(), "ranker"))


# --- Interpreter exit ------------------------------------------------------------------------
# Beam's DirectRunner (as driven by TF Transform's AnalyzeAndTransformDataset) leaks DoFn
# signatures that hold protobuf (upb) repeated containers. CPython finalizes the upb module
# before those objects are freed, and their deallocator then dereferences the dead module state:
# the interpreter segfaults (exit 139) *after* every test has passed and pytest has reported.
# Once pytest is done, run the atexit handlers ourselves and leave with pytest's own status,
# skipping the module teardown where the crash happens (set PIPELINE_TESTS_NORMAL_EXIT=1 to
# exit normally, e.g. when chasing the leak).
_EXIT_STATUS = {}


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if "status" not in _EXIT_STATUS or os.environ.get("PIPELINE_TESTS_NORMAL_EXIT"):
        return
    import atexit
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS["status"])
