"""CLIPScore: reference-free image-caption compatibility from CLIP.

Reference: J. Hessel, A. Holtzman, M. Forbes, R. Le Bras, Y. Choi,
"CLIPScore: A reference-free evaluation metric for image captioning",
EMNLP 2021; official code jmhessel/clipscore (``clipscore.py``).
Independent implementation on open_clip, no code copied.

As the official ``get_clip_score``:

- Model: OpenAI CLIP ViT-B/32 (here open_clip ``ViT-B-32-quickgelu`` with
  the ``openai`` weights: the same weights, built with the QuickGELU
  activation they were trained with).  Any open_clip architecture and
  weights tag, or a local checkpoint file, can be chosen with ``clip_model``
  and ``pretrained``; ``clipscore.vit_l14`` is OpenAI's ViT-L/14.
- Caption: ``prefix + " " + prompt`` with the prefix "A photo depicts" (the
  official ``CLIPCapDataset`` appends the space when the prefix does not end
  with one); ``prefix=""`` encodes the bare prompt.
- Score: ``w * max(cos(E_image, E_caption), 0)`` with ``w = 2.5``, the
  features L2-normalised.  Higher = better aligned, in [0, w].
- Preprocessing (official ``_transform_test``): the image's shortest side
  resized to the model's input size (224 for ViT-B/32) with PIL bicubic,
  centre crop, CLIP mean/std.
- Long prompts: the official code tokenises with
  ``clip.tokenize(..., truncate=True)``: a caption longer than the
  77-token context (start and end tokens included) keeps its first 75 tokens
  and gets the end-of-text token in the last position; the rest of the
  prompt is not seen.  open_clip's tokenizer truncates identically, at the
  model's own context length (32 for the tiny offline models).  The prefix
  takes 3 of those tokens.  Each predict counts the prompts that were cut
  (``info["prompts_truncated"]``) and warns.

On the built-in synthetic set (``dataset_defaults``) it runs offline with the
project's small CLIP pretrained on SynthAGIQA's caption corpus
(``agiqa-tiny-rn`` / ``agiqa-synth``, 64 px input, 32-token context).  That
CLIP was trained on bare captions, without the "A photo depicts" prefix.

A zero-shot metric with no notion of targets: the same score is predicted for
every target; on AGIQA-3k it is meant for the alignment MOS.

Deviations from the official code: open_clip instead of OpenAI's ``clip``
package (same architecture and weights); features in fp32 on every device
(the official code runs CLIP in fp16 on a GPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from agiqa_bench.clip import clip_weights, clip_weights_problem, open_clip_identity
from agiqa_bench.method import MethodSpec
from agiqa_bench.params import param, with_defaults
from baselines.alignment import AlignmentScorerParams, OpenCLIPScorer

SPEC = MethodSpec(
    name="clipscore",
    default_run=True,
    family="alignment",
    factory="baselines.clipscore:CLIPScore",
    kind="zero-shot",
    summary="CLIPScore: 2.5 * max(cos(image, 'A photo depicts ' + prompt), 0) with CLIP ViT-B/32.",
    inputs=("image", "prompt"),
    variants={"vit_l14": {"clip_model": "ViT-L-14-quickgelu", "pretrained": "openai"}},
    weights=(clip_weights("CLIP ViT-B/32 (openai)", "clipscore", "ViT-B-32.pt (OpenAI's)"),),
    reference="Hessel et al., EMNLP 2021; code jmhessel/clipscore (clipscore.py)",
    dataset_defaults={"synthetic": {"clip_model": "agiqa-tiny-rn", "pretrained": "agiqa-synth"}},
    smoke={"clip_model": "agiqa-tiny-rn", "pretrained": "agiqa-synth"},
)

DEFAULT_PREFIX = "A photo depicts"
DEFAULT_W = 2.5


def caption_for(prompt: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The text CLIPScore encodes: the prefix, one space, the prompt (official CLIPCapDataset)."""
    if not prefix:
        return prompt
    return (prefix if prefix.endswith(" ") else prefix + " ") + prompt


def clipscore_from_cosine(cos: np.ndarray, w: float = DEFAULT_W) -> np.ndarray:
    """CLIPScore from the image-caption cosine similarity: w * max(cos, 0)."""
    return w * np.clip(np.asarray(cos, dtype=np.float64), 0.0, None)


@dataclass(frozen=True)
@with_defaults(batch_size=32)
class CLIPScoreParams(AlignmentScorerParams):
    """The official CLIPScore: ViT-B/32, the caption prefix and w = 2.5."""

    clip_model: str = param("ViT-B-32-quickgelu", help="open_clip architecture")
    pretrained: str = param("openai", help="open_clip tag or checkpoint path")
    prefix: str = param(DEFAULT_PREFIX, help="text put before each prompt")
    w: float = param(DEFAULT_W, gt=0, help=f"scale of the clipped cosine (the official value is {DEFAULT_W})")


class CLIPScore(OpenCLIPScorer):
    """CLIPScore = w * max(cos(image, "A photo depicts " + prompt), 0), zero-shot."""

    params: ClassVar[type] = CLIPScoreParams
    family: ClassVar[str] = "clipscore"

    def captions(self, prompts: Sequence[str]) -> list[str]:
        return [caption_for(p, str(self.config["prefix"])) for p in prompts]

    def from_cosine(self, cos: np.ndarray) -> np.ndarray:
        return clipscore_from_cosine(cos, float(self.config["w"]))

    def weights_problem(self) -> str | None:
        return clip_weights_problem(self.config["clip_model"], self.config["pretrained"], self.spec.name)

    def weights_identity(self) -> dict[str, Any]:
        return {**open_clip_identity(self.config["clip_model"], self.config["pretrained"], self.context.seed),
                "prefix": str(self.config["prefix"]), "w": float(self.config["w"])}

    def fetch_weights(self) -> None:
        from agiqa_bench.weights import is_hub_file, resolve

        if is_hub_file(self.config["pretrained"]):  # open_clip's own tags are fetched by open_clip
            resolve(self.config["pretrained"], method=self.spec.name, param="pretrained",
                    what=f"CLIP weights for {self.config['clip_model']!r}")

    def load_model(self):
        import torch

        from agiqa_bench.clip import load_clip

        torch.manual_seed(self.context.seed)  # random weights (pretrained="") are seeded by the run
        clip = load_clip(self.config["clip_model"], self.config["pretrained"], option=f"{self.spec.name}.pretrained")
        clip.requires_grad_(False)
        return clip.float().eval().to(self.context.device)
