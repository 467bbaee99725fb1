"""HPS: Human Preference Score v1, v2 and v2.1 (CLIP fine-tuned on human choices).

References:
- HPS v1: X. Wu, K. Sun, F. Zhu, R. Zhao, H. Li, "Better aligning text-to-image
  models with human preference", ICCV 2023 (arXiv 2303.14420); official code
  tgxs002/align_sd (README, "Human Preference Classifier").
- HPSv2 / v2.1: X. Wu et al., "Human Preference Score v2", arXiv 2306.09341;
  official code tgxs002/HPSv2 (``hpsv2/img_score.py``, ``hpsv2/utils.py``,
  its fork of open_clip), PyPI ``hpsv2``.
Independent implementation on open_clip, no code copied.

Every version scores a pair as the cosine similarity of the L2-normalised
image and prompt features (hpsv2: ``image_features @ text_features.T`` of
the normalised features its model returns, no logit scale, no x100; align_sd:
the same product after normalising).  Typical values are about 0.2-0.35;
higher = preferred / better aligned.  The prompt is encoded as it is (no
prefix), with CLIP's BPE tokenizer at the model's context (77 tokens): longer
prompts lose their end (see `baselines.alignment`).

Versions (variants of the one `hps` spec; `hps` alone is `hps.v2_1`):

- ``hps.v2_1`` (alias ``hps``): ``HPS_v2.1_compressed.pt``, the default of
  current hpsv2 releases.  ``hps.v2``: ``HPS_v2_compressed.pt`` (hpsv2's
  ``hps_version="v2.0"``).  Both from the Hugging Face repo ``xswu/HPSv2``
  (``checkpoint="hf-hub:xswu/HPSv2/<file>"``, fetched and cached by
  `agiqa_bench.weights`), or a local file.  Architecture: open_clip ``ViT-H-14``.
  The file is a dict whose ``"state_dict"`` holds the complete model, which
  hpsv2 loads (strictly) over ViT-H-14 ``laion2B-s32B-b79K``; as the state
  dict replaces every weight, the LAION base weights are not needed and not
  downloaded here: the architecture is built empty and the checkpoint loaded
  strictly.  Preprocessing as hpsv2's evaluation transform: image to a [0, 1]
  tensor, shortest side resized to 224 on the tensor (bicubic), centre crop,
  CLIP mean/std.
- ``hps.v1``: OpenAI CLIP ViT-L/14 (open_clip ``ViT-L-14-quickgelu``) with the
  fine-tuned ``hpc.pth``.  That checkpoint is on no model hub: the align_sd
  README links it on OneDrive; pass the downloaded file with
  ``--set hps.v1.checkpoint=/path/to/hpc.pth``.  Its ``"state_dict"`` has
  OpenAI CLIP's parameter names, which open_clip's CLIP shares.
  Preprocessing: OpenAI CLIP's (PIL bicubic resize of the shortest side,
  centre crop, CLIP mean/std).  The README tokenises with ``clip.tokenize``
  without ``truncate=True`` (an error on prompts over 77 tokens); here long
  prompts are truncated like every other scorer's.

Checkpoint files are read with ``torch.load(weights_only=True)`` (tensors
only, no arbitrary pickled code).  A training checkpoint that also pickles
other objects is refused with the command that re-saves its state dict.

``checkpoint="agiqa-synth"`` loads the project's small CLIP pretrained on
SynthAGIQA's caption corpus (with ``clip_model="agiqa-tiny-rn"``): it is
*not* an HPS model; it only lets the HPS code path run offline (registry
smoke tests).

Deviations from the official code: open_clip 3.x instead of hpsv2's fork of
open_clip 2.x (same architecture and parameter names); fp32 on every device
(hpsv2 runs under CUDA autocast, i.e. fp16 matmuls on a GPU); pairs scored in
batches (hpsv2 scores one image at a time; the result is the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from agiqa_bench.errors import ConfigError, MethodUnavailable
from agiqa_bench.method import MethodSpec, Weights
from agiqa_bench.weights import Source, available, file_identity, problem, resolve, unavailable
from agiqa_bench.params import param
from baselines.alignment import AlignmentScorerParams, OpenCLIPScorer

#: This method's registry entry: one spec, the HPS versions as variants (`hps` = `hps.v2_1`), each with its
#: own checkpoint entry (registered through the `agiqa_bench.methods` entry points).
SPEC = MethodSpec(
    name="hps",
    family="alignment",
    factory="baselines.hps:HPS",
    kind="zero-shot",
    summary="Human Preference Score: cos(image, prompt) of a CLIP fine-tuned on human preferences. v2_1 / v2: "
            "OpenCLIP ViT-H/14 on HPDv2 (HPS_v2.1_compressed.pt / HPS_v2_compressed.pt); v1: OpenAI CLIP "
            "ViT-L/14 on Discord preference data (hpc.pth).",
    inputs=("image", "prompt"),
    variants={
        "v2_1": {"hps_version": "v2.1", "checkpoint": "hf-hub:xswu/HPSv2/HPS_v2.1_compressed.pt"},
        "v2": {"hps_version": "v2.0", "checkpoint": "hf-hub:xswu/HPSv2/HPS_v2_compressed.pt"},
        "v1": {"hps_version": "v1", "clip_model": "ViT-L-14-quickgelu", "checkpoint": ""},
    },
    canonical_variant="v2_1",
    weights=(Weights("HPS v2.1 checkpoint hf-hub:xswu/HPSv2/HPS_v2.1_compressed.pt", "checkpoint",
                     "downloaded from the Hugging Face hub on first use; offline, pass the file with "
                     "--set hps.v2_1.checkpoint=PATH", check="baselines.hps:checkpoint_available",
                     variants=("v2_1",)),
             Weights("HPS v2 checkpoint hf-hub:xswu/HPSv2/HPS_v2_compressed.pt", "checkpoint",
                     "downloaded from the Hugging Face hub on first use; offline, pass the file with "
                     "--set hps.v2.checkpoint=PATH", check="baselines.hps:checkpoint_available",
                     variants=("v2",)),
             Weights("HPS v1 checkpoint hpc.pth (OneDrive link in the tgxs002/align_sd README; on no hub)",
                     "checkpoint", "download it by hand, then --set hps.v1.checkpoint=/path/to/hpc.pth",
                     check="baselines.hps:checkpoint_available", variants=("v1",))),
    reference="Wu et al., arXiv 2306.09341 (v2, code tgxs002/HPSv2 hpsv2/img_score.py); Wu et al., ICCV 2023 "
              "(v1, code tgxs002/align_sd)",
    default_run=False,
    # the HPS code path on the shipped synthetic CLIP (not an HPS model): offline contract tests only
    smoke={"clip_model": "agiqa-tiny-rn", "checkpoint": "agiqa-synth"},
)

HPS_REPO = "xswu/HPSv2"
HPS_V2_FILE = "HPS_v2_compressed.pt"
HPS_V21_FILE = "HPS_v2.1_compressed.pt"
HPS_VERSIONS = ("v2.1", "v2.0", "v1")
ALIGN_SD_README = "https://github.com/tgxs002/align_sd#human-preference-classifier"
SYNTH_TAG = "agiqa-synth"


def _fix(method: str) -> str:
    return f"--set {method}.checkpoint=PATH"


def checkpoint_sources(params: dict[str, Any]) -> dict[str, Source]:
    """The tag `checkpoint` takes besides files: `agiqa-synth`, the shipped synthetic CLIP of `clip_model`."""
    from agiqa_bench.clip import synth_checkpoint

    model = str(params.get("clip_model", ""))
    return {SYNTH_TAG: Source(f"the built-in synthetic CLIP for {model!r} (not an HPS model)",
                              shipped=synth_checkpoint(model))}


def _what(version: str) -> str:
    return f"the HPS {version} checkpoint" if version else "the HPS checkpoint"


def _no_checkpoint(method: str, version: str):
    if version == "v1":
        return unavailable(method, "checkpoint", "the HPS v1 checkpoint hpc.pth",
                           "it is on no model hub and is not downloaded automatically: download it by hand from the "
                           "OneDrive link in the tgxs002/align_sd README", ALIGN_SD_README)
    return unavailable(method, "checkpoint", _what(version), "none given")


def checkpoint_file(params: dict[str, Any], method: str, version: str, *, download: bool = True) -> Path:
    """The local checkpoint file: a path, the shipped tag, or a hub file (fetched and cached on first use
    unless download=False).  Raises `WeightsUnavailable` (the one message shape)."""
    value = str(params.get("checkpoint", "")).strip()
    if not value:
        raise _no_checkpoint(method, version)
    return resolve(value, method=method, param="checkpoint", sources=checkpoint_sources(params), what=_what(version),
                   download=download)


def checkpoint_problem(params: dict[str, Any], method: str, version: str) -> str | None:
    """Why the HPS checkpoint cannot be used here (None: it is here, or will be downloaded). Never downloads."""
    value = str(params.get("checkpoint", "")).strip()
    if not value:
        return str(_no_checkpoint(method, version))
    return problem(value, method=method, param="checkpoint", sources=checkpoint_sources(params), what=_what(version))


def checkpoint_available(params: dict[str, Any]) -> bool:
    """For `agiqa-bench methods`: is the checkpoint here (a file, or already in the hub cache)? Never downloads."""
    value = str(params.get("checkpoint", "")).strip()
    return bool(value) and available(value, sources=checkpoint_sources(params))


def read_state_dict(path: str | Path, method: str) -> dict:
    """The model state dict of an HPS checkpoint: ``{"state_dict": ...}`` (hpsv2, align_sd) or a bare one."""
    import pickle

    import torch

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise MethodUnavailable(
            f"{method}: {path} holds pickled objects besides tensors and is not loaded (pickles can run code). "
            f"If you trust the file, re-save its weights once: python -c \"import torch; "
            f"torch.save(torch.load('{path}', weights_only=False)['state_dict'], 'hps_state.pt')\" and pass "
            f"hps_state.pt with {_fix(method)}") from None
    except Exception as exc:
        raise MethodUnavailable(f"{method}: cannot read HPS checkpoint {path}: {type(exc).__name__}: {exc}") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise MethodUnavailable(f"{method}: {path} is not a state dict (nor a dict with a 'state_dict' entry)")
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_hps_model(clip_model: str, path: str | Path, method: str):
    """open_clip `clip_model` with every weight from the checkpoint (strict: a partial file is an error)."""
    import open_clip
    import torch

    from agiqa_bench.clip import register_configs

    register_configs()
    if clip_model not in open_clip.list_models():
        raise ConfigError(f"{method}: unknown open_clip architecture {clip_model!r}")
    model = open_clip.create_model(clip_model, pretrained=None)
    state = read_state_dict(path, method)
    scale = state.get("logit_scale")
    if isinstance(scale, torch.Tensor) and scale.ndim != model.logit_scale.ndim:
        state["logit_scale"] = scale.reshape(model.logit_scale.shape)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise MethodUnavailable(
            f"{method}: checkpoint {path} does not fit architecture {clip_model!r} "
            f"(set {method}.clip_model to the model it was trained from): {str(exc)[:400]}") from None
    return model


@dataclass(frozen=True)
class HPSParams(AlignmentScorerParams):
    """The HPS version and its model (the variants set both)."""

    hps_version: str = param("v2.1", choices=HPS_VERSIONS, help="the variants set it with its checkpoint")
    clip_model: str = param("ViT-H-14", help="open_clip architecture the checkpoint was trained from")
    checkpoint: str = param(f"hf-hub:{HPS_REPO}/{HPS_V21_FILE}", help="hub file or local path of the HPS weights")


class HPS(OpenCLIPScorer):
    """HPS of one version (`hps_version`, set by the variant): cos(image, prompt) of its fine-tuned CLIP."""

    params: ClassVar[type] = HPSParams
    family: ClassVar[str] = "hps"

    @property
    def hps_version(self) -> str:
        return str(self.config["hps_version"])

    @property
    def resize_on(self) -> str:
        """hpsv2's evaluation transform resizes the tensor; v1 uses OpenAI CLIP's preprocess (PIL)."""
        return "pil" if self.hps_version == "v1" else "tensor"

    def weights_problem(self) -> str | None:
        return checkpoint_problem(self.config, self.name, self.hps_version)

    def checkpoint_path(self, *, download: bool = True) -> Path:
        """The checkpoint as a local file (a hub file is downloaded and cached on first use)."""
        return checkpoint_file(self.config, self.name, self.hps_version, download=download)

    def fetch_weights(self) -> None:
        self.checkpoint_path()

    def weights_identity(self) -> dict[str, Any]:
        """Version, architecture, the checkpoint reference and the identity of its local file (a hub file's
        once it is in the cache)."""
        ident: dict[str, Any] = {"hps_version": self.hps_version, "clip_model": self.config["clip_model"],
                                 "checkpoint": str(self.config["checkpoint"]).strip(), "resize_on": self.resize_on}
        try:
            ident["file"] = file_identity(self.checkpoint_path(download=False))
        except MethodUnavailable:
            pass  # missing, or a hub file not fetched yet
        return ident

    def load_model(self):
        model = load_hps_model(self.config["clip_model"], self.checkpoint_path(), self.name)
        model.requires_grad_(False)
        return model.float().eval().to(self.context.device)
