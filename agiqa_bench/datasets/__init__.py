"""Datasets: AGIQA-1k, AGIQA-3k, AIGCIQA2023, AIGIQA-20K, the built-in SynthAGIQA, and any CSV.

`load_dataset(name, data_root, **options)` is the one door; every dataset is a `DatasetSpec` registered
through the `agiqa_bench.datasets` entry points (`agiqa_bench.datasets.spec`), built-ins and plugins alike;
every loader returns a `Dataset` of `Item`s and raises `DataError` naming the file and row on bad input.

- `agiqa1k`, `agiqa3k`: the label files ship with the package; images from the authors.
- `aigciqa2023`: the official release (DATA/MOS/mosz1-3.mat, the prompt sheet, Image/allimg/) or its
  one-file conversion AIGCIQA2023.csv, found automatically; targets quality, authenticity, alignment;
  items carry the prompt's style and object class as attributes.
- `aigiqa20k`: the NTIRE 2024 release (info_train.csv + train/); target overall.  Its validation part
  (`part=val`, labels not public) loads only with `allow_unlabelled=true`, with no targets, for scoring.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any

from agiqa_bench.datasets.spec import IMAGE_OPTIONS, DatasetOption, DatasetSpec  # noqa: F401  (public)
from agiqa_bench.errors import ConfigError
from agiqa_bench.records import Dataset

CACHE_ENV = "AGIQA_BENCH_CACHE"


def cache_root() -> Path:
    """Where built-in artefacts (the default SynthAGIQA set) are cached."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agiqa_bench"


#: The entry-point group datasets register under (the built-ins in this project's pyproject.toml, plugins in theirs).
ENTRY_POINT_GROUP = "agiqa_bench.datasets"
#: Specs added at run time with `register` (notebooks, tests); treated like plugins.
_registered: list[DatasetSpec] = []


def register(*specs: DatasetSpec) -> None:
    """Add dataset specs in this process, as an installed plugin would."""
    _registered.extend(specs)
    dataset_specs.cache_clear()


@functools.cache
def dataset_specs() -> dict[str, DatasetSpec]:
    """Every registered dataset spec by name: the project's own first, then plugins (a plugin may not take a
    name already taken); an entry that fails to load is skipped with a warning."""
    from importlib import metadata

    own, plugins = [], []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            found = ep.load()
            found = found() if callable(found) and not isinstance(found, DatasetSpec) else found
        except Exception as exc:  # a broken plugin must not break the harness
            warnings.warn(f"dataset plugin {ep.name!r} ({ep.value}) failed to load: {exc}", stacklevel=2)
            continue
        specs = [found] if isinstance(found, DatasetSpec) else [f for f in (found or ()) if isinstance(f, DatasetSpec)]
        dist = getattr(getattr(ep, "dist", None), "name", "") or ""
        (own if dist.replace("_", "-") == "agiqa-bench" else plugins).extend(specs)
    table: dict[str, DatasetSpec] = {}
    own.sort(key=lambda spec: (spec.name != "synthetic", spec.name))  # the default first
    for spec in [*own, *plugins, *_registered]:
        if spec.name in table:
            warnings.warn(f"dataset {spec.name!r} ({spec.loader}) ignored: the name is already registered", stacklevel=2)
            continue
        table[spec.name] = spec
    return table


def get_dataset_spec(name: str) -> DatasetSpec:
    specs = dataset_specs()
    if name not in specs:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(specs)} (see `agiqa-bench datasets`)")
    return specs[name]


def accepted_options(name: str) -> tuple[str, ...]:
    """The `--dataset-opt` keys a dataset takes: its own (its spec) and the shared image options."""
    return get_dataset_spec(name).option_names()


def load_dataset(name: str, data_root: str | Path | None = None, **options: Any) -> Dataset:
    """Load a dataset by name: its loader parses the labels, then the shared image options are applied
    (`agiqa_bench.datasets.spec.IMAGE_OPTIONS`, `_common.finish_dataset`), for built-ins and plugins alike.
    `data_root` and `images` may start with `~`."""
    import importlib

    from agiqa_bench.datasets import _common

    spec = get_dataset_spec(name)
    image_names = {o.name for o in IMAGE_OPTIONS}
    unknown = [k for k in options if k not in spec.option_names()]
    if unknown:
        raise ConfigError(f"dataset {name!r} has no option {', '.join(unknown)}; it takes: "
                          f"{', '.join(spec.option_names())} (--dataset-opt key=value; images, drop_missing, "
                          "drop_bad_images, allow_outside_root and max_pixels also have flags of their own)")
    image_options = {k: v for k, v in options.items() if k in image_names}
    own = {k: v for k, v in options.items() if k not in image_names}
    module, _, attr = spec.loader.partition(":")
    try:
        loader = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"dataset {name!r}: cannot import its loader {spec.loader}: {exc}") from None
    root = Path(data_root).expanduser() if data_root is not None else None
    ds = loader(root, **own)
    if not isinstance(ds, Dataset):
        raise ConfigError(f"dataset {name!r}: its loader {spec.loader} returned {type(ds).__name__}, not a Dataset")
    return _common.finish_dataset(ds, **image_options)
