"""serving.serving_cost: latency in the TF1 session path and the parse/transform/model breakdown."""
import os

import numpy as np
import pytest

from serving import serving_cost
from tests.fakes.serving_models import build_tiny_savedmodel, tiny_example


def test_example_batches_cycle_through_the_examples():
    batches = serving_cost.example_batches([b"a", b"b", b"c"], 2, 10)
    # 3 examples, batch 2: the sequence repeats after 3 batches
    assert [list(b) for b in batches] == [[b"a", b"b"], [b"c", b"a"], [b"b", b"c"]]
    with pytest.raises(ValueError, match="no serialized"):
        serving_cost.example_batches([], 2, 1)


def test_percentiles_ms():
    out = serving_cost.percentiles_ms([0.001, 0.002, 0.003, 0.004, 0.005])
    assert out == {"p50_ms": 3.0, "p90_ms": 4.6, "p99_ms": 4.96, "n": 5}


def test_interleaved_latency_flips_the_order_and_drops_warmup():
    calls = []
    runners = {"a": lambda b: calls.append(("a", b)), "b": lambda b: calls.append(("b", b))}
    samples = serving_cost.interleaved_latency(runners, [1, 2], calls=3, warmup=1)
    assert [n for n, _ in calls] == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [b for _, b in calls] == [1, 1, 2, 2, 1, 1, 2, 2]
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3}


def test_session_latency_ms_runs_each_export(tmp_path):
    one = build_tiny_savedmodel(str(tmp_path / "one"), 1.0)
    two = build_tiny_savedmodel(str(tmp_path / "two"), 2.0)
    examples = [tiny_example(x) for x in (0.5, -1.0, 2.0)]
    out = serving_cost.session_latency_ms({"one": one, "two": two}, examples, batch_size=4, calls=5, warmup=2)
    assert set(out) == {"one", "two"}
    for r in out.values():
        assert r["n"] == 5
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]


def test_loaded_model_runs_a_signature_in_a_tf1_session(tmp_path):
    path = build_tiny_savedmodel(str(tmp_path / "m"), 2.0)
    m = serving_cost.LoadedModel(path)
    try:
        run = m.runner("serving_default")
        out = dict(zip(m.output_keys("serving_default"),
                       run(np.asarray([tiny_example(0.5), tiny_example(-1.0)], dtype=object))))
        with pytest.raises(ValueError, match="signature 'nope' not in"):
            m.runner("nope")
        with pytest.raises(ValueError, match="one string input"):
            m.runner("predict_raw")
    finally:
        m.close()
    np.testing.assert_allclose(out["click_probability"], 1 / (1 + np.exp(-2.0 * np.array([0.5, -1.0]))), rtol=1e-6)
    np.testing.assert_allclose(out["conversion_probability"], out["click_probability"] / 2, rtol=1e-6)


@pytest.fixture(scope="module")
def list_modules(list_run):
    """The list fake's teacher and student ServingModules (TF Transform layer + ranker)."""
    from serving.export import serving_parts

    return {"teacher": serving_parts(list_run.cfg, list_run.run_dir, "teacher").module,
            "student": serving_parts(list_run.student_cfg, list_run.run_dir, "student").module}


def _examples(list_run, n):
    from core.feature_specs import encode_raw_example
    from serving.raw_examples import read_split

    rows = read_split(list_run.cfg, *list_run.run_dir.raw_input(list_run.cfg), "test", n)
    return [encode_raw_example(list_run.cfg, r["features"]) for r in rows]


def test_stage_export_serving_default_equals_the_published_export(list_run, list_modules, tmp_path):
    """The timing export's stages are the exported model's: its serving_default scores as the
    published version does, parse gives one shape per parsed column and parse_transform one
    value per model input."""
    from serving.session_model import SessionModel

    examples = _examples(list_run, 40)
    module = list_modules["student"]
    path = serving_cost.save_stage_export(module, str(tmp_path / "stages"))
    stages = serving_cost.LoadedModel(path)
    published = SessionModel(list_run.student)
    try:
        batch = np.asarray(examples, dtype=object)
        got = dict(zip(stages.output_keys("serving_default"), stages.runner("serving_default")(batch)))
        want = published.run("serving_default", {"examples": examples})
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], atol=1e-6)
        shapes = stages.runner("parse")(batch)
        assert len(shapes) == len(module._feature_spec)
        assert all(int(s[0]) == len(examples) for s in shapes)
        assert len(stages.runner("parse_transform")(batch)) == len(module._model_inputs)
        assert [list(x) for x in stages.runner("feed")(batch)] == [[len(examples)]]
    finally:
        stages.close()
        published.close()


def test_breakdown_ms_reports_every_stage_per_model_and_batch(list_run, list_modules, tmp_path):
    examples = _examples(list_run, 30)
    out = serving_cost.breakdown_ms(list_modules, examples, batch_sizes=(1, 8), calls=4, warmup=1,
                                    scratch_dir=str(tmp_path))
    assert os.listdir(tmp_path) == []  # the timing exports are removed
    assert out["batch_sizes"] == [1, 8] and set(out["batches"]) == {"1", "8"}
    for per in out["batches"].values():
        assert set(per) == {"teacher", "student"}
        for r in per.values():
            p50 = r["stage_p50_ms"]
            assert set(p50) == set(serving_cost.STAGES) and all(v > 0 for v in p50.values())
            assert r["overhead_ms"] == p50["feed"] and r["total_ms"] == p50["serving_default"]
            assert r["parse_ms"] == pytest.approx(p50["parse"] - p50["feed"], abs=1e-3)
            assert r["overhead_ms"] + r["parse_ms"] + r["transform_ms"] + r["model_ms"] == pytest.approx(
                r["total_ms"], abs=3e-3)
            assert r["transform_ms"] == pytest.approx(p50["parse_transform"] - p50["parse"], abs=1e-3)
            assert r["model_ms"] == pytest.approx(p50["serving_default"] - p50["parse_transform"], abs=1e-3)
    table = serving_cost.breakdown_table(out)
    assert table.count("| teacher |") == 2 and table.count("| student |") == 2 and "student / teacher" in table


def test_the_breakdown_table_gives_every_later_model_its_ratio_to_the_first():
    def row(total):
        return {"overhead_ms": 0.1, "parse_ms": 0.2, "transform_ms": 0.3, "model_ms": total - 0.6, "total_ms": total}

    result = {"batches": {"64": {"teacher": row(4.0), "student": row(3.0), "small": row(1.0)}}}
    table = serving_cost.breakdown_table(result, ["teacher", "student", "small"]).splitlines()
    assert table[0].endswith("| total / teacher |")
    assert table[2].endswith("| 4.000 | |") and table[3].endswith("| 3.000 | 0.75x |")
    assert table[4].endswith("| 1.000 | 0.25x |")
    two = serving_cost.breakdown_table(result, ["teacher", "student"]).splitlines()
    assert two[0].endswith("| student / teacher |") and len(two) == 4
