"""Command line: ``retain run``, ``sweep``, ``compare``, ``report``, ``predict``,
``evaluate``, ``export`` and ``list``. Thin: parse, build a config, call the API."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from retain import checks
from retain.config import HEADS, SCENARIOS, RunConfig, read_sessions
from retain.errors import RetainError
from retain.kinds import KINDS
from retain.profiles import PROFILE_NAMES
from retain.summary import format_table, format_value, time_line

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", category=FutureWarning)


class _Defaults(argparse.HelpFormatter):
    """``--help`` shows every default that is a value (None means "the profile's" or "the
    method's", which the help text says)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.default not in (None, [], argparse.SUPPRESS) and action.option_strings
                and action.nargs != 0 and "%(default)" not in text):
            text += " (default: %(default)s)"
        return text


def _help(name: str) -> str:
    f = {f.name: f for f in dataclasses.fields(RunConfig)}[name]
    return f.metadata["help"]


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'"
                                         ) from None


def _option(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    key, value = text.split("=", 1)
    return key.strip().replace("-", "_"), value.strip()


def _add_stream_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that trains: the stream, the backbone, the budget."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--benchmark", default="wordnet45", help=_help("benchmark"))
    src.add_argument("--data", help=_help("data"))
    p.add_argument("--profile", default="quick", choices=PROFILE_NAMES, help=_help("profile"))
    p.add_argument("--kind", choices=tuple(KINDS), help=_help("kind"))
    p.add_argument("--scenario", default="class", choices=SCENARIOS, help=_help("scenario"))
    p.add_argument("--classes-per-task", type=int, help=_help("classes_per_task"))
    for name in ("cap", "test_cap", "tasks", "steps"):
        p.add_argument("--" + name.replace("_", "-"), type=int, help=_help(name))
    p.add_argument("--class-order", type=_ints, help=_help("class_order") + ", e.g. 3,0,2,1")
    p.add_argument("--class-order-seed", type=int, help=_help("class_order_seed"))
    p.add_argument("--backbone", help=_help("backbone") + " (default: the profile's: "
                   + "; ".join(f"{k.name} {k.profiles['smoke'].backbone} on smoke, "
                               f"{k.profiles['quick'].backbone} otherwise" for k in KINDS.values())
                   + "; image folders: tiny-vit)")
    p.add_argument("--pooling", default="auto", help=_help("pooling"))
    for name, typ in (("epochs", int), ("batch_size", int), ("max_length", int)):
        p.add_argument("--" + name.replace("_", "-"), type=typ, help=_help(name))
    p.add_argument("--weight-decay", type=float, default=0.0, help=_help("weight_decay"))
    p.add_argument("--scheduler", default="constant", choices=("constant", "linear", "cosine"),
                   help=_help("scheduler"))
    p.add_argument("--warmup-steps", type=int, default=0, help=_help("warmup_steps"))
    p.add_argument("--warmup-ratio", type=float, default=0.0, help=_help("warmup_ratio"))
    p.add_argument("--grad-accumulation", type=int, default=1, help=_help("grad_accumulation"))
    p.add_argument("--probe-every", type=int, default=0, metavar="N", help=_help("probe_every"))
    p.add_argument("--probe-task-sequences", type=int, default=8, metavar="N",
                   help=_help("probe_task_sequences"))
    p.add_argument("--probe-english-sequences", type=int, default=4, metavar="N",
                   help=_help("probe_english_sequences"))
    p.add_argument("--holdout", type=int, default=0, metavar="N", help=_help("holdout"))
    p.add_argument("--keep-test", default="all", choices=("all", "none"),
                   help=_help("keep_test"))
    p.add_argument("--mixed-precision", default="no", choices=("no", "fp16", "bf16"),
                   help=_help("mixed_precision"))
    p.add_argument("--cpu", action="store_true", help=_help("cpu"))
    p.add_argument("--no-retention", dest="retention", action="store_false",
                   help="skip measuring retained pretrained capability")
    p.add_argument("--retention-limit", type=int, help=_help("retention_limit"))
    p.add_argument("--inference-rounds", type=int, help=_help("inference_rounds"))
    p.add_argument("--out", default="runs/latest", help=_help("out"))
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    _add_stream_options(p)
    p.add_argument("--method", default="seq-lora", help=_help("method"))
    p.add_argument("--seed", type=int, default=0, help=_help("seed"))
    p.add_argument("--head", choices=HEADS, help=_help("head"))
    p.add_argument("--lr", type=float, help=_help("lr"))
    p.add_argument("--head-lr", type=float, help=_help("head_lr"))
    p.add_argument("--head-set", dest="head_options", type=_option, action="append",
                   default=[], metavar="KEY=VALUE",
                   help="a head option, e.g. --head-set projection=2000 (repeatable; "
                        "`retain list` shows them)")
    p.add_argument("--set", dest="options", type=_option, action="append", default=[],
                   metavar="KEY=VALUE", help="a method option, e.g. --set rank=16 (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run whose checkpoint is in --out")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run config of the command line; with ``--config FILE``, the file's keys, then every
    option given on the command line over them."""
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    values: dict[str, Any] = {k: v for k, v in vars(args).items() if k in fields}
    values["method_options"] = dict(getattr(args, "options", []))
    values["head_options"] = dict(getattr(args, "head_options", []))
    if args.data:
        values["benchmark"] = None
    if getattr(args, "config", None) is None:
        return RunConfig(**values)
    written = RunConfig.from_toml(args.config).to_dict()
    defaults = vars(build_parser().parse_args([args.command]))
    given = {k: v for k, v in values.items() if k in defaults and v != defaults[k]
             or k.endswith("_options") and v}
    if args.data:
        given["benchmark"] = None
    for table in ("method_options", "head_options"):
        given[table] = {**written[table], **given.get(table, {})}
    return RunConfig(**{**written, **given})


# --- argument errors, answered before torch is imported and before any work ----------------
def _check_run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    config.check()
    checks.check_run_out(config.out, args.resume, args.overwrite)


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
    for name in filter(None, (n.strip() for n in names)):
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


# the training options a later session (`retain learn`) may set for itself
LEARN_OPTIONS = {"steps": int, "epochs": int, "lr": float, "batch_size": int,
                 "scheduler": str, "warmup_steps": int, "warmup_ratio": float,
                 "probe_every": int}


def _check_learn(args: argparse.Namespace) -> None:
    checks.check_run_folder(args.directory)
    if args.classes_per_task is not None and args.classes_per_task < 1:
        raise RetainError(f"--classes-per-task must be 1 or more, got {args.classes_per_task}")
    if not os.path.exists(os.path.expanduser(args.data)):
        raise RetainError(f"data file '{args.data}' does not exist")


def _check_export(args: argparse.Namespace) -> None:
    checks.check_run_folder(args.directory)
    checks.check_export_to(args.directory, args.to, args.overwrite)


def _check_frontier(args: argparse.Namespace) -> None:
    checks.check_folder(args.out, "--out")
    if args.config:
        read_sessions(args.config)


CHECKS = {"run": _check_run, "sweep": _check_sweep, "frontier": _check_frontier,
          "compare": _check_compare, "predict": _check_predict, "evaluate": _check_evaluate,
          "export": _check_export}


def cmd_run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from retain.api import run

    config = config_from_args(args)
    sessions = read_sessions(args.config) if args.config else None  # the later sessions
    results = run(config, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                  sessions=sessions)
    if not PartialState().is_main_process:
        return 0
    print(format_table(results))
    print(time_line(results))
    print(f"results: {os.path.join(config.out, 'results.json')}")
    return 0


def cmd_learn(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from retain.engine import learn

    options = {k: getattr(args, k) for k in (*LEARN_OPTIONS, "retention")
               if getattr(args, k) is not None}
    results, _ = learn(args.directory, args.data, args.classes_per_task,
                       progress=not args.quiet, method=args.method, backbone=args.backbone,
                       kind=args.kind, options=options)
    if not PartialState().is_main_process:
        return 0
    print(format_table(results))
    print(time_line(results))
    print(f"results: {os.path.join(args.directory, 'results.json')}")
    return 0


def _grid(text: str) -> tuple[str, list[str]]:
    key, value = _option(text)
    return key, [v.strip() for v in value.split(",") if v.strip()]


def cmd_sweep(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from retain.sweep import sweep

    frontier = sweep(config_from_args(args), dict(args.grid), args.baseline,
                     progress=not args.quiet)
    if not PartialState().is_main_process:
        return 0
    lm = "final_perplexity" in frontier["points"][0]
    cols = ("plasticity", "final_perplexity" if lm else "final_accuracy", "forgetting",
            "retention_worst_perplexity" if lm else "retention_min", "trainable_parameters")
    print(f"{'point':<24}" + "".join(f"{c:>28}" for c in cols))
    for row in frontier["points"] + frontier["baselines"]:
        print(f"{row['label']:<24}" + "".join(f"{format_value(row.get(c)):>28}" for c in cols))
    _print_envelopes(frontier.get("envelopes", []))
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

    from retain.comparison import compare, compare_runs, method_names
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
        comparison = compare(config, method_names(args.methods, config.resolved().kind),
                             args.seeds, progress=not args.quiet)
    if PartialState().is_main_process:
        header, rows = table(comparison)
        keep = [0, 1] + [i for i, h in enumerate(header) if h in (
            "final accuracy", "final perplexity", "forgetting", "plasticity",
            "retention, lowest ratio", "retention KL from untouched (nats/token)",
            "stored parameters", "wall seconds (the four above)")]
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
    from retain.trained import load, write_rows

    preds = load(args.directory).predict(args.data, args.batch_size, args.task)
    text = write_rows(preds, args.out)
    if text is not None:
        sys.stdout.write(text)
    else:
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from retain.evaluation import summary_line, write_evaluation
    from retain.trained import load

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
    from retain.trained import load

    print(f"wrote {load(args.directory).export(args.to, overwrite=args.overwrite)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from retain.reporting import build_report

    run = Path(args.directory)
    if (run / "results.json").is_file():  # one run: its report in RUN/report/
        from retain.comparison import compare_runs

        compare_runs([run], run / "report")
        args.directory = run / "report"
    for path in build_report(args.directory)[:2]:
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
        print(f"  {name:<14} {benchmark.description} [{benchmark.kind}]")
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
        lines = [f"{name}: {info.description}",
                 f"default head: {info.default_head}; default --lr: {info.default_lr:g}"
                 + (f" (language models: {info.lm_lr:g})" if info.lm_lr is not None else "")
                 + "; "
                 f"serves: {', '.join(info.kinds)}", "options (--set KEY=VALUE):"]
        if info.lm_options:
            lines.insert(-1, "defaults on language models: " + ", ".join(
                f"{k}={option_text(v)}" for k, v in info.lm_options.items()))
        return lines + [f"  {line}" for line in cls.config_class.describe()] \
            if cls.config_class.describe() else lines + ["  none"]
    if name in HEADS:
        from retain.methods.heads import HEAD_CONFIGS

        options = HEAD_CONFIGS[name].describe() if name in HEAD_CONFIGS else ["none"]
        return [f"{name}: {HEADS[name]}", "options (--head-set KEY=VALUE):",
                *[f"  {line}" for line in options]]
    raise RetainError(f"'{name}' is neither a method nor a head: `retain list` shows them")


def build_parser() -> argparse.ArgumentParser:
    from retain import __version__

    parser = argparse.ArgumentParser(
        prog="retain", description="Teach a pretrained transformer a stream of tasks, one after "
        "another and without keeping old data, and measure what it learns, forgets and costs. "
        "Start with `retain run` (MiniLM on the WordNet benchmark); `retain list` shows the "
        "methods, heads, benchmarks and backbones.")
    parser.add_argument("--version", action="version", version=f"retain {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="run one method on a continual stream",
                       formatter_class=_Defaults)
    _add_run_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (its "
                   "checkpoint and results.json; nothing else there)")
    p.add_argument("--config", metavar="TOML", help="a run written down: every option a key "
                   "(`batch_size` or `batch-size`; [method_options] and [head_options] tables), "
                   "as each run writes its resolved DIR/config.toml; options given here win; "
                   "its [[sessions]] (written by `retain learn`) are learnt after the run")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("sweep", help="run a grid of run and method options and write the "
                       "plasticity-retention frontier (JSON and PNG)", formatter_class=_Defaults)
    _add_run_options(p)
    p.add_argument("--grid", type=_grid, action="append", required=True, metavar="KEY=V1,V2",
                   help="a run option (lr, steps, seed, ...) or a method option and its "
                        "values, e.g. --grid lr=3e-4,1e-3 --grid rank=8,32 (repeatable; the "
                        "first key gives the plot's lines)")
    p.add_argument("--baseline", action="append", default=[], metavar="RESULTS_JSON",
                   help="a results.json to plot beside the grid (e.g. seq-lora's)")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("frontier", help="from finished language-model runs with curves "
                       "(--probe-every): each configuration's envelope of learning against "
                       "forgetting and the figures at matched amounts of learning")
    p.add_argument("runs", nargs="+", metavar="DIR", help="run or sweep folders (every "
                   "results.json under them), or results.json files")
    p.add_argument("--reference", default="seq-ft", help="the configuration whose best "
                   "perplexity the matched points multiply")
    p.add_argument("--out", required=True, help="folder for frontier.json and frontier.png")
    p.set_defaults(func=cmd_frontier)
    p = sub.add_parser("compare", help="run several methods on the same stream and seeds, "
                       "then write comparison.json and a report with figures",
                       formatter_class=_Defaults)
    _add_stream_options(p)
    p.add_argument("--methods", default="all",
                   help="comma-separated method names, or 'all' (default)")
    p.add_argument("--seeds", type=_ints, default=[0], help="comma-separated seeds")
    p.add_argument("--head", choices=HEADS, help="one head scheme for every method (default: "
                   "each method's own; joint takes only growing)")
    p.add_argument("--runs", nargs="+", metavar="DIR", help="compare these finished runs "
                   "(`retain run --out` folders) instead of running: no training, and no "
                   "option but --out and --overwrite")
    p.add_argument("--overwrite", action="store_true", help="with --runs: replace the "
                   "comparison in --out")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("report", help="rebuild the report of a comparison from its saved "
                       "results (no training); of a run's folder, that run's report in "
                       "RUN/report/")
    p.add_argument("directory", help="the --out directory of `retain compare` or `retain run`")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("predict", help="predict with a finished run: class and score per row "
                       "(language models: perplexity per row)", formatter_class=_Defaults)
    p.add_argument("directory", help="the --out directory of `retain run`")
    p.add_argument("--data", required=True, help="CSV or JSON Lines file with a `text` column "
                   "(or `image` paths), or an image folder")
    p.add_argument("--out", help="a .csv or .jsonl file for the predictions (default: CSV on "
                   "standard output)")
    p.add_argument("--batch-size", type=int, help="items per forward (default: the run's)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (never "
                   "the --data input)")
    p.add_argument("--task", type=int, help="the task (1, 2, ...) every row belongs to: choose "
                   "among its classes only, with its own adapter where the method keeps one "
                   "(task-incremental prediction; default: among every class learnt)")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("evaluate", help="score a labelled file with a finished run: accuracy "
                       "overall, per class and per task, and the confusion matrix (language "
                       "models: perplexity overall and per task)", formatter_class=_Defaults)
    p.add_argument("directory", help="the --out directory of `retain run`")
    p.add_argument("--data", required=True, help="CSV or JSON Lines file with `text` (or "
                   "`image` paths) and `label` columns (language models: `text` and an "
                   "optional `task`)")
    p.add_argument("--out", help="a folder for evaluation.json, confusion.csv and confusion.png "
                   "(default: the JSON on standard output)")
    p.add_argument("--batch-size", type=int, help="items per forward (default: the run's)")
    p.add_argument("--task", type=int, help="the task (1, 2, ...) every row belongs to: "
                   "task-incremental prediction, as `retain predict --task`")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("learn", help="train the tasks of a new file into a finished run (a "
                       "later session): its method, head and classes go on; old tasks are "
                       "scored again from their kept test splits", formatter_class=_Defaults)
    p.add_argument("directory", help="the --out directory of a finished `retain run`")
    p.add_argument("--data", required=True, help="the new tasks: a file like the run's (its "
                   "`task` column, else --classes-per-task, else one task), or an image folder")
    p.add_argument("--classes-per-task", type=int, help="classes per new task when the file "
                   "has no `task` column (default: all its classes in one task)")
    for flag in ("method", "backbone", "kind"):
        p.add_argument("--" + flag, help=f"refuse unless the run's {flag} is this one")
    for name, typ in LEARN_OPTIONS.items():  # this session's training, over the run's
        p.add_argument("--" + name.replace("_", "-"), type=typ,
                       help=_help(name) + " (this session; default: the run's)")
    p.add_argument("--no-retention", dest="retention", action="store_const", const=False,
                   help="skip measuring retained pretrained capability (this session)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_learn)
    p = sub.add_parser("export", help="write a finished run as a model folder that plain "
                       "transformers (and peft) load, with its head as safetensors")
    p.add_argument("directory", help="the --out directory of `retain run`")
    p.add_argument("--to", required=True, help="the folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace --to if it exists")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("list", help="methods, heads, benchmarks, backbones; with a name, its "
                       "options")
    p.add_argument("name", nargs="?", help="a method or head whose options to show")
    p.set_defaults(func=cmd_list)
    return parser


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
        return args.func(args)
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
