"""The command line, end to end on tiny data."""

from __future__ import annotations

import json
import subprocess
import sys

from agiqa_test_support import BRIGHTNESS, DATASETS, REF_SPLITS, register
from typer.testing import CliRunner

from agiqa_bench.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_methods_and_datasets_listings(monkeypatch):
    from agiqa_bench.console import console

    monkeypatch.setattr(console, "width", 160)  # a wide terminal: cells are not wrapped
    result = invoke("methods")
    assert result.exit_code == 0, result.output
    listing = result.output
    assert "cpbd" in listing and ".grid" in listing and "alias dsiqa" in listing
    assert "sisblim.approx is an approximation" in listing.replace("\n", " ")
    result = invoke("methods", "niqe")  # one method: the details too
    assert "niqe.params=PATH" in result.output and "pretrain niqe" in result.output
    result = invoke("datasets")
    assert result.exit_code == 0 and "agiqa1k" in result.output and "synthetic" in result.output


def test_run_then_report_on_agiqa3k_folder(tiny_agiqa3k, tmp_path):
    out = tmp_path / "runs"
    result = invoke("run", "--methods", "cpbd,ceiq", "--dataset", "agiqa3k", "--data-root", tiny_agiqa3k,
                    "--repeats", "2", "--out", out)
    assert result.exit_code == 0, result.output
    assert "SRCC" in result.output and "cpbd" in result.output
    result = invoke("run", "--methods", "cpbd,ceiq", "--dataset", "agiqa3k", "--data-root", tiny_agiqa3k,
                    "--repeats", "2", "--out", out)
    assert "skipped 8 finished row(s)" in result.output
    result = invoke("report", "--out", out)
    assert result.exit_code == 0, result.output
    text = (out / "leaderboard.md").read_text()
    assert "| cpbd |" in text and "| ceiq |" in text
    assert "agiqa3k / quality" in text and "agiqa3k / alignment" in text and "**" in text


def test_splits_export_reproduces_reference_folds(tmp_path):
    target = tmp_path / "f.json"
    result = invoke("splits", "export", "--dataset", "agiqa1k", "--protocol", "ipiqa-reference",
                    "--data-root", DATASETS / "agiqa1k", "--output", target)
    assert result.exit_code == 0, result.output
    data = json.loads(target.read_text())
    ref = json.loads(REF_SPLITS.read_text())["agiqa1k"]
    assert [set(s["test_groups"]) for s in data["splits"]] == [set(f["test_groups"]) for f in ref]


def test_user_errors_are_one_line_not_tracebacks(tmp_path, monkeypatch):
    monkeypatch.delenv("AGIQA_BENCH_DATA", raising=False)
    result = invoke("run", "--methods", "cpbd", "--dataset", "agiqa3k", "--out", tmp_path)
    assert result.exit_code == 2
    assert "--data-root" in result.output and "Traceback" not in result.output
    result = invoke("run", "--methods", "cpbd", "--dataset", "agiqa3k", "--data-root", tmp_path)
    assert result.exit_code == 2 and "data.csv" in result.output


def test_failed_method_gives_nonzero_exit(tiny_agiqa3k, tmp_path, monkeypatch):
    register(monkeypatch, BRIGHTNESS)
    result = invoke("run", "--methods", "brightness,cpbd", "--dataset", "agiqa3k", "--data-root", tiny_agiqa3k,
                    "--repeats", "2", "--out", tmp_path / "runs", "--set", "brightness.fail_on_repeat=0")
    assert result.exit_code == 1
    assert "failed" in result.output and "boom" in result.output
    report = invoke("report", "--out", tmp_path / "runs")
    assert "Failures" in report.output and "brightness" in report.output


def test_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "agiqa_bench", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and "agiqa-bench" in done.stdout


def test_default_run_on_builtin_synthetic_then_report(tmp_path):
    out = tmp_path / "runs"
    result = invoke("run", "--dataset-opt", "n_prompts=12", "--dataset-opt", "image_size=64", "--repeats", "2",
                    "--out", out)
    assert result.exit_code == 0, result.output
    assert "synthetic: 72 items, 12 groups" in result.output.replace("\n", " ")
    report = invoke("report", "--out", out)
    assert report.exit_code == 0
    for method in ("cpbd", "ceiq"):
        assert f"| {method} |" in report.output
    assert "synthetic / overall" in report.output


def test_synth_command_then_run_on_that_folder(tmp_path):
    folder = tmp_path / "synth"
    result = invoke("synth", "--out", folder, "--n-prompts", "10", "--image-size", "64", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert (folder / "data.csv").exists() and len(list((folder / "images").iterdir())) == 60
    result = invoke("run", "--methods", "cpbd", "--dataset", "synthetic", "--data-root", folder, "--repeats", "1",
                    "--target", "quality", "--out", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    result = invoke("run", "--methods", "cpbd", "--dataset", "synthetic", "--data-root", tmp_path / "nothing",
                    "--out", tmp_path / "runs")
    assert result.exit_code == 2 and "agiqa-bench synth" in result.output.replace("\n", " ")


def test_plugin_commands_are_mounted_and_a_broken_one_is_reported(monkeypatch, capsys):
    """Commands come from the `agiqa_bench.commands` entry points: IP-IQA's are there, a broken plugin is one warning."""
    import importlib.metadata as md

    import typer

    from agiqa_bench import cli

    owner = {c.name or c.callback.__name__: c.callback.__module__ for c in app.registered_commands}
    assert owner["score"] == owner["run"] == "agiqa_bench.cli"
    assert "image2prompt" in {c.name for c in cli.pretrain_app.registered_commands}

    broken = md.EntryPoint(name="broken", value="no_such_module_xyz:register", group="agiqa_bench.commands")
    monkeypatch.setattr(md, "entry_points", lambda group: [broken])
    fresh = typer.Typer()
    monkeypatch.setattr(cli, "app", fresh)
    cli.mount_plugin_commands()
    assert fresh.registered_commands == []
    err = capsys.readouterr().err
    assert "commands of broken (no_such_module_xyz:register) not loaded" in err and "ModuleNotFoundError" in err
