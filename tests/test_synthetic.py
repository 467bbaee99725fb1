"""SynthAGIQA: determinism, AGIQA-3k layout, and that the construction does what it claims.

The construction tests are the point of the dataset: quality must be
predictable from the quality-defect metadata and not from the alignment-error
metadata, alignment the other way round, and the defects and errors must be
visible in the pixels, not only in the CSV.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage
from scipy.stats import spearmanr
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold

from agiqa_bench.synthetic import dataset as synth
from agiqa_bench.synthetic.dataset import (
    SynthConfig,
    ensure_synthetic,
    is_complete,
    parse_name,
    plan_dataset,
    render_plan,
    write_synthetic,
)
from agiqa_bench.synthetic.world import ALIGNMENT_ERRORS, BACKGROUND_COLOURS, OBJECT_COLOURS, QUALITY_DEFECTS

SMALL = SynthConfig(n_prompts=8, image_size=48)
STUDY = SynthConfig(n_prompts=80, image_size=48)
Q_COLS = [f"q_{k}" for k in QUALITY_DEFECTS]
A_COLS = [f"a_{k}" for k in ALIGNMENT_ERRORS]


def read_labels(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "data.csv", keep_default_na=False)


def load(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64)


def digest_folder(folder: Path) -> dict[str, str]:
    files = [folder / "data.csv"] + sorted((folder / "images").iterdir())
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    folder = write_synthetic(tmp_path_factory.mktemp("synth") / "study", STUDY)
    return folder, read_labels(folder)


# --------------------------------------------------------------------------- determinism


def test_same_config_gives_identical_files(tmp_path):
    a = digest_folder(write_synthetic(tmp_path / "a", SMALL))
    b = digest_folder(write_synthetic(tmp_path / "b", SMALL))
    assert a == b
    assert len(a) == 1 + 8 * len(SMALL.generators)


def test_different_seed_gives_different_data(tmp_path):
    a = write_synthetic(tmp_path / "a", SMALL)
    b = write_synthetic(tmp_path / "b", SynthConfig(n_prompts=8, image_size=48, seed=1))
    assert (a / "data.csv").read_bytes() != (b / "data.csv").read_bytes()
    assert read_labels(a).prompt.tolist() != read_labels(b).prompt.tolist()


def test_an_image_does_not_depend_on_the_other_images():
    """Image k is seeded by (seed, prompt, generator), not by generation order."""
    few = SynthConfig(n_prompts=3, image_size=48, generators=("xlpro", "pixgan"))
    many = SynthConfig(n_prompts=8, image_size=48)
    plans_many = {p.name: p for p in plan_dataset(many)}
    for plan in plan_dataset(few):
        twin = plans_many[plan.name]
        assert plan == twin
        assert np.array_equal(render_plan(plan, few), render_plan(twin, many))


# --------------------------------------------------------------------------- layout


def test_layout_matches_agiqa3k(study):
    folder, df = study
    with open(folder / "data.csv", newline="") as fh:
        header = next(csv.reader(fh))
    agiqa3k = ["name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality", "mos_align", "std_align"]
    assert header[:9] == agiqa3k
    assert {"mos_overall", "generator", *Q_COLS, *A_COLS} <= set(header)

    assert len(df) == STUDY.n_prompts * len(STUDY.generators)
    assert df.name.is_unique
    parsed = [parse_name(n) for n in df.name]
    assert [g for g, _ in parsed] == df.generator.tolist()
    groups = pd.DataFrame(parsed, columns=["generator", "idx"])
    per_prompt = groups.groupby("idx").generator.apply(frozenset)
    assert len(per_prompt) == STUDY.n_prompts
    assert all(gens == frozenset(synth.generator_names(STUDY)) for gens in per_prompt)
    assert all((folder / "images" / n).is_file() for n in df.name)
    assert df.groupby(groups.idx.values).prompt.nunique().eq(1).all()
    assert df.drop_duplicates("prompt").shape[0] == STUDY.n_prompts

    for col in ("mos_quality", "mos_align", "mos_overall"):
        assert df[col].between(0, 5).all(), col
    assert (df[["std_quality", "std_align"]] > 0).all().all()
    assert df["style"].isin(["", "outlined", "striped"]).all()
    assert (df["style"] != "").any()
    styled = df[df["style"] != ""]
    assert all(p.endswith(", " + s) for p, s in zip(styled.prompt, styled["style"]))

    marker = json.loads((folder / "synth.json").read_text())
    assert marker["format_version"] == synth.FORMAT_VERSION
    assert marker["config"]["n_prompts"] == STUDY.n_prompts
    with Image.open(folder / "images" / df.name[0]) as img:
        assert img.format == "PNG" and img.size == (48, 48) and img.mode == "RGB"


def test_write_is_atomic(tmp_path, monkeypatch):
    def interrupted(folder, config):
        (folder / "data.csv").write_text("name\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "_write_contents", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic(tmp_path / "out", SMALL)
    assert list(tmp_path.iterdir()) == []  # no half-written folder, no temp left behind


def test_ensure_synthetic_caches_and_repairs(tmp_path):
    folder = ensure_synthetic(tmp_path, SMALL)
    assert folder.parent == tmp_path and is_complete(folder, SMALL)
    stamp = (folder / "data.csv").stat().st_mtime_ns
    assert ensure_synthetic(tmp_path, SMALL) == folder
    assert (folder / "data.csv").stat().st_mtime_ns == stamp  # reused, not regenerated

    (folder / "images" / "xlpro_000.png").unlink()  # damaged cache: regenerated
    assert not is_complete(folder, SMALL)
    assert ensure_synthetic(tmp_path, SMALL) == folder and is_complete(folder, SMALL)

    other = ensure_synthetic(tmp_path, SynthConfig(n_prompts=8, image_size=48, seed=3))
    assert other != folder


def test_write_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        write_synthetic(tmp_path, SMALL)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError):
        SynthConfig(generators=("nope",))
    with pytest.raises(ValueError):
        SynthConfig(generators=("xlpro", "xlpro"))
    with pytest.raises(ValueError):
        SynthConfig(n_prompts=0)
    with pytest.raises(ValueError):
        SynthConfig(image_size=8)


# --------------------------------------------------------------------------- construction


def out_of_fold_srcc(df: pd.DataFrame, features: list[str], target: str) -> float:
    """SRCC of Ridge predictions made for each prompt group by a model that never saw it."""
    x, y = df[features].to_numpy(float), df[target].to_numpy(float)
    groups = [parse_name(n)[1] for n in df.name]
    pred = np.empty_like(y)
    for train, test in GroupKFold(n_splits=5).split(x, y, groups):
        pred[test] = Ridge(alpha=1.0).fit(x[train], y[train]).predict(x[test])
    return float(spearmanr(pred, y)[0])


def test_targets_follow_their_own_metadata(study):
    _, df = study
    srcc = {
        (feats, target): out_of_fold_srcc(df, cols, target)
        for feats, cols in (("q", Q_COLS), ("a", A_COLS), ("qa", Q_COLS + A_COLS))
        for target in ("mos_quality", "mos_align", "mos_overall")
    }
    assert srcc["q", "mos_quality"] > 0.8, srcc
    assert srcc["a", "mos_quality"] < 0.3, srcc
    assert srcc["a", "mos_align"] > 0.8, srcc
    assert srcc["q", "mos_align"] < 0.3, srcc
    both = srcc["qa", "mos_overall"]
    assert both > srcc["q", "mos_overall"] + 0.1 and both > srcc["a", "mos_overall"] + 0.1, srcc


def test_quality_and_alignment_are_weakly_correlated(study):
    _, df = study
    assert abs(spearmanr(df.mos_quality, df.mos_align)[0]) < 0.3
    assert df.mos_quality.std() > 0.6 and df.mos_align.std() > 0.6
    means = df.groupby("generator")[["mos_quality", "mos_align"]].mean()
    assert means.loc["dreamshot", "mos_quality"] > means.loc["literalist", "mos_quality"] + 1
    assert means.loc["literalist", "mos_align"] > means.loc["dreamshot", "mos_align"] + 1
    assert means.loc["xlpro"].min() > means.loc["pixgan"].max()


# --------------------------------------------------------------------------- pixels


def laplacian_variance(image: np.ndarray) -> float:
    return float(ndimage.laplace(image.mean(axis=2)).var())


def high_frequency_energy(image: np.ndarray) -> float:
    gray = image.mean(axis=2)
    return float(((gray - ndimage.gaussian_filter(gray, 1.5)) ** 2).mean())


def clean_and_file(folder: Path, rows: pd.DataFrame, config: SynthConfig):
    plans = {p.name: p for p in plan_dataset(config)}
    for name in rows.name:
        clean = render_plan(plans[name], config, defects=False).astype(np.float64)
        yield clean, load(folder / "images" / name)


def test_blur_is_visible(study):
    folder, df = study
    # noise, banding and JPEG blocking (applied after the blur) add edges of their own
    rows = df[(df.q_blur >= 0.4) & (df.q_noise == 0) & (df.q_banding == 0) & (df.q_jpeg == 0) & (df.a_missing == 0)]
    assert len(rows) >= 15
    softer = [laplacian_variance(f) < 0.6 * laplacian_variance(c) for c, f in clean_and_file(folder, rows, STUDY)]
    assert np.mean(softer) >= 0.95


def test_noise_is_visible(study):
    folder, df = study
    rows = df[(df.q_noise >= 0.3) & (df.q_blur == 0) & (df.q_lowres == 0)]
    assert len(rows) >= 10
    for (clean, noisy), severity in zip(clean_and_file(folder, rows, STUDY), rows.q_noise):
        sigma = 4 + 30 * severity  # the documented noise std
        assert high_frequency_energy(noisy) > high_frequency_energy(clean) + 0.1 * sigma**2


def test_other_defects_change_the_pixels(study):
    folder, df = study
    for col in ("q_jpeg", "q_lowres", "q_banding"):
        rows = df[df[col] >= 0.5].head(5)
        assert len(rows) > 0, col
        for clean, degraded in clean_and_file(folder, rows, STUDY):
            assert np.abs(clean - degraded).mean() > 1.0, col
    pristine = df[(df[Q_COLS] == 0).all(axis=1)].head(5)
    for clean, image in clean_and_file(folder, pristine, STUDY):
        assert np.array_equal(clean, image)


def colour_fraction(image: np.ndarray, rgb: tuple[int, int, int], *, near: bool = True, tol: float = 60) -> float:
    """Share of pixels within `tol` of `rgb` (or farther than `tol` when near=False), RGB distance."""
    distance = np.linalg.norm(image - np.asarray(rgb, dtype=np.float64), axis=-1)
    return float((distance < tol).mean() if near else (distance > tol).mean())


def mild_defects(df: pd.DataFrame) -> np.ndarray:
    """Rows whose quality defects leave object colours intact."""
    return ((df.q_blur < 0.3) & (df.q_lowres < 0.3) & (df.q_jpeg < 0.3) & (df.q_noise < 0.5)).to_numpy()


def test_wrong_colour_is_visible(study):
    folder, df = study
    drawn = df[(df.a_missing == 0) & mild_defects(df)]
    frac = np.array([colour_fraction(load(folder / "images" / n), OBJECT_COLOURS[c]) for n, c in zip(drawn.name, drawn.colour)])
    wrong = drawn.a_colour.to_numpy() == 1
    assert wrong.sum() >= 15
    assert (drawn.colour[wrong] != drawn.drawn_colour[wrong]).all()
    assert frac[wrong].max() < 0.005  # the requested colour is (almost) nowhere in the image
    assert np.mean(frac[~wrong] > 0.01) > 0.95  # while right-colour images show it


def test_missing_object_is_only_background(study):
    folder, df = study

    def foreground(name: str, background: str) -> float:
        smooth = ndimage.gaussian_filter(load(folder / "images" / name), sigma=(1.5, 1.5, 0))  # averages noise away
        return colour_fraction(smooth, BACKGROUND_COLOURS[background], near=False)

    fg = np.array([foreground(n, b) for n, b in zip(df.name, df.background)])
    missing = df.a_missing.to_numpy() == 1
    assert missing.sum() >= 10
    assert (df.drawn_count[missing] == 0).all()
    assert fg[missing].max() < 0.01
    assert np.median(fg[~missing]) > 0.05


def test_default_dataset_is_fast(tmp_path):
    import time

    start = time.perf_counter()
    write_synthetic(tmp_path / "default", synth.default_config())
    assert time.perf_counter() - start < 30
