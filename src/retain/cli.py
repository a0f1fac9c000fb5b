"""Command line: ``retain run``, ``sweep``, ``frontier``, ``compare``, ``report``, ``predict``,
``evaluate``, ``learn``, ``export`` and ``list``. Thin: parse (:mod:`retain.arguments`), check
what needs no model, call the API (:mod:`retain.api`: ``run``, ``compare``, ``report``, and
``load`` for predict, evaluate and export); ``learn`` calls :func:`retain.engine.learn`, which
``Trained.learn`` also calls, without rebuilding the run twice; ``sweep`` and ``frontier`` their
modules."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from retain import checks
from retain.arguments import LEARN_OPTIONS, build_parser, config_from_args
from retain.config_toml import read_sessions
from retain.errors import RetainError
from retain.kinds import KINDS
from retain.profiles import PROFILE_NAMES
from retain.summary import columns, format_table, format_value, printed, time_line

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", category=FutureWarning)


# --- argument errors, answered before torch is imported and before any work ----------------
def _check_run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    config.check()
    checks.check_run_out(config.out, args.resume, args.overwrite)
    if args.config:  # its later sessions, checked before any work
        read_sessions(args.config)


def _check_sweep(args: argparse.Namespace) -> None:
    config_from_args(args).check()
    keys = [k for k, _ in args.grid]
    if len(set(keys)) != len(keys):
        raise RetainError(f"each --grid key may appear once, got {', '.join(keys)}")
    if any(not values for _, values in args.grid):
        raise RetainError("a sweep needs at least one --grid KEY=V1,V2,... with values")
    from retain.sweep import NOT_GRIDDED

    for key in keys:
        if key in NOT_GRIDDED:
            raise RetainError(f"--grid {key} cannot vary within a sweep: run one sweep per "
                              f"{key}")
    for path in args.baseline:
        if not os.path.isfile(os.path.expanduser(path)):
            raise RetainError(f"--baseline {path} does not exist: give a run's results.json")


def _check_compare(args: argparse.Namespace) -> None:
    from retain.catalogue import METHODS

    if getattr(args, "runs", None):
        checks.check_folder(args.out, "--out")
        if (Path(args.out).expanduser() / "comparison.json").is_file() and not args.overwrite:
            raise RetainError(f"{args.out} holds an earlier comparison: add --overwrite to "
                              "replace it, or choose another --out")
        return
    config_from_args(args).check()
    checks.check_seeds(args.seeds)
    names = [] if args.methods.strip() == "all" else args.methods.split(",")
    for name in filter(None, (n.split(":")[0].strip() for n in names)):
        if name not in METHODS:
            raise RetainError(f"unknown method '{name}' in --methods: choose among "
                              f"{', '.join(METHODS)} or 'all'")


def _check_predict(args: argparse.Namespace) -> None:
    checks.check_run_folder(args.directory)
    for flag, value in (("--batch-size", args.batch_size), ("--task", args.task)):
        if value is not None and value < 1:
            raise RetainError(f"{flag} must be 1 or more, got {value}")
    checks.check_predictions_out(args.out, args.data, args.overwrite)
    checks.check_data_for_run(args.directory, args.data, args.task, labelled=False)


def _check_evaluate(args: argparse.Namespace) -> None:
    checks.check_run_folder(args.directory)
    for flag, value in (("--batch-size", args.batch_size), ("--task", args.task)):
        if value is not None and value < 1:
            raise RetainError(f"{flag} must be 1 or more, got {value}")
    if not os.path.exists(os.path.expanduser(args.data)):
        raise RetainError(f"data file '{args.data}' does not exist")
    if args.out is not None:
        checks.check_folder(args.out, "--out", inside_run=True)
    checks.check_data_for_run(args.directory, args.data, args.task, labelled=True)


def _check_export(args: argparse.Namespace) -> None:
    checks.check_run_folder(args.directory)
    checks.check_export_to(args.directory, args.to, args.overwrite)


def _check_frontier(args: argparse.Namespace) -> None:
    checks.check_folder(args.out, "--out")


CHECKS = {"run": _check_run, "sweep": _check_sweep, "frontier": _check_frontier,
          "compare": _check_compare, "predict": _check_predict, "evaluate": _check_evaluate,
          "export": _check_export}


def cmd_run(args: argparse.Namespace) -> int:
    from retain.api import run

    config = config_from_args(args)
    sessions = read_sessions(args.config) if args.config else None  # the later sessions
    results = run(config, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                  sessions=sessions)
    return _print_results(results, config.out)


def _print_results(results: dict[str, Any], out: str) -> int:
    """A run's summary table, where its time went, and its results file (main process)."""
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(format_table(results))
        print(time_line(results))
        print(f"results: {os.path.join(out, 'results.json')}")
    return 0


def cmd_learn(args: argparse.Namespace) -> int:
    from retain.engine import learn

    options = {k: getattr(args, k) for k in (*LEARN_OPTIONS, "retention")
               if getattr(args, k) is not None}
    results, _ = learn(args.directory, args.data, args.classes_per_task,
                       progress=not args.quiet, method=args.method, backbone=args.backbone,
                       kind=args.kind, options=options)
    return _print_results(results, args.directory)


def cmd_sweep(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from retain.sweep import sweep

    frontier = sweep(config_from_args(args), dict(args.grid), args.baseline,
                     progress=not args.quiet)
    if not PartialState().is_main_process:
        return 0
    score = frontier["score"]["name"]
    cols = ("plasticity", f"final_{score}", "forgetting", frontier["retention_key"],
            "trainable_parameters")
    if any(f"validation_final_{score}" in row for row in frontier["points"]):
        cols = (f"validation_final_{score}", *cols)
    print(f"{'point':<24}" + "".join(f"{c:>28}" for c in cols))
    for row in frontier["points"] + frontier["baselines"]:
        print(f"{row['label']:<24}" + "".join(f"{format_value(row.get(c)):>28}" for c in cols))
    _print_envelopes(frontier.get("envelopes", []))
    if "chosen" in frontier:  # on the validation split; its test figure is the one to report
        chosen = frontier["chosen"]
        print(f"chosen on validation: {chosen['label']} ("
              + ", ".join(f"{k} {format_value(v)}" for k, v in chosen.items() if k != "label")
              + ")")
    print(f"frontier: {os.path.join(args.out, 'frontier.json')} and frontier.png")
    return 0


def _print_envelopes(tables: list[dict[str, Any]]) -> None:
    from retain.frontier import markdown

    for table in tables:
        print(f"\ntask {table['task']}: envelopes of learning against forgetting")
        print(markdown(table))


def cmd_frontier(args: argparse.Namespace) -> int:
    from retain import checkpoint
    from retain.frontier import load_runs, tables
    from retain.reporting.figures import envelope_figure

    runs = load_runs(args.runs)
    found = tables(runs, args.reference)
    if not found:
        raise RetainError("none of these runs has curves: run them with --probe-every N")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json(out / "frontier.json", {"runs": [r["_path"] for r in runs],
                                                  "envelopes": found})
    envelope_figure(found, out / "frontier.png", f"Learning against forgetting: {len(runs)} "
                    "runs")
    _print_envelopes(found)
    print(f"frontier: {out / 'frontier.json'} and frontier.png")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from retain.api import compare
    from retain.comparison import compare_runs
    from retain.reporting import differing_settings, table

    if args.runs:
        defaults = vars(build_parser().parse_args(["compare"]))
        given = [k for k, v in vars(args).items()
                 if k not in ("runs", "out", "quiet", "overwrite") and v != defaults.get(k)]
        if given:
            flags = ", ".join("--no-retention" if k == "retention" else "--" + k.replace("_", "-")
                              for k in given)
            raise RetainError(f"--runs compares finished runs as they are: drop {flags}")
        comparison = compare_runs(args.runs, args.out)
    else:
        config = config_from_args(args)
        comparison = compare(config, args.methods, args.seeds, progress=not args.quiet)
    if PartialState().is_main_process:
        header, rows = table(comparison)
        labels = {c.key: c.label for c in columns()}
        shown = {labels[k] for k in printed() if k in labels}
        keep = [0, 1] + [i for i, h in enumerate(header) if h in shown]
        for cells in [[(h, False) for h in header]] + rows:
            print("  ".join(f"{cells[i][0]:>18}" for i in keep))
        differ = differing_settings(comparison)
        if differ:  # a comparison of runs that differ in more than their method
            print("settings that differ: " + "; ".join(
                f"{k} ({', '.join(f'{label}: {v}' for label, v in values.items())})"
                for k, values in differ.items()))
        print(f"report: {os.path.join(args.out, 'report.html')} (and report.md)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from retain.api import load
    from retain.trained import write_rows

    preds = load(args.directory).predict(args.data, args.batch_size, args.task)
    text = write_rows(preds, args.out)
    if text is not None:
        sys.stdout.write(text)
    else:
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from retain.api import load
    from retain.evaluation import summary_line, write_evaluation

    result = load(args.directory).evaluate(args.data, task=args.task, batch_size=args.batch_size)
    print(summary_line(result), file=sys.stderr)
    if args.out is None:  # one key a line, each value on its line (a matrix row by row)
        print("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in
                                 result.items()) + "\n}")
    else:
        for path in write_evaluation(result, args.out):
            print(f"wrote {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from retain.api import load

    print(f"wrote {load(args.directory).export(args.to, overwrite=args.overwrite)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from retain.api import report

    for path in report(args.directory)[:2]:
        print(f"wrote {path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Everything from light modules (no torch): well under a second. With a name, that
    method's or head's options (imports it)."""
    from retain.catalogue import HEADS, METHODS, PACKAGED, TINY
    from retain.data import BENCHMARKS

    if args.name:
        print("\n".join(describe(args.name)))
        return 0
    print("methods (`retain list METHOD` shows its options, set with --set KEY=VALUE):")
    for name, info in METHODS.items():
        print(f"  {name:<14} {info.description} [head: {info.default_head}; "
              f"{', '.join(info.kinds)}]")
    print("heads (`retain list HEAD` shows its options, set with --head-set KEY=VALUE):")
    for name, description in HEADS.items():
        print(f"  {name:<14} {description}")
    print("benchmarks:")
    for name, benchmark in BENCHMARKS.items():
        print(f"  {name:<14} {benchmark.description} [{benchmark.kind.name}]")
    print("backbones (or a local model folder, or a hub id):")
    for name, (_, description) in PACKAGED.items():
        print(f"  {name:<14} {description}")
    for name, description in TINY.items():
        print(f"  {name:<14} {description}")
    print("profiles: " + ", ".join(PROFILE_NAMES))
    return 0


def describe(name: str) -> list[str]:
    """A method's or a head's options: name, default and help text, one per line."""
    from retain.catalogue import HEADS, METHODS
    from retain.options import option_text

    if name in METHODS:
        from retain.methods import get_method_class

        cls = get_method_class(name)
        info = cls.info
        rates = "".join(f" ({KINDS[k].label}: {lr:g})" for k, lr in info.kind_lr.items())
        lines = [f"{name}: {info.description}",
                 f"default head: {info.default_head}; default --lr: {info.default_lr:g}{rates}; "
                 f"serves: {', '.join(info.kinds)}", "options (--set KEY=VALUE):"]
        for kind, options in info.kind_options.items():
            lines.insert(-1, f"defaults on {KINDS[kind].label} streams: " + ", ".join(
                f"{k}={option_text(v)}" for k, v in options.items()))
        described = cls.config_class.describe() or ["none"]
        presets = [f"preset {key} (--preset {key}): " + ", ".join(
            f"{k}={option_text(v)}" for k, v in _flat(preset.fields).items())
            + f"; from {preset.source}" for key, preset in info.presets.items()]
        return lines + [f"  {line}" for line in described] + presets
    if name in HEADS:
        from retain.methods.heads import HEAD_CONFIGS

        options = HEAD_CONFIGS[name].describe() if name in HEAD_CONFIGS else ["none"]
        return [f"{name}: {HEADS[name]}", "options (--head-set KEY=VALUE):",
                *[f"  {line}" for line in options]]
    raise RetainError(f"'{name}' is neither a method nor a head: `retain list` shows them")


def _flat(fields: dict) -> dict:
    """A preset's fields, its method and head options among the run options."""
    return {k: v for key, value in fields.items()
            for k, v in (value.items() if key.endswith("_options") else [(key, value)])}


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "frontier": cmd_frontier,
            "compare": cmd_compare, "report": cmd_report, "predict": cmd_predict,
            "evaluate": cmd_evaluate, "learn": cmd_learn, "export": cmd_export,
            "list": cmd_list}
_SHOW_WARNING = warnings.showwarning


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """retain's own warnings as one line, without Python's source line; others as Python
    shows them."""
    if f"{os.sep}retain{os.sep}" in str(filename):
        print(f"retain: note: {message}", file=sys.stderr)
        return
    _SHOW_WARNING(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    from retain.pythonic import FROM_COMMAND_LINE

    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warning
    token = FROM_COMMAND_LINE.set(True)
    try:
        if args.command in CHECKS:
            CHECKS[args.command](args)
        return COMMANDS[args.command](args)
    except RetainError as e:
        print(f"retain: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("retain: interrupted; the last finished task is checkpointed (use --resume)",
              file=sys.stderr)
        return 130
    finally:
        FROM_COMMAND_LINE.reset(token)


if __name__ == "__main__":
    sys.exit(main())
