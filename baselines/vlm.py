"""Large multimodal model (LMM) scorers: the Q-Align recipe on any vision-language model transformers loads.

References: H. Wu et al., "Q-Align: Teaching LMMs for Visual Scoring via Discrete Text-Defined Levels",
ICML 2024 (code Q-Future/Q-Align); Z. You et al., "Teaching Large Language Models to Regress Accurate Image
Quality Scores using Score Distribution" (DeQA-Score), CVPR 2025 (code zhiyuanyou/DeQA-Score); Q-Insight
(Li et al. 2025, GRPO-trained reasoning, Qwen2.5-VL) and M3-AGIQA (Cui et al. 2025, MLLM descriptions + an
xLSTM head) are relatives we do not implement.  Most LMM IQA methods ship custom model code pinned to old
transformers (Q-Align and DeQA-Score: mPLUG-Owl2, pinned to transformers 4.31.0 and 4.36.1); here the *shared
recipe* runs on models transformers supports natively, through one loading door (`baselines.archs.vlm.load_backbone`:
`AutoProcessor` + `AutoModelForImageTextToText`): Qwen2-VL / Qwen2.5-VL (default `Qwen/Qwen2.5-VL-3B-Instruct`),
SmolVLM (v1, Idefics3 layout, e.g. `HuggingFaceTB/SmolVLM-500M-Instruct`), LLaVA-OneVision, ...; a local folder
works wherever a hub id does.

Two methods:

- ``vlm.zero_shot``: the pretrained model as it is.  Per target, one user turn = the image and a fixed
  question, the assistant's answer opened with fixed words; the next-token logits of the five level words
  (excellent, good, fair, poor, bad), softmax over those five, score = sum_i p_i w_i with w = 5, 4, 3, 2, 1
  (DeQA-Score's weights; Q-Align's scorer returns (score - 1) / 4, the same ranking).  One forward pass per
  (image, target), deterministic, no generation and no text parsing.  The five probabilities are cached per image
  (per image and prompt for templates that read the prompt), so repeats cost one pass.
- ``vlm``: the same model with LoRA adapters trained on each split, as Q-Align trains: the training part's
  labels are mapped to the five levels, the model learns to answer the level word (cross-entropy on that token),
  epochs are selected on the validation groups (``selection=val``; ``last``; ``test-oracle`` labelled), and the
  prediction is the expected level mapped back to the label scale.  One adapter set learns every target of the
  dataset at once (each training image gives one example per target, with that target's template; Q-Align's
  OneAlign trains one model on several tasks the same way).

Templates (``template_version`` 1; the defaults below, every one a parameter, recorded with every result row
through the resolved configuration and in the row's info)::

    quality       Q: How would you rate the quality of this image?
                  A: The quality of the image is <level>                                  (Q-Align's, verbatim)
    alignment     Q: How well does this image match the description "{prompt}"?
                  A: The match between the image and the description is <level>
    overall       Q: How would you rate the overall quality of this image, considering how well it matches
                     the description "{prompt}"?
                  A: The overall quality of the image is <level>
    authenticity  Q: How would you rate the authenticity of this image?
                  A: The authenticity of the image is <level>

The image comes first in the user turn (the Qwen-VL / SmolVLM convention); Q-Align's mPLUG-Owl2 prompt puts the
question first ("USER: How would you rate the quality of this image?\\n<|image|>\\nASSISTANT: The quality of
the image is").  Bump ``template_version`` whenever a default template changes.

Labels to levels (``vlm``): the runner hands `fit` labels standardised on the training part (`label_scale`
STANDARD); they are cut into five equal-width bins between the training part's minimum and maximum, right-closed
(level 1 = bad for the lowest fifth ... level 5 = excellent), exactly Q-Align's rule (paper Sec. 3.2, DeQA-Score's
``get_level``) except that Q-Align takes the minimum and maximum over the whole dataset, test images included,
while here only the training part is seen.  Equal-width bins rather than quantiles, because the levels then keep
the labels' own spacing, and the expected level maps back to labels affinely: prediction = lo + (E - 0.5) (hi -
lo) / 5, E = sum_i p_i k_i in [1, 5], so level k's prediction is the centre of its bin.  Both maps commute with
any affine map of the labels, so the ranking does not depend on the dataset's scale (tests/test_label_scale.py).

LoRA (our own ~40 lines, `baselines.archs.vlm.add_lora`; no peft): on the language model's ``q_proj`` and
``v_proj`` by default (``lora_targets``; ``lora_projector=true`` adds the vision-language projector: Qwen's
merger, SmolVLM's connector, LLaVA's multi_modal_projector), r = 64, alpha = 16, dropout 0.05 (Q-Align's
``lora_r``/``lora_alpha``/``lora_dropout`` defaults), A Kaiming-uniform as peft, B zeros; everything else frozen;
AdamW lr 2e-4, no weight decay, 3 % linear warm-up then cosine, 3 epochs, 32 examples per update (8 x 4
accumulated), bf16 weights on GPU (Q-Align's agi-5split-lora.sh: lr 2e-4, wd 0, warm-up 0.03, cosine, 3 epochs,
batch 32, bf16).  Kept checkpoints hold the adapters, the level bins and the configuration only (a few MB); the
base model is rebuilt from its id or folder when one is restored, and must be the same one (checked).

Where we differ from Q-Align / DeQA-Score (also in docs/fidelity.md):
- Backbone: any native transformers VLM instead of mPLUG-Owl2 (their released weights are not loadable here).
- Q-Align trains LoRA on *every* linear layer of the LLM, tunes the visual abstractor fully (lr 2e-5) and
  unfreezes the vision tower; our default adapts q_proj/v_proj only (``lora_targets`` takes any list, e.g.
  ``q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj``), the projector only by LoRA, the vision tower never.
- Loss on the level token only (``loss=vocabulary``: its cross-entropy over the whole vocabulary, the default;
  ``loss=levels``: over the five level tokens, the softmax the score reads, used on SynthAGIQA); Q-Align's LM loss
  covers every token of the answer ("The quality of the image is good."), whose other tokens are constant text.
  DeQA-Score's soft labels (a Gaussian over the levels from the MOS and its std, KL loss) are not implemented:
  hard levels, as Q-Align.
- Level bins from the training part only (Q-Align: the whole dataset's range); image padded to a square with the
  processor's mean colour and resized to ``image_size`` (448, Q-Align's input size) before the model's own
  processor (Qwen then sees 16 x 16 = 256 image tokens; Q-Align's CLIP-L/14 processor does the same padding).
- Selection on validation groups by default; Q-Align reports the last checkpoint.

GPU: real backbones are refused on a CPU in one line (``allow_cpu=true`` forces them); bf16 on CUDA.  Memory (the
spec's `resources`, printed by ``agiqa-bench methods vlm --details``) is estimated from parameter counts x bytes
plus activations, not measured here (no GPU was available when this was written); ``benchmarks/gpu_check.py``
has a ``vlm`` step that measures it.

Offline: on the built-in synthetic dataset both methods use ``agiqa-tiny-vlm``, a Qwen2.5-VL of 0.19 M random
parameters generated here (`agiqa_bench.synthetic.tiny_vlm`), so they run end to end without a download; their
numbers there mean nothing (zero-shot: noise; LoRA-tuned: poor) and say only that the machinery works.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from agiqa_bench.errors import ConfigError, MethodUnavailable
from agiqa_bench.method import Method, MethodSpec, SelectsEpochs, Weights
from agiqa_bench.params import param
from agiqa_bench.records import Item
from agiqa_bench.training import SELECTIONS

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
TINY_MODEL = "agiqa-tiny-vlm"
#: The targets a template exists for, in this order.
TEMPLATE_TARGETS = ("quality", "alignment", "overall", "authenticity")
TEMPLATES = {
    "quality": ("How would you rate the quality of this image?", "The quality of the image is"),
    "alignment": ('How well does this image match the description "{prompt}"?',
                  "The match between the image and the description is"),
    "overall": ('How would you rate the overall quality of this image, considering how well it matches the '
                'description "{prompt}"?', "The overall quality of the image is"),
    "authenticity": ("How would you rate the authenticity of this image?", "The authenticity of the image is"),
}
TEMPLATE_VERSION = "1"
LEVELS = "excellent,good,fair,poor,bad"
#: Without targets (`agiqa_bench.score`), a zero-shot model answers this target's question.
SCORE_TARGET = "quality"
SCORE_VERSION = 1
#: The training loss: cross-entropy of the answer's level token over the whole vocabulary (Q-Align's language-model
#: loss on that token) or over the five level tokens only (the softmax the score reads).
LOSSES = ("vocabulary", "levels")

#: SynthAGIQA: the generated tiny Qwen2.5-VL at 64 px (its processor's size: 8 x 8 patches, 16 image tokens),
#: training sized for seconds per split on a CPU: small adapters on q/v and the merger, a higher learning rate,
#: more epochs (the tiny random model needs them to move at all), and the cross-entropy over the five level
#: tokens: the tiny model's frozen random output layer cannot lift them over its 845-token vocabulary (with the
#: vocabulary loss its training-part quality SRCC after 10 epochs was 0.10, with the levels loss 0.43; one split).
SYNTHETIC_ZERO_SHOT = {"model": TINY_MODEL, "image_size": 64, "batch_size": 32}
SYNTHETIC = {**SYNTHETIC_ZERO_SHOT, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "lora_projector": True,
             "epochs": 8, "lr": 3e-3, "batch_size": 16, "grad_accum": 1, "warmup": 0.0, "eval_batch_size": 32,
             "loss": "levels"}
SMOKE_ZERO_SHOT = {"model": TINY_MODEL, "image_size": 64, "batch_size": 16}
SMOKE = {**SMOKE_ZERO_SHOT, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "epochs": 1, "lr": 3e-3,
         "batch_size": 8, "grad_accum": 1, "warmup": 0.0, "selection": "last"}

_REFERENCE = ("Q-Align (Wu et al., ICML 2024; code Q-Future/Q-Align) and its scorer as DeQA-Score's (You et al., "
              "CVPR 2025), on native transformers VLMs")
_WEIGHTS = Weights(
    f"the vision-language model (default {DEFAULT_MODEL}, Hugging Face hub; SmolVLM/Idefics3, LLaVA-OneVision and "
    "other AutoModelForImageTextToText models work too)", "model",
    "transformers downloads it on first use; offline, give a local model folder with --set vlm.model=PATH "
    "(vlm.zero_shot.model for the zero-shot method)", check="baselines.vlm:model_available")
#: Estimated, not measured (see the module docstring): bf16 weights = parameters x 2 bytes; inference at
#: 448 px, batch 8, no KV cache, the logits of the last position only; LoRA: adapters + AdamW states in fp32,
#: activations of the language model kept for the backward pass (~100 KB per token per layer at width 2048).
RESOURCES = {
    "inference, Qwen2.5-VL-3B-Instruct (default)": "about 9 GB of GPU memory: 3.75 B parameters in bf16 = 7.5 GB, "
        "plus activations of ~330 tokens x batch 8 (estimated from the parameter count, not measured)",
    "LoRA training, Qwen2.5-VL-3B-Instruct (default)": "about 20 GB: 7.5 GB frozen bf16 weights, 15 M adapter "
        "parameters on q/v (r 64) with fp32 AdamW states (0.25 GB), ~10 GB of activations at batch 8 x ~330 tokens x "
        "36 layers; batch_size=2 with grad_accum=16 fits about 12 GB (estimated, not measured)",
    "inference, SmolVLM-500M-Instruct (second family)": "about 2 GB: 0.51 B parameters in bf16 = 1 GB, plus "
        "activations (estimated)",
    "LoRA training, SmolVLM-500M-Instruct (second family)": "about 5 GB at batch 8 (estimated)",
    "CPU": "refused for real backbones (one line) unless allow_cpu=true; the offline tiny model "
           "(agiqa-tiny-vlm, 0.19 M parameters) runs on a CPU in seconds",
}

SPECS = [
    MethodSpec(
        name="vlm",
        factory="baselines.vlm:VLMLoRA",
        kind="trainable",
        family="",
        summary="Q-Align recipe, LoRA-tuned per split: five text levels as the answer token of a vision-language "
                "model (default Qwen2.5-VL-3B), expected level mapped back to MOS.",
        inputs=("image", "prompt"),
        targets=TEMPLATE_TARGETS,
        joint_targets=True,
        variants={"test_oracle": {"selection": "test-oracle"}},
        weights=(_WEIGHTS,),
        reference=_REFERENCE,
        dataset_defaults={"synthetic": SYNTHETIC},
        recipes={"synthetic": "the generated tiny Qwen2.5-VL (random weights: poor numbers, offline machinery "
                              "check), a CPU-sized schedule",
                 "*": "Q-Align's LoRA scripts (scripts/agi-5split-lora.sh): lr 2e-4, cosine, warm-up 3 %, 3 epochs, "
                      "batch 32, bf16; q/v adapters only (see baselines/vlm.py)"},
        resources=RESOURCES,
        default_run=False,
        smoke=SMOKE,
    ),
    MethodSpec(
        name="vlm.zero_shot",
        factory="baselines.vlm:VLMZeroShot",
        kind="zero-shot",
        family="",
        summary="Q-Align's zero-shot scorer on a pretrained vision-language model (default Qwen2.5-VL-3B): "
                "softmax over the next-token logits of excellent/good/fair/poor/bad, expected level.",
        inputs=("image", "prompt"),
        targets=TEMPLATE_TARGETS,
        joint_targets=True,
        weights=(_WEIGHTS,),
        reference=_REFERENCE,
        dataset_defaults={"synthetic": SYNTHETIC_ZERO_SHOT},
        recipes={"synthetic": "the generated tiny Qwen2.5-VL (random weights: its scores are noise)"},
        resources={k: v for k, v in RESOURCES.items() if not k.startswith("LoRA")},
        default_run=False,
        smoke=SMOKE_ZERO_SHOT,
    ),
]


def model_available(params: dict[str, Any]) -> bool:
    """For `agiqa-bench methods`: is the model here (a tiny tag, a local folder, a cached hub model)?  Never
    downloads, imports no model library."""
    from baselines.archs.vlm import model_problem

    return model_problem(str(params.get("model", DEFAULT_MODEL)), "vlm") is None


# -- parameters -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class VLMZeroShotParams:
    """The backbone, the templates and the levels (see the module docstring)."""

    model: str = param(DEFAULT_MODEL, help="hub id, local model folder, or a tiny offline tag (agiqa-tiny-vlm, "
                                           "agiqa-tiny-smolvlm)")
    quality_template: str = param(TEMPLATES["quality"][0], help="the question for the quality target")
    quality_answer: str = param(TEMPLATES["quality"][1], help="the answer's opening words before the level word")
    alignment_template: str = param(TEMPLATES["alignment"][0], help="the question for alignment ({prompt}: the prompt)")
    alignment_answer: str = param(TEMPLATES["alignment"][1], help="the answer's opening words for alignment")
    overall_template: str = param(TEMPLATES["overall"][0], help="the question for the overall target")
    overall_answer: str = param(TEMPLATES["overall"][1], help="the answer's opening words for overall")
    authenticity_template: str = param(TEMPLATES["authenticity"][0], help="the question for authenticity")
    authenticity_answer: str = param(TEMPLATES["authenticity"][1], help="the answer's opening words for authenticity")
    template_version: str = param(TEMPLATE_VERSION, help="the templates' version, recorded with every row (bump it "
                                                         "when you change a template)")
    levels: str = param(LEVELS, help="the five level words, best first, comma-separated (one token each)")
    image_size: int = param(448, ge=16, help="images padded to a square (processor mean colour) and resized to "
                                             "this side before the model's processor (Q-Align: 448)")
    bf16: bool = param(True, help="bf16 weights on CUDA (CPU: float32)")
    allow_cpu: bool = param(False, help="run a real (multi-GB) backbone on the CPU anyway (hours)")
    batch_size: int = param(8, ge=1, help="images per forward pass (speed and memory only)")


@dataclass(frozen=True)
class VLMLoRAParams(VLMZeroShotParams):
    """The zero-shot parameters, the LoRA adapters and their training (Q-Align's LoRA recipe by default)."""

    lora_targets: str = param("q_proj,v_proj", help="comma-separated names of the language model's linear layers "
                                                    "that get adapters")
    lora_r: int = param(64, ge=1, help="adapter rank (Q-Align: 64)")
    lora_alpha: float = param(16.0, gt=0, help="adapter scale alpha (the update is alpha / r x B A x; Q-Align: 16)")
    lora_dropout: float = param(0.05, ge=0, lt=1, help="dropout on the adapters' input (Q-Align: 0.05)")
    lora_projector: bool = param(False, help="also put adapters on the vision-language projector's linear layers")
    epochs: int = param(3, ge=1, help="training epochs (Q-Align LoRA: 3)")
    lr: float = param(2e-4, gt=0, help="AdamW learning rate of the adapters (Q-Align LoRA: 2e-4)")
    weight_decay: float = param(0.0, ge=0, help="AdamW weight decay")
    warmup: float = param(0.03, ge=0, lt=1, help="fraction of the updates with a linear warm-up, then cosine decay")
    batch_size: int = param(8, ge=1, help="training examples (image x target) per forward pass")
    grad_accum: int = param(4, ge=1, help="forward passes accumulated per update (update = batch_size x grad_accum)")
    eval_batch_size: int = param(8, ge=1, help="images per forward pass when scoring (speed and memory only)")
    selection: str = param("val", choices=SELECTIONS, help="epoch selection: val, last, or test-oracle (labelled)")
    loss: str = param("vocabulary", choices=LOSSES, help="cross-entropy of the level token over the whole vocabulary "
                                                        "(Q-Align's LM loss) or over the five level tokens only")


# -- shared machinery -------------------------------------------------------------------------------
class _VLMBase(Method):
    """What both methods share: parameters to templates, the GPU and weights checks, images, scoring."""

    def __init__(self, spec, config=None, context=None, *, name=None):
        super().__init__(spec, config, context, name=name)
        self.info: dict[str, Any] = {}
        self._images: dict[str, np.ndarray] = {}
        self._level_ids: dict[str, list[int]] = {}
        words = self.level_words
        if len(words) != 5 or len(set(words)) != 5 or not all(words):
            raise ConfigError(f"{spec.name}.levels: five distinct level words, best first, comma-separated; got "
                              f"{self.config['levels']!r}")
        for target in TEMPLATE_TARGETS:
            question = self.config[f"{target}_template"]
            try:
                question.format(prompt="x")
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(f"{spec.name}.{target}_template: only {{prompt}} may appear in braces; "
                                  f"{question!r} fails ({type(exc).__name__}: {exc})") from None

    # -- configuration -----------------------------------------------------------------------------
    @property
    def level_words(self) -> tuple[str, ...]:
        return tuple(w.strip() for w in str(self.config["levels"]).split(","))

    def template(self, target: str) -> tuple[str, str]:
        """(question, answer opening) of `target`."""
        if target not in TEMPLATE_TARGETS:
            raise ConfigError(f"{self.spec.name}: no template for target {target!r}; it has templates for "
                              f"{', '.join(TEMPLATE_TARGETS)}")
        return self.config[f"{target}_template"], self.config[f"{target}_answer"]

    def reads_prompt(self, target: str) -> bool:
        return "{prompt}" in self.template(target)[0]

    def score_targets(self) -> tuple[str, ...]:
        return self.targets or (SCORE_TARGET,)

    @property
    def uses_prompts(self) -> bool:
        return any(self.reads_prompt(t) for t in self.score_targets())

    def templates_info(self) -> dict:
        return {"template_version": self.config["template_version"],
                "templates": {t: list(self.template(t)) for t in self.score_targets()},
                "levels": list(self.level_words), "model": self.config["model"]}

    def weights_identity(self) -> dict[str, str]:
        from baselines.archs.vlm import model_identity

        return {f"model_{k}": v for k, v in model_identity(self.config["model"]).items()}

    @property
    def dtype_name(self) -> str:
        return "bfloat16" if self.config["bf16"] and str(self.context.device).startswith("cuda") else "float32"

    # -- checks ------------------------------------------------------------------------------------
    def require(self) -> None:
        """One line, before any work: a real backbone on a CPU (unless allow_cpu), or a model that is not here."""
        from baselines.archs.vlm import is_tiny, model_problem

        model = str(self.config["model"]).strip()
        if not is_tiny(model) and not str(self.context.device).startswith("cuda") and not self.config["allow_cpu"]:
            raise MethodUnavailable(
                f"{self.spec.name}: {model} is a real vision-language model and this run has no GPU (device "
                f"{self.context.device}); run it with --device cuda, or --set {self.spec.name}.allow_cpu=true to run "
                f"it on the CPU anyway (very slow)")
        problem = model_problem(model, self.spec.name)
        if problem:
            raise MethodUnavailable(problem)

    # -- images and batches --------------------------------------------------------------------------
    def image(self, item: Item, fill: tuple[int, int, int]) -> np.ndarray:
        """The item's image padded to a square with `fill` (Q-Align's expand2square) and resized to image_size."""
        key = str(item.image)
        if key not in self._images:
            from PIL import Image

            from agiqa_bench.images import load_rgb

            rgb = load_rgb(item.image)
            h, w = rgb.shape[:2]
            side = max(h, w)
            if h != w:
                canvas = np.empty((side, side, 3), dtype=np.uint8)
                canvas[:] = fill
                top, left = (side - h) // 2, (side - w) // 2
                canvas[top:top + h, left:left + w] = rgb
                rgb = canvas
            size = int(self.config["image_size"])
            if side != size:
                rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BICUBIC), dtype=np.uint8)
            self._images[key] = rgb
        return self._images[key]

    @staticmethod
    def fill_colour(backbone) -> tuple[int, int, int]:
        mean = getattr(backbone.processor.image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
        return tuple(int(round(float(m) * 255)) for m in list(mean)[:3])

    def level_ids(self, backbone, target: str) -> list[int]:
        from baselines.archs.vlm import level_token_ids

        if target not in self._level_ids:
            self._level_ids[target] = level_token_ids(backbone.tokenizer, self.template(target)[1], self.level_words,
                                                      method=self.spec.name, model=self.config["model"],
                                                      answer_param=f"{target}_answer")
        return self._level_ids[target]

    def texts(self, backbone, items: Sequence[Item], targets: Sequence[str]) -> list[str]:
        from baselines.archs.vlm import chat_text

        out = []
        for item, target in zip(items, targets):
            question, answer = self.template(target)
            if "{prompt}" in question and not str(item.prompt).strip():
                raise ConfigError(f"{self.spec.name}: the {target} template reads the prompt, but {item.id} has none")
            out.append(chat_text(backbone.processor, question.format(prompt=item.prompt), answer))
        return out

    def level_probs(self, backbone, items: Sequence[Item], targets: Sequence[str], *, grad: bool = False):
        """(B, 5) level probabilities of each (item, target) pair; the raw next-token logits too when `grad`."""
        import torch

        from baselines.archs.vlm import batch_inputs, level_probabilities, next_token_logits

        fill = self.fill_colour(backbone)
        device = self.context.device
        inputs = batch_inputs(backbone, [self.image(it, fill) for it in items], self.texts(backbone, items, targets),
                              device)
        with torch.set_grad_enabled(grad):
            logits = next_token_logits(backbone.model, inputs)
        ids = [self.level_ids(backbone, t) for t in targets]
        if len({tuple(i) for i in ids}) == 1:
            probs = level_probabilities(logits, ids[0])
        else:
            probs = torch.cat([level_probabilities(logits[k:k + 1], ids[k]) for k in range(len(ids))])
        return (probs, logits) if grad else probs

    def probs_for(self, backbone, items: Sequence[Item], target: str, batch: int) -> np.ndarray:
        """(n, 5) level probabilities of `items` for `target`, in batches."""
        out = []
        backbone.model.eval()
        for start in range(0, len(items), batch):
            part = items[start:start + batch]
            out.append(self.level_probs(backbone, part, [target] * len(part)).float().cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 5))


# -- zero-shot ---------------------------------------------------------------------------------------
class VLMZeroShot(_VLMBase):
    """Q-Align's zero-shot score on the pretrained model: the expected level, per target, cached per image."""

    per_image: ClassVar[bool] = True
    params: ClassVar[type] = VLMZeroShotParams
    runtime_params: ClassVar[tuple[str, ...]] = ("batch_size",)

    @property
    def backbone(self):
        from baselines.alignment import memo_model
        from baselines.archs.vlm import load_backbone

        key = {"loader": "baselines.archs.vlm.load_backbone", **self.weights_identity(),
               "device": self.context.device, "dtype": self.dtype_name}
        return memo_model(key, lambda: load_backbone(self.config["model"], method=self.spec.name,
                                                     device=self.context.device, bf16=bool(self.config["bf16"])))

    def namespace(self, target: str) -> str:
        from agiqa_bench.cache import namespace_for

        question, answer = self.template(target)
        return namespace_for(f"vlm-levels-{target}", {
            "version": SCORE_VERSION, **self.weights_identity(), "question": question, "answer": answer,
            "levels": list(self.level_words), "image_size": int(self.config["image_size"]), "dtype": self.dtype_name})

    def key_item(self, item: Item, target: str) -> Item:
        """The cache entry of (item, target): the item's id, plus the prompt's digest when the template reads it."""
        from baselines.alignment import prompt_digest

        if self.reads_prompt(target):
            return dataclasses.replace(item, id=f"{item.id}#{prompt_digest(item.prompt)}")
        return item

    def fit(self, train: Sequence[Item], val: Sequence[Item], targets: Sequence[str]) -> None:
        super().fit(train, val, targets)
        for t in self.targets:
            self.template(t)
        self.require()

    def precompute(self, items: Sequence[Item]) -> None:
        """The map phase (no targets known yet): every target of the items' dataset that has a template."""
        if not self.targets and items:
            wanted = tuple(t for t in TEMPLATE_TARGETS if t in items[0].targets)
            self.targets = wanted or (SCORE_TARGET,)
        self.predict(items)

    def level_table(self, items: Sequence[Item], target: str) -> np.ndarray:
        """(n, 5) cached level probabilities of `items` for `target`; the missing ones computed in batches."""
        from agiqa_bench.cache import FeatureCache
        from baselines.alignment import _not_cached, AlignmentScorer

        root = self.context.cache_dir / "features" if self.context.cache_dir else None
        cache = FeatureCache(root)
        namespace = self.namespace(target)
        keyed = [self.key_item(it, target) for it in items]
        missing = [(k, it) for k, it in zip(keyed, items) if not AlignmentScorer._cached(cache, namespace, k)]
        if missing:
            probs = self.probs_for(self.backbone, [it for _, it in missing], target, int(self.config["batch_size"]))
            done = {k.id: p for (k, _), p in zip(missing, probs)}
            cache.get(namespace, [k for k, _ in missing], lambda k: done[k.id])
        return cache.get(namespace, keyed, _not_cached)

    def predict(self, items: Sequence[Item]) -> np.ndarray:
        self.require()
        targets = self.score_targets()
        if not items:
            return np.zeros((0, len(targets)) if self.targets else 0, dtype=np.float64)
        values = np.asarray([5.0, 4.0, 3.0, 2.0, 1.0])
        cols = [self.level_table(items, t) @ values for t in targets]
        self.info = self.templates_info()
        out = np.stack(cols, axis=1)
        return out if self.targets else out[:, 0]


# -- LoRA-tuned ----------------------------------------------------------------------------------------
def levels_of(y: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Q-Align's five equal-width, right-closed bins between lo and hi: label -> level 1 (bad) .. 5 (excellent);
    a constant target is all level 3."""
    y = np.asarray(y, dtype=np.float64)
    if not hi > lo:
        return np.full(y.shape, 3, dtype=np.int64)
    width = (hi - lo) / 5.0
    return np.clip(np.ceil((y - lo) / width - 1e-9), 1, 5).astype(np.int64)


def from_levels(expected: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Expected level E in [1, 5] -> label scale: level k's prediction is the centre of its bin."""
    width = (hi - lo) / 5.0 if hi > lo else 1.0
    return lo + (np.asarray(expected, dtype=np.float64) - 0.5) * width


class VLMLoRA(SelectsEpochs, _VLMBase):
    """The Q-Align recipe trained per split with LoRA adapters (one adapter set for every target)."""

    params: ClassVar[type] = VLMLoRAParams
    runtime_params: ClassVar[tuple[str, ...]] = ("eval_batch_size",)

    def __init__(self, spec, config=None, context=None, *, name=None):
        super().__init__(spec, config, context, name=name)
        self.backbone = None
        self.lora_names: list[str] = []
        self.bins: dict[str, tuple[float, float]] = {}

    def lora_config(self) -> dict:
        c = self.config
        return {"targets": [t.strip() for t in str(c["lora_targets"]).split(",") if t.strip()],
                "r": int(c["lora_r"]), "alpha": float(c["lora_alpha"]), "dropout": float(c["lora_dropout"]),
                "include_projector": bool(c["lora_projector"])}

    def build(self):
        """The base model through the one door, with fresh adapters (A drawn from the context seed)."""
        import torch

        from baselines.archs.vlm import add_lora, load_backbone

        self.require()
        backbone = load_backbone(self.config["model"], method=self.spec.name, device=self.context.device,
                                 bf16=bool(self.config["bf16"]))
        torch.manual_seed(self.context.seed)
        self.lora_names = add_lora(backbone.model, **self.lora_config())
        self.backbone = backbone
        return backbone

    # -- training ---------------------------------------------------------------------------------
    def fit(self, train: Sequence[Item], val: Sequence[Item], targets: Sequence[str]) -> None:
        import torch

        from agiqa_bench.training import selection_score, warmup_cosine
        from baselines.archs.vlm import lora_parameters, lora_state

        self.targets = tuple(targets)
        for t in self.targets:
            self.template(t)
        self.require()  # a real backbone without a GPU, a missing model: one line, before any work
        if not train:
            raise ConfigError(f"{self.spec.name}: no training items")
        c = self.config
        if c["selection"] == "val" and not val:
            raise ConfigError("selection 'val' needs a validation part; use --val-fraction > 0 or selection=last")
        if c["selection"] == "test-oracle" and not self._oracle:
            raise ConfigError("selection 'test-oracle' needs the test part (the runner provides it)")
        backbone = self.build()
        model = backbone.model
        # the levels: equal-width bins of the training part's range, per target
        examples = []  # (item index, target, level word index: 0 = best)
        for t in self.targets:
            y = np.array([it.targets[t] for it in train], dtype=np.float64)
            lo, hi = float(y.min()), float(y.max())
            self.bins[t] = (lo, hi)
            for i, level in enumerate(levels_of(y, lo, hi)):
                examples.append((i, t, 5 - int(level)))
        for t in self.targets:
            self.level_ids(backbone, t)
        params = list(lora_parameters(model).values())
        optimizer = torch.optim.AdamW(params, lr=float(c["lr"]), weight_decay=float(c["weight_decay"]),
                                      betas=(0.9, 0.999), eps=1e-8)
        batch, accum = int(c["batch_size"]), int(c["grad_accum"])
        steps = math.ceil(len(examples) / batch)
        updates_per_epoch = math.ceil(steps / accum)
        total = updates_per_epoch * int(c["epochs"])
        warm = int(round(float(c["warmup"]) * total))
        watch = val if c["selection"] == "val" else self._oracle if c["selection"] == "test-oracle" else None
        rng = np.random.default_rng(self.context.seed)
        torch.manual_seed(self.context.seed)  # adapter dropout
        best, best_epoch, best_state, history, update = float("-inf"), int(c["epochs"]) - 1, None, [], 0
        for epoch in range(int(c["epochs"])):
            model.train()
            order = rng.permutation(len(examples))
            losses = []
            optimizer.zero_grad(set_to_none=True)
            for k in range(steps):
                chunk = [examples[j] for j in order[k * batch:(k + 1) * batch]]
                items = [train[i] for i, _, _ in chunk]
                tgts = [t for _, t, _ in chunk]
                _, logits = self.level_probs(backbone, items, tgts, grad=True)
                if c["loss"] == "levels":
                    ids = torch.as_tensor([self._level_ids[t] for _, t, _ in chunk], device=logits.device)
                    answer = torch.as_tensor([w for _, _, w in chunk], device=logits.device)
                    loss = torch.nn.functional.cross_entropy(logits.float().gather(1, ids), answer)
                else:
                    answer = torch.as_tensor([self._level_ids[t][w] for _, t, w in chunk], device=logits.device)
                    loss = torch.nn.functional.cross_entropy(logits.float(), answer)
                (loss * len(chunk) / (batch * accum)).backward()
                losses.append(float(loss.detach()))
                if (k + 1) % accum == 0 or k == steps - 1:
                    for group in optimizer.param_groups:
                        group["lr"] = warmup_cosine(update, total, float(c["lr"]), warm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    update += 1
            record = {"epoch": epoch, "train_loss": float(np.mean(losses))}
            if watch:
                pred = self._predict_scaled(watch)
                truth = np.array([[it.targets[t] for t in self.targets] for it in watch], dtype=np.float64)
                record["selection_score"] = score = selection_score(pred, truth, c["selection"])
                if score > best:
                    best, best_epoch, best_state = score, epoch, lora_state(model)
            history.append(record)
        if best_state is not None:
            from baselines.archs.vlm import load_lora_state

            load_lora_state(model, best_state)
        model.eval()
        self.info = {**self.templates_info(), "best_epoch": best_epoch, "selection": c["selection"],
                     "train_loss_last": history[-1]["train_loss"], "lora_modules": len(self.lora_names),
                     "trainable_parameters": int(sum(p.numel() for p in params)),
                     "level_bins": {t: list(b) for t, b in self.bins.items()}}

    # -- prediction ------------------------------------------------------------------------------------
    def _predict_scaled(self, items: Sequence[Item]) -> np.ndarray:
        values = np.asarray([5.0, 4.0, 3.0, 2.0, 1.0])
        cols = []
        for t in self.targets:
            expected = self.probs_for(self.backbone, items, t, int(self.config["eval_batch_size"])) @ values
            cols.append(from_levels(expected, *self.bins[t]))
        return np.stack(cols, axis=1) if cols else np.zeros((len(items), 0))

    def predict(self, items: Sequence[Item]) -> np.ndarray:
        if self.backbone is None:
            raise RuntimeError(f"{self.spec.name}: predict called before fit")
        if not items:
            return np.zeros((0, len(self.targets)), dtype=np.float64)
        return self._predict_scaled(items)

    # -- checkpoints (`agiqa_bench.checkpoints`) ------------------------------------------------------
    def checkpoint_state(self) -> dict:
        """The adapters, the level bins and the LoRA configuration, plus which base model they adapt (not its
        tensors: the same base model must be here to restore)."""
        from baselines.archs.vlm import lora_state

        if self.backbone is None:
            raise RuntimeError(f"{self.spec.name}: no fitted model to keep")
        return {"adapters": lora_state(self.backbone.model), "lora": {**self.lora_config(), "modules": self.lora_names},
                "bins": {t: [float(v) for v in b] for t, b in self.bins.items()}, "base": self.weights_identity()}

    def load_checkpoint_state(self, state: dict) -> None:
        from baselines.archs.vlm import load_lora_state

        trained, here = dict(state["base"]), self.weights_identity()
        if trained != here:
            raise ConfigError(f"{self.name}: its adapters were trained on the base model {trained}, but these "
                              f"parameters load {here}; give the same model (--set {self.spec.name}.model=...)")
        if dict(state["lora"], modules=None) != dict(self.lora_config(), modules=None):
            raise ConfigError(f"{self.name}: the checkpoint's LoRA configuration {state['lora']} differs from these "
                              f"parameters' {self.lora_config()}")
        self.build()
        load_lora_state(self.backbone.model, state["adapters"])
        self.backbone.model.eval()
        self.bins = {t: (float(v[0]), float(v[1])) for t, v in state["bins"].items()}
        missing = [t for t in self.targets if t not in self.bins]
        if missing:
            raise ConfigError(f"{self.name}: the checkpoint has no level bins for {', '.join(missing)}")
