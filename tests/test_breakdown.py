"""Results by item attribute (`report --by`), and SynthAGIQA's named sizes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from agiqa_bench.cli import app
from agiqa_bench.errors import ConfigError
from leaderboard.breakdown import check_attributes, stored_attributes, within_srcc

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_within_srcc_is_the_mean_over_repeats_of_the_srcc_inside_each_value():
    rng = np.random.default_rng(0)
    rows = []
    for rid in (1, 2):
        for k in range(12):
            style = "oil" if k % 2 else "photo"
            rows.append({"result_id": rid, "item_id": f"{k}", "prediction": float(rng.normal()), "mos": float(rng.normal()),
                         "generator": "g", "attributes": json.dumps({"style": style})})
    preds = pd.DataFrame(rows)
    block = pd.DataFrame([{"result_ids": "1,2", "label": "m", "lower_is_better": False}])
    got = within_srcc(block, preds, "style")["m"]
    for style in ("oil", "photo"):
        want = np.mean([spearmanr(p["prediction"], p["mos"]).statistic for _, p in
                        preds[preds["attributes"].str.contains(style)].groupby("result_id")])
        assert got[style] == pytest.approx(want)
    flipped = within_srcc(block.assign(lower_is_better=True), preds, "style")["m"]
    assert flipped["oil"] == pytest.approx(-got["oil"])
    assert stored_attributes(preds) == ["generator", "style"]
    with pytest.raises(ConfigError, match="can be broken down by: generator, style"):
        check_attributes(preds, ["class"])


def test_report_by_style_on_a_run(tmp_path):
    result = invoke("synth", "--out", tmp_path / "s", "--n-prompts", "20", "--image-size", "64", "--seed", "1")
    assert result.exit_code == 0, result.output
    result = invoke("run", "--dataset", "synthetic", "--data-root", tmp_path / "s", "--methods", "cpbd,ceiq",
                    "--repeats", "2", "--out", tmp_path / "out", "--executor", "serial", "--target", "quality")
    assert result.exit_code == 0, result.output
    result = invoke("report", "--out", tmp_path / "out", "--by", "generator,style", "--bootstrap", "0")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "## By generator, style" in text
    assert "SRCC within each style" in text and "SRCC within each generator" in text
    figures = sorted(p.name for p in (tmp_path / "out" / "figures").iterdir())
    assert any(n.startswith("by-style-") for n in figures) and any(n.startswith("generators-") for n in figures)
    bad = invoke("report", "--out", tmp_path / "out", "--by", "colour", "--no-figures")
    assert bad.exit_code == 2 and "can be broken down by: generator, style" in bad.output.replace("\n", " ")


def test_synthetic_size_presets(monkeypatch):
    from agiqa_bench.datasets import load_dataset
    from agiqa_bench.synthetic import dataset

    seen = []

    def fake_ensure(root, config):
        seen.append(config)
        raise RuntimeError("stop before generating")

    monkeypatch.setattr(dataset, "ensure_synthetic", fake_ensure)
    for size, prompts in (("3k", 300), ("1k", 180), ("default", 60)):
        with pytest.raises(RuntimeError):
            load_dataset("synthetic", size=size)
        assert seen[-1].n_prompts == prompts
    assert seen[0].key != seen[1].key  # each size cached in its own folder
    with pytest.raises(ConfigError, match="unknown size '2k'; known: default"):
        load_dataset("synthetic", size="2k")
    with pytest.raises(ConfigError, match="size or n_prompts"):
        load_dataset("synthetic", size="3k", n_prompts="10")
    with pytest.raises(ConfigError, match="n_prompts must be <= 999"):
        load_dataset("synthetic", n_prompts="5000")
