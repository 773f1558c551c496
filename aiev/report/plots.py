"""The report's plots and tables (``aiev plots``), drawn from the run summary and each batch's reports.

Every file is always written, so the rule's outputs are fixed: a plot whose data the run did not produce (the loop
switched off, no benchmark scored) says so inside the figure. Each plot also gets a short reStructuredText file
of the numbers it shows (``NAME.rst``), which the report's caption for it includes, so the captions state the
numbers of this run and nothing is typed in by hand. Figures are SVG, written deterministically (no date, a
fixed id salt), so an unchanged run gives byte-identical files; their text stays text (searchable, and small).

Files (in ``outdir``): ``rounds.svg`` (pass rate by feedback round, rounds histogram), ``rejections.svg``,
``stages.svg`` (teacher vs student pass@1 per batch, the stage timeline), ``decontam.svg`` (removals per
benchmark), ``usage.svg`` (tokens and cost per batch), ``loss.svg`` (training loss curves), ``benchmarks.svg``
(scores beside the paper's); tables ``batches.html`` and ``benchmarks.html``.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiev.io import atomic_open, read_json_if_exists, write_json
from aiev.report.batches import kind_of, per_batch, read


@dataclass(frozen=True)
class Figure:
    """One plot or table of the report: rules/report.smk makes each a labelled ``report()`` output of the
    ``plots`` rule, with the caption ``docs/report/{plot,table}_NAME.rst``."""

    name: str
    kind: str  # "plot" (NAME.svg) or "table" (NAME.html)
    category: str
    what: str
    per_batch: bool = True  # labelled batch "all": it draws every batch

    @property
    def file(self) -> str:
        return f"{self.name}.svg" if self.kind == "plot" else f"{self.name}.html"

    @property
    def output(self) -> str:
        """The rule's name for the output."""
        return self.name if self.kind == "plot" else f"{self.name}_table"

    @property
    def caption(self) -> str:
        return f"{self.kind}_{self.name}.rst"

    @property
    def labels(self) -> dict[str, str]:
        return {"batch": "all", "what": self.what} if self.per_batch else {"what": self.what}


#: The report's plots and tables, in the report's order: the one list the rule and :func:`draw` share.
FIGURES = (
    Figure("rounds", "plot", "Generation", "pass rate by feedback round"),
    Figure("rejections", "plot", "Generation", "rejections by reason"),
    Figure("usage", "plot", "Generation", "tokens and cost"),
    Figure("checks", "plot", "Curation", "test checks: mutation scores, removals"),
    Figure("decontam", "plot", "Curation", "removals per benchmark"),
    Figure("stages", "plot", "Loop", "teacher vs student, stage timeline"),
    Figure("loss", "plot", "Loop", "training loss"),
    Figure("benchmarks", "plot", "Benchmarks", "pass@1 beside the paper's", per_batch=False),
    Figure("benchmarks", "table", "Benchmarks", "pass@1 table", per_batch=False),
    Figure("batches", "table", "Summary", "per batch table", per_batch=False),
)
PLOTS = tuple(f.name for f in FIGURES if f.kind == "plot")
TABLES = tuple(f.name for f in FIGURES if f.kind == "table")
STAGE_COLOURS = {"teaching": "#dbe9f6", "self-learning": "#fde3c8"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "aiev", "svg.fonttype": "none", "figure.dpi": 100, "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False})  # fmt: skip
    return plt


def _save(fig: Any, path: Path) -> None:
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="svg", metadata={"Date": None, "Creator": "aiev"}, bbox_inches="tight")
    fig.clear()


def _empty(ax: Any, why: str) -> None:
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.set_xticks([])
    ax.set_yticks([])


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _rst(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def rounds(plt: Any, batches: list[dict[str, Any]], path: Path) -> str:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    done = [b for b in batches if b.get("seeds")]
    if not done:
        _empty(left, "no dialogue was run (generate.enabled: false)")
        _empty(right, "")
        _save(fig, path)
        return _rst(["No dialogue was run."])
    top = max((int(r) for b in done for r in (b.get("passed_by_rounds") or {})), default=1)
    xs = list(range(1, top + 1))
    totals = dict.fromkeys(xs, 0)
    for b in done:
        by = {int(r): n for r, n in (b.get("passed_by_rounds") or {}).items()}
        cum, acc = [], 0
        for r in xs:
            acc += by.get(r, 0)
            totals[r] += by.get(r, 0)
            cum.append(100 * acc / b["seeds"])
        left.plot(xs, cum, marker="o", label=f"batch {b['batch']}")
    seeds = sum(b["seeds"] for b in done)
    overall = [100 * sum(totals[r] for r in xs[: i + 1]) / seeds for i in range(len(xs))]
    left.plot(xs, overall, color="black", linewidth=2, label="all batches")
    left.set(xlabel="rounds allowed (1 = no execution feedback)", ylabel="dialogues passed (%)", xticks=xs,
             ylim=(0, max(overall) * 1.15 or 1), title="Pass rate by feedback round")  # fmt: skip
    left.legend(fontsize=7)
    bottom = [0] * len(xs)
    for b in done:
        by = {int(r): n for r, n in (b.get("passed_by_rounds") or {}).items()}
        vals = [by.get(r, 0) for r in xs]
        right.bar(xs, vals, bottom=bottom, label=f"batch {b['batch']}")
        bottom = [a + v for a, v in zip(bottom, vals, strict=True)]
    right.set(xlabel="rounds the passing dialogue needed", ylabel="entries", xticks=xs, title="Rounds histogram")
    _save(fig, path)
    passed = sum(totals.values())
    first = totals.get(1, 0)
    multi = passed - first
    return _rst([
        f"{passed} of {seeds} dialogues passed ({_pct(passed / seeds)}): {first} at the first round, {multi} after "
        f"execution feedback ({_pct(multi / passed) if passed else 'n/a'} of the entries are multi-round).",
        "",
        "Passes by round: " + ", ".join(f"round {r}: {totals[r]}" for r in xs) + ".",
    ])  # fmt: skip


def rejections(plt: Any, batches: list[dict[str, Any]], path: Path) -> str:
    reasons = sorted({r for b in batches for r in (b.get("rejected_by_reason") or {})})
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * max(len(reasons), 2)))
    if not reasons:
        _empty(ax, "no dialogue was rejected")
        _save(fig, path)
        return _rst(["No dialogue was rejected."])
    left = [0] * len(reasons)
    for b in batches:
        vals = [(b.get("rejected_by_reason") or {}).get(r, 0) for r in reasons]
        ax.barh(reasons, vals, left=left, label=f"batch {b['batch']}")
        left = [a + v for a, v in zip(left, vals, strict=True)]
    for y, total in enumerate(left):
        ax.text(total, y, f" {total}", va="center", fontsize=8)
    ax.set(xlabel="dialogues rejected", title="Rejections by reason")
    ax.legend(fontsize=7)
    _save(fig, path)
    total = sum(left)
    ranked = sorted(zip(reasons, left, strict=True), key=lambda t: -t[1])
    return _rst([f"{total} dialogues rejected: " + ", ".join(f"{r} {n}" for r, n in ranked) + "."])


def stages(plt: Any, batches: list[dict[str, Any]], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    scored = [b for b in batches if b.get("teacher_pass_at_1") is not None or b.get("student_pass_at_1") is not None]
    if not scored:
        _empty(ax, "no batch was evaluated (the loop needs generate, train and evaluate enabled)")
        _save(fig, path)
        return _rst(["No batch was evaluated: the loop was off."])
    for b in batches:
        colour = STAGE_COLOURS.get(b.get("stage") or "", "#eeeeee")
        ax.axvspan(b["batch"] - 0.5, b["batch"] + 0.5, color=colour, zorder=0)
    ks = [b["batch"] for b in scored]
    teacher = [b.get("teacher_pass_at_1") for b in scored]
    student = [b.get("student_pass_at_1") for b in scored]

    def pct(vals: list[float | None]) -> list[float]:  # a model not scored on a batch leaves a gap, not a zero
        return [float("nan") if v is None else 100 * v for v in vals]

    ax.plot(ks, pct(teacher), marker="s", label="teacher", color="#1f77b4")
    ax.plot(ks, pct(student), marker="o", label="student", color="#d62728")
    from matplotlib.patches import Patch

    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color=c, label=f"{s} stage") for s, c in STAGE_COLOURS.items()]
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.set(xlabel="batch", ylabel="pass@1 on the batch's test split (%)", xticks=[b["batch"] for b in batches],
           ylim=(-5, 105), title="Teacher vs student, and who generated each batch")  # fmt: skip
    _save(fig, path)
    lines = [
        f"batch {b['batch']} ({b.get('stage')}): teacher {_pct(b.get('teacher_pass_at_1'))}, student "
        f"{_pct(b.get('student_pass_at_1'))} on {b.get('test_n')} test entries; next batch: {b.get('next')}"
        for b in scored
    ]
    switch = next((b["batch"] for b in batches if b.get("next") == "self-learning"), None)
    head = (f"The student took over after batch {switch} (self-learning stage from batch {switch + 1})."
            if switch is not None else "The teacher generated every batch (teaching stage throughout).")  # fmt: skip
    return _rst([head, "", *[f"- {x}" for x in lines]])


def checks(plt: Any, reports: list[Path | None], path: Path) -> str:
    """The test checks over the batches (each one's test-check report): the mutation-score histogram and the
    removals by reason."""
    scores: list[float] = []
    reasons: dict[str, int] = {}
    modes: set[str] = set()
    entries = 0
    for report in reports:
        rep = read(report)
        if not rep:
            continue
        modes.add(rep.get("mode", "?"))
        entries += rep.get("entries") or 0
        scores += rep.get("mutation_scores") or []
        for k, v in (rep.get("would_remove_by_reason") or {}).items():
            reasons[k] = reasons.get(k, 0) + v
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3))
    if not modes:
        for ax in (left, right):
            _empty(ax, "no batch's tests were checked")
        _save(fig, path)
        return _rst(["No batch's tests were checked (check_tests.mode: off, or no batch ran)."])
    left.hist(scores, bins=[i / 10 for i in range(11)], color="#17becf", edgecolor="white")
    left.set(xlabel="mutation score (share of mutants killed)", ylabel="entries", title="How often tests catch faults")
    names = [k for k, v in reasons.items() if v]
    right.barh(names or ["none"], [reasons[k] for k in names] or [0], color="#d62728")
    verb = "removed" if modes == {"filter"} else "would be removed (mode report)"
    right.set(xlabel=f"entries {verb}", title="Removals by reason")
    _save(fig, path)
    mean = f"{sum(scores) / len(scores):.2f}" if scores else "–"
    why = ", ".join(f"{k} {reasons[k]}" for k in names) or "none"
    return _rst([f"{entries} passing entries checked (mode {', '.join(sorted(modes))}); mean mutation score {mean} "
                 f"over {len(scores)} entries with mutants; {verb}: {why}."])  # fmt: skip


def decontam(plt: Any, reports: list[Path | None], path: Path) -> str:
    """Removals per benchmark over the batches (each one's decontamination report)."""
    per: dict[str, dict[str, int]] = {}
    threshold = None
    for report in reports:
        rep = read(report)
        threshold = rep.get("threshold", threshold)
        for name, bench in (rep.get("benchmarks") or {}).items():
            row = per.setdefault(name, {"removed": 0, "snippets": 0})
            row["removed"] += bench.get("removed") or 0
            row["snippets"] = max(row["snippets"], bench.get("snippets") or 0)
    fig, ax = plt.subplots(figsize=(7, 3))
    if not per:
        _empty(ax, "no batch was decontaminated")
        _save(fig, path)
        return _rst(["No batch was decontaminated."])
    names = sorted(per)
    vals = [per[n]["removed"] for n in names]
    ax.bar(names, vals, color="#8c564b")
    for x, v in enumerate(vals):
        ax.text(x, v, str(v), ha="center", va="bottom", fontsize=8)
    ax.set(ylabel="entries removed", title=f"Decontamination: similarity above {threshold} to a benchmark snippet")
    ax.set_ylim(0, max([*vals, 1]) * 1.2)
    _save(fig, path)
    total = sum(vals)
    each = ", ".join(f"{n} {per[n]['removed']} (of {per[n]['snippets']} snippets)" for n in names)
    return _rst([f"{total} entries removed (Levenshtein similarity above {threshold}): {each}."])


def usage(plt: Any, batches: list[dict[str, Any]], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    rows = [b for b in batches if b.get("requests")]
    if not rows:
        _empty(ax, "no request was made")
        _save(fig, path)
        return _rst(["No LLM request was made."])
    ks = [b["batch"] for b in rows]
    prompt = [b.get("prompt_tokens") or 0 for b in rows]
    completion = [b.get("completion_tokens") or 0 for b in rows]
    ax.bar(ks, prompt, label="prompt tokens", color="#9ecae1")
    ax.bar(ks, completion, bottom=prompt, label="completion tokens", color="#3182bd")
    ax.set(xlabel="batch", ylabel="tokens", xticks=ks, title="Tokens and cost per batch")
    cost = [b.get("cost_usd") or 0 for b in rows]
    twin = ax.twinx()
    twin.plot(ks, cost, color="#e6550d", marker="o", label="cost (USD)")
    twin.set_ylabel("cost (USD)")
    twin.spines["right"].set_visible(True)
    twin.set_ylim(0, max([*cost, 0.01]) * 1.3)
    lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=lines, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    _save(fig, path)
    tokens = sum(prompt) + sum(completion)
    requests = sum(b["requests"] for b in rows)
    return _rst([f"{requests:,} requests, {sum(prompt):,} prompt + {sum(completion):,} completion = {tokens:,} tokens, "
                 f"${sum(cost):.2f} over {len(rows)} batch(es)."])  # fmt: skip


def loss(plt: Any, students: list[Path | None], path: Path) -> str:
    """The training loss curves, from each batch's trained student (its folder, handed over whole; None: not
    trained), which holds its training record (aiev.train.worker)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    curves = []
    for k, student in enumerate(students):
        metrics = read_json_if_exists(student / "metrics.json") if student is not None else None
        points = (metrics or {}).get("loss") or []
        if points:
            curves.append((k, points, metrics))
            ax.plot(
                [p["step"] for p in points], [p["loss"] for p in points], marker=".", label=f"batch {curves[-1][0]}"
            )
    if not curves:
        _empty(ax, "no student was trained (train.enabled: false, or nothing to train on)")
        _save(fig, path)
        return _rst(["No student was trained."])
    ax.set(xlabel="optimizer step", ylabel="training loss", title="Student training loss")
    ax.legend(fontsize=7)
    _save(fig, path)
    return _rst([f"- batch {k}: {len(p)} steps on {m.get('world_size')} process(es), loss {p[0]['loss']:.3f} -> "
                 f"{p[-1]['loss']:.3f}" for k, p, m in curves])  # fmt: skip


def benchmarks(plt: Any, table: dict[str, dict[str, Any]], paper: dict[str, dict[str, float]], path: Path) -> str:
    from aiev.report.summary import BENCHMARK_COLUMNS

    cols = [c for c in BENCHMARK_COLUMNS if any(r.get(c) is not None for r in table.values())]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    if not cols:
        _empty(ax, "no benchmark was scored (benchmark.enabled: false)")
        _save(fig, path)
        return _rst(["No benchmark was scored."])
    rows = [(m, r) for m, r in table.items()] + [(f"{m} (paper)", r) for m, r in paper.items()]
    width = 0.8 / len(rows)
    for i, (name, r) in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(cols))]
        # a suite not scored (skipped, or not run for this model) has no bar, and says so: never a 0% bar
        ys = [float("nan") if r.get(c) is None else r[c] for c in cols]
        ax.bar(xs, ys, width, label=name, hatch="//" if "(paper)" in name else None,
               alpha=0.6 if "(paper)" in name else 1.0)  # fmt: skip
        for x, y in zip(xs, ys, strict=True):
            if y != y and "(paper)" not in name:
                ax.text(x, 1, "not scored", rotation=90, ha="center", va="bottom", fontsize=6, color="#666666")
    ax.set_xticks(range(len(cols)), cols, rotation=20)
    ax.set(ylabel="pass@1 (%)", ylim=(0, 100), title="Benchmark scores beside the paper's")
    ax.legend(fontsize=7)
    _save(fig, path)
    ours = [
        f"- {m}: "
        + ", ".join(f"{c} {r[c]}" for c in cols if r.get(c) is not None)
        + "".join(f"; not scored: {c}" for c in cols if r.get(c) is None)
        for m, r in table.items()
    ]
    theirs = [f"- {m} (paper): " + ", ".join(f"{c} {r[c]}" for c in cols if c in r) for m, r in paper.items()]
    return _rst(ours + theirs)


def _table(title: str, header: list[str], rows: list[list[Any]], note: str = "") -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "&ndash;"
        if isinstance(v, float):
            return f"{v:,.3f}".rstrip("0").rstrip(".")
        if isinstance(v, int):
            return f"{v:,}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body {{ font-family: sans-serif; font-size: 13px; margin: 1em; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child, th:first-child {{ text-align: left; }}
</style></head><body><h3>{html.escape(title)}</h3>
<table><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table><p>{html.escape(note)}</p></body></html>
"""


def batches_table(summary: dict[str, Any]) -> str:
    header = ["batch", "stage", "seeds", "passed", "pass rate", "rounds", "multi-round rounds", "rejected",
              "decontam removed", "train", "test", "teacher pass@1", "student pass@1", "next", "prompt tokens",
              "completion tokens", "cost (USD)"]  # fmt: skip
    rows = []
    for b in [*summary["batches"], {"batch": "total", **summary["totals"]}]:
        seeds = b.get("seeds")
        rate = b["passed"] / seeds if seeds and b.get("passed") is not None else None
        teacher, student = (None if b.get(k) is None else _pct(b[k]) for k in ("teacher_pass_at_1",
                                                                                 "student_pass_at_1"))  # fmt: skip
        rows.append([b["batch"], b.get("stage"), seeds, b.get("passed"), _pct(rate), b.get("rounds"),
                     b.get("rounds_multi_round_entries"), b.get("rejected"), b.get("decontam_removed"), b.get("train"),
                     b.get("test"), teacher, student,
                     b.get("next"), b.get("prompt_tokens"), b.get("completion_tokens"), b.get("cost_usd")])  # fmt: skip
    paper = summary.get("paper") or {}
    note = (
        f"The paper: {paper.get('seeds', 0):,} seeds, {paper.get('entries', 0):,} entries, "
        f"{paper.get('rounds', 0):,} rounds, {paper.get('decontam_removed', 0)} removed by decontamination."
    )
    return _table("Per batch", header, rows, note)


def benchmarks_table(summary: dict[str, Any]) -> str:
    from aiev.report.summary import BENCHMARK_COLUMNS

    table = summary.get("benchmarks") or {}
    paper = summary.get("paper_benchmarks") or {}
    cols = [c for c in BENCHMARK_COLUMNS if any(r.get(c) is not None for r in table.values())] or BENCHMARK_COLUMNS
    rows = [[m, *[r.get(c) for c in cols]] for m, r in table.items()]
    rows += [[f"{m} (paper)", *[r.get(c) for c in cols]] for m, r in paper.items()]
    notes = "; ".join(n for r in table.values() for n in r.get("notes", []))
    return _table("pass@1 (%) beside the paper's", ["model", *cols], rows, notes or "")


def run(paths: Any) -> dict[str, Any]:
    """The ``plots`` step: every plot, its numbers (``NAME.rst``) and the tables, in ``paths.outdir``; beside the
    summary (``paths.summary``), each batch's test-check and decontamination reports and trained student (its
    folder): ``check_reports``, ``decontam_reports``, ``students``, each kind a list in batch order, absent or
    empty where it is absent (:mod:`aiev.report.batches`). It reads no config."""
    kinds = ("check_reports", "decontam_reports", "students")
    handed = per_batch(**{k: kind_of(paths, k) for k in kinds})
    info = json.loads(Path(paths.summary).read_text(encoding="utf-8"))
    out = Path(paths.outdir)
    out.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    batches = info["batches"]
    drawers: dict[str, Any] = {
        "rounds": lambda path: rounds(plt, batches, path),
        "rejections": lambda path: rejections(plt, batches, path),
        "stages": lambda path: stages(plt, batches, path),
        "checks": lambda path: checks(plt, [b["check_reports"] for b in handed], path),
        "decontam": lambda path: decontam(plt, [b["decontam_reports"] for b in handed], path),
        "usage": lambda path: usage(plt, batches, path),
        "loss": lambda path: loss(plt, [b["students"] for b in handed], path),
        "benchmarks": lambda path: benchmarks(
            plt, info.get("benchmarks") or {}, info.get("paper_benchmarks") or {}, path
        ),
    }
    tables = {"batches": batches_table, "benchmarks": benchmarks_table}
    numbers = {}
    for figure in FIGURES:
        if figure.kind == "plot":
            numbers[figure.name] = drawers[figure.name](out / figure.file)
        else:
            with atomic_open(out / figure.file) as fh:
                fh.write(tables[figure.name](info))
    plt.close("all")
    for name, text in numbers.items():
        with atomic_open(out / f"{name}.rst") as fh:
            fh.write(text)
    report = {"outdir": str(out), "plots": [f"{p}.svg" for p in PLOTS], "tables": [f"{t}.html" for t in TABLES],
              "numbers": numbers}  # fmt: skip
    write_json(out / "plots.json", report)
    return report
