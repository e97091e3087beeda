"""Benchmark of the preprocess stage: records per second and peak memory, with and without TFT.

Generates ``--rows`` synthetic impressions (pipeline/synthetic.py) once, then runs, each in
its own child process so memory is measured per phase:

  * ``baseline``: a plain Beam pipeline that only reads, validates, splits and writes the
    typed raw records as gzip TFRecords (ReadRawRecords -> ValidateRecords -> SplitRecords
    -> WriteToTFRecord), i.e. everything but TF Transform;
  * ``stage``: the whole preprocess stage (the same plus AnalyzeDataset + TransformDataset).

The ratio of the two throughputs is what TF Transform costs. Peak memory is the maximum
resident set size of the phase's process (``RUSAGE_SELF``) and of its largest child
(``RUSAGE_CHILDREN``, e.g. the DirectRunner's worker processes).

Usage::

    python bench/preprocess.py                      # 1,000,000 rows, DirectRunner multi_processing
    python bench/preprocess.py --rows 200000 --mode in_memory --work-dir /tmp/bench_pp
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from core.config import load_config  # noqa: E402
from core.run_dir import RunDir  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench_config(args):
    return load_config(os.path.join(REPO, "configs", "default.yaml"), [
        f"synthetic.rows={args.rows}",
        f"synthetic.chunk_rows={args.chunk_rows}",
        f"preprocess.beam.direct_running_mode={args.mode}",
        f"preprocess.beam.direct_num_workers={args.workers}",
        "preprocess.max_dead_letter_fraction=1.0",
    ])


def _baseline(cfg, run_dir: RunDir) -> int:
    """Read, validate, split and write raw TFRecords: the stage without TF Transform."""
    import apache_beam as beam
    import tensorflow_transform as tft
    from tensorflow_transform.tf_metadata import dataset_metadata

    from pipeline.beam_options import pipeline_options
    from core.features import raw_columns
    from pipeline.preprocess.raw_io import ReadRawRecords
    from core.splits import SPLITS, split_columns
    from pipeline.preprocess.split import SplitRecords
    from core.feature_specs import raw_tft_feature_spec
    from pipeline.preprocess.validation import ValidateRecords

    pattern, fmt = run_dir.raw_input(cfg)
    out = run_dir.path("bench_baseline")
    coder = tft.coders.ExampleProtoCoder(dataset_metadata.DatasetMetadata.from_feature_spec(raw_tft_feature_spec(cfg)).schema)
    s = cfg.preprocess.split
    with beam.Pipeline(options=pipeline_options(cfg.preprocess.beam)) as p:
        checked = p | ReadRawRecords(pattern, fmt, cfg) | ValidateRecords(cfg)
        parts = checked.valid | SplitRecords(split_columns(cfg, raw_columns(cfg)), (s.train, s.validation, s.test))
        for split in SPLITS:
            _ = (parts[split]
                 | f"Encode[{split}]" >> beam.Map(lambda r: coder.encode(r["features"]))
                 | f"Write[{split}]" >> beam.io.WriteToTFRecord(os.path.join(out, split), file_name_suffix=".tfrecord.gz"))
    return cfg.synthetic.rows


def _stage(cfg, run_dir: RunDir) -> int:
    from pipeline.stages.preprocess import run as run_preprocess

    return run_preprocess(cfg, run_dir, None).rows


def _generate(cfg, run_dir: RunDir) -> int:
    from pipeline.stages.generate import run as run_generate

    return run_generate(cfg, run_dir, None).rows


PHASES = {"generate": _generate, "baseline": _baseline, "stage": _stage}


def run_phase(phase: str, args) -> dict:
    """Runs one phase in this process and returns its timing and peak memory."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("absl", "tensorflow", "apache_beam"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    cfg = bench_config(args)
    run_dir = RunDir(args.work_dir)
    start = time.monotonic()
    rows = PHASES[phase](cfg, run_dir)
    wall = time.monotonic() - start
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"phase": phase, "rows": rows, "seconds": round(wall, 2), "rows_per_second": round(rows / wall, 1),
            "peak_rss_mb_self": round(self_kb / 1024, 1), "peak_rss_mb_children": round(children_kb / 1024, 1)}


def _child(phase: str, argv: list[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--phase", phase]
    print(f"== {phase}: {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench phase {phase} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows to preprocess (default 1,000,000)")
    parser.add_argument("--chunk-rows", type=int, default=100_000, help="rows per generated file (default 100,000)")
    parser.add_argument("--mode", default="multi_processing", choices=["in_memory", "multi_threading", "multi_processing"],
                        help="DirectRunner running mode (default multi_processing)")
    parser.add_argument("--workers", type=int, default=0, help="DirectRunner workers (0: one per core)")
    parser.add_argument("--work-dir", default="/tmp/bench_preprocess", help="run directory for data and outputs")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(run_phase(args.phase, args)), flush=True)
        sys.stderr.flush()
        # Skip interpreter teardown: the DirectRunner's gRPC/TF state can segfault while being
        # garbage-collected at exit, after the result is already printed.
        os._exit(0)
    results = [_child(phase, list(argv)) for phase in ("generate", "baseline", "stage")]
    print(f"\n{'phase':<10} {'rows':>10} {'seconds':>9} {'rows/s':>10} {'peak RSS MB (self / largest child)':>36}")
    for r in results:
        print(f"{r['phase']:<10} {r['rows']:>10,} {r['seconds']:>9.1f} {r['rows_per_second']:>10,.0f} "
              f"{r['peak_rss_mb_self']:>17,.0f} / {r['peak_rss_mb_children']:,.0f}")
    base, stage = results[1], results[2]
    print(f"\nTF Transform cost: the stage runs at {stage['rows_per_second'] / base['rows_per_second']:.2f}x "
          f"the throughput of read+validate+split+write alone ({args.mode}, workers={args.workers or os.cpu_count()}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
