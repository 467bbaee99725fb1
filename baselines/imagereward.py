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
THUDM/ImageReward (`hf-hub:THUDM/ImageReward/ImageReward.pt`, fetched and
cached by `agiqa_bench.weights`) or local files, and bert-base-uncased's
`vocab.txt`.  Each of the three parameters takes the file or the folder
holding it (a local folder, or a whole hub repository `hf-hub:owner/repo`);
`med_config` defaults to the file next to the checkpoint, `tokenizer_vocab`
to a `vocab.txt` next to a local checkpoint, else bert-base-uncased's.  The official state dict is
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

The method is an `AlignmentScorer` (`baselines.alignment`): weights checked
before any work, every (image, prompt) score cached on disk per model
configuration (`FeatureCache`), so the repeats of a run, and StairReward's
full-prompt step, cost one forward pass per pair, the model kept loaded
between repeats, and prompts over the 35-token context counted and warned
about.  Each pair is one forward pass, as the official `ImageReward.score`
(`batch_size` only sets how many pairs go between two cache writes).  A
zero-shot method: the same score is predicted for every target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agiqa_bench.cache import namespace_for
from agiqa_bench.errors import MethodUnavailable
from agiqa_bench.method import MethodSpec, Weights
from agiqa_bench.records import Item
from agiqa_bench.weights import Source, identity, in_folder, is_hub, next_to, problem, resolve
from agiqa_bench.params import param as hparam  # `param` names a weights parameter below
from baselines.alignment import AlignmentScorer, AlignmentScorerParams

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
                     "downloaded from the Hugging Face hub (hf-hub:THUDM/ImageReward/ImageReward.pt, "
                     "hf-hub:google-bert/bert-base-uncased/vocab.txt) on first use; offline, pass local files "
                     "with --set imagereward.checkpoint=PATH "
                     "(ImageReward.pt or its folder) and --set imagereward.tokenizer_vocab=PATH",
                     check="baselines.imagereward:weights_available"),),
    reference="Xu et al., NeurIPS 2023; code THUDM/ImageReward (image-reward 1.5), re-implemented on "
              "transformers' BLIP modules",
    smoke={"checkpoint": "agiqa-smoke"},  # tiny random-weight checkpoint shipped for smoke tests only
    default_run=False,  # needs the 1.7 GB ImageReward weights (not available offline / on synthetic)
)

DEFAULT_CHECKPOINT = "hf-hub:THUDM/ImageReward/ImageReward.pt"
CHECKPOINT_FILE = "ImageReward.pt"
MED_CONFIG_FILE = "med_config.json"
VOCAB_FILE = "vocab.txt"
#: Built-in smoke configuration: a tiny checkpoint in the official layout with RANDOM weights
#: (baselines/weights/imagereward-smoke/, see its README).  Its scores mean nothing; it exists
#: so the contract tests can build and run the method offline in a second.
SMOKE_TAG = "agiqa-smoke"
#: The default `tokenizer_vocab` when no vocab.txt lies next to a local checkpoint.
BERT_VOCAB_TAG = "bert-base-uncased"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Bump when the computation changes, so cached scores are recomputed.
SCORE_VERSION = 1

# -- weights files -----------------------------------------------------------------------------
#: The tags each file parameter takes (resolved by `agiqa_bench.weights`, like every weights file).
SOURCES: dict[str, dict[str, Source]] = {
    "checkpoint": {SMOKE_TAG: Source("the tiny random ImageReward smoke checkpoint",
                                     shipped=WEIGHTS_DIR / "imagereward-smoke" / CHECKPOINT_FILE)},
    "med_config": {},
    # the official code asks for "bert-base-uncased", the hub's older name of the same repository: its cache
    # folder is looked up too
    "tokenizer_vocab": {BERT_VOCAB_TAG: Source("bert-base-uncased's vocabulary",
                                               hf=f"google-bert/bert-base-uncased/{VOCAB_FILE}",
                                               hf_also=(("bert-base-uncased", VOCAB_FILE),))},
}
WHAT = {"checkpoint": "the ImageReward weights", "med_config": "ImageReward's text config",
        "tokenizer_vocab": "ImageReward's tokenizer vocabulary"}


@dataclass(frozen=True)
class Files:
    checkpoint: Path
    med_config: Path
    vocab: Path

    def identity(self) -> dict[str, str]:
        """What the scores depend on: the three files' sizes and hashes."""
        return {"checkpoint": identity(self.checkpoint), "med_config": identity(self.med_config),
                "vocab": identity(self.vocab)}


def file_refs(params: Mapping[str, Any]) -> dict[str, str]:
    """The reference of each file a configuration reads, by parameter; nothing is resolved or downloaded."""
    checkpoint = in_folder(str(params.get("checkpoint") or DEFAULT_CHECKPOINT).strip(), CHECKPOINT_FILE)
    beside = str(SOURCES["checkpoint"][SMOKE_TAG].shipped) if checkpoint == SMOKE_TAG else checkpoint
    med_config = str(params.get("med_config") or "").strip()
    vocab = str(params.get("tokenizer_vocab") or "").strip()
    if vocab:
        vocab = in_folder(vocab, VOCAB_FILE)
    elif not is_hub(beside) and Path(next_to(beside, VOCAB_FILE)).is_file():
        vocab = next_to(beside, VOCAB_FILE)
    else:
        vocab = BERT_VOCAB_TAG
    return {"checkpoint": checkpoint,
            "med_config": in_folder(med_config, MED_CONFIG_FILE) if med_config else next_to(beside, MED_CONFIG_FILE),
            "tokenizer_vocab": vocab}


def resolve_files(params: Mapping[str, Any], method: str = "imagereward", *, download: bool = True) -> Files:
    """The three files a configuration needs, from local paths, the hub cache or the hub.

    Raises `WeightsUnavailable` naming the missing file, its source and the `--set` that supplies it;
    with download=False a hub file that is not cached raises it too (`weights.NotCached`).
    """
    paths = {param: resolve(ref, method=method, param=param, sources=SOURCES[param], what=WHAT[param],
                            download=download) for param, ref in file_refs(params).items()}
    return Files(paths["checkpoint"], paths["med_config"], paths["tokenizer_vocab"])


def files_problem(params: Mapping[str, Any], method: str = "imagereward") -> str | None:
    """Why a file cannot be used here (None: all are here or will be downloaded). Never downloads."""
    for param, ref in file_refs(params).items():
        found = problem(ref, method=method, param=param, sources=SOURCES[param], what=WHAT[param])
        if found:
            return found
    return None


def weights_available(params: dict) -> bool | None:
    """For `agiqa-bench methods`: True when every file is local or cached, False when one is missing."""
    try:
        resolve_files(params, download=False)
        return True
    except MethodUnavailable:
        return False
    except Exception:
        return None


# -- the method ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageRewardParams(AlignmentScorerParams):
    """The ImageReward files (`batch_size`: pairs between two cache writes; each pair is one forward pass)."""

    checkpoint: str = hparam(DEFAULT_CHECKPOINT, help=(
        '"hf-hub:OWNER/REPO/ImageReward.pt", a local ImageReward.pt, or a folder holding it (and med_config.json, '
        'optionally vocab.txt; a whole hub repository counts as one); "agiqa-smoke": the tiny random smoke one'))
    med_config: str = hparam("", help='"": med_config.json next to the checkpoint (same hub repo or folder)')
    tokenizer_vocab: str = hparam("", help='"": vocab.txt next to a local checkpoint, else bert-base-uncased\'s')


class ImageReward(AlignmentScorer):
    """Zero-shot ImageReward score of each image against its prompt (higher = better aligned/preferred)."""

    params: ClassVar[type] = ImageRewardParams
    family: ClassVar[str] = "imagereward"

    def __init__(self, spec, config=None, context=None, *, name=None):
        super().__init__(spec, config, context, name=name)
        self._tokenizer = None

    def files(self, *, download: bool = True) -> Files:
        return resolve_files(self.config, self.name, download=download)

    def weights_problem(self) -> str | None:
        return files_problem(self.config, self.name)

    def fetch_weights(self) -> None:
        self.files()

    def weights_identity(self) -> dict[str, Any]:
        """The files' identities for the configuration hash (empty while a hub file is not cached yet)."""
        try:
            return self.files(download=False).identity()
        except MethodUnavailable:
            return {}

    def namespace(self) -> str:
        # the namespace and pair keys (`pair_id`) ImageReward used before it moved onto AlignmentScorer:
        # scores cached by earlier runs stay valid
        return namespace_for(self.family, {"score_version": SCORE_VERSION, **self.weights_identity()})

    def pair_id(self, item: Item, prompt: str) -> str:
        return f"{item.id}\x1f{prompt}"

    def load_model(self):
        from baselines import blip

        return blip.load_scorer(self.files(), self.context.device, self.name)

    def score_batch(self, model: Any, items: Sequence[Item], captions: Sequence[str]) -> np.ndarray:
        """One forward pass per pair (the official `score`); consecutive prompts of one image decode it once."""
        from baselines.blip import load_pixels

        out, image, pixels = [], None, None
        for item, prompt in zip(items, captions, strict=True):
            if item.image != image:
                image, pixels = item.image, load_pixels(item.image, model.image_size)
            out.append(float(model.rewards(pixels, [prompt]).reshape(-1)[0]))
        return np.asarray(out, dtype=np.float64)

    def tokenizer(self):
        if self._tokenizer is None:
            from baselines import blip

            self._tokenizer = blip.load_tokenizer(self.files(), self.name)
        return self._tokenizer

    def token_counts(self, captions: Sequence[str]) -> list[int]:
        return self.tokenizer().count(captions)

    def context_length(self) -> int:
        return int(self.tokenizer().max_length)
