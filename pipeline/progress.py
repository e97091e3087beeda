"""Progress of a Beam stage while it runs: rows read, rows/s and an ETA where the total is known.

The DirectRunner offers no live metrics (``PipelineResult.metrics()`` is filled when the
job ends), so the readers count: while a ``StageProgress`` is active, every reader DoFn built
in this process (``RowCounter``) writes its running count to a small file of its own in the
progress directory, at most once a second; a thread of the launching process sums the files
every ``interval`` seconds and reports. On a terminal that is one line redrawn in place; in
a log (not a TTY) a plain log line per interval. Runners whose workers do not share this
machine's disk (Dataflow, Flink or Spark clusters) leave the directory empty: their own UI
shows progress, and nothing is printed here.

Example::

    with StageProgress("preprocess", total=rows):
        run_the_pipeline()   # readers constructed inside count into it
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
import uuid

from core import fs

log = logging.getLogger("pipeline.progress")

DEFAULT_INTERVAL = 10.0
_active: list["StageProgress"] = []


def active_dir() -> str | None:
    """The directory readers built now should count into (None: no progress is shown)."""
    return _active[-1].directory if _active else None


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def progress_text(stage: str, rows: int, elapsed: float, total: int | None, what: str = "rows read") -> str:
    """``predict: 12,000 rows read (2,100 rows/s), 0:35 elapsed[, 57%, ETA 0:27]``."""
    rate = rows / elapsed if elapsed > 0 else 0.0
    text = f"{stage}: {rows:,} {what} ({rate:,.0f}/s), {_duration(elapsed)} elapsed"
    if total:
        text += f", {min(rows / total, 1.0):.0%}"
        if rate > 0 and rows < total:
            text += f", ETA {_duration((total - rows) / rate)}"
    return text


class StageProgress:
    """Reports the rows the readers of this stage count (module docstring).

    Args:
      stage: the name printed.
      total: the rows the stage will read, when known (gives the percentage and the ETA).
      what: what is counted, as printed ("rows read"; preprocess reads its input twice).
      interval: seconds between reports (the first after one interval); default
        ``$PIPELINE_PROGRESS_SECONDS``, else ``DEFAULT_INTERVAL``.
      stream: where a TTY's in-place line goes (default stderr).
    """

    def __init__(self, stage: str, total: int | None = None, interval: float | None = None, stream=None,
                 what: str = "rows read"):
        if interval is None:
            interval = float(os.environ.get("PIPELINE_PROGRESS_SECONDS", DEFAULT_INTERVAL))
        self.stage, self.total, self.interval, self.what = stage, total, interval, what
        self.stream = stream or sys.stderr
        self.directory = None
        self._stop = threading.Event()
        self._thread = None
        self._start = 0.0
        self._drawn = False
        self._last = 0
        self.reports: list[str] = []

    def rows(self) -> int:
        n = 0
        for name in fs.listdir(self.directory):
            if name.endswith(".count"):
                try:
                    n += int(fs.read_text(fs.join(self.directory, name)).strip() or 0)
                except Exception:  # noqa: BLE001  being replaced this instant
                    continue
        return n

    def _report(self) -> None:
        rows = self.rows()
        if rows == 0 or (rows == self._last and not self.stream.isatty()):
            return  # nothing read yet, or nothing new for the log
        self._last = rows
        text = progress_text(self.stage, rows, time.monotonic() - self._start, self.total, self.what)
        self.reports.append(text)
        if self.stream.isatty():
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            self._drawn = True
        else:
            log.info("%s", text)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._report()

    def __enter__(self) -> "StageProgress":
        self.directory = tempfile.mkdtemp(prefix=f"progress-{self.stage}-")
        self._start = time.monotonic()
        _active.append(self)
        self._thread = threading.Thread(target=self._run, name=f"progress-{self.stage}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        _active.remove(self)
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
        fs.rmtree(self.directory)


class RowCounter:
    """The worker side: ``count()`` per row; the running total goes to a file of this counter's
    own in ``directory`` at most once a second (``flush`` writes it now). Pickles as its
    directory only, so each DoFn copy on each worker counts apart."""

    def __init__(self, directory: str | None):
        self.directory = directory
        self._n = 0
        self._written = 0.0
        self._path = None

    def __getstate__(self):
        return {"directory": self.directory}

    def __setstate__(self, state):
        self.__init__(state["directory"])

    def count(self, n: int = 1) -> None:
        if self.directory is None:
            return
        self._n += n
        now = time.monotonic()
        if now - self._written >= 1.0:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        if self.directory is None or not fs.isdir(self.directory):  # gone: the stage has ended
            return
        if self._path is None:
            self._path = fs.join(self.directory, f"{os.getpid()}-{uuid.uuid4().hex[:8]}.count")
        try:
            fs.write_atomic(self._path, str(self._n))
        except Exception:  # noqa: BLE001  the stage ended and removed the directory: nothing to report to
            pass
        self._written = time.monotonic() if now is None else now
