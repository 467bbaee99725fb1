"""Kept models: what `run --keep-checkpoints` writes and `agiqa-bench score --checkpoint` reads.

One file per trained model (a job: method configuration x split x target group), under
`OUT/checkpoints/`.  It holds only tensors and plain values (dicts, lists, strings, numbers), written by
`torch.save` and read with `weights_only=True`: a file that carries a pickled object is refused, never run.
Besides the method's own state it says what made it:

- `method` (the name it ran under, variant included), `params` (its resolved configuration),
  `config_hash` (the key of its result rows) and the method's `version`;
- `targets`, and `label_map`: how the runner scaled the training labels (`agiqa_bench.labels`), so the
  restored model's predictions are mapped back to the dataset's MOS units;
- `dataset`, `repeat`, `split` (the split's hash) and `seed`: which training part and which random draws.

A method keeps checkpoints by implementing two hooks (`Method.checkpoint_state` and
`Method.load_checkpoint_state`); the runner calls them, so a plugin needs nothing else.  Restoring builds the
method from its recorded parameters without downloading pretrained weights wherever the state holds every
trained tensor (IP-IQA, the deep baselines, IPCE, the SVR methods); CLIP-IQA+ keeps only its learned
prompts and needs the same frozen CLIP it was trained with, which it checks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from agiqa_bench.errors import ConfigError
from agiqa_bench.labels import LabelMap

FORMAT = "agiqa-bench/checkpoint@1"
#: Earlier per-family formats: (method state) from their payloads, so their files still load.
LEGACY = {
    "agiqa-bench/ipiqa@1": lambda p: {"model_config": p["config"], "state_dict": p["state_dict"]},
    "agiqa-bench/deep@1": lambda p: {"state_dict": p["state_dict"]},
    "agiqa-bench/ipce@1": lambda p: {"state_dict": p["state_dict"]},
}


class CheckpointWarning(UserWarning):
    """A checkpoint loads, but something about it deserves a look (e.g. made by another method version)."""


@dataclass
class Checkpoint:
    """What a kept-model file says (its `state` is the method's, for `Method.load_checkpoint_state`)."""

    method: str
    params: dict
    targets: tuple[str, ...]
    state: dict
    label_map: LabelMap | None = None
    version: str = "1"
    config_hash: str = ""
    dataset: str = ""
    repeat: int = 0
    split: str = ""
    seed: int = 0
    path: Path | None = None
    extra: dict = field(default_factory=dict)

    def describe(self) -> str:
        """One line: which method, configuration and training part made it."""
        made = f"{self.method} (config {self.config_hash[:10] or 'unrecorded'}, version {self.version})"
        trained = f"trained on {self.dataset or 'an unrecorded dataset'}"
        if self.split:
            trained += f", repeat {self.repeat} (split {self.split[:10]})"
        return f"{made}, {trained}; targets {', '.join(self.targets)}"


def supports_checkpoints(method) -> bool:
    """True when the method's class implements the checkpoint hooks."""
    from agiqa_bench.method import Method

    cls = type(method)
    return (cls.checkpoint_state is not Method.checkpoint_state
            and cls.load_checkpoint_state is not Method.load_checkpoint_state)


def checkpoint_path(workdir: Path, dataset: str, method: str, repeat: int, targets: Sequence[str],
                    config_hash: str) -> Path:
    """WORKDIR/checkpoints/DATASET-METHOD-rREPEAT-TARGETS-HASH.pt: one file per model a run trains (a method
    that fits one target at a time trains one per target; two configurations of a method differ by hash)."""
    from agiqa_bench.method import path_safe

    name = f"{dataset}-{path_safe(method)}-r{repeat}-{path_safe('+'.join(targets))}-{config_hash[:8]}.pt"
    return Path(workdir) / "checkpoints" / name


def save(method, path: str | Path, **provenance: Any) -> Path:
    """Write the fitted `method` to `path` (atomically: a killed run leaves the old file or none).
    `provenance`: config_hash, split, ... (see the module's docstring)."""
    import torch

    from agiqa_bench.outputs import atomic_write

    state = method.checkpoint_state()
    payload = {"format": FORMAT, "method": method.name, "params": dict(method.config),
               "version": str(type(method).version), "targets": list(method.targets),
               "label_map": method.label_map.to_dict() if method.label_map is not None else None,
               "dataset": method.context.dataset, "repeat": int(method.context.repeat),
               "seed": int(method.context.seed), **provenance, "state": state}
    return atomic_write(path, lambda fh: torch.save(payload, fh), what="write the checkpoint")


def read(path: str | Path) -> Checkpoint:
    """The checkpoint at `path`, read with tensors and plain values only."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:  # tensors and plain containers only: a pickle that carries code is refused, never run
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path} is not a readable agiqa-bench checkpoint (only tensors and plain values are "
                          f"loaded, never pickled objects): {type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:200]}") from None
    kind = payload.get("format") if isinstance(payload, dict) else None
    if kind != FORMAT and kind not in LEGACY:
        raise ConfigError(f"{path} is not a model kept by agiqa-bench (`run --keep-checkpoints` writes them); "
                          f"its format is {kind!r}")
    try:
        state = payload["state"] if kind == FORMAT else LEGACY[kind](payload)
        label_map = payload.get("label_map")
        return Checkpoint(
            method=str(payload["method"]), params=dict(payload.get("params") or {}),
            targets=tuple(str(t) for t in payload["targets"]), state=dict(state),
            label_map=LabelMap.from_dict(label_map) if label_map else None, version=str(payload.get("version", "1")),
            config_hash=str(payload.get("config_hash", "")), dataset=str(payload.get("dataset", "")),
            repeat=int(payload.get("repeat", 0)), split=str(payload.get("split", "")),
            seed=int(payload.get("seed", 0)), path=path)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: a damaged agiqa-bench checkpoint ({type(exc).__name__}: {exc})") from None


def restore(checkpoint: str | Path | Checkpoint, *, device: str = "cpu"):
    """The fitted method a checkpoint holds, ready to `predict` (outputs on its label scale; `predict` below
    maps them to MOS units)."""
    from agiqa_bench.method import MethodContext
    from agiqa_bench.registry import create_method, get_spec, load_class

    ck = checkpoint if isinstance(checkpoint, Checkpoint) else read(checkpoint)
    try:
        spec, _ = get_spec(ck.method)
    except ConfigError as exc:
        raise ConfigError(f"{ck.path}: made by method {ck.method!r}, which this installation lacks ({exc})") from None
    version = str(load_class(spec).version)
    if version != ck.version:
        warnings.warn(f"{ck.path}: made by {ck.method} version {ck.version}; this installation's is version "
                      f"{version}, whose scores may differ", CheckpointWarning, stacklevel=2)
    context = MethodContext(device=device, seed=ck.seed, repeat=ck.repeat, dataset=ck.dataset)
    try:
        method = create_method(ck.method, ck.params, context)
    except ConfigError as exc:
        raise ConfigError(f"{ck.path}: its parameters no longer fit {ck.method}: {exc}") from None
    if not supports_checkpoints(method):
        raise ConfigError(f"{ck.path}: {ck.method} cannot load checkpoints (its class has no load_checkpoint_state)")
    method.targets = ck.targets
    method.label_map = ck.label_map
    method.load_checkpoint_state(ck.state)
    return method


def load_tensors(module, state: dict, owner: str) -> None:
    """`module.load_state_dict(state["state_dict"])` (strict); a missing or mismatched state dict is one line
    naming the method."""
    try:
        module.load_state_dict(state["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise ConfigError(f"{owner}: the checkpoint's tensors do not fit the model its parameters build "
                          f"({' '.join(str(exc).split())[:300]})") from None


def as_matrix(method, pred, n: int) -> np.ndarray:
    """`predict`'s output as (n, len(method.targets)) (a 1-D output repeated per target), shape checked."""
    pred = np.asarray(pred, dtype=np.float64)
    targets = method.targets
    if pred.ndim == 1:
        pred = np.repeat(pred[:, None], max(len(targets), 1), axis=1)
    if pred.shape != (n, max(len(targets), 1)):
        raise RuntimeError(f"{method.name}.predict returned shape {pred.shape}, expected ({n}, {len(targets)})")
    return pred


def predict(method, items: Sequence) -> np.ndarray:
    """(n, targets) predictions of a restored (or fitted) method in the dataset's MOS units."""
    pred = as_matrix(method, method.predict(items), len(items))
    return method.label_map.inverse(pred) if method.label_map is not None else pred
