"""Tables as data (cells with emphasis), rendered to markdown or HTML.

Builders lay the summary out like the paper:
- Table 1 (`perceptual_table`): perceptual quality, methods grouped as
  handcrafted, SVR-based, deep, ours; datasets side by side (AGIQA-1k's single
  MOS, AGIQA-3k's quality MOS, any other dataset's quality/first target).
- Table 2 (`alignment_table`): text-image alignment (AGIQA-3k's alignment MOS,
  or any dataset that has one), split-based rows and all-images rows apart.
- Table 3 (`ablation_table`): IP-IQA variants with component check marks.
- `detail_table`: every statistic of one (dataset, protocol, target) block.
Best per column in bold, second underlined; a trailing "ⁿˢ" marks a method not
significantly different from the best one's SRCC (see `leaderboard.report`).
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field

import pandas as pd

SHOWN = (("srcc", "SRCC"), ("plcc", "PLCC"), ("krcc", "KRCC"))
TARGET_ORDER = ("quality", "authenticity", "alignment", "overall")
DATASET_ORDER = ("agiqa1k", "agiqa3k")
FAMILY_ORDER = (("handcrafted", "Handcrafted"), ("svr", "SVR-based"), ("deep", "Deep"),
                ("correspondence", "Image-prompt correspondence"), ("alignment", "Alignment (zero-shot)"), ("ours", "Ours"), ("", "Other"))
#: The perceptual target of each dataset (AGIQA-1k has one coupled MOS).
PERCEPTUAL_TARGET = {"agiqa1k": "overall", "agiqa3k": "quality", "aigciqa2023": "quality", "aigiqa20k": "overall"}
#: Marks a method not significantly different from the best ("≈" marks an approximation in `methods`).
TIED = "ⁿˢ"
#: Marks a row that lacks some of the repeats other rows of its column have (failed or not run).
LACKING = "†"


_MD_SPECIAL = re.compile(r"([\\`*|~])")
_MD_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def md_escape(text, *, line_start: bool = False) -> str:
    """Text from data (method names, prompts, generator and attribute values, messages) as literal markdown: one
    line, HTML characters as entities, markdown's emphasis, code and table characters backslash-escaped (an
    underscore inside a word, as in `image_only`, needs none), no inline link (`](` is broken) and nothing a
    line could start with to become a heading, list, quote or link definition."""
    out = " ".join(str(text).replace("\r", "\n").split("\n"))
    out = html.escape(out, quote=False)
    out = _MD_SPECIAL.sub(r"\\\1", out)
    out = out.replace("](", "]\\(")  # no inline link or image: `[x](y)` shows as typed; `[test-oracle]` stays
    if line_start and out.startswith(("[", "#", "!", "-", "+", ">")):  # text that starts a line: no link definition,
        out = "\\" + out  # heading, list or quote
    return _MD_UNDERSCORE.sub(r"\\_", out)


def md_code(text) -> str:
    """Text as one markdown code span, whatever backticks it holds (the fence is longer than any run in it)."""
    out = " ".join(str(text).split())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", out)), default=0) + 1)
    pad = " " if out.startswith("`") or out.endswith("`") else ""
    return f"{fence}{pad}{out}{pad}{fence}"


_CODE_SPAN = re.compile(r"`([^`]+)`")


def _inline(text, literal, code) -> str:
    """Caption text in some markup: `literal(part, first)` for the text, `code(part)` for its `code` spans."""
    parts = _CODE_SPAN.split(str(text))
    return "".join(code(p) if i % 2 else literal(p, i == 0) for i, p in enumerate(parts))


def inline_markdown(text) -> str:
    """Caption text as markdown: literal, except `code` spans, kept as code."""
    return _inline(text, lambda p, first: md_escape(p, line_start=first), md_code)


def inline_html(text) -> str:
    """Caption text as HTML: escaped, `code` spans as <code>."""
    return _inline(text, lambda p, first: html.escape(p), lambda p: f"<code>{html.escape(p)}</code>")


#: Characters LaTeX reads as commands, and the symbols the tables use, as LaTeX that needs no package beyond
#: booktabs (`latex_escape`).
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
          "±": r"$\pm$", "≈": r"$\approx$", "→": r"$\to$", "—": "---", "–": "--", "…": r"\ldots{}", "†": r"\dag{}",
          "✓": r"$\surd$", "×": r"$\times$", "≥": r"$\geq$", "≤": r"$\leq$", "·": r"$\cdot$", "²": r"\textsuperscript{2}",
          "“": "``", "”": "''", "‘": "`", "’": "'", "ⁿˢ": r"\textsuperscript{ns}"}
_LATEX_PATTERN = re.compile("|".join(re.escape(k) for k in sorted(_LATEX, key=len, reverse=True)))


def latex_escape(text) -> str:
    """Text from data as literal LaTeX: special characters escaped, the tables' symbols as LaTeX, any other
    non-ASCII character transliterated (é -> e) or, failing that, written as [U+XXXX], so the file compiles
    with a stock pdflatex and booktabs alone."""
    import unicodedata

    out = _LATEX_PATTERN.sub(lambda m: _LATEX[m.group(0)], re.sub(r"\s+", " ", str(text)))
    if out.isascii():
        return out
    chars = []
    for ch in out:
        if ch.isascii():
            chars.append(ch)
            continue
        plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
        chars.append(latex_escape(plain) if plain else f"[U+{ord(ch):04X}]")
    return "".join(chars)


def inline_latex(text) -> str:
    """Caption text as LaTeX: literal, `code` spans in \\texttt."""
    return _inline(text, lambda p, first: latex_escape(p), lambda p: f"\\texttt{{{latex_escape(p)}}}")


#: Column headers that end in a metric name are grouped under their common prefix in LaTeX's two-row header.
_METRIC_HEADER = re.compile(r"^(.*\S)\s+(SRCC|PLCC|KRCC|RMSE)$")


@dataclass
class Cell:
    text: str
    bold: bool = False
    underline: bool = False


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    sections: dict[int, str] = field(default_factory=dict)  # row index -> section title above it
    caption: str = ""
    key: str = ""  # a short id (file names, anchors)

    # -- renderers -------------------------------------------------------------------
    def to_markdown(self) -> str:
        def md(cell: Cell) -> str:
            text = md_escape(cell.text)
            if cell.underline:
                text = f"<u>{text}</u>"
            return f"**{text}**" if cell.bold else text

        lines = [f"**{md_escape(self.title)}**", "", "| " + " | ".join(md_escape(h) for h in self.header) + " |",
                 "|" + "---|" * len(self.header)]
        for i, row in enumerate(self.rows):
            if i in self.sections:
                lines.append("| *" + md_escape(self.sections[i]) + "* |" + " |" * (len(self.header) - 1))
            lines.append("| " + " | ".join(md(c) for c in row) + " |")
        if self.caption:
            lines += ["", inline_markdown(self.caption)]
        return "\n".join(lines)

    def to_latex(self) -> str:
        """A booktabs table environment: bold best, underlined second, a caption, a label; headers of the form
        "GROUP METRIC" grouped under GROUP with \\cmidrule."""
        def tex(cell: Cell) -> str:
            text = latex_escape(cell.text)
            if cell.underline:
                text = f"\\underline{{{text}}}"
            return f"\\textbf{{{text}}}" if cell.bold else text

        n = len(self.header)
        spans: list[tuple[str, int]] = []  # (group, columns) over header[1:]
        metrics = [_METRIC_HEADER.match(h) for h in self.header[1:]]
        grouped = n > 2 and all(metrics) and len({m.group(1) for m in metrics}) < len(metrics)
        if grouped:
            for m in metrics:
                if spans and spans[-1][0] == m.group(1):
                    spans[-1] = (m.group(1), spans[-1][1] + 1)
                else:
                    spans.append((m.group(1), 1))
        lines = ["\\begin{table}[htbp]", "\\centering", "\\small",
                 f"\\caption{{{latex_escape(self.title)}" + (f". {inline_latex(self.caption)}" if self.caption else "") + "}",
                 f"\\label{{tab:{re.sub(r'[^A-Za-z0-9:-]', '-', self.key or 'table')}}}"]
        widths = [max([len(self.header[j])] + [len(r[j].text) for r in self.rows if j < len(r)]) for j in range(n)]
        wide = sum(widths) + 2 * n > 90  # about a text width of \small characters: scale the table down to fit
        if wide:
            lines.append("\\resizebox{\\textwidth}{!}{%")
        lines += [f"\\begin{{tabular}}{{l{'r' * (n - 1)}}}", "\\toprule"]
        if grouped:
            lines.append(" & ".join([""] + [f"\\multicolumn{{{k}}}{{c}}{{{latex_escape(g)}}}" for g, k in spans]) + " \\\\")
            col, rules = 2, []
            for _, k in spans:
                rules.append(f"\\cmidrule(lr){{{col}-{col + k - 1}}}")
                col += k
            lines.append(" ".join(rules))
            lines.append(" & ".join([latex_escape(self.header[0])] + [m.group(2) for m in metrics]) + " \\\\")
        else:
            lines.append(" & ".join(latex_escape(h) for h in self.header) + " \\\\")
        lines.append("\\midrule")
        for i, row in enumerate(self.rows):
            if i in self.sections:
                if i:
                    lines.append("\\midrule")
                lines.append(f"\\multicolumn{{{n}}}{{l}}{{\\textit{{{latex_escape(self.sections[i])}}}}} \\\\")
            cells = [tex(c) for c in row]
            if cells and cells[0].startswith("["):  # `\\` would read a leading [..] as its spacing argument
                cells[0] = "{}" + cells[0]
            lines.append(" & ".join(cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}" + ("}" if wide else ""), "\\end{table}"]
        return "\n".join(lines)

    def to_html(self) -> str:
        def cell(c: Cell) -> str:
            text = html.escape(c.text)
            if c.underline:
                text = f"<u>{text}</u>"
            return f"<td><b>{text}</b></td>" if c.bold else f"<td>{text}</td>"

        # the title and caption above the table, as wide as the text (a <caption> would be as narrow as the table)
        out = [f'<div class="tcap" id="{html.escape(self.key)}"><b>{html.escape(self.title)}</b>'
               + (f'<span class="cap">{inline_html(self.caption)}</span>' if self.caption else "") + "</div>",
               '<div class="scroll"><table>',
               "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in self.header) + "</tr>"]
        for i, row in enumerate(self.rows):
            if i in self.sections:
                out.append(f'<tr class="section"><td colspan="{len(self.header)}">{html.escape(self.sections[i])}</td></tr>')
            out.append("<tr>" + "".join(cell(c) for c in row) + "</tr>")
        out.append("</table></div>")
        return "\n".join(out)


# -- helpers ----------------------------------------------------------------------
def _fmt(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _ranks(values: list[float]) -> tuple[float | None, float | None]:
    """(best, second best) distinct finite values, rounded as displayed."""
    distinct = sorted({round(v, 4) for v in values if v is not None and not math.isnan(v)}, reverse=True)
    return (distinct[0] if distinct else None, distinct[1] if len(distinct) > 1 else None)


def _emphasis(cells: list[Cell], values: list[float]) -> None:
    best, second = _ranks(values)
    for c, v in zip(cells, values):
        if v is None or math.isnan(v):
            continue
        c.bold = best is not None and round(v, 4) == best
        c.underline = second is not None and round(v, 4) == second


def _family_order(family: str) -> int:
    return next((i for i, (f, _) in enumerate(FAMILY_ORDER) if f == family), len(FAMILY_ORDER))


def _family_title(family: str) -> str:
    return dict(FAMILY_ORDER).get(family, "Other")


def _rows_by_family(table: Table, order: list[str], families: dict[str, str], grid: dict[str, list[Cell]]) -> None:
    """Append the rows in `order`, with a section title wherever the family changes."""
    previous = None
    for i, lab in enumerate(order):
        if families[lab] != previous:
            table.sections[i] = _family_title(families[lab])
            previous = families[lab]
        table.rows.append(grid[lab])


def _datasets(summary: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(summary["dataset"]))
    return sorted(present, key=lambda d: (DATASET_ORDER.index(d) if d in DATASET_ORDER else len(DATASET_ORDER), d))


def perceptual_target(dataset: str, targets: list[str]) -> str | None:
    if dataset in PERCEPTUAL_TARGET:
        return PERCEPTUAL_TARGET[dataset] if PERCEPTUAL_TARGET[dataset] in targets else None
    for t in ("quality", "overall"):
        if t in targets:
            return t
    return targets[0] if targets else None


def main_family(part: pd.DataFrame) -> str | None:
    """The split family a paper table uses: grouped splits first, then the one with most rows."""
    split_based = part[part["split_protocol"] != "all-images"]
    if split_based.empty:
        return None
    counts = split_based.groupby("split_family")["n"].sum()
    grouped = [f for f in counts.index if f.startswith("grouped")]
    return max(grouped or list(counts.index), key=lambda f: counts[f])


def selection_text(part: pd.DataFrame) -> str:
    """How the trainable rows chose their model (from their stored configurations)."""
    modes = set()
    for text in part["config_json"]:
        selection = json.loads(text or "{}").get("selection")
        if selection:
            modes.add(selection)
    words = {"val": "epoch with the best validation-group SRCC+PLCC (the test part is never looked at)",
             "last": "last epoch", "test-oracle": "best epoch on the test part (rows marked [test-oracle]; optimistic)"}
    if not modes:
        return "Model selection: none (zero-shot methods and SVRs fitted once on the training part)."
    return "Model selection of deep models: " + "; ".join(words.get(m, m) for m in sorted(modes)) + "."


def lacking(part: pd.DataFrame) -> set[str]:
    """Labels of the lines that lack repeats other lines of their block have (`shared_repeats` facts)."""
    if part.empty or "n_stored" not in part:
        return set()
    return set(part.loc[part["n_stored"] < part["n_block"], "label"])


def repeats_note(parts: list[tuple[str, pd.DataFrame]]) -> str:
    """The caption sentence on repeats: how many every row of each column shares, the split-set hash, and what
    the † mark means where some row lacks repeats."""
    texts, marked = [], False
    for title, part in parts:
        if part.empty or "n_shared" not in part:
            continue
        n = int(part["n_shared"].max())
        where = f"{title}: " if len(parts) > 1 else ""
        if n == 0:
            texts.append(f"{where}no repeat is shared by every row, so each row is a mean over its own repeats and "
                         f"the rows are NOT comparable")
            continue
        text = f"{where}{n} repeat{'s' if n != 1 else ''} shared by every row (split set {part['split_set'].iloc[0]})"
        short = part[part["n_stored"] < part["n_block"]]
        if not short.empty:
            marked = True
            text += (f", of {int(part['n_block'].max())} run; {LACKING} "
                     + ", ".join(f"{r.label} has {int(r.n_stored)}" for r in short.drop_duplicates("label").itertuples()))
        texts.append(text)
    if not texts:
        return ""
    out = "Repeats: " + "; ".join(texts) + ". "
    if marked:
        out += (f"{LACKING}: lacks repeats that other rows have (failed or not run); every row of the column is "
                "shown over the shared repeats only. ")
    return out


def _mark_lacking(table: "Table", labels: set[str]) -> None:
    for row in table.rows:
        if row and row[0].text in labels:
            row[0].text += f" {LACKING}"


def _mark(row: pd.Series) -> str:
    return f" {TIED}" if bool(row.get("tied_with_best", False)) else ""


# -- Table 1 ----------------------------------------------------------------------
def perceptual_table(summary: pd.DataFrame, caption_tail: str = "") -> Table | None:
    """Perceptual quality, methods by family, datasets side by side (SRCC / PLCC / KRCC means)."""
    columns = []  # (dataset, target, split_family)
    for dataset in _datasets(summary):
        part = summary[summary["dataset"] == dataset]
        target = perceptual_target(dataset, list(dict.fromkeys(part["target"])))
        family = main_family(part[part["target"] == target]) if target else None
        if target and family:
            columns.append((dataset, target, family))
    if not columns:
        return None
    blocks = {c: summary[(summary["dataset"] == c[0]) & (summary["target"] == c[1]) & (summary["split_family"] == c[2])
                         & (summary["family"] != "alignment")] for c in columns}
    labels = {}
    for part in blocks.values():
        for r in part.itertuples():
            labels.setdefault(r.label, r.family)
    order = sorted(labels, key=lambda lab: (_family_order(labels[lab]), lab))
    header = ["Method"] + [f"{d} ({t}) {m}" for d, t, _ in columns for _, m in SHOWN]
    table = Table("Table 1 layout: perceptual quality", header, key="table1")
    grid: dict[str, list[Cell]] = {lab: [Cell(lab)] for lab in order}
    for c in columns:
        part = blocks[c]
        for metric, _ in SHOWN:
            values, cells = [], []
            for lab in order:
                hit = part[part["label"] == lab]
                value = float(hit.iloc[0][f"{metric}_mean"]) if not hit.empty else float("nan")
                mark = _mark(hit.iloc[0]) if metric == "srcc" and not hit.empty else ""
                cell = Cell((_fmt(value) + mark) if not hit.empty else "—")
                values.append(value if not hit.empty and not hit.iloc[0]["label"].endswith("[test-oracle]") else float("nan"))
                cells.append(cell)
            _emphasis(cells, values)
            for lab, cell in zip(order, cells):
                grid[lab].append(cell)
    _rows_by_family(table, order, labels, grid)
    _mark_lacking(table, set().union(*(lacking(part) for part in blocks.values())))
    protocols = "; ".join(f"{d}: {fam}" for d, _, fam in columns)
    repeats = repeats_note([(f"{d} ({t})", blocks[(d, t, f)]) for d, t, f in columns])
    table.caption = (f"Mean over repeats on the test parts. {repeats}{size_note(blocks)}Splits: {protocols}. "
                     f"{selection_text(pd.concat(blocks.values()))} PLCC on raw scores (logistic-fitted PLCC in the "
                     f"detail tables and CSV/JSON). Bold: best; underlined: second ([test-oracle] rows are not ranked). "
                     + caption_tail)
    return table


def size_note(blocks: dict) -> str:
    """Which size of each dataset produced the numbers ('synthetic: 360 images. '), with a word on why
    SynthAGIQA's sizes differ."""
    sizes = {}
    for (dataset, _, _), part in blocks.items():
        if "n_items" in part and not part.empty:
            sizes.setdefault(dataset, int(part["n_items"].max()))
    if not sizes:
        return ""
    text = "Images per dataset: " + ", ".join(f"{d} {n:,}" for d, n in sizes.items()) + ". "
    if "synthetic" in sizes and sizes["synthetic"] < 1000:
        text += ("SynthAGIQA at this size is the quick run, where trained methods are starved of data; "
                 "`--dataset-opt size=3k` is the AGIQA-3k-scale preset (300 prompts, 1,800 images). ")
    return text


# -- Table 2 ----------------------------------------------------------------------
def alignment_table(summary: pd.DataFrame, caption_tail: str = "") -> Table | None:
    """Text-image alignment: split-based rows and all-images rows as separate sections."""
    part = summary[summary["target"] == "alignment"]
    if part.empty:
        return None
    datasets = _datasets(part)
    dataset = "agiqa3k" if "agiqa3k" in datasets else datasets[0]
    part = part[part["dataset"] == dataset]
    family = main_family(part)
    sections = []
    if family:
        sections.append((f"Test parts of the splits ({family})", part[part["split_family"] == family]))
    all_images = part[part["split_protocol"] == "all-images"]
    if not all_images.empty:
        sections.append(("All images, no split (the AGIQA-3k paper's protocol for zero-shot metrics)", all_images))
    header = ["Method", "Family"] + [m for _, m in SHOWN]
    table = Table(f"Table 2 layout: text-image alignment on {dataset}", header, key="table2")
    for title, rows in sections:
        rows = rows.assign(_order=[_family_order(f) for f in rows["family"]]).sort_values(["_order", "label"])
        table.sections[len(table.rows)] = title
        block = [[Cell(r.label), Cell(_family_title(r.family))] for r in rows.itertuples()]
        for metric, _ in SHOWN:
            values = [float(v) for v in rows[f"{metric}_mean"]]
            cells = [Cell(_fmt(v) + (_mark(r) if metric == "srcc" else "")) for v, (_, r) in zip(values, rows.iterrows())]
            _emphasis(cells, [v if not lab.endswith("[test-oracle]") else float("nan") for v, lab in zip(values, rows["label"])])
            for line, c in zip(block, cells):
                line.append(c)
        table.rows.extend(block)
    _mark_lacking(table, set().union(*(lacking(rows) for _, rows in sections)))
    repeats = repeats_note([(title.split(" (")[0], rows) for title, rows in sections])
    table.caption = (f"Mean over repeats (one value for all-images). {repeats}{selection_text(part)} PLCC on raw scores. "
                     "Bold: best; underlined: second, within each section. " + caption_tail)
    return table


# -- Table 3 ----------------------------------------------------------------------
def ablation_components(row) -> dict[str, bool]:
    """A summary row's ablation components, as stored with its results (the method spec declares them)."""
    try:
        return json.loads(getattr(row, "components_json", "") or "{}")
    except json.JSONDecodeError:
        return {}


def ablation_table(summary: pd.DataFrame, dataset: str, family: str) -> Table | None:
    """The variants of the method under study (family "ours") with check marks per ablation component
    (as its spec declares and its rows store them), SRCC / PLCC / KRCC per target."""
    part = summary[(summary["dataset"] == dataset) & (summary["split_family"] == family)
                   & (summary["family"] == "ours")]
    if "components_json" in part:
        part = part[part["components_json"].fillna("{}") != "{}"]
    if part["label"].nunique() < 2:
        return None
    variants = part.drop_duplicates("label")
    components = list(dict.fromkeys(k for r in variants.itertuples() for k in ablation_components(r)))
    targets = sorted(dict.fromkeys(part["target"]), key=lambda t: (TARGET_ORDER.index(t) if t in TARGET_ORDER else 99, t))
    header = ["Variant", *components] + [f"{t} {m}" for t in targets for _, m in SHOWN]
    table = Table(f"Table 3 layout: ablation of IP-IQA on {dataset}", header, key=f"table3-{dataset}")

    def switched(r) -> tuple[bool, ...]:
        found = ablation_components(r)
        return tuple(bool(found.get(c, False)) for c in components)

    order = sorted(variants.itertuples(), key=switched)
    lines = [[Cell(r.label), *[Cell("✓" if on else "") for on in switched(r)]] for r in order]
    for t in targets:
        for metric, _ in SHOWN:
            values, cells = [], []
            for r in order:
                hit = part[(part["label"] == r.label) & (part["target"] == t)]
                value = float(hit.iloc[0][f"{metric}_mean"]) if not hit.empty else float("nan")
                values.append(value)
                cells.append(Cell(_fmt(value) if not hit.empty else "—"))
            _emphasis(cells, values)
            for line, c in zip(lines, cells):
                line.append(c)
    table.rows = lines
    _mark_lacking(table, lacking(part))
    repeats = repeats_note([(t, part[part["target"] == t]) for t in targets])
    table.caption = (f"Splits: {family}. Mean over repeats. {repeats}{selection_text(part)} Bold: best; "
                     "underlined: second.")
    return table


# -- detail ---------------------------------------------------------------------
def detail_table(part: pd.DataFrame, title: str) -> Table:
    """Every statistic of one (dataset, split family, target) block, best SRCC first."""
    part = part.sort_values("srcc_mean", ascending=False, na_position="last")
    header = ["Method", "n"]
    for _, m in SHOWN:
        header += [f"{m} mean ± std", f"{m} median", f"{m} 95% CI"]
    header += ["PLCC (logistic)", "vs best: Holm p"]
    table = Table(title, header, key="detail")
    columns: list[list[Cell]] = []
    for r in part.itertuples():
        row = [Cell(r.label), Cell(str(r.n))]
        for metric, _ in SHOWN:
            mean, std = getattr(r, f"{metric}_mean"), getattr(r, f"{metric}_std")
            row.append(Cell(_fmt(mean) + ("" if math.isnan(std) else f" ± {_fmt(std)}") + (_mark(r._asdict()) if metric == "srcc" else "")))
            row.append(Cell(_fmt(getattr(r, f"{metric}_median"))))
            low, high = getattr(r, f"{metric}_ci_low", float("nan")), getattr(r, f"{metric}_ci_high", float("nan"))
            row.append(Cell("n/a" if math.isnan(low) else f"[{_fmt(low)}, {_fmt(high)}]"))
        row.append(Cell(_fmt(r.plcc_logistic_mean)))
        p = getattr(r, "p_holm", float("nan"))
        row.append(Cell("best" if bool(getattr(r, "is_best", False)) else ("n/a" if math.isnan(p) else f"{p:.3g}")))
        columns.append(row)
    for i, (metric, _) in enumerate(SHOWN):
        col = 2 + 3 * i
        values = [float(v) for v in part[f"{metric}_mean"]]
        _emphasis([row[col] for row in columns], values)
    table.rows = columns
    return table


# -- cross-dataset ------------------------------------------------------------------
def is_cross(summary: pd.DataFrame) -> pd.Series:
    """Which summary lines come from cross-dataset runs (fit on one dataset, test on another)."""
    if "train_dataset" not in summary:
        return pd.Series(False, index=summary.index)
    return summary["train_dataset"].notna() & (summary["train_dataset"].astype(str) != "")


def cross_label(train: str, test: str, family: str) -> str:
    """"train → test"; between two versions of one dataset (e.g. two SynthAGIQA worlds), with the options that
    tell them apart (recorded in the split family by `crossdata.cross_splits`)."""
    if train != test:
        return f"{train} → {test}"
    try:
        params = json.loads(family.split(" ", 1)[1])
    except (IndexError, ValueError, AttributeError):
        params = {}
    mine, theirs = dict(params.get("train_options") or {}), dict(params.get("test_options") or {})
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))

    def side(options: dict) -> str:
        shown = [f"{k}={options[k]}" for k in differ if k in options]
        return f" ({', '.join(shown)})" if shown else " (defaults)" if differ else ""

    return f"{train}{side(mine)} → {test}{side(theirs)}"


def cross_table(summary: pd.DataFrame) -> Table | None:
    """Rows: methods; columns: each train -> test pair and target, SRCC and PLCC (mean over repeats with the
    95% prompt-cluster bootstrap interval)."""
    part = summary[is_cross(summary)]
    if part.empty:
        return None
    pairs = sorted({(r.train_dataset, r.dataset, r.target, r.data_hash) for r in part.itertuples()},
                   key=lambda p: (p[0], p[1], TARGET_ORDER.index(p[2]) if p[2] in TARGET_ORDER else 9, p[2], p[3]))
    where = {(r.train_dataset, r.dataset, r.data_hash): cross_label(r.train_dataset, r.dataset, r.split_family)
             for r in part.itertuples()}
    labels = dict.fromkeys(part.sort_values("label")["label"])
    families = dict(zip(part["label"], part["family"]))
    order = sorted(labels, key=lambda lab: (_family_order(families[lab]), lab))
    header = ["Method"] + [f"{where[tr, te, h]} ({t}) {m}" for tr, te, t, h in pairs for m in ("SRCC", "PLCC")]
    table = Table("Cross-dataset generalisation", header, key="cross")
    grid = {lab: [Cell(lab)] for lab in order}
    for tr, te, t, h in pairs:
        block = part[(part["train_dataset"] == tr) & (part["dataset"] == te) & (part["target"] == t)
                     & (part["data_hash"] == h)]
        for metric in ("srcc", "plcc"):
            values, cells = [], []
            for lab in order:
                hit = block[block["label"] == lab]
                if hit.empty:
                    values.append(float("nan"))
                    cells.append(Cell("—"))
                    continue
                r = hit.iloc[0]
                low, high = r.get(f"{metric}_ci_low", float("nan")), r.get(f"{metric}_ci_high", float("nan"))
                ci = f" [{_fmt(float(low), 3)}, {_fmt(float(high), 3)}]" if pd.notna(low) and pd.notna(high) else ""
                cells.append(Cell(_fmt(float(r[f"{metric}_mean"])) + ci))
                values.append(float(r[f"{metric}_mean"]) if not lab.endswith("[test-oracle]") else float("nan"))
            _emphasis(cells, values)
            for lab, cell in zip(order, cells):
                grid[lab].append(cell)
    _rows_by_family(table, order, families, grid)
    _mark_lacking(table, lacking(part))
    repeats = repeats_note([(f"{where[tr, te, h]} ({t})", part[(part["train_dataset"] == tr) & (part["dataset"] == te)
                                                         & (part["target"] == t) & (part["data_hash"] == h)])
                            for tr, te, t, h in pairs])
    maps = sorted({r.split_family for r in part.itertuples()})
    table.caption = ("Trainable methods fitted on the training dataset (model selection on a held-out part of its "
                     "prompt groups, varied per repeat) and tested on every image of the test dataset; zero-shot "
                     "methods scored once on the test dataset. Mean over repeats, [95% prompt-cluster bootstrap "
                     f"interval]. {repeats}PLCC on raw scores. Bold: best; underlined: second. "
                     f"Protocols: {'; '.join(maps)}.")
    return table
