"""The licences of what an install of agiqa-bench brings, read from the installed packages' metadata.

`agiqa-bench licences [--extra pyiqa]` walks the requirement closure of the installed `agiqa-bench` (the
plain install, plus the extras named) through `importlib.metadata`, and reads each package's licence from its
metadata: the `License-Expression` field (PEP 639), else the licence classifiers, else the free-text
`License` field (first line).  Each is sorted into:

- permissive: MIT, BSD, Apache, ISC, PSF/Python, MPL (file-level copyleft, no obligation on our code), zlib,
  Unlicense, CC0, HPND, the Unicode licence, 0BSD;
- non-commercial (PolyForm Noncommercial, CC BY-NC: no commercial use), copyleft (GPL, AGPL, LGPL),
  proprietary (e.g. NVIDIA's CUDA runtime libraries that the default Linux torch wheel pulls: free to use and
  redistribute under NVIDIA's licence, not open source; the CPU build of torch has none);
- unknown: no licence in the metadata (look at the package's files).

Only what is installed here is read: a requirement whose environment marker excludes this platform, or that
is not installed, is listed as such.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata

PERMISSIVE = re.compile(
    r"\b(MIT|BSD|Apache|ISC|PSF|Python Software Foundation|MPL|Mozilla Public|zlib|Unlicense|CC0|HPND|"
    r"Unicode|0BSD|Historical Permission)\b", re.I)
NONCOMMERCIAL = re.compile(r"(non-?commercial|\bNC\b|BY-NC|polyform)", re.I)
COPYLEFT = re.compile(r"(\bA?GPL|\bLGPL|General Public License|\bEUPL|\bSSPL)", re.I)
PROPRIETARY = re.compile(r"(proprietary|LicenseRef-)", re.I)


@dataclass(frozen=True)
class PackageLicence:
    name: str
    version: str
    licence: str
    kind: str  # permissive, non-commercial, copyleft, proprietary, unknown, not installed
    required_by: str


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;(]", requirement.strip(), maxsplit=1)[0]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def licence_text(dist: metadata.Distribution) -> str:
    """The licence a distribution declares (expression, classifiers, or the first line of its License field)."""
    meta = dist.metadata
    expression = meta.get("License-Expression")
    if expression:
        return expression.strip()
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::") and c.strip() != "License :: OSI Approved"]
    if classifiers:
        return "; ".join(dict.fromkeys(classifiers))
    text = (meta.get("License") or "").strip()
    return text.splitlines()[0][:120] if text else ""


def classify(licence: str) -> str:
    """non-commercial, copyleft, proprietary, permissive or unknown (the first that matches, in that order)."""
    if not licence:
        return "unknown"
    for kind, pattern in (("non-commercial", NONCOMMERCIAL), ("copyleft", COPYLEFT), ("proprietary", PROPRIETARY)):
        if pattern.search(licence):
            return kind
    return "permissive" if PERMISSIVE.search(licence) else "unknown"


def _applies(requirement: str, extras: set[str]) -> bool:
    """Whether a requirement (with its environment marker) applies to this platform and these extras."""
    from packaging.requirements import Requirement

    req = Requirement(requirement)
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": extra}) for extra in (extras or {""}))


def audit(root: str = "agiqa-bench", extras: tuple[str, ...] = ()) -> list[PackageLicence]:
    """Every package in the requirement closure of `root` (with `extras`), with its licence."""
    out: dict[str, PackageLicence] = {}
    queue = [(root, set(extras), "")]
    while queue:
        name, wanted, parent = queue.pop(0)
        key = _norm(name)
        if key in out:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            out[key] = PackageLicence(name, "", "", "not installed", parent)
            continue
        text = licence_text(dist)
        out[key] = PackageLicence(dist.metadata["Name"], dist.version, text, classify(text), parent)
        for requirement in dist.requires or []:
            if _applies(requirement, wanted):
                queue.append((_name(requirement), set(), dist.metadata["Name"]))
    return sorted(out.values(), key=lambda p: _norm(p.name))
