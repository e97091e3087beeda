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

``--sequence-ab`` measures instead what a behaviour sequence costs the stage (issue 13): the
whole preprocess stage on the same generated files without (``A``: the default features)
and with (``B``: plus ``hist_items``, a sequence of up to 50 item ids sharing ``item_id``'s
vocabulary, truncated to ``--seq-max-length``; ``--with-tags`` also adds ``item_tags``,
``tag:weight`` tokens) the list features, alternating A/B runs (the order swapped every
repetition, ABBA..., so a drift of the machine hits both) for ``--reps`` repetitions, each
run in its own process. It prints every run, the median rows/s of each, the ratio of the
medians and the spread (min-max) of the per-repetition ratios. When the generated files have
no ``hist_items`` / ``item_tags`` columns (a generator before issue 13) it appends such
columns itself (``'i12|i40|i7'``, most recent last; ``'t3:0.8|t17:0.35'``).

Usage::

    python bench/preprocess.py                      # 1,000,000 rows, DirectRunner multi_processing
    python bench/preprocess.py --rows 200000 --mode in_memory --work-dir /tmp/bench_pp
    python bench/preprocess.py --sequence-ab --rows 200000 --reps 3 --work-dir /tmp/bench_pp_ab
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from core.config import load_config  # noqa: E402
from core.run_dir import RunDir  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench_config(args, extra=()):
    return load_config(os.path.join(REPO, "configs", "default.yaml"), [
        f"synthetic.rows={args.rows}",
        f"synthetic.chunk_rows={args.chunk_rows}",
        f"preprocess.beam.direct_running_mode={args.mode}",
        f"preprocess.beam.direct_num_workers={args.workers}",
        "preprocess.max_dead_letter_fraction=1.0",
        *extra,
    ])


# ----------------------------------------------------------------------------- sequence A/B

AB_DATA = "ab_data"  # the generated files with the list columns, under the work dir


def _ab_list_overrides(args, with_lists: bool) -> list[str]:
    """Config overrides of an A/B run: read the A/B files; B adds the list features. Starts
    from no lists (whatever configs/default.yaml declares) so A is the plain features."""
    lists = []
    if with_lists:
        lists.append(f"{{name: hist_items, kind: sequence, max_length: {args.seq_max_length}, shares: item_id, "
                     f"pooling: mean, order: recent_last}}")
        if args.with_tags:
            lists.append("{name: item_tags, kind: multi_valued, max_length: 4, weights: tokens, pooling: mean}")
    return ["data.source=files", f"data.path={os.path.join(args.work_dir, AB_DATA, 'part-*.csv')}",
            "data.format=csv", f"data.lists=[{', '.join(lists)}]"]


def _ab_run(args, with_lists: bool) -> int:
    from pipeline.stages.preprocess import run as run_preprocess

    cfg = bench_config(args, _ab_list_overrides(args, with_lists))
    run_dir = RunDir(os.path.join(args.work_dir, "ab_B" if with_lists else "ab_A"))
    return run_preprocess(cfg, run_dir, None).rows


def _append_list_columns(path: str, out: str, seed: int) -> None:
    """Copies a generated CSV with ``hist_items`` / ``item_tags`` columns appended (for a
    generator that does not write them yet): up to 50 item ids of the file's own items, most
    recent last; 1..4 ``tag:weight`` tokens of 40 tags."""
    import numpy as np
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    rng = np.random.default_rng(seed)
    items = frame["item_id"].to_numpy()
    lengths = rng.integers(0, 51, len(frame))
    picks = rng.integers(0, len(items), lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if "hist_items" not in frame.columns:
        frame["hist_items"] = ["|".join(items[picks[a:b]]) for a, b in zip(offsets[:-1], offsets[1:])]
    if "item_tags" not in frame.columns:
        frame["item_tags"] = ["|".join(f"t{t}:{w:.2f}" for t, w in zip(rng.choice(40, k, replace=False),
                                                                       rng.uniform(0.1, 1.0, k)))
                              for k in rng.integers(1, 5, len(frame))]
    frame.to_csv(out, index=False)


def _prepare_ab_data(args) -> str:
    """The generated CSV files, with list columns (appended when the generator lacks them)."""
    run_dir = RunDir(args.work_dir)
    pattern, fmt = run_dir.raw_input(bench_config(args))
    if fmt != "csv":
        raise SystemExit("--sequence-ab needs synthetic.format csv")
    out_dir = os.path.join(args.work_dir, AB_DATA)
    os.makedirs(out_dir, exist_ok=True)
    for i, path in enumerate(sorted(glob.glob(pattern))):
        target = os.path.join(out_dir, os.path.basename(path))
        with open(path, encoding="utf-8") as f:
            header = f.readline().strip().split(",")
        if "hist_items" in header and "item_tags" in header:
            if os.path.lexists(target):
                os.remove(target)
            os.symlink(os.path.abspath(path), target)
        elif not os.path.exists(target):
            _append_list_columns(path, target, seed=i)
    return "from the generator" if _has_generated_lists(pattern) else "appended by the bench"


def _has_generated_lists(pattern: str) -> bool:
    first = sorted(glob.glob(pattern))[0]
    with open(first, encoding="utf-8") as f:
        return "hist_items" in f.readline().strip().split(",")


def sequence_ab(args, argv: list[str]) -> int:
    _child("generate", list(argv))
    origin = _prepare_ab_data(args)
    runs = {"A": [], "B": []}
    for rep in range(args.reps):
        for arm in ("AB" if rep % 2 == 0 else "BA"):
            r = _child("ab_off" if arm == "A" else "ab_on", list(argv))
            runs[arm].append(r)
    b_desc = f"+ hist_items (sequence, max_length {args.seq_max_length}, shares item_id)"
    if args.with_tags:
        b_desc += " + item_tags (tokens)"
    print(f"\nsequence A/B on {args.rows:,} rows ({args.mode}, workers={args.workers or os.cpu_count()}, "
          f"list columns {origin}); A = default features, B = A {b_desc}")
    print(f"{'rep':>3} {'A rows/s':>10} {'B rows/s':>10} {'B/A':>6} {'A peak RSS MB':>14} {'B peak RSS MB':>14}")
    ratios = []
    for rep, (a, b) in enumerate(zip(runs["A"], runs["B"])):
        ratio = b["rows_per_second"] / a["rows_per_second"]
        ratios.append(ratio)
        print(f"{rep:>3} {a['rows_per_second']:>10,.0f} {b['rows_per_second']:>10,.0f} {ratio:>6.3f} "
              f"{max(a['peak_rss_mb_self'], a['peak_rss_mb_children']):>14,.0f} "
              f"{max(b['peak_rss_mb_self'], b['peak_rss_mb_children']):>14,.0f}")
    med_a = statistics.median(r["rows_per_second"] for r in runs["A"])
    med_b = statistics.median(r["rows_per_second"] for r in runs["B"])
    print(f"\nsequence feature cost: median {med_b:,.0f} vs {med_a:,.0f} rows/s, B/A = {med_b / med_a:.3f}; "
          f"per-repetition B/A median {statistics.median(ratios):.3f}, spread {min(ratios):.3f}-{max(ratios):.3f} "
          f"({len(ratios)} repetitions)")
    print(json.dumps({"sequence_ab": {"rows": args.rows, "median_rows_per_second_without": med_a,
                                      "median_rows_per_second_with": med_b, "ratio": round(med_b / med_a, 4),
                                      "ratio_median_per_rep": round(statistics.median(ratios), 4),
                                      "ratio_min": round(min(ratios), 4), "ratio_max": round(max(ratios), 4),
                                      "runs": runs, "list_columns": origin}}))
    return 0


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


PHASES = {"generate": _generate, "baseline": _baseline, "stage": _stage,
          "ab_off": lambda cfg, run_dir, args: _ab_run(args, False),
          "ab_on": lambda cfg, run_dir, args: _ab_run(args, True)}


def run_phase(phase: str, args) -> dict:
    """Runs one phase in this process and returns its timing and peak memory."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("absl", "tensorflow", "apache_beam"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    cfg = bench_config(args)
    run_dir = RunDir(args.work_dir)
    start = time.monotonic()
    rows = PHASES[phase](cfg, run_dir, args) if phase.startswith("ab_") else PHASES[phase](cfg, run_dir)
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
    parser.add_argument("--sequence-ab", action="store_true",
                        help="measure the stage without / with a behaviour sequence (alternating A/B runs)")
    parser.add_argument("--reps", type=int, default=3, help="--sequence-ab: repetitions of each arm (default 3)")
    parser.add_argument("--seq-max-length", type=int, default=20,
                        help="--sequence-ab: max_length of hist_items (default 20)")
    parser.add_argument("--with-tags", action="store_true", help="--sequence-ab: B also has item_tags")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(run_phase(args.phase, args)), flush=True)
        sys.stderr.flush()
        # Skip interpreter teardown: the DirectRunner's gRPC/TF state can segfault while being
        # garbage-collected at exit, after the result is already printed.
        os._exit(0)
    if args.sequence_ab:
        return sequence_ab(args, argv)
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
