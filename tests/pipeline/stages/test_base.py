"""The stage contract: what each stage reads decides which stale inputs it refuses."""
import dataclasses
import types

from pipeline.stages import STAGES
from pipeline.stages.base import stage_inputs


def _with_serve_model(cfg, role):
    return dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, serve_model=role))


def test_exporting_the_teacher_reads_no_distill_output(default_config):
    opts = types.SimpleNamespace(model=None)
    assert "distill" in stage_inputs("export", _with_serve_model(default_config, "student"), opts)
    assert "distill" not in stage_inputs("export", _with_serve_model(default_config, "teacher"), opts)
    assert "distill" not in stage_inputs("export", default_config, types.SimpleNamespace(model="teacher"))


def test_published_versions_are_never_a_refused_input(default_config):
    assert "export" in STAGES.get("predict").reads
    assert "export" not in stage_inputs("predict", default_config, types.SimpleNamespace(input=None))
