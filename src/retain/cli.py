"""Command line: ``retain run``, ``sweep``, ``compare``, ``report`` and ``list``. Thin: parse,
build a config, call the API."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from typing import Any

from retain.config import HEADS, SCENARIOS, RunConfig
from retain.errors import RetainError
from retain.profiles import PROFILE_NAMES
from retain.summary import format_table, format_value

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", category=FutureWarning)


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
    p.add_argument("--kind", choices=("classification", "lm"), help=_help("kind"))
    p.add_argument("--scenario", default="class", choices=SCENARIOS, help=_help("scenario"))
    p.add_argument("--classes-per-task", type=int, help=_help("classes_per_task"))
    for name in ("cap", "test_cap", "tasks", "steps"):
        p.add_argument("--" + name.replace("_", "-"), type=int, help=_help(name))
    p.add_argument("--class-order", type=_ints, help=_help("class_order") + ", e.g. 3,0,2,1")
    p.add_argument("--class-order-seed", type=int, help=_help("class_order_seed"))
    p.add_argument("--backbone", help=_help("backbone") + " (default minilm)")
    p.add_argument("--pooling", default="auto", help=_help("pooling"))
    for name, typ in (("epochs", int), ("batch_size", int), ("max_length", int)):
        p.add_argument("--" + name.replace("_", "-"), type=typ, help=_help(name))
    p.add_argument("--weight-decay", type=float, default=0.0, help=_help("weight_decay"))
    p.add_argument("--mixed-precision", default="no", choices=("no", "fp16", "bf16"),
                   help=_help("mixed_precision"))
    p.add_argument("--cpu", action="store_true", help=_help("cpu"))
    p.add_argument("--no-retention", dest="retention", action="store_false",
                   help="skip measuring retained pretrained capability")
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
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    values: dict[str, Any] = {k: v for k, v in vars(args).items() if k in fields}
    values["method_options"] = dict(getattr(args, "options", []))
    values["head_options"] = dict(getattr(args, "head_options", []))
    if args.data:
        values["benchmark"] = None
    return RunConfig(**values)


def cmd_run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from retain.engine import run

    results = run(config_from_args(args), resume=args.resume, progress=not args.quiet)
    if not PartialState().is_main_process:
        return 0
    print(format_table(results))
    print(f"results: {os.path.join(args.out, 'results.json')}")
    return 0


def _grid(text: str) -> tuple[str, list[str]]:
    key, value = _option(text)
    return key, [v.strip() for v in value.split(",") if v.strip()]


def cmd_sweep(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from retain.sweep import sweep

    keys = [k for k, _ in args.grid]
    if len(set(keys)) != len(keys):
        raise RetainError(f"each --grid key may appear once, got {', '.join(keys)}")
    frontier = sweep(config_from_args(args), dict(args.grid), args.baseline,
                     progress=not args.quiet)
    if not PartialState().is_main_process:
        return 0
    cols = ("plasticity", "final_accuracy", "forgetting", "retention_min", "trainable_parameters")
    print(f"{'point':<24}" + "".join(f"{c:>22}" for c in cols))
    for row in frontier["points"] + frontier["baselines"]:
        print(f"{row['label']:<24}" + "".join(f"{format_value(row[c]):>22}" for c in cols))
    print(f"frontier: {os.path.join(args.out, 'frontier.json')} and frontier.png")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from retain.compare import compare, method_names
    from retain.report import table

    config = config_from_args(args)
    comparison = compare(config, method_names(args.methods, config.resolved().kind), args.seeds,
                         progress=not args.quiet)
    if PartialState().is_main_process:
        header, rows = table(comparison)
        keep = [0, 1] + [i for i, h in enumerate(header) if h in (
            "final accuracy", "final perplexity", "forgetting", "plasticity",
            "retention, lowest ratio", "retention KL from untouched (nats/token)",
            "stored parameters", "wall seconds")]
        for cells in [[(h, False) for h in header]] + rows:
            print("  ".join(f"{cells[i][0]:>18}" for i in keep))
        print(f"report: {os.path.join(args.out, 'report.html')} (and report.md)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from retain.report import build_report

    for path in build_report(args.directory)[:2]:
        print(f"wrote {path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from retain.backbones import PACKAGED, TINY
    from retain.data import BENCHMARKS
    from retain.methods import REGISTRY

    print("methods:")
    for name, cls in REGISTRY.items():
        print(f"  {name:<14} {cls.description} [head: {cls.default_head}; "
              f"{', '.join(cls.kinds)}]")
    from retain.config import HEADS
    from retain.methods.heads import HEAD_CONFIGS

    print("heads (--head NAME, options --head-set KEY=VALUE):")
    for name in HEADS:
        print(f"  {name}")
        for line in HEAD_CONFIGS[name].describe() if name in HEAD_CONFIGS else ():
            print(f"      {line}")
    print("benchmarks:")
    for name, benchmark in BENCHMARKS.items():
        print(f"  {name:<14} {benchmark.description} [{benchmark.kind}]")
    print("backbones:")
    for name, (_, description) in PACKAGED.items():
        print(f"  {name:<14} {description}")
    for name, description in TINY.items():
        print(f"  {name:<14} {description}")
    print("profiles: " + ", ".join(PROFILE_NAMES))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retain", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run one method on a continual stream")
    _add_run_options(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("sweep", help="run a grid of method options and write the plasticity-"
                       "retention frontier (JSON and PNG)")
    _add_run_options(p)
    p.add_argument("--grid", type=_grid, action="append", required=True, metavar="KEY=V1,V2",
                   help="a method option and its values, e.g. --grid r=8,32,64 (repeatable; "
                        "the first key gives the plot's lines)")
    p.add_argument("--baseline", action="append", default=[], metavar="RESULTS_JSON",
                   help="a results.json to plot beside the grid (e.g. seq-lora's)")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("compare", help="run several methods on the same stream and seeds, "
                       "then write comparison.json and a report with figures")
    _add_stream_options(p)
    p.add_argument("--methods", default="all",
                   help="comma-separated method names, or 'all' (default)")
    p.add_argument("--seeds", type=_ints, default=[0], help="comma-separated seeds (default 0)")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("report", help="rebuild the report of a comparison from its saved "
                       "results (no training)")
    p.add_argument("directory", help="the --out directory of `retain compare`")
    p.set_defaults(func=cmd_report)
    sub.add_parser("list", help="methods and benchmarks").set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RetainError as e:
        print(f"retain: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("retain: interrupted; the last finished task is checkpointed (use --resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
