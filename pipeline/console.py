"""The console of ``python -m pipeline``: start-up chatter filtered where Python logging cannot.

TensorFlow's C++ runtime prints its start-up lines (``All log messages before
absl::InitializeLog()``, the oneDNN notice, the CUDA probes) straight to file descriptor 2
when the library loads, before any Python log level applies (``TF_CPP_MIN_LOG_LEVEL`` does
not cover them), and so do Beam's SDK worker processes, once each (``No
semi_persistent_directory found``, ``Discarding unparseable args``, ``Resource module is not
available``). None of it is news to a user. ``filter_stderr`` puts a line filter on fd 2
itself, before TensorFlow is imported: every process the run starts (the DirectRunner's and
the portable runner's workers) inherits the filtered descriptor. Every other line passes
through unchanged and in order; with ``--verbose`` or ``--debug`` nothing is filtered.
"""
from __future__ import annotations

import atexit
import os
import re
import sys
import threading

# Start-up lines that say nothing about the run (each matched anywhere in the line).
NOISE = (
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"cudart_stub\.cc.*Could not find cuda drivers",
    r"cuda_platform\.cc.*failed call to cuInit",
    r"cuda_executor\.cc|cuda_dnn\.cc|cuda_fft\.cc|cuda_blas\.cc",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation_placer\.cc.*computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* in other operations, rebuild TensorFlow",
    r"No semi_persistent_directory found",
    r"Discarding unparseable args: ",
    r"Resource module is not available for current platform, memory usage cannot be fetched",
)
_NOISE = re.compile("|".join(f"(?:{p})" for p in NOISE))

_installed = None


def is_noise(line: str) -> bool:
    return bool(_NOISE.search(line))


def filter_stderr() -> None:
    """Replaces fd 2 with a pipe whose lines are copied to the real stderr unless ``is_noise``
    (idempotent). A line is forwarded as soon as it is complete; the filter drains at exit."""
    global _installed
    if _installed is not None:
        return
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(read_end, 65536)
            except OSError:
                break
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            out = b"".join(line + b"\n" for line in lines if not is_noise(line.decode("utf-8", "replace")))
            if pending and b"\r" in pending:  # a progress line redrawn in place: show it now
                out, pending = out + pending, b""
            if out:
                os.write(real, out)
        if pending and not is_noise(pending.decode("utf-8", "replace")):
            os.write(real, pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    _installed = (real, thread)

    def drain() -> None:  # restore fd 2 (closing the pipe's last writer here) and let the pump finish
        try:
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
        os.dup2(real, 2)
        thread.join(timeout=5)

    atexit.register(drain)


def wants_filter(argv: list[str]) -> bool:
    """Filtering is on unless ``--verbose`` or ``--debug`` is given, or ``PIPELINE_RAW_STDERR=1``."""
    return not ({"--verbose", "--debug"} & set(argv)) and os.environ.get("PIPELINE_RAW_STDERR") != "1"
