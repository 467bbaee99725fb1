"""Contrastive pretraining of a small CLIP on a caption corpus (the synthetic CLIP world).

Offline, CLIP-based methods only have random weights.  `pretrain_clip` trains
a small open_clip model from scratch on a corpus in DiffusionDB's layout (in
practice the SynthAGIQA caption corpus of `agiqa_bench.synthetic.corpus`),
so that its text encoder knows the words of SynthAGIQA's prompts and its image
encoder sees what they describe.  IP-IQA's prompt stream can then notice when
an image does not show its prompt.

What it does
------------
- Model: `load_clip(model, "")` (open_clip's own random initialisation) after
  `torch.manual_seed(seed)`; trained in full (both towers, logit scale).
- Data: every pair of the corpus (`iter_diffusiondb`, corpus order: parts in
  numeric order, files sorted) decoded once into one uint8 tensor (N, 3, S, S),
  S = the model's native image size (bicubic resize when the corpus differs);
  captions tokenised once with `tokenizer_for(model)`.  The *last* `holdout`
  pairs are held out for evaluation, the rest are trained on.
- Objective: open_clip's `ClipLoss` (symmetric InfoNCE over the batch) with
  CLIP's learnable temperature (logit scale initialised to log(1/0.07) and
  clamped to at most log(100) after every step).
- Optimiser: AdamW (betas 0.9/0.98, eps 1e-6, as in CLIP); weight decay on
  weight matrices/convolutions/embeddings only (not on biases, norms, the logit
  scale), as open_clip's training script does; learning rate: linear warm-up
  over `warmup` steps (default 5 % of all steps), then cosine decay to 0.
- Batches: a fresh permutation per epoch from `torch.Generator` seeded with
  (seed, epoch); incomplete last batch dropped; random horizontal flips (the
  captions never mention left/right).  BatchNorm layers in train mode.
- Evaluation on the held-out pairs (eval mode): the contrastive loss before
  and after training (in batches of `batch_size`), the retrieval accuracies
  (`retrieval_accuracy`) and the single-attribute mismatch accuracies
  (`mismatch_accuracy`, when the corpus json carries specs).

Output: `torch.save` of `model.state_dict()` with floating tensors in fp16
(BatchNorm counters stay int64), written atomically; it loads with
`open_clip.create_model(model, pretrained=str(out))` and `load_clip(model,
str(out))` (open_clip copies fp16 values into the fp32 model).  Next to it,
`out.with_suffix(".json")`: settings, corpus parameters (its `corpus.json`),
time, losses, held-out accuracies, the sha256 of the checkpoint.

Deterministic on the CPU for a given seed and torch thread count.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from agiqa_bench.device import resolve_device
from agiqa_bench.errors import ConfigError, DataError
from agiqa_bench.training import warmup_cosine

FORMAT = "agiqa-bench/clip-pretrain@1"


# -- data ------------------------------------------------------------------------------------
def load_pairs(corpus: str | Path, image_size: int):
    """(uint8 tensor (N, 3, S, S), captions, metas) of every readable pair of `corpus`, in corpus order."""
    import torch

    from agiqa_bench.datasets.diffusiondb import SkipCounts, iter_diffusiondb
    from agiqa_bench.images import to_pixels

    skips = SkipCounts()
    captions: list[str] = []
    metas: list[dict] = []
    chunks: list[np.ndarray] = []
    buffer: list[np.ndarray] = []
    for pair in iter_diffusiondb(corpus, skips=skips):
        buffer.append(to_pixels(pair.image, image_size))
        captions.append(pair.prompt)
        metas.append(pair.meta)
        if len(buffer) == 1024:
            chunks.append(np.stack(buffer))
            buffer = []
    if buffer:
        chunks.append(np.stack(buffer))
    if not captions:
        raise DataError(f"no readable image-caption pair in {corpus}")
    images = torch.from_numpy(np.concatenate(chunks)).permute(0, 3, 1, 2).contiguous()
    return images, captions, metas, skips


def _corpus_params(corpus: Path) -> dict | None:
    try:
        return json.loads((corpus / "corpus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# -- evaluation ------------------------------------------------------------------------------
def _encode(model, images_u8, tokens, batch: int = 256):
    """L2-normalised (image features, text features), eval mode, no gradient."""
    import torch
    import torch.nn.functional as F

    from agiqa_bench.batches import normalise

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    img, txt = [], []
    with torch.no_grad():
        for i in range(0, len(images_u8), batch):
            img.append(model.encode_image(normalise(images_u8[i:i + batch].to(device))).float().cpu())
        for i in range(0, len(tokens), batch):
            txt.append(model.encode_text(tokens[i:i + batch].to(device)).float().cpu())
    model.train(was_training)
    img = F.normalize(torch.cat(img), dim=-1) if img else None
    txt = F.normalize(torch.cat(txt), dim=-1) if txt else None
    return img, txt


def retrieval_accuracy(model, images_u8, tokens, chunk: int = 100) -> dict:
    """Top-1 image->text and text->image retrieval among candidate sets of `chunk` pairs.

    The pairs are cut into consecutive chunks of `chunk` (a remainder smaller than
    `chunk` is left out, unless there are fewer than `chunk` pairs in all: then they
    form one chunk).  In a chunk, image i retrieves the caption with the highest
    cosine; it is a hit when that caption's tokens equal caption i's tokens (so a
    duplicate caption in the chunk counts as right), likewise text->image.
    Chance is about 1 / chunk.
    """
    import torch

    tokens = torch.as_tensor(tokens)
    n = len(tokens)
    if n != len(images_u8):
        raise ValueError(f"{len(images_u8)} images but {n} token rows")
    if n == 0:
        raise ValueError("no pairs to evaluate")
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    size = min(chunk, n)
    used = (n // size) * size
    img, txt = _encode(model, images_u8[:used], tokens[:used])
    i2t_hits = t2i_hits = 0
    for start in range(0, used, size):
        sl = slice(start, start + size)
        sim = img[sl] @ txt[sl].T  # (image, text)
        tok = tokens[sl]
        same = (tok[:, None, :] == tok[None, :, :]).all(-1)  # caption a == caption b
        idx = torch.arange(size)
        i2t_hits += int(same[idx, sim.argmax(dim=1)].sum())
        t2i_hits += int(same[sim.argmax(dim=0), idx].sum())
    return {
        "image_to_text": i2t_hits / used,
        "text_to_image": t2i_hits / used,
        "chunk": size,
        "n_chunks": used // size,
        "pairs": used,
        "chance": 1.0 / size,
    }


ATTRIBUTES = ("colour", "shape", "count", "background", "style")


def mismatch_accuracy(model, images_u8, specs: list[dict | None], tokenizer) -> dict:
    """How often an image is closer to its own caption than to each one-attribute-altered caption.

    For every image with a spec (count >= 1) and every attribute (colour among the
    colours that contrast with the background, shape, count 1-4, background among
    those the colour contrasts with, style), the caption is rebuilt with each other
    value of that attribute; the image "detects" that mismatch when its cosine to
    the true caption is higher.  Returns the mean detection rate per attribute and
    overall (chance 0.5): the skill IP-IQA's prompt stream relies on.
    """
    import torch

    from agiqa_bench.synthetic.world import (
        BACKGROUND_COLOURS,
        SHAPES,
        STYLES,
        PromptSpec,
        colours_on,
    )

    rows = [(i, s) for i, s in enumerate(specs) if s and int(s.get("count", 0)) >= 1]
    if not rows:
        return {}
    img, _ = _encode(model, images_u8[[i for i, _ in rows]], torch.zeros(0, 1, dtype=torch.long))
    texts: list[str] = []
    owners: list[tuple[int, str | None]] = []  # (row, attribute or None for the true caption)
    for r, (_, s) in enumerate(rows):
        spec = PromptSpec(int(s["count"]), s["colour"], s["shape"], s["background"], s.get("style", ""))
        texts.append(spec.text)
        owners.append((r, None))
        alternatives = {
            "colour": [c for c in colours_on(spec.background) if c != spec.colour],
            "shape": [x for x in SHAPES if x != spec.shape],
            "count": [c for c in (1, 2, 3, 4) if c != spec.count],
            "background": [b for b in BACKGROUND_COLOURS if b != spec.background and spec.colour in colours_on(b)],
            "style": [x for x in STYLES if x != spec.style],
        }
        for attr, values in alternatives.items():
            for v in values:
                texts.append(PromptSpec(**{**spec.__dict__, attr: v}).text)
                owners.append((r, attr))
    _, txt = _encode(model, torch.zeros(0, 3, 1, 1, dtype=torch.uint8), tokenizer(texts))
    sims = (img[[r for r, _ in owners]] * txt).sum(-1)
    true_sim = {r: float(sims[k]) for k, (r, a) in enumerate(owners) if a is None}
    hits = {a: [] for a in ATTRIBUTES}
    for k, (r, a) in enumerate(owners):
        if a is not None:
            hits[a].append(float(sims[k]) < true_sim[r])
    out = {a: float(np.mean(v)) for a, v in hits.items() if v}
    out["all"] = float(np.mean([x for v in hits.values() for x in v]))
    out["images"] = len(rows)
    return out


def contrastive_loss(model, images_u8, tokens, batch_size: int) -> float:
    """Mean open_clip ClipLoss over consecutive batches (eval mode, current logit scale)."""
    import torch
    from open_clip.loss import ClipLoss

    from agiqa_bench.batches import normalise

    loss_fn = ClipLoss()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(tokens), batch_size):
            x = normalise(images_u8[i:i + batch_size].to(device))
            t = tokens[i:i + batch_size].to(device)
            if len(t) < 2:
                continue
            imf = torch.nn.functional.normalize(model.encode_image(x), dim=-1)
            txf = torch.nn.functional.normalize(model.encode_text(t), dim=-1)
            total += float(loss_fn(imf, txf, model.logit_scale.exp())) * len(t)
            count += len(t)
    model.train(was_training)
    return total / max(count, 1)


# -- training --------------------------------------------------------------------------------
def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_fp16(state_dict: dict, out: Path) -> None:
    """`torch.save` of the state dict with floating tensors in fp16, atomically (temporary file + rename).

    The bytes depend only on the tensors (not on the file name)."""
    import io

    import torch

    half = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
            for k, v in state_dict.items()}
    # serialise to memory: torch names the archive's inner folder after the file name, so writing
    # through a buffer keeps the bytes independent of the output path
    buffer = io.BytesIO()
    torch.save(half, buffer)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def pretrain_clip(
    corpus: str | Path,
    out: str | Path,
    *,
    model: str = "agiqa-tiny-rn",
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 2e-3,
    weight_decay: float = 0.1,
    warmup: int | None = None,
    flip: bool = True,
    seed: int = 0,
    holdout: int = 1000,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> dict:
    """Contrastively pretrain `model` from random weights on `corpus`; write `out` (+ .json). Returns the summary."""
    import open_clip
    import torch
    from open_clip.loss import ClipLoss

    from agiqa_bench.batches import normalise
    from agiqa_bench.clip import load_clip, tokenizer_for

    corpus, out = Path(corpus), Path(out)
    if epochs < 1 or batch_size < 2:
        raise ConfigError("epochs must be >= 1 and batch_size >= 2")
    if holdout < 0:
        raise ConfigError("holdout must be >= 0")
    say = log or (lambda line: None)
    device = resolve_device(device)
    start = time.perf_counter()

    torch.manual_seed(seed)
    clip = load_clip(model, "")
    image_size = clip.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else int(image_size)
    tokenizer = tokenizer_for(model)

    images, captions, metas, skips = load_pairs(corpus, image_size)
    tokens = tokenizer(captions)
    n = len(captions)
    if holdout >= n - 1:
        raise ConfigError(f"holdout={holdout} leaves fewer than 2 training pairs of the corpus's {n}")
    n_train = n - holdout
    batch_size = min(batch_size, n_train)
    train_img, train_tok = images[:n_train], tokens[:n_train]
    eval_img, eval_tok = images[n_train:], tokens[n_train:]
    eval_specs = [m.get("spec") for m in metas[n_train:]]
    load_seconds = time.perf_counter() - start
    say(f"clip: {n} pairs ({n_train} train, {holdout} held out), {image_size} px, read in {load_seconds:.1f} s")

    clip = clip.to(device).train()
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(1 / 0.07))
    loss_fn = ClipLoss()
    optimizer = torch.optim.AdamW(_param_groups(clip, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    steps_per_epoch = n_train // batch_size
    total_steps = steps_per_epoch * epochs
    warmup_steps = max(1, round(0.05 * total_steps)) if warmup is None else max(1, int(warmup))
    eval_loss_before = contrastive_loss(clip, eval_img, eval_tok, batch_size) if holdout >= 2 else None

    step = 0
    epoch_losses: list[float] = []
    train_start = time.perf_counter()
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
        order = torch.randperm(n_train, generator=gen)
        flips = torch.rand(n_train, generator=gen) < 0.5 if flip else None
        running = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            x = train_img[idx]
            if flips is not None:
                f = flips[idx]
                x = torch.where(f[:, None, None, None], x.flip(-1), x)
            x = normalise(x.to(device))
            t = train_tok[idx].to(device)
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine(step, total_steps, lr, warmup_steps)
            output = clip(x, t)
            if isinstance(output, dict):
                output = (output["image_features"], output["text_features"], output["logit_scale"])
            image_features, text_features, logit_scale = output[:3]
            loss = loss_fn(image_features, text_features, logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                clip.logit_scale.clamp_(0, math.log(100))
            running += float(loss.detach())
            step += 1
        epoch_losses.append(running / max(1, steps_per_epoch))
        say(f"clip: epoch {epoch + 1}/{epochs}: loss {epoch_losses[-1]:.4f}, logit scale "
            f"{float(clip.logit_scale.detach().exp()):.1f}, {time.perf_counter() - train_start:.0f} s")
    train_seconds = time.perf_counter() - train_start

    result: dict = {
        "format": FORMAT,
        "out": str(out),
        "model": model,
        "settings": {
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
            "warmup_steps": warmup_steps, "schedule": "linear warm-up, cosine decay to 0",
            "optimizer": "AdamW(betas=(0.9, 0.98), eps=1e-6), no decay on biases/norms/logit_scale",
            "loss": "open_clip.loss.ClipLoss, learnable logit scale (init 1/0.07, max 100)",
            "flip": flip, "seed": seed, "holdout": holdout, "device": device, "image_size": image_size,
            "torch_threads": torch.get_num_threads(),
        },
        "corpus": str(corpus),
        "corpus_params": _corpus_params(corpus),
        "pairs": n, "train_pairs": n_train, "held_out_pairs": holdout,
        "skipped": skips.as_dict(),
        "steps": total_steps,
        "epoch_losses": epoch_losses,
        "first_loss": epoch_losses[0] if epoch_losses else None,
        "final_loss": epoch_losses[-1] if epoch_losses else None,
        "held_out_loss_before": eval_loss_before,
        "logit_scale": float(clip.logit_scale.detach().exp()),
    }
    if holdout >= 2:
        result["held_out_loss_after"] = contrastive_loss(clip, eval_img, eval_tok, batch_size)
        result["retrieval"] = retrieval_accuracy(clip, eval_img, eval_tok, chunk=100)
        result["mismatch"] = mismatch_accuracy(clip, eval_img, eval_specs, tokenizer)
    result["load_seconds"] = load_seconds
    result["train_seconds"] = train_seconds
    result["seconds"] = time.perf_counter() - start
    result["versions"] = {"torch": torch.__version__, "open_clip": open_clip.__version__,
                          "python": platform.python_version()}

    out.parent.mkdir(parents=True, exist_ok=True)
    save_fp16(clip.state_dict(), out)
    result["sha256"] = _sha256(out)
    result["bytes"] = out.stat().st_size
    report = out.with_suffix(".json")
    tmp = report.with_name(f".{report.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, report)
    result["report"] = str(report)
    say(f"clip: wrote {out} ({result['bytes'] / 1e6:.1f} MB, sha256 {result['sha256'][:16]}...)")
    return result


__all__ = ["contrastive_loss", "load_pairs", "mismatch_accuracy", "pretrain_clip", "retrieval_accuracy"]
