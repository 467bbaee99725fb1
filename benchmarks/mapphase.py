"""The map phase: per-image work spread over every worker, and what a run costs in memory.

    python benchmarks/mapphase.py [--parts niqe,default,memory] [--workers 2] [--repeats 5]

Prints, from one invocation:

1. `niqe`: NIQE alone on SynthAGIQA's 1k preset (180 prompts, 1,080 images) rendered at 320 px, 5 repeats,
   `--executor serial` vs `--executor local --workers 2`, both at 1 thread per job: wall times, the speed-up,
   and whether the stored rows are identical.  Before the map phase a zero-shot method's jobs ran one at a
   time in one lane, so this was about 1.0x whatever the workers.  The script first measures the machine's
   ceiling: how much more CPU-bound work 2 processes get done than one (2.0 on 2 free cores).
2. `default`: the default run (`agiqa-bench run`, the quick synthetic set, 10 repeats) serial vs local with
   2 workers, from cold caches: wall times and the speed-up.
3. `memory`: the summed peak resident memory of the default run, driver and workers together (sampled every
   0.2 s over the whole process tree), serial and with 2 workers (measured during part 2's runs).

Every run is a fresh `agiqa-bench run` process with a fresh --out; the synthetic images are rendered once
beforehand and shared.
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


def run(args: list[str], out: Path, env: dict) -> tuple[float, float]:
    """(wall seconds, peak of the summed RSS of the process tree in MB) of one `agiqa-bench run`."""
    import psutil

    cmd = [sys.executable, "-m", "agiqa_bench", "run", "--out", str(out), *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            total = 0
            for p in tree:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(0.2)
    seconds = time.perf_counter() - t0
    output = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        print(output[-3000:])
        raise SystemExit(f"agiqa-bench run {' '.join(args)} exited {proc.returncode}")
    return seconds, peak / 2**20


def _spin(n: int = 20_000_000) -> float:
    t0 = time.perf_counter()
    x = 0
    for i in range(n):
        x += i
    return time.perf_counter() - t0


def ceiling(workers: int) -> float:
    """How much more pure-Python work `workers` processes at once get done than one: the most any executor can
    gain on this machine (shared or hyper-threaded cores give less than `workers`)."""
    import multiprocessing as mp

    alone = min(_spin() for _ in range(2))
    with mp.get_context("spawn").Pool(workers) as pool:
        together = max(pool.map(_spin, [20_000_000] * workers))
    return workers * alone / together


def rows(out: Path) -> pd.DataFrame:
    with sqlite3.connect(out / "results.sqlite") as conn:
        frame = pd.read_sql("SELECT method, target, repeat, " + ", ".join(METRICS) + " FROM results "
                            "WHERE status = 'ok'", conn)
    return frame.sort_values(["method", "target", "repeat"]).reset_index(drop=True)


def identical(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return len(a) == len(b) and a[["method", "target", "repeat"]].equals(b[["method", "target", "repeat"]]) and all(
        np.array_equal(a[m].to_numpy(), b[m].to_numpy(), equal_nan=True) for m in METRICS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="niqe,default,memory")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the NIQE part")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    print(f"this machine's ceiling: {args.workers} CPU-bound processes at once do {ceiling(args.workers):.2f}x the work "
          f"of one (the most any executor can gain here)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env["AGIQA_BENCH_CACHE"] = str(tmp / "synthetic-cache")  # rendered once, shared by every run below
        if "niqe" in parts:
            data = ["--dataset-opt", "size=1k", "--dataset-opt", "image_size=320"]
            base = ["--methods", "niqe", *data, "--repeats", str(args.repeats), "--threads-per-job", "1"]
            subprocess.run([sys.executable, "-m", "agiqa_bench", "splits", "export", "--dataset", "synthetic", *data,
                            "--output", str(tmp / "warm.json")], env=env, check=True, capture_output=True)
            serial, _ = run([*base, "--executor", "serial"], tmp / "niqe-serial", env)
            local, _ = run([*base, "--executor", "local", "--workers", str(args.workers)], tmp / "niqe-local", env)
            same = identical(rows(tmp / "niqe-serial"), rows(tmp / "niqe-local"))
            n = len(rows(tmp / "niqe-serial"))
            print(f"niqe, 1,080 images at 320 px, {args.repeats} repeats, 1 thread per job ({n} rows):")
            print(f"  serial          {serial:7.1f} s")
            print(f"  local x{args.workers}        {local:7.1f} s")
            print(f"  speed-up        {serial / local:7.2f}x   rows identical: {same}", flush=True)
        if parts & {"default", "memory"}:
            subprocess.run([sys.executable, "-m", "agiqa_bench", "splits", "export", "--dataset", "synthetic",
                            "--output", str(tmp / "warm2.json")], env=env, check=True, capture_output=True)
            serial, serial_mb = run(["--executor", "serial"], tmp / "default-serial", env)
            local, local_mb = run(["--executor", "local", "--workers", str(args.workers)], tmp / "default-local", env)
            a, b = rows(tmp / "default-serial"), rows(tmp / "default-local")
            if "default" in parts:
                print(f"default run (quick synthetic set, 10 repeats, {len(a)} rows):")
                print(f"  serial          {serial:7.1f} s")
                print(f"  local x{args.workers}        {local:7.1f} s")
                print(f"  speed-up        {serial / local:7.2f}x   rows identical: {identical(a, b)} "
                      f"(torch trainings differ in the last bits when the thread count differs: serial uses every "
                      f"core per job)")
            if "memory" in parts:
                print("summed peak RSS of the default run (driver + workers):")
                print(f"  serial          {serial_mb:7.0f} MB")
                print(f"  local x{args.workers}        {local_mb:7.0f} MB", flush=True)


if __name__ == "__main__":
    main()
