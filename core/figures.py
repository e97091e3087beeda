"""PNG figures for reports: matplotlib on the Agg backend, saved atomically on any filesystem."""
from __future__ import annotations

import io

from core import fs


def pyplot():
    """matplotlib's pyplot on the Agg backend (PNG files, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str, dpi: int = 100) -> str:
    """Saves ``fig`` as a PNG at ``path`` atomically (``core.fs.write_atomic``), closes it, returns ``path``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    fs.write_atomic(path, buf.getvalue())
    return path
