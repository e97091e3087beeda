"""Beam's portable runner path on loopback: a job service and an external SDK worker pool.

``PortableRunner`` submits the pipeline over the Job API to Beam's Python job service
(``apache_beam.runners.portability.local_job_service_main``), which runs it through the Fn
API on SDK workers started by an external worker pool
(``apache_beam.runners.worker.worker_pool_main``): the path Flink, Spark and Dataflow Runner
v2 use (Job API, Fn API, an SDK harness in another process). Each is its own process here.

``PortableBeam(tmp_dir).beam_config()`` is the ``BeamConfig`` that sends a stage there.
"""
from __future__ import annotations

import os
import subprocess
import sys

from tests.fakes.procs import free_port, wait_for_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class PortableBeam:
    """Starts the job service and the worker pool (``with PortableBeam(dir) as beam_path:``)."""

    def __init__(self, tmp_dir: str):
        self.tmp_dir = tmp_dir
        self.job_port, self.worker_port = free_port(), free_port()
        self._procs: list[subprocess.Popen] = []

    def beam_config(self, **overrides):
        from core.config import BeamConfig

        return BeamConfig(runner="PortableRunner", extra_args=[
            f"--job_endpoint=localhost:{self.job_port}", "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{self.worker_port}"], **overrides)

    def overrides(self) -> list[str]:
        """``--set`` overrides that send a config's Beam stages to this job service."""
        args = ",".join(f"'{a}'" for a in self.beam_config().extra_args)
        return ["preprocess.beam.runner=PortableRunner", f"preprocess.beam.extra_args=[{args}]"]

    def completed_jobs(self) -> int:
        """Jobs the job service ran to ``DONE`` so far (from its log)."""
        path = os.path.join(self.tmp_dir, "local_job_service_main.log")
        with open(path, encoding="utf-8", errors="replace") as f:
            return sum(1 for line in f if "Completed job in" in line and "state DONE" in line)

    def _start(self, module: str, args: list[str], port: int) -> None:
        env = dict(os.environ)
        # The worker pool starts each SDK worker with the first `python` on PATH: this venv's.
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        log = os.path.join(self.tmp_dir, f"{module.rsplit('.', 1)[-1]}.log")
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=out, stderr=subprocess.STDOUT,
                                    env=env, cwd=self.tmp_dir)
        self._procs.append(proc)
        wait_for_port(port, proc, log)

    def __enter__(self) -> "PortableBeam":
        try:
            self._start("apache_beam.runners.worker.worker_pool_main", [f"--service_port={self.worker_port}"],
                        self.worker_port)
            self._start("apache_beam.runners.portability.local_job_service_main", [f"--port={self.job_port}"],
                        self.job_port)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for proc in reversed(self._procs):
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._procs = []
