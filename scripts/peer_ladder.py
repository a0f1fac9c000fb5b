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
- L3: ``Engine.train`` itself (its own step timer).

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

sys.path.insert(0, "benchmarks")
from peer import Plain  # noqa: E402

from retain import RunConfig  # noqa: E402
from retain.engine import prepared_engine  # noqa: E402
from retain.loop import Record, long_lived_frozen  # noqa: E402


def main() -> None:
    method_name = sys.argv[1] if len(sys.argv) > 1 else "seq-ft"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
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
        times: dict[str, list[float]] = {k: [] for k in ("L0", "L1", "L2", "L3")}
        parts = {k: {"forward": [], "backward": [], "optimiser": []} for k in ("L0", "L1", "L2")}

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

        def l3():
            record = Record()
            engine.train(task, [task.train], record)
            times["L3"] += record.step_seconds

        ladder = [l0, l1, l2, l3]
        with long_lived_frozen():  # as a run's task loop holds the collector
            for r in range(rounds):
                for phase in ladder if r % 2 == 0 else ladder[::-1]:
                    phase()
                print(r, {k: round(statistics.median(v), 3) for k, v in times.items()},
                      {k: {p: round(statistics.median(x), 3) for p, x in v.items()}
                       for k, v in parts.items()}, flush=True)


if __name__ == "__main__":
    main()
