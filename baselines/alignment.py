"""What the zero-shot alignment scorers (CLIPScore, HPS, PickScore, ImageReward) share.

Each of them maps an (image, prompt) pair to one number with a frozen model
(two towers that encode the image and the prompt and compare them, or
ImageReward's cross-attention reward model).  The subclass says how
(`load_model`, `score_batch`); this base class does the rest:

- Weights are checked before any work (`require_weights`): a missing file,
  or hub weights that are not cached while the hub is offline, raise
  `MethodUnavailable` naming the file and the ``--set <method>.<param>=PATH``
  fix (the one shape of `agiqa_bench.weights.unavailable`).  Checks never
  download; `fetch_weights` then makes the files local (a download on first
  use) before the score namespace, which holds their identity, is computed.
- Every pair is scored once per run.  Scores live in the run's
  `FeatureCache` under a namespace made of the scorer's family name, its
  score version and everything the score depends on (weights identity,
  caption prefix, ...).  The cache key is the item id plus a digest of the
  prompt (`pair_id`; and, as for every cached feature, the image file's size
  and mtime), so an edited prompt or image is rescored.  `pair_scores` scores
  any (image, prompt) pairs, not only each item's own prompt (StairReward's
  partial prompts).  The runner builds a new method
  object for every repeat; repeats only score the pairs not seen before.
- Only the pairs missing from the cache reach the model, in batches of
  ``batch_size`` (prompts shared inside a batch are encoded once).  Scores are
  written to the cache every few batches, so a killed run keeps most of them.
- The last loaded model stays in memory for the process (`_MODEL_MEMO`, one
  model at a time, keyed by the `load_model` that built it and the weights
  identity), so the repeats of a run do not reload multi-GB weights, and
  scorers that share a loader (ImageReward, StairReward) share the model.
  Loading another scorer's model releases it.
- Prompts longer than the text encoder's context are truncated by its
  tokenizer (the end of the text is dropped, the end-of-text token is kept in
  the last position, as ``clip.tokenize(..., truncate=True)`` does).  Each
  predict counts them against the model's own context length, records
  ``info["prompts_truncated"]`` and ``info["context_length"]``, and warns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from agiqa_bench.clip import image_transform as clip_image_transform
from agiqa_bench.clip import tokenizer_for
from agiqa_bench.cache import FeatureCache, namespace_for
from agiqa_bench.errors import MethodUnavailable
from agiqa_bench.images import load_rgb
from agiqa_bench.method import Method
from agiqa_bench.params import param
from agiqa_bench.records import Item

#: How many batches are scored between two cache writes.
SAVE_EVERY_BATCHES = 8

_MODEL_MEMO: dict[str, Any] = {}


class _NotCached(Exception):
    pass


def _not_cached(item: Item) -> np.ndarray:
    raise _NotCached(item.id)


def prompt_digest(prompt: str) -> str:
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:12]


def load_pil(item: Item):
    """The item's image as an RGB PIL image (decoding errors name the file)."""
    from PIL import Image

    return Image.fromarray(load_rgb(item.image))


def unique_texts(texts: Sequence[str]) -> tuple[list[str], list[int]]:
    """Distinct texts in first-seen order and, per input, the index of its text."""
    order: dict[str, int] = {}
    index = [order.setdefault(t, len(order)) for t in texts]
    return list(order), index


def cosine(a, b):
    """Row-wise cosine similarity of two (n, d) tensors."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    return (a * b).sum(dim=-1)


def open_clip_cosines(model, tokenizer, pixels, captions: Sequence[str], device: str):
    """cos(image_i, caption_i) for an open_clip model; each distinct caption is encoded once."""
    import torch

    texts, index = unique_texts(captions)
    with torch.no_grad():
        img = model.encode_image(pixels.to(device)).float()
        txt = model.encode_text(tokenizer(texts).to(device)).float()
    return cosine(img, txt[torch.as_tensor(index, device=txt.device)])


def memo_model(key: dict[str, Any], build: Callable[[], Any]) -> Any:
    """The model for `key`, built once per process; one model is kept at a time."""
    text = json.dumps(key, sort_keys=True, default=str)
    if text not in _MODEL_MEMO:
        _MODEL_MEMO.clear()  # release the previous model before loading the next
        _MODEL_MEMO[text] = build()
    return _MODEL_MEMO[text]


@dataclass(frozen=True)
class AlignmentScorerParams:
    """What every alignment scorer has; each scorer extends it."""

    batch_size: int = param(16, ge=1, help="pairs scored per batch (speed only: pairs are scored independently)")


class AlignmentScorer(Method):
    """Base class: one score per (image, prompt) pair, cached, computed in batches.

    Subclasses set `family` and `score_version`, and implement `weights_problem`,
    `weights_identity`, `load_model`, `score_batch`, `token_counts` and
    `context_length`; `captions` maps prompts to the text actually encoded,
    `fetch_weights` makes weights files local before scoring.
    """

    per_image: ClassVar[bool] = True  # per-image values cached: computed once each in the map phase

    params: ClassVar[type] = AlignmentScorerParams
    runtime_params: ClassVar[tuple[str, ...]] = ("batch_size",)  # pairs are scored independently
    #: Cache namespace prefix: scorers of one family with equal parameters share scores.
    family: ClassVar[str] = "alignment"
    #: Bump when the computation changes, so cached scores are recomputed.
    score_version: ClassVar[str] = "1"

    def __init__(self, spec, config=None, context=None, *, name=None):
        super().__init__(spec, config, context, name=name)
        self.info: dict[str, Any] = {}

    # -- to implement ------------------------------------------------------------------
    def weights_problem(self) -> str | None:
        """Why the weights cannot be used here (None: they are here or can be downloaded)."""
        raise NotImplementedError

    def weights_identity(self) -> dict[str, Any]:
        """What the scores depend on besides the pair (weights, model, scoring parameters)."""
        raise NotImplementedError

    def fetch_weights(self) -> None:
        """Make the weights files local (downloaded and cached on first use) so that `weights_identity`
        counts them; called before scoring.  Default: nothing (the model's loader fetches its own)."""

    def load_model(self) -> Any:
        raise NotImplementedError

    def score_batch(self, model: Any, items: Sequence[Item], captions: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def token_counts(self, captions: Sequence[str]) -> list[int]:
        """Tokens per caption including the start/end tokens, before any truncation (no weights needed)."""
        raise NotImplementedError

    def context_length(self) -> int:
        """The text encoder's context in tokens (its tokenizer truncates to this)."""
        raise NotImplementedError

    def captions(self, prompts: Sequence[str]) -> list[str]:
        """The text encoded for each prompt (CLIPScore adds its prefix)."""
        return list(prompts)

    # -- shared ------------------------------------------------------------------------
    def require_weights(self) -> None:
        problem = self.weights_problem()
        if problem:
            raise MethodUnavailable(problem)

    @property
    def model(self) -> Any:
        loader = type(self).load_model
        key = {"loader": f"{loader.__module__}.{loader.__qualname__}", **self.weights_identity(),
               "device": self.context.device}
        return memo_model(key, self.load_model)

    def fit(self, train: Sequence[Item], val: Sequence[Item], targets: Sequence[str]) -> None:
        super().fit(train, val, targets)
        self.require_weights()

    def namespace(self) -> str:
        return namespace_for(self.family, {"version": self.score_version, **self.weights_identity()})

    def pair_id(self, item: Item, prompt: str) -> str:
        """The cache key of a pair (besides the image file's size and mtime)."""
        return f"{item.id}#{prompt_digest(prompt)}"

    def predict(self, items: Sequence[Item]) -> np.ndarray:
        scores = self.pair_scores([(it, it.prompt) for it in items])
        if items:
            self._count_truncated(items)
        return scores

    def pair_scores(self, pairs: Sequence[tuple[Item, str]]) -> np.ndarray:
        """The score of each (item's image, prompt) pair: cached ones read, the rest computed in batches."""
        self.require_weights()
        if not pairs:
            return np.zeros(0, dtype=np.float64)
        self.fetch_weights()
        keyed = [dataclasses.replace(it, id=self.pair_id(it, prompt), prompt=prompt) for it, prompt in pairs]
        root = self.context.cache_dir / "features" if self.context.cache_dir else None
        cache = FeatureCache(root)
        namespace = self.namespace()
        missing = [it for it in keyed if not self._cached(cache, namespace, it)]
        if missing:
            model = self.model
            step = int(self.config["batch_size"])
            chunk = step * SAVE_EVERY_BATCHES
            for start in range(0, len(missing), chunk):
                part = missing[start:start + chunk]
                scores: dict[str, float] = {}
                for b in range(0, len(part), step):
                    batch = part[b:b + step]
                    values = self.score_batch(model, batch, self.captions([it.prompt for it in batch]))
                    values = np.asarray(values, dtype=np.float64).ravel()
                    scores.update(zip((it.id for it in batch), values, strict=True))
                cache.get(namespace, part, lambda it, done=scores: np.array([done[it.id]]))
        return cache.get(namespace, keyed, _not_cached)[:, 0].astype(np.float64)

    @staticmethod
    def _cached(cache: FeatureCache, namespace: str, item: Item) -> bool:
        try:
            cache.get(namespace, [item], _not_cached)
        except _NotCached:
            return False
        return True

    def _count_truncated(self, items: Sequence[Item]) -> None:
        """Record (and warn about) prompts whose caption exceeds the text encoder's context."""
        prompts = sorted({it.prompt for it in items})
        counts = dict(zip(prompts, self.token_counts(self.captions(prompts)), strict=True))
        limit = self.context_length()
        long = {p: n for p, n in counts.items() if n > limit}
        n_items = sum(1 for it in items if it.prompt in long)
        self.info.update({"context_length": limit, "prompts_truncated": len(long), "items_truncated": n_items})
        if long:
            warnings.warn(
                f"{self.spec.name}: {len(long)} of {len(prompts)} distinct prompts ({n_items} of {len(items)} "
                f"images) exceed the text encoder's {limit}-token context (longest: {max(long.values())} tokens "
                f"with the start/end tokens); the end of each was cut off before scoring", stacklevel=3)


class OpenCLIPScorer(AlignmentScorer):
    """An alignment scorer on an open_clip model: cos(image, caption), then `from_cosine`.

    Subclasses provide `clip_model` in their params and implement `load_model`;
    `resize_on` picks the preprocessing (see `clip_image_transform`).  Images
    are encoded at the model's native input size.
    """

    resize_on: ClassVar[str] = "pil"

    def from_cosine(self, cos: np.ndarray) -> np.ndarray:
        return cos

    def tokenizer(self):
        if getattr(self, "_tokenizer", None) is None:
            self._tokenizer = tokenizer_for(self.config["clip_model"])
        return self._tokenizer

    def context_length(self) -> int:
        return int(self.tokenizer().context_length)

    def token_counts(self, captions: Sequence[str]) -> list[int]:
        tok = self.tokenizer()
        if hasattr(tok, "encode"):  # open_clip's CLIP BPE tokenizer (cleans and lower-cases like __call__)
            return [len(tok.encode(c)) + 2 for c in captions]  # + start-of-text and end-of-text
        return [len(tok.tokenizer(c)["input_ids"]) for c in captions]  # a Hugging Face tokenizer inside open_clip

    def score_batch(self, model: Any, items: Sequence[Item], captions: Sequence[str]) -> np.ndarray:
        import torch

        size = model.visual.image_size
        transform = clip_image_transform(size, self.resize_on)
        pixels = torch.stack([transform(load_pil(it)) for it in items])
        cos = open_clip_cosines(model, self.tokenizer(), pixels, captions, self.context.device)
        return self.from_cosine(cos.cpu().numpy().astype(np.float64))
