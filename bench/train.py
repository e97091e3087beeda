"""Benchmark of the train stage: training examples per second and peak memory.

Trains the default teacher (``configs/default.yaml``, overridable with ``--set``) on a
preprocessed run directory (e.g. the one ``bench/preprocess.py --work-dir`` leaves) for
``--epochs`` epochs, in this process, and reports the wall time of the stage, training
examples per second (examples seen / wall time of the whole stage, validation and saving
included) and this process's peak resident set size (``RUSAGE_SELF``: the tf.data input
pipeline streams from the TFRecord shards, so it must not grow with the data).

Usage::

    python bench/preprocess.py --rows 1000000 --work-dir /tmp/bench_1m     # leaves a preprocessed run
    python bench/train.py --run-dir /tmp/bench_1m --epochs 1 --json /tmp/train.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from core.config import load_config  # noqa: E402
from core.run_dir import RunDir, write_json_atomic  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(run_dir: str, epochs: int, overrides: list[str]) -> dict:
    """Trains the teacher once; returns rows, seconds, examples/s, peak RSS and validation AUCs."""
    from pipeline.stages.train import run as run_train

    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"),
                      [f"training.epochs={epochs}", "training.verbose=0", "training.early_stopping_patience=100",
                       *overrides])
    start = time.monotonic()
    result = run_train(cfg, RunDir(run_dir), None)
    wall = time.monotonic() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": result.rows, "epochs": result.metrics["epochs_run"], "seconds": round(wall, 2),
            "examples_per_second": round(result.rows / wall, 1), "peak_rss_mb": round(peak_mb, 1),
            "params": result.metrics["params"], "batch_size": cfg.training.batch_size,
            "val_auc_mean": result.metrics.get("val_auc_mean")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="a preprocessed run directory (preprocess/ must exist)")
    p.add_argument("--epochs", type=int, default=1, help="epochs to train (default 1; no early stop)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="config override, e.g. --set training.batch_size=1024 (repeatable)")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    out = run(args.run_dir, args.epochs, args.overrides)
    print(f"train: {out['rows']:,} examples ({out['epochs']} epoch(s), batch {out['batch_size']}) in "
          f"{out['seconds']:.1f} s = {out['examples_per_second']:,.0f} examples/s; peak RSS {out['peak_rss_mb']:,.0f} MB")
    print(json.dumps(out), flush=True)
    if args.json:
        write_json_atomic(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
