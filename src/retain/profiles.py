"""Profiles: how much of a stream to use and how long to train on each task. Every benchmark
registers its own table; the user's files use the table of their task kind. Data and
configuration both read them; this module imports nothing of the package but its errors."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from retain.errors import RetainError


@dataclass(frozen=True)
class Profile:
    """How much of a stream to use and how long to train on each task."""

    name: str
    cap: int | None = field(metadata={
        "help": "classification: items kept per class before the split; language modelling: "
                "training sequences kept per task (None: all)"})
    tasks: int | None = field(metadata={"help": "number of tasks kept (None: all)"})
    classes_per_task: int | None = field(metadata={"help": "override of the benchmark's value"})
    max_length: int = field(metadata={"help": "tokens per text after truncation (LM: sequence "
                                              "length)"})
    epochs: int = field(metadata={"help": "passes over each task's training data"})
    batch_size: int = field(metadata={"help": "training and evaluation batch size"})
    steps: int | None = field(default=None, metadata={
        "help": "optimiser steps per task, in place of epochs (None: epochs decide)"})
    test_cap: int | None = field(default=None, metadata={
        "help": "language modelling: test sequences kept per task (None: all)"})
    backbone: str = field(default="minilm", metadata={"help": "default backbone"})
    inference_rounds: int | None = field(default=None, metadata={
        "help": "the fewest timed rounds of the inference measurement (None: as many as fit "
                "in 2% of the run, at least 2; --inference-rounds overrides)"})
    analytic_projection: int | None = field(default=None, metadata={
        "help": "width M of the analytic head's projection when --head-set projection is not "
                "given (None: the head's default, 5000)"})


CLASSIFICATION_PROFILES: dict[str, Profile] = {
    # smoke: a first look in seconds. 40 items a class (8 test items, 24 a task, so that two
    # methods rarely tie by construction), and an analytic head 512 wide: its solves at 5000
    # took most of a smoke run, on 32 training items a class
    "smoke": Profile("smoke", cap=40, tasks=3, classes_per_task=3, max_length=32, epochs=1,
                     batch_size=8, analytic_projection=512),
    "quick": Profile("quick", cap=300, tasks=None, classes_per_task=None, max_length=48,
                     epochs=3, batch_size=32),
    "full": Profile("full", cap=2500, tasks=None, classes_per_task=None, max_length=48,
                    epochs=5, batch_size=32),
}

# language modelling (lm3 and the user's text files with a `task` column): 64-token sequences
LM_PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", cap=16, tasks=None, classes_per_task=None, max_length=64,
                     epochs=1, batch_size=4, steps=4, test_cap=8, backbone="tiny-llama"),
    "quick": Profile("quick", cap=400, tasks=None, classes_per_task=None, max_length=64,
                     epochs=1, batch_size=8, steps=60, test_cap=64, backbone="smollm2"),
    "full": Profile("full", cap=None, tasks=None, classes_per_task=None, max_length=64,
                    epochs=1, batch_size=8, test_cap=None, backbone="smollm2"),
}

# lmfar: lm3's table with a shorter quick budget. At lm3's 60 steps a task full fine-tuning
# ended with Shakespeare's perplexity ratio at 1.04 (lr 2e-5), below the 1.10 the stream must
# reach to tell methods apart; at lr 1e-4 (seq-ft's language-model rate) 30 steps reach 1.26
# (docs/benchmarks.md#lmfar), at half the time of a run
LMFAR_PROFILES: dict[str, Profile] = {**LM_PROFILES,
                                      "quick": replace(LM_PROFILES["quick"], steps=30)}

PROFILE_NAMES = ("smoke", "quick", "full")


def pick_profile(table: dict[str, Profile], name: str, owner: str = "") -> Profile:
    if name not in table:
        where = f" of {owner}" if owner else ""
        raise RetainError(f"unknown profile '{name}'{where}: choose one of {', '.join(table)}")
    return table[name]
