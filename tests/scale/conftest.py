"""Fixtures of the scale and fault tests: one exported fake run shared by the whole directory."""
import types

import pytest


@pytest.fixture(scope="session")
def exported_run(tmp_path_factory):
    """The serving tests' fake run (raw CSV, TFT output, teacher) with one published version.

    Built once per session (TF Transform analysis + export take most of a minute on 2
    cores); tests that damage it work on a copy."""
    from pipeline.stages.export import run as export
    from tests.serving import fakes
    from tests.serving.conftest import serving_config

    cfg = serving_config()
    run_dir = fakes.build_fake_run(cfg, str(tmp_path_factory.mktemp("exported") / "run"))
    export(cfg, run_dir, types.SimpleNamespace(model=None))
    return run_dir
