"""Subprocess helpers of the scale and fault tests: free loopback ports, CLI runs with a
deadline, and cleanup that kills a whole process group (never anything this test did not start)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from tests.conftest import REPO

PYTHON = sys.executable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log_path: str, timeout: float = 120) -> None:
    """Waits until something listens on 127.0.0.1:``port``; ``RuntimeError`` with the tail of
    ``log_path`` when ``proc`` exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(log_path, encoding="utf-8", errors="replace") as f:
                    tail = f.read()[-2000:]
                raise RuntimeError(f"{' '.join(map(str, proc.args[:3]))} did not start on port {port}:\n{tail}") from None
            time.sleep(0.2)


def cli_args(stage: str, run_dir: str, overrides=(), extra=()) -> list[str]:
    """``python -m pipeline <stage> --run-dir DIR --set k=v ...``."""
    args = [PYTHON, "-m", "pipeline", stage, "--run-dir", str(run_dir)]
    for o in overrides:
        args += ["--set", o]
    return args + list(extra)


def start(args: list[str], log_path: str, env: dict | None = None) -> subprocess.Popen:
    """Starts ``args`` in the repository in its own process group, output to ``log_path``."""
    full_env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    out = open(log_path, "w", encoding="utf-8")
    proc = subprocess.Popen(args, cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    proc.log_path = log_path
    out.close()
    return proc


def kill(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    """Sends ``sig`` to the process group ``proc`` leads (its children too) and reaps it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def read_log(proc: subprocess.Popen) -> str:
    with open(proc.log_path, encoding="utf-8", errors="replace") as f:
        return f.read()


def wait_all(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    """Waits for every process until a shared deadline; kills all of them on timeout or when one fails."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            codes = [p.poll() for p in procs]
            if any(c not in (None, 0) for c in codes) or all(c is not None for c in codes):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"processes still running after {timeout:.0f} s")
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                kill(p)
    return [p.returncode for p in procs]


def wait_for_line(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    """Polls the process log until a line containing ``needle`` appears; returns the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = read_log(proc)
        if needle in text:
            return text
        if proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before logging {needle!r}:\n{text[-3000:]}")
        time.sleep(0.2)
    kill(proc)
    raise TimeoutError(f"no {needle!r} in the log within {timeout:.0f} s:\n{read_log(proc)[-3000:]}")


def run_cli(args: list[str], timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs a CLI command to completion with a deadline (the process group is killed on timeout)."""
    full_env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    proc = subprocess.Popen(args, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)
