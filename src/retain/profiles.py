"""Profiles: how much of a benchmark to use and how long to train on each task. Data and
configuration both read them; this module imports nothing of the package but its errors."""

from __future__ import annotations

from dataclasses import dataclass, field

from retain.errors import RetainError


@dataclass(frozen=True)
class Profile:
    """How much of a benchmark to use and how long to train on each task."""

    name: str
    cap: int | None = field(metadata={"help": "items kept per class before the split (None: all)"})
    groups: int | None = field(metadata={"help": "number of tasks kept (None: all)"})
    classes_per_task: int | None = field(metadata={"help": "override of the benchmark's value"})
    max_length: int = field(metadata={"help": "tokens per text after truncation"})
    epochs: int = field(metadata={"help": "passes over each task's training data"})
    batch_size: int = field(metadata={"help": "training and evaluation batch size"})


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", cap=20, groups=3, classes_per_task=3, max_length=32, epochs=1,
                     batch_size=8),
    "quick": Profile("quick", cap=300, groups=None, classes_per_task=None, max_length=48,
                     epochs=3, batch_size=32),
    "full": Profile("full", cap=2500, groups=None, classes_per_task=None, max_length=48,
                    epochs=5, batch_size=32),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise RetainError(f"unknown profile '{name}': choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
