"""Fixtures of the serving tests: tiny SavedModels, the exported fake run, a running server."""
import os
import shutil

import pytest

from tests.fakes.serving_models import publish_tiny


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A base directory with model 'tiny' version 1 (scale 1.0)."""
    base = str(tmp_path_factory.mktemp("tiny_base"))
    publish_tiny(base, 1, 1.0)
    return base


@pytest.fixture(scope="session")
def fake_run(exported_fake_run):
    """The session's exported fake run (``tests/conftest.py``): teacher only, one blessed version."""
    return exported_fake_run


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


@pytest.fixture(scope="session")
def list_run(tmp_path_factory):
    """The session's exported fake run with list features (``exported_list_run``): teacher
    ``ranker`` and student ``student`` (without ``hist_items``), one blessed version each."""
    from tests.fakes.serving_models import exported_list_run

    return exported_list_run(tmp_path_factory)
