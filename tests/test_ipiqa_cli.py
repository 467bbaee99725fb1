"""IP-IQA through the command line: run, test-oracle labelling, checkpoints, score, ablate."""

from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from agiqa_bench.cli import app

runner = CliRunner()
FAST = ["--set", "ipiqa.epochs=1", "--set", "ipiqa.batch_size=8"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_run_keep_checkpoints_then_score(tiny_agiqa3k, tmp_path):
    out = tmp_path / "runs"
    result = invoke("run", "--methods", "ipiqa", "--dataset", "agiqa3k", "--data-root", tiny_agiqa3k, "--repeats", 1,
                    "--out", out, "--keep-checkpoints", "--set", "ipiqa.clip_model=agiqa-tiny-rn",
                    "--set", "ipiqa.pretrained=", "--set", "ipiqa.image_size=64", "--set", "ipiqa.selection=test-oracle",
                    *FAST)
    assert result.exit_code == 0, result.output
    checkpoints = list((out / "checkpoints").glob("agiqa3k-ipiqa-r0-quality+alignment-*.pt"))
    assert len(checkpoints) == 1
    report = invoke("report", "--out", out)
    assert "[test-oracle]" in report.output
    images = sorted((tiny_agiqa3k / "images").iterdir())[:3]
    pd.DataFrame({"image": [p.name for p in images], "prompt": ["a prompt"] * 3}).to_csv(
        tiny_agiqa3k / "images" / "pairs.csv", index=False)
    scored = invoke("score", "--checkpoint", checkpoints[0], "--csv", tiny_agiqa3k / "images" / "pairs.csv",
                    "--output", tmp_path / "pred.csv", "--device", "cpu")
    assert scored.exit_code == 0, scored.output
    frame = pd.read_csv(tmp_path / "pred.csv")
    assert list(frame.columns) == ["image", "prompt", "quality", "alignment"] and len(frame) == 3
    single = invoke("score", images[0], "--checkpoint", checkpoints[0], "--prompt", "a prompt", "--device", "cpu")
    assert single.exit_code == 0 and images[0].name in single.output
    missing = invoke("score", "--checkpoint", tmp_path / "nope.pt", "--prompt", "x", images[0])
    assert missing.exit_code == 2 and "checkpoint not found" in missing.output


def test_ablate_on_synthetic_makes_table3(tmp_path):
    out = tmp_path / "runs"
    result = invoke("ablate", "--dataset-opt", "n_prompts=10", "--dataset-opt", "image_size=64", "--repeats", 1,
                    "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    assert "no --image2prompt checkpoint" in result.output
    text = invoke("report", "--out", out).output
    assert "Table 3 layout" in text
    for variant in ("ipiqa.image_only", "ipiqa.integral", "ipiqa {"):
        assert variant in text
    table3 = text[text.index("Table 3 layout"):]
    line = next(row for row in table3.splitlines() if row.startswith("| ipiqa.integral"))
    assert [c.strip() for c in line.split("|")[2:5]] == ["", "✓", ""]  # no Image2Prompt, integral prompt, no [QA]
