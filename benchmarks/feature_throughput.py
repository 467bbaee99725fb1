"""Feature extraction throughput of the handcrafted baselines, and what ten repeats cost.

    python benchmarks/feature_throughput.py                       # every handcrafted method, 96 and 512 px
    python benchmarks/feature_throughput.py --methods gmlf,niqe --sizes 512 --images 4
    python benchmarks/feature_throughput.py --skip-repeats        # throughput only

Part 1 (throughput): for each method, the per-image feature (or zero-shot
score) computation on `--images` SynthAGIQA-world renders per size, timed
from image file to vector, nothing cached: images/s.

Part 2 (repeat cost): a full `--repeats`-repeat benchmark of each method on
the built-in synthetic dataset (360 images, 96 px) from a cold cache,
against one feature pass over the same images.  The harness computes
features once per image and reuses them across repeats, so the ratio
(run / one pass) should be close to 1: the rest (last column) is ten small
SVR fits, splits, metrics and the store, a second or two whatever the
feature cost.

Single-threaded numpy/torch (`--threads`, default 1) so figures are comparable
across machines; NIQE uses the shipped synthetic pristine model with 32x32
blocks at every size (the official 96x96 model is a download).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("cpbd", "ceiq", "niqe", "sisblim.approx", "gmlf", "higrade.1", "higrade.2")
#: NIQE needs a pristine model; the shipped synthetic one works offline at any size >= 32 px.
OVERRIDES = {"niqe": {"params": "agiqa-synth", "block_size": 32}}


def _items(folder: Path, size: int, n: int):
    from agiqa_bench.synthetic.corpus import image_seed, render_entry
    from agiqa_bench.records import Item
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for k in range(n):
        caption, _, _, rgb = render_entry(image_seed(5, k), size)
        path = folder / f"{k:04d}.png"
        Image.fromarray(rgb).save(path)
        items.append(Item(f"{size}-{k}", path, caption, {"quality": 0.0}, f"g{k}"))
    return items


def _one_pass(name: str, items, cache_dir: Path | None) -> float:
    """Seconds to compute every item's features (or zero-shot score) once."""
    from agiqa_bench.method import MethodContext
    from agiqa_bench.registry import create_method
    from baselines.svr import FeatureSVR

    method = create_method(name, OVERRIDES.get(name.split(".")[0], {}), MethodContext(cache_dir=cache_dir))
    start = time.perf_counter()
    if isinstance(method, FeatureSVR):
        method.features(items)
    else:
        method.predict(items)
    return time.perf_counter() - start


def throughput(methods, sizes, n_images: int, work: Path) -> None:
    print(f"\n## Feature throughput ({n_images} images per size, cold, one process)\n")
    print("| method | " + " | ".join(f"{s} px img/s | {s} px s/img" for s in sizes) + " |")
    print("|---|" + "---|---|" * len(sizes))
    sets = {s: _items(work / f"img{s}", s, n_images) for s in sizes}
    for name in methods:
        _one_pass(name, sets[sizes[0]][:1], None)  # warm-up: imports, lazy tables
        cells = []
        for s in sizes:
            seconds = _one_pass(name, sets[s], None)
            cells += [f"{n_images / seconds:.1f}", f"{seconds / n_images:.4f}"]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def repeat_cost(methods, repeats: int, work: Path) -> None:
    from agiqa_bench.datasets import load_dataset
    from agiqa_bench.runner import run_benchmark

    ds = load_dataset("synthetic")
    print(f"\n## {repeats}-repeat run vs one feature pass (synthetic, {len(ds.items)} images, target quality)\n")
    print(f"| method | one pass s | {repeats}-repeat run s | ratio run / pass | run - pass s |")
    print("|---|---|---|---|---|")
    for name in methods:
        one = _one_pass(name, ds.items, work / f"pass-{name}")
        out = work / f"run-{name}"
        start = time.perf_counter()
        run_benchmark([name], ds, out=out, device="cpu", repeats=repeats, targets=("quality",),
                      overrides={name: OVERRIDES.get(name.split(".")[0], {})})
        run = time.perf_counter() - start
        print(f"| {name} | {one:.2f} | {run:.2f} | {run / one:.2f} | {run - one:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--sizes", default="96,512")
    parser.add_argument("--images", type=int, default=8, help="images per size for the throughput table")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-repeats", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="agiqa-feature-bench-") as tmp:
        throughput(methods, sizes, args.images, Path(tmp))
        if not args.skip_repeats:
            repeat_cost(methods, args.repeats, Path(tmp))


if __name__ == "__main__":
    main()
