"""The contract every method must meet, as checks a plugin author can run: `check_method(name)`.

The project runs the same functions over its own registry (`tests/test_registry.py`,
`tests/test_label_scale.py`), so a plugin is held to exactly what the built-ins are:

- `check_contract`: built from its spec (with the spec's `smoke` overrides), fitted on a tiny dataset's
  train part with its validation part, it predicts the test part with the right shape ((n,) or, for a
  `joint_targets` method, (n, targets)), finite, not constant, and the same twice for the same seed; a
  trainable method that keeps checkpoints (`Method.checkpoint_state`) predicts the same once saved and
  restored (`check_checkpoint`);
- `check_label_scale` (trainable methods): the same SRCC, to 1e-6, when the labels come as a*y + b (a few
  affine maps, a large a and a negative b among them), with predictions back in the labels' units.

    >>> from agiqa_bench.testing import check_method
    >>> check_method("my_method")  # doctest: +SKIP

Each check raises `ContractError` (an AssertionError) whose message names the method and what failed.
`tiny_dataset(folder)` writes and loads the small dataset they use (12 prompts x 3 generators, 64 px images
in the AGIQA-3k layout, with quality and alignment MOS; the project's tests use the same writer at 128 px), so a
check needs no download and no real data.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from agiqa_bench.records import Dataset

#: y -> a y + b: an AIGCIQA2023-like scale (26 + 9y), a large a with a negative b, a small a with a negative b.
AFFINE_MAPS = ((9.0, 26.0), (1000.0, -5000.0), (0.01, -3.0))


class ContractError(AssertionError):
    """A method broke the harness's contract; the message says which method and how."""


def blurred_shapes(size: int, blur: float, seed: int) -> np.ndarray:
    """A small RGB image of random rectangles, box-blurred `blur` times (0 = sharp)."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), rng.integers(0, 255, 3), dtype=np.float64)
    for _ in range(6):
        x0, y0 = rng.integers(0, size - 8, 2)
        w, h = rng.integers(4, size // 2, 2)
        img[y0:y0 + h, x0:x0 + w] = rng.integers(0, 255, 3)
    for _ in range(int(blur)):
        img = (img + np.roll(img, 1, 0) + np.roll(img, -1, 0) + np.roll(img, 1, 1) + np.roll(img, -1, 1)) / 5
    return img.clip(0, 255).astype(np.uint8)


def write_tiny_agiqa3k(folder: str | Path, *, size: int = 64, prompt: str = "prompt number {idx}") -> Path:
    """An AGIQA-3k-layout folder: 12 prompts x 3 generators, `size` px images; quality falls with blur."""
    import csv

    from PIL import Image

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for idx in range(12):
        for g, gen in enumerate(("genA_normal", "genB_lowstep", "genC_normal")):
            blur = (idx + 3 * g) % 5
            name = f"{gen}_{idx:03d}.png"
            Image.fromarray(blurred_shapes(size, 2 * blur, seed=idx * 10 + g)).save(folder / "images" / name)
            rows.append([name, prompt.format(idx=idx), "", "", "", 4.0 - 0.7 * blur + 0.05 * g, 0.5,
                         1.0 + 0.2 * ((idx * 7 + g) % 11), 0.6])
    with open(folder / "data.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality", "mos_align",
                         "std_align"])
        writer.writerows(rows)
    return folder


def tiny_dataset(folder: str | Path, *, size: int = 64) -> Dataset:
    """`write_tiny_agiqa3k` into `folder`, loaded as the agiqa3k dataset."""
    from agiqa_bench.datasets import load_dataset

    return load_dataset("agiqa3k", write_tiny_agiqa3k(folder, size=size))


def _split(dataset: Dataset):
    from agiqa_bench.splits import make_splits

    return make_splits(dataset, "grouped", repeats=1, seed=1)[0]


def _targets(spec, dataset: Dataset) -> tuple[str, ...]:
    wanted = tuple(t for t in dataset.targets if spec.supports(t))
    if not wanted:
        raise ContractError(f"method {spec.name!r} supports targets {spec.targets}, none of {dataset.targets}")
    return wanted if spec.joint_targets else wanted[:1]


def _build(name: str, overrides: dict | None, workdir: Path, seed: int, dataset: str):
    from agiqa_bench.method import MethodContext
    from agiqa_bench.registry import create_method, get_spec

    spec, _ = get_spec(name)
    context = MethodContext(seed=seed, cache_dir=workdir / f"cache-{seed}", workdir=workdir, dataset=dataset)
    return spec, create_method(name, {**spec.smoke, **(overrides or {})}, context)


def check_contract(name: str, dataset: Dataset, *, overrides: dict | None = None,
                   workdir: str | Path | None = None) -> np.ndarray:
    """Fit, predict, again with the same seed: shape, finite, not constant, deterministic.  Returns the
    predictions ((n,) or (n, targets))."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        split = _split(dataset)
        train, val, test = dataset.subset(split.train), dataset.subset(split.val), dataset.subset(split.test)
        outputs = []
        for attempt in range(2):
            spec, method = _build(name, overrides, root / f"run{attempt}", 7, dataset.name)
            targets = _targets(spec, dataset)
            method.fit(train, val, targets)
            pred = np.asarray(method.predict(test), dtype=float)
            if pred.shape not in ((len(test),), (len(test), len(targets))):
                raise ContractError(f"{name}: predict returned shape {pred.shape} for {len(test)} items and "
                                    f"{len(targets)} target(s); expected ({len(test)},) or ({len(test)}, {len(targets)})")
            if not np.all(np.isfinite(pred)):
                raise ContractError(f"{name}: predict returned {int((~np.isfinite(pred)).sum())} non-finite value(s)")
            if attempt == 0:
                check_checkpoint(method, test, pred, root / "kept.pt")
            outputs.append(pred)
        if not np.allclose(outputs[0], outputs[1], rtol=1e-6, atol=1e-8):
            worst = float(np.max(np.abs(outputs[0] - outputs[1])))
            raise ContractError(f"{name}: two fits with the same seed predict differently (max difference {worst:.3g});"
                                " seed every random draw from MethodContext.seed")
        if np.ptp(outputs[0]) == 0:
            raise ContractError(f"{name}: predicts one constant value for every item; such scores cannot be ranked")
        return outputs[0]


def check_checkpoint(method, items: Sequence, pred: np.ndarray, path: Path) -> None:
    """A fitted trainable method that implements the checkpoint hooks, saved and restored
    (`agiqa_bench.checkpoints`), predicts `items` as it did (`pred`); methods without the hooks pass."""
    from agiqa_bench import checkpoints

    if method.spec.kind != "trainable" or not checkpoints.supports_checkpoints(method):
        return
    name = method.name
    try:
        restored = checkpoints.restore(checkpoints.save(method, path))
    except Exception as exc:
        raise ContractError(f"{name}: its checkpoint does not save and restore: {type(exc).__name__}: {exc}") from exc
    again = np.asarray(restored.predict(items), dtype=float)
    if again.shape != pred.shape or not np.allclose(again, pred, rtol=1e-5, atol=1e-6):
        worst = float(np.max(np.abs(again - pred))) if again.shape == pred.shape else float("nan")
        raise ContractError(f"{name}: the model restored from its checkpoint predicts differently (shape "
                            f"{again.shape} vs {pred.shape}, max difference {worst:.3g}); checkpoint_state must keep "
                            "everything predict uses")


def _affine(items, a: float, b: float):
    return [replace(it, targets={t: a * v + b for t, v in it.targets.items()}) for it in items]


def check_label_scale(name: str, dataset: Dataset, *, overrides: dict | None = None,
                      workdir: str | Path | None = None, maps: Sequence[tuple[float, float]] = AFFINE_MAPS,
                      tolerance: float = 1e-6) -> None:
    """A trainable method ranks the same (SRCC within `tolerance`) on labels y and a*y + b, through the
    runner's contract (`agiqa_bench.runner.fit_predict`), and its predictions come back in the labels' units."""
    from scipy.stats import spearmanr

    from agiqa_bench.registry import get_spec
    from agiqa_bench.runner import fit_predict

    spec, _ = get_spec(name)
    if spec.kind != "trainable":
        return
    split = _split(dataset)
    targets = _targets(spec, dataset)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)

        def run(a: float, b: float):
            parts = [_affine(dataset.subset(ids), a, b) for ids in (split.train, split.val, split.test)]
            _, method = _build(name, overrides, root / f"scale-{a:g}-{b:g}", 3, dataset.name)
            pred, *_ = fit_predict(method, *parts, targets)
            return pred, np.array([[it.targets[t] for t in targets] for it in parts[2]])

        base, mos = run(1.0, 0.0)
        for a, b in maps:
            pred, scaled = run(a, b)
            for j, target in enumerate(targets):
                want = spearmanr(base[:, j], mos[:, j]).statistic
                got = spearmanr(pred[:, j], scaled[:, j]).statistic
                if not abs(got - want) <= tolerance:
                    raise ContractError(f"{name}: SRCC on {target} is {want:.6f} with labels y but {got:.6f} with "
                                        f"{a:g}*y + {b:g}; a trainable method must rank the same whatever the label "
                                        f"scale (see agiqa_bench.labels: keep the default `label_scale`)")
            spread = abs(a) * max(1.0, float(np.abs(base).max()))
            if not np.allclose(pred, a * base + b, rtol=1e-4, atol=1e-4 * spread):
                raise ContractError(f"{name}: predictions on {a:g}*y + {b:g} labels are not the same predictions in "
                                    "those units")


def check_method(name: str, *, overrides: dict[str, Any] | None = None, dataset: Dataset | None = None) -> None:
    """Every contract check on `name` (a registered method, plugins included), on `dataset` or a tiny generated
    one; raises `ContractError` with a clear message on the first failure."""
    with tempfile.TemporaryDirectory() as tmp:
        data = dataset if dataset is not None else tiny_dataset(Path(tmp) / "data")
        check_contract(name, data, overrides=overrides, workdir=Path(tmp) / "contract")
        check_label_scale(name, data, overrides=overrides, workdir=Path(tmp) / "scale")
