"""The per-task loop of one method over a stream: before the task, training, after the task,
evaluation, with ``accelerate`` for the device (:class:`Engine`); what it accumulates is a
:class:`Record`, saved in every checkpoint."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from retain.backbones import Backbone
from retain.config import RunConfig
from retain.data.stream import Split, Stream, Task
from retain.errors import RetainError
from retain.methods.base import ContinualMethod


class _Items(Dataset):
    def __init__(self, splits: list[Split]):
        self.items = [t for s in splits for t in s.items]
        self.labels = np.concatenate([s.labels for s in splits]) if splits else np.zeros(0, int)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[dict, int, int]:
        return self.items[i], int(self.labels[i]), i


@dataclass
class _Collate:
    """The backbone batches the items (tokenizer, image processor); classification adds the
    class labels (token sequences carry their own); ``index`` is each item's position in the
    data (the same whatever the number of processes)."""

    backbone: Backbone
    max_length: int

    def __call__(self, items: list[tuple[dict, int, int]]) -> dict[str, torch.Tensor]:
        things, labels, index = zip(*items, strict=True)
        batch = self.backbone.batch(list(things), self.max_length)
        batch.setdefault("labels", torch.tensor(labels, dtype=torch.long))
        batch["index"] = torch.tensor(index, dtype=torch.long)
        return batch


@dataclass
class Record:
    """What the loop accumulates; saved in every checkpoint."""

    rows: list[list[float]] = field(default_factory=list)
    til_rows: list[list[float]] = field(default_factory=list)
    per_task: list[dict[str, Any]] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    curves: list[dict[str, Any]] = field(default_factory=list)  # --probe-every points
    validation_rows: list[list[float]] = field(default_factory=list)  # --validation
    trainable_parameters: int = 0
    wall_seconds: float = 0.0


@contextlib.contextmanager
def long_lived_frozen():
    """Garbage collection scans only objects made inside: the ones alive before (the model, the
    stream, the imported libraries: some 400 000 objects in a MiniLM run) are frozen
    (``gc.freeze``) for the while, after one collection so that no garbage is frozen with them.
    ``accelerate``'s ``free_memory`` ends each task's phase with a full collection, which
    otherwise rescans them all: 0.2 s a task on 2 cores. A run's task loop runs inside; a
    process that froze objects itself is left as it is."""
    mine = gc.get_freeze_count() == 0
    if mine:
        gc.collect()
        gc.freeze()
    try:
        yield
    finally:
        if mine:
            gc.unfreeze()


class Engine:
    """Runs the lifecycle of one method over a stream, with ``accelerate`` for the device."""

    def __init__(self, cfg: RunConfig, stream: Stream, backbone: Backbone,
                 method: ContinualMethod, accelerator: Accelerator, progress: bool,
                 curves=None):
        self.cfg, self.stream, self.backbone, self.method = cfg, stream, backbone, method
        self.curves = curves  # retain.curves.Curves under --probe-every
        self.kind = stream.kind
        self.acc, self.progress = accelerator, progress and accelerator.is_main_process
        self.collate = _Collate(backbone, cfg.max_length)
        self.features = FeatureCache()
        self.log: list[dict[str, Any]] = []  # the current task's optimiser steps

    def loader(self, splits: list[Split], shuffle: bool = False, seed: int = 0,
               even: bool = True) -> DataLoader:
        """Sharded across processes. ``even=False`` gives every item exactly once overall (for
        statistics that are summed across processes); ``even=True`` pads the last batches so all
        processes step together (training; evaluation drops the padding when gathering).
        Unshuffled data (statistics passes, evaluation: sums and counts, whatever the order)
        comes shortest item first, so that a batch pads its items to similar lengths; each
        batch's ``index`` still gives the items' positions in the data."""
        items = _Items(splits)
        gen = torch.Generator().manual_seed(seed)
        order = None if shuffle else self.backbone.lengths(items.items, self.cfg.max_length)
        dl = DataLoader(items, batch_size=self.cfg.batch_size, shuffle=shuffle, generator=gen,
                        collate_fn=self.collate,
                        sampler=None if order is None else sorted(range(len(items)),
                                                                  key=order.__getitem__))
        return prepare_data_loader(dl, self.acc.device, self.acc.num_processes,
                                   self.acc.process_index, put_on_device=True, even_batches=even)

    def boundary(self, hook, task: Task) -> float:
        start = time.perf_counter()
        self.method.eval()
        with self.acc.autocast():
            hook(task, lambda: self.loader([task.train], even=False))
        self.method.to(self.acc.device)  # hooks may add modules (heads, branches)
        return time.perf_counter() - start

    def optimiser(self) -> tuple[torch.optim.Optimizer | None, int]:
        """AdamW over the method's trainable parameters: the backbone group at ``lr``, the head
        group at ``head_lr``; and how many numbers it trains."""
        groups = self.method.trainable_parameters()
        n_params = sum(p.numel() for params in groups.values() for p in params)
        lrs = {"backbone": self.cfg.lr, "head": self.cfg.head_lr}
        unknown = set(groups) - set(lrs)
        if unknown:
            raise TypeError(f"trainable_parameters() groups are 'backbone' and 'head', got "
                            f"{sorted(unknown)}")
        if not n_params:
            return None, 0
        return torch.optim.AdamW([{"params": p, "lr": lrs[g]} for g, p in groups.items()],
                                 lr=self.cfg.lr, weight_decay=self.cfg.weight_decay), n_params

    def batches(self, data: DataLoader):
        """``epochs`` passes over the data, or passes until ``steps`` optimiser steps are done
        (reshuffled each pass; the caller stops)."""
        if self.cfg.steps is None:
            for _ in range(self.cfg.epochs):
                yield from data
            return
        while True:
            yield from data

    def schedule(self, opt: torch.optim.Optimizer, data: DataLoader):
        """The task's learning-rate schedule (``transformers.get_scheduler``) over its
        optimiser steps; constant without warm-up leaves every rate as given."""
        from transformers import get_scheduler

        n = self.cfg.grad_accumulation
        total = self.cfg.steps or self.cfg.epochs * -(-len(data) // n)
        warmup = self.cfg.warmup_steps or int(self.cfg.warmup_ratio * total)
        name = ("constant_with_warmup" if self.cfg.scheduler == "constant" and warmup
                else self.cfg.scheduler)
        return get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=total), total

    def train(self, task: Task, splits: list[Split], record: Record) -> dict[str, Any]:
        opt, n_params = self.optimiser()
        record.trainable_parameters = max(record.trainable_parameters, n_params)
        self.log = []
        if not splits or opt is None:
            return {"steps": 0, "train_seconds": 0.0, "last_loss": None}
        data = self.loader(splits, shuffle=True, seed=self.cfg.seed * 100_003 + task.index)
        scheduler, total = self.schedule(opt, data)
        model, opt = self.acc.prepare(self.method, opt)
        model.train()
        steps, loss_value, start = 0, float("nan"), time.perf_counter()
        losses: list[float] = []
        bar = tqdm(total=total, disable=not self.progress, leave=False,
                   desc=f"task {task.index + 1}/{len(self.stream)}", unit="step")
        spent = 0.0  # compute seconds of the current optimiser step's batches
        for batch in self.batches(data):
            t0 = time.perf_counter()
            with self.acc.accumulate(model):
                with self.acc.autocast():  # prepare() wraps forward only the first time a
                    loss = model(batch)    # single-process model is prepared
                self.acc.backward(loss)
                opt.step()
                opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            spent += time.perf_counter() - t0
            if not self.acc.sync_gradients:
                continue
            loss_value = float(np.mean(losses))
            if not np.isfinite(loss_value):
                raise RetainError(f"the loss became {loss_value} on task {task.index + 1}: "
                                  "lower the learning rate (--lr) or use --mixed-precision no")
            steps += 1
            self.log.append({"task": task.index + 1, "step": len(record.step_seconds) + 1,
                             "task_step": steps, "loss": loss_value,
                             "lr": opt.param_groups[0]["lr"]})
            scheduler.step()
            record.step_seconds.append(spent)
            losses, spent = [], 0.0
            if self.curves is not None and self.curves.due(steps, steps == total):
                record.curves.append(self.curves.point(self.method, task,
                                                       len(record.step_seconds), steps))
            bar.update()
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if steps == self.cfg.steps:
                break
        bar.close()
        seconds = time.perf_counter() - start
        self.acc.unwrap_model(model, keep_fp32_wrapper=False)
        self.acc.free_memory()
        return {"steps": steps, "train_seconds": seconds, "last_loss": loss_value}

    @torch.no_grad()
    def evaluate(self, tasks: list[Task]) -> dict[str, list[float]]:
        """One row of each score matrix of the task kind (:meth:`Kind.evaluate`)."""
        self.method.eval()
        scored = [t for t in tasks if len(t.test)]  # --keep-test none: earlier sessions' not
        rows = self.kind.evaluate(self.method, scored,
                                  lambda splits, even: self.loader(splits, even=even), self.acc,
                                  self.features if self.acc.num_processes == 1
                                  and features_reusable(self.method) else None)
        if len(scored) == len(tasks):
            return rows
        where = {t.index: i for i, t in enumerate(scored)}
        return {k: [row[where[t.index]] if t.index in where else float("nan") for t in tasks]
                for k, row in rows.items()}

    @torch.no_grad()
    def validate(self, tasks: list[Task]) -> list[float]:
        """The main matrix's row on each task's validation split (``Task.heldout``), scored as
        the test split is, without the kept test features."""
        self.method.eval()
        held = [dataclasses.replace(t, test=t.heldout) for t in tasks
                if t.heldout is not None and len(t.heldout)]  # an earlier session's: none
        row = self.kind.evaluate(self.method, held,
                                 lambda splits, even: self.loader(splits, even=even),
                                 self.acc, None)["matrix"] if held else []
        scored = dict(zip((t.index for t in held), row, strict=True))
        return [scored.get(t.index, float("nan")) for t in tasks]

    def run_task(self, task: Task, record: Record) -> None:
        start = time.perf_counter()
        set_seed(self.cfg.seed * 1_000 + task.index)
        seen = self.stream.tasks[: task.index + 1]
        boundary = self.boundary(self.method.begin_task, task)
        fit = self.train(task, [t.train for t in self.method.training_tasks(task, seen)], record)
        head_before = self.method.head.own_seconds
        boundary += self.boundary(self.method.end_task, task)
        head_seconds = self.method.head.own_seconds - head_before
        t0 = time.perf_counter()
        rows = self.evaluate(seen)
        if self.cfg.validation:  # the same row on each task's validation split
            record.validation_rows.append(self.validate(seen))
        record.rows.append(rows["matrix"])
        if "task_incremental" in rows:
            record.til_rows.append(rows["task_incremental"])
        score = float(np.nanmean(rows["matrix"]))
        record.per_task.append({"task": task.index + 1, "name": task.name, **fit,
                                "boundary_seconds": boundary, "head_seconds": head_seconds,
                                "eval_seconds": time.perf_counter() - t0,
                                self.kind.score: score})
        record.wall_seconds += time.perf_counter() - start
        if self.progress:
            seen_text = "task 1" if task.index == 0 else f"tasks 1-{task.index + 1}"
            tqdm.write(f"task {task.index + 1}/{len(self.stream)} ({task.name}): mean "
                       f"{self.kind.score} over {seen_text} {score:.3f}, {fit['steps']} steps "
                       f"in {fit['train_seconds']:.1f}s")


def features_reusable(method: ContinualMethod) -> bool:
    """The method predicts with the default ``predict`` (features, then the head), so that its
    test features may be kept between evaluations (:class:`FeatureCache`; in one
    process only: across processes, ``gather_for_metrics`` drops the padding of the last batch
    by the loader's own state, which kept batches do not carry)."""
    return (type(method).predict is ContinualMethod.predict
            and not method.info.task_aware_prediction)


class FeatureCache:
    """Each task's test features (and labels), embedded once and kept for as long as the
    tensors that make features have not changed: everything the method stores but its head
    (compared exactly after every task). A frozen backbone (frozen-ncm, first-session after its
    first task) then embeds each test item once in a run, so evaluation grows linearly with the
    number of tasks instead of with its square."""

    def __init__(self) -> None:
        self.fingerprint: list[tuple[str, torch.Tensor]] | None = None
        self.items: dict[int, list[tuple[dict, torch.Tensor]]] = {}

    def check(self, method) -> None:
        """Forget the kept features if what makes them changed since the last evaluation."""
        now = [(n, t) for n, t in method.stored_tensors().items() if not n.startswith("head.")]
        same = self.fingerprint is not None and len(now) == len(self.fingerprint) and all(
            n == m and t.shape == u.shape and bool((t == u).all())
            for (n, t), (m, u) in zip(now, self.fingerprint, strict=True))
        if not same:
            self.items.clear()
            self.fingerprint = [(n, t.detach().clone()) for n, t in now]

    def batches(self, method, task, loader, accelerator):
        """``(batch, features)`` for the task's test items: embedded now, or kept."""
        if task.index not in self.items:
            kept = []
            for batch in loader([task.test], True):
                with accelerator.autocast():
                    kept.append(({"labels": batch["labels"]}, method.features(batch)))
            self.items[task.index] = kept
        yield from self.items[task.index]
