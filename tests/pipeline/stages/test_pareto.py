"""The Pareto study: grid, frontiers, hypervolume summary, verdict, artifacts."""
import json
import os

import pytest

from core import fs
from models.pareto_study import summarize, verdict
from core.config import load_config
from core.errors import ConfigError
from pipeline.stages.pareto import run as run_pareto
from tests.fakes.transformed_run import REPO, TINY, make_fake_run


def _rows(shift):
    return [{"aux": aux, "weight": w, "seed": s, "best_epoch": 1,
             "auc_1": 0.6 + 0.2 * w + (shift if aux else 0) + 0.001 * s, "auc_2": 0.8 - 0.2 * w + (shift if aux else 0)}
            for aux in (False, True) for w in (0.2, 0.5, 0.8) for s in (1, 2)]


def test_summary_and_verdict_follow_the_hypervolumes():
    better = summarize(_rows(0.02), (0.5, 0.5))
    on, off = better["with aux towers"], better["without aux towers"]
    assert on["hypervolume_mean"] > off["hypervolume_mean"] and len(on["hypervolume_per_seed"]) == 2
    assert on["per_weight"][0]["auc_2_mean"] == pytest.approx(0.8 - 0.04 + 0.02)
    assert verdict(better).startswith("Yes")
    assert verdict(summarize(_rows(-0.02), (0.5, 0.5))).startswith("No")


def test_study_needs_two_tasks_and_valid_weights(tmp_path):
    run_dir, _ = make_fake_run(str(tmp_path / "run"), sizes=(64, 32, 32))
    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), TINY + ["pareto.first_task_weights=[1.5]"])
    with pytest.raises(ConfigError, match="first_task_weights"):
        run_pareto(cfg, run_dir, None)
    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), TINY)
    cfg.data.tasks = cfg.data.tasks[:1]
    with pytest.raises(ConfigError, match="two tasks"):
        run_pareto(cfg, run_dir, None)


@pytest.mark.slow
def test_pareto_stage_trains_both_arms_and_writes_table_plot_and_verdict(tmp_path):
    run_dir, _ = make_fake_run(str(tmp_path / "run"))
    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"),
                      TINY + ["pareto.first_task_weights=[0.3]", "pareto.seeds=[1]", "pareto.epochs=1"])
    result = run_pareto(cfg, run_dir, None)
    assert result.rows == 2
    saved = fs.read_json(fs.join(fs.published(run_dir.path("pareto")), "summary.json"))
    assert {(p["aux"], p["weight"]) for p in saved["points"]} == {(a, w) for a in (False, True) for w in (0.3,)}
    assert all(0.0 <= p["auc_1"] <= 1.0 for p in saved["points"])
    assert os.path.getsize(run_dir.path("plots", "pareto_frontiers.png")) > 0
    assert "with aux towers" in result.report and "| arm |" in result.report
    assert result.message.startswith("pareto: ") and result.message[len("pareto: "):].split(":")[0] in ("Yes", "No", "Not conclusively")
