"""The per-task loop: before, train, after, evaluate; checkpoints after every task; resume."""

from __future__ import annotations

import dataclasses
import json
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from retain import checkpoint, inference, metrics
from retain.backbones import Backbone, load_backbone
from retain.config import RunConfig, sessions_toml
from retain.data import build_stream
from retain.data.stream import Split, Stream, Task
from retain.errors import RetainError
from retain.kinds import FeatureCache, get_kind
from retain.methods import get_method_class
from retain.methods.base import ContinualMethod, count_unique
from retain.retention import retention_after, retention_probe


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
    trainable_parameters: int = 0
    wall_seconds: float = 0.0


class Engine:
    """Runs the lifecycle of one method over a stream, with ``accelerate`` for the device."""

    def __init__(self, cfg: RunConfig, stream: Stream, backbone: Backbone,
                 method: ContinualMethod, accelerator: Accelerator, progress: bool,
                 curves=None):
        self.cfg, self.stream, self.backbone, self.method = cfg, stream, backbone, method
        self.curves = curves  # retain.curves.Curves under --probe-every
        self.kind = get_kind(stream.kind)
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
        name = "constant_with_warmup" if self.cfg.scheduler == "constant" and warmup \
            else self.cfg.scheduler
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
    test features may be kept between evaluations (:class:`~retain.kinds.FeatureCache`; in one
    process only: across processes, ``gather_for_metrics`` drops the padding of the last batch
    by the loader's own state, which kept batches do not carry)."""
    return type(method).predict is ContinualMethod.predict and \
        not method.info.task_aware_prediction


def _versions() -> dict[str, str]:
    import accelerate
    import peft
    import transformers

    import retain

    return {"retain": retain.__version__, "python": sys.version.split()[0],
            "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "accelerate": accelerate.__version__,
            "platform": platform.platform()}


def _reset_peak_memory(device: torch.device) -> None:
    """Start a fresh peak for this run (several runs may share a process)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the resident-set high-water mark (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_memory_mb(device: torch.device) -> float:
    """GPU: peak allocated by torch. CPU: peak resident set size of the process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def build_method(cfg: RunConfig) -> ContinualMethod:
    """The method of a resolved config (its options parsed and checked by ``resolved``)."""
    cls = get_method_class(cfg.method)
    return cls(cls.config_class(**cfg.method_options), head=cfg.head,
               head_options=cfg.head_options)


def rebuild(cfg: RunConfig, backbone: Backbone, stream: Stream, ckpt_dir: Path | None = None,
            saved: dict[str, Any] | None = None, grow: bool = False) -> ContinualMethod:
    """The method of a run, set up on the untouched backbone and, from a checkpoint
    (``saved``, its state), with its stored state and tensors on top: resume and ``load``.
    ``grow``: the stream may hold more classes than the checkpoint (a later session): the
    heads' class-sized tensors (the method's head, and any statistics head it keeps) grow."""
    from retain.methods.heads.base import Head

    method = build_method(cfg)
    method.setup(backbone, stream)
    if saved:
        method.load_state(saved["method_state"])
        heads = tuple(f"{n}." for n, m in method.named_modules() if isinstance(m, Head))
        checkpoint.load_weights(ckpt_dir, method, saved,
                                (lambda name: name.startswith(heads)) if grow else None)
    return method


def run(config: RunConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run a stream; return its results (also written to ``config.out/results.json``)."""
    return train_stream(config, resume, progress)[0]


# options that decide only what is measured after the last task (the untouched probe is taken
# afresh in every session): a resume may change them
EVALUATION_ONLY = ("retention", "retention_limit", "inference_rounds")


def _config_diff(cfg: RunConfig, saved: dict[str, Any]) -> list[str]:
    """Fields of a resolved config that differ from a saved one (the output folder aside)."""
    defaults = RunConfig().to_dict()  # a field added since the checkpoint: its default then
    return sorted(k for k, v in cfg.to_dict().items()
                  if k != "out" and saved.get(k, defaults[k]) != v)


def run_or_load(config: RunConfig, progress: bool = True) -> dict[str, Any]:
    """The results of ``config``: read from ``config.out/results.json`` when a finished run with
    the same config is there, otherwise run (resuming from a checkpoint if there is one).
    A finished run with another config is refused rather than reused."""
    done = Path(config.out) / "results.json"
    if done.is_file():
        results = json.loads(done.read_text())
        diff = _config_diff(config.resolved(), results["config"])
        if diff:
            raise RetainError(f"{config.out} holds a finished run with another config "
                              f"({', '.join(diff)} differ): choose another --out")
        return results
    resume = checkpoint.read_state(Path(config.out) / "checkpoint") is not None
    return run(config, resume=resume, progress=progress)


def train_stream(config: RunConfig, resume: bool = False, progress: bool = True
                 ) -> tuple[dict[str, Any], ContinualMethod]:
    """Like :func:`run`, and also return the trained method (to predict or inspect)."""
    started = time.perf_counter()
    cfg = config.resolved()
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoint"
    saved = checkpoint.read_state(ckpt_dir)
    if resume and not saved:
        raise RetainError(f"nothing to resume: {out} holds no checkpoint; drop --resume to start "
                          "a new run there")
    if saved and not resume:
        raise RetainError(f"{out} holds a checkpoint of an earlier run: add --resume to continue "
                          "it, or choose another --out")
    diff = _config_diff(cfg, saved["config"]) if saved else []
    training = [k for k in diff if k not in EVALUATION_ONLY]
    if training:
        raise RetainError(f"the checkpoint in {out} was written with a different config "
                          f"({', '.join(training)} differ); resume with the same options or "
                          "choose another --out")
    accelerator = _accelerator(cfg)
    if diff and accelerator.is_main_process:  # evaluation-only: the checkpoint takes them
        changes = ", ".join(f"{k} {saved['config'].get(k)} -> {getattr(cfg, k)}" for k in diff)
        print(f"resuming {out}: evaluation-only options changed ({', '.join(diff)}): {changes}; "
              "the checkpoint's config now holds the new values", file=sys.stderr)
        checkpoint.write_json(ckpt_dir / checkpoint.STATE, {**saved, "config": cfg.to_dict()})

    def stream_for(backbone: Backbone) -> Stream:
        if saved and "sessions" in saved:  # a resumed session of `retain learn`
            return _learnt_stream(cfg, saved, backbone)
        return build_stream(cfg, backbone)

    with checkpoint.owned(out, accelerator.is_main_process):
        return _session(cfg, saved, accelerator, stream_for, started, progress)


def learn(directory: str | Path, data: str | Path, classes_per_task: int | None = None,
          progress: bool = True, method: str | None = None, backbone: str | None = None,
          kind: str | None = None, options: dict[str, Any] | None = None
          ) -> tuple[dict[str, Any], ContinualMethod]:
    """Train the tasks of ``data`` into the finished run in ``directory`` (a later session):
    the method and head carry on from the run's last checkpoint, every task learnt so far is
    scored again from its kept test split, and ``results.json`` is rewritten with the grown
    matrix. Retention is measured against the original pretrained backbone. ``options``: run
    options (steps, lr, epochs, ...) for this session, over the run's; each session records
    its own, so that the sessions can be replayed."""
    from retain.methods import get_method_class

    started = time.perf_counter()
    out = Path(directory).expanduser()
    saved = checkpoint.read_state(out / "checkpoint")
    if not saved:
        raise RetainError(f"{out} holds no run (no checkpoint/): `retain learn` adds tasks to "
                          "the --out folder of a finished `retain run`")
    cfg = RunConfig(**{**saved["config"], **(options or {}), "out": str(out)})
    cfg.check()
    for flag, given, own in (("method", method, cfg.method), ("backbone", backbone, cfg.backbone),
                             ("kind", kind, cfg.kind)):
        if given is not None and given != own:
            raise RetainError(f"the run in {out} was trained with --{flag} {own}: it learns more "
                              f"tasks with that {flag} only (drop --{flag} {given}, or start a "
                              "new run)")
    done, total = saved["tasks_done"], len(saved["stream"]["tasks"])
    if done < total:
        raise RetainError(f"the run in {out} finished {done} of its {total} tasks: finish it "
                          f"first (`retain run ... --out {out} --resume`)")
    if not get_method_class(cfg.method).info.continual:
        raise RetainError(f"{cfg.method} trains once on every task's data, which a later "
                          "session no longer has (rehearsal-free): it cannot learn more tasks")
    if not Path(data).expanduser().exists():
        raise RetainError(f"data file '{data}' does not exist")
    _check_learn_kind(cfg, str(data))
    if classes_per_task is not None and classes_per_task < 1:
        raise RetainError(f"--classes-per-task must be 1 or more, got {classes_per_task}")
    session = {"data": str(data), "classes_per_task": classes_per_task, "first_task": done,
               "options": dict(options or {})}
    sessions = [*_earlier_sessions(out, saved), session]
    saved = {**saved, "config": cfg.to_dict(), "sessions": sessions,
             "run_config": saved.get("run_config", saved["config"])}
    accelerator = _accelerator(cfg)
    with checkpoint.owned(out, accelerator.is_main_process):
        return _session(cfg, saved, accelerator, lambda bb: _learnt_stream(cfg, saved, bb),
                        started, progress)


def _earlier_sessions(out: Path, saved: dict[str, Any]) -> list[dict[str, Any]]:
    """The sessions so far, each with its training items and seconds (from ``results.json``,
    written after the checkpoint); a run's first session is the run itself."""
    import json

    written = out / "results.json"
    results = json.loads(written.read_text()) if written.is_file() else {}
    if "sessions" in saved:
        known = results.get("sessions", [])
        return [{**s, **{k: known[i][k] for k in ("train_items", "seconds")
                         if i < len(known) and k in known[i]}}
                for i, s in enumerate(saved["sessions"])]
    cfg = saved["config"]
    first = {"data": cfg.get("data") or cfg.get("benchmark"), "first_task": 0,
             "classes_per_task": cfg.get("classes_per_task"), "options": {}}
    if results:
        first["train_items"] = sum(t["train"] for t in results["tasks"])
        first["seconds"] = {k: results["cost"].get(k, 0.0) for k in SESSION_SECONDS}
    return [first]


# a session's own seconds (results["sessions"][k]["seconds"]); the run's cost sums them
SESSION_SECONDS = ("startup_seconds", "tasks_seconds", "retention_seconds", "inference_seconds")


def _check_learn_kind(cfg: RunConfig, data: str) -> None:
    """A file of another task kind than the run's, refused by its columns."""
    has_classes = get_kind(cfg.kind).has_classes
    columns = _columns(data)
    if Path(data).expanduser().is_dir() and not has_classes:
        raise RetainError(f"'{data}' is an image folder: the run in {cfg.out} is a "
                          "language-modelling run; give a file with 'text' and 'task' columns")
    if has_classes and "label" not in columns and "task" in columns:
        raise RetainError(f"'{data}' holds language-modelling text (a 'task' column, no "
                          f"'label'): the run in {cfg.out} is a classification run; give a file "
                          "with 'text' and 'label'")
    if not has_classes and "label" in columns:
        raise RetainError(f"'{data}' holds labelled rows: the run in {cfg.out} is a "
                          "language-modelling run; give a file with 'text' and 'task' columns")


def _learnt_stream(cfg: RunConfig, saved: dict[str, Any], backbone: Backbone) -> Stream:
    """The stream of a run's sessions: the tasks of the earlier sessions (from the checkpoint's
    outline, with their kept test splits), then the tasks of the newest session's file."""
    out, session = Path(cfg.out), saved["sessions"][-1]
    known = session["first_task"]
    outline = {**saved["stream"], "tasks": saved["stream"]["tasks"][:known]}
    old = Stream.from_outline(outline, [_read_test(out, i) for i in range(known)])
    new_cfg = dataclasses.replace(cfg, data=session["data"], benchmark=None, tasks=None,
                                  class_order=None, classes_per_task=(
                                      session["classes_per_task"] or cfg.classes_per_task))
    new = build_stream(new_cfg, backbone)
    if "task" not in _columns(session["data"]) and not session["classes_per_task"] and \
            cfg.scenario != "domain" and get_kind(cfg.kind).has_classes:
        new = build_stream(dataclasses.replace(new_cfg, classes_per_task=new.num_classes),
                           backbone)  # no task column, no --classes-per-task: one task
    return old.extended(new)


def _columns(data: str) -> set[str]:
    from retain.data.files import read_records

    if Path(data).expanduser().is_dir():
        return set()
    rows = read_records(data)
    return set(rows[0]) if rows else set()


TRAINING_LOG = "train_log.jsonl"  # one line per optimiser step: task, step, loss, rate


def _write_log(out: Path, lines: list[dict[str, Any]]) -> None:
    """Append a finished task's steps to the run's log (and to TensorBoard when the
    ``tensorboard`` package is installed: ``retain[tensorboard]``)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / TRAINING_LOG, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(checkpoint.finite(line)) + "\n" for line in lines)
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the optional extra is not installed
        return
    writer = SummaryWriter(str(out / "tensorboard"))
    for line in lines:
        writer.add_scalar("train/loss", line["loss"], line["step"])
        writer.add_scalar("train/lr", line["lr"], line["step"])
    writer.close()


def _read_log(out: Path) -> list[dict[str, Any]]:
    path = out / TRAINING_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _trim_log(out: Path, tasks_done: int) -> None:
    """Keep the log of the tasks a checkpoint holds (a crash may have left a later task's)."""
    log = _read_log(out)
    kept = [line for line in log if line["task"] <= tasks_done]
    if len(kept) < len(log):
        checkpoint.write_lines(out / TRAINING_LOG, kept)


TEST_SPLITS = "test"  # each task's test split, kept in the run folder for later sessions


def _test_path(out: Path, index: int) -> Path:
    return out / TEST_SPLITS / f"task-{index + 1:03d}.jsonl"


def _keep_test(out: Path, task: Task) -> None:
    """Write ``task``'s test split (items and labels; never training data), once."""
    path = _test_path(out, task.index)
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_lines(path, [{"label": int(label), "item": item} for item, label in
                                  zip(task.test.items, task.test.labels, strict=True)])


def _read_test(out: Path, index: int) -> Split:
    """A kept test split, or an empty one (``--keep-test none``: the task is not scored)."""
    path = _test_path(out, index)
    if not path.is_file():
        return Split([], np.zeros(0, dtype=int))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return Split([r["item"] for r in rows], np.asarray([r["label"] for r in rows], dtype=int))


def _accelerator(cfg: RunConfig) -> Accelerator:
    # accelerate joins a multi-process CPU group (torchrun) only when told it runs on the CPU
    no_gpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())
    if cfg.mixed_precision == "fp16" and (cfg.cpu or no_gpu):
        raise RetainError("--mixed-precision fp16 needs a GPU; on the CPU use bf16 or no")
    # each run sets its own precision: forget the previous run's (the process group stays)
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=cfg.mixed_precision, cpu=cfg.cpu or no_gpu,
                       gradient_accumulation_steps=cfg.grad_accumulation)


def _session(cfg: RunConfig, saved: dict[str, Any] | None, accelerator: Accelerator,
             stream_for, started: float, progress: bool
             ) -> tuple[dict[str, Any], ContinualMethod]:
    """One session of a run: the untouched backbone, the stream, the method (from the
    checkpoint when there is one), the tasks not done yet, retention and the results."""
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoint"
    _reset_peak_memory(accelerator.device)
    set_seed(cfg.seed)
    backbone = load_backbone(cfg.backbone, cfg.pooling)
    get_kind(cfg.kind).check_backbone(cfg.backbone, backbone.modality)
    positions = getattr(backbone.model.config, "max_position_embeddings", None)
    if backbone.modality != "image" and positions and cfg.max_length > positions:
        raise RetainError(f"--max-length {cfg.max_length} is more than '{cfg.backbone}' takes "
                          f"({positions} positions): give --max-length {positions} or less")
    stream = stream_for(backbone)
    largest = max(len(task.train) for task in stream.tasks)
    if cfg.batch_size > largest and accelerator.is_main_process:
        print(f"note: --batch-size {cfg.batch_size} is more than any task's training items "
              f"(at most {largest}): each step takes a task's whole training set",
              file=sys.stderr)
    show = progress and accelerator.is_main_process
    untouched = retention_probe(backbone, cfg, show, accelerator) if cfg.retention else None
    # a later session's stream may hold more classes than the checkpoint's head: it grows
    method = rebuild(cfg, backbone, stream, ckpt_dir, saved, grow=True)
    record, start = Record(), 0
    if saved:
        record, start = Record(**saved["record"]), saved["tasks_done"]
        if accelerator.is_main_process:  # also under --quiet: it says what this run does
            verb = "learning" if start < len(stream) and "sessions" in saved else "resuming"
            print(f"{verb} {out}: {start} of {len(stream)} tasks done"
                  + (f", picking up at task {start + 1}" if start < len(stream) else
                     ", measuring what follows the last task"),
                  file=sys.stderr)
    method.to(accelerator.device)
    curves = None
    if cfg.probe_every:
        from retain.curves import Curves

        curves = Curves(cfg, backbone, accelerator.device, accelerator.autocast)
        if start == 0:  # the untouched model: where every curve starts
            record.curves.append(curves.point(method, stream.tasks[0], 0, 0))
    startup = time.perf_counter() - started
    engine = Engine(cfg, stream, backbone, method, accelerator, progress, curves)
    if accelerator.is_main_process:  # the run written down: `retain run --config` reads it
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.write_text(out / "config.toml", cfg.to_toml() if not saved or "sessions"
                              not in saved else RunConfig(**saved["run_config"]).to_toml()
                              + sessions_toml(saved["sessions"][1:]))
        _trim_log(out, start)  # steps of a task that did not reach its checkpoint
    for task in stream.tasks[start:]:
        engine.run_task(task, record)
        if accelerator.is_main_process:
            _write_log(out, engine.log)
            if cfg.keep_test == "all":
                _keep_test(out, task)
            checkpoint.save(ckpt_dir, method.stored_tensors(), {
                "config": cfg.to_dict(), "stream": stream.outline(),
                "tasks_done": task.index + 1, "method_state": method.state(),
                "record": record.__dict__,
                **({k: saved[k] for k in ("sessions", "run_config")}
                   if saved and "sessions" in saved else {})},
                task.index + 1)
        accelerator.wait_for_everyone()
    ret, t0 = None, time.perf_counter()
    if cfg.retention:
        method.eval()
        with accelerator.autocast():
            ret = retention_after(untouched, backbone, method, cfg, show)
    phases = {"startup_seconds": startup, "tasks_seconds": record.wall_seconds,
              "retention_seconds": time.perf_counter() - t0}
    peak = _peak_memory_mb(accelerator.device)  # before the merged copy below
    t0, costs = time.perf_counter(), {}
    rounds = 30 if cfg.inference_rounds is None else cfg.inference_rounds  # None: a run saved
    if rounds:                                                              # before the option
        probe = inference.probe_batch(stream, backbone, cfg.batch_size, cfg.max_length,
                                      accelerator.device)
        costs = inference.inference_cost(
            method, lambda: load_backbone(cfg.backbone, cfg.pooling).model, probe,
            stream.task_kind, accelerator, rounds)
    phases["inference_seconds"] = time.perf_counter() - t0  # the deployed/untouched timing
    if saved and "sessions" in saved:  # this session's seconds; the cost sums the sessions'
        sessions = [dict(s) for s in saved["sessions"]]
        before = sum(s.get("seconds", {}).get("tasks_seconds", 0.0) for s in sessions[:-1])
        own = {**phases, "tasks_seconds": record.wall_seconds - before}
        sessions[-1]["seconds"] = own
        sessions[-1]["train_items"] = sum(len(t.train) for t in
                                          stream.tasks[sessions[-1]["first_task"]:])
        phases = {k: sum(s.get("seconds", {}).get(k, 0.0) for s in sessions[:-1]) + own[k]
                  for k in SESSION_SECONDS}
    results = _results(cfg, stream, method, record, ret, accelerator, phases,
                       {"peak_memory_mb": peak, **costs})
    if saved and "sessions" in saved:
        results["sessions"] = sessions
    if curves is not None:
        results["curves"] = {**curves.describe(), "points": record.curves}
    if accelerator.is_main_process:
        log = _read_log(out)
        results["training_log"] = {k: [line[k] for line in log] for k in ("task", "loss", "lr")}
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(out / "results.json", results)
    return results, method


def _results(cfg: RunConfig, stream: Stream, method: ContinualMethod, record: Record,
             ret: dict | None, accelerator: Accelerator, phases: dict[str, float],
             measured: dict[str, Any]) -> dict[str, Any]:
    """``results.json``: one schema for every task kind; ``score`` names the matrix and its
    direction."""
    kind = get_kind(stream.kind)
    sizes = [len(t.test) for t in stream.tasks]

    def summary(matrix: list[list[float]]) -> dict[str, Any]:
        out = metrics.summary(matrix, sizes, kind.score, kind.higher_is_better)
        if not method.info.continual:  # rows before the last are the untrained model
            for key in (f"average_incremental_{kind.score}", "forgetting", "bwt", "plasticity",
                        "relative_forgetting"):
                if key in out:
                    out[key] = float("nan")
        return out

    recorded = {"matrix": record.rows, "task_incremental": record.til_rows}
    rows = kind.main_rows(recorded, cfg.scenario)
    train_s = sum(p["train_seconds"] for p in record.per_task)
    boundary_s = sum(p["boundary_seconds"] for p in record.per_task)
    eval_s = sum(p["eval_seconds"] for p in record.per_task)
    head_s = sum(p.get("head_seconds", 0.0) for p in record.per_task)  # resumed older records
    results: dict[str, Any] = {
        "method": cfg.method,
        "head": cfg.head,
        "scenario": cfg.scenario,
        "kind": kind.name,
        "stream": stream.name,
        "config": cfg.to_dict(),
        "class_order": stream.class_order,
        "class_names": stream.class_names,
        "tasks": [{"name": t.name, "classes": t.classes, "train": t.trained_on
                   if t.trained_on is not None else len(t.train), "test": len(t.test)}
                  for t in stream.tasks],
        "score": {"name": kind.score, "direction": kind.direction},
        "matrix": rows,
        "metrics": summary(rows),
    }
    for key, matrix in kind.matrices(recorded, cfg.scenario).items():
        results[key] = matrix
        if key == "task_incremental_matrix":
            results["task_incremental_metrics"] = summary(matrix)
    results["retention"] = ret
    steps = record.step_seconds
    stored = method.stored_parameters()
    lora = method.lora_per_task()
    head = count_unique(t for n, t in method.stored_tensors().items() if n.startswith("head."))
    results["cost"] = {
        "trainable_parameters": record.trainable_parameters,
        "stored_parameters": stored,
        # one LoRA of the method's rank on its layers per task, against what the method stores
        # beyond its head
        "stored_ratio_vs_lora_per_task": (len(stream) * lora / max(stored - head, 1)
                                          if lora else None),
        "train_seconds": train_s,
        "boundary_seconds": boundary_s,
        "head_seconds": head_s,  # of the boundary seconds: the head's statistics and solves
        "eval_seconds": eval_s,
        "boundary_share": boundary_s / max(train_s + boundary_s, 1e-9),
        "median_step_seconds": statistics.median(steps) if steps else 0.0,
        "steps": len(steps),
        # peak memory, and inference seconds per batch as deployed against the untouched
        # backbone (retain.inference)
        **measured,
        # start-up (backbone, data, the untouched probe; this session's), every task
        # (training, boundaries, evaluation; summed over resumed sessions), retention
        **phases,
        "wall_seconds": sum(phases.values()),
        "device": str(accelerator.device),
        "processes": accelerator.num_processes,
    }
    results["per_task"] = record.per_task
    results["versions"] = _versions()
    return results
