"""``python -m pipeline distill``: see ``pipeline/distillation.py``."""
from __future__ import annotations

from pipeline.stages.base import StageResult, add_beam_arguments, stage


@stage("distill", "score data with the teacher on Beam, distil students of several sizes, time them as TF Serving runs them",
       arguments=add_beam_arguments,
       reads=("preprocess", "train"))
def run(cfg, run_dir, opts) -> StageResult:
    from pipeline.distillation import distill

    return distill(cfg, run_dir)
