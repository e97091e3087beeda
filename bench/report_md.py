"""Renders ``bench/results.json`` (written by bench/run_all.py) as the BENCHMARKS.md tables.

Only numbers present in the results appear; a benchmark that failed or was not run is
listed as such, never filled in.
"""
from __future__ import annotations


def _fmt(x, digits=0) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


def _machine(m: dict) -> list[str]:
    return [f"Machine: {m.get('cpu_model')}, {m.get('cores')} cores, {m.get('ram_gb')} GB RAM "
            f"(from /proc); 1-minute load average when the run started: {_fmt(m.get('load_average_1m'), 1)} "
            "(the machine is shared: other jobs ran at the same time, so absolute numbers are pessimistic; "
            "ratios are measured side by side in the same run)."]


def _size_rows(results: dict) -> list[str]:
    lines = ["| stage | rows | seconds | rows or examples / s | peak RSS MB (self / largest child) |",
             "|---|---:|---:|---:|---:|"]
    for n, entry in results["sizes"].items():
        phases = entry.get("preprocess", {}).get("phases", {})
        for phase, label in (("generate", "generate (synthetic)"), ("baseline", "plain Beam: read+validate+split+write"),
                             ("stage", "preprocess stage (Beam + TFT)")):
            p = phases.get(phase)
            if p:
                lines.append(f"| {label} | {p['rows']:,} | {_fmt(p['seconds'], 1)} | {_fmt(p['rows_per_second'])} | "
                             f"{_fmt(p['peak_rss_mb_self'])} / {_fmt(p['peak_rss_mb_children'])} |")
        if not phases:
            lines.append(f"| preprocess | {int(n):,} | failed (exit {entry.get('preprocess', {}).get('exit_code')}) | | |")
        t = entry.get("train", {}).get("json")
        if t:
            lines.append(f"| train teacher ({t['epochs']} epoch, batch {t['batch_size']}) | {t['rows']:,} | "
                         f"{_fmt(t['seconds'], 1)} | {_fmt(t['examples_per_second'])} | {_fmt(t['peak_rss_mb'])} |")
        elif "train" in entry:
            lines.append(f"| train teacher | {int(n):,} | failed (exit {entry['train'].get('exit_code')}) | | |")
    return lines


def _ratios(results: dict) -> list[str]:
    out = []
    for n, entry in results["sizes"].items():
        ph = entry.get("preprocess", {}).get("phases", {})
        if "baseline" in ph and "stage" in ph:
            out.append(f"- TFT preprocessing vs plain Beam at {int(n):,} rows: "
                       f"{ph['stage']['rows_per_second'] / ph['baseline']['rows_per_second']:.2f}x the throughput "
                       f"({_fmt(ph['stage']['rows_per_second'])} vs {_fmt(ph['baseline']['rows_per_second'])} rows/s).")
    sizes = list(results["sizes"].items())
    if len(sizes) >= 2:
        (n1, a), (n2, b) = sizes[0], sizes[-1]
        for what, get in (("preprocess stage peak RSS (self)", lambda e: e.get("preprocess", {}).get("phases", {}).get("stage", {}).get("peak_rss_mb_self")),
                          ("preprocess stage peak RSS (largest child)", lambda e: e.get("preprocess", {}).get("phases", {}).get("stage", {}).get("peak_rss_mb_children")),
                          ("train peak RSS", lambda e: (e.get("train", {}).get("json") or {}).get("peak_rss_mb"))):
            x, y = get(a), get(b)
            if x and y:
                out.append(f"- Memory as data grows ({int(n1):,} -> {int(n2):,} rows, {int(n2) / int(n1):.0f}x): {what} "
                           f"{_fmt(x)} MB -> {_fmt(y)} MB ({y / x:.2f}x).")
    d = (results.get("distill_scoring") or {}).get("json")
    if d:
        lat = d["latency"]
        out.append(f"- Student vs teacher in-process latency (student {lat['student']}; params "
                   f"{lat['params']['student']:,} vs {lat['params']['teacher']:,}): p50 speed-up "
                   + ", ".join(f"{v}x at {k.split('_')[1]}" for k, v in lat.items() if k.startswith("speedup")) + ".")
    s = (results.get("serving") or {}).get("json")
    if s:
        for role, r in s["results"].items():
            for batch in ("batch_1", "batch_64"):
                m = r.get(batch, {})
                if m.get("in_process"):
                    base = m["in_process"]["p50_ms"]
                    out.append(f"- {role} {batch.replace('_', ' ')}: REST p50 {m['rest']['p50_ms']:.2f} ms "
                               f"({m['rest']['p50_ms'] / base:.1f}x in-process), gRPC p50 {m['grpc']['p50_ms']:.2f} ms "
                               f"({m['grpc']['p50_ms'] / base:.1f}x), in-process {base:.2f} ms.")
    dc = results.get("teacher_vs_deepctr") or {}
    if dc.get("not_run"):
        out.append(f"- Our training vs DeepCTR's equivalent: not measured in this run ({dc['not_run']}).")
    elif dc.get("exit_code") not in (None, 0):
        out.append(f"- Our training vs DeepCTR's equivalent: bench/teacher_vs_deepctr.py failed (exit {dc['exit_code']}).")
    elif dc:
        out.append("- Our training vs DeepCTR's equivalent: see the teacher_vs_deepctr table below.")
    return out


def _latency_table(results: dict) -> list[str]:
    lines = []
    d = (results.get("distill_scoring") or {}).get("json")
    if d:
        sc = d["scoring"]
        lines += ["", "### Distillation scoring and model latency (smallest size)", "",
                  f"Teacher-scoring Beam job: {sc['rows']:,} rows in {_fmt(sc['seconds'], 1)} s = "
                  f"{_fmt(sc['rows_per_second'])} rows/s; peak RSS {_fmt(sc['peak_rss_mb_self'])} MB "
                  f"(largest child {_fmt(sc['peak_rss_mb_children'])} MB).", "",
                  "| model (in-process, tf.function) | batch | p50 ms | p99 ms |", "|---|---:|---:|---:|"]
        for key, v in d["latency"].items():
            if isinstance(v, dict) and "p50_ms" in v:
                role, batch = key.split("_batch")
                lines.append(f"| {role} | {batch} | {v['p50_ms']:.3f} | {v['p99_ms']:.3f} |")
    s = (results.get("serving") or {}).get("json")
    if s:
        lines += ["", f"### Serving (bench/serving.py, {s['requests_per_point']} requests per point)", "",
                  "| model | batch | path | p50 ms | p99 ms |", "|---|---:|---|---:|---:|"]
        for role, r in s["results"].items():
            for batch in ("batch_1", "batch_64"):
                for path, m in r.get(batch, {}).items():
                    lines.append(f"| {role} | {batch[6:]} | {path} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |")
            for path, t in r.get("throughput_batch_1", {}).items():
                lines.append(f"| {role} | 1 | {path} sustained | {t['requests_per_second']:.0f} req/s "
                             f"({t['concurrency']} clients, {t['errors']} errors) | |")
    elif results.get("serving"):
        lines += ["", f"Serving benchmark failed (exit {results['serving'].get('exit_code')})."]
    dc = (results.get("teacher_vs_deepctr") or {})
    if dc.get("stdout") and dc.get("exit_code") == 0:
        lines += ["", "### Teacher vs DeepCTR (bench/teacher_vs_deepctr.py output)", "", "```", dc["stdout"].strip()[-3000:], "```"]
    return lines


def render(results: dict) -> str:
    sizes = ", ".join(f"{int(n):,}" for n in results["sizes"])
    lines = ["# Benchmarks", "",
             "Generated by `python bench/run_all.py` (raw numbers: `bench/results.json`). "
             f"Run {results['started']} to {results.get('finished') or '(interrupted before the end)'}: synthetic sizes {sizes} rows, "
             f"DirectRunner {results['mode']}, {results['epochs']} training epoch(s).", ""]
    lines += _machine(results["machine"]) + ["", "## Throughput and peak memory", ""] + _size_rows(results)
    lines += ["", "## Ratios measured side by side", ""] + (_ratios(results) or ["- none (benchmarks failed)"])
    lines += _latency_table(results)
    return "\n".join(lines) + "\n"
