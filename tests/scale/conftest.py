"""Fixtures of the scale and fault tests: one exported fake run shared by the whole directory."""
import pytest


@pytest.fixture(scope="session")
def exported_run(exported_fake_run):
    """The run directory of the session's exported fake run (``tests/conftest.py``)."""
    return exported_fake_run.run_dir
