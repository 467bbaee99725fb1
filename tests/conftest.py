"""Shared fixtures.  Tests never touch the network: hub access is switched off here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from agiqa_test_support import blurred_shapes, write_image  # noqa: E402


@pytest.fixture
def tiny_agiqa3k(tmp_path: Path) -> Path:
    """An AGIQA-3k-layout folder: 12 prompts x 3 generators, 48 px images.

    Quality falls with blur, so sharpness methods have something to find.
    """
    import pandas as pd

    root = tmp_path / "tiny3k"
    rows = []
    for idx in range(12):
        for g, gen in enumerate(("genA_normal", "genB_lowstep", "genC_normal")):
            blur = (idx + 3 * g) % 5
            name = f"{gen}_{idx:03d}.png"
            write_image(root / "images" / name, blurred_shapes(48, blur, seed=idx * 10 + g))
            rows.append({"name": name, "prompt": f"prompt number {idx}", "adj1": "", "adj2": "", "style": "",
                         "mos_quality": 4.0 - 0.7 * blur + 0.05 * g, "std_quality": 0.5,
                         "mos_align": 1.0 + 0.2 * ((idx * 7 + g) % 11), "std_align": 0.6})
    pd.DataFrame(rows).to_csv(root / "data.csv", index=False)
    return root
