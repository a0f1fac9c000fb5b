"""The command line's arguments: every command's parser, and a run config from parsed
arguments (``--config FILE`` under the options given). Light: no torch, so that bad
arguments are answered before any work (``retain.cli`` checks and runs them)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from retain.config import HEADS, RunConfig
from retain.kinds import KINDS, SCENARIOS
from retain.profiles import PROFILE_NAMES


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
    return f.metadata["help"].replace("%", "%%")  # argparse formats help with %


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


def _grid(text: str) -> tuple[str, list[str]]:
    key, value = _option(text)
    return key, [v.strip() for v in value.split(",") if v.strip()]


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
    p.add_argument("--pooling", help=_help("pooling"))
    p.add_argument("--feature-layers", type=int, metavar="K", help=_help("feature_layers"))
    for name, typ in (("epochs", int), ("batch_size", int), ("max_length", int)):
        p.add_argument("--" + name.replace("_", "-"), type=typ, help=_help(name))
    p.add_argument("--weight-decay", type=float, help=_help("weight_decay"))
    p.add_argument("--scheduler", choices=("constant", "linear", "cosine"),
                   help=_help("scheduler"))
    p.add_argument("--warmup-steps", type=int, default=0, help=_help("warmup_steps"))
    p.add_argument("--warmup-ratio", type=float, help=_help("warmup_ratio"))
    p.add_argument("--grad-accumulation", type=int, default=1, help=_help("grad_accumulation"))
    p.add_argument("--probe-every", type=int, default=0, metavar="N", help=_help("probe_every"))
    p.add_argument("--probe-task-sequences", type=int, default=8, metavar="N",
                   help=_help("probe_task_sequences"))
    p.add_argument("--probe-english-sequences", type=int, default=4, metavar="N",
                   help=_help("probe_english_sequences"))
    p.add_argument("--holdout", type=int, default=0, metavar="N", help=_help("holdout"))
    p.add_argument("--validation", type=float, default=0.0, metavar="FRACTION",
                   help=_help("validation"))
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
    p.add_argument("--preset", help=_help("preset"))
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


# the training options a later session (`retain learn`) may set for itself
LEARN_OPTIONS = {"steps": int, "epochs": int, "lr": float, "batch_size": int,
                 "scheduler": str, "warmup_steps": int, "warmup_ratio": float,
                 "probe_every": int}


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


def build_parser() -> argparse.ArgumentParser:
    from retain import __version__

    parser = argparse.ArgumentParser(
        prog="retain", description="Teach a pretrained transformer a stream of tasks, one after "
        "another and without keeping old data, and measure what it learns, forgets and costs. "
        "Start with `retain run` (MiniLM on the WordNet benchmark); `retain list` shows the "
        "methods, heads, benchmarks and backbones.")
    parser.add_argument("--version", action="version", version=f"retain {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_training_commands(sub)
    _add_comparing_commands(sub)
    _add_using_commands(sub)
    return parser


def _add_training_commands(sub) -> None:
    """``run``, ``sweep`` and ``frontier``."""
    p = sub.add_parser("run", help="run one method on a continual stream",
                       formatter_class=_Defaults)
    _add_run_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (its "
                   "checkpoint and results.json; nothing else there)")
    p.add_argument("--config", metavar="TOML", help="a run written down: every option a key "
                   "(`batch_size` or `batch-size`; [method_options] and [head_options] tables), "
                   "as each run writes its resolved DIR/config.toml; options given here win; "
                   "its [[sessions]] (written by `retain learn`) are learnt after the run")
    p = sub.add_parser("sweep", help="run a grid of run and method options and write the "
                       "plasticity-retention frontier (JSON and PNG)", formatter_class=_Defaults)
    _add_run_options(p)
    p.add_argument("--grid", type=_grid, action="append", required=True, metavar="KEY=V1,V2",
                   help="a run option (lr, steps, seed, ...) or a method option and its "
                        "values, e.g. --grid lr=3e-4,1e-3 --grid rank=8,32 (repeatable; the "
                        "first key gives the plot's lines)")
    p.add_argument("--baseline", action="append", default=[], metavar="RESULTS_JSON",
                   help="a results.json to plot beside the grid (e.g. seq-lora's)")
    p = sub.add_parser("frontier", help="from finished language-model runs with curves "
                       "(--probe-every): each configuration's envelope of learning against "
                       "forgetting and the figures at matched amounts of learning")
    p.add_argument("runs", nargs="+", metavar="DIR", help="run or sweep folders (every "
                   "results.json under them), or results.json files")
    p.add_argument("--reference", default="seq-ft", help="the configuration whose best "
                   "perplexity the matched points multiply")
    p.add_argument("--out", required=True, help="folder for frontier.json and frontier.png")


def _add_comparing_commands(sub) -> None:
    """``compare``."""
    p = sub.add_parser("compare", help="run several methods on the same stream and seeds, "
                       "then write comparison.json and a report with figures",
                       formatter_class=_Defaults)
    _add_stream_options(p)
    p.add_argument("--methods", default="all",
                   help="comma-separated method names, each optionally with one of its "
                        "presets as METHOD:PRESET (plate:authors), or 'all' (default)")
    p.add_argument("--seeds", type=_ints, default=[0], help="comma-separated seeds")
    p.add_argument("--head", choices=HEADS, help="one head scheme for every method (default: "
                   "each method's own; joint takes only growing)")
    p.add_argument("--runs", nargs="+", metavar="DIR", help="compare these finished runs "
                   "(`retain run --out` folders) instead of running: no training, and no "
                   "option but --out and --overwrite")
    p.add_argument("--overwrite", action="store_true", help="with --runs: replace the "
                   "comparison in --out")


def _add_using_commands(sub) -> None:
    """``report``, ``predict``, ``evaluate``, ``learn``, ``export`` and ``list``: what is done
    with finished runs."""
    p = sub.add_parser("report", help="rebuild the report of a comparison from its saved "
                       "results (no training); of a run's folder, that run's report in "
                       "RUN/report/")
    p.add_argument("directory", help="the --out directory of `retain compare` or `retain run`")
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
    _add_learn_command(sub)
    p = sub.add_parser("export", help="write a finished run as a model folder that plain "
                       "transformers (and peft) load, with its head as safetensors")
    p.add_argument("directory", help="the --out directory of `retain run`")
    p.add_argument("--to", required=True, help="the folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace --to if it exists")
    p = sub.add_parser("list", help="methods, heads, benchmarks, backbones; with a name, its "
                       "options")
    p.add_argument("name", nargs="?", help="a method or head whose options to show")


def _add_learn_command(sub) -> None:
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
