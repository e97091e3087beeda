"""Config loading and validation (core/config.py): every error names the offending key."""
import os
import re

import pytest

from core.config import config_from_dict, config_to_dict, load_config, parse_override
from core.errors import ConfigError
from tests.conftest import REPO
from models import backbones, distillation_losses  # noqa: F401,E402  (register model.backbone and distill.mode, as the CLI does)

DEFAULT = os.path.join(REPO, "configs", "default.yaml")


def _load(*overrides):
    return load_config(DEFAULT, list(overrides))


@pytest.mark.parametrize("name", ["default.yaml", "census_income.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(os.path.join(REPO, "configs", name))
    assert len(cfg.task_names) == 2
    assert cfg.preprocess.split.train + cfg.preprocess.split.validation + cfg.preprocess.split.test == pytest.approx(1)


def test_default_config_describes_the_synthetic_columns():
    cfg = _load()
    assert cfg.data.source == "synthetic"
    assert cfg.data.categorical == ["user_id", "item_id", "item_category", "device", "hour"]
    assert cfg.data.oracle == {"click": "p_click", "conversion": "p_conversion"}
    assert (cfg.data.funnel.parent, cfg.data.funnel.child) == ("click", "conversion")


def test_unknown_nested_key_is_named_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown key 'synthetic\.rowz'.*rows"):
        _load("synthetic.rowz=5")
    with pytest.raises(ConfigError, match=r"unknown key 'preprocess\.split\.tran'"):
        _load("preprocess.split.tran=0.8")


def test_unknown_top_level_key_in_a_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(open(DEFAULT).read() + "\nmodle: {}\n")
    with pytest.raises(ConfigError, match="unknown key 'modle'"):
        load_config(str(path))


@pytest.mark.parametrize(
    "override, message",
    [
        ("synthetic.rows=many", r"synthetic\.rows: expected int, got str 'many'"),
        ("synthetic.rows=true", r"synthetic\.rows: expected int, got boolean"),
        ("training.epochs=2.5", r"training\.epochs: expected int, got float"),
        ("model.bottom_units=64", r"model\.bottom_units: expected a list"),
        ("model.bottom_units=[64, x]", r"model\.bottom_units\[1\]: expected int"),
        ("distill.enabled=maybe", r"distill\.enabled: expected true or false"),
        ("data.oracle=[p_click]", r"data\.oracle: expected a mapping"),
    ],
)
def test_wrong_type_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        _load(override)


@pytest.mark.parametrize(
    "override, message",
    [
        ("synthetic.rows=0", r"synthetic\.rows: expected a value >= 1, got 0"),
        ("synthetic.task_correlation=1.5", r"synthetic\.task_correlation: expected a value <= 1.0, got 1.5"),
        ("synthetic.click_rate=0", r"synthetic\.click_rate: expected a value > 0.0, got 0.0"),
        ("synthetic.interaction_scale=-1", r"synthetic\.interaction_scale: expected a value >= 0.0"),
        ("serving.rest_port=70000", r"serving\.rest_port: expected a value <= 65535"),
        ("model.bottom_units=[64, 0]", r"model\.bottom_units: expected a value >= 1, got 0"),
        ("distill.student.tower_units=[-2]", r"distill\.student\.tower_units: expected a value >= 1, got -2"),
        ("model.embedding_l2=-0.001", r"model\.embedding_l2: expected a value >= 0\.0, got -0\.001"),
    ],
)
def test_out_of_range_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        _load(override)


@pytest.mark.parametrize(
    "override, message",
    [
        ("synthetic.format=json", r"synthetic\.format: expected one of \['csv', 'parquet'\], got 'json'"),
        ("model.backbone=transformer", r"model\.backbone: expected one of .*'mmoe'.*got 'transformer'"),
        ("training.verbose=3", r"training\.verbose: expected one of \[0, 1, 2\], got 3"),
    ],
)
def test_bad_choice_names_the_key_and_the_choices(override, message):
    with pytest.raises(ConfigError, match=message):
        _load(override)


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ConfigError, match=r"preprocess\.split: train \+ validation \+ test must sum to 1, got 1\.1"):
        _load("preprocess.split.validation=0.2")
    assert _load("preprocess.split.train=0.7", "preprocess.split.validation=0.2").preprocess.split.train == 0.7


def test_oracle_column_must_be_a_passthrough_column():
    with pytest.raises(ConfigError, match=r"data\.oracle\.click: column 'p_click' must also be listed in data\.passthrough"):
        _load("data.passthrough=[p_conversion]")
    with pytest.raises(ConfigError, match=r"data\.oracle: 'ctr' is not a task"):
        _load("data.oracle={ctr: p_click}")


def test_funnel_must_name_tasks():
    with pytest.raises(ConfigError, match=r"data\.funnel\.child: expected a task name from \['click', 'conversion'\], got 'purchase'"):
        _load("data.funnel.child=purchase")
    with pytest.raises(ConfigError, match=r"data\.funnel\.parent"):
        _load("data.funnel={parent: view, child: conversion}")


def test_esmm_needs_a_funnel():
    with pytest.raises(ConfigError, match=r"model\.esmm/masked_child_loss: need data\.funnel"):
        _load("data.funnel=null", "model.esmm=true")


def test_files_source_needs_a_path():
    with pytest.raises(ConfigError, match=r"data\.path: required when data\.source is 'files'"):
        _load("data.source=files")


def test_missing_config_file_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"--config: file not found: {missing}"):
        load_config(str(missing))


def test_parse_override_reads_values_as_yaml():
    assert parse_override("training.epochs=3") == (["training", "epochs"], 3)
    assert parse_override("model.dropout=0.25") == (["model", "dropout"], 0.25)
    assert parse_override("distill.enabled=false") == (["distill", "enabled"], False)
    assert parse_override("model.bottom_units=[32, 16]") == (["model", "bottom_units"], [32, 16])
    assert parse_override("export.min_auc={click: 0.7}") == (["export", "min_auc"], {"click": 0.7})
    assert parse_override("name=a=b") == (["name"], "a=b")
    assert parse_override("name=") == (["name"], "")


@pytest.mark.parametrize("text", ["training.epochs", "=3", "training..epochs=3", ".x=1"])
def test_parse_override_rejects_malformed_text(text):
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        parse_override(text)


def test_bad_yaml_value_names_the_key():
    with pytest.raises(ConfigError, match=r"--set model\.bottom_units: value .* is not valid YAML"):
        parse_override("model.bottom_units=[1, 2")


def test_overrides_apply_nested_and_create_sections():
    cfg = _load("model.experts.num_shared=6", "synthetic.rows=123", "export.min_auc={}", "distill.student.embedding_dim=2")
    assert cfg.model.experts.num_shared == 6
    assert cfg.synthetic.rows == 123
    assert cfg.export.min_auc == {}
    assert cfg.distill.student.embedding_dim == 2
    assert cfg.distill.student.bottom_units == [32]  # the rest of the section is kept
    # A section missing from the file is created by an override.
    cfg = config_from_dict({"data": config_to_dict(_load())["data"]}, ["pareto.epochs=3"])
    assert cfg.pareto.epochs == 3


def test_override_through_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match=r"--set synthetic\.rows\.x: 'synthetic\.rows' is not a section"):
        _load("synthetic.rows.x=1")


def test_int_is_accepted_for_a_float_field():
    assert _load("synthetic.task_correlation=1").synthetic.task_correlation == 1.0
    assert isinstance(_load("synthetic.task_correlation=1").synthetic.task_correlation, float)


def test_exponent_without_a_dot_is_a_float(tmp_path):
    """Plain YAML reads ``1e-5`` as a string; configs and --set read it as the float it means."""
    text = open(os.path.join(REPO, "configs", "default.yaml")).read()
    path = tmp_path / "c.yaml"
    path.write_text(text.replace("model:\n", "model:\n  l2: 1e-4\n  embedding_l2: 2E-3\n", 1).replace(
        "  embedding_l2: 0.001\n", "", 1))
    cfg = load_config(str(path), ["training.learning_rate=5e-3"])
    assert (cfg.model.l2, cfg.model.embedding_l2, cfg.training.learning_rate) == (1e-4, 2e-3, 5e-3)
    assert parse_override("name=1e5x")[1] == "1e5x"  # not a number: stays a string


def _tasks(*tasks: str):
    return _load("data.tasks=[" + ", ".join(tasks) + "]", "data.funnel=null", "data.oracle={}", "export.min_auc={}")


def test_positive_values_need_declared_negative_values():
    """Used to turn every other label value silently into a negative."""
    with pytest.raises(ConfigError, match=r"data\.tasks\[1\] \(conversion\): positive_values is set but "
                                          r"negative_values is not.*negative_values: any"):
        _tasks("{name: click, label: click}", "{name: conversion, label: event, positive_values: [buy]}")


def test_negative_values_as_a_list_or_any():
    cfg = _tasks("{name: click, label: click, positive_values: ['y'], negative_values: ['n', ' x ']}",
                 "{name: conversion, label: m, positive_values: [single], negative_values: any}")
    assert [t.negative_values for t in cfg.data.tasks] == [["n", " x "], "any"]
    assert config_from_dict(config_to_dict(cfg)).data.tasks[1].negative_values == "any"  # round trip


@pytest.mark.parametrize("task, message", [
    ("{name: c, label: c, positive_values: [y], negative_values: all}", r"expected a list of strings or 'any'"),
    ("{name: c, label: c, positive_values: [y], negative_values: []}", r"expected a non-empty list"),
    ("{name: c, label: c, positive_values: [y], negative_values: [0]}", r"expected a non-empty list of strings"),
    ("{name: c, label: c, positive_values: [y], negative_values: [n, ' y']}", r"\['y'\] are in both"),
    ("{name: c, label: c, negative_values: [n]}", r"negative_values: needs positive_values"),
])
def test_bad_negative_values_name_the_task(task, message):
    with pytest.raises(ConfigError, match=r"data\.tasks\[0\] \(c\)") as e:
        _tasks(task)
    assert re.search(message, str(e.value)), str(e.value)


def test_census_config_declares_the_label_values_of_its_data():
    cfg = load_config(os.path.join(REPO, "configs", "census_income.yaml"))
    income, marital = cfg.data.tasks
    assert (income.positive_values, income.negative_values) == (["50000+."], ["- 50000."])
    assert (marital.positive_values, marital.negative_values) == (["Never married"], "any")


# ----------------------------------------------------------------------------- list features, hashing, crosses

_LIST_DATA = {"source": "files", "path": "x", "categorical": ["item", "device"], "numeric": ["price"],
              "tasks": [{"name": "click", "label": "click"}]}


def _lists(lists=(), **data):
    return config_from_dict({"data": {**_LIST_DATA, "lists": list(lists), **data}})


def test_every_new_feature_kind_loads():
    cfg = _lists([{"name": "hist", "kind": "sequence", "shares": "item", "pooling": "attention", "target": "item",
                   "max_length": 20, "order": "recent_first"},
                  {"name": "tags", "weights": "tokens", "pooling": "sqrtn"},
                  {"name": "basket", "weights": "basket_w", "pooling": "sum"}],
                 hash_buckets={"item": 1000, "tags": 50}, hash_salt="s1",
                 crosses=[{"columns": ["item", "device"], "hash_buckets": 64}])
    from core.config import cross_name, model_feature_names, table_owner, weight_columns
    assert [f.name for f in cfg.data.lists] == ["hist", "tags", "basket"]
    assert table_owner(cfg.data, "hist") == "item" and table_owner(cfg.data, "tags") == "tags"
    assert weight_columns(cfg.data) == {"basket": "basket_w"}
    assert cross_name(cfg.data.crosses[0]) == "item_x_device"
    assert model_feature_names(cfg) == ["item", "device", "hist", "tags", "basket", "item_x_device", "price"]


@pytest.mark.parametrize("lists, data, message", [
    ([{"name": "tags", "pooling": "attention", "target": "item"}], {}, "attention is for kind: sequence"),
    ([{"name": "hist", "kind": "sequence", "pooling": "attention"}], {}, "target"),
    ([{"name": "hist", "kind": "sequence", "pooling": "attention", "target": "item"}], {}, "same embedding table"),
    ([{"name": "hist", "kind": "sequence", "pooling": "attention", "target": "nope", "shares": "item"}], {},
     "not in data.categorical"),
    ([{"name": "hist", "shares": "nope"}], {}, "shares"),
    ([{"name": "a", "shares": "b"}, {"name": "b", "shares": "a"}], {}, "cycle"),
    ([{"name": "hist", "max_length": 50}], {"max_list_length": 10}, "max_length"),
    ([{"name": "hist", "separator": "ab"}], {}, "separator"),
    ([{"name": "hist", "pooling": "max"}], {}, "pooling"),
    ([{"name": "hist", "weights": "price"}], {}, "also a feature"),
    ([{"name": "hist", "shares": "item"}], {"hash_buckets": {"hist": 10}}, "hash 'item' instead"),
    ([], {"hash_buckets": {"nope": 10}}, "not in data.categorical"),
    ([], {"hash_buckets": {"item": 0}}, "data.hash_buckets"),
    ([], {"crosses": [{"columns": ["item"]}]}, "two or more"),
    ([], {"crosses": [{"columns": ["item", "price"]}]}, "not in data.categorical"),
    ([], {"crosses": [{"columns": ["item", "device"], "name": "item"}]}, "taken"),
    ([{"name": "item"}], {}, "listed twice"),
    ([{"name": "bad name"}], {}, "cannot be a model name"),
])
def test_bad_list_hash_and_cross_settings_name_the_key(lists, data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _lists(lists, **data)


def test_model_and_student_features_are_checked():
    lists = [{"name": "hist", "kind": "sequence", "shares": "item", "pooling": "attention", "target": "item"}]
    cfg = config_from_dict({"data": {**_LIST_DATA, "lists": lists},
                            "model": {"features": ["item", "hist", "price"]},
                            "distill": {"student": {"features": ["item", "price"]}}})
    assert cfg.distill.student.features == ["item", "price"]
    with pytest.raises(ConfigError, match=r"distill.student.features: \['device'\] not among the teacher's"):
        config_from_dict({"data": {**_LIST_DATA, "lists": lists}, "model": {"features": ["item", "price"]},
                          "distill": {"student": {"features": ["device"]}}})
    with pytest.raises(ConfigError, match="attends with 'item'"):
        config_from_dict({"data": {**_LIST_DATA, "lists": lists}, "model": {"features": ["hist", "price"]}})
    with pytest.raises(ConfigError, match=r"model.features: \['price_ple'\]"):
        config_from_dict({"data": _LIST_DATA, "model": {"features": ["price_ple"]}})
    ok = config_from_dict({"data": _LIST_DATA, "model": {"features": ["price_ple"]},
                           "preprocess": {"numeric": {"piecewise_linear_bins": 8}}})
    assert ok.model.features == ["price_ple"]


# ----------------------------------------------------------------------------- distill.sizes, best_under_budget


def test_shipped_configs_list_student_sizes_around_the_student():
    from core.config import CONFIGURED_STUDENT, student_sizes

    for name in ("default.yaml", "census_income.yaml", "every_feature_kind.yaml"):
        cfg = load_config(os.path.join(REPO, "configs", name))
        sizes = dict(student_sizes(cfg.distill))
        assert set(sizes) == {"small", CONFIGURED_STUDENT, "large"}, name
        assert sizes[CONFIGURED_STUDENT] == cfg.distill.student  # the configured student is one of them
        dims = [sizes[n].embedding_dim for n in ("small", CONFIGURED_STUDENT, "large")]
        assert dims == sorted(dims) and len(set(dims)) == 3, name
        # a size overrides only its own fields: the rest is the student's (e.g. its features)
        assert sizes["large"].features == cfg.distill.student.features
        assert sizes["small"].aux == cfg.distill.student.aux
    cfg = _load()
    assert (cfg.distill.size_epochs, cfg.distill.latency_batch_size) == (2, 64)


def test_default_sizes_halve_and_double_the_student():
    from core.config import student_sizes

    cfg = _load("distill.sizes=null", "distill.student.embedding_dim=3", "distill.student.bottom_units=[32, 5]",
                "distill.student.tower_units=[1]")
    sizes = dict(student_sizes(cfg.distill))
    assert list(sizes) == ["small", "student", "large"]
    assert (sizes["small"].embedding_dim, sizes["small"].bottom_units, sizes["small"].tower_units) == (1, [16, 2], [1])
    assert (sizes["large"].embedding_dim, sizes["large"].bottom_units, sizes["large"].tower_units) == (6, [64, 10], [2])
    assert [n for n, _ in student_sizes(_load("distill.sizes=[]").distill)] == ["student"]


def test_a_size_may_read_fewer_features_than_the_student_with_the_same_widths():
    from core.config import student_sizes

    cfg = _load("distill.sizes=[{name: no_history, features: [user_id, item_id, item_category, device, hour, price]}]")
    (_, student), (name, lean) = student_sizes(cfg.distill)
    assert name == "no_history" and lean.features == ["user_id", "item_id", "item_category", "device", "hour", "price"]
    assert (lean.embedding_dim, lean.bottom_units, lean.tower_units) == (
        student.embedding_dim, student.bottom_units, student.tower_units)
    assert student.features == cfg.distill.student.features


def test_a_size_overrides_only_the_fields_it_sets():
    from core.config import student_sizes

    cfg = _load("distill.sizes=[{name: wide, bottom_units: [128]}]")
    (_, student), (name, wide) = student_sizes(cfg.distill)
    assert name == "wide" and wide.bottom_units == [128]
    assert (wide.embedding_dim, wide.tower_units) == (student.embedding_dim, student.tower_units)


@pytest.mark.parametrize("override, message", [
    ("distill.sizes=[{embedding_dim: 2}]", r"distill\.sizes\[0\]\.name: required"),
    ("distill.sizes=[{name: student, embedding_dim: 2}]", r"distill\.sizes\[0\]\.name: 'student' is the configured"),
    ("distill.sizes=[{name: a, embedding_dim: 2}, {name: a, embedding_dim: 8}]",
     r"distill\.sizes\[1\]\.name: 'a' is listed twice"),
    ("distill.sizes=[{name: 'my size', embedding_dim: 2}]", r"distill\.sizes\[0\]\.name: 'my size': use letters"),
    ("distill.sizes=[{name: same, embedding_dim: 4, tower_units: [8]}]",
     r"distill\.sizes\[0\] \(same\): the same model as distill\.student"),
    ("distill.sizes=[{name: a, features: [nope]}]", r"distill\.sizes\[0\]\.features: \['nope'\] not among"),
    ("distill.sizes=[{name: a, features: [hist_items, user_id]}]",
     r"distill\.sizes\[0\]\.features: 'hist_items' attends with 'item_id'; list it too"),
    ("distill.sizes=[{name: a, embedding_dim: 0}]", r"distill\.sizes\[0\]\.embedding_dim: expected a value >= 1"),
    ("distill.sizes=[{name: a, tower_units: [4, 0]}]", r"distill\.sizes\[0\]\.tower_units: expected a value >= 1"),
    ("distill.sizes=[{name: a, dropout: 0.1}]", r"unknown key 'distill\.sizes\[0\]\.dropout'"),
    ("distill.size_epochs=0", r"distill\.size_epochs: expected a value >= 1"),
    ("distill.latency_batch_size=0", r"distill\.latency_batch_size: expected a value >= 1"),
])
def test_bad_student_sizes_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        _load(override)


def test_best_under_budget_needs_a_budget_and_the_budget_needs_it():
    with pytest.raises(ConfigError, match=r"export\.latency_budget_ms: required with export\.serve_model: "
                                          r"best_under_budget .*latency_batch_size=64"):
        _load("export.serve_model=best_under_budget")
    with pytest.raises(ConfigError, match=r"export\.latency_budget_ms: only with export\.serve_model: "
                                          r"best_under_budget \(serve_model is 'student'\)"):
        _load("export.latency_budget_ms=2.5")
    with pytest.raises(ConfigError, match=r"export\.latency_budget_ms: expected a value > 0"):
        _load("export.serve_model=best_under_budget", "export.latency_budget_ms=0")
    with pytest.raises(ConfigError, match=r"best_under_budget picks among distill's students, but distill\.enabled"):
        _load("export.serve_model=best_under_budget", "export.latency_budget_ms=2", "distill.enabled=false")
    with pytest.raises(ConfigError, match=r"export\.serve_model: expected one of \['teacher', 'student', "
                                          r"'best_under_budget'\]"):
        _load("export.serve_model=fastest")
    cfg = _load("export.serve_model=best_under_budget", "export.latency_budget_ms=2")
    assert (cfg.export.serve_model, cfg.export.latency_budget_ms) == ("best_under_budget", 2.0)
    assert config_from_dict(config_to_dict(cfg)).export == cfg.export  # round-trips through run-dir config.yaml
