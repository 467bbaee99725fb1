"""CLIP-IQA's and CLIP-IQA+'s torch parts: image/text encoding, the learned prompt pairs, the model.

Imported by `baselines.clipiqa` when a model is built, so that reading the
method's spec (`agiqa-bench methods`) loads no model library.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from agiqa_bench.errors import ConfigError
from baselines.clipiqa import CLASS_POSITIONS, CTX_INITS  # declared with the method's parameters



# -- CLIP pieces -------------------------------------------------------------------------------
def attnpool_without_pos(pool, fmap):
    """CLIP's attention pooling of a (B, C, H, W) map with the positional embedding left out.

    Tokens = [mean of the positions, positions...]; the mean token queries all tokens
    through the pool's own q/k/v projections and heads; the output projection follows.
    (The official code runs the full self-attention and keeps token 0: the same vector.)
    """
    tokens = fmap.flatten(2).permute(2, 0, 1)  # (HW, B, C)
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)  # (HW + 1, B, C)
    out, _ = F.multi_head_attention_forward(
        query=tokens[:1], key=tokens, value=tokens, embed_dim_to_check=tokens.shape[-1],
        num_heads=pool.num_heads, q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight, in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True, training=False, need_weights=False,
    )
    return out[0]


def encode_image(clip, images, pos_embedding: bool = False):
    """Image features (B, E), not normalised.  pos_embedding=False: CLIP-IQA's ResNet path."""
    if pos_embedding:
        return clip.encode_image(images)
    v = clip.visual
    if not hasattr(v, "attnpool"):
        raise ConfigError("clipiqa: removing the positional embedding needs a ResNet CLIP (attention pooling); "
                          "for ViT backbones set pos_embedding=true")
    fmap = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(images)))))
    return attnpool_without_pos(v.attnpool, fmap)


def text_tower(clip):
    """The module holding the text encoder's parts (CLIP itself, or `.text` of a CustomTextCLIP)."""
    tower = clip if hasattr(clip, "token_embedding") else getattr(clip, "text", None)
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
    if tower is None or not all(hasattr(tower, n) for n in needed):
        raise ConfigError("clipiqa.plus needs a CLIP whose text encoder is open_clip's own transformer "
                          "(token embedding + positional embedding); this backbone has another text tower")
    pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
    if pool != "argmax":
        raise ConfigError(f"clipiqa.plus supports text pooling at the end-of-text token only, not {pool!r}")
    return tower


def encode_text_embeddings(tower, embeddings, eot):
    """Text features (N, E) from token embeddings (N, L, D); `eot` = end-of-text position per row."""
    x = embeddings + tower.positional_embedding.to(embeddings.dtype)
    x = tower.transformer(x, attn_mask=tower.attn_mask)
    x = tower.ln_final(x)[torch.arange(x.shape[0], device=x.device), eot]
    proj = tower.text_projection
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


def positive_probability(image_features, text_features, logit_scale):
    """(B, P) probability of the positive prompt of each of P pairs.

    text_features: (2P, E) ordered [pos_1, neg_1, pos_2, neg_2, ...].
    """
    img = image_features / image_features.norm(dim=-1, keepdim=True)
    txt = text_features / text_features.norm(dim=-1, keepdim=True)
    logits = logit_scale * img @ txt.t()
    return logits.reshape(len(img), -1, 2).softmax(dim=-1)[..., 0]


class PromptPairs(nn.Module):
    """CoOp contexts for K antonym prompt pairs around fixed class words (official layout)."""

    def __init__(self, tower, tokenizer, classnames: Sequence[str], n_targets: int, n_ctx: int,
                 position: str, class_specific: bool, init: str):
        super().__init__()
        if n_ctx < 1:
            raise ConfigError("clipiqa.plus.n_ctx must be at least 1")
        placeholder = " ".join(["X"] * n_ctx)
        width = int((tokenizer([placeholder]) != 0).sum()) - 2
        if width != n_ctx:
            raise ConfigError(f"clipiqa.plus: the tokenizer splits the context placeholder into {width} tokens, "
                              f"not {n_ctx}")
        tokens = tokenizer([f"{placeholder} {name}." for name in classnames])  # official: "X ... X Good photo.."
        if int((tokens != 0).sum(dim=1).max()) >= tokens.shape[1]:
            raise ConfigError(f"clipiqa.plus: n_ctx={n_ctx} plus the prompt does not fit the text encoder's "
                              f"context length ({tokens.shape[1]} tokens); lower n_ctx")
        self.name_lens = [int((tokenizer([name]) != 0).sum()) - 2 for name in classnames]
        with torch.no_grad():
            embedded = tower.token_embedding(tokens).float()
        self.register_buffer("prefix", embedded[:, :1].clone())  # start-of-text
        self.register_buffer("suffix", embedded[:, 1 + n_ctx:].clone())  # class words, ".", end-of-text, padding
        self.register_buffer("eot", tokens.argmax(dim=-1))
        dim = embedded.shape[-1]
        shape = (n_targets, len(classnames), n_ctx, dim) if class_specific else (n_targets, n_ctx, dim)
        if init == "normal":
            ctx = torch.empty(shape).normal_(std=0.02)
        elif init == "x":
            x = embedded[0, 1:1 + n_ctx]
            ctx = x.expand(*shape[:-2], n_ctx, dim).clone()
        else:
            raise ConfigError(f"clipiqa.plus.ctx_init must be one of {', '.join(CTX_INITS)}, got {init!r}")
        if position not in CLASS_POSITIONS:
            raise ConfigError(f"clipiqa.plus.class_position must be one of {', '.join(CLASS_POSITIONS)}")
        self.ctx = nn.Parameter(ctx)
        self.n_ctx, self.position, self.n_targets = n_ctx, position, n_targets
        self.n_classes = len(classnames)

    def forward(self):
        """Prompt embeddings (K * C, L, D), ordered [t1c1, t1c2, t2c1, ...], and their end-of-text positions."""
        k, c = self.n_targets, self.n_classes
        ctx = self.ctx if self.ctx.dim() == 4 else self.ctx.unsqueeze(1).expand(k, c, -1, -1)
        half = self.n_ctx // 2
        rows = []
        for i in range(c):
            pre = self.prefix[i].expand(k, -1, -1)
            words = self.suffix[i, :self.name_lens[i]].expand(k, -1, -1)
            rest = self.suffix[i, self.name_lens[i]:].expand(k, -1, -1)
            ci = ctx[:, i]
            if self.position == "middle":
                parts = [pre, ci[:, :half], words, ci[:, half:], rest]
            elif self.position == "front":
                parts = [pre, words, ci, rest]
            else:  # end
                parts = [pre, ci, words, rest]
            rows.append(torch.cat(parts, dim=1))
        prompts = torch.stack(rows, dim=1).reshape(k * c, *rows[0].shape[1:])
        return prompts, self.eot.repeat(k)


class CLIPIQAPlusModel(nn.Module):
    """p(positive) per target from cached image features, mapped to the MOS range of training."""

    def __init__(self, clip, prompts, lo, hi):
        super().__init__()
        clip.requires_grad_(False)
        clip.eval()
        self._frozen = [clip]  # not a submodule: kept out of state_dict and of the optimiser
        self.tower = [text_tower(clip)]
        self.prompts = prompts
        self.register_buffer("logit_scale", clip.logit_scale.detach().exp().float().clone())
        self.register_buffer("lo", torch.as_tensor(lo, dtype=torch.float32))
        self.register_buffer("hi", torch.as_tensor(hi, dtype=torch.float32))

    @property
    def clip(self):
        return self._frozen[0]

    def text_features(self):
        embeddings, eot = self.prompts()
        return encode_text_embeddings(self.tower[0], embeddings, eot.to(embeddings.device))

    def probability(self, features):
        return positive_probability(features, self.text_features(), self.logit_scale)

    def forward(self, images, features, mirrored=None):
        """`images` (the loop's pixel batch) is ignored: the image encoder is frozen, features are cached."""
        if self.training and mirrored is not None:
            pick = torch.rand(len(features), 1, device=features.device) < 0.5
            features = torch.where(pick, mirrored, features)
        return self.lo + (self.hi - self.lo) * self.probability(features)


# -- methods ------------------------------------------------------------------------------------
