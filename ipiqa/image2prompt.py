"""Image2Prompt incremental pretraining of CLIP's image encoder (IP-IQA, Qu et al., ICME 2024).

The idea
--------
Before the IQA fine-tuning, IP-IQA teaches CLIP's image encoder to predict the
prompt an image was generated from: for image-prompt pairs from DiffusionDB,
the image embedding f_img(I) is pulled towards the embedding of its prompt under
the *frozen* CLIP text encoder h_txt(T), with

    loss = mean over the batch of  1 - cos(f_img(I), h_txt(T))

(the reference code's `nn.CosineEmbeddingLoss` with target +1).  Only pairs that
the *initial* CLIP already finds related are used: image-text cosine >= 0.35.

What `pretrain_image2prompt` does
---------------------------------
1. Filter pass.  The initial CLIP (eval mode, no gradient, fp32) encodes every
   image and prompt of the corpus in batches, streaming part by part.  Pairs with
   cosine >= threshold are kept: their (part, file, cosine) go to
   `OUT.index.jsonl` (one JSON object per line, in corpus order) and the
   normalised text embeddings of their prompts to `OUT.text_emb.npy` (float32,
   one row per index line).  Training therefore never runs the text encoder
   again, and no image is ever held in memory beyond the current batch.
2. Training.  Only `clip.visual` is trained (the text tower is not even in the
   optimizer), images are read back from the corpus batch by batch.
   Preprocessing: bicubic square resize to `image_size` (aspect ratio not kept,
   as in the rest of this project), optional horizontal flip, CLIP mean/std
   normalisation.  BatchNorm layers (ResNet CLIPs) are in train mode.
   Order of an epoch: the parts in a shuffled order, then the kept pairs in that
   order shuffled inside consecutive windows of `shuffle_buffer` pairs; it is a
   pure function of (seed, epoch), so a resumed run sees the same order.
3. Resume.  `OUT.state.pt` (written atomically: temporary file + rename) holds
   the configuration, the filter-pass progress (saved after every part; done
   flag), the visual weights, the optimizer state, the step, the running losses
   and the torch RNG state.  It is written every `save_every` steps, at each
   epoch end and when `stop_after_steps` ends a call.  Calling again with the
   same arguments continues where it stopped and, on the CPU, ends with the same
   weights as an uninterrupted run.  An interrupted filter pass continues after
   the last finished part.
4. Output.  `torch.save` of a dict (format `agiqa-bench/image2prompt@1`) with
   `visual` (the image encoder's state dict), `clip_model`, `pretrained`,
   `image_size`, `threshold`, `pairs_seen`, `pairs_kept`, `epochs` and the other
   settings, written atomically; the state file is then removed (the index and
   the embeddings stay, as a record of the kept pairs).  This is what
   `ipiqa.model.load_image2prompt` reads.  The positional embedding of the
   visual tower is always stored at the architecture's *native* grid, so the
   file loads into `load_clip(clip_model, ...)`; when training ran at another
   `image_size` it is resized there for training and back (bicubic) for saving,
   and the trained-size one is also kept under `positional_embedding_at_image_size`.

Where things are: the DiffusionDB reader (layout, skips, caps against hostile zips
and decompression bombs) is `agiqa_bench.datasets.diffusiondb`; the filter pass and
the kept pairs on disk are `ipiqa.image2prompt_data`; this module holds the
objective, the training loop with its resume state, and `pretrain_image2prompt`.

Defaults: what the paper states and what we chose
-------------------------------------------------
From the paper / reference code: DiffusionDB pairs, the 0.35 cosine threshold
under the initial CLIP, the loss 1 - cos against the frozen text encoder, the
RN50 CLIP (`RN50-quickgelu` / `openai` here).
Our choices (the paper and code do not publish them): AdamW, lr 1e-5, weight
decay 0, batch 32, 1 epoch, cosine decay to 0 with a linear warm-up of
min(1000, 5 % of the steps), no flip, the model's native input size (224 for
RN50), filtering at the training input size, fp32 filtering and bf16 autocast
for training on CUDA, the shuffled order described above.

UNVERIFIED about the paper's setup: which DiffusionDB subset (2M or large; how
many parts) was used and how many pairs survived the filter; the image
resolution and preprocessing used for filtering and for training; whether the
threshold applies to CLIP's normalised embeddings exactly as here (it is the
usual meaning of "cosine"); optimizer, learning rate, schedule, batch size,
number of epochs or steps; whether BatchNorm statistics were updated; whether
the attention pooling was trained with the rest of the image encoder (here it
is: all of `clip.visual`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from agiqa_bench.clip.geometry import grid_for, native_image_size, pos_embed_key, resized_pos_embed, set_image_size
from agiqa_bench.datasets.diffusiondb import ReaderCache, find_parts
from agiqa_bench.device import resolve_device
from agiqa_bench.errors import ConfigError, DataError
from agiqa_bench.training import warmup_cosine
from ipiqa.image2prompt_data import (
    KeptPairs,
    Paths,
    atomic_torch_save,
    epoch_order,
    iter_batches,
    new_filter_progress,
    run_filter,
    to_input,
)

FORMAT = "agiqa-bench/image2prompt@1"
STATE_FORMAT = "agiqa-bench/image2prompt-state@1"


def build_clip(clip_model: str, pretrained: str, image_size: int | None, seed: int):
    """(CLIP at `image_size`, native size).  Random weights (pretrained "") are drawn from `seed`."""
    import torch

    torch.manual_seed(seed)
    clip = load_clip(clip_model, pretrained)
    native = native_image_size(clip.visual)
    size = image_size or native
    grid_for(clip.visual, size)
    if size != native:
        set_image_size(clip.visual, size)
    return clip, native


def load_clip(model: str, pretrained: str):
    """`agiqa_bench.clip.load_clip` (a name of its own so tests can watch the model it makes)."""
    from agiqa_bench.clip import load_clip as load

    return load(model, pretrained)


def load_state(path: Path) -> dict | None:
    import torch

    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged state file: say so, do not guess
        raise DataError(f"cannot read the resume state {path}: {exc}; delete it to start over") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise DataError(f"{path} is not an Image2Prompt resume state; delete it to start over")
    return state


def check_same_config(state: dict, config: dict, path: Path) -> None:
    """ConfigError unless the saved run had the same settings as this call."""
    differ = sorted(k for k in set(config) | set(state["config"]) if state["config"].get(k) != config.get(k))
    if differ:
        shown = ", ".join(f"{k}: saved {state['config'].get(k)!r}, now {config.get(k)!r}" for k in differ)
        raise ConfigError(f"{path} holds an interrupted run with other settings ({shown}); "
                          "repeat that run's options to resume it, or delete the file to start over")


# -- training ---------------------------------------------------------------------------------
def flips_for(seed: int, step: int, n: int, enabled: bool):
    """Horizontal flips of update `step`: a pure function of (seed, step), so resuming repeats them."""
    import torch

    if not enabled:
        return None
    gen = torch.Generator().manual_seed((seed * 1_000_003 + step * 7919) % (2**63 - 1))
    return torch.rand(n, generator=gen) < 0.5


def image2prompt_loss(image_features, text_emb):
    """mean(1 - cos(f_img(I), h_txt(T))): CosineEmbeddingLoss with target +1."""
    import torch.nn.functional as F

    return (1.0 - F.cosine_similarity(image_features.float(), text_emb, dim=-1)).mean()


def train_step(visual, optimizer, images, text_emb, amp: bool) -> float:
    """One AdamW update of the image encoder; returns the batch loss."""
    import torch

    visual.train()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        features = visual(images)
    loss = image2prompt_loss(features, text_emb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def mean_cosine(visual, kept: KeptPairs, rows: np.ndarray, readers, size: int, batch_size: int, device: str, pool) -> float:
    """Mean cos(f_img, h_txt) of `rows` with the image encoder in eval mode."""
    import torch

    visual.eval()
    total = 0.0
    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    with torch.inference_mode():
        for batch_rows, pixels in iter_batches(kept, batches, readers, size, pool):
            target = torch.from_numpy(np.asarray(kept.text_emb[batch_rows])).to(device)
            feats = visual(to_input(pixels, device)).float()
            total += float(torch.nn.functional.cosine_similarity(feats, target, dim=-1).sum())
    return total / max(1, len(rows))


def new_train_progress() -> dict:
    return {"step": 0, "epoch_loss_sum": 0.0, "epoch_loss_count": 0, "epoch_losses": [], "train_seconds": 0.0,
            "train_images": 0}


class Log:
    """Progress messages to `log`, at most one every `every` seconds unless forced."""

    def __init__(self, log: Callable[[str], None] | None, every: float = 15.0):
        self.log, self.every, self.last = log, every, 0.0

    def maybe(self, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.log is not None and (force or now - self.last >= self.every):
            self.log(message)
            self.last = now


def warmup_steps_for(total: int, warmup_steps: int | None) -> int:
    return min(1000, total // 20) if warmup_steps is None else max(0, warmup_steps)


def output_visual_state(visual, native: int, image_size: int) -> tuple[dict, object]:
    """(state dict with the positional embedding at the native grid, trained-size embedding or None)."""
    state = {k: v.detach().cpu().clone() for k, v in visual.state_dict().items()}
    if image_size == native:
        return state, None
    key = pos_embed_key(visual)
    trained = state[key]
    state[key] = resized_pos_embed(visual, native).cpu()
    return state, trained


def pretrain_image2prompt(
    diffusiondb: str | Path,
    out: str | Path,
    *,
    clip_model: str = "RN50-quickgelu",
    pretrained: str = "openai",
    image_size: int | None = None,
    threshold: float = 0.35,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 1e-5,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    warmup_steps: int | None = None,
    hflip: bool = False,
    shuffle_buffer: int = 4096,
    device: str = "cpu",
    max_pairs: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    save_every: int = 1000,
    eval_pairs: int | None = 2048,
    stop_after_steps: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Image2Prompt pretraining of CLIP's image encoder on a DiffusionDB folder (see the module docstring).

    Args:
        diffusiondb: DiffusionDB root (part folders and/or zips).
        out: checkpoint to write (also names `OUT.index.jsonl`, `OUT.text_emb.npy`, `OUT.state.pt`).
        clip_model, pretrained: the CLIP to start from (open_clip name; tag, file or "" for random
            weights drawn from `seed`).
        image_size: training (and filtering) input side; None: the model's native size.
        threshold: keep pairs whose initial image-text cosine is >= this.
        epochs, batch_size, lr, weight_decay, schedule ("cosine" | "constant"), warmup_steps (None:
            min(1000, 5 % of the steps)), hflip, shuffle_buffer, seed: training settings.
        device: cpu, cuda[:N] or auto.
        max_pairs: stop the filter pass after this many readable pairs (None: all).
        workers: image-decoding threads (None: up to 8; 0: decode in this thread).
        save_every: steps between resume states.
        eval_pairs: mean cosine before/after is measured on the first this many kept pairs (None: all).
        stop_after_steps: end this call (saving the resume state) after this many updates; 0 stops
            right after the filter pass.  The output is then not written ("finished": False).
        overwrite: replace an existing `out` (otherwise an existing one is an error, as a finished run).
        log: receives progress lines.
    Returns:
        summary dict: pairs_seen, pairs_kept, skipped, steps, mean_cosine_before/after, first/final
        epoch loss, seconds, images_per_second, resumed, finished, out.
    """
    started = time.monotonic()
    root, out = Path(diffusiondb).expanduser().resolve(), Path(out).expanduser()
    paths = Paths(out)
    check_settings(epochs, batch_size, lr, schedule, threshold)
    device = resolve_device(device)
    find_parts(root)  # a clear error before any model is loaded
    state = load_state(paths.state)
    if state is None and out.exists() and not overwrite:
        raise ConfigError(f"{out} exists (a finished Image2Prompt run); pass overwrite=True (--overwrite) to redo it")
    clip, native = build_clip(clip_model, pretrained, image_size, seed)
    size = image_size or native
    config = {"diffusiondb": str(root), "clip_model": clip_model, "pretrained": pretrained or "", "image_size": size,
              "threshold": float(threshold), "epochs": epochs, "batch_size": batch_size, "lr": float(lr),
              "weight_decay": float(weight_decay), "schedule": schedule, "warmup_steps": warmup_steps,
              "hflip": hflip, "shuffle_buffer": shuffle_buffer, "max_pairs": max_pairs, "seed": seed}
    resumed = state is not None
    if state is None:
        state = {"format": STATE_FORMAT, "config": config, "filter": new_filter_progress(), "train": None}
    else:
        check_same_config(state, config, paths.state)
    out.parent.mkdir(parents=True, exist_ok=True)
    logger = Log(log)
    save = lambda: atomic_torch_save(state, paths.state)  # noqa: E731
    n_workers = min(8, os.cpu_count() or 1) if workers is None else workers
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n_workers) if n_workers > 0 else _NoPool() as pool:
        pool = pool if n_workers > 0 else None
        if not state["filter"]["done"]:
            run_filter(clip, clip_model, root, paths, state, size, batch_size, max_pairs, threshold, device, pool,
                       save, logger)
        visual = clip.visual.to(device)
        del clip  # the text tower is not needed any more: training uses the stored text embeddings
        kept = KeptPairs(paths)
        return train_and_save(visual, kept, root, paths, state, native, device, pool, save, logger,
                              save_every=save_every, eval_pairs=eval_pairs, stop_after_steps=stop_after_steps,
                              resumed=resumed, started=started)


class _NoPool:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def check_settings(epochs: int, batch_size: int, lr: float, schedule: str, threshold: float) -> None:
    if epochs < 0 or batch_size < 1:
        raise ConfigError(f"epochs must be >= 0 and batch_size >= 1, got {epochs} and {batch_size}")
    if lr <= 0:
        raise ConfigError(f"lr must be positive, got {lr}")
    if schedule not in ("cosine", "constant"):
        raise ConfigError(f"schedule must be cosine or constant, got {schedule!r}")
    if not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold is a cosine and must lie in [-1, 1], got {threshold}")


class Trainer:
    """The training phase: updates of `visual` on the kept pairs, with resume states."""

    def __init__(self, visual, kept: KeptPairs, state: dict, device: str, save: Callable[[], None]):
        import torch

        self.visual, self.kept, self.state, self.device, self._save = visual, kept, state, device, save
        self.config = state["config"]
        for p in visual.parameters():
            p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(visual.parameters(), lr=self.config["lr"],
                                           weight_decay=self.config["weight_decay"])
        if state["train"] is None:
            state["train"] = new_train_progress()
        elif "visual" in state:
            visual.load_state_dict(state["visual"])
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"])
        self.progress = state["train"]
        self.per_epoch = math.ceil(len(kept) / self.config["batch_size"])
        self.total = self.config["epochs"] * self.per_epoch
        self.warmup = warmup_steps_for(self.total, self.config["warmup_steps"])

    @property
    def done(self) -> bool:
        return self.progress["step"] >= self.total

    def save(self) -> None:
        import torch

        self.state["visual"] = self.visual.state_dict()
        self.state["optimizer"] = self.optimizer.state_dict()
        self.state["rng"] = torch.get_rng_state()
        self._save()

    def remaining_batches(self) -> tuple[int, list[np.ndarray]]:
        """(epoch, batches of rows left in it) from the current step."""
        bs = self.config["batch_size"]
        epoch, first = divmod(self.progress["step"], self.per_epoch)
        order = epoch_order(self.kept, self.config["seed"], epoch, self.config["shuffle_buffer"])
        return epoch, [order[i * bs:(i + 1) * bs] for i in range(first, self.per_epoch)]

    def update(self, rows: np.ndarray, pixels: list[np.ndarray]) -> float:
        """One optimisation step on a batch; returns its loss."""
        import torch

        step, cfg = self.progress["step"], self.config
        for group in self.optimizer.param_groups:
            group["lr"] = warmup_cosine(step, self.total, cfg["lr"], self.warmup, cfg["schedule"])
        images = to_input(pixels, self.device, flips_for(cfg["seed"], step, len(rows), cfg["hflip"]))
        target = torch.from_numpy(np.asarray(self.kept.text_emb[rows])).to(self.device)
        loss = train_step(self.visual, self.optimizer, images, target, amp=self.device.startswith("cuda"))
        self.progress["step"] = step + 1
        self.progress["epoch_loss_sum"] += loss * len(rows)
        self.progress["epoch_loss_count"] += len(rows)
        self.progress["train_images"] += len(rows)
        return loss

    def end_epoch_if_due(self) -> bool:
        p = self.progress
        if p["step"] % self.per_epoch:
            return False
        p["epoch_losses"].append(p["epoch_loss_sum"] / max(1, p["epoch_loss_count"]))
        p["epoch_loss_sum"], p["epoch_loss_count"] = 0.0, 0
        return True

    def run(self, readers: ReaderCache, pool, logger: Log, save_every: int, stop_after_steps: int | None) -> bool:
        """Train until the end (True) or until `stop_after_steps` updates were made in this call (False)."""
        if stop_after_steps == 0:
            self.save()
            return self.done
        steps_here = 0
        while not self.done:
            epoch, batches = self.remaining_batches()
            tick = time.monotonic()
            for rows, pixels in iter_batches(self.kept, batches, readers, self.config["image_size"], pool):
                loss = self.update(rows, pixels)
                self.progress["train_seconds"] += time.monotonic() - tick  # image loading included
                steps_here += 1
                epoch_end = self.end_epoch_if_due()
                logger.maybe(f"train: step {self.progress['step']}/{self.total} (epoch {epoch + 1}), "
                             f"loss {loss:.4f}", force=epoch_end)
                stop = stop_after_steps is not None and steps_here >= stop_after_steps and not self.done
                if epoch_end or stop or self.progress["step"] % max(1, save_every) == 0:
                    self.save()
                if stop:
                    return False
                tick = time.monotonic()
        return True


def train_and_save(visual, kept, root, paths, state, native, device, pool, save, logger, *, save_every, eval_pairs,
                   stop_after_steps, resumed, started) -> dict:
    """Train (resuming), then measure, write the checkpoint and remove the resume state."""
    trainer = Trainer(visual, kept, state, device, save)
    readers = ReaderCache(root)
    try:
        if not trainer.run(readers, pool, logger, save_every, stop_after_steps):
            return summary(state, paths, finished=False, resumed=resumed, started=started)
        result = finish(visual, kept, readers, paths, state, native, device, pool, eval_pairs)
    finally:
        readers.close()
    paths.state.unlink(missing_ok=True)
    return summary(state, paths, finished=True, resumed=resumed, started=started, **result)


def finish(visual, kept, readers, paths, state, native, device, pool, eval_pairs) -> dict:
    """Measure the mean cosine after training and write the output checkpoint."""
    config = state["config"]
    rows = np.arange(len(kept) if eval_pairs is None else min(eval_pairs, len(kept)))
    after = mean_cosine(visual, kept, rows, readers, config["image_size"], config["batch_size"], device, pool)
    before = float(kept.cosine[rows].mean())
    weights, trained_pos = output_visual_state(visual, native, config["image_size"])
    filt, progress = state["filter"], state["train"]
    ckpt = {"format": FORMAT, "clip_model": config["clip_model"], "pretrained": config["pretrained"],
            "image_size": config["image_size"], "native_image_size": native, "threshold": config["threshold"],
            "pairs_seen": filt["pairs_seen"], "pairs_kept": filt["pairs_kept"], "epochs": config["epochs"],
            "steps": progress["step"], "settings": dict(config), "epoch_losses": list(progress["epoch_losses"]),
            "mean_cosine_before": before, "mean_cosine_after": after, "eval_pairs": len(rows),
            "skipped": {k: v for k, v in filt["skips"].items() if k != "listed"}, "visual": weights}
    if trained_pos is not None:
        ckpt["positional_embedding_at_image_size"] = trained_pos
    atomic_torch_save(ckpt, paths.out)
    return {"mean_cosine_before": before, "mean_cosine_after": after, "eval_pairs": len(rows)}


def summary(state, paths, *, finished, resumed, started, **extra) -> dict:
    """What a call of `pretrain_image2prompt` did (the numbers of the whole run, resumed parts included)."""
    filt, progress = state["filter"], state["train"]
    losses = progress["epoch_losses"]
    seconds = progress["train_seconds"]
    return {"out": str(paths.out), "finished": finished, "resumed": resumed, "pairs_seen": filt["pairs_seen"],
            "pairs_kept": filt["pairs_kept"], "skipped": {k: v for k, v in filt["skips"].items() if k != "listed"},
            "steps": progress["step"], "first_epoch_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "images_per_second": progress["train_images"] / seconds if seconds > 0 else None,
            "seconds": time.monotonic() - started, "mean_cosine_before": None, "mean_cosine_after": None,
            "eval_pairs": 0, **extra}
