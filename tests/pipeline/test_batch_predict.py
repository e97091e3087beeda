"""The predict stage: one prediction per valid row, bad rows dead-lettered, counts add up."""
import glob
import json
import os
import types

import pandas as pd
import pytest

from core.errors import InputError
from core.feature_specs import encode_raw_example
from serving.session_model import SessionModel
from tests.fakes.serving_models import serving_config
from pipeline.stages.predict import run as run_predict


@pytest.fixture
def beam_cfg():
    return serving_config("preprocess.beam.direct_running_mode=in_memory")


def test_predict_scores_every_row_or_dead_letters_it(exported_fake_run, beam_cfg, tmp_path):
    raw = pd.read_csv(glob.glob(os.path.join(exported_fake_run.run_dir.raw_data_dir, "*.csv"))[0]).head(30)
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
    rows = [json.loads(line) for p in glob.glob(str(out / "predictions*.jsonl")) for line in open(p)]
    dead = [json.loads(line) for p in glob.glob(str(out / "dead_letters" / "*.jsonl")) for line in open(p)]
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
    assert json.load(open(out / "counts.json"))["predicted"] == 28


def test_predict_without_published_model(beam_cfg, tmp_path):
    from core.run_dir import RunDir

    with pytest.raises(InputError, match="no published version"):
        run_predict(beam_cfg, RunDir(str(tmp_path)), types.SimpleNamespace(input=None, output=None, format=None))


def test_a_truncated_input_fails_predict_with_an_error_naming_it_and_publishes_nothing(exported_fake_run, beam_cfg,
                                                                                       tmp_path):
    import gzip

    raw = pd.read_csv(glob.glob(os.path.join(exported_fake_run.run_dir.raw_data_dir, "*.csv"))[0]).head(200)
    whole = gzip.compress(raw.drop(columns=["click", "conversion"]).to_csv(index=False).encode())
    src = tmp_path / "cut.csv.gz"
    src.write_bytes(whole[: len(whole) // 2])  # the gzip stream ends before its end-of-stream marker
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"cut\.csv\.gz.*(truncated|corrupt)") as raised:
        run_predict(beam_cfg, exported_fake_run.run_dir, types.SimpleNamespace(input=str(src), output=str(out), format="csv"))
    assert "while running" not in str(raised.value)  # the user's one line, not the runner's wrapping
    assert not out.exists()
