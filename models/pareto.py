"""Pareto frontiers of two task metrics (both maximised) and their 2-D hypervolume."""
from __future__ import annotations

import numpy as np


def pareto_front(points) -> np.ndarray:
    """The non-dominated points (maximising both coordinates), sorted by the first coordinate."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    keep = []
    for i, p in enumerate(pts):
        dominated = np.any(np.all(pts >= p, axis=1) & np.any(pts > p, axis=1))
        if not dominated and not any(np.array_equal(p, pts[j]) for j in keep):
            keep.append(i)
    front = pts[keep]
    return front[np.argsort(front[:, 0])]


def hypervolume(points, reference) -> float:
    """Area dominated by ``points`` and dominating ``reference`` (both coordinates maximised).

    Points not better than the reference in both coordinates add nothing.

    Raises:
      ValueError: the reference point is not two numbers.
    """
    ref = np.asarray(reference, dtype=float).ravel()
    if ref.shape != (2,):
        raise ValueError(f"`reference` must be two numbers. Received: reference={reference!r}")
    front = pareto_front(points)
    front = front[(front[:, 0] > ref[0]) & (front[:, 1] > ref[1])]
    # Sorted by x ascending, a front's y descends: the strip (x_{k-1}, x_k] is covered up to y_k.
    area, prev_x = 0.0, ref[0]
    for x, y in front:
        area += (x - prev_x) * (y - ref[1])
        prev_x = x
    return float(area)
