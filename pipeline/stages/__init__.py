"""The stages of ``python -m pipeline``, one module each, registered in ``STAGES`` in the
order ``run`` executes them (see ``pipeline/stages/base.py`` for the contract)."""
from pipeline.stages.base import STAGES, Stage, StageResult, run_stage, stages_for_run
from pipeline.stages import generate, preprocess, train, distill, evaluate, export, predict, serve, pareto  # noqa: E402,F401,I001  (registration order = run order)

__all__ = ["STAGES", "Stage", "StageResult", "run_stage", "stages_for_run"]
