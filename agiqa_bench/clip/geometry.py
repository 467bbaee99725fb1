"""Geometry of a CLIP visual tower: its native input size, token grid and positional embedding at other sizes."""

from __future__ import annotations

from agiqa_bench.errors import ConfigError


def pos_embed_owner(visual):
    """The module holding the visual tower's grid positional embedding (ResNet: attnpool; ViT: itself)."""
    return visual.attnpool if hasattr(visual, "attnpool") else visual


def native_image_size(visual) -> int:
    size = visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def grid_for(visual, image_size: int) -> int:
    """Token grid side at `image_size`; ConfigError when the size does not fit the architecture."""
    if hasattr(visual, "attnpool"):
        if image_size % 32:
            raise ConfigError(f"a ResNet CLIP needs an image size divisible by 32, got {image_size}")
        return image_size // 32
    patch = visual.conv1.kernel_size[0]
    if image_size % patch:
        raise ConfigError(f"this ViT CLIP needs an image size divisible by its patch size {patch}, got {image_size}")
    return image_size // patch


def resized_pos_embed(visual, image_size: int):
    """The visual positional embedding resized (bicubic, leading token kept) to the grid of `image_size`."""
    from agiqa_bench.clip import resize_attnpool_pos_embed

    pos = pos_embed_owner(visual).positional_embedding.data
    return resize_attnpool_pos_embed(pos, grid_for(visual, image_size))


def set_image_size(visual, image_size: int) -> None:
    """Make the visual tower take `image_size` inputs (resizes its positional embedding)."""
    import torch

    owner = pos_embed_owner(visual)
    trainable = owner.positional_embedding.requires_grad
    owner.positional_embedding = torch.nn.Parameter(resized_pos_embed(visual, image_size), requires_grad=trainable)
    if hasattr(visual, "grid_size"):
        grid = grid_for(visual, image_size)
        visual.grid_size = (grid, grid)
        visual.image_size = (image_size, image_size)
    else:
        visual.image_size = image_size


def pos_embed_key(visual) -> str:
    return "attnpool.positional_embedding" if hasattr(visual, "attnpool") else "positional_embedding"
