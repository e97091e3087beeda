"""Benchmark of distillation scoring and of student vs teacher latency.

On a run directory with a trained teacher (``python -m pipeline train`` or ``bench/train.py``):

* **teacher scoring**: the distill stage's Beam job (``pipeline.teacher_scoring.ScoreSplits``,
  the handler ``pipeline.distillation.teacher_handler`` builds) over the train split, on the
  configured runner (``--mode``/``--workers`` of the DirectRunner); rows/s and peak RSS of
  this process and of its largest child (the DirectRunner's worker processes);
* **in-process latency**, teacher vs student, at batch 1 and ``--batch``: p50 / p99 ms of a
  ``tf.function`` call of each serving model on real transformed test rows. The student is
  the run's distilled one when present, else ``distill.student`` built untrained (same
  architecture, so the same cost).

Usage::

    python bench/distill_scoring.py --run-dir /tmp/bench_1m --json /tmp/distill.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from core.config import load_config  # noqa: E402
from core.run_dir import RunDir, write_json_atomic  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def scoring_throughput(cfg, run_dir: RunDir) -> dict:
    """Runs the teacher-scoring Beam job over the train split into a scratch directory."""
    from pipeline.beam_options import pipeline_options
    from pipeline.stages.distill import teacher_handler
    from pipeline.teacher_scoring import score_splits

    with tempfile.TemporaryDirectory(prefix="bench_scores-") as tmp:
        start = time.monotonic()
        counts = score_splits({"train": run_dir.split_pattern("train")}, os.path.join(tmp, "scores"),
                              teacher_handler(cfg, run_dir), options=pipeline_options(cfg.preprocess.beam))
        wall = time.monotonic() - start
    n = counts["train"]["rows_in"]
    return {"rows": n, "rows_scored": counts["train"]["rows_scored"], "seconds": round(wall, 2),
            "rows_per_second": round(n / wall, 1),
            "peak_rss_mb_self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_mb_children": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def _student(cfg, run_dir: RunDir, info):
    from models import model_io
    from models.builder import build_ranker

    if model_io.has_serving_model(run_dir.model_dir("student")):
        return model_io.load_serving_model(run_dir.model_dir("student"), run_dir.role_stage("student")), "trained"
    ranker = build_ranker(cfg.distill.student, info, cfg.data.tasks, cfg.data.funnel, seed=1)
    return ranker.serving_model(), "untrained (same architecture)"


def _latency(fn, batch: dict, repeats: int) -> dict:
    fn(batch)  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(batch)
        next(iter(out.values())).numpy()
        times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": round(float(np.percentile(times, 50)), 3), "p99_ms": round(float(np.percentile(times, 99)), 3)}


def latency(cfg, run_dir: RunDir, batch_size: int, repeats: int) -> dict:
    """p50/p99 of teacher and student serving models at batch 1 and ``batch_size``."""
    import tensorflow as tf

    from models import model_io
    from models.inputs import features_only, make_dataset

    info = model_io.load_feature_info(run_dir.feature_info_file)
    rows = features_only(next(iter(make_dataset(run_dir.split_pattern("test"), info, batch_size))), info)
    teacher = model_io.load_serving_model(run_dir.model_dir("teacher"), run_dir.role_stage("teacher"))
    student, student_kind = _student(cfg, run_dir, info)
    out = {"student": student_kind, "params": {}}
    for role, model in (("teacher", teacher), ("student", student)):
        fn = tf.function(lambda x, m=model: m(x, training=False))
        out["params"][role] = int(model.count_params())
        for b in (1, batch_size):
            batch = {k: v[:b] for k, v in rows.items()}
            out[f"{role}_batch{b}"] = _latency(fn, batch, repeats)
    out["speedup_batch1_p50"] = round(out["teacher_batch1"]["p50_ms"] / out["student_batch1"]["p50_ms"], 2)
    out[f"speedup_batch{batch_size}_p50"] = round(
        out[f"teacher_batch{batch_size}"]["p50_ms"] / out[f"student_batch{batch_size}"]["p50_ms"], 2)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="a run directory with a trained teacher")
    p.add_argument("--mode", default="in_memory", choices=["in_memory", "multi_threading", "multi_processing"],
                   help="DirectRunner running mode of the scoring job (default in_memory)")
    p.add_argument("--workers", type=int, default=0, help="DirectRunner workers (0: one per core)")
    p.add_argument("--batch", type=int, default=256, help="the larger latency batch (default 256)")
    p.add_argument("--repeats", type=int, default=200, help="timed calls per latency point (default 200)")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("absl", "tensorflow", "apache_beam"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), [
        f"preprocess.beam.direct_running_mode={args.mode}", f"preprocess.beam.direct_num_workers={args.workers}"])
    run_dir = RunDir(args.run_dir)
    out = {"latency": latency(cfg, run_dir, args.batch, args.repeats), "scoring": scoring_throughput(cfg, run_dir)}
    s, lat = out["scoring"], out["latency"]
    print(f"teacher scoring: {s['rows']:,} rows in {s['seconds']:.1f} s = {s['rows_per_second']:,.0f} rows/s "
          f"({args.mode}); peak RSS {s['peak_rss_mb_self']:,.0f} MB / child {s['peak_rss_mb_children']:,.0f} MB")
    for b in (1, args.batch):
        t, st = lat[f"teacher_batch{b}"], lat[f"student_batch{b}"]
        print(f"batch {b}: teacher p50 {t['p50_ms']:.3f} ms p99 {t['p99_ms']:.3f} ms | "
              f"student p50 {st['p50_ms']:.3f} ms p99 {st['p99_ms']:.3f} ms")
    print(json.dumps(out), flush=True)
    if args.json:
        write_json_atomic(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
