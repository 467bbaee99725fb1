"""`agiqa-bench pretrain ...`: pretraining steps that make weights for the methods.

    agiqa-bench pretrain image2prompt --diffusiondb DIR --out CKPT [options]
    agiqa-bench pretrain clip --corpus DIR --out CKPT [options]
    agiqa-bench pretrain niqe (--images DIR | --synthetic N) --out FILE.mat [options]

Mounted by `agiqa_bench.cli` (`app.add_typer(pretrain_app, name="pretrain")`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from agiqa_bench.console import console, err_console, friendly

pretrain_app = typer.Typer(no_args_is_help=True, help="Pretraining steps: Image2Prompt, a small CLIP on a synthetic caption corpus, NIQE pristine parameters.")


@pretrain_app.callback()
def pretrain_callback():
    """Pretraining steps: Image2Prompt, a small CLIP on a synthetic caption corpus."""


@pretrain_app.command("clip")
@friendly
def clip(
    corpus: Path = typer.Option(..., "--corpus", help="Caption corpus in DiffusionDB's layout (e.g. from `agiqa-bench synth corpus`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (fp16 state dict; for --set ipiqa.pretrained=CKPT)."),
    model: str = typer.Option("agiqa-tiny-rn", "--model", help="open_clip architecture, trained from random weights."),
    epochs: int = typer.Option(10, "--epochs", help="Passes over the training pairs."),
    batch_size: int = typer.Option(256, "--batch-size", help="Pairs per update (the contrastive batch)."),
    lr: float = typer.Option(2e-3, "--lr", help="AdamW peak learning rate (warm-up, cosine decay)."),
    weight_decay: float = typer.Option(0.1, "--weight-decay", help="AdamW weight decay (weight matrices only)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights, data order and flips."),
    holdout: int = typer.Option(1000, "--holdout", help="The corpus's last N pairs are held out for evaluation."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda[:N] or auto."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (results depend on it; default: torch's)."),
):
    """Contrastively pretrain a small CLIP from scratch (open_clip's ClipLoss) on a caption corpus.

    Writes CKPT (fp16 state dict, loads with load_clip(model, CKPT)) and CKPT.json (settings, held-out retrieval).
    """
    from agiqa_bench.synthetic.clip_pretrain import pretrain_clip

    if threads:
        import torch

        torch.set_num_threads(threads)
    result = pretrain_clip(
        corpus, out, model=model, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        seed=seed, holdout=holdout, device=device, log=lambda line: err_console.print(line, highlight=False),
    )
    console.print(clip_summary_table(result))


def clip_summary_table(result: dict) -> Table:
    fmt = lambda v: "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    table = Table(title="CLIP pretraining", show_header=False)
    rows = [
        ("checkpoint", f"{result['out']} ({result['bytes'] / 1e6:.1f} MB)"),
        ("sha256", result["sha256"]),
        ("model", result["model"]),
        ("pairs train / held out", f"{result['train_pairs']} / {result['held_out_pairs']}"),
        ("steps", fmt(result["steps"])),
        ("train loss first / last epoch", f"{fmt(result['first_loss'])} / {fmt(result['final_loss'])}"),
        ("held-out loss before / after", f"{fmt(result['held_out_loss_before'])} / {fmt(result.get('held_out_loss_after'))}"),
    ]
    retrieval = result.get("retrieval")
    if retrieval:
        rows.append((f"held-out top-1 among {retrieval['chunk']} (chance {retrieval['chance']:.0%})",
                     f"image->text {retrieval['image_to_text']:.1%}, text->image {retrieval['text_to_image']:.1%}"))
    mismatch = result.get("mismatch")
    if mismatch:
        rows.append(("own caption beats 1-attribute change",
                     ", ".join(f"{k} {mismatch[k]:.1%}" for k in ("colour", "shape", "count", "background", "style", "all")
                               if k in mismatch)))
    rows += [("report", result["report"]), ("seconds", f"{result['seconds']:.1f}")]
    for key, value in rows:
        table.add_row(key, value)
    return table


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@pretrain_app.command("niqe")
@friendly
def niqe(
    out: Path = typer.Option(..., "--out", "-o", help="Parameter file to write (.mat, for --set niqe.params=FILE)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of clean (pristine) images, searched recursively."),
    synthetic: Optional[int] = typer.Option(None, "--synthetic", help="Instead: render N clean images of SynthAGIQA's world."),
    image_size: int = typer.Option(96, "--image-size", help="Side of the rendered images (with --synthetic)."),
    seed: int = typer.Option(11, "--seed", help="Seed of the rendered images (with --synthetic)."),
    block_size: int = typer.Option(96, "--block-size", help="Block side in pixels (96 = the official NIQE)."),
    sharpness: float = typer.Option(0.75, "--sharpness", help="Keep blocks sharper than this fraction of the image's sharpest."),
):
    """Fit NIQE's pristine multivariate Gaussian on clean images (as the MATLAB estimatemodelparam.m)."""
    from agiqa_bench.errors import ConfigError
    from baselines.niqe import fit_pristine, save_pristine

    if (images is None) == (synthetic is None):
        raise ConfigError("give exactly one of --images DIR or --synthetic N")
    if images is not None:
        from agiqa_bench.images import load_rgb

        files = sorted(p for p in Path(images).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {images}")
        source, stream = f"{len(files)} images under {images}", (load_rgb(p) for p in files)
    else:
        from agiqa_bench.synthetic.corpus import image_seed, render_entry

        source = f"{synthetic} clean SynthAGIQA-world renders, {image_size} px, seed {seed}"
        stream = (render_entry(image_seed(seed, k), image_size, defect_fraction=0.0, empty_fraction=0.0)[3]
                  for k in range(synthetic))
    mu, cov, kept = fit_pristine(stream, block_size, sharpness)
    save_pristine(out, mu, cov, block_size, source=source, sharpness=sharpness, blocks=kept)
    console.print(f"wrote {out}: pristine MVG from {kept} blocks of {block_size}x{block_size} ({source})")
