"""Runs every benchmark side by side and writes ``bench/results.json`` and ``BENCHMARKS.md``.

For each size of ``--rows-list`` (default 1,000,000 and 5,000,000 synthetic rows):

  1. ``bench/preprocess.py``: generate, plain Beam (read+validate+split+write) vs the whole
     TFT preprocess stage: rows/s and peak RSS; it leaves a preprocessed run in the work dir;
  2. ``bench/train.py``: the default teacher, ``--epochs`` epoch(s) on that run: examples/s, peak RSS.

On the smallest size only:

  3. ``bench/distill_scoring.py``: the teacher-scoring Beam job (rows/s, peak RSS) and
     teacher vs student in-process latency (p50/p99, batch 1 and 256);
  4. ``bench/serving.py``: in-process vs REST vs gRPC latency (p50/p99) and sustained req/s;
  5. ``bench/teacher_vs_deepctr.py`` when ``--deepctr-run-dir`` names a preprocessed
     census-income run (else the results say it was not run).

Every script runs as a child process (its own peak memory); its JSON output (``--json`` or
its last JSON line) or, failing that, its stdout is stored in the results. The machine
(CPU model, cores, RAM from /proc, load average before the run) is recorded with them.

Usage::

    python bench/run_all.py                                   # 1M and 5M rows: hours on 2 cores
    python bench/run_all.py --rows-list 200000,1000000 --work-dir /tmp/bench
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
BENCH = os.path.join(REPO, "bench")


def machine() -> dict:
    """CPU model, core count, RAM and load average, read from /proc."""
    info = {"cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu_model"] = models[0] if models else "unknown"
    except OSError:
        info["cpu_model"] = "unknown"
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem = dict(line.split(":", 1) for line in f)
        info["ram_gb"] = round(int(mem["MemTotal"].split()[0]) / 1024 / 1024, 1)
    except (OSError, KeyError, ValueError):
        info["ram_gb"] = None
    try:
        info["load_average_1m"] = os.getloadavg()[0]
    except OSError:
        info["load_average_1m"] = None
    return info


def run_script(name: str, args: list[str], timeout: float) -> dict:
    """Runs ``bench/<name>`` with ``args``; returns exit code, seconds, parsed JSON and stdout tail."""
    cmd = [sys.executable, os.path.join(BENCH, name), *args]
    print(f"== {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout, check=False)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        code, out, err = "timeout", e.stdout or "", e.stderr or ""
        out, err = (out.decode() if isinstance(out, bytes) else out), (err.decode() if isinstance(err, bytes) else err)
    result = {"command": " ".join(cmd[1:]), "exit_code": code, "seconds": round(time.monotonic() - start, 1),
              "stdout": out[-4000:]}
    if code != 0:
        result["stderr_tail"] = err[-2000:]
        print(f"   failed ({code}): {err[-500:]}", flush=True)
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            try:
                result["json"] = json.loads(line)
                break
            except ValueError:
                continue
    return result


_PHASE = re.compile(r"^(generate|baseline|stage)\s+([\d,]+)\s+([\d.]+)\s+([\d,]+)\s+([\d,]+) / ([\d,]+)", re.M)


def parse_preprocess(stdout: str) -> dict:
    """bench/preprocess.py's table: phase -> rows, seconds, rows/s, peak RSS self / largest child (MB)."""
    num = lambda s: float(s.replace(",", ""))  # noqa: E731
    return {m[0]: {"rows": int(num(m[1])), "seconds": num(m[2]), "rows_per_second": num(m[3]),
                   "peak_rss_mb_self": num(m[4]), "peak_rss_mb_children": num(m[5])}
            for m in _PHASE.findall(stdout)}


def _write_config(run_dir: str, rows: int) -> None:
    """config.yaml as the CLI would write it (bench/serving.py reads the run's config)."""
    import yaml

    from core.config import config_to_dict, load_config

    cfg = load_config(os.path.join(REPO, "configs", "default.yaml"), [f"synthetic.rows={rows}", "export.min_auc={}"])
    with open(os.path.join(run_dir, "config.yaml"), "w", encoding="utf-8") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)


def _model_benches(args, results: dict, small: str, rows: int, save) -> None:
    """Distillation scoring, student vs teacher latency and serving, on one trained run."""
    trained = os.path.isdir(os.path.join(small, "teacher", "serving_model"))
    if trained and "distill" not in args.skip:
        results["distill_scoring"] = run_script("distill_scoring.py", ["--run-dir", small], args.timeout)
        save(results)
    if trained and "serving" not in args.skip and os.path.exists(os.path.join(BENCH, "serving.py")):
        _write_config(small, rows)
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            path = f.name
        results["serving"] = run_script("serving.py", ["--run-dir", small, "--requests", str(args.serving_requests),
                                                       "--duration", "3", "--json", path], args.timeout)
        if os.path.getsize(path):
            with open(path, encoding="utf-8") as f:
                results["serving"]["json"] = json.load(f)
        os.remove(path)
        save(results)


def run(args, save=lambda results: None) -> dict:
    """Runs the benchmarks in order; ``save(results)`` after each one (partial results survive a kill)."""
    sizes = [int(s) for s in args.rows_list.split(",") if s.strip()]
    results = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "rows_list": sizes, "mode": args.mode, "epochs": args.epochs, "sizes": {}}
    for n in sizes:
        work = os.path.join(args.work_dir, f"rows_{n}")
        entry = results["sizes"][str(n)] = {}
        pp = run_script("preprocess.py", ["--rows", str(n), "--mode", args.mode, "--work-dir", work], args.timeout)
        pp["phases"] = parse_preprocess(pp["stdout"])
        entry["preprocess"] = pp
        save(results)
        if pp["exit_code"] == 0 and "train" not in args.skip:
            entry["train"] = run_script("train.py", ["--run-dir", work, "--epochs", str(args.epochs)], args.timeout)
            save(results)
        if n == min(sizes):  # model benchmarks on the smallest trained run, before the long sizes
            _model_benches(args, results, work, n, save)
    if args.deepctr_run_dir and os.path.exists(os.path.join(BENCH, "teacher_vs_deepctr.py")):
        out = os.path.join(args.work_dir, "teacher_vs_deepctr.json")
        results["teacher_vs_deepctr"] = run_script(
            "teacher_vs_deepctr.py", ["--run-dir", args.deepctr_run_dir, "--repeats", str(args.deepctr_repeats),
                                      "--epochs", str(args.deepctr_epochs), "--output", out], args.timeout)
        if os.path.exists(out):
            with open(out, encoding="utf-8") as f:
                results["teacher_vs_deepctr"]["json"] = json.load(f)
    else:
        results["teacher_vs_deepctr"] = {"not_run": "pass --deepctr-run-dir (a preprocessed census-income run)"
                                         if os.path.exists(os.path.join(BENCH, "teacher_vs_deepctr.py"))
                                         else "bench/teacher_vs_deepctr.py is missing"}
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows-list", default="1000000,5000000", help="comma-separated synthetic row counts (default 1M,5M)")
    p.add_argument("--work-dir", default="/tmp/bench_all", help="one run directory per size is made under it")
    p.add_argument("--mode", default="multi_processing", choices=["in_memory", "multi_threading", "multi_processing"],
                   help="DirectRunner mode of the preprocessing benchmark (default multi_processing)")
    p.add_argument("--epochs", type=int, default=1, help="training epochs per size (default 1)")
    p.add_argument("--skip", default="", help="comma-separated subset of train,distill,serving to leave out")
    p.add_argument("--serving-requests", type=int, default=100, help="timed requests per serving point (default 100)")
    p.add_argument("--deepctr-run-dir", help="a preprocessed census-income run for bench/teacher_vs_deepctr.py")
    p.add_argument("--deepctr-repeats", type=int, default=3,
                   help="alternations of ours and DeepCTR per model in teacher_vs_deepctr (default 3)")
    p.add_argument("--deepctr-epochs", type=int, default=2, help="max epochs for teacher_vs_deepctr (default 2)")
    p.add_argument("--timeout", type=float, default=4 * 3600, help="seconds allowed per script (default 4 h)")
    p.add_argument("--output", default=os.path.join(BENCH, "results.json"), help="results JSON (default bench/results.json)")
    p.add_argument("--markdown", default=os.path.join(REPO, "BENCHMARKS.md"), help="table (default BENCHMARKS.md)")
    args = p.parse_args(argv)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    from bench.report_md import render
    from core.run_dir import write_json_atomic

    def save(results: dict) -> str:
        write_json_atomic(args.output, results)
        text = render(results)
        tmp = args.markdown + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, args.markdown)
        return text

    print(save(run(args, save)))
    print(f"results: {args.output}\ntable:   {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
