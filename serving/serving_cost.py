"""What a served model costs in TF Serving's own path: a TF1 session running a signature on
serialized raw ``tf.Example``s.

TF Serving loads a SavedModel with the TF1 loader (tag ``serve``) into a ``Session`` and
answers a Predict request with one ``Session::Run`` feeding the request's tensor to the
signature's input and fetching its outputs. ``session_latency_ms`` reproduces that here:
each export is loaded with ``tf.compat.v1.saved_model.loader.load`` into its own
``tf.Graph`` and ``Session`` (``ConfigProto(intra_op_parallelism_threads=threads,
inter_op_parallelism_threads=threads)``), and one call is one ``Session.run`` through a
callable made once (``Session.make_callable``: no per-call fetch/feed resolution, the
Python overhead TF Serving does not pay), feeding ``batch_size`` serialized examples (a
``[batch_size]`` string array) and fetching every output of the signature. Several models
are measured interleaved, call by call, the order reversed every call, so drift (frequency
scaling, another process) hits them alike.
"""
from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from core import fs
from serving.session_model import load_serve_graph

SERVE_TAG = "serve"
PERCENTILES = (50, 90, 99)


def percentiles_ms(seconds) -> dict:
    """Latency samples (seconds) as ``{"p50_ms", "p90_ms", "p99_ms", "n"}`` (milliseconds,
    3 decimals; ``numpy.percentile`` with linear interpolation)."""
    a = np.asarray(seconds, dtype=np.float64) * 1000.0
    if a.size == 0:
        raise ValueError("no latency samples")
    out = {f"p{q}_ms": round(float(np.percentile(a, q)), 3) for q in PERCENTILES}
    out["n"] = int(a.size)
    return out


def example_batches(serialized: list[bytes], batch_size: int, count: int) -> list[np.ndarray]:
    """``count`` batches of ``batch_size`` serialized examples as 1-D object arrays, cycling
    through ``serialized``: batch ``k`` holds ``serialized[(k * batch_size + j) % n]``,
    ``j = 0..batch_size-1``. Fewer than ``count`` distinct batches are built when the
    examples repeat sooner (the caller cycles through the list)."""
    if not serialized:
        raise ValueError("no serialized examples to feed")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    n = len(serialized)
    # After lcm(n, batch_size) / batch_size batches the sequence repeats.
    distinct = n // np.gcd(n, batch_size)
    pool = np.asarray(list(serialized), dtype=object)
    return [pool[(np.arange(batch_size) + k * batch_size) % n] for k in range(max(1, min(count, distinct)))]


class LoadedModel:
    """One export loaded as TF Serving loads it: the TF1 loader (tag ``serve``) into a fresh
    ``tf.Graph`` and ``Session`` with ``threads`` intra- and inter-op threads (the loader
    also runs the table initializers that load the TF Transform vocabularies).

    ``runner(signature)`` makes the callable of a signature with one string input:
    ``run(batch)`` feeds a ``[batch]`` string array to that input and returns the fetched
    outputs, in ``output_keys(signature)`` order (``Session.make_callable``: feeds and fetches
    are resolved once, not per call).
    """

    def __init__(self, export_dir: str, threads: int = 1):
        self.export_dir = export_dir
        self.graph = tf.Graph()
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads,
                                          inter_op_parallelism_threads=threads)
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        try:
            with self.graph.as_default():
                meta = load_serve_graph(self.session, export_dir)
        except BaseException:
            self.session.close()
            raise
        self.signature_defs = {k: v for k, v in meta.signature_def.items() if not k.startswith("__")}

    def _signature(self, signature: str):
        if signature not in self.signature_defs:
            raise ValueError(f"signature {signature!r} not in {self.export_dir}. Received: {sorted(self.signature_defs)}")
        sig = self.signature_defs[signature]
        if len(sig.inputs) != 1 or next(iter(sig.inputs.values())).dtype != tf.string.as_datatype_enum:
            raise ValueError(f"signature {signature!r} of {self.export_dir} must take one string input (serialized "
                             f"tf.Example); it takes {sorted(sig.inputs)}")
        return sig

    def output_keys(self, signature: str) -> list[str]:
        return sorted(self._signature(signature).outputs)

    def runner(self, signature: str = "serving_default"):
        sig = self._signature(signature)
        feed = self.graph.get_tensor_by_name(next(iter(sig.inputs.values())).name)
        fetches = [self.graph.get_tensor_by_name(sig.outputs[k].name) for k in sorted(sig.outputs)]
        return self.session.make_callable(fetches, feed_list=[feed])

    def close(self) -> None:
        self.session.close()


def interleaved_latency(runners: dict, batches: list, calls: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each ``runners[name](batch)``, called in turn for ``warmup + calls``
    rounds (round ``i`` feeds ``batches[i % len(batches)]`` to every runner; the order of the
    runners is reversed every round); the warmup rounds are dropped. name -> ``calls`` samples."""
    names = list(runners)
    samples = {n: [] for n in names}
    for i in range(warmup + calls):
        batch = batches[i % len(batches)]
        for n in (names if i % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            runners[n](batch)
            dt = time.perf_counter() - t0
            if i >= warmup:
                samples[n].append(dt)
    return samples


def session_latency_ms(export_dirs: dict[str, str], serialized: list[bytes], batch_size: int, calls: int = 100,
                       warmup: int = 10, signature: str = "serving_default", threads: int = 1) -> dict[str, dict]:
    """Latency of each export's ``signature`` in TF Serving's path (module docstring).

    Args:
      export_dirs: name -> SavedModel directory (a version directory).
      serialized: serialized raw ``tf.Example``s; batches cycle through them
        (``example_batches``).
      batch_size: examples per call (the input tensor is ``[batch_size]`` strings).
      calls: timed calls per model; warmup: untimed calls per model before them (the first
        runs pay graph optimisation and allocation).
      signature: a signature with one string input (``serving_default``, ``classification``,
        ``regression``).
      threads: intra- and inter-op threads of each session.

    Returns:
      name -> ``{"p50_ms", "p90_ms", "p99_ms", "n"}`` (``percentiles_ms``), wall time of one
      ``Session.run`` (feed + run + fetch of every output), the models interleaved call by call.
    """
    if calls < 1:
        raise ValueError(f"calls must be >= 1. Received: calls={calls}")
    batches = example_batches(serialized, batch_size, warmup + calls)
    loaded = {}
    try:
        for name, path in export_dirs.items():
            loaded[name] = LoadedModel(path, threads)
        samples = interleaved_latency({n: m.runner(signature) for n, m in loaded.items()}, batches, calls, warmup)
    finally:
        for m in loaded.values():
            m.close()
    return {n: percentiles_ms(s) for n, s in samples.items()}


# --- parse / transform / model breakdown -------------------------------------------------

STAGES = ("feed", "parse", "parse_transform", "serving_default")
STAGE_METHOD = (
    "each model's ServingModule pieces are saved into a scratch SavedModel with four signatures on the same "
    "serialized examples: 'feed' (the input's shape only: the fixed cost of one Session.run with its feed and "
    "fetch), 'parse' (the parse op; outputs the parsed tensors' shapes), 'parse_transform' (parse + TF Transform "
    "graph; outputs a max per model input) and 'serving_default' (parse + transform + Keras model, as exported); "
    "each signature is one Session.run in the TF1 session path, every (model, signature) interleaved call by call; "
    "overhead_ms = p50(feed), parse_ms = p50(parse) - p50(feed), transform_ms = p50(parse_transform) - p50(parse), "
    "model_ms = p50(serving_default) - p50(parse_transform), total_ms = p50(serving_default) (differences of "
    "medians: a stage near 0 can come out slightly negative)")


class _StageModule(tf.Module):
    """Tracks a ``ServingModule`` (its TF Transform assets and Keras variables) for the
    stage signatures of ``stage_signatures``."""

    def __init__(self, serving_module):
        super().__init__(name="serving_cost_stages")
        self.serving = serving_module


def stage_signatures(module) -> dict:
    """The three timing signatures of a ``serving.signatures.ServingModule`` (``STAGES``),
    each ``examples`` (string ``[None]``) ->

    * ``feed``: outputs ``o0``, the shape of ``examples``: one op, the fixed cost of a call;
    * ``parse``: ``module.parse``; outputs ``o<i>``, the int64 shape of every parsed tensor
      (dense ``[batch]``, a sparse one's dense shape): fed from the parse op's outputs, so
      the whole op runs, and nothing big is copied out;
    * ``parse_transform``: ``module.transform(module.parse(...))``; outputs ``o<i>``, the
      max of every model input (a reduction reads every value: nothing of the transform
      can be pruned);
    * ``serving_default``: ``module.score(module.transform(module.parse(...)))``, the
      exported ``serving_default`` (its probability outputs).
    """
    spec = [tf.TensorSpec([None], tf.string, name="examples")]

    def shape(t):
        return t.dense_shape if isinstance(t, tf.sparse.SparseTensor) else tf.shape(t, out_type=tf.int64)

    @tf.function(input_signature=spec)
    def feed(examples):
        return {"o0": tf.shape(examples, out_type=tf.int64)}

    @tf.function(input_signature=spec)
    def parse(examples):
        parsed = module.parse(examples)
        return {f"o{i}": shape(parsed[k]) for i, k in enumerate(sorted(parsed))}

    @tf.function(input_signature=spec)
    def parse_transform(examples):
        transformed = module.transform(module.parse(examples))
        return {f"o{i}": tf.reduce_max(transformed[k]) for i, k in enumerate(sorted(transformed))}

    @tf.function(input_signature=spec)
    def serving_default(examples):
        return module.score(module.transform(module.parse(examples)))

    return {"feed": feed.get_concrete_function(), "parse": parse.get_concrete_function(), "parse_transform": parse_transform.get_concrete_function(),
            "serving_default": serving_default.get_concrete_function()}


def save_stage_export(module, export_dir: str) -> str:
    """Saves ``module``'s ``stage_signatures`` as a SavedModel in ``export_dir``."""
    tf.saved_model.save(_StageModule(module), export_dir, signatures=stage_signatures(module))
    return export_dir


def breakdown_ms(modules: dict, serialized: list[bytes], batch_sizes=(1, 64, 512), calls: int = 60,
                 warmup: int = 10, threads: int = 1, scratch_dir: str | None = None) -> dict:
    """Parse / transform / model time per model and batch size in TF Serving's path.

    Method: ``STAGE_METHOD`` (``stage_signatures``; the exports are written under a
    temporary directory in ``scratch_dir``, default the system's, and removed afterwards).

    Args:
      modules: name -> ``serving.signatures.ServingModule`` (e.g. ``serving.export.serving_parts(...).module``
        of the teacher and the student).
      serialized: serialized raw ``tf.Example``s (``core.feature_specs.encode_raw_example``);
        batches cycle through them (``example_batches``).
      batch_sizes: examples per call.
      calls, warmup: timed and untimed calls per (model, stage) and batch size.
      threads: intra- and inter-op threads of each session.

    Returns:
      JSON-able ``{"method", "path", "threads", "calls", "warmup", "batch_sizes",
      "batches": {str(batch_size): {name: {"overhead_ms", "parse_ms", "transform_ms",
      "model_ms", "total_ms", "total_p90_ms", "total_p99_ms", "stage_p50_ms": {stage: p50}}}}}``
      (``overhead_ms + parse_ms + transform_ms + model_ms == total_ms``, all p50 ms).
    """
    import re
    import tempfile
    import uuid

    if not modules:
        raise ValueError("no models to measure")
    tmp = fs.join(scratch_dir or tempfile.gettempdir(), f"serving-cost-{uuid.uuid4().hex[:12]}")
    loaded = {}
    try:
        for i, (name, module) in enumerate(modules.items()):
            path = save_stage_export(module, fs.join(tmp, f"{i}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"))
            loaded[name] = LoadedModel(path, threads)
        runners = {(n, s): m.runner(s) for n, m in loaded.items() for s in STAGES}
        batches_out = {}
        for bs in batch_sizes:
            batches = example_batches(serialized, bs, warmup + calls)
            samples = interleaved_latency(runners, batches, calls, warmup)
            per = {}
            for name in modules:
                p = {s: percentiles_ms(samples[(name, s)]) for s in STAGES}
                p50 = {s: p[s]["p50_ms"] for s in STAGES}
                per[name] = {"overhead_ms": p50["feed"],
                             "parse_ms": round(p50["parse"] - p50["feed"], 3),
                             "transform_ms": round(p50["parse_transform"] - p50["parse"], 3),
                             "model_ms": round(p50["serving_default"] - p50["parse_transform"], 3),
                             "total_ms": p50["serving_default"],
                             "total_p90_ms": p["serving_default"]["p90_ms"],
                             "total_p99_ms": p["serving_default"]["p99_ms"],
                             "stage_p50_ms": p50}
            batches_out[str(bs)] = per
    finally:
        for m in loaded.values():
            m.close()
        fs.rmtree(tmp)
    return {"method": STAGE_METHOD, "path": "TF1 session (tf.compat.v1.saved_model.loader.load, tag serve), one "
            "Session.run per call on serialized raw tf.Examples", "threads": threads, "calls": calls, "warmup": warmup,
            "batch_sizes": list(batch_sizes), "batches": batches_out}


def breakdown_table(result: dict, names: list[str] | None = None) -> str:
    """``breakdown_ms``'s result as a markdown table: one row per batch size and model (p50
    ms of the call overhead, parse, transform, model and the whole ``serving_default``), and,
    with two models or more, each later model's total over the first's (e.g. student / teacher)."""
    first = next(iter(result["batches"].values()), {})
    names = list(names or first)
    ratio = len(names) >= 2
    head = "| batch | model | call overhead (ms) | parse (ms) | transform (ms) | model (ms) | total p50 (ms) |"
    label = f"{names[1]} / {names[0]}" if len(names) == 2 else f"total / {names[0]}"
    lines = [head + (f" {label} |" if ratio else ""),
             "|---:|---|---:|---:|---:|---:|---:|" + ("---:|" if ratio else "")]
    for bs, per in result["batches"].items():
        for j, n in enumerate(names):
            r = per[n]
            cell = ""
            if ratio:
                cell = f" {r['total_ms'] / per[names[0]]['total_ms']:.2f}x |" if j >= 1 else " |"
            lines.append(f"| {bs} | {n} | {r['overhead_ms']:.3f} | {r['parse_ms']:.3f} | {r['transform_ms']:.3f} | {r['model_ms']:.3f} | "
                         f"{r['total_ms']:.3f} |{cell}")
    return "\n".join(lines)
