"""Default gradient-boosted trees vs the teacher on census income, on the project's own split.
Data: the UCI census-income test file at ../shared/data/census_income_kdd/ (configs/census_income.yaml);
where that file is absent it prints SKIPPED and why, and measures nothing.

Issue 13 (section 5, numeric embeddings) sets the goal: the teacher within 0.002 test AUC of a
default scikit-learn ``HistGradientBoostingClassifier`` on census income, on the split the
pipeline makes. This bench prints both, per task, and whether the goal is met.

Usage (from anywhere; paths in the config are read relative to the repository root)::

    python bench/census_gbdt.py                                 # GBDT + teacher (preprocess into a temp run dir)
    python bench/census_gbdt.py --teacher none                  # GBDT only
    python bench/census_gbdt.py --run-dir RUN --teacher read    # teacher AUC of an evaluated run
    python bench/census_gbdt.py --run-dir RUN --teacher pipeline --seeds 1 2 3   # `pipeline train` + `evaluate`
    python bench/census_gbdt.py --set preprocess.numeric.piecewise_linear_bins=16  # passed to the teacher run
    python bench/census_gbdt.py --gbdt-from RUN/bench_census_gbdt.json ...   # reuse an earlier run's GBDT AUCs

The split. The GBDT reads the raw file in-process with the pipeline's own code, exactly as
``serving/raw_examples.py::read_split`` does: ``core.raw_formats.list_input_files`` /
``read_file`` decode the records, ``core.records.RecordSchema(cfg).typed`` types them (dead
letters are dropped, as preprocess drops them), and ``core.splits.assign_split(split_key(
values, split_columns(cfg, features.raw_columns(cfg))), fractions)`` puts each record in
train / validation / test. When a preprocessed run directory is at hand, the per-split row
counts and dead letters are checked against its ``stats.json`` and the per-split row and
positive-label counts against its transformed TFRecords (the rows the teacher trains on).

The GBDT. ``HistGradientBoostingClassifier()`` with every default (learning_rate 0.1,
max_iter 100, max_leaf_nodes 31, min_samples_leaf 20, l2_regularization 0, max_bins 255,
``early_stopping="auto"``: on above 10,000 rows, i.e. here, scored on a random 10% of the
*train* split held out by ``random_state``, patience 10) except ``random_state`` (the seed)
and ``categorical_features``: the config's categorical columns, ordinal-encoded on the train
split (the missing category is a category of its own, as in the teacher; a category unseen in
train is a missing value), the numeric columns as read (no log1p or z-score: trees do not care).
It is fitted on the train split per task and scored on the test split. ``--gbdt-set k=v``
changes a parameter (reported). The validation split is not used by the GBDT. The GBDT is
deterministic per seed, so ``--gbdt-from JSON`` takes its AUCs from an earlier output of this
bench instead of refitting, when that output has the same split (rows read, dead letters, rows
and positive labels per split), the same ``--gbdt-set`` parameters and every requested seed;
otherwise the bench stops with the difference.

The teacher (``--teacher``):
  ``bench`` (default): ``python -m pipeline preprocess`` (subprocess, with ``--set``) into the
    run directory (``--run-dir``, reused if it is already preprocessed with the same data and
    preprocess config; else a temporary one), then one teacher per seed trained in-process
    with ``bench/teacher_vs_deepctr.py::run_teacher`` (train split, early stopping on
    validation mean AUC, ``training.epochs``), scored on the test split.
  ``pipeline``: the same preprocess, then per seed ``python -m pipeline train --set
    training.seed=S`` and ``python -m pipeline evaluate`` (subprocesses); the teacher's test
    AUC is read from the run's ``summary.json`` (``models.teacher.<task>.auc``, written by
    evaluate).
  ``read``: no training: the teacher's test AUC of an already evaluated ``--run-dir``.
  ``none``: GBDT only.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "census_income.yaml")
GOAL_GAP = 0.002


# ----------------------------------------------------------------------------- split
def read_splits(cfg):
    """Typed records of every split, reproduced in-process with the pipeline's own code.

    Returns ``({split: {"X": {column: list}, "y": {task: np.ndarray}}}, counts)`` where
    ``counts`` holds ``rows_read``, ``dead_lettered`` and ``rows_per_split``.
    """
    from core import features, raw_formats
    from core.records import InvalidRecord, RecordSchema
    from core.splits import SPLITS, assign_split, split_columns, split_key

    schema = RecordSchema(cfg, require_labels=True)
    key_columns = split_columns(cfg, features.raw_columns(cfg))
    s = cfg.preprocess.split
    fractions = (s.train, s.validation, s.test)
    columns = list(cfg.data.categorical) + list(cfg.data.numeric)
    labels = {t.name: t.label for t in cfg.data.tasks}
    out = {sp: {"X": {c: [] for c in columns}, "y": {t: [] for t in labels}} for sp in SPLITS}
    read = dead = 0
    files = raw_formats.list_input_files(cfg.data.path)
    for path in files:
        for rec in raw_formats.read_file(path, cfg.data.format, cfg.data.csv):
            read += 1
            if "error" in rec:
                dead += 1
                continue
            try:
                typed = schema.typed(rec["values"])
            except InvalidRecord:
                dead += 1
                continue
            split = out[SPLITS[assign_split(split_key(rec["values"], key_columns), fractions)]]
            for c in columns:
                split["X"][c].append(typed[c])
            for t, col in labels.items():
                split["y"][t].append(typed[col])
    for sp in out.values():
        sp["y"] = {t: np.asarray(v, dtype=np.int64) for t, v in sp["y"].items()}
    counts = {"files": len(files), "rows_read": read, "dead_lettered": dead,
              "rows_per_split": {sp: len(out[sp]["y"][next(iter(labels))]) for sp in SPLITS}}
    return out, counts


def check_against_stats(counts: dict, stats_file: str) -> list[str]:
    """Problems comparing the in-process split with preprocess's ``stats.json`` (empty: same)."""
    from core import fs

    stats = fs.read_json(stats_file)
    problems = []
    for key in ("rows_read", "dead_lettered", "rows_per_split"):
        if stats.get(key) != counts[key]:
            problems.append(f"{key}: bench {counts[key]} vs preprocess {stats.get(key)}")
    return problems


def check_against_tfrecords(splits: dict, run_dir, info) -> tuple[dict, list[str]]:
    """Per split (rows, positives per task) of the run's transformed TFRecords, and the
    differences from the in-process split (empty: same rows and labels)."""
    from core.features import label_key
    from models.inputs import make_dataset

    got, problems = {}, []
    for sp, data in splits.items():
        n, pos = 0, {t: 0 for t in info.tasks}
        for batch in make_dataset(run_dir.split_pattern(sp), info, 8192):
            n += int(batch[label_key(info.tasks[0])].shape[0])
            for t in info.tasks:
                pos[t] += int(np.sum(batch[label_key(t)].numpy()))
        got[sp] = {"rows": n, "positives": pos}
        mine = {"rows": len(data["y"][info.tasks[0]]), "positives": {t: int(data["y"][t].sum()) for t in info.tasks}}
        if mine != got[sp]:
            problems.append(f"{sp}: bench {mine} vs TFRecords {got[sp]}")
    return got, problems


# ----------------------------------------------------------------------------- GBDT
def encode(cfg, splits: dict):
    """(X per split as float arrays, categorical mask, cardinalities): categoricals
    ordinal-encoded with the train split's categories (unseen -> NaN), numerics as they are."""
    from sklearn.preprocessing import OrdinalEncoder

    cat, num = list(cfg.data.categorical), list(cfg.data.numeric)
    enc = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, dtype=np.float64)
    as_cat = lambda sp: np.asarray([splits[sp]["X"][c] for c in cat], dtype=object).T  # noqa: E731
    as_num = lambda sp: np.asarray([splits[sp]["X"][c] for c in num], dtype=np.float64).T  # noqa: E731
    enc.fit(as_cat("train"))
    X = {sp: np.hstack([enc.transform(as_cat(sp)), as_num(sp)]) for sp in splits}
    mask = np.array([True] * len(cat) + [False] * len(num))
    return X, mask, {c: len(k) for c, k in zip(cat, enc.categories_)}


def run_gbdt(cfg, X: dict, mask, splits: dict, seeds: list[int], params: dict) -> dict:
    """task -> [{"seed", "auc", "n_iter", "seconds"}] of a default HGB per seed."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    results = {}
    for t in cfg.task_names:
        results[t] = []
        for seed in seeds:
            start = time.perf_counter()
            clf = HistGradientBoostingClassifier(categorical_features=mask, random_state=seed, **params)
            clf.fit(X["train"], splits["train"]["y"][t])
            auc = float(roc_auc_score(splits["test"]["y"][t], clf.predict_proba(X["test"])[:, 1]))
            seconds = time.perf_counter() - start
            results[t].append({"seed": seed, "auc": auc, "n_iter": int(clf.n_iter_), "seconds": round(seconds, 2)})
            print(f"  GBDT {t} seed {seed}: test AUC {auc:.5f} ({clf.n_iter_} iterations, {seconds:.1f} s)", flush=True)
    return results


def reuse_gbdt(path: str, results: dict, tasks: list[str], seeds: list[int], params: dict) -> dict:
    """The GBDT runs of ``seeds`` from an earlier output ``path`` of this bench; raises
    ValueError when its split, parameters or seeds differ from this run's."""
    with open(path) as f:
        old = json.load(f)
    mine, theirs = results["split"], old.get("split", {})
    problems = [f"{k}: now {mine[k]} vs {theirs.get(k)}"
                for k in ("rows_read", "dead_lettered", "rows_per_split", "positives") if theirs.get(k) != mine[k]]
    if old.get("gbdt_params", {}) != params:
        problems.append(f"gbdt_params: now {params} vs {old.get('gbdt_params')}")
    gbdt = {}
    for t in tasks:
        by_seed = {r["seed"]: r for r in old.get("gbdt", {}).get(t, [])}
        missing = [s for s in seeds if s not in by_seed]
        if missing:
            problems.append(f"{t}: no GBDT run of seed(s) {missing}")
        gbdt[t] = [by_seed[s] for s in seeds if s in by_seed]
    if problems:
        raise ValueError(f"--gbdt-from {path} cannot be reused: " + "; ".join(problems))
    return gbdt


# ----------------------------------------------------------------------------- teacher
def _pipeline(args_list: list[str], what: str) -> float:
    """Runs ``python -m pipeline ARGS`` from the repository root; returns its wall seconds."""
    cmd = [sys.executable, "-m", "pipeline"] + args_list
    print(f"  $ {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{(proc.stderr or proc.stdout)[-3000:]}")
    return seconds


def preprocess_reusable(run_dir, cfg) -> bool:
    """True when ``run_dir`` holds an ok preprocess made with ``cfg``'s data and preprocess sections."""
    from core.config import config_to_dict, load_config

    if not (os.path.exists(run_dir.config_file) and os.path.exists(run_dir.stats_file)
            and os.path.exists(run_dir.feature_info_file)):
        return False
    if run_dir.stage_problem("preprocess") is not None:
        return False
    last = run_dir.last_attempt("preprocess")
    if not last or last.get("status") != "ok":
        return False
    recorded, wanted = config_to_dict(load_config(run_dir.config_file)), config_to_dict(cfg)
    return all(recorded.get(k) == wanted.get(k) for k in ("data", "preprocess"))


def ensure_preprocess(run_dir, cfg, config_args: list[str], overrides: list[str]) -> float | None:
    """Runs the preprocess stage into ``run_dir`` unless it can be reused; its seconds or None."""
    if preprocess_reusable(run_dir, cfg):
        print(f"  reusing the preprocess output of {run_dir.root} (same data and preprocess config)")
        return None
    sets = [a for o in overrides for a in ("--set", o)]
    return _pipeline(["preprocess", "--run-dir", run_dir.root] + config_args + sets, "pipeline preprocess")


def teacher_bench(cfg, run_dir, seeds: list[int]) -> list[dict]:
    """One teacher per seed with bench/teacher_vs_deepctr.py's ``run_teacher``."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from teacher_vs_deepctr import run_teacher

    from models import backbones, distillation_losses  # noqa: F401  (register model.backbone and distill.mode)
    from models.model_io import load_feature_info

    info = load_feature_info(run_dir.feature_info_file)
    from core import fs

    train_rows = fs.read_json(run_dir.stats_file)["rows_per_split"]["train"]
    runs = []
    for seed in seeds:
        start = time.perf_counter()
        r = run_teacher(cfg, run_dir, info, seed, cfg.training.epochs, train_rows)
        r = {"seed": seed, **{k: r[k] for k in cfg.task_names}, "epochs_run": r["epochs_run"],
             "seconds": round(time.perf_counter() - start, 1)}
        runs.append(r)
        print(f"  teacher seed {seed}: " + ", ".join(f"{t} {r[t]:.5f}" for t in cfg.task_names)
              + f" ({r['epochs_run']} epochs, {r['seconds']:.0f} s)", flush=True)
    return runs


def read_teacher(run_dir, tasks: list[str]) -> dict:
    """The teacher's test AUCs from an evaluated run's ``summary.json``."""
    from core.run_dir import Summary

    summary = Summary(run_dir).load()
    ev = summary["stages"].get("evaluate", {})
    if ev.get("status") != "ok":
        raise RuntimeError(f"{run_dir.root}: no successful `evaluate` in summary.json (status {ev.get('status')!r})")
    for stage in ("train", "preprocess"):
        if summary["stages"].get(stage, {}).get("finished_at", "") > ev.get("finished_at", ""):
            raise RuntimeError(f"{run_dir.root}: `{stage}` ran after the last `evaluate`; re-run evaluate")
    teacher = summary["models"].get("teacher")
    if not teacher:
        raise RuntimeError(f"{run_dir.root}: summary.json has no teacher metrics")
    seed = summary.get("config", {}).get("training", {}).get("seed")
    return {"seed": seed, **{t: float(teacher[t]["auc"]) for t in tasks}}


def teacher_pipeline(run_dir, tasks: list[str], seeds: list[int], overrides: list[str]) -> list[dict]:
    """Per seed: ``pipeline train --set training.seed=S`` then ``pipeline evaluate``."""
    runs = []
    sets = [a for o in overrides for a in ("--set", o)]
    for seed in seeds:
        t_train = _pipeline(["train", "--run-dir", run_dir.root] + sets + ["--set", f"training.seed={seed}"],
                            "pipeline train")
        t_eval = _pipeline(["evaluate", "--run-dir", run_dir.root], "pipeline evaluate")
        r = read_teacher(run_dir, tasks)
        r.update({"seed": seed, "seconds": round(t_train + t_eval, 1)})
        runs.append(r)
        print(f"  teacher seed {seed}: " + ", ".join(f"{t} {r[t]:.5f}" for t in tasks)
              + f" (train {t_train:.0f} s + evaluate {t_eval:.0f} s)", flush=True)
    return runs


# ----------------------------------------------------------------------------- report
def _stat(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values)), "n": len(values)}


def _cell(s: dict) -> str:
    if s["n"] == 1:
        return f"{s['mean']:.4f} (1 seed)"
    return f"{s['mean']:.4f} [{s['min']:.4f}, {s['max']:.4f}]"


def deepctr_reference() -> tuple[str, dict] | None:
    """DeepCTR rows of the last ``bench/run_all.py`` run (bench/results.json), if any."""
    path = os.path.join(ROOT, "bench", "results.json")
    try:
        with open(path) as f:
            entry = json.load(f)["teacher_vs_deepctr"]
        data = entry["json"]
    except (OSError, KeyError, TypeError, ValueError):
        return None
    rows = {k: v for k, v in data.get("results", {}).items() if not k.startswith("teacher")}
    return f"bench/results.json (teacher_vs_deepctr: seeds {data.get('seeds')}, {data.get('epochs')} epochs, " \
           f"its own preprocess run)", rows


def print_table(tasks: list[str], gbdt: dict, teacher: list[dict] | None, params_note: str) -> dict:
    summary = {}
    print(f"\n| task | GBDT test AUC, mean [min, max] over seeds ({params_note}) | teacher test AUC | gap (GBDT - teacher) | "
          f"goal: gap <= {GOAL_GAP} |")
    print("|---|---|---|---|---|")
    for t in tasks:
        g = _stat([r["auc"] for r in gbdt[t]])
        row = {"gbdt": g}
        if teacher:
            te = _stat([r[t] for r in teacher])
            gap = g["mean"] - te["mean"]
            row.update({"teacher": te, "gap": gap, "goal_met": bool(gap <= GOAL_GAP)})
            print(f"| {t} | {_cell(g)} | {_cell(te)} | {gap:+.4f} | {'met' if gap <= GOAL_GAP else 'NOT met'}"
                  f"{' (teacher ahead)' if gap < 0 else ''} |")
        else:
            print(f"| {t} | {_cell(g)} | not run | - | - |")
        summary[t] = row
    ref = deepctr_reference()
    if ref and ref[1]:
        note, rows = ref
        print(f"\nDeepCTR reference, test AUC ({note}; not re-run here):")
        for name, runs in rows.items():
            print(f"  {name}: " + ", ".join(f"{t} {np.mean([r[t] for r in runs]):.4f}" for t in tasks if all(t in r for r in runs)))
    return summary


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help=f"YAML config (default: the run dir's recorded config, else {DEFAULT_CONFIG})")
    ap.add_argument("--run-dir", help="run directory of the teacher (default: a temporary one, removed at the end)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override (repeatable), applied to the split/GBDT config and passed to the teacher run")
    ap.add_argument("--teacher", choices=["bench", "pipeline", "read", "none"], default="bench")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="GBDT random_state and teacher seeds")
    ap.add_argument("--teacher-seeds", type=int, nargs="+", help="teacher seeds (default: --seeds)")
    ap.add_argument("--gbdt-set", action="append", default=[], metavar="PARAM=VALUE",
                    help="HistGradientBoostingClassifier parameter (value read as YAML); default: none changed")
    ap.add_argument("--gbdt-from", metavar="JSON",
                    help="take the GBDT AUCs from an earlier output of this bench (same split, parameters and "
                         "seeds, checked) instead of refitting")
    ap.add_argument("--threads", type=int, default=1,
                    help="OpenMP threads of the GBDT (default 1: on a shared, loaded machine more threads are "
                         "slower; 0: sklearn's default, every core)")
    ap.add_argument("--output", help="JSON results (default: <run-dir>/bench_census_gbdt.json with --run-dir)")
    args = ap.parse_args(argv)

    config_path = os.path.abspath(args.config) if args.config else None
    run_root = os.path.abspath(args.run_dir) if args.run_dir else None
    output = os.path.abspath(args.output) if args.output else None
    gbdt_from = os.path.abspath(args.gbdt_from) if args.gbdt_from else None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up noise (the teacher part)
    os.chdir(ROOT)  # relative paths in the config are relative to the repository root, as in the README
    sys.path.insert(0, ROOT)
    import yaml

    from core.config import load_config
    from core.run_dir import RunDir, write_json_atomic

    if args.teacher == "read" and not run_root:
        ap.error("--teacher read needs --run-dir")
    recorded = os.path.join(run_root, "config.yaml") if run_root else None
    if config_path is None and recorded and os.path.exists(recorded):
        base, config_args = recorded, []  # like the CLI: the run dir's recorded config
    else:
        base = config_path or DEFAULT_CONFIG
        config_args = ["--config", base]
    cfg = load_config(base, args.overrides)
    print(f"config: {base}" + (f" with --set {' '.join(args.overrides)}" if args.overrides else ""))
    files_exist = bool(glob.glob(cfg.data.path))
    if cfg.data.source != "files" or not files_exist:
        print(f"SKIPPED: census-income data not found at {os.path.join(ROOT, cfg.data.path)} "
              f"(data.source={cfg.data.source}); put census-income.test.gz there (see configs/census_income.yaml)")
        return 0
    if args.threads > 0:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads, user_api="openmp")
    gbdt_params = {}
    for text in args.gbdt_set:
        k, v = text.split("=", 1)
        gbdt_params[k.strip()] = yaml.safe_load(v)
    params_note = "HistGradientBoostingClassifier defaults" + (f" + {gbdt_params}" if gbdt_params else "")
    timings, results = {}, {"config": base, "overrides": args.overrides, "seeds": args.seeds,
                            "gbdt_params": gbdt_params, "goal_gap": GOAL_GAP}

    # 1. the split
    print("\n[1] split, reproduced in-process (core.raw_formats + core.records + core.splits)")
    start = time.perf_counter()
    splits, counts = read_splits(cfg)
    timings["split_read_seconds"] = round(time.perf_counter() - start, 1)
    print(f"  {counts['rows_read']} rows read from {counts['files']} file(s), {counts['dead_lettered']} dead-lettered, "
          f"per split {counts['rows_per_split']} ({timings['split_read_seconds']} s)")
    for sp, d in splits.items():
        print(f"    {sp}: " + ", ".join(f"{t} positives {int(d['y'][t].sum())} ({d['y'][t].mean():.4f})" for t in cfg.task_names))
    results["split"] = {**counts, "positives": {sp: {t: int(d["y"][t].sum()) for t in cfg.task_names}
                                                for sp, d in splits.items()}}

    # 2. GBDT
    print(f"\n[2] GBDT: {params_note}, categorical_features = the {len(cfg.data.categorical)} categorical columns "
          f"(ordinal-encoded on train), {len(cfg.data.numeric)} numerics as read; fit on train, scored on test")
    start = time.perf_counter()
    if gbdt_from:
        gbdt = reuse_gbdt(gbdt_from, results, cfg.task_names, args.seeds, gbdt_params)
        results["gbdt_from"] = gbdt_from
        for t in cfg.task_names:
            for r in gbdt[t]:
                print(f"  GBDT {t} seed {r['seed']}: test AUC {r['auc']:.5f} (reused from {gbdt_from})")
    else:
        X, mask, cards = encode(cfg, splits)
        print(f"  categories per column (train): max {max(cards.values())} ({max(cards, key=cards.get)}), "
              f"total {sum(cards.values())}")
        gbdt = run_gbdt(cfg, X, mask, splits, args.seeds, gbdt_params)
        timings["gbdt_seconds"] = round(time.perf_counter() - start, 1)
        print(f"  GBDT total {timings['gbdt_seconds']} s")
    results["gbdt"] = gbdt

    # 3. teacher
    teacher, tmp = None, None
    if args.teacher != "none":
        print(f"\n[3] teacher ({args.teacher})")
        if not run_root:
            tmp = tempfile.mkdtemp(prefix="census_gbdt_")
            run_root = os.path.join(tmp, "run")
        run_dir = RunDir(run_root)
        seeds = args.teacher_seeds or args.seeds
        start = time.perf_counter()
        try:
            if args.teacher != "read":
                pre = ensure_preprocess(run_dir, cfg, config_args, args.overrides)
                if pre is not None:
                    timings["preprocess_seconds"] = round(pre, 1)
                    print(f"  preprocess: {pre:.0f} s")
            problems = check_against_stats(counts, run_dir.stats_file)
            print(f"  row counts vs {run_dir.stats_file}: " + ("identical" if not problems else "; ".join(problems)))
            from models.model_io import load_feature_info

            info = load_feature_info(run_dir.feature_info_file)
            tf_counts, tf_problems = check_against_tfrecords(splits, run_dir, info)
            print("  rows and positive labels vs the transformed TFRecords: "
                  + ("identical" if not tf_problems else "; ".join(tf_problems)))
            results["split"]["checks"] = {"stats": problems or "identical", "tfrecords": tf_problems or "identical"}
            if problems or tf_problems:
                raise AssertionError("the in-process split differs from the pipeline's: " + "; ".join(problems + tf_problems))
            t0 = time.perf_counter()
            if args.teacher == "bench":
                teacher = teacher_bench(cfg, run_dir, seeds)
            elif args.teacher == "pipeline":
                teacher = teacher_pipeline(run_dir, cfg.task_names, seeds, args.overrides)
            else:
                teacher = [read_teacher(run_dir, cfg.task_names)]
                print(f"  teacher (seed {teacher[0]['seed']}): "
                      + ", ".join(f"{t} {teacher[0][t]:.5f}" for t in cfg.task_names))
            timings["teacher_seconds"] = round(time.perf_counter() - t0, 1)
            timings["teacher_part_seconds"] = round(time.perf_counter() - start, 1)
            results["teacher"] = {"mode": args.teacher, "run_dir": None if tmp else run_root,
                                  "backbone": cfg.model.backbone, "epochs": cfg.training.epochs, "runs": teacher}
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    # 4. table
    results["table"] = print_table(cfg.task_names, gbdt, teacher, params_note)
    results["timings"] = timings
    print(f"\nwall times: {timings}")
    output = output or (os.path.join(run_root, "bench_census_gbdt.json") if run_root and not tmp else None)
    if output:
        write_json_atomic(output, results)
        print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
