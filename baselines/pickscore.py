"""PickScore v1: a CLIP ViT-H/14 fine-tuned on Pick-a-Pic preferences.

Reference: Y. Kirstain, A. Polyak, U. Singer, S. Matiana, J. Penna, O. Levy,
"Pick-a-Pic: An open dataset of user preferences for text-to-image
generation", NeurIPS 2023; official code yuvalkirstain/PickScore (README,
"Inference with PickScore").  Independent implementation on transformers'
CLIP classes, no code copied.

As the README computes it:

- Model ``yuvalkirstain/PickScore_v1`` (a transformers ``CLIPModel``);
  processor ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (CLIP BPE tokenizer and
  CLIP image processor: shortest side to 224, bicubic, centre crop, CLIP
  mean/std).  Both are fetched and cached by transformers on first use, or
  given as local folders (``model``, ``processor``: a value that starts with
  ``.``, ``/`` or ``~``, or exists, is a folder; see
  `agiqa_bench.weights.is_repo_id`).  Their files are checked, before any
  work and without downloading, through `agiqa_bench.weights`.
- Text tokenised with ``padding=True, truncation=True`` at the model's own
  context (77 tokens for PickScore; ``max_length=77`` in the README): longer
  prompts lose their end (see `baselines.alignment`).
- Score = ``logit_scale.exp() * cos(image, prompt)`` of the L2-normalised
  projected features (the README's ``scores`` before its softmax over a
  prompt's images).  PickScore's logit scale is 100, so scores are about
  15-25; higher = preferred / better aligned.
- Images go through the PIL image processor, the one transformers 4.27 (the
  README's version) used; transformers 5 would pick a torchvision one.

Two settings exist for offline tests only:

- ``processor="clip-bpe"``: a processor built without any download: the CLIP
  BPE tokenizer from the vocabulary that ships with open_clip (the
  vocabulary and merges of OpenAI's and LAION's CLIP tokenizers) and CLIP's
  image processor at the model's input size.  Not checked here against the
  LAION processor files (no hub access).
- ``model="random-tiny"``: a randomly initialised two-layer CLIP (64 px, 32
  tokens, seeded by the run's seed).  Its scores are meaningless; it only
  runs the PickScore code path offline (registry smoke tests).

A zero-shot metric: the same score is predicted for every target.

Deviations from the README: fp32 on every device; pairs scored in batches
with the distinct prompts of a batch padded together (CLIP's text encoder is
causal and pools at the end-of-text token, so padding does not change a
prompt's features).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agiqa_bench.hub import offline
from agiqa_bench.records import Item
from agiqa_bench.weights import HF_PREFIX, available, file_identity, is_repo_id, problem, unavailable
from baselines.alignment import (
    AlignmentScorer,
    AlignmentScorerParams,
    cosine,
    load_pil,
    unique_texts,
)
from agiqa_bench.method import MethodSpec, Weights
from agiqa_bench.params import param

SPEC = MethodSpec(
    name="pickscore",
    family="alignment",
    factory="baselines.pickscore:PickScore",
    kind="zero-shot",
    summary="PickScore v1: logit_scale * cos(image, prompt) of CLIP ViT-H/14 fine-tuned on Pick-a-Pic.",
    inputs=("image", "prompt"),
    weights=(Weights("PickScore model yuvalkirstain/PickScore_v1 (Hugging Face hub repository)", "model",
                     "downloaded by transformers on first use; offline, pass a local folder with "
                     "--set pickscore.model=PATH",
                     check="baselines.pickscore:model_available"),
             Weights("CLIP processor laion/CLIP-ViT-H-14-laion2B-s32B-b79K (Hugging Face hub repository)", "processor",
                     "downloaded by transformers on first use; offline, pass a local folder with "
                     "--set pickscore.processor=PATH",
                     check="baselines.pickscore:processor_available")),
    reference="Kirstain et al., NeurIPS 2023; code yuvalkirstain/PickScore (README)",
    default_run=False,
    # a random tiny CLIP and the offline CLIP tokenizer (documented test settings): contract tests only
    smoke={"model": "random-tiny", "processor": "clip-bpe"},
)

PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
RANDOM_TINY = "random-tiny"
OFFLINE_PROCESSOR = "clip-bpe"
#: The files a model folder / repository needs: its config and one weights file (or a sharded one's index).
MODEL_FILES = (("config.json",),
               ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json"))
#: A processor's: the image processor's settings, in their own file (the LAION repo, transformers 4) or nested in
#: processor_config.json (what transformers 5 saves), and the tokenizer.
PROCESSOR_FILES = (("preprocessor_config.json", "processor_config.json"), ("tokenizer.json", "vocab.json"))


def _repo_problem(value: str, what: str, needed, method: str, param: str) -> str | None:
    """Why a local folder or hub repository lacks a file of some group in `needed` (None: none lacking, or a
    hub repository that transformers downloads on first use).  The one weights message shape; never downloads."""
    if not is_repo_id(value):
        folder = Path(value).expanduser()
        if not folder.is_dir():
            return str(unavailable(method, param, f"the {what} folder {folder}", "no such folder"))
        missing = [group[0] for group in needed if not any((folder / f).is_file() for f in group)]
        return str(unavailable(method, param, f"the {what} folder {folder}",
                               f"it lacks {', '.join(missing)}; save one with save_pretrained")) if missing else None
    for group in needed:
        refs = [f"{HF_PREFIX}{value}/{f}" for f in group]
        if not any(available(ref) for ref in refs):
            return problem(refs[0], method=method, param=param, what=f"the {what} {value}")
    return None


def model_problem(params: dict[str, Any], method: str = "pickscore") -> str | None:
    value = str(params.get("model", PICKSCORE_MODEL)).strip()
    if value == RANDOM_TINY:
        return None
    return _repo_problem(value, "PickScore model", MODEL_FILES, method, "model")


def processor_problem(params: dict[str, Any], method: str = "pickscore") -> str | None:
    value = str(params.get("processor", PICKSCORE_PROCESSOR)).strip()
    if value == OFFLINE_PROCESSOR:
        return None
    return _repo_problem(value, "CLIP processor", PROCESSOR_FILES, method, "processor")


def _here(value: str, needed) -> bool:
    """Every group of `needed` has a file in the local folder or, for a hub repository, in the hub cache."""
    if not is_repo_id(value):
        return all(any((Path(value).expanduser() / f).is_file() for f in group) for group in needed)
    return all(any(available(f"{HF_PREFIX}{value}/{f}") for f in group) for group in needed)


def model_available(params: dict[str, Any]) -> bool:
    """For `agiqa-bench methods`: model weights present (local folder or already cached)? Never downloads."""
    value = str(params.get("model", PICKSCORE_MODEL)).strip()
    return value == RANDOM_TINY or _here(value, MODEL_FILES)


def processor_available(params: dict[str, Any]) -> bool:
    """For `agiqa-bench methods`: processor files present? Never downloads."""
    value = str(params.get("processor", PICKSCORE_PROCESSOR)).strip()
    return value == OFFLINE_PROCESSOR or _here(value, PROCESSOR_FILES)


# -- offline pieces ------------------------------------------------------------------------------
def clip_bpe_tokenizer(context_length: int = 77):
    """transformers' CLIPTokenizer built from open_clip's shipped BPE vocabulary (no download)."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    bpe = SimpleTokenizer()
    # open_clip spells the special tokens <start_of_text>/<end_of_text>; OpenAI's and HF's vocabularies
    # use <|startoftext|>/<|endoftext|> for the same ids (49406, 49407)
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {rename.get(token, token): idx for token, idx in bpe.encoder.items()}
    merges = [pair for pair, _ in sorted(bpe.bpe_ranks.items(), key=lambda kv: kv[1])]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=context_length)


def clip_image_processor(size: int = 224, from_pretrained: str | None = None, **kwargs):
    """CLIP's image processor on the PIL backend (the README-era behaviour), defaults or from a folder/repo."""
    try:
        from transformers import CLIPImageProcessorPil as Processor  # transformers >= 5
    except ImportError:  # transformers 4.x: the PIL processor is the plain class
        from transformers import CLIPImageProcessor as Processor
    if from_pretrained:
        return Processor.from_pretrained(from_pretrained, **kwargs)
    return Processor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def tiny_config():
    """The CLIPConfig of `random_tiny_model`: two layers, 64 px, 32-token context."""
    from transformers import CLIPConfig

    text = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=32, eos_token_id=49407, bos_token_id=49406, pad_token_id=49407)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=64,
                  patch_size=16)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)


def random_tiny_model(seed: int):
    """A randomly initialised tiny CLIPModel (`tiny_config`), seeded: for offline smoke tests only."""
    import torch
    from transformers import CLIPModel

    torch.manual_seed(seed)
    return CLIPModel(tiny_config())


@dataclass(frozen=True)
class PickScoreParams(AlignmentScorerParams):
    """The PickScore model and its processor."""

    model: str = param(PICKSCORE_MODEL, help="hub repository or local folder of the PickScore CLIP model")
    processor: str = param(PICKSCORE_PROCESSOR, help="hub repository or local folder of the CLIP processor")


class PickScore(AlignmentScorer):
    """PickScore v1: logit_scale * cos(image, prompt) of the Pick-a-Pic fine-tuned CLIP ViT-H/14."""

    params: ClassVar[type] = PickScoreParams
    family: ClassVar[str] = "pickscore"

    def __init__(self, spec, config=None, context=None, *, name=None):
        super().__init__(spec, config, context, name=name)
        self._processor = None
        self._text_context: int | None = None

    # -- weights -------------------------------------------------------------------------------
    def weights_problem(self) -> str | None:
        return model_problem(self.config, self.spec.name) or processor_problem(self.config, self.spec.name)

    def weights_identity(self) -> dict[str, Any]:
        ident: dict[str, Any] = {}
        for key in ("model", "processor"):
            value = str(self.config[key]).strip()
            ident[key] = value
            if not is_repo_id(value):
                folder = Path(value).expanduser()
                ident[f"{key}_files"] = {p.name: file_identity(p) for p in sorted(folder.glob("*")) if p.is_file()}
        if ident["model"] == RANDOM_TINY:
            ident["random_init_seed"] = self.context.seed
        return ident

    def _from_pretrained(self, loader, value: str, what: str, param: str):
        """`loader(value)`; a hub repository is read from the cache alone while downloads are off."""
        repo = is_repo_id(value)
        try:
            return loader(value, **({"local_files_only": True} if repo and offline() else {}))
        except Exception as exc:  # hub and file errors come in many types
            first = " ".join(str(exc).split())[:200]
            raise unavailable(self.spec.name, param, f"the {what} {value}",
                              f"transformers could not load it: {type(exc).__name__}: {first}",
                              f"the Hugging Face hub repository {value}" if repo else "") from None

    def load_model(self):
        value = str(self.config["model"]).strip()
        if value == RANDOM_TINY:
            model = random_tiny_model(self.context.seed)
        else:
            from transformers import CLIPModel

            model = self._from_pretrained(CLIPModel.from_pretrained, value, "PickScore model", "model")
        model.requires_grad_(False)
        return model.float().eval().to(self.context.device)

    def config_of_model(self):
        """The model's CLIPConfig (config.json only; no weights loaded)."""
        value = str(self.config["model"]).strip()
        if value == RANDOM_TINY:
            return tiny_config()
        from transformers import CLIPConfig

        return self._from_pretrained(CLIPConfig.from_pretrained, value, "PickScore model", "model")

    def context_length(self) -> int:
        """The text encoder's own context: its number of position embeddings (77 for PickScore)."""
        if self._text_context is None:
            self._text_context = int(self.config_of_model().text_config.max_position_embeddings)
        return self._text_context

    # -- processor -----------------------------------------------------------------------------
    def processor(self):
        """(tokenizer, image processor), loaded once."""
        if self._processor is None:
            value = str(self.config["processor"]).strip()
            if value == OFFLINE_PROCESSOR:
                size = int(self.config_of_model().vision_config.image_size)
                self._processor = (clip_bpe_tokenizer(self.context_length()), clip_image_processor(size))
            else:
                from transformers import AutoTokenizer

                tok = self._from_pretrained(AutoTokenizer.from_pretrained, value, "CLIP processor", "processor")
                img = self._from_pretrained(lambda v, **kw: clip_image_processor(from_pretrained=v, **kw), value,
                                            "CLIP processor", "processor")
                self._processor = (tok, img)
        return self._processor

    def token_counts(self, captions: Sequence[str]) -> list[int]:
        tok, _ = self.processor()
        return [len(ids) for ids in tok(list(captions), truncation=False)["input_ids"]]

    # -- scoring -------------------------------------------------------------------------------
    def score_batch(self, model: Any, items: Sequence[Item], captions: Sequence[str]) -> np.ndarray:
        import torch

        tok, img_proc = self.processor()
        device = self.context.device
        texts, index = unique_texts(captions)
        pixels = img_proc(images=[load_pil(it) for it in items], return_tensors="pt")["pixel_values"]
        text = tok(texts, padding=True, truncation=True, max_length=self.context_length(), return_tensors="pt")
        with torch.no_grad():
            img = _features(model.get_image_features(pixel_values=pixels.to(device)))
            txt = _features(model.get_text_features(input_ids=text["input_ids"].to(device),
                                                    attention_mask=text["attention_mask"].to(device)))
            cos = cosine(img.float(), txt.float()[torch.as_tensor(index, device=txt.device)])
            scores = model.logit_scale.exp().float() * cos
        return scores.cpu().numpy().astype(np.float64)


def _features(out):
    """Projected features from get_*_features (a tensor in transformers 4, an output object in 5)."""
    return out if hasattr(out, "norm") else out.pooler_output
