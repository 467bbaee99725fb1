"""Whether pretrained weights may be downloaded: one switch every method obeys.

Methods fetch weights the normal way (open_clip, torch hub, huggingface_hub)
on a machine with internet.  With any of these environment variables set to
1/true/yes/on, nothing is downloaded: a file that is not already cached is
reported missing at once (a `MethodUnavailable` naming the file and the
`--set` option that takes a local copy) instead of after a network timeout.

- ``AGIQA_BENCH_OFFLINE``: this project's switch;
- ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``: the Hugging Face switches
  (tests and CI set them), honoured for every hub, not only Hugging Face's.
"""

from __future__ import annotations

import os

OFFLINE_VARIABLES = ("AGIQA_BENCH_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline() -> bool:
    """True when downloads are switched off (see the module docstring)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)
