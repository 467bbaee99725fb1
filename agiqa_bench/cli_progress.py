"""What `agiqa-bench run` shows while it works: progress bars (jobs done / running / failed, ETA) and the summary."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import typer
from rich.table import Table

from agiqa_bench.console import console, err_console, plain, ranges


#: Seconds between plain progress lines when output is not a terminal (a log under nohup, SLURM, CI).
LOG_EVERY_ENV = "AGIQA_BENCH_PROGRESS_SECONDS"
LOG_EVERY = 30.0


def failure_lines(failed: list[tuple]) -> list[str]:
    """(method, target, repeat, message) failures as one line per method and message, with a count."""
    groups: dict[tuple[str, str], list[tuple]] = {}
    for method, target, repeat, message in failed:
        groups.setdefault((method, message), []).append((target, repeat))
    lines = []
    for (method, message), keys in groups.items():
        targets = sorted({t for t, _ in keys})
        repeats = {int(r) for _, r in keys}
        span = f"repeat {ranges(repeats)}" if len(repeats) == 1 else f"repeats {ranges(repeats)} ({len(repeats)})"
        lines.append(f"{method}: {len(keys)} key(s) ({', '.join(targets)}; {span}): {message}")
    return lines


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class PlainProgress:
    """Progress for a log, not a terminal: one plain line every `every` seconds while jobs finish (jobs done /
    total, failed, elapsed, ETA), and one when the run ends.  Printed from a timer thread, so a long job still
    shows the run is alive.  `counts` is the run's own tally (done, failed, jobs, images, mapped), read here."""

    def __init__(self, counts: dict, stream, every: float):
        import threading

        self.counts, self.stream, self.every = counts, stream, every
        self.started = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="agiqa-progress")

    def start(self) -> None:
        import time

        self.started = time.monotonic()
        self._thread.start()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def line(self) -> str:
        import time

        c = self.counts
        elapsed = time.monotonic() - (self.started or time.monotonic())
        finished = c["done"] + c["failed"]
        eta = (elapsed / finished * (c["jobs"] - finished)) if finished else None
        images = f"per-image values {c['mapped']}/{c['images']} images, " if c["images"] else ""
        return (f"progress: {images}{finished}/{c['jobs']} jobs finished ({c['failed']} failed), elapsed "
                f"{_clock(elapsed)}, ETA {_clock(eta) if eta is not None else 'unknown'}")

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.emit()

    def emit(self) -> None:
        print(self.line(), file=self.stream, flush=True)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            self.emit()


def execute_with_progress(plan, execute, out, device, force, keep_checkpoints=False, **executor_options):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[state]}"))
    counts = {"done": 0, "failed": 0, "jobs": 0, "workers": 1, "images": 0, "mapped": 0}
    plain_log = None
    if not console.is_terminal:  # a log file or pipe: bars would show only at the end, so plain lines instead
        import os
        import sys

        try:
            every = float(os.environ.get(LOG_EVERY_ENV, LOG_EVERY))
        except ValueError:
            every = LOG_EVERY
        plain_log = PlainProgress(counts, sys.stdout, max(every, 0.05))
    with Progress(*columns, console=console, transient=False, disable=plain_log is not None) as progress, \
            (plain_log or contextlib.nullcontext()):
        tasks: dict = {}

        def state() -> str:
            left = counts["jobs"] - counts["done"] - counts["failed"]
            return (f"{counts['done']} done, {min(left, counts['workers'])} running, {counts['failed']} failed"
                    if counts["jobs"] else "")

        def on_event(kind: str, payload: dict) -> None:
            if kind == "start":
                counts["jobs"], counts["workers"] = payload["jobs"], payload["workers"]
                tasks["*"] = progress.add_task(f"{'all jobs':<18}", total=payload["jobs"], state=state())
                progress.console.print(f"{payload['jobs']} job(s) on the {payload['executor']} executor"
                                       + (f" ({payload['workers']} workers)" if payload["workers"] > 1 else ""))
                if plain_log is not None:
                    plain_log.start()
                return
            name = payload["method"]
            if kind == "method":
                if payload.get("images"):  # the map phase: per-image values, images done / total
                    counts["images"] += payload["images"]
                    tasks[("map", name)] = progress.add_task(f"{plain(name + ' images'):<18}", total=payload["images"],
                                                             state="")
                tasks[name] = progress.add_task(f"{plain(name):<18}", total=payload["todo"], state="")
            elif kind == "mapped":
                progress.advance(tasks[("map", name)], payload["images"])
                counts["mapped"] += payload["images"]
            elif kind in ("done", "error"):
                counts["done" if kind == "done" else "failed"] += 1
                progress.advance(tasks[name])
                progress.update(tasks["*"], advance=1, state=state())

        try:
            with terminate_as_interrupt() as terminated:
                summary = execute(plan, out=out, device=device, force=force, keep_checkpoints=keep_checkpoints,
                                  on_event=on_event, **executor_options)
        except KeyboardInterrupt:
            progress.stop()
            err_console.print(f"{'terminated' if terminated else 'interrupted'}; {counts['done']} job(s) finished in "
                              f"this run and kept in {plain(out)}/results.sqlite, rerun the same command to resume",
                              highlight=False)
            raise typer.Exit(143 if terminated else 130) from None
    if summary.skipped:
        console.print(f"skipped {summary.skipped} finished row(s) already in {plain(out)}/results.sqlite (use --force to "
                      "redo)")
    return summary


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM (a scheduler's stop, `kill`) handled like Ctrl-C: workers stopped, finished jobs kept.
    Yields a list that holds True once a SIGTERM arrived."""
    got: list[bool] = []

    def on_term(signum, frame):
        got.append(True)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread (an embedding application): leave its handlers alone
        yield got
        return
    try:
        yield got
    finally:
        signal.signal(signal.SIGTERM, previous)


def print_summary(out: Path, plan) -> None:
    from agiqa_bench.store import read_results
    from leaderboard.aggregate import summarize

    frame = read_results(out, status=None)
    hashes = {s.hash for s in plan.splits.splits}
    frame = frame[(frame["data_hash"] == plan.data_hash) & frame["split_hash"].isin(hashes)]
    frame = frame[frame["method"].isin([m.name for m in plan.methods])]
    summary = summarize(frame)
    if summary.empty:
        return  # nothing finished (the failures were listed above)
    table = Table(title=f"{plain(plan.dataset.name)}: mean over repeats (test parts)")
    for col in ("method", "target", "repeats", "SRCC", "PLCC", "KRCC"):
        table.add_column(col, justify="left" if col in ("method", "target") else "right")
    for _, r in summary.sort_values(["target", "srcc_mean"], ascending=[True, False]).iterrows():
        fmt = lambda m: "n/a" if r[f"{m}_mean"] != r[f"{m}_mean"] else f"{r[f'{m}_mean']:.4f}"  # noqa: E731
        table.add_row(plain(r["label"]), plain(r["target"]), str(r["n"]), fmt("srcc"), fmt("plcc"), fmt("krcc"))
    console.print(table)
