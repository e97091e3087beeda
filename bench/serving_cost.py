"""The student's and the teacher's serving cost in TF Serving's own path, and where it goes.
Data: --run-dir (default /tmp/default_run), a run with teacher/ and student/; its raw test
rows, serialized as tf.Examples, are the requests.

On a run directory with a trained teacher and student (default ``/tmp/default_run``) the
script builds both exports as ``python -m pipeline export`` does (``serving.export.serving_parts``:
the run's TF Transform layer + the trained Keras serving model, restricted to the raw columns
the model reads; no gate), takes real raw test rows as serialized ``tf.Example``s, and measures
in the TF1 session path (``serving.serving_cost``: ``tf.compat.v1.saved_model.loader.load``, tag
``serve``, one thread, one ``Session.run`` per call):

1. **breakdown** per batch size (default 1, 64, 512): call overhead, parse, transform and
   model p50 (ms) of teacher and student side by side (``serving_cost.breakdown_ms``: timing
   signatures feed / parse / parse + transform / full, interleaved, differences of medians);
2. **ratio**: ``--rounds`` rounds of ``serving_cost.session_latency_ms`` on the two exports
   (``serving_default``, the models interleaved call by call); per batch size the
   student / teacher p50 ratio of every round, its median, min and max, against the goals
   (<= 0.7 at batch 64, <= 0.4 at batch 512);
3. with ``--before-after``: the same rounds over four exports, each model exported with the
   TF Transform layer called as one function (``ServingModule(inline_transform=False)``,
   the export before the lean front end) and inlined (the current export), all four
   interleaved: p50 of each, the after/before ratio per model and the student/teacher ratio
   of each variant, with min/max over the rounds;
4. with ``--retransform-rows N`` (or ``--transform-output DIR``): the same for both models over
   the transform graph of the *current* ``pipeline/preprocess/transform.py`` (re-analysed on N
   train rows of the run; a run preprocessed before the lean preprocessing_fn still serves
   its own, older graph), all variants interleaved.

5. with ``--sizes small,large``: the KD students of those extra sizes (``students/<size>``) join
   the current export's breakdown and rounds, each with its p50 ratio to the teacher against
   the same goals (a size may read fewer features than the student: ``distill.sizes``).

Prints the tables and writes the numbers as JSON (``--json``; ``bench/run_all.py`` can store
them under the key ``serving_cost``).

Usage::

    python bench/serving_cost.py [--run-dir /tmp/default_run] [--calls 100] [--rounds 5] [--before-after]
        [--retransform-rows 20000 | --transform-output DIR] [--sizes small,large] [--json /tmp/serving_cost.json]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core import fs  # noqa: E402
from core.errors import InputError, PipelineError  # noqa: E402
from core.run_dir import write_json_atomic  # noqa: E402

import numpy as np  # noqa: E402

GOALS = {"64": 0.7, "512": 0.4}  # student / teacher p50 at that batch size (issue 15)
ROLES = ("teacher", "student")


def _config(run_dir):
    import yaml

    from core.config import config_from_dict

    path = run_dir.require(run_dir.config_file, "run")
    return config_from_dict(yaml.safe_load(fs.read_text(path)))


def serialized_test_rows(cfg, run_dir, n: int) -> list[bytes]:
    """Up to ``n`` raw test rows of the run as serialized ``tf.Example``s (what a client sends)."""
    from core.feature_specs import encode_raw_example
    from serving.raw_examples import read_split

    rows = read_split(cfg, *run_dir.raw_input(cfg), "test", n)
    if not rows:
        raise InputError(f"no valid raw test rows under {run_dir.root} (run generate/preprocess first)")
    return [encode_raw_example(cfg, r["features"]) for r in rows]


def build_modules(cfg, run_dir, inline_transform: bool = True, transform_output_dir: str | None = None,
                  sizes: tuple = ()) -> dict:
    """name -> the ``ServingModule`` export builds for the run's trained teacher and student
    (``serving.export.serving_parts``), and for the KD student of each extra size in ``sizes``
    (``students/<size>``, named by its size); with ``inline_transform=False`` the TF Transform
    layer is called as one function (the export before the lean front end); with
    ``transform_output_dir`` over that TF Transform output instead of the run's."""
    import tensorflow_transform as tft

    from core.config import weight_columns
    from serving.export import serving_parts
    from serving.signatures import ServingModule

    modules = {}
    models = [(role, role, run_dir.model_dir(role)) for role in ROLES]
    models += [(size, "student", run_dir.student_size_dir(size)) for size in sizes]
    for name, role, model_dir in models:
        if not os.path.exists(os.path.join(model_dir, "serving_model")):
            raise InputError(f"no trained {name} under {model_dir} (run "
                             f"`python -m pipeline {'train' if role == 'teacher' else 'distill'}` first)")
        parts = serving_parts(cfg, run_dir, role, model_dir)
        module = parts.module
        if not inline_transform or transform_output_dir:
            layer = (tft.TFTransformOutput(transform_output_dir).transform_features_layer() if transform_output_dir
                     else module.tft_layer)
            module = ServingModule(layer, parts.keras_model, parts.feature_spec, parts.info.model_inputs,
                                   cfg.export.classification_task or cfg.task_names[0],
                                   list_weights=weight_columns(cfg.data), inline_transform=inline_transform)
        modules[name] = module
    return modules


def retransform(cfg, run_dir, rows: int, out_dir: str) -> str:
    """The current ``pipeline.preprocess.transform`` analysed (TF Transform on an in-memory
    Beam DirectRunner) over the first ``rows`` valid train rows of the run, written to
    ``out_dir``: the transform graph a run preprocessed with this code serves (its
    vocabularies and statistics come from those rows only: ids may differ from the run's,
    the graph and its cost do not)."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    from core.feature_specs import raw_tft_feature_spec
    from pipeline.preprocess.transform import make_preprocessing_fn
    from serving.raw_examples import read_split

    spec = raw_tft_feature_spec(cfg)
    records = read_split(cfg, *run_dir.raw_input(cfg), "train", rows)
    if not records:
        raise InputError(f"no valid raw train rows under {run_dir.root} to analyse")

    def instance(typed: dict) -> dict:
        out = {}
        for k, s in spec.items():
            v = typed[k]
            if isinstance(v, list):
                v = np.asarray(v, dtype=object if s.dtype.name == "string" else np.float32)
            out[k] = v
        return out

    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    with beam.Pipeline(runner="DirectRunner") as p:
        with tft_beam.Context(temp_dir=tempfile.mkdtemp(prefix="bench-tft-"), force_tf_compat_v1=False):
            data = p | beam.Create([instance(r["features"]) for r in records])
            transform_fn = (data, metadata) | tft_beam.AnalyzeDataset(make_preprocessing_fn(cfg))
            _ = transform_fn | tft_beam.WriteTransformFn(out_dir)
    return out_dir


def _spread(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"median": round(float(np.median(a)), 3), "min": round(float(a.min()), 3), "max": round(float(a.max()), 3),
            "rounds": [round(float(v), 3) for v in a]}


def ratio_rounds(export_dirs: dict, serialized: list[bytes], batch_sizes, calls: int, rounds: int,
                 pairs: dict) -> dict:
    """``rounds`` rounds of ``session_latency_ms`` over every export (interleaved) per batch
    size; per batch size the p50 of each export per round and, for each ``pairs`` entry
    ``label -> (numerator, denominator)``, the p50 ratio's median / min / max over the rounds."""
    from serving.serving_cost import session_latency_ms

    out = {}
    for bs in batch_sizes:
        n = calls if bs < 512 else max(20, calls // 2)
        p50 = {name: [] for name in export_dirs}
        for _ in range(rounds):
            r = session_latency_ms(export_dirs, serialized, bs, calls=n, warmup=10)
            for name in export_dirs:
                p50[name].append(r[name]["p50_ms"])
        out[str(bs)] = {"calls_per_round": n, "p50_ms": {k: _spread(v) for k, v in p50.items()},
                        "ratios": {label: _spread([a / b for a, b in zip(p50[num], p50[den])])
                                   for label, (num, den) in pairs.items()}}
    return out


# variant suffix -> what it is
VARIANTS = {"": "the run's TF Transform output, inlined into the signatures (the current export)",
            "_layer_call": "the run's TF Transform output called as one function (the export before the lean front end)",
            "_lean_tft": "the current preprocessing_fn re-analysed on --retransform-rows train rows (or "
                         "--transform-output), inlined: what a run preprocessed with the current code serves"}


def bench(run_dir_path: str, batch_sizes, calls: int, rounds: int, rows: int, before_after: bool,
          retransform_rows: int = 0, transform_output: str | None = None, sizes: tuple = ()) -> dict:
    from core.run_dir import RunDir
    from serving import serving_cost
    from serving.signatures import save_serving_module

    run_dir = RunDir(run_dir_path)
    cfg = _config(run_dir)
    serialized = serialized_test_rows(cfg, run_dir, rows)
    scratch = tempfile.mkdtemp(prefix="bench-serving-cost-")
    try:
        groups = {"": build_modules(cfg, run_dir, sizes=sizes)}
        if before_after:
            groups["_layer_call"] = build_modules(cfg, run_dir, inline_transform=False)
        if retransform_rows or transform_output:
            out = transform_output or retransform(cfg, run_dir, retransform_rows, os.path.join(scratch, "transform_output"))
            groups["_lean_tft"] = build_modules(cfg, run_dir, transform_output_dir=out)
        modules = {f"{role}{suffix}": m for suffix, g in groups.items() for role, m in g.items()}
        started = time.monotonic()
        breakdown = serving_cost.breakdown_ms(modules, serialized, batch_sizes, calls=calls, scratch_dir=scratch)
        breakdown["seconds"] = round(time.monotonic() - started, 1)
        dirs = {}
        for name, module in modules.items():
            dirs[name] = os.path.join(scratch, "exports", name)
            save_serving_module(module, dirs[name])
        pairs = {f"student/teacher{suffix}": (f"student{suffix}", f"teacher{suffix}") for suffix in groups}
        pairs.update({f"{size}/teacher": (size, "teacher") for size in sizes})
        for suffix in groups:
            if suffix:
                pairs.update({f"{role}{suffix}/{role}": (f"{role}{suffix}", role) for role in ROLES})
        ratios = ratio_rounds(dirs, serialized, batch_sizes, calls, rounds, pairs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    goals = {f"{bs}{suffix}": {"goal": g, "student/teacher_median": ratios[bs]["ratios"][f"student/teacher{suffix}"]["median"],
                               "met": ratios[bs]["ratios"][f"student/teacher{suffix}"]["median"] <= g}
             for bs, g in GOALS.items() if bs in ratios for suffix in groups}
    size_goals = {f"{bs}:{size}": {"goal": g, "size/teacher_median": ratios[bs]["ratios"][f"{size}/teacher"]["median"],
                                   "met": ratios[bs]["ratios"][f"{size}/teacher"]["median"] <= g}
                  for bs, g in GOALS.items() if bs in ratios for size in sizes}
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    tables = {}
    for suffix in groups:
        names = [f"{r}{suffix}" for r in ROLES] + (list(sizes) if not suffix else [])
        tables[suffix or "current"] = serving_cost.breakdown_table(
            {"batches": {bs: {n: per[n] for n in names} for bs, per in breakdown["batches"].items()}}, names)
    return {"run_dir": run_dir.root, "cpus": os.cpu_count(), "load_average_1m_at_end": load,
            "serialized_rows": len(serialized), "path": breakdown["path"], "threads": 1,
            "variants": {f"<role>{k}": v for k, v in VARIANTS.items() if k in groups},
            "retransform_rows": retransform_rows, "transform_output": transform_output, "breakdown": breakdown, "breakdown_tables": tables,
            "sizes": list(sizes), "ratios": ratios, "goals": goals, "size_goals": size_goals}


def _print(report: dict) -> None:
    print(f"serving cost in TF Serving's path ({report['path']}, 1 thread): {report['run_dir']} "
          f"({report['cpus']} CPUs, load {report['load_average_1m_at_end']})")
    for k, v in report["variants"].items():
        print(f"  {k}: {v}")
    print("\nbreakdown (p50 ms; " + report["breakdown"]["method"] + "):")
    for variant, table in report["breakdown_tables"].items():
        print(f"\n{variant}:\n{table}")
    print("\np50 ratios over rounds (median [min, max]):")
    for bs, r in report["ratios"].items():
        cells = [f"{k} {v['median']:.3f} ms [{v['min']:.3f}, {v['max']:.3f}]" for k, v in r["p50_ms"].items()]
        print(f"  batch {bs:>4}: " + "; ".join(cells))
        for label, v in r["ratios"].items():
            print(f"  batch {bs:>4}: {label:32} {v['median']:.3f}x [{v['min']:.3f}, {v['max']:.3f}]")
    for bs, g in report["goals"].items():
        print(f"goal batch {bs}: student/teacher <= {g['goal']}: median {g['student/teacher_median']:.3f} "
              f"({'met' if g['met'] else 'not met'})")
    for key, g in report.get("size_goals", {}).items():
        bs, size = key.split(":")
        print(f"goal batch {bs} for size {size}: {size}/teacher <= {g['goal']}: median "
              f"{g['size/teacher_median']:.3f} ({'met' if g['met'] else 'not met'})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default="/tmp/default_run", help="a run with trained teacher/ and student/ models")
    p.add_argument("--batch-sizes", default="1,64,512", help="comma-separated batch sizes (default 1,64,512)")
    p.add_argument("--calls", type=int, default=100, help="timed calls per model and point (half at batch >= 512)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds of the ratio measurement")
    p.add_argument("--rows", type=int, default=1024, help="raw test rows the batches cycle through")
    p.add_argument("--before-after", action="store_true",
                   help="also measure each model exported with the TF Transform layer called as one function")
    p.add_argument("--retransform-rows", type=int, default=0, metavar="N",
                   help="also measure the current preprocessing_fn's transform graph, analysed on N train rows")
    p.add_argument("--transform-output", metavar="DIR",
                   help="instead of --retransform-rows: a TF Transform output of the current preprocessing_fn for "
                        "this run's config (e.g. written by an earlier --retransform-rows run's retransform())")
    p.add_argument("--sizes", default="", metavar="A,B",
                   help="also time the KD students of these extra sizes (students/<size>, distill.sizes) against "
                        "the teacher, in the current export")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    try:
        sizes = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
    except ValueError:
        p.error(f"--batch-sizes must be comma-separated integers. Received: {args.batch_sizes!r}")
    if not sizes or min(sizes) < 1 or args.calls < 1 or args.rounds < 1:
        p.error("--batch-sizes, --calls and --rounds must be >= 1")
    try:
        report = bench(os.path.abspath(args.run_dir), sizes, args.calls, args.rounds, args.rows, args.before_after,
                       args.retransform_rows, args.transform_output and os.path.abspath(args.transform_output),
                       tuple(x.strip() for x in args.sizes.split(",") if x.strip()))
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    _print(report)
    if args.json:
        write_json_atomic(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
