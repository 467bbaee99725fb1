"""An outside plugin, written as the README's "Write a method" section says, installed on a path (a module
plus an entry point, no edit to this project), run through the CLI and held to the contract."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from agiqa_test_support import make_tiny_agiqa3k

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_files() -> dict[str, str]:
    """The code blocks the README marks `<!-- plugin: FILE -->`, by file name."""
    text = README.read_text()
    return {m[1]: m[2] for m in re.finditer(r"<!-- plugin: (\S+) -->\n```\w*\n(.*?)```", text, re.S)}


def install_on_path(folder: Path, files: dict[str, str]) -> Path:
    """The plugin as an installed distribution would be: its module, and a dist-info folder whose
    entry_points.txt holds what its pyproject.toml declares (importlib.metadata finds it on sys.path)."""
    folder.mkdir(parents=True, exist_ok=True)
    project = tomllib.loads(files.pop("pyproject.toml"))
    for name, body in files.items():
        (folder / name).write_text(body)
    info = folder / "my_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugins\nVersion: 0.1\n")
    lines = []
    for group, entries in project["project"]["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    folder = install_on_path(tmp_path_factory.mktemp("site"), readme_files())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return env


def python(env, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)


def test_the_readme_plugin_is_listed_checked_and_not_in_the_default_run(plugin_env):
    done = python(plugin_env, "from agiqa_bench.registry import list_methods, default_methods\n"
                              "print('colourfulness' in list_methods(), 'colourfulness' in default_methods())")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"]
    done = python(plugin_env, "from agiqa_bench import check_method\ncheck_method('colourfulness')\nprint('ok')")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_readme_plugin_runs_through_the_cli(plugin_env, tmp_path):
    root = make_tiny_agiqa3k(tmp_path / "agiqa3k")
    cli = [sys.executable, "-m", "agiqa_bench"]
    listed = subprocess.run([*cli, "methods", "colourfulness", "--details"], env=plugin_env, capture_output=True,
                            text=True, timeout=300)
    assert listed.returncode == 0 and "Hasler" in listed.stdout, listed.stderr
    out = tmp_path / "runs"
    done = subprocess.run([*cli, "run", "--methods", "colourfulness,cpbd", "--dataset", "agiqa3k", "--data-root",
                           str(root), "--repeats", "2", "--out", str(out), "--executor", "local", "--workers", "2",
                           "--keep-checkpoints"], env=plugin_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    import json

    from agiqa_bench.store import read_predictions, read_results

    rows = read_results(out)
    mine = rows[rows["method"] == "colourfulness"]
    assert len(mine) == 4  # 2 targets x 2 repeats, in worker processes too
    # its kept model (the README's optional hooks) scores as the run predicted
    row = mine.iloc[0]
    want = read_predictions(out).query("result_id == @row.id")
    pd.DataFrame({"image": [f"images/{i}" for i in want.item_id]}).to_csv(root / "pairs.csv", index=False)
    scored = subprocess.run([*cli, "score", "--checkpoint", json.loads(row.info_json)["checkpoint"], "--csv",
                             str(root / "pairs.csv"), "--output", str(tmp_path / "s.csv")], env=plugin_env,
                            capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr[-2000:]
    got = pd.read_csv(tmp_path / "s.csv")[row.target].to_numpy()
    np.testing.assert_allclose(got, want.prediction.to_numpy(), rtol=1e-9)


def test_the_readme_dataset_plugin_is_listed_and_runs(plugin_env, tmp_path):
    """The dataset plugin: listed, loaded with the harness's image checks, split, run and reported like a built-in."""
    root = make_tiny_agiqa3k(tmp_path / "src")
    import pandas as pd

    frame = pd.read_csv(root / "data.csv")
    data = tmp_path / "mydata"
    (data / "images").mkdir(parents=True)
    lines = []
    for row in frame.itertuples():
        (data / "images" / row.name).write_bytes((root / "images" / row.name).read_bytes())
        lines.append(f"{row.name}\t{row.prompt}\t{row.mos_quality}")
    (data / "scores.tsv").write_text("\n".join(lines) + "\n")
    cli = [sys.executable, "-m", "agiqa_bench"]
    listed = subprocess.run([*cli, "datasets"], env=plugin_env, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0 and "mydata" in listed.stdout, listed.stderr
    out = tmp_path / "runs"
    done = subprocess.run([*cli, "run", "--methods", "cpbd,colourfulness", "--dataset", "mydata", "--data-root",
                           str(data), "--repeats", "2", "--out", str(out), "--executor", "serial"],
                          env=plugin_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    audit = subprocess.run([*cli, "splits", "audit", "--dataset", "mydata", "--data-root", str(data), "--json"],
                           env=plugin_env, capture_output=True, text=True, timeout=300)
    assert audit.returncode == 0 and '"shared_prompts": 0' in audit.stdout, audit.stderr
    # the harness's image checks apply to the plugin's dataset: a missing image is the usual one-line error
    (data / "images" / frame.name.iloc[0]).unlink()
    missing = subprocess.run([*cli, "run", "--methods", "cpbd", "--dataset", "mydata", "--data-root", str(data),
                              "--repeats", "1", "--out", str(tmp_path / "r2")], env=plugin_env, capture_output=True,
                             text=True, timeout=300)
    assert missing.returncode == 2 and "missing" in missing.stderr and "Traceback" not in missing.stderr


def test_the_project_tests_pass_with_the_plugin_installed(plugin_env):
    here = Path(__file__).resolve().parent
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"{here / 'test_registry.py'}::test_same_methods_as_recorded",
                           f"{here / 'test_registry.py'}::test_registry_names_no_method"],
                          env=plugin_env, capture_output=True, text=True, timeout=600, cwd=here.parent)
    assert done.returncode == 0, done.stdout[-2000:]


def test_score_in_one_call(tmp_path):
    """`agiqa_bench.score`: paths or PIL images, one score per image, equal to the method's own predictions."""
    import numpy as np
    from PIL import Image

    import agiqa_bench
    from agiqa_bench.errors import ConfigError

    root = make_tiny_agiqa3k(tmp_path / "d")
    paths = sorted((root / "images").iterdir())[:4]
    scores = agiqa_bench.score("cpbd", paths)
    assert scores.shape == (4,) and np.all(np.isfinite(scores))
    again = agiqa_bench.score("cpbd", [Image.open(p) for p in paths])
    np.testing.assert_allclose(again, scores)
    from agiqa_bench.datasets import load_dataset

    ds = load_dataset("agiqa3k", root)
    by_name = {it.image.name: it for it in ds.items}
    direct = agiqa_bench.create_method("cpbd").predict([by_name[p.name] for p in paths])
    np.testing.assert_allclose(scores, direct)
    with pytest.raises(ConfigError, match="give checkpoint="):
        agiqa_bench.score("ceiq", paths)
    with pytest.raises(ConfigError, match="scores images against their prompts: give a prompt for every image"):
        agiqa_bench.score("clipscore", paths, dataset="synthetic")
