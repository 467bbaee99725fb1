"""The method registry: one `MethodSpec` entry per method, loaded lazily.

Adding a method = one file (the class) + one entry in `BUILTIN` below.  Listing
specs imports no model code; `create_method` imports the class on demand.

Names:
- `method` or `method.variant` (variants are parameter overrides declared in
  the spec, like timm's weight tags); aliases resolve to the canonical name.
- Other packages add methods through the entry-point group
  `agiqa_bench.methods`: each entry point names a `MethodSpec`, a list of them,
  or a callable returning either.
"""

from __future__ import annotations

import fnmatch
import importlib
import warnings
from importlib import metadata
from typing import Any

from agiqa_bench.errors import ConfigError
from agiqa_bench.method import Method, MethodContext, MethodSpec, Weights

ENTRY_POINT_GROUP = "agiqa_bench.methods"

#: IP-IQA on the built-in synthetic set: the small CLIP pretrained on SynthAGIQA's caption corpus
#: (shipped, tag `agiqa-synth`), at the set's native 96 px (a 3x3 token grid), sized for a CPU run
#: of minutes.  The backbone keeps a low learning rate while the modules IP-IQA adds (prompt
#: attention pooling, [QA]) and the head learn 30x faster.  Chosen on a SynthAGIQA set of another
#: seed (7), never on the default set the leaderboard reports.
IPIQA_SYNTHETIC = {"clip_model": "agiqa-tiny-rn", "pretrained": "agiqa-synth", "image_size": 96, "epochs": 15,
                   "batch_size": 16, "lr": 3e-5, "head_lr_scale": 30.0, "fusion_lr_scale": 30.0, "dropout": 0.1}
#: The fastest configuration that still exercises every part (contract tests).
IPIQA_SMOKE = {"clip_model": "agiqa-tiny-rn", "pretrained": "", "image_size": 64, "epochs": 1, "batch_size": 8,
               "selection": "last"}

BUILTIN: list[MethodSpec] = [
    MethodSpec(
        name="ipiqa",
        family="ours",
        factory="ipiqa.method:IPIQAMethod",
        kind="trainable",
        summary="IP-IQA: CLIP image stream + prompt stream with a [QA] token, fused by prompt-queried attention pooling.",
        inputs=("image", "prompt"),
        joint_targets=True,
        variants={
            # the paper's Table 3 rows (Image2Prompt rows need --image2prompt CKPT)
            "image_only": {"use_prompt": False, "mlp_head": False, "use_image2prompt": "no"},
            "i2p_image_only": {"use_prompt": False, "mlp_head": False, "use_image2prompt": "yes"},
            "integral": {"qa_token": False, "use_image2prompt": "no"},
            "i2p_integral": {"qa_token": False, "use_image2prompt": "yes"},
            "full": {"use_image2prompt": "yes"},
            # the public code's text handling (whole token table + positional embedding + projection train)
            "reference": {"text_mode": "reference"},
        },
        weights=(Weights("CLIP RN50 (openai)", "pretrained",
                         "downloaded by open_clip on first use; offline, pass a local RN50.pt with --set ipiqa.pretrained=PATH",
                         check="agiqa_bench.clip:check_weights"),),
        reference="Qu, Li, Gao, ICME 2024 (arXiv 2403.18714); code Coobiw/IP-IQA",
        dataset_defaults={"synthetic": IPIQA_SYNTHETIC},
        smoke=IPIQA_SMOKE,
    ),
    MethodSpec(
        name="cpbd",
        family="handcrafted",
        factory="baselines.cpbd:CPBD",
        kind="zero-shot",
        summary="Cumulative probability of blur detection (sharpness), the paper's 'DSIQA'.",
        aliases=("dsiqa",),
        reference="Narvekar & Karam, TIP 2011; port of the official CPBD_compute.m",
    ),
    MethodSpec(
        name="ceiq",
        family="svr",
        factory="baselines.ceiq:CEIQ",
        kind="trainable",
        summary="Contrast-enhancement features (SSIM + 4 entropies) with an RBF SVR trained per split.",
        variants={"grid": {"search": "grid"}},
        reference="Yan, Li, Fu, arXiv 1904.08879; features from the official ceiq.m",
    ),
    MethodSpec(
        name="niqe",
        family="handcrafted",
        factory="baselines.niqe:NIQE",
        kind="zero-shot",
        summary="NIQE: distance of the image's natural-scene-statistics MVG to a pristine MVG (pyiqa's implementation).",
        lower_is_better=True,
        weights=(Weights("NIQE pristine MVG parameters (official, niqe_modelparameters.mat)", "params",
                         "downloaded by pyiqa on first use; offline, pass a .mat/.npz with --set niqe.params=PATH "
                         "or fit one with `agiqa-bench pretrain niqe`",
                         check="baselines.niqe:params_available"),),
        reference="Mittal, Soundararajan, Bovik, IEEE SPL 2013; pyiqa niqe_arch (port of the MATLAB release)",
        dataset_defaults={"synthetic": {"params": "agiqa-synth", "block_size": 32}},
        smoke={"params": "agiqa-synth", "block_size": 32},
    ),
    MethodSpec(
        name="sisblim.approx",
        family="handcrafted",
        factory="baselines.sisblim:SISBLIMApprox",
        kind="zero-shot",
        summary="Six-step blind metric for multiply distorted images (noise, denoise, blur, blockiness, joint term, pooling).",
        aliases=("sisblim",),
        reference="Gu, Zhai, Yang, Zhang, IEEE Trans. Broadcasting 2014 (no public code)",
        approximation="no official code is public; a documented reconstruction of the paper's six steps, not SISBLIM itself",
    ),
    MethodSpec(
        name="gmlf",
        family="svr",
        factory="baselines.gmlf:GMLF",
        kind="trainable",
        summary="GM-LOG: joint statistics of gradient magnitude and Laplacian of Gaussian (40 features) with an RBF SVR.",
        variants={"grid": {"search": "grid"}},
        reference="Xue, Mou, Zhang, Bovik, Feng, TIP 2014; features from the authors' Grad_LOG_CP_TIP.m",
    ),
    MethodSpec(
        name="higrade",
        family="svr",
        factory="baselines.higrade:HIGRADE",
        kind="trainable",
        summary="HIGRADE: Lab scene statistics + gradient (HIGRADE-1, 216-d) or coherency (HIGRADE-2, 120-d) with an RBF SVR.",
        variants={"1": {"version": 1}, "2": {"version": 2},
                  "1.grid": {"version": 1, "search": "grid"}, "2.grid": {"version": 2, "search": "grid"}},
        default_variants=("1", "2"),
        reference="Kundu, Ghadiyaram, Bovik, Evans, TIP 2017; features from the official utlive/higrade release",
    ),
    MethodSpec(
        name="cnniqa",
        family="deep",
        factory="baselines.cnniqa:CNNIQAMethod",
        kind="trainable",
        summary="CNNIQA: conv 7x7x50, max+min pooling, FC 800-800 (pyiqa's RGB architecture), trained from scratch "
                "per split with pyiqa's recipe; needs no weights; seconds per repeat on synthetic.",
        joint_targets=True,
        variants={
            # the paper's 32 px LCN patches, L1, mean over the non-overlapping tiles of the 512 resize (lidq92/CNNIQA)
            "kang": {"crop_size": 32, "crops_per_image": 256, "test_crops": 256, "test_crop_mode": "grid", "lcn": True,
                     "loss": "l1", "optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0, "batch_size": 128,
                     "epochs": 100, "lr_schedule": "constant", "hflip": False},
        },
        reference="Kang, Ye, Li, Doermann, CVPR 2014; pyiqa cnniqa_arch and train_CNNIQA.yml; lidq92/CNNIQA (kang)",
        # 96 px images: 48 px crops, 8 epochs (LR x0.5 at 5 and 7): seconds per repeat on a CPU
        dataset_defaults={"synthetic": {"image_size": 96, "crop_size": 48, "batch_size": 16, "epochs": 8,
                                        "lr_milestones": "5,7"}},
        smoke={"image_size": 48, "crop_size": 32, "crops_per_image": 1, "test_crops": 4, "epochs": 1, "batch_size": 8,
               "selection": "last"},
    ),
    MethodSpec(
        name="dbcnn",
        family="deep",
        factory="baselines.dbcnn:DBCNNMethod",
        kind="trainable",
        summary="DBCNN: ImageNet VGG-16 x synthetic-distortion S-CNN bilinear pooling, FC then all layers trained per "
                "split (official two stages); needs VGG-16 and S-CNN weights (random init on synthetic); GPU-sized.",
        joint_targets=True,
        weights=(Weights("ImageNet VGG-16 (torchvision IMAGENET1K_V1, vgg16-397923af.pth)", "backbone_weights",
                         "downloaded by torchvision's URL into the torch hub cache on first use; offline, pass a local "
                         "copy with --set dbcnn.backbone_weights=PATH",
                         check="baselines.deep:vgg16_available"),
                 Weights("DBCNN S-CNN pretrained on synthetic distortions (pyiqa DBCNN_scnn-7ea73d75.pth)",
                         "scnn_weights",
                         "downloaded from pyiqa's weights repository into the torch hub cache on first use; offline, "
                         "pass DBCNN_scnn-7ea73d75.pth or the official scnn.pkl with --set dbcnn.scnn_weights=PATH",
                         check="baselines.deep:scnn_available")),
        reference="Zhang, Ma, Yan, Deng, Wang, TCSVT 2020; zwx8981/DBCNN-PyTorch; pyiqa dbcnn_arch",
        default_run=False,  # VGG-16 at 448 px: GPU work; offline it runs only from random weights
        # random init (offline), 64 px crops, 1 FC-only + 2 full epochs: a minute or two per repeat on a CPU
        dataset_defaults={"synthetic": {"backbone_weights": "", "scnn_weights": "", "image_size": 96, "crop_size": 64,
                                        "batch_size": 16, "fc_epochs": 1, "epochs": 2, "lr": 1e-4,
                                        "eval_batch_size": 32}},
        smoke={"backbone_weights": "", "scnn_weights": "", "image_size": 48, "crop_size": 32, "fc_epochs": 1,
               "epochs": 1, "batch_size": 6, "selection": "last"},
    ),
    MethodSpec(
        name="hypernet",
        family="deep",
        factory="baselines.hypernet:HyperIQAMethod",
        kind="trainable",
        summary="HyperIQA: ImageNet ResNet-50 whose content features generate the weights of a small quality "
                "network; 25 random 224 crops per image (official recipe); needs ImageNet ResNet-50 weights "
                "(random init on synthetic); GPU-sized.",
        joint_targets=True,
        weights=(Weights("ImageNet ResNet-50 (torchvision IMAGENET1K_V1, resnet50-0676ba61.pth)", "backbone_weights",
                         "downloaded by torchvision's URL into the torch hub cache on first use; offline, pass a local "
                         "copy with --set hypernet.backbone_weights=PATH",
                         check="baselines.deep:resnet50_available"),),
        aliases=("hyperiqa",),
        reference="Su et al., CVPR 2020; SSL92/hyperIQA; pyiqa hypernet_arch",
        default_run=False,  # ResNet-50 on 25 x 224 crops per image: GPU work
        # random init (offline), 2 crops of 64 px per image and epoch, 4 test crops, 3 epochs: minutes on a CPU
        dataset_defaults={"synthetic": {"backbone_weights": "", "image_size": 96, "crop_size": 64,
                                        "crops_per_image": 2, "test_crops": 4, "batch_size": 16, "epochs": 3,
                                        "lr": 1e-4, "lr_schedule": "constant", "reset_optimizer": False}},
        smoke={"backbone_weights": "", "image_size": 48, "crop_size": 32, "crops_per_image": 1, "test_crops": 2,
               "epochs": 1, "batch_size": 8, "selection": "last"},
    ),
    MethodSpec(
        name="resnet50",
        family="deep",
        factory="baselines.resnet:ResNet50Method",
        kind="trainable",
        summary="ResNet-50 + linear head fine-tuned per split (plain recipe: the papers publish none); random init, "
                "or ImageNet init as resnet50.imagenet (the paper's ResNet50*, needs the weights); GPU-sized.",
        joint_targets=True,
        variants={"imagenet": {"backbone_weights": "imagenet", "lr": 1e-4, "head_lr_scale": 10.0}},
        weights=(Weights("ImageNet ResNet-50 (torchvision IMAGENET1K_V1, resnet50-0676ba61.pth), resnet50.imagenet "
                         "only", "backbone_weights",
                         "downloaded by torchvision's URL into the torch hub cache on first use; offline, pass a local "
                         "copy with --set resnet50.backbone_weights=PATH",
                         check="baselines.deep:resnet50_available"),),
        reference="He et al., CVPR 2016 (torchvision resnet50); AGIQA-1k/3k and IP-IQA ResNet50 rows (no code)",
        default_run=False,  # ResNet-50 on 384 px crops: GPU work
        # 80 px crops, 5 epochs: a minute or two per repeat on a CPU
        dataset_defaults={"synthetic": {"image_size": 96, "crop_size": 80, "batch_size": 16, "epochs": 5}},
        smoke={"backbone_weights": "", "image_size": 48, "crop_size": 32, "epochs": 1, "batch_size": 8,
               "selection": "last"},
    ),
    MethodSpec(
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
    ),
    MethodSpec(
        name="stairreward.approx",
        family="alignment",
        factory="baselines.stairreward:StairRewardApprox",
        kind="zero-shot",
        summary="StairReward (reconstruction): ImageReward of the cumulative prompt stairs (subject, then + each "
                "adjective/style morpheme), weighted d^k (decay=0.5).",
        inputs=("image", "prompt"),
        aliases=("stairreward",),
        weights=(Weights("ImageReward v1.0 (ImageReward.pt + med_config.json) and bert-base-uncased vocab.txt",
                         "checkpoint",
                         "the same files as imagereward; offline, pass them with "
                         "--set stairreward.approx.checkpoint=PATH and --set stairreward.approx.tokenizer_vocab=PATH",
                         check="baselines.imagereward:weights_available"),),
        reference="Li et al., AGIQA-3K, TCSVT 2023 (arXiv 2306.04717; no public code)",
        approximation="no code or exact formula is public; the stair decomposition (comma-separated morphemes "
                      "counted from the adj1/adj2/style columns) and the d^k-weighted mean of ImageReward scores "
                      "are our reconstruction, not the authors' StairReward",
        smoke={"checkpoint": "agiqa-smoke"},  # tiny random-weight checkpoint shipped for smoke tests only
        default_run=False,  # needs the 1.7 GB ImageReward weights (not available offline / on synthetic)
    ),
    MethodSpec(
        name="clipscore",
        family="alignment",
        factory="baselines.clipscore:CLIPScore",
        kind="zero-shot",
        summary="CLIPScore: 2.5 * max(cos(image, 'A photo depicts ' + prompt), 0) with CLIP ViT-B/32.",
        inputs=("image", "prompt"),
        variants={"vit_l14": {"clip_model": "ViT-L-14-quickgelu", "pretrained": "openai"}},
        weights=(Weights("CLIP ViT-B/32 (openai)", "pretrained",
                         "downloaded by open_clip on first use; offline, pass OpenAI's ViT-B-32.pt with "
                         "--set clipscore.pretrained=PATH",
                         check="agiqa_bench.clip:check_weights"),),
        reference="Hessel et al., EMNLP 2021; code jmhessel/clipscore (clipscore.py)",
        dataset_defaults={"synthetic": {"clip_model": "agiqa-tiny-rn", "pretrained": "agiqa-synth"}},
        smoke={"clip_model": "agiqa-tiny-rn", "pretrained": "agiqa-synth"},
    ),
    MethodSpec(
        name="hps.v2_1",
        family="alignment",
        factory="baselines.hps:HPS",
        kind="zero-shot",
        summary="HPS v2.1: cos(image, prompt) of OpenCLIP ViT-H/14 fine-tuned on HPDv2 (HPS_v2.1_compressed.pt).",
        inputs=("image", "prompt"),
        aliases=("hps",),
        weights=(Weights("HPS v2.1 checkpoint HPS_v2.1_compressed.pt (HF xswu/HPSv2)", "checkpoint",
                         "downloaded by huggingface_hub on first use; offline, pass the file with "
                         "--set hps.v2_1.checkpoint=PATH",
                         check="baselines.hps:checkpoint_available"),),
        reference="Wu et al., arXiv 2306.09341; code tgxs002/HPSv2 (hpsv2/img_score.py)",
        default_run=False,
        # the HPS code path on the shipped synthetic CLIP (not an HPS model): offline contract tests only
        smoke={"clip_model": "agiqa-tiny-rn", "checkpoint": "agiqa-synth"},
    ),
    MethodSpec(
        name="hps.v2",
        family="alignment",
        factory="baselines.hps:HPSv2",
        kind="zero-shot",
        summary="HPS v2 (hpsv2's 'v2.0'): cos(image, prompt) of OpenCLIP ViT-H/14 fine-tuned on HPDv2.",
        inputs=("image", "prompt"),
        weights=(Weights("HPS v2 checkpoint HPS_v2_compressed.pt (HF xswu/HPSv2)", "checkpoint",
                         "downloaded by huggingface_hub on first use; offline, pass the file with "
                         "--set hps.v2.checkpoint=PATH",
                         check="baselines.hps:checkpoint_available"),),
        reference="Wu et al., arXiv 2306.09341; code tgxs002/HPSv2 (hpsv2/img_score.py)",
        default_run=False,
        smoke={"clip_model": "agiqa-tiny-rn", "checkpoint": "agiqa-synth"},
    ),
    MethodSpec(
        name="hps.v1",
        family="alignment",
        factory="baselines.hps:HPSv1",
        kind="zero-shot",
        summary="HPS v1: cos(image, prompt) of OpenAI CLIP ViT-L/14 fine-tuned on Discord preference data (hpc.pth).",
        inputs=("image", "prompt"),
        weights=(Weights("HPS v1 checkpoint hpc.pth (OneDrive link in the tgxs002/align_sd README; on no hub)",
                         "checkpoint", "download it by hand, then --set hps.v1.checkpoint=/path/to/hpc.pth",
                         check="baselines.hps:checkpoint_available"),),
        reference="Wu et al., ICCV 2023 (arXiv 2303.14420); code tgxs002/align_sd (README)",
        default_run=False,
        smoke={"clip_model": "agiqa-tiny-rn", "checkpoint": "agiqa-synth"},
    ),
    MethodSpec(
        name="pickscore",
        family="alignment",
        factory="baselines.pickscore:PickScore",
        kind="zero-shot",
        summary="PickScore v1: logit_scale * cos(image, prompt) of CLIP ViT-H/14 fine-tuned on Pick-a-Pic.",
        inputs=("image", "prompt"),
        weights=(Weights("PickScore model yuvalkirstain/PickScore_v1 (HF)", "model",
                         "downloaded by transformers on first use; offline, pass a local folder with "
                         "--set pickscore.model=PATH",
                         check="baselines.pickscore:model_available"),
                 Weights("CLIP processor laion/CLIP-ViT-H-14-laion2B-s32B-b79K (HF)", "processor",
                         "downloaded by transformers on first use; offline, pass a local folder with "
                         "--set pickscore.processor=PATH",
                         check="baselines.pickscore:processor_available")),
        reference="Kirstain et al., NeurIPS 2023; code yuvalkirstain/PickScore (README)",
        default_run=False,
        # a random tiny CLIP and the offline CLIP tokenizer (documented test settings): contract tests only
        smoke={"model": "random-tiny", "processor": "clip-bpe"},
    ),
    MethodSpec(
        name="clipiqa",
        family="deep",
        factory="baselines.clipiqa:CLIPIQA",
        kind="zero-shot",
        summary="CLIP-IQA: CLIP RN50 (attention pool without positional embedding), p('Good photo.') vs 'Bad photo.'.",
        weights=(Weights("CLIP RN50 (openai)", "pretrained",
                         "downloaded by open_clip on first use; offline, pass a local RN50.pt with "
                         "--set clipiqa.pretrained=PATH",
                         check="agiqa_bench.clip:check_weights"),),
        reference="Wang, Chan, Loy, AAAI 2023; code IceClear/CLIP-IQA (CLIPIQAFixed)",
        dataset_defaults={"synthetic": {"clip_model": "agiqa-tiny-rn", "pretrained": "agiqa-synth"}},
        smoke={"clip_model": "agiqa-tiny-rn", "pretrained": ""},
    ),
    MethodSpec(
        name="clipiqa.plus",
        family="deep",
        factory="baselines.clipiqa:CLIPIQAPlus",
        kind="trainable",
        summary="CLIP-IQA+: CoOp context vectors around the antonym prompts (one pair per target), CLIP frozen.",
        joint_targets=True,
        weights=(Weights("CLIP RN50 (openai)", "pretrained",
                         "downloaded by open_clip on first use; offline, pass a local RN50.pt with "
                         "--set clipiqa.plus.pretrained=PATH",
                         check="agiqa_bench.clip:check_weights"),),
        reference="Wang, Chan, Loy, AAAI 2023; code IceClear/CLIP-IQA (CLIPIQAPredictor, CoOp prompt learner)",
        # SynthAGIQA: the shipped small CLIP, native 96 px; training sized for seconds per split on a CPU
        dataset_defaults={"synthetic": {"clip_model": "agiqa-tiny-rn", "pretrained": "agiqa-synth", "epochs": 30,
                                        "batch_size": 32}},
        smoke={"clip_model": "agiqa-tiny-rn", "pretrained": "", "n_ctx": 4, "epochs": 1, "batch_size": 8,
               "selection": "last"},
    ),
]


def _entry_point_specs() -> list[MethodSpec]:
    specs: list[MethodSpec] = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, MethodSpec):
                obj = obj()
            found = [obj] if isinstance(obj, MethodSpec) else list(obj)
        except Exception as exc:  # a broken plugin must not break the harness
            warnings.warn(f"method plugin {ep.name!r} ({ep.value}) failed to load: {exc}", stacklevel=2)
            continue
        specs.extend(s for s in found if isinstance(s, MethodSpec))
    return specs


def all_specs() -> list[MethodSpec]:
    """Built-in specs followed by plugin specs (a plugin may not shadow a built-in)."""
    specs = list(BUILTIN)
    taken = {s.name for s in specs} | {a for s in specs for a in s.aliases}
    for spec in _entry_point_specs():
        if spec.name in taken:
            warnings.warn(f"method plugin {spec.name!r} ignored: the name is already registered", stacklevel=2)
            continue
        specs.append(spec)
        taken.add(spec.name)
    return specs


def _by_name() -> dict[str, MethodSpec]:
    table: dict[str, MethodSpec] = {}
    for spec in all_specs():
        table[spec.name] = spec
        for alias in spec.aliases:
            table[alias] = spec
    return table


def split_name(name: str) -> tuple[str, str | None]:
    """'higrade.2' -> ('higrade', '2'); 'cpbd' -> ('cpbd', None).

    The longest registered prefix wins, so a canonical name may itself contain a
    dot ('sisblim.approx') and a variant may too ('higrade.1.grid').
    """
    table = _by_name()
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        base = ".".join(parts[:cut])
        if base in table:
            return base, (".".join(parts[cut:]) or None)
    base, _, variant = name.partition(".")
    return base, (variant or None)


def get_spec(name: str) -> tuple[MethodSpec, str | None]:
    """The spec and variant for a (possibly aliased) `method[.variant]` name."""
    base, variant = split_name(name.strip())
    table = _by_name()
    if base not in table:
        close = ", ".join(sorted(n for n in table if n[:2] == base[:2])) or ", ".join(sorted(table))
        raise ConfigError(f"unknown method {name!r}. Known methods: {close}. See `agiqa-bench methods`.")
    spec = table[base]
    if variant is not None and variant not in spec.variants:
        known = ", ".join(f"{spec.name}.{v}" for v in spec.variants) or "none"
        raise ConfigError(f"method {spec.name!r} has no variant {variant!r}; its variants: {known}")
    return spec, variant


def canonical_name(name: str) -> str:
    spec, variant = get_spec(name)
    return spec.name if variant is None else f"{spec.name}.{variant}"


def list_methods(pattern: str | None = None) -> list[str]:
    """Canonical names of every method and variant, optionally filtered by a glob."""
    names: list[str] = []
    for spec in all_specs():
        names.append(spec.name)
        names.extend(f"{spec.name}.{v}" for v in spec.variants)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def default_methods() -> list[str]:
    """What `agiqa-bench run` runs when no --methods is given."""
    names: list[str] = []
    for spec in all_specs():
        if spec.default_run:
            names.extend([f"{spec.name}.{v}" for v in spec.default_variants] or [spec.name])
    return names


def load_class(spec: MethodSpec) -> type[Method]:
    module_name, _, attr = spec.factory.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"method {spec.name!r} cannot be imported from {module_name}: {exc}") from exc
    return getattr(module, attr)


def layered_config(name: str, overrides: dict[str, Any] | None = None, dataset: str | None = None) -> dict[str, Any]:
    """Parameter overrides in precedence order: dataset defaults < variant < user overrides."""
    spec, variant = get_spec(name)
    merged = dict(spec.dataset_defaults.get(dataset, {})) if dataset else {}
    merged.update(spec.variants.get(variant, {}) if variant else {})
    merged.update(overrides or {})
    return merged


def method_params(name: str, overrides: dict[str, Any] | None = None, dataset: str | None = None) -> dict[str, Any]:
    """Resolved hyperparameters of `name` (dataset defaults and variant applied), without building it."""
    from agiqa_bench.method import resolve_params

    spec, _ = get_spec(name)
    return resolve_params(canonical_name(name), load_class(spec).params, layered_config(name, overrides, dataset))


def create_method(name: str, overrides: dict[str, Any] | None = None, context: MethodContext | None = None,
                  dataset: str | None = None) -> Method:
    """Build a method by name: `create_method('ceiq.grid', {'C': 10})`."""
    spec, _ = get_spec(name)
    cls = load_class(spec)
    dataset = dataset if dataset is not None else (context.dataset if context else None)
    method = cls(spec, layered_config(name, overrides, dataset), context)
    method.name = canonical_name(name)
    return method


def weights_status(spec: MethodSpec, params: dict[str, Any] | None = None) -> list[tuple[Weights, bool | None]]:
    """(weights, available?) for each weights file the method needs; None = cannot tell."""
    out: list[tuple[Weights, bool | None]] = []
    for w in spec.weights:
        ok: bool | None = None
        if w.check:
            module_name, _, attr = w.check.partition(":")
            try:
                ok = bool(getattr(importlib.import_module(module_name), attr)(params or {}))
            except Exception:
                ok = None
        out.append((w, ok))
    return out
