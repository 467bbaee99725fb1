"""IP-IQA's own commands, mounted into `agiqa-bench` through the `agiqa_bench.commands` entry point.

    agiqa-bench pretrain image2prompt --diffusiondb DIR --out CKPT

The harness's CLI knows no method: it calls `register(app, groups)` of every entry point in the
group (`groups["pretrain"]` is the `pretrain` sub-command).  Model code is imported inside the
commands, so listing the CLI's help stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from agiqa_bench.console import console, err_console, friendly


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Add `image2prompt` to `pretrain`."""
    groups["pretrain"].command("image2prompt")(friendly(image2prompt))


def image2prompt(
    diffusiondb: Path = typer.Option(..., "--diffusiondb", help="DiffusionDB folder: part-XXXXXX/ folders and/or part-XXXXXX.zip files."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (for --set ipiqa.image2prompt=CKPT)."),
    clip_model: str = typer.Option("RN50-quickgelu", "--clip-model", help="open_clip architecture (or agiqa-tiny-rn / agiqa-tiny-vit)."),
    pretrained: str = typer.Option("openai", "--pretrained", help="open_clip tag, checkpoint file, or \"\" for random weights."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input side in pixels (default: the model's native size)."),
    threshold: float = typer.Option(0.35, "--threshold", help="Keep pairs whose initial image-prompt cosine is at least this."),
    epochs: int = typer.Option(1, "--epochs", help="Passes over the kept pairs."),
    batch_size: int = typer.Option(32, "--batch-size", help="Pairs per update (and per filter batch)."),
    lr: float = typer.Option(1e-5, "--lr", help="AdamW learning rate (cosine decay, short warm-up)."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="AdamW weight decay."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    max_pairs: Optional[int] = typer.Option(None, "--max-pairs", help="Read at most this many readable pairs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data order (and of random weights)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Image-decoding threads (default: up to 8)."),
    save_every: int = typer.Option(1000, "--save-every", help="Steps between resume states."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo a finished run whose checkpoint exists."),
):
    """Image2Prompt: train CLIP's image encoder to predict its prompt's embedding (IP-IQA).

    Re-running the same command after an interruption resumes from OUT.state.pt.
    """
    from ipiqa.image2prompt import pretrain_image2prompt

    result = pretrain_image2prompt(
        diffusiondb, out, clip_model=clip_model, pretrained=pretrained, image_size=image_size, threshold=threshold,
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, device=device, max_pairs=max_pairs,
        seed=seed, workers=workers, save_every=save_every, overwrite=overwrite,
        log=lambda line: err_console.print(line, highlight=False),
    )
    console.print(summary_table(result))


def summary_table(result: dict) -> Table:
    fmt = lambda v: "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    table = Table(title="Image2Prompt pretraining", show_header=False)
    skipped = result["skipped"]
    rows = [
        ("checkpoint", result["out"]),
        ("resumed", fmt(result["resumed"])),
        ("pairs seen / kept", f"{result['pairs_seen']} / {result['pairs_kept']}"),
        ("skipped", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in skipped.items())),
        ("steps", fmt(result["steps"])),
        ("loss first / last epoch", f"{fmt(result['first_epoch_loss'])} / {fmt(result['final_loss'])}"),
        (f"mean cosine before / after ({result['eval_pairs']} pairs)",
         f"{fmt(result['mean_cosine_before'])} / {fmt(result['mean_cosine_after'])}"),
        ("images/s (training)", fmt(result["images_per_second"])),
        ("seconds", f"{result['seconds']:.1f}"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table
