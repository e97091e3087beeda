"""The predict stage: one prediction per valid row, bad rows dead-lettered, counts add up."""
import glob
import json
import os
import types

import pandas as pd
import pytest

from core import fs
from core.errors import InputError
from core.feature_specs import encode_raw_example
from serving.session_model import SessionModel
from tests.fakes.serving_models import serving_config
from pipeline.stages.predict import run as run_predict


@pytest.fixture
def beam_cfg():
    return serving_config("preprocess.beam.direct_running_mode=in_memory")


def test_predict_scores_every_row_or_dead_letters_it(exported_fake_run, beam_cfg, tmp_path):
    raw = pd.read_csv(glob.glob(os.path.join(exported_fake_run.run_dir.raw_data_output, "*.csv"))[0]).head(30)
    raw = raw.drop(columns=["click", "conversion"])  # scoring input carries no labels
    raw["price"] = raw["price"].astype(object)
    raw.loc[3, "price"] = "not-a-number"
    raw.loc[7, "item_rating"] = None
    src = tmp_path / "in.csv"
    raw.to_csv(src, index=False)
    out = tmp_path / "out"
    result = run_predict(beam_cfg, exported_fake_run.run_dir,
                                     types.SimpleNamespace(input=str(src), output=str(out), format="csv"))
    m = result.metrics
    assert (m["rows_read"], m["predicted"], m["dead_lettered"]) == (30, 28, 2)
    rows = [json.loads(line) for p in glob.glob(fs.join(fs.published(str(out)), "predictions*.jsonl")) for line in open(p)]
    dead = [json.loads(line) for p in glob.glob(fs.join(fs.published(str(out)), "dead_letters", "*.jsonl")) for line in open(p)]
    assert sorted(d["reason"] for d in dead) == ["missing_value", "unparsable_value"]
    assert any("'price'" in d["detail"] for d in dead)
    by_id = {r["impression_id"]: r for r in rows}
    assert len(by_id) == 28 and set(rows[0]) >= {"source", "position", "click_probability", "conversion_probability"}
    # same numbers as the served signature on the same rows
    model = SessionModel(os.path.join(exported_fake_run.model_dir, "1"))
    try:
        first = raw.iloc[0]
        feats = {c: str(first[c]) for c in beam_cfg.data.categorical}
        feats.update({c: float(first[c]) for c in beam_cfg.data.numeric})
        p = model.run("serving_default", {"examples": [encode_raw_example(beam_cfg, feats)]})["click_probability"][0]
    finally:
        model.close()
    assert by_id[first["impression_id"]]["click_probability"] == pytest.approx(float(p), abs=1e-6)
    assert json.load(open(fs.join(fs.published(str(out)), "counts.json")))["predicted"] == 28


def test_predict_without_published_model(beam_cfg, tmp_path):
    from core.run_dir import RunDir

    with pytest.raises(InputError, match="no published version"):
        run_predict(beam_cfg, RunDir(str(tmp_path)), types.SimpleNamespace(input=None, output=None, format=None))


def test_a_truncated_input_fails_predict_with_an_error_naming_it_and_publishes_nothing(exported_fake_run, beam_cfg,
                                                                                       tmp_path):
    import gzip

    raw = pd.read_csv(glob.glob(os.path.join(exported_fake_run.run_dir.raw_data_output, "*.csv"))[0]).head(200)
    whole = gzip.compress(raw.drop(columns=["click", "conversion"]).to_csv(index=False).encode())
    src = tmp_path / "cut.csv.gz"
    src.write_bytes(whole[: len(whole) // 2])  # the gzip stream ends before its end-of-stream marker
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"cut\.csv\.gz.*(truncated|corrupt)") as raised:
        run_predict(beam_cfg, exported_fake_run.run_dir, types.SimpleNamespace(input=str(src), output=str(out), format="csv"))
    assert "while running" not in str(raised.value)  # the user's one line, not the runner's wrapping
    assert not out.exists()


# ----------------------------------------------------------------------------- list features (issue 13)
@pytest.fixture(scope="session")
def list_run(tmp_path_factory):
    """The exported fake run with list features (``tests/fakes/serving_models.exported_list_run``)."""
    from tests.fakes.serving_models import exported_list_run

    return exported_list_run(tmp_path_factory)


def _list_cfg(*overrides):
    from tests.fakes.serving_models import list_config

    return list_config("preprocess.beam.direct_running_mode=in_memory", *overrides)


def _list_rows(list_run, n: int) -> pd.DataFrame:
    raw = pd.read_csv(glob.glob(os.path.join(list_run.run_dir.raw_data_output, "*.csv"))[0], dtype=str, keep_default_na=False)
    return raw.head(n).drop(columns=["click", "conversion"])


def _typed(cfg, path: str, fmt: str) -> dict:
    """impression_id -> typed features of a scoring input (valid rows only)."""
    from core.records import InvalidRecord, RecordSchema
    from serving.raw_examples import iter_raw_records

    schema, out = RecordSchema(cfg, require_labels=False), {}
    for rec in iter_raw_records(path, fmt, cfg):
        try:
            out[rec["values"]["impression_id"]] = schema.typed(rec["values"])
        except InvalidRecord:
            pass
    return out


def _predictions(out) -> dict:
    rows = [json.loads(line) for p in glob.glob(fs.join(fs.published(str(out)), "predictions*.jsonl")) for line in open(p)]
    return {r["impression_id"]: r for r in rows}


def _served(version_dir: str, cfg, typed: dict) -> dict:
    model = SessionModel(version_dir)
    try:
        ids = list(typed)
        out = model.run("serving_default", {"examples": [encode_raw_example(cfg, typed[i]) for i in ids]})
    finally:
        model.close()
    return {i: {k: float(v[n]) for k, v in out.items()} for n, i in enumerate(ids)}


def test_predict_csv_with_list_features_scores_valid_rows_and_dead_letters_bad_lists(list_run, tmp_path):
    cfg = _list_cfg()
    raw = _list_rows(list_run, 40)
    tagged = [i for i in raw.index if raw.loc[i, "item_tags"]]
    raw.loc[tagged[0], "item_tag_weights"] = "heavy" + raw.loc[tagged[0], "item_tag_weights"][1:]
    raw.loc[tagged[1], "item_tag_weights"] = raw.loc[tagged[1], "item_tag_weights"] + "|1.0"  # one weight too many
    assert (raw.hist_items == "").any() and raw.hist_items.str.count("|").max() >= cfg.data.lists[0].max_length
    src = tmp_path / "in.csv"
    raw.to_csv(src, index=False)
    out = tmp_path / "out"
    m = run_predict(cfg, list_run.run_dir, types.SimpleNamespace(input=str(src), output=str(out), format="csv")).metrics
    assert (m["rows_read"], m["predicted"], m["dead_lettered"]) == (40, 38, 2)
    dead = [json.loads(line) for p in glob.glob(fs.join(fs.published(str(out)), "dead_letters", "*.jsonl")) for line in open(p)]
    assert sorted(d["reason"] for d in dead) == ["invalid_list_weight", "list_weight_mismatch"]
    predictions = _predictions(out)
    expected = _served(list_run.teacher, cfg, _typed(cfg, str(src), "csv"))
    assert set(predictions) == set(expected) and len(expected) == 38
    for i, p in expected.items():
        for k, v in p.items():
            assert predictions[i][k] == pytest.approx(v, abs=1e-6)


def test_predict_jsonl_lists_score_like_the_same_rows_in_csv(list_run, tmp_path):
    cfg = _list_cfg()
    raw = _list_rows(list_run, 30)
    csv_src = tmp_path / "in.csv"
    raw.to_csv(csv_src, index=False)
    typed = _typed(cfg, str(csv_src), "csv")
    jsonl_src = tmp_path / "in.jsonl"
    with open(jsonl_src, "w") as f:
        for i, features in typed.items():  # JSON arrays for the lists, numbers for the numerics
            f.write(json.dumps({"impression_id": i, **features}) + "\n")
    outs = {}
    for fmt, src in (("csv", csv_src), ("jsonl", jsonl_src)):
        outs[fmt] = tmp_path / f"out-{fmt}"
        m = run_predict(cfg, list_run.run_dir, types.SimpleNamespace(input=str(src), output=str(outs[fmt]),
                                                                     format=fmt)).metrics
        assert (m["rows_read"], m["predicted"], m["dead_lettered"]) == (30, 30, 0)
    from_csv, from_jsonl = _predictions(outs["csv"]), _predictions(outs["jsonl"])
    assert set(from_csv) == set(from_jsonl) == set(typed)
    for i in typed:
        assert from_jsonl[i]["click_probability"] == pytest.approx(from_csv[i]["click_probability"], abs=1e-7)


def test_predict_with_a_student_needs_only_the_columns_it_reads(list_run, tmp_path):
    from core.features import raw_columns_for
    from tests.fakes.serving_models import STUDENT_FEATURES

    cfg = _list_cfg("export.model_name=student")
    columns = raw_columns_for(cfg, STUDENT_FEATURES)
    raw = _list_rows(list_run, 25)
    full = _typed(cfg, _write(raw, tmp_path / "full.csv"), "csv")
    src = _write(raw[["impression_id"] + columns], tmp_path / "in.csv")  # no hist_items, hour, ... columns
    out = tmp_path / "out"
    m = run_predict(cfg, list_run.run_dir, types.SimpleNamespace(input=src, output=str(out), format="csv")).metrics
    assert (m["rows_read"], m["predicted"], m["dead_lettered"]) == (25, 25, 0)
    predictions, expected = _predictions(out), _served(list_run.student, cfg, full)
    for i, p in expected.items():
        assert predictions[i]["click_probability"] == pytest.approx(p["click_probability"], abs=1e-6)


def _write(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return str(path)
