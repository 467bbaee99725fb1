"""One prepared GPU check of the training loop (IP-IQA RN50 at 512 px), a few minutes on one H200.

    python benchmarks/gpu_check.py                  # everything below
    python benchmarks/gpu_check.py --skip-pack      # without the 4-process packing test
    python benchmarks/gpu_check.py --only vlm --vlm-model ~/models/Qwen2.5-VL-3B-Instruct   # the VLM step alone
    AGIQA_BENCH_COMPILE=1 python benchmarks/gpu_check.py --only model   # the same with torch.compile

Random weights (open_clip `RN50-quickgelu`, `pretrained=""`): nothing is
downloaded, and speed does not depend on the values.  Prints, with timestamps:

1. model step: the harness's training step (forward, MSE, backward, AdamW) at
   batch 32, 512 px, in fp32 and in bf16 autocast: images/s, peak GPU memory;
2. harness loop: `fit_regressor` epochs on synthetic 512 px images (the image
   bank on the GPU, the loop's crops/flips/normalisation): images/s, the share
   of the step time spent outside the model (data + host) against (1), and one
   100-epoch AGIQA-1k-sized repeat (864 train + 108 validation images)
   extrapolated from the measured epochs and validation pass;
3. packing: 4 trainings at once on the GPU (4 spawned processes, bf16) vs one:
   total images/s;
4. distinct predictions under bf16 autocast (the float32 head) vs fp32 on 600
   random images: both counts should be 600;
5. vlm (`baselines/vlm.py`, the default backbone Qwen/Qwen2.5-VL-3B-Instruct, or
   `--vlm-model PATH` for a local copy: the GPU machine may have no internet):
   zero-shot scoring images/s (bf16, 448 px, batch 8, the level-token score of
   `vlm.zero_shot`) and the LoRA training step of `vlm` (q/v adapters r 64,
   AdamW, batch 8): seconds per step and peak GPU memory, next to the spec's
   estimated `resources`.  Skipped, in one line, when the model is not here.

Without CUDA it prints one line and exits 0.  Every measurement is a few steps.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the harness, here and in the spawned packing processes
T0 = time.perf_counter()
BATCH, SIZE, MODEL, DEVICE = 32, 512, "RN50-quickgelu", "cuda"
AGIQA1K_TRAIN, AGIQA1K_VAL, EPOCHS = 864, 108, 100


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def dry_run_on_cpu() -> None:
    """`--cpu-dry-run`: the whole script on the CPU with the tiny backbone at 64 px (checks the script, not speed)."""
    global BATCH, SIZE, MODEL, DEVICE
    import torch

    BATCH, SIZE, MODEL, DEVICE = 4, 64, "agiqa-tiny-rn", "cpu"
    torch.set_num_threads(1)
    os.environ["AGIQA_BENCH_DRY_RUN"] = "1"  # the spawned packing processes read it


def sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def peak_gb() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else float("nan")


def empty_cache() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def build(num_outputs: int = 1):
    import torch

    from ipiqa.model import IPIQA, IPIQAConfig

    torch.manual_seed(0)
    return IPIQA(IPIQAConfig(clip_model=MODEL, pretrained="", image_size=SIZE, num_outputs=num_outputs))


def model_steps(amp: bool, steps: int, warmup: int = 3, barrier=None) -> dict:
    """The harness's step on fixed device tensors (no data loading): images/s and peak memory."""
    import torch

    from agiqa_bench.amp import maybe_compile, use_channels_last
    from agiqa_bench.training import _autocast

    if os.environ.get("AGIQA_BENCH_DRY_RUN") == "1" and DEVICE != "cpu":
        dry_run_on_cpu()
    device = DEVICE
    model = build(2).to(device).train()
    if use_channels_last(model, device):
        model.to(memory_format=torch.channels_last)
    forward = maybe_compile(model, device)
    opt = torch.optim.AdamW(model.param_groups(1e-5, 10.0))
    images = torch.randn(BATCH, 3, SIZE, SIZE, device=device).contiguous(memory_format=torch.channels_last)
    tokens = model.tokenize(["two red stars on a grey background, striped"] * BATCH).to(device)
    target = torch.rand(BATCH, 2, device=device) * 5

    def step():
        with _autocast(device, amp):
            out = forward(images, tokens)
        loss = torch.nn.functional.mse_loss(out.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if barrier is not None:
        barrier.wait()
    start = time.time()
    for _ in range(steps):
        step()
    sync()
    end = time.time()
    return {"amp": amp, "steps": steps, "start": start, "end": end, "seconds_per_step": (end - start) / steps,
            "images_per_s": BATCH * steps / (end - start), "peak_gb": peak_gb()}


def _packed_worker(steps: int, barrier, queue) -> None:
    try:
        queue.put(model_steps(True, steps, barrier=barrier))
    except Exception as exc:  # an out-of-memory process reports instead of hanging the others
        barrier.abort()
        queue.put({"error": f"{type(exc).__name__}: {str(exc)[:300]}"})


def packed(n: int, steps: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_packed_worker, args=(steps, barrier, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    out = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return out


def synthetic_items(n: int, folder: Path):
    import numpy as np
    from PIL import Image

    from agiqa_bench.records import Item

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (SIZE // 8, SIZE // 8, 3), dtype=np.uint8)
    items = []
    for i in range(n):
        path = folder / f"img{i:04d}.jpg"
        img = np.roll(base, i, axis=1).repeat(8, 0).repeat(8, 1)
        Image.fromarray(img).save(path, quality=90)
        items.append(Item(id=path.name, image=path, prompt=f"prompt {i % 50}", targets={"mos": float(rng.uniform(1, 5))},
                          group=str(i % 50)))
    return items


def harness(model_bf16: dict) -> None:
    import numpy as np
    import torch

    from agiqa_bench.training import TrainConfig, fit_regressor, predict_batches
    from agiqa_bench.batches import ImageBank

    n_train, n_val, epochs = 8 * BATCH, (AGIQA1K_VAL if DEVICE == "cuda" else 8), 3
    with tempfile.TemporaryDirectory() as tmp:
        items = synthetic_items(n_train + n_val, Path(tmp))
        train, val = items[:n_train], items[n_train:]
        t = time.perf_counter()
        ImageBank.get(items, SIZE)
        log(f"harness: {len(items)} synthetic {SIZE} px images decoded into the bank in {time.perf_counter() - t:.1f}s")
        model = build(1)
        tokens = {it.prompt: row for it, row in zip(items, model.tokenize([it.prompt for it in items]))}
        extras = lambda its: [torch.stack([tokens[it.prompt] for it in its])]  # noqa: E731
        stamps = [time.perf_counter()]
        cfg = TrainConfig(epochs=epochs, batch_size=BATCH, image_size=SIZE, selection="last", amp=True)
        result = fit_regressor(model, model.param_groups(cfg.lr, cfg.head_lr_scale), train, [], ["mos"], cfg,
                               device=DEVICE, seed=0, extras=extras, on_epoch=lambda r: stamps.append(time.perf_counter()))
        steps = n_train // BATCH
        per_epoch = np.diff(stamps)
        steady = float(np.median(per_epoch[1:]))  # the first epoch warms up (allocations, cuDNN)
        step_s = steady / steps
        log(f"harness: epochs {', '.join(f'{s:.2f}s' for s in per_epoch)} ({steps} steps each); runtime {result.runtime}")
        log(f"harness: {BATCH / step_s:.1f} images/s in the loop vs {model_bf16['images_per_s']:.1f} model-only (bf16); "
            f"outside the model (data + host): {max(0.0, 1 - model_bf16['seconds_per_step'] / step_s):.0%} of the step")
        xv, ev = ImageBank.get(val, SIZE), extras(val)
        predict_batches(model, xv, ev, DEVICE, 64, True)  # warm-up
        sync()
        t = time.perf_counter()
        predict_batches(model, xv, ev, DEVICE, 64, True)
        sync()
        val_s = time.perf_counter() - t
        epoch_1k = (AGIQA1K_TRAIN // BATCH) * step_s + val_s * AGIQA1K_VAL / n_val
        log(f"harness: validation pass {val_s:.2f}s for {n_val} images; one AGIQA-1k-sized repeat "
            f"({AGIQA1K_TRAIN} train, {AGIQA1K_VAL} val, {EPOCHS} epochs): ~{EPOCHS * epoch_1k / 60:.1f} min "
            f"({epoch_1k:.2f}s per epoch), plus the bank's decoding")
        ImageBank.clear()


def distinct_check(n: int = 600) -> None:
    import numpy as np
    import torch

    from agiqa_bench.training import predict_batches

    model = build(1).to(DEVICE)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, 3, SIZE, SIZE), dtype=np.uint8))
    tokens = model.tokenize([f"prompt {i}" for i in range(n)])
    fp32 = predict_batches(model, images, [tokens], DEVICE, 64, amp=False)
    bf16 = predict_batches(model, images, [tokens], DEVICE, 64, amp=True)
    a, b = len(np.unique(fp32)), len(np.unique(bf16))
    ok = a == b == n
    log(f"distinct predictions on {n} random images: fp32 {a}, bf16 autocast {b} -> {'OK' if ok else 'PROBLEM'}; "
        f"max |bf16 - fp32| {float(np.abs(bf16 - fp32).max()):.4f}")


def vlm_check(ref: str, steps: int) -> None:
    """Zero-shot images/s and the LoRA step of the VLM scorers on `ref` (see the module docstring, step 5)."""
    import numpy as np
    import torch

    from baselines.archs import vlm as arch
    from baselines.vlm import TEMPLATES, VLMLoRAParams

    problem = arch.model_problem(ref, "vlm")
    if problem:
        log(f"vlm: skipped: {problem}")
        return
    dry = DEVICE == "cpu"
    size, batch = (64, 4) if dry else (448, 8)
    t = time.perf_counter()
    bb = arch.load_backbone(ref, method="vlm", device=DEVICE, bf16=True)
    n_params = sum(p.numel() for p in bb.model.parameters())
    log(f"vlm: {ref} ({type(bb.model).__name__}, {n_params / 1e6:,.1f} M parameters, {bb.dtype}) loaded in "
        f"{time.perf_counter() - t:.1f}s; peak GPU memory {peak_gb():.1f} GiB")
    question, answer = TEMPLATES["quality"]
    text = arch.chat_text(bb.processor, question, answer)
    ids = arch.level_token_ids(bb.tokenizer, answer, arch.LEVEL_WORDS, method="vlm", model=ref)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch)]
    inputs = arch.batch_inputs(bb, images, [text] * batch, DEVICE)
    log(f"vlm: {inputs['input_ids'].shape[1]} tokens per example at {size} px; level tokens {ids}")

    def score():
        with torch.no_grad():
            return arch.expected_level(arch.level_probabilities(arch.next_token_logits(bb.model, inputs), ids))

    score()
    sync()
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        scores = score()
    sync()
    s_per = (time.perf_counter() - t) / steps
    log(f"vlm zero-shot: {batch / s_per:.1f} images/s per target ({s_per * 1000:.0f} ms per batch of {batch}), "
        f"peak GPU memory {peak_gb():.1f} GiB; scores {[round(float(v), 3) for v in scores[:4]]}")
    defaults = {f.name: f.default for f in __import__("dataclasses").fields(VLMLoRAParams)}
    torch.manual_seed(0)
    names = arch.add_lora(bb.model, targets=defaults["lora_targets"].split(","), r=defaults["lora_r"],
                          alpha=defaults["lora_alpha"], dropout=defaults["lora_dropout"])
    params = list(arch.lora_parameters(bb.model).values())
    opt = torch.optim.AdamW(params, lr=defaults["lr"], weight_decay=0.0)
    target = torch.as_tensor([ids[k % 5] for k in range(batch)], device=DEVICE)
    bb.model.train()

    def step():
        logits = arch.next_token_logits(bb.model, inputs)
        loss = torch.nn.functional.cross_entropy(logits.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    step()
    sync()
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync()
    s_per = (time.perf_counter() - t) / steps
    log(f"vlm LoRA: {len(names)} adapted layers, {sum(p.numel() for p in params) / 1e6:.1f} M trainable parameters; "
        f"{s_per * 1000:.0f} ms per step of {batch} ({batch / s_per:.1f} examples/s), peak GPU memory "
        f"{peak_gb():.1f} GiB; loss {float(loss.detach()):.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="measured steps per model-step measurement")
    parser.add_argument("--pack", type=int, default=4, help="trainings packed on the GPU at once")
    parser.add_argument("--skip-pack", action="store_true")
    parser.add_argument("--only", choices=("model", "harness", "pack", "distinct", "vlm"), default=None)
    parser.add_argument("--vlm-model", default=None,
                        help="the vlm step's backbone: hub id or local folder (default: the vlm methods' default)")
    parser.add_argument("--cpu-dry-run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if args.cpu_dry_run:
        from agiqa_bench import training

        dry_run_on_cpu()
        training.AUTOCAST_DEVICE_TYPES = {"cuda", "cpu"}  # bf16 autocast on the CPU, as on CUDA
        log("CPU dry run: tiny backbone, 64 px, batch 4 (checks the script; the figures mean nothing)")
    elif not torch.cuda.is_available():
        print("gpu_check: no GPU here (torch.cuda.is_available() is False); nothing to measure")
        return 0
    else:
        name = torch.cuda.get_device_name(0)
        free, total = torch.cuda.mem_get_info()
        log(f"{name}, {free / 2**30:.0f} of {total / 2**30:.0f} GiB free")
    log(f"torch {torch.__version__}; IP-IQA {MODEL} "
        f"random weights, {SIZE} px, batch {BATCH}; compile={os.environ.get('AGIQA_BENCH_COMPILE', '0')}")
    want = lambda part: args.only in (None, part)  # noqa: E731
    bf16 = None
    if want("model") or want("harness"):
        for amp in (False, True):
            if amp is False and args.only == "harness":
                continue
            r = model_steps(amp, args.steps)
            log(f"model step {'bf16' if amp else 'fp32'}: {r['images_per_s']:.1f} images/s "
                f"({r['seconds_per_step'] * 1000:.0f} ms/step), peak GPU memory {r['peak_gb']:.1f} GiB")
            bf16 = r if amp else bf16
            empty_cache()
    if want("harness"):
        harness(bf16)
        empty_cache()
    if want("distinct"):
        distinct_check(600 if DEVICE == "cuda" else 40)
        empty_cache()
    if want("pack") and not args.skip_pack:
        single = bf16 or model_steps(True, args.steps)
        log(f"packing: {args.pack} processes at once (spawn), bf16, {args.steps} steps each ...")
        empty_cache()
        rows = packed(args.pack, args.steps)
        errors = [r["error"] for r in rows if "error" in r]
        if errors:
            log(f"packing: failed: {errors[0]}")
        else:
            span = max(r["end"] for r in rows) - min(r["start"] for r in rows)
            total_ips = sum(BATCH * r["steps"] for r in rows) / span
            each = ", ".join(f"{r['images_per_s']:.0f}" for r in rows)
            log(f"packing: {total_ips:.1f} images/s in total ({each} "
                f"each; peak {max(r['peak_gb'] for r in rows):.1f} GiB each) vs {single['images_per_s']:.1f} alone: "
                f"x{total_ips / single['images_per_s']:.2f}")
    if want("vlm"):
        from baselines.vlm import DEFAULT_MODEL, TINY_MODEL

        empty_cache()
        vlm_check(args.vlm_model or (TINY_MODEL if DEVICE == "cpu" else DEFAULT_MODEL), args.steps)
        empty_cache()
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
