"""Where retain's step on SmolLM2 loses time against the plain loop (issue 41): four ways of
taking the same steps on the same batches, one after another in one process, each phase built
afresh (its own AdamW), the order reversed every other round:

    python scripts/peer_ladder.py [seq-ft|seq-lora] [ROUNDS]

- L0: the plain loop of ``benchmarks/peer.py`` (its own model, ``model(..., labels=...).loss``,
  ``loss.backward()``, AdamW);
- L1: the engine's method called on the batch (``method(batch)``: the kind's loss) on the
  engine's model, the engine's optimiser, ``loss.backward()``;
- L2: L1 through ``accelerate`` as the engine steps (the prepared optimiser, ``accumulate``,
  ``autocast``, ``accelerator.backward``);
- L3: ``Engine.train`` itself (its own step timer);
- with ``swap`` as a third argument, also L0e (L0's code on the engine's model, an AdamW over
  its parameters as L0 builds one) and L1p (L1's code, the kind's loss and the engine's
  optimiser settings, on L0's model): which side follows the model object, which the code.

Before the first round and after the last, where each model's largest parameter lives
(``/proc/self/smaps``: the mapping's file, resident and anonymous kilobytes, huge pages).

Printed after each round: the median step of each so far, and of L0-L2 the median forward,
backward and optimiser step (the optimiser's zero_grad and the loss's read included).
On the CPU only: nothing synchronises a GPU between the timers, so there the split into
forward, backward and optimiser step would be meaningless. Nothing is saved; run nothing
beside it.
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, "benchmarks")
from peer import Plain  # noqa: E402

from retain import RunConfig  # noqa: E402
from retain.engine import prepared_engine  # noqa: E402
from retain.loop import Record, long_lived_frozen  # noqa: E402


def main() -> None:
    method_name = sys.argv[1] if len(sys.argv) > 1 else "seq-ft"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    swap = len(sys.argv) > 3 and sys.argv[3] == "swap"
    steps = 4
    with tempfile.TemporaryDirectory() as out:
        engine = prepared_engine(RunConfig(method=method_name, benchmark="lmfar",
                                           profile="quick", steps=steps, retention=False,
                                           inference_rounds=0, out=out))
        cfg, task, acc, method = engine.cfg, engine.stream.tasks[0], engine.acc, engine.method
        engine.boundary(method.begin_task, task)
        plain = Plain(cfg, method_name, True, engine.stream.num_classes, acc.device)
        batches = []
        for batch in engine.loader([task.train], shuffle=True,
                                   seed=cfg.seed * 100_003 + task.index):
            batches.append(batch)
            if len(batches) == steps:
                break
        names = ("L0", "L1", "L2", "L3", *(("L0e", "L1p") if swap else ()))
        times: dict[str, list[float]] = {k: [] for k in names}
        parts = {k: {"forward": [], "backward": [], "optimiser": []} for k in names if k != "L3"}
        models = {"engine": method.model, "plain": plain.model}

        def timed(name, forward, backward, opt):
            for batch in batches:
                t0 = time.perf_counter()
                loss = forward(batch)
                t1 = time.perf_counter()
                backward(loss)
                t2 = time.perf_counter()
                opt.step()
                opt.zero_grad(set_to_none=True)
                float(loss.detach())
                t3 = time.perf_counter()
                times[name].append(t3 - t0)
                for part, seconds in zip(parts[name], (t1 - t0, t2 - t1, t3 - t2), strict=True):
                    parts[name][part].append(seconds)

        def l0():
            plain.new_task()

            def forward(b):
                with acc.autocast():
                    return plain.model(input_ids=b["input_ids"], attention_mask=b[
                        "attention_mask"], labels=b["labels"]).loss
            timed("L0", forward, lambda loss: loss.backward(), plain.opt)

        def l1():
            opt, _ = engine.optimiser()
            method.train()
            timed("L1", method, lambda loss: loss.backward(), opt)

        def l2():
            opt, _ = engine.optimiser()
            model, opt = acc.prepare(method, opt)
            model.train()
            for batch in batches:
                t0 = time.perf_counter()
                with acc.accumulate(model):
                    with acc.autocast():
                        loss = model(batch)
                    t1 = time.perf_counter()
                    acc.backward(loss)
                    t2 = time.perf_counter()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                float(loss.detach())
                t3 = time.perf_counter()
                times["L2"].append(t3 - t0)
                for part, seconds in zip(parts["L2"], (t1 - t0, t2 - t1, t3 - t2), strict=True):
                    parts["L2"][part].append(seconds)
            acc.unwrap_model(model, keep_fp32_wrapper=False)
            acc.free_memory()

        def l0e():
            params = [p for p in method.model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW([{"params": params, "lr": cfg.lr}], lr=cfg.lr,
                                    weight_decay=cfg.weight_decay)
            method.train()

            def forward(b):
                with acc.autocast():
                    return method.model(input_ids=b["input_ids"], attention_mask=b[
                        "attention_mask"], labels=b["labels"]).loss
            timed("L0e", forward, lambda loss: loss.backward(), opt)

        def l1p():
            params = [p for p in plain.model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW([{"params": params, "lr": cfg.lr}], lr=cfg.lr,
                                    weight_decay=cfg.weight_decay)
            plain.model.train()

            def forward(b):
                return plain.model(**engine.backbone.inputs(b), labels=b["labels"]).loss
            timed("L1p", forward, lambda loss: loss.backward(), opt)

        def l3():
            record = Record()
            engine.train(task, [task.train], record)
            times["L3"] += record.step_seconds

        ladder = [l0, l1, l2, l3, *((l0e, l1p) if swap else ())]
        where(models)
        with long_lived_frozen():  # as a run's task loop holds the collector
            for r in range(rounds):
                for phase in ladder if r % 2 == 0 else ladder[::-1]:
                    phase()
                print(r, {k: round(statistics.median(v), 3) for k, v in times.items()},
                      {k: {p: round(statistics.median(x), 3) for p, x in v.items()}
                       for k, v in parts.items()}, flush=True)
        where(models)


def where(models: dict) -> None:
    """For each model's largest parameter: the mapping holding its first byte (file or
    anonymous memory) and that mapping's Rss, Anonymous and AnonHugePages kilobytes."""
    maps = Path("/proc/self/smaps").read_text().splitlines()
    for name, model in models.items():
        p = max(model.parameters(), key=lambda t: t.numel())
        address, found = p.data_ptr(), None
        for i, line in enumerate(maps):
            head = line.split()
            if "-" in head[0] and ":" not in head[0]:
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                if lo <= address < hi:
                    found = i
                    break
        if found is None:
            print(name, "not found")
            continue
        fields = {}
        for line in maps[found + 1:]:
            key = line.split(":")[0]
            if " " in key or "-" in line.split()[0]:
                break
            fields[key] = line.split(":", 1)[1].strip()
        print(name, tuple(p.shape), maps[found].split()[-1] if len(maps[found].split()) > 5
              else "[anonymous]", {k: fields.get(k) for k in ("Size", "Rss", "Anonymous",
                                                             "AnonHugePages")}, flush=True)


if __name__ == "__main__":
    main()
