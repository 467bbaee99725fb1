"""Scoring images in one call: `agiqa_bench.score("cpbd", ["a.png", "b.png"])`, and `agiqa-bench score`.

A zero-shot method scores any images as they are (with `prompts` when it reads them).  A trainable method
needs a model trained by a run: `checkpoint=` a file kept with `run --keep-checkpoints`
(`agiqa_bench.checkpoints`; every built-in trainable method keeps them), whose predictions come back in the
MOS units of the dataset it was trained on.  `dataset=` applies that dataset's parameter defaults to a
zero-shot method (e.g. the tiny offline CLIP that the built-in synthetic set uses), as a run on that dataset
would.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from agiqa_bench.errors import ConfigError, DataError


def read_pairs_csv(path: str | Path) -> list[tuple[Path, str]]:
    """(image, prompt) pairs from a CSV with an `image` column and an optional `prompt` column; relative image
    paths are read from the CSV's folder."""
    import pandas as pd

    path = Path(path).expanduser()
    try:
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    except Exception as exc:
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
    if "image" not in frame.columns:
        raise DataError(f"{path} needs a column named image (and prompt, for methods that read prompts); "
                        f"it has {', '.join(map(str, frame.columns)) or 'no columns'}")
    prompts = frame["prompt"] if "prompt" in frame.columns else [""] * len(frame)
    pairs = []
    for i, (image, prompt) in enumerate(zip(frame["image"], prompts)):
        if not str(image).strip():
            raise DataError(f"{path} row {i + 2}: empty image path")
        file = Path(str(image)).expanduser()
        pairs.append((file if file.is_absolute() else path.parent / file, str(prompt)))
    return pairs


def _items(images: Sequence[Any], prompts: Sequence[str] | None, folder: Path):
    """Items for image paths or PIL images (written as PNG into `folder`); ids are 0..n-1 in order."""
    from agiqa_bench.records import Item

    if prompts is not None and len(prompts) != len(images):
        raise ConfigError(f"score: {len(images)} images but {len(prompts)} prompts; give one prompt per image")
    items = []
    for i, image in enumerate(images):
        if isinstance(image, (str, Path)):
            path = Path(image).expanduser()
            if not path.is_file():
                raise ConfigError(f"score: image {path} does not exist")
        elif hasattr(image, "save"):  # a PIL image
            path = folder / f"{i}.png"
            image.save(path, format="PNG")
        else:
            raise ConfigError(f"score: image {i} is a {type(image).__name__}; give a file path or a PIL image")
        items.append(Item(id=str(i), image=path, prompt=str(prompts[i]) if prompts is not None else "", targets={},
                          group=str(i)))
    return items


def _model(method: str | None, *, checkpoint, dataset, overrides, device: str):
    """The method that scores: restored from `checkpoint`, or a zero-shot method built by name."""
    from agiqa_bench import checkpoints
    from agiqa_bench.method import MethodContext
    from agiqa_bench.registry import create_method, get_spec

    if checkpoint is not None:
        ck = checkpoint if isinstance(checkpoint, checkpoints.Checkpoint) else checkpoints.read(checkpoint)
        if method is not None and method not in (ck.method, ck.method.split(".")[0]):
            raise ConfigError(f"score: {ck.path} holds a {ck.method} model, not {method}")
        if overrides:
            raise ConfigError(f"score: a checkpoint's parameters are those it was trained with; drop the overrides "
                              f"({', '.join(overrides)})")
        return checkpoints.restore(ck, device=device)
    if method is None:
        raise ConfigError("score: name a method, or give checkpoint= a model kept by a run")
    spec, _ = get_spec(method)
    if spec.kind != "zero-shot":
        raise ConfigError(f"score: {method!r} is trainable: give checkpoint= a model kept by a run "
                          "(`agiqa-bench run --keep-checkpoints`), or score a zero-shot method")
    model = create_method(method, overrides, MethodContext(device=device, dataset=dataset or ""), dataset=dataset)
    model.fit([], [], ())
    return model


def predictions(method: str | None, images: Sequence[Any], prompts: Sequence[str] | None = None, *,
                dataset: str | None = None, checkpoint=None,
                overrides: dict[str, Any] | None = None, device: str = "auto") -> tuple[np.ndarray, tuple[str, ...]]:
    """(n, k) scores and their k column names: a checkpoint's targets, or ("score",) for a zero-shot method.
    `checkpoint`: a kept model's path, or the `agiqa_bench.checkpoints.Checkpoint` already read from it."""
    from agiqa_bench import checkpoints
    from agiqa_bench.device import resolve_device

    model = _model(method, checkpoint=checkpoint, dataset=dataset, overrides=overrides, device=resolve_device(device))
    columns = tuple(model.targets) if checkpoint is not None else ("score",)
    if not images:
        return np.zeros((0, len(columns))), columns
    if model.uses_prompts and (prompts is None or not all(str(p).strip() for p in prompts)):
        raise ConfigError(f"score: {model.name} scores images against their prompts: give a prompt for every "
                          "image (prompts=[...], --prompt, or a prompt column)")
    with tempfile.TemporaryDirectory() as tmp:
        items = _items(images, prompts, Path(tmp))
        if checkpoint is not None:
            out = checkpoints.predict(model, items)
        else:
            out = np.asarray(model.predict(items), dtype=np.float64)
            out = out[:, :1] if out.ndim == 2 else out[:, None]
    return out, columns


def score(method: str | None, images: Sequence[Any], prompts: Sequence[str] | None = None, *,
          dataset: str | None = None, checkpoint: str | Path | None = None,
          overrides: dict[str, Any] | None = None, device: str = "auto", target: str | None = None) -> np.ndarray:
    """One score per image (higher = better unless the method's spec says `lower_is_better`).

    With `checkpoint=` (a model kept by `run --keep-checkpoints`; `method` may then be None), the scores are
    in the training dataset's MOS units; a model of several targets needs `target=`.

    >>> import agiqa_bench
    >>> agiqa_bench.score("cpbd", ["a.png", "b.png"])  # doctest: +SKIP
    array([0.41, 0.37])
    """
    out, columns = predictions(method, images, prompts, dataset=dataset, checkpoint=checkpoint,
                               overrides=overrides, device=device)
    if target is None:
        if len(columns) > 1:
            raise ConfigError(f"score: this model predicts {', '.join(columns)}; choose one with target=")
        return out[:, 0]
    if target not in columns:
        raise ConfigError(f"score: no target {target!r}; this model predicts {', '.join(columns)}")
    return out[:, columns.index(target)]
