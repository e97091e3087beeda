"""Registries: every pluggable kind registers once, and the config, the CLI and the builders
read their choices from the registry (so the lists cannot drift apart)."""
import dataclasses

import pytest

from core import config as config_module
from core.errors import ConfigError
from core.registries import BACKBONES, INPUT_FORMATS, KD_MODES
from core.registry import Registry


def _field(cls, name):
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def test_implementations_register_where_they_are_defined():
    from models import backbones, distillation_losses  # noqa: F401  (the providers)

    assert BACKBONES.names() == ["shared_bottom", "mmoe", "ple"]
    assert KD_MODES.names() == ["kd", "label_smoothing", "reweight", "none"]
    assert INPUT_FORMATS.names() == ["csv", "jsonl", "parquet", "tfrecord"]


@pytest.mark.parametrize("cls, name, registry", [
    (config_module.ModelConfig, "backbone", BACKBONES),
    (config_module.ParetoConfig, "backbone", BACKBONES),
    (config_module.DistillConfig, "mode", KD_MODES),
    (config_module.DataConfig, "format", INPUT_FORMATS),
])
def test_config_choices_are_the_registry(cls, name, registry):
    assert _field(cls, name).metadata["choices"] is registry


def test_cli_choices_are_the_registries():
    from pipeline.cli import build_parser
    from pipeline.stages import STAGES

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == ["run", *STAGES.names()]
    predict = sub.choices["predict"]
    fmt = next(a for a in predict._actions if a.dest == "format")
    assert list(fmt.choices) == INPUT_FORMATS.names()


def test_every_registered_backbone_builds(default_config):
    import dataclasses as dc

    from models.backbones import backbone_from_config

    for name in BACKBONES.names():
        layer = backbone_from_config(dc.replace(default_config.model, backbone=name), num_tasks=2)
        assert layer.name == "backbone"


def test_unknown_name_is_a_config_error_listing_the_registered_ones():
    from models import backbones  # noqa: F401

    with pytest.raises(ConfigError, match=r"model\.backbone: expected one of \['shared_bottom', 'mmoe', 'ple'\], got 'dnn'"):
        BACKBONES.get("dnn")
    with pytest.raises(ConfigError, match=r"model\.backbone: expected one of .*got 'dnn'"):
        config_module.config_from_dict({"model": {"backbone": "dnn"}})


def test_a_name_registers_once():
    reg = Registry("widget", "x.widget")
    reg.add("a", int)
    reg.add("a", int)  # the same object again (a re-imported module) is fine
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("a", float)
    assert reg.names() == ["a"] and "a" in reg and len(reg) == 1
