"""The default run under each executor, from cold feature caches, in one invocation.

    python benchmarks/scaleout.py [--size 3k|1k|default] [--repeats 10] [--workers 2] [--executors serial,local,ray]
                                  [--methods a,b]

The workload is SynthAGIQA's paper-scale preset (`--size 3k`: 300 prompts, 1,800 images, the AGIQA-3k prompt
count) by default; `--size default` is the quick default run (360 images), the one a 2-core laptop measures in
~15 minutes for all three executors.

Each executor runs `agiqa-bench run` (the built-in synthetic set, the default methods) in a fresh
process with a fresh --out (so no feature, score or image cache is warm; the synthetic images
themselves are built once beforehand and shared).  Prints the wall time of each, the speed-ups
over serial, and compares the stores row by row: every (method, target, repeat) must carry the
same metrics.  CPU numbers of torch trainings depend on torch's thread count: `serial` runs with
all cores per job, the parallel executors with cores / workers per job, so serial and parallel
rows of torch methods are compared to a tolerance and reported separately, while `local` and `ray`
(same threads per job) must agree bitwise, as must every non-torch method everywhere.  Pass
`--same-threads` to run serial with the parallel executors' thread count too: then all rows must
agree bitwise.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

METRICS = ["srcc", "plcc", "krcc", "rmse"]


def run(executor: str, out: Path, args, env: dict) -> float:
    cmd = [sys.executable, "-m", "agiqa_bench", "run", "--out", str(out), "--repeats", str(args.repeats),
           "--executor", executor, "--dataset-opt", f"size={args.size}"]
    if executor != "serial":
        cmd += ["--workers", str(args.workers)]
    elif args.same_threads:
        cmd += ["--threads-per-job", str(max(1, (os.cpu_count() or 1) // args.workers))]
    if args.methods:
        cmd += ["--methods", args.methods]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
        raise SystemExit(f"{executor}: agiqa-bench run exited {proc.returncode}")
    return seconds


def rows(out: Path) -> pd.DataFrame:
    with sqlite3.connect(out / "results.sqlite") as conn:
        frame = pd.read_sql("SELECT method, target, repeat, config_hash, status, info_json, "
                            + ", ".join(METRICS) + " FROM results", conn)
    return frame.sort_values(["method", "target", "repeat"]).reset_index(drop=True)


def torch_methods(frame: pd.DataFrame) -> set[str]:
    from agiqa_bench.registry import get_spec

    out = set()
    for name in frame["method"].unique():
        spec, _ = get_spec(name)
        if spec.kind == "trainable" and spec.family in ("ours", "deep"):
            out.add(name)
    return out


def compare(a: pd.DataFrame, b: pd.DataFrame, label: str, torch_names: set[str], bitwise_torch: bool) -> bool:
    keys = ["method", "target", "repeat", "config_hash"]
    if len(a) != len(b) or not (a[keys].values == b[keys].values).all():
        print(f"  {label}: the stores hold different rows ({len(a)} vs {len(b)})")
        return False
    ok = True
    for name, part in a.groupby("method"):
        other = b[b["method"] == name]
        x, y = part[METRICS].to_numpy(dtype=float), other[METRICS].to_numpy(dtype=float)
        same = np.array_equal(x, y, equal_nan=True)
        diff = float(np.nanmax(np.abs(x - y))) if x.size else 0.0
        must = bitwise_torch or name not in torch_names
        status = "identical" if same else (f"max |diff| {diff:.2e}" + ("  <-- MUST BE IDENTICAL" if must else
                                                                        " (torch thread count differs)"))
        ok &= same or not must
        print(f"  {label}: {name:<22} {status}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="3k", help="SynthAGIQA size preset: 3k (paper scale), 1k or default")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--executors", default="serial,local,ray")
    parser.add_argument("--methods", default="")
    parser.add_argument("--same-threads", action="store_true")
    args = parser.parse_args()
    executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        env["AGIQA_BENCH_CACHE"] = str(Path(tmp) / "cache")
        subprocess.run([sys.executable, "-c", "from agiqa_bench.datasets import load_dataset; "
                        f"load_dataset('synthetic', size={args.size!r})"], env=env, check=True)  # built once, shared
        print(f"{os.cpu_count()} cores; default methods on synthetic size={args.size}, {args.repeats} repeats; "
              f"workers {args.workers}", flush=True)
        times, stores = {}, {}
        for executor in executors:
            out = Path(tmp) / executor
            times[executor] = run(executor, out, args, env)
            stores[executor] = rows(out)
            print(f"{executor:<7} {times[executor]:7.1f} s   ({len(stores[executor])} rows)", flush=True)
        if "serial" in times:
            for executor in executors:
                if executor != "serial":
                    print(f"speed-up {executor} / serial: {times['serial'] / times[executor]:.2f}x")
        names = torch_methods(next(iter(stores.values())))
        ok = True
        first = executors[0]
        for executor in executors[1:]:
            bitwise = args.same_threads or "serial" not in (first, executor)
            ok &= compare(stores[first], stores[executor], f"{first} vs {executor}", names, bitwise)
        if "local" in stores and "ray" in stores and first != "local":
            ok &= compare(stores["local"], stores["ray"], "local vs ray", names, True)
        print("stores agree" if ok else "STORES DISAGREE")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
