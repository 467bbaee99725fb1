"""StairReward (approximation): ImageReward over a prompt's "stairs", subject first.

Reference: C. Li, Z. Zhang, H. Wu, W. Sun, X. Min, X. Liu, G. Zhai, W. Lin,
"AGIQA-3K: An open database for AI-generated image quality assessment",
IEEE TCSVT 2023 (arXiv 2306.04717), which proposes StairReward for
text-to-image alignment.  NO CODE IS PUBLIC and the paper does not give the
formula in enough detail to reproduce it.  What is known: AGIQA-3k prompts are
a subject plus optional adjective and style morphemes (data.csv columns
`adj1`, `adj2`, `style`, appended to the prompt as comma-separated parts, e.g.
"a biomechanical blue raspberry made of metal, top view, realistic style");
StairReward scores the prompt piece by piece with ImageReward so that the
subject counts most.  THE FORMULA BELOW IS OUR RECONSTRUCTION, not the
authors' method; results are labelled `stairreward.approx`.

Reconstruction:

1. Stairs.  The prompt is cut at its commas.  The last K comma-separated parts
   are the morphemes, the rest is the subject, where K is the number of
   non-empty `adj1` / `adj2` / `style` values of the item (AGIQA-3k's
   columns, kept in `Item.meta`); when the item has none of these columns
   (other datasets), every part after the first is a morpheme.  K never
   exceeds the number of commas, so a morpheme written inside the subject
   (no comma) stays in the subject.  The stairs are the cumulative prompts
       p_0 = subject, p_1 = subject + ", " + m_1, ..., p_K = the full prompt
   (each cut from the prompt text itself; p_K is the prompt exactly, so its
   score is shared with the `imagereward` method's cache).
2. Each stair is scored with ImageReward against the image: s_k = IR(image, p_k)
   (standardised ImageReward, the same model, preprocessing and per-pair
   cache as `baselines.imagereward`).
3. Aggregation with a decaying "stair" weight, parameter d = `decay`
   (default 0.5, 0 <= d <= 1):
       StairReward = sum_k d^k s_k / sum_k d^k,   k = 0..K
   d = 0 keeps the subject's score only, d = 1 is the plain mean over the
   stairs, and a prompt without morphemes gets its ImageReward score.

Cumulative prompts (rather than each morpheme alone) because ImageReward was
trained on whole prompts: "top view" alone says little about an image, while
"subject, top view" asks whether the subject is shown from the top.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from agiqa_bench.method import MethodSpec, Weights
from agiqa_bench.params import param
from agiqa_bench.records import Item
from baselines.imagereward import ImageReward, ImageRewardParams

SPEC = MethodSpec(
    name="stairreward.approx",
    family="alignment",
    factory="baselines.stairreward:StairRewardApprox",
    kind="zero-shot",
    summary="StairReward (reconstruction): ImageReward of the cumulative prompt stairs (subject, then + each "
            "adjective/style morpheme), weighted d^k (decay=0.5).",
    inputs=("image", "prompt"),
    aliases=("stairreward",),
    weights=(Weights("ImageReward v1.0 (ImageReward.pt + med_config.json) and bert-base-uncased vocab.txt",
                     "checkpoint",
                     "the same files as imagereward; offline, pass them with "
                     "--set stairreward.approx.checkpoint=PATH and --set stairreward.approx.tokenizer_vocab=PATH",
                     check="baselines.imagereward:weights_available"),),
    reference="Li et al., AGIQA-3K, TCSVT 2023 (arXiv 2306.04717; no public code)",
    approximation="no code or exact formula is public; the stair decomposition (comma-separated morphemes "
                  "counted from the adj1/adj2/style columns) and the d^k-weighted mean of ImageReward scores "
                  "are our reconstruction, not the authors' StairReward",
    smoke={"checkpoint": "agiqa-smoke"},  # tiny random-weight checkpoint shipped for smoke tests only
    default_run=False,  # needs the 1.7 GB ImageReward weights (not available offline / on synthetic)
)

#: AGIQA-3k's morpheme columns, in prompt order.
MORPHEME_COLUMNS = ("adj1", "adj2", "style")
DEFAULT_DECAY = 0.5


def _present(value: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(str(value).strip())


def morpheme_count(meta: Mapping[str, Any] | None) -> int | None:
    """Number of non-empty morpheme columns, or None when the item has none of the columns."""
    if not meta or not any(col in meta for col in MORPHEME_COLUMNS):
        return None
    return sum(_present(meta.get(col)) for col in MORPHEME_COLUMNS)


def stair_prompts(prompt: str, meta: Mapping[str, Any] | None = None) -> list[str]:
    """[subject, subject + m_1, ..., full prompt]; see the module docstring for the rule."""
    ends: list[int] = []  # end index (exclusive) of each non-empty comma-separated part
    start = 0
    for i, ch in enumerate(prompt + ","):
        if ch == ",":
            if prompt[start:i].strip():
                ends.append(i)
            start = i + 1
    if len(ends) <= 1:
        return [prompt]
    count = morpheme_count(meta)
    k = len(ends) - 1 if count is None else min(count, len(ends) - 1)
    stairs = [prompt[:end].strip() for end in ends[len(ends) - 1 - k:-1]]
    return stairs + [prompt]


def stair_weights(n: int, decay: float) -> np.ndarray:
    """Normalised weights d^0, d^1, ..., d^(n-1)."""
    w = np.array([decay ** k for k in range(n)], dtype=np.float64)  # 0 ** 0 == 1
    return w / w.sum()


def stair_reward(scores: Sequence[float], decay: float = DEFAULT_DECAY) -> float:
    """sum_k d^k s_k / sum_k d^k over the stairs' ImageReward scores (subject first)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("stair_reward needs at least one score")
    return float(stair_weights(s.size, decay) @ s)


@dataclass(frozen=True)
class StairRewardApproxParams(ImageRewardParams):
    """ImageReward's files and the stairs' decay."""

    decay: float = param(DEFAULT_DECAY, ge=0, le=1, help="weight d^k of the k-th shorter stair (a decaying weight)")


class StairRewardApprox(ImageReward):
    """Decay-weighted ImageReward over cumulative prompt stairs (a reconstruction; see the module docstring)."""

    params: ClassVar[type] = StairRewardApproxParams

    def predict(self, items: Sequence[Item]) -> np.ndarray:
        decay = float(self.config["decay"])
        self.require_weights()
        if not items:
            return np.zeros(0, dtype=np.float64)
        stairs = [stair_prompts(item.prompt, item.meta) for item in items]
        pairs = [(item, p) for item, prompts in zip(items, stairs) for p in prompts]
        scores = self.pair_scores(pairs)  # ImageReward's per-pair cache: the full prompts are shared with it
        out = np.empty(len(items), dtype=np.float64)
        at = 0
        for i, prompts in enumerate(stairs):
            out[i] = stair_reward(scores[at:at + len(prompts)], decay)
            at += len(prompts)
        self._count_truncated(items)  # the full prompt is the longest stair
        self.info.update({"scored_pairs": len(pairs), "mean_stairs": len(pairs) / len(items)})
        return out
