"""Scoring images from Python in one call: `agiqa_bench.score("cpbd", ["a.png", "b.png"])`.

A zero-shot method scores any images as they are (with `prompts` when it reads them).  A trainable method
needs a model trained by a run: `checkpoint=` a file kept with `--keep-checkpoints` (IP-IQA's today; see
`agiqa-bench score`).  `dataset=` applies that dataset's parameter defaults (e.g. the tiny offline CLIP that
the built-in synthetic set uses), as a run on that dataset would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from agiqa_bench.errors import ConfigError


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


def score(method: str, images: Sequence[Any], prompts: Sequence[str] | None = None, *, dataset: str | None = None,
          checkpoint: str | Path | None = None, overrides: dict[str, Any] | None = None,
          device: str = "auto") -> np.ndarray:
    """One score per image (higher = better unless the method's spec says `lower_is_better`).

    >>> import agiqa_bench
    >>> agiqa_bench.score("cpbd", ["a.png", "b.png"])  # doctest: +SKIP
    array([0.41, 0.37])
    """
    import tempfile

    from agiqa_bench.device import resolve_device
    from agiqa_bench.method import MethodContext
    from agiqa_bench.registry import create_method, get_spec

    spec, _ = get_spec(method)
    if not images:
        return np.zeros(0, dtype=np.float64)
    if spec.needs_prompt and prompts is None:
        raise ConfigError(f"score: method {method!r} scores images against their prompts: give prompts=[...]")
    if checkpoint is not None:
        if spec.family != "ours":
            raise ConfigError(f"score: checkpoints of {method!r} cannot be loaded yet (IP-IQA's can); score it by "
                              "running it on a dataset that holds these images")
        from ipiqa.score import score_pairs

        frame = score_pairs(checkpoint, [(Path(p), t) for p, t in zip(images, prompts or [""] * len(images))],
                            device=resolve_device(device))
        return frame.iloc[:, 2].to_numpy(dtype=np.float64)
    if spec.kind != "zero-shot":
        raise ConfigError(f"score: {method!r} is trainable: give checkpoint= a model kept by a run "
                          "(`agiqa-bench run --keep-checkpoints`), or score a zero-shot method")
    with tempfile.TemporaryDirectory() as tmp:
        items = _items(images, prompts, Path(tmp))
        context = MethodContext(device=resolve_device(device), dataset=dataset or "")
        model = create_method(method, overrides, context, dataset=dataset)
        model.fit([], [], ())
        out = np.asarray(model.predict(items), dtype=np.float64)
    return out[:, 0] if out.ndim == 2 else out
