"""CLIP-IQA (zero-shot) and CLIP-IQA+ (CoOp prompt learning, trained per split).

Reference: J. Wang, K. C. K. Chan, C. C. Loy, "Exploring CLIP for assessing
the look and feel of images", AAAI 2023; official code IceClear/CLIP-IQA
(mmedit-based: ``mmedit/models/backbones/sr_backbones/coopclipiqa.py``,
``mmedit/models/components/clip/model.py``, ``configs/clipiqa/*.py``), also
re-implemented in pyiqa (``archs/clipiqa_arch.py``).  Independent
implementation on open_clip, no code copied.

CLIP-IQA (``clipiqa``, zero-shot), as the official ``CLIPIQAFixed`` with
``pos_embedding=False``:

- Backbone: OpenAI CLIP RN50 (here ``RN50-quickgelu`` + ``openai`` through
  open_clip, i.e. the same weights built with the activation they were trained
  with); any open_clip model / tag / local checkpoint can be chosen with
  ``clip_model`` and ``pretrained``.
- Image feature: the ResNet trunk, then CLIP's attention pooling *without its
  positional embedding*: the layer4 map is flattened, its mean is prepended as
  the query token, and multi-head attention with the pool's q/k/v/c
  projections runs on these tokens as they are (the official
  ``AttentionPool2d.forward(..., pos_embedding=False)`` simply skips the
  ``x + positional_embedding`` line).  Nothing in the image path then depends
  on the grid size, so any resolution (>= 32 px) works.
- Preprocessing (official test pipeline): the image at its *native
  resolution* (``image_size=0``; no resize, no crop), scaled to [0, 1] and
  normalised with CLIP's mean/std.  ``image_size=N`` instead resizes to an
  N x N square (bicubic), the harness's usual resize.
- Antonym prompts ("Good photo.", "Bad photo.") by default (``positive``,
  ``negative``).  Score = softmax over the pair of
  ``logit_scale.exp() * cos(image, text)``, the probability of the positive
  prompt, in [0, 1], higher = better.
- A zero-shot method has no notion of targets: it predicts the same score for
  every target (quality, alignment, ...).

CLIP-IQA+ (``clipiqa.plus``), as the official ``CLIPIQAPredictor`` / CoOp
``PromptLearner`` with the repository's defaults, retrained on each split:

- Per prompt of the pair, the tokenised text ``"X X ... X <class>."`` (n_ctx
  "X" placeholders, then e.g. "Good photo.", then the official extra ".");
  the embeddings of the placeholders are replaced by ``n_ctx`` learnable
  context vectors.  ``class_position="middle"`` (the official default) puts
  half of the context before the class words and half after them
  (``"end"``/``"front"``: CoOp's other placements).  The class words are kept,
  not replaced.
- ``class_specific=False`` (official default): one context shared by the two
  prompts of the pair; ``True``: one per prompt.  ``ctx_init="normal"``
  (official default, CoOp): N(0, 0.02); ``"x"``: the embedding of the "X"
  placeholder token (pyiqa's starting point before it loads its learned file).
- One learnable prompt pair per target, so a single model predicts every
  target of the dataset (``joint_targets``).  CLIP (image and text towers,
  token embeddings, logit scale) is frozen; only the contexts train.
- Loss: MSE between the positive-prompt probability and the MOS mapped to
  [0, 1] with the training part's min and max per target (the official code
  divides KonIQ's 0-100 MOS by 100).  Implemented as the equivalent
  ``lo + (hi - lo) * p`` output trained on raw MOS with the shared
  `fit_regressor` (same minimiser; the constant factor (hi - lo)^2 on the loss
  is absorbed by Adam), so predictions are on the MOS scale and rank exactly
  as p does.
- Optimiser: the shared loop's AdamW, lr 2e-3, no weight decay, constant LR
  (official: SGD lr 2e-3 with cosine restarts over 300k iterations; pyiqa's
  training recipe: Adam 2e-3, cosine, 50 epochs), batch 64, 50 epochs, model
  selection on the validation groups by default.
- Frozen image encoder: each image's feature (and, for the horizontal-flip
  augmentation of the official training pipeline, its mirror's) is computed
  once and cached on disk (`FeatureCache`, under the run's cache folder), then
  handed to the model as an "extra" input of `fit_regressor`; the model
  ignores the pixel batch the loop passes (which is why the loop is asked for
  tiny 8 px copies of the images) and, in training mode, picks the mirrored
  feature with probability 0.5.  Same results as encoding the images every
  step, minus the cost.

Deviations from the official code: open_clip instead of OpenAI's ``clip``
package (same architecture and weights); AdamW with a constant learning rate
instead of SGD with cosine restarts; MOS normalised by the training part's
min/max instead of a fixed scale; the CLIP-IQA+ context is trained on each
benchmark split rather than taken from the released KonIQ-10k prompts.

For non-ResNet backbones (ViT) the positional embedding cannot be dropped
sensibly: use ``pos_embedding=true`` (open_clip's own ``encode_image`` at the
model's native size, or at ``image_size`` via ``force_image_size``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from agiqa_bench.cache import FeatureCache, namespace_for
from agiqa_bench.errors import ConfigError, MethodUnavailable
from agiqa_bench.images import load_rgb
from agiqa_bench.method import Method, MethodSpec, SelectsEpochs
from agiqa_bench.params import param
from agiqa_bench.records import Item
from agiqa_bench.training import SELECTIONS, TrainConfig, fit_regressor
from agiqa_bench.batches import normalise
from agiqa_bench.clip import (
    clip_weights,
    clip_weights_problem,
    load_clip,
    open_clip_identity,
    tokenizer_for,
)

SPECS = [
    MethodSpec(
        name="clipiqa",
        default_run=True,
        family="deep",
        factory="baselines.clipiqa:CLIPIQA",
        kind="zero-shot",
        summary="CLIP-IQA: CLIP RN50 (attention pool without positional embedding), p('Good photo.') vs 'Bad photo.'.",
        weights=(clip_weights("CLIP RN50 (openai)", "clipiqa", "RN50.pt"),),
        reference="Wang, Chan, Loy, AAAI 2023; code IceClear/CLIP-IQA (CLIPIQAFixed)",
        dataset_defaults={"synthetic": {"clip_model": "agiqa-tiny-rn", "pretrained": "agiqa-synth"}},
        smoke={"clip_model": "agiqa-tiny-rn", "pretrained": ""},
    ),
    MethodSpec(
        name="clipiqa.plus",
        default_run=True,
        family="deep",
        factory="baselines.clipiqa:CLIPIQAPlus",
        kind="trainable",
        summary="CLIP-IQA+: CoOp context vectors around the antonym prompts (one pair per target), CLIP frozen.",
        joint_targets=True,
        weights=(clip_weights("CLIP RN50 (openai)", "clipiqa.plus", "RN50.pt"),),
        reference="Wang, Chan, Loy, AAAI 2023; code IceClear/CLIP-IQA (CLIPIQAPredictor, CoOp prompt learner)",
        recipes={"*": "IceClear/CLIP-IQA: only a KonIQ-10k training config exists (MOS/100 into [0, 1]; here the "
                      "training part's min and max map the labels into [0, 1])"},
        # SynthAGIQA: the shipped small CLIP, native 96 px; training sized for seconds per split on a CPU
        dataset_defaults={"synthetic": {"clip_model": "agiqa-tiny-rn", "pretrained": "agiqa-synth", "epochs": 30,
                                        "batch_size": 32}},
        smoke={"clip_model": "agiqa-tiny-rn", "pretrained": "", "n_ctx": 4, "epochs": 1, "batch_size": 8,
               "selection": "last"},
    ),
]

DEFAULT_POSITIVE = "Good photo."
DEFAULT_NEGATIVE = "Bad photo."
FEATURE_VERSION = 1
#: The fit loop's pixel batch is ignored by CLIP-IQA+ (cached features are used): keep it tiny.
_IGNORED_PIXELS = 8
#: Where the class words sit among CLIP-IQA+'s context tokens, and how the contexts start (official options).
CLASS_POSITIONS = ("middle", "end", "front")
CTX_INITS = ("normal", "x")


@dataclass(frozen=True)
class CLIPIQAParams:
    """CLIP-IQA's backbone and antonym prompts (the official ones by default)."""

    clip_model: str = param("RN50-quickgelu", help="open_clip architecture")
    pretrained: str = param("openai", help="open_clip tag, checkpoint path, or '' for random weights")
    positive: str = param(DEFAULT_POSITIVE, help="the positive prompt")
    negative: str = param(DEFAULT_NEGATIVE, help="the negative prompt")
    image_size: int = param(0, ge=0, help="0: native resolution (official); N: bicubic N x N square")
    pos_embedding: bool = param(False, help="keep the visual attention pool's positional embedding (resized)")


class CLIPIQA(Method):
    """Zero-shot CLIP-IQA: p("Good photo.") against "Bad photo." (same score for every target)."""

    per_image: ClassVar[bool] = True  # per-image values cached: computed once each in the map phase

    params: ClassVar[type] = CLIPIQAParams

    def __init__(self, spec, config=None, context=None, *, name=None):
        super().__init__(spec, config, context, name=name)
        self._clip = None
        self._cache: FeatureCache | None = None
        self.info: dict[str, Any] = {}
        if not str(self.config["positive"]).strip() or not str(self.config["negative"]).strip():
            raise ConfigError(f"{spec.name}: positive and negative prompts must not be empty")

    # -- model ------------------------------------------------------------------------------
    def require_weights(self) -> None:
        problem = clip_weights_problem(self.config["clip_model"], self.config["pretrained"], self.spec.name)
        if problem:
            raise MethodUnavailable(problem)

    @property
    def clip(self):
        """The frozen open_clip model (loaded once; random weights are seeded by the context seed)."""
        if self._clip is None:
            import torch

            self.require_weights()
            torch.manual_seed(self.context.seed)
            size = int(self.config["image_size"]) if self.config["pos_embedding"] else 0
            clip = load_clip(self.config["clip_model"], self.config["pretrained"], image_size=size or None,
                             option=f"{self.spec.name}.pretrained")
            clip.requires_grad_(False)
            self._clip = clip.float().eval().to(self.context.device)
        return self._clip

    def weights_identity(self) -> dict[str, Any]:
        """What the image features depend on, for the cache namespace."""
        return open_clip_identity(self.config["clip_model"], self.config["pretrained"], self.context.seed)

    def precompute(self, items: Sequence[Item]) -> None:
        """The map phase: the frozen image encoder's features of every image (and of its mirror, which
        CLIP-IQA+ trains on when `hflip` is on)."""
        self.image_features(items)
        if self.spec.kind == "trainable" and self.config.get("hflip"):
            self.image_features(items, mirrored=True)

    def image_features(self, items: Sequence[Item], mirrored: bool = False) -> np.ndarray:
        """(n, E) image features, computed once per image (and per mirror) and cached."""
        if not items:
            return np.zeros((0, 0))
        clip = self.clip
        size = int(self.config["image_size"])
        if self.config["pos_embedding"] and not size:
            native = clip.visual.image_size
            size = int(native[0] if isinstance(native, (tuple, list)) else native)
        if self._cache is None:
            self._cache = FeatureCache(self.context.cache_dir / "features" if self.context.cache_dir else None)
        namespace = namespace_for("clipiqa-image", {
            "version": FEATURE_VERSION, **self.weights_identity(), "image_size": size,
            "pos_embedding": bool(self.config["pos_embedding"]), "mirrored": mirrored})
        device = self.context.device
        import torch

        from baselines.archs.clipiqa import encode_image

        def compute(item: Item) -> np.ndarray:
            rgb = load_rgb(item.image, size or None)
            if min(rgb.shape[:2]) < 32:
                raise ConfigError(f"{self.spec.name}: {item.image} is smaller than 32 px; CLIP cannot encode it")
            x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)
            if mirrored:
                x = x.flip(-1)
            with torch.no_grad():
                f = encode_image(clip, normalise(x.to(device)), bool(self.config["pos_embedding"]))
            return f[0].float().cpu().numpy()

        return self._cache.get(namespace, items, compute)

    def prompt_tokens(self):
        return tokenizer_for(self.config["clip_model"])([self.config["positive"], self.config["negative"]])

    # -- fit / predict ----------------------------------------------------------------------
    def fit(self, train: Sequence[Item], val: Sequence[Item], targets: Sequence[str]) -> None:
        super().fit(train, val, targets)
        self.require_weights()

    def predict(self, items: Sequence[Item]) -> np.ndarray:
        self.require_weights()
        if not items:
            return np.zeros(0, dtype=np.float64)
        import torch

        from baselines.archs.clipiqa import positive_probability

        clip = self.clip
        feats = torch.from_numpy(self.image_features(items)).float().to(self.context.device)
        with torch.no_grad():
            text = clip.encode_text(self.prompt_tokens().to(self.context.device)).float()
            p = positive_probability(feats, text, clip.logit_scale.exp().float())
        return p[:, 0].cpu().numpy().astype(np.float64)


@dataclass(frozen=True)
class CLIPIQAPlusParams(CLIPIQAParams):
    """CLIP-IQA's parameters, the CoOp prompt learner's and its training (read into TrainConfig by name)."""

    n_ctx: int = param(16, ge=1, help="learned context tokens per prompt")
    class_position: str = param("middle", choices=CLASS_POSITIONS, help="where the class words sit in the context")
    class_specific: bool = param(False, help="one context per prompt of a pair (false: shared)")
    ctx_init: str = param("normal", choices=CTX_INITS, help="normal: N(0, 0.02); x: the embedding of 'X'")
    epochs: int = param(50, ge=1, help="training epochs")
    batch_size: int = param(64, ge=1, help="training batch size")
    lr: float = param(2e-3, gt=0, help="AdamW learning rate of the contexts")
    weight_decay: float = param(0.0, ge=0, help="AdamW weight decay")
    hflip: bool = param(True, help="random horizontal flips in training (on cached mirrored features)")
    selection: str = param("val", choices=SELECTIONS, help="epoch selection: val, last, or test-oracle (labelled)")


class CLIPIQAPlus(SelectsEpochs, CLIPIQA):
    """CLIP-IQA+: CoOp contexts around the antonym prompts, one pair per target, trained per split."""

    params: ClassVar[type] = CLIPIQAPlusParams

    def __init__(self, spec, config=None, context=None, *, name=None):
        super().__init__(spec, config, context, name=name)
        self.model = None

    def build(self, n_targets: int, lo=None, hi=None):
        """The prompt learner around the frozen CLIP (contexts seeded by the context seed)."""
        import torch

        from baselines.archs.clipiqa import CLIPIQAPlusModel, PromptPairs, text_tower

        c = self.config
        clip = self.clip
        torch.manual_seed(self.context.seed)
        prompts = PromptPairs(text_tower(clip), tokenizer_for(c["clip_model"]), [c["positive"], c["negative"]],
                             n_targets, int(c["n_ctx"]), c["class_position"], bool(c["class_specific"]), c["ctx_init"])
        lo = np.zeros(n_targets) if lo is None else lo
        hi = np.ones(n_targets) if hi is None else hi
        return CLIPIQAPlusModel(clip, prompts, lo, hi).to(self.context.device)

    def train_config(self):
        # the image features are cached: `image_size` and `hflip` are not the loop's pixels (hflip: mirrored features)
        return TrainConfig.from_params(self.config, where=self.spec.name, image_size=_IGNORED_PIXELS, hflip=False,
                                       amp=False)

    def _extras(self, items: Sequence[Item]) -> list:
        import torch

        out = [torch.from_numpy(self.image_features(items)).float()]
        if self.config["hflip"]:
            out.append(torch.from_numpy(self.image_features(items, mirrored=True)).float())
        return out

    def fit(self, train: Sequence[Item], val: Sequence[Item], targets: Sequence[str]) -> None:
        self.targets = tuple(targets)
        self.require_weights()
        if not train:
            raise ConfigError(f"{self.spec.name}: no training items")
        mos = np.array([[it.targets[t] for t in self.targets] for it in train], dtype=np.float64)
        lo, hi = mos.min(axis=0), mos.max(axis=0)
        hi = np.where(hi > lo, hi, lo + 1.0)  # a constant target: any scale will do
        self.model = self.build(len(self.targets), lo, hi)
        cfg = self.train_config()
        groups = [{"params": [self.model.prompts.ctx], "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
        result = fit_regressor(self.model, groups, train, val, self.targets, cfg, device=self.context.device,
                               seed=self.context.seed, extras=self._extras, oracle=self._oracle)
        self.info = {"best_epoch": result.best_epoch, "selection": cfg.selection,
                     "train_mse_last": result.history[-1]["train_mse"]}

    # -- checkpoints (`agiqa_bench.checkpoints`) ------------------------------------------------------
    def checkpoint_state(self) -> dict:
        """The learned prompt contexts and the MOS range, plus which frozen CLIP they were learned against
        (not its tensors: the same weights must be here to restore)."""
        return {"state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "clip": self.weights_identity()}

    def load_checkpoint_state(self, state: dict) -> None:
        trained, here = dict(state["clip"]), self.weights_identity()
        keys = ("clip_model", "pretrained", "random_init_seed") + (("file",) if "file" in trained and "file" in here else ())
        if any(trained.get(k) != here.get(k) for k in keys):
            raise ConfigError(f"{self.name}: its prompts were learned against CLIP {trained}, but these parameters "
                              f"load {here}; give the same weights (--set {self.spec.name}.pretrained=...)")
        from agiqa_bench.checkpoints import load_tensors

        self.model = self.build(len(self.targets))
        load_tensors(self.model, state, self.name)

    def predict(self, items: Sequence[Item]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError(f"{self.spec.name}: predict called before fit")
        if not items:
            return np.zeros((0, len(self.targets)), dtype=np.float64)
        import torch

        feats = torch.from_numpy(self.image_features(items)).float().to(self.context.device)
        self.model.eval()
        with torch.no_grad():
            out = self.model(None, feats)
        return out.cpu().numpy().astype(np.float64).reshape(len(items), len(self.targets))
