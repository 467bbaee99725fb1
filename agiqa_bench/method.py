"""The one interface every method implements, and the spec that describes it.

A method is a name plus a `MethodSpec` (what it is, what it needs) plus a class
with `fit` / `predict`.  Each method module declares its spec beside its class
and registers it through the `agiqa_bench.methods` entry points (see
`agiqa_bench.registry`); specs are plain data, so listing methods never imports
model code.

Contract:
- `fit(train, val, targets)` trains on `train` (and may use `val` for model
  selection; never anything else).  `targets` is a tuple of target names.
  Zero-shot methods inherit the no-op fit.
- `predict(items)` returns one score per item, shape (n,), or, for a method
  whose spec says `joint_targets=True`, shape (n, len(targets)) in the order of
  the targets it was fitted on.
- Same params + same context seed => same predictions (tested for every
  registered method).
- Label scale: a trainable method never sees the dataset's own MOS scale.  The
  runner hands `fit` items whose labels are put on the method's `label_scale`
  (standardised on the training part by default; `agiqa_bench.labels`), sets
  `label_map` (what it did, for checkpoints) and maps `predict`'s output back
  to MOS units itself.  So a method's ranking does not depend on the affine
  scale its dataset's labels come in (tested over the whole registry).

Hyperparameters are declared once, as a frozen dataclass beside the class
(`params = MyMethodParams`, see `agiqa_bench.params`); the resolved values
reach the method as the plain dict `self.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Sequence

import numpy as np

from agiqa_bench.errors import ConfigError
from agiqa_bench.labels import STANDARD, LabelMap, LabelScale
from agiqa_bench.params import NoParams, declaration
from agiqa_bench.records import Item

Kind = Literal["zero-shot", "trainable"]


@dataclass(frozen=True)
class Weights:
    """A weights file (or parameter file) a method needs.

    Attributes:
        name: what the weights are, e.g. "CLIP RN50 (openai)".
        param: the method parameter that takes a local path (or hub tag).
        hint: how a user obtains it.
        check: optional "module:function" taking the method params and
            returning True when the weights are available; imported lazily.
    """

    name: str
    param: str
    hint: str
    check: str | None = None
    #: The variants this entry applies to (empty: every variant), e.g. one checkpoint per HPS version.
    variants: tuple[str, ...] = ()


@dataclass(frozen=True)
class MethodSpec:
    """Everything the harness needs to know about a method without importing it."""

    name: str
    factory: str  # "package.module:ClassName"
    kind: Kind
    summary: str
    inputs: tuple[str, ...] = ("image",)
    targets: tuple[str, ...] | None = None  # None: any target
    lower_is_better: bool = False
    joint_targets: bool = False
    variants: dict[str, dict] = field(default_factory=dict)
    weights: tuple[Weights, ...] = ()
    aliases: tuple[str, ...] = ()
    reference: str = ""  # paper / official code
    #: Where the paper-layout tables put the method: "handcrafted" (training-free
    #: perceptual), "svr" (handcrafted features + SVR), "deep", "alignment"
    #: (zero-shot image-text), "correspondence" (fine-tuned image-prompt
    #: correspondence, IPCE), "ours" (IP-IQA); "" = other.
    family: str = ""
    approximation: str = ""  # non-empty: why the method is not faithful
    #: Part of `agiqa-bench run` when no --methods is given.  False by default: an installed plugin never joins the
    #: plain default run (and so never changes its numbers) unless its spec says so.
    default_run: bool = False
    #: Variants the default run uses instead of the bare name (e.g. HIGRADE's two models).
    default_variants: tuple[str, ...] = ()
    #: The variant the bare name stands for (e.g. `hps` is `hps.v2_1`); the bare name is then not listed.
    canonical_variant: str | None = None
    smoke: dict = field(default_factory=dict)  # overrides for a fast smoke run (contract tests)
    #: Per-dataset parameter defaults, applied before variant and user overrides
    #: (e.g. the tiny offline backbone on `synthetic`); recorded with every result.
    dataset_defaults: dict[str, dict] = field(default_factory=dict)
    #: Where each dataset default comes from (dataset -> the official script or recipe it follows), shown by
    #: `agiqa-bench methods NAME --details`; "*" names the recipe of every other dataset.
    recipes: dict[str, str] = field(default_factory=dict)
    #: What running it takes, by phase and backbone (e.g. {"inference, Qwen2.5-VL-3B": "about 8 GB of GPU memory
    #: (bf16 weights 7.5 GB + activations; estimated from the parameter count)"}), shown by
    #: `agiqa-bench methods NAME --details`: say how each figure was estimated.
    resources: dict[str, str] = field(default_factory=dict)
    #: Ablation study (the paper's Table 3): "module:function" mapping a resolved configuration to
    #: {component label: switched on?}, and the variants `agiqa-bench ablate` runs, by study name
    #: ("default"; "image2prompt" when a pretraining checkpoint is given).
    ablation_components: str = ""
    ablation_variants: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def needs_prompt(self) -> bool:
        return "prompt" in self.inputs

    def supports(self, target: str) -> bool:
        return self.targets is None or target in self.targets


#: What separates a family's prefix from a member's name: `pyiqa:musiq` (a dot would read as a variant).
FAMILY_SEPARATOR = ":"


@dataclass(frozen=True)
class SpecFamily:
    """Methods named `prefix:member` whose members another library lists (e.g. every metric of pyiqa).

    Registered through the `agiqa_bench.methods` entry points like a spec.  The registry asks the family
    for a member's spec only when that name is used, so listing methods never enumerates (or imports) the
    library; the spec it returns is an ordinary `MethodSpec` named `prefix:member`.

    Attributes:
        prefix: the part before the ':' (`pyiqa`).
        summary: one line for the `methods` listing.
        spec: member name -> its `MethodSpec`; raises `ConfigError` (one line) for a member it refuses
            (unknown, or of a kind the harness cannot run), naming close matches.
        members: () -> [(member, one-line description)] of every member it would accept, for
            `agiqa-bench methods --<prefix>`; may import the library.
        knows: member name -> bool, a cheap test used to tell `prefix:member.variant` apart.
    """

    prefix: str
    summary: str
    spec: Callable[[str], MethodSpec]
    members: Callable[[], list[tuple[str, str]]]
    knows: Callable[[str], bool]

    def full_name(self, member: str) -> str:
        return f"{self.prefix}{FAMILY_SEPARATOR}{member}"


@dataclass
class MethodContext:
    """What the runner lends a method: device, seed and a place for caches."""

    device: str = "cpu"
    seed: int = 0
    repeat: int = 0
    dataset: str = ""
    cache_dir: Path | None = None
    workdir: Path | None = None
    keep_checkpoints: bool = False


class Method:
    """Base class.  Subclasses declare `params` (a frozen dataclass of hyperparameters) and implement `predict`."""

    #: Hyperparameters: a frozen dataclass of `agiqa_bench.params.param(...)` fields, each with its default, type,
    #: range or choices and help (see `agiqa_bench.params`); read it through `params.declaration()` /
    #: `params.defaults()`.  A plain dict of defaults (no ranges) is still accepted from older plugins.
    #: `--set name.key=value` overrides them, checked while the run is planned.
    params: ClassVar[Any] = NoParams
    #: Parameters that change speed or memory only, never a score (e.g. an inference batch size):
    #: recorded with the results but left out of the configuration hash and of table labels, so
    #: changing them neither starts new rows nor splits a method's results.
    runtime_params: ClassVar[tuple[str, ...]] = ()

    #: Bump when the method's scores change for the same parameters (a fix, a new feature version): it is
    #: part of the configuration hash, so old results are recomputed instead of mixed with new ones.
    version: ClassVar[str] = "1"

    #: The scale the runner puts a trainable method's training labels on (`agiqa_bench.labels`): standardised
    #: on the training part by default; a method whose official recipe fixes a label range declares that
    #: range's scale; None hands over the raw labels (the method then owes the same invariance itself).
    label_scale: ClassVar[LabelScale | None] = STANDARD

    #: True when the method computes per-image values through `agiqa_bench.cache.FeatureCache` (handcrafted
    #: features, zero-shot scores, frozen-encoder features): the runner's map phase then computes each image's
    #: values once, spread over every worker, before the method's jobs, which read them from the cache.
    per_image: ClassVar[bool] = False

    def __init__(self, spec: MethodSpec, config: dict[str, Any] | None = None, context: MethodContext | None = None,
                 *, name: str | None = None):
        self.spec = spec
        #: The canonical name it runs under, variant included (e.g. "higrade.2").
        self.name = name or spec.name
        self.context = context or MethodContext()
        self.config = resolve_params(spec.name, type(self).params, config or {})
        self.targets: tuple[str, ...] = ()
        #: Set by the runner before `fit`: how the labels it hands over were mapped (None: raw labels).
        self.label_map: LabelMap | None = None

    @property
    def uses_prompts(self) -> bool:
        """True when this configuration reads `Item.prompt` (default: the spec's inputs say "prompt")."""
        return self.spec.needs_prompt

    def precompute(self, items: Sequence[Item]) -> None:
        """The map phase's work for `items` (a method with `per_image`): compute and cache their per-image values.
        Default: `predict`, whose per-image scores a zero-shot method's cache keeps."""
        self.predict(items)

    # -- training -----------------------------------------------------------------
    def fit(self, train: Sequence[Item], val: Sequence[Item], targets: Sequence[str]) -> None:
        """Zero-shot default: remember the targets, learn nothing."""
        self.targets = tuple(targets)

    def predict(self, items: Sequence[Item]) -> np.ndarray:
        raise NotImplementedError

    def weights_identity(self) -> dict[str, str]:
        """The identity (size + sha256 prefix, `agiqa_bench.weights.identity`) of every weights file this
        configuration names, by parameter; part of the configuration hash, so a new file under an old name
        computes new rows.  Default: each weights parameter of the spec that holds a local file path.
        Methods whose tags resolve to files (shipped checkpoints, caches) extend it."""
        from agiqa_bench.weights import identity, is_local

        out = {}
        for w in self.spec.weights:
            value = self.config.get(w.param)
            if is_local(value):
                out[w.param] = identity(value)
        return out

    # -- checkpoints (`agiqa_bench.checkpoints`): implement both to let `--keep-checkpoints` keep the model ----
    def checkpoint_state(self) -> dict:
        """The fitted model as tensors and plain values (dicts, lists, str, numbers; no other objects: the file
        is read with `torch.load(weights_only=True)`).  The harness adds the method's name, parameters,
        targets and label map."""
        raise NotImplementedError(f"{self.spec.name} keeps no checkpoints")

    def load_checkpoint_state(self, state: dict) -> None:
        """Make the method fitted again from `checkpoint_state()`'s output, on a method built with the same
        parameters, `targets` and `label_map` already set; `predict` follows.  Build without downloading
        pretrained weights wherever the state holds every trained tensor."""
        raise NotImplementedError(f"{self.spec.name} keeps no checkpoints")

    #: True when the configuration selects epochs on the test part (`selection=test-oracle`);
    #: the runner then hands the test items to `set_oracle` before `fit`.
    uses_test_oracle: bool = False

    def set_oracle(self, items: Sequence[Item]) -> None:
        raise NotImplementedError(f"{self.spec.name} has no test-oracle protocol")


class SelectsEpochs:
    """Mixin of a trainable method whose `selection` parameter may name the official codes' labelled
    `test-oracle` protocol: the runner then hands it the test part (`set_oracle`), kept in `self._oracle`."""

    _oracle: Sequence[Item] | None = None

    @property
    def uses_test_oracle(self) -> bool:
        return self.config.get("selection") == "test-oracle"

    def set_oracle(self, items: Sequence[Item]) -> None:
        """The test part, given by the runner only under selection=test-oracle."""
        self._oracle = items


def path_safe(name: str) -> str:
    """A method name as a file name on any system: letters, digits and `-_.+` kept, anything else (the ':' of
    `pyiqa:musiq`, a path separator) replaced by '_'."""
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)


def resolve_params(name: str, params: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults updated with overrides, each converted to its declared type and checked against its range
    (`agiqa_bench.params`); an unknown key is an error listing the valid ones."""
    declared = declaration(params)
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        valid = ", ".join(sorted(declared)) or "(none)"
        raise ConfigError(f"method {name!r} has no parameter {', '.join(unknown)}; its parameters are: {valid}")
    out = {key: p.default for key, p in declared.items()}
    for key, value in overrides.items():
        out[key] = declared[key].check(value, f"{name}.{key}")
    return out
