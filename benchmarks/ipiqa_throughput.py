"""IP-IQA training throughput (images/s) and peak memory, per backbone configuration.

    python benchmarks/ipiqa_throughput.py                 # tiny and RN50-224 on CPU; RN50-512 too when CUDA is present
    python benchmarks/ipiqa_throughput.py --steps 3 --configs tiny,rn50-224 --device cpu

Each configuration runs in its own subprocess, so peak resident memory (CPU) is
that configuration's alone; on CUDA the peak allocated memory is reported too.
A step is the full training step of the harness: forward through both
streams, MSE, backward, AdamW update (random weights: speed does not depend
on the values).  Prints a table and the ratios to the tiny configuration.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {
    "tiny": {"clip_model": "agiqa-tiny-rn", "image_size": 64, "batch": 16},
    "rn50-224": {"clip_model": "RN50-quickgelu", "image_size": 224, "batch": 8},
    "rn50-512": {"clip_model": "RN50-quickgelu", "image_size": 512, "batch": 32, "cuda_only": True},
}


def measure(name: str, steps: int, device: str) -> dict:
    """One configuration, in this process."""
    import torch

    sys.path.insert(0, str(ROOT))
    from agiqa_bench.training import _autocast
    from ipiqa.model import IPIQA, IPIQAConfig

    cfg = CONFIGS[name]
    torch.manual_seed(0)
    model = IPIQA(IPIQAConfig(clip_model=cfg["clip_model"], pretrained="", image_size=cfg["image_size"], num_outputs=2))
    model.to(device).train()
    opt = torch.optim.AdamW(model.param_groups(1e-5, 10.0))
    b, s = cfg["batch"], cfg["image_size"]
    images = torch.randn(b, 3, s, s, device=device)
    tokens = model.tokenize(["two red stars on a grey background, striped"] * b).to(device)
    target = torch.rand(b, 2, device=device) * 5

    def step():
        with _autocast(device, True):
            out = model(images, tokens)
        loss = torch.nn.functional.mse_loss(out.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (allocations, cuDNN autotune)
    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {
        "config": name, "device": device, "batch": b, "image_size": s, "steps": steps,
        "seconds_per_step": seconds / steps, "images_per_s": b * steps / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "trainable_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
    }
    if device.startswith("cuda"):
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["amp"] = "bf16"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="", help="comma list of " + ", ".join(CONFIGS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.steps, args.device)))
        return
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    names = [n for n in (args.configs.split(",") if args.configs else CONFIGS) if n]
    rows = []
    for name in names:
        if CONFIGS[name].get("cuda_only") and not device.startswith("cuda"):
            print(f"{name}: skipped (needs a GPU; about 13.5 s per batch-8 step on this kind of CPU)")
            continue
        done = subprocess.run([sys.executable, __file__, "--one", name, "--steps", str(args.steps), "--device", device],
                              capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr[-2000:]}")
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = next((r for r in rows if r["config"] == "tiny"), None)
    print(f"\n{'config':<10} {'device':<6} {'batch':>5} {'px':>4} {'params M':>9} {'train M':>8} {'s/step':>8} "
          f"{'img/s':>8} {'peak RSS MB':>12} {'peak CUDA MB':>13} {'x tiny':>7}")
    for r in rows:
        ratio = base["images_per_s"] / r["images_per_s"] if base else float("nan")
        print(f"{r['config']:<10} {r['device']:<6} {r['batch']:>5} {r['image_size']:>4} {r['params_m']:>9.1f} "
              f"{r['trainable_m']:>8.1f} {r['seconds_per_step']:>8.3f} {r['images_per_s']:>8.1f} "
              f"{r['peak_rss_mb']:>12.0f} {r.get('peak_cuda_mb', float('nan')):>13.0f} {ratio:>7.1f}")
    print("\n'x tiny' = how many times slower per image than the tiny configuration.")


if __name__ == "__main__":
    main()
