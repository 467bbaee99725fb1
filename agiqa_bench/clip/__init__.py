"""The harness's one door to open_clip: configs, tokenizers, weights, image geometry.

Every CLIP-based method (IP-IQA, CLIP-IQA, CLIPScore, HPS, ...) loads CLIP from
here; no method imports another for it.

`load_clip(model, pretrained)`:
- `model`: any open_clip architecture name (`RN50-quickgelu`, `ViT-B-32`, ...) or one
  of this project's tiny offline configurations (`agiqa-tiny-rn`, `agiqa-tiny-vit`,
  in `agiqa_bench/clip/model_configs/`).
- `pretrained`: an open_clip tag (`openai`, `laion2b_s34b_b79k`, ...; downloaded
  the normal way and cached), a local checkpoint file (a state dict, open_clip's
  format, or OpenAI's JIT archive), a checkpoint file on the Hugging Face hub
  (`hf-hub:owner/repo/file[@revision]`, fetched by `agiqa_bench.weights` and
  loaded as a local file), `agiqa-synth` for the small CLIP pretrained
  on SynthAGIQA's caption corpus that ships with the package, or "" / None for
  random weights.

OpenAI's CLIP weights were trained with QuickGELU; use the `-quickgelu`
architecture names (the IP-IQA default is `RN50-quickgelu`) so a local copy of
`RN50.pt` is built with the activation it was trained with.
"""

from __future__ import annotations

import functools
from typing import Any
from pathlib import Path

from agiqa_bench.errors import ConfigError, MethodUnavailable
from agiqa_bench.weights import is_hub_file, is_local

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
TINY_MODELS = ("agiqa-tiny-rn", "agiqa-tiny-vit")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Tag of the CLIP pretrained on SynthAGIQA's caption corpus, shipped in agiqa_bench/clip/weights/ (see its README).
SYNTH_TAG = "agiqa-synth"


def builtin_weights(model: str, pretrained: str | None) -> str | None:
    """Resolve the built-in `agiqa-synth` tag to the shipped checkpoint file (None for other tags)."""
    if pretrained != SYNTH_TAG:
        return pretrained
    path = WEIGHTS_DIR / f"{model}-synth.pt"
    if not path.is_file():
        raise MethodUnavailable(
            f"no built-in synthetic CLIP for {model!r} in this installation ({path} is missing). "
            "Rebuild it with the commands in agiqa_bench/clip/weights/README.md, or pick another --set ...pretrained=."
        )
    return str(path)


@functools.cache
def register_configs() -> None:
    """Make open_clip know the tiny offline configurations (once per process)."""
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)


def weights_available(model: str, pretrained: str | None) -> bool | None:
    """Whether the weights are here: a local file exists, or a hub tag is already in the cache.

    False for a tag means "not cached yet": with internet open_clip downloads it on first use.
    """
    if not pretrained:
        return True
    if pretrained == SYNTH_TAG:
        return (WEIGHTS_DIR / f"{model}-synth.pt").is_file()
    if is_local(pretrained):
        return Path(pretrained).expanduser().is_file()
    if is_hub_file(pretrained):
        from agiqa_bench.weights import available

        return available(pretrained)
    try:
        import open_clip
        from huggingface_hub import try_to_load_from_cache

        register_configs()
        cfg = open_clip.get_pretrained_cfg(model, pretrained) or {}
        repo = cfg.get("hf_hub", "").rstrip("/")
        if not repo:
            return None
        names = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_pytorch_model.safetensors")
        return any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)
    except Exception:
        return None


def check_weights(params: dict, thorough: bool = False) -> bool | None:
    """Availability of a method's CLIP weights from its params (for `agiqa-bench methods`).

    Cheap by default (file checks only: a local file, a hub file in the cache; an open_clip tag is
    "unknown"); `thorough` asks open_clip which hub repository a tag names and looks in the cache.
    """
    model, pretrained = params.get("clip_model", ""), params.get("pretrained", "openai")
    if not thorough and pretrained and pretrained != SYNTH_TAG and not (is_local(pretrained) or is_hub_file(pretrained)):
        return None
    return weights_available(model, pretrained)


def clip_weights(what: str, method: str, local_file: str, param: str = "pretrained"):
    """The spec entry (`MethodSpec.weights`) of a method's open_clip weights, checked by `check_weights`."""
    from agiqa_bench.method import Weights

    return Weights(what, param, f"downloaded by open_clip on first use; offline, pass a local {local_file} with "
                                f"--set {method}.{param}=PATH", check="agiqa_bench.clip:check_weights")


def clip_weights_problem(model: str, pretrained: str | None, method: str, param: str = "pretrained") -> str | None:
    """Why open_clip weights (`model`, `pretrained`) cannot be loaded here; None if they can be (or downloaded).

    The text is the one shape of every weights error (`agiqa_bench.weights.unavailable`).
    """
    from agiqa_bench.hub import offline
    from agiqa_bench.weights import OFFLINE_WHY, problem, unavailable

    if not pretrained:
        return None
    if pretrained == SYNTH_TAG:
        path = WEIGHTS_DIR / f"{model}-synth.pt"
        return None if path.is_file() else str(unavailable(
            method, param, f"the built-in synthetic CLIP for {model!r}", f"{path} is missing from this installation",
            "agiqa_bench/clip/weights/README.md (how to rebuild it)"))
    if is_local(pretrained):
        path = Path(str(pretrained)).expanduser()
        return None if path.is_file() else str(unavailable(
            method, param, f"CLIP weights {path} for {model!r}", "no such file"))
    if is_hub_file(pretrained):
        return problem(pretrained, method=method, param=param, what=f"CLIP weights for {model!r}")
    if offline() and weights_available(model, pretrained) is False:
        sources = ""
        try:
            import open_clip

            register_configs()
            cfg = open_clip.get_pretrained_cfg(model, pretrained) or {}
            parts = [f"hf-hub:{cfg['hf_hub'].rstrip('/')}" if cfg.get("hf_hub") else "", cfg.get("url", "")]
            sources = " or ".join(p for p in parts if p)
        except Exception:
            pass
        return str(unavailable(method, param, f"CLIP weights {model}/{pretrained}", OFFLINE_WHY, sources))
    return None


def load_clip(model: str, pretrained: str | None, *, image_size: int | None = None, option: str = "ipiqa.pretrained"):
    """An open_clip CLIP model (eval mode, fp32, on the CPU).

    `option` is the `--set` option that takes a local checkpoint, named in the error when weights are missing.
    """
    import open_clip

    from agiqa_bench.weights import resolve, unavailable

    register_configs()
    if model not in open_clip.list_models():
        raise ConfigError(f"unknown CLIP architecture {model!r}; see open_clip.list_models() or use one of {TINY_MODELS}")
    kwargs = {"force_image_size": image_size} if image_size else {}
    pretrained = builtin_weights(model, pretrained)
    if not pretrained:
        import logging

        logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # "initialized randomly" is intended
        return open_clip.create_model(model, pretrained=None, **kwargs).eval()
    if is_local(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            method, _, param = option.rpartition(".")
            raise unavailable(method, param, f"CLIP weights {path} for {model!r}", "no such file")
        return _create_from_file(model, path, kwargs)
    if is_hub_file(pretrained):
        method, _, param = option.rpartition(".")
        return _create_from_file(model, resolve(pretrained, method=method, param=param,
                                                what=f"CLIP weights for {model!r}"), kwargs)
    if pretrained not in open_clip.list_pretrained_tags_by_model(model):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise ConfigError(f"open_clip has no weights {pretrained!r} for {model!r}; its tags: {tags}; or give a file path")
    try:
        return open_clip.create_model(model, pretrained=pretrained, **kwargs).eval()
    except Exception as exc:  # hub errors come in many types; all mean "not downloadable here"
        method, _, param = option.rpartition(".")
        raise unavailable(method, param, f"CLIP weights {model}/{pretrained}",
                          f"open_clip could not load them: {type(exc).__name__}: {_first_sentence(exc)}; with "
                          "internet it downloads and caches them on first use",
                          "the checkpoint open_clip names for this tag (e.g. OpenAI's RN50.pt for "
                          "RN50-quickgelu/openai)") from None


def _create_from_file(model: str, path: Path, kwargs: dict):
    import open_clip

    try:
        return open_clip.create_model(model, pretrained=str(path), **kwargs).eval()
    except RuntimeError as exc:
        raise MethodUnavailable(f"CLIP weights {path} do not fit architecture {model!r}: {str(exc)[:400]}") from None


def _first_sentence(exc: Exception, limit: int = 240) -> str:
    """The start of an exception message, cut at a sentence or line end rather than mid-word."""
    text = " ".join(str(exc).split())
    for stop in (". ", "\n"):
        if stop in text[:limit]:
            return text[: text.index(stop)]
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def tokenizer_for(model: str):
    import open_clip

    register_configs()
    return open_clip.get_tokenizer(model)


def synth_checkpoint(model: str) -> Path:
    """The shipped SynthAGIQA CLIP checkpoint for architecture `model` (may not exist for every model)."""
    return WEIGHTS_DIR / f"{model}-synth.pt"


def resize_attnpool_pos_embed(pos, grid: int):
    """Bicubically resize a (1 + g*g, C) attention-pool positional embedding to (1 + grid*grid, C).

    The leading token (the mean token's slot) is kept as is, as in the IP-IQA reference code.
    """
    import torch
    import torch.nn.functional as F

    old = int(round((pos.shape[0] - 1) ** 0.5))
    if old == grid:
        return pos
    lead, spatial = pos[:1], pos[1:]
    spatial = spatial.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    spatial = F.interpolate(spatial, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([lead, spatial.permute(0, 2, 3, 1).reshape(grid * grid, -1)], dim=0)


def image_transform(size, resize_on: str = "pil"):
    """CLIP's evaluation transform: shortest side to `size` (bicubic), centre crop, CLIP normalisation.

    resize_on="pil": resize the PIL image (OpenAI's ``clip`` preprocess, open_clip's, CLIPScore's).
    resize_on="tensor": convert to a [0, 1] tensor first and resize the tensor (HPSv2's fork of
    open_clip does this; torchvision antialiases tensor resizes since 0.17).
    """
    from torchvision import transforms as T

    side = int(size[0] if isinstance(size, (tuple, list)) else size)
    resize = T.Resize(side, interpolation=T.InterpolationMode.BICUBIC)
    crop = T.CenterCrop(side)
    norm = T.Normalize(CLIP_MEAN, CLIP_STD)
    if resize_on == "pil":
        return T.Compose([resize, crop, T.ToTensor(), norm])
    if resize_on == "tensor":
        return T.Compose([T.ToTensor(), resize, crop, norm])
    raise ValueError(f"resize_on must be 'pil' or 'tensor', not {resize_on!r}")


def open_clip_identity(model: str, pretrained: str | None, seed: int) -> dict[str, Any]:
    """What an open_clip model's outputs depend on: architecture, weights tag or file, or the init seed.

    A hub file counts by the identity of its cached copy once it is here (before that, by its reference).
    """
    from agiqa_bench.weights import file_identity, resolve

    ident: dict[str, Any] = {"clip_model": model, "pretrained": pretrained or ""}
    if not pretrained:
        ident["random_init_seed"] = seed
    elif pretrained == SYNTH_TAG:
        ident["file"] = file_identity(WEIGHTS_DIR / f"{model}-synth.pt")
    elif is_local(pretrained):
        ident["file"] = file_identity(pretrained)
    elif is_hub_file(pretrained):
        try:
            ident["file"] = file_identity(resolve(pretrained, method="?", param="?", download=False))
        except MethodUnavailable:
            pass
    return ident
