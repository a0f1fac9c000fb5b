"""Run configuration: the run config dataclass (names and numbers, what is saved) and the
:class:`Plan` it resolves into (the objects those names stand for), once, in ``plan()``."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retain.catalogue import HEADS as HEAD_DESCRIPTIONS
from retain.checks import check_folder
from retain.config_toml import config_values, read_toml, toml_key, toml_value
from retain.errors import RetainError
from retain.kinds import CLASSIFICATION, KINDS, Kind, get_kind
from retain.profiles import PROFILE_NAMES, Profile, pick_profile

if TYPE_CHECKING:
    from retain.backbones import Backbone
    from retain.data.stream import Benchmark, Stream
    from retain.methods.base import ContinualMethod, MethodConfig
    from retain.methods.heads import RunHead

HEADS = tuple(HEAD_DESCRIPTIONS)  # retain.methods.heads.REGISTRY builds them


# counts whose 0 means all (or, for steps, that epochs decide): resolved to None
COUNTS = ("cap", "test_cap", "tasks", "steps")
# options whose None means "not given": the preset's value, else this (filled by plan())
UNSET = {"pooling": "auto", "feature_layers": 1, "weight_decay": 0.0, "scheduler": "constant",
         "warmup_ratio": 0.0}

# the smallest value of each count option, and a hint where one helps
_AT_LEAST = {"epochs": (1, " (to train nothing, use --method frozen-ncm)"),
             "batch_size": (1, ""), "max_length": (2, " (a sequence needs two tokens)"),
             "classes_per_task": (1, ""), "retention_limit": (1, ""),
             "inference_rounds": (0, " (0 skips the measurement)"),
             **{name: (0, " (0 keeps all)") for name in COUNTS},
             "seed": (0, ""), "class_order_seed": (0, ""), "warmup_steps": (0, ""),
             "grad_accumulation": (1, ""), "probe_every": (0, " (0: no curves)"),
             "probe_task_sequences": (1, ""), "probe_english_sequences": (1, ""),
             "feature_layers": (1, ""),
             "holdout": (0, " (0 holds nothing out)")}


@dataclass
class RunConfig:
    """Everything one run needs; saved, fully resolved, with its results."""

    method: str = field(default="seq-lora", metadata={"help": "method name (`retain list`)"})
    benchmark: str | None = field(
        default="wordnet45", metadata={"help": "built-in benchmark; None when `data` is given"})
    data: str | None = field(
        default=None, metadata={"help": "CSV or JSON Lines file (" + "; ".join(
            f"--kind {k.name}: {k.columns}" for k in KINDS.values())
            + "), or an image folder with one sub-folder per class"})
    profile: str = field(default="quick", metadata={"help": "smoke, quick or full"})
    scenario: str = field(default="class", metadata={
        "help": "class, task or domain incremental (classification streams)"})
    kind: str | None = field(default=None, metadata={
        "help": "task kind: classification or lm (default: the benchmark's; user files: "
                "classification, lm for a text file with a `task` column)"})
    classes_per_task: int | None = field(
        default=None, metadata={"help": "classes per task (default: the benchmark's or the "
                                        "profile's, else 5)"})
    cap: int | None = field(default=None, metadata={
        "help": "items kept per class (lm: training sequences per task); default: the "
                "profile's; 0 keeps all"})
    test_cap: int | None = field(default=None, metadata={
        "help": "lm: test sequences kept per task (default: the profile's; 0 keeps all)"})
    tasks: int | None = field(default=None, metadata={
        "help": "number of tasks kept (default: the profile's, else all)"})
    class_order: list[int] | None = field(
        default=None, metadata={"help": "explicit class order (indices of the sorted labels)"})
    class_order_seed: int | None = field(
        default=None, metadata={"help": "seed of the class-order permutation (wordnet45: 1993)"})
    seed: int = field(default=0, metadata={"help": "training seed (shuffling, init, dropout)"})
    backbone: str | None = field(
        default=None, metadata={"help": "packaged name (minilm), local path or hub id"})
    pooling: str | None = field(default=None, metadata={
        "help": "auto, mean, cls or last (default: auto, or the preset's)"})
    feature_layers: int | None = field(default=None, metadata={
        "help": "the head reads the last K hidden states, each pooled and L2-normalised (LayUP; "
                "default: 1, the pooled last state, or the preset's)"})
    head: str | None = field(default=None, metadata={
        "help": "task-heads, growing, prototypes, analytic or aligned (default: the method's)"})
    head_options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "overrides of the head's config fields (analytic, aligned)"})
    epochs: int | None = field(default=None, metadata={"help": "override of the profile's epochs"})
    steps: int | None = field(default=None, metadata={
        "help": "optimiser steps per task in place of epochs (default: the profile's; 0: "
                "epochs decide)"})
    batch_size: int | None = field(default=None, metadata={"help": "override of the profile"})
    max_length: int | None = field(default=None, metadata={"help": "override of the profile"})
    lr: float | None = field(default=None, metadata={"help": "learning rate (default: method's)"})
    head_lr: float | None = field(default=None, metadata={
        "help": "learning rate of linear heads and of the task-local classifier of heads built "
                "from statistics (default: 0.05 for analytic, else lr)"})
    weight_decay: float | None = field(default=None, metadata={
        "help": "AdamW weight decay (default: 0, or the preset's)"})
    scheduler: str | None = field(default=None, metadata={
        "help": "learning-rate schedule within each task: constant, linear or cosine "
                "(transformers.get_scheduler), after the warm-up (default: constant, or the "
                "preset's)"})
    warmup_steps: int = field(default=0, metadata={
        "help": "optimiser steps of linear warm-up at the start of each task"})
    warmup_ratio: float | None = field(default=None, metadata={
        "help": "warm-up as a fraction of each task's optimiser steps (when --warmup-steps "
                "is 0; default: 0, or the preset's)"})
    grad_accumulation: int = field(default=1, metadata={
        "help": "batches whose gradients make one optimiser step (accelerate)"})
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16 (accelerate)"})
    cpu: bool = field(default=False, metadata={"help": "force the CPU even if a GPU is present"})
    retention: bool = field(
        default=True, metadata={"help": "measure retained pretrained capability at the end"})
    retention_limit: int | None = field(
        default=None, metadata={"help": "pairs per similarity set (None: all; smoke: 60)"})
    inference_rounds: int | None = field(default=None, metadata={
        "help": "timed rounds of the inference measurement, at least; more (up to 100) while "
                "they took under 0.1 s each asked for (None: 2 to 30, within 2% of the run's "
                "time; 0: no measurement, and no inference figures)"})
    method_options: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "overrides of the method's config fields"})
    preset: str | None = field(default=None, metadata={
        "help": "named settings of the method, the paper's or its authors' code's (`retain "
                "list METHOD` lists them): each applies where this run leaves a field unset, "
                "so what you give wins"})
    probe_every: int = field(default=0, metadata={
        "help": "language modelling: every N optimiser steps (and at each task's end), the "
                "current task's test perplexity and every English probe's ratio to the "
                "untouched model, on small fixed subsets (retain.curves); 0: never"})
    probe_task_sequences: int = field(default=8, metadata={
        "help": "--probe-every: the current task's test (and held-out) sequences each point "
                "scores"})
    probe_english_sequences: int = field(default=4, metadata={
        "help": "--probe-every: sequences of each English probe each point scores (at most "
                "the probe's size: lmfar 32 Shakespeare chunks, 16 of each lm3 split)"})
    holdout: int = field(default=0, metadata={
        "help": "language modelling: training sequences of each task held out and never "
                "trained on; --probe-every scores them beside the test subset, so that a rate "
                "or a default is chosen on them and not on the test split (0: none)"})
    validation: float = field(default=0.0, metadata={
        "help": "classification: the fraction of each task's training items, per class, held "
                "out and never trained on (the same items whatever the training seed); each "
                "task's validation split is scored beside its test split, so that a sweep "
                "chooses on it and not on the test split (0: none)"})
    keep_test: str = field(default="all", metadata={
        "help": "all: keep each task's test split in the run folder, so that `retain learn` "
                "scores old tasks too; none: keep no data (later rows score new tasks only)"})
    out: str = field(default="runs/latest", metadata={"help": "output directory"})

    def resolved(self) -> RunConfig:
        """Every default that depends on the benchmark, the task kind, the profile or the
        method filled in: the plan's names and numbers, what ``results.json`` saves."""
        return self.plan().config

    def plan(self) -> Plan:
        """The run resolved into objects (:class:`~retain.config.Plan`): every default that
        depends on the benchmark, the task kind, the profile or the method filled in, here
        and nowhere else, and the kind, profile, method, head and benchmark it names."""
        from retain.data import BENCHMARKS
        from retain.methods import get_method_class
        from retain.methods.heads import REGISTRY, RunHead, head_lr, head_options

        self.check()  # the benchmark, the kind and the method's kinds too
        if self.preset is not None:  # its values into the fields; its name kept
            plan = self._with_preset().plan()
            return dataclasses.replace(plan, config=dataclasses.replace(plan.config,
                                                                        preset=self.preset))
        cls = get_method_class(self.method)
        bench = None if self.data is not None else BENCHMARKS[self.benchmark]
        kind = get_kind(self._kind())
        prof = bench.profile(self.profile) if bench else pick_profile(kind.profiles,
                                                                      self.profile)
        head = kind.head(self.head, cls.info.default_head, HEADS)
        scenario = kind.scenario(self.scenario)
        method_config = cls.config_class.from_options(
            {**cls.info.options(kind), **self.method_options}, cls.name)
        method_config.check_head(head)
        if self.weight_decay and cls.info.no_weight_decay:
            raise RetainError(f"{cls.name} takes no weight decay ({cls.info.no_weight_decay}): "
                              "drop --weight-decay")
        lr = self.lr if self.lr is not None else cls.info.lr(kind)
        image_folder = bool(self.data) and os.path.isdir(os.path.expanduser(self.data))
        config = dataclasses.replace(
            self,
            benchmark=None if self.data else self.benchmark,
            kind=kind.name,
            scenario=scenario,
            backbone=self.backbone or ("tiny-vit" if image_folder else prof.backbone),
            head=head,
            classes_per_task=kind.classes_per_task(
                self.classes_per_task or prof.classes_per_task
                or (bench and bench.classes_per_task) or 5),
            cap=_cap(self.cap, prof.cap),
            test_cap=_cap(self.test_cap, prof.test_cap),
            tasks=_cap(self.tasks, prof.tasks),
            steps=_cap(self.steps, prof.steps),
            epochs=self.epochs if self.epochs is not None else prof.epochs,
            batch_size=self.batch_size if self.batch_size is not None else prof.batch_size,
            max_length=self.max_length if self.max_length is not None else prof.max_length,
            lr=lr,
            **{k: v if (v := getattr(self, k)) is not None else default
               for k, default in UNSET.items()},
            head_options=head_options(head, self._head_defaults(head, prof)),
            head_lr=self.head_lr if self.head_lr is not None else head_lr(head, lr),
            class_order_seed=kind.class_order_seed(self._order_seed(bench)),
            inference_rounds=(self.inference_rounds if self.inference_rounds is not None
                              else prof.inference_rounds),
            retention_limit=(self.retention_limit if self.retention_limit is not None
                             else 60 if self.profile == "smoke" else None),
            method_options=dataclasses.asdict(method_config),
        )
        return Plan(config, kind, config.run_profile(), cls, method_config,
                    RunHead(head, REGISTRY[head], config.head_options, config.head_lr), bench)

    def _with_preset(self) -> RunConfig:
        """This config with its preset's values where it leaves a field unset (None; method and
        head options: the preset's under the given ones); ``preset`` then records only its
        name (the values are in the fields)."""
        from retain.catalogue import METHODS

        given = METHODS[self.method].presets[self.preset].fields
        changes: dict[str, Any] = {"preset": None}
        for key, value in given.items():
            if key in ("method_options", "head_options"):
                changes[key] = {**value, **getattr(self, key)}
            elif getattr(self, key) is None:  # not given: the preset's
                changes[key] = value
        return dataclasses.replace(self, **changes)

    def check(self) -> None:
        """Refuse a value that is wrong on its own (a name retain does not know, a number out of
        range, an output folder that is a file), from light modules only: the command line
        answers these before torch is imported and before any work. :meth:`resolved` checks
        what needs the method, the head or the data."""
        from retain.catalogue import METHODS
        from retain.data import BENCHMARKS

        self._check_types()
        if self.method not in METHODS:
            raise RetainError(f"unknown method '{self.method}': choose one of "
                              f"{', '.join(METHODS)} (`retain list`)")
        if self.data is None and self.benchmark is None:
            raise RetainError("nothing to run on: give --benchmark NAME or --data FILE")
        if self.data is None and self.benchmark not in BENCHMARKS:
            raise RetainError(f"unknown benchmark '{self.benchmark}': choose one of "
                              f"{', '.join(BENCHMARKS)} or give --data FILE")
        if self.data is not None and not os.path.exists(os.path.expanduser(self.data)):
            raise RetainError(f"data file '{self.data}' does not exist")
        if self.profile not in PROFILE_NAMES:
            raise RetainError(f"unknown profile '{self.profile}': choose one of "
                              f"{', '.join(PROFILE_NAMES)}")
        for name, value, choices in (("kind", self.kind, (None, *KINDS)),
                                     ("keep-test", self.keep_test, ("all", "none")),
                                     ("scheduler", self.scheduler,
                                      (None, "constant", "linear", "cosine")),
                                     ("head", self.head, (None, "none", *HEADS)),
                                     ("mixed-precision", self.mixed_precision,
                                      ("no", "fp16", "bf16"))):
            if value not in choices:
                raise RetainError(f"unknown --{name} '{value}': choose one of "
                                  f"{', '.join(c for c in choices if c not in (None, 'none'))}")
        self._check_numbers()
        if self.inference_rounds == 1:
            raise RetainError("--inference-rounds must be 0 (no measurement) or 2 or more (the "
                              "spread needs two), got 1")
        if self.class_order is not None and (len(set(self.class_order)) != len(self.class_order)
                                             or min(self.class_order, default=0) < 0):
            raise RetainError(f"--class-order must list distinct class indices from 0, got "
                              f"{','.join(map(str, self.class_order))}")
        kind, info = self._kind(), METHODS[self.method]
        if self.preset is not None and self.preset not in info.presets:
            raise RetainError(f"{self.method} has no preset '{self.preset}': " + (
                f"choose {', '.join(info.presets)} (`retain list {self.method}`)"
                if info.presets else "it has none; drop --preset"))
        if self.preset is not None and kind not in info.presets[self.preset].kinds:
            raise RetainError(f"{self.method}'s preset '{self.preset}' is stated for "
                              f"{', '.join(info.presets[self.preset].kinds)} streams, not "
                              f"'{kind}' ones; drop --preset")
        if kind not in info.kinds:
            raise RetainError(f"method {self.method} cannot serve '{kind}' streams ("
                              f"{info.kinds_reason}); choose another --method (`retain list`)")
        if info.own_features and (self.feature_layers or 1) > 1:
            raise RetainError(f"{self.method} {info.own_features}: drop --feature-layers")
        KINDS[kind].check_options(self)
        check_folder(self.out)

    def _check_numbers(self) -> None:
        """Rates, fractions and counts in their ranges."""
        for name, value in (("lr", self.lr), ("head-lr", self.head_lr)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise RetainError(f"--{name} must be a number 0 or more (0 trains nothing), "
                                  f"got {value}")
        ratio, decay = self.warmup_ratio or 0.0, self.weight_decay or 0.0
        if not (math.isfinite(ratio) and 0 <= ratio < 1):
            raise RetainError(f"--warmup-ratio must lie in [0, 1), got {ratio}")
        if not (math.isfinite(decay) and decay >= 0):
            raise RetainError(f"--weight-decay must be 0 or more, got {decay}")
        for name, (low, why) in _AT_LEAST.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise RetainError(f"--{name.replace('_', '-')} must be {low} or more, got "
                                  f"{value}{why}")
        if not (math.isfinite(self.validation) and 0 <= self.validation < 0.5):
            raise RetainError(f"--validation must lie in [0, 0.5) (a fraction of each task's "
                              f"training items), got {self.validation}")

    def _check_types(self) -> None:
        """Each field's value of the field's type (a config file or the Python API may give
        any value): one line naming the field and what it takes."""
        names = {"int": int, "float": (int, float), "bool": bool, "str": str,
                 "list[int]": list, "dict[str, Any]": dict}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kinds = [k.strip() for k in str(f.type).split("|")]
            if value is None and "None" in kinds:
                continue
            wanted = [names[k] for k in kinds if k in names]
            ok = any(isinstance(value, w) for w in wanted)
            if "bool" not in kinds and isinstance(value, bool) and ok:
                ok = False  # True is an int to Python, not a count or a rate
            if wanted and not ok:
                what = " or ".join(k for k in kinds if k != "None")
                raise RetainError(f"{f.name} must be {what}, got {value!r} (`retain run "
                                  f"--help` describes it)")

    def _kind(self) -> str:
        """The task kind: the benchmark's, else ``kind``, else classification (an error where
        ``kind`` contradicts the benchmark)."""
        from retain.data import BENCHMARKS

        if self.data is not None:
            return self.kind or CLASSIFICATION.name
        bench = BENCHMARKS[self.benchmark]
        if self.kind not in (None, bench.kind.name):
            raise RetainError(f"{bench.name} is a '{bench.kind.name}' benchmark; drop --kind "
                              f"{self.kind}")
        return bench.kind.name

    def _head_defaults(self, head: str, prof: Profile) -> dict[str, Any]:
        """The head's options: the user's, over the profile's width for the analytic head."""
        if (head == "analytic" and prof.analytic_projection
                and "projection" not in self.head_options):
            return {"projection": prof.analytic_projection, **self.head_options}
        return dict(self.head_options)

    def _order_seed(self, bench) -> int:
        if self.class_order_seed is not None:
            return self.class_order_seed
        if bench is not None and bench.class_order_seed is not None:
            return bench.class_order_seed
        return self.seed

    def run_profile(self) -> Profile:
        """The profile this resolved config runs: the table's, with every value
        :meth:`resolved` settled (the data builders read it, never the table again)."""
        if self.kind is None or self.max_length is None:
            raise RetainError("run_profile() needs a resolved config: RunConfig.resolved()")
        return Profile(self.profile, cap=self.cap, tasks=self.tasks,
                       classes_per_task=self.classes_per_task, max_length=self.max_length,
                       epochs=self.epochs, batch_size=self.batch_size, steps=self.steps,
                       test_cap=self.test_cap, backbone=self.backbone)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The config as TOML (a field that is None left out: its default; method and head
        options as tables; :meth:`from_toml` reads it back); of a resolved config, a count
        that keeps all (None) is written as 0, which resolves to it again."""
        resolved = self.kind is not None and self.max_length is not None
        plain = {k: 0 if v is None and resolved and k in COUNTS else v
                 for k, v in self.to_dict().items()
                 if (v is not None or (resolved and k in COUNTS)) and not isinstance(v, dict)}
        lines = [f"{k} = {toml_value(v)}" for k, v in plain.items()]
        for name in ("method_options", "head_options"):
            table = getattr(self, name)
            lines += ["", f"[{name}]", *(f"{toml_key(k)} = {toml_value(v)}"
                                          for k, v in table.items() if v is not None)]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> RunConfig:
        """A config written down (``retain run --config FILE``): every key a field of this
        class (``batch-size`` or ``batch_size``); refused in one line otherwise."""
        values = read_toml(path)
        values.pop("sessions", None)  # later sessions: read_sessions
        return cls(**config_values(values, str(path), {f.name for f in dataclasses.fields(cls)}))


@dataclass(frozen=True)
class Plan:
    """One run, resolved: ``config`` is the same run as names and numbers (what
    ``results.json`` and ``config.toml`` save); the rest are the objects it names."""

    config: RunConfig
    kind: Kind
    profile: Profile
    method: type[ContinualMethod]
    options: MethodConfig  # the method's options, parsed and checked
    head: RunHead
    benchmark: Benchmark | None  # None: the user's file or image folder

    def build_method(self) -> ContinualMethod:
        """The method, not yet set up (``setup`` takes the backbone and the stream)."""
        return self.method(self.options, self.head)

    def build_stream(self, backbone: Backbone | None = None) -> Stream:
        """The stream: the user's file or folder, or the benchmark's; token streams need the
        backbone's tokenizer."""
        from retain.data import build_stream

        return build_stream(self, backbone)

    @classmethod
    def saved(cls, config: RunConfig) -> Plan:
        """The plan of a config already resolved and saved (a checkpoint's): its names turned
        into objects again, without checking what only a new run needs (its data is not
        needed to load a trained run)."""
        from retain.data import BENCHMARKS
        from retain.kinds import get_kind
        from retain.methods import get_method_class
        from retain.methods.heads import REGISTRY, RunHead

        method = get_method_class(config.method)
        return cls(config, get_kind(config.kind), config.run_profile(), method,
                   method.config_class(**config.method_options),
                   RunHead(config.head, REGISTRY[config.head], dict(config.head_options),
                           config.head_lr),
                   None if config.data else BENCHMARKS.get(config.benchmark))


def filled(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config with each field added since it was written as a new run resolves it."""
    return {**RunConfig().to_dict(), **UNSET, **saved}


def _cap(value: int | None, default: int | None) -> int | None:
    """A count option: the profile's default when not given, and 0 meaning none (all)."""
    if value is None:
        return default
    return value or None
