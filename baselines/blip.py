"""ImageReward's BLIP model: the official state dict mapped onto transformers' BLIP modules, its tokenizer,
its image preprocessing, and the loaded scorer.

The computation is described in `baselines.imagereward` (the method and its
weights files); this module holds the torch/transformers side, imported only
when a model is loaded, so that reading the spec loads no model library.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from agiqa_bench.errors import ConfigError, MethodUnavailable
from agiqa_bench.images import open_image

if TYPE_CHECKING:
    from baselines.imagereward import Files

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

    def count(self, prompts: Sequence[str]) -> list[int]:
        """Ids per prompt before truncation and padding ([CLS] and [SEP] included)."""
        if getattr(self, "_counter", None) is None:
            self._counter = Tokenizer.from_str(self._tok.to_str())
            self._counter.no_truncation()
            self._counter.no_padding()
        return [len(e.ids) for e in self._counter.encode_batch([str(p) for p in prompts])]

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
                                f"{' '.join(str(exc).split())[:200]}. Re-download ImageReward.pt.") from None
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


def _vocab_fix(method: str) -> str:
    return f"Pass the right file with --set {method}.tokenizer_vocab=PATH"


def load_scorer(files: Files, device: str = "cpu", method: str = "imagereward") -> Scorer:
    """The model for these files (`baselines.alignment` keeps the last one loaded between repeats)."""
    med = read_med_config(files.med_config)
    return load_scorer_from(load_official_state_dict(files.checkpoint), med, files.vocab, device,
                            source=str(files.checkpoint), fix=_vocab_fix(method))


def load_tokenizer(files: Files, method: str = "imagereward") -> BlipTokenizer:
    """The tokenizer alone (no weights read), sized by the text config as `load_scorer` sizes it."""
    rows = int(read_med_config(files.med_config)["vocab_size"])
    return BlipTokenizer(files.vocab, expected_size=rows, fix=_vocab_fix(method))
