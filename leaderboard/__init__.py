"""Reports built from the results store: statistics, paper-layout tables, figures.

Data flows one way: `agiqa_bench.store` rows -> `aggregate.summarize` (per
method and block) -> `report.build_report` (intervals, tests) -> tables,
figures and the markdown / HTML / CSV / JSON renderers.
"""

from leaderboard.aggregate import summarize
from leaderboard.report import Report, build_report

__all__ = ["summarize", "Report", "build_report"]
