"""`python -m agiqa_bench` is the same as the `agiqa-bench` command."""

from agiqa_bench.cli import main

main()
