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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agiqa_bench.cache import FeatureCache, namespace_for
from agiqa_bench.errors import MethodUnavailable
from agiqa_bench.hub import offline
from agiqa_bench.method import Method, MethodSpec, Weights
from agiqa_bench.records import Item
from agiqa_bench.weights import identity

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
#: Built-in smoke configuration: a tiny checkpoint in the official layout with RANDOM weights
#: (baselines/weights/imagereward-smoke/, see its README).  Its scores mean nothing; it exists
#: so the contract tests can build and run the method offline in a second.
SMOKE_TAG = "agiqa-smoke"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Bump when the computation changes, so cached scores are recomputed.
SCORE_VERSION = 1

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

    def identity(self) -> dict[str, str]:
        """What the scores depend on: the three files' sizes and hashes."""
        return {"checkpoint": identity(self.checkpoint), "med_config": identity(self.med_config),
                "vocab": identity(self.vocab)}


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

    def weights_identity(self) -> dict[str, Any]:
        """The files' identities for the configuration hash (empty while a hub file is not cached yet)."""
        try:
            files = resolve_files(self.config, self.name, download=False)
        except MethodUnavailable:
            return {}
        return files.identity() if files is not None else {}

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
        namespace = namespace_for("imagereward", {"score_version": SCORE_VERSION, **files.identity()})
        root = self.context.cache_dir / "features" if self.context.cache_dir else None
        keyed = [Item(id=f"{item.id}\x1f{prompt}", image=item.image, prompt=prompt, targets={}, group="")
                 for item, prompt in pairs]
        from baselines.blip import Scorer, load_pixels, load_scorer

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
