"""Median training-step time of two methods, measured in one process on the same batches.

    python benchmarks/step_time.py --a inflora --b seq-lora --set-b rank=10 \
        --set-b target_modules=key,value --steps 60

Both methods are prepared on the same backbone config and the first task of the benchmark (or,
with ``--after N``, task N+1 once the earlier tasks were briefly trained and ended); their steps
alternate (a, b, a, b, ...) so that drift in the machine's speed affects both alike. Then the
median time of ``predict`` on one evaluation batch, alternating the same way (``--predict-only``
skips the training steps: for a method with nothing to train, such as frozen-ncm). Saves
``benchmarks/results/step_time_<a>_vs_<b>.json``.

    python benchmarks/step_time.py --a ntk-cl --b frozen-ncm --after 1 --predict-only
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from driver import save

from retain import RunConfig
from retain.backbones import load_backbone


def options(pairs: list[str]) -> dict[str, str]:
    return dict(p.split("=", 1) for p in pairs)


def setup(method: str, opts: dict[str, str], profile: str, after: int):
    """The method prepared on the benchmark's task ``after + 1``, the earlier tasks each trained
    for a few steps and ended (merges, basis updates), with its optimiser and that task's
    batches."""
    plan = RunConfig(method=method, profile=profile, method_options=opts).plan()
    cfg = plan.config
    stream = plan.build_stream()
    m = plan.build_method()
    m.setup(load_backbone(cfg.backbone), stream)
    for task in stream.tasks[:after]:
        m.eval()
        m.begin_task(task, lambda task=task: iter(_batches(m, task, cfg)))
        opt = _optimiser(m, cfg)
        m.train()
        for batch in list(_batches(m, task, cfg))[:5] if opt else []:
            step(m, opt, batch)
        m.eval()
        m.end_task(task, lambda task=task: iter(_batches(m, task, cfg)))
    task = stream.tasks[after]
    batches = lambda: iter(_batches(m, task, cfg))  # noqa: E731
    start = time.perf_counter()
    m.eval()
    m.begin_task(task, batches)
    boundary = time.perf_counter() - start
    opt = _optimiser(m, cfg)
    params = [p for group in opt.param_groups for p in group["params"]] if opt else []
    m.train()
    return m, opt, list(_batches(m, task, cfg)), sum(p.numel() for p in params), boundary


def _optimiser(m, cfg) -> torch.optim.Optimizer | None:
    groups = m.trainable_parameters()  # as the engine builds it: backbone at lr, head at head_lr
    if not groups:
        return None
    lrs = {"backbone": cfg.lr, "head": cfg.head_lr}
    return torch.optim.AdamW([{"params": ps, "lr": lrs[g]} for g, ps in groups.items()],
                             lr=cfg.lr)


def _batches(m, task, cfg):
    for i in range(0, len(task.train), cfg.batch_size):
        batch = m.backbone.batch(task.train.items[i:i + cfg.batch_size], cfg.max_length)
        batch["labels"] = torch.as_tensor(task.train.labels[i:i + cfg.batch_size])
        batch["index"] = torch.arange(i, i + len(batch["labels"]))  # as the engine's batches
        yield batch


def step(m, opt, batch) -> float:
    t0 = time.perf_counter()
    m(batch).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


@torch.no_grad()
def predict(m, batch) -> float:
    t0 = time.perf_counter()
    m.predict({k: v for k, v in batch.items() if k not in ("labels", "index")})
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", default="inflora")
    p.add_argument("--b", default="seq-lora")
    p.add_argument("--set-a", action="append", default=[])
    p.add_argument("--set-b", action="append", default=[])
    p.add_argument("--profile", default="quick")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--tag", default="", help="suffix of the saved file's name")
    p.add_argument("--predict-only", action="store_true", help="time predict() only")
    p.add_argument("--after", type=int, default=0,
                   help="time task AFTER+1, the earlier tasks briefly trained and ended first")
    args = p.parse_args()
    a = setup(args.a, options(args.set_a), args.profile, args.after)
    b = setup(args.b, options(args.set_b), args.profile, args.after)
    times: dict[str, list[float]] = {"a": [], "b": [], "pa": [], "pb": []}
    n = len(a[2])
    for i in range(0 if args.predict_only else args.warmup + args.steps):
        for key, (m, opt, batches, _, _) in (("a", a), ("b", b)):
            t = step(m, opt, batches[i % n])
            if i >= args.warmup:
                times[key].append(t)
    for m, *_ in (a, b):
        m.eval()
    for i in range(args.warmup + args.steps):
        for key, (m, _, batches, _, _) in (("pa", a), ("pb", b)):
            t = predict(m, batches[i % n])
            if i >= args.warmup:
                times[key].append(t)
    med = {k: statistics.median(v) if v else None for k, v in times.items()}
    report = {
        "a": {"method": args.a, "options": options(args.set_a), "median_step_seconds": med["a"],
              "median_predict_seconds": med["pa"], "trainable_parameters": a[3],
              "begin_task_seconds": a[4]},
        "b": {"method": args.b, "options": options(args.set_b), "median_step_seconds": med["b"],
              "median_predict_seconds": med["pb"], "trainable_parameters": b[3],
              "begin_task_seconds": b[4]},
        "ratio_a_over_b": med["a"] / med["b"] if med["b"] else None,
        "predict_ratio_a_over_b": med["pa"] / med["pb"], "steps_each": args.steps,
        "timed_task": args.after + 1,
        "batch_size": RunConfig(profile=args.profile).resolved().batch_size,
        "torch_threads": torch.get_num_threads(),
    }
    tag = f"_{args.tag}" if args.tag else ""
    print(json.dumps(report, indent=1))
    save(f"step_time_{args.a}_vs_{args.b}{tag}.json", report)


if __name__ == "__main__":
    main()
