"""Terminal output shared by the command-line modules: consoles, one-line errors and warnings."""

from __future__ import annotations

import functools
import warnings

import typer
from rich.console import Console

from agiqa_bench.errors import AgiqaBenchError

console = Console()
err_console = Console(stderr=True)


def show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one readable line on stderr (dataset quirks, dropped items, skipped files)."""
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def friendly(fn):
    """Run a command with expected errors printed as one clear message (exit 2), no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            try:
                return fn(*args, **kwargs)
            except AgiqaBenchError as exc:
                err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None

    return wrapper
