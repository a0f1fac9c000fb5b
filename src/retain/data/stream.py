"""Tasks and streams: class orders, per-class splits, class-/task-/domain-incremental scenarios.

Labels inside a stream are *positions in the class order*: the classes of the first task are
``0..k-1``, and so on. ``Stream.class_order[j]`` is the original label index of position ``j`` and
``Stream.class_names[j]`` its name, so results can always be mapped back. ``class_order`` is the
whole permutation (it can be given back as ``--class-order``); a profile that keeps fewer tasks
uses its first ``num_classes`` entries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retain.errors import RetainError
from retain.kinds import CLASSIFICATION, Kind, get_kind
from retain.profiles import CLASSIFICATION_PROFILES, Profile, pick_profile


@dataclass
class Split:
    """Items (dicts: ``{"text": ...}``, ``{"image": path}`` or ``{"input_ids": [...]}``) and
    their stream-position labels (zeros in a language-modelling stream)."""

    items: list[dict[str, Any]]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class Task:
    index: int  # 0-based position in the stream
    classes: list[int]  # stream-position labels of this task's classes
    train: Split
    test: Split
    name: str = ""
    trained_on: int | None = None  # training items it had, for a task learnt in an earlier
    # session (its training data is gone: rehearsal-free)
    heldout: Split | None = None  # training items held out (--holdout), never trained on


@dataclass
class Stream:
    name: str
    scenario: str  # class, task or domain; "lm" for a language-modelling stream
    class_names: list[str]
    class_order: list[int]
    tasks: list[Task] = field(default_factory=list)
    kind: Kind = CLASSIFICATION  # its task kind (JSON holds its name: ``outline``)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.tasks)

    def outline(self) -> dict[str, Any]:
        """What rebuilding a trained run needs of its stream, without the data (saved in every
        checkpoint; :meth:`from_outline` rebuilds from it)."""
        return {"name": self.name, "scenario": self.scenario, "kind": self.kind.name,
                "class_names": self.class_names, "class_order": self.class_order,
                "tasks": [{"name": t.name, "classes": t.classes,
                           "train": t.trained_on if t.trained_on is not None else len(t.train),
                           "test": len(t.test)} for t in self.tasks]}

    @classmethod
    def from_outline(cls, outline: dict[str, Any], tests: list[Split] | None = None) -> Stream:
        """The stream of a trained run without its training data: each task's test split from
        ``tests`` (kept in the run folder) or empty."""
        tasks = [Task(i, list(t["classes"]), _empty(),
                      tests[i] if tests is not None else _empty(), t["name"],
                      trained_on=t.get("train")) for i, t in enumerate(outline["tasks"])]
        return cls(outline["name"], outline["scenario"], list(outline["class_names"]),
                   list(outline["class_order"]), tasks, get_kind(outline["kind"]))

    def extended(self, new: Stream) -> Stream:
        """This stream, then ``new``'s tasks (learnt in a later session): new classes after the
        known ones (class and task scenarios), known classes by name (domain), more domains
        (language modelling). A class the scenario cannot take is refused."""
        known = {name: i for i, name in enumerate(self.class_names)}
        names, order, tasks = list(self.class_names), list(self.class_order), list(self.tasks)
        if self.scenario == "domain":
            unknown = [n for n in new.class_names if n not in known]
            if unknown:
                raise RetainError(f"class '{unknown[0]}' is not one of the run's classes "
                                  f"({', '.join(self.class_names)}): a domain-incremental run "
                                  "learns new domains of the classes it has")
            remap = np.asarray([known[n] for n in new.class_names], dtype=int)
            classes = list(range(len(names)))
        else:
            again = [n for n in new.class_names if n in known]
            if again:
                raise RetainError(f"class '{again[0]}' was learnt in an earlier task: a "
                                  f"{self.scenario}-incremental run learns new classes only "
                                  "(drop its rows, or rename it)")
            remap = np.arange(len(new.class_names)) + len(names)
            names += new.class_names
            order += [len(order) + c for c in new.class_order]
        for task in new.tasks:
            tasks.append(Task(len(tasks), classes if self.scenario == "domain"
                              else [int(remap[c]) for c in task.classes],
                              Split(task.train.items, _mapped(task.train.labels, remap)),
                              Split(task.test.items, _mapped(task.test.labels, remap)),
                              task.name, heldout=None if task.heldout is None else Split(
                                  task.heldout.items, _mapped(task.heldout.labels, remap))))
        return Stream(f"{self.name}+{new.name}", self.scenario, names, order, tasks, self.kind)


def hold_out(stream: Stream, n: int) -> Stream:
    """Each task's last ``n`` training items moved to ``Task.heldout`` (in place): data carved
    from the training split to choose on, so that the test split chooses nothing."""
    for task in stream.tasks:
        if n >= len(task.train):
            raise RetainError(f"--holdout {n} leaves nothing to train on in task {task.index + 1}"
                              f" ({task.name}: {len(task.train)} training items): give fewer")
        task.heldout = Split(task.train.items[-n:], task.train.labels[-n:])
        task.train = Split(task.train.items[:-n], task.train.labels[:-n])
    return stream


def validation_split(stream: Stream, fraction: float) -> Stream:
    """Each task's validation items moved to ``Task.heldout`` (in place): per class,
    ``round(fraction * n)`` of its ``n`` training items (at least one where it has two or
    more), drawn by ``RandomState(0)`` from the training split alone, so that the test split
    chooses nothing and every point of a sweep (whatever its training seed) holds out the same
    items."""
    for task in stream.tasks:
        keep, held = [], []
        for c in np.unique(task.train.labels):
            idx = np.flatnonzero(task.train.labels == c)
            n = min(max(int(round(fraction * len(idx))), 1), len(idx) - 1)
            order = np.random.RandomState(0).permutation(len(idx))
            held += idx[order[:n]].tolist()
            keep += idx[order[n:]].tolist()
        if not held:
            raise RetainError(f"--validation {fraction} holds nothing out of task "
                              f"{task.index + 1} ({task.name}): every class needs two training "
                              "items or more")
        held, keep = sorted(held), sorted(keep)
        task.heldout = Split([task.train.items[i] for i in held], task.train.labels[held])
        task.train = Split([task.train.items[i] for i in keep], task.train.labels[keep])
    return stream


def _empty() -> Split:
    return Split([], np.zeros(0, dtype=int))


def _mapped(labels: np.ndarray, remap: np.ndarray) -> np.ndarray:
    return remap[labels] if len(remap) else labels  # language modelling: no classes


def split_per_class(labels: np.ndarray, cap: int | None, split_seed: int = 0,
                    train_fraction: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Indices of train and test items: each class shuffled by ``RandomState(split_seed)``
    (a fresh generator per class, items in input order), the first ``cap`` kept, and
    ``round(train_fraction * n)`` of them for training."""
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[np.random.RandomState(split_seed).permutation(len(idx))]
        if cap is not None:
            idx = idx[:cap]
        n_train = int(round(train_fraction * len(idx)))
        train.append(idx[:n_train])
        test.append(idx[n_train:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def class_order_for(num_classes: int, seed: int | None, order: list[int] | None) -> list[int]:
    if order is not None:
        if sorted(order) != list(range(num_classes)):
            raise RetainError(f"class order must be a permutation of 0..{num_classes - 1}, got "
                              f"{order}")
        return [int(c) for c in order]
    if seed is None:
        return list(range(num_classes))
    return [int(c) for c in np.random.RandomState(seed).permutation(num_classes)]


def _subset(items: list[dict], labels: np.ndarray, idx: np.ndarray) -> Split:
    return Split([items[i] for i in idx], labels[idx])


def labelled_corpus(name: str, texts: list[str], labels: np.ndarray, class_names: list[str],
                    profile: Profile, scenario: str, order: list[int],
                    classes_per_task: int | None) -> Stream:
    """A built-in corpus of labelled texts as a class-incremental stream: the profile's items
    per class split 80/20 (``split_per_class``), tasks of ``classes_per_task`` classes (else
    the profile's, else 5) in ``order``, the profile's number of tasks."""
    if scenario == "domain":
        raise RetainError(f"{name} is class-incremental (tasks have disjoint classes); use "
                          "--scenario class or task, or --data FILE with a `domain` column")
    train_idx, test_idx = split_per_class(labels, profile.cap)
    idx = np.sort(np.concatenate([train_idx, test_idx]))
    return class_incremental(
        f"{name}/{profile.name}", [{"text": texts[i]} for i in idx], labels[idx], class_names,
        order, classes_per_task or profile.classes_per_task or 5, np.isin(idx, train_idx),
        groups=profile.tasks, scenario=scenario)


def class_incremental(name: str, items: list[dict], labels: np.ndarray, class_names: list[str],
                      order: list[int], classes_per_task: int, is_train: np.ndarray,
                      groups: int | None = None, scenario: str = "class",
                      sizes: list[int] | None = None,
                      task_names: list[str] | None = None) -> Stream:
    """Tasks are consecutive groups of ``classes_per_task`` classes of ``order`` (or of
    ``sizes[t]`` classes each: a file's ``task`` column, with ``task_names``)."""
    if classes_per_task < 1:
        raise RetainError(f"classes per task must be at least 1, got {classes_per_task}")
    position = np.full(len(class_names), -1)
    position[np.asarray(order)] = np.arange(len(order))
    pos_labels = position[labels]
    if sizes is None:
        n_groups = -(-len(order) // classes_per_task)
        sizes = [classes_per_task] * n_groups
    if groups is not None:
        sizes = sizes[:groups]
    used = order[: sum(sizes)]
    if len(class_names) == 1:
        raise RetainError(f"the data hold one class ('{class_names[0]}'): a classifier needs at "
                          "least 2; add labelled examples of another class")
    if task_names is None and classes_per_task > 1 and len(used) % classes_per_task == 1:
        raise RetainError(
            f"the last task would hold one class ('{class_names[used[-1]]}'; {len(used)} classes "
            f"in tasks of {classes_per_task}), which a task-local classifier cannot learn: "
            f"choose --classes-per-task that leaves at least 2 in the last task, or --tasks "
            f"{len(sizes) - 1}")
    stream = Stream(name, scenario, [class_names[c] for c in used], list(order))
    starts = np.cumsum([0, *sizes])
    for t in range(len(sizes)):
        classes = list(range(int(starts[t]), min(int(starts[t + 1]), len(used))))
        member = np.isin(pos_labels, classes)
        tr, te = np.flatnonzero(member & is_train), np.flatnonzero(member & ~is_train)
        task = Task(t, classes, _subset(items, pos_labels, tr), _subset(items, pos_labels, te),
                    name=task_names[t] if task_names else
                    "+".join(class_names[order[c]] for c in classes))
        _check_task(task)
        for c in classes:
            for part, split in (("training", tr), ("test", te)):
                if not (pos_labels[split] == c).any():
                    raise RetainError(
                        f"class '{class_names[order[c]]}' has no {part} items ("
                        f"{int((pos_labels == c).sum())} in all): give every class at least 3 "
                        "examples (80/20 split per class), or a `split` column")
        stream.tasks.append(task)
    return stream


def domain_incremental(name: str, items: list[dict], labels: np.ndarray, class_names: list[str],
                       domains: list[str], domain_order: list[str], is_train: np.ndarray) -> Stream:
    """One task per domain; every task has the same classes (all of them)."""
    dom = np.asarray(domains)
    stream = Stream(name, "domain", list(class_names), list(range(len(class_names))))
    for t, d in enumerate(domain_order):
        member = dom == d
        tr, te = np.flatnonzero(member & is_train), np.flatnonzero(member & ~is_train)
        task = Task(t, list(range(len(class_names))), _subset(items, labels, tr),
                    _subset(items, labels, te), name=str(d))
        _check_task(task)
        stream.tasks.append(task)
    return stream


def _check_task(task: Task) -> None:
    for part in ("train", "test"):
        if len(getattr(task, part)) == 0:
            raise RetainError(f"task {task.index + 1} ({task.name}) has no {part} items: give "
                              "more data per class, fewer classes per task, or a `split` column")


@dataclass(frozen=True)
class Benchmark:
    """A built-in benchmark: what it is, its task kind, its profiles and defaults, and its
    stream for a resolved config, profile and backbone (token streams need the tokenizer)."""

    name: str
    description: str
    build: Callable[[Any, Profile, Any], Stream]
    kind: Kind = CLASSIFICATION
    profiles: dict[str, Profile] = field(default_factory=dict)
    class_order_seed: int | None = None
    classes_per_task: int | None = None
    # language modelling: held-out English beside Shakespeare for retention,
    # (tokenizer, sequences) -> {name: [n, length] token ids}
    probes: Callable[[Any, int], dict[str, Any]] | None = None

    def profile(self, name: str) -> Profile:
        return pick_profile(self.profiles, name, self.name)


BENCHMARKS: dict[str, Benchmark] = {}


def register_benchmark(name: str, description: str, kind: Kind = CLASSIFICATION,
                       profiles: dict[str, Profile] | None = None,
                       class_order_seed: int | None = None, classes_per_task: int | None = None,
                       probes: Callable[[Any, int], dict[str, Any]] | None = None):
    """Decorator: register ``build(config, profile, backbone) -> Stream`` as ``name``, with its
    profiles, the defaults the run config resolves from it, and its extra retention probes."""
    def decorate(build):
        BENCHMARKS[name] = Benchmark(name, description, build, kind,
                                     dict(profiles or CLASSIFICATION_PROFILES), class_order_seed,
                                     classes_per_task, probes)
        return build
    return decorate
