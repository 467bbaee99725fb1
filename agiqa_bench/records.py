"""The record types that flow through the harness: an `Item` and a `Dataset`.

An item is one rated image.  A dataset is an ordered list of items plus what is
needed to interpret them (which targets exist, where the labels came from).
Splits, methods, metrics and the store all speak in item ids and target names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

#: Target names used across datasets.  `overall` is a single coupled MOS
#: (AGIQA-1k, AIGIQA-20K); `quality` and `alignment` are AGIQA-3k's two MOS columns;
#: `authenticity` is AIGCIQA2023's third MOS (how real the image looks; its
#: correspondence MOS is `alignment`).
KNOWN_TARGETS = ("quality", "authenticity", "alignment", "overall")


@dataclass(frozen=True)
class Item:
    """One rated image.

    Attributes:
        id: stable identifier, unique within the dataset (usually the file name).
        image: path of the image file.
        prompt: the text prompt that generated the image ("" if unknown).
        targets: MOS per target name, e.g. {"quality": 2.7, "alignment": 3.1}.
        group: the unit a split keeps together (a prompt, an object pair).
        generator: name of the model that made the image ("" if unknown).
        meta: anything else from the label file (std columns, keywords, defects).
    """

    id: str
    image: Path
    prompt: str
    targets: dict[str, float]
    group: str
    generator: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Dataset:
    """An ordered collection of items with the facts needed to benchmark it."""

    name: str
    items: list[Item]
    targets: tuple[str, ...]
    label_file: Path | None = None
    image_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    #: Group keys in label-file order *before* any item was dropped, so that
    #: protocols drawing one random number per group stay reproducible.
    label_groups: list[str] | None = None
    #: Keys of `Item.meta` that describe an item the way a report can break results down by, besides its
    #: generator (AIGCIQA2023: the prompt's style and object class); see `Dataset.attribute`.
    attributes: tuple[str, ...] = ()
    #: The folder the dataset was read from (containment of its image folder and images is checked against it).
    data_root: Path | None = None

    def __post_init__(self) -> None:
        self._index = {item.id: i for i, item in enumerate(self.items)}
        if len(self._index) != len(self.items):
            raise ValueError(f"dataset {self.name!r} has duplicate item ids")

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    @property
    def has_prompts(self) -> bool:
        return any(item.prompt for item in self.items)

    @property
    def groups(self) -> list[str]:
        """Group keys in first-seen order."""
        return list(dict.fromkeys(item.group for item in self.items))

    @property
    def all_label_groups(self) -> list[str]:
        """Groups as the label file lists them, including groups whose images were dropped."""
        return list(self.label_groups) if self.label_groups is not None else self.groups

    def attribute_names(self) -> tuple[str, ...]:
        """The item attributes a report can break results down by: `generator` (when items name one), then
        the dataset's declared `attributes`."""
        gen = ("generator",) if any(item.generator for item in self.items) else ()
        return gen + tuple(a for a in self.attributes if a != "generator")

    @staticmethod
    def attribute(item: Item, name: str) -> str:
        """One attribute of an item as text ("" when it has none)."""
        value = item.generator if name == "generator" else item.meta.get(name, "")
        if value is None or (isinstance(value, float) and value != value):  # an empty label cell read as NaN
            return ""
        return str(value).strip()

    def subset(self, ids: Iterable[str]) -> list[Item]:
        """Items with these ids, in the order given."""
        try:
            return [self.items[self._index[i]] for i in ids]
        except KeyError as exc:
            raise KeyError(f"item {exc.args[0]!r} is not in dataset {self.name!r}") from None

    def target_array(self, items: Sequence[Item], target: str) -> np.ndarray:
        return np.array([item.targets[target] for item in items], dtype=np.float64)
