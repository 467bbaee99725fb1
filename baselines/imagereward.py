"""ImageReward: a BLIP reward model of human preference for text-to-image generation.

Reference: J. Xu, X. Liu, Y. Wu, Y. Tong, Q. Li, M. Ding, J. Tang, Y. Dong,
"ImageReward: Learning and evaluating human preferences for text-to-image
generation", NeurIPS 2023; official code THUDM/ImageReward (PyPI `image-reward`
1.5, module `ImageReward`: `ImageReward.py`, `models/BLIP/{blip,blip_pretrain,
med,vit}.py`).  Independent implementation on transformers' BLIP modules; no
code copied.  The `image-reward` package is not a dependency: it pins timm 0.6
(open_clip needs timm >= 1.0) and its BLIP code fails on transformers >= 4.56.

The score of an (image, prompt) pair, as the official `ImageReward.score`:

1. Image: resized so its shorter side is 224 px (bicubic, PIL), center-cropped
   to 224 x 224, converted to RGB, scaled to [0, 1] and normalised with CLIP's
   mean/std.  The steps run in that order on the image as decoded, as the
   official torchvision pipeline does (so palette and grayscale images behave
   the same); the 224 comes from the checkpoint's position table.
2. Prompt: the bert-base-uncased WordPiece tokenizer plus BLIP's two added
   tokens ([DEC] = 30522 as bos, [ENC] = 30523), padded to and truncated at
   35 tokens ([CLS] ... [SEP] [PAD] ...).  ImageReward keeps [CLS] as the first
   id; unlike BLIP's image-text matching head it does NOT replace it by [ENC].
3. The ViT-L/16 image encoder (BLIP's, final LayerNorm included) gives the
   image tokens; the BERT-base text encoder runs in BLIP's "multimodal" mode
   (bidirectional self-attention over the prompt with its padding mask, then
   cross-attention to all image tokens in every layer).
4. The hidden state of the first text token ([CLS]) of the last layer goes
   through the reward MLP 768-1024-128-64-16-1 (linear layers only: the
   official ReLUs are commented out; the dropouts are inactive at eval).
5. reward = (r - 0.16717362830052426) / 1.0333394966054072, the official
   standardisation.  Higher = preferred.

Weights: `ImageReward.pt` + `med_config.json` from the Hugging Face hub repo
THUDM/ImageReward (downloaded and cached the usual way by huggingface_hub) or
local files, and bert-base-uncased's `vocab.txt`.  The official state dict is
mapped key by key onto `BlipVisionModel` + `BlipTextModel` + `RewardMLP`
(`OFFICIAL_TO_OURS`, `IGNORED_OFFICIAL_KEYS`); the vision architecture is read
off the tensors (width, depth, patch and image size; 64-wide heads as in
BLIP's ViT-B/L), the text one from `med_config.json`, the MLP widths from the
tensors.  `tests/fixtures/imagereward_parity/` holds the parity check against
the official code (small configuration, generated weights).

Deviations: none in the computation.  The tokenizer is built with the
`tokenizers` library from the vocabulary file (transformers' `BertTokenizer`
API differs between versions and, offline, can silently load a 5-token
vocabulary); the parity test checks its ids against the official tokenizer.

Every (image, prompt) score is cached on disk per model configuration
(`FeatureCache`), so the repeats of a run, and StairReward's full-prompt
step, cost one forward pass per pair.  A zero-shot method: the same score is
predicted for every target.
"""

from __future__ import annotations

import functools
import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from torch import nn
from transformers import (
    BlipTextConfig,
    BlipTextModel,
    BlipVisionConfig,
    BlipVisionModel,
)

from agiqa_bench.clip import CLIP_MEAN, CLIP_STD
from agiqa_bench.cache import FeatureCache, namespace_for
from agiqa_bench.errors import ConfigError, MethodUnavailable
from agiqa_bench.hub import offline
from agiqa_bench.images import open_image
from agiqa_bench.method import Method, MethodSpec, Weights
from agiqa_bench.records import Item

#: This method's registry entry (registered through the `agiqa_bench.methods` entry points).
SPEC = MethodSpec(
    name="imagereward",
    family="alignment",
    factory="baselines.imagereward:ImageReward",
    kind="zero-shot",
    summary="ImageReward: BLIP (ViT-L + BERT with cross-attention) reward model of human preference, "
            "standardised score of each image against its prompt.",
    inputs=("image", "prompt"),
    weights=(Weights("ImageReward v1.0 (ImageReward.pt + med_config.json) and bert-base-uncased vocab.txt",
                     "checkpoint",
                     "downloaded from the Hugging Face hub (THUDM/ImageReward, google-bert/bert-base-uncased) "
                     "on first use; offline, pass local files with --set imagereward.checkpoint=PATH "
                     "(ImageReward.pt or its folder) and --set imagereward.tokenizer_vocab=PATH",
                     check="baselines.imagereward:weights_available"),),
    reference="Xu et al., NeurIPS 2023; code THUDM/ImageReward (image-reward 1.5), re-implemented on "
              "transformers' BLIP modules",
    smoke={"checkpoint": "agiqa-smoke"},  # tiny random-weight checkpoint shipped for smoke tests only
    default_run=False,  # needs the 1.7 GB ImageReward weights (not available offline / on synthetic)
)

HUB_PREFIX = "hf-hub:"
DEFAULT_CHECKPOINT = "hf-hub:THUDM/ImageReward"
CHECKPOINT_FILE = "ImageReward.pt"
MED_CONFIG_FILE = "med_config.json"
VOCAB_FILE = "vocab.txt"
#: Where bert-base-uncased's vocab.txt is fetched from (the official code asks for "bert-base-uncased",
#: the hub's older name of the same repository; both cache folders are looked up).
DEFAULT_VOCAB_REPOS = ("google-bert/bert-base-uncased", "bert-base-uncased")
#: bert-base-uncased's WordPiece vocabulary; BLIP adds [DEC] and [ENC] after it.
BERT_VOCAB_SIZE = 30522
BLIP_ADDED_TOKENS = ("[DEC]", "[ENC]")
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_PROMPT_TOKENS = 35
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
#: BLIP's ViTs (B/16: 768 = 12 x 64, L/16: 1024 = 16 x 64) use 64-wide attention heads.
VISION_HEAD_WIDTH = 64
#: Official ViT LayerNorm epsilon (timm's `partial(nn.LayerNorm, eps=1e-6)`).
VISION_LAYER_NORM_EPS = 1e-6
#: Built-in smoke configuration: a tiny checkpoint in the official layout with RANDOM weights
#: (baselines/weights/imagereward-smoke/, see its README).  Its scores mean nothing; it exists
#: so the contract tests can build and run the method offline in a second.
SMOKE_TAG = "agiqa-smoke"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Bump when the computation changes, so cached scores are recomputed.
SCORE_VERSION = 1

# -- the key map: official ImageReward state dict -> ours --------------------------------------
_V = r"blip\.visual_encoder\."
_T = r"blip\.text_encoder\."
_WB = r"(weight|bias)"
#: (official key pattern, our key template); every official key must match exactly one rule or
#: one entry of IGNORED_OFFICIAL_KEYS.
OFFICIAL_TO_OURS: tuple[tuple[str, str], ...] = (
    (_V + r"cls_token", r"vision.embeddings.class_embedding"),
    (_V + r"pos_embed", r"vision.embeddings.position_embedding"),
    (_V + r"patch_embed\.proj\." + _WB, r"vision.embeddings.patch_embedding.\1"),
    (_V + r"blocks\.(\d+)\.norm1\." + _WB, r"vision.encoder.layers.\1.layer_norm1.\2"),
    (_V + r"blocks\.(\d+)\.attn\.qkv\." + _WB, r"vision.encoder.layers.\1.self_attn.qkv.\2"),
    (_V + r"blocks\.(\d+)\.attn\.proj\." + _WB, r"vision.encoder.layers.\1.self_attn.projection.\2"),
    (_V + r"blocks\.(\d+)\.norm2\." + _WB, r"vision.encoder.layers.\1.layer_norm2.\2"),
    (_V + r"blocks\.(\d+)\.mlp\.(fc1|fc2)\." + _WB, r"vision.encoder.layers.\1.mlp.\2.\3"),
    (_V + r"norm\." + _WB, r"vision.post_layernorm.\1"),
    # BLIP's BERT ("med.py") and transformers' BlipTextModel use the same module names
    (_T + r"embeddings\.(word_embeddings|position_embeddings)\.weight", r"text.embeddings.\1.weight"),
    (_T + r"embeddings\.LayerNorm\." + _WB, r"text.embeddings.LayerNorm.\1"),
    (_T + r"encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.(query|key|value)\." + _WB,
     r"text.encoder.layer.\1.\2.self.\3.\4"),
    (_T + r"encoder\.layer\.(\d+)\.(attention|crossattention)\.output\.(dense|LayerNorm)\." + _WB,
     r"text.encoder.layer.\1.\2.output.\3.\4"),
    (_T + r"encoder\.layer\.(\d+)\.intermediate\.dense\." + _WB, r"text.encoder.layer.\1.intermediate.dense.\2"),
    (_T + r"encoder\.layer\.(\d+)\.output\.(dense|LayerNorm)\." + _WB, r"text.encoder.layer.\1.output.\2.\3"),
    (r"mlp\.layers\.(0|2|4|6|7)\." + _WB, r"mlp.layers.\1.\2"),
)
#: Official keys the score does not use, and why.
IGNORED_OFFICIAL_KEYS: dict[str, str] = {
    r"blip\.vision_proj\." + _WB: "BLIP's image-text contrastive projection (image side); score() never calls it",
    r"blip\.text_proj\." + _WB: "BLIP's image-text contrastive projection (text side); score() never calls it",
    _T + r"embeddings\.position_ids": "the position-id buffer (0, 1, 2, ...); ours is rebuilt, not stored",
}
_RULES = tuple((re.compile(p + r"\Z"), t) for p, t in OFFICIAL_TO_OURS)
_IGNORED = tuple(re.compile(p + r"\Z") for p in IGNORED_OFFICIAL_KEYS)


def map_official_key(key: str) -> str | None:
    """Our key for an official key; None for a documented ignored key; KeyError for an unknown one."""
    for pattern in _IGNORED:
        if pattern.match(key):
            return None
    for pattern, template in _RULES:
        if pattern.match(key):
            return pattern.sub(template, key)
    raise KeyError(key)


def convert_state_dict(official: Mapping[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """(our state dict, ignored official keys, unknown official keys)."""
    ours: dict[str, Any] = {}
    ignored: list[str] = []
    unknown: list[str] = []
    for key, value in official.items():
        try:
            mapped = map_official_key(key)
        except KeyError:
            unknown.append(key)
            continue
        if mapped is None:
            ignored.append(key)
        else:
            ours[mapped] = value
    return ours, ignored, unknown


# -- architecture ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Architecture:
    """What a checkpoint's tensors and its med_config say about the model."""

    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_mlp: int
    text: dict  # med_config.json
    mlp_widths: tuple[int, ...]  # input, 1024, 128, 64, 16, 1 for the official head


def infer_architecture(official: Mapping[str, Any], med_config: dict) -> Architecture:
    """Read the vision and MLP sizes off an official-layout state dict (shapes only)."""
    v = "blip.visual_encoder."
    try:
        width = int(official[v + "cls_token"].shape[-1])
        patch = int(official[v + "patch_embed.proj.weight"].shape[-1])
        positions = int(official[v + "pos_embed"].shape[1])
        mlp = int(official[v + "blocks.0.mlp.fc1.weight"].shape[0])
        widths = [int(official["mlp.layers.0.weight"].shape[1])]
        widths += [int(official[f"mlp.layers.{i}.weight"].shape[0]) for i in (0, 2, 4, 6, 7)]
    except KeyError as exc:
        raise ConfigError(f"not an ImageReward checkpoint: it has no tensor {exc.args[0]!r}") from None
    layers = len({k.split(".")[3] for k in official if k.startswith(v + "blocks.")})
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise ConfigError(f"ImageReward checkpoint: {positions - 1} image patches do not form a square grid")
    if width % VISION_HEAD_WIDTH:
        raise ConfigError(f"ImageReward checkpoint: vision width {width} is not a multiple of BLIP's "
                          f"{VISION_HEAD_WIDTH}-wide attention heads")
    return Architecture(image_size=grid * patch, patch_size=patch, vision_width=width, vision_layers=layers,
                        vision_mlp=mlp, text=dict(med_config), mlp_widths=tuple(widths))


def build_model(arch: Architecture):
    """ImageReward with random weights (load a state dict into it)."""
    med = arch.text
    if med.get("add_cross_attention", False) not in (True, "True", "true", 1):
        raise ConfigError("med_config.json: ImageReward's text encoder needs add_cross_attention=true")
    if med.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError("med_config.json: only absolute position embeddings are supported "
                          f"(got {med['position_embedding_type']!r})")
    vision = BlipVisionConfig(
        hidden_size=arch.vision_width, intermediate_size=arch.vision_mlp, num_hidden_layers=arch.vision_layers,
        num_attention_heads=arch.vision_width // VISION_HEAD_WIDTH, image_size=arch.image_size,
        patch_size=arch.patch_size, hidden_act="gelu", layer_norm_eps=VISION_LAYER_NORM_EPS, attention_dropout=0.0,
    )
    text = BlipTextConfig(
        vocab_size=int(med["vocab_size"]), hidden_size=int(med["hidden_size"]),
        encoder_hidden_size=arch.vision_width, intermediate_size=int(med["intermediate_size"]),
        num_hidden_layers=int(med["num_hidden_layers"]), num_attention_heads=int(med["num_attention_heads"]),
        max_position_embeddings=int(med["max_position_embeddings"]), hidden_act=med.get("hidden_act", "gelu"),
        layer_norm_eps=float(med.get("layer_norm_eps", 1e-12)), hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, pad_token_id=int(med.get("pad_token_id", 0)),
        bos_token_id=None, eos_token_id=None, sep_token_id=None,  # generation ids: unused by the encoder
        is_decoder=True,  # transformers builds the cross-attention layers only for a "decoder" config
    )
    return ImageRewardModel(vision, text, arch.mlp_widths).eval()


class RewardMLP(nn.Module):
    """The official head: linear layers with dropouts between (indices 0, 2, 4, 6, 7), no activations."""

    def __init__(self, widths: Sequence[int]):
        super().__init__()
        w = list(widths)
        if len(w) != 6:
            raise ConfigError(f"ImageReward's reward MLP has 5 linear layers; got widths {w}")
        self.layers = nn.Sequential(
            nn.Linear(w[0], w[1]), nn.Dropout(0.2), nn.Linear(w[1], w[2]), nn.Dropout(0.2),
            nn.Linear(w[2], w[3]), nn.Dropout(0.1), nn.Linear(w[3], w[4]), nn.Linear(w[4], w[5]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ImageRewardModel(nn.Module):
    """BLIP ViT + BLIP BERT with cross-attention + reward MLP; `forward` gives standardised rewards."""

    def __init__(self, vision_config: BlipVisionConfig, text_config: BlipTextConfig, mlp_widths: Sequence[int]):
        super().__init__()
        self.vision = BlipVisionModel(vision_config)
        self.text = BlipTextModel(text_config, add_pooling_layer=False)
        self.mlp = RewardMLP(mlp_widths)
        self.image_size = vision_config.image_size

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised pixels -> (B, 1 + patches, width) image tokens (final LayerNorm applied)."""
        return self.vision(pixel_values=pixels).last_hidden_state

    def reward(self, image_tokens: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Standardised rewards (B,) of prompts (B, L) against image tokens (B, N, width).

        No cross-attention mask: every image token is attended to (the official all-ones mask).
        """
        out = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_tokens,
                        is_decoder=False)
        raw = self.mlp(out.last_hidden_state[:, 0, :].float()).squeeze(-1)
        return (raw - REWARD_MEAN) / REWARD_STD

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.reward(self.encode_image(pixels), input_ids, attention_mask)


# -- tokenizer ----------------------------------------------------------------------------------
class BlipTokenizer:
    """bert-base-uncased WordPiece + BLIP's [DEC]/[ENC], padded/truncated to `max_length` ids.

    Built with the `tokenizers` library from a vocab.txt: lowercase, accents stripped, CJK
    characters split, punctuation split, [CLS] ... [SEP], [PAD] = 0.  Raises `ConfigError`
    when the vocabulary does not have `expected_size` entries (BLIP tokens included), e.g.
    a 5-token stand-in or another model's vocabulary.
    """

    def __init__(self, vocab_file: str | Path, *, expected_size: int = BERT_VOCAB_SIZE + len(BLIP_ADDED_TOKENS),
                 max_length: int = MAX_PROMPT_TOKENS, fix: str = ""):
        path = Path(vocab_file)
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the tokenizer vocabulary {path}: {exc}") from None
        if lines and lines[-1] == "":
            lines.pop()
        vocab: dict[str, int] = {}
        for index, token in enumerate(lines):
            vocab[token] = index  # as BERT's load_vocab: a repeated token keeps its last index
        missing = [t for t in BERT_SPECIAL_TOKENS if t not in vocab]
        size = len(vocab) + sum(t not in vocab for t in BLIP_ADDED_TOKENS)
        if size != expected_size or missing or vocab.get("[PAD]") != 0:
            problem = (f"it lacks {', '.join(missing)}" if missing else
                       "[PAD] is not token 0" if vocab.get("[PAD]") != 0 else
                       f"it gives {size:,} tokens with BLIP's {len(BLIP_ADDED_TOKENS)} added ones, but the text "
                       f"encoder has {expected_size:,} rows")
            raise ConfigError(
                f"wrong tokenizer vocabulary {path}: {problem}. ImageReward uses bert-base-uncased's vocab.txt "
                f"({BERT_VOCAB_SIZE:,} tokens) plus [DEC] and [ENC].{(' ' + fix) if fix else ''}"
            )
        tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                    lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.add_special_tokens(list(BERT_SPECIAL_TOKENS) + list(BLIP_ADDED_TOKENS))
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        tok.enable_truncation(max_length=max_length)
        tok.enable_padding(length=max_length, pad_id=0, pad_token="[PAD]")
        self._tok = tok
        self.vocab_file = path
        self.max_length = max_length
        self.bos_token_id = tok.token_to_id("[DEC]")
        self.enc_token_id = tok.token_to_id("[ENC]")

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), both int64 of shape (len(prompts), max_length)."""
        encs = self._tok.encode_batch([str(p) for p in prompts])
        ids = np.array([e.ids for e in encs], dtype=np.int64).reshape(len(encs), self.max_length)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64).reshape(len(encs), self.max_length)
        return ids, mask


# -- images ------------------------------------------------------------------------------------
def preprocess(image, size: int) -> np.ndarray:
    """The official transform on a PIL image: shorter side to `size` (bicubic), center crop, RGB, CLIP
    normalisation.  Returns float32 (3, size, size)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    if short != size:
        new_short, new_long = size, int(size * long / short)  # torchvision's rounding
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        image = image.resize((new_w, new_h), Image.BICUBIC)
        w, h = new_w, new_h
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)  # torchvision's center_crop
    image = image.crop((left, top, left + size, top + size)).convert("RGB")
    x = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    x = (x - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def load_pixels(path: str | Path, size: int) -> np.ndarray:
    """Decode an image file (in its own mode, as the official code opens it) and preprocess it."""
    return preprocess(open_image(path), size)


# -- weights files -----------------------------------------------------------------------------
def _cached(repo: str, filename: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, filename)
    except Exception:
        return None
    return Path(found) if isinstance(found, str) else None


def _hub_file(repos: Sequence[str], filename: str, what: str, fix: str, download: bool) -> Path | None:
    """A hub file from the local cache, else downloaded (download=True), else MethodUnavailable."""
    for repo in repos:
        found = _cached(repo, filename)
        if found is not None:
            return found
    url = f"https://huggingface.co/{repos[0]}/blob/main/{filename}"
    if not download:
        return None
    if offline():
        raise MethodUnavailable(
            f"{what}: {filename} from the Hugging Face hub repo {repos[0]} is not in the local cache and the hub is "
            f"offline (HF_HUB_OFFLINE). Download it elsewhere ({url}) and pass the file with {fix}"
        )
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repos[0], filename))
    except Exception as exc:  # hub errors come in many types; all mean "not downloadable here"
        first = " ".join(str(exc).split())[:200]
        raise MethodUnavailable(
            f"{what}: could not download {filename} from the Hugging Face hub repo {repos[0]} "
            f"({type(exc).__name__}: {first}). Download it elsewhere ({url}) and pass the file with {fix}"
        ) from None


@dataclass(frozen=True)
class Files:
    checkpoint: Path
    med_config: Path
    vocab: Path


def _local(value: str) -> Path:
    return Path(value).expanduser()


def resolve_files(params: Mapping[str, Any], method: str = "imagereward", *, download: bool = True) -> Files | None:
    """The three files a configuration needs, from local paths, the hub cache or the hub.

    Raises MethodUnavailable naming the missing file and the `--set` that fixes it.  With
    download=False, returns None instead of downloading or raising for a hub file that is not
    cached (a local file that does not exist still raises).
    """
    checkpoint = str(params.get("checkpoint") or DEFAULT_CHECKPOINT)
    med_config = str(params.get("med_config") or "")
    vocab = str(params.get("tokenizer_vocab") or "")
    folder: Path | None = None
    repo: str | None = None
    if checkpoint == SMOKE_TAG:
        folder = WEIGHTS_DIR / "imagereward-smoke"
        ckpt_path: Path | None = folder / CHECKPOINT_FILE
    elif checkpoint.startswith(HUB_PREFIX):
        repo = checkpoint[len(HUB_PREFIX):].strip("/")
        ckpt_path = _hub_file([repo], CHECKPOINT_FILE, "ImageReward weights",
                              f"--set {method}.checkpoint=PATH (the file or its folder)", download)
    else:
        path = _local(checkpoint)
        folder = path if path.is_dir() else path.parent
        ckpt_path = path / CHECKPOINT_FILE if path.is_dir() else path
    if ckpt_path is not None and not ckpt_path.is_file():
        raise MethodUnavailable(
            f"ImageReward weights file not found: {ckpt_path}. Download {CHECKPOINT_FILE} and {MED_CONFIG_FILE} "
            f"from https://huggingface.co/THUDM/ImageReward and pass them with --set {method}.checkpoint=PATH "
            f"(the file, or the folder holding both)"
        )

    if med_config.startswith(HUB_PREFIX):
        med_path = _hub_file([med_config[len(HUB_PREFIX):].strip("/")], MED_CONFIG_FILE, "ImageReward text config",
                             f"--set {method}.med_config=PATH", download)
    elif med_config:
        med_path = _local(med_config)
    elif repo is not None:
        med_path = _hub_file([repo], MED_CONFIG_FILE, "ImageReward text config",
                             f"--set {method}.med_config=PATH", download)
    else:
        med_path = folder / MED_CONFIG_FILE  # type: ignore[operator]
    if med_path is not None and not med_path.is_file():
        raise MethodUnavailable(
            f"ImageReward text config not found: {med_path}. Download {MED_CONFIG_FILE} from "
            f"https://huggingface.co/THUDM/ImageReward next to the checkpoint, or pass it with "
            f"--set {method}.med_config=PATH"
        )

    vocab_fix = f"--set {method}.tokenizer_vocab=PATH (bert-base-uncased's vocab.txt)"
    if vocab.startswith(HUB_PREFIX):
        vocab_path = _hub_file([vocab[len(HUB_PREFIX):].strip("/")], VOCAB_FILE, "ImageReward tokenizer", vocab_fix,
                               download)
    elif vocab:
        vocab_path = _local(vocab)
    elif folder is not None and (folder / VOCAB_FILE).is_file():
        vocab_path = folder / VOCAB_FILE
    else:
        vocab_path = _hub_file(DEFAULT_VOCAB_REPOS, VOCAB_FILE, "ImageReward tokenizer", vocab_fix, download)
    if vocab_path is not None and not vocab_path.is_file():
        raise MethodUnavailable(f"tokenizer vocabulary not found: {vocab_path}. Pass bert-base-uncased's vocab.txt "
                                f"with {vocab_fix}")
    if ckpt_path is None or med_path is None or vocab_path is None:
        return None
    return Files(ckpt_path, med_path, vocab_path)


def weights_available(params: dict) -> bool | None:
    """For `agiqa-bench methods`: True when every file is local or cached, False when one is missing."""
    try:
        return resolve_files(params, download=False) is not None
    except MethodUnavailable:
        return False
    except Exception:
        return None


def _file_identity(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


# -- loading ------------------------------------------------------------------------------------
@dataclass
class Scorer:
    """A loaded model, its tokenizer and its input size."""

    model: Any
    tokenizer: BlipTokenizer
    image_size: int
    device: str
    ignored_keys: tuple[str, ...] = ()

    def rewards(self, pixels: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """Rewards of one image (3, S, S) against several prompts, one forward of the ViT."""
        ids, mask = self.tokenizer.encode(prompts)
        with torch.inference_mode():
            x = torch.from_numpy(pixels)[None].to(self.device)
            tokens = self.model.encode_image(x)
            tokens = tokens.expand(len(prompts), -1, -1)
            out = self.model.reward(tokens, torch.from_numpy(ids).to(self.device),
                                    torch.from_numpy(mask).to(self.device))
        return out.double().cpu().numpy()


def load_official_state_dict(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MethodUnavailable(f"cannot read ImageReward weights {path}: {type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:200]}. Re-download {CHECKPOINT_FILE}.") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise MethodUnavailable(f"{path} is not an ImageReward state dict")
    return state


def load_scorer_from(official: Mapping[str, Any], med_config: dict, vocab_file: Path, device: str = "cpu",
                     *, source: str = "checkpoint", fix: str = "") -> Scorer:
    """Build our model from an official-layout state dict (every needed key mapped, strict load)."""
    ours, ignored, unknown = convert_state_dict(official)
    if unknown:
        warnings.warn(f"ImageReward {source}: {len(unknown)} unexpected tensor(s) ignored (first: "
                      f"{', '.join(unknown[:3])}); the official loader ignores them too", stacklevel=2)
    arch = infer_architecture(official, med_config)
    model = build_model(arch)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ours))
    if missing:
        raise ConfigError(f"ImageReward {source} lacks {len(missing)} tensor(s) the model needs "
                          f"(first: {', '.join(missing[:3])})")
    wrong = [k for k in expected if tuple(expected[k].shape) != tuple(ours[k].shape)]
    if wrong:
        k = wrong[0]
        raise ConfigError(f"ImageReward {source} does not fit its med_config: {k} has shape "
                          f"{tuple(ours[k].shape)}, the config gives {tuple(expected[k].shape)}")
    model.load_state_dict(ours, strict=True)
    model = model.to(device).eval()
    rows = int(med_config["vocab_size"])
    tokenizer = BlipTokenizer(vocab_file, expected_size=rows, fix=fix)
    return Scorer(model, tokenizer, arch.image_size, device, tuple(ignored))


def read_med_config(path: Path) -> dict:
    try:
        med = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read ImageReward's text config {path}: {exc}") from None
    need = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings")
    lacking = [k for k in need if k not in med]
    if lacking:
        raise ConfigError(f"{path} is not a BLIP med_config.json: it lacks {', '.join(lacking)}")
    return med


@functools.lru_cache(maxsize=1)
def _load_scorer_cached(checkpoint: str, med_config: str, vocab: str, device: str, fix: str, _stamp: str) -> Scorer:
    med = read_med_config(Path(med_config))
    return load_scorer_from(load_official_state_dict(Path(checkpoint)), med, Path(vocab), device,
                            source=checkpoint, fix=fix)


def load_scorer(files: Files, device: str = "cpu", method: str = "imagereward") -> Scorer:
    """The model for these files; the last one stays loaded for the next call with the same files."""
    stamp = "|".join(_file_identity(p) for p in (files.checkpoint, files.med_config, files.vocab))
    fix = f"Pass the right file with --set {method}.tokenizer_vocab=PATH"
    return _load_scorer_cached(str(files.checkpoint), str(files.med_config), str(files.vocab), device, fix, stamp)


# -- the method ---------------------------------------------------------------------------------
class ImageReward(Method):
    """Zero-shot ImageReward score of each image against its prompt (higher = better aligned/preferred)."""

    params: ClassVar[dict[str, Any]] = {
        # "hf-hub:OWNER/REPO" (ImageReward.pt there), a local ImageReward.pt, or a folder holding it
        # (and med_config.json, optionally vocab.txt); "agiqa-smoke": the tiny random smoke checkpoint.
        "checkpoint": DEFAULT_CHECKPOINT,
        "med_config": "",  # "": med_config.json next to the checkpoint (same hub repo or folder)
        "tokenizer_vocab": "",  # "": vocab.txt next to a local checkpoint, else bert-base-uncased's from the hub
    }

    def predict(self, items: Sequence[Item]) -> np.ndarray:
        if not items:
            return np.zeros(0, dtype=np.float64)
        return self.pair_scores([(item, item.prompt) for item in items])

    # shared with StairReward ----------------------------------------------------------------
    def pair_scores(self, pairs: Sequence[tuple[Item, str]]) -> np.ndarray:
        """ImageReward of each (item's image, prompt) pair, cached per pair and model configuration."""
        name = self.name
        files = resolve_files(self.config, name)  # before any work: a missing file fails here
        assert files is not None
        identity = {"score_version": SCORE_VERSION, "checkpoint": _file_identity(files.checkpoint),
                    "med_config": _file_identity(files.med_config), "vocab": _file_identity(files.vocab)}
        namespace = namespace_for("imagereward", identity)
        root = self.context.cache_dir / "features" if self.context.cache_dir else None
        keyed = [Item(id=f"{item.id}\x1f{prompt}", image=item.image, prompt=prompt, targets={}, group="")
                 for item, prompt in pairs]
        state: dict[str, Any] = {}

        def compute(pair: Item) -> np.ndarray:
            if "scorer" not in state:
                state["scorer"] = load_scorer(files, self.context.device, name)
            scorer: Scorer = state["scorer"]
            if state.get("image") != pair.image:  # consecutive prompts of one image: encode it once
                state["image"], state["pixels"] = pair.image, load_pixels(pair.image, scorer.image_size)
            return scorer.rewards(state["pixels"], [pair.prompt])

        scores = FeatureCache(root).get(namespace, keyed, compute)
        self.info = {"scored_pairs": len(keyed)}
        return scores[:, 0].astype(np.float64)
