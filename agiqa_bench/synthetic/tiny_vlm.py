"""Tiny vision-language models, generated here, so the VLM scorers (`baselines/vlm.py`) run offline.

Real large multimodal models (Qwen2.5-VL-3B, SmolVLM, ...) are multi-GB downloads; offline, and on a CPU, the
`vlm` methods still have to run end to end on SynthAGIQA.  This module writes a *tiny* model of two families
transformers loads natively, with randomly initialised weights, a tokenizer built here with the `tokenizers`
library (no hub), an image processor and a chat template, into a folder that loads through exactly the same
door as a real model (`AutoProcessor` + `AutoModelForImageTextToText.from_pretrained(folder)`):

- `agiqa-tiny-vlm`: a Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`, the family of the default backbone):
  a 2-layer language model of width 64 (4 heads, 2 key-value heads, M-RoPE sections 2/3/3, tied embeddings), a
  2-block vision tower of width 32 with 8 px patches, 2 x 2 patch merging and one full-attention block, so a
  64 px image is 8 x 8 patches and 16 image tokens; 186,656 parameters.
- `agiqa-tiny-smolvlm`: a SmolVLM (`SmolVLMForConditionalGeneration`, Idefics3 layout): a 2-layer Llama-style
  language model of width 64 and a 2-layer SigLIP-style vision tower on 32 px images (8 px patches, pixel
  shuffle 2), no image splitting.  Used to test that the loading door and the scoring are generic.

Weights: `torch.manual_seed(seed)` then the models' own initialisation with `initializer_range` 0.3 for the
Qwen (see `INIT_RANGE`), so a folder is a pure function of its configuration, its seed, the tokenizer recipe and
the installed torch/transformers.  They are *random*: such a model knows nothing about images or quality, so
zero-shot numbers with it are noise, and LoRA-tuned ones are poor (it fits its training part a little and does
not generalise; the README says so).  They exist to exercise the code, not to score images.

Tokenizer: a byte-level BPE with Qwen2's pre-tokenizer (the `Qwen2Tokenizer` class, saved as `tokenizer.json`).
Its merges are written by hand, not trained: every word of a fixed word list (the default templates, the five
level words, SynthAGIQA's prompt grammar, the chat roles) gets the chain of merges that spells it, the level
words' chains first (lowest ranks) so that " excellent", " good", " fair", " poor" and " bad" are always single
tokens; other words come out whole or in a few pieces (chains of short words cut into longer ones), any other
text falls back to smaller pieces down to single bytes (no unknown token).  Hand-written merges make the file
identical on every machine, which a trainer's tie-breaking might not.  845 tokens in all (Qwen).

Where: ``<cache>/tiny-vlm/<tag>-<config hash>/`` with ``<cache>`` the harness's cache root (``AGIQA_BENCH_CACHE``,
else ``$XDG_CACHE_HOME/agiqa_bench``, else ``~/.cache/agiqa_bench``), built once in a temporary sibling folder and
renamed into place (about a second), then reused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

#: Bump when anything below changes the generated files (config, tokenizer recipe, templates).
RECIPE_VERSION = "1"

#: The tags a `model` parameter may name instead of a hub id or a folder.
TINY_TAGS = ("agiqa-tiny-vlm", "agiqa-tiny-smolvlm")

LEVEL_WORDS = ("excellent", "good", "fair", "poor", "bad")

#: Special tokens of the Qwen2-VL family's tokenizer that the processor and the model read.
QWEN_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>")
#: Special tokens of SmolVLM's tokenizer (Idefics3 layout: the processor looks up a row/column token per tile
#: position of a grid up to 6 x 6, even when images are not split).
SMOL_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
                "<global-img>", *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)))

#: Qwen2-VL's chat template, reduced to what the scorers send (one user turn of an image and a text; the default
#: system message as Qwen2.5-VL adds it).
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
#: SmolVLM's chat template, reduced the same way.
SMOL_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")

#: Weight init std of the tiny Qwen.  transformers' default, 0.02, leaves a random 64-wide model's answer almost
#: independent of the image: LoRA-tuned on SynthAGIQA it did not even fit its training part (training-part SRCC
#: 0.06 after 10 epochs); with 0.1, 0.3 and 0.6 it reached 0.20, 0.43 and 0.36 (measured on one split).
INIT_RANGE = 0.3
QWEN_CONFIG = {
    "text_config": {"vocab_size": 0, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                    "initializer_range": INIT_RANGE, "tie_word_embeddings": True},
    "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 8,
                      "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 32, "out_hidden_size": 64,
                      "fullatt_block_indexes": [1], "initializer_range": INIT_RANGE},
    "image_size": 64,
}
SMOL_CONFIG = {
    "text_config": {"vocab_size": 0, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
                    "initializer_range": 0.02, "tie_word_embeddings": True},
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "image_size": 32, "patch_size": 8, "initializer_range": 0.02},
    "scale_factor": 2,
    "image_size": 32,
}
SEED = 0


def _word_list() -> list[str]:
    """Every word the tiny tokenizer makes a single token (besides the level words): the default templates, the
    chat roles, SynthAGIQA's grammar (counts, colours, shapes and their plurals, backgrounds, styles)."""
    from agiqa_bench.synthetic import world

    words = set()
    text = " ".join([
        "How would you rate the quality of this image? The quality of the image is",
        'How well does this image match the description "prompt"? The match between the image and the description is',
        "How would you rate the overall quality of this image, considering how well it matches the description? "
        "The overall quality of the image is",
        "How would you rate the authenticity of this image? The authenticity of the image is",
        "You are a helpful assistant. system user assistant User Assistant",
        " ".join(world.COUNT_WORDS.values()), " ".join(world.OBJECT_COLOURS), " ".join(world.BACKGROUND_COLOURS),
        " ".join(world.SHAPES), " ".join(world._plural(s) for s in world.SHAPES),
        " ".join(s for s in world.STYLES if s),
        "on a background",
    ])
    for word in text.replace("?", " ").replace(",", " ").replace(".", " ").replace('"', " ").split():
        words.add(word)
    return sorted(words)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, which byte-level BPE vocabularies are written in."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, (chr(c) for c in chars)))


def build_tokenizer(special: tuple[str, ...], *, eos: str, pad: str):
    """The tiny byte-level BPE tokenizer (a `Qwen2Tokenizer`, whatever the family: the same pre-tokenizer)."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    table = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for b in range(256):
        vocab[table[b]] = b
    merges: list[tuple[str, str]] = []

    def chain(word: str) -> None:
        symbols = [table[b] for b in word.encode("utf-8")]
        current = symbols[0]
        for nxt in symbols[1:]:
            merged = current + nxt
            if merged not in vocab:
                merges.append((current, nxt))
                vocab[merged] = len(vocab)
            current = merged

    for word in LEVEL_WORDS:  # first: the lowest ranks, so these chains always complete
        chain(" " + word)
    for word in LEVEL_WORDS:
        chain(word)
    for word in _word_list():
        chain(" " + word)
        chain(word)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token=eos, pad_token=pad)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in special], special_tokens=True)
    tok.eos_token, tok.pad_token = eos, pad
    tok.model_max_length = 2048
    return tok


def recipe(tag: str) -> dict:
    """Everything a tiny model's files depend on (its folder is named by this recipe's hash)."""
    if tag not in TINY_TAGS:
        raise ValueError(f"unknown tiny VLM {tag!r}; known: {', '.join(TINY_TAGS)}")
    config = QWEN_CONFIG if tag == "agiqa-tiny-vlm" else SMOL_CONFIG
    return {"tag": tag, "recipe": RECIPE_VERSION, "seed": SEED, "config": config, "words": _word_list(),
            "levels": list(LEVEL_WORDS)}


def recipe_hash(tag: str) -> str:
    return hashlib.sha256(json.dumps(recipe(tag), sort_keys=True).encode()).hexdigest()[:12]


def folder_for(tag: str, root: str | Path | None = None) -> Path:
    """Where the tiny model `tag` lives (generated or not)."""
    if root is None:
        from agiqa_bench.datasets import cache_root

        root = cache_root() / "tiny-vlm"
    return Path(root) / f"{tag}-{recipe_hash(tag)}"


def is_complete(folder: Path) -> bool:
    return (folder / "agiqa-tiny-vlm.json").is_file()


def ensure(tag: str, root: str | Path | None = None) -> Path:
    """The folder of the tiny model `tag`, generated on first use (a temporary sibling renamed into place)."""
    folder = folder_for(tag, root)
    if is_complete(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        write(tag, tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process published it meanwhile (or a stale incomplete folder is in the way)
            if not is_complete(folder):
                shutil.rmtree(folder, ignore_errors=True)
                tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def write(tag: str, folder: str | Path) -> Path:
    """Generate the tiny model `tag` into `folder` (model, tokenizer, processor, chat template)."""
    import torch

    folder = Path(folder)
    spec = recipe(tag)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["seed"])
        if tag == "agiqa-tiny-vlm":
            model, processor = _qwen(spec["config"])
        else:
            model, processor = _smol(spec["config"])
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder, safe_serialization=True)
        processor.save_pretrained(folder)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    (folder / "agiqa-tiny-vlm.json").write_text(json.dumps({**spec, "hash": recipe_hash(tag)}, indent=1,
                                                           sort_keys=True) + "\n")
    return folder


def _qwen(config: dict):
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor)
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tok = build_tokenizer(QWEN_SPECIAL, eos="<|im_end|>", pad="<|endoftext|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    text = {**config["text_config"], "vocab_size": len(tok), "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"]}
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=dict(config["vision_config"]),
                           image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                           vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                           tie_word_embeddings=True)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    vision = config["vision_config"]
    pixels = config["image_size"] ** 2
    size = {"shortest_edge": 16 * 16, "longest_edge": pixels}
    kwargs = dict(patch_size=vision["patch_size"], temporal_patch_size=vision["temporal_patch_size"],
                  merge_size=vision["spatial_merge_size"], size=size)
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**kwargs), tokenizer=tok,
                                    video_processor=Qwen2VLVideoProcessor(**kwargs), chat_template=QWEN_CHAT_TEMPLATE)
    return model, processor


def _smol(config: dict):
    """SmolVLM (v1: `HuggingFaceTB/SmolVLM-*-Instruct` are `Idefics3ForConditionalGeneration`)."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

    tok = build_tokenizer(SMOL_SPECIAL, eos="<end_of_utterance>", pad="<|endoftext|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in SMOL_SPECIAL}
    text = {**config["text_config"], "vocab_size": len(tok), "model_type": "llama",
            "bos_token_id": ids["<|im_start|>"], "eos_token_id": ids["<end_of_utterance>"],
            "pad_token_id": ids["<|endoftext|>"]}
    cfg = Idefics3Config(text_config=text, vision_config=dict(config["vision_config"]),
                         scale_factor=config["scale_factor"], image_token_id=ids["<image>"], tie_word_embeddings=True,
                         pad_token_id=ids["<|endoftext|>"])
    model = Idefics3ForConditionalGeneration(cfg).eval()
    side = config["image_size"]
    image_processor = Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": side},
                                             max_image_size={"longest_edge": side})
    seq = (side // config["vision_config"]["patch_size"]) ** 2 // config["scale_factor"] ** 2
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=seq,
                                  chat_template=SMOL_CHAT_TEMPLATE)
    return model, processor
