"""Does an export load and run in the TensorFlow that TF Serving ships, with the same outputs?
Data: the export directories given, scored on their warmup requests; --python, a virtualenv
with TF Serving's TensorFlow (it stops with an error where that python is absent).

TF Serving 2.19.1 (``tensorflow/serving:2.19.1``) links TensorFlow 2.19; the project trains and
exports with TensorFlow 2.21. This script runs every export given on the command line in a second
interpreter that has ``tensorflow-cpu==2.19.1`` installed (``--python``; set one up with
``python3.11 -m venv .venv-tf219 && .venv-tf219/bin/pip install tensorflow-cpu==2.19.1``): it
loads the SavedModel with the TF1 session loader (tag ``serve``, as TF Serving's C++ loader
does), feeds the export's own warmup examples to ``serving_default``, ``classification`` and
``regression`` (the last two through their one shared input tensor, in one session run, as
MultiInference does) and prints the largest difference from the same calls in this interpreter.

Usage::

    python bench/serving_runtime_compat.py --python /work/.venv-tf219/bin/python EXPORT_DIR [EXPORT_DIR ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import core  # noqa: E402,F401  (Keras 2 before TensorFlow)

import numpy as np  # noqa: E402

# Runs in the other interpreter: only TensorFlow and numpy, no project code.
_RUNNER = r"""
import json, sys
import numpy as np
import tensorflow as tf
export_dir, examples_file, out_file = sys.argv[1:4]
examples = [bytes.fromhex(h) for h in json.load(open(examples_file))]
with tf.compat.v1.Session(graph=tf.Graph()) as s:
    meta = tf.compat.v1.saved_model.loader.load(s, ["serve"], export_dir)
    sigs = meta.signature_def
    out = {"tf_version": tf.__version__}
    d = sigs["serving_default"]
    names = sorted(d.outputs)
    got = s.run([d.outputs[k].name for k in names], {d.inputs["examples"].name: examples})
    out["serving_default"] = {k: v.tolist() for k, v in zip(names, got)}
    c, r = sigs["classification"], sigs["regression"]
    out["shared_input"] = c.inputs["inputs"].name == r.inputs["inputs"].name
    scores, values = s.run([c.outputs["scores"].name, r.outputs["outputs"].name],
                           {c.inputs["inputs"].name: examples})
    out["classification"], out["regression"] = scores.tolist(), values.tolist()
json.dump(out, open(out_file, "w"))
"""


def _here(export_dir: str, examples: list[bytes]) -> dict:
    from serving.session_model import SessionModel

    model = SessionModel(export_dir)
    try:
        out = {"serving_default": {k: v.tolist() for k, v in model.run("serving_default", {"examples": examples}).items()},
               "classification": model.run("classification", {"inputs": examples})["scores"].tolist(),
               "regression": model.run("regression", {"inputs": examples})["outputs"].tolist()}
    finally:
        model.close()
    return out


def check(export_dir: str, python: str) -> dict:
    from serving.warmup import read_warmup

    logs = read_warmup(export_dir)
    examples = [e for log in logs if log.HasField("predict_log")
                for e in log.predict_log.request.inputs["examples"].string_val]
    if not examples:
        raise SystemExit(f"error: {export_dir} has no serving_default warmup examples to replay")
    with tempfile.TemporaryDirectory() as tmp:
        ex_file, out_file, runner = (os.path.join(tmp, n) for n in ("examples.json", "out.json", "runner.py"))
        json.dump([e.hex() for e in examples], open(ex_file, "w"))
        open(runner, "w").write(_RUNNER)
        proc = subprocess.run([python, runner, export_dir, ex_file, out_file], capture_output=True, text=True)
        if proc.returncode:
            lines = [ln for ln in proc.stderr.splitlines() if "Error" in ln]
            return {"export_dir": export_dir, "loads": False, "error": (lines or proc.stderr.splitlines() or ["?"])[-1]}
        there = json.load(open(out_file))
    here = _here(export_dir, examples)
    diffs = {f"serving_default/{k}": float(np.max(np.abs(np.asarray(v) - np.asarray(there["serving_default"][k]))))
             for k, v in here["serving_default"].items()}
    for k in ("classification", "regression"):
        diffs[k] = float(np.max(np.abs(np.asarray(here[k]) - np.asarray(there[k]))))
    return {"export_dir": export_dir, "loads": True, "tf_version": there["tf_version"], "examples": len(examples),
            "shared_input": there["shared_input"], "max_abs_diff": diffs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("export_dirs", nargs="+")
    p.add_argument("--python", default=os.environ.get("TF_SERVING_RUNTIME_PYTHON", "/work/.venv-tf219/bin/python"),
                   help="an interpreter with the TensorFlow TF Serving ships (tensorflow-cpu==2.19.1)")
    args = p.parse_args(argv)
    if not os.path.exists(args.python):
        print(f"error: {args.python} not found; create it with: python3.11 -m venv .venv-tf219 && "
              ".venv-tf219/bin/pip install tensorflow-cpu==2.19.1", file=sys.stderr)
        return 2
    ok = True
    for d in args.export_dirs:
        r = check(d, args.python)
        print(json.dumps(r))
        ok &= r["loads"] and r.get("shared_input", False) and max(r["max_abs_diff"].values()) <= 1e-5
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
