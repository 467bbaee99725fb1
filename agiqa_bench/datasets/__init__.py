"""Datasets: AGIQA-1k, AGIQA-3k, AIGCIQA2023, AIGIQA-20K, the built-in SynthAGIQA, and any CSV.

`load_dataset(name, data_root, **options)` is the one door; every loader returns
a `Dataset` of `Item`s and raises `DataError` naming the file and row on bad
input.

- `agiqa1k`, `agiqa3k`: the label files ship with the package; images from the authors.
- `aigciqa2023`: the official release (DATA/MOS/mosz1-3.mat, the prompt sheet, Image/allimg/) or its
  one-file conversion AIGCIQA2023.csv, found automatically; targets quality, authenticity, alignment;
  items carry the prompt's style and object class as attributes.
- `aigiqa20k`: the NTIRE 2024 release (info_train.csv + train/); target overall.  Its validation part
  (`part=val`, labels not public) loads only with `allow_unlabelled=true`, with no targets, for scoring.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from agiqa_bench.errors import ConfigError
from agiqa_bench.records import Dataset

CACHE_ENV = "AGIQA_BENCH_CACHE"


def cache_root() -> Path:
    """Where built-in artefacts (the default SynthAGIQA set) are cached."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agiqa_bench"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    summary: str
    targets: tuple[str, ...]
    label_file: str
    loader: Callable[..., Dataset]


def _load_agiqa1k(data_root=None, **options) -> Dataset:
    from agiqa_bench.datasets import agiqa1k

    return agiqa1k.load(data_root, **options)


def _load_agiqa3k(data_root=None, **options) -> Dataset:
    from agiqa_bench.datasets import agiqa3k

    return agiqa3k.load(data_root, **options)


def _load_aigciqa2023(data_root=None, **options) -> Dataset:
    from agiqa_bench.datasets import aigciqa2023

    return aigciqa2023.load(data_root, **options)


def _load_aigiqa20k(data_root=None, **options) -> Dataset:
    from agiqa_bench.datasets import aigiqa20k

    return aigiqa20k.load(data_root, **options)


def _load_csv(data_root=None, **options) -> Dataset:
    from agiqa_bench.datasets import tabular

    return tabular.load(data_root, **options)


def _load_synthetic(data_root=None, **options) -> Dataset:
    """A SynthAGIQA folder made by `agiqa-bench synth`, or the cached default one."""
    from agiqa_bench.synthetic import dataset

    return dataset.load(data_root, **options)


DATASETS: dict[str, DatasetInfo] = {
    "synthetic": DatasetInfo(
        "synthetic",
        "SynthAGIQA: built-in prompt-conditioned shapes with simulated generator defects (offline, default)",
        ("quality", "alignment", "overall"),
        "data.csv (made by `agiqa-bench synth`)",
        _load_synthetic,
    ),
    "agiqa1k": DatasetInfo(
        "agiqa1k",
        "AGIQA-1k: 1,080 images of 2 diffusion models, one coupled MOS",
        ("overall",),
        "AIGC_MOS_Zscore.xlsx + images (file/)",
        _load_agiqa1k,
    ),
    "agiqa3k": DatasetInfo(
        "agiqa3k",
        "AGIQA-3k: 2,982 images of 6 generators, perceptual quality and alignment MOS",
        ("quality", "alignment"),
        "data.csv + images (images/ or AGIQA-3K/)",
        _load_agiqa3k,
    ),
    "aigciqa2023": DatasetInfo(
        "aigciqa2023",
        "AIGCIQA2023: 2,400 images of 6 generators, 100 prompts; quality, authenticity and correspondence MOS",
        ("quality", "authenticity", "alignment"),
        "DATA/MOS/mosz1-3.mat + AIGCIQA2023_Prompts.xlsx + Image/allimg/, or AIGCIQA2023.csv + images",
        _load_aigciqa2023,
    ),
    "aigiqa20k": DatasetInfo(
        "aigiqa20k",
        "AIGIQA-20K (NTIRE 2024, AIGCQA-30K-Image): 14,000 labelled images of 15 generators, one MOS",
        ("overall",),
        "info_train.csv + images (train/ or images/); info_val.csv + val/ with part=val (unlabelled)",
        _load_aigiqa20k,
    ),
    "csv": DatasetInfo(
        "csv",
        "Your own dataset from a CSV/Excel label file (columns mapped with --dataset-opt)",
        (),
        "any; see `agiqa_bench.datasets.tabular`",
        _load_csv,
    ),
}


def accepted_options(name: str) -> tuple[str, ...]:
    """The keyword options a dataset's loader takes (read from its signature)."""
    import inspect

    from agiqa_bench.datasets import agiqa1k, agiqa3k, aigciqa2023, aigiqa20k, tabular
    from agiqa_bench.synthetic import dataset as synthetic

    def keywords(fn, skip=("data_root",)) -> list[str]:
        return [p.name for p in inspect.signature(fn).parameters.values()
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in (*skip, "name")]

    if name == "synthetic":
        return tuple(synthetic.SYNTH_OPTIONS) + tuple(keywords(agiqa3k.load, ("data_root", "name")))
    loaders = {"agiqa1k": agiqa1k.load, "agiqa3k": agiqa3k.load, "aigciqa2023": aigciqa2023.load,
               "aigiqa20k": aigiqa20k.load, "csv": tabular.load}
    return tuple(keywords(loaders[name]))


def load_dataset(name: str, data_root: str | Path | None = None, **options: Any) -> Dataset:
    """Load a dataset by name.

    Options common to all: images (folder), drop_missing, drop_bad_images, allow_outside_root,
    check_images; most take duplicates (first|last|mean).  `csv`, `synthetic`, `aigciqa2023` (layout) and
    `aigiqa20k` (part, allow_unlabelled) take more (see their modules).
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    accepted = accepted_options(name)
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ConfigError(f"dataset {name!r} has no option {', '.join(unknown)}; it takes: {', '.join(accepted)} "
                          "(--dataset-opt key=value; images, drop_missing, drop_bad_images and allow_outside_root "
                          "also have flags of their own)")
    return DATASETS[name].loader(data_root, **options)
