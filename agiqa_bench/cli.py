"""The `agiqa-bench` command line.

    agiqa-bench run [--methods a,b] [--dataset synthetic] ...   benchmark methods on grouped splits
    agiqa-bench report [--out runs]                             markdown leaderboard from the store
    agiqa-bench methods | datasets                              what is available
    agiqa-bench splits export --dataset D --protocol P --output F
    agiqa-bench synth --out DIR                                 write a SynthAGIQA set
    agiqa-bench ablate --dataset D [--image2prompt CKPT]        IP-IQA's Table 3 variants
    agiqa-bench score --checkpoint CKPT | --method M IMAGE...     score images with a kept model or a zero-shot method
    agiqa-bench results list | delete --method M ... --yes      what a store holds; remove rows from it
    agiqa-bench licences [--extra pyiqa]                         every installed requirement's licence
    agiqa-bench pretrain clip | niqe ...                        make weights for the offline methods

Methods add their own commands through the `agiqa_bench.commands` entry points (IP-IQA:
`pretrain image2prompt`; see `ipiqa/commands.py`).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from rich.text import Text

from agiqa_bench import __version__
from agiqa_bench.cli_pretrain import pretrain_app
from agiqa_bench.cli_results import results_app
from agiqa_bench.console import console, err_console, friendly, plain, show_warning
from agiqa_bench.errors import ConfigError

def _flags_take_no_value() -> None:
    """typer 0.29's help prints a `<bool>` type beside on/off flags (`--force <bool>`), as if they took a value,
    which they refuse: a flag shows no type (every command's help, --help included)."""
    option = getattr(getattr(typer, "core", None), "TyperOption", None)
    show = getattr(option, "display_type_rich", None)
    if show is None or getattr(show, "_agiqa_flags", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) and self.metavar is None else show(self, ctx)

    display_type_rich._agiqa_flags = True
    option.display_type_rich = display_type_rich


_flags_take_no_value()

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Benchmark harness for AI-generated image quality assessment.")
splits_app = typer.Typer(no_args_is_help=True, help="Inspect and export train/validation/test splits.")
app.add_typer(splits_app, name="splits")
app.add_typer(pretrain_app, name="pretrain")
app.add_typer(results_app, name="results")


def _split_list(values: Optional[List[str]]) -> list[str]:
    out: list[str] = []
    for value in values or []:
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


def _dataset_options(pairs: Optional[List[str]], images: Optional[Path], *, drop_missing: bool = False,
                     allow_outside_root: bool = False, drop_bad_images: bool = False,
                     max_pixels: Optional[int] = None) -> dict:
    options: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--dataset-opt takes key=value, got {pair!r}")
        options[key.strip()] = value
    if images is not None:
        options["images"] = images
    if drop_missing:
        options["drop_missing"] = True
    if allow_outside_root:
        options["allow_outside_root"] = True
    if drop_bad_images:
        options["drop_bad_images"] = True
    if max_pixels is not None:  # an environment variable, so that worker processes read with the same cap
        import os

        from agiqa_bench.images import MAX_PIXELS_ENV

        if max_pixels < 1:
            raise ConfigError(f"--max-pixels must be a positive number of pixels, got {max_pixels}")
        os.environ[MAX_PIXELS_ENV] = str(max_pixels)
    return options


DROP_BAD_HELP = "Benchmark without items whose image cannot be decoded or is over the pixel cap (listed in a warning)."
MAX_PIXELS_HELP = "Pixel cap of every image read (default 40000000; or set AGIQA_BENCH_MAX_PIXELS)."
# The executor options `run` and `ablate` share (typer reads the same declaration for both).
EXECUTOR_OPTION = typer.Option(None, "--executor", help="serial, local (worker processes; the default with more than one core) or ray.")
WORKERS_OPTION = typer.Option(None, "--workers", "-w", help="Parallel jobs (default: the cores, at most the jobs; 1 = serial).")
RAY_ADDRESS_OPTION = typer.Option(None, "--ray-address", help="Join a Ray cluster: auto or HOST:PORT (implies --executor ray).")
GPUS_PER_JOB_OPTION = typer.Option(None, "--gpus-per-job", help="GPU share of each training under Ray (0.25 packs four on one GPU).")
WAIT_OPTION = typer.Option(False, "--wait", help="If another run uses --out, wait for it instead of refusing.")
THREADS_PER_JOB_OPTION = typer.Option(None, "--threads-per-job", help="torch/BLAS threads of each job (default: cores / workers); CPU numbers depend on it.")
SHARD_SIZE_OPTION = typer.Option(None, "--shard-size", help="Images per map shard (default 32): per-image values (features, zero-shot scores) are computed once per image in shards of this many sorted items, spread over every worker (a batched scorer's shard holds whole batches).")


def _version(value: bool):
    if value:
        console.print(f"agiqa-bench {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
):
    """Benchmark harness for AI-generated image quality assessment."""
    warnings.showwarning = show_warning


DATASET_HELP = "Dataset: synthetic (built-in), agiqa1k, agiqa3k, aigciqa2023, aigiqa20k or csv."
# The options `run` and `ablate` share, declared once.
DATASET_OPTION = typer.Option("synthetic", "--dataset", "-d", help=DATASET_HELP)
DATA_ROOT_OPTION = typer.Option(None, "--data-root", help="Folder with the label file and images (or set AGIQA_BENCH_DATA).")
IMAGES_OPTION = typer.Option(None, "--images", help="Image folder, if not found under the data root.")
DROP_MISSING_OPTION = typer.Option(False, "--drop-missing", help="Benchmark without items whose image is missing (listed in a warning).")
OUTSIDE_ROOT_OPTION = typer.Option(False, "--allow-outside-root", help="Read images a label file names outside the image folder (refused by default).")
DROP_BAD_OPTION = typer.Option(False, "--drop-bad-images", help=DROP_BAD_HELP)
MAX_PIXELS_OPTION = typer.Option(None, "--max-pixels", help=MAX_PIXELS_HELP)
DATASET_OPT_OPTION = typer.Option(None, "--dataset-opt", help="Dataset option key=value (repeatable), e.g. targets=overall=mos for csv.")
TARGET_OPTION = typer.Option(None, "--target", "-t", help="Targets to evaluate (default: all the dataset has).")
REPEATS_OPTION = typer.Option(10, "--repeats", "-r", help="Number of random splits.")
SEED_OPTION = typer.Option(None, "--seed", help="Base seed of the splits (grouped: 0, ipiqa-reference: 42).")
VAL_FRACTION_OPTION = typer.Option(0.1, "--val-fraction", help="Share of train groups held out for model selection.")
OUT_OPTION = typer.Option(Path("runs"), "--out", "-o", help="Output folder (results.sqlite, splits, caches).")
DEVICE_OPTION = typer.Option("auto", "--device", help="auto, cpu or cuda.")
FORCE_OPTION = typer.Option(False, "--force", help="Redo finished (method, target, repeat) keys.")
KEEP_CHECKPOINTS_OPTION = typer.Option(False, "--keep-checkpoints", help="Save every trained model under OUT/checkpoints/ (for `score --checkpoint`).")


@app.command()
@friendly
def run(
    methods: Optional[List[str]] = typer.Option(None, "--methods", "-m", help="Comma-separated methods (default: every runnable default method). See `agiqa-bench methods`."),
    dataset: str = DATASET_OPTION,
    data_root: Optional[Path] = DATA_ROOT_OPTION,
    images: Optional[Path] = IMAGES_OPTION,
    drop_missing: bool = DROP_MISSING_OPTION,
    allow_outside_root: bool = OUTSIDE_ROOT_OPTION,
    drop_bad_images: bool = DROP_BAD_OPTION,
    max_pixels: Optional[int] = MAX_PIXELS_OPTION,
    dataset_opt: Optional[List[str]] = DATASET_OPT_OPTION,
    target: Optional[List[str]] = TARGET_OPTION,
    repeats: int = REPEATS_OPTION,
    allow_many_repeats: bool = typer.Option(False, "--allow-many-repeats", help="Allow more than 1000 repeats."),
    split_protocol: str = typer.Option("grouped", "--split-protocol", help="grouped (80/20 of groups), ipiqa-reference (the IP-IQA code's folds) or all-images (zero-shot methods on every image, no split: the AGIQA-3k paper's protocol for alignment metrics)."),
    seed: Optional[int] = SEED_OPTION,
    val_fraction: float = VAL_FRACTION_OPTION,
    splits: Optional[Path] = typer.Option(None, "--splits", help="Folds from a file instead of a protocol: a `splits export` JSON, or a folder of per-fold CSV lists of image names (e.g. a paper's train.csv/test.csv per fold). Rows are labelled with the file's hash."),
    train_dataset: Optional[str] = typer.Option(None, "--train-dataset", help="Cross-dataset run: fit on this dataset, test on every image of --dataset."),
    train_data_root: Optional[Path] = typer.Option(None, "--train-data-root", help="Folder of the --train-dataset (or set AGIQA_BENCH_DATA)."),
    train_dataset_opt: Optional[List[str]] = typer.Option(None, "--train-dataset-opt", help="Option key=value of the --train-dataset (repeatable), e.g. seed=1 for synthetic."),
    target_map: Optional[List[str]] = typer.Option(None, "--target-map", help="Cross-dataset: TRAIN=TEST target pairs whose names differ, e.g. overall=quality."),
    out: Path = OUT_OPTION,
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a hyperparameter: method.param=value (repeatable)."),
    device: str = DEVICE_OPTION,
    force: bool = FORCE_OPTION,
    executor: Optional[str] = EXECUTOR_OPTION,
    workers: Optional[int] = WORKERS_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    gpus_per_job: Optional[float] = GPUS_PER_JOB_OPTION,
    wait: bool = WAIT_OPTION,
    threads_per_job: Optional[int] = THREADS_PER_JOB_OPTION,
    shard_size: Optional[int] = SHARD_SIZE_OPTION,
    keep_checkpoints: bool = KEEP_CHECKPOINTS_OPTION,
):
    """Benchmark methods on identical grouped splits and store every result."""
    from agiqa_bench.crossdata import parse_target_map
    from agiqa_bench.runner import parse_overrides

    options = _dataset_options(dataset_opt, images, drop_missing=drop_missing, allow_outside_root=allow_outside_root,
                               drop_bad_images=drop_bad_images, max_pixels=max_pixels)
    if train_dataset is None and (train_data_root is not None or train_dataset_opt):
        raise ConfigError("--train-data-root and --train-dataset-opt describe a --train-dataset: name it too")
    cross = {} if train_dataset is None else dict(
        train_dataset=train_dataset, train_data_root=train_data_root,
        train_dataset_options=_dataset_options(train_dataset_opt, None, drop_missing=drop_missing,
                                               allow_outside_root=allow_outside_root, drop_bad_images=drop_bad_images))
    if splits is not None and (split_protocol != "grouped" or seed is not None):
        raise ConfigError("--splits gives the folds; --split-protocol and --seed choose a protocol's folds: use one or the other")
    _plan_and_execute(
        _split_list(methods) or None, dataset=dataset, data_root=data_root, dataset_options=options,
        targets=_split_list(target) or None, repeats=repeats, allow_many_repeats=allow_many_repeats,
        split_protocol=split_protocol, seed=seed, val_fraction=val_fraction, overrides=parse_overrides(set_ or []),
        splits_file=splits,
        out=out, device=device, force=force, keep_checkpoints=keep_checkpoints, target_map=parse_target_map(target_map),
        executor_options=_executor_options(executor, workers, ray_address, gpus_per_job, wait, threads_per_job, shard_size), **cross,
    )


#: The most threads one job may ask for on a Ray node (no machine this runs on has more cores).
MAX_THREADS_PER_JOB = 512


def _executor_options(executor, workers, ray_address, gpus_per_job, wait, threads_per_job=None, shard_size=None) -> dict:
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if gpus_per_job is not None and not 0 < gpus_per_job <= 8:
        raise ConfigError(f"--gpus-per-job must be in (0, 8], got {gpus_per_job}")
    if workers == 1 and executor is None and not ray_address:
        executor = "serial"
    if threads_per_job is not None and threads_per_job < 1:
        raise ConfigError(f"--threads-per-job must be at least 1, got {threads_per_job}")
    if threads_per_job is not None and executor != "ray" and not ray_address:
        import os

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if threads_per_job > cores:
            raise ConfigError(f"--threads-per-job {threads_per_job}: this machine has {cores} core(s) for this run; "
                              f"give at most {cores} (more threads than cores only slow every job down)")
    if threads_per_job is not None and threads_per_job > MAX_THREADS_PER_JOB:
        raise ConfigError(f"--threads-per-job {threads_per_job}: at most {MAX_THREADS_PER_JOB} on any node")
    if shard_size is not None and shard_size < 1:
        raise ConfigError(f"--shard-size must be at least 1, got {shard_size}")
    return {"executor": executor, "workers": workers, "ray_address": ray_address, "gpus_per_job": gpus_per_job,
            "wait_for_lock": wait, "threads_per_job": threads_per_job,
            **({"shard_size": shard_size} if shard_size is not None else {})}


def _plan_and_execute(methods, *, out: Path, device: str, force: bool, keep_checkpoints: bool,
                      executor_options: dict, **planning):
    """Shared body of `run` and `ablate`: plan (`plan_run` takes `planning`), run on the executor with
    progress bars, summarise, exit 1 on failures."""
    from agiqa_bench.runner import execute, plan_run

    from agiqa_bench.folds import describe

    plan = plan_run(methods, **planning)
    console.print(
        f"[bold]{plain(plan.dataset.name)}[/]: {len(plan.dataset)} items, {len(plan.dataset.groups)} groups, "
        f"targets {plain(', '.join(plan.dataset.targets))}; {plain(describe(plan.splits))}; "
        f"methods: {plain(', '.join(m.name for m in plan.methods))}"
    )
    from agiqa_bench.cli_progress import execute_with_progress, print_summary

    summary = execute_with_progress(plan, execute, out, device, force, keep_checkpoints, **executor_options)
    print_summary(out, plan)
    if summary.warnings:
        err_console.print(f"[yellow]{len(summary.warnings)} distinct warning(s)[/] raised by the methods during the run "
                          "(also in the report's Warnings section):", highlight=False)
        for (method, message), n in sorted(summary.warnings.items())[:10]:
            err_console.print(f"  {plain(method)} ({n} row(s)): {plain(message)}", highlight=False, soft_wrap=True)
    if summary.failed:
        from agiqa_bench.cli_progress import failure_lines

        err_console.print(f"[bold red]{len(summary.failed)} (method, target, repeat) key(s) failed[/]; "
                          f"see the Failures section of `agiqa-bench report --out {out}`.")
        for line in failure_lines(summary.failed):
            err_console.print(f"  {plain(line)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    return summary


@app.command()
@friendly
def ablate(
    dataset: str = DATASET_OPTION,
    image2prompt: Optional[Path] = typer.Option(None, "--image2prompt", help="Image2Prompt checkpoint (adds the Image2Prompt rows)."),
    data_root: Optional[Path] = DATA_ROOT_OPTION,
    images: Optional[Path] = IMAGES_OPTION,
    drop_missing: bool = DROP_MISSING_OPTION,
    allow_outside_root: bool = OUTSIDE_ROOT_OPTION,
    drop_bad_images: bool = DROP_BAD_OPTION,
    max_pixels: Optional[int] = MAX_PIXELS_OPTION,
    dataset_opt: Optional[List[str]] = DATASET_OPT_OPTION,
    target: Optional[List[str]] = TARGET_OPTION,
    repeats: int = REPEATS_OPTION,
    split_protocol: str = typer.Option("grouped", "--split-protocol", help="grouped or ipiqa-reference."),
    seed: Optional[int] = SEED_OPTION,
    val_fraction: float = VAL_FRACTION_OPTION,
    out: Path = OUT_OPTION,
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a hyperparameter, e.g. ipiqa.epochs=20 (applies to every variant)."),
    device: str = DEVICE_OPTION,
    force: bool = FORCE_OPTION,
    executor: Optional[str] = EXECUTOR_OPTION,
    workers: Optional[int] = WORKERS_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    gpus_per_job: Optional[float] = GPUS_PER_JOB_OPTION,
    wait: bool = WAIT_OPTION,
    threads_per_job: Optional[int] = THREADS_PER_JOB_OPTION,
    shard_size: Optional[int] = SHARD_SIZE_OPTION,
    keep_checkpoints: bool = KEEP_CHECKPOINTS_OPTION,
):
    """The paper's Table 3: IP-IQA's ablation variants on identical splits (see `report`)."""
    from agiqa_bench.registry import get_spec
    from agiqa_bench.runner import parse_overrides

    spec, _ = get_spec("ipiqa")  # the method under study; its spec lists the Table 3 variants
    overrides = parse_overrides(set_ or [])
    variants = spec.ablation_variants["default"]
    if image2prompt is not None:
        overrides.setdefault(spec.name, {})["image2prompt"] = str(image2prompt)
        variants = spec.ablation_variants["image2prompt"]
    else:
        err_console.print("[yellow]note:[/] no --image2prompt checkpoint: the Image2Prompt rows are left out "
                          "(make one with `agiqa-bench pretrain image2prompt`).")
    options = _dataset_options(dataset_opt, images, drop_missing=drop_missing, allow_outside_root=allow_outside_root,
                               drop_bad_images=drop_bad_images, max_pixels=max_pixels)
    _plan_and_execute(list(variants), dataset=dataset, data_root=data_root, dataset_options=options,
                      targets=_split_list(target) or None, repeats=repeats, split_protocol=split_protocol, seed=seed,
                      val_fraction=val_fraction, overrides=overrides, out=out, device=device,
                      force=force, keep_checkpoints=keep_checkpoints,
                      executor_options=_executor_options(executor, workers, ray_address, gpus_per_job, wait, threads_per_job, shard_size))


@app.command()
@friendly
def report(
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Output folder of `agiqa-bench run`."),
    fmt: str = typer.Option("markdown", "--format", "-f", help="markdown, html (one self-contained file), latex (booktabs tables for a paper), csv or json."),
    output: Optional[Path] = typer.Option(None, "--output", help="File to write (default: OUT/leaderboard.<ext>)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Prompt-cluster bootstrap replicates for the 95% intervals (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    alpha: float = typer.Option(0.05, "--alpha", help="Level of the tests against the best method."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Draw the figures (PNG next to the report)."),
    by: Optional[List[str]] = typer.Option(None, "--by", help="Break results down by item attributes, e.g. generator,style,class (a table and a heatmap each; default: a generator heatmap)."),
):
    """Leaderboard: the paper's three table layouts, intervals, tests against the best, figures, provenance."""
    from leaderboard.figures import write_figures
    from leaderboard.report import build_report

    suffixes = {"markdown": "md", "html": "html", "latex": "tex", "csv": "csv", "json": "json"}
    if fmt not in suffixes:
        raise ConfigError(f"--format must be one of {', '.join(suffixes)}, not {fmt!r}")
    attributes = tuple(_split_list(by))
    result = build_report(out, n_boot=bootstrap, seed=seed, alpha=alpha, by=attributes)
    from agiqa_bench.outputs import atomic_write_text, output_error

    target = output or (out / f"leaderboard.{suffixes[fmt]}")
    if figures and fmt in ("markdown", "html"):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_figures(result, target.parent / "figures", attributes or ("generator",))
        except OSError as exc:
            raise output_error(target.parent / "figures", "write the figures in", exc) from None
    text = {"markdown": lambda: result.to_markdown(target.parent), "html": result.to_html,
            "latex": result.to_latex, "csv": result.to_csv, "json": result.to_json}[fmt]()
    atomic_write_text(target, text + ("\n" if not text.endswith("\n") else ""), what="write the report")
    if fmt == "markdown":
        print(text.encode("utf-8", "backslashreplace").decode("utf-8"))  # a non-UTF-8 --out path prints escaped
    err_console.print(f"written to {plain(target)}" + (f" ({len(result.figures)} figure(s) in {target.parent / 'figures'})"
                                                  if result.figures else ""))


@app.command()
@friendly
def compare(
    method_a: str = typer.Argument(..., help="First method (as labelled in the store, e.g. ipiqa)."),
    method_b: str = typer.Argument(..., help="Second method."),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Output folder of `agiqa-bench run`."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Only this dataset."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Only this target."),
    metric: str = typer.Option("srcc", "--metric", help="srcc, plcc or krcc."),
):
    """Paired comparison of two methods on identical splits: per-repeat differences and tests."""
    from agiqa_bench.store import read_results
    from leaderboard.compare import compare_methods

    frame = read_results(out)
    results = compare_methods(frame, method_a, method_b, metric, dataset=dataset, target=target)
    for block, comp in results:
        table = Table(title=f"{method_a} vs {method_b}: {block}")
        for col in ("repeat", method_a, method_b, "difference"):
            table.add_column(col, justify="right")
        for repeat, a, b in comp.rows:
            table.add_row(str(repeat), f"{a:.4f}", f"{b:.4f}", f"{a - b:+.4f}")
        console.print(table)
        c = comp.result
        console.print(
            f"{metric.upper()} mean difference {c.mean_difference:+.4f} over {len(c.differences)} shared repeats "
            f"({method_a} better in {c.wins}); Wilcoxon signed-rank p = {c.wilcoxon_p:.4g}; "
            f"Nadeau-Bengio corrected t = {c.nb_t:.3f}, p = {c.nb_p:.4g} (n_train {c.n_train:.0f}, n_test {c.n_test:.0f})",
            highlight=False,
        )


@app.command()
@friendly
def score(
    images: Optional[List[Path]] = typer.Argument(None, help="Image files to score (their prompt: --prompt)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A model kept by `run --keep-checkpoints` (any trainable method)."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help="A zero-shot method (or, with --checkpoint, the method it must hold)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="The prompt of the images given as arguments."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="CSV with an image column (paths relative to the CSV) and a prompt column."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the scores to this CSV."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Apply this dataset's parameter defaults to a zero-shot --method."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="A zero-shot method's parameter: method.param=value (repeatable)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
):
    """Score images with a kept model (--checkpoint) or a zero-shot method (--method); print or write the scores."""
    import pandas as pd

    from agiqa_bench.checkpoints import read
    from agiqa_bench.outputs import atomic_write_text
    from agiqa_bench.runner import parse_overrides
    from agiqa_bench.scoring import predictions, read_pairs_csv

    if checkpoint is None and method is None:
        raise ConfigError("score: give --checkpoint CKPT (a model kept by `run --keep-checkpoints`) or --method NAME")
    pairs = [(p, prompt or "") for p in images or []]
    if csv is not None:
        pairs += read_pairs_csv(csv)
    if not pairs:
        raise ConfigError("score: nothing to score; give image files (with --prompt) or --csv FILE")
    overrides = parse_overrides(set_ or [])
    unknown = set(overrides) - {method}
    if unknown:
        raise ConfigError(f"score: --set names {', '.join(sorted(unknown))}, not the method scored ({method})")
    kept = read(checkpoint) if checkpoint is not None else None  # read once: describe it, then restore it
    if kept is not None:
        err_console.print(f"{plain(checkpoint.name)}: {plain(kept.describe())}", highlight=False)
    scores, columns = predictions(method, [p for p, _ in pairs], [t for _, t in pairs], dataset=dataset,
                                  checkpoint=kept, overrides=overrides.get(method or ""), device=device)
    frame = pd.DataFrame(scores, columns=list(columns))
    frame.insert(0, "prompt", [t for _, t in pairs])
    frame.insert(0, "image", [str(p) for p, _ in pairs])
    if output is not None:
        from leaderboard.report import csv_safe

        atomic_write_text(output, csv_safe(frame).to_csv(index=False), what="write the scores")
        err_console.print(f"{len(frame)} score(s) written to {plain(output)}")
    table = Table(title=f"scores of {plain(checkpoint.name if checkpoint is not None else method)}")
    for col in frame.columns:
        table.add_column(col, justify="left" if col in ("image", "prompt") else "right")
    for row in frame.itertuples(index=False):
        table.add_row(plain(Path(row[0]).name), plain(row[1]), *(f"{v:.4f}" for v in row[2:]))  # full paths: --output
    console.print(table)


@app.command()
@friendly
def licences(
    extra: Optional[List[str]] = typer.Option(None, "--extra", help="Include an extra's packages too (e.g. pyiqa, dev); repeatable."),
    show_all: bool = typer.Option(False, "--all", help="List every package, not only those that are not permissive."),
):
    """The licence of every package this install brings, from the installed packages' metadata."""
    from agiqa_bench.licences import audit

    rows = audit(extras=tuple(_split_list(extra)))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    shown = rows if show_all else [r for r in rows if r.kind != "permissive"]
    table = Table(title=f"licences of agiqa-bench{'[' + ','.join(_split_list(extra)) + ']' if extra else ''} "
                        f"and its {len(rows) - 1} installed requirements")
    for col in ("package", "version", "licence", "kind", "required by"):
        table.add_column(col, overflow="fold")
    for r in shown:
        table.add_row(plain(r.name), plain(r.version), plain(r.licence or "(none in its metadata)"), r.kind,
                      plain(r.required_by))
    console.print(table)
    console.print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())), highlight=False)
    if counts.get("non-commercial"):
        err_console.print("[yellow]non-commercial licences above: not for commercial use[/]")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly
def methods(
    ctx: typer.Context,
    pattern: Optional[str] = typer.Argument(None, help="Glob filter, e.g. 'higrade*', or one family member ('pyiqa:musiq')."),
    details: bool = typer.Option(False, "--details", help="Every method's summary, reference, weights and where to get them."),
    check_weights: bool = typer.Option(False, "--check-weights", help="Ask the model libraries where hub weights live (slower: imports them) instead of showing ? for those."),
):
    """List registered methods: kind, family, inputs, variants, weights needed and whether they are here.

    `--<family>` (e.g. `--pyiqa`) lists the members of a method family instead (PATTERN filters them).
    """
    from agiqa_bench.registry import (
        all_specs,
        families,
        get_spec,
        list_methods,
        method_params,
        weights_status,
    )

    import fnmatch

    by_flag = {f"--{family.prefix}": family for family in families()}
    words = ([pattern] if pattern is not None else []) + list(ctx.args)  # a family flag may come before PATTERN
    flags = [w for w in words if w.startswith("--")]
    positional = [w for w in words if not w.startswith("--")]
    unknown = [w for w in flags if w not in by_flag] + positional[1:]
    if unknown:
        known = ", ".join(["--details", *by_flag])
        raise ConfigError(f"methods: unexpected {' '.join(unknown)!r}; it takes one PATTERN and the options {known}")
    pattern = positional[0] if positional else None
    wanted = [by_flag[flag] for flag in dict.fromkeys(flags)]
    if wanted:
        _family_members(wanted, pattern)
        return
    names = set(list_methods(pattern))
    chosen = [spec for spec in all_specs()
              if spec.name in names or (pattern and fnmatch.fnmatch(spec.name, pattern)) or any(f"{spec.name}.{v}" in names for v in spec.variants)]
    if not chosen and pattern and not any(c in pattern for c in "*?[") and any(
            pattern.startswith(f"{f.prefix}:") for f in families()):
        chosen = [get_spec(pattern)[0]]  # one family member: its details (an unknown member: the family's error)
    details = details or len(chosen) == 1
    wide = console.width >= 120  # the variants and weights names need room
    table = Table(title="methods (weights: ✓ here, ✗ missing, ? a hub tag: --check-weights asks its library; "
                        "--details says more)")
    columns = ["method", "kind", "family", "weights", "default"] + (["prompt", "variants / aliases"] if wide else [])
    approximations = [spec for spec in chosen if spec.approximation]
    labels = {spec.name: spec.name + (" ≈" if spec.approximation else "") for spec in chosen}
    for col in columns:  # a method's name is never cut: the other columns fold
        if col == "method":
            table.add_column(col, no_wrap=True, min_width=max((len(v) for v in labels.values()), default=6))
        else:
            table.add_column(col, overflow="fold")

    def status(spec):
        """Each weights entry checked with the parameters of the variant it belongs to; the same check in the
        list and under --details, so the two always agree (file checks; --check-weights asks the libraries)."""
        out = [ws for ws in weights_status(spec, method_params(spec.name), thorough=check_weights)
               if not ws[0].variants]
        for variant in dict.fromkeys(v for w in spec.weights for v in w.variants):
            out += [ws for ws in weights_status(spec, method_params(f"{spec.name}.{variant}"), variant,
                                                thorough=check_weights) if ws[0].variants]
        return out

    statuses = {spec.name: status(spec) for spec in chosen}

    def synthetic_default(spec, w, ok):
        """What the built-in synthetic dataset's defaults put in place of missing weights (None: nothing)."""
        return spec.dataset_defaults.get("synthetic", {}).get(w.param) if ok is False else None
    synthetic_ok = False
    for spec in chosen:
        marks = []
        for w, ok in statuses[spec.name]:
            mark = {True: "[green]✓[/]", False: "[red]✗[/]", None: "?"}[ok]
            if synthetic_default(spec, w, ok) is not None:  # runs there with its own (shipped or random) weights
                mark += "¹"
                synthetic_ok = True
            which = f" (.{' .'.join(w.variants)})" if w.variants else ""
            marks.append(f"{mark} {w.param}{which}" if wide else mark + which)
        label = labels[spec.name].replace(" ≈", " [yellow]≈[/]")
        runs = "yes" if spec.default_run else "no"
        if spec.default_run and spec.default_variants:
            runs = " ".join(f".{v}" for v in spec.default_variants)
        row = [label, spec.kind, spec.family or "other", ("\n" if wide else " ").join(marks) or "none", runs]
        if wide:
            variants = [f".{v}" for v in spec.variants] + [f"alias {a}" for a in spec.aliases]
            row += ["yes" if spec.needs_prompt else "", " ".join(variants) or "—"]
        table.add_row(*row)
    console.print(table)
    if synthetic_ok:
        console.print("¹ missing here for real datasets; the built-in synthetic dataset's default for it needs no "
                      "download (shipped weights, or random init), so the method runs there.", highlight=False)
    if not wide and not details:
        n_variants = sum(len(spec.variants) for spec in chosen)
        console.print(f"{len(chosen)} methods, {n_variants} variants: `agiqa-bench methods --details` lists the "
                      "variants, inputs and weights (or widen the terminal).", highlight=False)
    if not pattern:
        for family in families():
            console.print(f"[bold]{family.prefix}:<member>[/]: {family.summary}.", highlight=False, emoji=False)
    for spec in approximations:
        console.print(f"[yellow]≈ {spec.name} is an approximation[/]: {spec.approximation}.", highlight=False)
    if details:
        for spec in chosen:
            console.print(f"\n[bold]{spec.name}[/] ({spec.kind}, {spec.family or 'other'}): {spec.summary}", highlight=False)
            if spec.reference:
                console.print(f"  reference: {spec.reference}", highlight=False)
            if spec.targets:
                console.print(f"  targets: {', '.join(spec.targets)}", highlight=False)
            if spec.variants:
                console.print(f"  variants: {', '.join(f'{spec.name}.{v}' for v in spec.variants)}", highlight=False)
            for w, ok in statuses[spec.name]:
                state = {True: "available", False: "missing",
                         None: "cannot tell without asking its library (--check-weights)"}[ok]
                synth = synthetic_default(spec, w, ok)
                if synth is not None:
                    state += f" (synthetic dataset: {synth or 'random init'}, no download)"
                console.print(f"  weights: {plain(w.name)} \\[{w.param}] — {state}; {plain(w.hint)}", highlight=False)
            from agiqa_bench.registry import load_class

            scale = getattr(load_class(spec), "label_scale", None) if spec.kind == "trainable" else None
            if scale is not None:
                console.print(f"  training labels: standardised on the training part, then put on the {scale.describe()} "
                              f"scale; predictions mapped back to MOS units", highlight=False)
            for phase, need in spec.resources.items():
                console.print(f"  needs ({plain(phase)}): {plain(need)}", highlight=False)
            for dataset in sorted(set(spec.dataset_defaults) | set(spec.recipes), key=lambda d: (d == "*", d)):
                values = ", ".join(f"{k}={v}" for k, v in spec.dataset_defaults.get(dataset, {}).items())
                source = spec.recipes.get(dataset, "")
                where = "other datasets" if dataset == "*" else dataset
                console.print(f"  recipe on {where}: {values or '(the declared defaults)'}"
                              + (f" — {source}" if source else ""), highlight=False, emoji=False)


def _family_members(wanted, pattern: Optional[str]) -> None:
    """`methods --<family>`: every member a family offers (filtered by PATTERN, on the full or the member name)."""
    import fnmatch

    for family in wanted:
        table = Table(title=f"{family.prefix}:<member> methods ({family.summary})")
        table.add_column("method", no_wrap=True)
        table.add_column("about")
        rows = [(family.full_name(m), about) for m, about in family.members()]
        if pattern:
            rows = [(n, a) for n, a in rows if fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(n.split(":", 1)[1], pattern)]
        for name, about in rows:
            table.add_row(Text(name), Text(about))  # plain text: no markup or :emoji: codes read into names
        console.print(table, emoji=False)
        console.print(f"{len(rows)} {family.prefix} methods; run any with `agiqa-bench run --methods "
                      f"{rows[0][0] if rows else family.prefix + ':NAME'}`.", highlight=False, emoji=False)


@app.command()
def datasets():
    """List the datasets and the files each expects."""
    from agiqa_bench.datasets import dataset_specs

    table = Table(title="datasets (--dataset NAME; --dataset-opt KEY=VALUE for the options)")
    for col in ("name", "targets", "files", "options", "description"):
        table.add_column(col)
    for spec in dataset_specs().values():
        table.add_row(Text(spec.name), Text(", ".join(spec.targets) or "(mapped)"), Text(spec.files),
                      Text(", ".join(o.name for o in spec.options) or "—"), Text(spec.summary))
    console.print(table)


@splits_app.command("export")
@friendly
def splits_export(
    dataset: str = typer.Option(..., "--dataset", "-d", help=DATASET_HELP),
    protocol: str = typer.Option("grouped", "--protocol", help="grouped or ipiqa-reference."),
    output: Path = typer.Option(..., "--output", help="JSON file to write."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder with the label file (images not needed)."),
    dataset_opt: Optional[List[str]] = typer.Option(None, "--dataset-opt", help="Dataset option key=value."),
    repeats: int = typer.Option(10, "--repeats", "-r", help="Number of random splits."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Base seed of the splits (grouped: 0, ipiqa-reference: 42)."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of train groups held out for model selection."),
):
    """Write the splits of a dataset as JSON (labels only; no image is read)."""
    from agiqa_bench.datasets import load_dataset
    from agiqa_bench.splits import make_splits

    options = _dataset_options(dataset_opt, None)
    options["check_images"] = False
    ds = load_dataset(dataset, data_root, **options)
    if not ds.targets:
        raise ConfigError(f"dataset {ds.name!r} has no targets (unlabelled, for scoring only): it has no splits to export")
    splits = make_splits(ds, protocol, repeats, seed, val_fraction)
    splits.save(output)
    sizes = ", ".join(str(len(s.test)) for s in splits.splits)
    console.print(f"{len(splits)} {plain(protocol)} splits of {plain(ds.name)} (hash {splits.hash}); test sizes {sizes}; "
                  f"written to {plain(output)}")


@splits_app.command("audit")
@friendly
def splits_audit(
    file: Optional[Path] = typer.Argument(None, help="A split file (`splits export` JSON, or a folder of per-fold CSV lists). Without it: the --protocol's own splits."),
    dataset: str = typer.Option(..., "--dataset", "-d", help=DATASET_HELP),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder with the label file (images not needed)."),
    dataset_opt: Optional[List[str]] = typer.Option(None, "--dataset-opt", help="Dataset option key=value."),
    protocol: str = typer.Option("grouped", "--protocol", help="Without FILE: the protocol to audit (grouped or ipiqa-reference)."),
    repeats: int = typer.Option(10, "--repeats", "-r", help="Without FILE: number of splits."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Without FILE: base seed of the splits."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of train groups held out for validation (where the file names none)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of folds instead of a table."),
):
    """Per fold: train/val/test sizes, and how many test groups and exact test prompts also occur in train/val."""
    import json

    from agiqa_bench.datasets import load_dataset
    from agiqa_bench.folds import audit, describe, load_splits
    from agiqa_bench.splits import make_splits

    options = _dataset_options(dataset_opt, None)
    options["check_images"] = False
    ds = load_dataset(dataset, data_root, **options)
    if not ds.targets:
        raise ConfigError(f"dataset {ds.name!r} has no targets (unlabelled, for scoring only): it has no splits to audit")
    splits = load_splits(file, ds, val_fraction) if file is not None else make_splits(ds, protocol, repeats, seed, val_fraction)
    folds = audit(splits, ds)
    if as_json:
        print(json.dumps(folds, indent=1))
        return
    table = Table(title=f"{plain(ds.name)}: {plain(describe(splits))}", title_justify="left")
    columns = [("fold", "fold"), ("n_train", "train"), ("n_val", "val"), ("n_test", "test"),
               ("test_groups", "test groups"), ("shared_groups", "shared groups"), ("test_prompts", "test prompts"),
               ("shared_prompts", "shared prompts"), ("test_images_with_shared_prompt", "test images w/ shared prompt")]
    for _, title in columns:
        table.add_column(title, justify="right")
    for fold in folds:
        table.add_row(*(str(fold[key]) for key, _ in columns))
    console.print(table)
    leaky = sum(1 for f in folds if f["shared_groups"] or f["shared_prompts"])
    console.print(f"{leaky} of {len(folds)} folds share test groups or prompts with train/val"
                  + (": numbers on them are optimistic (not prompt-grouped)." if leaky else "."), highlight=False)


synth_app = typer.Typer(help="Synthetic data: a SynthAGIQA benchmark set, or a caption corpus for pretraining.")
app.add_typer(synth_app, name="synth")


@synth_app.callback(invoke_without_command=True)
@friendly
def synth(
    ctx: typer.Context,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder to write data.csv and images/ into."),
    n_prompts: Optional[int] = typer.Option(None, "--n-prompts", help="Number of prompts (groups); default 60, as the built-in set."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Generation seed; default 0, as the built-in set."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Image side in pixels; default 96, as the built-in set."),
):
    """Write a SynthAGIQA set (AGIQA-3k layout) for `run --dataset synthetic --data-root OUT`."""
    if ctx.invoked_subcommand is not None:
        return
    if out is None:
        raise ConfigError("give --out DIR (or use `agiqa-bench synth corpus --out DIR` for a caption corpus)")
    from agiqa_bench.synthetic import dataset as synthetic

    config = synthetic.default_config()
    changes = {k: v for k, v in (("n_prompts", n_prompts), ("seed", seed), ("image_size", image_size)) if v is not None}
    config = synthetic.SynthConfig(**{**config.__dict__, **changes})
    path = synthetic.write_synthetic(out, config)
    console.print(f"SynthAGIQA written to {path} ({config.n_prompts} prompts x {len(config.generators)} generators)")


@synth_app.command("corpus")
@friendly
def synth_corpus(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus into (DiffusionDB layout)."),
    size: int = typer.Option(20000, "--size", help="Number of image-caption pairs."),
    seed: int = typer.Option(1, "--seed", help="Generation seed (independent of the benchmark set's)."),
    zip_parts: bool = typer.Option(False, "--zip", help="Write each part as part-XXXXXX.zip instead of a folder."),
):
    """A caption corpus from SynthAGIQA's grammar, in DiffusionDB's layout, for `pretrain clip` / `pretrain image2prompt`."""
    from agiqa_bench.synthetic.corpus import write_corpus

    path = write_corpus(out, size=size, seed=seed, zip_parts=zip_parts)
    console.print(f"caption corpus of {size} pairs written to {path}")


def mount_plugin_commands() -> None:
    """Commands that packages add through the `agiqa_bench.commands` entry point group (IP-IQA's among them).

    Each entry point names a function `register(app, groups)`; `groups` holds the sub-command groups
    ("pretrain").  A plugin that fails to load is reported on one line and left out.
    """
    from importlib.metadata import entry_points

    groups = {"pretrain": pretrain_app}
    for entry in sorted(entry_points(group="agiqa_bench.commands"), key=lambda e: e.name):
        try:
            entry.load()(app, groups)
        except Exception as exc:  # a third-party plugin must not take the whole CLI down
            err_console.print(f"[yellow]warning:[/] commands of {entry.name} ({entry.value}) not loaded: "
                              f"{type(exc).__name__}: {exc}", highlight=False, soft_wrap=True)


mount_plugin_commands()


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
