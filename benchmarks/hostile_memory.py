"""Peak memory of reading hostile files (hardening issue): each case in a fresh process.

    python benchmarks/hostile_memory.py

Prints, per case, the peak RSS above the process's baseline (after imports) and what the
reader said.  The cases: a zip bomb member (1 GB of zeros in a ~1 MB zip), a member whose
header lies about its size, a 20000x20000 PNG (400 MP in ~0.4 MB), a 10000x10000 JPEG
(100 MP, under PIL's own limit) read by CEIQ's feature path, and a genuine 6300x6300 PNG
just under the 40 MP cap (the most a single read may hold).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import tempfile
import zipfile
from pathlib import Path


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> float:
    """Reset the kernel's high-water mark (Linux: clear_refs 5) and return the current RSS in MB.
    (ru_maxrss would carry the parent's peak into a spawned child.)"""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mb("VmRSS")


def peak_mb() -> float:
    return _status_mb("VmHWM")


def case(name: str, folder: str, queue) -> None:
    import importlib

    for lib in ("numpy", "PIL.Image"):  # the baseline includes the libraries
        importlib.import_module(lib)

    from agiqa_bench.datasets.diffusiondb import PartReader
    from agiqa_bench.errors import AgiqaBenchError
    from agiqa_bench.images import load_rgb

    base = reset_peak()
    folder = Path(folder)
    try:
        if name == "zip bomb member":
            with PartReader("part-000001", folder / "part-000001.zip") as r:
                r.read("bomb.png")
        elif name == "20000x20000 PNG":
            load_rgb(folder / "huge.png")
        elif name == "6300x6300 PNG (just under the cap)":
            load_rgb(folder / "at_cap.png")
        elif name == "10000x10000 JPEG via CEIQ":
            from baselines.ceiq import ceiq_features

            ceiq_features(load_rgb(folder / "big.jpg"))
        said = "read (no error)"
    except AgiqaBenchError as exc:
        said = str(exc)[:150]
    queue.put((name, peak_mb() - base, said))


def main() -> None:
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with zipfile.ZipFile(folder / "part-000001.zip", "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("bomb.png", bytes(2**30))
            z.writestr("part-000001.json", "{}")
        Image.new("L", (20000, 20000)).save(folder / "huge.png")
        Image.fromarray(np.zeros((10000, 10000, 3), np.uint8)).save(folder / "big.jpg", quality=50)
        Image.new("RGB", (6300, 6300)).save(folder / "at_cap.png")
        sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
        print("files:", ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()))
        ctx = mp.get_context("spawn")
        for name in ("zip bomb member", "20000x20000 PNG", "10000x10000 JPEG via CEIQ",
                     "6300x6300 PNG (just under the cap)"):
            queue = ctx.Queue()
            proc = ctx.Process(target=case, args=(name, tmp, queue))
            proc.start()
            proc.join()
            got = queue.get() if not queue.empty() else (name, float("nan"), f"exit code {proc.exitcode}")
            print(f"{got[0]:<28} peak RSS +{got[1]:7.1f} MB   {got[2]}")


if __name__ == "__main__":
    sys.exit(main())
