"""Datasets as specs, like methods: what a dataset is, declared beside its loader, registered by entry point.

A dataset module declares

    SPEC = DatasetSpec(name="mydata", summary="...", targets=("quality",), loader="my_pkg.mydata:load",
                       files="labels.csv + images/", options=(DUPLICATES, DatasetOption("split", "...")))

and registers it in its `pyproject.toml`, as the built-ins do in this project's:

    [project.entry-points."agiqa_bench.datasets"]
    mydata = "my_pkg.mydata:SPEC"

(an entry may also name a zero-argument callable returning a spec).  The loader takes
`(data_root, **options)` (its own options, those it declares) and returns a `Dataset` whose items name their
images relative to `Dataset.image_dir` (or absolutely), with `label_file`, `image_dir` and `data_root` set:
it parses labels, nothing more.  The harness (`agiqa_bench.datasets.load_dataset`) then applies the image
options every dataset shares, declared once here (`IMAGE_OPTIONS`): another image folder (`images`),
containment in the data root (`allow_outside_root`), the pixel cap (`max_pixels`), the existence and decode
checks (`check_images`) and what to drop (`drop_missing`, `drop_bad_images`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatasetOption:
    """One `--dataset-opt key=value` a dataset takes (its default is the loader's)."""

    name: str
    help: str = ""


#: The options every dataset takes, applied by the harness after the loader returns.
IMAGE_OPTIONS = (
    DatasetOption("images", "the image folder, when not the one found under the data root"),
    DatasetOption("drop_missing", "benchmark without items whose image is missing (listed in a warning)"),
    DatasetOption("drop_bad_images", "benchmark without items whose image cannot be decoded or is over the cap"),
    DatasetOption("allow_outside_root", "read images that the label file names outside the image folder"),
    DatasetOption("max_pixels", "pixel cap of every image read (also AGIQA_BENCH_MAX_PIXELS)"),
    DatasetOption("check_images", "check every image exists and decodes before any work (true by default)"),
)
#: An option several label parsers take: what to do with an image listed twice (first, last or mean).
DUPLICATES = DatasetOption("duplicates", "an image listed twice in the label file: keep the first, the last, or "
                                         "the mean of its MOS (first|last|mean)")


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the harness needs to know about a dataset without reading it."""

    name: str
    summary: str
    targets: tuple[str, ...]
    loader: str  # "module:function" taking (data_root, **options), returning a Dataset
    #: What it expects under the data root (shown by `agiqa-bench datasets`).
    files: str = ""
    #: Its own options (besides `IMAGE_OPTIONS`).
    options: tuple[DatasetOption, ...] = ()
    #: Where to get it (README section, URL): shown with the files.
    reference: str = ""
    #: Item attributes its items may carry for `report --by` (besides generator).
    attributes: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)

    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in (*IMAGE_OPTIONS, *self.options))
