"""Errors the harness raises on purpose.

Every one of them carries a message written for the person at the keyboard: it
names the file (and row) at fault and says what to do.  The CLI prints these
without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AgiqaBenchError(Exception):
    """Base class: an expected, user-facing failure."""


class DataError(AgiqaBenchError):
    """A label file, a row of it, or an image is missing or malformed."""


class MissingImagesError(DataError):
    """Some images listed in the label file are not on disk."""

    def __init__(self, label_file, image_dir, missing: list[str]):
        self.missing = list(missing)
        shown = ", ".join(self.missing[:5])
        more = f" (and {len(self.missing) - 5} more)" if len(self.missing) > 5 else ""
        super().__init__(
            f"{len(self.missing)} image(s) listed in {label_file} are missing from {image_dir}: "
            f"{shown}{more}. Put the images there, point --images at the right folder, "
            f"or pass --drop-missing to benchmark without them (a warning lists what was dropped)."
        )


class BadImagesError(DataError):
    """Images that exist but cannot be decoded or exceed the pixel cap (all of them listed in one message)."""


class ImageReadError(DataError):
    """An image file exists but cannot be decoded."""


class StoreError(AgiqaBenchError):
    """The results store or another output file cannot be written (disk full, read-only folder) or read."""


class ConfigError(AgiqaBenchError):
    """A bad option value: unknown method, parameter, split protocol, ..."""


class MethodUnavailable(AgiqaBenchError):
    """A method cannot run here: weights or an optional dependency are missing.

    The message must say which file or package is missing and how to provide it.
    The runner records it once and skips the method's remaining repeats.
    """
