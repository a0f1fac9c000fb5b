"""retain against the loop a user writes by hand (issue 41), and how close a step comes to the
machine's dense matmul rate (JSON).

    python benchmarks/peer.py                                # every model and method below
    python benchmarks/peer.py --models minilm --methods seq-lora --steps 10 --rounds 5

For each model (MiniLM on wordnet45 quick batches, SmolLM2 on lmfar quick batches) and method
(``seq-lora``, ``seq-ft``), in one process, alternating: a training phase of ``--steps`` steps
through retain's engine (``Engine.train`` on the stream's first task, the method built as
``retain run`` builds it), then the same number of steps of the plain loop a user writes
(``AutoModel`` / ``AutoModelForCausalLM``, ``peft.get_peft_model`` with the same LoRA config,
a linear head with mean pooling for classification, ``torch.optim.AdamW`` with the same rates
built afresh for each phase, as retain builds one for each task,
on the very batches of retain's own loader), ``--rounds`` times, the sides in every order in
turn, inside the frozen collector of a run's task loop (``retain.loop.long_lived_frozen``).
``--control`` adds a second, identical plain loop: its ratio to the first is what two equal loops
measure as here. Reported: the ratio of the
median step times (forward, backward, optimiser step: what each side times per step) and of the
median phase time per step (the whole phase: batches, moves, everything), tokens per second,
and the achieved FLOP/s of a step (6 N per token for full fine-tuning, 4 N for LoRA, N the
backbone's parameters, attention's own products left out) against the dense matmul rate this
script measures in the same precision. Saved to ``benchmarks/results/peer_<device>.json``. One
job at a time: nothing else beside it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from driver import provenance, save

from retain import RunConfig
from retain.backbones import load_backbone
from retain.engine import prepared_engine
from retain.loop import Record, long_lived_frozen
from retain.methods.peft_glue import peft_targets

MODELS = {"minilm": ("wordnet45", "minilm"), "smollm2": ("lmfar", "smollm2")}


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 10
                ) -> float:
    """Dense matmul FLOP/s: the median of ``repeats`` products of two n x n matrices."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    times = []
    for _ in range(repeats + 2):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times[2:])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Plain:
    """The hand-written loop: the backbone from transformers, peft's LoRA, a linear head with
    mean pooling for classification, AdamW."""

    def __init__(self, cfg: RunConfig, method_name: str, language: bool, classes: int,
                 device: torch.device):
        from peft import LoraConfig, get_peft_model

        self.model = load_backbone(cfg.backbone, cfg.pooling).model.to(device)
        if method_name == "seq-lora":
            opts = cfg.method_options
            self.model = get_peft_model(self.model, LoraConfig(
                r=opts["rank"], lora_alpha=opts["alpha"], lora_dropout=opts["dropout"],
                target_modules=peft_targets(opts["target_modules"], self.model)))
        self.model.train()  # as a training loop does (from_pretrained gives eval mode: no dropout)
        self.language, self.cfg = language, cfg
        self.groups = [{"params": [p for p in self.model.parameters() if p.requires_grad],
                        "lr": cfg.lr}]
        if not language:
            self.head = torch.nn.Linear(self.model.config.hidden_size, classes).to(device)
            self.groups.append({"params": list(self.head.parameters()), "lr": cfg.head_lr})
        self.device = device

    def new_task(self) -> None:
        """A fresh AdamW, as a loop over a stream of tasks builds one for each task (and as
        retain's engine does)."""
        self.opt = torch.optim.AdamW([dict(g) for g in self.groups], lr=self.cfg.lr,
                                     weight_decay=self.cfg.weight_decay)

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        if self.language:
            loss = self.model(input_ids=batch["input_ids"], attention_mask=batch[
                "attention_mask"], labels=batch["labels"]).loss
        else:
            hidden = self.model(input_ids=batch["input_ids"],
                                attention_mask=batch["attention_mask"]).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            loss = torch.nn.functional.cross_entropy(self.head(pooled), batch["labels"])
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())


def measure(model: str, method_name: str, steps: int, rounds: int, precision: str,
            control: bool = False) -> dict[str, Any]:
    benchmark, _ = MODELS[model]
    with tempfile.TemporaryDirectory() as out:
        engine = prepared_engine(RunConfig(
            method=method_name, benchmark=benchmark, profile="quick", steps=steps,
            retention=False, inference_rounds=0, mixed_precision=precision, out=out))
        cfg, stream, backbone, method = engine.cfg, engine.stream, engine.backbone, engine.method
        accelerator = engine.acc
        task = stream.tasks[0]
        engine.boundary(method.begin_task, task)  # the task's start (its head's classes)
        language = stream.kind.score == "perplexity"
        plains = {name: Plain(cfg, method_name, language, stream.num_classes, accelerator.device)
                  for name in (("plain", "control") if control else ("plain",))}
        sides: dict[str, dict[str, list[float]]] = {
            name: {"step": [], "phase": []} for name in ("retain", *plains)}
        tokens = 0

        def retain_phase() -> None:
            record = Record()
            t0 = time.perf_counter()
            fit = engine.train(task, [task.train], record)
            sides["retain"]["phase"].append((time.perf_counter() - t0) / fit["steps"])
            sides["retain"]["step"] += record.step_seconds

        def plain_phase(name: str) -> None:
            nonlocal tokens
            plain = plains[name]
            # the very batches retain's phase had (its loader, its seed)
            t0, done = time.perf_counter(), 0
            loader = engine.loader([task.train], shuffle=True,
                                   seed=cfg.seed * 100_003 + task.index)
            plain.new_task()
            while done < steps:
                for batch in loader:
                    s0 = time.perf_counter()
                    with accelerator.autocast():
                        plain.step(batch)
                    sync(accelerator.device)
                    sides[name]["step"].append(time.perf_counter() - s0)
                    if not tokens:  # the first batch's tokens (padding aside)
                        tokens = int(batch["attention_mask"].sum())
                    done += 1
                    if done == steps:
                        break
            sides[name]["phase"].append((time.perf_counter() - t0) / steps)

        sides_run = [retain_phase] + [lambda name=name: plain_phase(name) for name in plains]
        orders = list(itertools.permutations(sides_run))  # every order of the sides in turn
        with long_lived_frozen():  # as a run's task loop holds the collector
            for i in range(rounds):
                for phase in orders[i % len(orders)]:
                    phase()
        n_params = sum(p.numel() for p in backbone.model.parameters())
        per_token = (6 if method_name == "seq-ft" else 4) * n_params
        median = {side: {k: statistics.median(v) for k, v in d.items()}
                  for side, d in sides.items()}
    return {"model": model, "method": method_name, "steps": steps, "rounds": rounds,
            "batch_size": cfg.batch_size, "tokens_per_step": tokens,
            "median_step_seconds": {s: m["step"] for s, m in median.items()},
            "median_phase_seconds_per_step": {s: m["phase"] for s, m in median.items()},
            "step_ratio": median["retain"]["step"] / median["plain"]["step"],
            "phase_ratio": median["retain"]["phase"] / median["plain"]["phase"],
            **({"control_step_ratio": median["control"]["step"] / median["plain"]["step"],
                "control_phase_ratio": median["control"]["phase"] / median["plain"]["phase"]}
               if control else {}),
            "tokens_per_second": {s: tokens / m["step"] for s, m in median.items()},
            "achieved_flops": {s: per_token * tokens / m["step"] for s, m in median.items()},
            "flops_per_token": per_token, "backbone_parameters": n_params,
            "device": str(accelerator.device)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="minilm,smollm2")
    p.add_argument("--methods", default="seq-lora,seq-ft")
    p.add_argument("--steps", type=int, default=8, help="steps a phase")
    p.add_argument("--rounds", type=int, default=4,
                   help="phases of each side, the sides in each order in turn (2 sides: 2 "
                        "orders; with --control, 3 sides: 6)")
    p.add_argument("--control", action="store_true",
                   help="a second, identical plain loop: its ratio to the first is what two "
                        "equal loops measure as on this machine (the noise floor)")
    p.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"))
    p.add_argument("--out", help="write the JSON here instead of benchmarks/results/")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
        args.mixed_precision]
    first = matmul_rate(device, dtype)
    rows = []
    for model in args.models.split(","):
        for method in args.methods.split(","):
            row = measure(model, method, args.steps, args.rounds, args.mixed_precision,
                          args.control)
            rows.append(row)
            print(f"{model} {method}: step {row['step_ratio']:.3f}x, phase "
                  f"{row['phase_ratio']:.3f}x the plain loop"
                  + (f" (control {row['control_step_ratio']:.3f}x / "
                     f"{row['control_phase_ratio']:.3f}x)" if args.control else "")
                  + f"; retain {row['tokens_per_second']['retain']:.0f} tokens/s", flush=True)
    # the machine's rate: the higher of a measurement before and one after the rows, so that
    # a passing disturbance of either does not pass for the machine's limit
    last = matmul_rate(device, dtype)
    rate = max(first, last)
    for row in rows:
        row["utilisation"] = {s: f / rate for s, f in row["achieved_flops"].items()}
        print(f"{row['model']} {row['method']}: retain at {row['utilisation']['retain']:.0%} "
              f"of {rate / 1e9:.0f} GFLOP/s", flush=True)
    result = {"matmul_flops": rate, "matmul_flops_before_after": [first, last],
              "precision": args.mixed_precision,
              "torch_threads": torch.get_num_threads(), "rows": rows}
    body = {"runs": [result]}  # one invocation, one run (the table renders every run)
    if args.out:
        Path(args.out).write_text(json.dumps({**provenance(), **body}, indent=1))
    else:
        save(f"peer_{device.type}.json", body)


if __name__ == "__main__":
    main()
