"""IPCE: the five texts, the crop geometry, the five-level head and view averaging by hand, the schedule,
the trainable set, and a run of both variants (and the labelled test-oracle protocol) through the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
from typer.testing import CliRunner

from agiqa_bench.cli import app
from agiqa_bench.datasets import load_dataset
from agiqa_bench.errors import ConfigError
from agiqa_bench.method import MethodContext
from agiqa_bench.registry import create_method, get_spec
from agiqa_bench.splits import make_splits
from baselines.ipce import (
    LEVELS,
    _model_module,
    crop_grid,
    crop_stride,
    eval_crop_indices,
    expected_score,
    official_lr_factor,
    pool_views,
    texts_for,
)

torch = pytest.importorskip("torch")


def test_the_five_official_texts():
    assert LEVELS == ("badly", "poorly", "fairly", "well", "perfectly")
    assert texts_for("a red car") == [
        "a photo that badly matches 'a red car'",
        "a photo that poorly matches 'a red car'",
        "a photo that fairly matches 'a red car'",
        "a photo that well matches 'a red car'",
        "a photo that perfectly matches 'a red car'",
    ]


def test_stride_rule_and_grid():
    assert crop_stride(512, 512) == 32 and crop_stride(1023, 1023) == 32
    assert crop_stride(1024, 512) == 48 and crop_stride(512, 1024) == 48
    grid = crop_grid(512, 512, 224, 32)
    assert len(grid) == 10 * 10  # (512 - 224) / 32 + 1 per side
    assert grid[:2] == [(0, 0), (0, 32)] and grid[10] == (32, 0) and grid[-1] == (288, 288)  # row-major
    big = crop_grid(1024, 1024, 224, crop_stride(1024, 1024))
    assert len(big) == 17 * 17 and big[-1] == (768, 768)  # (1024 - 224) // 48 + 1 = 17; 16 * 48 = 768
    assert len(crop_grid(512, 768, 224, 32)) == 10 * 18
    with pytest.raises(ConfigError, match="do not fit"):
        crop_grid(100, 300, 224, 32)


def test_fifteen_evenly_spaced_test_crops():
    assert eval_crop_indices(100, 15) == [6 * i for i in range(15)]  # 100 // 15 = 6
    assert eval_crop_indices(289, 15) == [19 * i for i in range(15)]
    assert eval_crop_indices(15, 15) == list(range(15))
    with pytest.raises(ConfigError, match="15 test crops need at least 15 grid positions"):
        eval_crop_indices(9, 15)


def test_head_averages_crop_logits_then_the_two_distributions():
    """Two crops and the resized view, worked out by hand with math.exp."""
    crop1, crop2, whole = [0, 0, 0, 0, 2.0], [0, 0, 0, 0, 0.0], [0, math.log(2), 0, 0, math.log(3)]
    logits = torch.tensor([[crop1, crop2, whole]], dtype=torch.float64)
    probs = pool_views(logits)[0].tolist()
    # crop logits average to [0, 0, 0, 0, 1]: softmax [1, 1, 1, 1, e] / (4 + e); the view: [1, 2, 1, 1, 3] / 8
    p_crops = [1 / (4 + math.e)] * 4 + [math.e / (4 + math.e)]
    p_whole = [1 / 8, 2 / 8, 1 / 8, 1 / 8, 3 / 8]
    hand = [(a + b) / 2 for a, b in zip(p_crops, p_whole)]
    assert probs == pytest.approx(hand, abs=1e-12)
    # averaging the crop *probabilities* instead would differ (the official code averages logits)
    p1 = [1 / (4 + math.e ** 2)] * 4 + [math.e ** 2 / (4 + math.e ** 2)]
    wrong = [((a + 0.2) / 2 + b) / 2 for a, b in zip(p1, p_whole)]
    assert probs[4] != pytest.approx(wrong[4], abs=1e-3)
    e = sum(k * p for k, p in zip(range(1, 6), hand))
    score = expected_score(torch.tensor([probs], dtype=torch.float64))
    assert float(score[0]) == pytest.approx((e - 1) / 4 * 5, abs=1e-12)  # official ((E - 1) / 4) * 5
    assert float(expected_score(torch.tensor([probs], dtype=torch.float64), 1.0, 3.0)[0]) == pytest.approx(
        1 + (e - 1) / 4 * 2, abs=1e-12)
    assert float(expected_score(torch.tensor([[1.0, 0, 0, 0, 0]]))[0]) == 0.0
    assert float(expected_score(torch.tensor([[0, 0, 0, 0, 1.0]]))[0]) == 5.0


class _ToyCLIP(torch.nn.Module):
    """Image feature = the channel means of a view; text feature = the first three token ids; scale 2."""

    def __init__(self):
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(2.0)))
        self.proj = torch.nn.Linear(3, 3)  # something trainable

    def encode_image(self, x):
        return x.mean((2, 3))

    def encode_text(self, tokens):
        return tokens[..., :3].float()


def _toy_model(**kw):
    args = {"crop_size": 4, "stride": 4, "stride_large": 6, "large_side": 16, "train_crops": 2, "test_crops": 3,
            "mos_low": 0.0, "mos_high": 5.0}
    args.update(kw)
    return _model_module()(_ToyCLIP(), **args)


def test_views_are_the_official_crops_and_the_resized_image():
    import torch.nn.functional as F

    x = torch.arange(2 * 3 * 12 * 12, dtype=torch.float32).view(2, 3, 12, 12)
    model = _toy_model().eval()
    views = model.views(x)
    assert views.shape == (2, 4, 3, 4, 4)  # 3 test crops + the resized view
    # a 3 x 3 grid (stride 4); 9 // 3 = 3: grid indices 0, 3, 6 = (0, 0), (4, 0), (8, 0)
    for v, (top, left) in enumerate([(0, 0), (4, 0), (8, 0)]):
        assert torch.equal(views[:, v], x[:, :, top:top + 4, left:left + 4])
    assert torch.equal(views[:, 3], F.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False))
    # training: random grid crops (positions on the grid), plus the resized view
    model.train()
    torch.manual_seed(0)
    views = model.views(x)
    assert views.shape == (2, 3, 3, 4, 4)
    crops = {(t, l): x[:, :, t:t + 4, l:l + 4] for t in (0, 4, 8) for l in (0, 4, 8)}
    for b in range(2):
        for v in range(2):
            assert any(torch.equal(views[b, v], c[b]) for c in crops.values())
    # stride 6 once a side reaches large_side = 16: a 3 x 3 grid on 16 px, at 0, 6, 12
    assert _toy_model().eval().views(torch.zeros(1, 3, 16, 16)).shape == (1, 4, 3, 4, 4)


def test_forward_by_hand_on_a_toy_clip():
    """Scores = the expected level of logit_scale * cos(view channel means, text vectors), by numpy."""
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.random((1, 3, 12, 12)), dtype=torch.float32)
    tokens = torch.tensor(rng.integers(1, 9, (1, 5, 6)))
    model = _toy_model().eval()
    score = float(model(x, tokens)[0, 0])
    xs, ts = x.numpy()[0].astype(np.float64), tokens.numpy()[0, :, :3].astype(np.float64)
    views = [xs[:, t:t + 4, l:l + 4].mean((1, 2)) for t, l in [(0, 0), (4, 0), (8, 0)]]
    whole = torch.nn.functional.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False)
    views.append(whole.numpy()[0].astype(np.float64).mean((1, 2)))

    def logits(v):
        return [2.0 * v @ t / (np.linalg.norm(v) * np.linalg.norm(t)) for t in ts]

    def softmax(z):
        z = np.exp(np.array(z) - max(z))
        return z / z.sum()

    crop_mean = np.mean([logits(v) for v in views[:3]], axis=0)
    p = (softmax(list(crop_mean)) + softmax(logits(views[3]))) / 2
    assert score == pytest.approx(((p * np.arange(1, 6)).sum() - 1) / 4 * 5, abs=1e-5)


def test_schedule_matches_cosine_annealing_driven_the_official_way():
    """CosineAnnealingLR(T_max=5) stepped after each epoch, plus one step when an epoch would start at 0."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=5e-6, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    official = []
    for _ in range(30):
        if opt.param_groups[0]["lr"] == 0:
            sched.step()
        official.append(opt.param_groups[0]["lr"])
        sched.step()
    ours = [5e-6 * official_lr_factor(e, 5) for e in range(30)]
    assert ours == pytest.approx(official, rel=1e-6, abs=1e-15)
    assert min(ours) > 0 and ours[0] == 5e-6


@pytest.fixture(scope="module")
def data(tiny_agiqa3k_shared):
    ds = load_dataset("agiqa3k", tiny_agiqa3k_shared)
    return ds, make_splits(ds, "grouped", repeats=1, seed=2)[0]


def test_logit_scale_frozen_everything_else_trains(data, tmp_path, one_torch_thread):
    ds, split = data
    spec, _ = get_spec("ipce")
    method = create_method("ipce", {**spec.smoke, "lr": 1e-3}, MethodContext(seed=4, workdir=tmp_path))
    before = create_method("ipce", spec.smoke, MethodContext(seed=4))
    from baselines.ipce import build_model

    torch.manual_seed(4)
    start = build_model(before.config, option="ipce.pretrained").state_dict()
    method.fit(ds.subset(split.train), ds.subset(split.val), ("quality",))
    trainable = {n for n, p in method.model.named_parameters() if p.requires_grad}
    names = {n for n, _ in method.model.named_parameters()}
    assert names - trainable == {"clip.logit_scale"}
    assert any(n.startswith("clip.visual.") for n in trainable) and any(n.startswith("clip.transformer.") for n in trainable)
    assert "clip.token_embedding.weight" in trainable and "clip.text_projection" in trainable
    after = method.model.state_dict()
    assert torch.equal(after["clip.logit_scale"], start["clip.logit_scale"])
    for name in ("clip.visual.conv1.weight", "clip.transformer.resblocks.0.attn.in_proj_weight", "clip.text_projection"):
        assert not torch.equal(after[name], start[name]), name
    pred = method.predict(ds.subset(split.test))
    assert pred.shape == (len(split.test),) and np.all((pred >= 0) & (pred <= 5))


def test_zero_shot_scores_are_the_untrained_model_and_cached(data, tmp_path, one_torch_thread):
    ds, split = data
    spec, _ = get_spec("ipce.zero_shot")
    assert spec.kind == "zero-shot" and spec.family == "alignment"
    assert get_spec("ipce")[0].family == "correspondence"
    context = MethodContext(seed=1, cache_dir=tmp_path / "cache")
    zs = create_method("ipce.zero_shot", spec.smoke, context)
    test = ds.subset(split.test)
    zs.fit([], [], ("alignment",))
    first = zs.predict(test)
    from agiqa_bench.batches import ImageBank, normalise
    from baselines.ipce import Texts, build_model

    torch.manual_seed(1)
    model = build_model(zs.config, option="x.pretrained").eval()
    with torch.no_grad():
        direct = model(normalise(ImageBank.get(test, zs.config["image_size"])),
                       Texts(zs.config["clip_model"])([it.prompt for it in test]))[:, 0].numpy()
    np.testing.assert_allclose(first, direct, rtol=1e-5, atol=1e-6)
    again = create_method("ipce.zero_shot", spec.smoke, context)
    again.fit([], [], ("alignment",))
    np.testing.assert_array_equal(again.predict(test), first)  # read back from the score cache


def test_missing_prompt_is_one_line_naming_the_item(data, tmp_path):
    import dataclasses

    ds, split = data
    spec, _ = get_spec("ipce")
    train = [dataclasses.replace(it, prompt="") if i == 0 else it for i, it in enumerate(ds.subset(split.train))]
    method = create_method("ipce", spec.smoke, MethodContext(seed=1, workdir=tmp_path))
    with pytest.raises(ConfigError, match=rf"ipce needs a prompt for every image; 1 have none \(first: {train[0].id}\)"):
        method.fit(train, ds.subset(split.val), ("quality",))


@pytest.mark.slow
def test_run_both_variants_and_the_labelled_protocol_on_synthetic(tmp_path):
    runner = CliRunner()
    out = tmp_path / "runs"
    args = ["run", "--methods", "ipce,ipce.zero_shot,ipce.test_oracle", "--dataset-opt", "n_prompts=12",
            "--target", "quality", "--target", "alignment", "--repeats", "2", "--out", str(out),
            "--set", "ipce.epochs=1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = runner.invoke(app, ["report", "--out", str(out)])
    assert report.exit_code == 0, report.output
    text = report.output
    assert "| ipce {epochs=1} |" in text and "| ipce.zero_shot |" in text
    assert "| ipce.test_oracle {epochs=1} [test-oracle] |" in text  # the official protocol, labelled
    table1 = text[text.index("Table 1 layout"):text.index("Table 2 layout")]
    assert "Image-prompt correspondence" in table1 and "| ipce {epochs=1} |" in table1
    assert "ipce.zero_shot" not in table1  # a zero-shot alignment baseline: Table 2 only
    table2 = text[text.index("Table 2 layout"):]
    assert "| ipce {epochs=1} | Image-prompt correspondence |" in table2
    assert "| ipce.zero_shot | Alignment (zero-shot) |" in table2
