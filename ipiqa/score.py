"""Scoring new images with a trained IP-IQA checkpoint (`agiqa-bench score`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from agiqa_bench.errors import ConfigError, DataError


def read_pairs_csv(path: Path) -> list[tuple[Path, str]]:
    """(image, prompt) pairs from a CSV with columns image,prompt; paths relative to the CSV's folder."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, keep_default_na=False)
    except Exception as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    missing = {"image", "prompt"} - set(frame.columns)
    if missing:
        raise DataError(f"{path} needs columns image and prompt; it lacks {', '.join(sorted(missing))}")
    pairs = []
    for i, row in enumerate(frame.itertuples(index=False)):
        if not str(row.image).strip():
            raise DataError(f"{path} row {i + 2}: empty image path")
        image = Path(str(row.image)).expanduser()
        pairs.append((image if image.is_absolute() else path.parent / image, str(row.prompt)))
    return pairs


def score_pairs(checkpoint: str | Path, pairs: Sequence[tuple[Path, str]], device: str = "cpu", batch_size: int = 16):
    """A DataFrame with one row per pair: image, prompt and one column per target the model predicts."""
    import numpy as np
    import pandas as pd
    import torch

    from agiqa_bench.images import load_rgb
    from agiqa_bench.batches import normalise
    from ipiqa.method import load_checkpoint

    if not pairs:
        raise ConfigError("nothing to score: give image files (with --prompt) or --csv FILE")
    model, targets, config, label_map = load_checkpoint(checkpoint)
    if model.prompt is not None and any(not p for _, p in pairs):
        raise ConfigError("this checkpoint scores images against their prompts: give --prompt or a prompt column")
    model.to(device)
    size = int(config["image_size"])
    rows = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        images = torch.stack([torch.from_numpy(load_rgb(p, size)).permute(2, 0, 1) for p, _ in chunk])
        args = [model.tokenize([t for _, t in chunk]).to(device)] if model.prompt is not None else []
        with torch.no_grad():
            pred = model(normalise(images.to(device)), *args).float().cpu().numpy().reshape(len(chunk), -1)
        pred = np.asarray(pred, dtype=float)
        rows.extend((label_map.inverse(pred) if label_map is not None else pred).tolist())
    frame = pd.DataFrame(rows, columns=list(targets))
    frame.insert(0, "prompt", [t for _, t in pairs])
    frame.insert(0, "image", [str(p) for p, _ in pairs])
    return frame
