"""Real CSV headers (``item-price``, ``user country``, ``ctx.device``) from the config to a
served ``predict_raw`` call: names the model can carry are kept as written (the serving
signature takes the user's names), the others are named at config load and renamed with
``data.csv.rename``; the header line stays a header (no dead letters)."""
import argparse
import io
import json
import os

import numpy as np
import pytest

from core.config import config_from_dict
from core.errors import ConfigError, InputError
from core.raw_formats import read_csv, read_csv_header
from core.run_dir import RunDir

TASKS = [{"name": "click", "label": "click"}, {"name": "conversion", "label": "conversion"}]
# The file's headers (fake_raw_frame columns renamed as a real export would name them).
HEADERS = {"price": "item-price", "device": "user country", "item_category": "ctx.device",
           "item_rating": "item-rating", "user_id": "user-id"}
RENAME = {"user country": "user-country", "ctx.device": "ctx_device"}
CATEGORICAL = ["user-id", "item_id", "ctx_device", "user-country", "hour"]
NUMERIC = ["item-price", "user_activity", "item-rating"]


def _config(path: str, **csv) -> dict:
    return {"name": "odd_names",
            "data": {"source": "files", "path": path, "format": "csv", "csv": csv,
                     "categorical": list(CATEGORICAL), "numeric": list(NUMERIC), "tasks": TASKS,
                     "funnel": {"parent": "click", "child": "conversion"}},
            "preprocess": {"split": {"keys": ["impression_id"]}, "beam": {"direct_running_mode": "in_memory"}},
            "model": {"embedding_dim": 4, "bottom_units": [8], "tower_units": [4]},
            "training": {"epochs": 1, "batch_size": 256, "verbose": 0},
            "distill": {"enabled": False},
            "export": {"serve_model": "teacher", "min_auc": {}, "warmup_examples": 4}}


# ----------------------------------------------------------------------------- config load


@pytest.mark.parametrize("name", ["user country", "ctx.device", "_lead", "prix/€"])
def test_a_feature_name_the_model_cannot_carry_is_named_at_load_with_the_fix(name):
    cfg = _config("in.csv", rename={})
    cfg["data"]["categorical"] = ["item_id", name]
    with pytest.raises(ConfigError, match=r"data\.categorical: .* cannot be a model name: .*data\.csv\.rename"):
        config_from_dict(cfg)


def test_task_names_follow_the_same_rule():
    cfg = _config("in.csv", rename=RENAME)
    cfg["data"]["tasks"] = [{"name": "add to cart", "label": "click"}]
    cfg["data"].pop("funnel")
    with pytest.raises(ConfigError, match=r"data\.tasks\[\]\.name: 'add to cart' cannot be a model name"):
        config_from_dict(cfg)


def test_hyphens_and_renamed_columns_load():
    cfg = config_from_dict(_config("in.csv", rename=RENAME))
    assert cfg.data.csv.rename == RENAME and "item-price" in cfg.data.numeric


@pytest.mark.parametrize("csv, message", [
    ({"header": True, "column_names": ["a", "b"]}, r"column_names: only for files without a header line .*rename"),
    ({"header": False, "column_names": ["a", "b"], "rename": {"c": "d"}}, r"rename: 'c' is not in data\.csv\.column_names"),
    ({"header": False, "column_names": ["a", "b"], "rename": {"a": "b"}}, r"rename: a new name equals another column"),
    ({"rename": {"a": "x", "b": "x"}}, r"rename: two columns get the same new name"),
    ({"delimiter": "::"}, r"delimiter: expected one character"),
])
def test_csv_option_errors(csv, message):
    cfg = _config("in.csv", **csv)
    cfg["data"].update(categorical=["item_id"], numeric=["price"])
    with pytest.raises(ConfigError, match=message):
        config_from_dict(cfg)


# ----------------------------------------------------------------------------- the reader


def _csv_cfg(**csv):
    cfg = _config("in.csv", **csv)
    cfg["data"].update(categorical=["item_id"], numeric=["price"])
    return config_from_dict(cfg).data.csv


def test_read_csv_renames_header_columns_and_the_header_is_no_record():
    text = b"user country,ctx.device,item-price\nde,ios,1.5\nfr,web,2\n"
    records = list(read_csv(io.BytesIO(text), "f.csv", _csv_cfg(rename=RENAME)))
    assert [r["values"] for r in records] == [
        {"user-country": "de", "ctx_device": "ios", "item-price": "1.5"},
        {"user-country": "fr", "ctx_device": "web", "item-price": "2"}]
    assert [r["position"] for r in records] == [2, 3]


def test_read_csv_header_renames_and_names_a_missing_rename_source(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("user country, ctx.device ,item-price\nde,ios,1.5\n")
    assert read_csv_header(str(path), _csv_cfg(rename=RENAME)) == ["user-country", "ctx_device", "item-price"]
    with pytest.raises(InputError, match=r"in\.csv: data\.csv\.rename: the CSV header has no column\(s\) \['devic'\]"):
        read_csv_header(str(path), _csv_cfg(rename={"devic": "device"}))
    with pytest.raises(InputError, match=r"after renaming, column name\(s\) \['item-price'\] appear twice"):
        read_csv_header(str(path), _csv_cfg(rename={"ctx.device": "item-price"}))


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_odd_headers_preprocess_train_export_predict_raw(tmp_path, capsys):
    """preprocess -> train (1 epoch) -> export -> predict_raw with the user's names (~40 s)."""
    from core.feature_specs import encode_raw_example
    from pipeline.stages import run_stage
    from serving.raw_examples import read_split
    from serving.session_model import SessionModel
    from tests.fakes.serving_models import fake_raw_frame

    path = str(tmp_path / "in.csv")
    fake_raw_frame(1200, seed=3).rename(columns=HEADERS).to_csv(path, index=False)
    cfg = config_from_dict(_config(path, rename=RENAME))
    run_dir = RunDir(str(tmp_path / "run"))
    opts = argparse.Namespace(model=None, runner=None, num_workers=None, beam_arg=[])
    for stage in ("preprocess", "train", "export"):
        run_stage(stage, cfg, run_dir, opts)
    stats = json.load(open(run_dir.stats_file))
    assert stats["rows_read"] == 1200 and stats["dead_lettered"] == 0  # the header line is a header
    message = capsys.readouterr().out
    assert '"item-price"' in message and '"user-country"' in message  # the curl example uses the user's names

    version = os.path.join(run_dir.serving_base(), "ranker", "1")
    rows = read_split(cfg, *run_dir.raw_input(cfg), "test", 8)
    assert rows and set(rows[0]["features"]) >= set(CATEGORICAL + NUMERIC)
    model = SessionModel(version)
    try:
        assert set(model.signatures["predict_raw"].inputs) == set(CATEGORICAL + NUMERIC)
        columns = {c: [r["features"][c] for r in rows] for c in CATEGORICAL + NUMERIC}
        raw = model.run("predict_raw", columns)
        served = model.run("serving_default", {"examples": [encode_raw_example(cfg, r["features"]) for r in rows]})
    finally:
        model.close()
    for task in ("click", "conversion"):
        p = raw[f"{task}_probability"]
        assert p.shape == (len(rows),) and np.all((p > 0) & (p < 1))
        np.testing.assert_allclose(p, served[f"{task}_probability"], atol=1e-6)
