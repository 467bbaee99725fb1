"""Terminal output shared by the command-line modules: consoles, one-line errors and warnings.

Text from data (file names, label cells, method names from a store, messages quoting them) reaches the terminal
only through `plain`: rich markup in it (`[/bold]`) is shown literally instead of being read (or crashing the
print), and control characters (an ESC that would recolour or move the terminal, a bell) are shown as
`\\xNN` escapes.  Errors and warnings pass through it here, once, whatever raised them.
"""

from __future__ import annotations

import functools
import unicodedata
import warnings

import typer
from rich.console import Console
from rich.markup import escape

from agiqa_bench.errors import AgiqaBenchError

console = Console()
err_console = Console(stderr=True)


def visible(value) -> str:
    """`value` as text with every control character (but newline and tab) written as an escape."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch in "\n\t" or unicodedata.category(ch)[0] != "C" else
                   (f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}") for ch in text)


def plain(value) -> str:
    """`value` safe to put inside a rich markup string: control characters made visible, markup escaped."""
    return escape(visible(value))


def ranges(values) -> str:
    """Integers (repeat numbers) as sorted ranges: {0, 1, 2, 3, 4, 7} -> "0-4,7"."""
    nums = sorted({int(v) for v in values})
    spans, start = [], None
    for i, n in enumerate(nums):
        if start is None:
            start = n
        if i + 1 == len(nums) or nums[i + 1] != n + 1:
            spans.append(f"{start}-{n}" if n > start else f"{n}")
            start = None
    return ",".join(spans)


def show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one readable line on stderr (dataset quirks, dropped items, skipped files)."""
    err_console.print(f"[yellow]warning:[/] {plain(message)}", highlight=False, soft_wrap=True)


def friendly(fn):
    """Run a command with expected errors printed as one clear message (exit 2), no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            try:
                return fn(*args, **kwargs)
            except AgiqaBenchError as exc:
                err_console.print(f"[bold red]error:[/] {plain(exc)}", highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None

    return wrapper
