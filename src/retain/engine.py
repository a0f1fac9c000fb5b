"""A run from its config: the method built or rebuilt, a session of tasks through the per-task
loop (:mod:`retain.loop`) with a checkpoint after every task, resume, later sessions
(``learn``), then retention, the inference timing and ``results.json``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed

from retain import checkpoint, inference
from retain.backbones import Backbone, backbone_of
from retain.config import Plan, RunConfig, filled
from retain.config_toml import sessions_toml
from retain.data.stream import Stream
from retain.errors import RetainError
from retain.loop import Engine, Record, long_lived_frozen
from retain.methods.base import ContinualMethod
from retain.results import peak_memory_mb, reset_peak_memory, results_json
from retain.retention import retention_after, retention_probe
from retain.run_folder import keep_test, read_log, trim_log, write_log
from retain.sessions import check_learn_kind, earlier_sessions, learnt_stream, session_seconds


def prepared_engine(config: RunConfig, checkpoint_dir: Path | None = None) -> Engine:
    """The per-task loop of ``config`` set up without a run folder: the config resolved, its
    accelerator, the untouched backbone, the stream, the method set up and on its device (for
    benchmarks and tools that time or step the loop themselves); with ``checkpoint_dir`` (a
    finished run's ``checkpoint``, ``config`` its own), the method as that checkpoint left it."""
    plan = config.plan()
    saved = None
    if checkpoint_dir is not None:
        saved = checkpoint.read_state(checkpoint_dir)
        problem = ("holds no checkpoint" if saved is None else
                   "holds a run of later sessions" if "sessions" in saved else
                   "holds an unfinished run" if saved["tasks_done"] < len(saved["stream"]["tasks"])
                   else None)
        diff = [] if problem else _config_diff(plan.config, saved["config"])
        if diff:
            problem = f"was made with another config ({', '.join(diff)} differ)"
        if problem:
            raise RetainError(f"{checkpoint_dir} {problem}: give a finished one-session run's "
                              "checkpoint and its own config")
    accelerator = _accelerator(plan.config)
    backbone = _backbone(plan)
    stream = plan.build_stream(backbone)
    method = rebuild(plan, backbone, stream, checkpoint_dir, saved)
    method.to(accelerator.device)
    return Engine(plan.config, stream, backbone, method, accelerator, progress=False)


def rebuild(plan: Plan, backbone: Backbone, stream: Stream, ckpt_dir: Path | None = None,
            saved: dict[str, Any] | None = None, grow: bool = False) -> ContinualMethod:
    """The method of a run, set up on the untouched backbone and, from a checkpoint
    (``saved``, its state), with its stored state and tensors on top: resume and ``load``.
    ``grow``: the stream may hold more classes than the checkpoint (a later session): the
    heads' class-sized tensors (the method's head, and any statistics head it keeps) grow."""
    from retain.methods.heads.base import Head

    method = plan.build_method()
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
    saved = filled(saved)  # a field added since the checkpoint: as a run resolves it
    return sorted(k for k, v in cfg.to_dict().items() if k != "out" and saved[k] != v)


def run_or_load(config: RunConfig, progress: bool = True) -> dict[str, Any]:
    """The results of ``config``: read from ``config.out/results.json`` when a finished run with
    the same config is there, otherwise run (resuming from a checkpoint if there is one).
    A finished run with another config is refused rather than reused (options that decide only
    what is measured after the last task, EVALUATION_ONLY, aside)."""
    done = Path(config.out) / "results.json"
    if done.is_file():
        results = json.loads(done.read_text())
        diff = [k for k in _config_diff(config.resolved(), results["config"])
                if k not in EVALUATION_ONLY]  # what follows the last task: the run is the same
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
    plan = config.plan()
    cfg = plan.config
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
            return learnt_stream(plan, saved, backbone)
        return plan.build_stream(backbone)

    with checkpoint.owned(out, accelerator.is_main_process):
        return _session(plan, saved, accelerator, stream_for, started, progress)


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
    started = time.perf_counter()
    out = Path(directory).expanduser()
    saved = checkpoint.read_state(out / "checkpoint")
    if not saved:
        raise RetainError(f"{out} holds no run (no checkpoint/): `retain learn` adds tasks to "
                          "the --out folder of a finished `retain run`")
    cfg = RunConfig(**{**saved["config"], **(options or {}), "out": str(out)})
    cfg.check()
    plan = Plan.saved(cfg)  # resolved when it ran: not again (a profile's caps would return)
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
    if not plan.method.info.continual:
        raise RetainError(f"{cfg.method} trains once on every task's data, which a later "
                          "session no longer has (rehearsal-free): it cannot learn more tasks")
    if not Path(data).expanduser().exists():
        raise RetainError(f"data file '{data}' does not exist")
    check_learn_kind(plan, str(data))
    if classes_per_task is not None and classes_per_task < 1:
        raise RetainError(f"--classes-per-task must be 1 or more, got {classes_per_task}")
    session = {"data": str(data), "classes_per_task": classes_per_task, "first_task": done,
               "options": dict(options or {})}
    sessions = [*earlier_sessions(out, saved), session]
    saved = {**saved, "config": cfg.to_dict(), "sessions": sessions,
             "run_config": saved.get("run_config", saved["config"])}
    accelerator = _accelerator(cfg)
    with checkpoint.owned(out, accelerator.is_main_process):
        return _session(plan, saved, accelerator, lambda bb: learnt_stream(plan, saved, bb),
                        started, progress)


def _accelerator(cfg: RunConfig) -> Accelerator:
    # accelerate joins a multi-process CPU group (torchrun) only when told it runs on the CPU
    no_gpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())
    if cfg.mixed_precision == "fp16" and (cfg.cpu or no_gpu):
        raise RetainError("--mixed-precision fp16 needs a GPU; on the CPU use bf16 or no")
    # each run sets its own precision: forget the previous run's (the process group stays)
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=cfg.mixed_precision, cpu=cfg.cpu or no_gpu,
                       gradient_accumulation_steps=cfg.grad_accumulation)


def _session(plan: Plan, saved: dict[str, Any] | None, accelerator: Accelerator,
             stream_for, started: float, progress: bool
             ) -> tuple[dict[str, Any], ContinualMethod]:
    """One session of a run: the untouched backbone, the stream, the method (from the
    checkpoint when there is one), the tasks not done yet, retention and the results."""
    cfg = plan.config
    reset_peak_memory(accelerator.device)
    set_seed(cfg.seed)
    backbone = _backbone(plan)
    stream = stream_for(backbone)
    largest = max(len(task.train) for task in stream.tasks)
    if cfg.batch_size > largest and accelerator.is_main_process:
        print(f"note: --batch-size {cfg.batch_size} is more than any task's training items "
              f"(at most {largest}): each step takes a task's whole training set",
              file=sys.stderr)
    show = progress and accelerator.is_main_process
    untouched = retention_probe(backbone, cfg, show, accelerator) if cfg.retention else None
    # a later session's stream may hold more classes than the checkpoint's head: it grows
    method = rebuild(plan, backbone, stream, Path(cfg.out) / "checkpoint", saved, grow=True)
    record, start = _record(cfg, saved, stream, accelerator)
    method.to(accelerator.device)
    reference = Reference(cfg)  # the untouched copy curves, retention and inference compare to
    curves = None
    if cfg.probe_every:
        from retain.curves import Curves

        curves = Curves(cfg, backbone, accelerator.device, accelerator.autocast, reference)
        if start == 0:  # the untouched model: where every curve starts
            record.curves.append(curves.point(method, stream.tasks[0], 0, 0))
    startup = time.perf_counter() - started
    engine = Engine(cfg, stream, backbone, method, accelerator, progress, curves)
    _train_tasks(cfg, saved, engine, record, start)
    ret, t0 = None, time.perf_counter()
    if cfg.retention:
        method.eval()
        with accelerator.autocast():
            ret = retention_after(untouched, backbone, method, cfg, show, reference)
    phases = {"startup_seconds": startup, "tasks_seconds": record.wall_seconds,
              "retention_seconds": time.perf_counter() - t0}
    measured = {"peak_memory_mb": peak_memory_mb(accelerator.device)}  # before the merged copy
    t0 = time.perf_counter()
    measured.update(_inference_cost(cfg, engine, t0 - started, reference))
    reference.release()
    phases["inference_seconds"] = time.perf_counter() - t0  # the deployed/untouched timing
    sessions = None
    if saved and "sessions" in saved:  # this session's seconds; the cost sums the sessions'
        sessions, phases = session_seconds(saved["sessions"], phases, record, stream)
    results = results_json(cfg, stream, method, record, ret, accelerator, phases, measured)
    if sessions:
        results["sessions"] = sessions
    if curves is not None:
        results["curves"] = {**curves.describe(), "points": record.curves}
    if accelerator.is_main_process:
        log = read_log(Path(cfg.out))
        results["training_log"] = {k: [line[k] for line in log] for k in ("task", "loss", "lr")}
        checkpoint.write_json(Path(cfg.out) / "results.json", results)
    return results, method


class Reference:
    """A run's untouched copy of the backbone, loaded on first use and shared by what compares
    with it (the curves' first point, language-model retention, the inference timing); the
    curves free it after their first point (``release``) so that training does not hold two
    models, and the measurements after the last task load it once for both."""

    def __init__(self, cfg: RunConfig):
        self.cfg, self.copy = cfg, None

    def __call__(self) -> Backbone:
        if self.copy is None:
            self.copy = backbone_of(self.cfg)
        return self.copy

    def release(self) -> None:
        self.copy = None


def _backbone(plan: Plan) -> Backbone:
    """The untouched backbone, checked against the task kind and the sequence length."""
    cfg = plan.config
    backbone = backbone_of(cfg)
    plan.kind.check_backbone(cfg.backbone, backbone.modality)
    positions = getattr(backbone.model.config, "max_position_embeddings", None)
    if backbone.modality != "image" and positions and cfg.max_length > positions:
        raise RetainError(f"--max-length {cfg.max_length} is more than '{cfg.backbone}' takes "
                          f"({positions} positions): give --max-length {positions} or less")
    return backbone


def _record(cfg: RunConfig, saved: dict[str, Any] | None, stream: Stream,
            accelerator: Accelerator) -> tuple[Record, int]:
    """The record so far and the first task to train (a checkpoint's, said in one line)."""
    if not saved:
        return Record(), 0
    record, start = Record(**saved["record"]), saved["tasks_done"]
    if accelerator.is_main_process:  # also under --quiet: it says what this run does
        verb = "learning" if start < len(stream) and "sessions" in saved else "resuming"
        print(f"{verb} {cfg.out}: {start} of {len(stream)} tasks done"
              + (f", picking up at task {start + 1}" if start < len(stream) else
                 ", measuring what follows the last task"), file=sys.stderr)
    return record, start


def _train_tasks(cfg: RunConfig, saved: dict[str, Any] | None, engine: Engine, record: Record,
                 start: int) -> None:
    """The tasks from ``start`` on, each followed by its log, its kept test split and a
    checkpoint; ``config.toml`` first (the run, and any later sessions, written down)."""
    out, method, accelerator = Path(cfg.out), engine.method, engine.acc
    later = bool(saved and "sessions" in saved)
    sessions = {k: saved[k] for k in ("sessions", "run_config")} if later else {}
    if accelerator.is_main_process:  # `retain run --config` reads it
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.write_text(out / "config.toml", RunConfig(**sessions["run_config"]).to_toml()
                              + sessions_toml(sessions["sessions"][1:]) if sessions
                              else cfg.to_toml())
        trim_log(out, start)  # steps of a task that did not reach its checkpoint
    with long_lived_frozen():
        for task in engine.stream.tasks[start:]:
            engine.run_task(task, record)
            if accelerator.is_main_process:
                write_log(out, engine.log)
                if cfg.keep_test == "all":
                    keep_test(out, task)
                checkpoint.save(out / "checkpoint", method.stored_tensors(), {
                    "config": cfg.to_dict(), "stream": engine.stream.outline(),
                    "tasks_done": task.index + 1, "method_state": method.state(),
                    "record": record.__dict__, **sessions}, task.index + 1)
            accelerator.wait_for_everyone()


def _inference_cost(cfg: RunConfig, engine: Engine, run_seconds: float,
                    reference: Reference) -> dict[str, Any]:
    """Inference seconds per batch as deployed against the untouched backbone
    (:mod:`retain.inference`): within 2% of the run's time by default (``inference_rounds``
    None), at least that many rounds when given, none with 0."""
    rounds = cfg.inference_rounds
    if rounds == 0:
        return {}
    probe = inference.probe_batch(engine.stream, engine.backbone, cfg.batch_size,
                                  cfg.max_length, engine.acc.device)
    return inference.inference_cost(
        engine.method, lambda: reference().model, probe,
        engine.stream.kind, engine.acc, rounds, run_seconds)
