"""The synthetic click/conversion generator (pipeline/synthetic/generator.py, click_model.py; the generate stage)."""
import glob
import math
import os

import numpy as np
import pandas as pd
import pytest

from core import fs
from pipeline.synthetic import generator as synthetic
from core.config import load_config
from core.errors import ConfigError
from core.run_dir import RunDir, read_json
from pipeline.synthetic.click_model import COLUMNS, World
from tests.conftest import REPO
from pipeline.stages.generate import run as run_generate

SMALL = ["synthetic.num_users=200", "synthetic.num_items=100"]


def _cfg(*overrides):
    return load_config(os.path.join(REPO, "configs", "default.yaml"), [*SMALL, *overrides])


def _write(tmp_path, name, *overrides):
    cfg = _cfg(*overrides)
    out = tmp_path / name
    out.mkdir()
    counts = synthetic.generate(cfg.synthetic, str(out))
    return out, counts


def _read_all(directory, fmt="csv"):
    files = sorted(glob.glob(os.path.join(directory, f"part-*.{fmt}")))
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    return pd.concat([read(f) for f in files], ignore_index=True), files


def _bytes(directory):
    out = {}
    for path in sorted(glob.glob(os.path.join(directory, "part-*"))):
        with open(path, "rb") as f:
            out[os.path.basename(path)] = f.read()
    return out


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    a, _ = _write(tmp_path, "a", "synthetic.rows=3000", "synthetic.chunk_rows=1000")
    b, _ = _write(tmp_path, "b", "synthetic.rows=3000", "synthetic.chunk_rows=1000")
    c, _ = _write(tmp_path, "c", "synthetic.rows=3000", "synthetic.chunk_rows=1000", "synthetic.seed=8")
    assert list(_bytes(a)) == ["part-00000.csv", "part-00001.csv", "part-00002.csv"]
    assert _bytes(a) == _bytes(b)
    assert all(_bytes(a)[name] != _bytes(c)[name] for name in _bytes(a))


def test_chunked_output_equals_unchunked_output(tmp_path):
    # 7,000-row chunks cut across the generator's 10,000-row blocks.
    chunked, counts = _write(tmp_path, "chunked", "synthetic.rows=25000", "synthetic.chunk_rows=7000")
    whole, _ = _write(tmp_path, "whole", "synthetic.rows=25000", "synthetic.chunk_rows=25000")
    left, files = _read_all(chunked)
    right, whole_files = _read_all(whole)
    assert len(files) == math.ceil(25000 / 7000) == len(counts["files"])
    assert [len(pd.read_csv(f)) for f in files] == [7000, 7000, 7000, 4000]
    assert len(whole_files) == 1
    pd.testing.assert_frame_equal(left, right)


def test_columns_and_value_contract(tmp_path):
    out, counts = _write(tmp_path, "d", "synthetic.rows=4000", "synthetic.chunk_rows=4000")
    df, _ = _read_all(out)
    assert list(df.columns) == COLUMNS
    assert counts["rows"] == len(df) == 4000
    assert df["impression_id"].is_unique
    assert df["user_id"].str.fullmatch(r"u\d+").all() and df["item_id"].str.fullmatch(r"i\d+").all()
    assert df["item_category"].str.fullmatch(r"c\d+").all()
    assert set(df["device"]) <= {"android", "ios", "web", "tablet"}
    assert df["hour"].between(0, 23).all() and df["hour"].dtype == np.int64
    assert (df["price"] > 0).all()
    assert df[["p_click", "p_conversion"]].apply(lambda c: c.between(0, 1).all()).all()
    assert (df["p_conversion"] <= df["p_click"]).all()
    assert set(df["click"]) <= {0, 1} and set(df["conversion"]) <= {0, 1}


def test_no_conversion_without_a_click(tmp_path):
    out, _ = _write(tmp_path, "f", "synthetic.rows=20000", "synthetic.chunk_rows=20000")
    df, _ = _read_all(out)
    assert df["conversion"].sum() > 0
    assert not ((df["conversion"] == 1) & (df["click"] == 0)).any()


def test_label_rates_match_the_oracle_probabilities_and_defaults():
    # Default user/item counts and rates, 50,000 rows: the shipped data's actual rates.
    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), ["synthetic.rows=50000", "synthetic.chunk_rows=50000"])
    (df,) = list(synthetic.iter_chunks(cfg.synthetic))
    for label, prob in (("click", "p_click"), ("conversion", "p_conversion")):
        p = df[prob].to_numpy()
        tolerance = 4 * math.sqrt((p * (1 - p)).sum()) / len(p)  # 4 binomial standard deviations
        assert abs(df[label].mean() - p.mean()) < tolerance, label
    assert 0.01 <= df["conversion"].mean() <= 0.03
    assert 0.05 <= df["click"].mean() <= 0.10
    # The calibrated biases hit the configured targets on the true probabilities.
    assert df["p_click"].mean() == pytest.approx(cfg.synthetic.click_rate, rel=0.05)
    assert df["p_conversion"].mean() == pytest.approx(cfg.synthetic.conversion_rate, rel=0.05)


def _logit(p):
    return np.log(p) - np.log1p(-p)


def test_task_correlation_knob_moves_how_related_the_tasks_are():
    def corr(rho):
        s = _cfg(f"synthetic.task_correlation={rho}").synthetic
        cols = World.create(s).impressions(0)
        p_cvr = cols["p_conversion"] / cols["p_click"]
        return np.corrcoef(_logit(cols["p_click"]), _logit(p_cvr))[0, 1]

    low, high = corr(0.0), corr(1.0)
    assert high > low + 0.3, (low, high)


def test_parquet_output_is_readable(tmp_path):
    out, _ = _write(tmp_path, "p", "synthetic.rows=2500", "synthetic.chunk_rows=1000", "synthetic.format=parquet")
    df, files = _read_all(out, "parquet")
    assert len(files) == 3 and len(df) == 2500
    assert list(df.columns) == COLUMNS
    csv_out, _ = _write(tmp_path, "c", "synthetic.rows=2500", "synthetic.chunk_rows=1000")
    csv_df, _ = _read_all(csv_out)
    pd.testing.assert_series_equal(df["impression_id"], csv_df["impression_id"])
    pd.testing.assert_series_equal(df["click"], csv_df["click"])


def test_stage_writes_marker_plot_report_and_then_resumes(tmp_path):
    cfg = _cfg("synthetic.rows=3000", "synthetic.chunk_rows=1000")
    run_dir = RunDir(str(tmp_path / "run"))
    first = run_generate(cfg, run_dir, None)
    assert first.rows == 3000 and not first.extra["skipped"]
    assert set(first.metrics) == {"click_rate", "conversion_rate", "conversion_given_click"}
    assert 0 < first.metrics["conversion_rate"] < first.metrics["click_rate"] < 1
    assert first.plots == ["plots/synthetic_probabilities.png"]
    assert os.path.getsize(os.path.join(run_dir.root, first.plots[0])) > 1000
    marker = read_json(os.path.join(run_dir.raw_data_output, synthetic.SUCCESS_FILE))
    assert marker["rows"] == 3000 and marker["synthetic"]["rows"] == 3000
    assert "click rate" in first.report
    pattern, fmt = run_dir.raw_input(cfg)
    assert fmt == "csv" and len(glob.glob(pattern)) == 3

    mtime = os.path.getmtime(os.path.join(run_dir.raw_data_output, "part-00000.csv"))
    again = run_generate(cfg, run_dir, None)
    assert again.extra["skipped"] and again.rows == 3000 and again.metrics == first.metrics
    assert os.path.getmtime(os.path.join(run_dir.raw_data_output, "part-00000.csv")) == mtime

    changed = run_generate(_cfg("synthetic.rows=2000", "synthetic.chunk_rows=1000"), run_dir, None)
    assert not changed.extra["skipped"] and changed.rows == 2000
    assert len(glob.glob(run_dir.raw_input(cfg)[0])) == 2  # the old 3-file output was replaced, not mixed in
    assert glob.glob(pattern) == []  # and its attempt directory removed


def test_a_failed_generation_leaves_the_previous_output_untouched(tmp_path, monkeypatch):
    cfg = _cfg("synthetic.rows=2000", "synthetic.chunk_rows=1000")
    run_dir = RunDir(str(tmp_path / "run"))
    run_generate(cfg, run_dir, None)
    before = _bytes(run_dir.raw_data_output)
    calls = []

    def failing_write(frame, directory, index, fmt):
        calls.append(index)
        if index == 1:
            raise OSError("disk full")
        return real_write(frame, directory, index, fmt)

    real_write = synthetic.write_part
    monkeypatch.setattr(synthetic, "write_part", failing_write)
    with pytest.raises(OSError, match="disk full"):
        run_generate(_cfg("synthetic.rows=2000", "synthetic.chunk_rows=1000", "synthetic.seed=9"), run_dir, None)
    assert calls == [0, 1]
    assert _bytes(run_dir.raw_data_output) == before
    assert fs.listdir(run_dir.raw_data_dir) == sorted([fs.basename(run_dir.raw_data_output), fs.COMMITTED])


def test_stage_refuses_file_sources(tmp_path):
    cfg = _cfg("data.source=files", "data.path=/nowhere/x.csv")
    with pytest.raises(ConfigError, match="generate: data.source is 'files'"):
        run_generate(cfg, RunDir(str(tmp_path / "run")), None)


# ----------------------------------------------------------------- hist_items and item_tags
from sklearn.metrics import roc_auc_score  # noqa: E402

from pipeline.synthetic import click_model  # noqa: E402

_TAG_TOKEN = r"t(\d+):(\d+(?:\.\d{1,3})?)"  # "t<k>:<weight>", at most 3 decimals


def _lists(series):
    """A CSV list column (read by pandas: an empty field is NaN) as lists of str."""
    return [v.split("|") if v else [] for v in series.fillna("").astype(str)]


def test_list_columns_parse_and_respect_their_bounds(tmp_path):
    out, _ = _write(tmp_path, "l", "synthetic.rows=20000", "synthetic.chunk_rows=20000")
    df, _ = _read_all(out)
    hist = _lists(df["hist_items"])
    lengths = np.array([len(h) for h in hist])
    assert lengths.min() == 0 and lengths.max() <= click_model.HISTORY_MAX == 50
    assert 0.02 < (lengths == 0).mean() < 0.2  # some empty histories
    assert (lengths >= 20).mean() > 0.1  # and long ones
    n_items = _cfg().synthetic.num_items
    ids = pd.Series([i for h in hist for i in h])
    assert ids.str.fullmatch(r"i\d+").all() and ids.str[1:].astype(int).between(0, n_items - 1).all()
    assert set(ids) <= set(f"i{k}" for k in range(n_items))
    tags = _lists(df["item_tags"])
    assert all(1 <= len(t) <= click_model.TAGS_PER_ITEM_MAX == 4 for t in tags)
    tokens = pd.Series([t for row in tags for t in row])
    parts = tokens.str.extract(f"^{_TAG_TOKEN}$")
    assert parts.notna().all().all(), tokens[parts[0].isna()].head()
    assert parts[0].astype(int).between(0, click_model.NUM_TAGS - 1).all()
    weights = parts[1].astype(float)
    assert np.isfinite(weights).all() and weights.between(0.01, 1.0).all()
    assert all(len({t.split(":")[0] for t in row}) == len(row) for row in tags)  # distinct tags per item
    # The tags are the item's (one item, one tag list); their relevance weights vary per impression.
    df["tag_set"] = [" ".join(t.split(":")[0] for t in row) for row in tags]
    assert df.groupby("item_id")["tag_set"].nunique().max() == 1
    assert df.groupby("item_id")["item_tags"].nunique().max() > 10
    # A history is per impression: one user's histories differ between impressions.
    top_user = df["user_id"].value_counts().index[0]
    assert df.loc[df["user_id"] == top_user, "hist_items"].nunique() > 10


def test_parquet_list_columns_are_string_lists_equal_to_the_csv_fields(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq_out, _ = _write(tmp_path, "p", "synthetic.rows=12000", "synthetic.chunk_rows=5000", "synthetic.format=parquet")
    whole, _ = _write(tmp_path, "w", "synthetic.rows=12000", "synthetic.chunk_rows=12000", "synthetic.format=parquet")
    csv_out, _ = _write(tmp_path, "c", "synthetic.rows=12000", "synthetic.chunk_rows=12000")
    files = sorted(glob.glob(os.path.join(pq_out, "part-*.parquet")))
    schema = pq.read_schema(files[0])
    assert schema.names == COLUMNS
    for c in click_model.LIST_COLUMNS:
        assert schema.field(c).type == pa.list_(pa.string()), c
    chunked = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    (one,) = [pq.read_table(f).to_pandas() for f in sorted(glob.glob(os.path.join(whole, "part-*.parquet")))]
    csv_df, _ = _read_all(csv_out)
    for c in click_model.LIST_COLUMNS:
        as_lists = [list(v) for v in chunked[c]]
        assert as_lists == [list(v) for v in one[c]], c  # chunk-independent
        assert as_lists == _lists(csv_df[c]), c  # the same values as the CSV fields
    assert any(len(v) == 0 for v in chunked["hist_items"])


def test_history_is_most_recent_last(tmp_path):
    # From the written data: the target re-shows a recent history item (documented: age
    # Geometric(0.35) - 1), so it equals the LAST item far more often than the first, and the
    # last items share the target's category (the session intent) more often than the first.
    out, _ = _write(tmp_path, "r", "synthetic.rows=30000", "synthetic.chunk_rows=30000")
    df, _ = _read_all(out)
    category = dict(zip(df["item_id"], df["item_category"]))
    hist = _lists(df["hist_items"])
    long = [k for k, h in enumerate(hist) if len(h) >= 10]
    assert len(long) > 5000
    target = df["item_id"].to_numpy()
    target_category = df["item_category"].to_numpy()
    last = np.mean([hist[k][-1] == target[k] for k in long])
    first = np.mean([hist[k][0] == target[k] for k in long])
    assert last > 0.08 and last > 4 * first, (last, first)
    same_last = np.mean([category.get(hist[k][-1]) == target_category[k] for k in long])
    same_first = np.mean([category.get(hist[k][0]) == target_category[k] for k in long])
    assert same_last > same_first + 0.15, (same_last, same_first)
    # From the world: the recent items reveal the latent session intent, the old ones barely.
    world = World.create(_cfg().synthetic)
    x, _ = world.draw_block(0)
    intent = world.item_category[x["hist"]] == x["intent"][x["row"]]
    assert intent[x["age"] == 0].mean() > 0.75 and intent[x["age"] >= 15].mean() < 0.35


def test_oracle_includes_the_history_and_tag_terms_of_the_written_columns():
    # Recomputes S_rep, S_cat and T_raw from the written strings with the documented math
    # (click_model's docstring: r_j = exp(-(L - j) / 10), most recent last; T = sum_k w_k
    # (g[t_k] + pref[u, t_k]) with the written weights) and checks they are what p_click was
    # computed from.
    world = World.create(_cfg().synthetic)
    cols = world.impressions(3)
    x, _ = world.draw_block(3)
    item_category = {f"i{k}": c for k, c in enumerate(world.item_category)}
    s_rep, s_cat, tags = [], [], []
    for k in range(click_model.BLOCK_ROWS):
        h = cols["hist_items"][k].split("|") if cols["hist_items"][k] else []
        target = cols["item_id"][k]
        r = np.exp(-(len(h) - 1 - np.arange(len(h))) / 10.0)  # position j (0-based): age L - 1 - j
        s_rep.append(float(sum(r[j] for j, v in enumerate(h) if v == target)))
        s_cat.append(float(sum(r[j] for j, v in enumerate(h) if item_category[v] == item_category[target])))
        u = int(cols["user_id"][k][1:])
        tokens = [t.split(":") for t in cols["item_tags"][k].split("|")]
        tags.append(sum(float(w) * (world.tag_appeal[int(t[1:])] + world.user_tag_pref[u, int(t[1:])]) for t, w in tokens))
    s_rep, s_cat = np.array(s_rep), np.array(s_cat)
    np.testing.assert_allclose(np.stack(world.history_sums(x)), np.stack([s_rep, s_cat]), atol=1e-12)
    np.testing.assert_allclose(world.history_raw(x), 2 * np.tanh(s_rep) + np.tanh(s_cat / 2), atol=1e-12)
    np.testing.assert_allclose(world.tags_raw(x), np.array(tags), atol=1e-9)
    assert (s_rep > 0).mean() > 0.1
    p_click, p_conversion = world.probabilities(x)
    np.testing.assert_array_equal(cols["p_click"], p_click)
    np.testing.assert_array_equal(cols["p_conversion"], p_conversion)
    # ... and they are in it: without them the probabilities are different.
    for terms in (("category", "tags"), ("repeat", "tags"), ("history",), ("history", "expected_tags")):
        other = world.probabilities(x, terms)
        assert np.abs(_logit(other[0]) - _logit(p_click)).mean() > 0.05, terms
        assert np.abs(_logit(other[1] / other[0]) - _logit(p_conversion / p_click)).mean() > 0.02, terms


def test_history_and_tags_carry_signal_the_ids_cannot():
    # The default world, 100,000 impressions: the oracle's click AUC drops when a term is
    # left out of its logit (measured at the defaults: history 0.059, its repeat part 0.031,
    # tags 0.011, the tags' per-impression weights 0.004), and the history term is mostly per
    # impression, not per (user, category).
    world = World.create(load_config(os.path.join(REPO, "configs", "default.yaml")).synthetic)
    draws = [world.draw_block(b) for b in range(10)]
    xs = [x for x, _ in draws]
    click = np.concatenate([world.impressions(b)["click"] for b in range(10)])

    def auc(terms):
        return roc_auc_score(click, np.concatenate([world.probabilities(x, terms)[0] for x in xs]))

    full = auc(click_model.TERMS)
    assert full - auc(("tags",)) > 0.03
    assert full - auc(("category", "tags")) > 0.015  # exact re-visits: what mean pooling cannot see
    assert full - auc(("repeat", "category")) > 0.006
    assert full - auc(("repeat", "category", "expected_tags")) > 0.002  # what item_id cannot tell
    h = np.concatenate([world.history_raw(x) for x in xs])
    key = np.concatenate([x["user"] * 1000 + world.item_category[x["item"]] for x in xs])
    _, group = np.unique(key, return_inverse=True)
    per_group = (np.bincount(group, h) / np.bincount(group))[group]
    assert np.var(h - per_group) / np.var(h) > 0.5


def test_parquet_lists_of_empty_and_mixed_fields():
    import pyarrow as pa
    import pyarrow.compute as pc

    for fields in (["", "", ""], ["i1|i2", "", "i3"], ["", "t1:0.5"]):
        got = synthetic._string_lists(pa.array(fields, type=pa.string()), pa, pc)
        assert got.type == pa.list_(pa.string())
        assert got.to_pylist() == [f.split("|") if f else [] for f in fields]
