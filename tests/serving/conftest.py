"""Fixtures of the serving tests: tiny SavedModels, a fake run directory, a running server."""
import os
import shutil
import types

import pytest

from core.config import load_config
from tests.conftest import REPO
from tests.serving import fakes


def serving_config(*overrides):
    return load_config(os.path.join(REPO, "configs", "default.yaml"), ["export.min_auc={}", *overrides])


def publish_tiny(base: str, version: int, scale: float, name: str = "tiny") -> str:
    """Builds a tiny SavedModel in a hidden dir and renames it into place, as export does."""
    model_dir = os.path.join(base, name)
    os.makedirs(model_dir, exist_ok=True)
    tmp = os.path.join(model_dir, f".tmp-{version}")
    fakes.build_tiny_savedmodel(tmp, scale)
    os.rename(tmp, os.path.join(model_dir, str(version)))
    return os.path.join(model_dir, str(version))


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A base directory with model 'tiny' version 1 (scale 1.0)."""
    base = str(tmp_path_factory.mktemp("tiny_base"))
    publish_tiny(base, 1, 1.0)
    return base


@pytest.fixture(scope="session")
def fake_run(tmp_path_factory):
    """A fake run directory (teacher only) with one exported, blessed version (teacher)."""
    from pipeline.stages.export import run as run_export

    cfg = serving_config()
    run_dir = fakes.build_fake_run(cfg, str(tmp_path_factory.mktemp("fake_run")))
    result = run_export(cfg, run_dir, types.SimpleNamespace(model=None))
    return types.SimpleNamespace(cfg=cfg, run_dir=run_dir, result=result,
                                 model_dir=os.path.join(run_dir.serving_base(), "ranker"))


@pytest.fixture(scope="module")
def server(tiny_base):
    """A server on ephemeral ports over ``tiny_base`` (read-only: tests that publish use ``own_base``)."""
    from serving.server import ModelServer

    srv = ModelServer(tiny_base, rest_port=0, grpc_port=0, poll_seconds=0.1, max_batch_size=8).start()
    assert srv.store.wait_for_version("tiny", 1, timeout=30)
    yield srv
    srv.stop()


@pytest.fixture
def own_base(tmp_path, tiny_base):
    base = str(tmp_path / "base")
    shutil.copytree(tiny_base, base)
    return base
