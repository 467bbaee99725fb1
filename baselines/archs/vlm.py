"""Vision-language models as quality scorers: the one loading door, the level-token score, and a small LoRA.

Used by `baselines/vlm.py` (the `vlm` and `vlm.zero_shot` methods); imported only when a model is built.

Loading (`load_backbone`): every backbone goes through `AutoProcessor` + `AutoModelForImageTextToText`
`.from_pretrained(...)` with the model's own chat template, whatever the family (Qwen2-VL, Qwen2.5-VL,
SmolVLM/Idefics3, LLaVA-OneVision, ...).  The reference (`resolve_model`) is a hub id
(`Qwen/Qwen2.5-VL-3B-Instruct`), a local folder, or a tag of a tiny model generated here
(`agiqa_bench.synthetic.tiny_vlm`).  A hub model that is not cached while downloads are off
(`agiqa_bench.hub.offline`) is a `MethodUnavailable` in the one shape of `agiqa_bench.weights.unavailable`:
the model, why, where it comes from, and the `--set <method>.model=PATH` that supplies a local copy.

Scoring, as Q-Align's scorer (Q-Future/Q-Align ``q_align/evaluate/scorer.py``) and DeQA-Score's
(``src/evaluate/scorer.py``) compute it: one user turn holding the image and a question, the assistant's
answer opened with fixed words ("The quality of the image is"), then the logits of the *next* token at the
last position, restricted to the five level words (excellent, good, fair, poor, bad), a softmax over those five,
and score = sum_i p_i w_i.  Only one forward pass, no `generate()`, no sampling, no text parsing.  Each level
word must be exactly one token right after the answer words (`level_token_ids`), else a one-line
`MethodUnavailable` says which word, which model and which answer.

LoRA (`add_lora`): W x + (alpha / r) B A dropout(x) on the chosen `nn.Linear` modules, A initialised as peft
does (Kaiming-uniform, a = sqrt(5)), B zeros (so the wrapped model starts exactly as the base model), every base
parameter frozen.  Adapters are float32 whatever the base dtype.  `lora_state` / `load_lora_state` move only
the adapter tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from agiqa_bench.errors import ConfigError, MethodUnavailable

#: Q-Align's five levels, best first, and the value of each (DeQA-Score's weights 5..1; Q-Align's scorer uses
#: (w - 1) / 4 = 1, 0.75, 0.5, 0.25, 0, the same ranking).
LEVEL_WORDS = ("excellent", "good", "fair", "poor", "bad")
LEVEL_VALUES = (5.0, 4.0, 3.0, 2.0, 1.0)

#: Where the language model and the vision-language projector sit in transformers' image-text-to-text classes.
LANGUAGE_MODEL_PATHS = ("model.language_model", "model.text_model", "language_model", "model.model")
PROJECTOR_PATHS = ("model.visual.merger", "model.connector", "model.multi_modal_projector", "visual.merger",
                   "multi_modal_projector", "connector")


# -- references -------------------------------------------------------------------------------------
def is_tiny(ref: str) -> bool:
    from agiqa_bench.synthetic.tiny_vlm import TINY_TAGS

    return str(ref).strip() in TINY_TAGS


def _is_hub_id(ref: str) -> bool:
    from agiqa_bench.weights import is_repo_id

    return is_repo_id(ref) and "/" in ref


def hub_snapshot(ref: str) -> Path | None:
    """The cached snapshot folder of hub model `ref` (its config.json is there), or None; never downloads."""
    from agiqa_bench.weights import hf_cached

    found = hf_cached(ref, "config.json")
    return Path(found).parent if found else None


def model_identity(ref: str) -> dict[str, str]:
    """What the scores depend on about the model: a tiny tag's recipe hash, a hub id and its cached revision,
    or the identity (sizes + sha256 prefixes) of a local folder's files."""
    from agiqa_bench.weights import identity

    ref = str(ref).strip()
    if is_tiny(ref):
        from agiqa_bench.synthetic.tiny_vlm import recipe_hash

        return {"model": ref, "recipe": recipe_hash(ref)}
    if _is_hub_id(ref):
        snap = hub_snapshot(ref)
        return {"model": ref, "revision": snap.name if snap is not None else "not cached"}
    return {"model": ref, "files": identity(Path(ref).expanduser())}


def model_problem(ref: str, method: str) -> str | None:
    """Why `ref` cannot be loaded here (one line in the weights shape), found without loading; None if it can."""
    from agiqa_bench.hub import offline
    from agiqa_bench.weights import OFFLINE_WHY, unavailable

    ref = str(ref).strip()
    if not ref:
        return str(unavailable(method, "model", "the vision-language model", "no model given"))
    if is_tiny(ref):
        return None
    if _is_hub_id(ref):
        if hub_snapshot(ref) is None and offline():
            return str(unavailable(method, "model", f"the model {ref}", OFFLINE_WHY, f"https://huggingface.co/{ref}"))
        return None
    path = Path(ref).expanduser()
    if not (path / "config.json").is_file():
        why = "no such folder" if not path.exists() else "no config.json in it (a transformers model folder)"
        return str(unavailable(method, "model", f"the model folder {path}", why))
    return None


def resolve_model(ref: str, method: str) -> str:
    """The folder (or hub id, when downloads are on) `from_pretrained` reads; raises `MethodUnavailable`."""
    problem = model_problem(ref, method)
    if problem:
        raise MethodUnavailable(problem)
    ref = str(ref).strip()
    if is_tiny(ref):
        from agiqa_bench.synthetic.tiny_vlm import ensure

        return str(ensure(ref))
    if _is_hub_id(ref):
        snap = hub_snapshot(ref)
        return str(snap) if snap is not None else ref
    return str(Path(ref).expanduser())


# -- loading -------------------------------------------------------------------------------------
@dataclass
class Backbone:
    """A loaded vision-language model and its processor."""

    model: Any
    processor: Any
    ref: str
    dtype: Any

    @property
    def tokenizer(self):
        return self.processor.tokenizer


def load_backbone(ref: str, *, method: str, device: str = "cpu", bf16: bool = True) -> Backbone:
    """Processor and model of `ref` through the one door (bf16 weights on CUDA when `bf16`, else float32), in
    eval mode with every parameter frozen."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from agiqa_bench.weights import unavailable

    where = resolve_model(ref, method)
    dtype = torch.bfloat16 if bf16 and str(device).startswith("cuda") else torch.float32
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar per repeat in the run's output
    try:
        processor = AutoProcessor.from_pretrained(where)
        model = AutoModelForImageTextToText.from_pretrained(where, dtype=dtype)
    except (OSError, ValueError) as exc:  # not downloadable, not a model folder, an architecture transformers lacks
        why = " ".join(str(exc).split())[:200]
        raise MethodUnavailable(str(unavailable(method, "model", f"the model {ref}", f"transformers cannot load it: "
                                                                                     f"{why}"))) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"  # the answer's next token is the last position of every row
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.requires_grad_(False)
    model.eval().to(device)
    return Backbone(model=model, processor=processor, ref=str(ref), dtype=dtype)


def find_module(model, paths: Sequence[str]):
    """The first submodule of `model` found at one of the dotted `paths`, or None."""
    for path in paths:
        module = model
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if module is not None:
            return module
    return None


def language_model(model):
    found = find_module(model, LANGUAGE_MODEL_PATHS)
    if found is None:
        raise ConfigError(f"cannot find the language model inside {type(model).__name__} (looked at "
                          f"{', '.join(LANGUAGE_MODEL_PATHS)})")
    return found


def projector(model):
    return find_module(model, PROJECTOR_PATHS)


# -- prompts and the level-token score -------------------------------------------------------------
def chat_text(processor, question: str, answer: str) -> str:
    """The model's chat template around one user turn (the image, then `question`), the generation prompt, and
    the assistant's opening `answer` words (a space is put in where the template ends without one)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if answer:
        text += ("" if not text or text[-1].isspace() else " ") + answer
    return text


def level_token_ids(tokenizer, answer: str, words: Sequence[str], *, method: str, model: str,
                    answer_param: str = "answer") -> list[int]:
    """The token id of each level word where it follows `answer` in the finished sentence (" excellent" after
    "... is"; after an answer that ends with a space, the word as written); each must be exactly one token and leave
    the answer's own tokens unchanged, else a one-line `MethodUnavailable`."""
    base = tokenizer.encode(answer, add_special_tokens=False)
    sep = "" if not answer or answer[-1].isspace() else " "
    out = []
    for word in words:
        full = tokenizer.encode(answer + sep + word, add_special_tokens=False)
        if full[:len(base)] != base:
            pieces = tokenizer.convert_ids_to_tokens(full[max(0, len(base) - 2):])
            raise MethodUnavailable(
                f"{method}: the answer {answer!r} and the level word {word!r} share a token for the model {model} "
                f"(the sentence ends in {pieces}), so no single next-token logit is the level's: end the answer "
                f"before the word, without a trailing space (--set {method}.{answer_param}=...)")
        if len(full) != len(base) + 1:
            pieces = tokenizer.convert_ids_to_tokens(full[len(base):])
            raise MethodUnavailable(
                f"{method}: the level word {word!r} after the answer {answer!r} is {len(pieces)} tokens for the model "
                f"{model} ({pieces}), not one; the score reads one next-token logit per level: choose single-token "
                f"level words (--set {method}.levels=...) or another answer")
        out.append(full[-1])
    if len(set(out)) != len(out):
        raise MethodUnavailable(f"{method}: two level words share one token for the model {model} ({list(words)} -> "
                                f"{out}); choose distinct level words (--set {method}.levels=...)")
    return out


def level_probabilities(logits, ids: Sequence[int]):
    """Softmax over the level tokens' logits: (B, V) -> (B, len(ids)), float32."""
    import torch

    idx = torch.as_tensor(list(ids), device=logits.device)
    return torch.softmax(logits.float().index_select(-1, idx), dim=-1)


def expected_level(probs, values: Sequence[float] = LEVEL_VALUES):
    """sum_i p_i w_i per row."""
    import torch

    w = torch.as_tensor(list(values), dtype=probs.dtype, device=probs.device)
    return probs @ w


def batch_inputs(backbone: Backbone, images: Sequence[np.ndarray], texts: Sequence[str], device: str) -> dict:
    """Processor outputs for images (uint8 H x W x 3) and chat texts, on `device`, floating tensors in the
    model's dtype."""
    import torch
    from PIL import Image

    pil = [[Image.fromarray(im)] for im in images]
    inputs = backbone.processor(text=list(texts), images=pil, padding=True, return_tensors="pt")
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if value.is_floating_point():
                value = value.to(backbone.dtype)
        out[key] = value
    return out


def next_token_logits(model, inputs: dict):
    """(B, V) logits of the token after the last position (left-padded rows), computed for that position only."""
    out = model(**inputs, use_cache=False, logits_to_keep=1)
    return out.logits[:, -1, :]


# -- LoRA ------------------------------------------------------------------------------------------
def _lora_class():
    import torch
    from torch import nn

    class LoRALinear(nn.Module):
        """base(x) + (alpha / r) * B(A(dropout(x))); A Kaiming-uniform (a = sqrt 5) as peft, B zeros; float32."""

        def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float):
            super().__init__()
            self.base = base
            self.r, self.alpha = int(r), float(alpha)
            self.scaling = self.alpha / self.r
            device = base.weight.device
            self.lora_A = nn.Linear(base.in_features, self.r, bias=False, device=device, dtype=torch.float32)
            self.lora_B = nn.Linear(self.r, base.out_features, bias=False, device=device, dtype=torch.float32)
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B.weight)
            self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

        def forward(self, x):
            out = self.base(x)
            delta = self.lora_B(self.lora_A(self.dropout(x).to(torch.float32))) * self.scaling
            return out + delta.to(out.dtype)

    return LoRALinear


def add_lora(model, *, targets: Sequence[str], r: int, alpha: float, dropout: float = 0.0,
             include_projector: bool = False) -> list[str]:
    """Wrap, in place, every `nn.Linear` of the language model whose own name is in `targets` (q_proj, v_proj,
    ...) and, with `include_projector`, every `nn.Linear` of the vision-language projector; freeze everything
    else.  Returns the wrapped modules' names (in `model.named_modules()` order).  Seed torch before calling:
    A is drawn from its generator."""
    from torch import nn

    LoRALinear = _lora_class()
    model.requires_grad_(False)
    lm = language_model(model)
    wanted = set(targets)
    chosen = [m for name, m in lm.named_modules() if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in wanted]
    if include_projector:
        proj = projector(model)
        if proj is None:
            raise ConfigError(f"cannot find the vision-language projector inside {type(model).__name__} (looked at "
                              f"{', '.join(PROJECTOR_PATHS)}); set lora_projector=false")
        chosen += [m for m in proj.modules() if isinstance(m, nn.Linear)]
    if not chosen:
        raise ConfigError(f"no linear layer named {', '.join(sorted(wanted))} in the language model of "
                          f"{type(model).__name__}; choose lora_targets among its layer names (q_proj, k_proj, ...)")
    ids = {id(m) for m in chosen}
    names = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if id(child) in ids:
                setattr(module, child_name, LoRALinear(child, r, alpha, dropout))
                names.append(f"{name}.{child_name}" if name else child_name)
    return names


def lora_parameters(model) -> dict[str, Any]:
    """The adapter parameters by name (what is trained)."""
    return {name: p for name, p in model.named_parameters() if ".lora_A." in name or ".lora_B." in name}


def lora_state(model) -> dict[str, Any]:
    """The adapter tensors only, on the CPU (a checkpoint's payload)."""
    return {name: p.detach().cpu().clone() for name, p in lora_parameters(model).items()}


def load_lora_state(model, state: dict[str, Any]) -> None:
    """Put adapter tensors back into a model wrapped by `add_lora` with the same configuration."""
    import torch

    params = lora_parameters(model)
    missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or extra:
        raise ConfigError(f"the checkpoint's adapters do not fit this model: {len(missing)} missing (first: "
                          f"{missing[:1]}), {len(extra)} unexpected (first: {extra[:1]})")
    with torch.no_grad():
        for name, p in params.items():
            value = state[name]
            if tuple(value.shape) != tuple(p.shape):
                raise ConfigError(f"the checkpoint's adapter {name} has shape {tuple(value.shape)}, this model's "
                                  f"{tuple(p.shape)}")
            p.copy_(value.to(p.device, p.dtype))
