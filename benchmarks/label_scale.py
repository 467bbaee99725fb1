"""Label-scale invariance of the default run's trainable methods, on SynthAGIQA.

    python benchmarks/label_scale.py [--repeats 2] [--a 9 --b 26] [--methods a,b] [--size default] [--raw]

Runs every trainable method of the default run twice on the same splits (same seed): once on SynthAGIQA's
labels y, once on a*y + b (default 26 + 9y, the range of AIGCIQA2023's MOSz), and prints each method's mean
SRCC per target on both and the difference.  The harness standardises training labels on the training part
(`agiqa_bench.labels`), so the differences should be float noise.  `--raw` runs the same pairs with the
harness's label scaling switched off (every method sees raw labels), which shows what it protects against.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def transformed(ds, a: float, b: float):
    from agiqa_bench.records import Dataset

    items = [replace(it, targets={t: a * v + b for t, v in it.targets.items()}) for it in ds.items]
    return Dataset(ds.name, items, ds.targets, ds.label_file, ds.image_dir, list(ds.notes), ds.label_groups,
                   ds.attributes)


def mean_srcc(out: Path):
    from agiqa_bench.store import read_results

    frame = read_results(out, status=None)
    ok = frame[frame["status"] == "ok"]
    return ok.groupby(["method", "target"])["srcc"].mean(), frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--a", type=float, default=9.0)
    parser.add_argument("--b", type=float, default=26.0)
    parser.add_argument("--methods", default="", help="default: the trainable methods of the default run")
    parser.add_argument("--size", default="default", help="SynthAGIQA size preset")
    parser.add_argument("--raw", action="store_true", help="switch the harness's label scaling off (to compare)")
    args = parser.parse_args()

    from agiqa_bench.datasets import load_dataset
    from agiqa_bench.registry import default_methods, get_spec, load_class
    from agiqa_bench.runner import run_benchmark

    methods = [m for m in args.methods.split(",") if m] or [
        m for m in default_methods() if get_spec(m)[0].kind == "trainable"]
    if args.raw:
        for m in methods:
            load_class(get_spec(m)[0]).label_scale = None
    ds = load_dataset("synthetic", size=args.size)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, data in (("y", ds), (f"{args.a:g}y+{args.b:g}", transformed(ds, args.a, args.b))):
            t0 = time.perf_counter()
            summary = run_benchmark(methods, data, out=Path(tmp) / label.replace("+", "p"), repeats=args.repeats,
                                    device="cpu")
            srcc, frame = mean_srcc(summary.out)
            errors = frame[frame["status"] != "ok"] if "status" in frame else frame.iloc[0:0]
            print(f"{label}: {len(frame)} rows in {time.perf_counter() - t0:.0f} s"
                  + (f", {len(errors)} failed" if len(errors) else ""), flush=True)
            results[label] = srcc
    base, other = results.values()
    names = list(results)
    print(f"\nlabel scaling: {'OFF (raw labels)' if args.raw else 'on (harness default)'}; "
          f"{args.repeats} repeats, SynthAGIQA size={args.size}")
    print(f"{'method':<18} {'target':<10} {'SRCC ' + names[0]:>12} {'SRCC ' + names[1]:>14} {'diff':>9}")
    worst = 0.0
    for (method, target), value in base.items():
        moved = other.get((method, target), float("nan"))
        worst = max(worst, abs(moved - value))
        print(f"{method:<18} {target:<10} {value:>12.4f} {moved:>14.4f} {moved - value:>+9.1e}")
    print(f"largest |diff|: {worst:.2e}")


if __name__ == "__main__":
    main()
