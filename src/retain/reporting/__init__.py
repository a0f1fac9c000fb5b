"""The comparison report, built from ``comparison.json`` alone (nothing here trains):
``report.md`` and a self-contained ``report.html`` with one table of every method's summary
figures (best per column in bold) and the figures, also saved as PNG files."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from retain.errors import RetainError
from retain.kinds import Kind, get_kind
from retain.summary import (
    column,
    columns,
    digits,
    format_spread,
    format_value,
    summary_row,
)


def figure_list(kind: Kind) -> list[tuple[str, str, str]]:
    """The report's figures for a stream of ``kind``: (file, title, caption)."""
    score, name = kind.score, kind.score.capitalize()
    better = "up" if kind.higher_is_better else "down"
    return [
        (f"{score}_matrices.png", f"{name} matrices",
         f"Row t, column i: {score} on task i after training task t."),
        (f"{score}_curves.png", f"{name} after each task",
         f"Mean {score} over the tasks seen so far ({kind.direction} is better); a dashed line "
         "trains only at the last task."),
        (f"{score}_vs_retention.png", f"{name} against retention",
         f"{better.capitalize()} and to the right is better: learning the stream while keeping "
         "what the backbone knew."),
        (f"cost_vs_{score}.png", f"Cost against final {score}",
         "Stored parameters (beyond the untouched backbone) and wall time of each run."),
        ("training_loss.png", "Training loss",
         "The loss of every optimiser step of each method's first run (its `train_log.jsonl`), "
         "with a moving mean over 20 steps within each task, a panel per head (each trains its "
         "own loss); dotted lines: task boundaries."),
    ] + kind.report_figures()


def bold_rule(kind: Kind) -> str:
    return (f"Bold: the best value of a column (higher is better, except {kind.score}"
            if not kind.higher_is_better else "Bold: the best value of a column (higher is "
            "better, except") + (
            " forgetting, parameters, times and memory); an inference ratio only where it lies "
            "outside every other method's spread (in brackets: the 10th to 90th percentile of "
            "the paired per-round ratios, the widest over seeds) and theirs outside its own.")


def comparison_kind(comparison: dict[str, Any]) -> Kind:
    """The task kind of a comparison's stream."""
    return get_kind(comparison["kind"])


def _best(values: list[float], key: str, spreads: list[list[float] | None]) -> float | None:
    """The best finite value, or None where there is no best: fewer than two values, all
    equal, or (figures measured with a spread) a difference inside a spread."""
    finite = [v for v in values if not math.isnan(v)]
    if len(finite) < 2 or len(set(finite)) == 1:
        return None
    col = column(key)
    best = min(finite) if col is not None and col.lower else max(finite)
    own = spreads[values.index(best)]
    for value, spread in zip(values, spreads, strict=True):
        if value != best and (_inside(value, own) or _inside(best, spread)):
            return None
    return best


def _inside(value: float, spread: list[float] | None) -> bool:
    return spread is not None and spread[0] <= value <= spread[1]


def _spread(entry: dict[str, Any], key: str) -> list[float] | None:
    """The interval saved beside a method's figure: the widest over its runs (None: none
    saved, as for every figure but the inference ratio)."""
    saved = [s for s in (summary_row(r).get(f"{key}_spread") for r in entry["runs"])
             if s is not None]
    return [min(s[0] for s in saved), max(s[1] for s in saved)] if saved else None


def table(comparison: dict[str, Any]) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Header and rows of (text, is best) cells: mean (± standard deviation over seeds)."""
    methods = comparison["methods"]
    keys = [(c.key, c.label) for c in columns()
            if any(c.key in m["mean"] for m in methods.values())]
    header = ["method", "head"] + [label for _, label in keys]
    spreads = {k: [_spread(m, k) for m in methods.values()] for k, _ in keys}
    best = {k: _best([float(m["mean"].get(k, math.nan)) for m in methods.values()], k,
                     spreads[k]) for k, _ in keys}
    rows = []
    for i, (name, entry) in enumerate(methods.items()):
        cells = [(name, False), (entry["head"], False)]
        for k, _ in keys:
            mean, std = entry["mean"].get(k, math.nan), entry["std"].get(k, math.nan)
            places = digits(k, 3)
            text = format_value(int(round(mean)) if "parameters" in k and mean == mean
                                else mean, places)
            if std == std and std is not None:
                text += f" ± {format_value(std, places)}"
            if spreads[k][i] is not None:
                text += f" [{format_spread(spreads[k][i], places)}]"
            cells.append((text, best[k] is not None and mean == best[k]))
        rows.append(cells)
    return header, rows


def _markdown(comparison: dict[str, Any], header: list[str], rows: list) -> str:
    out = [f"# {_heading(comparison)}", "", _intro(comparison), "",
           f"## {_table_title(comparison)}", "", "| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
    for cells in rows:
        out.append("| " + " | ".join(f"**{t}**" if b else t for t, b in cells) + " |")
    kind = comparison_kind(comparison)
    out += ["", bold_rule(kind), "", *_settings_markdown(comparison)]
    for file, title, caption in figure_list(kind):
        out += [f"## {title}", "", f"![{title}]({file})", "", caption, ""]
    return "\n".join(out)


def _html(comparison: dict[str, Any], header: list[str], rows: list, directory: Path) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{'<b>' if b else ''}{html.escape(t)}"
                                    f"{'</b>' if b else ''}</td>" for t, b in cells) + "</tr>"
                   for cells in rows)
    figures, kind = [], comparison_kind(comparison)
    for file, title, caption in figure_list(kind):
        data = base64.b64encode((directory / file).read_bytes()).decode("ascii")
        figures.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
                       f"src='data:image/png;base64,{data}'><p>{html.escape(caption)}</p>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:"
             "collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 6px;text-align:"
             "right}td:first-child,td:nth-child(2){text-align:left}img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(_heading(comparison))}</title><style>{style}</style></head><body>"
            f"<h1>{html.escape(_heading(comparison))}</h1><p>{html.escape(_intro(comparison))}"
            f"</p><h2>{html.escape(_table_title(comparison))}</h2><table><tr>{head}</tr>{body}"
            f"</table><p>{html.escape(bold_rule(kind))}</p>" + _settings_html(comparison)
            + "".join(figures) + "</body></html>")


def _settings_html(comparison: dict[str, Any]) -> str:
    differ = differing_settings(comparison)
    if not differ:
        return ""
    labels = list(comparison["methods"])
    head = "".join(f"<th>{html.escape(x)}</th>" for x in ["setting", *labels])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in [
        k, *(values[label] for label in labels)]) + "</tr>" for k, values in differ.items())
    return f"<h2>Settings that differ</h2><table><tr>{head}</tr>{body}</table>"


def _table_title(comparison: dict[str, Any]) -> str:
    what = comparison_kind(comparison).title(comparison["scenario"])
    return f"Summary after the last task ({what}, {comparison['benchmark']})"


def _heading(comparison: dict[str, Any]) -> str:
    seeds = ", ".join(str(s) for s in comparison["seeds"])
    return (f"retain comparison: {comparison['benchmark']} ({comparison['profile']} profile, "
            f"{comparison_kind(comparison).title(comparison['scenario'])}, seeds {seeds})")


def _intro(comparison: dict[str, Any]) -> str:
    n = len(comparison["seeds"])
    spread = " Mean ± sample standard deviation over the seeds." if n > 1 else ""
    first = next(iter(comparison["methods"].values()))["runs"][0]
    used = sum(len(t["classes"]) for t in first.get("tasks", [])) or None  # lm: no classes
    orders = "; ".join(f"seed {s}: {o[:used]}" for s, o in comparison["class_orders"].items())
    runs = [r for entry in comparison["methods"].values() for r in entry["runs"]]
    wall = sum(r["cost"]["wall_seconds"] for r in runs)
    same = (f", each seed with one class order for all methods ({orders})" if used else
            " (a language-model stream: its tasks in the stream's order)")
    return (f"{len(comparison['methods'])} methods on the same stream and seeds{same}."
            f"{spread} Retention ratios compare the "
            f"adapted backbone with the untouched one (1.0: nothing lost). The {len(runs)} runs "
            f"took {wall / 60:.1f} minutes of wall time in all.")


def differing_settings(comparison: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The settings in which a comparison's rows differ (setting -> row -> value as ``--set``
    writes it), method and head options by name; the method, output folder and seed left out
    (the row and the seeds say them). Empty when every row ran with the same settings."""
    from retain.config import filled
    from retain.options import option_text

    flat: dict[str, dict[str, Any]] = {}
    for label, entry in comparison["methods"].items():
        config = filled(entry["runs"][0].get("config", {}))
        values = {k: v for k, v in config.items() if k not in (
            "method", "out", "seed", "method_options", "head_options")}
        for table in ("method_options", "head_options"):
            values.update({f"{table.split('_')[0]} {k}": v
                           for k, v in config.get(table, {}).items()})
        flat[label] = values
    keys = sorted({k for values in flat.values() for k in values})
    return {k: {label: "-" if values.get(k) is None else option_text(values[k])
                for label, values in flat.items()}
            for k in keys if len({json.dumps(v.get(k), sort_keys=True)
                                  for v in flat.values()}) > 1}


def _settings_markdown(comparison: dict[str, Any]) -> list[str]:
    differ = differing_settings(comparison)
    if not differ:
        return []
    labels = list(comparison["methods"])
    return ["## Settings that differ", "", "| setting | " + " | ".join(labels) + " |",
            "|" + "---|" * (len(labels) + 1),
            *(f"| {k} | " + " | ".join(values[label] for label in labels) + " |"
              for k, values in differ.items()), ""]


def build_report(directory: str | Path) -> list[Path]:
    """Write the figures, ``report.md`` and ``report.html`` from ``directory/comparison.json``
    (a run's own report: :func:`retain.comparison.compare_runs` of that run)."""
    from retain.reporting import figures

    directory = Path(directory)
    source = directory / "comparison.json"
    if (directory / "results.json").is_file():
        raise RetainError(f"{directory} is a run, not a comparison: `retain report {directory}` "
                          "writes its report in RUN/report/")
    if not source.is_file():
        raise RetainError(f"no comparison.json in {directory}: run `retain compare --out "
                          f"{directory}` first")
    comparison = json.loads(source.read_text(), parse_constant=float)
    for entry in comparison["methods"].values():  # null (undefined) figures read back as NaN
        for part in ("mean", "std"):
            entry[part] = {k: math.nan if v is None else v for k, v in entry[part].items()}
    files = [directory / f for f, _, _ in figure_list(comparison_kind(comparison))]
    figures.score_matrices(comparison, files[0])
    figures.score_curves(comparison, files[1])
    figures.score_vs_retention(comparison, files[2])
    figures.cost_vs_score(comparison, files[3])
    figures.training_loss(comparison, files[4])
    if len(files) > 5:  # language models: the curves of --probe-every
        figures.learning_vs_forgetting(comparison, files[5])
        figures.curves_over_steps(comparison, files[6])
    runs = [r for entry in comparison["methods"].values() for r in entry["runs"]]
    if any(r.get("curves") for r in runs):  # every configuration's envelope (retain.frontier)
        from retain.frontier import markdown, tables

        found = tables(runs)
        figures.envelope_figure(found, directory / "frontier.png", figures.title(
            comparison, "Envelopes of learning against forgetting"))
        (directory / "frontier.md").write_text("\n\n".join(
            f"Task {t['task']}: envelopes of learning against forgetting\n\n{markdown(t)}"
            for t in found) + "\n")
        files.append(directory / "frontier.png")
    header, rows = table(comparison)
    (directory / "report.md").write_text(_markdown(comparison, header, rows))
    (directory / "report.html").write_text(_html(comparison, header, rows, directory))
    return [directory / "report.md", directory / "report.html"] + files
