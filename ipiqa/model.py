"""IP-IQA: a CLIP dual-stream model that scores an AI-generated image with its prompt.

Read top to bottom like the paper's Fig. 2:

    image  --CLIP image trunk-->  feature map F (B, C, h, w) ---------------+
                                   | visual attention pooling (CLIP's own)   |
                                   v                                         v
                                  g_v (B, E)              image-prompt attention pooling
                                                            query  = prompt feature t
    prompt --CLIP text encoder with the [QA] token--> t (B, E)  keys = tokens of F + their mean
                                                                         |
                                                                         v
                                                                        g_t (B, E)
    head( [g_v, g_t] ) -> K scores (1 for AGIQA-1k's MOS; 2 for AGIQA-3k's quality, alignment)

Text modes (`text_mode`):
- "paper" (default): the text encoder is frozen; the [QA] token is one learnable
  embedding that takes the place of the end-of-text token's input embedding
  (initialised from it); the prompt feature is the encoder output at that
  position, projected.
- "reference": as the public code does: the whole token-embedding table is
  trainable (which is what its `qa_token` switch does) and, through its
  `freeze_module` bug, so are the text positional embedding and projection;
  the transformer and final LayerNorm stay frozen in eval mode.

Ablations switch parts off: `use_prompt=False` gives the image-only model
(visual pooling + head), `qa_token=False` keeps the prompt stream but with no
learnable text parameter ("integral prompt" without [QA]).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from agiqa_bench.amp import run_fp32
from agiqa_bench.errors import ConfigError, MethodUnavailable
from agiqa_bench.clip import load_clip, resize_attnpool_pos_embed, tokenizer_for
from ipiqa.method import TEXT_MODES  # declared with the method's parameters (that module imports no torch)

IMAGE2PROMPT_FORMAT = "agiqa-bench/image2prompt@1"


@dataclass
class IPIQAConfig:
    clip_model: str = "RN50-quickgelu"
    pretrained: str = "openai"  # open_clip tag, checkpoint path, or "" for random weights
    image_size: int = 512
    num_outputs: int = 1
    use_prompt: bool = True  # image-prompt fusion (cross-modal attention pooling)
    qa_token: bool = True  # learnable [QA] token
    text_mode: str = "paper"
    mlp_head: bool = True  # Dropout-Linear-tanh-Dropout-Linear; False: one Linear
    dropout: float = 0.5
    fusion_heads: int = 0  # 0: as many as CLIP's visual attention pool (32 for RN50)
    image2prompt: str = ""  # Image2Prompt checkpoint for the image encoder ("" = plain CLIP)

    def to_dict(self) -> dict:
        return asdict(self)


# -- image stream ------------------------------------------------------------------------
class ImageStream(nn.Module):
    """CLIP's image tower split into its trunk (tokens) and its own global pooling.

    ResNet backbones: tokens = the layer4 map's positions, global = CLIP's
    attention pooling (query = the mean token) with its positional embedding
    bicubically resized to the input grid.  ViT backbones: tokens = the patch
    tokens after the final LayerNorm, global = CLIP's pooled, projected output.
    """

    def __init__(self, visual: nn.Module, image_size: int):
        super().__init__()
        self.visual = visual
        self.is_resnet = hasattr(visual, "attnpool")
        if self.is_resnet:
            if image_size % 32:
                raise ConfigError(f"ResNet CLIP needs an image size divisible by 32, got {image_size}")
            self.grid = image_size // 32
            pool = visual.attnpool
            with torch.no_grad():
                pool.positional_embedding = nn.Parameter(resize_attnpool_pos_embed(pool.positional_embedding.data, self.grid))
            self.token_dim = pool.k_proj.in_features
            self.heads = pool.num_heads
            self.out_dim = pool.c_proj.out_features
        else:
            grid = visual.grid_size
            self.grid = grid[0] if isinstance(grid, (tuple, list)) else grid
            self.token_dim = visual.transformer.width
            self.heads = max(1, self.token_dim // 64)
            self.out_dim = visual.output_dim

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(global feature (B, E), spatial tokens (B, N, C))."""
        v = self.visual
        if self.is_resnet:
            fmap = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(images)))))
            return v.attnpool(fmap), fmap.flatten(2).transpose(1, 2)
        x = v.transformer(v._embeds(images))
        pooled, tokens = v._pool(x)
        if v.proj is not None:
            pooled = pooled @ v.proj
        return pooled, tokens


# -- text stream -------------------------------------------------------------------------
class PromptEncoder(nn.Module):
    """CLIP's text encoder, frozen, with the learnable [QA] token in place of end-of-text."""

    def __init__(self, clip: nn.Module, qa_token: bool, mode: str):
        super().__init__()
        if mode not in TEXT_MODES:
            raise ConfigError(f"text_mode must be one of {TEXT_MODES}, got {mode!r}")
        self.mode = mode
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        self.out_dim = clip.text_projection.shape[1] if isinstance(clip.text_projection, torch.Tensor) else clip.text_projection.out_features
        for p in self.parameters():
            p.requires_grad_(False)
        self.qa_embedding: nn.Parameter | None = None
        if mode == "paper" and qa_token:
            self.eot_id: int | None = None  # set on first use from the tokens (highest id)
            self.qa_embedding = nn.Parameter(torch.zeros(self.token_embedding.weight.shape[1]))
            self._qa_initialised = False
        if mode == "reference":
            # the public code trains the whole token table when qa_token is on, and always (bug)
            # the positional embedding and the projection
            self.token_embedding.weight.requires_grad_(qa_token)
            self.positional_embedding.requires_grad_(True)
            if isinstance(self.text_projection, nn.Parameter):
                self.text_projection.requires_grad_(True)
            else:
                for p in self.text_projection.parameters():
                    p.requires_grad_(True)

    def init_qa_from(self, eot_id: int) -> None:
        """Initialise the [QA] embedding from the end-of-text token's embedding."""
        if self.qa_embedding is not None:
            with torch.no_grad():
                self.qa_embedding.copy_(self.token_embedding.weight[eot_id])

    def train(self, mode: bool = True):
        super().train(mode)
        self.transformer.eval()  # frozen parts stay in eval mode
        self.ln_final.eval()
        return self

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Prompt features (B, E) from token ids (B, L)."""
        eot = tokens.argmax(dim=-1)  # end-of-text has the highest id
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        x = self.token_embedding(tokens)
        if self.qa_embedding is not None:
            x = x.clone()
            x[rows, eot] = self.qa_embedding.to(x.dtype)
        x = x + self.positional_embedding.to(x.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)[rows, eot]
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection


# -- image-prompt fusion -------------------------------------------------------------------
class PromptAttentionPool(nn.Module):
    """Cross-modal attention pooling: the prompt feature queries the image tokens.

    Keys and values are the spatial tokens plus their mean token, with this
    module's own (randomly initialised) positional embedding; no weight is
    shared with CLIP's visual pooling.
    """

    def __init__(self, num_tokens: int, token_dim: int, query_dim: int, heads: int, out_dim: int):
        super().__init__()
        if token_dim % heads:
            raise ConfigError(f"fusion heads ({heads}) must divide the token width ({token_dim})")
        self.heads = heads
        self.positional_embedding = nn.Parameter(torch.randn(num_tokens + 1, token_dim) / token_dim**0.5)
        self.q_proj = nn.Linear(query_dim, token_dim)
        self.k_proj = nn.Linear(token_dim, token_dim)
        self.v_proj = nn.Linear(token_dim, token_dim)
        self.out_proj = nn.Linear(token_dim, out_dim)

    def forward(self, tokens: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        b, n, c = tokens.shape
        x = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1) + self.positional_embedding.to(tokens.dtype)
        split = lambda t: t.reshape(b, -1, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        q = split(self.q_proj(prompt.to(tokens.dtype))[:, None])
        out = F.scaled_dot_product_attention(q, split(self.k_proj(x)), split(self.v_proj(x)))
        return self.out_proj(out.transpose(1, 2).reshape(b, c))


class ScoreHead(nn.Module):
    """Dropout - Linear - tanh - Dropout - Linear (or one Linear), to K raw MOS outputs.

    Always float32, outside bf16 autocast (`run_fp32`): bf16 scores keep 8 significant bits, which ties
    images that differ (about 240 distinct values over 600 test images)."""

    def __init__(self, in_dim: int, num_outputs: int, mlp: bool, dropout: float):
        super().__init__()
        if mlp:
            self.layers = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, in_dim), nn.Tanh(),
                                        nn.Dropout(dropout), nn.Linear(in_dim, num_outputs))
        else:
            self.layers = nn.Linear(in_dim, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_fp32(self.layers, x)


# -- the model ------------------------------------------------------------------------------
def load_image2prompt(clip: nn.Module, path: str, model_name: str) -> None:
    """Load an Image2Prompt-pretrained image encoder into `clip.visual`."""
    from pathlib import Path

    file = Path(path).expanduser()
    if not file.is_file():
        raise MethodUnavailable(
            f"Image2Prompt checkpoint not found: {file}. Make one with `agiqa-bench pretrain image2prompt "
            "--diffusiondb DIR --out CKPT` and pass it with --image2prompt CKPT (ablate) or --set ipiqa.image2prompt=CKPT."
        )
    ckpt = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "visual" not in ckpt or ckpt.get("format", IMAGE2PROMPT_FORMAT) != IMAGE2PROMPT_FORMAT:
        raise MethodUnavailable(f"{file} is not an Image2Prompt checkpoint ({IMAGE2PROMPT_FORMAT} with a 'visual' state dict)")
    if ckpt.get("clip_model") not in (None, model_name):
        raise ConfigError(f"{file} was trained for CLIP {ckpt.get('clip_model')!r}, not {model_name!r}")
    state = dict(ckpt["visual"])
    own = clip.visual.state_dict()
    for key in ("positional_embedding",):  # ViT built at another size: resize like open_clip does
        if key in state and key in own and state[key].shape != own[key].shape:
            grid = int(round((own[key].shape[0] - 1) ** 0.5))
            state[key] = resize_attnpool_pos_embed(state[key], grid)
    clip.visual.load_state_dict(state)


class IPIQA(nn.Module):
    def __init__(self, config: IPIQAConfig):
        super().__init__()
        self.config = config
        is_vit = not config.clip_model.startswith("RN") and "tiny-rn" not in config.clip_model
        clip = load_clip(config.clip_model, config.pretrained, image_size=config.image_size if is_vit else None)
        if config.image2prompt:
            load_image2prompt(clip, config.image2prompt, config.clip_model)
        self.tokenizer = tokenizer_for(config.clip_model)
        self.image = ImageStream(clip.visual, config.image_size)
        in_dim = self.image.out_dim
        self.prompt: PromptEncoder | None = None
        self.fusion: PromptAttentionPool | None = None
        if config.use_prompt:
            self.prompt = PromptEncoder(clip, config.qa_token, config.text_mode)
            eot_id = int(self.tokenizer([""])[0].max())
            self.prompt.init_qa_from(eot_id)
            heads = config.fusion_heads or self.image.heads
            self.fusion = PromptAttentionPool(self.image.num_tokens, self.image.token_dim, self.prompt.out_dim,
                                              heads, self.image.out_dim)
            in_dim += self.image.out_dim
        self.head = ScoreHead(in_dim, config.num_outputs, config.mlp_head, config.dropout)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(prompts))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        g_v, spatial = self.image(images)
        if self.prompt is None:
            return self.head(g_v)
        if tokens is None:
            raise ValueError("this IP-IQA variant needs the prompt tokens")
        t = self.prompt(tokens)
        g_t = self.fusion(spatial, t)
        return self.head(torch.cat([g_v, g_t], dim=-1))

    def param_groups(self, lr: float, head_lr_scale: float, weight_decay: float = 0.0,
                     fusion_lr_scale: float = 1.0) -> list[dict]:
        """Optimizer groups: the head at lr * head_lr_scale; the modules IP-IQA adds to CLIP (the
        prompt attention pooling and the [QA] embedding) at lr * fusion_lr_scale (1 in the reference
        code); everything else trainable (the CLIP image encoder) at lr.

        With weight_decay > 0, as the reference: no decay on biases, norm layers and 1-d parameters
        (each part's get a group of their own with weight_decay 0; `training.decay_groups`)."""
        from agiqa_bench.training import decay_groups

        head = [p for p in self.head.parameters() if p.requires_grad]
        new = [p for p in self.fusion.parameters()] if self.fusion is not None else []
        if self.prompt is not None and self.prompt.qa_embedding is not None:
            new.append(self.prompt.qa_embedding)
        taken = {id(p) for p in head + new}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in taken]
        parts = [(rest, lr), (head, lr * head_lr_scale)]
        if new:
            parts.append((new, lr * fusion_lr_scale))
        return decay_groups(self, parts, weight_decay)
