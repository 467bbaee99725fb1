"""Which pyiqa no-reference metrics run offline with nothing downloaded, and what the others need.

    python benchmarks/pyiqa_offline.py                    # every NR metric of the installed pyiqa
    python benchmarks/pyiqa_offline.py --metrics niqe,piqe,musiq

Each metric goes through the harness's own path (`create_method("pyiqa:<m>")`,
then `predict` on two SynthAGIQA images) with downloads switched off
(`HF_HUB_OFFLINE=1`) and empty caches (`TORCH_HOME`, `HF_HOME` and `XDG_CACHE_HOME`
point into a temporary folder), so "ok" means: works on a fresh machine
without network.  For the others it prints the first line of the error the
harness gives (the missing file and its URL, or the library that failed).
The result backs `NO_DOWNLOAD` and the list in `baselines/pyiqa_metrics.py`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", default="", help="comma-separated pyiqa names (default: every NR metric)")
    parser.add_argument("--timeout", type=int, default=180, help="seconds per metric before it counts as failed")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="pyiqa-offline-"))
    for var, sub in (("TORCH_HOME", "torch"), ("HF_HOME", "hf"), ("XDG_CACHE_HOME", "xdg")):
        os.environ[var] = str(home / sub)
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    sys.path.insert(0, str(ROOT))

    from agiqa_bench.datasets import load_dataset
    from agiqa_bench.method import MethodContext
    from agiqa_bench.registry import create_method
    from baselines import pyiqa_metrics

    names = [m.strip() for m in args.metrics.split(",") if m.strip()] or pyiqa_metrics.nr_metrics()
    items = load_dataset("synthetic").items[:2]

    def alarm(signum, frame):
        raise TimeoutError(f"no result after {args.timeout} s")

    signal.signal(signal.SIGALRM, alarm)
    ok = []
    print(f"pyiqa {pyiqa_metrics.pyiqa_version()}, caches under {home}, offline")
    for metric in names:
        t0 = time.perf_counter()
        signal.alarm(args.timeout)
        try:
            method = create_method(f"pyiqa:{metric}", {}, MethodContext(cache_dir=home / "run" / metric))
            scores = method.predict(items)
            status = f"ok ({', '.join(f'{s:.4g}' for s in scores)})"
            ok.append(metric)
        except Exception as exc:  # report every failure and go on
            status = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        finally:
            signal.alarm(0)
        print(f"{metric:24s} {time.perf_counter() - t0:6.1f} s  {status}", flush=True)
    print(f"\nno download needed: {', '.join(ok) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
