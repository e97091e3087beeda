"""Names of the serving model's outputs, and which output scores which task.

Every task ``t`` has ``"<t>_logit"`` and ``"<t>_probability"``. In ESMM mode the funnel
child's ``"<child>_probability"`` is pCVR (conversion given click) and the model also
outputs ``"ctcvr_logit"`` / ``"ctcvr_probability"`` = pCTR x pCVR, the per-impression
probability the child's per-impression label is scored against.
"""
from __future__ import annotations

CTCVR = "ctcvr"


def logit_key(task: str) -> str:
    """Output name of a task's main-tower logit."""
    return f"{task}_logit"


def probability_key(task: str) -> str:
    """Output name of a task's main-tower probability."""
    return f"{task}_probability"


def esmm_child(model_cfg, funnel) -> str | None:
    """The funnel child task when ``model_cfg.esmm`` is on, else None."""
    if funnel is None or not getattr(model_cfg, "esmm", False):
        return None
    return funnel.child


def eval_output_key(task: str, model_cfg, funnel) -> str:
    """The output to score against ``task``'s per-impression label.

    The ESMM child is scored by ``ctcvr_probability`` (its own head is pCVR, defined only on
    clicked impressions); every other task by ``"<task>_probability"``.
    """
    if esmm_child(model_cfg, funnel) == task:
        return probability_key(CTCVR)
    return probability_key(task)


def output_keys(tasks: list[str], model_cfg, funnel) -> list[str]:
    """All output names of the serving model, in a stable order."""
    keys = []
    for t in tasks:
        keys += [logit_key(t), probability_key(t)]
    if esmm_child(model_cfg, funnel) is not None:
        keys += [logit_key(CTCVR), probability_key(CTCVR)]
    return keys
