"""Tables built from the results store (markdown leaderboard)."""

from leaderboard.aggregate import summarize
from leaderboard.markdown import render_markdown

__all__ = ["summarize", "render_markdown"]
